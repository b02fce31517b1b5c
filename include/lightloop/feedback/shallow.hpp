#pragma once
// Shallow training: the hidden layers stay at their initial random weights
// (a random-features model) and only the output layer learns. The network
// neither computes nor applies hidden gradients, so hidden weights stay
// bit-identical; this is the baseline any learning rule must beat.

#include <cstddef>
#include <cstdint>
#include <span>
#include <tuple>

#include "lightloop/core/concepts.hpp"
#include "lightloop/core/tensor.hpp"

namespace lightloop {

struct shallow {
    static constexpr const char* name = "shallow";
    static constexpr bool trains_hidden_layers = false;

    void configure(network_layout, std::uint64_t) noexcept {}

    template <class... Layers, scalar T>
    void backward(std::tuple<Layers...>&, const matrix<T>&) {}
};

static_assert(feedback_method<shallow>);

} // namespace lightloop
