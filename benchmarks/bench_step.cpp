// Micro benchmarks on the paper's shapes (784-1024-1024-10, tanh, batch 128):
// each GEMM of a DFA step (as lightloop's gemm and as OpenBLAS's own threaded
// cblas_sgemm), the fused bias + tanh pass and its derivative,
// softmax cross-entropy, the SGD-momentum and Adam updates of the hidden
// weights (with their finite check), each projection device (10 -> 2048), and one whole
// training step per feedback method. In mixed bf16: each GEMM as a bf16
// product on the default bf16 backend (and, with oneDNN, the fp32 products
// through oneDNN, to compare the two fp32 backends), the SGD-momentum update
// writing the weights' bf16 copy in its pass against the update followed by
// a conversion pass, the bf16 weight-gradient GEMM and another layer's update
// one after the other against side by side on the two threads (whether the
// memory-bound update can hide behind the GEMMs), and the bf16 steps. The CNN's two convolutions,
// each pass, as conv2d runs them (fp32 and mixed bf16) and, with oneDNN, as conv2d's oneDNN plan
// with the whole batch as one chunk on one thread (README, "The CNN"). The bf16 forward
// products straight through oneDNN with the weights plain (as lightloop keeps its copy) and
// packed in the kernel's layout, and the packing alone; the same products through lightloop
// (onednn_gemm against onednn_gemm_packed) and the conversions into either copy. Rates are per
// wall-clock second (UseRealTime): with OPENBLAS_NUM_THREADS=2 the work runs on two threads. The
// end-to-end roofline and PyTorch comparison is benchmarks/throughput.cpp.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include <lightloop/lightloop.hpp>
#if defined(LIGHTLOOP_WITH_ONEDNN)
#include <oneapi/dnnl/dnnl.hpp>
#endif

#include "cli.hpp"
#include "cnn_convolutions.hpp"

namespace {

using namespace lightloop;

/// One-hot targets of classes 0, 1, ..., 9, 0, 1, ... for `batch` rows.
matrix<float> cyclic_targets(std::size_t batch) {
    std::vector<int> labels(batch);
    for (std::size_t i = 0; i < batch; ++i) {
        labels[i] = static_cast<int>(i % 10);
    }
    return one_hot<float>(std::span<const int>(labels), 10);
}

template <class Feedback, class P = float>
void bm_train_step(benchmark::State& state) {
    const auto batch = static_cast<std::size_t>(state.range(0));
    auto net = make_network<Feedback, softmax_cross_entropy>(1, dense<tanh_act, P>{784, 1024},
                                                             dense<tanh_act, P>{1024, 1024},
                                                             dense<identity, P>{1024, 10});
    auto x = matrix<float>::from_shape({batch, 784});
    rng gen(2);
    fill_normal(std::span<float>(x.data(), x.size()), gen, 1.0);
    const auto y = cyclic_targets(batch);
    sgd opt{{.learning_rate = 0.01, .momentum = 0.9}};
    for (auto _ : state) {
        benchmark::DoNotOptimize(net.train_step(x, y, opt));
    }
    state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(batch));
}

/// Who runs a GEMM: lightloop's gemm (pieces on lightloop's team, each a
/// one-thread OpenBLAS call), OpenBLAS's own cblas_sgemm on its threads, the
/// default bf16 backend's bf16 product (pieces on the team), or oneDNN's
/// fp32 product (pieces on the team).
enum class gemm_way { lightloop, openblas, bf16, onednn_fp32 };

