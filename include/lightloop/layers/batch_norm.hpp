#pragma once
// Batch normalisation (Ioffe & Szegedy 2015), per channel: PyTorch's
// BatchNorm2d over C maps of H x W (BatchNorm1d for vectors, shape {d, 1,
// 1}), with γ, β per channel and the activation fused as in dense:
//   x̂ = (x - μ_c) / sqrt(σ²_c + eps),  a = γ_c x̂ + β_c,  h = f(a).
//
// Training passes (forward_training) normalise by the batch's own mean and
// (biased) variance over its n·H·W values per channel; evaluation passes
// (forward) by the running estimates. The running estimates move only when a
// training step is applied (commit_training_pass, called by the network
// after a successful update: a step that diverges, and the alignment probe,
// leave them as they were), as PyTorch's: r ← (1 - momentum) r + momentum ·
// batch, with the unbiased variance. They are saved in checkpoints
// (visit_buffers) and regenerated nowhere.
//
// Feedback methods. The layer has parameters (γ, β), so DFA, DRTP and
// sign-DFA give it a slice of the projection: its γ and β learn from the
// projected signal at its output, and the layer below gets a projection of
// its own; no signal crosses the normalisation, so DFA keeps no batch-wide
// backward pass. Feedback alignment passes the signal through its exact
// backward (backward_is_local): it transports no weight matrix.

#include <algorithm>
#include <array>
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

namespace detail {
/// The sums over one channel's values (n rows of `positions` values from
/// `first`, row stride `width`) of the K terms terms(i) gives for value i,
/// in double: eight partial sums per term (by position mod 8 within a row;
/// a row's last positions < 8 into the first), added in a fixed order at the
/// end. The same bits on any thread count, and eight independent chains of
/// additions instead of one, whose adder latency bounded the pass (README,
/// Speed, has the figures).
template <std::size_t K, class Terms>
std::array<double, K> channel_sums(std::size_t n, std::size_t width, std::size_t first,
                                   std::size_t positions, Terms&& terms) {
    constexpr std::size_t lanes = 8;
    std::array<std::array<double, lanes>, K> partial{};
    const std::size_t whole = positions / lanes * lanes;
    for (std::size_t s = 0; s < n; ++s) {
        const std::size_t at = s * width + first;
        for (std::size_t p = 0; p < whole; p += lanes) {
            for (std::size_t l = 0; l < lanes; ++l) {
                const std::array<double, K> t = terms(at + p + l);
                for (std::size_t k = 0; k < K; ++k) {
                    partial[k][l] += t[k];
                }
            }
        }
        for (std::size_t p = whole; p < positions; ++p) {
            const std::array<double, K> t = terms(at + p);
            for (std::size_t k = 0; k < K; ++k) {
                partial[k][0] += t[k];
            }
        }
    }
    std::array<double, K> sums{};
    for (std::size_t k = 0; k < K; ++k) {
        const auto& q = partial[k];
        sums[k] = ((q[0] + q[1]) + (q[2] + q[3])) + ((q[4] + q[5]) + (q[6] + q[7]));
    }
    return sums;
}
} // namespace detail

struct batch_norm_spec {
    double momentum = 0.1;
    double eps = 1e-5;
};

template <class Act = identity, scalar T = float>
requires activation<Act, T>
class batch_norm : public detail::affine_layer<Act, T> {
    using affine = detail::affine_layer<Act, T>;

public:
    static constexpr bool backward_is_local = true;

    explicit batch_norm(feature_shape shape, batch_norm_spec spec = {})
      : batch_norm(shape, Act{}, spec) {}

    batch_norm(feature_shape shape, Act act, batch_norm_spec spec = {})
      : affine(act, checked(shape, spec).channels, 1)
      , shape_(shape)
      , spec_(spec)
      , running_mean_(shape.channels, 0.0f)
      , running_var_(shape.channels, 1.0f) {
        this->weights_.fill(T(1));
    }

    /// Over vectors of `width` features (BatchNorm1d).
    explicit batch_norm(std::size_t width, batch_norm_spec spec = {})
      : batch_norm(feature_shape{width, 1, 1}, spec) {}

    std::size_t input_size() const noexcept { return shape_.size(); }
    std::size_t output_size() const noexcept { return shape_.size(); }
    feature_shape input_shape() const noexcept { return shape_; }
    feature_shape output_shape() const noexcept { return shape_; }

    /// γ = 1, β = 0, running mean 0 and variance 1.
    void initialize(std::uint64_t) {
        this->weights_.fill(T(1));
        this->bias_.fill(T(0));
        std::fill(running_mean_.begin(), running_mean_.end(), T(0));
        std::fill(running_var_.begin(), running_var_.end(), T(1));
    }

    /// Evaluation: normalised by the running estimates.
    const matrix<T>& forward(const matrix<T>& x) {
        prepare(x, "input");
        for (std::size_t c = 0; c < shape_.channels; ++c) {
            mean_[c] = static_cast<double>(running_mean_[c]);
            inverse_std_[c] = 1.0 / std::sqrt(static_cast<double>(running_var_[c]) + spec_.eps);
        }
        normalise(x);
        batch_statistics_ = false;
        return this->output_;
    }

