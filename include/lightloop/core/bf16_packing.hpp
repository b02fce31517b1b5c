#pragma once
// A layer's bf16 weights stored the way a matrix kernel reads them, so that
// its forward product x W^T need not rearrange them on every call.
//
// W (rows x cols: outputs x inputs, row-major in the layer) enters the
// forward product as B = W^T, k = cols deep and n = rows wide. The bf16
// kernels of oneDNN (AVX512-BF16, AMX) multiply pairs of k at once, so they
// read B in blocks of k_block x n_block values, in each block the pairs of k
// interleaved: for a pair p of the block and an output j of the block, the
// two values W[j][2p] and W[j][2p + 1] sit side by side (oneDNN's layout
// "BA16a64b2a" for k_block 32 and n_block 64). Blocks lie k_stride values
// apart along k and n_stride along n; k and n are padded to whole blocks,
// with zeros.
//
// The backend says which layout its kernel wants (core/onednn.hpp reads it
// from oneDNN at run time: it differs between kernels, and
// onednn_gemm_packed multiplies by such a copy); this header only moves
// values into it: fp32 weights rounded and packed in one pass, or bf16 rows
// packed a group of 16 at a time. The layers keep their copy in W's own
// order: written in the optimizers' pass, a packed copy cost a training step
// more than its faster forward products saved (docs/bf16_experiments.md).

#include <algorithm>
#include <cstddef>
#include <string>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "lightloop/core/bf16.hpp"
#include "lightloop/core/error.hpp"
#include "lightloop/core/parallel.hpp"

namespace lightloop {

/// Where each value of a packed bf16 copy of W lies (see the file comment).
struct packed_bf16_layout {
    std::size_t rows = 0;     ///< W's rows: the product's n (outputs)
    std::size_t cols = 0;     ///< W's columns: the product's k (inputs)
    std::size_t k_block = 0;  ///< k values a block holds (32: 16 pairs)
    std::size_t n_block = 0;  ///< n values a block holds
    std::size_t k_stride = 0; ///< values from one block to the next along k
    std::size_t n_stride = 0; ///< values from one block to the next along n
    std::size_t size = 0;     ///< values of the whole copy, padding included

    /// The position of W[row][col].
    constexpr std::size_t offset(std::size_t row, std::size_t col) const noexcept {
        return (col / k_block) * k_stride + (row / n_block) * n_stride +
               ((col % k_block) / 2) * (2 * n_block) + (row % n_block) * 2 + col % 2;
    }
    friend constexpr bool operator==(const packed_bf16_layout&,
                                     const packed_bf16_layout&) noexcept = default;
};

/// Refuses a layout this header cannot fill (`who` names the caller):
/// blocks of 32 k, a positive n_block, strides and a size that hold every
/// block.
inline void check_packed_layout(const packed_bf16_layout& l, const char* who) {
    const std::size_t k_blocks = (l.cols + 31) / 32;
    const std::size_t n_blocks = l.n_block == 0 ? 0 : (l.rows + l.n_block - 1) / l.n_block;
    if (l.k_block != 32 || l.n_block == 0 || l.k_stride < 32 * l.n_block ||
        l.n_stride < k_blocks * l.k_stride || l.size < n_blocks * l.n_stride) {
        throw shape_error(std::string("lightloop::") + who + ": a packed layout of " +
                          std::to_string(l.rows) + " x " + std::to_string(l.cols) +
                          " needs blocks of 32 k by a positive n_block whose strides and size "
                          "hold every block; got blocks of " +
                          std::to_string(l.k_block) + " x " + std::to_string(l.n_block) +
                          ", strides " + std::to_string(l.k_stride) + " and " +
                          std::to_string(l.n_stride) + ", size " + std::to_string(l.size));
    }
}

/// Rows a packed copy is written in at a time: one transposition's worth.
inline constexpr std::size_t packing_row_group = 16;

namespace detail {

/// Packs the values of W[row0 + r][col0 + c] (r < rows <= 16, c < cols <=
/// k_block, col0 a k block's first column) from src (row-major, ld values a row, src
/// pointing at W[row0][col0]) into dst.
inline void pack_tile(const packed_bf16_layout& l, const bf16* src, std::size_t ld,
                      std::size_t row0, std::size_t rows, std::size_t col0, std::size_t cols,
                      bf16* dst) noexcept {
#if defined(__AVX512F__)
    // A whole group of 16 rows within one n block, whole pairs of k: the 16
    // rows' pairs (16 x 16 dwords) transposed, so that each pair's 16
    // outputs are one 64-byte store. Columns past `cols` in the block are
    // written as zeros, the padding they are.
    if (rows == 16 && cols % 2 == 0 && row0 % 16 == 0 && l.n_block % 16 == 0 && l.k_block == 32) {
        const __mmask16 mask = static_cast<__mmask16>((1U << (cols / 2)) - 1U);
        __m512i r[16];
        for (int i = 0; i < 16; ++i) {
            r[i] = _mm512_maskz_loadu_epi32(mask, src + static_cast<std::size_t>(i) * ld);
        }
        __m512i t[16];
        for (int i = 0; i < 16; i += 2) {
            t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
            t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
        }
        for (int i = 0; i < 16; i += 4) {
            r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
            r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
            r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
            r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
        }
        // Each 128-bit lane now holds 4 pairs' values for 4 rows; gather the
        // lanes of 4 row quads per pair.
        for (int i = 0; i < 4; ++i) {
            t[i] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0x88);
            t[i + 4] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0xdd);
            t[i + 8] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0x88);
            t[i + 12] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0xdd);
        }
        for (int i = 0; i < 4; ++i) {
            r[i] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0x88);
            r[i + 8] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0xdd);
            r[i + 4] = _mm512_shuffle_i32x4(t[i + 4], t[i + 12], 0x88);
            r[i + 12] = _mm512_shuffle_i32x4(t[i + 4], t[i + 12], 0xdd);
        }
        bf16* base = dst + l.offset(row0, col0);
        for (int p = 0; p < 16; ++p) {
            _mm512_storeu_si512(base + static_cast<std::size_t>(p) * 2 * l.n_block, r[p]);
        }
        return;
    }
