#pragma once
// Per-slot state storage and setting checks shared by the optimizers.

#include <atomic>
#include <cmath>
#include <cstddef>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "lightloop/core/error.hpp"
#include "lightloop/core/finite.hpp"
#include "lightloop/core/parallel.hpp"
#include "lightloop/io/state.hpp"

namespace lightloop::detail {

inline void require_setting(bool ok, const char* optimizer, const char* name, double value,
                            const char* expected) {
    if (!ok) {
        throw config_error(std::string("lightloop::") + optimizer + ": " + name + " must be " +
                           expected + ", got " + std::to_string(value));
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
    std::atomic<magnitude_pattern<T>> largest{0};
    parallel_for_ranges(count, elementwise_grain, [&](std::size_t begin, std::size_t end) {
        magnitude_watch<T> watch;
        body(begin, end, watch);
        const auto piece = watch.largest();
        auto seen = largest.load(std::memory_order_relaxed);
        while (piece > seen &&
               !largest.compare_exchange_weak(seen, piece, std::memory_order_relaxed)) {
        }
    });
    return magnitude_of<T>(largest.load(std::memory_order_relaxed));
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

inline void check_update_sizes(const char* optimizer, std::size_t slot, std::size_t w,
                               std::size_t g) {
    if (w != g) {
        throw shape_error(std::string("lightloop::") + optimizer + ": slot " +
                          std::to_string(slot) + " has " + std::to_string(w) + " parameters but " +
                          std::to_string(g) + " gradients");
    }
}

} // namespace lightloop::detail