/// One GEMM of a training step, C (m x n) = op(A) op(B) with k inner, from
/// the arguments {transpose A, transpose B, m, n, k}.
template <gemm_way Way>
void bm_gemm(benchmark::State& state) {
    const bool ta = state.range(0) != 0;
    const bool tb = state.range(1) != 0;
    const auto m = static_cast<std::size_t>(state.range(2));
    const auto n = static_cast<std::size_t>(state.range(3));
    const auto k = static_cast<std::size_t>(state.range(4));
    const std::vector<float> a(m * k, 0.5f);
    const std::vector<float> b(k * n, 0.01f);
    std::vector<mixed_bf16::operand_type> a16(a.size());
    std::vector<mixed_bf16::operand_type> b16(b.size());
    convert_to_bf16(a.data(), a16.data(), a.size());
    convert_to_bf16(b.data(), b16.data(), b.size());
    std::vector<float> c(m * n);
    const std::size_t lda = ta ? m : k;
    const std::size_t ldb = tb ? k : n;
    const transpose op_a = ta ? transpose::yes : transpose::no;
    const transpose op_b = tb ? transpose::yes : transpose::no;
    for (auto _ : state) {
        if constexpr (Way == gemm_way::lightloop) {
            gemm(op_a, op_b, m, n, k, 1.0f, a.data(), lda, b.data(), ldb, 0.0f, c.data(), n);
        } else if constexpr (Way == gemm_way::bf16) {
            mixed_bf16::backend::product(op_a, op_b, m, n, k, 1.0f, a16.data(), lda, b16.data(),
                                         ldb, 0.0f, c.data(), n);
        } else if constexpr (Way == gemm_way::onednn_fp32) {
#if defined(LIGHTLOOP_WITH_ONEDNN)
            onednn_gemm(op_a, op_b, m, n, k, 1.0f, a.data(), lda, b.data(), ldb, 0.0f, c.data(), n);
#endif
        } else { // the same call straight to OpenBLAS, on its own threads
            detail::blas_call(op_a, op_b, m, n, k, 1.0f, a.data(), lda, b.data(), ldb, 0.0f,
                              c.data(), n);
        }
        benchmark::ClobberMemory();
    }
    state.counters["GFLOP/s"] = benchmark::Counter(
      2.0 * static_cast<double>(m * n * k) * static_cast<double>(state.iterations()),
      benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
}

/// The GEMMs of a DFA step on the paper's network at batch 128: the three
/// forward products, then the three weight gradients.
void step_gemm_shapes(benchmark::internal::Benchmark* b) {
    b->ArgNames({"ta", "tb", "m", "n", "k"});
    for (const auto& [in, out] :
         {std::pair{784, 1024}, std::pair{1024, 1024}, std::pair{1024, 10}}) {
        b->Args({0, 1, 128, out, in});
    }
    for (const auto& [in, out] :
         {std::pair{784, 1024}, std::pair{1024, 1024}, std::pair{1024, 10}}) {
        b->Args({1, 0, out, in, 128});
    }
}

/// A 1024 -> 1024 dense layer's forward pass: the GEMM, then the fused pass
/// a = z + b, h = f(a), per element (the activation's value pass).
template <class Act>
void bm_dense_forward_fused(benchmark::State& state) {
    const auto batch = static_cast<std::size_t>(state.range(0));
    dense<Act> layer{1024, 1024};
    layer.initialize(1);
    auto x = matrix<float>::from_shape({batch, 1024});
    for (std::size_t i = 0; i < x.size(); ++i) { // both signs: both branches
        x.data()[i] = static_cast<float>(std::sin(0.37 * static_cast<double>(i)));
    }
    for (auto _ : state) {
        benchmark::DoNotOptimize(layer.forward(x).data());
    }
    state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(batch));
}

/// delta = s ⊙ f'(a) for tanh (1 - h^2), the hidden layers' elementwise step.
void bm_tanh_derivative(benchmark::State& state) {
    const auto batch = static_cast<std::size_t>(state.range(0));
    dense<tanh_act> layer{1024, 1024};
    layer.initialize(1);
    auto x = matrix<float>::from_shape({batch, 1024});
    x.fill(0.1f);
    layer.forward(x);
    const matrix<float> signal = layer.output();
    for (auto _ : state) {
        layer.scale_by_derivative(signal.data(), 1024);
        benchmark::ClobberMemory();
    }
    state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(batch * 1024));
}

