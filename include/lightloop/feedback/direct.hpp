#pragma once
// The machinery shared by DFA and DRTP: ONE projection per batch into the sum
// of the hidden widths, sliced per layer. That single projection is what the
// optical co-processor performs; no hidden layer waits for the one above it.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "lightloop/core/concepts.hpp"
#include "lightloop/core/describe.hpp"
#include "lightloop/core/error.hpp"
#include "lightloop/core/random.hpp"
#include "lightloop/core/seeded_matrix.hpp"
#include "lightloop/core/shape.hpp"
#include "lightloop/core/tensor.hpp"
#include "lightloop/feedback/sweep.hpp"
#include "lightloop/io/state.hpp"

namespace lightloop::detail {

/// What a direct method projects: the output error e (DFA), its sign
/// (sign-DFA), or the one-hot target (DRTP).
enum class projected_signal { error, error_sign, target };

constexpr const char* method_name(projected_signal s) noexcept {
    switch (s) {
        case projected_signal::error:
            return "dfa";
        case projected_signal::error_sign:
            return "sign_dfa";
        case projected_signal::target:
            return "drtp";
    }
    return "?";
}

/// -1, 0 or 1: sign-DFA's signal for one entry of e.
template <class T>
constexpr T sign_of(T v) noexcept {
    return static_cast<T>((v > T(0)) - (v < T(0)));
}

template <class Device, projected_signal Signal>
class direct_feedback {
public:
    static constexpr bool trains_hidden_layers = true;
    using device_type = Device;

    /// What the method projects for a batch: e (DFA), sign(e) (sign-DFA,
    /// written into `signs`) or the target (DRTP). Layer-parallel training
    /// projects the same.
    template <scalar T>
    static const matrix<T>& projected_source(const matrix<T>& error, const matrix<T>& target,
                                             matrix<T>& signs) {
        if constexpr (Signal == projected_signal::target) {
            return target;
        } else if constexpr (Signal == projected_signal::error_sign) {
            ensure_shape(signs, error.shape(0), error.shape(1));
            std::transform(error.begin(), error.end(), signs.begin(), sign_of<T>);
            return signs;
        } else {
            return error;
        }
    }

    direct_feedback() = default;
    explicit direct_feedback(Device device)
      : device_(std::move(device)) {}

    /// Hidden layer i (0-based) reads columns [offset(i), offset(i) + d_{i+1})
    /// of the projection; the device maps d_L inputs to sum_i d_i outputs.
    /// Hidden layers without parameters (pooling, flatten) get no slice: their
    /// offset is projection_size() and nothing reads it.
    void configure(network_layout layout, std::uint64_t seed) {
        const auto widths = layout.widths;
        check_widths(method_name(Signal), widths);
        offsets_.clear();
        total_ = 0;
        for (std::size_t i = 1; i + 1 < widths.size(); ++i) {
            offsets_.push_back(total_);
            if (layout.trains(i - 1)) {
                total_ += widths[i];
            }
        }
        for (std::size_t i = 0; i < offsets_.size(); ++i) {
            if (!layout.trains(i)) {
                offsets_[i] = total_;
            }
        }
        device_seed_ = derive_seed(seed, 0);
        // With no hidden layer to train there is nothing to project into:
        // the output layer learns from its own gradient, as under backprop,
        // and the device is left unconfigured and unused (a device of no
        // outputs is refused by the library's devices).
        if (total_ > 0) {
            device_.configure(widths.back(), total_, device_seed_);
        }
    }

    template <class... Layers, scalar T>
    void backward(std::tuple<Layers...>& layers, const matrix<T>& target) {
        constexpr std::size_t depth = sizeof...(Layers);
        if constexpr (depth > 1) {
            if (total_ == 0) {
                return;
            }
            const auto& error = output_error(layers);
            const matrix<T>& source = projected_source(error, target, signs_.template get<T>());
            matrix<T>& projected = projection_.template get<T>();
            ensure_shape(projected, source.shape(0), total_);
            device_.project(source, projected);
            for_each_trained_hidden_layer(layers, [&](auto& l, std::size_t i) {
                l.scale_by_derivative(projected.data() + offsets_[i], total_);
            });
        }
    }

    /// "dfa <device>", "sign_dfa <device>" or "drtp <device>", for checkpoint
    /// signatures.
    std::string describe() const {
        return std::string(method_name(Signal)) + " " + describe_object(device_);
    }

    /// The device's state (an optical device's calibration and noise
    /// counter), for checkpoints; dense devices have none, and nor does a
    /// device left unconfigured (no hidden layer to project into).
    void save_state(state_writer& out) const {
        if constexpr (requires { device_.save_state(out); }) {
            if (total_ > 0) {
                device_.save_state(out);
            }
        }
    }
    void load_state(state_reader& in) {
        if constexpr (requires { device_.load_state(in); }) {
            if (total_ > 0) {
                device_.load_state(in);
            }
        }
    }

    Device& device() noexcept { return device_; }
    const Device& device() const noexcept { return device_; }
    /// The seed the device was configured with (a slice of it, in
    /// layer-parallel training, is configured from the same seed).
    std::uint64_t device_seed() const noexcept { return device_seed_; }
    /// Sum of the hidden widths: the projection's output size.
    std::size_t projection_size() const noexcept { return total_; }
    std::size_t offset(std::size_t hidden_layer) const {
        if (hidden_layer >= offsets_.size()) {
            throw config_error(std::string("lightloop::") + method_name(Signal) +
                               ": no hidden layer " + std::to_string(hidden_layer) +
                               " (there are " + std::to_string(offsets_.size()) + ")");
        }
        return offsets_[hidden_layer];
    }
    /// The last projection (n x projection_size()).
    template <scalar T>
    const matrix<T>& last_projection() noexcept {
        return projection_.template get<T>();
    }

private:
    Device device_{};
    std::vector<std::size_t> offsets_;
    std::size_t total_ = 0;
    std::uint64_t device_seed_ = 0;
    per_scalar<matrix> projection_;
    per_scalar<matrix> signs_; // sign(e), for sign-DFA
};

} // namespace lightloop::detail
