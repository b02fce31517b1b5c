#pragma once
// Backpropagation: delta a_i = (W_{i+1}^T delta a_{i+1}) ⊙ f'(a_i), layer by
// layer from the top (with rows as samples: delta_i = (delta_{i+1} W_{i+1}) ⊙ f').

#include <cstddef>
#include <cstdint>
#include <span>
#include <tuple>

#include "lightloop/core/concepts.hpp"
#include "lightloop/core/tensor.hpp"
#include "lightloop/feedback/sweep.hpp"

namespace lightloop {

struct backprop {
    static constexpr const char* name = "backprop";
    static constexpr bool trains_hidden_layers = true;

    void configure(network_layout, std::uint64_t) noexcept {}

    template <class... Layers, scalar T>
    void backward(std::tuple<Layers...>& layers, const matrix<T>& /*target*/) {
        propagate_down(layers,
                       [](auto& above, std::size_t, auto& into) { above.backpropagate(into); });
    }
};

static_assert(feedback_method<backprop>);

} // namespace lightloop
