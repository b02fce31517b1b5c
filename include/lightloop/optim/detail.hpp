#pragma once
// Per-slot state storage and setting checks shared by the optimizers.

#include <cmath>
#include <cstddef>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "lightloop/core/describe.hpp"
#include "lightloop/core/error.hpp"
#include "lightloop/core/finite.hpp"
#include "lightloop/core/parallel.hpp"
#include "lightloop/core/value_block.hpp"
#include "lightloop/io/state.hpp"

namespace lightloop::detail {

inline void require_setting(bool ok, const char* optimizer, const char* name, double value,
                            const char* expected) {
    if (!ok) {
        throw config_error(std::string("lightloop::") + optimizer + ": " + name + " must be " +
                           expected + ", got " + number_text(value));
    }
}

inline void check_learning_rate(const char* optimizer, double lr) {
    require_setting(lr > 0.0 && std::isfinite(lr), optimizer, "learning_rate", lr,
                    "positive and finite");
}

/// p + offset, or p itself when p is a void* (no bf16 copy to write).
template <class L>
L* advance(L* p, std::size_t offset) noexcept {
    if constexpr (std::is_void_v<L>) {
        return p;
    } else {
        return p + offset;
    }
}

/// Refuses a weights' bf16 copy whose length is not the weights'.
inline void check_copy_size(const char* optimizer, std::size_t slot, std::size_t weights,
                            std::size_t copy) {
    if (weights != copy) {
        throw shape_error(std::string("lightloop::") + optimizer + ": slot " +
                          std::to_string(slot) + " has " + std::to_string(weights) +
                          " weights but a bf16 copy of " + std::to_string(copy));
    }
}

/// The frame of an optimizer's update: [0, count) in pieces on the shared
/// team, body(begin, end, watch) updating one piece and showing `watch` every
/// value it writes (weights and state). Returns the largest magnitude
/// written, or +inf if any of them is not finite. The bodies copy what they
/// read into locals before their simd::for_each_lane loop (see there) and are
/// written with xsimd because at -O2 GCC 12 left them scalar.
template <class T, class Body>
double update_in_pieces(std::size_t count, Body&& body) {
    return watched_pieces<T>(count, elementwise_grain, std::forward<Body>(body));
}

/// update_bound's bounds are exact in real arithmetic; the update rounds
/// each of its few operations (a relative 2^-24 each in float), so the
/// bounds carry this factor.
inline constexpr double rounding_slack = 1.0 + 1e-5;

/// `Buffers` state vectors per parameter slot, allocated the first time a slot
/// is updated and never again.
template <class T, std::size_t Buffers>
class slot_state {
public:
    /// The state buffers of `slot`, sized for `count` parameters.
    std::span<T> get(const char* optimizer, std::size_t slot, std::size_t buffer,
                     std::size_t count) {
        if (slot >= states_.size()) {
            states_.resize(slot + 1);
            largest_.resize(slot + 1, 0.0);
        }
        auto& entry = states_[slot];
        if (entry.empty()) {
            entry.assign(Buffers * count, T(0));
        } else if (entry.size() != Buffers * count) {
            throw shape_error(std::string("lightloop::") + optimizer + ": slot " +
                              std::to_string(slot) + " had " +
                              std::to_string(entry.size() / Buffers) + " parameters and now has " +
                              std::to_string(count));
        }
        return std::span<T>(entry.data() + buffer * count, count);
    }

    void clear() {
        states_.clear();
        largest_.clear();
    }

    /// An upper bound on |every state value| of `slot`: 0 before the slot
    /// has state (it starts at zero), then what the last update wrote (see
    /// remember_largest) or, after load(), the largest loaded value.
    double largest(std::size_t slot) const noexcept {
        return slot < largest_.size() ? largest_[slot] : 0.0;
    }
    /// Records the largest magnitude an update of `slot` wrote (its state
    /// among it), after get() has made the slot.
    void remember_largest(std::size_t slot, double value) noexcept { largest_[slot] = value; }
    /// Says a bound on |every state value| of `slot` learnt elsewhere (a
    /// sharded update: the largest of every process's block). Both lists
    /// grow together, as in get(), which would otherwise cut this one short.
    void set_largest(std::size_t slot, double value) {
        if (slot >= largest_.size()) {
            largest_.resize(slot + 1, 0.0);
            states_.resize(slot + 1);
        }
        largest_[slot] = value;
    }
    /// Makes `values` (its `Buffers` buffers one after another, as raw()
    /// holds them) the state of `slot`, which may have none yet: a slot's
    /// state from the process that updates it (layer-parallel training).
    void adopt(const char* optimizer, std::size_t slot, std::vector<T> values) {
        if (values.size() % Buffers != 0) {
            throw shape_error(std::string("lightloop::") + optimizer + ": slot " +
                              std::to_string(slot) + " given " + std::to_string(values.size()) +
                              " state values, not a multiple of " + std::to_string(Buffers));
        }
        const double largest = largest_magnitude_or_inf(std::span<const T>(values));
        set_largest(slot, largest);
        states_[slot] = std::move(values);
    }
    /// f(slot, buffer) for each of the `Buffers` state buffers of every slot
    /// that has state.
    template <class F>
    void visit(F& f) {
        for (std::size_t slot = 0; slot < states_.size(); ++slot) {
            const std::size_t count = states_[slot].size() / Buffers;
            for (std::size_t b = 0; b < Buffers && count > 0; ++b) {
                f(slot, std::span<T>(states_[slot].data() + b * count, count));
            }
        }
    }

