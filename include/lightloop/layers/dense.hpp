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
#include "lightloop/core/random.hpp"
#include "lightloop/core/tensor.hpp"
#include "lightloop/layers/activations.hpp"
#include "lightloop/layers/init.hpp"

namespace lightloop {

template <class Act = identity, scalar T = float>
requires activation<Act, T>
class dense {
public:
    using value_type = T;
    using activation_type = Act;

    dense(std::size_t in, std::size_t out, init scheme = init::glorot_uniform)
      : dense(in, out, Act{}, scheme) {}

    dense(std::size_t in, std::size_t out, Act act, init scheme = init::glorot_uniform)
      : act_(act)
      , scheme_(scheme) {
        if (in == 0 || out == 0) {
            throw config_error("lightloop::dense: widths must be positive, got " +
                               std::to_string(in) + " -> " + std::to_string(out));
        }
        weights_ = matrix<T>::from_shape({out, in});
        weight_gradient_ = matrix<T>::from_shape({out, in});
        bias_ = vector<T>::from_shape({out});
        bias_gradient_ = vector<T>::from_shape({out});
        weights_.fill(T(0));
        weight_gradient_.fill(T(0));
        bias_.fill(T(0));
        bias_gradient_.fill(T(0));
    }

    std::size_t input_size() const noexcept { return weights_.shape(1); }
    std::size_t output_size() const noexcept { return weights_.shape(0); }

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
        ensure_shape(pre_activation_, n, out);
        ensure_shape(output_, n, out);
        ensure_shape(delta_, n, out);
        gemm(T(1), x, transpose::no, weights_, transpose::yes, T(0), pre_activation_);
        const Act act = act_;
        const T* bias = bias_.data();
        T* a = pre_activation_.data();
        T* h = output_.data();
        // Rows in pieces on lightloop's threads, like the GEMM before it.
        parallel_for_rows(n, out, [&](std::size_t first, std::size_t end) {
            for (std::size_t r = first; r < end; ++r) {
                T* a_row = a + r * out;
                T* h_row = h + r * out;
                if constexpr (requires { act.apply(a_row, h_row, out); }) {
                    // An activation with a row kernel: add the bias, then f on
                    // the row while it is still in cache.
                    for (std::size_t c = 0; c < out; ++c) {
                        a_row[c] += bias[c];
                    }
                    act.apply(a_row, h_row, out);
                } else {
                    for (std::size_t c = 0; c < out; ++c) {
                        const T value = a_row[c] + bias[c];
                        a_row[c] = value;
                        h_row[c] = act.value(value);
                    }
                }
            }
        });
        return output_;
    }

    /// delta = s ⊙ f'(a), s an (n x out) block with row stride ld.
    void scale_by_derivative(const T* signal, std::size_t ld) {
        const std::size_t n = pre_activation_.shape(0);
        const std::size_t out = output_size();
        const Act act = act_;
        const T* a = pre_activation_.data();
        const T* h = output_.data();
        T* d = delta_.data();
        parallel_for_rows(n, out, [&](std::size_t first, std::size_t end) {
            for (std::size_t r = first; r < end; ++r) {
                const T* s_row = signal + r * ld;
                for (std::size_t c = 0; c < out; ++c) {
                    const std::size_t i = r * out + c;
                    d[i] = s_row[c] * act.derivative(a[i], h[i]);
                }
            }
        });
    }

    /// into = delta W, the gradient with respect to this layer's input.
    void backpropagate(matrix<T>& into) const {
        gemm(T(1), delta_, transpose::no, weights_, transpose::no, T(0), into);
    }

