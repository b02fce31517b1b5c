#include <catch2/catch.hpp>

#include <cmath>

#include "support/helpers.hpp"

using namespace lightloop;

TEST_CASE("initialisers draw the variance their scheme prescribes", "[layers][init]") {
    const std::size_t fan_in = 300;
    const std::size_t fan_out = 400;
    const std::uint64_t seed = 11;
    CAPTURE(seed);
    for (const init scheme : {init::glorot_uniform, init::glorot_normal, init::he_uniform,
                              init::he_normal, init::lecun_uniform, init::lecun_normal}) {
        CAPTURE(to_string(scheme));
        auto w = matrix<double>::from_shape({fan_out, fan_in});
        rng gen(seed);
        initialize_weights(w, scheme, gen);
        const double expected =
          scheme == init::glorot_uniform || scheme == init::glorot_normal ? 2.0 / (fan_in + fan_out)
          : scheme == init::he_uniform || scheme == init::he_normal       ? 2.0 / fan_in
                                                                          : 1.0 / fan_in;
        const auto m = lightloop::testing::moments_of(w);
        const double n = static_cast<double>(w.size());
        // The sample variance has relative s.e. sqrt((kurtosis - 1) / n):
        // sqrt(2/n) = 0.41% for normal, sqrt(0.8/n) = 0.26% for uniform; 5 s.e.
        const bool uniform = init_is_uniform(scheme);
        const double rel_se = std::sqrt((uniform ? 0.8 : 2.0) / n);
        CHECK(std::abs(m.variance / expected - 1.0) < 5 * rel_se);
        CHECK(std::abs(m.mean) < 5 * std::sqrt(expected / n));
        if (uniform) {
            // Uniform on [-s, s], s = sqrt(3 var): bounded, kurtosis 9/5.
            CHECK(m.max_abs <= std::sqrt(3.0 * expected));
            CHECK(m.kurtosis == Approx(1.8).margin(0.05));
        } else {
            CHECK(m.kurtosis == Approx(3.0).margin(0.1));
        }
    }
}

TEST_CASE("initialisation is a function of the seed", "[layers][init]") {
    dense<tanh_act, double> a{20, 30};
    dense<tanh_act, double> b{20, 30};
    dense<tanh_act, double> c{20, 30};
    a.initialize(5);
    b.initialize(5);
    c.initialize(6);
    CHECK(lightloop::testing::identical(a.weights(), b.weights()));
    CHECK_FALSE(lightloop::testing::identical(a.weights(), c.weights()));
}
