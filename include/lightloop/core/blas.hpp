#pragma once
// BLAS calls into preallocated buffers.
//
// Every GEMM in a training step goes through `gemm` below, which calls
// OpenBLAS's cblas_sgemm / cblas_dgemm on the tensors' storage. Results are
// written into outputs the caller owns: nothing here allocates.

#include <cblas.h>

#include <climits>
#include <cstddef>
#include <string>
#include <type_traits>

#include "lightloop/core/error.hpp"
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
    using detail::blas_size;
    if constexpr (std::is_same_v<T, float>) {
        cblas_sgemm(CblasRowMajor, detail::blas_op(ta), detail::blas_op(tb), blas_size(m),
                    blas_size(n), blas_size(k), alpha, a, blas_size(lda), b, blas_size(ldb), beta,
                    c, blas_size(ldc));
    } else {
        cblas_dgemm(CblasRowMajor, detail::blas_op(ta), detail::blas_op(tb), blas_size(m),
                    blas_size(n), blas_size(k), alpha, a, blas_size(lda), b, blas_size(ldb), beta,
                    c, blas_size(ldc));
    }
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

/// Sets the number of threads OpenBLAS uses for every later call.
inline void set_blas_threads(int threads) {
    if (threads < 1) {
        throw config_error("lightloop::set_blas_threads: thread count must be >= 1, got " +
                           std::to_string(threads));
    }
    openblas_set_num_threads(threads);
}

} // namespace lightloop
