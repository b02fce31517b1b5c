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
#include "lightloop/core/describe.hpp"
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
/// on the error's overall size. The magnitude is restored digitally, by the
/// least-squares weight of each frame: with per_sign_scale (the default) s₊ is
/// the mean kept positive entry and s₋ the mean kept |negative| entry, so
/// e ≈ s₊ e₊ - s₋ e₋; without it one scale s = <e, e_t> / <e_t, e_t> serves
/// both (e ≈ s e_t). The DMD shows the same two frames either way.
///
/// Defaults (threshold 0.1, per-sign scales) come from Fashion-MNIST, 784-
/// 1024-1024-10 tanh, DFA through the holographic device, one epoch: a softmax
/// error has one large negative entry (p_y - 1) and many small positive ones.
/// One shared scale at threshold 0.25 keeps mostly the true class and reached
/// 79 % (0.1: 56 %, the small entries blown up to the large one's size);
/// per-sign scales reached 81.4 % at 0.25, 82.6 % at 0.1 and 82.7 % at 0.05,
/// against 83.5 % for dense DFA.
struct ternary_encoder {
    double threshold = 0.1;
    /// Fit one scale per sign (s₊ for e₊, s₋ for e₋) instead of one for both.
    bool per_sign_scale = true;

    std::string describe() const {
        return "ternary threshold=" + setting_text(threshold) +
               (per_sign_scale ? " per-sign" : " shared");
    }

    ternary_encoder() = default;
    explicit ternary_encoder(double relative_threshold, bool separate_scales = true)
      : threshold(relative_threshold)
      , per_sign_scale(separate_scales) {
        if (!(relative_threshold >= 0.0 && relative_threshold < 1.0)) {
            throw config_error("lightloop::ternary_encoder: threshold must be in [0, 1), got " +
                               number_text(relative_threshold));
        }
    }

    static constexpr std::size_t frames_per_sample() noexcept { return 2; }

    template <scalar T>
    void encode(std::span<const T> x, std::span<T> frames, std::span<double> weights) const {
        const std::size_t in = x.size();
        const double tau = threshold * detail::largest_magnitude(x);
        T* plus = frames.data();
        T* minus = frames.data() + in;
        double kept_up = 0.0;
        double kept_down = 0.0;
        std::size_t count_up = 0;
        std::size_t count_down = 0;
        for (std::size_t k = 0; k < in; ++k) {
            const double v = static_cast<double>(x[k]);
            // A zero vector keeps nothing (0 > 0 is false), even with τ = 0.
            const bool up = v > tau && v > 0.0;
            const bool down = v < -tau && v < 0.0;
            plus[k] = up ? T(1) : T(0);
            minus[k] = down ? T(1) : T(0);
            if (up) {
                kept_up += v;
                ++count_up;
            } else if (down) {
                kept_down -= v;
                ++count_down;
            }
        }
        auto mean = [](double sum, std::size_t count) {
            return count > 0 ? sum / static_cast<double>(count) : 0.0;
        };
        if (per_sign_scale) {
            weights[0] = mean(kept_up, count_up);
            weights[1] = -mean(kept_down, count_down);
        } else {
            const double scale = mean(kept_up + kept_down, count_up + count_down);
            weights[0] = scale;
            weights[1] = -scale;
        }
    }
};

/// Bit-plane encoding with `bits` planes per sign: |e_k| is quantised to
/// q_k = round(|e_k| / Δ) with Δ = max_k |e_k| / (2^bits - 1), and bit j of q_k
/// goes to plane j of the sign's family, weighted ±2^j Δ. Exact for inputs on
/// the grid; otherwise within Δ/2 per entry. Costs 2 * bits frames. One plane
/// (bits = 1) is ternarization at threshold 1/2 with scale max|e|.
struct bitplane_encoder {
    std::size_t bits = 4;

    std::string describe() const { return "bitplane bits=" + std::to_string(bits); }

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