#endif
    // Value by value (fewer than 16 rows, an odd width), the block's place
    // worked out once a row: two divisions a value cost more than the rest.
    const std::size_t block = (col0 / l.k_block) * l.k_stride;
    for (std::size_t r = 0; r < rows; ++r) {
        const std::size_t row = row0 + r;
        bf16* out = dst + block + (row / l.n_block) * l.n_stride + (row % l.n_block) * 2;
        for (std::size_t c = 0; c < cols; ++c) {
            out[(c / 2) * 2 * l.n_block + c % 2] = src[r * ld + c];
        }
    }
}

} // namespace detail

/// Packs rows [row0, row0 + rows) of W, given as bf16 (row-major, ld values
/// a row, src pointing at row row0's first value), into `dst` laid out by
/// `l`. Writes only those rows' places (and their k padding); the rest of
/// dst, and the n padding, is left as it is (zeros from the start).
inline void pack_bf16_rows(const packed_bf16_layout& l, const bf16* src, std::size_t ld,
                           std::size_t row0, std::size_t rows, bf16* dst) {
    check_packed_layout(l, "pack_bf16_rows");
    if (row0 > l.rows || rows > l.rows - row0) {
        throw shape_error("lightloop::pack_bf16_rows: rows " + std::to_string(row0) + " to " +
                          std::to_string(row0 + rows) + " of a layout of " +
                          std::to_string(l.rows));
    }
    for (std::size_t r = 0; r < rows;) {
        // Up to the next multiple of 16 rows, within the n block.
        const std::size_t row = row0 + r;
        const std::size_t group = std::min(packing_row_group - row % packing_row_group, rows - r);
        for (std::size_t c = 0; c < l.cols; c += l.k_block) {
            detail::pack_tile(l, src + r * ld + c, ld, row, group, c,
                              std::min(l.k_block, l.cols - c), dst);
        }
        r += group;
    }
}

/// Writes W (rows x cols floats, row-major) rounded to bf16 into `dst`,
/// packed by `l`, on lightloop's team (one pass; dst's padding is left as it
/// is: zeros from the start).
inline void convert_to_packed_bf16(const packed_bf16_layout& l, const float* w, bf16* dst) {
    check_packed_layout(l, "convert_to_packed_bf16");
    // Pieces of rows start on multiples of 16 (parallel_for_ranges), so
    // each piece's groups are whole transpositions but for W's last.
    parallel_for_rows(l.rows, l.cols, [&](std::size_t first, std::size_t end) {
        // One tile (16 rows x one block's 32 columns) at a time, rounded
        // on the stack first.
        alignas(64) bf16 tile[packing_row_group * 32];
        for (std::size_t row0 = first; row0 < end; row0 += packing_row_group) {
            const std::size_t rows = std::min(packing_row_group, end - row0);
            for (std::size_t c = 0; c < l.cols; c += l.k_block) {
                const std::size_t cols = std::min(l.k_block, l.cols - c);
                for (std::size_t r = 0; r < rows; ++r) {
                    convert_to_bf16(w + (row0 + r) * l.cols + c, tile + r * 32, cols);
                }
                detail::pack_tile(l, tile, 32, row0, rows, c, cols, dst);
            }
        }
    });
}

} // namespace lightloop
