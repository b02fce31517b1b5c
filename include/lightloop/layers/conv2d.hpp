#pragma once
// The 2-D convolution: out_channels filters of in_channels x k x k slid over
// each input map with a stride and zero padding, a bias per output channel,
// and the activation fused as in dense: a = W * x + b, h = f(a).
//
// Batches are n x (C·H·W) matrices, channel-major rows (core/shape.hpp), so
// a convolution reads and writes the same layout as every other layer. W is
// stored as an out_channels x (in_channels·k·k) matrix, row-major in
// (channel, ky, kx): PyTorch's (out, in, k, k) weight, flattened.
//
// How it computes: two ways, chosen at compile time by the precision.
//
// oneDNN's convolution primitives (core/onednn_convolution.hpp), for float
// and mixed_bf16 layers where oneDNN is built in (onednn_primitives): per
// chunk of `primitive_chunk` samples on lightloop's threads, the chunk's rows
// are reordered into oneDNN's blocked layout (converted to bf16 in the same
// pass for a mixed layer), convolved by the forward, backward-weights or
// backward-data primitive at one OpenMP thread, and reordered back. The
// forward keeps the batch's blocked input for the weight gradient of the same
// x. About twice as fast as im2col at the CNN's shapes (README, "The CNN").
// Without bf16 instructions (AVX2, or AVX-512 without AVX512-BF16) a mixed
// layer's primitives are fp32 ones of the operands rounded to bf16 values, as
// the bf16 products there.
//
// im2col GEMMs otherwise (double, and float or bf16 on OpenBLAS): for a
// chunk of samples, the in_channels·k·k input values under each output
// position are laid out as one column, so that
//   forward           A_chunk   = W   · cols            (C_out x s·HW)
//   weight gradient   dW       += D_chunk · cols^T      (C_out x C·k·k)
//   backward data     dcols     = W^T · D_chunk, then summed back (col2im)
// A chunk's columns take at most about `column_budget` values, never the
// whole batch's (80 MB for the demo's second convolution at batch 128), and
// chunks run on lightloop's threads, one single-thread GEMM each (a mixed
// layer gathers its columns from bf16 copies of x and delta).
//
// Either way the weight gradient is summed per fixed group of chunks, then
// the groups in order: the same bits on any thread count. The bias and the
// activation run in lightloop's own pass over each chunk's rows.
//
// DFA never calls backpropagate (the backward-data product): it projects the
// error straight into this layer's C x H x W feature map.
// backward_data_products() counts the calls, for the test that says so.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "lightloop/core/blas.hpp"
#include "lightloop/core/concepts.hpp"
#include "lightloop/core/describe.hpp"
#include "lightloop/core/error.hpp"
#include "lightloop/core/finite.hpp"
#include "lightloop/core/onednn_convolution.hpp"
#include "lightloop/core/parallel.hpp"
#include "lightloop/core/precision.hpp"
#include "lightloop/core/random.hpp"
#include "lightloop/core/shape.hpp"
#include "lightloop/core/simd.hpp"
#include "lightloop/core/tensor.hpp"
#include "lightloop/layers/activations.hpp"
#include "lightloop/layers/affine.hpp"
#include "lightloop/layers/init.hpp"

