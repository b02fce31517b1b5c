#pragma once
// One of several optimizers, picked at run time.
//
// The network's step is compiled for its optimizer type, so a program that
// offers sgd or adam on its command line compiles the whole step, the fit
// loop and its checkpoints once per optimizer. optimizer_choice<sgd<>,
// adam<>> holds either and is one type: the step is compiled once, and each
// call (a handful per step: begin_step, and one update per parameter
// tensor) goes to the held optimizer through std::visit. The update itself
// is the held optimizer's own pass, so a network trained through the choice
// takes the same steps, to the bit, as one trained with that optimizer.
//
// It has each optional member of the optimizer contract (core/concepts.hpp)
// that every alternative has: update_and_measure (with and without the bf16
// copy), update_bound, the block updates of a sharded step, state and
// adopt_state (a layer-parallel run's state handed round), save_state and
// load_state. name() is the held optimizer's name, which a checkpoint
// records: a checkpoint saved through the choice resumes with that optimizer
// on its own, and the other way round.

#include <cstddef>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "lightloop/core/concepts.hpp"
#include "lightloop/core/describe.hpp"
#include "lightloop/core/one_of.hpp"
#include "lightloop/core/value_block.hpp"
#include "lightloop/io/state.hpp"

namespace lightloop {

template <class First, class... Rest>
class optimizer_choice : public detail::one_of<First, Rest...> {
    using base = detail::one_of<First, Rest...>;
    using base::held_;

    static_assert(sizeof...(Rest) >= 1, "lightloop::optimizer_choice: give two optimizers or more");
    static_assert(detail::distinct_types<First, Rest...>(),
                  "lightloop::optimizer_choice: give each optimizer type once");
    static_assert((std::is_same_v<typename First::value_type, typename Rest::value_type> && ...),
                  "lightloop::optimizer_choice: the optimizers must update the same scalar type");

    // What an alternative can do. Each optional member below is offered only
    // when every alternative has it, so that the network's checks of the
    // contract see the truth.
    template <class O, class W = std::span<typename O::value_type>,
              class G = std::span<const typename O::value_type>>
    static constexpr bool measures = requires(O o, W w, G g) {
        { o.update_and_measure(std::size_t{}, w, g) } -> std::convertible_to<double>;
    };
    template <class O>
    static constexpr bool bounds = requires(const O o) {
        { o.update_bound(std::size_t{}, 1.0, 1.0) } -> std::convertible_to<double>;
    };
    template <class O, class W = std::span<typename O::value_type>,
              class G = std::span<const typename O::value_type>>
    static constexpr bool blocks = requires(O o, W w, G g) {
        { o.update_block(std::size_t{}, w, g, value_block{}) } -> std::convertible_to<double>;
        o.set_state_bound(std::size_t{}, 1.0);
    };
    template <class O, class Low, class W = std::span<typename O::value_type>,
              class G = std::span<const typename O::value_type>>
    static constexpr bool measures_with_copy = requires(O o, W w, G g, std::span<Low> low) {
        { o.update_and_measure(std::size_t{}, w, g, low) } -> std::convertible_to<double>;
    };
    template <class O, class Low, class W = std::span<typename O::value_type>,
              class G = std::span<const typename O::value_type>>
    static constexpr bool blocks_with_copy = requires(O o, W w, G g, std::span<Low> low) {
        { o.update_block(std::size_t{}, w, g, low, value_block{}) } -> std::convertible_to<double>;
    };
    template <class O, class F>
    static constexpr bool visits = requires(O o, F f) {
        o.visit_state(f);
    };
    template <class O>
    static constexpr bool saves = requires(O o, const O co, state_writer& out, state_reader& in) {
        co.save_state(out);
        o.load_state(in);
    };
    static constexpr bool all_measure = measures<First> && (measures<Rest> && ...);
    static constexpr bool all_adopt =
      detail::adopts_state<First> && (detail::adopts_state<Rest> && ...);
    static constexpr bool all_bound = bounds<First> && (bounds<Rest> && ...);
    static constexpr bool all_block = blocks<First> && (blocks<Rest> && ...);
    static constexpr bool all_save = saves<First> && (saves<Rest> && ...);
    template <class Low>
    static constexpr bool all_measure_with_copy = measures_with_copy<First, Low> &&
                                                  (measures_with_copy<Rest, Low> && ...);
    template <class Low>
    static constexpr bool all_block_with_copy = blocks_with_copy<First, Low> &&
                                                (blocks_with_copy<Rest, Low> && ...);
    template <class F>
    static constexpr bool all_visit = visits<First, F> && (visits<Rest, F> && ...);

public:
    using value_type = typename First::value_type;