void bm_softmax_cross_entropy(benchmark::State& state) {
    const auto batch = static_cast<std::size_t>(state.range(0));
    auto logits = matrix<float>::from_shape({batch, 10});
    rng gen(3);
    fill_normal(std::span<float>(logits.data(), logits.size()), gen, 2.0);
    const auto y = cyclic_targets(batch);
    matrix<float> grad;
    for (auto _ : state) {
        benchmark::DoNotOptimize(softmax_cross_entropy{}.evaluate(logits, y, grad));
    }
    state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(batch));
}

/// One DFA projection of a batch of softmax-like errors (10 -> 2048).
template <class Device>
void bm_projection(benchmark::State& state) {
    const auto batch = static_cast<std::size_t>(state.range(0));
    Device device;
    device.configure(10, 2048, 7);
    auto e = matrix<float>::from_shape({batch, 10});
    rng gen(4);
    for (std::size_t r = 0; r < batch; ++r) {
        for (std::size_t c = 0; c < 10; ++c) {
            e(r, c) = static_cast<float>(0.1 * gen.uniform());
        }
        e(r, r % 10) = -0.8f;
    }
    auto y = matrix<float>::from_shape({batch, 2048});
    device.project(e, y); // calibrates the camera
    for (auto _ : state) {
        device.project(e, y);
        benchmark::ClobberMemory();
    }
    state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(batch));
}

/// One optimizer update of the paper's hidden weights (784x1024 + 1024x1024
/// = 1.86M), with the check of the updated weights the network asks for; the
/// step's memory-bound part. Reports bytes moved per second.
template <class Optimizer>
void bm_optimizer_update(benchmark::State& state) {
    const std::size_t count = 784 * 1024 + 1024 * 1024;
    std::vector<float> w(count, 0.01f);
    std::vector<float> g(count, 1e-3f);
    Optimizer opt;
    opt.begin_step();
    opt.update(0, std::span<float>(w), std::span<const float>(g)); // allocates the state
    for (auto _ : state) {
        opt.begin_step();
        benchmark::DoNotOptimize(
          opt.update_and_measure(0, std::span<float>(w), std::span<const float>(g)));
    }
    // sgd momentum reads w, v, g and writes w, v; adam reads w, m, v, g and writes w, m, v.
    const double streams = std::is_same_v<Optimizer, adam<float>> ? 7.0 : 5.0;
    state.counters["GB/s"] = benchmark::Counter(
      streams * 4.0 * static_cast<double>(count) * static_cast<double>(state.iterations()),
      benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
}

/// The same momentum update of the hidden weights in mixed bf16: writing
/// the weights' bf16 copy in the update's own pass (range 1, what the network
/// does), or updating and then converting in a second pass (range 0).
void bm_update_with_copy(benchmark::State& state) {
    const bool fused = state.range(0) != 0;
    const std::size_t count = 784 * 1024 + 1024 * 1024;
    std::vector<float> w(count, 0.01f);
    std::vector<float> g(count, 1e-3f);
    std::vector<mixed_bf16::operand_type> copy(count);
    sgd<float> opt{{.learning_rate = 0.01, .momentum = 0.9}};
    opt.begin_step();
    opt.update(0, std::span<float>(w), std::span<const float>(g)); // allocates the state
    for (auto _ : state) {
        opt.begin_step();
        if (fused) {
            benchmark::DoNotOptimize(
              opt.update_and_measure(0, std::span<float>(w), std::span<const float>(g),
                                     std::span<mixed_bf16::operand_type>(copy)));
        } else {
            benchmark::DoNotOptimize(
              opt.update_and_measure(0, std::span<float>(w), std::span<const float>(g)));
            detail::convert_on_team(w.data(), copy.data(), count);
        }
        benchmark::ClobberMemory();
    }
    state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(count));
}

