// End-to-end training throughput, per model, method, batch size and thread
// count, against the machine's SGEMM roofline measured in the same run, and
// against PyTorch when its figures are given (torch_throughput.py: PyTorch's
// best thread layout for the same number of cores). The models, both tanh
// and SGD momentum 0.9:
//   mlp  the paper's network, 784-1024-1024-10;
//   cnn  conv 1->32 5x5 pad 2, max-pool 2; conv 32->64 5x5 pad 2, max-pool 2;
//        dense 3136->1024; dense 1024->10.
//
//   throughput [--models mlp,cnn] [--batches 32,128,512] [--threads 1,2]
//              [--precision fp32,bf16] [--seconds 1.5] [--rounds 5]
//              [--torch FILE] [--json FILE]
//              [--methods bp,fa,dfa,holographic,intensity]
//
// --precision bf16 trains the same network with dense<..., mixed_bf16> and
// conv2d<..., mixed_bf16> layers (core/precision.hpp): bf16 GEMM operands on
// the default bf16 backend (oneDNN where built with it), fp32 master weights
// and element-wise work. Its rows compare with the fp32 row of the same method (vs fp32) and
// with PyTorch's two bf16 modes (torch_throughput.py --precision bf16).
//
// For each (batch, threads) the methods take turns: `rounds` rounds in which
// every method steps for seconds/rounds and every GEMM shape is timed for
// 0.2 s/rounds. The figures are medians over all of a method's steps, so a
// drift of the shared machine during the run reaches every method alike and
// the ratios between them (vs dfa, roofline) hold.
//
// Roofline: each method's step is a known list of GEMMs (forward, weight
// gradients, and backprop's or feedback alignment's backward products, or
// DFA's projection; the optical devices add none: for the 10 error inputs
// they sum the medium's columns instead of a GEMM). A convolution's products
// count as the one GEMM over the whole batch's columns that its chunks make
// up (conv2d.hpp), and are also timed as the conv2d layer's own pass over the
// batch alone (oneDNN's convolution primitives beat the GEMM). Each GEMM
// shape is timed alone at the same thread count, as OpenBLAS's own
// threaded cblas_sgemm, as lightloop's gemm (one-thread OpenBLAS calls on
// lightloop's team) and, where oneDNN is built in, as oneDNN's fp32 product
// (what float layers then run on), and the fastest counts; the roofline time of a step is
// the sum of its GEMMs' times, and the report gives roofline / measured: the
// fraction of the machine's GEMM speed the whole step reaches. A bf16
// row's GEMMs are timed as bf16 products on the same backend as its step.
//
// The memory side: the bytes the step's element-wise passes and its
// optimizer update move (step_bytes below: a count of the loads and stores
// of each pass, GEMM operands and results aside), at the bandwidth of a
// triad over arrays far larger than the caches, measured in the same run.
// The roofline is the larger of the GEMM time and that memory time; the
// table says which binds (bound) and the fraction is against it. The JSON
// also gives sequential_roofline_fraction, against their sum: the step runs
// its GEMMs and its memory-bound passes one after the other.
//
// Peak: the step's nominal GEMM flops per second over the machine's fp32
// multiply-add peak at the same thread count, measured in the same run
// (fma_peak_timer: independent SIMD FMA chains, nothing loaded). No step
// runs above 100%; a target that needs more is out of the machine's reach.
#include <benchmark/benchmark.h>

#include <lightloop/lightloop.hpp>

#include "cli.hpp"
#include "cnn_convolutions.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace lightloop;
using clock_type = std::chrono::steady_clock;

using bench::conv_pass;

struct gemm_shape {
    transpose ta;
    transpose tb;
    std::size_t m, n, k;
    bool bf16 = false;               ///< operands in bf16 (on the default bf16 backend)
    std::size_t conv = 0;            ///< which of bench::cnn_convolutions, with a pass
    std::optional<conv_pass> pass{}; ///< the convolution pass it stands for (cnn_step_gemms)
    double flops() const { return 2.0 * static_cast<double>(m * n * k); }
    bool operator<(const gemm_shape& o) const {
        return std::tie(ta, tb, m, n, k, bf16, conv, pass) <
               std::tie(o.ta, o.tb, o.m, o.n, o.k, o.bf16, o.conv, o.pass);
    }
};

constexpr std::size_t widths[] = {784, 1024, 1024, 10};

/// The GEMMs of one training step of `method` at batch n on the paper's
/// network (see dense.hpp, backprop.hpp, feedback_alignment.hpp, direct.hpp,
/// optical/transmission_matrix.hpp).
/// In bf16 (`bf16`) the layers' products are bf16 ones; the projections
/// and feedback alignment's random-matrix products stay fp32.
std::vector<gemm_shape> mlp_step_gemms(const std::string& method, std::size_t n,
                                       std::size_t optical_frames, bool bf16) {
    std::vector<gemm_shape> g;
    for (int i = 0; i < 3; ++i) {
        const std::size_t in = widths[i];
        const std::size_t out = widths[i + 1];
        g.push_back({transpose::no, transpose::yes, n, out, in, bf16}); // a = h W^T
        if (method != "shallow" || i == 2) {
            g.push_back({transpose::yes, transpose::no, out, in, n, bf16}); // dW = delta^T h
        }
    }
    if (method == "bp") {
        g.push_back({transpose::no, transpose::no, n, 1024, 10, bf16});   // delta_2 = delta_3 W_3
        g.push_back({transpose::no, transpose::no, n, 1024, 1024, bf16}); // delta_1 = delta_2 W_2
    } else if (method == "fa") {
        g.push_back({transpose::no, transpose::yes, n, 1024, 10});
        g.push_back({transpose::no, transpose::yes, n, 1024, 1024});
    } else if (method == "dfa") {
        g.push_back({transpose::no, transpose::yes, n, 2048, 10}); // e B^T
    } else if ((method == "holographic" || method == "intensity") &&
               widths[3] > transmission_matrix::direct_max_inputs) {
        // (With 10 inputs the medium sums R's columns instead: no GEMM.)
        g.push_back({transpose::no, transpose::yes, optical_frames, 2048, 10}); // Re R x
        g.push_back({transpose::no, transpose::yes, optical_frames, 2048, 10}); // Im R x
    }
    return g;
}