    /// Holds `optimizer`, one of the alternatives (index(), get_if<O>() and
    /// visit(f) say which).
    template <class O>
    requires base::template is_alternative<std::remove_cvref_t<O>> optimizer_choice(
      O&& optimizer) // NOLINT(google-explicit-constructor): a choice is any of them
      : base(std::forward<O>(optimizer)) {}

    /// The held optimizer's name ("sgd", "adam"; its type's name where it has
    /// none): what a checkpoint records.
    std::string name() const {
        return std::visit([](const auto& o) { return name_of(o); }, held_);
    }
    /// The held optimizer's description (describe_object).
    std::string describe() const {
        return std::visit([](const auto& o) { return describe_object(o); }, held_);
    }

    void begin_step() {
        std::visit([](auto& o) { o.begin_step(); }, held_);
    }
    void update(std::size_t slot, std::span<value_type> w, std::span<const value_type> g) {
        std::visit([&](auto& o) { o.update(slot, w, g); }, held_);
    }
    double learning_rate() const {
        return std::visit([](const auto& o) { return static_cast<double>(o.learning_rate()); },
                          held_);
    }
    void set_learning_rate(double lr) {
        std::visit([&](auto& o) { o.set_learning_rate(lr); }, held_);
    }

    double update_and_measure(std::size_t slot, std::span<value_type> w,
                              std::span<const value_type> g) requires all_measure {
        return std::visit([&](auto& o) { return double(o.update_and_measure(slot, w, g)); }, held_);
    }
    /// With the weights' bf16 copy, where every alternative writes one.
    template <class Low>
    double update_and_measure(std::size_t slot, std::span<value_type> w,
                              std::span<const value_type> g,
                              std::span<Low> low) requires all_measure_with_copy<Low> {
        return std::visit([&](auto& o) { return double(o.update_and_measure(slot, w, g, low)); },
                          held_);
    }
    double update_bound(std::size_t slot, double w_max, double g_max) const requires all_bound {
        return std::visit([&](const auto& o) { return double(o.update_bound(slot, w_max, g_max)); },
                          held_);
    }

    double update_block(std::size_t slot, std::span<value_type> w, std::span<const value_type> g,
                        value_block block) requires all_block {
        return std::visit([&](auto& o) { return double(o.update_block(slot, w, g, block)); },
                          held_);
    }
    template <class Low>
    double update_block(std::size_t slot, std::span<value_type> w, std::span<const value_type> g,
                        std::span<Low> low, value_block block) requires all_block_with_copy<Low> {
        return std::visit([&](auto& o) { return double(o.update_block(slot, w, g, low, block)); },
                          held_);
    }
    void set_state_bound(std::size_t slot, double bound) requires all_block {
        std::visit([&](auto& o) { o.set_state_bound(slot, bound); }, held_);
    }
    template <class F>
    void visit_state(F&& f) requires all_visit<F&> {
        std::visit([&](auto& o) { o.visit_state(f); }, held_);
    }

    /// The held optimizer's state per slot (see elementwise_optimizer).
    const std::vector<std::vector<value_type>>& state() const requires all_adopt {
        return std::visit(
          [](const auto& o) -> const std::vector<std::vector<value_type>>& { return o.state(); },
          held_);
    }
    void adopt_state(std::size_t slot, std::vector<value_type> values) requires all_adopt {
        std::visit([&](auto& o) { o.adopt_state(slot, std::move(values)); }, held_);
    }

    void save_state(state_writer& out) const requires all_save {
        std::visit([&](const auto& o) { o.save_state(out); }, held_);
    }
    void load_state(state_reader& in) requires all_save {
        std::visit([&](auto& o) { o.load_state(in); }, held_);
    }
};

} // namespace lightloop