/// Whether the step's memory-bound update can hide behind its GEMMs on two
/// cores: the bf16 weight-gradient GEMM of the 1024 x 1024 layer and the
/// SGD-momentum update (with the bf16 copy) of another 1024 x 1024 layer's
/// weights, run one after the other, each on both threads (range 0, what
/// the step does), or side by side, the GEMM on one thread and the update on
/// the other (range 1). The throughput roofline's max(GEMM time, memory
/// time) assumes they overlap; where side by side is no faster, a step
/// cannot beat their sum (docs/bf16_experiments.md has the runs).
void bm_gemm_beside_update(benchmark::State& state) {
    const bool side_by_side = state.range(0) != 0;
    const std::size_t n = 1024;
    const std::size_t batch = 128;
    using operand = mixed_bf16::operand_type;
    using backend = mixed_bf16::backend;
    std::vector<float> delta(batch * n, 0.01f);
    std::vector<float> input(batch * n, 0.5f);
    std::vector<operand> delta16(delta.size());
    std::vector<operand> input16(input.size());
    convert_to_bf16(delta.data(), delta16.data(), delta.size());
    convert_to_bf16(input.data(), input16.data(), input.size());
    std::vector<float> gradient(n * n);
    std::vector<float> w(n * n, 0.01f);
    std::vector<float> g(n * n, 1e-3f);
    std::vector<operand> copy(n * n);
    sgd<float> opt{{.learning_rate = 0.01, .momentum = 0.9}};
    opt.begin_step();
    opt.update(0, std::span<float>(w), std::span<const float>(g)); // allocates the state
    const auto product = [&](auto&& run) {
        run(transpose::yes, transpose::no, n, n, batch, 1.0f / static_cast<float>(batch),
            delta16.data(), n, input16.data(), n, 0.0f, gradient.data(), n);
    };
    const auto update = [&] {
        benchmark::DoNotOptimize(opt.update_and_measure(
          0, std::span<float>(w), std::span<const float>(g), std::span<operand>(copy)));
    };
    // The team hands tasks out as threads come free: count the iterations
    // whose two tasks ran on different threads (counter "apart").
    std::int64_t apart = 0;
    for (auto _ : state) {
        opt.begin_step();
        if (side_by_side) {
            // A run inside a team task runs on its thread (core/parallel.hpp).
            std::size_t ran_on[2] = {0, 0};
            shared_team().run(2, [&](std::size_t task, std::size_t worker) {
                ran_on[task] = worker;
                if (task == 0) {
                    product([](auto... args) { backend::product_here(args...); });
                } else {
                    update();
                }
            });
            apart += ran_on[0] != ran_on[1] ? 1 : 0;
        } else {
            product([](auto... args) { backend::product(args...); });
            update();
        }
        benchmark::ClobberMemory();
    }
    if (side_by_side) {
        state.counters["apart"] =
          static_cast<double>(apart) / static_cast<double>(state.iterations());
    }
}

