// The accuracy check against PyTorch on Fashion-MNIST.
//
// Trains the paper's network (784-1024-1024-10 tanh, SGD momentum 0.9, lr 0.01,
// batch 128, Glorot-uniform weights; mean over --seeds) with backprop, dense DFA and DFA
// through the simulated holographic OPU, and holds them to floors derived from
// benchmarks/torch_reference.tsv (made by benchmarks/torch_reference.py with
// Debian's PyTorch, same network, data and hyperparameters, averaged over its
// seeds):
//   backprop   >= PyTorch backprop - 1 point
//   dense DFA  >= PyTorch DFA - 1 point
//   optical holographic DFA >= lightloop dense DFA - 3 points
// CTest runs it for 1 epoch: backprop and dense DFA over seeds 0 to 5, the
// holographic OPU over seeds 0 to 15 (--optical-seeds; tests/CMakeLists.txt
// says why it needs more); the README gives the longer run. Each line ends
// with the seconds fit took for that method over all its seeds.
//
// With --precision fp32,bf16 it also trains each method in mixed bf16
// (dense<..., mixed_bf16> and conv2d<..., mixed_bf16>: bf16 GEMM operands,
// fp32 weights) and holds each to within 0.3 points of the same method in
// fp32, same seeds.
//
// With --model cnn it trains examples/fashion_cnn.cpp's CNN with backprop and
// dense DFA against benchmarks/torch_cnn_reference.tsv (the same script with
// --model cnn; its DFA written by hand):
//   backprop   >= PyTorch backprop - 0.5 point
//   dense DFA  >= PyTorch DFA - 1 point
//
// With --nudge X it also trains each fp32 method with the first weight of
// the layer below the output moved by X before the first step, and prints
// each seed's difference from fp32: how far a change of arithmetic alone
// moves a method's accuracy, the spread a bf16 difference (or another
// machine's) is to be read against. Reported, not checked.
//
//   fashion_check --reference benchmarks/torch_reference.tsv [--model mlp|cnn]
//                 [--epochs N] [--seeds 0,1,2] [--optical-seeds 0,1,2,3] [--data DIR]
//                 [--precision fp32,bf16] [--nudge 1e-6]
#include <lightloop/lightloop.hpp>

#include "cli.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

