#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "support/files.hpp"
#include "support/helpers.hpp"

using namespace lightloop;
using lightloop::testing::max_abs_diff;
using lightloop::testing::random_matrix;

namespace dropout_tests {

/// dense 6 -> 32 tanh, dropout, dense 32 -> 3, in double.
template <class Method>
auto dropped_stack(std::uint64_t seed, double rate) {
    return make_network<Method, softmax_cross_entropy>(seed, dense<tanh_act, double>{6, 32},
                                                       dropout<double>(32, rate),
                                                       dense<identity, double>{32, 3});
}

} // namespace dropout_tests

// A data-parallel shard holds rows rank, rank + p, ... of the batch; its
// row i must get the mask of sample rank + i p, not of sample i (every
// rank's row i drew the same mask: p samples shared each).
TEST_CASE("dropout draws a shard's rows the masks of their samples in the whole batch",
          "[layers][dropout]") {
    const std::size_t width = 64;
    dropout<double> layer(width, 0.5);
    layer.initialize(21);
    const auto x = random_matrix<double>(7, width, 22);
    const matrix<double> whole = layer.forward_training(x, 3);
    // Rank 1 of 3: samples 1 and 4.
    auto shard = matrix<double>::from_shape({2, width});
    for (std::size_t c = 0; c < width; ++c) {
        shard(0, c) = x(1, c);
        shard(1, c) = x(4, c);
    }
    const matrix<double> numbered = layer.forward_training(shard, 3, {1, 3});
    const matrix<double> unnumbered = layer.forward_training(shard, 3);
    bool same = true;
    bool same_as_first_rows = true;
    for (std::size_t c = 0; c < width; ++c) {
        same = same && numbered(0, c) == whole(1, c) && numbered(1, c) == whole(4, c);
        // Unnumbered, row i is sample i: the masks of samples 0 and 1.
        same_as_first_rows = same_as_first_rows &&
                             (unnumbered(0, c) == 0.0) == (whole(0, c) == 0.0) &&
                             (unnumbered(1, c) == 0.0) == (whole(1, c) == 0.0);
    }
    CHECK(same);
    CHECK(same_as_first_rows);
}

TEST_CASE("dropout drops at its rate, scales what it keeps, and passes everything at evaluation",
          "[layers][dropout]") {
    const std::size_t n = 200;
    const std::size_t width = 500;
    const double rate = 0.3;
    dropout<double> layer(width, rate);
    layer.initialize(11);
    const auto x = random_matrix<double>(n, width, 12);
    const matrix<double> evaluated = layer.forward(x);
    CHECK((evaluated == x));
    const matrix<double> trained = layer.forward_training(x, 0);
    std::size_t dropped = 0;
    double worst = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
        if (trained.data()[i] == 0.0) {
            ++dropped;
        } else {
            worst = std::max(worst, std::abs(trained.data()[i] - x.data()[i] / (1.0 - rate)));
        }
    }
    CHECK(worst < 1e-15);
    // Binomial(100 000, 0.3): mean 30 000, sd 145; five sd either way.
    const double expected = rate * static_cast<double>(n * width);
    const double sd = std::sqrt(expected * (1.0 - rate));
    CHECK(std::abs(static_cast<double>(dropped) - expected) < 5 * sd);

    // The signal goes back through the same mask.
    const auto signal = random_matrix<double>(n, width, 13);
    layer.scale_by_derivative(signal.data(), width);
    auto into = matrix<double>::from_shape({n, width});
    layer.backpropagate(into);
    double gap = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
        const double keep = trained.data()[i] == 0.0 ? 0.0 : 1.0 / (1.0 - rate);
        gap = std::max(gap, std::abs(into.data()[i] - signal.data()[i] * keep));
    }
    CHECK(gap < 1e-15);

    CHECK_THROWS_AS(dropout<>(10, 1.0), config_error);
    CHECK_THROWS_AS(dropout<>(10, -0.1), config_error);
    CHECK_THROWS_WITH(dropout<>(10, 1e-9 - 1.0),
                      "lightloop::dropout: rate must be in [0, 1), got -0.999999999");
}

