#pragma once
// Activation policies: f and its derivative, elementwise.
//
// `tanh_act` is named so that `using namespace lightloop;` does not collide
// with ::tanh from <math.h>. `identity` is the reference policy to copy when
// writing your own (see tests/layers/test_dense.cpp for a user-defined one).

#include <cmath>
#include <cstddef>
#include <string>
#include <type_traits>

#include <xsimd/xsimd.hpp>

#include "lightloop/core/concepts.hpp"
#include "lightloop/core/error.hpp"
#include "lightloop/core/parallel.hpp"
#include "lightloop/core/simd.hpp"

namespace lightloop {

namespace detail {
/// x with its magnitude capped at 1e4 (NaN passes through), for xsimd's tanh
/// and exp: they are exactly +-1 and 0 there already, and xsimd's double exp
/// converts x log2(e) to a 64-bit integer, undefined past 9.2e18 (UBSan
/// flagged it at a pre-activation of 1e30).
template <class B>
B capped(B x) noexcept {
    const B cap(typename B::value_type(1e4));
    return xsimd::select(xsimd::abs(x) > cap, xsimd::copysign(cap, x), x);
}
} // namespace detail

/// f(a) = a.
struct identity {
    static constexpr const char* name = "identity";
    template <scalar T>
    T value(T a) const noexcept {
        return a;
    }
    /// Scalars or xsimd batches (see tanh_act).
    static constexpr bool derivative_in_lanes = true;
    template <class V>
    V derivative(V, V) const noexcept {
        return V(1);
    }
};

/// f(a) = tanh(a); f'(a) = 1 - tanh(a)^2, computed from h.
///
/// apply() evaluates a whole row with xsimd's vectorised tanh (a few ulp from
/// std::tanh) for whatever SIMD width the program is compiled for: the dense
/// layer's fused pass uses it, as scalar std::tanh costs as much as a GEMM
/// at these sizes.
struct tanh_act {
    static constexpr const char* name = "tanh";
    template <scalar T>
    T value(T a) const noexcept {
        return std::tanh(a);
    }
    /// For a scalar or an xsimd batch: scale_rows_by_derivative runs it in
    /// lanes (an activation says so with derivative_in_lanes; a user's
    /// template derivative may well not compile for batches).
    static constexpr bool derivative_in_lanes = true;
    template <class V>
    V derivative(V, V h) const noexcept {
        return V(1) - h * h;
    }
    template <scalar T>
    void apply(const T* a, T* h, std::size_t count) const noexcept {
        using batch = xsimd::batch<T>;
        constexpr std::size_t width = batch::size;
        std::size_t i = 0;
        for (; i + width <= count; i += width) {
            xsimd::tanh(detail::capped(batch::load_unaligned(a + i))).store_unaligned(h + i);
        }
        for (; i < count; ++i) {
            h[i] = value(a[i]);
        }
    }
};

/// f(a) = 1 / (1 + exp(-a)); f'(a) = h (1 - h).
struct sigmoid {
    static constexpr const char* name = "sigmoid";
    template <scalar T>
    T value(T a) const noexcept {
        // Both branches keep exp's argument <= 0, so nothing overflows.
        if (a >= T(0)) {
            return T(1) / (T(1) + std::exp(-a));
        }
        const T z = std::exp(a);
        return z / (T(1) + z);
    }
    static constexpr bool derivative_in_lanes = true;
    template <class V>
    V derivative(V, V h) const noexcept {
        return h * (V(1) - h);
    }
    /// A row in SIMD lanes with xsimd's exp (a few ulp from std::exp; 0
    /// where the result would be subnormal), the same two branches as
    /// value() so nothing overflows; value() for the tail. A scalar std::exp
    /// per value is slow next to the layer's GEMM (README, Speed).
    template <scalar T>
    void apply(const T* a, T* h, std::size_t count) const noexcept {
        simd::for_each_lane<T>(count, [&](std::size_t i, auto lane) {
            using V = decltype(lane);
            if constexpr (std::is_same_v<V, T>) {
                h[i] = value(a[i]);
            } else {
                const V x = simd::load<V>(a + i);
                // exp(-a) or exp(a), whichever is <= 1
                const V z = xsimd::exp(-xsimd::abs(detail::capped(x)));
                const V one(T(1));
                simd::store(h + i, xsimd::select(x >= V(T(0)), one / (one + z), z / (one + z)));
            }
        });
    }
};

/// f(a) = max(a, 0); f'(a) = 1 for a > 0, else 0 (the subgradient at 0 is 0).
struct relu {
    static constexpr const char* name = "relu";
    template <scalar T>
    T value(T a) const noexcept {
        return a > T(0) ? a : T(0);
    }
    /// A row in SIMD lanes (the same selection as value()).
    template <scalar T>
    void apply(const T* a, T* h, std::size_t count) const noexcept {
        simd::for_each_lane<T>(count, [&](std::size_t i, auto lane) {
            using V = decltype(lane);
            const V x = simd::load<V>(a + i);
            simd::store(h + i, simd::select(x > V(T(0)), x, V(T(0))));
        });
    }
    static constexpr bool derivative_in_lanes = true;
    template <class V>
    V derivative(V a, V) const noexcept {
        return simd::select(a > V(0), V(1), V(0));
    }
};

/// f(a) = a for a > 0, slope * a otherwise.
struct leaky_relu {
    static constexpr const char* name = "leaky_relu";
    double slope = 0.01;

