#pragma once
// Finiteness and size of floating-point arrays in one pass.
//
// The bit pattern of |x| (x's with the sign bit cleared) orders like |x| for
// finite x, and the pattern of an infinity or a NaN has every exponent bit set,
// which puts it above every finite one. So the largest pattern of an array
// says both whether every entry is finite and how large the largest one is,
// with integer maxima that no NaN can confuse.

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>

#include <xsimd/xsimd.hpp>

#include "lightloop/core/parallel.hpp"

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

/// The largest magnitude pattern of `values` (0 when empty), on this thread.
template <class T>
magnitude_pattern<T> largest_magnitude_bits(std::span<const T> values) noexcept {
    using P = magnitude_pattern<T>;
    using batch = xsimd::batch<T>;
    using pattern_batch = xsimd::batch<P>;
    constexpr std::size_t width = batch::size;
    pattern_batch acc(P(0));
    std::size_t i = 0;
    for (; i + width <= values.size(); i += width) {
        const auto bits =
          xsimd::bitwise_cast<pattern_batch>(batch::load_unaligned(values.data() + i));
        acc = xsimd::max(acc, bits & pattern_batch(float_bits<T>::magnitude));
    }
    alignas(pattern_batch::arch_type::alignment()) P lanes[width];
    acc.store_aligned(lanes);
    P largest = 0;
    for (const P lane : lanes) {
        largest = lane > largest ? lane : largest;
    }
    for (; i < values.size(); ++i) {
        const P bits = magnitude_bits(values[i]);
        largest = bits > largest ? bits : largest;
    }
    return largest;
}

/// max |v| over `values` (0 when empty), or +inf if any entry is an infinity
/// or a NaN; large arrays in pieces on the shared team.
template <class T>
double largest_magnitude_or_inf(std::span<const T> values) {
    std::atomic<magnitude_pattern<T>> largest{0};
    parallel_for_ranges(values.size(), elementwise_grain, [&](std::size_t begin, std::size_t end) {
        const auto piece = largest_magnitude_bits(values.subspan(begin, end - begin));
        auto seen = largest.load(std::memory_order_relaxed);
        while (piece > seen &&
               !largest.compare_exchange_weak(seen, piece, std::memory_order_relaxed)) {
        }
    });
    return magnitude_of<T>(largest.load(std::memory_order_relaxed));
}

/// Whether every entry of `values` is finite.
template <class T>
bool all_finite(std::span<const T> values) {
    return largest_magnitude_or_inf(values) < std::numeric_limits<double>::infinity();
}

/// Tracks the largest magnitude pattern of the values an element-wise loop
/// writes, for loops that check their own output (the optimizers' updates):
/// `watch.see(x)` for each batch or value written, `watch.finite()` after.
template <class T>
class magnitude_watch {
public:
    using pattern = magnitude_pattern<T>;

    void see(T x) noexcept {
        const pattern bits = magnitude_bits(x);
        scalar_ = bits > scalar_ ? bits : scalar_;
    }
    void see(const xsimd::batch<T>& x) noexcept {
        lanes_ = xsimd::max(lanes_, xsimd::bitwise_cast<xsimd::batch<pattern>>(x) &
                                      xsimd::batch<pattern>(float_bits<T>::magnitude));
    }
    /// Whether everything seen was finite.
    bool finite() const noexcept {
        // Any lane at or above the infinity pattern compares true.
        return scalar_ < float_bits<T>::infinity &&
               !xsimd::any(lanes_ >= xsimd::batch<pattern>(float_bits<T>::infinity));
    }

private:
    xsimd::batch<pattern> lanes_ =
      xsimd::batch<pattern>(pattern(0)); // parentheses: braces read an array
    pattern scalar_ = 0;
};

} // namespace lightloop::detail
