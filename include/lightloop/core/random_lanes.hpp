#pragma once
// Bulk random draws for the camera simulation, where every pixel of every
// exposure needs a normal (and the dim ones a Poisson count): a million draws
// per batch, which a one-at-a-time generator makes the bottleneck.
//
// rng_lanes steps eight xoshiro256++ streams together (structure of arrays,
// which the compiler vectorises); normals come from Box-Muller in single
// precision (a division-free polynomial log, short sine/cosine polynomials),
// and Poisson counts of small means from inversion of the CDF, one SIMD lane
// per draw. The draws are reproducible from the seed for a given build;
// whether the target has fused multiply-add changes the last bits of the
// normals, not the streams.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numbers>
#include <span>
#include <utility>

#include <xsimd/xsimd.hpp>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "lightloop/core/random.hpp"

namespace lightloop {

namespace detail {

/// x rotated left by K bits in each 64-bit lane: one instruction for an
/// AVX-512 batch (VPROLQ), which xsimd does not expose, else two shifts and
/// an or. xoshiro's two rotations are a quarter of its step.
template <int K, class B>
B rotate_left(B x) noexcept {
    static_assert(K > 0 && K < 64);
#if defined(__AVX512F__)
    if constexpr (sizeof(B) == 64) {
        return B(_mm512_rol_epi64(x, K));
    }
#endif
    return (x << K) | (x >> (64 - K));
}

/// ln x for x in [2^-32, 1], no special cases: x = 2^k m with m in
/// [√½, √2), ln m = ln(1 + f) by Cephes' single-precision polynomial
/// (relative error about 1e-7) - no division, unlike a general log.
template <class B>
B log_unit(B x) noexcept {
    using ibatch = xsimd::batch<std::int32_t, typename B::arch_type>;
    ibatch bits = xsimd::bitwise_cast<ibatch>(x);
    bits += ibatch(0x3f800000 - 0x3f3504f3);
    const B k = xsimd::to_float((bits >> 23) - ibatch(0x7f));
    bits = (bits & ibatch(0x007fffff)) + ibatch(0x3f3504f3);
    const B f = xsimd::bitwise_cast<B>(bits) - B(1.0f);
    const B z = f * f;
    B p = xsimd::fma(f, B(7.0376836292e-2f), B(-1.1514610310e-1f));
    p = xsimd::fma(p, f, B(1.1676998740e-1f));
    p = xsimd::fma(p, f, B(-1.2420140846e-1f));
    p = xsimd::fma(p, f, B(1.4249322787e-1f));
    p = xsimd::fma(p, f, B(-1.6668057665e-1f));
    p = xsimd::fma(p, f, B(2.0000714765e-1f));
    p = xsimd::fma(p, f, B(-2.4999993993e-1f));
    p = xsimd::fma(p, f, B(3.3333331174e-1f));
    const B y = xsimd::fma(p * f, z, xsimd::fma(B(-0.5f), z, f));
    return xsimd::fma(k, B(0.693147180559945f), y);
}

/// sin t and cos t for |t| <= π/4: Cephes' single-precision minimax
/// polynomials (sinf's to t^7, cosf's to t^8); errors against libm about
/// 5e-8, single precision's rounding (Taylor polynomials would need a term
/// more each).
template <class B>
std::pair<B, B> sincos_eighth_turn(B t) noexcept {
    const B t2 = t * t;
    B sin_t = xsimd::fma(t2, B(-1.9515295891e-4f), B(8.3321608736e-3f));
    sin_t = xsimd::fma(sin_t, t2, B(-1.6666654611e-1f));
    sin_t = xsimd::fma(sin_t * t2, t, t);
    B cos_t = xsimd::fma(t2, B(2.443315711809948e-5f), B(-1.388731625493765e-3f));
    cos_t = xsimd::fma(cos_t, t2, B(4.166664568298827e-2f));
    cos_t = xsimd::fma(cos_t, t2, B(-0.5f));
    cos_t = xsimd::fma(cos_t, t2, B(1.0f));
    return {sin_t, cos_t};
}

/// N standard normal pairs by Box-Muller: pair i from radius[i] (31
/// random bits, below 2^31) and angle[i] (32 bits), as (r cos φ, r sin φ)
/// into first[i] and second[i]. (radius + 1/2) 2^-31 is in (0, 1], so the
/// logarithm is finite and r stays below 6.66 (pairs beyond, a probability
/// of 2.3e-10, are missing). The angle is a quadrant q (two bits) plus θ
/// uniform on [-π/4, π/4) (22 bits): φ = q π/2 + θ is uniform on the circle.
/// sin θ and cos θ on that short interval are short polynomials, and the
/// quadrant rotates (cos θ, sin θ) by swapping and negating: no general range
/// reduction as in a library sincos. Each pair is computed alike whatever
/// its position in a SIMD batch.
template <std::size_t N>
void box_muller(const std::uint32_t* radius, const std::uint32_t* angle, float* first,
                float* second) noexcept {
    using batch = xsimd::batch<float>;
    using ibatch = xsimd::batch<std::int32_t, batch::arch_type>;
    using ubatch = xsimd::batch<std::uint32_t, batch::arch_type>;
    constexpr std::size_t width = batch::size;
    static_assert(N % width == 0);
    constexpr float quarter_turn = static_cast<float>(std::numbers::pi / 2);
    const ubatch sign_bit(0x80000000U);
    for (std::size_t i = 0; i < N; i += width) {
        const auto hi = ibatch::load_unaligned(reinterpret_cast<const std::int32_t*>(radius + i));
        const ubatch lo = ubatch::load_unaligned(angle + i);
        const batch u =
          xsimd::min((xsimd::to_float(hi) + batch(0.5f)) * batch(0x1.0p-31f), batch(1.0f));
        const batch r = xsimd::sqrt(batch(-2.0f) * log_unit(u));
        const auto fraction = xsimd::bitwise_cast<ibatch>((lo >> 8) & ubatch(0x3FFFFFU));
        const batch t =
          (xsimd::to_float(fraction) * batch(0x1.0p-22f) - batch(0.5f)) * batch(quarter_turn);
        const auto [sin_t, cos_t] = sincos_eighth_turn(t);
        // Rotation by q quarter turns: q = 1 gives (-sin, cos), q = 2
        // (-cos, -sin), q = 3 (sin, -cos). Negation is the sign bit, exact
        // as a product with -1 is.
        const ubatch q = lo >> 30;
        // FLT_MIN's bits for an odd quadrant, zero for an even one.
        const auto odd = xsimd::bitwise_cast<batch>((q & ubatch(1U)) << 23) != batch(0.0f);
        const batch a = xsimd::select(odd, sin_t, cos_t);
        const batch b = xsimd::select(odd, cos_t, sin_t);
        const ubatch first_negative = ((q + ubatch(1U)) << 30) & sign_bit; // q = 1, 2
        const ubatch second_negative = (q << 30) & sign_bit;               // q = 2, 3
        xsimd::bitwise_xor(r * a, xsimd::bitwise_cast<batch>(first_negative))
          .store_unaligned(first + i);
        xsimd::bitwise_xor(r * b, xsimd::bitwise_cast<batch>(second_negative))
          .store_unaligned(second + i);
    }
}

} // namespace detail

class rng_lanes {
public:
    static constexpr std::size_t lanes = 8;
    /// Normals produced per refill of the generator's block.
    static constexpr std::size_t block = 256;

