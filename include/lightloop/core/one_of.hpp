#pragma once
// What the run-time choices of a policy share (projection_choice,
// optimizer_choice, feedback_choice): one of several types, held by value,
// which one known only at run time. Each choice is one type, so the code
// that uses it (the network, its step, fit, checkpoints) is compiled once
// for all the alternatives, and each call goes to the held one through
// std::visit.

#include <concepts>
#include <cstddef>
#include <type_traits>
#include <utility>
#include <variant>

namespace lightloop::detail {

/// Whether no type appears twice among Types: a choice holds each
/// alternative once.
template <class First, class... Rest>
constexpr bool distinct_types() {
    if constexpr (sizeof...(Rest) == 0) {
        return true;
    } else {
        return (!std::is_same_v<First, Rest> && ...) && distinct_types<Rest...>();
    }
}

template <class First, class... Rest>
class one_of {
public:
    /// Whether A is one of the alternatives.
    template <class A>
    static constexpr bool is_alternative = std::is_same_v<A, First> ||
                                           (std::is_same_v<A, Rest> || ...);

    /// Which alternative is held, counted from 0 in the template's order.
    std::size_t index() const noexcept { return held_.index(); }
    /// The held alternative if it is an A, else null.
    template <class A>
    requires is_alternative<A> A* get_if() noexcept { return std::get_if<A>(&held_); }
    template <class A>
    requires is_alternative<A>
    const A* get_if() const noexcept { return std::get_if<A>(&held_); }

    /// f(the held alternative); f returns the same type for each of them.
    template <class F>
    decltype(auto) visit(F&& f) {
        return std::visit(std::forward<F>(f), held_);
    }
    template <class F>
    decltype(auto) visit(F&& f) const {
        return std::visit(std::forward<F>(f), held_);
    }

protected:
    /// Holds First, default-constructed; a choice that offers this says so.
    one_of() requires std::default_initializable<First>
    = default;
    template <class A>
    requires is_alternative<std::remove_cvref_t<A>>
    explicit one_of(A&& held)
      : held_(std::forward<A>(held)) {}

    /// The held alternative's state, for a choice whose save_state and
    /// load_state are offered always: saved and loaded where the alternative
    /// has both members, nothing where it has neither or one (a dense
    /// device, backprop). Writer and Reader are io's state_writer and
    /// state_reader, which core/ does not name.
    template <class Reader, class Writer>
    void save_held_state(Writer& out) const {
        visit([&](const auto& held) {
            if constexpr (keeps_state<std::remove_cvref_t<decltype(held)>, Writer, Reader>) {
                held.save_state(out);
            }
        });
    }
    template <class Writer, class Reader>
    void load_held_state(Reader& in) {
        visit([&](auto& held) {
            if constexpr (keeps_state<std::remove_cvref_t<decltype(held)>, Writer, Reader>) {
                held.load_state(in);
            }
        });
    }

    std::variant<First, Rest...> held_;

private:
    template <class A, class Writer, class Reader>
    static constexpr bool keeps_state = requires(const A saved, A loaded, Writer& out, Reader& in) {
        saved.save_state(out);
        loaded.load_state(in);
    };
};

/// Whether C is a choice (derives from one_of).
template <class... A>
std::true_type derives_one_of(const one_of<A...>*);
std::false_type derives_one_of(const void*);
template <class C>
inline constexpr bool is_choice = decltype(derives_one_of(std::declval<const C*>()))::value;

} // namespace lightloop::detail
