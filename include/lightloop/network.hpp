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

#include <algorithm>
#include <array>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "lightloop/core/bf16.hpp"
#include "lightloop/core/concepts.hpp"
#include "lightloop/core/describe.hpp"
#include "lightloop/core/error.hpp"
#include "lightloop/core/finite.hpp"
#include "lightloop/core/parallel.hpp"
#include "lightloop/core/precision.hpp"
#include "lightloop/core/random.hpp"
#include "lightloop/core/shape.hpp"
#include "lightloop/core/tensor.hpp"
#include "lightloop/core/value_block.hpp"
#include "lightloop/feedback/detail.hpp"
#include "lightloop/io/state.hpp"

namespace lightloop {

/// The seed a network uses when none is given.
inline constexpr std::uint64_t default_seed = 0x5EED;

namespace detail {
// Seed streams: layer i uses derive_seed(seed, i); the feedback method one
// stream past any realistic depth.
inline constexpr std::uint64_t feedback_stream = 1u << 20;

/// compute_layer_gradients' default: nothing to do as a layer's gradient is
/// complete.
struct ignore_layer {
    void operator()(std::size_t) const noexcept {}
};

/// An optimizer that can prove a step safe before writing (see concepts.hpp).
template <class O>
concept bounds_updates = requires(O opt, const O copt, std::size_t slot,
                                  std::span<typename O::value_type> w,
                                  std::span<const typename O::value_type> g, double bound) {
    { copt.update_bound(slot, bound, bound) } -> std::convertible_to<double>;
    { opt.update_and_measure(slot, w, g) } -> std::convertible_to<double>;
};

/// An optimizer whose update is element-wise and can be made block by block
/// (a sharded update: sgd, adam): update_block, set_state_bound to be told
/// the largest state value all blocks together hold, and visit_state to
/// hand the blocks of its state round (checkpoints). With float
/// parameters it also writes a mixed-precision layer's bf16 copy.
template <class O>
concept updates_blocks = bounds_updates<O> &&
  requires(O opt, std::size_t slot, std::span<typename O::value_type> w,
           std::span<const typename O::value_type> g, value_block block, double bound) {
    { opt.update_block(slot, w, g, block) } -> std::convertible_to<double>;
    opt.set_state_bound(slot, bound);
    opt.visit_state([](std::size_t, std::span<typename O::value_type>) {});
} &&(!std::is_same_v<typename O::value_type, float> ||
     requires(O opt, std::span<float> w, std::span<const float> g, std::span<bf16> low16,
              std::span<float> low32, value_block block) {
         { opt.update_block(std::size_t{}, w, g, low16, block) } -> std::convertible_to<double>;
         { opt.update_block(std::size_t{}, w, g, low32, block) } -> std::convertible_to<double>;
     });

/// How the processes of a sharded update divide and agree
/// (distributed::data_parallel has one): block(n) is this process's part of
/// an n-value slot (the processes' blocks tile it); all(b) whether every
/// process said true; largest(v) each value's largest over the processes;
/// share(v) gives every process each owner's block of v (parameters, and
/// bf16 copies).
template <class S, class T>
concept update_sharding = requires(S s, std::size_t n, bool mine, std::span<double> values,
                                   std::span<T> parameters, std::span<bf16> copy) {
    { s.block(n) } -> std::same_as<value_block>;
    { s.all(mine) } -> std::convertible_to<bool>;
    s.largest(values);
    s.share(parameters);
    s.share(copy);
};

/// Whether a bound leaves half of T's range for rounding.
template <class T>
bool bound_fits(double bound) noexcept {
    return bound < 0.5 * static_cast<double>(std::numeric_limits<T>::max());
}

template <class L>
std::string describe_layer(const L& l) {
    if constexpr (requires { l.describe(); }) {
        return l.describe();
    } else {
        return std::to_string(l.input_size()) + " -> " + std::to_string(l.output_size());
    }
}
} // namespace detail

/// Layers [first, last) of a network: the block one rank owns in
/// layer-parallel training (distributed/). The default is every layer.
struct layer_range {
    std::size_t first = 0;
    std::size_t last = std::numeric_limits<std::size_t>::max();
    constexpr bool contains(std::size_t i) const noexcept { return first <= i && i < last; }
    constexpr bool operator==(const layer_range&) const = default;
};

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

