#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <numbers>
#include <span>
#include <vector>

#include <lightloop/core/counter_random.hpp>
#include <lightloop/core/random.hpp>
#include <lightloop/core/random_lanes.hpp>

using lightloop::rng;

TEST_CASE("splitmix64 and xoshiro256++ match their reference outputs", "[core][random]") {
    // splitmix64 from state 0 (Vigna's reference splitmix64.c).
    std::uint64_t state = 0;
    CHECK(lightloop::splitmix64(state) == 0xE220A8397B1DCDAFULL);
    CHECK(lightloop::splitmix64(state) == 0x6E789E6AA1B965F4ULL);
    CHECK(lightloop::splitmix64(state) == 0x06C45D188009454FULL);
    // xoshiro256++ 1.0 (Blackman & Vigna's xoshiro256plusplus.c) from the state
    // {0, 0, 0, 1}: its first ten outputs, as the reference code prints them.
    // They exercise every step of the state transition (the shift by 17, the
    // xors, the rotation by 45) and the ++ scrambler.
    const std::array<std::uint64_t, 10> reference{
      0x0000000000800000ULL, 0x0000000000800011ULL, 0x0002200000800011ULL, 0x0002200044000020ULL,
      0x00022000448008A1ULL, 0x01102100802208A0ULL, 0x0114002284200880ULL, 0x0402896644A64095ULL,
      0x8A14A0A244ACC891ULL, 0x8C88BA4680B20495ULL};
    auto gen = rng::from_state({0, 0, 0, 1});
    CHECK(gen.state() == std::array<std::uint64_t, 4>{0, 0, 0, 1});
    for (std::size_t i = 0; i < reference.size(); ++i) {
        CAPTURE(i);
        CHECK(gen() == reference[i]);
    }
}