    /// Training: normalised by the batch's own statistics per channel, kept
    /// for commit_training_pass.
    const matrix<T>& forward_training(const matrix<T>& x, std::uint64_t) {
        prepare(x, "input");
        const std::size_t n = x.shape(0);
        const std::size_t positions = shape_.height * shape_.width;
        const double count = static_cast<double>(n * positions);
        if (n * positions < 2) {
            throw shape_error("lightloop::batch_norm (" + describe() +
                              "): a training batch needs more than one value per channel, got " +
                              std::to_string(n) + " sample(s) of " + shape_.text());
        }
        const T* in = x.data();
        const std::size_t width = shape_.size();
        parallel_for_ranges(shape_.channels, 1, [&](std::size_t first, std::size_t end) {
            for (std::size_t c = first; c < end; ++c) {
                const double mean = detail::channel_sums<1>(n, width, c * positions, positions,
                                                            [&](std::size_t i) {
                                                                return std::array<double, 1>{
                                                                  static_cast<double>(in[i])};
                                                            })[0] /
                                    count;
                const double squares =
                  detail::channel_sums<1>(n, width, c * positions, positions, [&](std::size_t i) {
                      const double d = static_cast<double>(in[i]) - mean;
                      return std::array<double, 1>{d * d};
                  })[0];
                mean_[c] = mean;
                variance_[c] = squares / count;
                inverse_std_[c] = 1.0 / std::sqrt(variance_[c] + spec_.eps);
            }
        });
        normalise(x);
        batch_statistics_ = true;
        batch_values_ = n * positions;
        return this->output_;
    }

    /// Moves the running estimates towards the last training pass's batch
    /// statistics (the unbiased variance), once; the network calls it when
    /// that pass's step has been applied.
    void commit_training_pass() {
        if (!batch_statistics_ || committed_) {
            return;
        }
        const double m = spec_.momentum;
        const double unbiased =
          static_cast<double>(batch_values_) / static_cast<double>(batch_values_ - 1);
        for (std::size_t c = 0; c < shape_.channels; ++c) {
            running_mean_[c] =
              static_cast<T>((1 - m) * static_cast<double>(running_mean_[c]) + m * mean_[c]);
            running_var_[c] = static_cast<T>((1 - m) * static_cast<double>(running_var_[c]) +
                                             m * variance_[c] * unbiased);
        }
        committed_ = true;
    }

    /// into = the exact gradient with respect to the input: after a training
    /// pass (γ_c/σ_c)(δ - mean_c(δ) - x̂ mean_c(δ x̂)), the means over the
    /// batch's values of channel c; after an evaluation pass (γ_c/σ_c) δ.
    void backpropagate(matrix<T>& into) const {
        const std::size_t n = this->delta_.shape(0);
        const std::size_t positions = shape_.height * shape_.width;
        const std::size_t width = shape_.size();
        const T* d = this->delta_.data();
        const T* xhat = normalised_.data();
        const T* gamma = this->weights_.data();
        T* out = into.data();
        const double count = static_cast<double>(n * positions);
        parallel_for_ranges(shape_.channels, 1, [&](std::size_t first, std::size_t end) {
            for (std::size_t c = first; c < end; ++c) {
                double d_mean = 0;
                double dx_mean = 0;
                if (batch_statistics_) {
                    const auto sums = detail::channel_sums<2>(
                      n, width, c * positions, positions, [&](std::size_t i) {
                          const auto v = static_cast<double>(d[i]);
                          return std::array<double, 2>{v, v * static_cast<double>(xhat[i])};
                      });
                    d_mean = sums[0] / count;
                    dx_mean = sums[1] / count;
                }
                const double scale = static_cast<double>(gamma[c]) * inverse_std_[c];
                for (std::size_t s = 0; s < n; ++s) {
                    const std::size_t at = s * width + c * positions;
                    for (std::size_t p = 0; p < positions; ++p) {
                        const double v = static_cast<double>(d[at + p]) - d_mean -
                                         static_cast<double>(xhat[at + p]) * dx_mean;
                        out[at + p] = static_cast<T>(scale * v);
                    }
                }
            }
        });
    }

    /// dγ_c = (1/n) Σ δ x̂ and dβ_c = (1/n) Σ δ over channel c's values.
    void compute_gradient(const matrix<T>& x) {
        prepare_check(x, "gradient input");
        const std::size_t n = this->delta_.shape(0);
        const std::size_t positions = shape_.height * shape_.width;
        const std::size_t width = shape_.size();
        const T* d = this->delta_.data();
        const T* xhat = normalised_.data();
        T* dg = this->weight_gradient_.data();
        T* db = this->bias_gradient_.data();
        parallel_for_ranges(shape_.channels, 1, [&](std::size_t first, std::size_t end) {
            for (std::size_t c = first; c < end; ++c) {
                const auto sums =
                  detail::channel_sums<2>(n, width, c * positions, positions, [&](std::size_t i) {
                      const auto v = static_cast<double>(d[i]);
                      return std::array<double, 2>{v * static_cast<double>(xhat[i]), v};
                  });
                dg[c] = static_cast<T>(sums[0] / static_cast<double>(n));
                db[c] = static_cast<T>(sums[1] / static_cast<double>(n));
            }
        });
    }

