// When do the optics win? The training-time model of
// projection/optical/time_model.hpp, fed with this machine's measured GEMM
// rate and memory bandwidth (or given rates), checked against measured
// lightloop steps, then used where no machine here can go: the crossover
// width at which DFA with its projection on an OPU beats backprop and DFA on
// the CPU, for several depths and output sizes, and an SVG of time per step
// against width.
//
//   opu_crossover --check --svg opu_crossover.svg
//
// The check trains the paper's shape (784-w-w-10) at a few widths with
// backprop, dense DFA and holographic DFA through the simulated OPU, and
// compares each step's measured time (and the OPU's counted frames) with the
// prediction at the GEMM rates measured at that network's layer shapes (on
// operands fetched from memory, as in a step), plus
// the fixed cost of a step measured in the same run on a 784-16-16-10
// network.
#include <lightloop/lightloop.hpp>

#include "cli.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

namespace {

using clock_type = std::chrono::steady_clock;

struct settings {
    std::size_t batch = 128;
    std::size_t input = 784;
    std::vector<std::size_t> classes{10, 1000, 100000};
    std::vector<std::size_t> depths{2, 8};
    std::vector<std::size_t> check_widths{256, 512, 1024, 2048};
    double gemm_gflops = 0;   // 0: measure
    double bandwidth_gbs = 0; // 0: measure
    double frame_rate = 1500;
    bool check = false;
    std::string svg;
    int threads = 2;
};

/// Seconds per call of f, the best of `rounds` rounds of at least 0.2 s.
template <class F>
double seconds_per_call(F&& f, int rounds = 3) {
    f(); // warm-up
    double best = 1e300;
    for (int r = 0; r < rounds; ++r) {
        std::size_t calls = 0;
        const auto start = clock_type::now();
        double elapsed = 0;
        do {
            f();
            ++calls;
            elapsed = std::chrono::duration<double>(clock_type::now() - start).count();
        } while (elapsed < 0.2);
        best = std::min(best, elapsed / static_cast<double>(calls));
    }
    return best;
}

/// Seconds of one call of f on operands fetched from memory, as in a
/// training step, where the passes between two products (the update above
/// all) have pushed the layers' weights out of the caches: the best of
/// `calls` calls, each after an untimed pass on lightloop's threads that
/// writes 256 MiB, more than this machine's caches hold.
template <class F>
double seconds_per_cold_call(F&& f, int calls = 9) {
    static std::vector<float> sweep(std::size_t{64} << 20);
    f(); // warm-up: the backend's primitives are made
    double best = 1e300;
    for (int c = 0; c < calls; ++c) {
        lightloop::parallel_for_ranges(
          sweep.size(), lightloop::elementwise_grain, [&](std::size_t begin, std::size_t end) {
              std::fill(sweep.data() + begin, sweep.data() + end, static_cast<float>(c));
          });
        const auto start = clock_type::now();
        f();
        best = std::min(best, std::chrono::duration<double>(clock_type::now() - start).count());
    }
    return best;
}

/// FLOP/s of a float network's GEMMs at its layers' shapes (widths {d_0,
/// ..., d_L}), on the backend the layers use (default_fp32_backend: oneDNN
/// where built in, else OpenBLAS): the forward products (batch x d_{i-1})
/// times (d_i x d_{i-1})ᵀ, and the weight gradients (d_i x batch) times
/// (batch x d_{i-1}), whose inner dimension is the batch; each rate is the
/// layers' flops over their summed times, each product timed on operands
/// fetched from memory as a step finds them (timed on hot operands, called
/// again and again, they ran 15-45 % faster than in the steps they predict).
lightloop::cpu_rates measure_gemm(std::size_t batch, const std::vector<std::size_t>& widths,
                                  double bandwidth) {
    using namespace lightloop;
    using backend = default_fp32_backend;
    double flops = 0.0;
    double forward = 0.0;
    double gradient = 0.0;
    for (std::size_t i = 1; i < widths.size(); ++i) {
        const std::size_t in = widths[i - 1];
        const std::size_t out = widths[i];
        auto x = matrix<float>::from_shape({batch, in});
        auto w = matrix<float>::from_shape({out, in});
        auto y = matrix<float>::from_shape({batch, out});
        std::fill(x.begin(), x.end(), 0.5f);
        std::fill(w.begin(), w.end(), 0.25f);
        std::fill(y.begin(), y.end(), 0.5f);
        flops += 2.0 * static_cast<double>(batch) * static_cast<double>(in * out);
        forward += seconds_per_cold_call([&] {
            backend::product(transpose::no, transpose::yes, batch, out, in, 1.0f, x.data(), in,
                             w.data(), in, 0.0f, y.data(), out);
        });
        gradient += seconds_per_cold_call([&] {
            backend::product(transpose::yes, transpose::no, out, in, batch, 1.0f, y.data(), out,
                             x.data(), in, 0.0f, w.data(), in);
        });
    }
    return {flops / forward, bandwidth, 4, flops / gradient};
}

/// Bytes/s of an element-wise pass (y = a x + y over 64 MiB per array, on
/// lightloop's threads): 12 bytes per element.
double measure_bandwidth() {
    using namespace lightloop;
    const std::size_t n = std::size_t{16} << 20;
    std::vector<float> x(n, 1.0f);
    std::vector<float> y(n, 2.0f);
    const double s = seconds_per_call([&] {
        parallel_for_ranges(n, elementwise_grain, [&](std::size_t begin, std::size_t end) {
            for (std::size_t i = begin; i < end; ++i) {
                y[i] = 0.999f * y[i] + 0.5f * x[i];
            }
        });
    });
    return 12.0 * static_cast<double>(n) / s;
}

/// Measured seconds per step and OPU frames per step of 784-w-w-10 with a
/// feedback method.
template <class Feedback>
std::pair<double, double> measure_step(Feedback feedback, std::size_t w, std::size_t batch) {
    using namespace lightloop;
    network net{std::move(feedback),     softmax_cross_entropy{}, 7,
                dense<tanh_act>{784, w}, dense<tanh_act>{w, w},   dense<identity>{w, 10}};
    sgd opt{{.learning_rate = 0.01, .momentum = 0.9}};
    auto x = matrix<float>::from_shape({batch, 784});
    auto y = matrix<float>::from_shape({batch, 10});
    rng gen(3);
    for (auto& v : x) {
        v = static_cast<float>(gen.uniform());
    }
    std::fill(y.begin(), y.end(), 0.0f);
    for (std::size_t r = 0; r < batch; ++r) {
        y(r, gen.below(10)) = 1.0f;
    }
    std::uint64_t frames_before = 0;
    std::uint64_t steps = 0;
    auto frames = [&]() -> std::uint64_t {
        if constexpr (requires { net.feedback().device().statistics(); }) {
            return net.feedback().device().statistics().frames;
        } else {
            return 0;
        }
    };
    net.train_step(x, y, opt); // calibrates an OPU
    frames_before = frames();
    const double s = seconds_per_call([&] {
        net.train_step(x, y, opt);
        ++steps;
    });
    return {s, static_cast<double>(frames() - frames_before) / static_cast<double>(steps)};
}

std::string width_text(std::size_t w) {
    return w == 0 ? std::string("never (to 4M)") : std::to_string(w);
}

int run(const settings& s) {
    using namespace lightloop;
    if (!s.svg.empty()) {
        // Opened before the measured check's minutes, so an unwritable path
        // loses no run (write_svg writes it at the end).
        if (!std::ofstream(s.svg, std::ios::app)) {
            throw data_error(s.svg + ": cannot write the SVG");
        }
    }
    set_blas_threads(s.threads);
    std::printf("lightloop %s | BLAS kernel %s, %d thread(s) | batch %zu\n", version_string,
                blas_core_name().c_str(), s.threads, s.batch);
    const double bandwidth = s.bandwidth_gbs > 0 ? s.bandwidth_gbs * 1e9 : measure_bandwidth();
    const std::size_t rate_width = 4096;
    const cpu_rates cpu = s.gemm_gflops > 0
                            ? cpu_rates{s.gemm_gflops * 1e9, bandwidth}
                            : measure_gemm(s.batch, {rate_width, rate_width}, bandwidth);
    std::printf("CPU: GEMM %.1f GFLOP/s, weight gradients %.1f (%s), element-wise %.1f GB/s "
                "(%s)\n",
                cpu.gemm_flops / 1e9,
                (cpu.gradient_gemm_flops > 0 ? cpu.gradient_gemm_flops : cpu.gemm_flops) / 1e9,
                s.gemm_gflops > 0 ? "given" : "measured at a 4096-wide layer's shapes",
                bandwidth / 1e9, s.bandwidth_gbs > 0 ? "given" : "measured");
    opu_device_model opu;
    opu.frame_rate = s.frame_rate;
    std::printf("OPU: %.0f frames/s, %zu micromirrors x %zu pixels, %.0f patterns x %.0f "
                "exposures per sample (ternary, holographic)\n\n",
                opu.frame_rate, opu.micromirrors, opu.pixels, opu.patterns_per_sample,
                opu.exposures_per_pattern);

    if (s.check) {
        // The fixed cost of a step: a 784-16-16-10 network's measured step
        // minus its predicted work (the mean of backprop's and DFA's).
        const std::size_t tiny = 16;
        const std::vector<std::size_t> tiny_widths{784, tiny, tiny, 10};
        const cpu_rates tiny_rates = measure_gemm(s.batch, tiny_widths, bandwidth);
        const double tiny_bp =
          measure_step(backprop{}, tiny, s.batch).first -
          predict_step(tiny_widths, s.batch, step_method::backprop, tiny_rates).total();
        const double tiny_dfa =
          measure_step(dfa<dense_gaussian>{}, tiny, s.batch).first -
          predict_step(tiny_widths, s.batch, step_method::dfa_cpu, tiny_rates).total();
        const double fixed = std::max(0.0, 0.5 * (tiny_bp + tiny_dfa));
        std::printf("fixed cost per step: %.3f ms (a 784-%zu-%zu-10 step's time beyond its "
                    "predicted work: backprop %.3f, DFA %.3f)\n",
                    1e3 * fixed, tiny, tiny, 1e3 * tiny_bp, 1e3 * tiny_dfa);
        std::printf("model check, 784-w-w-10 (GEMM rates measured at each network's layer "
                    "shapes):\n");
        std::printf("%6s %13s %-22s %12s %12s %9s %14s %14s\n", "width", "GFLOP/s f/g", "method",
                    "measured ms", "predicted ms", "ratio", "frames/step", "predicted");
        for (const std::size_t w : s.check_widths) {
            const std::vector<std::size_t> widths{784, w, w, 10};
            cpu_rates rates = measure_gemm(s.batch, widths, bandwidth);
            rates.step_seconds = fixed;
            const auto bp = measure_step(backprop{}, w, s.batch);
            const auto dense = measure_step(dfa<dense_gaussian>{}, w, s.batch);
            const auto optical_run = measure_step(dfa<optical<>>{}, w, s.batch);
            struct line {
                step_method method;
                std::pair<double, double> measured;
            };
            for (const line& l :
                 {line{step_method::backprop, bp}, line{step_method::dfa_cpu, dense},
                  line{step_method::dfa_opu, optical_run}}) {
                const step_time p = predict_step(widths, s.batch, l.method, rates, opu);
                // The simulated OPU runs on the CPU: its step is the CPU part
                // only, device time aside.
                const double predicted =
                  l.method == step_method::dfa_opu ? p.total() - p.device - p.transfer : p.total();
                const double measured = l.method == step_method::dfa_opu
                                          ? std::nan("") // the simulation's own cost
                                          : l.measured.first;
                if (l.method == step_method::dfa_opu) {
                    std::printf("%6zu %6.1f/%6.1f %-22s %12s %12.2f %9s %14.1f %14.1f\n", w,
                                rates.gemm_flops / 1e9, rates.gradient_gemm_flops / 1e9,
                                step_method_name(l.method), "(simulated)", 1e3 * p.total(), "-",
                                l.measured.second, p.frames);
                } else {
                    std::printf("%6zu %6.1f/%6.1f %-22s %12.2f %12.2f %9.2f %14s %14s\n", w,
                                rates.gemm_flops / 1e9, rates.gradient_gemm_flops / 1e9,
                                step_method_name(l.method), 1e3 * measured, 1e3 * predicted,
                                predicted / measured, "-", "-");
                }
            }
        }
        std::printf("\n");
    }

    std::printf("crossover hidden width (powers of two), input %zu, batch %zu:\n", s.input,
                s.batch);
    std::printf("%6s %9s %22s %22s\n", "depth", "classes", "OPU-DFA beats backprop",
                "OPU-DFA beats CPU DFA");
    for (const std::size_t depth : s.depths) {
        for (const std::size_t c : s.classes) {
            std::printf("%6zu %9zu %22s %22s\n", depth, c,
                        width_text(crossover_width(s.input, depth, c, s.batch, step_method::dfa_opu,
                                                   step_method::backprop, cpu, opu))
                          .c_str(),
                        width_text(crossover_width(s.input, depth, c, s.batch, step_method::dfa_opu,
                                                   step_method::dfa_cpu, cpu, opu))
                          .c_str());
        }
    }

    if (!s.svg.empty()) {
        const std::size_t depth = s.depths.front();
        const std::size_t c = s.classes.back();
        line_chart chart{"time per step, " + std::to_string(s.input) + "-w x" +
                           std::to_string(depth) + "-" + std::to_string(c) + ", batch " +
                           std::to_string(s.batch),
                         "log2 hidden width",
                         "log10 seconds per step",
                         {}};
        for (const step_method m :
             {step_method::backprop, step_method::dfa_cpu, step_method::dfa_opu}) {
            plot_series series{step_method_name(m), {}, {}};
            for (std::size_t w = 256; w <= (std::size_t{1} << 20); w *= 2) {
                std::vector<std::size_t> widths{s.input};
                widths.insert(widths.end(), depth, w);
                widths.push_back(c);
                series.x.push_back(std::log2(static_cast<double>(w)));
                series.y.push_back(std::log10(predict_step(widths, s.batch, m, cpu, opu).total()));
            }
            chart.series.push_back(series);
        }
        write_svg(chart, s.svg);
        std::printf("\nwrote %s (depth %zu, %zu classes)\n", s.svg.c_str(), depth, c);
    }
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    lightloop::ensure_fast_blas(argv);
    CLI::App app{"When the optics win: a time-per-step model of backprop, DFA and DFA with an "
                 "OPU projection, checked against measured steps, and the crossover widths.",
                 "opu_crossover"};
    settings s;
    app.add_option("--batch", s.batch, "samples per step")
      ->check(lightloop::programs::positive())
      ->capture_default_str();
    app.add_option("--input", s.input, "input width")
      ->check(lightloop::programs::positive())
      ->capture_default_str();
    app.add_option("--classes", s.classes, "output widths (the error's size), comma-separated")
      ->delimiter(',')
      ->check(lightloop::programs::positive())
      ->capture_default_str();
    app.add_option("--depths", s.depths, "hidden layers, comma-separated")
      ->delimiter(',')
      ->check(lightloop::programs::positive())
      ->capture_default_str();
    app.add_option("--check-widths", s.check_widths, "widths of the measured check")
      ->delimiter(',')
      ->check(lightloop::programs::positive())
      ->capture_default_str();
    app.add_option("--gemm-gflops", s.gemm_gflops, "GEMM rate of another machine (0: measure)")
      ->check(lightloop::programs::non_negative())
      ->capture_default_str();
    app
      .add_option("--bandwidth-gbs", s.bandwidth_gbs,
                  "element-wise bandwidth of another machine (0: measure)")
      ->check(lightloop::programs::non_negative())
      ->capture_default_str();
    app.add_option("--frame-rate", s.frame_rate, "OPU frames per second")
      ->check(lightloop::programs::positive())
      ->capture_default_str();
    app.add_flag("--check", s.check, "measure lightloop steps against the model");
    app.add_option("--svg", s.svg, "write time per step against width here");
    lightloop::programs::add_threads(app, s.threads);
    return lightloop::programs::run(app, argc, argv, [&] { return run(s); });
}
