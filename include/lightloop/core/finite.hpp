#pragma once
// Finiteness and size of floating-point arrays in one pass.
//
// The bit pattern of |x| (x's with the sign bit cleared) orders like |x| for
// finite x, and the pattern of an infinity or a NaN has every exponent bit set,
// which puts it above every finite one. So the largest pattern of an array
// says both whether every entry is finite and how large the largest one is,
// with integer maxima that no NaN can confuse.

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>

#include <xsimd/xsimd.hpp>

#include "lightloop/core/parallel.hpp"
#include "lightloop/core/simd.hpp"

namespace lightloop::detail {

template <class T>
struct float_bits;

template <>
struct float_bits<float> {
    using type = std::int32_t; // magnitude patterns are below 2^31: signed compares suffice
    static constexpr type magnitude = 0x7fffffff;
    static constexpr type infinity = 0x7f800000;
};

template <>
struct float_bits<double> {
    using type = std::int64_t;
    static constexpr type magnitude = 0x7fffffffffffffff;
    static constexpr type infinity = 0x7ff0000000000000;
};

template <class T>
using magnitude_pattern = typename float_bits<T>::type;

/// The pattern of |x|.
template <class T>
magnitude_pattern<T> magnitude_bits(T x) noexcept {
    return std::bit_cast<magnitude_pattern<T>>(x) & float_bits<T>::magnitude;
}

/// |x| of a pattern from magnitude_bits; +inf for an infinity's or a NaN's.
template <class T>
double magnitude_of(magnitude_pattern<T> bits) noexcept {
    if (bits >= float_bits<T>::infinity) {
        return std::numeric_limits<double>::infinity();
    }
    return static_cast<double>(std::bit_cast<T>(bits));
}

/// Tracks the largest magnitude pattern of the values a loop reads or writes
/// (the optimizers' updates check their own output with it): `watch.see(x)`
/// for each batch or value, then `largest()` or `finite()`.
template <class T>
class magnitude_watch {
public:
    using pattern = magnitude_pattern<T>;

    void see(T x) noexcept { scalar_ = std::max(scalar_, magnitude_bits(x)); }
    void see(const xsimd::batch<T>& x) noexcept {
        lanes_ = xsimd::max(lanes_, xsimd::bitwise_cast<xsimd::batch<pattern>>(x) &
                                      xsimd::batch<pattern>(float_bits<T>::magnitude));
    }
    /// The largest pattern seen (0 if none).
    pattern largest() const noexcept {
        alignas(xsimd::batch<pattern>::arch_type::alignment())
          pattern lanes[xsimd::batch<pattern>::size];
        lanes_.store_aligned(lanes);
        pattern out = scalar_;
        for (const pattern lane : lanes) {
            out = std::max(out, lane);
        }
        return out;
    }
    /// Whether everything seen was finite.
    bool finite() const noexcept { return largest() < float_bits<T>::infinity; }

private:
    xsimd::batch<pattern> lanes_ =
      xsimd::batch<pattern>(pattern(0)); // parentheses: braces read an array
    pattern scalar_ = 0;
};

/// body(begin, end, watch) over [0, count) in pieces of at least `grain` on
/// the shared team, each piece showing its own magnitude_watch<T> the values
/// it reads or writes. Returns the largest magnitude the pieces saw (0 if
/// none), or +inf if one was not finite: the pieces merge by a maximum, so
/// the result is the same on any thread count. The passes that check their
/// data as they go (updates, conversions, the derivative pass) run on it.
template <class T, class Body>
double watched_pieces(std::size_t count, std::size_t grain, Body&& body) {
    std::atomic<magnitude_pattern<T>> largest{0};
    parallel_for_ranges(count, grain, [&](std::size_t begin, std::size_t end) {
        magnitude_watch<T> watch;
        body(begin, end, watch);
        const auto piece = watch.largest();
        auto seen = largest.load(std::memory_order_relaxed);
        while (piece > seen &&
               !largest.compare_exchange_weak(seen, piece, std::memory_order_relaxed)) {
        }
    });
    return magnitude_of<T>(largest.load(std::memory_order_relaxed));
}

/// max |v| over `values` (0 when empty), or +inf if any entry is an infinity
/// or a NaN; large arrays in pieces on the shared team.
template <class T>
double largest_magnitude_or_inf(std::span<const T> values) {
    return watched_pieces<T>(values.size(), elementwise_grain,
                             [&](std::size_t begin, std::size_t end, magnitude_watch<T>& watch) {
                                 const T* p = values.data() + begin;
                                 simd::for_each_lane<T>(end - begin, [&](std::size_t i, auto lane) {
                                     watch.see(simd::load<decltype(lane)>(p + i));
                                 });
                             });
}

/// Whether every entry of `values` is finite.
template <class T>
bool all_finite(std::span<const T> values) {
    return largest_magnitude_or_inf(values) < std::numeric_limits<double>::infinity();
}

} // namespace lightloop::detail