namespace lightloop {

/// A convolution's settings: conv2d<tanh_act>({1, 28, 28}, {.out_channels =
/// 32, .kernel = 5, .padding = 2}).
struct conv2d_spec {
    std::size_t out_channels = 0;
    std::size_t kernel = 0;
    std::size_t stride = 1;
    std::size_t padding = 0;
    init scheme = init::glorot_uniform;
};

namespace detail {

inline feature_shape convolved_shape(feature_shape in, const conv2d_spec& spec) {
    const auto fail = [&](const std::string& why) {
        throw config_error("lightloop::conv2d: " + why + " (input " + in.text() + ", " +
                           std::to_string(spec.out_channels) + " channels, kernel " +
                           std::to_string(spec.kernel) + ", stride " + std::to_string(spec.stride) +
                           ", padding " + std::to_string(spec.padding) + ")");
    };
    if (in.size() == 0 || spec.out_channels == 0 || spec.kernel == 0 || spec.stride == 0) {
        fail("input, channels, kernel and stride must be positive");
    }
    if (spec.padding >= spec.kernel) {
        fail("padding must be smaller than the kernel");
    }
    if (in.height + 2 * spec.padding < spec.kernel || in.width + 2 * spec.padding < spec.kernel) {
        fail("the kernel does not fit the padded input");
    }
    return {spec.out_channels, (in.height + 2 * spec.padding - spec.kernel) / spec.stride + 1,
            (in.width + 2 * spec.padding - spec.kernel) / spec.stride + 1};
}

/// Whether conv2d<..., P> can run on oneDNN's convolution primitives: float
/// and mixed bf16 on the oneDNN backend, where oneDNN is built in.
template <class P>
inline constexpr bool onednn_convolutions =
#if defined(LIGHTLOOP_WITH_ONEDNN)
  std::is_same_v<master_t<P>, float>&&
    std::is_same_v<typename precision_traits<P>::backend, onednn_backend>;
#else
  false;
#endif

} // namespace detail

/// P is the precision (core/precision.hpp): float, double or mixed_bf16.
template <class Act = identity, precision P = float>
requires activation<Act, master_t<P>>
class conv2d : public detail::affine_layer<Act, P> {
    using affine = detail::affine_layer<Act, P>;
    using T = master_t<P>;
    using U = operand_t<P>; // the products' operands
    using site = typename affine::site;
    using affine::act_;
    using affine::bias_;
    using affine::bias_gradient_;
    using affine::delta_;
    using affine::output_;
    using affine::pre_activation_;
    using affine::weight_gradient_;
    using affine::weights_;

public:
    /// Values of one chunk's columns, about: a chunk is as many samples as
    /// fit (at least one), which keeps the GEMMs wide and the buffers small.
    static constexpr std::size_t column_budget = std::size_t{1} << 18;
    /// The weight gradient is summed in at most this many groups of chunks
    /// (fixed by the batch, not the threads), each on one thread at a time.
    static constexpr std::size_t max_gradient_groups = 16;
    /// Whether the products run as oneDNN's convolution primitives rather
    /// than im2col (see the file comment).
    static constexpr bool onednn_primitives = detail::onednn_convolutions<P>;
    /// Samples per chunk on oneDNN's primitives.
    static constexpr std::size_t primitive_chunk = 16;

    conv2d(feature_shape in, conv2d_spec spec)
      : conv2d(in, spec, Act{}) {}

    conv2d(feature_shape in, conv2d_spec spec, Act act)
      : affine(act, spec.out_channels, in.channels * spec.kernel * spec.kernel)
      , spec_(spec)
      , in_(in)
      , out_(detail::convolved_shape(in, spec)) {
        const std::size_t taps = patch_size();
        const std::size_t positions = out_.height * out_.width;
        chunk_ = onednn_primitives ? primitive_chunk
                                   : std::max<std::size_t>(1, column_budget / (taps * positions));
    }

    std::size_t input_size() const noexcept { return in_.size(); }
    std::size_t output_size() const noexcept { return out_.size(); }
    feature_shape input_shape() const noexcept { return in_; }
    feature_shape output_shape() const noexcept { return out_; }
    const conv2d_spec& spec() const noexcept { return spec_; }
    /// Whether this layer runs oneDNN's convolution primitives (else im2col).
    bool uses_primitives() const noexcept { return onednn_primitives; }
    /// Samples per chunk of the products (see the file comment).
    std::size_t chunk_samples() const noexcept { return chunk_; }
    /// in_channels · k · k: the length of one filter.
    std::size_t patch_size() const noexcept { return in_.channels * spec_.kernel * spec_.kernel; }

