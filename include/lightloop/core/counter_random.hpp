#pragma once
// Random numbers as a pure function of (key, counter): Philox4x32-10
// (Salmon, Moraes, Dror & Shaw, "Parallel random numbers: as easy as 1, 2,
// 3", SC 2011), the generator of Random123 and cuRAND.
//
// A sequential generator (core/random.hpp) must be stepped through every
// earlier draw to reach a matrix entry; a counter-based one computes entry
// (row, column) directly. That is what a matrix too large to store needs: its
// entries are regenerated tile by tile inside each product, in any order, on
// any thread, and a stored copy made by the same function holds the same
// bits.
//
// complex_normal_row gives entries of a matrix with i.i.d. standard complex
// Gaussian entries CN(0, 1) (real and imaginary parts i.i.d. N(0, 1/2)):
// entry (row, column) is the Box-Muller pair of one 64-bit Philox output
// (a Rayleigh radius and a uniform phase, rng_lanes' single-precision
// formulas), from the counter (column / 2, row) under the key. Lanes compute
// every entry alike, whatever its position in a SIMD batch, so any tiling of
// the matrix gives bitwise the same entries.

#include <array>
#include <cstddef>
#include <cstdint>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#include "lightloop/core/random_lanes.hpp"

namespace lightloop {

/// Philox4x32-10: four 32-bit outputs of a 128-bit counter under a 64-bit
/// key. This scalar form is the reference (tested against Random123's
/// known-answer vectors); philox_block is the same function on many counters.
constexpr std::array<std::uint32_t, 4> philox4x32(std::array<std::uint32_t, 4> c,
                                                  std::array<std::uint32_t, 2> key) noexcept {
    constexpr std::uint64_t m0 = 0xD2511F53U;
    constexpr std::uint64_t m1 = 0xCD9E8D57U;
    for (int round = 0; round < 10; ++round) {
        const std::uint64_t p0 = m0 * c[0];
        const std::uint64_t p1 = m1 * c[2];
        c = {static_cast<std::uint32_t>(p1 >> 32) ^ c[1] ^ key[0], static_cast<std::uint32_t>(p1),
             static_cast<std::uint32_t>(p0 >> 32) ^ c[3] ^ key[1], static_cast<std::uint32_t>(p0)};
        key[0] += 0x9E3779B9U;
        key[1] += 0xBB67AE85U;
    }
    return c;
}

namespace detail {

/// Counters philox_block computes at once (GCC vectorises the fixed-length
/// loops: 32-bit lanes, 64-bit products).
inline constexpr std::size_t philox_lanes = 32;

/// philox4x32 on philox_lanes counters (c0[l], c1[l], c2[l], c3[l]), in place.
/// With AVX-512 or AVX2 each 32-bit word sits in a 64-bit lane, where one
/// instruction makes eight (four) 32 x 32 -> 64-bit products; otherwise the
/// scalar loop. The same function either way. A lane's high half is left
/// as it falls: the products read only the low halves, the xors of two high
/// halves land in high halves, and the stores keep the low ones.
inline void philox_block(std::uint32_t* c0, std::uint32_t* c1, std::uint32_t* c2, std::uint32_t* c3,
                         std::uint32_t k0, std::uint32_t k1) noexcept {
#if defined(__AVX512F__) || defined(__AVX2__)
#if defined(__AVX512F__)
    using word = __m512i;
    constexpr std::size_t width = 8;
    const auto widen = [](const std::uint32_t* p) {
        return _mm512_cvtepu32_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    };
    const auto narrow = [](std::uint32_t* p, word v) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi64_epi32(v));
    };
    const auto broadcast = [](std::uint64_t v) {
        return _mm512_set1_epi64(static_cast<long long>(v));
    };
    const auto mul = [](word a, word b) { return _mm512_mul_epu32(a, b); };
    const auto high = [](word a) { return _mm512_srli_epi64(a, 32); };
    const auto xor3 = [](word a, word b, word c) {
        return _mm512_ternarylogic_epi64(a, b, c, 0x96);
    };
#else
    using word = __m256i;
    constexpr std::size_t width = 4;
    const auto widen = [](const std::uint32_t* p) {
        return _mm256_cvtepu32_epi64(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    };
    const auto narrow = [](std::uint32_t* p, word v) {
        // The low halves of the four lanes, in order.
        const __m256i packed =
          _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(packed));
    };
    const auto broadcast = [](std::uint64_t v) {
        return _mm256_set1_epi64x(static_cast<long long>(v));
    };
    const auto mul = [](word a, word b) { return _mm256_mul_epu32(a, b); };
    const auto high = [](word a) { return _mm256_srli_epi64(a, 32); };
    const auto xor3 = [](word a, word b, word c) {
        return _mm256_xor_si256(_mm256_xor_si256(a, b), c);
    };
#endif
    constexpr std::size_t groups = philox_lanes / width;
    const word m0 = broadcast(0xD2511F53U);
    const word m1 = broadcast(0xCD9E8D57U);
    word x0[groups];
    word x1[groups];
    word x2[groups];
    word x3[groups];
#pragma GCC unroll 8
    for (std::size_t g = 0; g < groups; ++g) {
        x0[g] = widen(c0 + g * width);
        x1[g] = widen(c1 + g * width);
        x2[g] = widen(c2 + g * width);
        x3[g] = widen(c3 + g * width);
    }
    for (int round = 0; round < 10; ++round) {
        const word key0 = broadcast(k0);
        const word key1 = broadcast(k1);
#pragma GCC unroll 8
        for (std::size_t g = 0; g < groups; ++g) {
            const word p0 = mul(m0, x0[g]);
            const word p1 = mul(m1, x2[g]);
            x0[g] = xor3(high(p1), x1[g], key0);
            x2[g] = xor3(high(p0), x3[g], key1);
            x1[g] = p1; // the high halves are ignored downstream
            x3[g] = p0;
        }
        k0 += 0x9E3779B9U;
        k1 += 0xBB67AE85U;
    }
#pragma GCC unroll 8
    for (std::size_t g = 0; g < groups; ++g) {
        narrow(c0 + g * width, x0[g]);
        narrow(c1 + g * width, x1[g]);
        narrow(c2 + g * width, x2[g]);
        narrow(c3 + g * width, x3[g]);
    }
#else
    constexpr std::uint64_t m0 = 0xD2511F53U;
    constexpr std::uint64_t m1 = 0xCD9E8D57U;
    for (int round = 0; round < 10; ++round) {
        for (std::size_t l = 0; l < philox_lanes; ++l) {
            const std::uint64_t p0 = m0 * c0[l];
            const std::uint64_t p1 = m1 * c2[l];
            const auto n0 = static_cast<std::uint32_t>(p1 >> 32) ^ c1[l] ^ k0;
            const auto n2 = static_cast<std::uint32_t>(p0 >> 32) ^ c3[l] ^ k1;
            c1[l] = static_cast<std::uint32_t>(p1);
            c3[l] = static_cast<std::uint32_t>(p0);
            c0[l] = n0;
            c2[l] = n2;
        }
        k0 += 0x9E3779B9U;
        k1 += 0xBB67AE85U;
    }
#endif
}

} // namespace detail