TEST_CASE("derive_seed gives distinct, balanced and avalanching streams", "[core][random]") {
    // 4096 streams of one seed: no two alike; each output bit set half the time (the
    // fraction's standard error is 0.5 / sqrt(4096) = 0.0078; five of them allowed); and
    // one flipped bit of the seed changes 32 of the 64 output bits on average (standard
    // error of the mean sqrt(16 / 4096) = 0.0625; five allowed).
    constexpr std::size_t n = 4096;
    std::vector<std::uint64_t> seeds(n);
    std::array<std::size_t, 64> ones{};
    double changed = 0.0;
    for (std::size_t k = 0; k < n; ++k) {
        seeds[k] = lightloop::derive_seed(42, k);
        for (std::size_t bit = 0; bit < 64; ++bit) {
            ones[bit] += (seeds[k] >> bit) & 1U;
        }
        const std::uint64_t flipped = lightloop::derive_seed(42 ^ (1ULL << (k % 64)), k);
        changed += static_cast<double>(std::popcount(seeds[k] ^ flipped));
    }
    std::sort(seeds.begin(), seeds.end());
    CHECK(std::adjacent_find(seeds.begin(), seeds.end()) == seeds.end());
    for (std::size_t bit = 0; bit < 64; ++bit) {
        CAPTURE(bit);
        CHECK(std::abs(static_cast<double>(ones[bit]) / n - 0.5) < 5 * 0.0078);
    }
    CHECK(std::abs(changed / n - 32.0) < 5 * 0.0625);
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

TEST_CASE("rng_lanes steps eight xoshiro256++ streams, stream k seeded derive_seed(seed, k)",
          "[core][random]") {
    const std::uint64_t seed = 42;
    lightloop::rng_lanes lanes(seed);
    constexpr std::size_t steps = 37;
    std::vector<std::uint64_t> out(steps * lightloop::rng_lanes::lanes);
    lanes.next(out.data(), 20);
    lanes.next(out.data() + 20 * lightloop::rng_lanes::lanes, steps - 20);
    for (std::size_t k = 0; k < lightloop::rng_lanes::lanes; ++k) {
        rng reference(lightloop::derive_seed(seed, k));
        for (std::size_t step = 0; step < steps; ++step) {
            CAPTURE(k, step);
            REQUIRE(out[step * lightloop::rng_lanes::lanes + k] == reference());
        }
    }
}

TEST_CASE("rng_lanes normals have the moments and tails of N(0, 1)", "[core][random]") {
    lightloop::rng_lanes lanes(5);
    constexpr int n = 400000;
    // An odd length exercises the partial last block.
    std::vector<float> z(n);
    lanes.fill_normal(std::span<float>(z.data(), 1000 + 7));
    lanes.fill_normal(std::span<float>(z.data() + 1007, n - 1007));
    double sum = 0;
    double sum2 = 0;
    double sum4 = 0;
    double lag = 0;
    int beyond_2 = 0;
    int beyond_4 = 0;
    for (int i = 0; i < n; ++i) {
        const double v = z[static_cast<std::size_t>(i)];
        sum += v;
        sum2 += v * v;
        sum4 += v * v * v * v;
        lag += i > 0 ? v * z[static_cast<std::size_t>(i - 1)] : 0.0;
        beyond_2 += std::abs(v) > 2.0 ? 1 : 0;
        beyond_4 += std::abs(v) > 4.0 ? 1 : 0;
    }
    // 5 standard errors: mean 1/sqrt(n); second moment sqrt(2/n); fourth
    // moment sqrt(96/n); neighbours uncorrelated, s.e. 1/sqrt(n);
    // P(|z| > 2) = 0.0455 and P(|z| > 4) = 6.33e-5, binomial s.e.
    CHECK(std::abs(sum / n) < 5 / std::sqrt(n));
    CHECK(std::abs(sum2 / n - 1) < 5 * std::sqrt(2.0 / n));
    CHECK(std::abs(sum4 / n - 3) < 5 * std::sqrt(96.0 / n));
    CHECK(std::abs(lag / n) < 5 / std::sqrt(n));
    CHECK(std::abs(beyond_2 / double(n) - 0.0455) < 5 * std::sqrt(0.0455 * 0.9545 / n));
    CHECK(std::abs(beyond_4 / double(n) - 6.33e-5) < 5 * std::sqrt(6.33e-5 / n));
}

TEST_CASE("rng_lanes' logarithm and sine/cosine match libm on their ranges", "[core][random]") {
    using batch = xsimd::batch<float>;
    // The radius's uniform (h + 1/2) 2^-31 spans [2^-32, 1]: geometric and
    // linear grids, and both ends.
    std::vector<float> xs = {0x1.0p-32f, 0x1.0p-31f, 0.5f, 0.70710677f, 0.70710683f, 1.0f};
    for (int i = 0; i <= 3200; ++i) {
        xs.push_back(std::pow(2.0f, -32.0f * static_cast<float>(i) / 3200.0f));
        xs.push_back(static_cast<float>(i) / 3200.0f + 0x1.0p-32f);
    }
    double worst_log = 0.0;
    for (const float x : xs) {
        const float got = lightloop::detail::log_unit(batch(x)).get(0);
        const double want = std::log(static_cast<double>(x));
        // Relative error, or absolute near x = 1 where ln x -> 0.
        worst_log = std::max(worst_log, std::abs(got - want) / std::max(std::abs(want), 1e-3));
    }
    CHECK(worst_log < 2.5e-7); // measured 1.1e-7
    double worst_trig = 0.0;
    for (int i = -4000; i <= 4000; ++i) {
        const float t = static_cast<float>(std::numbers::pi / 4 * i / 4000.0);
        const auto [s, c] = lightloop::detail::sincos_eighth_turn(batch(t));
        worst_trig = std::max(worst_trig, std::abs(s.get(0) - std::sin(static_cast<double>(t))));
        worst_trig = std::max(worst_trig, std::abs(c.get(0) - std::cos(static_cast<double>(t))));
    }
    CHECK(worst_trig < 1e-7); // measured 4.6e-8
}

TEST_CASE("rng_lanes normal pairs are independent: uniform angle, uncorrelated squares",
          "[core][random]") {
    // Each block holds Box-Muller pairs (z[i], z[i + block/2]). A wrong
    // angle (a quadrant not rotated, a sign lost) skews the octant counts or
    // correlates the squares, which the moment test above would not see.
    lightloop::rng_lanes lanes(11);
    constexpr std::size_t half = lightloop::rng_lanes::block / 2;
    constexpr std::size_t blocks = 2000;
    std::vector<float> z(blocks * 2 * half);
    lanes.fill_normal(std::span<float>(z));
    std::vector<double> octants(8, 0.0);
    double square_product = 0;
    double product = 0;
    for (std::size_t b = 0; b < blocks; ++b) {
        for (std::size_t i = 0; i < half; ++i) {
            const double x = z[b * 2 * half + i];
            const double y = z[b * 2 * half + half + i];
            const double angle = std::atan2(y, x) + std::numbers::pi; // [0, 2 pi]
            const auto octant =
              std::min<std::size_t>(7, static_cast<std::size_t>(angle / (std::numbers::pi / 4)));
            octants[octant] += 1.0;
            square_product += x * x * y * y;
            product += x * y;
        }
    }
    const double n = static_cast<double>(blocks * half);
    // Octant counts Binomial(n, 1/8); E[x y] = 0 (s.e. 1/sqrt(n)); for
    // independent normals E[x² y²] = 1, Var = 9 - 1 = 8.
    for (const double count : octants) {
        CHECK(std::abs(count - n / 8) < 5 * std::sqrt(n / 8 * 7 / 8));
    }
    CHECK(std::abs(product / n) < 5 / std::sqrt(n));
    CHECK(std::abs(square_product / n - 1) < 5 * std::sqrt(8 / n));
}

TEST_CASE("rng_lanes Poisson inversion has the Poisson distribution", "[core][random]") {
    lightloop::rng_lanes lanes(9);
    constexpr std::size_t n = 100003; // not a multiple of the SIMD width
    for (const double mean : {0.3, 4.0, 17.0, 29.9}) {
        CAPTURE(mean);
        std::vector<double> means(n, mean);
        std::vector<double> counts(n);
        std::vector<double> uniform(n + lightloop::rng_lanes::group);
        lanes.poisson_inversion(means.data(), counts.data(), uniform.data(), n);
        std::vector<double> histogram(200, 0.0);
        for (const double k : counts) {
            REQUIRE(k == std::floor(k));
            REQUIRE(k >= 0.0);
            REQUIRE(k < 200.0);
            histogram[static_cast<std::size_t>(k)] += 1.0;
        }
        // Each bin is Binomial(n, p_k): within 5 s.e. of n p_k.
        double p = std::exp(-mean);
        for (std::size_t k = 0; k < 80; ++k) {
            CAPTURE(k);
            CHECK(std::abs(histogram[k] - n * p) < 5 * std::sqrt(n * p * (1 - p)) + 1e-9);
            p *= mean / static_cast<double>(k + 1);
        }
    }
}

TEST_CASE("philox4x32-10 matches Random123's known answers, and its SIMD form matches it",
          "[core][random]") {
    using words = std::array<std::uint32_t, 4>;
    // Random123's kat_vectors, "philox4x32 10": counter, key, result.
    CHECK(lightloop::philox4x32({0, 0, 0, 0}, {0, 0}) ==
          words{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8});
    CHECK(lightloop::philox4x32({0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
                                {0xffffffff, 0xffffffff}) ==
          words{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd});
    CHECK(lightloop::philox4x32({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
                                {0xa4093822, 0x299f31d0}) ==
          words{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1});
    // The block form (vector lanes on AVX2 and AVX-512) on arbitrary counters
    // and keys, every word set.
    rng gen(3);
    constexpr std::size_t lanes = lightloop::detail::philox_lanes;
    for (int trial = 0; trial < 20; ++trial) {
        std::array<std::uint32_t, lanes> c0{}, c1{}, c2{}, c3{};
        std::array<words, lanes> expected{};
        const auto k0 = static_cast<std::uint32_t>(gen());
        const auto k1 = static_cast<std::uint32_t>(gen());
        for (std::size_t l = 0; l < lanes; ++l) {
            const std::uint64_t a = gen();
            const std::uint64_t b = gen();
            c0[l] = static_cast<std::uint32_t>(a);
            c1[l] = static_cast<std::uint32_t>(a >> 32);
            c2[l] = static_cast<std::uint32_t>(b);
            c3[l] = static_cast<std::uint32_t>(b >> 32);
            expected[l] = lightloop::philox4x32({c0[l], c1[l], c2[l], c3[l]}, {k0, k1});
        }
        lightloop::detail::philox_block(c0.data(), c1.data(), c2.data(), c3.data(), k0, k1);
        for (std::size_t l = 0; l < lanes; ++l) {
            CHECK(words{c0[l], c1[l], c2[l], c3[l]} == expected[l]);
        }
    }
}

TEST_CASE("counter-based complex normals are a function of (key, row, column), whatever the tiling",
          "[core][random]") {
    constexpr std::size_t width = 1000;
    std::vector<float> re(width);
    std::vector<float> im(width);
    lightloop::complex_normal_row(77, 5, 0, width, 1.5f, re.data(), im.data());
    // The same row in pieces of odd starts and lengths: the same bits.
    std::vector<float> piece_re(width, -1.0f);
    std::vector<float> piece_im(width, -1.0f);
    rng gen(4);
    for (std::size_t first = 0; first < width;) {
        const std::size_t count = std::min<std::size_t>(1 + gen.below(97), width - first);
        lightloop::complex_normal_row(77, 5, first, count, 1.5f, piece_re.data() + first,
                                      piece_im.data() + first);
        first += count;
    }
    CHECK(piece_re == re);
    CHECK(piece_im == im);
    // Each entry alone, and its Philox word: entry (5, k) is the Box-Muller
    // pair of words (2 (k mod 2), 2 (k mod 2) + 1) of the counter (k / 2, 5).
    for (const std::size_t k : {0UL, 1UL, 2UL, 63UL, 64UL, 999UL}) {
        float one_re = 0.0f;
        float one_im = 0.0f;
        lightloop::complex_normal_row(77, 5, k, 1, 1.5f, &one_re, &one_im);
        CHECK(one_re == re[k]);
        CHECK(one_im == im[k]);
        const auto w = lightloop::philox4x32({static_cast<std::uint32_t>(k / 2), 0, 5, 0}, {77, 0});
        const std::uint32_t radius = w[2 * (k % 2)] >> 1;
        const std::uint32_t angle = w[2 * (k % 2) + 1];
        const double r =
          1.5 / std::sqrt(2.0) *
          std::sqrt(-2.0 * std::log((static_cast<double>(radius) + 0.5) * 0x1.0p-31));
        const double phi =
          std::numbers::pi / 2 * static_cast<double>(angle >> 30) +
          (static_cast<double>((angle >> 8) & 0x3FFFFF) * 0x1.0p-22 - 0.5) * std::numbers::pi / 2;
        CHECK(re[k] == Approx(r * std::cos(phi)).margin(1e-5));
        CHECK(im[k] == Approx(r * std::sin(phi)).margin(1e-5));
    }
    // Columns past 2^32 and rows past 2^32 are distinct entries.
    float far_re[2];
    float far_im[2];
    lightloop::complex_normal_row(77, 5, (1ULL << 33) + 4, 2, 1.5f, far_re, far_im);
    CHECK(far_re[0] != re[4]);
    lightloop::complex_normal_row(77, 5 + (1ULL << 32), 4, 2, 1.5f, far_re, far_im);
    CHECK(far_re[0] != re[4]);
}

TEST_CASE("counter-based complex normals are CN(0, s^2): moments, phase, independence",
          "[core][random]") {
    constexpr std::size_t rows = 400;
    constexpr std::size_t cols = 500;
    const float scale = 2.0f;
    std::vector<float> re(rows * cols);
    std::vector<float> im(rows * cols);
    for (std::size_t j = 0; j < rows; ++j) {
        lightloop::complex_normal_row(9, j, 0, cols, scale, re.data() + j * cols,
                                      im.data() + j * cols);
    }
    const double n = static_cast<double>(rows * cols);
    const double s2 = static_cast<double>(scale) * scale;
    double power = 0, power2 = 0, re2 = 0, cross = 0, mean_re = 0, row_lag = 0, col_lag = 0;
    std::vector<double> octants(8, 0.0);
    for (std::size_t j = 0; j < rows; ++j) {
        for (std::size_t k = 0; k < cols; ++k) {
            const double a = re[j * cols + k];
            const double b = im[j * cols + k];
            const double p = a * a + b * b;
            power += p;
            power2 += p * p;
            re2 += a * a;
            cross += a * b;
            mean_re += a;
            row_lag += j > 0 ? a * re[(j - 1) * cols + k] : 0.0;
            col_lag += k > 0 ? a * re[j * cols + k - 1] : 0.0;
            const double angle = std::atan2(b, a) + std::numbers::pi;
            octants[std::min<std::size_t>(
              7, static_cast<std::size_t>(angle / (std::numbers::pi / 4)))] += 1;
        }
    }
    // |z|^2 is exponential with mean s^2: E|z|^4 = 2 s^4, Var |z|^2 = s^4
    // (s.e. of the mean s^2 / sqrt(n)), Var |z|^4 = 20 s^8. Re z ~ N(0, s^2/2):
    // s.e. of its second moment s^2/2 sqrt(2/n). Products of independent
    // parts have mean 0 and s.e. (s^2/2)/sqrt(n).
    CHECK(std::abs(power / n - s2) < 5 * s2 / std::sqrt(n));
    CHECK(std::abs(power2 / n - 2 * s2 * s2) < 5 * std::sqrt(20.0) * s2 * s2 / std::sqrt(n));
    CHECK(std::abs(re2 / n - s2 / 2) < 5 * s2 / 2 * std::sqrt(2 / n));
    CHECK(std::abs(mean_re / n) < 5 * std::sqrt(s2 / 2 / n));
    CHECK(std::abs(cross / n) < 5 * (s2 / 2) / std::sqrt(n));
    CHECK(std::abs(row_lag / n) < 5 * (s2 / 2) / std::sqrt(n));
    CHECK(std::abs(col_lag / n) < 5 * (s2 / 2) / std::sqrt(n));
    for (const double count : octants) {
        CHECK(std::abs(count - n / 8) < 5 * std::sqrt(n / 8 * 7 / 8));
    }
    // Another key: uncorrelated with this one.
    std::vector<float> other_re(cols);
    std::vector<float> other_im(cols);
    double keys = 0;
    for (std::size_t j = 0; j < rows; ++j) {
        lightloop::complex_normal_row(10, j, 0, cols, scale, other_re.data(), other_im.data());
        for (std::size_t k = 0; k < cols; ++k) {
            keys += static_cast<double>(other_re[k]) * re[j * cols + k];
        }
    }
    CHECK(std::abs(keys / n) < 5 * (s2 / 2) / std::sqrt(n));
}
