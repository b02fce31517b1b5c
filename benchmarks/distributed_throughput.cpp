// Training throughput over MPI ranks against one process on the same cores,
// from one invocation: the paper's network (784-1024-1024-10 tanh, SGD
// momentum 0.9) at a global batch of 128, each method
//   - in this process on 1 and on 2 threads (the references), and
//   - data-parallel on 1, 2 and 3 ranks of 1 thread each, launched by this
//     program through mpiexec (every rank a shard of each global batch,
//     gradients summed through shared memory, as on any one node, with the
//     update sharded, "data", and every rank updating everything,
//     "data-whole"; and again by the ring of messages a multi-node run
//     uses, sharded with the sums after all gradients, "data-ring", and
//     whole with each layer's started as soon as its gradient exists,
//     "data-overlap"), and
//   - for the DFA methods, DFA layer-parallel on the same ranks (each rank a
//     block of layers; e broadcast from the last), synchronous ("layer") and
//     pipelined ("piped": the next batch forwarded while the error of the
//     previous one is on its way).
// With --precision fp32,bf16 every figure is also taken in mixed bf16
// (dense<..., mixed_bf16>: bf16 GEMM operands, fp32 master weights; the
// ranks sum fp32 gradients and share fp32 weights and their bf16 copies),
// each against one process in the same precision.
// The modes take turns over --rounds rounds and the figures are medians, so
// a drift of the shared machine reaches every mode alike. It also prints the
// bytes each rank sent per step (measured) and, with --model, the computed
// communication of each parallel mode up to the paper's scale.
//
//   distributed_throughput [--methods bp,dfa,holographic] [--ranks 1,2,3]
//                          [--precision fp32,bf16] [--steps 30] [--rounds 3]
//                          [--json FILE] [--model]
//
// As root, the mpiexec it starts gets OMPI_ALLOW_RUN_AS_ROOT=1 and
// OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 (Open MPI refuses root otherwise).
#include <lightloop/distributed/data_parallel.hpp>
#include <lightloop/distributed/layer_parallel.hpp>
#include <lightloop/lightloop.hpp>

#include "cli.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

#ifndef LIGHTLOOP_MPIEXEC
#define LIGHTLOOP_MPIEXEC "mpiexec"
#endif

