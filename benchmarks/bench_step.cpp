// Micro benchmarks of one training step on the paper's network shape
// (784-1024-1024-10, tanh), per feedback method, beside the SGEMM of the
// forward pass's first layer for scale. The full roofline and PyTorch
// comparison is its own issue; this keeps the step's cost visible meanwhile.
#include <benchmark/benchmark.h>

#include <lightloop/lightloop.hpp>

namespace {

using namespace lightloop;

template <class Feedback>
void bm_train_step(benchmark::State& state) {
    const auto batch = static_cast<std::size_t>(state.range(0));
    auto net = make_network<Feedback, softmax_cross_entropy>(
      1, dense<tanh_act>{784, 1024}, dense<tanh_act>{1024, 1024}, dense<identity>{1024, 10});
    auto x = matrix<float>::from_shape({batch, 784});
    rng gen(2);
    fill_normal(std::span<float>(x.data(), x.size()), gen, 1.0);
    std::vector<int> labels(batch);
    for (std::size_t i = 0; i < batch; ++i) {
        labels[i] = static_cast<int>(i % 10);
    }
    const auto y = one_hot<float>(std::span<const int>(labels), 10);
    sgd opt{{.learning_rate = 0.01, .momentum = 0.9}};
    for (auto _ : state) {
        benchmark::DoNotOptimize(net.train_step(x, y, opt));
    }
    state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(batch));
}

void bm_sgemm_first_layer(benchmark::State& state) {
    const auto batch = static_cast<std::size_t>(state.range(0));
    auto x = matrix<float>::from_shape({batch, 784});
    auto w = matrix<float>::from_shape({1024, 784});
    auto out = matrix<float>::from_shape({batch, 1024});
    x.fill(0.5f);
    w.fill(0.01f);
    for (auto _ : state) {
        gemm(1.0f, x, transpose::no, w, transpose::yes, 0.0f, out);
        benchmark::ClobberMemory();
    }
    state.counters["GFLOP/s"] = benchmark::Counter(
      2.0 * static_cast<double>(batch) * 784.0 * 1024.0 * static_cast<double>(state.iterations()),
      benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
}

} // namespace

BENCHMARK(bm_sgemm_first_layer)->Arg(128);
BENCHMARK(bm_train_step<backprop>)->Arg(128)->Unit(benchmark::kMillisecond);
BENCHMARK(bm_train_step<feedback_alignment>)->Arg(128)->Unit(benchmark::kMillisecond);
BENCHMARK(bm_train_step<dfa<dense_gaussian>>)->Arg(128)->Unit(benchmark::kMillisecond);
BENCHMARK(bm_train_step<shallow>)->Arg(128)->Unit(benchmark::kMillisecond);

int main(int argc, char** argv) {
    lightloop::ensure_fast_blas(argv);
    const auto blas = lightloop::blas_info();
    benchmark::AddCustomContext("openblas_core", blas.core);
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
        return 1;
    }
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
}