    /// Draws W from the scheme with fan_in = in_channels·k·k and fan_out =
    /// out_channels·k·k (PyTorch's fans for a convolution); the bias starts
    /// at zero.
    void initialize(std::uint64_t seed) {
        rng gen(seed);
        const double variance = init_variance(spec_.scheme, patch_size(),
                                              spec_.out_channels * spec_.kernel * spec_.kernel);
        const std::span<T> values(weights_.data(), weights_.size());
        if (init_is_uniform(spec_.scheme)) {
            fill_uniform(values, gen, std::sqrt(3.0 * variance));
        } else {
            fill_normal(values, gen, std::sqrt(variance));
        }
        bias_.fill(T(0));
    }

    /// a = W * x + b and h = f(a), the bias and f fused into the pass that
    /// moves each chunk's product into the batch's rows.
    const matrix<T>& forward(const matrix<T>& x) {
        check_rows(x, "input");
        const std::size_t n = x.shape(0);
        this->shape_batch(n, out_.size());
        const std::size_t positions = out_.height * out_.width;
        const std::size_t channels = out_.channels;
        T* a = pre_activation_.data();
        T* h = output_.data();
        const T* bias = bias_.data();
        const auto finish_row = [&](std::size_t row) {
            T* a_row = a + row * out_.size();
            for (std::size_t c = 0; c < channels; ++c) {
                for (std::size_t p = 0; p < positions; ++p) {
                    a_row[c * positions + p] += bias[c];
                }
            }
            detail::activate_row(act_, a_row, h + row * out_.size(), out_.size());
        };
#if defined(LIGHTLOOP_WITH_ONEDNN)
        if constexpr (onednn_primitives) {
            primitives_forward(x, finish_row);
            return output_;
        }
#endif
        const U* input = this->input_operand(x, false);
        const U* w = this->weights_operand();
        for_chunks(n, [&](std::size_t first, std::size_t count, const space& work) {
            gather_columns(input, first, count, work.cols);
            const std::size_t width = count * positions;
            T* staging = work.wide;
            affine::template product<site::caller>(transpose::no, transpose::no, channels, width,
                                                   patch_size(), T(1), w, patch_size(), work.cols,
                                                   width, T(0), staging, width);
            for (std::size_t j = 0; j < count; ++j) {
                T* a_row = a + (first + j) * out_.size();
                for (std::size_t c = 0; c < channels; ++c) {
                    std::copy_n(staging + c * width + j * positions, positions,
                                a_row + c * positions);
                }
                finish_row(first + j);
            }
        });
        return output_;
    }

    /// into (n x in_channels·H·W) = the gradient with respect to the input:
    /// the backward-data convolution, delta through W.
    void backpropagate(matrix<T>& into) const {
        backpropagate_with(weights_, into);
    }

    /// As backpropagate, through `weights` (W's shape) in place of W:
    /// feedback alignment's random filters (random_feedback_shape).
    void backpropagate_with(const matrix<T>& weights, matrix<T>& into) const {
        if (weights.shape(0) != spec_.out_channels || weights.shape(1) != patch_size()) {
            throw shape_error("lightloop::conv2d (" + describe() + "): backward weights are " +
                              std::to_string(weights.shape(0)) + "x" +
                              std::to_string(weights.shape(1)) + ", expected " +
                              std::to_string(spec_.out_channels) + "x" +
                              std::to_string(patch_size()));
        }
        const std::size_t n = delta_.shape(0);
        if (into.shape(0) != n || into.shape(1) != in_.size()) {
            throw shape_error("lightloop::conv2d (" + describe() + "): backward output is " +
                              std::to_string(into.shape(0)) + "x" + std::to_string(into.shape(1)) +
                              ", expected " + std::to_string(n) + "x" + std::to_string(in_.size()));
        }
        ++backward_data_products_;
        const std::size_t positions = out_.height * out_.width;
        const U* w = backward_operand(weights);
#if defined(LIGHTLOOP_WITH_ONEDNN)
        if constexpr (onednn_primitives) {
            primitives_backward(w, into);
            return;
        }
#endif
        const U* d = this->delta_operand();
        for_chunks(n, [&](std::size_t first, std::size_t count, const space& work) {
            gather_delta(d, first, count, work.delta);
            const std::size_t width = count * positions;
            T* cols = work.wide;
            affine::template product<site::caller>(transpose::yes, transpose::no, patch_size(),
                                                   width, spec_.out_channels, T(1), w, patch_size(),
                                                   work.delta, width, T(0), cols, width);
            scatter_columns(cols, first, count, into.data());
        });
    }

