#pragma once
// BLAS calls into preallocated buffers.
//
// Every GEMM in a training step goes through `gemm` below, which calls
// OpenBLAS's cblas_sgemm / cblas_dgemm on the tensors' storage, spread over
// lightloop's own threads (core/parallel.hpp), except products at most 16
// deep (DFA's projection of the error), which its own short_product runs.
// Results are written into outputs the caller owns: nothing here allocates.

#include <cblas.h>

#include <algorithm>
#include <climits>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>

#include <xsimd/xsimd.hpp>

#include "lightloop/core/error.hpp"
#include "lightloop/core/parallel.hpp"
#include "lightloop/core/tensor.hpp"

namespace lightloop {

/// Whether a GEMM operand is used as stored or transposed.
enum class transpose : bool { no = false, yes = true };

namespace detail {

inline blasint blas_size(std::size_t n) {
    if (n > static_cast<std::size_t>(INT_MAX)) {
        throw shape_error("lightloop: dimension " + std::to_string(n) +
                          " exceeds the BLAS integer range");
    }
    return static_cast<blasint>(n);
}

constexpr CBLAS_TRANSPOSE blas_op(transpose t) noexcept {
    return t == transpose::yes ? CblasTrans : CblasNoTrans;
}

/// A GEMM piece is worth a thread from this many multiply-adds (tens of
/// microseconds on one core, an entry of C counted as gemm_entry_macs);
/// below it the product runs on the calling thread.
inline constexpr double gemm_piece_macs = 4.0 * 1024 * 1024;

/// What an entry of C costs beyond its multiply-adds, in multiply-adds: it is
/// written to memory (and OpenBLAS scales C by beta first, a pass of its
/// own). A product with a short k, DFA's projection of ten classes' error
/// onto 2048 outputs, is worth the threads for its output alone.
inline constexpr double gemm_entry_macs = 32.0;

/// OpenBLAS hands products of at most this many multiply-adds to its
/// small-matrix kernels (SkylakeX), whose sums round differently: no piece
/// of a cut product is that small.
inline constexpr double small_kernel_macs = 1e6;

/// One cblas_sgemm / cblas_dgemm call (row-major), on as many threads as
/// OpenBLAS is set to use at that moment: gemm's pieces make it under a
/// blas_single_thread hold; the benchmarks call it bare as the reference.
template <class T>
void blas_call(transpose ta, transpose tb, std::size_t m, std::size_t n, std::size_t k, T alpha,
               const T* a, std::size_t lda, const T* b, std::size_t ldb, T beta, T* c,
               std::size_t ldc) {
    if constexpr (std::is_same_v<T, float>) {
        cblas_sgemm(CblasRowMajor, blas_op(ta), blas_op(tb), blas_size(m), blas_size(n),
                    blas_size(k), alpha, a, blas_size(lda), b, blas_size(ldb), beta, c,
                    blas_size(ldc));
    } else {
        cblas_dgemm(CblasRowMajor, blas_op(ta), blas_op(tb), blas_size(m), blas_size(n),
                    blas_size(k), alpha, a, blas_size(lda), b, blas_size(ldb), beta, c,
                    blas_size(ldc));
    }
}

} // namespace detail

namespace detail {

/// Spreads C = op(A) op(B) (m x n, k deep) over lightloop's team in pieces
/// of C's rows or columns, calling piece(rows, cols, a, b, c) with the
/// operands' and C's first elements for each piece (leading dimensions and
/// transposes unchanged). The pieces never split the k sum and are cut on
/// whole kernel tiles (multiples of 16), so C has one thread's bits on
/// OpenBLAS's AVX-512 kernels (on its AVX2 kernels, elements next to a cut
/// can differ in the last bits: blas_info.hpp, is_avx512_kernel;
/// core/parallel.hpp says when it need not). Small products, and one
/// thread, make one piece on the calling thread. The cut is along C's
/// longer side. With `fixed_columns` (for a backend whose sums depend on a
/// piece's width, as oneDNN's do) a C with fewer rows than columns is cut
/// into pieces of about that many columns, fixed by the shape alone and the
/// same on one thread, so that C has the same bits on any thread count;
/// `fixed_rows` does the same for a C with at least as many rows as columns
/// (for a backend whose sums also depend on a piece's height, as oneDNN's
/// AVX2 ones do). Zero cuts that side into a piece or two a thread.
template <class A, class B, class C, class Piece>
void gemm_on_team(transpose ta, transpose tb, std::size_t m, std::size_t n, std::size_t k,
                  const A* a, std::size_t lda, const B* b, std::size_t ldb, C* c, std::size_t ldc,
                  std::size_t pieces_per_thread, std::size_t fixed_columns, std::size_t fixed_rows,
                  Piece&& piece) {
    const std::size_t threads = parallel_threads();
    const double macs = static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
    const double work = macs + gemm_entry_macs * static_cast<double>(m) * static_cast<double>(n);
    const auto worth = static_cast<std::size_t>(work / gemm_piece_macs);
    const bool by_rows = m >= n;
    const std::size_t extent = by_rows ? m : n;
    const std::size_t fixed = by_rows ? fixed_rows : fixed_columns;
    const bool by_shape = fixed > 0;
    std::size_t pieces = by_shape ? std::min({(extent + fixed - 1) / fixed,
                                              std::max<std::size_t>(worth, 1), (extent + 15) / 16})
                         : threads == 1
                           ? 1
                           : std::min({pieces_per_thread * threads, worth, (extent + 15) / 16});
    // Piece edges on multiples of 16, the kernels' widest unrolling; the
    // last piece is the smallest, and holds more than small_kernel_macs.
    const auto step_of = [extent](std::size_t count) {
        return ((extent + count - 1) / count + 15) / 16 * 16;
    };
    const double macs_per_line = macs / static_cast<double>(extent);
    while (pieces > 1) {
        const std::size_t s = step_of(pieces);
        const std::size_t last = extent - (extent - 1) / s * s;
        if (macs_per_line * static_cast<double>(last) > small_kernel_macs) {
            break;
        }
        --pieces;
    }
    if (pieces <= 1) {
        piece(m, n, a, b, c);
        return;
    }
    const std::size_t step = step_of(pieces);
    shared_team().run(pieces, [&](std::size_t index, std::size_t) {
        const std::size_t begin = std::min(extent, index * step);
        const std::size_t size = std::min(extent, begin + step) - begin;
        if (size == 0) {
            return;
        }
        if (by_rows) {
            piece(size, n, ta == transpose::yes ? a + begin : a + begin * lda, b, c + begin * ldc);
        } else {
            piece(m, size, a, tb == transpose::yes ? b + begin * ldb : b + begin, c + begin);
        }
    });
}

/// Products at most this deep take short_product instead of OpenBLAS:
/// DFA's projection of ten classes' error onto the hidden widths, and
/// backprop's error through the output layer.
inline constexpr std::size_t short_product_depth = 16;

/// C = alpha op(A) op(B) + beta C for k <= short_product_depth, on the
/// team in tiles of C (up to 256 rows by sixteen SIMD batches of columns). Each
/// entry of C is its own k-long chain of fused multiply-adds, in k's order,
/// then times alpha: the same bits however C is tiled or threaded. OpenBLAS
/// spends most of such a product packing its operands and scaling C by beta
/// in a pass of its own; here each tile's columns of op(B) are copied once
/// into a block the tile's rows then read from the first-level cache, and
/// C is written once. With beta == 0, C is not read (as BLAS).
template <class T>
void short_product(transpose ta, transpose tb, std::size_t m, std::size_t n, std::size_t k, T alpha,
                   const T* a, std::size_t lda, const T* b, std::size_t ldb, T beta, T* c,
                   std::size_t ldc, bool on_team) {
    using V = xsimd::batch<T>;
    constexpr std::size_t group = 4 * V::size; // columns summed in registers at once
    constexpr std::size_t width = 4 * group;   // a tile's columns (1 KB of a row of C)
    constexpr std::size_t tile_rows = 256;
    const std::size_t column_tiles = (n + width - 1) / width;
    const std::size_t row_tiles = (m + tile_rows - 1) / tile_rows;
    // One tile: op(B)'s columns [j0, j0 + w) copied into `block` (zeros past
    // w; at most 16 KB, in the first-level cache), then rows [i0, i0 + rows)
    // of C, a group of columns at a time down the rows (measured faster than
    // each row's w columns at once: docs/bf16_experiments.md).
    const auto tile = [=]<bool TransA, bool TransB>(std::size_t index) {
        const std::size_t j0 = index % column_tiles * width;
        const std::size_t i0 = index / column_tiles * tile_rows;
        const std::size_t w = std::min(width, n - j0);
        const std::size_t rows = std::min(tile_rows, m - i0);
        alignas(64) T block[short_product_depth * width];
        for (std::size_t p = 0; p < k; ++p) {
            for (std::size_t j = 0; j < width; ++j) {
                block[p * width + j] = j >= w   ? T(0)
                                       : TransB ? b[(j0 + j) * ldb + p]
                                                : b[p * ldb + j0 + j];
            }
        }
        const V scale(alpha);
        for (std::size_t g = 0; g < w; g += group) {
            for (std::size_t i = i0; i < i0 + rows; ++i) {
                V sum0(T(0));
                V sum1(T(0));
                V sum2(T(0));
                V sum3(T(0));
                for (std::size_t p = 0; p < k; ++p) {
                    const V x(TransA ? a[p * lda + i] : a[i * lda + p]);
                    const T* row = block + p * width + g;
                    sum0 = xsimd::fma(x, V::load_aligned(row), sum0);
                    sum1 = xsimd::fma(x, V::load_aligned(row + V::size), sum1);
                    sum2 = xsimd::fma(x, V::load_aligned(row + 2 * V::size), sum2);
                    sum3 = xsimd::fma(x, V::load_aligned(row + 3 * V::size), sum3);
                }
                T* target = c + i * ldc + j0 + g;
                if (g + group <= w && beta == T(0)) {
                    (sum0 * scale).store_unaligned(target);
                    (sum1 * scale).store_unaligned(target + V::size);
                    (sum2 * scale).store_unaligned(target + 2 * V::size);
                    (sum3 * scale).store_unaligned(target + 3 * V::size);
                } else {
                    alignas(64) T out[group];
                    (sum0 * scale).store_aligned(out);
                    (sum1 * scale).store_aligned(out + V::size);
                    (sum2 * scale).store_aligned(out + 2 * V::size);
                    (sum3 * scale).store_aligned(out + 3 * V::size);
                    for (std::size_t j = 0; j < std::min(group, w - g); ++j) {
                        target[j] = beta == T(0) ? out[j] : out[j] + beta * target[j];
                    }
                }
            }
        }
    };
    const auto run = [&]<bool TransA, bool TransB>() {
        const std::size_t tiles = column_tiles * row_tiles;
        const double work = (static_cast<double>(k) + gemm_entry_macs) * static_cast<double>(m) *
                            static_cast<double>(n);
        if (on_team && tiles > 1 && work >= gemm_piece_macs) {
            shared_team().run(tiles, [&](std::size_t index, std::size_t) {
                tile.template operator()<TransA, TransB>(index);
            });
        } else {
            for (std::size_t index = 0; index < tiles; ++index) {
                tile.template operator()<TransA, TransB>(index);
            }
        }
    };
    if (ta == transpose::no) {
        tb == transpose::no ? run.template operator()<false, false>()
                            : run.template operator()<false, true>();
    } else {
        tb == transpose::no ? run.template operator()<true, false>()
                            : run.template operator()<true, true>();
    }
}

} // namespace detail

/// C (m x n, row-major, leading dimension ldc) = alpha op(A) op(B) + beta C,
/// with op(A) of shape (m x k) and op(B) of shape (k x n).
template <class T>
void gemm(transpose ta, transpose tb, std::size_t m, std::size_t n, std::size_t k, T alpha,
          const T* a, std::size_t lda, const T* b, std::size_t ldb, T beta, T* c, std::size_t ldc) {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                  "lightloop::gemm supports float and double");
    if (m == 0 || n == 0) {
        return;
    }
    const bool threaded =
      parallel_threads() > 1 && get_blas_thread_policy() != blas_thread_policy::untouched;
    if (k > 0 && k <= detail::short_product_depth) {
        detail::short_product(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, threaded);
        return;
    }
    if (!threaded) {
        // One call: on one thread, or threaded by OpenBLAS as it is set.
        detail::blas_call(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    // Each piece a one-thread OpenBLAS call (see blas_single_thread), held
    // for small products too: OpenBLAS threads them more slowly than it runs
    // them on one thread (README, "One set of threads"). Two pieces a
    // thread: a thread that a neighbour slows takes fewer (measured faster
    // than one piece a thread: README; the shared operand is packed per
    // piece, but it is the small one here).
    const blas_single_thread hold;
    detail::gemm_on_team(ta, tb, m, n, k, a, lda, b, ldb, c, ldc, 2, 0, 0,
                         [&](std::size_t rows, std::size_t cols, const T* ap, const T* bp, T* cp) {
                             detail::blas_call(ta, tb, rows, cols, k, alpha, ap, lda, bp, ldb, beta,
                                               cp, ldc);
                         });
}

/// C = alpha op(A) op(B) + beta C on whole matrices. C must already have the
/// result's shape: this never allocates, it checks and throws shape_error.
template <class T>
void gemm(T alpha, const matrix<T>& a, transpose ta, const matrix<T>& b, transpose tb, T beta,
          matrix<T>& c) {
    const std::size_t m = ta == transpose::yes ? a.shape(1) : a.shape(0);
    const std::size_t k = ta == transpose::yes ? a.shape(0) : a.shape(1);
    const std::size_t kb = tb == transpose::yes ? b.shape(1) : b.shape(0);
    const std::size_t n = tb == transpose::yes ? b.shape(0) : b.shape(1);
    if (k != kb || c.shape(0) != m || c.shape(1) != n) {
        throw shape_error("lightloop::gemm: op(A) is " + std::to_string(m) + "x" +
                          std::to_string(k) + ", op(B) is " + std::to_string(kb) + "x" +
                          std::to_string(n) + ", C is " + std::to_string(c.shape(0)) + "x" +
                          std::to_string(c.shape(1)));
    }
    gemm(ta, tb, m, n, k, alpha, a.data(), a.shape(1), b.data(), b.shape(1), beta, c.data(),
         c.shape(1));
}

/// The name of the kernel OpenBLAS chose for this CPU ("Haswell", "SkylakeX",
/// ...; "Prescott" is the slow generic fallback).
inline std::string blas_core_name() {
    const char* name = openblas_get_corename();
    return name != nullptr ? std::string(name) : std::string("unknown");
}

/// The most threads this OpenBLAS runs: its build's MAX_THREADS, read once
/// from openblas_get_config() (Debian's: 64); INT_MAX when the configuration
/// does not say. openblas_set_num_threads quietly caps a larger count there.
/// Allocates nothing (set_blas_threads runs inside allocation-counted steps).
inline int blas_max_threads() {
    static const int most = [] {
        static constexpr char key[] = "MAX_THREADS=";
        const char* config = openblas_get_config();
        const char* at = config != nullptr ? std::strstr(config, key) : nullptr;
        if (at == nullptr) {
            return INT_MAX;
        }
        const long value = std::strtol(at + sizeof(key) - 1, nullptr, 10);
        return value >= 1 && value <= INT_MAX ? static_cast<int>(value) : INT_MAX;
    }();
    return most;
}

/// Throws config_error unless OpenBLAS can run `threads` threads: at least
/// one and at most blas_max_threads(). Changes nothing (a program checks its
/// thread counts with it before its first run). `who` starts the message:
/// the function the caller called.
inline void require_blas_threads(int threads, const char* who = "lightloop::require_blas_threads") {
    if (threads < 1) {
        throw config_error(std::string(who) + ": thread count must be >= 1, got " +
                           std::to_string(threads));
    }
    if (const int most = blas_max_threads(); threads > most) {
        throw config_error(std::string(who) + ": " + std::to_string(threads) +
                           " threads asked, but this OpenBLAS runs at most " +
                           std::to_string(most) + " (its build's MAX_THREADS)");
    }
}

/// Sets the number of threads OpenBLAS, and with it lightloop, uses for every
/// later call. A count OpenBLAS cannot run (require_blas_threads) is refused
/// before anything changes, not quietly capped.
inline void set_blas_threads(int threads) {
    require_blas_threads(threads, "lightloop::set_blas_threads");
    detail::set_thread_count(threads);
}

} // namespace lightloop