constexpr std::size_t cnn_dense[] = {3136, 1024, 10};
/// What DFA projects into: both convolutions' maps and the hidden dense layer.
constexpr std::size_t cnn_projection = 32 * 28 * 28 + 64 * 14 * 14 + 1024;

/// The same for the CNN: a convolution counted as the GEMMs of its im2col
/// form over the whole batch (conv2d.hpp; the machine's GEMM speed for the
/// same flops, which oneDNN's convolution primitives can beat): forward
/// W · cols, weight gradient D · cols^T and, for backprop above the first,
/// backward data W^T · D. In bf16 the layers'
/// products are bf16 ones (a convolution's backward data through feedback
/// alignment's filters too); the projections and feedback alignment's dense
/// products stay fp32.
std::vector<gemm_shape> cnn_step_gemms(const std::string& method, std::size_t n,
                                       std::size_t optical_frames, bool bf16) {
    std::vector<gemm_shape> g;
    for (std::size_t i = 0; i < 2; ++i) {
        const bench::cnn_convolution c = bench::cnn_convolutions[i];
        const std::size_t taps = c.in * 25;
        const std::size_t columns = n * c.positions();
        g.push_back(
          {transpose::no, transpose::no, c.out, columns, taps, bf16, i, conv_pass::forward});
        if (method != "shallow") {
            g.push_back({transpose::no, transpose::yes, c.out, taps, columns, bf16, i,
                         conv_pass::weight_gradient});
        }
        if ((method == "bp" || method == "fa") && i > 0) {
            g.push_back({transpose::yes, transpose::no, taps, columns, c.out, bf16, i,
                         conv_pass::backward_data});
        }
    }
    for (std::size_t i = 0; i < 2; ++i) {
        const std::size_t in = cnn_dense[i];
        const std::size_t out = cnn_dense[i + 1];
        g.push_back({transpose::no, transpose::yes, n, out, in, bf16});
        if (method != "shallow" || i == 1) {
            g.push_back({transpose::yes, transpose::no, out, in, n, bf16});
        }
    }
    if (method == "bp" || method == "fa") {
        const bool layer_products = bf16 && method == "bp";
        g.push_back({transpose::no, transpose::no, n, 1024, 10, layer_products});
        g.push_back({transpose::no, transpose::no, n, 3136, 1024, layer_products});
    } else if (method == "dfa") {
        g.push_back({transpose::no, transpose::yes, n, cnn_projection, 10});
    } else if ((method == "holographic" || method == "intensity") &&
               cnn_dense[2] > transmission_matrix::direct_max_inputs) {
        g.push_back({transpose::no, transpose::yes, optical_frames, cnn_projection, 10});
        g.push_back({transpose::no, transpose::yes, optical_frames, cnn_projection, 10});
    }
    return g;
}

std::vector<gemm_shape> step_gemms(const std::string& model, const std::string& method,
                                   std::size_t n, std::size_t optical_frames, bool bf16) {
    return model == "cnn" ? cnn_step_gemms(method, n, optical_frames, bf16)
                          : mlp_step_gemms(method, n, optical_frames, bf16);
}

double median(std::vector<double> times);

/// The bytes one step of the MLP moves outside its GEMMs, counted per pass
/// from the code (dense.hpp, affine.hpp, activations.hpp, sgd.hpp): the
/// momentum update reads w, g, v and writes w, v (20 bytes a parameter; a
/// bf16 layer also writes W's bf16 copy, 2 bytes); the forward bias and
/// activation pass reads a and writes a and h (12 bytes an output); a layer
/// that learns scales its signal by f' (reads the signal and h, writes
/// delta: 12), sums the bias gradient (reads delta: 4) and bounds its
/// gradient (reads its input: 4 an input); a bf16 layer converts its input
/// and its delta (reads 4, writes 2). A lower bound: smaller passes (the
/// loss, finite checks on 10 columns) are left out. The CNN has no count.
double step_bytes(const std::string& model, const std::string& method, bool bf16, std::size_t n) {
    if (model != "mlp") {
        return 0.0;
    }
    const auto nd = static_cast<double>(n);
    double bytes = 0.0;
    for (int i = 0; i < 3; ++i) {
        const auto in = static_cast<double>(widths[i]);
        const auto out = static_cast<double>(widths[i + 1]);
        bytes += nd * out * 12.0 + (bf16 ? nd * in * 6.0 : 0.0);
        const bool learns = method != "shallow" || i == 2;
        if (learns) {
            bytes += (in * out + out) * 20.0 + (bf16 ? in * out * 2.0 : 0.0);
            bytes += nd * out * 16.0 + nd * in * 4.0 + (bf16 ? nd * out * 6.0 : 0.0);
        }
    }
    return bytes;
}

