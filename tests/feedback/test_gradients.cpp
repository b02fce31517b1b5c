#include <catch2/catch.hpp>

#include <cmath>
#include <tuple>

#include "support/helpers.hpp"

using namespace lightloop;

// Backprop's gradients against central finite differences of the loss, in
// double, for every activation (used in every layer, the output one included)
// with every loss. Central differences with step h = 1e-5 have truncation error
// O(h^2 f''') ~ 1e-10 and rounding error ~ (1e-15 accumulated in L) / h ~ 1e-10,
// so the numeric gradient is good to ~1e-10 absolute. The check is relative
// 1e-5 for entries above 1e-4 and so absolute 1e-9 below (leaky_relu's
// negative side makes gradients ~1e-6); a wrong derivative, a wrong slice or
// a missing 1/n is off by O(1) relative.
TEMPLATE_TEST_CASE("backprop gradients match finite differences", "[feedback][backprop][gradient]",
                   (std::tuple<identity, softmax_cross_entropy>), (std::tuple<identity, mse>),
                   (std::tuple<tanh_act, softmax_cross_entropy>), (std::tuple<tanh_act, mse>),
                   (std::tuple<sigmoid, softmax_cross_entropy>), (std::tuple<sigmoid, mse>),
                   (std::tuple<relu, softmax_cross_entropy>), (std::tuple<relu, mse>),
                   (std::tuple<leaky_relu, softmax_cross_entropy>), (std::tuple<leaky_relu, mse>)) {
    using act = std::tuple_element_t<0, TestType>;
    using loss = std::tuple_element_t<1, TestType>;
    const std::uint64_t seed = 17;
    CAPTURE(seed);
    auto net = make_network<backprop, loss>(seed, dense<act, double>{5, 7, init::he_normal},
                                            dense<act, double>{7, 6, init::he_normal},
                                            dense<act, double>{6, 4, init::he_normal});
    // Non-zero biases, so their gradients are tested away from the origin.
    net.visit_layers([&](auto& layer, std::size_t i) {
        rng gen(derive_seed(seed, 100 + i));
        for (auto& b : layer.bias()) {
            b = 0.3 * gen.normal();
        }
    });
    const auto x = lightloop::testing::random_matrix<double>(6, 5, seed + 1);
    matrix<double> y;
    if constexpr (std::is_same_v<loss, softmax_cross_entropy>) {
        y = one_hot<double>(std::span<const int>(std::vector<int>{0, 1, 2, 3, 1, 2}), 4);
    } else {
        y = lightloop::testing::random_matrix<double>(6, 4, seed + 2);
    }
    const auto result = check_gradients(net, x, y, {.step = 1e-5, .floor = 1e-4});
    CAPTURE(result.worst_layer, result.worst_entry, result.max_abs_error);
    CHECK(result.entries_checked == (5 * 7 + 7) + (7 * 6 + 6) + (6 * 4 + 4));
    CHECK(result.max_rel_error < 1e-5);
}

TEST_CASE("the gradient checker catches a wrong gradient", "[feedback][gradient]") {
    // DFA's hidden signal is not the gradient: the checker must say so, or a
    // passing check above would mean nothing.
    auto net = make_network<dfa<>, softmax_cross_entropy>(3, dense<tanh_act, double>{5, 7},
                                                          dense<identity, double>{7, 4});
    const auto x = lightloop::testing::random_matrix<double>(6, 5, 4);
    const auto y = one_hot<double>(std::span<const int>(std::vector<int>{0, 1, 2, 3, 1, 2}), 4);
    CHECK(check_gradients(net, x, y).max_rel_error > 0.1);
}

TEST_CASE("the gradient checker refuses a mixed-precision network", "[feedback][gradient]") {
    // bf16 products do not see a finite difference of 1e-5 in a weight: the
    // check would report noise (a max relative error above 1 on this one).
    auto net = make_network<backprop, softmax_cross_entropy>(
      3, dense<tanh_act>{5, 7}, dense<tanh_act, mixed_bf16>{7, 7}, dense<identity>{7, 4});
    const auto x = lightloop::testing::random_matrix<float>(6, 5, 4);
    const auto y = one_hot<float>(std::span<const int>(std::vector<int>{0, 1, 2, 3, 1, 2}), 4);
    CHECK_THROWS_MATCHES(check_gradients(net, x, y), config_error,
                         Catch::Message("lightloop::check_gradients: layer 1 is mixed precision: "
                                        "its products round the weights to bf16, which a finite "
                                        "difference does not see; check the same network in "
                                        "double (or float)"));
}

TEST_CASE("the gradient checker refuses a step or floor or stride it cannot use",
          "[feedback][gradient]") {
    // A step of 0 or NaN made every difference NaN, which the check reported
    // as no error at all (max_rel_error 0); a stride of 0 was read as 1.
    auto net = make_network<backprop, softmax_cross_entropy>(3, dense<tanh_act, double>{5, 7},
                                                             dense<identity, double>{7, 4});
    const auto x = lightloop::testing::random_matrix<double>(6, 5, 4);
    const auto y = one_hot<double>(std::span<const int>(std::vector<int>{0, 1, 2, 3, 1, 2}), 4);
    for (const gradient_check_options bad :
         {gradient_check_options{.step = 0.0}, gradient_check_options{.step = -1e-5},
          gradient_check_options{.step = std::nan("")}, gradient_check_options{.step = HUGE_VAL},
          gradient_check_options{.floor = -1.0}, gradient_check_options{.floor = std::nan("")},
          gradient_check_options{.stride = 0}}) {
        CAPTURE(bad.step, bad.floor, bad.stride);
        CHECK_THROWS_AS(check_gradients(net, x, y, bad), config_error);
        CHECK_THROWS_WITH(check_gradients(net, x, y, bad),
                          Catch::Contains("lightloop::check_gradients: step must be a positive"));
    }
    // Every third entry: ceil(35 / 3) + ceil(7 / 3), then ceil(28 / 3) + ceil(4 / 3).
    CHECK(check_gradients(net, x, y, {.stride = 3}).entries_checked == (12 + 3) + (10 + 2));
}
