#pragma once
// Tuple walking shared by the feedback methods and the network.

#include <cstddef>
#include <span>
#include <string>
#include <tuple>
#include <utility>

#include "lightloop/core/error.hpp"

namespace lightloop::detail {

/// Calls f(std::integral_constant<size_t, I>{}) for I = 0, 1, ..., N-1.
template <std::size_t N, class F>
constexpr void for_index(F&& f) {
    [&]<std::size_t... I>(std::index_sequence<I...>) {
        (f(std::integral_constant<std::size_t, I>{}), ...);
    }
    (std::make_index_sequence<N>{});
}

/// Calls f(std::integral_constant<size_t, I>{}) for I = N-1, N-2, ..., 0.
template <std::size_t N, class F>
constexpr void for_index_reversed(F&& f) {
    [&]<std::size_t... I>(std::index_sequence<I...>) {
        (f(std::integral_constant<std::size_t, N - 1 - I>{}), ...);
    }
    (std::make_index_sequence<N>{});
}

inline void check_widths(const char* who, std::span<const std::size_t> widths) {
    if (widths.size() < 2) {
        throw config_error(std::string("lightloop::") + who +
                           ": needs at least an input and an output width");
    }
}

} // namespace lightloop::detail
