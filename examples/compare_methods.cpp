// The main demo (until the Fashion-MNIST experiment lands): every feedback
// method on the same synthetic task, same network, same seed, with a table of
// test accuracy and wall time.
//
//   compare_methods [--epochs N] [--lr X] [--hidden N] [--seed N]
#include <lightloop/lightloop.hpp>

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

[[noreturn]] void usage(const char* message) {
    std::fprintf(
      stderr,
      "compare_methods: %s\n"
      "usage: compare_methods [--epochs N] [--lr X] [--hidden N] [--batch N] [--seed N]\n",
      message);
    std::exit(2);
}

options parse(int argc, char** argv) {
    options opt;
    for (int i = 1; i < argc; ++i) {
        const std::string flag = argv[i];
        if (flag == "--help" || flag == "-h") {
            usage("trains every feedback method on a synthetic task");
        }
        if (i + 1 >= argc) {
            usage(("missing value after " + flag).c_str());
        }
        const char* value = argv[++i];
        char* end = nullptr;
        if (flag == "--lr") {
            opt.learning_rate = std::strtod(value, &end);
        } else {
            const unsigned long long v = std::strtoull(value, &end, 10);
            if (flag == "--epochs") {
                opt.epochs = v;
            } else if (flag == "--hidden") {
                opt.hidden = v;
            } else if (flag == "--batch") {
                opt.batch = v;
            } else if (flag == "--seed") {
                opt.seed = v;
            } else {
                usage(("unknown flag " + flag).c_str());
            }
        }
        if (end == value || *end != '\0') {
            usage(("not a number: " + flag + " " + value).c_str());
        }
    }
    if (opt.epochs == 0 || opt.hidden == 0 || opt.batch == 0 || !(opt.learning_rate > 0)) {
        usage("epochs, hidden, batch and lr must be positive");
    }
    return opt;
}

template <class Feedback>
void run(const char* name, const options& opt, const lightloop::labelled_data<float>& train,
         const lightloop::labelled_data<float>& test) {
    using namespace lightloop;
    const auto start = std::chrono::steady_clock::now();
    auto net = make_network<Feedback, softmax_cross_entropy>(
      opt.seed, dense<tanh_act>{train.inputs.shape(1), opt.hidden},
      dense<tanh_act>{opt.hidden, opt.hidden}, dense<identity>{opt.hidden, 4});
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
    const options opt = parse(argc, argv);
    // 4 classes, each a mixture of 6 Gaussian clusters in 6-D: chance 25%, a
    // linear classifier about 60%.
    const auto train = make_blobs(1000, 4, 6, 6, 0.4, /*task_seed=*/1, /*sample_seed=*/2);
    const auto test = make_blobs(1000, 4, 6, 6, 0.4, /*task_seed=*/1, /*sample_seed=*/3);
    std::printf("lightloop %s, BLAS kernel %s\n", version_string, blas_core_name().c_str());
    std::printf("task: 4-class Gaussian mixture in 6-D, %zu train / %zu test; network 6-%zu-%zu-4 "
                "tanh; SGD momentum 0.9, lr %g, batch %zu, %zu epochs, seed %llu\n\n",
                train.size(), test.size(), opt.hidden, opt.hidden, opt.learning_rate, opt.batch,
                opt.epochs, static_cast<unsigned long long>(opt.seed));
    std::printf("%-20s %10s %12s %10s\n", "method", "last loss", "test acc %", "time s");
    run<backprop>("backprop", opt, train, test);
    run<feedback_alignment>("feedback alignment", opt, train, test);
    run<dfa<dense_gaussian>>("dfa (gaussian)", opt, train, test);
    run<dfa<dense_uniform>>("dfa (uniform)", opt, train, test);
    run<drtp<dense_gaussian>>("drtp", opt, train, test);
    run<shallow>("shallow", opt, train, test);
}