    /// dW = (1/n) sum over samples and positions of delta ⊗ patch, db =
    /// (1/n) sum of delta over samples and positions.
    void compute_gradient(const matrix<T>& x) {
        const std::size_t n = delta_.shape(0);
        if (x.shape(0) != n) {
            throw shape_error("lightloop::conv2d (" + describe() + "): gradient input has " +
                              std::to_string(x.shape(0)) + " rows, expected " + std::to_string(n));
        }
        check_rows(x, "gradient input");
#if defined(LIGHTLOOP_WITH_ONEDNN)
        if constexpr (onednn_primitives) {
            primitives_gradient(x);
            return;
        }
#endif
        const std::size_t positions = out_.height * out_.width;
        const U* input = this->input_operand(x, true);
        const U* d_operand = this->delta_operand();
        prepare_workspace();
        sum_gradient(
          n, [&](std::size_t, std::size_t worker, std::size_t first, std::size_t count, T* dw) {
              const space work = workspace(worker);
              const std::size_t width = count * positions;
              gather_columns(input, first, count, work.cols);
              gather_delta(d_operand, first, count, work.delta);
              affine::template product<site::caller>(
                transpose::no, transpose::yes, spec_.out_channels, patch_size(), width, T(1),
                work.delta, width, work.cols, width, T(1), dw, patch_size());
          });
    }

    /// An upper bound on |every gradient entry| compute_gradient(x) gives
    /// when max |delta| = delta_max, or +inf when it cannot vouch for a
    /// finite one: each entry is a mean over samples of a sum over the
    /// H_out·W_out positions of delta · x (affine_layer::bound_gradient).
    double gradient_bound(const matrix<T>& x, double delta_max) const {
        return this->bound_gradient(x, delta_max, static_cast<double>(out_.height * out_.width));
    }

    /// The random filters feedback alignment draws to replace W in the
    /// backward-data product: W's shape, each input gradient a sum over
    /// out_channels·k·k terms (its fan-in going down).
    feedback_weights_shape random_feedback_shape() const noexcept {
        return {spec_.out_channels, patch_size(), spec_.out_channels * spec_.kernel * spec_.kernel};
    }

    /// weight (out, in, k, k) and bias (out), PyTorch's names and shapes.
    std::vector<parameter_shape> parameter_layout() const {
        return {{"weight", {spec_.out_channels, in_.channels, spec_.kernel, spec_.kernel}},
                {"bias", {spec_.out_channels}}};
    }

    /// W is out_channels x (in_channels·k·k): weights() and the rest come
    /// from affine_layer.
    /// How many backward-data products (backpropagate, backpropagate_with)
    /// this layer has run.
    std::uint64_t backward_data_products() const noexcept {
        return backward_data_products_;
    }

    /// "conv2d<tanh> 1x28x28 -> 32x28x28 k5 s1 p2", for checkpoint
    /// signatures.
    std::string signature() const {
        return "conv2d<" + name_of<Act>() + "> " + in_.text() + " -> " + out_.text() + " k" +
               std::to_string(spec_.kernel) + " s" + std::to_string(spec_.stride) + " p" +
               std::to_string(spec_.padding);
    }

