#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>
#include <tuple>
#include <utility>
#include <vector>

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

namespace {
/// The activation the lane tests run: leaky relu with a slope far from its
/// default, so a pass that dropped it would show.
template <class Act>
Act activation_under_test() {
    if constexpr (std::is_same_v<Act, leaky_relu>) {
        return leaky_relu{0.3};
    } else {
        return Act{};
    }
}
} // namespace

TEMPLATE_TEST_CASE("the derivative pass in SIMD lanes equals each activation's scalar derivative, "
                   "to the bit where it selects",
                   "[layers][activations]", identity, tanh_act, sigmoid, relu, leaky_relu) {
    STATIC_REQUIRE(TestType::derivative_in_lanes);
    const auto act = activation_under_test<TestType>();
    // 3 rows of 37 (whole batches and a scalar tail on any SIMD width), the
    // signal with a wider stride; a spans both signs and exact zeros
    // (relu's kink: the subgradient 0).
    const std::size_t rows = 3, width = 37, ld = 41;
    const auto check = [&]<class T>(T) {
        std::vector<T> a(rows * width), h(rows * width), s(rows * ld), d(rows * width);
        for (std::size_t i = 0; i < a.size(); ++i) {
            a[i] = i % 7 == 0 ? T(0) : static_cast<T>(std::sin(0.37 * double(i)) * 3.0);
            h[i] = act.value(a[i]);
        }
        for (std::size_t i = 0; i < s.size(); ++i) {
            s[i] = static_cast<T>(std::cos(0.11 * double(i)) + 0.25);
        }
        detail::scale_rows_by_derivative(act, s.data(), ld, a.data(), h.data(), d.data(), rows,
                                         width);
        // The relus and identity select or return constants: the same bits.
        // tanh's 1 - h^2 (and sigmoid's h (1 - h)) may be rounded once more
        // in one form than the other (clang fuses the scalar multiply-add,
        // not xsimd's operators): the two derivatives, terms at most 1 in
        // magnitude, differ by at most 1.5 eps, and each product with s adds
        // eps/2 |s|: within 2.5 eps |s|.
        const bool fused = std::is_same_v<TestType, tanh_act> || std::is_same_v<TestType, sigmoid>;
        const double roundings = fused ? 2.5 : 0.0;
        std::size_t zero_slopes = 0;
        for (std::size_t r = 0; r < rows; ++r) {
            for (std::size_t c = 0; c < width; ++c) {
                const std::size_t i = r * width + c;
                const T expected = s[r * ld + c] * act.derivative(a[i], h[i]);
                CAPTURE(a[i], h[i], d[i], expected);
                REQUIRE(std::abs(static_cast<double>(d[i]) - static_cast<double>(expected)) <=
                        roundings * static_cast<double>(std::numeric_limits<T>::epsilon()) *
                          std::abs(static_cast<double>(s[r * ld + c])));
                zero_slopes += act.derivative(a[i], h[i]) == T(0) ? 1U : 0U;
            }
        }
        if constexpr (std::is_same_v<TestType, relu>) {
            CHECK(zero_slopes > rows * width / 3); // the pass saw both branches
        }
    };
    check(float{});
    check(double{});
}

