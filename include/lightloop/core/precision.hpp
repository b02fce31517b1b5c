#pragma once
// Precision policies and GEMM backends, chosen at compile time.
//
// A layer's second template argument is its precision: `float` or `double`
// (everything in that type, through OpenBLAS, as always), or `mixed_bf16`:
//   - GEMM operands are bf16, accumulated in fp32;
//   - the master weights, their gradients and the optimizer's state are fp32;
//   - element-wise work (bias, activation, loss, softmax, the projection and
//     its decoding) is fp32;
//   - the weights' bf16 copy is written by the optimizer's own pass over the
//     weights (optim/sgd.hpp, optim/adam.hpp), never by a pass of its own.
// A mixed layer's value_type is float: losses, feedback methods, devices and
// optimizers see an fp32 network. Switching a network is one type:
//
//     using P = mixed_bf16;   // or float
//     dense<tanh_act, P>{784, 1024}, dense<tanh_act, P>{1024, 1024}, ...
//
// mixed_bf16 runs its products on the default backend: oneDNN where CMake
// found it (LIGHTLOOP_WITH_ONEDNN), which uses AMX or AVX512-BF16 when the CPU
// has them and otherwise runs fp32 products of the widened bf16 operands
// (oneDNN's own emulation is slower than its fp32); else OpenBLAS, which has no bf16
// kernel and runs the same products in fp32 on bf16-rounded operands (the
// same values, at fp32 speed). mixed_bf16_on<openblas_backend> or
// mixed_bf16_on<onednn_backend> names one.

#include <cstddef>
#include <cstdio>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <type_traits>

#include "lightloop/core/bf16.hpp"
#include "lightloop/core/blas.hpp"
#include "lightloop/core/concepts.hpp"
#include "lightloop/core/finite.hpp"
#include "lightloop/core/onednn.hpp"
#include "lightloop/core/parallel.hpp"
#include "lightloop/core/simd.hpp"

