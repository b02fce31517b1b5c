// End-to-end training throughput on the paper's network (784-1024-1024-10,
// tanh, SGD momentum 0.9), per method, batch size and thread count, against
// the machine's SGEMM roofline measured in the same run, and against PyTorch
// when its figures are given (torch_throughput.py: PyTorch's best thread
// layout for the same number of cores).
//
//   throughput [--batches 32,128,512] [--threads 1,2] [--seconds 1.5]
//              [--torch FILE] [--json FILE] [--methods bp,fa,dfa,holographic,intensity]
//
// Roofline: each method's step is a known list of GEMMs (forward, weight
// gradients, and backprop's or feedback alignment's backward products, or
// DFA's projection; the optical devices add none: for the 10 error inputs
// they sum the medium's columns instead of a GEMM). Each GEMM
// shape is timed alone at the same thread count; the roofline time of a step
// is the sum of its GEMMs' times, and the report gives roofline / measured:
// the fraction of the machine's GEMM speed the whole step reaches.
#include <benchmark/benchmark.h>

#include <lightloop/lightloop.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace {

using namespace lightloop;
using clock_type = std::chrono::steady_clock;

struct gemm_shape {
    transpose ta;
    transpose tb;
    std::size_t m, n, k;
    double flops() const { return 2.0 * static_cast<double>(m * n * k); }
    bool operator<(const gemm_shape& o) const {
        return std::tie(ta, tb, m, n, k) < std::tie(o.ta, o.tb, o.m, o.n, o.k);
    }
};

constexpr std::size_t widths[] = {784, 1024, 1024, 10};

