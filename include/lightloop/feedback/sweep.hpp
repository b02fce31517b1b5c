#pragma once
// The two shapes of a backward pass, for a feedback method written outside
// the library as for the library's own:
//
//   - layer by layer (backprop, feedback alignment): propagate_down walks the
//     hidden layers from the top, each one's signal computed from the layer
//     above it;
//   - direct (DFA, sign-DFA, DRTP): every hidden layer with parameters gets
//     its signal from the output at once, for_each_trained_hidden_layer.
//
// Either way a hidden layer's signal s becomes its delta through
// scale_by_derivative: delta = s ⊙ f'(a). A method's backward(layers, target)
// receives the network's layers as a tuple; on entry the output layer's delta
// holds the error e (output_error).

#include <cstddef>
#include <tuple>
#include <type_traits>

#include "lightloop/core/concepts.hpp"
#include "lightloop/core/shape.hpp"
#include "lightloop/feedback/detail.hpp"

namespace lightloop {

/// Whether layer type L has parameters to train (pooling and flatten say
/// has_parameters = false; a layer that says nothing has them).
template <class L>
inline constexpr bool layer_has_parameters = detail::has_parameters<std::remove_cvref_t<L>>();

/// e = d loss / d a_L per sample (n x d_L): the output layer's delta, read
/// without telling the layer that it may change.
template <class... Layers>
decltype(auto) output_error(std::tuple<Layers...>& layers) {
    static_assert(sizeof...(Layers) > 0);
    return detail::read_delta(std::get<sizeof...(Layers) - 1>(layers));
}

/// The layer-by-layer sweep: for each hidden layer i from the top,
/// into(above, i, delta) writes into layer i's delta (n x d_i, shaped by the
/// forward pass) the signal that arrives from layer i + 1 (`above`, whose
/// delta is final by then); that delta is then scaled by f'(a_i).
/// Backprop's into is above.backpropagate(delta).
template <class... Layers, class Into>
void propagate_down(std::tuple<Layers...>& layers, Into&& into) {
    constexpr std::size_t depth = sizeof...(Layers);
    detail::for_index_reversed<depth - 1>([&](auto index) {
        constexpr std::size_t i = decltype(index)::value;
        auto& below = std::get<i>(layers);
        into(std::get<i + 1>(layers), i, below.delta());
        below.scale_by_derivative(below.delta().data(), below.delta().shape(1));
    });
}

/// The direct sweep: f(layer, i) for each hidden layer i (0-based, below
/// the output layer) that has parameters, in order; f gives the layer its
/// signal by layer.scale_by_derivative(s, ld), s an n x d_i block with row
/// stride ld. Layers without parameters get none (nothing reads it).
template <class... Layers, class F>
void for_each_trained_hidden_layer(std::tuple<Layers...>& layers, F&& f) {
    constexpr std::size_t depth = sizeof...(Layers);
    if constexpr (depth > 1) {
        detail::for_index<depth - 1>([&](auto index) {
            constexpr std::size_t i = decltype(index)::value;
            auto& l = std::get<i>(layers);
            if constexpr (layer_has_parameters<decltype(l)>) {
                f(l, i);
            }
        });
    }
}

} // namespace lightloop