    explicit rng_lanes(std::uint64_t seed = 0) noexcept { reseed(seed); }

    /// Stream k starts as rng(derive_seed(seed, k)) would.
    void reseed(std::uint64_t seed) noexcept {
        for (std::size_t k = 0; k < lanes; ++k) {
            const auto state = rng(derive_seed(seed, k)).state();
            s0_[k] = state[0];
            s1_[k] = state[1];
            s2_[k] = state[2];
            s3_[k] = state[3];
        }
    }

    /// `steps` steps of every stream: out[step * lanes + k] is stream k's
    /// output at that step.
    void next(std::uint64_t* out, std::size_t steps = 1) noexcept {
        using batch = xsimd::batch<std::uint64_t>;
        constexpr std::size_t width = batch::size;
        static_assert(lanes % width == 0);
        for (std::size_t g = 0; g < lanes; g += width) {
            batch s0 = batch::load_aligned(s0_ + g);
            batch s1 = batch::load_aligned(s1_ + g);
            batch s2 = batch::load_aligned(s2_ + g);
            batch s3 = batch::load_aligned(s3_ + g);
            for (std::size_t step = 0; step < steps; ++step) {
                const batch sum = s0 + s3;
                (detail::rotate_left<23>(sum) + s0).store_unaligned(out + step * lanes + g);
                const batch t = s1 << 17;
                s2 ^= s0;
                s3 ^= s1;
                s1 ^= s2;
                s0 ^= s3;
                s2 ^= t;
                s3 = detail::rotate_left<45>(s3);
            }
            s0.store_aligned(s0_ + g);
            s1.store_aligned(s1_ + g);
            s2.store_aligned(s2_ + g);
            s3.store_aligned(s3_ + g);
        }
    }

    /// Standard normals (single precision Box-Muller). The radius uses 31
    /// random bits, so it stays below 6.66: pairs beyond, a probability of
    /// 2.3e-10, are missing.
    void fill_normal(std::span<float> out) noexcept {
        std::size_t done = 0;
        while (out.size() - done >= block) {
            normal_block(out.data() + done);
            done += block;
        }
        if (done < out.size()) {
            alignas(64) float tail[block];
            normal_block(tail);
            std::copy(tail, tail + (out.size() - done), out.data() + done);
        }
    }

