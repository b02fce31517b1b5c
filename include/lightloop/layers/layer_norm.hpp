#pragma once
// Layer normalisation (Ba et al. 2016): each sample's C·H·W values are
// normalised by their own mean and variance, then scaled and shifted per
// value (PyTorch's LayerNorm over the whole feature shape, with its
// elementwise affine), and the activation is fused as in dense:
//   x̂ = (x - mean) / sqrt(var + eps),  a = γ ⊙ x̂ + β,  h = f(a).
// γ starts at 1 and β at 0 (PyTorch's names: weight, bias).
//
// Feedback methods. The layer has parameters, so DFA, DRTP and sign-DFA give
// it a slice of the projection like any trained layer: γ and β learn from
// the projected signal at its output, and the layer below gets a projection
// of its own (no signal crosses the normalisation). Its backward product
// transports no weight matrix, only γ elementwise and the sample's own
// statistics, so feedback alignment routes the signal through it exactly
// (backward_is_local), as through pooling.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "lightloop/core/concepts.hpp"
#include "lightloop/core/describe.hpp"
#include "lightloop/core/error.hpp"
#include "lightloop/core/parallel.hpp"
#include "lightloop/core/shape.hpp"
#include "lightloop/core/tensor.hpp"
#include "lightloop/layers/activations.hpp"
#include "lightloop/layers/affine.hpp"

namespace lightloop {

template <class Act = identity, scalar T = float>
requires activation<Act, T>
class layer_norm : public detail::affine_layer<Act, T> {
    using affine = detail::affine_layer<Act, T>;

public:
    /// Feedback alignment passes the signal through this layer's exact
    /// backward product: there is no weight matrix to replace.
    static constexpr bool backward_is_local = true;

    /// Normalises over a whole sample of `shape`; eps as PyTorch's default.
    explicit layer_norm(feature_shape shape, double eps = 1e-5)
      : layer_norm(shape, Act{}, eps) {}

    layer_norm(feature_shape shape, Act act, double eps = 1e-5)
      : affine(act, checked(shape, eps).size(), 1) // γ as a column: one scale per value
      , shape_(shape)
      , eps_(eps) {
        this->weights_.fill(T(1));
    }

    /// Over vectors of `width` values.
    explicit layer_norm(std::size_t width, double eps = 1e-5)
      : layer_norm(feature_shape{width, 1, 1}, eps) {}

    std::size_t input_size() const noexcept { return shape_.size(); }
    std::size_t output_size() const noexcept { return shape_.size(); }
    feature_shape input_shape() const noexcept { return shape_; }
    feature_shape output_shape() const noexcept { return shape_; }

    /// γ = 1, β = 0 (the seed is not needed).
    void initialize(std::uint64_t) {
        this->weights_.fill(T(1));
        this->bias_.fill(T(0));
    }

    const matrix<T>& forward(const matrix<T>& x) {
        if (x.shape(1) != shape_.size()) {
            throw shape_error("lightloop::layer_norm (" + describe() + "): input has " +
                              std::to_string(x.shape(1)) + " columns, expected " +
                              std::to_string(shape_.size()));
        }
        const std::size_t n = x.shape(0);
        const std::size_t width = shape_.size();
        this->shape_batch(n, width);
        ensure_shape(normalised_, n, width);
        if (inverse_std_.size() != n) {
            inverse_std_.resize(n);
        }
        const T* in = x.data();
        const T* gamma = this->weights_.data();
        const T* beta = this->bias_.data();
        T* xhat = normalised_.data();
        T* a = this->pre_activation_.data();
        T* h = this->output_.data();
        parallel_for_rows(n, width, [&](std::size_t first, std::size_t end) {
            for (std::size_t r = first; r < end; ++r) {
                const T* row = in + r * width;
                double mean = 0;
                for (std::size_t c = 0; c < width; ++c) {
                    mean += static_cast<double>(row[c]);
                }
                mean /= static_cast<double>(width);
                double variance = 0;
                for (std::size_t c = 0; c < width; ++c) {
                    const double d = static_cast<double>(row[c]) - mean;
                    variance += d * d;
                }
                variance /= static_cast<double>(width);
                const double inverse = 1.0 / std::sqrt(variance + eps_);
                inverse_std_[r] = inverse;
                T* xr = xhat + r * width;
                T* ar = a + r * width;
                for (std::size_t c = 0; c < width; ++c) {
                    xr[c] = static_cast<T>((static_cast<double>(row[c]) - mean) * inverse);
                    ar[c] = gamma[c] * xr[c] + beta[c];
                }
                detail::activate_row(this->act_, ar, h + r * width, width);
            }
        });
        return this->output_;
    }