/// Who runs a convolution of the CNN (throughput's): conv2d (fp32 or mixed
/// bf16: oneDNN's primitives per 16-sample chunk where built, else im2col
/// GEMMs), or conv2d's oneDNN plan given the whole batch as one chunk (fp32
/// or bf16, with the reorders from and to the batch's rows; a bf16 plan is
/// widened to fp32 primitives without bf16 instructions), or a bf16 plan
/// held on oneDNN's own bf16 primitives (emulated on AVX-512 without
/// AVX512-BF16, none on AVX2): what the widening is measured against.
enum class conv_way { conv2d_fp32, conv2d_bf16, onednn_fp32, onednn_bf16, onednn_bf16_primitives };
using bench::conv_pass;
/// One convolution pass at batch 128 (arguments: which convolution, which
/// pass), GFLOP/s of the convolution's 2 N C_out C_in k² H W.
template <conv_way Way>
void bm_conv(benchmark::State& state) {
    const auto conv = static_cast<std::size_t>(state.range(0));
    const auto pass = static_cast<conv_pass>(state.range(1));
    const std::size_t n = 128;
    const std::size_t c = bench::cnn_convolutions[conv].in;
    const std::size_t o = bench::cnn_convolutions[conv].out;
    const std::size_t side = bench::cnn_convolutions[conv].side;
    const double flops = 2.0 * static_cast<double>(n * o * c * 25 * side * side);
    if constexpr (Way == conv_way::conv2d_fp32 || Way == conv_way::conv2d_bf16) {
        using P = std::conditional_t<Way == conv_way::conv2d_bf16, mixed_bf16, float>;
        const auto call = bench::conv_layer_pass<P>(conv, pass, n);
        for (auto _ : state) {
            call();
            benchmark::ClobberMemory();
        }
    } else {
#if defined(LIGHTLOOP_WITH_ONEDNN)
        // The whole batch as one chunk of conv2d's oneDNN plan: one call per
        // pass, reorders included.
        using operand = std::conditional_t<Way == conv_way::onednn_fp32, float, bf16>;
        const detail::onednn::conv_geometry g{c, side, side, o, side, side, 5, 1, 2};
        std::unique_ptr<detail::onednn::conv_plan<operand>> made;
        try {
            made = Way == conv_way::onednn_bf16_primitives
                     ? std::make_unique<detail::onednn::conv_plan<operand>>(g, n, false)
                     : std::make_unique<detail::onednn::conv_plan<operand>>(g, n);
        } catch (const error& e) {
            state.SkipWithError(e.what());
            return;
        }
        auto& plan = *made;
        plan.prepare_workers(1);
        const std::vector<operand> filters(o * c * 25, operand{});
        plan.load_forward_filters(filters.data());
        plan.load_backward_filters(filters.data());
        const std::vector<float> x(n * c * side * side, 0.3f);
        const std::vector<float> delta(n * o * side * side, 0.01f);
        std::vector<float> out(delta.size());
        std::vector<float> into(x.size());
        std::vector<float> gradient(filters.size());
        detail::onednn::aligned_buffer blocked;
        blocked.reserve(plan.input_bytes());
        plan.forward(0, x.data(), blocked.data(), out.data());
        for (auto _ : state) {
            if (pass == conv_pass::forward) {
                plan.forward(0, x.data(), blocked.data(), out.data());
            } else if (pass == conv_pass::weight_gradient) {
                // The forward's blocked input is reused.
                plan.weight_gradient(0, x.data(), blocked.data(), delta.data(), gradient.data());
            } else {
                plan.backward_data(0, delta.data(), into.data());
            }
            benchmark::ClobberMemory();
        }
#endif
    }
    state.counters["GFLOP/s"] =
      benchmark::Counter(flops * static_cast<double>(state.iterations()),
                         benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
}

#if defined(LIGHTLOOP_WITH_ONEDNN)
/// The paper's two hidden layers' weights, {in, out}.
void hidden_layer_shapes(benchmark::internal::Benchmark* b) {
    b->ArgNames({"in", "out"});
    b->Args({784, 1024});
    b->Args({1024, 1024});
}

/// How bm_forward_weights hands oneDNN a bf16 layer's weights.
enum class weights_way {
    plain,  ///< as dense<.., mixed_bf16> stores its copy: W (out x in) row-major
    packed, ///< already in the kernel's own layout (format_tag::any)
    pack,   ///< the reorder from plain to packed alone
};

/// A bf16 layer's forward product, x (128 x in) W^T, straight through
/// oneDNN's C++ API on its own OpenMP threads: with the weights as lightloop
/// keeps them, which the kernel packs into its layout on every call, against
/// weights packed beforehand, and that packing as a pass of its own. Whether
/// keeping the bf16 copy packed would pay. The label names the kernel and
/// the packed layout's inner blocks (16a64b2a: pairs of inputs interleaved,
/// 64 outputs and 16 input pairs a block).
template <weights_way Way>
void bm_forward_weights(benchmark::State& state) {
    if (!detail::onednn::bf16_matmul_available()) {
        state.SkipWithError("oneDNN has no bf16 matmul on this CPU");
        return;
    }
    using tag = dnnl::memory::format_tag;
    using dt = dnnl::memory::data_type;
    const dnnl::memory::dim m = 128;
    const dnnl::memory::dim in = state.range(0);
    const dnnl::memory::dim out = state.range(1);
    dnnl::engine engine(dnnl::engine::kind::cpu, 0);
    dnnl::stream stream(engine);
    const dnnl::memory::desc x_md({m, in}, dt::bf16, tag::ab);
    const dnnl::memory::desc plain_md({in, out}, dt::bf16, tag::ba); // W^T, W row-major
    const dnnl::memory::desc y_md({m, out}, dt::f32, tag::ab);
    const dnnl::memory::desc w_md =
      Way == weights_way::plain ? plain_md : dnnl::memory::desc({in, out}, dt::bf16, tag::any);
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(x_md, w_md, y_md), engine);
    const dnnl::matmul product(pd);
    dnnl::memory x(x_md, engine);
    dnnl::memory y(y_md, engine);
    dnnl::memory plain(plain_md, engine);
    dnnl::memory packed(pd.weights_desc(), engine);
    const auto fill = [](dnnl::memory& mem, std::uint16_t bits) {
        auto* p = static_cast<std::uint16_t*>(mem.get_data_handle());
        std::fill(p, p + mem.get_desc().get_size() / sizeof(std::uint16_t), bits);
    };
    fill(x, 0x3f00);     // 0.5
    fill(plain, 0x3c23); // about 0.01
    const dnnl::reorder pack(plain, packed);
    pack.execute(stream, plain, packed);
    stream.wait();
    const auto& blocking = pd.weights_desc().data.format_desc.blocking;
    std::string layout;
    for (int i = 0; i < blocking.inner_nblks; ++i) {
        layout += std::to_string(blocking.inner_blks[i]) +
                  static_cast<char>('a' + static_cast<int>(blocking.inner_idxs[i]));
    }
    state.SetLabel(std::string(pd.impl_info_str()) +
                   (Way == weights_way::plain ? " weights plain" : " weights packed " + layout));
    const std::unordered_map<int, dnnl::memory> arguments{
      {DNNL_ARG_SRC, x},
      {DNNL_ARG_WEIGHTS, Way == weights_way::plain ? plain : packed},
      {DNNL_ARG_DST, y}};
    for (auto _ : state) {
        if constexpr (Way == weights_way::pack) {
            pack.execute(stream, plain, packed);
        } else {
            product.execute(stream, arguments);
        }
        stream.wait();
    }
    if constexpr (Way != weights_way::pack) {
        state.counters["GFLOP/s"] = benchmark::Counter(
          2.0 * static_cast<double>(m * in * out) * static_cast<double>(state.iterations()),
          benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
    }
}

/// The same forward product through lightloop (pieces on its team):
/// onednn_gemm with W as the layers keep its copy (plain), or
/// onednn_gemm_packed with W packed beforehand in the layout oneDNN asks for
/// (onednn_packed_weights_layout; core/bf16_packing.hpp). Below, the
/// conversion of fp32 weights into either copy, as a pass of its own.
template <bool Packed>
void bm_forward_packed(benchmark::State& state) {
    const std::size_t m = 128;
    const auto in = static_cast<std::size_t>(state.range(0));
    const auto out = static_cast<std::size_t>(state.range(1));
    const auto layout = onednn_packed_weights_layout(m, out, in);
    if (!layout) {
        state.SkipWithError("oneDNN offers no packed layout for bf16 weights on this CPU");
        return;
    }
    const std::vector<float> w(out * in, 0.01f);
    std::vector<bf16> x(m * in, to_bf16(0.5f));
    std::vector<bf16> plain(w.size());
    std::vector<bf16> packed(layout->size);
    convert_to_bf16(w.data(), plain.data(), w.size());
    convert_to_packed_bf16(*layout, w.data(), packed.data());
    std::vector<float> y(m * out);
    for (auto _ : state) {
        if constexpr (Packed) {
            onednn_gemm_packed(m, 1.0f, x.data(), *layout, packed.data(), 0.0f, y.data());
        } else {
            onednn_gemm(transpose::no, transpose::yes, m, out, in, 1.0f, x.data(), in, plain.data(),
                        in, 0.0f, y.data(), out);
        }
        benchmark::ClobberMemory();
    }
    state.counters["GFLOP/s"] = benchmark::Counter(
      2.0 * static_cast<double>(m * in * out) * static_cast<double>(state.iterations()),
      benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
}

/// fp32 weights (out x in) rounded into their bf16 copy on the team: plain
/// (the pass a layer runs when its weights changed outside the optimizer),
/// or packed (convert_to_packed_bf16).
template <bool Packed>
void bm_convert_weights(benchmark::State& state) {
    const auto in = static_cast<std::size_t>(state.range(0));
    const auto out = static_cast<std::size_t>(state.range(1));
    const auto layout = onednn_packed_weights_layout(128, out, in);
    if (Packed && !layout) {
        state.SkipWithError("oneDNN offers no packed layout for bf16 weights on this CPU");
        return;
    }
    const std::vector<float> w(out * in, 0.01f);
    std::vector<bf16> copy(Packed ? layout->size : w.size());
    for (auto _ : state) {
        if constexpr (Packed) {
            convert_to_packed_bf16(*layout, w.data(), copy.data());
        } else {
            detail::convert_on_team(w.data(), copy.data(), w.size());
        }
        benchmark::ClobberMemory();
    }
}
#endif

/// Both convolutions, each pass.
void conv_shapes(benchmark::internal::Benchmark* b) {
    b->ArgNames({"conv", "pass"});
    for (int conv = 0; conv < 2; ++conv) {
        for (int pass = 0; pass < 3; ++pass) {
            b->Args({conv, pass});
        }
    }
}

struct momentum_sgd : sgd<float> {
    momentum_sgd()
      : sgd<float>({.learning_rate = 0.01, .momentum = 0.9}) {}
};

} // namespace

BENCHMARK(bm_gemm<gemm_way::lightloop>)->Apply(step_gemm_shapes)->UseRealTime();
BENCHMARK(bm_gemm<gemm_way::bf16>)->Apply(step_gemm_shapes)->UseRealTime();
#if defined(LIGHTLOOP_WITH_ONEDNN)
BENCHMARK(bm_gemm<gemm_way::onednn_fp32>)->Apply(step_gemm_shapes)->UseRealTime();
#endif
BENCHMARK(bm_conv<conv_way::conv2d_fp32>)->Apply(conv_shapes)->UseRealTime();
BENCHMARK(bm_conv<conv_way::conv2d_bf16>)->Apply(conv_shapes)->UseRealTime();
#if defined(LIGHTLOOP_WITH_ONEDNN)
BENCHMARK(bm_conv<conv_way::onednn_fp32>)->Apply(conv_shapes)->UseRealTime();
BENCHMARK(bm_conv<conv_way::onednn_bf16>)->Apply(conv_shapes)->UseRealTime();
BENCHMARK(bm_conv<conv_way::onednn_bf16_primitives>)->Apply(conv_shapes)->UseRealTime();
BENCHMARK(bm_forward_weights<weights_way::plain>)->Apply(hidden_layer_shapes)->UseRealTime();
BENCHMARK(bm_forward_weights<weights_way::packed>)->Apply(hidden_layer_shapes)->UseRealTime();
BENCHMARK(bm_forward_weights<weights_way::pack>)->Apply(hidden_layer_shapes)->UseRealTime();
BENCHMARK(bm_forward_packed<false>)->Apply(hidden_layer_shapes)->UseRealTime();
BENCHMARK(bm_forward_packed<true>)->Apply(hidden_layer_shapes)->UseRealTime();
BENCHMARK(bm_convert_weights<false>)->Apply(hidden_layer_shapes)->UseRealTime();
BENCHMARK(bm_convert_weights<true>)->Apply(hidden_layer_shapes)->UseRealTime();
#endif
BENCHMARK(bm_update_with_copy)->ArgName("fused")->Arg(0)->Arg(1)->UseRealTime();
BENCHMARK(bm_gemm_beside_update)->ArgName("side_by_side")->Arg(0)->Arg(1)->UseRealTime();
BENCHMARK(bm_dense_forward_fused<identity>)->Arg(128)->UseRealTime();
BENCHMARK(bm_dense_forward_fused<tanh_act>)->Arg(128)->UseRealTime();
BENCHMARK(bm_dense_forward_fused<sigmoid>)->Arg(128)->UseRealTime();
BENCHMARK(bm_dense_forward_fused<relu>)->Arg(128)->UseRealTime();
BENCHMARK(bm_dense_forward_fused<leaky_relu>)->Arg(128)->UseRealTime();
BENCHMARK(bm_tanh_derivative)->Arg(128)->UseRealTime();
BENCHMARK(bm_softmax_cross_entropy)->Arg(128)->UseRealTime();
BENCHMARK(bm_optimizer_update<momentum_sgd>)->UseRealTime();
BENCHMARK(bm_optimizer_update<adam<float>>)->UseRealTime();
BENCHMARK(bm_projection<dense_gaussian>)->Arg(128)->UseRealTime();
BENCHMARK(bm_projection<optical<holographic_readout<>, camera>>)->Arg(128)->UseRealTime();
BENCHMARK(bm_projection<optical<holographic_readout<>, ideal_camera>>)->Arg(128)->UseRealTime();
BENCHMARK(bm_projection<optical<intensity_readout, camera>>)->Arg(128)->UseRealTime();
BENCHMARK(bm_train_step<backprop>)->Arg(128)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(bm_train_step<feedback_alignment>)
  ->Arg(128)
  ->Unit(benchmark::kMillisecond)
  ->UseRealTime();
BENCHMARK(bm_train_step<dfa<dense_gaussian>>)
  ->Arg(128)
  ->Unit(benchmark::kMillisecond)
  ->UseRealTime();
BENCHMARK(bm_train_step<dfa<optical<>>>)->Arg(128)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(bm_train_step<shallow>)->Arg(128)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(bm_train_step<backprop, mixed_bf16>)
  ->Arg(128)
  ->Unit(benchmark::kMillisecond)
  ->UseRealTime();
BENCHMARK(bm_train_step<dfa<dense_gaussian>, mixed_bf16>)
  ->Arg(128)
  ->Unit(benchmark::kMillisecond)
  ->UseRealTime();
BENCHMARK(bm_train_step<dfa<optical<>>, mixed_bf16>)
  ->Arg(128)
  ->Unit(benchmark::kMillisecond)
  ->UseRealTime();
// Last: OpenBLAS's workers spin for a while after its own threaded calls.
BENCHMARK(bm_gemm<gemm_way::openblas>)->Apply(step_gemm_shapes)->UseRealTime();

int main(int argc, char** argv) {
    lightloop::ensure_fast_blas(argv);
    CLI::App app{"Micro benchmarks of a training step's parts (GEMMs, projections, optimizer "
                 "updates, whole steps) with Google Benchmark.",
                 "bench_step"};
    app.allow_extras();
    app.footer("Google Benchmark's own flags pass through in their --benchmark_NAME=VALUE form, "
               "e.g. --benchmark_filter=REGEX, --benchmark_format=json, "
               "--benchmark_min_time=SECONDS.");
    return lightloop::programs::run(app, argc, argv, [&] {
        std::vector<std::string> flags = app.remaining();
        std::vector<char*> args{argv[0]};
        for (auto& flag : flags) {
            if (flag.rfind("--benchmark_", 0) != 0) {
                throw lightloop::config_error("unknown flag " + flag + " (see --help)");
            }
            args.push_back(flag.data());
        }
        int count = static_cast<int>(args.size());
        args.push_back(nullptr);
        const auto blas = lightloop::blas_info();
        benchmark::AddCustomContext("openblas_core", blas.core);
        benchmark::AddCustomContext("bf16_products", lightloop::bf16_dispatch());
        benchmark::Initialize(&count, args.data());
        if (benchmark::ReportUnrecognizedArguments(count, args.data())) {
            return lightloop::programs::bad_input;
        }
        const std::size_t ran = benchmark::RunSpecifiedBenchmarks();
        benchmark::Shutdown();
        if (ran == 0) { // Google Benchmark said so, and would exit 0
            throw lightloop::config_error(
              "no benchmark matches the filter (--benchmark_list_tests=true lists them)");
        }
        return 0;
    });
}
