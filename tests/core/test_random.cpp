#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include <lightloop/core/random.hpp>
#include <lightloop/core/ziggurat.hpp>

using lightloop::rng;

TEST_CASE("splitmix64 and xoshiro256++ match their reference outputs", "[core][random]") {
    // splitmix64 from state 0: first output 0xE220A8397B1DCDAF (Vigna's reference).
    std::uint64_t state = 0;
    CHECK(lightloop::splitmix64(state) == 0xE220A8397B1DCDAFULL);
    // xoshiro256++ from state {1, 2, 3, 4}: first output rotl(1 + 4, 23) + 1.
    const auto gen = rng::from_state({1, 2, 3, 4});
    auto copy = gen;
    CHECK(copy() == (5ULL << 23) + 1);
}

TEST_CASE("rng streams are reproducible and distinct", "[core][random]") {
    rng a(42);
    rng b(42);
    rng c(43);
    bool all_equal = true;
    bool any_differs = false;
    for (int i = 0; i < 100; ++i) {
        const auto va = a();
        all_equal = all_equal && va == b();
        any_differs = any_differs || va != c();
    }
    CHECK(all_equal);
    CHECK(any_differs);
    CHECK(lightloop::derive_seed(42, 0) != lightloop::derive_seed(42, 1));
    CHECK(lightloop::derive_seed(42, 0) != lightloop::derive_seed(43, 0));
    CHECK(lightloop::derive_seed(42, 7) == lightloop::derive_seed(42, 7));
}

TEST_CASE("rng draws have the moments of their distributions", "[core][random]") {
    const std::uint64_t seed = 2024;
    CAPTURE(seed);
    rng gen(seed);
    constexpr int n = 200000;
    double sum = 0.0;
    double sum_sq = 0.0;
    double sum_u = 0.0;
    for (int i = 0; i < n; ++i) {
        const double z = gen.normal();
        sum += z;
        sum_sq += z * z;
        sum_u += gen.uniform();
    }
    // Five standard errors: mean of N(0,1) has s.e. 1/sqrt(n) = 0.0022; the
    // sample second moment has s.e. sqrt(2/n) = 0.0032; the uniform mean
    // sqrt(1/12/n) = 0.00065.
    CHECK(std::abs(sum / n) < 5 * 0.0022);
    CHECK(std::abs(sum_sq / n - 1.0) < 5 * 0.0032);
    CHECK(std::abs(sum_u / n - 0.5) < 5 * 0.00065);
}

TEST_CASE("rng::below is uniform on its range", "[core][random]") {
    rng gen(7);
    std::vector<int> counts(10, 0);
    constexpr int n = 100000;
    for (int i = 0; i < n; ++i) {
        const auto v = gen.below(10);
        REQUIRE(v < 10);
        ++counts[v];
    }
    // Each count is Binomial(n, 0.1): sd = sqrt(n 0.1 0.9) = 95; allow 5 sd.
    for (const int c : counts) {
        CHECK(std::abs(c - n / 10) < 5 * 95);
    }
}

TEST_CASE("ziggurat normals have the moments and tails of N(0, 1)", "[core][random]") {
    const std::uint64_t seed = 5;
    CAPTURE(seed);
    rng gen(seed);
    constexpr int n = 400000;
    double sum = 0;
    double sum2 = 0;
    double sum4 = 0;
    int beyond_2 = 0;
    int beyond_3_5 = 0;
    for (int i = 0; i < n; ++i) {
        const double z = lightloop::ziggurat_normal(gen);
        sum += z;
        sum2 += z * z;
        sum4 += z * z * z * z;
        beyond_2 += std::abs(z) > 2.0 ? 1 : 0;
        beyond_3_5 += std::abs(z) > 3.5 ? 1 : 0; // past the base layer's edge (3.44)
    }
    // 5 standard errors: mean 1/sqrt(n); second moment sqrt(2/n); fourth
    // moment sqrt(96/n); P(|z| > 2) = 0.0455, binomial s.e. sqrt(p(1-p)/n);
    // P(|z| > 3.5) = 4.65e-4 exercises the tail algorithm.
    CHECK(std::abs(sum / n) < 5 / std::sqrt(n));
    CHECK(std::abs(sum2 / n - 1) < 5 * std::sqrt(2.0 / n));
    CHECK(std::abs(sum4 / n - 3) < 5 * std::sqrt(96.0 / n));
    CHECK(std::abs(beyond_2 / double(n) - 0.0455) < 5 * std::sqrt(0.0455 * 0.9545 / n));
    CHECK(std::abs(beyond_3_5 / double(n) - 4.65e-4) < 5 * std::sqrt(4.65e-4 / n));
}
