#pragma once
// Element-wise loops written once for xsimd batches and for the scalar tail.
//
// The per-pixel loops of the optical simulation are simple enough for GCC's
// auto-vectoriser at -O3, but not at -O2 (CMake's RelWithDebInfo), where they
// stayed scalar (the README's Speed section has the figures). for_each_lane
// vectorises them explicitly:
//
//     for_each_lane<T>(n, [&](std::size_t i, auto lane) {
//         using V = decltype(lane);           // xsimd::batch<T>, then T
//         store(out + i, load<V>(a + i) * load<V>(b + i));
//     });

#include <cstddef>
#include <type_traits>

#include <xsimd/xsimd.hpp>

namespace lightloop::simd {

/// Calls f(i, V{}) with V = xsimd::batch<T> for whole batches of [0, n), then
/// with V = T for the rest.
///
/// Always inlined, and f should read locals (copy captured spans and
/// settings into locals first): xsimd's stores may alias anything, so values
/// reached through a pointer, such as a closure's captures by reference, are
/// reloaded after every store, which slows the loop measurably.
template <class T, class F>
[[gnu::always_inline]] inline void for_each_lane(std::size_t n, F&& f) {
    using batch = xsimd::batch<T>;
    std::size_t i = 0;
    for (; i + batch::size <= n; i += batch::size) {
        f(i, batch{});
    }
    // Counted down from the number left: written as i < n, GCC 12 at -O3
    // could not bound this loop in some callers inlined with constant
    // shapes and warned that a far iteration "invokes undefined behavior"
    // (tests/package/medium_loop.cpp).
    for (std::size_t rest = n - i; rest > 0; --rest, ++i) {
        f(i, T{});
    }
}

/// A V (a batch or a scalar) from p.
template <class V, class T>
V load(const T* p) noexcept {
    if constexpr (std::is_same_v<V, T>) {
        return *p;
    } else {
        return V::load_unaligned(p);
    }
}

/// Stores v (a batch or a scalar) at p.
template <class V, class T>
void store(T* p, const V& v) noexcept {
    if constexpr (std::is_same_v<V, T>) {
        *p = v;
    } else {
        v.store_unaligned(p);
    }
}

/// The scalar type of V: T for xsimd::batch<T>, V itself for a scalar.
template <class V>
struct lane_type {
    using type = V;
};
template <class T, class A>
struct lane_type<xsimd::batch<T, A>> {
    using type = T;
};
template <class V>
using lane_t = typename lane_type<V>::type;

/// c ? a : b for scalars; lane by lane for batches (c then a batch's
/// comparison, such as a > V(0)).
template <class C, class V>
V select(const C& c, const V& a, const V& b) noexcept {
    if constexpr (std::is_arithmetic_v<V>) {
        return c ? a : b;
    } else {
        return xsimd::select(c, a, b);
    }
}

/// The sum of p[0, n) in a fixed order whatever the caller's threads: one
/// partial sum per lane of xsimd::batch<T>, then the lanes (xsimd::hadd),
/// then the rest in order. A plain loop keeps every addition in one chain,
/// as the language requires of it: a float row of 784 took four times as
/// long that way.
template <class T>
T sum(const T* p, std::size_t n) noexcept {
    using batch = xsimd::batch<T>;
    std::size_t i = 0;
    T total = 0;
    if (n >= batch::size) {
        batch lanes = batch::load_unaligned(p);
        for (i = batch::size; i + batch::size <= n; i += batch::size) {
            lanes += batch::load_unaligned(p + i);
        }
        total = xsimd::hadd(lanes);
    }
    for (; i < n; ++i) {
        total += p[i];
    }
    return total;
}

} // namespace lightloop::simd
