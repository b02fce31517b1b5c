#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include "support/helpers.hpp"

using namespace lightloop;
using lightloop::testing::max_abs_diff;
using lightloop::testing::naive_product;
using lightloop::testing::random_matrix;

TEMPLATE_TEST_CASE("each activation's derivative matches a central difference of its value",
                   "[layers][activations]", identity, tanh_act, sigmoid, relu, leaky_relu) {
    const TestType act{};
    const double h = 1e-6;
    // Points avoid relu's kink at 0, where the one-sided slopes differ.
    for (const double a : {-3.0, -0.7, -0.01, 0.02, 0.5, 2.5}) {
        CAPTURE(a);
        const double numeric = (act.value(a + h) - act.value(a - h)) / (2 * h);
        CHECK(act.derivative(a, act.value(a)) == Approx(numeric).epsilon(1e-7).margin(1e-9));
    }
}

TEST_CASE("activations stay finite at extreme inputs", "[layers][activations]") {
    const sigmoid s;
    CHECK(s.value(-1000.0f) == 0.0f);
    CHECK(s.value(1000.0f) == 1.0f);
    CHECK(std::isfinite(s.value(-1e30)));
    CHECK(tanh_act{}.value(1e30f) == 1.0f);
    CHECK(leaky_relu{0.2}.value(-10.0) == Approx(-2.0));
    CHECK_THROWS_AS(leaky_relu{-0.1}, config_error);
}

TEMPLATE_TEST_CASE("dense forward computes f(x W^T + b)", "[layers][dense]", float, double) {
    dense<tanh_act, TestType> layer{5, 3};
    layer.initialize(3);
    layer.bias() = xt::xtensor<TestType, 1>{0.1, -0.2, 0.3};
    const auto x = random_matrix<TestType>(4, 5, 9);
    const auto& h = layer.forward(x);
    const auto z = naive_product(x, false, layer.weights(), true);
    REQUIRE(h.shape(0) == 4);
    REQUIRE(h.shape(1) == 3);
    const double tolerance = std::is_same_v<TestType, float> ? 1e-6 : 1e-14;
    for (std::size_t r = 0; r < 4; ++r) {
        for (std::size_t c = 0; c < 3; ++c) {
            const double a = z(r, c) + static_cast<double>(layer.bias()(c));
            CHECK(std::abs(static_cast<double>(layer.pre_activation()(r, c)) - a) < tolerance);
            CHECK(std::abs(static_cast<double>(h(r, c)) - std::tanh(a)) < tolerance);
        }
    }
}

TEST_CASE("dense gradients are the batch means of delta^T x and delta", "[layers][dense]") {
    dense<relu, double> layer{4, 3};
    layer.initialize(1);
    const auto x = random_matrix<double>(6, 4, 2);
    layer.forward(x);
    const auto signal = random_matrix<double>(6, 3, 3);
    layer.scale_by_derivative(signal.data(), 3);
    for (std::size_t r = 0; r < 6; ++r) {
        for (std::size_t c = 0; c < 3; ++c) {
            const double expected = layer.pre_activation()(r, c) > 0 ? signal(r, c) : 0.0;
            CHECK(layer.delta()(r, c) == expected);
        }
    }
    layer.compute_gradient(x);
    auto expected_dw = naive_product(layer.delta(), true, x, false);
    expected_dw /= 6.0;
    CHECK(max_abs_diff(layer.weight_gradient(), expected_dw) < 1e-14);
    for (std::size_t c = 0; c < 3; ++c) {
        double mean = 0;
        for (std::size_t r = 0; r < 6; ++r) {
            mean += layer.delta()(r, c) / 6.0;
        }
        CHECK(layer.bias_gradient()(c) == Approx(mean).epsilon(1e-14));
    }
    auto into = matrix<double>::from_shape({6, 4});
    layer.backpropagate(into);
    CHECK(max_abs_diff(into, naive_product(layer.delta(), false, layer.weights(), false)) < 1e-14);
}

TEST_CASE("dense refuses bad sizes with a message naming them", "[layers][dense]") {
    CHECK_THROWS_AS((dense<relu>{0, 3}), config_error);
    dense<relu> layer{5, 3};
    const auto x = random_matrix<float>(2, 4, 1);
    CHECK_THROWS_WITH(layer.forward(x),
                      Catch::Contains("dense 5 -> 3") && Catch::Contains("input has 4 columns"));
}
