#include <catch2/catch.hpp>

#include <cmath>
#include <utility>
#include <vector>

#include "support/files.hpp"
#include "support/helpers.hpp"

using namespace lightloop;
using lightloop::testing::max_abs_diff;
using lightloop::testing::random_matrix;

namespace norm_tests {

/// conv 2x6x6 -> 3x6x6 (no activation), batch_norm with tanh over the maps,
/// max-pool 2, flatten, dense 27 -> 8, layer_norm with tanh, dropout, dense
/// 8 -> 3: every layer type in one stack, in double.
template <class Method>
auto mixed_stack(std::uint64_t seed) {
    return make_network<Method, softmax_cross_entropy>(
      seed, conv2d<identity, double>({2, 6, 6}, {.out_channels = 3, .kernel = 3, .padding = 1}),
      batch_norm<tanh_act, double>({3, 6, 6}), max_pool2d<double>({3, 6, 6}, 2),
      flatten<double>({3, 3, 3}), dense<identity, double>{27, 8}, layer_norm<tanh_act, double>(8),
      dropout<double>(8, 0.25), dense<identity, double>{8, 3});
}

} // namespace norm_tests

TEST_CASE("layer_norm gives each sample mean 0 and variance 1 before its scale and shift",
          "[layers][norm]") {
    layer_norm<identity, double> norm({2, 3, 3});
    norm.initialize(1);
    const auto x = random_matrix<double>(4, 18, 2);
    const auto& h = norm.forward(x);
    for (std::size_t r = 0; r < 4; ++r) {
        double mean = 0;
        double square = 0;
        for (std::size_t c = 0; c < 18; ++c) {
            mean += h(r, c) / 18;
            square += h(r, c) * h(r, c) / 18;
        }
        CHECK(std::abs(mean) < 1e-15);
        // var / (var + eps) with the sample's own variance.
        double xm = 0;
        double xv = 0;
        for (std::size_t c = 0; c < 18; ++c) {
            xm += x(r, c) / 18;
        }
        for (std::size_t c = 0; c < 18; ++c) {
            xv += (x(r, c) - xm) * (x(r, c) - xm) / 18;
        }
        CHECK(std::abs(square - xv / (xv + 1e-5)) < 1e-14);
    }
    CHECK(norm.parameter_layout()[0].shape == std::vector<std::size_t>{18});
    CHECK_THROWS_AS(layer_norm<>(8, 0.0), config_error);
    CHECK_THROWS_AS(norm.forward(random_matrix<double>(2, 17, 3)), shape_error);
}

// Central differences in double (1e-5 relative, as test_gradients.cpp): a
// convolution, both norms, pooling, flatten, dense layers and dropout in one
// stack, against the training loss (the batch's statistics and dropout's
// masks of that step).
TEST_CASE("backprop through a stack of every layer type matches finite differences",
          "[layers][norm][gradient]") {
    auto net = norm_tests::mixed_stack<backprop>(71);
    const auto x = random_matrix<double>(4, 72, 72);
    const auto y = one_hot<double>(std::span<const int>(std::vector<int>{0, 1, 2, 1}), 3);
    const auto result = check_gradients(net, x, y, {.step = 1e-5, .floor = 1e-4});
    CAPTURE(result.worst_layer, result.worst_entry);
    CHECK(result.entries_checked == (3 * 18 + 3) + (3 + 3) + (27 * 8 + 8) + (8 + 8) + (8 * 3 + 3));
    CHECK(result.max_rel_error < 1e-5);
}

