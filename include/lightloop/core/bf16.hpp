#pragma once
// bfloat16: the upper half of an IEEE float (8 exponent bits, 7 stored
// mantissa bits), the operand type of the CPU's bf16 matrix units (AVX512-BF16,
// AMX). lightloop rounds to it one way everywhere, the way those units'
// conversion instruction (VCVTNEPS2BF16) does, so that a product computed
// from operands rounded here equals the hardware's:
//   - to nearest, ties to even;
//   - a subnormal float becomes a zero of its sign;
//   - a NaN stays a NaN (quiet), an infinity stays infinite, and a finite
//     value past the largest bf16 rounds to infinity.

#include <bit>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#if defined(__AVX512BF16__) && defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <xsimd/xsimd.hpp>

namespace lightloop {

/// A bfloat16 value, stored as its 16 bits.
struct bf16 {
    std::uint16_t bits = 0;
    friend constexpr bool operator==(bf16, bf16) noexcept = default;
};
static_assert(sizeof(bf16) == 2);

/// x rounded to bf16 (see the file comment), as bits in the upper half of a
/// float's pattern.
constexpr std::uint32_t bf16_pattern(float x) noexcept {
    const std::uint32_t u = std::bit_cast<std::uint32_t>(x);
    const std::uint32_t exponent = u & 0x7f800000U;
    if (exponent == 0) {
        return u & 0x80000000U; // zero or subnormal: a signed zero
    }
    if (exponent == 0x7f800000U) {
        // Infinity stays; NaN stays NaN, made quiet so no truncation of its
        // payload can turn it into an infinity.
        return (u & 0x007fffffU) != 0 ? ((u | 0x00400000U) & 0xffff0000U) : u;
    }
    const std::uint32_t lsb = (u >> 16) & 1U;
    return (u + 0x7fffU + lsb) & 0xffff0000U;
}

constexpr bf16 to_bf16(float x) noexcept {
    return bf16{static_cast<std::uint16_t>(bf16_pattern(x) >> 16)};
}

constexpr float to_float(bf16 b) noexcept {
    return std::bit_cast<float>(static_cast<std::uint32_t>(b.bits) << 16);
}

/// x rounded to the nearest bf16, kept as a float (exactly representable).
constexpr float round_to_bf16(float x) noexcept {
    return std::bit_cast<float>(bf16_pattern(x));
}

namespace detail {
/// The destination types a GEMM operand is written as: bf16 itself, or a
/// float holding a bf16 value (the OpenBLAS backend's emulation).
constexpr void write_operand(float x, bf16* out) noexcept {
    *out = to_bf16(x);
}
constexpr void write_operand(float x, float* out) noexcept {
    *out = round_to_bf16(x);
}
} // namespace detail

/// Writes n floats rounded to bf16 into `out` (bf16, or floats holding bf16
/// values).
template <class Out>
void convert_to_bf16(const float* in, Out* out, std::size_t n) noexcept {
    std::size_t i = 0;
#if defined(__AVX512BF16__) && defined(__AVX512F__)
    if constexpr (std::is_same_v<Out, bf16>) {
        for (const std::size_t whole = n / 16 * 16; i < whole; i += 16) {
            const __m256bh packed = _mm512_cvtneps_pbh(_mm512_loadu_ps(in + i));
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i),
                                std::bit_cast<__m256i>(packed));
        }
    }
#endif
    for (; i < n; ++i) {
        detail::write_operand(in[i], out + i);
    }
}

namespace simd {

/// Stores v (an xsimd batch of floats, or a float) at p rounded to bf16: the
/// optimizers' update writes the weights' GEMM copy this way, in the same
/// pass as the weights.
template <class V, class Out>
[[gnu::always_inline]] inline void store_bf16(Out* p, const V& v) noexcept {
    if constexpr (std::is_same_v<V, float>) {
        detail::write_operand(v, p);
    } else {
#if defined(__AVX512BF16__) && defined(__AVX512F__)
        if constexpr (std::is_same_v<Out, bf16> && V::size == 16) {
            const __m256bh packed = _mm512_cvtneps_pbh(v);
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), std::bit_cast<__m256i>(packed));
            return;
        }
#endif
        alignas(64) float lanes[V::size];
        v.store_aligned(lanes);
        for (std::size_t i = 0; i < V::size; ++i) {
            detail::write_operand(lanes[i], p + i);
        }
    }
}

} // namespace simd
} // namespace lightloop
