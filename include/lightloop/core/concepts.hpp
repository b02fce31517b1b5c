#pragma once
// The contracts of every policy kind, in one place.
//
// lightloop is composed by type: a network is a tuple of layers plus a
// feedback method and a loss, trained by an optimizer; a feedback method may
// use a projection device. Each kind below is a C++20 concept. A type that
// models the concept plugs in without touching the library; every shipped
// policy has a static_assert beside it so the contract and the code cannot
// drift apart. Shapes follow docs/DESIGN.md with one sample per row: a batch is an
// (n x d) row-major matrix.

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "lightloop/core/shape.hpp"
#include "lightloop/core/tensor.hpp"

namespace lightloop {

/// The scalar types lightloop computes in.
template <class T>
concept scalar = std::same_as<T, float> || std::same_as<T, double>;

// ---------------------------------------------------------------------------
// activation
//
// WHAT THIS REPRESENTS
//     An elementwise non-linearity f, with settings (leaky_relu's slope) held
//     as members. identity is the trivial one to copy.
// REQUIRES
//     value(a) returns f(a).
//     derivative(a, h) returns f'(a), given both the pre-activation a and
//     h = f(a), so tanh can use 1 - h^2 and relu can use a > 0.
//     Both are const, pure and cheap: they run inside the fused pass that adds
//     the bias and applies f, which the dense layer splits over threads (the
//     same policy object is called from several threads, on different rows).
//     Optionally, apply(a, h, count) computes h[i] = value(a[i]) for a whole
//     row at once (the library's activations but identity have one, in SIMD
//     lanes); the layers use it if present.
//     Optionally, static constexpr bool derivative_in_lanes = true says that
//     derivative is a template that also takes xsimd batches (the library's
//     five do; simd::select for a branch): the derivative pass then runs in
//     SIMD lanes.
// ---------------------------------------------------------------------------
template <class A, class T = float>
concept activation = scalar<T> && std::copy_constructible<A> && requires(const A act, T x) {
    { act.value(x) } -> std::same_as<T>;
    { act.derivative(x, x) } -> std::same_as<T>;
};

// ---------------------------------------------------------------------------
// loss
//
// WHAT THIS REPRESENTS
//     A loss l(h_L, y) on the network's output h_L (n x d_L) and target y of
//     the same shape, averaged over the batch.
// REQUIRES
//     value(out, y) returns the mean loss over the n rows.
//     evaluate(out, y, grad) returns the same mean and writes into grad (already
//     shaped n x d_L) the per-sample gradient d l_s / d out: the gradient of the
//     mean loss times n. The 1/n is applied once, in the weight gradients, so a
//     direct feedback method projects the per-sample error e, whatever n is.
// ---------------------------------------------------------------------------
template <class L, class T = float>
concept loss_function = scalar<T> &&
  requires(const L loss, const matrix<T>& out, const matrix<T>& y, matrix<T>& grad) {
    { loss.value(out, y) } -> std::same_as<T>;
    { loss.evaluate(out, y, grad) } -> std::same_as<T>;
};

// ---------------------------------------------------------------------------
// projection_device
//
// WHAT THIS REPRESENTS
//     A fixed random linear (or, for an intensity camera, non-linear) map from
//     R^in to R^out applied to each row of a batch: the co-processor that
//     computes B e in DFA and B y* in DRTP. dense_gaussian is the reference; a
//     driver for real hardware models the same concept.
// REQUIRES
//     configure(in, out, seed) fixes the sizes and (re)draws every random
//     quantity from seed; the same seed gives the same device.
//     project(x, y): x is (n x in); y is already shaped (n x out); writes the
//     projection of row r of x into row r of y. Allocates nothing once the
//     device has seen a batch of that size.
//     input_size() and output_size() report the configured sizes.
// ---------------------------------------------------------------------------
template <class D, class T = float>
concept projection_device = scalar<T> &&
  requires(D device, const D cdevice, std::size_t size, std::uint64_t seed, const matrix<T>& x,
           matrix<T>& y) {
    device.configure(size, size, seed);
    device.project(x, y);
    { cdevice.input_size() } -> std::convertible_to<std::size_t>;
    { cdevice.output_size() } -> std::convertible_to<std::size_t>;
};

// ---------------------------------------------------------------------------
// optimizer
//
// WHAT THIS REPRESENTS
//     A first-order update rule with its own state (momentum, Adam moments).
//     The network numbers its parameter tensors 0, 1, 2, ... (a slot each) in
//     a fixed order and calls update once per slot per step.
// REQUIRES
//     value_type: the scalar type of the parameters it updates.
//     begin_step() is called once per training step before any update.
//     update(slot, w, g) applies one step to parameters w given their
//     gradient g (same length); it may allocate state for a slot the first
//     time it sees it, and never again.
//     learning_rate() / set_learning_rate(lr) read and change the step size
//     (schedules use them).
// OPTIONAL
//     double update_and_measure(slot, w, g): update() returning the largest
//     magnitude it wrote (weights and state), +inf if any value is not
//     finite. Without it the network reads w again after the update.
//     double update_bound(slot, w_max, g_max) const: an upper bound on the
//     magnitude of everything the next update of `slot` (after the next
//     begin_step) writes, given |w| <= w_max and |g| <= g_max. With both,
//     the network proves a step cannot overflow before it writes anything;
//     without them it copies the parameters first, to put them back.
//     save_state(state_writer&) / load_state(state_reader&): the state, for
//     checkpoints and for putting it back when a step overflows.
//     double update_and_measure(slot, w, g, copy): the same, also writing
//     copy[i] = w[i] rounded to bf16 (copy a span of bf16, or of floats
//     holding bf16 values) in the same pass: a mixed-precision layer's GEMM
//     copy of its weights (core/precision.hpp). Without it the network
//     converts the weights after the update.
//     update_block, set_state_bound and visit_state: a data-parallel
//     update sharded over processes (network.hpp's updates_blocks); without
//     them every process updates everything.
//     state() (each slot's buffers, one after another) and
//     adopt_state(slot, values): layer-parallel training hands each slot's
//     state from the process that steps it to the others
//     (distributed::dfa_layer_parallel::gather_state); without them each
//     process keeps its own layers' state.
//     name: what checkpoints record and check on resuming (a static
//     `name`, or a name() known at run time as optimizer_choice's;
//     without either, the type's name).
//     sgd and adam have all of these; optimizer_choice (optim/choice.hpp)
//     those its alternatives all have.
// ---------------------------------------------------------------------------
template <class O>
concept optimizer = scalar<typename O::value_type> &&
  requires(O opt, const O copt, std::size_t slot, std::span<typename O::value_type> w,
           std::span<const typename O::value_type> g, double lr) {
    opt.begin_step();
    opt.update(slot, w, g);
    { copt.learning_rate() } -> std::convertible_to<double>;
    opt.set_learning_rate(lr);
};

namespace detail {
/// An optimizer with state() and adopt_state(slot, values) (see OPTIONAL
/// above): its slots' state can be handed from one process to another.
template <class O>
concept adopts_state = requires(O opt, const O copt) {
    { copt.state() } -> std::same_as<const std::vector<std::vector<typename O::value_type>>&>;
    opt.adopt_state(std::size_t{}, std::vector<typename O::value_type>{});
};
} // namespace detail

// ---------------------------------------------------------------------------
// The optical device's parts (projection/optical/). An optical device is a
// projection_device assembled from an encoder (the error to binary micromirror
// frames), a camera (intensity to measured intensity) and a readout (how the
// measured intensities become a projection).
// ---------------------------------------------------------------------------

// ---------------------------------------------------------------------------
// optical_encoder
//
// WHAT THIS REPRESENTS
//     How a real vector becomes binary micromirror (DMD) frames: x is
//     approximated as sum_f weight_f * frame_f with each frame in {0, 1}^in.
// REQUIRES
//     frames_per_sample() is the number of frames F one vector needs.
//     encode(x, frames, weights): x has `in` entries; frames has F * in entries
//     (frame f at [f*in, (f+1)*in)), each set to 0 or 1; weights has F entries.
//     An all-zero frame is skipped by the device (nothing to display).
// ---------------------------------------------------------------------------
template <class E, class T = float>
concept optical_encoder = scalar<T> &&
  requires(const E enc, std::span<const T> x, std::span<T> frames, std::span<double> weights) {
    { enc.frames_per_sample() } -> std::convertible_to<std::size_t>;
    enc.encode(x, frames, weights);
};

// ---------------------------------------------------------------------------
// camera_model
//
// WHAT THIS REPRESENTS
//     The sensor that measures intensity: exposure, quantisation, noise.
// REQUIRES
//     reseed(seed) fixes its noise stream.
//     calibrate(intensities) sets its exposure from a sample of the
//     intensities it will see (so realistic inputs do not saturate);
//     calibrated() says whether that has happened.
//     expose(intensity, measured): both of one length; writes the intensity
//     the camera reports for each pixel, in the units of `intensity`.
//     pixels_read(), pixels_saturated(): running counts.
// ---------------------------------------------------------------------------
template <class C, class T = float>
concept camera_model = scalar<T> && requires(C cam, const C ccam, std::uint64_t seed,
                                             std::span<const T> intensity, std::span<T> measured) {
    cam.reseed(seed);
    cam.calibrate(intensity);
    { ccam.calibrated() } -> std::convertible_to<bool>;
    cam.expose(intensity, measured);
    { ccam.pixels_read() } -> std::convertible_to<std::uint64_t>;
    { ccam.pixels_saturated() } -> std::convertible_to<std::uint64_t>;
};

namespace detail {

/// Stands for any callable the network passes to visit_parameters.
template <class T>
struct parameter_visitor_archetype {
    void operator()(std::span<T> values, std::span<const T> gradient) const;
};

} // namespace detail

// ---------------------------------------------------------------------------
// layer
//
// WHAT THIS REPRESENTS
//     One stage a_i = W_i h_{i-1} + b_i, h_i = f_i(a_i) of the stack, owning
//     its parameters, its activations for the current batch, its learning
//     signal delta = d loss / d a_i and its parameter gradients.
// REQUIRES
//     value_type: the scalar type (float for a mixed-precision layer, whose
//     products run in bf16: core/precision.hpp).
//     input_size(), output_size(): the widths d_{i-1} and d_i.
//     initialize(seed) draws the parameters from seed.
//     forward(x): x is (n x d_{i-1}); computes and keeps a_i and h_i, returns h_i.
//     output(): h_i of the last forward.
//     delta(): the (n x d_i) signal buffer, shaped by forward.
//     scale_by_derivative(s, ld): delta = s ⊙ f'(a_i), where s points at an
//     n x d_i block with row stride ld (s may be delta's own storage).
//     backpropagate(into): into (n x d_{i-1}, shaped by the caller) = delta W_i,
//     the true gradient with respect to the layer's input.
//     compute_gradient(x): from delta and the same x given to forward, the
//     mean-over-batch parameter gradients (1/n) delta^T x and (1/n) sum delta.
//     visit_parameters(f) calls f(values, gradient) once per parameter tensor,
//     always in the same order. A mixed-precision layer calls
//     f(values, gradient, detail::operand_copy{bf16 copy, &current}) for a
//     tensor with a GEMM copy when f takes it (the network's update does, and
//     keeps the copy current), and otherwise marks its copy stale.
// OPTIONAL
//     static constexpr bool has_parameters = false: nothing to train
//     (pooling, flatten). The network computes no gradient for it, direct
//     methods give it no slice, and scale_by_derivative copies the signal.
//     feature_shape input_shape() const, output_shape() const: C x H x W of
//     each input and output row; the network refuses maps of the right size
//     but another shape between two layers that say theirs.
//     forward_training(x, step): the forward pass of training step `step`
//     (dropout draws its masks from it); without it, training uses forward.
//     forward_training(x, step, samples), preferred where it exists: the
//     same, row r of x being sample samples(r) of the whole batch
//     (sample_numbering: a data-parallel shard's rows are not the batch's).
//     static constexpr bool backward_is_local = true: the backward product
//     transports no weight matrix (layer_norm, batch_norm): feedback
//     alignment passes the signal through it exactly.
//     visit_buffers(f): f(values) per tensor that is not trained but is
//     saved in checkpoints (batch_norm's running estimates).
//     commit_training_pass(): called after a training step is applied
//     (batch_norm moves its running estimates then, not in the pass).
//     feedback_weights_shape random_feedback_shape() const and
//     backpropagate_with(weights, into) const: the backward-data product
//     through other weights of that shape (conv2d), for feedback alignment's
//     random ones; without them feedback alignment draws a d_in x d_out
//     matrix and multiplies by it (dense).
//     const matrix<T>& delta() const: delta read without telling the layer
//     that it may change (the non-const delta() does; the network and the
//     feedback methods read through the const one where it exists).
//     double delta_magnitude() const: max |delta| as the pass that wrote it
//     measured it (+inf if an entry is not finite), NaN when unknown; the
//     network's finiteness check of delta reads it instead of a pass.
//     double gradient_bound(x, delta_max) const: an upper bound on |every
//     gradient entry| compute_gradient(x) gives when delta is finite with
//     max |delta| = delta_max, or +inf when it cannot vouch for a finite
//     gradient. Without it (or when it says +inf) the network reads every
//     gradient entry.
// ---------------------------------------------------------------------------
template <class L>
concept layer = scalar<typename L::value_type> &&
  requires(L l, const L cl, std::uint64_t seed, const matrix<typename L::value_type>& x,
           matrix<typename L::value_type>& m, const typename L::value_type* s, std::size_t ld,
           detail::parameter_visitor_archetype<typename L::value_type> f) {
    { cl.input_size() } -> std::convertible_to<std::size_t>;
    { cl.output_size() } -> std::convertible_to<std::size_t>;
    l.initialize(seed);
    { l.forward(x) } -> std::same_as<const matrix<typename L::value_type>&>;
    { cl.output() } -> std::same_as<const matrix<typename L::value_type>&>;
    { l.delta() } -> std::same_as<matrix<typename L::value_type>&>;
    l.scale_by_derivative(s, ld);
    cl.backpropagate(m);
    l.compute_gradient(x);
    l.visit_parameters(f);
};

namespace detail {

/// A layer's delta for reading: through its const delta() where it has one,
/// since the non-const one tells the layer that delta may change (the
/// library's layers then forget what they knew of it: its GEMM operand and
/// its magnitude); a layer with only the non-const one is read through it.
template <class L>
decltype(auto) read_delta(L& l) {
    if constexpr (requires { std::as_const(l).delta(); }) {
        return std::as_const(l).delta();
    } else {
        return l.delta();
    }
}

/// A minimal type that models `layer`, used to check feedback methods against
/// their contract without naming a concrete layer. Declared, never defined.
template <class T>
struct layer_archetype {
    using value_type = T;
    std::size_t input_size() const;
    std::size_t output_size() const;
    void initialize(std::uint64_t seed);
    const matrix<T>& forward(const matrix<T>& x);
    const matrix<T>& output() const;
    matrix<T>& delta();
    void scale_by_derivative(const T* signal, std::size_t ld);
    void backpropagate(matrix<T>& into) const;
    void compute_gradient(const matrix<T>& x);
    template <class F>
    void visit_parameters(F&& f);
};

} // namespace detail

// ---------------------------------------------------------------------------
// feedback_method
//
// WHAT THIS REPRESENTS
//     How the hidden layers get their learning signal delta a_i (docs/DESIGN.md's
//     table): backprop, feedback_alignment, dfa, drtp, shallow.
// REQUIRES
//     trains_hidden_layers: false if hidden layers are frozen (shallow); the
//     network then neither computes nor applies their gradients. A static
//     constant, or a const member function for a method known only at run
//     time (feedback_choice); detail::trains_hidden_layers(method) reads
//     either.
//     configure(layout, seed): layout.widths = {d_0, d_1, ..., d_L} and
//     layout.trains(i) whether layer i has parameters (pooling and flatten
//     have none: a direct method gives them no slice, backprop passes the
//     signal through them); sizes every fixed random matrix and draws it from
//     seed. A method written for widths only may have configure(widths, seed)
//     instead; it then serves networks whose layers all have parameters.
//     backward(layers, target): on entry the output layer's delta() holds the
//     error e = d loss / d a_L (per sample) and every layer holds its forward
//     state; on exit every hidden layer's delta() holds its signal. target is
//     the (n x d_L) target batch (DRTP projects it instead of e).
//     feedback/sweep.hpp has what a method is built from: output_error,
//     propagate_down (layer by layer) and for_each_trained_hidden_layer
//     (direct); tests/test_network.cpp writes sign symmetry with them.
// ---------------------------------------------------------------------------
template <class F>
concept feedback_method =
  requires(F fb, std::span<const std::size_t> widths, network_layout layout, std::uint64_t seed,
           std::tuple<detail::layer_archetype<float>, detail::layer_archetype<float>>& layers,
           const matrix<float>& target) {
    requires requires {
        { F::trains_hidden_layers } -> std::convertible_to<bool>;
    } || requires(const F cf) {
        { cf.trains_hidden_layers() } -> std::convertible_to<bool>;
    };
    requires requires {
        fb.configure(layout, seed);
    } || requires {
        fb.configure(widths, seed);
    };
    fb.backward(layers, target);
};

namespace detail {
/// Whether a feedback method trains the hidden layers: its static
/// trains_hidden_layers, or what its trains_hidden_layers() says of the
/// method it holds now (feedback_choice).
template <class F>
constexpr bool trains_hidden_layers(const F& method) noexcept {
    if constexpr (requires {
                      { method.trains_hidden_layers() } -> std::convertible_to<bool>;
                  }) {
        return method.trains_hidden_layers();
    } else {
        return F::trains_hidden_layers;
    }
}
} // namespace detail

static_assert(layer<detail::layer_archetype<float>>);
static_assert(layer<detail::layer_archetype<double>>);

} // namespace lightloop