    /// into = (1/σ) (g - mean(g) - x̂ mean(g ⊙ x̂)), g = δ ⊙ γ, per sample.
    void backpropagate(matrix<T>& into) const {
        const std::size_t n = this->delta_.shape(0);
        const std::size_t width = shape_.size();
        const T* d = this->delta_.data();
        const T* gamma = this->weights_.data();
        const T* xhat = normalised_.data();
        T* out = into.data();
        parallel_for_rows(n, width, [&](std::size_t first, std::size_t end) {
            for (std::size_t r = first; r < end; ++r) {
                const T* dr = d + r * width;
                const T* xr = xhat + r * width;
                double g_mean = 0;
                double gx_mean = 0;
                for (std::size_t c = 0; c < width; ++c) {
                    const double g = static_cast<double>(dr[c]) * static_cast<double>(gamma[c]);
                    g_mean += g;
                    gx_mean += g * static_cast<double>(xr[c]);
                }
                g_mean /= static_cast<double>(width);
                gx_mean /= static_cast<double>(width);
                T* o = out + r * width;
                for (std::size_t c = 0; c < width; ++c) {
                    const double g = static_cast<double>(dr[c]) * static_cast<double>(gamma[c]);
                    o[c] = static_cast<T>(inverse_std_[r] *
                                          (g - g_mean - static_cast<double>(xr[c]) * gx_mean));
                }
            }
        });
    }

    /// dγ = (1/n) Σ_samples δ ⊙ x̂, dβ = (1/n) Σ_samples δ; each column
    /// summed over the rows in order (the same bits on any thread count).
    void compute_gradient(const matrix<T>& x) {
        const std::size_t n = this->delta_.shape(0);
        if (x.shape(0) != n || x.shape(1) != shape_.size()) {
            throw shape_error("lightloop::layer_norm (" + describe() + "): gradient input is " +
                              std::to_string(x.shape(0)) + "x" + std::to_string(x.shape(1)));
        }
        const std::size_t width = shape_.size();
        const T inv_n = T(1) / static_cast<T>(n);
        detail::scaled_column_sums(this->delta_.data(), normalised_.data(), n, width, inv_n,
                                   this->bias_gradient_.data(), this->weight_gradient_.data());
    }

    /// weight γ and bias β, each of the feature shape's size (PyTorch's
    /// names).
    std::vector<parameter_shape> parameter_layout() const {
        return {{"weight", {shape_.size()}}, {"bias", {shape_.size()}}};
    }

    double eps() const noexcept { return eps_; }
    /// x̂ of the last forward pass.
    const matrix<T>& normalised() const noexcept { return normalised_; }

    /// "layer_norm<tanh> 32x14x14", for checkpoint signatures.
    std::string signature() const { return "layer_norm<" + name_of<Act>() + "> " + shape_.text(); }
    std::string describe() const { return "layer_norm " + shape_.text(); }

private:
    static feature_shape checked(feature_shape shape, double eps) {
        if (shape.size() == 0 || !(eps > 0.0) || !std::isfinite(eps)) {
            throw config_error("lightloop::layer_norm: the shape must be non-empty and eps "
                               "positive, got " +
                               shape.text() + " and eps " + number_text(eps));
        }
        return shape;
    }

    feature_shape shape_;
    double eps_;
    matrix<T> normalised_;
    std::vector<double> inverse_std_; // per sample of the last forward pass
};

static_assert(layer<layer_norm<identity, float>>);
static_assert(layer<layer_norm<tanh_act, double>>);

} // namespace lightloop