    /// dW = (1/n) delta^T x and db = (1/n) sum_rows delta.
    void compute_gradient(const matrix<T>& x) {
        const std::size_t n = delta_.shape(0);
        if (x.shape(0) != n || x.shape(1) != input_size()) {
            throw shape_error("lightloop::dense (" + describe() + "): gradient input is " +
                              std::to_string(x.shape(0)) + "x" + std::to_string(x.shape(1)) +
                              ", expected " + std::to_string(n) + "x" +
                              std::to_string(input_size()));
        }
        const T inv_n = T(1) / static_cast<T>(n);
        gemm(inv_n, delta_, transpose::yes, x, transpose::no, T(0), weight_gradient_);
        const std::size_t out = output_size();
        T* db = bias_gradient_.data();
        const T* d = delta_.data();
        // Columns in pieces, each summed over the rows in order: the same
        // bits on any thread count.
        parallel_for_ranges(out, elementwise_grain / std::max<std::size_t>(n, 1),
                            [&](std::size_t first, std::size_t end) {
                                std::fill(db + first, db + end, T(0));
                                for (std::size_t r = 0; r < n; ++r) {
                                    for (std::size_t c = first; c < end; ++c) {
                                        db[c] += d[r * out + c];
                                    }
                                }
                                for (std::size_t c = first; c < end; ++c) {
                                    db[c] *= inv_n;
                                }
                            });
    }

    /// An upper bound on |every gradient entry| that compute_gradient(x)
    /// gives when delta is finite with max |delta| = delta_max, or +inf when
    /// it cannot vouch for a finite gradient. Each entry is a mean over the n
    /// rows of products delta * x (the bias's, of delta alone): at most
    /// delta_max * max(max |x|, 1), doubled for the rounding of the n-term
    /// sum; the sum itself stays below n * delta_max * max(max |x|, 1), which
    /// must leave half of T's range. When this says +inf, the network reads
    /// the gradients themselves.
    double gradient_bound(const matrix<T>& x, double delta_max) const {
        const double x_max =
          detail::largest_magnitude_or_inf(std::span<const T>(x.data(), x.size()));
        const double entry = delta_max * std::max(x_max, 1.0);
        const double sum = static_cast<double>(delta_.shape(0)) * entry;
        // An infinite or NaN bound fails the comparison.
        if (!(sum < 0.5 * static_cast<double>(std::numeric_limits<T>::max()))) {
            return std::numeric_limits<double>::infinity();
        }
        return 2.0 * entry;
    }

    /// The names and shapes of what visit_parameters visits: weight
    /// (out x in) and bias (out), PyTorch's names.
    std::vector<parameter_shape> parameter_layout() const {
        return {{"weight", {output_size(), input_size()}}, {"bias", {output_size()}}};
    }

    /// f(W, dW) then f(b, db).
    template <class F>
    void visit_parameters(F&& f) {
        f(std::span<T>(weights_.data(), weights_.size()),
          std::span<const T>(weight_gradient_.data(), weight_gradient_.size()));
        f(std::span<T>(bias_.data(), bias_.size()),
          std::span<const T>(bias_gradient_.data(), bias_gradient_.size()));
    }

    const matrix<T>& output() const noexcept { return output_; }
    const matrix<T>& pre_activation() const noexcept { return pre_activation_; }
    matrix<T>& delta() noexcept { return delta_; }
    const matrix<T>& delta() const noexcept { return delta_; }
    matrix<T>& weights() noexcept { return weights_; }
    const matrix<T>& weights() const noexcept { return weights_; }
    vector<T>& bias() noexcept { return bias_; }
    const vector<T>& bias() const noexcept { return bias_; }
    const matrix<T>& weight_gradient() const noexcept { return weight_gradient_; }
    const vector<T>& bias_gradient() const noexcept { return bias_gradient_; }
    const Act& activation_policy() const noexcept { return act_; }
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
    Act act_;
    init scheme_;
    matrix<T> weights_;
    vector<T> bias_;
    matrix<T> weight_gradient_;
    vector<T> bias_gradient_;
    matrix<T> pre_activation_;
    matrix<T> output_;
    matrix<T> delta_;
};

static_assert(layer<dense<identity, float>>);
static_assert(layer<dense<tanh_act, double>>);

} // namespace lightloop
