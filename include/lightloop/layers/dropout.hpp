#pragma once
// Dropout (Srivastava et al. 2014), inverted: in training each value is kept
// with probability 1 - rate and scaled by 1 / (1 - rate), or zeroed; at
// evaluation the layer passes its input through unchanged.
//
// The network tells training passes from evaluation ones: it calls
// forward_training(x, step, samples) in a training step (and in the alignment
// probe, which sees the same masks) and forward(x) everywhere else. The mask
// of sample r at step s is drawn from a generator seeded by (the layer's
// seed, s, r) alone, so it is the same on any thread count, after a
// checkpoint is resumed (the step count is saved), in a diagnostic pass that
// must not disturb training (the layer keeps no random state), and on
// whichever process holds the sample in data-parallel training (a shard's
// row i is sample samples(i) of the whole batch: core/shape.hpp).
//
// Backprop and feedback alignment pass the signal back through the mask
// (dropped units get none). DFA, DRTP and sign-DFA give dropout, like every
// layer without parameters, no slice of the projection: the layer below
// receives its own projected signal, mask or not.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "lightloop/core/concepts.hpp"
#include "lightloop/core/describe.hpp"
#include "lightloop/core/error.hpp"
#include "lightloop/core/parallel.hpp"
#include "lightloop/core/random.hpp"
#include "lightloop/core/shape.hpp"
#include "lightloop/core/tensor.hpp"
#include "lightloop/layers/pooling.hpp"

namespace lightloop {

template <scalar T = float>
class dropout : public detail::parameter_free_layer<T> {
public:
    /// Drops each of a sample's shape.size() values with probability `rate`,
    /// in [0, 1).
    dropout(feature_shape shape, double rate)
      : detail::parameter_free_layer<T>(shape, shape)
      , rate_(rate) {
        if (!(rate >= 0.0 && rate < 1.0)) {
            throw config_error("lightloop::dropout: rate must be in [0, 1), got " +
                               number_text(rate));
        }
        if (shape.size() == 0) {
            throw config_error("lightloop::dropout: the width must be positive");
        }
    }

    /// Over vectors of `width` values.
    dropout(std::size_t width, double rate)
      : dropout(feature_shape{width, 1, 1}, rate) {}

    /// The seed the masks are drawn from (the network passes each layer its
    /// own).
    void initialize(std::uint64_t seed) noexcept { seed_ = seed; }

    /// Evaluation: the input, unchanged.
    const matrix<T>& forward(const matrix<T>& x) {
        prepare(x);
        std::copy(x.begin(), x.end(), this->output_.begin());
        masked_ = false; // backpropagate passes the signal through

        return this->output_;
    }

    /// Training at step `step`: each value kept and scaled by 1/(1 - rate)
    /// with probability 1 - rate, else zeroed. Row r's mask is sample
    /// samples(r)'s: a data-parallel shard's rows get the masks their samples
    /// get in the whole batch.
    const matrix<T>& forward_training(const matrix<T>& x, std::uint64_t step,
                                      sample_numbering samples = {}) {
        prepare(x);
        const std::size_t n = x.shape(0);
        const std::size_t width = this->out_.size();
        if (keep_.size() != n * width) {
            keep_.resize(n * width);
        }
        const T scale = static_cast<T>(1.0 / (1.0 - rate_));
        const double rate = rate_;
        const std::uint64_t step_seed = derive_seed(seed_, step);
        const T* in = x.data();
        T* out = this->output_.data();
        T* keep = keep_.data();
        parallel_for_rows(n, width, [&](std::size_t first, std::size_t end) {
            for (std::size_t r = first; r < end; ++r) {
                rng gen(derive_seed(step_seed, samples(r)));
                for (std::size_t c = 0; c < width; ++c) {
                    const std::size_t i = r * width + c;
                    keep[i] = gen.uniform() < rate ? T(0) : scale;
                    out[i] = in[i] * keep[i];
                }
            }
        });
        masked_ = true;
        return this->output_;
    }

    /// into = delta ⊙ mask / (1 - rate) after a training pass, delta after
    /// an evaluation pass.
    void backpropagate(matrix<T>& into) const {
        const T* d = this->delta_.data();
        T* g = into.data();
        if (!masked_) {
            std::copy_n(d, this->delta_.size(), g);
            return;
        }
        const T* keep = keep_.data();
        parallel_for_ranges(this->delta_.size(), elementwise_grain,
                            [&](std::size_t begin, std::size_t end) {
                                for (std::size_t i = begin; i < end; ++i) {
                                    g[i] = d[i] * keep[i];
                                }
                            });
    }

    double rate() const noexcept { return rate_; }

    /// "dropout 1024 p=0.5", for checkpoint signatures and messages.
    std::string describe() const {
        return "dropout " + this->in_.text() + " p=" + setting_text(rate_);
    }
    std::string signature() const { return describe(); }

private:
    void prepare(const matrix<T>& x) {
        this->check_input(x, [this] { return describe(); });
        ensure_shape(this->output_, x.shape(0), x.shape(1));
        ensure_shape(this->delta_, x.shape(0), x.shape(1));
    }

    double rate_;
    std::uint64_t seed_ = 0;
    std::vector<T> keep_; // per value of the last training pass: 0 or 1/(1 - rate)
    bool masked_ = false;
};

static_assert(layer<dropout<float>> && layer<dropout<double>>);

} // namespace lightloop
