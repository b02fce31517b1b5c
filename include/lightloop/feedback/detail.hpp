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

/// The layer-by-layer backward sweep of backprop and feedback alignment: for
/// each hidden layer i from the top, into(above, i, below.delta()) writes the
/// signal arriving from layer i+1, then below.delta() is scaled by f'(a_i).
template <class... Layers, class Into>
void propagate_down(std::tuple<Layers...>& layers, Into&& into) {
    constexpr std::size_t depth = sizeof...(Layers);
    for_index_reversed<depth - 1>([&](auto index) {
        constexpr std::size_t i = decltype(index)::value;
        auto& below = std::get<i>(layers);
        into(std::get<i + 1>(layers), i, below.delta());
        below.scale_by_derivative(below.delta().data(), below.delta().shape(1));
    });
}

inline void check_widths(const char* who, std::span<const std::size_t> widths) {
    if (widths.size() < 2) {
        throw config_error(std::string("lightloop::") + who +
                           ": needs at least an input and an output width");
    }
}

} // namespace lightloop::detail
