// The README's example: a 2-64-64-3 tanh network learns three interleaved
// spirals with direct feedback alignment.
// (The README shows the body of train(); main adds --help and the exit codes
// every lightloop program shares.)
#include <lightloop/lightloop.hpp>

#include "cli.hpp"

#include <iostream>

namespace {
int train() {
    using namespace lightloop;
    const auto train = make_spirals(500, 3, 1.0, 0.02, /*seed=*/1);
    const auto test = make_spirals(500, 3, 1.0, 0.02, /*seed=*/2);

    auto net = make_network<dfa<dense_gaussian>, softmax_cross_entropy>(
      /*seed=*/7, dense<tanh_act>{2, 64}, dense<tanh_act>{64, 64}, dense<identity>{64, 3});
    adam opt{{.learning_rate = 3e-3}};
    for (int step = 0; step < 2000; ++step) {
        net.train_step(train.inputs, train.targets, opt); // full batch
    }
    std::cout << "DFA test accuracy: " << evaluate_accuracy(net, test.inputs, test.targets) << "\n";
    return 0;
}
} // namespace

int main(int argc, char** argv) {
    lightloop::ensure_fast_blas(argv); // re-executes once if OpenBLAS fell back to a generic kernel
    CLI::App app{"The README's example: DFA learns three interleaved spirals.", "quickstart"};
    return lightloop::programs::run(app, argc, argv, train);
}