namespace {

/// Mean test accuracy per method at `epoch` over the reference's seeds.
std::map<std::string, double> read_reference(const std::string& path, std::size_t epoch) {
    std::ifstream in(path);
    if (!in) {
        throw lightloop::data_error(path + ": cannot open reference");
    }
    std::map<std::string, std::pair<double, int>> sums;
    std::string line;
    while (std::getline(in, line)) {
        if (line.empty() || line[0] == '#' || line.rfind("method", 0) == 0) {
            continue;
        }
        std::istringstream fields(line);
        std::string method;
        std::size_t seed = 0;
        std::size_t e = 0;
        double accuracy = 0;
        if (!(fields >> method >> seed >> e >> accuracy)) {
            throw lightloop::data_error(path + ": bad line '" + line + "'");
        }
        if (e == epoch) {
            sums[method].first += accuracy;
            sums[method].second += 1;
        }
    }
    std::map<std::string, double> means;
    for (const auto& [method, s] : sums) {
        means[method] = s.first / s.second;
    }
    for (const char* needed : {"bp", "dfa"}) {
        if (means.count(needed) == 0) {
            throw lightloop::data_error(path + ": no '" + needed + "' result for epoch " +
                                        std::to_string(epoch));
        }
    }
    return means;
}

/// A method's mean test accuracy over the seeds, and the seconds fit took for
/// all of them (what the check's time goes to).
struct result {
    double accuracy = 0;
    double seconds = 0;
    std::vector<double> per_seed; // each seed's test accuracy, in --seeds' order
};

/// Test accuracy of `net` after `epochs` of SGD momentum 0.9, lr 0.01, batch 128.
template <class Net>
result train_one(Net net, const lightloop::mnist_data& data, std::size_t epochs,
                 std::uint64_t seed) {
    using namespace lightloop;
    sgd opt{{.learning_rate = 0.01, .momentum = 0.9}};
    const auto history =
      fit(net, opt, data.train, data.test, {.epochs = epochs, .batch = 128, .seed = seed});
    return {history.epochs.back().test_accuracy, history.seconds, {}};
}

/// The check's methods, one type (a run-time choice): the networks, fit and
/// their steps are compiled once for each model and precision, not once for
/// each method as well.
using method =
  lightloop::feedback_choice<lightloop::backprop, lightloop::dfa<lightloop::dense_gaussian>,
                             lightloop::dfa<lightloop::optical<>>>;

template <class P>
auto make_mlp(const method& feedback, std::uint64_t seed) {
    using namespace lightloop;
    return network{feedback,
                   softmax_cross_entropy{},
                   seed,
                   dense<tanh_act, P>{784, 1024},
                   dense<tanh_act, P>{1024, 1024},
                   dense<identity, P>{1024, 10}};
}

template <class P>
auto make_cnn(const method& feedback, std::uint64_t seed) {
    using namespace lightloop;
    return network{
      feedback,
      softmax_cross_entropy{},
      seed,
      conv2d<tanh_act, P>({1, 28, 28}, {.out_channels = 32, .kernel = 5, .padding = 2}),
      max_pool2d<>({32, 28, 28}, 2),
      conv2d<tanh_act, P>({32, 14, 14}, {.out_channels = 64, .kernel = 5, .padding = 2}),
      max_pool2d<>({64, 14, 14}, 2),
      flatten<>({64, 7, 7}),
      dense<tanh_act, P>{3136, 1024},
      dense<identity, P>{1024, 10}};
}

/// `net` with the first weight of the layer below its output moved by
/// `nudge` (--nudge).
template <class Net>
Net nudged(Net net, float nudge) {
    if (nudge != 0.0f) {
        net.template layer<Net::depth - 2>().weights().data()[0] += nudge;
        net.parameters_changed();
    }
    return net;
}

/// Test accuracy after `epochs`, averaged over `seeds` (network, feedback and
/// batch-order seed), as the reference averages PyTorch's seeds: one run
/// swings by about a point from epoch to epoch. With `nudge`, each network
/// starts with one weight moved by it (nudged).
template <class P = float>
result train(const method& feedback, const std::string& model, const lightloop::mnist_data& data,
             std::size_t epochs, const std::vector<std::uint64_t>& seeds, float nudge = 0.0f) {
    using namespace lightloop;
    result sum;
    for (const auto seed : seeds) {
        const auto one =
          model == "cnn"
            ? train_one(nudged(make_cnn<P>(feedback, seed), nudge), data, epochs, seed)
            : train_one(nudged(make_mlp<P>(feedback, seed), nudge), data, epochs, seed);
        sum.accuracy += one.accuracy;
        sum.seconds += one.seconds;
        sum.per_seed.push_back(one.accuracy);
    }
    sum.accuracy /= static_cast<double>(seeds.size());
    return sum;
}

/// Each seed's accuracy; with `paired` (fp32's runs on the same seeds), the
/// per-seed differences and their mean's standard error: how much of a bf16
/// check's difference the seeds' own spread explains.
void print_seeds(const std::vector<double>& runs, const std::vector<double>& paired) {
    std::printf("%32s", "per seed:");
    for (const double a : runs) {
        std::printf(" %.2f", 100 * a);
    }
    std::printf("\n");
    if (paired.size() != runs.size() || runs.size() < 2) {
        return;
    }
    const auto n = static_cast<double>(runs.size());
    double mean = 0;
    std::printf("%32s", "minus fp32:");
    for (std::size_t i = 0; i < runs.size(); ++i) {
        const double d = 100 * (runs[i] - paired[i]);
        mean += d / n;
        std::printf(" %+.2f", d);
    }
    double square = 0;
    for (std::size_t i = 0; i < runs.size(); ++i) {
        const double d = 100 * (runs[i] - paired[i]) - mean;
        square += d * d;
    }
    std::printf("  (mean %+.2f, its standard error %.2f points)\n", mean,
                std::sqrt(square / (n - 1) / n));
}

} // namespace