    /// Uniforms on [0, 1) with 53 random bits.
    void fill_uniform(std::span<double> out) noexcept {
        alignas(64) std::uint64_t bits[block];
        for (std::size_t i = 0; i < out.size(); i += block) {
            const std::size_t n = std::min(block, out.size() - i);
            next(bits, (n + lanes - 1) / lanes);
            for (std::size_t k = 0; k < n; ++k) {
                out[i + k] = static_cast<double>(bits[k] >> 11) * 0x1.0p-53;
            }
        }
    }

    /// counts[i] ~ Poisson(mean[i]) exactly, by inversion of the CDF with one
    /// uniform each (means are meant to be small: the work per draw grows with
    /// the largest mean among each SIMD batch). `uniform` is scratch of at
    /// least count rounded up to a multiple of `group`.
    /// At most `max_count` is returned, which for means below 30 and
    /// max_count 200 cuts off a probability below 1e-70.
    void poisson_inversion(const double* mean, double* counts, double* uniform, std::size_t count,
                           double max_count = 200.0) noexcept {
        fill_uniform(std::span<double>(uniform, (count + group - 1) / group * group));
        std::size_t i = 0;
        for (; i + group <= count; i += group) {
            invert(mean + i, uniform + i, counts + i, max_count);
        }
        if (i < count) {
            // Zero means stop at once: P(0) = 1.
            alignas(64) double m[group] = {};
            alignas(64) double c[group];
            std::copy(mean + i, mean + count, m);
            invert(m, uniform + i, c, max_count);
            std::copy(c, c + (count - i), counts + i);
        }
    }

    /// Draws poisson_inversion handles together (scratch is rounded up to it).
    static constexpr std::size_t group = 4 * xsimd::batch<double>::size;

private:
    /// 1 / n, from a table for the small n of the inversion loop (a division
    /// per step would dominate it).
    static double reciprocal(std::size_t n) noexcept {
        static constexpr auto table = [] {
            std::array<double, 256> t{};
            for (std::size_t i = 1; i < t.size(); ++i) {
                t[i] = 1.0 / static_cast<double>(i);
            }
            return t;
        }();
        return n < table.size() ? table[n] : 1.0 / static_cast<double>(n);
    }

    /// Inverts `group` draws: four independent SIMD batches in step, so the
    /// multiply-add chains of one hide the latency of the others.
    static void invert(const double* mean, const double* uniform, double* counts,
                       double max_count) noexcept {
        using batch = xsimd::batch<double>;
        constexpr std::size_t width = batch::size;
        constexpr std::size_t n = group / width;
        batch m[n];
        batch u[n];
        batch p[n];
        batch cdf[n];
        batch k[n];
#pragma GCC unroll 8
        for (std::size_t b = 0; b < n; ++b) {
            m[b] = batch::load_unaligned(mean + b * width);
            u[b] = batch::load_unaligned(uniform + b * width);
            p[b] = xsimd::exp(-m[b]);
            cdf[b] = p[b];
            k[b] = batch(0.0);
        }
        // Every lane's k equals the step count until its u falls under its
        // CDF; the CDF only grows, so finished lanes stay finished.
        const auto steps = static_cast<std::size_t>(std::min(max_count, 1e6));
        for (std::size_t step = 1; step <= steps; ++step) {
            // One mask for all batches, one test per step.
            xsimd::batch_bool<double> more_any(false);
            const batch inverse(reciprocal(step));
#pragma GCC unroll 8
            for (std::size_t b = 0; b < n; ++b) {
                const auto more = u[b] > cdf[b];
                more_any = more_any || more;
                k[b] = xsimd::select(more, k[b] + batch(1.0), k[b]);
                p[b] = p[b] * (m[b] * inverse);
                cdf[b] = cdf[b] + p[b];
            }
            if (!xsimd::any(more_any)) {
                break;
            }
        }
        for (std::size_t b = 0; b < n; ++b) {
            k[b].store_unaligned(counts + b * width);
        }
    }

    /// Box-Muller pairs from the block's words: the top 31 bits of each give
    /// the radius, the low 32 the angle (detail::box_muller).
    void normal_block(float* out) noexcept {
        alignas(64) std::uint64_t bits[block / 2];
        next(bits, block / 2 / lanes);
        alignas(64) std::uint32_t radius[block / 2];
        alignas(64) std::uint32_t angle[block / 2];
        for (std::size_t i = 0; i < block / 2; ++i) {
            radius[i] = static_cast<std::uint32_t>(bits[i] >> 33);
            angle[i] = static_cast<std::uint32_t>(bits[i]);
        }
        detail::box_muller<block / 2>(radius, angle, out, out + block / 2);
    }

    alignas(64) std::uint64_t s0_[lanes]{};
    alignas(64) std::uint64_t s1_[lanes]{};
    alignas(64) std::uint64_t s2_[lanes]{};
    alignas(64) std::uint64_t s3_[lanes]{};
};

} // namespace lightloop