/// Entries a complex_normal_chunk call makes: two per Philox counter.
inline constexpr std::size_t complex_normal_chunk_size = 2 * detail::philox_lanes;

/// Entries (row, column) for the columns [first, first + complex_normal_chunk_size)
/// of the CN(0, 1) matrix keyed by `key`, times `scale`: re[i] and im[i] for
/// column first + i. `first` must be even.
inline void complex_normal_chunk(std::uint64_t key, std::uint64_t row, std::uint64_t first,
                                 float scale, float* re, float* im) noexcept {
    constexpr std::size_t lanes = detail::philox_lanes;
    alignas(64) std::uint32_t c0[lanes];
    alignas(64) std::uint32_t c1[lanes];
    alignas(64) std::uint32_t c2[lanes];
    alignas(64) std::uint32_t c3[lanes];
    const std::uint64_t pair = first / 2;
    for (std::size_t l = 0; l < lanes; ++l) {
        const std::uint64_t counter = pair + l;
        c0[l] = static_cast<std::uint32_t>(counter);
        c1[l] = static_cast<std::uint32_t>(counter >> 32);
        c2[l] = static_cast<std::uint32_t>(row);
        c3[l] = static_cast<std::uint32_t>(row >> 32);
    }
    detail::philox_block(c0, c1, c2, c3, static_cast<std::uint32_t>(key),
                         static_cast<std::uint32_t>(key >> 32));
    // Column first + 2l takes (c0, c1), column first + 2l + 1 takes (c2, c3).
    alignas(64) std::uint32_t radius[2 * lanes];
    alignas(64) std::uint32_t angle[2 * lanes];
    for (std::size_t l = 0; l < lanes; ++l) {
        radius[2 * l] = c0[l] >> 1;
        angle[2 * l] = c1[l];
        radius[2 * l + 1] = c2[l] >> 1;
        angle[2 * l + 1] = c3[l];
    }
    detail::box_muller<2 * lanes>(radius, angle, re, im);
    // |z|^2 = r^2 of a standard Box-Muller pair has mean 2: halve the power.
    const float s = scale * 0.70710678118654752f;
    for (std::size_t i = 0; i < 2 * lanes; ++i) {
        re[i] *= s;
        im[i] *= s;
    }
}

/// Entries (row, column) for columns [first, first + count) of the CN(0, 1)
/// matrix keyed by `key`, times `scale` (any first and count).
inline void complex_normal_row(std::uint64_t key, std::uint64_t row, std::uint64_t first,
                               std::size_t count, float scale, float* re, float* im) noexcept {
    constexpr std::size_t chunk = complex_normal_chunk_size;
    alignas(64) float chunk_re[chunk];
    alignas(64) float chunk_im[chunk];
    std::uint64_t column = first - first % 2;
    std::size_t done = 0;
    while (done < count) {
        complex_normal_chunk(key, row, column, scale, chunk_re, chunk_im);
        const std::size_t skip = static_cast<std::size_t>(first + done - column);
        const std::size_t take = std::min(chunk - skip, count - done);
        std::copy_n(chunk_re + skip, take, re + done);
        std::copy_n(chunk_im + skip, take, im + done);
        done += take;
        column += chunk;
    }
}

} // namespace lightloop
