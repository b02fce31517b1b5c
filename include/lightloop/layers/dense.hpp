#pragma once
// The dense (fully connected) layer: a = h_in W^T + b, h = f(a), one sample
// per row. W is (out x in) as in docs/DESIGN.md's a_i = W_i h_{i-1} + b_i.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "lightloop/core/blas.hpp"
#include "lightloop/core/concepts.hpp"
#include "lightloop/core/describe.hpp"
#include "lightloop/core/error.hpp"
#include "lightloop/core/finite.hpp"
#include "lightloop/core/parallel.hpp"
#include "lightloop/core/precision.hpp"
#include "lightloop/core/random.hpp"
#include "lightloop/core/shape.hpp"
#include "lightloop/core/tensor.hpp"
#include "lightloop/layers/activations.hpp"
#include "lightloop/layers/affine.hpp"
#include "lightloop/layers/init.hpp"

namespace lightloop {

/// P is the precision (core/precision.hpp): float, double or mixed_bf16.
template <class Act = identity, precision P = float>
requires activation<Act, master_t<P>>
class dense : public detail::affine_layer<Act, P> {
    using affine = detail::affine_layer<Act, P>;
    using T = master_t<P>;
    using affine::act_;
    using affine::bias_;
    using affine::bias_gradient_;
    using affine::delta_;
    using affine::output_;
    using affine::pre_activation_;
    using affine::weight_gradient_;
    using affine::weights_;

public:
    dense(std::size_t in, std::size_t out, init scheme = init::glorot_uniform)
      : dense(in, out, Act{}, scheme) {}

    dense(std::size_t in, std::size_t out, Act act, init scheme = init::glorot_uniform)
      : affine(act, checked_width(out, in, out), checked_width(in, in, out))
      , scheme_(scheme) {}

    /// delta = s ⊙ f'(a), s an (n x width) block with row stride ld; a mixed
    /// layer writes delta's bf16 GEMM operand in the same pass.
    void scale_by_derivative(const T* signal, std::size_t ld) {
        this->scale_by_derivative_and_operand(signal, ld);
    }

    std::size_t input_size() const noexcept { return weights_.shape(1); }
    std::size_t output_size() const noexcept { return weights_.shape(0); }
    /// A vector: {d, 1, 1} (read as maps of its size by a layer above).
    feature_shape input_shape() const noexcept { return {input_size(), 1, 1}; }
    feature_shape output_shape() const noexcept { return {output_size(), 1, 1}; }

    /// Draws W from the layer's scheme with `seed`; the bias starts at zero.
    void initialize(std::uint64_t seed) {
        rng gen(seed);
        initialize_weights(weights_, scheme_, gen);
        bias_.fill(T(0));
    }

    /// a = x W^T + b and h = f(a), with the bias and f fused in one pass.
    const matrix<T>& forward(const matrix<T>& x) {
        if (x.shape(1) != input_size()) {
            throw shape_error("lightloop::dense (" + describe() + "): input has " +
                              std::to_string(x.shape(1)) + " columns, expected " +
                              std::to_string(input_size()));
        }
        const std::size_t n = x.shape(0);
        const std::size_t out = output_size();
        this->shape_batch(n, out);
        const std::size_t in = input_size();
        affine::product(transpose::no, transpose::yes, n, out, in, T(1),
                        this->input_operand(x, false), in, this->weights_operand(), in, T(0),
                        pre_activation_.data(), out);
        const Act act = act_;
        const T* bias = bias_.data();
        T* a = pre_activation_.data();
        T* h = output_.data();
        // Rows in pieces on lightloop's threads, like the GEMM before it.
        parallel_for_rows(n, out, [&](std::size_t first, std::size_t end) {
            for (std::size_t r = first; r < end; ++r) {
                T* a_row = a + r * out;
                for (std::size_t c = 0; c < out; ++c) {
                    a_row[c] += bias[c];
                }
                // f on the row while it is still in cache.
                detail::activate_row(act, a_row, h + r * out, out);
            }
        });
        return output_;
    }

    /// into = delta W, the gradient with respect to this layer's input.
    void backpropagate(matrix<T>& into) const {
        const std::size_t n = delta_.shape(0);
        check_batch_input(into, "backward signal");
        affine::product(transpose::no, transpose::no, n, input_size(), output_size(), T(1),
                        this->delta_operand(), output_size(), this->weights_operand(), input_size(),
                        T(0), into.data(), input_size());
    }

    /// dW = (1/n) delta^T x and db = (1/n) sum_rows delta.
    void compute_gradient(const matrix<T>& x) {
        const std::size_t n = delta_.shape(0);
        check_batch_input(x, "gradient input");
        const T inv_n = T(1) / static_cast<T>(n);
        const std::size_t out = output_size();
        affine::product(transpose::yes, transpose::no, out, input_size(), n, inv_n,
                        this->delta_operand(), out, this->input_operand(x, true), input_size(),
                        T(0), weight_gradient_.data(), input_size());
        detail::scaled_column_sums(delta_.data(), nullptr, n, out, inv_n, bias_gradient_.data(),
                                   nullptr);
    }

    /// An upper bound on |every gradient entry| that compute_gradient(x)
    /// gives when delta is finite with max |delta| = delta_max, or +inf when
    /// it cannot vouch for a finite gradient: each entry is a mean over the n
    /// rows of one product delta * x (affine_layer::bound_gradient).
    double gradient_bound(const matrix<T>& x, double delta_max) const {
        return this->bound_gradient(x, delta_max, 1.0);
    }

    /// The names and shapes of what visit_parameters visits: weight
    /// (out x in) and bias (out), PyTorch's names.
    std::vector<parameter_shape> parameter_layout() const {
        return {{"weight", {output_size(), input_size()}}, {"bias", {output_size()}}};
    }

    init initializer() const noexcept { return scheme_; }

    /// "dense<tanh> 784 -> 1024", for checkpoint signatures.
    std::string signature() const {
        return "dense<" + name_of<Act>() + "> " + std::to_string(input_size()) + " -> " +
               std::to_string(output_size());
    }

    /// "dense 784 -> 1024", for messages.
    std::string describe() const {
        return "dense " + std::to_string(input_size()) + " -> " + std::to_string(output_size());
    }

private:
    /// Refuses `m` (named `what`) unless it is n x input_size(), n the batch
    /// of delta.
    void check_batch_input(const matrix<T>& m, const char* what) const {
        const std::size_t n = delta_.shape(0);
        if (m.shape(0) != n || m.shape(1) != input_size()) {
            throw shape_error("lightloop::dense (" + describe() + "): " + what + " is " +
                              std::to_string(m.shape(0)) + "x" + std::to_string(m.shape(1)) +
                              ", expected " + std::to_string(n) + "x" +
                              std::to_string(input_size()));
        }
    }

    static std::size_t checked_width(std::size_t width, std::size_t in, std::size_t out) {
        if (in == 0 || out == 0) {
            throw config_error("lightloop::dense: widths must be positive, got " +
                               std::to_string(in) + " -> " + std::to_string(out));
        }
        return width;
    }

    init scheme_;
};
static_assert(layer<dense<identity, float>>);
static_assert(layer<dense<tanh_act, double>>);
static_assert(layer<dense<tanh_act, mixed_bf16>>);

} // namespace lightloop
