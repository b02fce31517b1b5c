#include <catch2/catch.hpp>

#include <cmath>

#include "support/helpers.hpp"

using namespace lightloop;
using lightloop::testing::max_abs_diff;
using lightloop::testing::naive_product;
using lightloop::testing::random_matrix;

TEMPLATE_TEST_CASE("dense devices project each row by their matrix", "[projection][dense]",
                   dense_gaussian, dense_uniform) {
    TestType device;
    device.configure(10, 64, 99);
    const auto x = random_matrix<double>(5, 10, 1);
    auto y = matrix<double>::from_shape({5, 64});
    device.project(x, y);
    const auto expected = naive_product(x, false, device.template feedback_matrix<double>(), true);
    CHECK(max_abs_diff(y, expected) < 1e-13);

    auto wrong = matrix<double>::from_shape({5, 63});
    CHECK_THROWS_WITH(device.project(x, wrong), Catch::Contains("output is 5x63"));
}

TEMPLATE_TEST_CASE("dense device matrices are regenerated from their seed", "[projection][dense]",
                   dense_gaussian, dense_uniform) {
    TestType a;
    TestType b;
    TestType c;
    a.configure(8, 16, 5);
    b.configure(8, 16, 5);
    c.configure(8, 16, 6);
    CHECK(lightloop::testing::identical(a.template feedback_matrix<double>(),
                                        b.template feedback_matrix<double>()));
    CHECK_FALSE(lightloop::testing::identical(a.template feedback_matrix<double>(),
                                              c.template feedback_matrix<double>()));
    // The float matrix is the double draw rounded, not another draw.
    const auto& f = a.template feedback_matrix<float>();
    const auto& d = a.template feedback_matrix<double>();
    for (std::size_t i = 0; i < f.size(); ++i) {
        CHECK(f.data()[i] == static_cast<float>(d.data()[i]));
    }
}

TEMPLATE_TEST_CASE("dense device entries have mean 0 and variance scale^2 / in",
                   "[projection][dense]", dense_gaussian, dense_uniform) {
    const std::size_t in = 10;
    const std::size_t out = 20000;
    const double scale = 2.0;
    TestType device(scale);
    device.configure(in, out, 3);
    const auto& b = device.template feedback_matrix<double>();
    const auto m = lightloop::testing::moments_of(b);
    const double n = static_cast<double>(b.size());
    const double expected = scale * scale / static_cast<double>(in);
    // 5 standard errors: mean s.e. sqrt(var / n); variance relative s.e.
    // sqrt(2 / n) (normal), sqrt(0.8 / n) (uniform).
    CHECK(std::abs(m.mean) < 5 * std::sqrt(expected / n));
    const bool uniform = std::is_same_v<TestType, dense_uniform>;
    CHECK(std::abs(m.variance / expected - 1.0) < 5 * std::sqrt((uniform ? 0.8 : 2.0) / n));
    if (uniform) {
        CHECK(m.max_abs <= std::sqrt(3.0 * expected));
    }

    // The consequence the scaling is chosen for: E[(B e)_j^2] = scale^2 ||e||^2 / in,
    // i.e. the projection's RMS is scale times the RMS of e's entries.
    const auto e = random_matrix<double>(1, in, 4);
    auto y = matrix<double>::from_shape({1, out});
    device.project(e, y);
    double e2 = 0;
    for (const double v : e) {
        e2 += v * v;
    }
    double y2 = 0;
    for (const double v : y) {
        y2 += v * v;
    }
    // Mean of `out` squared Gaussians-ish: relative s.e. sqrt(2 / out) = 1%.
    CHECK(std::abs((y2 / out) / (scale * scale * e2 / in) - 1.0) < 5 * std::sqrt(2.0 / out));
}

TEST_CASE("dense devices refuse a non-positive scale", "[projection][dense]") {
    CHECK_THROWS_AS(dense_gaussian(0.0), config_error);
    CHECK_THROWS_AS(dense_uniform(-1.0), config_error);
}

TEST_CASE("dense devices refuse an empty matrix", "[projection][dense]") {
    dense_gaussian d;
    CHECK_THROWS_WITH(d.configure(0, 10, 1), Catch::Contains("got 0 -> 10"));
    CHECK_THROWS_WITH(d.configure(10, 0, 1), Catch::Contains("needs at least one input"));
    CHECK_THROWS_WITH(d.configure_slice(0, 10, 1, 0, 5), Catch::Contains("got 0 -> 5"));
    d.configure(3, 4, 1); // sizes that are fine still are
    CHECK(d.feedback_matrix<float>().shape(0) == 4);
}