    /// "conv2d 1x28x28 -> 32x28x28", for messages.
    std::string describe() const {
        return "conv2d " + in_.text() + " -> " + out_.text();
    }

private:
    /// dW and db from the chunks' weight gradients: chunk_gradient(chunk,
    /// worker, first, count, dw) adds a chunk's into its group's dw; the
    /// groups (fixed by the batch) are summed in order, then 1/n.
    template <class ChunkGradient>
    void sum_gradient(std::size_t n, ChunkGradient&& chunk_gradient) {
        const std::size_t chunks = (n + chunk_ - 1) / chunk_;
        const std::size_t groups = std::min(chunks, max_gradient_groups);
        const std::size_t weight_count = weights_.size();
        const std::size_t channels = spec_.out_channels;
        const std::size_t group_size = weight_count + channels;
        if (partial_.size() < groups * group_size) {
            partial_.resize(groups * group_size);
        }
        const std::size_t positions = out_.height * out_.width;
        const T* d = delta_.data();
        run_tasks(groups, [&](std::size_t group, std::size_t worker) {
            T* dw = partial_.data() + group * group_size;
            T* db = dw + weight_count;
            std::fill_n(dw, group_size, T(0));
            for (std::size_t chunk = group; chunk < chunks; chunk += groups) {
                const std::size_t first = chunk * chunk_;
                const std::size_t count = std::min(chunk_, n - first);
                chunk_gradient(chunk, worker, first, count, dw);
                for (std::size_t j = first; j < first + count; ++j) {
                    for (std::size_t c = 0; c < channels; ++c) {
                        db[c] += simd::sum(d + j * out_.size() + c * positions, positions);
                    }
                }
            }
        });
        const T inv_n = T(1) / static_cast<T>(n);
        T* dw = weight_gradient_.data();
        T* db = bias_gradient_.data();
        parallel_for_ranges(group_size, elementwise_grain / std::max<std::size_t>(groups, 1),
                            [&](std::size_t begin, std::size_t end) {
                                for (std::size_t i = begin; i < end; ++i) {
                                    T sum = 0;
                                    for (std::size_t g = 0; g < groups; ++g) {
                                        sum += partial_[g * group_size + i];
                                    }
                                    if (i < weight_count) {
                                        dw[i] = sum * inv_n;
                                    } else {
                                        db[i - weight_count] = sum * inv_n;
                                    }
                                }
                            });
    }

#if defined(LIGHTLOOP_WITH_ONEDNN)
    using plan = detail::onednn::conv_plan<U>;

    detail::onednn::conv_geometry geometry() const noexcept {
        return {in_.channels, in_.height,   in_.width,    out_.channels, out_.height,
                out_.width,   spec_.kernel, spec_.stride, spec_.padding};
    }

    /// The plans for a batch of n: the full chunk's and the last chunk's
    /// (the same plan when chunk_ divides n), each with bindings for the
    /// team.
    std::pair<plan*, plan*> plans_for(std::size_t n) const {
        const std::size_t workers = task_threads();
        plan* full = &primitives_.get(geometry(), std::min(chunk_, n), workers);
        plan* last = n % chunk_ == 0 ? full : &primitives_.get(geometry(), n % chunk_, workers);
        return {full, last};
    }

    /// The plan a chunk of `count` samples runs on: the full chunk's, or
    /// the last, shorter chunk's.
    static plan& plan_of(std::pair<plan*, plan*> plans, std::size_t count) {
        return count == plans.first->samples() ? *plans.first : *plans.second;
    }

    /// f(chunk, worker, first, count, plan) for each chunk of n samples, on
    /// the team.
    template <class F>
    void for_primitive_chunks(std::size_t n, std::pair<plan*, plan*> plans, F&& f) const {
        const std::size_t chunks = (n + chunk_ - 1) / chunk_;
        run_tasks(chunks, [&](std::size_t chunk, std::size_t worker) {
            const std::size_t first = chunk * chunk_;
            const std::size_t count = std::min(chunk_, n - first);
            f(chunk, worker, first, count, plan_of(plans, count));
        });
    }

    /// Where chunk `chunk`'s blocked input starts in the batch's.
    std::byte* blocked_input(std::size_t chunk, const plan& full) const {
        return static_cast<std::byte*>(primitives_.input.data()) + chunk * full.input_bytes();
    }