TEST_CASE("feedback methods on the norms: DFA gives each a slice, feedback alignment passes "
          "through them exactly",
          "[layers][norm][dfa]") {
    const auto x = random_matrix<double>(4, 72, 81);
    const auto y = one_hot<double>(std::span<const int>(std::vector<int>{0, 1, 2, 1}), 3);
    // DFA: the convolution's 108 outputs, the batch norm's 108, the dense 8
    // and the layer norm's 8.
    auto direct = norm_tests::mixed_stack<dfa<dense_gaussian>>(82);
    CHECK(direct.feedback().projection_size() == 108 + 108 + 8 + 8);
    direct.compute_gradients(x, y);
    CHECK(direct.layer<0>().backward_data_products() == 0);

    // Feedback alignment with B = W^T above the weighted layers is backprop:
    // it draws nothing for the norms and goes through their exact backward.
    auto bp = norm_tests::mixed_stack<backprop>(83);
    auto fa = norm_tests::mixed_stack<feedback_alignment>(83);
    CHECK(fa.feedback().feedback_matrix<double>(0).size() == 0); // the batch norm
    CHECK(fa.feedback().feedback_matrix<double>(4).size() == 0); // the layer norm
    fa.feedback().feedback_matrix<double>(3) =
      lightloop::testing::transposed(fa.layer<4>().weights());
    fa.feedback().feedback_matrix<double>(6) =
      lightloop::testing::transposed(fa.layer<7>().weights());
    bp.compute_gradients(x, y);
    fa.compute_gradients(x, y);
    CHECK(max_abs_diff(fa.layer<0>().weight_gradient(), bp.layer<0>().weight_gradient()) < 1e-14);
    CHECK(max_abs_diff(fa.layer<1>().weight_gradient(), bp.layer<1>().weight_gradient()) < 1e-14);
    CHECK(max_abs_diff(fa.layer<4>().weight_gradient(), bp.layer<4>().weight_gradient()) < 1e-14);
    CHECK(std::isnan(weight_alignment(fa)[0]));
}

TEST_CASE("batch_norm's running estimates move with applied steps only and live in checkpoints",
          "[layers][norm]") {
    lightloop::testing::scratch_dir dir("batch_norm");
    const auto x = random_matrix<double>(8, 72, 91);
    std::vector<int> labels{0, 1, 2, 1, 0, 2, 1, 0};
    const auto y = one_hot<double>(std::span<const int>(labels), 3);
    auto net = norm_tests::mixed_stack<backprop>(92);
    sgd<double> opt{{.learning_rate = 0.05, .momentum = 0.9}};
    const auto estimates = [&] {
        const auto& norm = std::as_const(net).layer<1>();
        std::vector<double> v(norm.running_mean().begin(), norm.running_mean().end());
        v.insert(v.end(), norm.running_var().begin(), norm.running_var().end());
        return v;
    };
    const auto initial = estimates();
    CHECK(initial == std::vector<double>{0, 0, 0, 1, 1, 1});
    // The alignment probe and evaluation leave them alone; a step moves them.
    gradient_alignment(net, x, y);
    evaluate_accuracy(net, x, y);
    net.compute_gradients(x, y);
    CHECK(estimates() == initial);
    net.apply_gradients(opt);
    const auto after_one = estimates();
    CHECK(after_one != initial);
    for (int i = 0; i < 3; ++i) {
        net.train_step(x, y, opt);
    }
    const auto trained = estimates();
    const matrix<double> evaluated = net.forward(x);

    save_checkpoint(net, opt, dir / "net.ckpt", 1);
    auto copy = norm_tests::mixed_stack<backprop>(92);
    sgd<double> copy_opt{{.learning_rate = 0.05, .momentum = 0.9}};
    load_checkpoint(copy, copy_opt, dir / "net.ckpt");
    const auto& norm = std::as_const(copy).layer<1>();
    CHECK(std::vector<double>(norm.running_var().begin(), norm.running_var().end()) ==
          std::vector<double>(trained.begin() + 3, trained.end()));
    CHECK((copy.forward(x) == evaluated));
    // A training batch of one sample of one value per channel has no variance.
    batch_norm<> lone(4);
    CHECK_THROWS_WITH(lone.forward_training(random_matrix<float>(1, 4, 1), 0),
                      Catch::Contains("more than one value per channel"));
}
