#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "support/helpers.hpp"

using namespace lightloop;
using lightloop::testing::max_abs_diff;
using lightloop::testing::random_matrix;

namespace norm_tests {

/// conv 2x6x6 -> 3x6x6 (no activation), layer_norm with tanh over the maps,
/// max-pool 2, flatten, dense 27 -> 8 tanh, dropout, dense 8 -> 3: every
/// layer type in one stack, in double.
template <class Method>
auto mixed_stack(std::uint64_t seed) {
    return make_network<Method, softmax_cross_entropy>(
      seed, conv2d<identity, double>({2, 6, 6}, {.out_channels = 3, .kernel = 3, .padding = 1}),
      layer_norm<tanh_act, double>({3, 6, 6}), max_pool2d<double>({3, 6, 6}, 2),
      flatten<double>({3, 3, 3}), dense<tanh_act, double>{27, 8}, dropout<double>(8, 0.25),
      dense<identity, double>{8, 3});
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
// convolution, a layer norm, pooling, flatten, dense layers and dropout in one
// stack, against the training loss (dropout's masks of that step).
TEST_CASE("backprop through a stack of every layer type matches finite differences",
          "[layers][norm][gradient]") {
    auto net = norm_tests::mixed_stack<backprop>(71);
    const auto x = random_matrix<double>(4, 72, 72);
    const auto y = one_hot<double>(std::span<const int>(std::vector<int>{0, 1, 2, 1}), 3);
    const auto result = check_gradients(net, x, y, {.step = 1e-5, .floor = 1e-4});
    CAPTURE(result.worst_layer, result.worst_entry);
    CHECK(result.entries_checked == (3 * 18 + 3) + (108 + 108) + (27 * 8 + 8) + (8 * 3 + 3));
    CHECK(result.max_rel_error < 1e-5);
}

TEST_CASE("feedback methods on layer_norm: DFA gives it a slice, feedback alignment passes "
          "through it exactly",
          "[layers][norm][dfa]") {
    const auto x = random_matrix<double>(4, 72, 81);
    const auto y = one_hot<double>(std::span<const int>(std::vector<int>{0, 1, 2, 1}), 3);
    // DFA: the convolution's 108 outputs, the norm's 108 and the hidden dense 8.
    auto direct = norm_tests::mixed_stack<dfa<dense_gaussian>>(82);
    CHECK(direct.feedback().projection_size() == 108 + 108 + 8);
    direct.compute_gradients(x, y);
    CHECK(direct.layer<0>().backward_data_products() == 0);

    // Feedback alignment with B = W above the two weighted layers is backprop:
    // it draws nothing for the norm and goes through its exact backward.
    auto bp = norm_tests::mixed_stack<backprop>(83);
    auto fa = norm_tests::mixed_stack<feedback_alignment>(83);
    CHECK(fa.feedback().feedback_matrix<double>(0).size() == 0); // the norm: nothing drawn
    fa.feedback().feedback_matrix<double>(3) =
      lightloop::testing::transposed(fa.layer<4>().weights());
    fa.feedback().feedback_matrix<double>(5) =
      lightloop::testing::transposed(fa.layer<6>().weights());
    bp.compute_gradients(x, y);
    fa.compute_gradients(x, y);
    CHECK(max_abs_diff(fa.layer<0>().weight_gradient(), bp.layer<0>().weight_gradient()) < 1e-14);
    CHECK(max_abs_diff(fa.layer<1>().weight_gradient(), bp.layer<1>().weight_gradient()) < 1e-14);
    CHECK(std::isnan(weight_alignment(fa)[0]));
}
