#pragma once
// One of several feedback methods, picked at run time.
//
// The network is compiled for its feedback method, so a program that offers
// several methods on its command line (backprop, feedback alignment, DFA on
// each device, shallow) compiles the network, its step, fit, its checkpoints
// and the alignment probes once per method. feedback_choice<M1, M2, ...>
// holds any one of them and is one type: the network and everything above
// it are compiled once, and the method's own work (configure, and one
// backward pass a step) goes to the held method through std::visit. A
// network trained through the choice takes the same steps, to the bit, as
// one trained through the held method (tested).
//
// What the choice answers for the held method:
//   - trains_hidden_layers() (a member function where a method has a static
//     constant): the network trains or freezes its hidden layers as the held
//     method says, so a choice holding shallow leaves them untouched;
//   - describe() is the held method's (a checkpoint's signature), so a
//     checkpoint saved through the choice resumes with that method on its
//     own, and the other way round; save_state / load_state reach the held
//     method where it has them (an optical device's calibration and noise
//     counter);
//   - what else a caller looks for in a method (a direct method's device,
//     projection offsets, feedback alignment's matrices) it finds through
//     visit_method(method, f), which calls f with the held method (or with
//     the method itself, where it is no choice): fit's device statistics,
//     the weight alignment and the data-parallel noise streams do.
// A method that needs its own code around the network (layer-parallel DFA,
// which slices its device) is given as itself.

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>

#include "lightloop/core/concepts.hpp"
#include "lightloop/core/describe.hpp"
#include "lightloop/core/error.hpp"
#include "lightloop/core/one_of.hpp"
#include "lightloop/core/shape.hpp"
#include "lightloop/core/tensor.hpp"
#include "lightloop/io/state.hpp"

namespace lightloop {

template <class First, class... Rest>
requires(feedback_method<First> && (feedback_method<Rest> && ...)) class feedback_choice
  : public detail::one_of<First, Rest...> {
    using base = detail::one_of<First, Rest...>;
    using base::held_;

    static_assert(sizeof...(Rest) >= 1,
                  "lightloop::feedback_choice: give two feedback methods or more");
    static_assert(detail::distinct_types<First, Rest...>(),
                  "lightloop::feedback_choice: give each feedback method once");

    template <class M>
    static constexpr bool takes_layout = requires(M m, network_layout layout, std::uint64_t seed) {
        m.configure(layout, seed);
    };

public:
    /// Holds First, default-constructed (backprop{}, dfa<...>{}).
    feedback_choice() requires std::default_initializable<First>
    = default;

    /// Holds `method`, one of the alternatives (index(), get_if<M>() and
    /// visit(f) say which).
    template <class M>
    requires base::template is_alternative<std::remove_cvref_t<M>> feedback_choice(
      M&& method) // NOLINT(google-explicit-constructor): a choice is any of them
      : base(std::forward<M>(method)) {}

    /// Whether the held method trains the hidden layers (shallow does not).
    bool trains_hidden_layers() const noexcept {
        return std::visit([](const auto& m) { return detail::trains_hidden_layers(m); }, held_);
    }

    /// Configures the held method. One written for widths only
    /// (configure(widths, seed)) serves networks whose layers all have
    /// parameters; with a pooling or flatten layer it is refused here, where
    /// the network would have refused it when compiled.
    void configure(network_layout layout, std::uint64_t seed) {
        std::visit(
          [&](auto& m) {
              if constexpr (takes_layout<std::remove_cvref_t<decltype(m)>>) {
                  m.configure(layout, seed);
              } else {
                  for (std::size_t i = 0; i + 1 < layout.widths.size(); ++i) {
                      if (!layout.trains(i)) {
                          throw config_error(
                            "lightloop::feedback_choice: " + describe_object(m) +
                            " has configure(widths, seed) only and cannot skip layer " +
                            std::to_string(i) +
                            ", which has no parameters; give it configure(network_layout, seed)");
                      }
                  }
                  m.configure(layout.widths, seed);
              }
          },
          held_);
    }

    template <class... Layers, scalar T>
    void backward(std::tuple<Layers...>& layers, const matrix<T>& target) {
        std::visit([&](auto& m) { m.backward(layers, target); }, held_);
    }

    /// The held method's description.
    std::string describe() const {
        return std::visit([](const auto& m) { return describe_object(m); }, held_);
    }

    /// The held method's state, if it has one (a direct method's optical
    /// device); nothing for the others.
    void save_state(state_writer& out) const { this->template save_held_state<state_reader>(out); }
    void load_state(state_reader& in) { this->template load_held_state<state_writer>(in); }
};

/// f(the method `method` holds) where it is a choice (feedback_choice, also
/// inside another), else f(method): how a caller reaches a method's own
/// members (a direct method's device(), its offsets) whether or not the
/// method was picked at run time. f returns the same type for every method.
template <class Method, class F>
decltype(auto) visit_method(Method& method, F&& f) {
    if constexpr (detail::is_choice<std::remove_const_t<Method>>) {
        return method.visit([&](auto& held) -> decltype(auto) { return visit_method(held, f); });
    } else {
        return std::forward<F>(f)(method);
    }
}

} // namespace lightloop