    /// a = the convolution of x (oneDNN's forward per chunk, which keeps the
    /// chunk's input in its blocked layout for the gradient), then
    /// finish_row(row) (bias, activation) on each row of the chunk.
    template <class FinishRow>
    void primitives_forward(const matrix<T>& x, FinishRow&& finish_row) {
        const std::size_t n = x.shape(0);
        const auto plans = plans_for(n);
        const U* w = this->weights_operand();
        plans.first->load_forward_filters(w);
        if (plans.second != plans.first) {
            plans.second->load_forward_filters(w);
        }
        const std::size_t chunks = (n + chunk_ - 1) / chunk_;
        primitives_.input.reserve((chunks - 1) * plans.first->input_bytes() +
                                  plans.second->input_bytes());
        primitives_.input_source = nullptr; // until it is complete
        T* a = pre_activation_.data();
        for_primitive_chunks(n, plans,
                             [&](std::size_t chunk, std::size_t worker, std::size_t first,
                                 std::size_t count, plan& p) {
                                 p.forward(worker, x.data() + first * in_.size(),
                                           blocked_input(chunk, *plans.first),
                                           a + first * out_.size());
                                 for (std::size_t j = first; j < first + count; ++j) {
                                     finish_row(j);
                                 }
                             });
        primitives_.input_source = x.data();
        primitives_.input_rows = n;
    }

    /// into = delta through the filters w (plain, operand type), oneDNN's
    /// backward-data convolution per chunk.
    void primitives_backward(const U* w, matrix<T>& into) const {
        const std::size_t n = delta_.shape(0);
        const auto plans = plans_for(n);
        plans.first->load_backward_filters(w);
        if (plans.second != plans.first) {
            plans.second->load_backward_filters(w);
        }
        const T* d = delta_.data();
        for_primitive_chunks(
          n, plans, [&](std::size_t, std::size_t worker, std::size_t first, std::size_t, plan& p) {
              p.backward_data(worker, d + first * out_.size(), into.data() + first * in_.size());
          });
    }

    /// dW and db, each chunk's dW from oneDNN's backward-weights convolution
    /// (from the forward's blocked input when x is the forward's).
    void primitives_gradient(const matrix<T>& x) {
        const std::size_t n = delta_.shape(0);
        const auto plans = plans_for(n);
        const bool reuse = primitives_.input_source == x.data() && primitives_.input_rows == n;
        const std::size_t weight_count = weights_.size();
        const std::size_t workers = task_threads();
        if (chunk_gradients_.size() < workers * weight_count) {
            chunk_gradients_.resize(workers * weight_count);
        }
        const T* d = delta_.data();
        sum_gradient(n, [&](std::size_t chunk, std::size_t worker, std::size_t first,
                            std::size_t count, T* dw) {
            plan& p = plan_of(plans, count);
            T* own = chunk_gradients_.data() + worker * weight_count;
            p.weight_gradient(worker, x.data() + first * in_.size(),
                              reuse ? blocked_input(chunk, *plans.first) : nullptr,
                              d + first * out_.size(), own);
            for (std::size_t i = 0; i < weight_count; ++i) {
                dw[i] += own[i];
            }
        });
    }

    // oneDNN's primitives for this layer, and the batch's blocked input.
    mutable detail::onednn::conv_plans<U> primitives_;
    std::vector<T> chunk_gradients_; // per worker: one chunk's dW
#endif

    void check_rows(const matrix<T>& x, const char* what) const {
        if (x.shape(1) != in_.size()) {
            throw shape_error("lightloop::conv2d (" + describe() + "): " + what + " has " +
                              std::to_string(x.shape(1)) + " columns, expected " +
                              std::to_string(in_.size()) + " (" + in_.text() + ")");
        }
    }

    std::size_t column_capacity() const noexcept {
        return patch_size() * chunk_ * out_.height * out_.width;
    }
    std::size_t staging_capacity() const noexcept {
        return spec_.out_channels * chunk_ * out_.height * out_.width;
    }
    std::size_t wide_capacity() const noexcept {
        return std::max(column_capacity(), staging_capacity());
    }

