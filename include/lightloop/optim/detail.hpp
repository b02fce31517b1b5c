#pragma once
// Per-slot state storage and setting checks shared by the optimizers.

#include <atomic>
#include <cmath>
#include <cstddef>
#include <span>
#include <string>
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

/// The frame of an optimizer's update: [0, count) in pieces on the shared
/// team, body(begin, end, watch) updating one piece and showing `watch` every
/// weight it writes. Returns whether all of them are finite. The bodies copy
/// what they read into locals before their simd::for_each_lane loop (see
/// there) and are written with xsimd because at -O2 GCC 12 left them scalar
/// (3x slower).
template <class T, class Body>
bool update_in_pieces(std::size_t count, Body&& body) {
    std::atomic<bool> finite{true};
    parallel_for_ranges(count, elementwise_grain, [&](std::size_t begin, std::size_t end) {
        magnitude_watch<T> watch;
        body(begin, end, watch);
        if (!watch.finite()) {
            finite.store(false, std::memory_order_relaxed);
        }
    });
    return finite.load(std::memory_order_relaxed);
}

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

    void clear() { states_.clear(); }

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
        states_ = std::move(staged);
    }

    /// Every slot's state, for checkpoints.
    std::vector<std::vector<T>>& raw() noexcept { return states_; }
    const std::vector<std::vector<T>>& raw() const noexcept { return states_; }

private:
    std::vector<std::vector<T>> states_;
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