/// Bytes per second of a triad a = b + s c over three arrays of 32 MiB each
/// on lightloop's team: the rate the element-wise passes can move data at.
class bandwidth_timer {
public:
    bandwidth_timer()
      : a_(words, 0.0f)
      , b_(words, 1.0f)
      , c_(words, 2.0f) {
        call();
    }
    void call() {
        float* a = a_.data();
        const float* b = b_.data();
        const float* c = c_.data();
        parallel_for_ranges(words, elementwise_grain, [&](std::size_t first, std::size_t end) {
            for (std::size_t i = first; i < end; ++i) {
                a[i] = b[i] + 0.5f * c[i];
            }
        });
        benchmark::DoNotOptimize(a_.data());
    }
    double bytes_per_second() const {
        return 3.0 * sizeof(float) * static_cast<double>(words) / median(times);
    }
    std::vector<double> times;

private:
    static constexpr std::size_t words = std::size_t{8} << 20;
    std::vector<float> a_, b_, c_;
};

/// The machine's multiply-add peak at the cell's thread count: each thread
/// of lightloop's team runs 12 independent chains of SIMD fused multiply-adds
/// (enough to cover the instruction's latency on two pipes), nothing loaded
/// or stored. No step can run faster than its nominal flops at this rate.
class fma_peak_timer {
public:
    fma_peak_timer() { call(); }
    void call() {
        const std::size_t threads = parallel_threads();
        shared_team().run(threads, [](std::size_t task, std::size_t) {
            using batch = xsimd::batch<float>;
            batch chains[chain_count];
            for (std::size_t i = 0; i < chain_count; ++i) {
                chains[i] = batch(1.0f + static_cast<float>(i + task) * 1e-7f);
            }
            const batch scale(0.9999999f);
            const batch shift(1e-7f);
            for (std::size_t k = 0; k < rounds; ++k) {
                for (auto& c : chains) {
                    c = xsimd::fma(c, scale, shift);
                }
            }
            float sum = 0;
            for (const auto& c : chains) {
                sum += xsimd::hadd(c);
            }
            benchmark::DoNotOptimize(sum);
        });
    }
    double flops_per_second() const {
        return static_cast<double>(parallel_threads()) * 2.0 * rounds * chain_count *
               xsimd::batch<float>::size / median(times);
    }
    std::vector<double> times;

private:
    static constexpr std::size_t chain_count = 12;
    static constexpr std::size_t rounds = std::size_t{1} << 18;
};

/// Appends the time of each call of `call` for `budget` seconds (at least
/// three calls) to `times`.
template <class F>
void time_calls(F&& call, double budget, std::vector<double>& times) {
    const auto start = clock_type::now();
    std::size_t calls = 0;
    do {
        const auto before = clock_type::now();
        call();
        times.push_back(std::chrono::duration<double>(clock_type::now() - before).count());
        ++calls;
    } while (std::chrono::duration<double>(clock_type::now() - start).count() < budget ||
             calls < 3);
}

/// The median, not the mean: this machine is shared, and a neighbour's burst
/// should not move the figure.
double median(std::vector<double> times) {
    std::nth_element(times.begin(), times.begin() + static_cast<std::ptrdiff_t>(times.size() / 2),
                     times.end());
    return times[times.size() / 2];
}

/// One GEMM shape with its operands, timed alone two ways: OpenBLAS's own
/// cblas_sgemm on its own threads, and lightloop's gemm (the same call in
/// pieces on lightloop's team). The roofline takes the faster. A bf16 shape
/// is timed as the default bf16 backend's product (on lightloop's team) only.
class gemm_timer {
public:
    explicit gemm_timer(const gemm_shape& s)
      : s_(s)
      , a_(s.bf16 ? 0 : a_size(), 0.5f)
      , b_(s.bf16 ? 0 : b_size(), 0.25f)
      , a16_(s.bf16 ? a_size() : 0)
      , b16_(s.bf16 ? b_size() : 0)
      , c_(s.m * s.n, 0.0f) {
        const std::vector<float> a(s.bf16 ? a_size() : 0, 0.5f);
        const std::vector<float> b(s.bf16 ? b_size() : 0, 0.25f);
        convert_to_bf16(a.data(), a16_.data(), a.size());
        convert_to_bf16(b.data(), b16_.data(), b.size());
        call_openblas();
        call_lightloop();
        if (s.pass) {
            // The batch: the columns of the GEMM over the positions of a map.
            const std::size_t columns = *s.pass == conv_pass::weight_gradient ? s.k : s.n;
            const std::size_t batch = columns / bench::cnn_convolutions[s.conv].positions();
            layer_pass_ = s.bf16 ? bench::conv_layer_pass<mixed_bf16>(s.conv, *s.pass, batch)
                                 : bench::conv_layer_pass<float>(s.conv, *s.pass, batch);
            layer_pass_();
        }
    }
    void call_openblas() {
        if (s_.bf16) {
            call_lightloop();
            return;
        }
        detail::blas_call(s_.ta, s_.tb, s_.m, s_.n, s_.k, 1.0f, a_.data(), lda(), b_.data(), ldb(),
                          0.0f, c_.data(), s_.n);
        benchmark::DoNotOptimize(c_.data());
    }
    void call_lightloop() {
        if (s_.bf16) {
            mixed_bf16::backend::product(s_.ta, s_.tb, s_.m, s_.n, s_.k, 1.0f, a16_.data(), lda(),
                                         b16_.data(), ldb(), 0.0f, c_.data(), s_.n);
        } else {
            gemm(s_.ta, s_.tb, s_.m, s_.n, s_.k, 1.0f, a_.data(), lda(), b_.data(), ldb(), 0.0f,
                 c_.data(), s_.n);
        }
        benchmark::DoNotOptimize(c_.data());
    }
    /// oneDNN's fp32 product (pieces on lightloop's team), the third way for
    /// an fp32 shape where oneDNN is built in (float layers run on it then).
    void call_onednn() {
#if defined(LIGHTLOOP_WITH_ONEDNN)
        if (!s_.bf16) {
            onednn_gemm(s_.ta, s_.tb, s_.m, s_.n, s_.k, 1.0f, a_.data(), lda(), b_.data(), ldb(),
                        0.0f, c_.data(), s_.n);
            benchmark::DoNotOptimize(c_.data());
            return;
        }
#endif
        call_lightloop();
    }
    /// For a convolution's GEMM, the fourth way: the conv2d layer's own pass
    /// over the batch, alone (oneDNN's convolution primitives where built
    /// in, reorders included; im2col GEMMs otherwise).
    bool has_layer_pass() const {
        return static_cast<bool>(layer_pass_);
    }
    void call_layer() {
        layer_pass_();
    }
    /// Median seconds of the fastest way.
    double seconds() const {
        double best = std::min(median(openblas_times), median(lightloop_times));
        for (const auto* times : {&onednn_times, &layer_times}) {
            if (!times->empty()) {
                best = std::min(best, median(*times));
            }
        }
        return best;
    }
    std::vector<double> openblas_times;
    std::vector<double> lightloop_times;
    std::vector<double> onednn_times;
    std::vector<double> layer_times;

private:
    std::function<void()> layer_pass_;
    std::size_t a_size() const {
        return s_.m * s_.k;
    }
    std::size_t b_size() const {
        return s_.k * s_.n;
    }
    std::size_t lda() const {
        return s_.ta == transpose::yes ? s_.m : s_.k;
    }
    std::size_t ldb() const {
        return s_.tb == transpose::yes ? s_.k : s_.n;
    }
    gemm_shape s_;
    std::vector<float> a_, b_;
    std::vector<mixed_bf16::operand_type> a16_, b16_;
    std::vector<float> c_;
};