    leaky_relu() = default;
    explicit leaky_relu(double negative_slope)
      : slope(negative_slope) {
        if (!(negative_slope >= 0.0 && negative_slope < 1.0)) {
            throw config_error("lightloop::leaky_relu: slope must be in [0, 1), got " +
                               std::to_string(negative_slope));
        }
    }

    template <scalar T>
    T value(T a) const noexcept {
        return a > T(0) ? a : static_cast<T>(slope) * a;
    }
    /// A row in SIMD lanes (the same products and selection as value()).
    template <scalar T>
    void apply(const T* a, T* h, std::size_t count) const noexcept {
        const auto s = static_cast<T>(slope);
        simd::for_each_lane<T>(count, [&](std::size_t i, auto lane) {
            using V = decltype(lane);
            const V x = simd::load<V>(a + i);
            simd::store(h + i, simd::select(x > V(T(0)), x, V(s) * x));
        });
    }
    static constexpr bool derivative_in_lanes = true;
    template <class V>
    V derivative(V a, V) const noexcept {
        return simd::select(a > V(0), V(1), V(static_cast<simd::lane_t<V>>(slope)));
    }
};

namespace detail {

/// h = f(a) over `count` values, through the activation's row kernel when it
/// has one (apply: tanh_act's, sigmoid's and the relus', in SIMD lanes).
template <class Act, scalar T>
void activate_row(const Act& act, const T* a, T* h, std::size_t count) {
    if constexpr (requires { act.apply(a, h, count); }) {
        act.apply(a, h, count);
    } else {
        for (std::size_t c = 0; c < count; ++c) {
            h[c] = act.value(a[c]);
        }
    }
}

/// d = s ⊙ f'(a) over n rows of `width` values, s with row stride ld (s may
/// be d itself), rows in pieces on lightloop's threads: the derivative pass
/// of every layer with a fused activation. In SIMD lanes when the
/// activation's derivative takes xsimd batches (derivative_in_lanes, as the
/// library's activations' do), so the pass does not depend on the compiler's
/// -O3 vectoriser (at -O2 g++ 12 left it scalar); element by element the same
/// operations either way, rounded alike unless the compiler fuses one form's
/// multiply and add and not the other's (clang contracts tanh's scalar
/// 1 - h * h, not xsimd's operators: an ulp of the terms).
template <class Act, scalar T>
void scale_rows_by_derivative(const Act& act, const T* signal, std::size_t ld, const T* a,
                              const T* h, T* d, std::size_t n, std::size_t width) {
    parallel_for_rows(n, width, [&](std::size_t first, std::size_t end) {
        for (std::size_t r = first; r < end; ++r) {
            const T* s_row = signal + r * ld;
            const T* a_row = a + r * width;
            const T* h_row = h + r * width;
            T* d_row = d + r * width;
            if constexpr (requires { requires Act::derivative_in_lanes; }) {
                simd::for_each_lane<T>(width, [&](std::size_t c, auto lane) {
                    using V = decltype(lane);
                    simd::store(d_row + c, simd::load<V>(s_row + c) *
                                             act.derivative(simd::load<V>(a_row + c),
                                                            simd::load<V>(h_row + c)));
                });
            } else {
                for (std::size_t c = 0; c < width; ++c) {
                    d_row[c] = s_row[c] * act.derivative(a_row[c], h_row[c]);
                }
            }
        }
    });
}

} // namespace detail

static_assert(activation<identity> && activation<identity, double>);
static_assert(activation<tanh_act> && activation<tanh_act, double>);
static_assert(activation<sigmoid> && activation<sigmoid, double>);
static_assert(activation<relu> && activation<relu, double>);
static_assert(activation<leaky_relu> && activation<leaky_relu, double>);

} // namespace lightloop
