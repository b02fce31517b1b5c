#pragma once
// What dense and conv2d share: a weight matrix W (rows x cols), a bias of
// `rows`, their gradients, the fused activation, and the batch's
// pre-activation a, output h = f(a) and signal delta, each n x width.

#include <algorithm>
#include <cstddef>
#include <limits>
#include <span>

#include "lightloop/core/concepts.hpp"
#include "lightloop/core/finite.hpp"
#include "lightloop/core/tensor.hpp"
#include "lightloop/layers/activations.hpp"

namespace lightloop::detail {

template <class Act, scalar T>
class affine_layer {
public:
    using value_type = T;
    using activation_type = Act;

    /// delta = s ⊙ f'(a), s an (n x width) block with row stride ld.
    void scale_by_derivative(const T* signal, std::size_t ld) {
        scale_rows_by_derivative(act_, signal, ld, pre_activation_.data(), output_.data(),
                                 delta_.data(), pre_activation_.shape(0), pre_activation_.shape(1));
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

protected:
    affine_layer(Act act, std::size_t rows, std::size_t cols)
      : act_(act) {
        weights_ = matrix<T>::from_shape({rows, cols});
        weight_gradient_ = matrix<T>::from_shape({rows, cols});
        bias_ = vector<T>::from_shape({rows});
        bias_gradient_ = vector<T>::from_shape({rows});
        weights_.fill(T(0));
        weight_gradient_.fill(T(0));
        bias_.fill(T(0));
        bias_gradient_.fill(T(0));
    }

    /// Shapes a, h and delta for a batch of n (allocates only when n changes).
    void shape_batch(std::size_t n, std::size_t width) {
        ensure_shape(pre_activation_, n, width);
        ensure_shape(output_, n, width);
        ensure_shape(delta_, n, width);
    }

    /// The gradient_bound of a layer whose every gradient entry is a mean
    /// over the n samples of a sum of `terms` products delta · x (the
    /// bias's, of delta alone): at most terms · delta_max · max(max |x|, 1),
    /// doubled for rounding; the sums before the 1/n must leave half of T's
    /// range, or the bound is +inf (the network then reads the gradients).
    double bound_gradient(const matrix<T>& x, double delta_max, double terms) const {
        const double x_max = largest_magnitude_or_inf(std::span<const T>(x.data(), x.size()));
        const double entry = terms * delta_max * std::max(x_max, 1.0);
        const double sum = static_cast<double>(delta_.shape(0)) * entry;
        // An infinite or NaN bound fails the comparison.
        if (!(sum < 0.5 * static_cast<double>(std::numeric_limits<T>::max()))) {
            return std::numeric_limits<double>::infinity();
        }
        return 2.0 * entry;
    }

    Act act_;
    matrix<T> weights_;
    vector<T> bias_;
    matrix<T> weight_gradient_;
    vector<T> bias_gradient_;
    matrix<T> pre_activation_;
    matrix<T> output_;
    matrix<T> delta_;
};

} // namespace lightloop::detail
