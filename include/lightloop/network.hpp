#pragma once
// The layer stack: layers by value in a std::tuple, walked with fold
// expressions, trained by a feedback method and a loss given as types.
//
//   auto net = make_network<dfa<dense_gaussian>, softmax_cross_entropy>(
//       dense<tanh_act>{784, 1024}, dense<tanh_act>{1024, 1024}, dense<identity>{1024, 10});
//   sgd opt{{.learning_rate = 0.01, .momentum = 0.9}};
//   float loss = net.train_step(x, y, opt);
//
// One training step: forward through every layer; the loss writes the
// per-sample gradient, which the output layer scales by f'(a_L) into the error
// e; the feedback method fills each hidden layer's delta; each layer forms its
// mean-over-batch gradient; the optimizer updates every trained parameter. No
// virtual call anywhere; once buffers exist for a batch size nothing allocates.

#include <array>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "lightloop/core/concepts.hpp"
#include "lightloop/core/error.hpp"
#include "lightloop/core/finite.hpp"
#include "lightloop/core/parallel.hpp"
#include "lightloop/core/random.hpp"
#include "lightloop/core/tensor.hpp"
#include "lightloop/feedback/detail.hpp"

namespace lightloop {

/// The seed a network uses when none is given.
inline constexpr std::uint64_t default_seed = 0x5EED;

namespace detail {
// Seed streams: layer i uses derive_seed(seed, i); the feedback method one
// stream past any realistic depth.
inline constexpr std::uint64_t feedback_stream = 1u << 20;

template <class L>
std::string describe_layer(const L& l) {
    if constexpr (requires { l.describe(); }) {
        return l.describe();
    } else {
        return std::to_string(l.input_size()) + " -> " + std::to_string(l.output_size());
    }
}
} // namespace detail

template <feedback_method Feedback, class Loss, layer... Layers>
requires(sizeof...(Layers) >= 1) class network {
public:
    using value_type = typename std::tuple_element_t<0, std::tuple<Layers...>>::value_type;
    using feedback_type = Feedback;
    using loss_type = Loss;
    static constexpr std::size_t depth = sizeof...(Layers);

    static_assert((std::is_same_v<typename Layers::value_type, value_type> && ...),
                  "lightloop::network: every layer must use the same scalar type");
    static_assert(loss_function<Loss, value_type>,
                  "lightloop::network: Loss must model lightloop::loss_function");

    network(Feedback feedback, Loss loss, std::uint64_t seed, Layers... layers)
      : layers_(std::move(layers)...)
      , feedback_(std::move(feedback))
      , loss_(std::move(loss))
      , seed_(seed) {
        check_sizes();
        detail::for_index<depth>([&](auto index) {
            constexpr std::size_t i = decltype(index)::value;
            std::get<i>(layers_).initialize(derive_seed(seed_, i));
            widths_[i + 1] = std::get<i>(layers_).output_size();
        });
        widths_[0] = std::get<0>(layers_).input_size();
        feedback_.configure(std::span<const std::size_t>(widths_),
                            derive_seed(seed_, detail::feedback_stream));
    }

    /// Forward pass; returns h_L (n x d_L), which stays valid until the next pass.
    const matrix<value_type>& forward(const matrix<value_type>& x) {
        check_input(x);
        const matrix<value_type>* h = &x;
        detail::for_index<depth>(
          [&](auto index) { h = &std::get<decltype(index)::value>(layers_).forward(*h); });
        return *h;
    }

    /// Mean loss of the batch (forward pass only).
    value_type loss(const matrix<value_type>& x, const matrix<value_type>& target) {
        check_target(x, target);
        return loss_.value(forward(x), target);
    }

    /// Forward, loss, feedback and every trained layer's gradient; returns the
    /// batch's mean loss. Throws divergence_error, naming the step (and the
    /// layer), if the loss, a layer's feedback signal or its gradient is not
    /// finite; the weights are then untouched.
    value_type compute_gradients(const matrix<value_type>& x, const matrix<value_type>& target) {
        const value_type value = compute_signals(x, target, feedback_);
        detail::for_index<depth>([&](auto index) {
            constexpr std::size_t i = decltype(index)::value;
            if (trains_layer(i)) {
                auto& l = std::get<i>(layers_);
                const auto& delta = l.delta();
                const double delta_max = detail::largest_magnitude_or_inf(
                  std::span<const value_type>(delta.data(), delta.size()));
                if (!std::isfinite(delta_max)) {
                    diverged(i, "feedback signal", "weights were not updated");
                }
                const auto& input = input_of<i>(x);
                l.compute_gradient(input);
                // A layer that can bound its gradient by its delta and input
                // spares the pass over the gradient (a million entries here).
                bool certain = false;
                if constexpr (requires { l.gradient_cannot_overflow(input, delta_max); }) {
                    certain = l.gradient_cannot_overflow(input, delta_max);
                }
                if (!certain) {
                    l.visit_parameters([&](auto, auto gradient) {
                        if (!detail::all_finite(gradient)) {
                            diverged(i, "gradient", "weights were not updated");
                        }
                    });
                }
            }
        });
        return value;
    }

    /// Forward, loss and the hidden layers' signals (each layer's delta())
    /// through `method`, a feedback method of this network's type; no
    /// parameter gradient. Diagnostics pass a copy of feedback() so that a
    /// device's noise stream, counters and calibration stay as they were.
    /// Returns the batch's mean loss; throws divergence_error if it is not
    /// finite.
    value_type compute_signals(const matrix<value_type>& x, const matrix<value_type>& target,
                               Feedback& method) {
        check_target(x, target);
        const matrix<value_type>& out = forward(x);
        const value_type value = loss_.evaluate(out, target, loss_gradient_);
        if (!std::isfinite(value)) {
            throw divergence_error("lightloop::network: loss is " + std::to_string(value) +
                                   " at step " + std::to_string(steps_) +
                                   "; weights were not updated");
        }
        auto& top = std::get<depth - 1>(layers_);
        top.scale_by_derivative(loss_gradient_.data(), loss_gradient_.shape(1));
        method.backward(layers_, target);
        return value;
    }

    /// One training step; returns the batch's mean loss before the update.
    template <optimizer Optimizer>
    value_type train_step(const matrix<value_type>& x, const matrix<value_type>& target,
                          Optimizer& opt) {
        static_assert(std::is_same_v<typename Optimizer::value_type, value_type>,
                      "lightloop::network::train_step: the optimizer's scalar type must match "
                      "the network's");
        const value_type value = compute_gradients(x, target);
        apply_gradients(opt);
        return value;
    }

    /// Applies the gradients of the last compute_gradients with `opt`. Slots
    /// are numbered over all layers in order, frozen ones included, so they
    /// never shift.
    template <optimizer Optimizer>
    void apply_gradients(Optimizer& opt) {
        opt.begin_step();
        std::size_t slot = 0;
        detail::for_index<depth>([&](auto index) {
            constexpr std::size_t i = decltype(index)::value;
            const bool trained = trains_layer(i);
            std::get<i>(layers_).visit_parameters([&](auto values, auto gradient) {
                if (trained) {
                    // An optimizer that watches the values it writes spares a
                    // second pass over the weights.
                    bool finite = false;
                    if constexpr (requires {
                                      {
                                          opt.update_and_check(slot, values, gradient)
                                          } -> std::same_as<bool>;
                                  }) {
                        finite = opt.update_and_check(slot, values, gradient);
                    } else {
                        opt.update(slot, values, gradient);
                        finite = detail::all_finite(std::span<const value_type>(values));
                    }
                    if (!finite) {
                        diverged(i, "weights",
                                 "this update overflowed them; the last checkpoint holds the last "
                                 "good weights");
                    }
                }
                ++slot;
            });
        });
        ++steps_;
    }

    /// Whether layer i learns under this feedback method (the output layer always does).
    static constexpr bool trains_layer(std::size_t i) noexcept {
        return Feedback::trains_hidden_layers || i + 1 == depth;
    }

    template <std::size_t I>
    auto& layer() noexcept {
        return std::get<I>(layers_);
    }
    template <std::size_t I>
    const auto& layer() const noexcept {
        return std::get<I>(layers_);
    }

    /// Calls f(layer, index) for each layer, input to output.
    template <class F>
    void visit_layers(F&& f) {
        detail::for_index<depth>(
          [&](auto index) { f(std::get<decltype(index)::value>(layers_), index()); });
    }
    template <class F>
    void visit_layers(F&& f) const {
        detail::for_index<depth>(
          [&](auto index) { f(std::get<decltype(index)::value>(layers_), index()); });
    }

    std::tuple<Layers...>& layers() noexcept { return layers_; }
    Feedback& feedback() noexcept { return feedback_; }
    const Feedback& feedback() const noexcept { return feedback_; }
    const Loss& loss_function() const noexcept { return loss_; }
    std::uint64_t seed() const noexcept { return seed_; }
    std::uint64_t steps() const noexcept { return steps_; }
    /// Restores the step count (checkpoints).
    void set_steps(std::uint64_t steps) noexcept { steps_ = steps; }
    /// {d_0, d_1, ..., d_L}.
    const std::array<std::size_t, depth + 1>& widths() const noexcept { return widths_; }
    std::size_t input_size() const noexcept { return widths_.front(); }
    std::size_t output_size() const noexcept { return widths_.back(); }

private:
    [[noreturn]] void diverged(std::size_t layer_index, const char* what, const char* after) const {
        std::string name;
        visit_layers([&](const auto& l, std::size_t i) {
            if (i == layer_index) {
                name = detail::describe_layer(l);
            }
        });
        throw divergence_error("lightloop::network: " + std::string(what) + " of layer " +
                               std::to_string(layer_index) + " (" + name +
                               ") is not finite at step " + std::to_string(steps_) + "; " + after);
    }

    template <std::size_t I>
    const matrix<value_type>& input_of(const matrix<value_type>& x) const {
        if constexpr (I == 0) {
            return x;
        } else {
            return std::get<I - 1>(layers_).output();
        }
    }

    void check_sizes() const {
        detail::for_index<depth - 1>([&](auto index) {
            constexpr std::size_t i = decltype(index)::value;
            const auto& below = std::get<i>(layers_);
            const auto& above = std::get<i + 1>(layers_);
            if (above.input_size() != below.output_size()) {
                throw shape_error("lightloop::network: layer " + std::to_string(i + 1) + " (" +
                                  detail::describe_layer(above) + ") takes " +
                                  std::to_string(above.input_size()) + " inputs but layer " +
                                  std::to_string(i) + " (" + detail::describe_layer(below) +
                                  ") gives " + std::to_string(below.output_size()));
            }
        });
    }

    void check_input(const matrix<value_type>& x) const {
        if (x.shape(1) != widths_.front() || x.shape(0) == 0) {
            throw shape_error("lightloop::network: input batch is " + std::to_string(x.shape(0)) +
                              "x" + std::to_string(x.shape(1)) + ", expected n x " +
                              std::to_string(widths_.front()) + " with n > 0");
        }
    }

    void check_target(const matrix<value_type>& x, const matrix<value_type>& target) const {
        if (target.shape(0) != x.shape(0) || target.shape(1) != widths_.back()) {
            throw shape_error("lightloop::network: target batch is " +
                              std::to_string(target.shape(0)) + "x" +
                              std::to_string(target.shape(1)) + ", expected " +
                              std::to_string(x.shape(0)) + "x" + std::to_string(widths_.back()));
        }
    }

    std::tuple<Layers...> layers_;
    Feedback feedback_;
    Loss loss_;
    std::uint64_t seed_;
    std::uint64_t steps_ = 0;
    std::array<std::size_t, depth + 1> widths_{};
    matrix<value_type> loss_gradient_;
};

/// A network with default-constructed feedback method and loss and `seed`.
template <feedback_method Feedback, class Loss, layer... Layers>
network<Feedback, Loss, Layers...> make_network(std::uint64_t seed, Layers... layers) {
    return network<Feedback, Loss, Layers...>(Feedback{}, Loss{}, seed, std::move(layers)...);
}

/// As above with lightloop::default_seed.
template <feedback_method Feedback, class Loss, layer... Layers>
network<Feedback, Loss, Layers...> make_network(Layers... layers) {
    return make_network<Feedback, Loss>(default_seed, std::move(layers)...);
}

} // namespace lightloop