TEMPLATE_TEST_CASE("the value pass in SIMD lanes equals each activation's scalar value, to the "
                   "bit where it selects",
                   "[layers][activations]", identity, tanh_act, sigmoid, relu, leaky_relu) {
    STATIC_REQUIRE(TestType::value_in_lanes);
    const auto act = activation_under_test<TestType>();
    const auto check = [&]<class T>(T) {
        // Both signs, zeros, the extremes, and a tail past whole SIMD batches.
        std::vector<T> a{T(0),     T(-0.0), T(1e-30), T(-1e-30), T(88),   T(-88), T(1000),
                         T(-1000), T(1e30), T(-1e30), T(0.5),    T(-0.5), T(3),   T(-3)};
        for (int i = 0; i < 23; ++i) {
            a.push_back(static_cast<T>(std::sin(0.9 * i) * 6.0));
        }
        std::vector<T> h(a.size());
        detail::activate_row(act, a.data(), h.data(), a.size());
        // A batch's tanh and sigmoid run xsimd's tanh and exp, a scalar's
        // libm's: a few ulp apart, and xsimd's exp returns 0 where the result
        // would be subnormal (sigmoid below -87.3 in float): an absolute
        // slack of the smallest normal number there. The others select or
        // multiply alike in both forms.
        const bool approximate =
          std::is_same_v<TestType, tanh_act> || std::is_same_v<TestType, sigmoid>;
        const double ulps = approximate ? 4.0 : 0.0;
        const double floor = approximate ? static_cast<double>(std::numeric_limits<T>::min()) : 0.0;
        for (std::size_t i = 0; i < a.size(); ++i) {
            CAPTURE(a[i], h[i]);
            const T expected = act.value(a[i]);
            REQUIRE(std::isfinite(h[i]));
            CHECK(std::abs(static_cast<double>(h[i]) - static_cast<double>(expected)) <=
                  ulps * static_cast<double>(std::numeric_limits<T>::epsilon()) *
                      std::abs(static_cast<double>(expected)) +
                    floor);
            if constexpr (std::is_same_v<TestType, sigmoid>) {
                CHECK((h[i] >= T(0) && h[i] <= T(1)));
            }
        }
    };
    check(float{});
    check(double{});
}

namespace {
/// f(a) = 2a, value by value.
struct doubling {
    template <scalar T>
    T value(T a) const noexcept {
        return T(2) * a;
    }
    template <scalar T>
    T derivative(T, T) const noexcept {
        return T(2);
    }
};
/// The same with a row kernel of its own that writes 3a instead, so a test
/// can tell which of the two the value pass ran.
struct doubling_with_row_kernel : doubling {
    template <scalar T>
    void apply(const T* a, T* h, std::size_t count) const noexcept {
        for (std::size_t i = 0; i < count; ++i) {
            h[i] = T(3) * a[i];
        }
    }
};
} // namespace