/// The GEMMs of one training step of `method` at batch n (see dense.hpp,
/// backprop.hpp, feedback_alignment.hpp, direct.hpp, optical/transmission_matrix.hpp).
std::vector<gemm_shape> step_gemms(const std::string& method, std::size_t n,
                                   std::size_t optical_frames) {
    std::vector<gemm_shape> g;
    for (int i = 0; i < 3; ++i) {
        const std::size_t in = widths[i];
        const std::size_t out = widths[i + 1];
        g.push_back({transpose::no, transpose::yes, n, out, in}); // a = h W^T
        if (method != "shallow" || i == 2) {
            g.push_back({transpose::yes, transpose::no, out, in, n}); // dW = delta^T h
        }
    }
    if (method == "bp") {
        g.push_back({transpose::no, transpose::no, n, 1024, 10});   // delta_2 = delta_3 W_3
        g.push_back({transpose::no, transpose::no, n, 1024, 1024}); // delta_1 = delta_2 W_2
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

/// The median time of one call over `budget` seconds (at least 5 calls,
/// after 3 warm-up calls). The median, not the mean: this machine is shared,
/// and a neighbour's burst should not move the figure.
template <class F>
double median_seconds(F&& call, double budget) {
    for (int i = 0; i < 3; ++i) {
        call();
    }
    std::vector<double> times;
    const auto start = clock_type::now();
    do {
        const auto before = clock_type::now();
        call();
        times.push_back(std::chrono::duration<double>(clock_type::now() - before).count());
    } while (std::chrono::duration<double>(clock_type::now() - start).count() < budget ||
             times.size() < 5);
    std::nth_element(times.begin(), times.begin() + static_cast<std::ptrdiff_t>(times.size() / 2),
                     times.end());
    return times[times.size() / 2];
}

/// Seconds per call of one GEMM shape, timed alone.
double time_gemm(const gemm_shape& s, double budget) {
    const std::size_t a_rows = s.ta == transpose::yes ? s.k : s.m;
    const std::size_t a_cols = s.ta == transpose::yes ? s.m : s.k;
    const std::size_t b_rows = s.tb == transpose::yes ? s.n : s.k;
    const std::size_t b_cols = s.tb == transpose::yes ? s.k : s.n;
    std::vector<float> a(a_rows * a_cols, 0.5f);
    std::vector<float> b(b_rows * b_cols, 0.25f);
    std::vector<float> c(s.m * s.n, 0.0f);
    auto call = [&] {
        gemm(s.ta, s.tb, s.m, s.n, s.k, 1.0f, a.data(), a_cols, b.data(), b_cols, 0.0f, c.data(),
             s.n);
    };
    const double seconds = median_seconds(call, budget);
    benchmark::DoNotOptimize(c.data());
    return seconds;
}

struct measurement {
    double samples_per_second = 0;
    double frames_per_sample = 0; // optical exposures' patterns per sample
};

template <class Feedback>
measurement time_steps(Feedback feedback, std::size_t batch, double budget) {
    network net{std::move(feedback),        softmax_cross_entropy{},     1,
                dense<tanh_act>{784, 1024}, dense<tanh_act>{1024, 1024}, dense<identity>{1024, 10}};
    auto x = matrix<float>::from_shape({batch, 784});
    rng gen(2);
    for (auto& v : x) {
        v = static_cast<float>(gen.uniform());
    }
    std::vector<int> labels(batch);
    for (std::size_t i = 0; i < batch; ++i) {
        labels[i] = static_cast<int>(gen.below(10));
    }
    const auto y = one_hot<float>(std::span<const int>(labels), 10);
    sgd opt{{.learning_rate = 0.01, .momentum = 0.9}};
    const double step = median_seconds([&] { net.train_step(x, y, opt); }, budget);
    measurement m;
    m.samples_per_second = static_cast<double>(batch) / step;
    if constexpr (requires { net.feedback().device().statistics(); }) {
        const auto stats = net.feedback().device().statistics();
        m.frames_per_sample =
          static_cast<double>(stats.patterns) / static_cast<double>(stats.projections);
    }
    return m;
}

measurement measure(const std::string& method, std::size_t batch, double budget) {
    if (method == "bp") {
        return time_steps(backprop{}, batch, budget);
    }
    if (method == "fa") {
        return time_steps(feedback_alignment{}, batch, budget);
    }
    if (method == "dfa") {
        return time_steps(dfa<dense_gaussian>{}, batch, budget);
    }
    if (method == "holographic") {
        return time_steps(dfa<optical<>>{}, batch, budget);
    }
    if (method == "intensity") {
        return time_steps(dfa<optical<intensity_readout>>{}, batch, budget);
    }
    if (method == "shallow") {
        return time_steps(shallow{}, batch, budget);
    }
    throw config_error("throughput: unknown method " + method);
}

std::vector<std::string> split(const std::string& s) {
    std::vector<std::string> out;
    std::stringstream in(s);
    std::string item;
    while (std::getline(in, item, ',')) {
        out.push_back(item);
    }
    return out;
}

/// PyTorch samples/s by (method, batch, threads), from torch_throughput.py.
std::map<std::string, double> read_torch(const std::string& path) {
    std::map<std::string, double> out;
    if (path.empty()) {
        return out;
    }
    std::ifstream in(path);
    if (!in) {
        throw data_error("throughput: " + path + ": cannot open");
    }
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream f(line);
        std::string method;
        std::size_t batch = 0;
        int threads = 0;
        double rate = 0;
        if (line.empty() || line[0] == '#' || !(f >> method >> batch >> threads >> rate)) {
            continue;
        }
        out[method + "/" + std::to_string(batch) + "/" + std::to_string(threads)] = rate;
    }
    return out;
}

} // namespace