/// One method's network, batch and optimizer, stepped on demand: the methods
/// of a (batch, threads) cell take turns, so the machine's drift over the run
/// reaches them all alike and their ratios hold.
struct runner {
    std::string method;
    std::string precision; ///< "fp32" or "bf16"
    std::function<void()> step;
    std::function<double()> frames_per_sample; // optical exposures' patterns per sample
    std::vector<double> times;
};

template <class P, class Feedback>
auto make_mlp(Feedback feedback) {
    return network<Feedback, softmax_cross_entropy, dense<tanh_act, P>, dense<tanh_act, P>,
                   dense<identity, P>>(
      std::move(feedback), softmax_cross_entropy{}, 1, dense<tanh_act, P>{784, 1024},
      dense<tanh_act, P>{1024, 1024}, dense<identity, P>{1024, 10});
}

template <class P, class Feedback>
auto make_cnn(Feedback feedback) {
    return network<Feedback, softmax_cross_entropy, conv2d<tanh_act, P>, max_pool2d<>,
                   conv2d<tanh_act, P>, max_pool2d<>, flatten<>, dense<tanh_act, P>,
                   dense<identity, P>>(
      std::move(feedback), softmax_cross_entropy{}, 1,
      conv2d<tanh_act, P>({1, 28, 28}, {.out_channels = 32, .kernel = 5, .padding = 2}),
      max_pool2d<>({32, 28, 28}, 2),
      conv2d<tanh_act, P>({32, 14, 14}, {.out_channels = 64, .kernel = 5, .padding = 2}),
      max_pool2d<>({64, 14, 14}, 2), flatten<>({64, 7, 7}), dense<tanh_act, P>{3136, 1024},
      dense<identity, P>{1024, 10});
}

template <class Net>
runner make_runner(const std::string& method, const std::string& precision, Net net,
                   std::size_t batch) {
    struct state {
        Net net;
        matrix<float> x;
        matrix<float> y;
        sgd<float> opt{{.learning_rate = 0.01, .momentum = 0.9}};
    };
    auto s =
      std::make_shared<state>(state{std::move(net), matrix<float>::from_shape({batch, 784}), {}});
    rng gen(2);
    for (auto& v : s->x) {
        v = static_cast<float>(gen.uniform());
    }
    std::vector<int> labels(batch);
    for (std::size_t i = 0; i < batch; ++i) {
        labels[i] = static_cast<int>(gen.below(10));
    }
    s->y = one_hot<float>(std::span<const int>(labels), 10);
    // The optical methods' patterns per sample; 0 for the others.
    const auto frames_per_sample = [s] {
        return visit_method(s->net.feedback(), [](auto& fb) -> double {
            if constexpr (requires { fb.device().statistics(); }) {
                const auto stats = fb.device().statistics();
                return static_cast<double>(stats.patterns) / static_cast<double>(stats.projections);
            } else {
                return 0.0;
            }
        });
    };
    runner r{
      method, precision, [s] { s->net.train_step(s->x, s->y, s->opt); }, frames_per_sample, {}};
    for (int i = 0; i < 3; ++i) { // warm-up: buffers, calibration, caches
        r.step();
    }
    return r;
}

/// Every method the benchmark times, as one type: the network and its step
/// are compiled once for each model and precision, not once for each method
/// as well, and each step reaches the held method's own backward pass
/// through one std::visit (nanoseconds, against a step's milliseconds).
using method_choice = feedback_choice<backprop, feedback_alignment, dfa<dense_gaussian>,
                                      dfa<optical<>>, dfa<optical<intensity_readout>>, shallow>;

