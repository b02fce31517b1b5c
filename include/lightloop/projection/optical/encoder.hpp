#pragma once
// Encoders: from a real vector (the error e) to binary micromirror frames.
//
// A DMD shows binary patterns only, so e is written as a weighted sum of
// binary frames, e ≈ sum_f w_f frame_f. Both encoders below split signs into
// a "plus" and a "minus" frame family (e_t = e₊ - e₋); the device projects
// every frame and recombines the projections with the same weights, which for
// a linear readout gives B e_t exactly.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>
#include <string>

#include "lightloop/core/concepts.hpp"
#include "lightloop/core/error.hpp"

namespace lightloop {

namespace detail {
template <class T>
double largest_magnitude(std::span<const T> x) {
    double largest = 0.0;
    for (const T v : x) {
        largest = std::max(largest, std::abs(static_cast<double>(v)));
    }
    return largest;
}
} // namespace detail

/// Ternarization e_t = 1[e > τ] - 1[e < -τ] with τ = threshold * max_k |e_k|,
/// shown as two frames e₊ = 1[e > τ] and e₋ = 1[e < -τ].
///
/// τ is relative to the sample's largest error, so the pattern does not depend
/// on the error's overall size. Default threshold 0.25: with softmax
/// cross-entropy the true class's entry (p_y - 1) is usually the largest in
/// magnitude and always kept, and wrong classes are kept when their
/// probability is at least a quarter of it. The magnitude is restored by one
/// scalar per sample, the least-squares fit s = <e, e_t> / <e_t, e_t> (the
/// mean |e_k| over the kept entries), so s e_t is the best multiple of e_t.
struct ternary_encoder {
    double threshold = 0.25;

    ternary_encoder() = default;
    explicit ternary_encoder(double relative_threshold)
      : threshold(relative_threshold) {
        if (!(relative_threshold >= 0.0 && relative_threshold < 1.0)) {
            throw config_error("lightloop::ternary_encoder: threshold must be in [0, 1), got " +
                               std::to_string(relative_threshold));
        }
    }

    static constexpr std::size_t frames_per_sample() noexcept { return 2; }

    template <scalar T>
    void encode(std::span<const T> x, std::span<T> frames, std::span<double> weights) const {
        const std::size_t in = x.size();
        const double largest = detail::largest_magnitude(x);
        const double tau = threshold * largest;
        T* plus = frames.data();
        T* minus = frames.data() + in;
        double kept_magnitude = 0.0;
        std::size_t kept = 0;
        for (std::size_t k = 0; k < in; ++k) {
            const double v = static_cast<double>(x[k]);
            // A zero vector keeps nothing (0 > 0 is false), even with τ = 0.
            const bool up = v > tau && v > 0.0;
            const bool down = v < -tau && v < 0.0;
            plus[k] = up ? T(1) : T(0);
            minus[k] = down ? T(1) : T(0);
            if (up || down) {
                kept_magnitude += std::abs(v);
                ++kept;
            }
        }
        const double scale = kept > 0 ? kept_magnitude / static_cast<double>(kept) : 0.0;
        weights[0] = scale;
        weights[1] = -scale;
    }
};

/// Bit-plane encoding with `bits` planes per sign: |e_k| is quantised to
/// q_k = round(|e_k| / Δ) with Δ = max_k |e_k| / (2^bits - 1), and bit j of q_k
/// goes to plane j of the sign's family, weighted ±2^j Δ. Exact for inputs on
/// the grid; otherwise within Δ/2 per entry. Costs 2 * bits frames. One plane
/// (bits = 1) is ternarization at threshold 1/2 with scale max|e|.
struct bitplane_encoder {
    std::size_t bits = 4;

    bitplane_encoder() = default;
    explicit bitplane_encoder(std::size_t planes)
      : bits(planes) {
        if (planes < 1 || planes > 16) {
            throw config_error("lightloop::bitplane_encoder: planes must be in [1, 16], got " +
                               std::to_string(planes));
        }
    }

    std::size_t frames_per_sample() const noexcept { return 2 * bits; }

    template <scalar T>
    void encode(std::span<const T> x, std::span<T> frames, std::span<double> weights) const {
        const std::size_t in = x.size();
        const double largest = detail::largest_magnitude(x);
        const double levels = std::ldexp(1.0, static_cast<int>(bits)) - 1.0;
        const double step = largest / levels;
        std::fill(frames.begin(), frames.end(), T(0));
        for (std::size_t k = 0; k < in && step > 0.0; ++k) {
            const double v = static_cast<double>(x[k]);
            const auto q = static_cast<unsigned long>(std::lround(std::abs(v) / step));
            const std::size_t family = v > 0.0 ? 0 : bits; // plus planes first
            for (std::size_t j = 0; j < bits; ++j) {
                if ((q >> j) & 1UL) {
                    frames[(family + j) * in + k] = T(1);
                }
            }
        }
        for (std::size_t j = 0; j < bits; ++j) {
            const double w = std::ldexp(step, static_cast<int>(j));
            weights[j] = w;
            weights[bits + j] = -w;
        }
    }
};

static_assert(optical_encoder<ternary_encoder> && optical_encoder<ternary_encoder, double>);
static_assert(optical_encoder<bitplane_encoder> && optical_encoder<bitplane_encoder, double>);

} // namespace lightloop