int main(int argc, char** argv) {
    using namespace lightloop;
    ensure_fast_blas(argv); // re-executes once if OpenBLAS fell back to a generic kernel
    std::string data_dir = "/usr/share/datasets/fashion-mnist";
    std::string reference;
    std::size_t epochs = 1;
    std::vector<std::uint64_t> seeds{0};
    std::vector<std::uint64_t> optical_seeds;
    std::string model = "mlp";
    std::vector<std::string> precisions{"fp32"};
    double nudge = 0.0;
    CLI::App app{"Trains the paper's network (or a CNN) on Fashion-MNIST with backprop, dense "
                 "DFA and holographic optical DFA, and holds the mean test accuracy over seeds to "
                 "floors derived from PyTorch's reference figures.",
                 "fashion_check"};
    app.add_option("--reference", reference, "torch_reference.tsv (PyTorch's figures)")
      ->required()
      ->check(CLI::ExistingFile);
    app.add_option("--model", model, "mlp (the paper's network) or cnn (fashion_cnn's)")
      ->check(CLI::IsMember({"mlp", "cnn"}))
      ->capture_default_str();
    app.add_option("--data", data_dir, "Fashion-MNIST IDX directory")->capture_default_str();
    app.add_option("--epochs", epochs, "epochs per run")
      ->check(programs::positive())
      ->capture_default_str();
    app.add_option("--seeds", seeds, "comma-separated seeds to average over")
      ->delimiter(',')
      ->capture_default_str();
    app
      .add_option("--optical-seeds", optical_seeds,
                  "the seeds for holographic optical DFA, if not --seeds (its camera noise "
                  "feeds back into training, so its mean needs more of them)")
      ->delimiter(',');
    programs::add_precisions(
      app, precisions,
      "fp32, or fp32,bf16: also train in mixed bf16 and hold each method to within "
      "0.3 points of fp32");
    app
      .add_option("--nudge", nudge,
                  "also train each fp32 method with one weight (the first of the layer below "
                  "the output) moved by this much, and print each seed's difference from fp32: "
                  "the spread a change of arithmetic alone gives (reported, not checked)")
      ->check(programs::positive())
      ->check(CLI::Range(0.0, 0.01));
    return programs::run(app, argc, argv, [&] {
        const bool with_bf16 =
          std::find(precisions.begin(), precisions.end(), "bf16") != precisions.end();
        const bool cnn = model == "cnn";
        if (cnn && !optical_seeds.empty()) {
            throw config_error("--optical-seeds with --model cnn (the CNN's check "
                               "has no optical run)");
        }
        const auto torch = read_reference(reference, epochs);
        const auto data = load_mnist(data_dir);
        if (optical_seeds.empty()) {
            optical_seeds = seeds;
        }
        std::printf("Fashion-MNIST, %s, SGD momentum 0.9 lr 0.01, batch 128, %zu epoch(s), mean "
                    "over %zu seed(s)%s; BLAS kernel %s\n",
                    cnn ? "CNN (conv 32 5x5, pool, conv 64 5x5, pool, 1024, 10; tanh)"
                        : "784-1024-1024-10 tanh",
                    epochs, seeds.size(),
                    cnn || optical_seeds == seeds
                      ? ""
                      : (", holographic over " + std::to_string(optical_seeds.size())).c_str(),
                    blas_core_name().c_str());
        if (with_bf16) {
            std::printf("bf16 products: %s (%s)\n", bf16_dispatch().c_str(),
                        matrix_features_text(detect_cpu_features()).c_str());
        }
        struct check {
            const char* name;
            result value;
            double floor;
            const char* against;
            double ceiling = 1.0; // an accuracy above it fails too (the bf16 checks)
            result paired{};      // the bf16 checks: fp32's runs on the same seeds
        };
        std::vector<check> checks;
        const auto bp = train(backprop{}, model, data, epochs, seeds);
        const auto direct = train(dfa<dense_gaussian>{}, model, data, epochs, seeds);
        if (cnn) {
            checks = {
              {"backprop", bp, torch.at("bp") - 0.005, "PyTorch backprop - 0.5 point"},
              {"dfa dense", direct, torch.at("dfa") - 0.01, "PyTorch DFA - 1 point"},
            };
        } else {
            checks = {
              {"backprop", bp, torch.at("bp") - 0.01, "PyTorch backprop - 1 point"},
              {"dfa dense", direct, torch.at("dfa") - 0.01, "PyTorch DFA - 1 point"},
            };
        }
        // The CNN's check trains backprop and dense DFA only (its optical
        // run is the demo's).
        const auto holographic =
          cnn ? result{} : train(dfa<optical<>>{}, model, data, epochs, optical_seeds);
        if (!cnn) {
            checks.push_back({"dfa optical holographic", holographic, direct.accuracy - 0.03,
                              "lightloop dense DFA - 3 points"});
        }
        if (with_bf16) {
            // Within 0.3 points of fp32, either way.
            const auto near = [&](const char* name, result value, result fp32) {
                checks.push_back({name, value, fp32.accuracy - 0.003, "fp32 -/+ 0.3 point",
                                  fp32.accuracy + 0.003, fp32});
            };
            using P = mixed_bf16;
            near("bf16 backprop", train<P>(backprop{}, model, data, epochs, seeds), bp);
            near("bf16 dfa dense", train<P>(dfa<dense_gaussian>{}, model, data, epochs, seeds),
                 direct);
            if (!cnn) {
                near("bf16 dfa optical holographic",
                     train<P>(dfa<optical<>>{}, model, data, epochs, optical_seeds), holographic);
            }
        }
        // The nudged runs: reported after the checks, never failed.
        struct nudged_run {
            const char* name;
            result value;
            const result* fp32;
        };
        std::vector<nudged_run> nudges;
        if (nudge > 0.0) {
            const auto by = static_cast<float>(nudge);
            nudges.push_back(
              {"nudged backprop", train(backprop{}, model, data, epochs, seeds, by), &bp});
            nudges.push_back({"nudged dfa dense",
                              train(dfa<dense_gaussian>{}, model, data, epochs, seeds, by),
                              &direct});
            if (!cnn) {
                nudges.push_back({"nudged dfa optical holographic",
                                  train(dfa<optical<>>{}, model, data, epochs, optical_seeds, by),
                                  &holographic});
            }
        }
        int failed = 0;
        for (const auto& c : checks) {
            const double accuracy = c.value.accuracy;
            const bool ok = accuracy >= c.floor && accuracy <= c.ceiling;
            failed += ok ? 0 : 1;
            if (c.ceiling < 1.0) {
                std::printf("%-30s %6.2f %%  range %6.2f-%.2f %% (%s)  %s", c.name, 100 * accuracy,
                            100 * c.floor, 100 * c.ceiling, c.against, ok ? "ok" : "OUT OF RANGE");
            } else {
                std::printf("%-30s %6.2f %%  floor %6.2f %% (%s)  %s", c.name, 100 * accuracy,
                            100 * c.floor, c.against, ok ? "ok" : "BELOW FLOOR");
            }
            std::printf("  [%.1f s]\n", c.value.seconds);
            print_seeds(c.value.per_seed, c.paired.per_seed);
        }
        for (const auto& r : nudges) {
            std::printf("%-30s %6.2f %%  (fp32, one weight moved by %g; not checked)  [%.1f s]\n",
                        r.name, 100 * r.value.accuracy, nudge, r.value.seconds);
            print_seeds(r.value.per_seed, r.fp32->per_seed);
        }
        std::printf("PyTorch reference (mean over seeds): backprop %.2f %%, DFA %.2f %%\n",
                    100 * torch.at("bp"), 100 * torch.at("dfa"));
        std::printf("%d passed, %d failed\n", static_cast<int>(checks.size()) - failed, failed);
        return failed == 0 ? 0 : 1;
    });
}