runner make_runner(const std::string& model, const std::string& method,
                   const std::string& precision, method_choice feedback, std::size_t batch) {
    if (model == "cnn") {
        if (precision == "bf16") {
            return make_runner(method, precision, make_cnn<mixed_bf16>(std::move(feedback)), batch);
        }
        return make_runner(method, precision, make_cnn<float>(std::move(feedback)), batch);
    }
    if (precision == "bf16") {
        return make_runner(method, precision, make_mlp<mixed_bf16>(std::move(feedback)), batch);
    }
    return make_runner(method, precision, make_mlp<float>(std::move(feedback)), batch);
}

runner make_runner(const std::string& model, const std::string& method,
                   const std::string& precision, std::size_t batch) {
    if (method == "bp") {
        return make_runner(model, method, precision, backprop{}, batch);
    }
    if (method == "fa") {
        return make_runner(model, method, precision, feedback_alignment{}, batch);
    }
    if (method == "dfa") {
        return make_runner(model, method, precision, dfa<dense_gaussian>{}, batch);
    }
    if (method == "holographic") {
        return make_runner(model, method, precision, dfa<optical<>>{}, batch);
    }
    if (method == "intensity") {
        return make_runner(model, method, precision, dfa<optical<intensity_readout>>{}, batch);
    }
    if (method == "shallow") {
        return make_runner(model, method, precision, shallow{}, batch);
    }
    throw config_error("unknown method " + method);
}

/// PyTorch samples/s by (method, batch, threads), from torch_throughput.py:
/// a row per line, `method batch threads samples_per_second [layout]`, and
/// comments (#). Anything else is refused with its line, so that a wrong file
/// is not read as no figures.
std::map<std::string, double> read_torch(const std::string& path) {
    std::map<std::string, double> out;
    if (path.empty()) {
        return out;
    }
    std::ifstream in(path);
    if (!in) {
        throw data_error(path + ": cannot open");
    }
    std::string line;
    for (std::size_t number = 1; std::getline(in, line); ++number) {
        if (line.find_first_not_of(" \t\r") == std::string::npos || line[0] == '#') {
            continue;
        }
        std::istringstream f(line);
        std::string method;
        long long batch = 0;
        long long threads = 0;
        double rate = 0;
        if (!(f >> method >> batch >> threads >> rate) || batch <= 0 || threads <= 0 ||
            !std::isfinite(rate) || rate <= 0.0) {
            throw data_error(path + " line " + std::to_string(number) +
                             ": expected 'method batch threads samples_per_second' with "
                             "positive numbers (torch_throughput.py's output), got '" +
                             line.substr(0, 80) + "'");
        }
        out[method + "/" + std::to_string(batch) + "/" + std::to_string(threads)] = rate;
    }
    if (out.empty()) {
        throw data_error(path + ": no rows (torch_throughput.py writes one per method, batch and "
                                "thread count)");
    }
    return out;
}

/// The mixed-precision targets, read off one (model, batch, threads) setting's
/// rows: the paper's network's bf16 dense DFA against its roofline, fp32 dense
/// DFA and PyTorch's bf16-parameter backprop, and holographic bf16 DFA against
/// dense bf16 DFA.
struct bf16_targets {
    std::string setting;
    double roofline = std::nan("");
    double vs_fp32 = std::nan("");
    double vs_torch_bf16_bp = std::nan("");
    double holographic_vs_dense = std::nan("");
};

/// Prints each target's figure, its bound and whether this run met it. The
/// 2x and 1.5x bounds are for bf16 products on AMX: judged where oneDNN ran
/// them there (`amx`; `products` names the backend's instruction set), reported against
/// the bounds and not judged elsewhere - a CPU without AMX, or one with it
/// whose products ran on something else (ONEDNN_MAX_CPU_ISA, or a kernel
/// that does not grant the AMX state).
void print_targets(const std::vector<bf16_targets>& all, cpu_features cpu,
                   const std::string& products, bool amx) {
    if (all.empty()) {
        return;
    }
    std::printf("\ntargets of mixed precision (judged on the mlp at batch 128 on 2 threads, "
                "each a ratio within this run; this CPU: %s; bf16 products on %s):\n",
                matrix_features_text(cpu).c_str(), products.c_str());
    const std::string why = cpu.amx_bf16 ? " (not judged: bf16 products ran on " + products + ")"
                                         : std::string(" (not judged: no AMX)");
    // judged: false for a bound meant for AMX where the products did not run
    // on it. A figure is missing when its rows did not run (the holographic
    // method, or PyTorch's figures without --torch).
    const auto line = [&why](const char* what, double value, double bound, bool judged) {
        if (!std::isfinite(value)) {
            std::printf("  %-42s      -  >= %.2f%-8s  not measured\n", what, bound,
                        judged ? "" : " on AMX");
            return;
        }
        const bool above = value >= bound;
        const std::string verdict =
          judged ? (above ? "met" : "not met") : (above ? "above" : "below") + why;
        std::printf("  %-42s %6.2f  >= %.2f%-8s  %s\n", what, value, bound, judged ? "" : " on AMX",
                    verdict.c_str());
    };
    for (const auto& t : all) {
        std::printf("%s\n", t.setting.c_str());
        line("bf16 dense DFA, fraction of its roofline", t.roofline, 0.70, true);
        line("bf16 dense DFA / fp32 dense DFA", t.vs_fp32, 2.0, amx);
        line("bf16 dense DFA / PyTorch bf16 backprop", t.vs_torch_bf16_bp, 1.5, amx);
        line("holographic bf16 DFA / dense bf16 DFA", t.holographic_vs_dense, 0.85, true);
    }
}