int main(int argc, char** argv) {
    ensure_fast_blas(argv);
    std::string batches_arg = "32,128,512";
    std::string threads_arg = "1,2";
    std::string methods_arg = "bp,fa,dfa,holographic,intensity";
    std::string torch_path;
    std::string json_path = "throughput.json";
    double budget = 1.5;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string flag = argv[i];
        const std::string value = argv[i + 1];
        if (flag == "--batches") {
            batches_arg = value;
        } else if (flag == "--threads") {
            threads_arg = value;
        } else if (flag == "--methods") {
            methods_arg = value;
        } else if (flag == "--torch") {
            torch_path = value;
        } else if (flag == "--json") {
            json_path = value;
        } else if (flag == "--seconds") {
            budget = std::stod(value);
        } else {
            std::fprintf(stderr, "throughput: unknown flag %s\n", flag.c_str());
            return 2;
        }
    }
    const auto torch = read_torch(torch_path);
    const auto blas = blas_info();
    std::printf("lightloop %s | OpenBLAS %s | kernel %s\n", version_string, blas.config.c_str(),
                blas.core.c_str());
    std::printf("784-1024-1024-10 tanh, SGD momentum 0.9, float\n\n");
    std::printf("%-12s %5s %3s %12s %10s %10s %10s %10s %8s\n", "method", "batch", "thr",
                "samples/s", "GFLOP/s", "roofline", "vs torch", "vs t. bp", "vs dfa");
    std::ofstream json(json_path);
    json << "[\n";
    bool first = true;
    for (const auto& threads_s : split(threads_arg)) {
        const int threads = std::stoi(threads_s);
        set_blas_threads(threads);
        std::map<gemm_shape, double> gemm_seconds;
        for (const auto& batch_s : split(batches_arg)) {
            const auto batch = static_cast<std::size_t>(std::stoul(batch_s));
            double dfa_rate = std::nan("");
            for (const auto& method : split(methods_arg)) {
                const measurement m = measure(method, batch, budget);
                if (method == "dfa") {
                    dfa_rate = m.samples_per_second;
                }
                const double vs_dfa = m.samples_per_second / dfa_rate;
                const auto frames =
                  static_cast<std::size_t>(m.frames_per_sample * static_cast<double>(batch) + 0.5);
                double flops = 0;
                double roof_seconds = 0;
                for (const auto& g : step_gemms(method, batch, frames)) {
                    if (gemm_seconds.count(g) == 0) {
                        gemm_seconds[g] = time_gemm(g, 0.2);
                    }
                    flops += g.flops();
                    roof_seconds += gemm_seconds[g];
                }
                const double step_seconds = static_cast<double>(batch) / m.samples_per_second;
                const double fraction = roof_seconds / step_seconds;
                const auto key = method + "/" + batch_s + "/" + threads_s;
                const auto torch_bp_key = "bp/" + batch_s + "/" + threads_s;
                const double vs_torch =
                  torch.count(key) ? m.samples_per_second / torch.at(key) : std::nan("");
                const double vs_torch_bp = torch.count(torch_bp_key)
                                             ? m.samples_per_second / torch.at(torch_bp_key)
                                             : std::nan("");
                std::printf("%-12s %5zu %3d %12.0f %10.1f %9.0f%% %10.2f %10.2f %8.2f\n",
                            method.c_str(), batch, threads, m.samples_per_second,
                            flops / step_seconds * 1e-9, 100.0 * fraction, vs_torch, vs_torch_bp,
                            vs_dfa);
                std::fflush(stdout);
                json << (first ? "" : ",\n") << "  {\"method\": \"" << method
                     << "\", \"batch\": " << batch << ", \"threads\": " << threads
                     << ", \"samples_per_second\": " << m.samples_per_second
                     << ", \"gemm_gflop_per_step\": " << flops * 1e-9
                     << ", \"roofline_fraction\": " << fraction << ", \"vs_torch\": "
                     << (std::isfinite(vs_torch) ? std::to_string(vs_torch) : "null")
                     << ", \"vs_torch_bp\": "
                     << (std::isfinite(vs_torch_bp) ? std::to_string(vs_torch_bp) : "null")
                     << ", \"vs_dense_dfa\": "
                     << (std::isfinite(vs_dfa) ? std::to_string(vs_dfa) : "null") << "}";
                first = false;
            }
        }
    }
    json << "\n]\n";
    std::printf("\nroofline: the step's GEMMs, each timed alone at its shape, over the measured "
                "step time\nwrote %s\n",
                json_path.c_str());
}