    /// One thread's scratch for a chunk: its columns and its C_out x s·HW
    /// block of delta (GEMM operands), and a block of T for a product's
    /// result (the forward's C_out x s·HW, the backward's columns).
    struct space {
        U* cols;
        U* delta;
        T* wide;
    };
    space workspace(std::size_t worker) const {
        U* operands = operand_space_.data() + worker * (column_capacity() + staging_capacity());
        return {operands, operands + column_capacity(),
                wide_space_.data() + worker * wide_capacity()};
    }

    /// Sized once for the thread count.
    void prepare_workspace() const {
        const std::size_t threads = task_threads();
        if (operand_space_.size() < threads * (column_capacity() + staging_capacity())) {
            operand_space_.resize(threads * (column_capacity() + staging_capacity()));
        }
        if (wide_space_.size() < threads * wide_capacity()) {
            wide_space_.resize(threads * wide_capacity());
        }
    }

    /// The backward-data product's filters as an operand: W's own (bf16
    /// copy), or other filters (feedback alignment's) converted here.
    const U* backward_operand(const matrix<T>& weights) const {
        if constexpr (affine::mixed) {
            if (&weights == &weights_) {
                return this->weights_operand();
            }
            ensure_shape(feedback_operand_, weights.shape(0), weights.shape(1));
            detail::convert_on_team(weights.data(), feedback_operand_.data(), weights.size());
            return feedback_operand_.data();
        } else {
            return weights.data();
        }
    }

    /// Threads that run chunks: lightloop's team, or only the caller when
    /// OpenBLAS is left to thread each product (blas_thread_policy::untouched).
    static std::size_t task_threads() {
        return get_blas_thread_policy() == blas_thread_policy::untouched ? 1 : parallel_threads();
    }

    /// f(task, worker) for every task, on the team with OpenBLAS held at one
    /// thread, or on the caller alone.
    template <class F>
    static void run_tasks(std::size_t tasks, F&& f) {
        if (task_threads() == 1 || tasks <= 1) {
            for (std::size_t task = 0; task < tasks; ++task) {
                f(task, std::size_t{0});
            }
            return;
        }
        const blas_single_thread hold;
        shared_team().run(tasks, f);
    }

    /// f(first, count, space) for each chunk of the n samples.
    template <class F>
    void for_chunks(std::size_t n, F&& f) const {
        prepare_workspace();
        const std::size_t chunks = (n + chunk_ - 1) / chunk_;
        run_tasks(chunks, [&](std::size_t chunk, std::size_t worker) {
            const std::size_t first = chunk * chunk_;
            f(first, std::min(chunk_, n - first), workspace(worker));
        });
    }

    /// The output columns ox whose input column ox·stride + kx - padding
    /// falls inside the map: [begin, end).
    std::pair<std::size_t, std::size_t> valid_columns(std::size_t kx) const noexcept {
        const std::size_t s = spec_.stride;
        const std::size_t p = spec_.padding;
        const std::size_t begin = p > kx ? (p - kx + s - 1) / s : 0;
        const std::size_t limit = in_.width + p - kx; // ox·s < limit
        const std::size_t end = std::min(out_.width, (limit + s - 1) / s);
        return {std::min(begin, end), end};
    }