struct options {
    std::vector<std::string> models{"mlp"};
    std::vector<std::size_t> batches{32, 128, 512};
    std::vector<int> threads{1, 2};
    std::vector<std::string> methods{"bp", "fa", "dfa", "holographic", "intensity"};
    std::vector<std::string> precisions{"fp32"};
    std::string torch_path;
    std::string json_path = "throughput.json";
    double budget = 1.5;
    double gemm_budget = 0.2;
    int rounds = 5;
};

int measure(const options& o);

} // namespace

int main(int argc, char** argv) {
    ensure_fast_blas(argv);
    using lightloop::programs::positive;
    options o;
    CLI::App app{"Training throughput of the paper's network and a CNN per method, batch and "
                 "thread count, "
                 "against the SGEMM roofline measured in the same run and, with --torch, "
                 "against PyTorch.",
                 "throughput"};
    app.add_option("--models", o.models, "comma-separated models: mlp (the paper's), cnn")
      ->delimiter(',')
      ->check(CLI::IsMember({"mlp", "cnn"}))
      ->capture_default_str();
    app.add_option("--batches", o.batches, "comma-separated batch sizes")
      ->delimiter(',')
      ->check(positive())
      ->capture_default_str();
    app.add_option("--threads", o.threads, "comma-separated thread counts")
      ->delimiter(',')
      ->check(positive())
      ->capture_default_str();
    app.add_option("--methods", o.methods, "comma-separated methods")
      ->delimiter(',')
      ->check(CLI::IsMember({"bp", "fa", "dfa", "holographic", "intensity", "shallow"}))
      ->capture_default_str();
    programs::add_precisions(
      app, o.precisions,
      "comma-separated precisions: fp32, bf16 (mixed: bf16 GEMM operands, fp32 "
      "master weights)");
    app.add_option("--torch", o.torch_path, "PyTorch's figures (torch_throughput.py's output)")
      ->check(CLI::ExistingFile);
    app.add_option("--json", o.json_path, "where the figures are written")->capture_default_str();
    app.add_option("--seconds", o.budget, "stepping time per method and cell")
      ->check(positive())
      ->capture_default_str();
    app.add_option("--rounds", o.rounds, "rounds the methods take turns in")
      ->check(positive())
      ->capture_default_str();
    return lightloop::programs::run(app, argc, argv, [&] { return measure(o); });
}