TEST_CASE("dropout's masks depend on the seed, step and sample only, not the threads",
          "[layers][dropout]") {
    const auto x = random_matrix<float>(300, 256, 21);
    const auto mask_at = [&](std::uint64_t seed, std::uint64_t step, int threads) {
        set_blas_threads(threads);
        dropout<float> layer(256, 0.5);
        layer.initialize(seed);
        matrix<float> out = layer.forward_training(x, step);
        layer.forward(x); // an evaluation pass between changes nothing
        return out;
    };
    const auto first = mask_at(1, 5, 1);
    CHECK((mask_at(1, 5, 2) == first));
    CHECK((mask_at(1, 6, 1) != first));
    CHECK((mask_at(2, 5, 1) != first));
    set_blas_threads(1);
}

TEST_CASE("backprop through dropout matches finite differences of the training loss",
          "[layers][dropout][gradient]") {
    auto net = dropout_tests::dropped_stack<backprop>(31, 0.4);
    const auto x = random_matrix<double>(5, 6, 32);
    const auto y = one_hot<double>(std::span<const int>(std::vector<int>{0, 1, 2, 1, 0}), 3);
    const auto result = check_gradients(net, x, y, {.step = 1e-5, .floor = 1e-4});
    CAPTURE(result.worst_layer, result.worst_entry);
    CHECK(result.entries_checked == (6 * 32 + 32) + (32 * 3 + 3));
    CHECK(result.max_rel_error < 1e-5);
    // The training loss sees the masks; the evaluation loss does not.
    CHECK(net.training_loss(x, y) != net.loss(x, y));
}

TEST_CASE("a run with dropout resumed from its checkpoint continues bit for bit",
          "[layers][dropout][train]") {
    lightloop::testing::scratch_dir dir("dropout");
    const auto x = random_matrix<double>(16, 6, 41);
    std::vector<int> labels(16);
    for (std::size_t i = 0; i < labels.size(); ++i) {
        labels[i] = static_cast<int>(i % 3);
    }
    const auto y = one_hot<double>(std::span<const int>(labels), 3);
    const auto step = [&](auto& net, auto& opt) { net.train_step(x, y, opt); };

    auto straight = dropout_tests::dropped_stack<backprop>(42, 0.5);
    sgd<double> straight_opt{{.learning_rate = 0.1, .momentum = 0.9}};
    for (int i = 0; i < 6; ++i) {
        step(straight, straight_opt);
    }

    auto first = dropout_tests::dropped_stack<backprop>(42, 0.5);
    sgd<double> first_opt{{.learning_rate = 0.1, .momentum = 0.9}};
    for (int i = 0; i < 3; ++i) {
        step(first, first_opt);
    }
    save_checkpoint(first, first_opt, dir / "net.ckpt", 1);
    auto resumed = dropout_tests::dropped_stack<backprop>(42, 0.5);
    sgd<double> resumed_opt{{.learning_rate = 0.1, .momentum = 0.9}};
    load_checkpoint(resumed, resumed_opt, dir / "net.ckpt");
    for (int i = 0; i < 3; ++i) {
        step(resumed, resumed_opt);
    }
    // A layer drawing its masks from a stream of its own would start that
    // stream again in the resumed run and differ here.
    CHECK(lightloop::testing::parameters_of(resumed) ==
          lightloop::testing::parameters_of(straight));
}

TEST_CASE("dropout under DFA gets no slice; under feedback alignment the mask routes the signal",
          "[layers][dropout][dfa]") {
    const auto x = random_matrix<double>(5, 6, 51);
    const auto y = one_hot<double>(std::span<const int>(std::vector<int>{0, 1, 2, 1, 0}), 3);
    auto direct = dropout_tests::dropped_stack<dfa<dense_gaussian>>(52, 0.5);
    CHECK(direct.feedback().projection_size() == 32);
    auto bp = dropout_tests::dropped_stack<backprop>(53, 0.5);
    auto fa = dropout_tests::dropped_stack<feedback_alignment>(53, 0.5);
    fa.feedback().feedback_matrix<double>(1) =
      lightloop::testing::transposed(fa.layer<2>().weights());
    bp.compute_gradients(x, y);
    fa.compute_gradients(x, y);
    CHECK(max_abs_diff(fa.layer<0>().weight_gradient(), bp.layer<0>().weight_gradient()) < 1e-14);
}