namespace {

using namespace lightloop;
using clock_type = std::chrono::steady_clock;

struct options {
    std::vector<std::string> methods{"bp", "dfa", "holographic"};
    std::vector<std::size_t> ranks{1, 2, 3};
    std::vector<std::string> precisions{"fp32"};
    std::size_t batch = 128;
    std::size_t steps = 30;
    std::size_t rounds = 3;
    std::string json;
    bool model = false;
    bool worker = false; // internal: one rank of a run this program launched
};

constexpr std::size_t classes = 10;
constexpr std::array<std::size_t, 4> widths{784, 1024, 1024, classes};

/// A fixed synthetic set (inputs in [0, 1], random labels): the step's cost
/// does not depend on the values.
labelled_data<float> synthetic(std::size_t rows) {
    labelled_data<float> data;
    data.inputs = matrix<float>::from_shape({rows, widths.front()});
    data.targets = matrix<float>::from_shape({rows, classes});
    data.targets.fill(0.0f);
    rng gen(3);
    for (float& v : data.inputs) {
        v = static_cast<float>(gen.uniform(0.0, 1.0));
    }
    for (std::size_t i = 0; i < rows; ++i) {
        data.labels.push_back(gen.below(classes));
        data.targets(i, data.labels.back()) = 1.0f;
    }
    return data;
}

/// The paper's network in precision P (float, or mixed_bf16).
template <class P, class Feedback>
auto make_net(Feedback feedback) {
    return network{std::move(feedback),
                   softmax_cross_entropy{},
                   std::uint64_t{7},
                   dense<tanh_act, P>{widths[0], widths[1]},
                   dense<tanh_act, P>{widths[1], widths[2]},
                   dense<identity, P>{widths[2], widths[3]}};
}

using holographic_device = optical<holographic_readout<off_axis_reference>, camera>;

template <class P, class F>
void with_network_in(const std::string& method, F&& f) {
    if (method == "bp") {
        auto net = make_net<P>(backprop{});
        f(net);
    } else if (method == "dfa") {
        auto net = make_net<P>(dfa<dense_gaussian>{});
        f(net);
    } else if (method == "holographic") {
        auto net = make_net<P>(dfa<holographic_device>{});
        f(net);
    } else {
        throw config_error("unknown method '" + method + "'");
    }
}

/// Calls f(network) with the method's network in `precision` ("fp32",
/// "bf16").
template <class F>
void with_network(const std::string& method, const std::string& precision, F&& f) {
    if (precision == "bf16") {
        with_network_in<mixed_bf16>(method, std::forward<F>(f));
    } else {
        with_network_in<float>(method, std::forward<F>(f));
    }
}

/// A row's method column: the method, with "/bf16" in mixed precision.
std::string label(const std::string& method, const std::string& precision) {
    return precision == "fp32" ? method : method + "/" + precision;
}

/// Samples per second of `steps` steps after 5 warm-up steps, where step(b)
/// trains on global batch b.
template <class Step>
double rate_of(std::size_t steps, std::size_t batch, Step&& step) {
    for (std::size_t b = 0; b < 5; ++b) {
        step(b);
    }
    const auto start = clock_type::now();
    for (std::size_t b = 0; b < steps; ++b) {
        step(5 + b);
    }
    const double seconds = std::chrono::duration<double>(clock_type::now() - start).count();
    return static_cast<double>(steps * batch) / seconds;
}

/// One process, `threads` threads.
double single_process_rate(const std::string& method, const std::string& precision,
                           std::size_t threads, const options& o,
                           const labelled_data<float>& data) {
    set_blas_threads(static_cast<int>(threads));
    double rate = 0.0;
    with_network(method, precision, [&](auto& net) {
        sgd<float> opt{{.learning_rate = 0.01, .momentum = 0.9}};
        batch_sampler<float> sampler(data, o.batch, 1);
        sampler.start_epoch(0);
        matrix<float> x;
        matrix<float> y;
        rate = rate_of(o.steps, o.batch, [&](std::size_t b) {
            sampler.fill(b % sampler.batches(), x, y);
            net.train_step(x, y, opt);
        });
    });
    return rate;
}

/// Times one mode on this rank's communicator; rank 0 prints
/// "rate <mode> <method> <samples/s> <bytes sent per step and rank>".
/// `finish` runs after the timed steps (a pipelined mode's last update),
/// before the ranks' next collective.
template <class Step, class Finish>
void time_mode(distributed::communicator& comm, const std::string& mode, const std::string& method,
               const options& o, Step&& step, Finish&& finish) {
    comm.barrier();
    comm.reset_bytes();
    const double rate = rate_of(o.steps, o.batch, step);
    finish();
    // The rate (the ranks ran in lock step) and the bytes sent, each a mean
    // over the ranks.
    double all[2] = {rate,
                     static_cast<double>(comm.bytes().total()) / static_cast<double>(o.steps + 5)};
    comm.sum_identical(std::span<double>(all));
    if (comm.rank() == 0) {
        const auto p = static_cast<double>(comm.size());
        std::printf("rate %s %s %.3f %.0f\n", mode.c_str(), method.c_str(), all[0] / p, all[1] / p);
    }
}

/// One method in one precision on this rank: data-parallel by every route,
/// and the DFA methods layer-parallel (rows labelled label(method,
/// precision)).
void time_method(distributed::communicator& comm, distributed::communicator& ring, const options& o,
                 const std::string& method, const std::string& precision,
                 batch_sampler<float>& sampler, matrix<float>& x, matrix<float>& y) {
    const std::string name = label(method, precision);
    with_network(method, precision, [&](auto& net) {
        distributed::give_rank_noise_stream(net, comm.rank());
        sgd<float> opt{{.learning_rate = 0.01, .momentum = 0.9}};
        // Data-parallel with the sums through shared memory (every rank
        // is on this node), then the same with the ring of messages a
        // multi-node run uses, without and with overlap.
        struct route {
            distributed::communicator* comm;
            distributed::sum_overlap overlap;
            distributed::update_split split;
            const char* mode;
        };
        constexpr auto sharded = distributed::update_split::sharded;
        constexpr auto whole = distributed::update_split::whole;
        for (const route& r : {route{&comm, distributed::sum_overlap::off, sharded, "data"},
                               route{&comm, distributed::sum_overlap::off, whole, "data-whole"},
                               route{&ring, distributed::sum_overlap::off, sharded, "data-ring"},
                               route{&ring, distributed::sum_overlap::on, whole, "data-overlap"}}) {
            distributed::communicator* c = r.comm;
            distributed::data_parallel<float> parallel(*c, r.overlap, r.split);
            time_mode(
              *c, r.mode, name, o,
              [&](std::size_t b) {
                  sampler.fill_shard(b % sampler.batches(), c->rank(), c->size(), x, y);
                  parallel.step(net, opt, x, y);
              },
              [] {});
            parallel.gather_state(opt); // the next mode's blocks may be other ones
        }
    });
    if (method == "bp" || comm.size() > widths.size() - 1) {
        return; // backprop has no layer-parallel mode; a rank needs a layer
    }
    for (const auto mode : {distributed::layer_parallel_mode::synchronous,
                            distributed::layer_parallel_mode::pipelined}) {
        with_network(method, precision, [&](auto& net) {
            using net_type = std::remove_cvref_t<decltype(net)>;
            if constexpr (requires { net.feedback().device_seed(); }) {
                sgd<float> opt{{.learning_rate = 0.01, .momentum = 0.9}};
                distributed::dfa_layer_parallel<net_type> parallel(comm, net, mode);
                const bool piped = mode == distributed::layer_parallel_mode::pipelined;
                time_mode(
                  comm, piped ? "piped" : "layer", name, o,
                  [&](std::size_t b) {
                      sampler.fill(b % sampler.batches(), x, y);
                      parallel.step(net, opt, x, y);
                  },
                  [&] { parallel.finish(net, opt); });
            }
        });
    }
}

/// A worker rank: every method in every precision, data-parallel, and the
/// DFA methods layer-parallel.
int worker(const options& o) {
    // The launching process's report carries the bf16 warning: no rank
    // repeats it on stderr.
    warn_about_precision_once<mixed_bf16>(nullptr);
    distributed::environment mpi_env;
    distributed::communicator comm;
    distributed::communicator ring(MPI_COMM_WORLD, distributed::sum_route::ring);
    set_blas_threads(1);
    const auto data = synthetic(o.batch * 8);
    batch_sampler<float> sampler(data, o.batch, 1);
    sampler.start_epoch(0);
    matrix<float> x;
    matrix<float> y;
    for (const std::string& precision : o.precisions) {
        for (const std::string& method : o.methods) {
            time_method(comm, ring, o, method, precision, sampler, x, y);
        }
    }
    std::fflush(stdout);
    return 0;
}

/// Runs `ranks` workers under mpiexec; returns "mode method" -> {samples/s,
/// bytes}.
std::map<std::string, std::pair<double, double>> launch(std::size_t ranks, const options& o) {
    const auto joined = [](const std::vector<std::string>& items) {
        std::string all;
        for (const auto& item : items) {
            all += (all.empty() ? "" : ",") + item;
        }
        return all;
    };
    const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
    std::string command = std::string(::geteuid() == 0 ? "OMPI_ALLOW_RUN_AS_ROOT=1 "
                                                         "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "
                                                       : "") +
                          "OPENBLAS_NUM_THREADS=1 " LIGHTLOOP_MPIEXEC " -n " +
                          std::to_string(ranks) + " --oversubscribe '" + self +
                          "' --worker --methods " + joined(o.methods) + " --precision " +
                          joined(o.precisions) + " --batch " + std::to_string(o.batch) +
                          " --steps " + std::to_string(o.steps) + " 2>&1";
    FILE* pipe = ::popen(command.c_str(), "r");
    if (pipe == nullptr) {
        throw config_error("cannot start " + command);
    }
    std::map<std::string, std::pair<double, double>> rates;
    std::string output;
    char line[4096];
    while (std::fgets(line, sizeof line, pipe) != nullptr) {
        output += line;
        std::istringstream in(line);
        std::string word;
        std::string mode;
        std::string method;
        double rate = 0.0;
        double bytes = 0.0;
        if (in >> word >> mode >> method >> rate >> bytes && word == "rate") {
            rates[mode + " " + method] = {rate, bytes};
        }
    }
    const int status = ::pclose(pipe);
    if (status != 0 || rates.size() < o.methods.size() * o.precisions.size()) {
        throw config_error(std::to_string(ranks) + " ranks under " LIGHTLOOP_MPIEXEC " failed:\n" +
                           output);
    }
    return rates;
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const std::size_t n = v.size();
    return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/// Bytes one rank sends per step (fp32), by the models of docs/DESIGN.md:
/// data-parallel sums every parameter (a ring's 2 (p - 1) / p of them);
/// DFA layer-parallel sends each boundary's activations forward once and
/// broadcasts e (batch x classes) from the last rank; backprop
/// model-parallel sends the activations forward and the deltas back.
struct traffic_model {
    double data_parallel;
    double dfa_layer_parallel;
    double bp_model_parallel;
};

traffic_model model_traffic(std::size_t width, std::size_t layers, std::size_t classes_out,
                            std::size_t batch, std::size_t ranks) {
    const double p = static_cast<double>(ranks);
    const double w = static_cast<double>(width);
    const double n = static_cast<double>(batch);
    const double params =
      static_cast<double>(layers - 1) * w * w + w * static_cast<double>(classes_out);
    const double boundaries = std::min<double>(p - 1.0, static_cast<double>(layers) - 1.0);
    traffic_model t{};
    t.data_parallel = 2.0 * (p - 1.0) / p * params * 4.0;
    // per step, summed over ranks, then per rank
    const double forward = boundaries * n * w * 4.0;
    t.dfa_layer_parallel = (forward + (p - 1.0) * n * static_cast<double>(classes_out) * 4.0) / p;
    t.bp_model_parallel = 2.0 * forward / p;
    return t;
}

std::string bytes_text(double b) {
    const char* unit[] = {"B", "kB", "MB", "GB", "TB", "PB"};
    int u = 0;
    while (b >= 1000.0 && u < 5) {
        b /= 1000.0;
        ++u;
    }
    char text[32];
    std::snprintf(text, sizeof text, "%.3g %s", b, unit[u]);
    return text;
}

void print_model() {
    std::printf("\ncomputed: bytes one rank sends per step (fp32), batch 128, 10 classes, "
                "L layers of width w split over p ranks\n");
    std::printf("%10s %6s %6s %16s %18s %18s\n", "width w", "L", "ranks", "data-parallel",
                "DFA layer-par.", "BP model-par.");
    for (const std::size_t w : {1024ul, 10000ul, 100000ul, 1000000ul}) {
        for (const std::size_t p : {2ul, 8ul, 64ul, 1000ul}) {
            const std::size_t layers = std::max<std::size_t>(p, 3);
            const auto t = model_traffic(w, layers, 10, 128, p);
            std::printf(
              "%10zu %6zu %6zu %16s %18s %18s\n", w, layers, p, bytes_text(t.data_parallel).c_str(),
              bytes_text(t.dfa_layer_parallel).c_str(), bytes_text(t.bp_model_parallel).c_str());
        }
    }
    std::printf("data-parallel grows with the parameters (L w^2) and not with p; both layer "
                "splits grow with the activations (batch x w per boundary), and DFA's backward "
                "is one broadcast of e (batch x classes) where backprop sends every delta "
                "back.\n");
}

int measure(const options& o) {
    warn_about_precision_once<mixed_bf16>(nullptr); // the report carries it
    // Opened before the minutes of measuring, so an unwritable path loses no run.
    std::ofstream out;
    if (!o.json.empty()) {
        out.open(o.json);
        if (!out) {
            throw data_error("cannot write " + o.json);
        }
    }
    const auto data = synthetic(o.batch * 8);
    // mode -> method -> per-round samples/s
    std::map<std::string, std::map<std::string, std::vector<double>>> rates;
    std::map<std::string, double> bytes;
    for (std::size_t round = 0; round < o.rounds; ++round) {
        for (const std::size_t threads : {1ul, 2ul}) {
            for (const auto& p : o.precisions) {
                for (const auto& m : o.methods) {
                    rates["1 process x " + std::to_string(threads) + " thr"][label(m, p)].push_back(
                      single_process_rate(m, p, threads, o, data));
                }
            }
        }
        for (const std::size_t r : o.ranks) {
            for (const auto& [key, figures] : launch(r, o)) {
                const std::string kind = key.substr(0, key.find(' '));
                const std::string m = key.substr(key.find(' ') + 1);
                const std::string mode = kind + " " + std::to_string(r) + " x 1 thr";
                rates[mode][m].push_back(figures.first);
                bytes[mode + m] = figures.second;
            }
        }
        std::fprintf(stderr, "round %zu of %zu done\n", round + 1, o.rounds);
    }
    std::printf("lightloop %s | BLAS kernel %s | 784-1024-1024-10 tanh, global batch %zu, "
                "%zu steps per figure, median of %zu rounds\n",
                version_string, blas_core_name().c_str(), o.batch, o.steps, o.rounds);
    if (std::find(o.precisions.begin(), o.precisions.end(), "bf16") != o.precisions.end()) {
        std::printf("CPU matrix features: %s | bf16 products: %s\n",
                    matrix_features_text(detect_cpu_features()).c_str(), bf16_dispatch().c_str());
        if (const auto warning = precision_warning<mixed_bf16>()) {
            std::printf("%s\n", warning->c_str());
        }
    }
    std::printf("%-22s %-16s %12s %14s %14s %16s %8s\n", "mode, ranks", "method", "samples/s",
                "vs 1 proc 2thr", "vs 1 proc 1thr", "sent/step/rank", "vs fp32");
    std::ostringstream json;
    json << "[\n";
    bool first = true;
    auto print_mode = [&](const std::string& mode, const std::string& kind, std::size_t ranks) {
        for (const auto& p : o.precisions) {
            for (const auto& method : o.methods) {
                const std::string m = label(method, p);
                if (rates[mode][m].empty()) {
                    continue;
                }
                const double rate = median(rates[mode][m]);
                const double two = median(rates["1 process x 2 thr"][m]);
                const double one = median(rates["1 process x 1 thr"][m]);
                const double sent = bytes.count(mode + m) != 0 ? bytes[mode + m] : 0.0;
                // bf16 rows: against the same mode in fp32, where that ran.
                const auto& fp32 = rates[mode][method];
                const bool twin = p != "fp32" && !fp32.empty();
                const double vs_fp32 = twin ? rate / median(fp32) : 0.0;
                char vs_fp32_text[16] = "-";
                if (twin) {
                    std::snprintf(vs_fp32_text, sizeof vs_fp32_text, "%.2f", vs_fp32);
                }
                std::printf("%-22s %-16s %12.0f %14.2f %14.2f %16s %8s\n", mode.c_str(), m.c_str(),
                            rate, rate / two, rate / one,
                            ranks > 0 ? bytes_text(sent).c_str() : "-", vs_fp32_text);
                json << (first ? "" : ",\n") << "  {\"mode\": \"" << kind
                     << "\", \"ranks\": " << ranks << ", \"method\": \"" << method
                     << "\", \"precision\": \"" << p << "\", \"samples_per_second\": " << rate
                     << ", \"vs_one_process_2_threads\": " << rate / two
                     << ", \"vs_one_process_1_thread\": " << rate / one
                     << ", \"bytes_sent_per_step_per_rank\": " << sent;
                if (twin) {
                    json << ", \"vs_fp32\": " << vs_fp32;
                }
                json << "}";
                first = false;
            }
        }
    };
    print_mode("1 process x 1 thr", "single", 0);
    print_mode("1 process x 2 thr", "single", 0);
    for (const std::string kind :
         {"data", "data-whole", "data-ring", "data-overlap", "layer", "piped"}) {
        for (const std::size_t r : o.ranks) {
            print_mode(kind + " " + std::to_string(r) + " x 1 thr", kind, r);
        }
    }
    // Backprop model-parallel over the same layer split, computed: each
    // boundary's activations forward and its deltas back (batch x width
    // floats each way), against DFA layer-parallel's measured bytes.
    std::printf("\nbackprop model-parallel, same layer split (computed: activations forward, "
                "deltas back):\n");
    for (const std::size_t r : o.ranks) {
        if (r < 2 || r > widths.size() - 1) {
            continue;
        }
        std::vector<layer_range> split;
        with_network("bp", "fp32",
                     [&](const auto& net) { split = distributed::balanced_layer_split(net, r); });
        double sent = 0.0;
        for (const layer_range& block : split) {
            if (block.last + 1 < widths.size()) {
                sent += 2.0 * static_cast<double>(o.batch * widths[block.last] * sizeof(float));
            }
        }
        std::printf("  %zu ranks: %s per step and rank\n", r,
                    bytes_text(sent / static_cast<double>(r)).c_str());
        json << ",\n  {\"mode\": \"bp_model_parallel_computed\", \"ranks\": " << r
             << ", \"bytes_sent_per_step_per_rank\": " << sent / static_cast<double>(r) << "}";
    }
    json << "\n]\n";
    if (o.model) {
        print_model();
    }
    if (!o.json.empty()) {
        out << json.str();
        if (!out) {
            throw data_error("cannot write " + o.json);
        }
    }
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    ensure_fast_blas(argv);
    options o;
    CLI::App app{"Training throughput over MPI ranks (data- and DFA layer-parallel) against one "
                 "process on "
                 "the same cores, all from one invocation (it starts mpiexec itself).",
                 "distributed_throughput"};
    app.add_option("--methods", o.methods, "bp, dfa, holographic")
      ->delimiter(',')
      ->check(CLI::IsMember({"bp", "dfa", "holographic"}))
      ->capture_default_str();
    programs::add_precisions(
      app, o.precisions,
      "comma-separated precisions: fp32, bf16 (mixed: bf16 GEMM operands, fp32 "
      "master weights); each row against one process in its precision");
    app.add_option("--ranks", o.ranks, "rank counts to launch, 1 thread each")
      ->delimiter(',')
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
    app.add_option("--batch", o.batch, "global batch")
      ->check(programs::positive())
      ->capture_default_str();
    app.add_option("--steps", o.steps, "timed steps per figure")
      ->check(programs::positive())
      ->capture_default_str();
    app.add_option("--rounds", o.rounds, "rounds; figures are medians")
      ->check(programs::positive())
      ->capture_default_str();
    app.add_option("--json", o.json, "also write the rows as JSON");
    app.add_flag("--model", o.model,
                 "also print the computed communication of each mode up to 10^6-wide layers "
                 "and 1000 ranks");
    app.add_flag("--worker", o.worker, "internal: run as one rank under mpiexec");
    return programs::run(app, argc, argv, [&] { return o.worker ? worker(o) : measure(o); });
}
