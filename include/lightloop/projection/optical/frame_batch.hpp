#pragma once
// The binary frames of one optical projection: the encoder's frames of every
// sample, the empty ones dropped and the rest packed, cut into blocks for the
// threads, and the decoded rows summed back into their samples.

#include <algorithm>
#include <cstddef>
#include <span>
#include <vector>

#include "lightloop/core/concepts.hpp"
#include "lightloop/core/simd.hpp"
#include "lightloop/core/tensor.hpp"

namespace lightloop {

template <scalar T>
class frame_batch {
public:
    /// Encodes every row of x (n x in) into the encoder's F frames and
    /// weights, keeps the non-empty frames packed at the top and returns how
    /// many there are (active()).
    template <class Encoder>
    std::size_t encode(const Encoder& encoder, const matrix<T>& x) {
        const std::size_t n = x.shape(0);
        in_ = x.shape(1);
        f_count_ = encoder.frames_per_sample();
        ensure_shape(frames_, n * f_count_, in_);
        weights_.resize(n * f_count_);
        encoded_norm2_.resize(n);
        owner_.resize(n * f_count_);
        active_ = 0;
        T* frames = frames_.data();
        const std::size_t in = in_;
        const std::size_t f_count = f_count_;
        for (std::size_t r = 0; r < n; ++r) {
            // Encode into the slot right after the packed frames; r F >= active.
            T* slot = frames + active_ * in;
            encoder.encode(std::span<const T>(x.data() + r * in, in),
                           std::span<T>(slot, f_count * in),
                           std::span<double>(weights_.data() + r * f_count, f_count));
            double norm2 = 0.0;
            for (std::size_t k = 0; k < in; ++k) {
                double v = 0.0;
                for (std::size_t f = 0; f < f_count; ++f) {
                    v += weights_[r * f_count + f] * static_cast<double>(slot[f * in + k]);
                }
                norm2 += v * v;
            }
            encoded_norm2_[r] = norm2;
            for (std::size_t f = 0; f < f_count; ++f) {
                const T* frame = slot + f * in;
                const bool empty = std::all_of(frame, frame + in, [](T v) { return v == T(0); });
                if (empty || weights_[r * f_count + f] == 0.0) {
                    continue;
                }
                if (frames + active_ * in != frame) {
                    std::copy(frame, frame + in, frames + active_ * in);
                }
                owner_[active_] = r * f_count + f;
                ++active_;
            }
        }
        return active_;
    }

    /// Splits the active frames into blocks of about `rows` frames that never
    /// split a sample (so each output row has one writer), by the data alone:
    /// the noise of a block does not depend on the thread count.
    void plan_blocks(std::size_t rows) {
        block_start_.clear();
        block_start_.push_back(0);
        for (std::size_t i = 1; i < active_; ++i) {
            const bool new_sample = owner_[i] / f_count_ != owner_[i - 1] / f_count_;
            if (new_sample && i - block_start_.back() + f_count_ > rows) {
                block_start_.push_back(i);
            }
        }
        block_start_.push_back(active_);
    }

    std::size_t active() const noexcept { return active_; }
    std::size_t blocks() const noexcept { return block_start_.size() - 1; }
    /// Block b's active frames: [block_first(b), block_first(b + 1)).
    std::size_t block_first(std::size_t b) const noexcept { return block_start_[b]; }
    /// Active frame i (row-major, in values).
    const T* frame(std::size_t i) const noexcept { return frames_.data() + i * in_; }
    /// ||x̂_r||^2 of sample r as encoded.
    double encoded_norm2(std::size_t r) const noexcept { return encoded_norm2_[r]; }

    /// Writes each sample's row of out (width columns) that has frames among
    /// the active frames [first, first + rows) (a block: plan_blocks never
    /// splits a sample): the sum of weight * decoded row over its frames, in
    /// frame order, in one pass that writes the row once (no zeroed row read
    /// back and rewritten per frame). Rows of samples with no active frame
    /// are zero_silent_rows' job.
    void accumulate(std::size_t first, std::size_t rows, const T* decoded, std::size_t width,
                    matrix<T>& out) const {
        for (std::size_t i = 0; i < rows;) {
            const std::size_t sample = owner_[first + i] / f_count_;
            std::size_t frames = 1;
            while (i + frames < rows && owner_[first + i + frames] / f_count_ == sample) {
                ++frames;
            }
            const T* row = decoded + i * width;
            const std::size_t* owner = owner_.data() + first + i;
            const double* weights = weights_.data();
            T* target = out.data() + sample * width;
            simd::for_each_lane<T>(width, [&](std::size_t j, auto lane) {
                using V = decltype(lane);
                V sum = V(static_cast<T>(weights[owner[0]])) * simd::load<V>(row + j);
                for (std::size_t f = 1; f < frames; ++f) {
                    sum = sum +
                          V(static_cast<T>(weights[owner[f]])) * simd::load<V>(row + f * width + j);
                }
                simd::store(target + j, sum);
            });
            i += frames;
        }
    }

    /// Zeroes the rows of out (width columns) of the samples with no active
    /// frame (an all-zero input, or all its frames dropped), which no block
    /// writes.
    void zero_silent_rows(std::size_t width, matrix<T>& out) const {
        const std::size_t n = weights_.size() / f_count_;
        std::size_t next = 0; // the next active frame
        for (std::size_t r = 0; r < n; ++r) {
            const std::size_t first = next;
            while (next < active_ && owner_[next] / f_count_ == r) {
                ++next;
            }
            if (next == first) {
                std::fill(out.data() + r * width, out.data() + (r + 1) * width, T(0));
            }
        }
    }

private:
    matrix<T> frames_;                     // (n F x in), the first active_ rows non-empty
    std::vector<double> weights_;          // (n F)
    std::vector<double> encoded_norm2_;    // (n)
    std::vector<std::size_t> owner_;       // active frame -> sample * F + frame
    std::vector<std::size_t> block_start_; // first active frame of each block, then active_
    std::size_t in_ = 0;
    std::size_t f_count_ = 1;
    std::size_t active_ = 0;
};

} // namespace lightloop