namespace lightloop {

/// OpenBLAS: fp32 and double products; bf16 ones emulated as fp32 products
/// of bf16-rounded floats.
struct openblas_backend {
    static constexpr const char* name = "openblas";
    /// How a bf16 operand is stored for this backend.
    using bf16_operand = float;
    /// C (fp32) = alpha op(A) op(B) + beta C; Operand is float (fp32 values,
    /// or bf16 values held in floats).
    template <class Operand>
    static void product(transpose ta, transpose tb, std::size_t m, std::size_t n, std::size_t k,
                        float alpha, const Operand* a, std::size_t lda, const Operand* b,
                        std::size_t ldb, float beta, float* c, std::size_t ldc) {
        gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    }
    /// As product, as one call on the calling thread (held at one OpenBLAS
    /// thread by a caller that spreads its own products: conv2d's chunks).
    template <class Operand>
    static void product_here(transpose ta, transpose tb, std::size_t m, std::size_t n,
                             std::size_t k, float alpha, const Operand* a, std::size_t lda,
                             const Operand* b, std::size_t ldb, float beta, float* c,
                             std::size_t ldc) {
        detail::blas_call(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    }
    static bool native_bf16() { return false; }
    static bool on_amx() { return false; }
    static std::string isa() { return "fp32 (bf16 emulated)"; }
};

#if defined(LIGHTLOOP_WITH_ONEDNN)
/// oneDNN: bf16 products on AMX or AVX512-BF16; on older CPUs fp32 products
/// of the widened bf16 operands (core/onednn.hpp, bf16_products_native).
struct onednn_backend {
    static constexpr const char* name = "onednn";
    using bf16_operand = bf16;
    /// C (fp32) = alpha op(A) op(B) + beta C; Operand is bf16 or float.
    template <class Operand>
    static void product(transpose ta, transpose tb, std::size_t m, std::size_t n, std::size_t k,
                        float alpha, const Operand* a, std::size_t lda, const Operand* b,
                        std::size_t ldb, float beta, float* c, std::size_t ldc) {
        onednn_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    }
    /// As product, as one oneDNN call on the calling thread.
    template <class Operand>
    static void product_here(transpose ta, transpose tb, std::size_t m, std::size_t n,
                             std::size_t k, float alpha, const Operand* a, std::size_t lda,
                             const Operand* b, std::size_t ldb, float beta, float* c,
                             std::size_t ldc) {
        onednn_gemm_here(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    }
    static bool native_bf16() { return detail::onednn::bf16_products_native(); }
    static bool on_amx() { return onednn_runs_amx(); }
    /// oneDNN's ISA, and where bf16 products do not run on it natively,
    /// how they run instead.
    static std::string isa() {
        return native_bf16() ? onednn_isa() : onednn_isa() + ", bf16 widened to fp32 products";
    }
};
using default_bf16_backend = onednn_backend;
#else
using default_bf16_backend = openblas_backend;
#endif

/// Where a float layer's products run: oneDNN where it is built in (faster
/// than OpenBLAS at the paper's step shapes on the machines measured: README,
/// "Mixed precision"), unless LIGHTLOOP_FP32_ON_OPENBLAS is defined; OpenBLAS
/// otherwise. Double products, and fp32 products outside the layers (the
/// projections, feedback alignment's), run on OpenBLAS.
#if defined(LIGHTLOOP_WITH_ONEDNN) && !defined(LIGHTLOOP_FP32_ON_OPENBLAS)
using default_fp32_backend = onednn_backend;
#else
using default_fp32_backend = openblas_backend;
#endif

/// The mixed bf16 precision (see the file comment) on `Backend`.
template <class Backend>
struct mixed_bf16_on {
    using master_type = float;
    using backend = Backend;
    using operand_type = typename Backend::bf16_operand;
};

/// Mixed bf16 on the default backend.
using mixed_bf16 = mixed_bf16_on<default_bf16_backend>;

/// Where mixed_bf16's products run here: "onednn: AVX512-BF16", "onednn: AMX",
/// "openblas: fp32 (bf16 emulated)".
inline std::string bf16_dispatch() {
    return std::string(default_bf16_backend::name) + ": " + default_bf16_backend::isa();
}

/// Names a precision in a call: make_network(..., precision_tag<mixed_bf16>{}).
template <class P>
struct precision_tag {
    using type = P;
};

namespace detail {
/// What a precision P is made of: whether it is mixed, the type its values
/// are held in (master), its GEMM operands' type, and the backend its
/// products run on (a mixed policy's own; the fp32 default for a scalar,
/// whose double products run on OpenBLAS directly).
template <class P>
struct precision_traits {
    static constexpr bool mixed = false;
    using master = P;
    using operand = P;
    using backend = default_fp32_backend;
};
template <class Backend>
struct precision_traits<mixed_bf16_on<Backend>> {
    static constexpr bool mixed = true;
    using master = float;
    using operand = typename Backend::bf16_operand;
    using backend = Backend;
};
} // namespace detail

/// Whether P is a mixed precision (bf16 operands, fp32 master values).
template <class P>
inline constexpr bool is_mixed_precision = detail::precision_traits<P>::mixed;

/// A layer's precision: a scalar, or a mixed policy.
template <class P>
concept precision = scalar<P> || is_mixed_precision<P>;

/// The type P's parameters, activations and gradients are held in.
template <precision P>
using master_t = typename detail::precision_traits<P>::master;

/// The type P's GEMM operands are held in (P itself for a scalar).
template <precision P>
using operand_t = typename detail::precision_traits<P>::operand;

/// A warning for a mixed precision whose products do not run on bf16
/// instructions here (they run as fp32 products of the bf16 values: the
/// same values, no faster than fp32); nothing for a
/// scalar precision or where they do.
template <precision P>
std::optional<std::string> precision_warning() {
    if constexpr (is_mixed_precision<P>) {
        using backend = typename P::backend;
        if (!backend::native_bf16()) {
            return std::string("lightloop: this CPU or backend has no bf16 matrix instructions "
                               "(backend ") +
                   backend::name + ": " + backend::isa() +
                   "); bf16 products run as fp32 products of the bf16 values: the same values, no "
                   "faster than fp32";
        }
    }
    return std::nullopt;
}

namespace detail {
/// The bf16 copy of a parameter tensor that a mixed-precision layer hands to
/// a visitor able to keep it current (the network's update: the optimizer
/// writes `values` in its pass over the weights, then sets *current).
template <class Operand>
struct operand_copy {
    std::span<Operand> values;
    bool* current;
};

/// Writes src rounded to bf16 into dst (n values), on lightloop's team.
template <class Operand>
void convert_on_team(const float* src, Operand* dst, std::size_t n) {
    parallel_for_ranges(n, elementwise_grain, [&](std::size_t begin, std::size_t end) {
        convert_to_bf16(src + begin, dst + begin, end - begin);
    });
}

/// convert_on_team, returning max |src| (+inf if an entry is not finite, as
/// largest_magnitude_or_inf gives) measured in the same pass.
template <class Operand>
double convert_on_team_measured(const float* src, Operand* dst, std::size_t n) {
    return watched_pieces<float>(
      n, elementwise_grain, [&](std::size_t begin, std::size_t end, magnitude_watch<float>& watch) {
          const float* in = src + begin;
          Operand* out = dst + begin;
          simd::for_each_lane<float>(end - begin, [&](std::size_t i, auto lane) {
              const auto v = simd::load<decltype(lane)>(in + i);
              watch.see(v);
              simd::store_bf16(out + i, v);
          });
      });
}

} // namespace detail

/// Prints precision_warning<P>() to `to` (stderr), once per process: a layer
/// of precision P calls it when it is built; a program that calls it first
/// warns before its own work starts, and the layers then print nothing more.
/// A program whose own report carries the warning passes nullptr: nothing is
/// printed, and the layers stay quiet.
template <precision P>
void warn_about_precision_once(std::FILE* to = stderr) {
    static std::once_flag once;
    std::call_once(once, [to] {
        if (const auto warning = precision_warning<P>(); warning && to != nullptr) {
            std::fprintf(to, "%s\n", warning->c_str());
        }
    });
}

} // namespace lightloop
