// The synthetic demo: every feedback
// method on the same synthetic task, same network, same seed, with a table of
// test accuracy and wall time.
//
//   compare_methods [--epochs N] [--lr X] [--hidden N] [--batch N] [--seed N]
#include <lightloop/lightloop.hpp>

#include "cli.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

namespace {

struct options {
    std::size_t epochs = 30;
    double learning_rate = 0.05;
    std::size_t hidden = 256;
    std::uint64_t seed = 7;
    std::size_t batch = 32;
};

void add_flags(CLI::App& app, options& opt) {
    using lightloop::programs::positive;
    app.add_option("--epochs", opt.epochs, "passes over the training set")
      ->check(positive())
      ->capture_default_str();
    app.add_option("--lr", opt.learning_rate, "learning rate (SGD, momentum 0.9)")
      ->check(positive())
      ->capture_default_str();
    app.add_option("--hidden", opt.hidden, "width of both hidden layers")
      ->check(positive())
      ->capture_default_str();
    app.add_option("--batch", opt.batch, "samples per step")
      ->check(positive())
      ->capture_default_str();
    app.add_option("--seed", opt.seed, "network and batch-order seed")->capture_default_str();
}

/// Every method the table compares, as one type: the network and its step
/// are compiled once, and each step runs the held method's own backward pass.
using method = lightloop::feedback_choice<
  lightloop::backprop, lightloop::feedback_alignment, lightloop::dfa<lightloop::dense_gaussian>,
  lightloop::dfa<lightloop::dense_uniform>, lightloop::drtp<lightloop::dense_gaussian>,
  lightloop::sign_dfa<lightloop::dense_gaussian>, lightloop::shallow>;

void run(const char* name, method feedback, const options& opt,
         const lightloop::labelled_data<float>& train,
         const lightloop::labelled_data<float>& test) {
    using namespace lightloop;
    const auto start = std::chrono::steady_clock::now();
    network net{std::move(feedback),
                softmax_cross_entropy{},
                opt.seed,
                dense<tanh_act>{train.inputs.shape(1), opt.hidden},
                dense<tanh_act>{opt.hidden, opt.hidden},
                dense<identity>{opt.hidden, 4}};
    sgd optimizer{{.learning_rate = opt.learning_rate, .momentum = 0.9}};
    std::vector<std::size_t> order(train.size());
    std::iota(order.begin(), order.end(), std::size_t{0});
    rng gen(opt.seed + 1);
    matrix<float> xb;
    matrix<float> yb;
    float last_loss = 0;
    for (std::size_t epoch = 0; epoch < opt.epochs; ++epoch) {
        for (std::size_t i = order.size(); i > 1; --i) {
            std::swap(order[i - 1], order[gen.below(i)]);
        }
        for (std::size_t s = 0; s < order.size(); s += opt.batch) {
            const std::span<const std::size_t> rows(order.data() + s,
                                                    std::min(opt.batch, order.size() - s));
            gather_rows(train.inputs, rows, xb);
            gather_rows(train.targets, rows, yb);
            last_loss = net.train_step(xb, yb, optimizer);
        }
    }
    const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("%-20s %10.4f %12.2f %10.3f\n", name, static_cast<double>(last_loss),
                100.0 * evaluate_accuracy(net, test.inputs, test.targets), seconds);
}

} // namespace

int main(int argc, char** argv) {
    using namespace lightloop;
    ensure_fast_blas(argv); // re-executes once if OpenBLAS fell back to a generic kernel
    options opt;
    CLI::App app{"Trains every feedback method on a synthetic task (a 4-class Gaussian mixture "
                 "in 6-D) with the same network and seed, and prints a table.",
                 "compare_methods"};
    add_flags(app, opt);
    return programs::run(app, argc, argv, [&] {
        // 4 classes, each a mixture of 6 Gaussian clusters in 6-D: chance 25%, a
        // linear classifier about 60%.
        const auto train = make_blobs(1000, 4, 6, 6, 0.4, /*task_seed=*/1, /*sample_seed=*/2);
        const auto test = make_blobs(1000, 4, 6, 6, 0.4, /*task_seed=*/1, /*sample_seed=*/3);
        std::printf("lightloop %s, BLAS kernel %s\n", version_string, blas_core_name().c_str());
        std::printf(
          "task: 4-class Gaussian mixture in 6-D, %zu train / %zu test; network 6-%zu-%zu-4 "
          "tanh; SGD momentum 0.9, lr %g, batch %zu, %zu epochs, seed %llu\n\n",
          train.size(), test.size(), opt.hidden, opt.hidden, opt.learning_rate, opt.batch,
          opt.epochs, static_cast<unsigned long long>(opt.seed));
        std::printf("%-20s %10s %12s %10s\n", "method", "last loss", "test acc %", "time s");
        run("backprop", backprop{}, opt, train, test);
        run("feedback alignment", feedback_alignment{}, opt, train, test);
        run("dfa (gaussian)", dfa<dense_gaussian>{}, opt, train, test);
        run("dfa (uniform)", dfa<dense_uniform>{}, opt, train, test);
        run("drtp", drtp<dense_gaussian>{}, opt, train, test);
        run("sign-dfa", sign_dfa<dense_gaussian>{}, opt, train, test);
        run("shallow", shallow{}, opt, train, test);
        return 0;
    });
}