    void save(state_writer& out) const {
        out.u64(states_.size());
        for (const auto& entry : states_) {
            out.values(std::span<const T>(entry));
        }
    }
    /// Reads every slot first; replaces the state only when all were read.
    void load(state_reader& in) {
        const std::uint64_t slots = in.u64("optimizer slot count");
        if (slots > in.remaining() / sizeof(std::uint64_t)) {
            in.fail("truncated checkpoint (optimizer claims " + std::to_string(slots) + " slots)");
        }
        std::vector<std::vector<T>> staged(static_cast<std::size_t>(slots));
        for (auto& entry : staged) {
            entry = in.values<T>("optimizer state");
            if (entry.size() % Buffers != 0) {
                in.fail("optimizer state of " + std::to_string(entry.size()) +
                        " values is not a multiple of " + std::to_string(Buffers));
            }
        }
        std::vector<double> largest(staged.size());
        for (std::size_t slot = 0; slot < staged.size(); ++slot) {
            largest[slot] = largest_magnitude_or_inf(std::span<const T>(staged[slot]));
        }
        states_ = std::move(staged);
        largest_ = std::move(largest);
    }

    /// Every slot's state (read-only: largest() must stay true).
    const std::vector<std::vector<T>>& raw() const noexcept { return states_; }

private:
    std::vector<std::vector<T>> states_;
    std::vector<double> largest_;
};

/// Refuses a block that does not lie within a slot's `count` values.
inline void check_block(const char* optimizer, std::size_t slot, std::size_t count,
                        value_block block) {
    if (block.first > count || block.count > count - block.first) {
        throw shape_error(std::string("lightloop::") + optimizer + ": slot " +
                          std::to_string(slot) + " has " + std::to_string(count) +
                          " values; the block [" + std::to_string(block.first) + ", " +
                          std::to_string(block.first + block.count) + ") is not within them");
    }
}

/// The update calls sgd and adam share. Each writes a slot's values, or a
/// block of them (a sharded update: update_block), with or without their
/// bf16 copy, through the derived optimizer's one pass
/// update_impl(slot, w, g, low, block) (low: the copy's data, or a void*
/// null), and keeps its per-slot state in `state_`.
template <class Derived, class T, std::size_t Buffers>
class elementwise_optimizer {
public:
    void update(std::size_t slot, std::span<T> w, std::span<const T> g) {
        update_and_measure(slot, w, g);
    }

    /// update(), returning the largest magnitude it wrote (weights and
    /// state), or +inf if any of them is not finite: watched as they are
    /// written, instead of a second pass over them.
    double update_and_measure(std::size_t slot, std::span<T> w, std::span<const T> g) {
        return update_block(slot, w, g, {0, w.size()});
    }

    /// update_and_measure() that also writes w's bf16 copy `low` (bf16, or
    /// floats holding bf16 values) in the same pass: the mixed-precision
    /// network's update (core/precision.hpp).
    template <class Low>
    requires std::is_same_v<T, float>
    double update_and_measure(std::size_t slot, std::span<T> w, std::span<const T> g,
                              std::span<Low> low) {
        return update_block(slot, w, g, low, {0, w.size()});
    }

    /// update_and_measure() of `block` of the slot's values only (w and g
    /// are the whole slot's; the rest of w, and of the state, is left as it
    /// is): a sharded update, each process updating its own block. The
    /// update is element-wise, so blocks updated apart give the bits of one
    /// update of the whole (blocks that start on multiples of 16 values, as
    /// block_of's do: see core/value_block.hpp).
    double update_block(std::size_t slot, std::span<T> w, std::span<const T> g, value_block block) {
        return self().update_impl(slot, w, g, static_cast<void*>(nullptr), block);
    }
    template <class Low>
    requires std::is_same_v<T, float>
    double update_block(std::size_t slot, std::span<T> w, std::span<const T> g, std::span<Low> low,
                        value_block block) {
        check_copy_size(Derived::name, slot, w.size(), low.size());
        return self().update_impl(slot, w, g, low.data(), block);
    }

    /// Tells the optimizer that no state value of `slot` exceeds `bound` in
    /// magnitude (what update_bound starts from): after a sharded update,
    /// the largest any process's update_block wrote.
    void set_state_bound(std::size_t slot, double bound) { state_.set_largest(slot, bound); }
    /// f(slot, state) for every state buffer of every slot (writable: a
    /// sharded update's processes hand their blocks round before a
    /// checkpoint; the values must stay within the slot's state bound).
    template <class F>
    void visit_state(F&& f) {
        state_.visit(f);
    }
    /// The state buffers per slot (empty for a slot with none), read-only.
    const auto& state() const noexcept { return state_.raw(); }
    /// Makes `values` the state of `slot` (laid out as state() holds it):
    /// the state of a slot another process updated, handed over.
    void adopt_state(std::size_t slot, std::vector<T> values) {
        state_.adopt(Derived::name, slot, std::move(values));
    }

protected:
    slot_state<T, Buffers> state_;

private:
    Derived& self() noexcept { return static_cast<Derived&>(*this); }
};

inline void check_update_sizes(const char* optimizer, std::size_t slot, std::size_t w,
                               std::size_t g) {
    if (w != g) {
        throw shape_error(std::string("lightloop::") + optimizer + ": slot " +
                          std::to_string(slot) + " has " + std::to_string(w) + " parameters but " +
                          std::to_string(g) + " gradients");
    }
}

} // namespace lightloop::detail
