#pragma once
// One of several projection devices, picked at run time.
//
// dfa<Device> is compiled for its device type, so a program that offers
// several devices on its command line (readouts, encoders, media) compiles
// the whole network, its step, the fit loop and its checkpoints once per
// device. projection_choice<D1, D2, ...> holds any one of them and is one
// type: dfa<projection_choice<...>> is compiled once, and each call (one
// projection a step) goes to the held device through std::visit. The
// projection is the held device's own, so a network trained through the
// choice takes the same steps, to the bit, as one trained through that
// device (tested).
//
// Members beyond the projection_device concept (core/concepts.hpp), each as
// the library's callers look for it:
//   - describe() is the held device's (what a checkpoint's signature
//     records), so a checkpoint saved through the choice resumes with that
//     device on its own, and the other way round;
//   - save_state / load_state are offered always, and set_noise_stream when
//     any alternative has it; both reach the held device where it has them
//     (a dense device has no state and no noise: nothing to save, no stream
//     to set);
//   - statistics() (the optical devices' counters, which fit records),
//     feedback_matrix<T>() (a dense device's B, which the alignment probe
//     reads) and configure_slice (layer-parallel DFA) are offered only when
//     every alternative has them, so that a caller's check for them sees the
//     truth for any device the choice may hold.

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>

#include "lightloop/core/concepts.hpp"
#include "lightloop/core/describe.hpp"
#include "lightloop/core/one_of.hpp"
#include "lightloop/core/tensor.hpp"
#include "lightloop/io/state.hpp"

namespace lightloop {

template <class First, class... Rest>
requires(projection_device<First> && (projection_device<Rest> && ...)) class projection_choice
  : public detail::one_of<First, Rest...> {
    using base = detail::one_of<First, Rest...>;
    using base::held_;

    static_assert(sizeof...(Rest) >= 1,
                  "lightloop::projection_choice: give two projection devices or more");
    static_assert(detail::distinct_types<First, Rest...>(),
                  "lightloop::projection_choice: give each device type once");

    template <class D>
    static constexpr bool has_streams = requires(D d, std::uint64_t stream) {
        d.set_noise_stream(stream);
    };
    template <class D>
    static constexpr bool counts = requires(const D d) {
        d.statistics();
    };
    template <class D, class T>
    static constexpr bool has_matrix = requires(D d) {
        { d.template feedback_matrix<T>() } -> std::same_as<matrix<T>&>;
    };
    template <class D>
    static constexpr bool slices = requires(D d, std::size_t k, std::uint64_t seed) {
        d.configure_slice(k, k, seed, k, k);
    };

    // statistics() is offered when every alternative returns the same type.
    template <class D>
    using statistics_of = decltype(std::declval<const D&>().statistics());
    static constexpr bool all_count = [] {
        if constexpr (counts<First> && (counts<Rest> && ...)) {
            return (std::is_same_v<statistics_of<First>, statistics_of<Rest>> && ...);
        } else {
            return false;
        }
    }();
    template <class T>
    static constexpr bool all_matrix = has_matrix<First, T> && (has_matrix<Rest, T> && ...);
    static constexpr bool all_slice = slices<First> && (slices<Rest> && ...);

public:
    /// Holds First, default-constructed (a method built without a device,
    /// dfa<projection_choice<...>>{}, holds it).
    projection_choice() requires std::default_initializable<First>
    = default;

    /// Holds `device`, one of the alternatives (index(), get_if<D>() and
    /// visit(f) say which).
    template <class D>
    requires base::template is_alternative<std::remove_cvref_t<D>> projection_choice(
      D&& device) // NOLINT(google-explicit-constructor): a choice is any of them
      : base(std::forward<D>(device)) {}

    void configure(std::size_t in, std::size_t out, std::uint64_t seed) {
        std::visit([&](auto& d) { d.configure(in, out, seed); }, held_);
    }
    template <scalar T>
    void project(const matrix<T>& x, matrix<T>& y) {
        std::visit([&](auto& d) { d.project(x, y); }, held_);
    }
    std::size_t input_size() const {
        return std::visit([](const auto& d) { return std::size_t(d.input_size()); }, held_);
    }
    std::size_t output_size() const {
        return std::visit([](const auto& d) { return std::size_t(d.output_size()); }, held_);
    }

    /// The held device's description.
    std::string describe() const {
        return std::visit([](const auto& d) { return describe_object(d); }, held_);
    }

    /// The held device's state, if it has one (an optical device's
    /// calibration, noise counter and counters); nothing for a dense device.
    void save_state(state_writer& out) const { this->template save_held_state<state_reader>(out); }
    void load_state(state_reader& in) { this->template load_held_state<state_writer>(in); }

    /// The held device's noise stream (data-parallel ranks each draw their
    /// own camera noise); a device without noise has none to set.
    void set_noise_stream(std::uint64_t stream) requires(has_streams<First> ||
                                                         (has_streams<Rest> || ...)) {
        std::visit(
          [&](auto& d) {
              if constexpr (has_streams<std::remove_cvref_t<decltype(d)>>) {
                  d.set_noise_stream(stream);
              }
          },
          held_);
    }

    /// The held device's counters, where every alternative keeps the same
    /// kind.
    auto statistics() const requires all_count {
        return std::visit([](const auto& d) -> statistics_of<First> { return d.statistics(); },
                          held_);
    }

    /// The held device's matrix B, where every alternative has one.
    template <scalar T>
    matrix<T>& feedback_matrix() requires all_matrix<T> {
        return std::visit([](auto& d) -> matrix<T>& { return d.template feedback_matrix<T>(); },
                          held_);
    }

    /// The held device as outputs [first, first + count) of a device with
    /// `total`, where every alternative can be sliced.
    void configure_slice(std::size_t in, std::size_t total, std::uint64_t seed, std::size_t first,
                         std::size_t count) requires all_slice {
        std::visit([&](auto& d) { d.configure_slice(in, total, seed, first, count); }, held_);
    }
};

} // namespace lightloop
