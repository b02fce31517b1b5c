// Trains a small DFA network and exits non-zero unless it learned (or the
// package's version differs from the headers').
#include <lightloop/lightloop.hpp>

#include <cstdio>
#include <cstring>

int main() {
    using namespace lightloop;
    if (std::strcmp(version_string, LIGHTLOOP_PACKAGE_VERSION) != 0) {
        std::printf("consumer: headers say %s, the CMake package %s\n", version_string,
                    LIGHTLOOP_PACKAGE_VERSION);
        return 1;
    }
    const auto train = make_spirals(100, 2, 0.75, 0.02, 1);
    auto net = make_network<dfa<dense_gaussian>, softmax_cross_entropy>(
      3, dense<tanh_act>{2, 32}, dense<tanh_act>{32, 32}, dense<identity>{32, 2});
    adam opt{{.learning_rate = 0.01}};
    for (int step = 0; step < 300; ++step) {
        net.train_step(train.inputs, train.targets, opt);
    }
    const double acc = evaluate_accuracy(net, train.inputs, train.targets);
    std::printf("consumer: lightloop %s, training accuracy %.3f\n", version_string, acc);
    return acc > 0.9 ? 0 : 1;
}