    /// Calls f(column_row, input_offset_of_row or npos, ox_begin, ox_end)
    /// over one chunk's im2col rows: for filter tap (ci, ky, kx), sample j
    /// and output row oy, the columns' row and, when the input row iy exists,
    /// its offset in x's sample row.
    template <class F>
    void for_patch_rows(std::size_t count, F&& f) const {
        const std::size_t k = spec_.kernel;
        const std::size_t positions = out_.height * out_.width;
        const std::size_t width = count * positions;
        for (std::size_t ci = 0; ci < in_.channels; ++ci) {
            for (std::size_t ky = 0; ky < k; ++ky) {
                for (std::size_t kx = 0; kx < k; ++kx) {
                    const std::size_t tap = (ci * k + ky) * k + kx;
                    const auto [begin, end] = valid_columns(kx);
                    for (std::size_t j = 0; j < count; ++j) {
                        for (std::size_t oy = 0; oy < out_.height; ++oy) {
                            const std::size_t column =
                              tap * width + j * positions + oy * out_.width;
                            const std::size_t iy_padded = oy * spec_.stride + ky;
                            const bool inside =
                              iy_padded >= spec_.padding && iy_padded - spec_.padding < in_.height;
                            const std::size_t offset =
                              inside ? j * in_.size() +
                                         (ci * in_.height + iy_padded - spec_.padding) * in_.width
                                     : npos;
                            f(column, offset, begin, end, kx);
                        }
                    }
                }
            }
        }
    }

    static constexpr std::size_t npos = static_cast<std::size_t>(-1);

    /// cols (C·k·k x count·HW) = the patches of samples first..first+count
    /// of x (the batch input, or its operand copy).
    template <class V>
    void gather_columns(const V* x, std::size_t first, std::size_t count, V* cols) const {
        const V* base = x + first * in_.size();
        const std::size_t s = spec_.stride;
        const std::size_t p = spec_.padding;
        for_patch_rows(count, [&](std::size_t column, std::size_t offset, std::size_t begin,
                                  std::size_t end, std::size_t kx) {
            V* to = cols + column;
            if (offset == npos) {
                std::fill_n(to, out_.width, V{});
                return;
            }
            // Input column ox·s + kx - p, in range for ox in [begin, end).
            const V* row = base + offset;
            std::fill_n(to, begin, V{});
            if (s == 1) {
                std::copy(row + (begin + kx - p), row + (end + kx - p), to + begin);
            } else {
                for (std::size_t ox = begin; ox < end; ++ox) {
                    to[ox] = row[ox * s + kx - p];
                }
            }
            std::fill(to + end, to + out_.width, V{});
        });
    }

    /// into's rows first..first+count = the columns summed back onto the
    /// input positions they came from (col2im).
    void scatter_columns(const T* cols, std::size_t first, std::size_t count, T* into) const {
        T* base = into + first * in_.size();
        std::fill_n(base, count * in_.size(), T(0));
        const std::size_t s = spec_.stride;
        const std::size_t p = spec_.padding;
        for_patch_rows(count, [&](std::size_t column, std::size_t offset, std::size_t begin,
                                  std::size_t end, std::size_t kx) {
            if (offset == npos) {
                return;
            }
            const T* from = cols + column;
            T* row = base + offset;
            for (std::size_t ox = begin; ox < end; ++ox) {
                row[ox * s + kx - p] += from[ox];
            }
        });
    }

    /// staging (C_out x count·HW) = rows first..first+count of d (delta or
    /// its operand copy), channel by channel.
    void gather_delta(const U* d, std::size_t first, std::size_t count, U* staging) const {
        const std::size_t positions = out_.height * out_.width;
        const std::size_t width = count * positions;
        for (std::size_t j = 0; j < count; ++j) {
            for (std::size_t c = 0; c < spec_.out_channels; ++c) {
                std::copy_n(d + (first + j) * out_.size() + c * positions, positions,
                            staging + c * width + j * positions);
            }
        }
    }

    conv2d_spec spec_;
    feature_shape in_;
    feature_shape out_;
    std::size_t chunk_ = 1; // samples per chunk
    // Scratch for the products (see workspace); the backward-data product
    // is const to the layer but uses it.
    mutable std::vector<U> operand_space_;
    mutable std::vector<T> wide_space_;
    mutable matrix<U> feedback_operand_; // mixed: backward filters' copy
    std::vector<T> partial_;             // compute_gradient's per-group sums
    mutable std::uint64_t backward_data_products_ = 0;
};

static_assert(layer<conv2d<identity, float>>);
static_assert(layer<conv2d<tanh_act, double>>);
static_assert(layer<conv2d<tanh_act, mixed_bf16>>);

} // namespace lightloop