namespace {

/// A table cell: v printed with `format`, or "-" where the row has no such
/// figure (NaN: no PyTorch row to compare with, no fp32 twin, no peak for
/// bf16 products).
std::string cell(double v, const char* format = "%.2f") {
    if (!std::isfinite(v)) {
        return "-";
    }
    char text[32];
    std::snprintf(text, sizeof text, format, v);
    return text;
}

/// The settings (model, batch, threads) asked for that `torch` has no
/// backprop row for: their rows' PyTorch columns stay empty.
std::vector<std::string> settings_without_torch(const std::map<std::string, double>& torch,
                                                const options& o) {
    std::vector<std::string> missing;
    for (const std::string& model : o.models) {
        // torch_throughput.py names the CNN's rows cnn_bp, cnn_dfa.
        const std::string prefix = model == "cnn" ? "cnn_" : "";
        for (const std::size_t batch : o.batches) {
            for (const int t : o.threads) {
                if (!torch.count(prefix + "bp/" + std::to_string(batch) + "/" +
                                 std::to_string(t))) {
                    missing.push_back(model + ", batch " + std::to_string(batch) + " on " +
                                      std::to_string(t) + (t == 1 ? " thread" : " threads"));
                }
            }
        }
    }
    return missing;
}

int measure(const options& o) {
    const std::string& torch_path = o.torch_path;
    const std::string& json_path = o.json_path;
    const double budget = o.budget;
    const double gemm_budget = o.gemm_budget;
    const int rounds = o.rounds;
    const auto torch = read_torch(torch_path);
    if (!torch.empty()) {
        for (const std::string& setting : settings_without_torch(torch, o)) {
            std::fprintf(stderr,
                         "throughput: %s has no PyTorch rows for %s; their PyTorch "
                         "columns stay empty\n",
                         torch_path.c_str(), setting.c_str());
        }
    }
    // A thread count OpenBLAS cannot run is refused before any measurement,
    // not when its rows come.
    for (const int threads : o.threads) {
        require_blas_threads(threads);
    }
    const auto blas = blas_info();
    std::printf("lightloop %s | OpenBLAS %s | kernel %s | bf16 backend %s: %s\n", version_string,
                blas.config.c_str(), blas.core.c_str(), mixed_bf16::backend::name,
                mixed_bf16::backend::isa().c_str());
    if (std::find(o.precisions.begin(), o.precisions.end(), "bf16") != o.precisions.end()) {
        // In the report, not again on stderr when the first bf16 layer is
        // built.
        warn_about_precision_once<mixed_bf16>(stdout);
    }
    std::printf("mlp: 784-1024-1024-10; cnn: conv 32 5x5, pool, conv 64 5x5, pool, 3136-1024-10;"
                " tanh, SGD momentum 0.9\n\n");
    std::printf("%-5s %-12s %-4s %5s %3s %10s %8s %6s %9s %-6s %9s %9s %7s %7s %7s %7s\n", "model",
                "method", "prec", "batch", "thr", "samples/s", "GFLOP/s", "peak", "roofline",
                "bound", "vs torch", "vs t. bp", "scaled", "vs dfa", "vs bp", "vs fp32");
    std::ofstream json(json_path);
    if (!json) {
        throw data_error(json_path + ": cannot write");
    }
    json << "[\n";
    bool first = true;
    std::vector<bf16_targets> targets;
    for (const std::string& model : o.models) {
        for (const int threads : o.threads) {
            const std::string threads_s = std::to_string(threads);
            set_blas_threads(threads);
            for (const std::size_t batch : o.batches) {
                const std::string batch_s = std::to_string(batch);
                std::vector<runner> runners;
                for (const auto& precision : o.precisions) {
                    for (const auto& method : o.methods) {
                        runners.push_back(make_runner(model, method, precision, batch));
                    }
                }
                // Each method's GEMM shapes (the optical field GEMMs depend on the
                // frames per sample the warm-up saw).
                std::map<gemm_shape, gemm_timer> timers;
                const gemm_shape first_layer{transpose::no, transpose::yes, batch, 1024, 784};
                timers.try_emplace(first_layer, first_layer);
                std::vector<std::vector<gemm_shape>> shapes;
                for (auto& r : runners) {
                    const auto frames = static_cast<std::size_t>(
                      r.frames_per_sample() * static_cast<double>(batch) + 0.5);
                    shapes.push_back(
                      step_gemms(model, r.method, batch, frames, r.precision == "bf16"));
                    for (const auto& g : shapes.back()) {
                        timers.try_emplace(g, g);
                    }
                }
                bandwidth_timer bandwidth;
                fma_peak_timer peak;
                // Rounds: every method and every GEMM shape in turn, a slice each.
                for (int round = 0; round < rounds; ++round) {
                    for (auto& r : runners) {
                        time_calls(r.step, budget / rounds, r.times);
                    }
                    for (auto& [shape, timer] : timers) {
                        time_calls([&timer = timer] { timer.call_lightloop(); },
                                   gemm_budget / rounds, timer.lightloop_times);
#if defined(LIGHTLOOP_WITH_ONEDNN)
                        time_calls([&timer = timer] { timer.call_onednn(); }, gemm_budget / rounds,
                                   timer.onednn_times);
#endif
                        if (timer.has_layer_pass()) {
                            time_calls([&timer = timer] { timer.call_layer(); },
                                       gemm_budget / rounds, timer.layer_times);
                        }
                    }
                    time_calls([&bandwidth] { bandwidth.call(); }, gemm_budget / rounds,
                               bandwidth.times);
                    time_calls([&peak] { peak.call(); }, gemm_budget / rounds, peak.times);
                    // OpenBLAS's own threaded calls last: its workers spin for up to
                    // 2^28 cycles after them, and neither the other ways nor the next
                    // method's steps should meet them.
                    for (auto& [shape, timer] : timers) {
                        time_calls([&timer = timer] { timer.call_openblas(); },
                                   gemm_budget / rounds, timer.openblas_times);
                    }
                    if (threads > 1) {
                        std::this_thread::sleep_for(std::chrono::milliseconds(250));
                    }
                }
                // Rates by precision and method, for the ratios between rows.
                std::map<std::string, double> rates;
                std::vector<double> step_medians;
                for (const auto& r : runners) {
                    step_medians.push_back(median(r.times));
                    rates[r.precision + "/" + r.method] =
                      static_cast<double>(batch) / step_medians.back();
                }
                const auto rate_of = [&rates](const std::string& key) {
                    return rates.count(key) ? rates.at(key) : std::nan("");
                };
                std::optional<bf16_targets> target;
                if (model == "mlp" && rates.count("bf16/dfa") != 0) {
                    target = bf16_targets{.setting = "mlp, batch " + batch_s + ", " + threads_s +
                                                     " thread(s):"};
                    target->vs_fp32 = rate_of("bf16/dfa") / rate_of("fp32/dfa");
                    target->holographic_vs_dense =
                      rate_of("bf16/holographic") / rate_of("bf16/dfa");
                }
                const double own_sgemm =
                  first_layer.flops() / timers.at(first_layer).seconds() * 1e-9;
                const double bytes_per_second = bandwidth.bytes_per_second();
                const double peak_flops = peak.flops_per_second();
                for (std::size_t i = 0; i < runners.size(); ++i) {
                    const std::string& method = runners[i].method;
                    const std::string& precision = runners[i].precision;
                    const bool bf16 = precision == "bf16";
                    const double step_seconds = step_medians[i];
                    const double rate = static_cast<double>(batch) / step_seconds;
                    const double vs_dfa = rate / rate_of(precision + "/dfa");
                    const double vs_bp = rate / rate_of(precision + "/bp");
                    const double vs_fp32 = bf16 ? rate / rate_of("fp32/" + method) : std::nan("");

                    double flops = 0;
                    double gemm_seconds = 0;
                    for (const auto& g : shapes[i]) {
                        flops += g.flops();
                        gemm_seconds += timers.at(g).seconds();
                    }
                    // The peak is fp32's: bf16 dot-product instructions do more.
                    const double peak_fraction =
                      bf16 ? std::nan("") : flops / step_seconds / peak_flops;
                    const double bytes = step_bytes(model, method, bf16, batch);
                    const double memory_seconds = bytes / bytes_per_second;
                    const bool memory_bound = memory_seconds > gemm_seconds;
                    const double fraction = std::max(gemm_seconds, memory_seconds) / step_seconds;
                    // torch_throughput.py names the CNN's rows cnn_bp, cnn_dfa.
                    const std::string prefix = model == "cnn" ? "cnn_" : "";
                    const auto key = prefix + method + "/" + batch_s + "/" + threads_s;
                    const auto torch_rate = [&](const std::string& name) {
                        const auto k = prefix + name + "/" + batch_s + "/" + threads_s;
                        return torch.count(k) ? torch.at(k) : std::nan("");
                    };
                    // A bf16 row is compared with PyTorch's fastest bf16 backprop
                    // (bf16 parameters); an fp32 row with its fp32 one.
                    const double vs_torch = bf16 ? std::nan("") : rate / torch_rate(method);
                    const double vs_torch_bp = rate / torch_rate(bf16 ? "bf16_bp" : "bp");
                    const double vs_torch_autocast = rate / torch_rate("autocast_bp");
                    // The same ratio with each side divided by its own run's SGEMM
                    // speed at the first layer's shape: what it would be had both
                    // run on the machine in the same state.
                    const auto sgemm_key = "sgemm/" + batch_s + "/" + threads_s;
                    const double vs_torch_bp_scaled =
                      torch.count(sgemm_key) ? vs_torch_bp * torch.at(sgemm_key) / own_sgemm
                                             : std::nan("");
                    if (target && bf16 && method == "dfa") {
                        target->roofline = fraction;
                        target->vs_torch_bf16_bp = vs_torch_bp;
                    }
                    std::printf("%-5s %-12s %-4s %5zu %3d %10.0f %8.1f %6s %9s %-6s %9s %9s "
                                "%7s %7s %7s %7s\n",
                                model.c_str(), method.c_str(), precision.c_str(), batch, threads,
                                rate, flops / step_seconds * 1e-9,
                                cell(peak_fraction * 100.0, "%.0f%%").c_str(),
                                cell(100.0 * fraction, "%.0f%%").c_str(),
                                memory_bound ? "memory" : "gemm", cell(vs_torch).c_str(),
                                cell(vs_torch_bp).c_str(), cell(vs_torch_bp_scaled).c_str(),
                                cell(vs_dfa).c_str(), cell(vs_bp).c_str(), cell(vs_fp32).c_str());
                    std::fflush(stdout);
                    const auto number = [](double v) {
                        return std::isfinite(v) ? std::to_string(v) : std::string("null");
                    };
                    json << (first ? "" : ",\n") << "  {\"model\": \"" << model
                         << "\", \"method\": \"" << method << "\", \"precision\": \"" << precision
                         << "\", \"batch\": " << batch << ", \"threads\": " << threads
                         << ", \"samples_per_second\": " << rate
                         << ", \"gemm_gflop_per_step\": " << flops * 1e-9
                         << ", \"gemm_seconds\": " << gemm_seconds
                         << ", \"memory_bytes_per_step\": " << bytes
                         << ", \"memory_seconds\": " << memory_seconds
                         << ", \"bandwidth_gb_per_second\": " << bytes_per_second * 1e-9
                         << ", \"bound\": \"" << (memory_bound ? "memory" : "gemm") << "\""
                         << ", \"roofline_fraction\": " << fraction
                         << ", \"gemm_roofline_fraction\": " << gemm_seconds / step_seconds
                         << ", \"sequential_roofline_fraction\": "
                         << (gemm_seconds + memory_seconds) / step_seconds
                         << ", \"fma_peak_gflop_per_second\": " << peak_flops * 1e-9
                         << ", \"fma_peak_fraction\": " << number(peak_fraction)
                         << ", \"vs_torch\": " << number(vs_torch)
                         << ", \"vs_torch_bp\": " << number(vs_torch_bp)
                         << ", \"vs_torch_bp_sgemm_scaled\": " << number(vs_torch_bp_scaled)
                         << ", \"vs_dense_dfa\": " << number(vs_dfa)
                         << ", \"vs_own_bp\": " << number(vs_bp)
                         << ", \"roofline_vs_torch_bp\": " << number(vs_torch_bp / fraction);
                    if (bf16) {
                        json << ", \"vs_fp32\": " << number(vs_fp32)
                             << ", \"vs_torch_bf16_bp\": " << number(vs_torch_bp)
                             << ", \"vs_torch_autocast_bp\": " << number(vs_torch_autocast);
                    }
                    json << "}";
                    first = false;
                }
                if (target) {
                    targets.push_back(*target);
                }
            }
        }
    }
    json << "\n]\n";
    std::printf(
      "\nroofline: the larger of the step's GEMM time (each GEMM timed alone at its "
      "shape and precision,\nthe fastest of OpenBLAS's own threads, lightloop's gemm, oneDNN's "
      "product and, for a\nconvolution's, the conv2d layer's own pass) "
      "and its memory time (the bytes its\nelement-wise passes and update move, at the "
      "triad bandwidth of this run), over the measured\nstep time; bound says which\n"
      "peak: GFLOP/s over the fp32 multiply-add peak of this run's threads (independent SIMD FMA "
      "chains)\nvs t. bp: PyTorch's backprop in the row's precision (bf16: bf16 parameters)\n"
      "scaled: vs t. bp times PyTorch's run's SGEMM GFLOP/s over this run's "
      "(784 -> 1024 at the batch)\nthe JSON's roofline_vs_torch_bp: vs t. bp had the "
      "step run at 100%% of its roofline\nwrote %s\n",
      json_path.c_str());
    print_targets(targets, blas.cpu, mixed_bf16::backend::isa(), mixed_bf16::backend::on_amx());
    return 0;
}

} // namespace