    /// Per layer, whether it has parameters (pooling and flatten have none).
    static constexpr std::array<bool, depth> parametrized{detail::has_parameters<Layers>()...};
    static_assert(parametrized.back(),
                  "lightloop::network: the output layer must have parameters to learn");
    static constexpr bool all_parametrized =
      std::find(parametrized.begin(), parametrized.end(), false) == parametrized.end();

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
            using layer_type = std::tuple_element_t<i, std::tuple<Layers...>>;
            if constexpr (detail::backward_is_local<layer_type>()) {
                feedback_weights_[i].exact = true;
            } else if constexpr (requires { std::get<i>(layers_).random_feedback_shape(); }) {
                feedback_weights_[i] = std::get<i>(layers_).random_feedback_shape();
            }
        });
        widths_[0] = std::get<0>(layers_).input_size();
        const std::uint64_t feedback_seed = derive_seed(seed_, detail::feedback_stream);
        const network_layout layout{std::span<const std::size_t>(widths_),
                                    std::span<const bool>(parametrized),
                                    std::span<const feedback_weights_shape>(feedback_weights_)};
        if constexpr (requires { feedback_.configure(layout, feedback_seed); }) {
            feedback_.configure(layout, feedback_seed);
        } else {
            static_assert(all_parametrized,
                          "lightloop::network: this feedback method has configure(widths, "
                          "seed) only and cannot skip layers without parameters; give it "
                          "configure(network_layout, seed)");
            feedback_.configure(layout.widths, feedback_seed);
        }
    }

    /// Forward pass for evaluation (dropout passes everything through);
    /// returns h_L (n x d_L), which stays valid until the next pass.
    /// With a range, only its layers run (as forward_training's).
    const matrix<value_type>& forward(const matrix<value_type>& x, layer_range range = {}) {
        check_range(range);
        check_input(x, range.first);
        const matrix<value_type>* h = &x;
        detail::for_index<depth>([&](auto index) {
            if (range.contains(index())) {
                h = &std::get<decltype(index)::value>(layers_).forward(*h);
            }
        });
        return *h;
    }

    /// Forward pass of a training step: layers with a training behaviour
    /// (dropout's masks) get forward_training(x, steps(), sample_numbers())
    /// (or forward_training(x, steps())), the others forward(x). Training
    /// steps and the alignment probe use it.
    ///
    /// With a range, only its layers run, `x` being the input of its first
    /// layer (layer-parallel training: the rank below sent it); returns the
    /// output of its last layer.
    const matrix<value_type>& forward_training(const matrix<value_type>& x,
                                               layer_range range = {}) {
        check_range(range);
        check_input(x, range.first);
        const matrix<value_type>* h = &x;
        detail::for_index<depth>([&](auto index) {
            if (!range.contains(index())) {
                return;
            }
            auto& l = std::get<decltype(index)::value>(layers_);
            if constexpr (requires { l.forward_training(*h, steps_, samples_); }) {
                h = &l.forward_training(*h, steps_, samples_);
            } else if constexpr (requires { l.forward_training(*h, steps_); }) {
                h = &l.forward_training(*h, steps_);
            } else {
                h = &l.forward(*h);
            }
        });
        return *h;
    }

    /// Refuses (shape_error) inputs that are not n x input_size() with n > 0,
    /// or targets that are not n x output_size(), as a training step does:
    /// for a strategy that must refuse a batch before anything else
    /// (layer-parallel training, before any message).
    void check_batch(const matrix<value_type>& x, const matrix<value_type>& target) const {
        check_input(x);
        check_target(x, target);
    }

    /// Mean loss of the batch (forward pass only).
    value_type loss(const matrix<value_type>& x, const matrix<value_type>& target) {
        check_target(x, target);
        return loss_.value(forward(x), target);
    }

    /// The loss a training step at this step count sees (dropout's masks
    /// included): what compute_gradients differentiates.
    value_type training_loss(const matrix<value_type>& x, const matrix<value_type>& target) {
        check_target(x, target);
        return loss_.value(forward_training(x), target);
    }

    /// Forward, loss, feedback and every trained layer's gradient; returns the
    /// batch's mean loss. Throws divergence_error, naming the step (and the
    /// layer), if the loss, a layer's feedback signal or its gradient is not
    /// finite; the weights are then untouched.
    value_type compute_gradients(const matrix<value_type>& x, const matrix<value_type>& target) {
        const value_type value = compute_signals(x, target, feedback_);
        compute_layer_gradients(x);
        return value;
    }

    /// Every trained layer's gradient in `range` from the deltas its layers
    /// hold (compute_signals, or layer-parallel training's own signals), `x`
    /// being the input of the range's first layer. Throws divergence_error
    /// naming the layer if a delta or a gradient is not finite. `done(i)` is
    /// called as each trained layer i's gradient is complete (data-parallel
    /// training starts its sum over the ranks there, while the next layer's
    /// is computed).
    template <class Done = detail::ignore_layer>
    void compute_layer_gradients(const matrix<value_type>& x, layer_range range = {},
                                 Done&& done = {}) {
        check_range(range);
        detail::for_index<depth>([&](auto index) {
            constexpr std::size_t i = decltype(index)::value;
            if (trains_layer(i) && range.contains(i)) {
                auto& l = std::get<i>(layers_);
                const auto& delta = detail::read_delta(l);
                // Measured by the pass that wrote delta where the layer kept
                // it (delta_magnitude), else read here.
                double delta_max = std::numeric_limits<double>::quiet_NaN();
                if constexpr (requires { l.delta_magnitude(); }) {
                    delta_max = l.delta_magnitude();
                }
                if (std::isnan(delta_max)) {
                    delta_max = detail::largest_magnitude_or_inf(
                      std::span<const value_type>(delta.data(), delta.size()));
                }
                if (!std::isfinite(delta_max)) {
                    diverged(i, "feedback signal", "weights were not updated");
                }
                const auto& input = i == range.first ? x : input_of<i>(x);
                l.compute_gradient(input);
                // A layer that can bound its gradient by its delta and input
                // spares the pass over the gradient (a million entries here).
                double bound = std::numeric_limits<double>::infinity();
                if constexpr (requires { l.gradient_bound(input, delta_max); }) {
                    bound = l.gradient_bound(input, delta_max);
                }
                if (!(bound < std::numeric_limits<double>::infinity())) {
                    bound = 0.0;
                    l.visit_parameters([&](auto, auto gradient) {
                        bound = std::max(bound, detail::largest_magnitude_or_inf(gradient));
                    });
                    if (!std::isfinite(bound)) {
                        diverged(i, "gradient", "weights were not updated");
                    }
                }
                gradient_max_[i] = bound;
                done(i);
            }
        });
    }

    /// Forward, loss and the hidden layers' signals (each layer's delta())
    /// through `method` (the network's own, a copy of it, or another method
    /// configured for these widths); no parameter gradient. Diagnostics pass
    /// a copy of feedback() so that a device's noise stream, counters and
    /// calibration stay as they were. Returns the batch's mean loss; throws
    /// divergence_error if it is not finite.
    template <feedback_method Method>
    value_type compute_signals(const matrix<value_type>& x, const matrix<value_type>& target,
                               Method& method) {
        check_target(x, target);
        forward_training(x);
        const value_type value = compute_output_error(target);
        method.backward(layers_, target);
        return value;
    }

    /// The loss of the last training pass's output and the output layer's
    /// delta e = dl/da_L (the rest of a step's signals are the feedback
    /// method's). Returns the batch's mean loss; throws divergence_error if
    /// it is not finite.
    value_type compute_output_error(const matrix<value_type>& target) {
        auto& top = std::get<depth - 1>(layers_);
        const matrix<value_type>& out = top.output();
        if (target.shape(0) != out.shape(0) || target.shape(1) != widths_.back()) {
            throw shape_error("lightloop::network: target batch is " +
                              std::to_string(target.shape(0)) + "x" +
                              std::to_string(target.shape(1)) + ", expected " +
                              std::to_string(out.shape(0)) + "x" + std::to_string(widths_.back()));
        }
        ensure_shape(loss_gradient_, out.shape(0), out.shape(1)); // as loss_function promises
        const value_type value = loss_.evaluate(out, target, loss_gradient_);
        if (!std::isfinite(value)) {
            throw divergence_error("lightloop::network: loss is " + number_text(value) +
                                   " at step " + std::to_string(steps_) +
                                   "; weights were not updated");
        }
        top.scale_by_derivative(loss_gradient_.data(), loss_gradient_.shape(1));
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

    /// Applies the gradients of the last compute_gradients with `opt`, all or
    /// nothing: if any trained parameter (or optimizer state) would leave
    /// the scalar's range, it throws divergence_error and no parameter, no
    /// optimizer state (Adam's step count included) and no step count has
    /// changed. Slots are numbered over all layers in order, frozen ones
    /// included, so they never shift.
    ///
    /// How: before anything is written, the optimizer's update_bound proves
    /// from the largest weight of each slot (what its last update wrote, or
    /// one pass after the parameters were reached through a non-const
    /// accessor) and the gradient's bound that nothing can overflow; the
    /// update then runs in place. Where that is not proven (huge values, or
    /// an optimizer without update_bound), the parameters and the
    /// optimizer's state (save_state / load_state) are copied first and put
    /// back if the update overflows. Parameters changed through a reference
    /// kept across steps are not seen: reach them through layer<I>() again
    /// (or call parameters_changed()).
    ///
    /// With a range, only its layers' slots are updated (layer-parallel
    /// training: each rank its own block); the others keep their values and
    /// the optimizer never sees them.
    template <optimizer Optimizer>
    void apply_gradients(Optimizer& opt, layer_range range = {}) {
        apply_gradients(opt, range, [](bool mine) { return mine; });
    }

    /// apply_gradients(opt, range) in processes that each update their own
    /// range of one network (layer-parallel training): all or nothing on
    /// every process alike. `all(bool)` says whether every process's verdict
    /// is true (a collective; called twice, on every process alike): once on
    /// the proof, and once on whether the update overflowed, so that where
    /// the proof failed anywhere every process puts its own update back.
    template <optimizer Optimizer, class All>
    requires std::predicate<All&, bool>
    void apply_gradients(Optimizer& opt, layer_range range, All&& all) {
        check_range(range);
        if (all(proven_safe(opt, range))) {
            const std::size_t failed = update_parameters(opt);
            if (!all(failed == depth)) {
                missed_overflow(failed);
            }
        } else {
            state_writer saved_state;
            keep_parameters(opt, saved_state);
            const std::vector<double> saved_max = value_max_;
            const std::size_t failed = update_parameters(opt);
            if (!all(failed == depth)) {
                value_max_ = saved_max;
                restore_parameters(opt, saved_state, failed);
            }
        }
        step_applied(range);
    }

    /// apply_gradients shared by processes that hold the same parameters
    /// and the same summed gradients (data-parallel training): each updates
    /// only its block of every trained slot (shards.block), then the blocks
    /// travel (shards.share), so that every process ends with the bits one
    /// apply_gradients would give, having done 1/p of the update. The
    /// optimizer's state is then current only in this process's blocks (see
    /// distributed::data_parallel for checkpoints). All or nothing on every
    /// process alike: the proof, and an overflow anywhere, are agreed on
    /// (shards.all, shards.largest) before anything is kept.
    template <optimizer Optimizer, detail::update_sharding<value_type> Sharding>
    requires detail::updates_blocks<Optimizer>
    void apply_gradient_blocks(Optimizer& opt, Sharding& shards) {
        const bool proven = shards.all(proven_safe(opt, {}));
        state_writer saved_state;
        const std::vector<double> saved_max = proven ? std::vector<double>() : value_max_;
        if (!proven) {
            keep_parameters(opt, saved_state);
        }
        opt.begin_step();
        written_.assign(slots_.size(), 0.0);
        for (const parameter_slot& s : slots_) {
            if (s.trained) {
                written_[s.index] = update_block(opt, s, shards.block(s.values.size()));
                if (!(written_[s.index] < std::numeric_limits<double>::infinity())) {
                    break;
                }
            }
        }
        shards.largest(std::span<double>(written_));
        for (const parameter_slot& s : slots_) {
            if (s.trained && !(written_[s.index] < std::numeric_limits<double>::infinity())) {
                if (!proven) { // every process puts its block back
                    value_max_ = saved_max;
                    restore_parameters(opt, saved_state, s.layer);
                }
                missed_overflow(s.layer);
            }
        }
        for (const parameter_slot& s : slots_) {
            if (s.trained) {
                value_max_[s.index] = written_[s.index];
                opt.set_state_bound(s.index, written_[s.index]);
                shards.share(s.values);
                if (s.copy_current != nullptr) {
                    if (!s.copy16.empty()) {
                        shards.share(s.copy16);
                    } else {
                        shards.share(s.copy32);
                    }
                    *s.copy_current = true;
                }
            }
        }
        step_applied({});
    }

    /// Each trained parameter tensor's gradient from the last
    /// compute_gradients, writable, in slot order: f(layer index,
    /// std::span<value_type> gradient). For code that combines gradients
    /// computed elsewhere before apply_gradients (data-parallel training sums
    /// them over processes); it must then say a bound on each trained layer's
    /// new entries (set_gradient_bound), which apply_gradients proves the
    /// update safe from.
    template <class F>
    void visit_gradients(F&& f) {
        collect_slots();
        for (const parameter_slot& s : slots_) {
            if (s.trained) {
                // The layer owns its gradient as a non-const member; only its
                // accessor hands it out const.
                f(s.layer, std::span<value_type>(const_cast<value_type*>(s.gradient.data()),
                                                 s.gradient.size()));
            }
        }
    }
    /// A bound on every |entry| of trained layer `i`'s gradient: what
    /// compute_gradients found, or what set_gradient_bound said.
    double gradient_bound(std::size_t i) const { return gradient_max_.at(i); }
    void set_gradient_bound(std::size_t i, double bound) { gradient_max_.at(i) = bound; }

    /// Tells the network that its parameters were changed through a
    /// reference kept from before (apply_gradients measures them again).
    void parameters_changed() noexcept { value_max_known_ = false; }
    /// Whether the feedback method trains the hidden layers (shallow: no).
    /// A method picked at run time (feedback_choice) answers for the one it
    /// holds.
    bool trains_hidden_layers() const noexcept { return detail::trains_hidden_layers(feedback_); }
    /// Whether layer i learns under this feedback method: it has parameters,
    /// and it is the output layer or the method trains hidden layers.
    bool trains_layer(std::size_t i) const noexcept {
        return parametrized[i] && (i + 1 == depth || trains_hidden_layers());
    }

    /// Non-const access may change parameters: the next update measures
    /// them again (see apply_gradients).
    template <std::size_t I>
    auto& layer() noexcept {
        value_max_known_ = false;
        return std::get<I>(layers_);
    }
    template <std::size_t I>
    const auto& layer() const noexcept {
        return std::get<I>(layers_);
    }

    /// Calls f(layer, index) for each layer, input to output.
    template <class F>
    void visit_layers(F&& f) {
        value_max_known_ = false;
        detail::for_index<depth>(
          [&](auto index) { f(std::get<decltype(index)::value>(layers_), index()); });
    }
    template <class F>
    void visit_layers(F&& f) const {
        detail::for_index<depth>(
          [&](auto index) { f(std::get<decltype(index)::value>(layers_), index()); });
    }

    std::tuple<Layers...>& layers() noexcept {
        value_max_known_ = false;
        return layers_;
    }
    const std::tuple<Layers...>& layers() const noexcept { return layers_; }
    Feedback& feedback() noexcept { return feedback_; }
    const Feedback& feedback() const noexcept { return feedback_; }
    const Loss& loss_function() const noexcept { return loss_; }
    std::uint64_t seed() const noexcept { return seed_; }
    std::uint64_t steps() const noexcept { return steps_; }
    /// Which sample of the whole batch each row of the batches it trains on
    /// is ({0, 1}: the batch is whole). Data-parallel training sets its
    /// shard's for its steps, so that per-sample draws (dropout's masks) are
    /// the whole batch's.
    sample_numbering sample_numbers() const noexcept { return samples_; }
    void number_samples(sample_numbering samples) noexcept { samples_ = samples; }
    /// Restores the step count (checkpoints).
    void set_steps(std::uint64_t steps) noexcept { steps_ = steps; }
    /// {d_0, d_1, ..., d_L}.
    const std::array<std::size_t, depth + 1>& widths() const noexcept { return widths_; }
    std::size_t input_size() const noexcept { return widths_.front(); }
    std::size_t output_size() const noexcept { return widths_.back(); }

private:
    /// One parameter tensor of a layer: its slot number (over all layers,
    /// frozen ones included), its layer, and whether that layer trains.
    struct parameter_slot {
        std::size_t index;
        std::size_t layer;
        bool trained;
        std::span<value_type> values;
        std::span<const value_type> gradient;
        // A mixed-precision layer's bf16 copy of `values` (one of the two,
        // or neither), written by the optimizer's pass; *copy_current says
        // whether it matches `values` (core/precision.hpp).
        std::span<bf16> copy16;
        std::span<float> copy32;
        bool* copy_current = nullptr;
    };

    /// Lists every parameter tensor in slot order (into slots_, which keeps
    /// its capacity: nothing is allocated after the first step). The steps
    /// below are plain loops over it: one lambda here rather than one per
    /// pass keeps GCC 12 from mangling two of them alike across translation
    /// units (an ODR clash the two-unit test caught under ThreadSanitizer).
    void collect_slots(layer_range range = {}) {
        slots_.clear();
        detail::for_index<depth>([&](auto index) {
            constexpr std::size_t i = decltype(index)::value;
            std::get<i>(layers_).visit_parameters([&](std::span<value_type> values,
                                                      std::span<const value_type> gradient,
                                                      auto... copy) {
                parameter_slot slot{
                  slots_.size(), i, trains_layer(i) && range.contains(i), values, gradient, {}, {},
                  nullptr};
                (take_copy(slot, copy), ...);
                slots_.push_back(slot);
            });
        });
    }

    template <class Operand>
    static void take_copy(parameter_slot& slot, detail::operand_copy<Operand> copy) {
        if constexpr (std::is_same_v<Operand, bf16>) {
            slot.copy16 = copy.values;
            slot.copy_current = copy.current;
        } else if constexpr (std::is_same_v<Operand, float>) {
            slot.copy32 = copy.values;
            slot.copy_current = copy.current;
        }
    }

    /// One slot's update: with its bf16 copy written in the optimizer's
    /// pass where the slot has one (or, for an optimizer that cannot, by a
    /// conversion after it).
    template <class Optimizer>
    double update_slot(Optimizer& opt, const parameter_slot& s) {
        if (s.copy_current != nullptr) {
            *s.copy_current = false;
            const double largest = !s.copy16.empty() ? update_with_copy(opt, s, s.copy16)
                                                     : update_with_copy(opt, s, s.copy32);
            *s.copy_current = largest < std::numeric_limits<double>::infinity();
            return largest;
        }
        if constexpr (requires {
                          {
                              opt.update_and_measure(s.index, s.values, s.gradient)
                              } -> std::convertible_to<double>;
                      }) {
            return opt.update_and_measure(s.index, s.values, s.gradient);
        } else {
            opt.update(s.index, s.values, s.gradient);
            return detail::largest_magnitude_or_inf(std::span<const value_type>(s.values));
        }
    }

    template <class Optimizer, class Operand>
    double update_with_copy(Optimizer& opt, const parameter_slot& s, std::span<Operand> copy) {
        if constexpr (requires {
                          {
                              opt.update_and_measure(s.index, s.values, s.gradient, copy)
                              } -> std::convertible_to<double>;
                      }) {
            return opt.update_and_measure(s.index, s.values, s.gradient, copy);
        } else {
            opt.update(s.index, s.values, s.gradient);
            if constexpr (std::is_same_v<value_type, float>) {
                detail::convert_on_team(s.values.data(), copy.data(), s.values.size());
            }
            return detail::largest_magnitude_or_inf(std::span<const value_type>(s.values));
        }
    }

    /// Lists the slots of `range` (collect_slots), measures them if their
    /// largest values are not known, and says whether the optimizer's
    /// update_bound proves that no trained slot can overflow this step (never
    /// for an optimizer without update_bound).
    template <class Optimizer>
    bool proven_safe(Optimizer& opt, layer_range range) {
        collect_slots(range);
        if (!value_max_known_ || !(measured_range_ == range)) {
            measure_parameters();
            measured_range_ = range;
        }
        if constexpr (detail::bounds_updates<Optimizer>) {
            for (const parameter_slot& s : slots_) {
                if (s.trained && !detail::bound_fits<value_type>(opt.update_bound(
                                   s.index, value_max_[s.index], gradient_max_[s.layer]))) {
                    return false;
                }
            }
            return true;
        } else {
            return false;
        }
    }

    /// A proven update overflowed layer `failed` after all: its parameters
    /// were changed where the network could not see (they are measured
    /// again next time).
    [[noreturn]] void missed_overflow(std::size_t failed) {
        value_max_known_ = false;
        if (failed == depth) { // another process's, apply_gradients with an agreement
            throw divergence_error(
              "lightloop::network: another process's update overflowed its weights at step " +
              std::to_string(steps_) +
              " (they were changed outside its network since they were last measured); this "
              "process's layers were updated");
        }
        diverged(failed, "weights",
                 "they were changed outside the network since they were last measured, so the "
                 "check before the update missed this; earlier layers were updated");
    }

    /// update_slot of `block` of the slot's values only.
    template <class Optimizer>
    double update_block(Optimizer& opt, const parameter_slot& s, value_block block) {
        if constexpr (std::is_same_v<value_type, float>) {
            if (s.copy_current != nullptr) {
                *s.copy_current = false; // until the other blocks are shared
                return !s.copy16.empty()
                         ? opt.update_block(s.index, s.values, s.gradient, s.copy16, block)
                         : opt.update_block(s.index, s.values, s.gradient, s.copy32, block);
            }
        }
        return opt.update_block(s.index, s.values, s.gradient, block);
    }

    /// The step is applied: its count, and layers with running estimates
    /// (batch_norm) take the training pass's statistics in.
    void step_applied(layer_range range) {
        ++steps_;
        detail::for_index<depth>([&](auto index) {
            auto& l = std::get<decltype(index)::value>(layers_);
            if (!range.contains(index())) {
                return;
            }
            if constexpr (requires { l.commit_training_pass(); }) {
                l.commit_training_pass();
            }
        });
    }

    /// The largest |value| of every trained slot, by one pass over them.
    void measure_parameters() {
        value_max_.assign(slots_.size(), 0.0);
        for (const parameter_slot& s : slots_) {
            if (s.trained) {
                value_max_[s.index] =
                  detail::largest_magnitude_or_inf(std::span<const value_type>(s.values));
            }
        }
        value_max_known_ = true;
    }

    /// begin_step and every trained slot's update, recording the largest
    /// value each wrote; stops at the first layer whose update overflowed and
    /// returns its index, or `depth` when all are finite.
    template <class Optimizer>
    std::size_t update_parameters(Optimizer& opt) {
        opt.begin_step();
        for (const parameter_slot& s : slots_) {
            if (!s.trained) {
                continue;
            }
            const double largest = update_slot(opt, s);
            if (!(largest < std::numeric_limits<double>::infinity())) {
                return s.layer;
            }
            value_max_[s.index] = largest;
        }
        return depth;
    }

    template <class Optimizer>
    static constexpr bool saves_state = requires(Optimizer opt, state_writer w, state_reader r) {
        opt.save_state(w);
        opt.load_state(r);
    };

    /// Copies the trained parameters and the optimizer's state (where it can
    /// save it) for restore_parameters.
    template <class Optimizer>
    void keep_parameters(Optimizer& opt, state_writer& saved_state) {
        std::size_t total = 0;
        for (const parameter_slot& s : slots_) {
            total += s.trained ? s.values.size() : 0;
        }
        saved_parameters_.resize(total);
        value_type* at = saved_parameters_.data();
        for (const parameter_slot& s : slots_) {
            if (s.trained) {
                at = std::copy(s.values.begin(), s.values.end(), at);
            }
        }
        if constexpr (saves_state<Optimizer>) {
            opt.save_state(saved_state);
        }
    }

    /// Puts back what keep_parameters kept and throws: layer `failed`'s
    /// update would overflow (depth: another process's, apply_gradients
    /// with an agreement).
    template <class Optimizer>
    [[noreturn]] void restore_parameters(Optimizer& opt, const state_writer& saved_state,
                                         std::size_t failed) {
        const value_type* from = saved_parameters_.data();
        for (const parameter_slot& s : slots_) {
            if (s.trained) {
                std::copy_n(from, s.values.size(), s.values.data());
                from += s.values.size();
                if (s.copy_current != nullptr) {
                    *s.copy_current = false; // converted again before its next product
                }
            }
        }
        if constexpr (saves_state<Optimizer>) {
            state_reader in(std::span<const std::byte>(saved_state.bytes()),
                            "optimizer state before the step");
            opt.load_state(in);
        }
        if (failed == depth) {
            throw divergence_error(
              "lightloop::network: another process's update would overflow its weights at step " +
              std::to_string(steps_) + "; no parameter " +
              (saves_state<Optimizer> ? "and no optimizer state changed here"
                                      : "changed here (the optimizer has no save_state / "
                                        "load_state, so its own state may have)"));
        }
        if constexpr (saves_state<Optimizer>) {
            diverged(failed, "weights",
                     "this update would overflow them; no parameter and no optimizer state "
                     "changed");
        } else {
            diverged(failed, "weights",
                     "this update would overflow them; no parameter changed (the optimizer has "
                     "no save_state / load_state, so its own state may have)");
        }
    }

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
            // Feature maps of the right size but another shape would be read
            // scrambled: both sides must agree when both are maps (a flat
            // vector, d x 1 x 1, may be read as any maps of its size).
            if constexpr (requires {
                              below.output_shape();
                              above.input_shape();
                          }) {
                const feature_shape gives = below.output_shape();
                const feature_shape takes = above.input_shape();
                const auto spatial = [](feature_shape s) { return s.height * s.width > 1; };
                if (spatial(gives) && spatial(takes) && gives != takes) {
                    throw shape_error("lightloop::network: layer " + std::to_string(i + 1) + " (" +
                                      detail::describe_layer(above) + ") takes maps of " +
                                      takes.text() + " but layer " + std::to_string(i) + " (" +
                                      detail::describe_layer(below) + ") gives " + gives.text());
                }
            }
        });
    }

    void check_input(const matrix<value_type>& x, std::size_t layer_index = 0) const {
        if (x.shape(1) != widths_[layer_index] || x.shape(0) == 0) {
            throw shape_error(
              "lightloop::network: input batch" +
              (layer_index == 0 ? std::string() : " of layer " + std::to_string(layer_index)) +
              " is " + std::to_string(x.shape(0)) + "x" + std::to_string(x.shape(1)) +
              ", expected n x " + std::to_string(widths_[layer_index]) + " with n > 0");
        }
    }

    static void check_range(layer_range range) {
        if (range.first >= range.last || range.first >= depth) {
            throw config_error("lightloop::network: layer range [" + std::to_string(range.first) +
                               ", " + std::to_string(range.last) + ") holds none of the " +
                               std::to_string(depth) + " layers");
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
    sample_numbering samples_{};
    std::array<std::size_t, depth + 1> widths_{};
    std::array<feedback_weights_shape, depth> feedback_weights_{}; // for network_layout
    matrix<value_type> loss_gradient_;
    // What apply_gradients proves a step safe from: the largest |value| of
    // each slot (valid while value_max_known_) and a bound on each layer's
    // last gradient.
    std::vector<double> value_max_;
    bool value_max_known_ = false;
    layer_range measured_range_{}; // the slots value_max_ covers
    std::array<double, depth> gradient_max_{};
    std::vector<parameter_slot> slots_;        // collect_slots
    std::vector<value_type> saved_parameters_; // keep_parameters' copy
    std::vector<double> written_;              // apply_gradient_blocks: largest per slot
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
