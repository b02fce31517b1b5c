#pragma once
// Seeded random numbers that give the same values on every platform.
//
// std::normal_distribution and friends are implementation-defined, so a
// matrix drawn with them could differ between standard libraries; fixed random
// matrices in lightloop are regenerated from their seed (a checkpoint stores
// the seed, not the matrix), so the draws must be bit-reproducible. We use
// xoshiro256++ (Blackman & Vigna 2019) seeded through splitmix64, uniforms
// from the top 53 bits, and Box-Muller normals.

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numbers>
#include <span>

namespace lightloop {

/// splitmix64 step: a good 64-bit mixer, used to expand and derive seeds.
constexpr std::uint64_t splitmix64(std::uint64_t& state) noexcept {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/// A seed for an independent stream, derived from a parent seed and a stream
/// id (layer index, feedback matrix index, ...). Different ids give unrelated
/// streams; the same (seed, id) always gives the same stream.
constexpr std::uint64_t derive_seed(std::uint64_t seed, std::uint64_t stream) noexcept {
    std::uint64_t s = seed ^ (0xD1B54A32D192ED03ULL * (stream + 1));
    splitmix64(s);
    return splitmix64(s);
}

/// xoshiro256++: fast, 256-bit state, passes BigCrush. Models
/// std::uniform_random_bit_generator.
class rng {
public:
    using result_type = std::uint64_t;

    explicit constexpr rng(std::uint64_t seed = 0) noexcept { reseed(seed); }

    /// A generator with the given raw state (not all zero), for reference tests.
    static constexpr rng from_state(const std::array<std::uint64_t, 4>& state) noexcept {
        rng gen;
        for (std::size_t i = 0; i < 4; ++i) {
            gen.state_[i] = state[i];
        }
        return gen;
    }

    /// The raw state, the inverse of from_state.
    constexpr std::array<std::uint64_t, 4> state() const noexcept {
        return {state_[0], state_[1], state_[2], state_[3]};
    }

    constexpr void reseed(std::uint64_t seed) noexcept {
        std::uint64_t s = seed;
        for (auto& word : state_) {
            word = splitmix64(s);
        }
        has_spare_ = false;
    }

    static constexpr result_type min() noexcept { return 0; }
    static constexpr result_type max() noexcept { return std::numeric_limits<result_type>::max(); }

    constexpr result_type operator()() noexcept {
        const std::uint64_t result = rotl(state_[0] + state_[3], 23) + state_[0];
        const std::uint64_t t = state_[1] << 17;
        state_[2] ^= state_[0];
        state_[3] ^= state_[1];
        state_[1] ^= state_[2];
        state_[0] ^= state_[3];
        state_[2] ^= t;
        state_[3] = rotl(state_[3], 45);
        return result;
    }

    /// Uniform on [0, 1) with 53 random bits.
    double uniform() noexcept { return static_cast<double>((*this)() >> 11) * 0x1.0p-53; }

    /// Uniform on [lo, hi).
    double uniform(double lo, double hi) noexcept { return lo + (hi - lo) * uniform(); }

    /// Standard normal N(0, 1) by Box-Muller; draws come in pairs.
    double normal() noexcept {
        if (has_spare_) {
            has_spare_ = false;
            return spare_;
        }
        // 1 - u is in (0, 1], so the logarithm is finite.
        const double u1 = 1.0 - uniform();
        const double u2 = uniform();
        const double radius = std::sqrt(-2.0 * std::log(u1));
        const double angle = 2.0 * std::numbers::pi * u2;
        spare_ = radius * std::sin(angle);
        has_spare_ = true;
        return radius * std::cos(angle);
    }

    /// Uniform integer on [0, n) without modulo bias (Lemire's method).
    std::uint64_t below(std::uint64_t n) noexcept {
        if (n == 0) {
            return 0;
        }
        const std::uint64_t threshold = (0 - n) % n;
        for (;;) {
            const std::uint64_t r = (*this)();
            const uint128 m = static_cast<uint128>(r) * n;
            if (static_cast<std::uint64_t>(m) >= threshold) {
                return static_cast<std::uint64_t>(m >> 64);
            }
        }
    }

private:
    __extension__ using uint128 = unsigned __int128;

    static constexpr std::uint64_t rotl(std::uint64_t x, int k) noexcept {
        return (x << k) | (x >> (64 - k));
    }

    std::uint64_t state_[4]{};
    double spare_ = 0.0;
    bool has_spare_ = false;
};

/// Fills `out` with N(0, stddev^2) draws.
template <class T>
void fill_normal(std::span<T> out, rng& gen, double stddev) {
    for (auto& v : out) {
        v = static_cast<T>(stddev * gen.normal());
    }
}

/// Fills `out` with U[-bound, bound) draws.
template <class T>
void fill_uniform(std::span<T> out, rng& gen, double bound) {
    for (auto& v : out) {
        v = static_cast<T>(gen.uniform(-bound, bound));
    }
}

} // namespace lightloop
