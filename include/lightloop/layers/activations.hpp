#pragma once
// Activation policies: f and its derivative, elementwise.
//
// `tanh_act` is named so that `using namespace lightloop;` does not collide
// with ::tanh from <math.h>. `identity` is the reference policy to copy when
// writing your own (see tests/layers/test_dense.cpp for a user-defined one).
//
// Lanes: `value` and `derivative` are templates that take a scalar or an
// xsimd batch, and each activation says so (`value_in_lanes`,
// `derivative_in_lanes`), so the layers' value and derivative passes run a
// whole SIMD batch at a time (activate_row, scale_rows_by_derivative) instead
// of relying on the compiler's -O3 vectoriser. A user's activation whose
// templates would not compile for batches leaves the flags out and is
// evaluated value by value; one with a row kernel of its own declares
// `apply(a, h, count)`, which the value pass then calls instead.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <type_traits>

#include <xsimd/xsimd.hpp>

#include "lightloop/core/bf16.hpp"
#include "lightloop/core/concepts.hpp"
#include "lightloop/core/describe.hpp"
#include "lightloop/core/error.hpp"
#include "lightloop/core/finite.hpp"
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
    /// Scalars or xsimd batches (see the file comment).
    static constexpr bool value_in_lanes = true;
    template <class V>
    V value(V a) const noexcept {
        return a;
    }
    static constexpr bool derivative_in_lanes = true;
    template <class V>
    V derivative(V, V) const noexcept {
        return V(1);
    }
};

/// f(a) = tanh(a); f'(a) = 1 - tanh(a)^2, computed from h.
///
/// A batch's value is xsimd's vectorised tanh (a few ulp from std::tanh, a
/// scalar's): scalar std::tanh costs as much as the dense layer's GEMM at
/// the paper's sizes.
struct tanh_act {
    static constexpr const char* name = "tanh";
    static constexpr bool value_in_lanes = true;
    template <class V>
    V value(V a) const noexcept {
        if constexpr (std::is_arithmetic_v<V>) {
            return std::tanh(a);
        } else {
            return xsimd::tanh(detail::capped(a));
        }
    }
    static constexpr bool derivative_in_lanes = true;
    template <class V>
    V derivative(V, V h) const noexcept {
        return V(1) - h * h;
    }
};

/// f(a) = 1 / (1 + exp(-a)); f'(a) = h (1 - h).
///
/// Both branches keep exp's argument <= 0, so nothing overflows. A batch's
/// value goes through xsimd's exp (a few ulp from std::exp, a scalar's; 0
/// where the result would be subnormal): a scalar std::exp per value is
/// slow next to the layer's GEMM (README, Speed).
struct sigmoid {
    static constexpr const char* name = "sigmoid";
    static constexpr bool value_in_lanes = true;
    template <class V>
    V value(V a) const noexcept {
        if constexpr (std::is_arithmetic_v<V>) {
            if (a >= V(0)) {
                return V(1) / (V(1) + std::exp(-a));
            }
            const V z = std::exp(a);
            return z / (V(1) + z);
        } else {
            // exp(-a) or exp(a), whichever is <= 1
            const V z = xsimd::exp(-xsimd::abs(detail::capped(a)));
            const V one(1);
            return xsimd::select(a >= V(0), one / (one + z), z / (one + z));
        }
    }
    static constexpr bool derivative_in_lanes = true;
    template <class V>
    V derivative(V, V h) const noexcept {
        return h * (V(1) - h);
    }
};

/// f(a) = max(a, 0); f'(a) = 1 for a > 0, else 0 (the subgradient at 0 is 0).
struct relu {
    static constexpr const char* name = "relu";
    static constexpr bool value_in_lanes = true;
    template <class V>
    V value(V a) const noexcept {
        return simd::select(a > V(0), a, V(0));
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
                               number_text(negative_slope));
        }
    }

    static constexpr bool value_in_lanes = true;
    template <class V>
    V value(V a) const noexcept {
        return simd::select(a > V(0), a, V(static_cast<simd::lane_t<V>>(slope)) * a);
    }
    static constexpr bool derivative_in_lanes = true;
    template <class V>
    V derivative(V a, V) const noexcept {
        return simd::select(a > V(0), V(1), V(static_cast<simd::lane_t<V>>(slope)));
    }
};

namespace detail {

/// h = f(a) over `count` values: through the activation's own row kernel
/// when it has one (apply), else in SIMD lanes when its value takes xsimd
/// batches (value_in_lanes, as the library's activations' does), else value
/// by value.
template <class Act, scalar T>
void activate_row(const Act& act, const T* a, T* h, std::size_t count) {
    if constexpr (requires { act.apply(a, h, count); }) {
        act.apply(a, h, count);
    } else if constexpr (requires { requires Act::value_in_lanes; }) {
        const Act local = act; // a member (leaky_relu's slope) read from a register
        simd::for_each_lane<T>(count, [&](std::size_t i, auto lane) {
            using V = decltype(lane);
            simd::store(h + i, local.value(simd::load<V>(a + i)));
        });
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
template <class Act, scalar T, class Copy = T>
double scale_rows_by_derivative(const Act& act, const T* signal, std::size_t ld, const T* a,
                                const T* h, T* d, std::size_t n, std::size_t width,
                                Copy* copy = nullptr) {
    // With `copy` (float d only): d is also written there rounded to bf16,
    // row-major like d, in the same pass (a mixed layer's delta as its GEMM
    // operand). Returns max |d|, or +inf if an entry is not finite, as
    // largest_magnitude_or_inf(d) would (a maximum: the same on any thread
    // count), so that no second pass needs to read d for it.
    const auto run = [&](auto with_copy) {
        return watched_pieces<T>(
          n, elementwise_grain / std::max<std::size_t>(width, 1),
          [&](std::size_t first, std::size_t end, magnitude_watch<T>& watch) {
              for (std::size_t r = first; r < end; ++r) {
                  const T* s_row = signal + r * ld;
                  const T* a_row = a + r * width;
                  const T* h_row = h + r * width;
                  T* d_row = d + r * width;
                  Copy* c_row = with_copy ? copy + r * width : nullptr;
                  if constexpr (requires { requires Act::derivative_in_lanes; }) {
                      simd::for_each_lane<T>(width, [&](std::size_t c, auto lane) {
                          using V = decltype(lane);
                          const V value =
                            simd::load<V>(s_row + c) *
                            act.derivative(simd::load<V>(a_row + c), simd::load<V>(h_row + c));
                          simd::store(d_row + c, value);
                          watch.see(value);
                          if constexpr (decltype(with_copy)::value) {
                              simd::store_bf16(c_row + c, value);
                          }
                      });
                  } else {
                      for (std::size_t c = 0; c < width; ++c) {
                          d_row[c] = s_row[c] * act.derivative(a_row[c], h_row[c]);
                          watch.see(d_row[c]);
                          if constexpr (decltype(with_copy)::value) {
                              simd::store_bf16(c_row + c, d_row[c]);
                          }
                      }
                  }
              }
          });
    };
    if constexpr (std::is_same_v<T, float>) {
        if (copy != nullptr) {
            return run(std::true_type{});
        }
    }
    return run(std::false_type{});
}

} // namespace detail

static_assert(activation<identity> && activation<identity, double>);
static_assert(activation<tanh_act> && activation<tanh_act, double>);
static_assert(activation<sigmoid> && activation<sigmoid, double>);
static_assert(activation<relu> && activation<relu, double>);
static_assert(activation<leaky_relu> && activation<leaky_relu, double>);

} // namespace lightloop