TEST_CASE("the value pass calls a user's row kernel when it has one, else its value",
          "[layers][activations]") {
    const std::vector<float> a{1.0f, -2.0f, 0.5f};
    std::vector<float> h(a.size());
    detail::activate_row(doubling_with_row_kernel{}, a.data(), h.data(), a.size());
    CHECK(h == std::vector<float>{3.0f, -6.0f, 1.5f});
    detail::activate_row(doubling{}, a.data(), h.data(), a.size());
    CHECK(h == std::vector<float>{2.0f, -4.0f, 1.0f});
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
    layer.bias() = xt::xtensor<TestType, 1>{TestType(0.1), TestType(-0.2), TestType(0.3)};
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

TEST_CASE("dense's passes split over threads give the same bits as on one thread",
          "[layers][dense][parallel]") {
    // 200 x 1024: the bias + activation, derivative and bias-gradient passes run in pieces.
    const auto x = random_matrix<float>(200, 300, 5);
    const auto signal = random_matrix<float>(200, 1024, 6);
    auto run = [&](int threads) {
        set_blas_threads(threads);
        dense<tanh_act> layer{300, 1024};
        layer.initialize(2);
        const auto b = random_matrix<float>(1, 1024, 7);
        std::copy(b.begin(), b.end(), layer.bias().begin());
        layer.forward(x);
        layer.scale_by_derivative(signal.data(), 1024);
        layer.compute_gradient(x);
        set_blas_threads(1);
        return std::tuple(matrix<float>(layer.output()), matrix<float>(layer.delta()),
                          vector<float>(layer.bias_gradient()));
    };
    const auto [h1, d1, b1] = run(1);
    const auto [h2, d2, b2] = run(2);
    CHECK(lightloop::testing::identical(h1, h2));
    CHECK(lightloop::testing::identical(d1, d2));
    CHECK(lightloop::testing::identical(b1, b2));
    // And against the definitions: h = tanh(a), delta = s (1 - h^2), db = mean of delta.
    dense<tanh_act> layer{300, 1024};
    layer.initialize(2);
    layer.forward(x);
    CHECK(max_abs_diff(layer.output(), matrix<float>(xt::tanh(layer.pre_activation()))) < 1e-6);
    for (const std::size_t c : {std::size_t{0}, std::size_t{517}, std::size_t{1023}}) {
        double mean = 0.0;
        for (std::size_t r = 0; r < 200; ++r) {
            mean += static_cast<double>(d2(r, c)) / 200.0;
        }
        CHECK(b2(c) == Approx(mean).margin(1e-6));
        const float h = h2(17, c);
        CHECK(d2(17, c) == Approx(signal(17, c) * (1.0f - h * h)).margin(1e-6));
    }
}

TEST_CASE("the derivative pass measures delta's magnitude, forgotten once delta may change",
          "[layers][dense]") {
    // The network's finiteness check of delta reads delta_magnitude() instead
    // of a pass of its own: it must be what largest_magnitude_or_inf(delta)
    // gives, +inf for a NaN, and NaN (unknown) after the non-const delta().
    dense<tanh_act, mixed_bf16> layer{40, 300};
    layer.initialize(4);
    const auto x = random_matrix<float>(70, 40, 5);
    auto signal = random_matrix<float>(70, 300, 6);
    layer.forward(x);
    CHECK(std::isnan(layer.delta_magnitude()));
    layer.scale_by_derivative(signal.data(), 300);
    const auto& delta = std::as_const(layer).delta();
    const double largest =
      detail::largest_magnitude_or_inf(std::span<const float>(delta.data(), delta.size()));
    CHECK(largest > 0.0);
    CHECK(layer.delta_magnitude() == largest);
    layer.delta();
    CHECK(std::isnan(layer.delta_magnitude()));
    const float kept = signal(69, 299);
    signal(69, 299) = std::numeric_limits<float>::quiet_NaN();
    layer.scale_by_derivative(signal.data(), 300);
    CHECK(layer.delta_magnitude() == std::numeric_limits<double>::infinity());
    signal(69, 299) = kept;
    layer.scale_by_derivative(signal.data(), 300);
    CHECK(layer.delta_magnitude() == largest);
}

TEST_CASE("column sums and dots are each column's sum over the rows in order, on any thread "
          "count",
          "[layers][dense][parallel]") {
    // 48 rows x 1507 columns: on one thread the columns go four SIMD batches
    // at a time, then single batches, then single columns; on two and three
    // the pieces start at a column that is a multiple of 16 but not of 64, so
    // the same columns are grouped differently. The sums are float sums in
    // row order, scaled: exactly the in-order scalar loop. The dots may fuse
    // their multiply-add or not (the compiler's choice), so they are held to
    // the double sum within float rounding: (n + 1) u sum |d x| for n
    // products, their sum and the scaling, u = 2^-24.
    const std::size_t n = 48;
    const std::size_t width = 1507;
    const auto d = random_matrix<float>(n, width, 11);
    const auto x = random_matrix<float>(n, width, 12);
    const float scale = 1.0f / 48.0f;
    auto run = [&](int threads) {
        set_blas_threads(threads);
        std::vector<float> sums(width);
        std::vector<float> dots(width);
        std::vector<float> sums_alone(width);
        detail::scaled_column_sums(d.data(), x.data(), n, width, scale, sums.data(), dots.data());
        detail::scaled_column_sums(d.data(), nullptr, n, width, scale, sums_alone.data(), nullptr);
        set_blas_threads(1);
        return std::tuple(sums, dots, sums_alone);
    };
    const auto [s1, t1, a1] = run(1);
    for (const int threads : {2, 3}) {
        CAPTURE(threads);
        const auto [s, t, a] = run(threads);
        CHECK(s == s1);
        CHECK(t == t1);
        CHECK(a == a1);
    }
    for (std::size_t c = 0; c < width; ++c) {
        CAPTURE(c);
        float sum = 0.0f;
        double dot = 0.0;
        double magnitude = 0.0;
        for (std::size_t r = 0; r < n; ++r) {
            sum += d(r, c);
            dot += static_cast<double>(d(r, c)) * static_cast<double>(x(r, c));
            magnitude += std::abs(static_cast<double>(d(r, c)) * static_cast<double>(x(r, c)));
        }
        REQUIRE(s1[c] == sum * scale);
        REQUIRE(a1[c] == sum * scale);
        REQUIRE(std::abs(t1[c] - dot * scale) <=
                static_cast<double>(n + 1) * 6e-8 * magnitude * static_cast<double>(scale));
    }
}

TEST_CASE("dense bounds its gradient by max|delta| max|x| while n max|delta| max|x| is below "
          "float's range",
          "[layers][dense]") {
    dense<identity> layer{3, 2};
    layer.initialize(1);
    auto x = random_matrix<float>(4, 3, 2, 0.1); // entries well inside [-1, 1]
    layer.forward(x);
    constexpr double top = std::numeric_limits<float>::max();
    constexpr double inf = std::numeric_limits<double>::infinity();
    CHECK(layer.gradient_bound(x, 1.0) == 2.0); // max(max|x|, 1) = 1, doubled for rounding
    // n = 4 rows: 4 * delta_max * max(max|x|, 1) against half of FLT_MAX.
    CHECK(layer.gradient_bound(x, 0.12 * top) == 2.0 * 0.12 * top);
    CHECK(layer.gradient_bound(x, 0.13 * top) == inf);
    CHECK(layer.gradient_bound(x, inf) == inf);
    CHECK(layer.gradient_bound(x, std::nan("")) == inf);
    x(2, 1) = 1e30f;
    CHECK(layer.gradient_bound(x, 1e7) == Approx(2e37).epsilon(1e-6));
    CHECK(layer.gradient_bound(x, 1e8) == inf);
    x(0, 0) = std::numeric_limits<float>::infinity();
    CHECK(layer.gradient_bound(x, 1.0) == inf);

    // The bound holds for the gradient compute_gradient then forms.
    auto y = random_matrix<float>(4, 3, 5, 3.0); // max|x| above 1
    layer.forward(y);
    auto& delta = layer.delta();
    delta = random_matrix<float>(4, 2, 6, 2.0);
    const double delta_max = lightloop::testing::max_abs(delta);
    layer.compute_gradient(y);
    const double bound = layer.gradient_bound(y, delta_max);
    CHECK(lightloop::testing::max_abs(layer.weight_gradient()) <= bound / 2);
    CHECK(lightloop::testing::max_abs(layer.bias_gradient()) <= bound / 2);
}

TEST_CASE("a mixed dense layer bounds its gradient by the input it converted for its products",
          "[layers][dense][precision]") {
    // max|x| is measured as the forward pass converts x to bf16 (the operand
    // the gradient reuses), not by a pass of its own: the same bounds as
    // dense<identity> in fp32 gives above.
    dense<identity, mixed_bf16> layer{3, 2};
    layer.initialize(1);
    constexpr double inf = std::numeric_limits<double>::infinity();
    auto x = random_matrix<float>(4, 3, 2, 0.1);
    layer.forward(x);
    CHECK(layer.gradient_bound(x, 1.0) == 2.0);
    x(2, 1) = 1e30f;
    layer.forward(x);
    CHECK(layer.gradient_bound(x, 1e7) == Approx(2e37).epsilon(1e-6));
    CHECK(layer.gradient_bound(x, 1e8) == inf);
    x(0, 0) = std::numeric_limits<float>::infinity();
    layer.forward(x);
    CHECK(layer.gradient_bound(x, 1.0) == inf);
    // Another matrix than the one converted is measured on its own.
    const auto other = random_matrix<float>(4, 3, 3, 0.1);
    CHECK(layer.gradient_bound(other, 1.0) == 2.0);

    auto y = random_matrix<float>(4, 3, 5, 3.0); // max|x| above 1
    layer.forward(y);
    layer.delta() = random_matrix<float>(4, 2, 6, 2.0);
    const double delta_max = lightloop::testing::max_abs(layer.delta());
    layer.compute_gradient(y);
    const double bound = layer.gradient_bound(y, delta_max);
    CHECK(bound == 2.0 * delta_max * std::max(lightloop::testing::max_abs(y), 1.0));
    CHECK(lightloop::testing::max_abs(layer.weight_gradient()) <= bound / 2);
}

TEST_CASE("dense refuses bad sizes with a message naming them", "[layers][dense]") {
    CHECK_THROWS_AS((dense<relu>{0, 3}), config_error);
    dense<relu> layer{5, 3};
    const auto x = random_matrix<float>(2, 4, 1);
    CHECK_THROWS_WITH(layer.forward(x),
                      Catch::Contains("dense 5 -> 3") && Catch::Contains("input has 4 columns"));
}