    /// f(running mean), f(running variance): state that is not trained but
    /// is saved with the parameters (checkpoints).
    template <class F>
    void visit_buffers(F&& f) {
        f(std::span<T>(running_mean_));
        f(std::span<T>(running_var_));
    }

    /// weight γ and bias β per channel (PyTorch's names).
    std::vector<parameter_shape> parameter_layout() const {
        return {{"weight", {shape_.channels}}, {"bias", {shape_.channels}}};
    }

    /// The fewest rows a training batch may have: a channel's statistics
    /// need more than one value, so 2 where a sample has one value per
    /// channel (a feature vector), else 1. fit checks every batch of the
    /// epoch against it before training.
    std::size_t smallest_training_batch() const noexcept {
        return shape_.height * shape_.width < 2 ? 2 : 1;
    }

    std::span<const T> running_mean() const noexcept { return running_mean_; }
    std::span<const T> running_var() const noexcept { return running_var_; }
    const batch_norm_spec& spec() const noexcept { return spec_; }

    /// "batch_norm<tanh> 32x28x28 momentum=0.100000", for checkpoint
    /// signatures.
    std::string signature() const {
        return "batch_norm<" + name_of<Act>() + "> " + shape_.text() +
               " momentum=" + std::to_string(spec_.momentum) + " eps=" + std::to_string(spec_.eps);
    }
    std::string describe() const { return "batch_norm " + shape_.text(); }

private:
    static feature_shape checked(feature_shape shape, const batch_norm_spec& spec) {
        if (shape.size() == 0 || !(spec.eps > 0.0) || !std::isfinite(spec.eps) ||
            !(spec.momentum >= 0.0 && spec.momentum <= 1.0)) {
            throw config_error("lightloop::batch_norm: the shape must be non-empty, eps positive "
                               "and momentum in [0, 1], got " +
                               shape.text() + ", eps " + number_text(spec.eps) + ", momentum " +
                               number_text(spec.momentum));
        }
        return shape;
    }

    void prepare_check(const matrix<T>& x, const char* what) const {
        if (x.shape(1) != shape_.size()) {
            throw shape_error("lightloop::batch_norm (" + describe() + "): " + what + " has " +
                              std::to_string(x.shape(1)) + " columns, expected " +
                              std::to_string(shape_.size()));
        }
    }

    void prepare(const matrix<T>& x, const char* what) {
        prepare_check(x, what);
        this->shape_batch(x.shape(0), shape_.size());
        ensure_shape(normalised_, x.shape(0), shape_.size());
        if (mean_.size() != shape_.channels) {
            mean_.resize(shape_.channels);
            variance_.resize(shape_.channels);
            inverse_std_.resize(shape_.channels);
        }
        committed_ = false;
    }

    /// x̂, a and h from mean_ and inverse_std_, sample by sample.
    void normalise(const matrix<T>& x) {
        const std::size_t n = x.shape(0);
        const std::size_t width = shape_.size();
        const std::size_t positions = shape_.height * shape_.width;
        const T* in = x.data();
        const T* gamma = this->weights_.data();
        const T* beta = this->bias_.data();
        T* xhat = normalised_.data();
        T* a = this->pre_activation_.data();
        T* h = this->output_.data();
        parallel_for_rows(n, width, [&](std::size_t first, std::size_t end) {
            for (std::size_t s = first; s < end; ++s) {
                for (std::size_t c = 0; c < shape_.channels; ++c) {
                    const std::size_t at = s * width + c * positions;
                    for (std::size_t p = 0; p < positions; ++p) {
                        xhat[at + p] = static_cast<T>((static_cast<double>(in[at + p]) - mean_[c]) *
                                                      inverse_std_[c]);
                        a[at + p] = gamma[c] * xhat[at + p] + beta[c];
                    }
                }
                detail::activate_row(this->act_, a + s * width, h + s * width, width);
            }
        });
    }

    feature_shape shape_;
    batch_norm_spec spec_;
    std::vector<T> running_mean_;
    std::vector<T> running_var_;
    matrix<T> normalised_;
    std::vector<double> mean_;        // per channel, of the last pass
    std::vector<double> variance_;    // per channel, of the last training pass (biased)
    std::vector<double> inverse_std_; // per channel, of the last pass
    std::size_t batch_values_ = 0;    // n·H·W of the last training pass
    bool batch_statistics_ = false;   // the last pass was a training pass
    bool committed_ = false;          // its statistics are in the running estimates
};

static_assert(layer<batch_norm<identity, float>>);
static_assert(layer<batch_norm<tanh_act, double>>);

} // namespace lightloop
