#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include "support/helpers.hpp"

using namespace lightloop;

TEST_CASE("softmax cross-entropy matches a hand computation", "[loss]") {
    // logits (1, 2, 3), target class 2: loss = log(e + e^2 + e^3) - 3
    // = log(1 + e^-1 + e^-2) = 0.40760596444; gradient softmax - y with
    // softmax = (0.09003057, 0.24472847, 0.66524096).
    const matrix<double> out{{1.0, 2.0, 3.0}};
    const matrix<double> y{{0.0, 0.0, 1.0}};
    matrix<double> grad;
    const softmax_cross_entropy loss;
    CHECK(loss.value(out, y) == Approx(0.40760596444).epsilon(1e-10));
    CHECK(loss.evaluate(out, y, grad) == Approx(0.40760596444).epsilon(1e-10));
    CHECK(grad(0, 0) == Approx(0.09003057317).epsilon(1e-9));
    CHECK(grad(0, 1) == Approx(0.24472847105).epsilon(1e-9));
    CHECK(grad(0, 2) == Approx(0.66524095578 - 1.0).epsilon(1e-9));
}

TEST_CASE("softmax cross-entropy is stable for huge logits and averages over rows", "[loss]") {
    const matrix<float> out{{1000.0f, 0.0f, -1000.0f}, {1000.0f, 0.0f, -1000.0f}};
    const matrix<float> y{{1.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 1.0f}};
    matrix<float> grad;
    // Row 0 is certain and right (loss 0); row 1 is certain and wrong (loss
    // 2000); the mean is 1000.
    const float value = softmax_cross_entropy{}.evaluate(out, y, grad);
    CHECK(std::isfinite(value));
    CHECK(value == Approx(1000.0f));
    CHECK(grad(0, 0) == Approx(0.0f).margin(1e-6));
    CHECK(grad(1, 0) == Approx(1.0f));
    CHECK(grad(1, 2) == Approx(-1.0f));
}

TEST_CASE("mse matches a hand computation", "[loss]") {
    // (1 - 0)^2 + (2 - 4)^2 = 5 over d = 2 entries: 2.5; gradient 2 (o - y) / d.
    const matrix<double> out{{1.0, 2.0}};
    const matrix<double> y{{0.0, 4.0}};
    matrix<double> grad;
    CHECK(mse{}.evaluate(out, y, grad) == Approx(2.5));
    CHECK(grad(0, 0) == Approx(1.0));
    CHECK(grad(0, 1) == Approx(-2.0));
}

TEMPLATE_TEST_CASE("loss gradients are n times the gradient of the mean loss", "[loss]",
                   softmax_cross_entropy, mse) {
    const auto out = lightloop::testing::random_matrix<double>(3, 4, 5);
    auto y = lightloop::testing::random_matrix<double>(3, 4, 6);
    if constexpr (std::is_same_v<TestType, softmax_cross_entropy>) {
        y = one_hot<double>(std::span<const int>(std::vector<int>{0, 3, 1}), 4);
    }
    const TestType loss;
    matrix<double> grad;
    loss.evaluate(out, y, grad);
    const double h = 1e-6;
    for (std::size_t r = 0; r < 3; ++r) {
        for (std::size_t c = 0; c < 4; ++c) {
            auto plus = out;
            auto minus = out;
            plus(r, c) += h;
            minus(r, c) -= h;
            const double numeric = 3.0 * (loss.value(plus, y) - loss.value(minus, y)) / (2 * h);
            CHECK(grad(r, c) == Approx(numeric).epsilon(1e-7).margin(1e-9));
        }
    }
}

TEST_CASE("losses refuse mismatched shapes", "[loss]") {
    const matrix<float> out = xt::zeros<float>({2, 3});
    const matrix<float> y = xt::zeros<float>({2, 4});
    CHECK_THROWS_WITH(softmax_cross_entropy{}.value(out, y),
                      Catch::Contains("output is 2x3") && Catch::Contains("target is 2x4"));
    CHECK_THROWS_AS(mse{}.value(out, y), shape_error);
}

TEST_CASE("softmax cross-entropy refuses targets that are not probabilities", "[loss]") {
    const matrix<float> out = {{0.5f, -1.0f, 2.0f}, {0.0f, 1.0f, -0.5f}};
    matrix<float> grad;
    const softmax_cross_entropy loss;
    // Soft labels are taken, zeros included.
    const matrix<float> soft = {{0.2f, 0.0f, 0.8f}, {0.0f, 1.0f, 0.0f}};
    CHECK(std::isfinite(loss.evaluate(out, soft, grad)));
    // A ±1 encoding (mse's, say) would make the loss unbounded below.
    matrix<float> signed_target = {{-1.0f, -1.0f, 1.0f}, {-1.0f, 1.0f, -1.0f}};
    CHECK_THROWS_AS(loss.value(out, signed_target), data_error);
    CHECK_THROWS_WITH(loss.evaluate(out, signed_target, grad),
                      Catch::Contains("target (0, 0) is -1") &&
                        Catch::Contains("class probabilities"));
    matrix<float> nan_target = soft;
    nan_target(1, 2) = std::numeric_limits<float>::quiet_NaN();
    CHECK_THROWS_WITH(loss.value(out, nan_target), Catch::Contains("target (1, 2) is nan"));
    matrix<float> infinite_target = soft;
    infinite_target(1, 0) = std::numeric_limits<float>::infinity();
    CHECK_THROWS_WITH(loss.value(out, infinite_target), Catch::Contains("target (1, 0) is inf"));
}
