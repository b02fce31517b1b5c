#include <catch2/catch.hpp>

#include <array>
#include <bit>
#include <cmath>
#include <limits>
#include <tuple>
#include <utility>

#include "support/helpers.hpp"

using namespace lightloop;
using lightloop::testing::random_matrix;

namespace {

/// Σ_f w_f frame_f: what the encoder says the vector is.
template <class Encoder>
std::vector<double> decode(const Encoder& enc, const std::vector<double>& x,
                           std::vector<double>* frames_out = nullptr) {
    const std::size_t in = x.size();
    const std::size_t f_count = enc.frames_per_sample();
    std::vector<double> frames(f_count * in, -1.0);
    std::vector<double> weights(f_count);
    enc.encode(std::span<const double>(x), std::span<double>(frames), std::span<double>(weights));
    std::vector<double> out(in, 0.0);
    for (std::size_t f = 0; f < f_count; ++f) {
        for (std::size_t k = 0; k < in; ++k) {
            out[k] += weights[f] * frames[f * in + k];
        }
    }
    if (frames_out != nullptr) {
        *frames_out = frames;
    }
    return out;
}

/// Re R and Im R (out x in, in double) of any medium, read off its field:
/// frame k lights micromirror k alone, so row k of the field is column k of R
/// (exact: the other terms are zero products).
template <class Medium>
std::pair<matrix<double>, matrix<double>> medium_matrices(Medium& medium) {
    const std::size_t in = medium.inputs();
    const std::size_t out = medium.outputs();
    auto identity = matrix<double>::from_shape({in, in});
    std::fill(identity.begin(), identity.end(), 0.0);
    for (std::size_t k = 0; k < in; ++k) {
        identity(k, k) = 1.0;
    }
    auto columns_re = matrix<double>::from_shape({in, out});
    auto columns_im = matrix<double>::from_shape({in, out});
    medium.template prepare<double>();
    medium.field(identity.data(), in, columns_re.data(), columns_im.data());
    return {lightloop::testing::transposed(columns_re), lightloop::testing::transposed(columns_im)};
}

/// M = 2 Re(r̄ ⊙ R) times the readout's normalisation, formed entry by entry
/// from the device's medium and reference: the matrix the holographic readout
/// must apply.
template <class Device>
matrix<double> holographic_matrix(Device& device) {
    const auto [re, im] = medium_matrices(device.medium());
    const auto& r_re = device.readout().reference_real();
    const auto& r_im = device.readout().reference_imag();
    auto m = matrix<double>::from_shape({re.shape(0), re.shape(1)});
    // conj(r) R = (r_re - i r_im)(R_re + i R_im); its real part is r_re R_re + r_im R_im.
    for (std::size_t j = 0; j < m.shape(0); ++j) {
        for (std::size_t k = 0; k < m.shape(1); ++k) {
            m(j, k) =
              2.0 * (r_re[j] * re(j, k) + r_im[j] * im(j, k)) * device.readout().normalisation();
        }
    }
    return m;
}

/// Binary frames (each micromirror on with probability `density`).
template <class T>
matrix<T> binary_frames(std::size_t n, std::size_t in, double density, std::uint64_t seed) {
    auto x = matrix<T>::from_shape({n, in});
    rng gen(seed);
    for (auto& v : x) {
        v = gen.uniform() < density ? T(1) : T(0);
    }
    return x;
}

/// A batch whose rows are already ternary multiples (c_r * {-1, 0, 1}), so the
/// ternary encoder represents them exactly.
template <class T>
matrix<T> ternary_batch(std::size_t n, std::size_t in, std::uint64_t seed) {
    auto x = matrix<T>::from_shape({n, in});
    rng gen(seed);
    for (std::size_t r = 0; r < n; ++r) {
        const double c = 0.5 + gen.uniform();
        for (std::size_t k = 0; k < in; ++k) {
            const auto level = static_cast<double>(gen.below(3)) - 1.0;
            x(r, k) = static_cast<T>(c * level);
        }
        x(r, 0) = static_cast<T>(c); // never all zero
    }
    return x;
}

/// A drifted medium against its start R0, each a mean over its n entries
/// in units of σ²: |R|^2, Re(R conj(R0)) and |R - R0|^2.
struct drift_moments {
    double n = 0.0;
    double power = 0.0;
    double correlation = 0.0;
    double distance = 0.0;
};
drift_moments moments_against(transmission_matrix& medium, const matrix<double>& start_re,
                              const matrix<double>& start_im, double variance) {
    const auto& re = medium.real<double>();
    const auto& im = medium.imag<double>();
    drift_moments m;
    for (std::size_t i = 0; i < re.size(); ++i) {
        m.power += re.data()[i] * re.data()[i] + im.data()[i] * im.data()[i];
        m.correlation += re.data()[i] * start_re.data()[i] + im.data()[i] * start_im.data()[i];
        const double d_re = re.data()[i] - start_re.data()[i];
        const double d_im = im.data()[i] - start_im.data()[i];
        m.distance += d_re * d_re + d_im * d_im;
    }
    m.n = static_cast<double>(re.size());
    m.power /= m.n * variance;
    m.correlation /= m.n * variance;
    m.distance /= m.n * variance;
    return m;
}

} // namespace

TEST_CASE("ternary encoding decodes constructed inputs exactly", "[projection][optical][encoder]") {
    std::vector<double> frames;
    SECTION("one shared scale") {
        // max |e| = 0.9, τ = 0.25 * 0.9 = 0.225: keeps 0.9 (+) and -0.6 (-);
        // the scale is the mean kept magnitude (0.9 + 0.6) / 2 = 0.75.
        const auto decoded = decode(ternary_encoder{0.25, false}, {0.9, -0.05, -0.6, 0.2}, &frames);
        CHECK(frames == std::vector<double>{1, 0, 0, 0, /* e₋ */ 0, 0, 1, 0});
        CHECK(decoded == std::vector<double>{0.75, 0.0, -0.75, 0.0});
    }
    SECTION("per-sign scales (default, τ = 0.1 max|e|)") {
        // τ = 0.09 keeps 0.9 and 0.2 (+) and -0.6 (-): s₊ = 0.55, s₋ = 0.6.
        const auto decoded = decode(ternary_encoder{}, {0.9, -0.05, -0.6, 0.2}, &frames);
        CHECK(frames == std::vector<double>{1, 0, 0, 1, /* e₋ */ 0, 0, 1, 0});
        CHECK(decoded[0] == Approx(0.55));
        CHECK(decoded[1] == 0.0);
        CHECK(decoded[2] == Approx(-0.6));
        CHECK(decoded[3] == Approx(0.55));
    }
    // Threshold 0 keeps every non-zero entry; the zero vector shows nothing.
    CHECK(decode(ternary_encoder{0.0}, {0.5, 0.0, -0.5}) == std::vector<double>{0.5, 0.0, -0.5});
    CHECK(decode(ternary_encoder{}, {0.0, 0.0}) == std::vector<double>{0.0, 0.0});
    CHECK_THROWS_AS(ternary_encoder{1.0}, config_error);
}

TEST_CASE("bit-plane encoding is exact on its grid and within half a step off it",
          "[projection][optical][encoder]") {
    // 3 planes: Δ = max / 7 = 0.1; 7 = 111b, 5 = 101b on the plus planes,
    // 3 = 011b, 1 = 001b on the minus planes.
    std::vector<double> frames;
    const std::vector<double> grid{0.7, -0.3, 0.0, 0.5, -0.1};
    const auto decoded = decode(bitplane_encoder{3}, grid, &frames);
    for (std::size_t k = 0; k < grid.size(); ++k) {
        CHECK(decoded[k] == Approx(grid[k]).margin(1e-15));
    }
    for (const double f : frames) {
        CHECK((f == 0.0 || f == 1.0));
    }
    // Plane 0 (weight Δ) of the plus family holds the odd positives 7 and 5.
    CHECK(std::vector<double>(frames.begin(), frames.begin() + 5) ==
          std::vector<double>{1, 0, 0, 1, 0});
    const std::vector<double> off{0.93, -0.41, 0.07, -0.66};
    const auto approx = decode(bitplane_encoder{4}, off);
    const double step = 0.93 / 15.0;
    for (std::size_t k = 0; k < off.size(); ++k) {
        CHECK(std::abs(approx[k] - off[k]) <= step / 2 + 1e-15);
    }
    CHECK_THROWS_AS(bitplane_encoder{0}, config_error);
}

TEST_CASE("the transmission matrix is complex Gaussian, seeded, and gives E = R x",
          "[projection][optical][medium]") {
    const double variance = 2.5;
    transmission_matrix a(3000, 40, 11, variance);
    transmission_matrix b(3000, 40, 11, variance);
    transmission_matrix c(3000, 40, 12, variance);
    CHECK(lightloop::testing::identical(a.real<double>(), b.real<double>()));
    CHECK_FALSE(lightloop::testing::identical(a.real<double>(), c.real<double>()));
    const auto re = lightloop::testing::moments_of(a.real<double>());
    const auto im = lightloop::testing::moments_of(a.imag<double>());
    const double n = 3000.0 * 40.0;
    // Re and Im each N(0, σ²/2): E|R|^2 = σ². Second-moment relative s.e. sqrt(2/n).
    CHECK(std::abs(re.variance / (variance / 2) - 1) < 5 * std::sqrt(2 / n));
    CHECK(std::abs(im.variance / (variance / 2) - 1) < 5 * std::sqrt(2 / n));
    CHECK(std::abs(re.mean) < 5 * std::sqrt(variance / 2 / n));
    double cross = 0;
    for (std::size_t i = 0; i < a.real<double>().size(); ++i) {
        cross += a.real<double>().data()[i] * a.imag<double>().data()[i];
    }
    // Re and Im independent: correlation ~ N(0, 1/n).
    CHECK(std::abs(cross / n / (variance / 2)) < 5 / std::sqrt(n));

    const auto x = random_matrix<double>(3, 40, 5);
    auto e_re = matrix<double>::from_shape({3, 3000});
    auto e_im = matrix<double>::from_shape({3, 3000});
    a.field(x.data(), 3, e_re.data(), e_im.data());
    const auto expected_re = lightloop::testing::naive_product(x, false, a.real<double>(), true);
    const auto expected_im = lightloop::testing::naive_product(x, false, a.imag<double>(), true);
    CHECK(lightloop::testing::max_abs_diff(e_re, expected_re) < 1e-12);
    CHECK(lightloop::testing::max_abs_diff(e_im, expected_im) < 1e-12);

    // Past direct_max_inputs the field goes through GEMM: same product.
    constexpr std::size_t wide = transmission_matrix::direct_max_inputs + 36;
    transmission_matrix gemm_path(200, wide, 7, variance);
    const auto xb = random_matrix<double>(5, wide, 8);
    auto b_re = matrix<double>::from_shape({5, 200});
    auto b_im = matrix<double>::from_shape({5, 200});
    gemm_path.field(xb.data(), 5, b_re.data(), b_im.data());
    CHECK(lightloop::testing::max_abs_diff(
            b_re, lightloop::testing::naive_product(xb, false, gemm_path.real<double>(), true)) <
          1e-12);
    CHECK(lightloop::testing::max_abs_diff(
            b_im, lightloop::testing::naive_product(xb, false, gemm_path.imag<double>(), true)) <
          1e-12);
}

TEMPLATE_TEST_CASE("holographic readout with an ideal camera is x M^T with M = 2 Re(r̄ ⊙ R)",
                   "[projection][optical][holographic]", transmission_matrix, matrix_free_medium,
                   structured_medium) {
    // Relative error of the projection against x M^T, in scalar type T, for
    // each reference.
    auto relative_error = [](auto zero, auto reference) {
        using T = decltype(zero);
        optical<holographic_readout<decltype(reference)>, ideal_camera, ternary_encoder, TestType>
          device;
        device.configure(12, 300, 41);
        const auto x = ternary_batch<T>(7, 12, 3);
        auto y = matrix<T>::from_shape({7, 300});
        device.project(x, y);
        const auto expected =
          lightloop::testing::naive_product(x, false, holographic_matrix(device), true);
        return lightloop::testing::max_abs_diff(y, expected) /
               lightloop::testing::max_abs(expected);
    };
    // |E + r|^2 - |r|^2 - |E|^2 cancels terms of size |r|^2 ~ σ² in, about 10
    // times the linear term here: double rounding leaves ~1e-15 of them; float
    // (eps 6e-8) with float GEMMs stays under 1e-4 of the output's scale.
    CHECK(relative_error(0.0, off_axis_reference{}) < 1e-11);
    CHECK(relative_error(0.0f, off_axis_reference{}) < 1e-4);
    CHECK(relative_error(0.0, dmd_reference{}) < 1e-11);
    CHECK(relative_error(0.0f, dmd_reference{}) < 1e-4);
}

TEST_CASE("a drifting medium keeps its variance and decorrelates as sqrt(keep) per step",
          "[projection][optical][drift]") {
    // R <- sqrt(keep) R + sqrt(1 - keep) N: E|R|^2 stays σ², and the
    // correlation with the start is the product of sqrt(keep) over the steps
    // (the AR(1) model for any split of the frames).
    constexpr std::size_t out = 300;
    constexpr std::size_t in = 40; // the direct path's cache (in <= 64) must follow
    const double variance = 2.0;
    transmission_matrix medium(out, in, 5, variance);
    const matrix<double> start_re = medium.real<double>();
    const matrix<double> start_im = medium.imag<double>();
    medium.drift(0.8, 0);
    medium.drift(0.8, 1); // 0.64 in two steps: correlation 0.8
    const drift_moments m = moments_against(medium, start_re, start_im, variance);
    const double n = m.n;
    // s.e.: |R|^2 ~ σ² Exp(1), sqrt(1/n) relative; the correlation estimate
    // has variance (1 + ρ²)/(2n) or less: 1/sqrt(n) bounds its s.e.
    CHECK(std::abs(m.power - 1.0) < 5 / std::sqrt(n));
    CHECK(std::abs(m.correlation - 0.8) < 5 / std::sqrt(n));
    // The field uses the drifted R, through the direct path's cache.
    const auto x = binary_frames<double>(4, in, 0.5, 3);
    auto e_re = matrix<double>::from_shape({4, out});
    auto e_im = matrix<double>::from_shape({4, out});
    medium.prepare<double>();
    medium.field(x.data(), 4, e_re.data(), e_im.data());
    CHECK(lightloop::testing::max_abs_diff(e_re, lightloop::testing::naive_product(
                                                   x, false, medium.real<double>(), true)) < 1e-12);
    // Another step seed, another innovation; the same seed, the same one.
    transmission_matrix a(out, in, 5, variance);
    transmission_matrix b(out, in, 5, variance);
    transmission_matrix c(out, in, 5, variance);
    a.drift(0.5, 3);
    b.drift(0.5, 3);
    c.drift(0.5, 4);
    CHECK(lightloop::testing::identical(a.real<float>(), b.real<float>()));
    CHECK_FALSE(lightloop::testing::identical(a.real<float>(), c.real<float>()));
}

// A bf16 medium's drift steps can be below half a bf16 ulp of its entries
// (a projection of a few hundred frames at ε = 1e-9 takes one): here each
// of 10 000 steps contracts an entry by 5e-7 and adds an innovation of
// 0.0007 σ, where entries of size σ have ulps of 0.008-0.016. Rounded in
// place, most steps round back (R moved 0.64 of the model's distance); kept unrounded, R
// follows the AR(1) model: after keep^10000 = 0.990 the mean |R(T) - R(0)|^2
// is 2 σ² (1 - ρ), ρ = sqrt(0.990) = 0.995, and the products read R rounded.
TEST_CASE("a drifting bf16 medium drifts unrounded and is read rounded",
          "[projection][optical][drift]") {
    constexpr std::size_t out = 100;
    constexpr std::size_t in = 40;
    const double variance = 2.0;
    transmission_matrix medium(out, in, 5, variance, true);
    const matrix<double> start_re = medium.real<double>();
    const matrix<double> start_im = medium.imag<double>();
    const double keep = 1.0 - 1e-6;
    constexpr std::uint64_t steps = 10000;
    for (std::uint64_t step = 0; step < steps; ++step) {
        medium.drift(keep, step);
    }
    const drift_moments m = moments_against(medium, start_re, start_im, variance);
    const double n = m.n;
    const double rho = std::sqrt(std::pow(keep, static_cast<double>(steps)));
    // R(T) - R(0) is CN(0, 2 σ² (1 - ρ)): its |.|^2 is that times Exp(1),
    // so the mean over n entries has relative s.e. 1/sqrt(n), as |R|^2 has
    // (rounding both ends adds about 1e-5 σ², 0.1 % of it).
    CHECK(std::abs(m.power - 1.0) < 5 / std::sqrt(n));
    CHECK(std::abs(m.distance / (2.0 * (1.0 - rho)) - 1.0) < 5 / std::sqrt(n));
    // What the products read is bf16, the same in both types.
    const auto& re = medium.real<double>();
    const auto& re_f = medium.real<float>();
    bool rounded = true;
    for (std::size_t i = 0; i < re_f.size(); ++i) {
        rounded = rounded && re_f.data()[i] == round_to_bf16(re_f.data()[i]) &&
                  static_cast<double>(re_f.data()[i]) == re.data()[i];
    }
    CHECK(rounded);
    const auto x = binary_frames<float>(4, in, 0.5, 3);
    auto e_re = matrix<float>::from_shape({4, out});
    auto e_im = matrix<float>::from_shape({4, out});
    medium.prepare<float>();
    medium.field(x.data(), 4, e_re.data(), e_im.data());
    CHECK(lightloop::testing::max_abs_diff(
            e_re, lightloop::testing::naive_product(x, false, re_f, true)) < 1e-4);

    // Saved and loaded, it goes on as the original (the unrounded state is
    // saved); undrifted, it is the seed's and nothing of it is saved.
    const auto resumed = [&](transmission_matrix& original) {
        state_writer saved;
        original.save_state(saved);
        transmission_matrix copy(out, in, 5, variance, true);
        state_reader reader(saved.bytes(), "test");
        copy.load_state(reader);
        original.drift(keep, steps);
        copy.drift(keep, steps);
        return lightloop::testing::identical(original.real<float>(), copy.real<float>()) &&
               lightloop::testing::identical(original.imag<double>(), copy.imag<double>());
    };
    CHECK(resumed(medium));
    transmission_matrix undrifted(out, in, 5, variance, true);
    undrifted.real<float>();
    CHECK(resumed(undrifted));
    state_writer nothing;
    transmission_matrix(out, in, 5, variance, true).save_state(nothing);
    CHECK(nothing.bytes().size() == 4 * sizeof(std::uint64_t));
}

TEST_CASE("a drifting DMD reference needs recalibration, and its frames are counted",
          "[projection][optical][drift]") {
    // With an ideal camera, a recalibrated device projects exactly through
    // the drifted medium and reference, x M(t)^T; one whose |r|^2 was
    // measured before the drift is off by the change in |r|^2 on every
    // frame. The ternary encoder's y(e₊) - y(e₋) cancels such an offset when
    // a vector has both signs, so the inputs here are non-negative (e₋ empty).
    using device_type = optical<holographic_readout<dmd_reference>, ideal_camera>;
    auto x = ternary_batch<double>(6, 12, 4);
    for (auto& v : x) {
        v = std::abs(v);
    }
    auto run = [&](std::uint64_t recalibrate_every) {
        device_type device(holographic_readout<dmd_reference>{}, ideal_camera{}, ternary_encoder{},
                           {.drift = 0.02, .recalibrate_every = recalibrate_every});
        device.configure(12, 200, 8);
        auto y = matrix<double>::from_shape({6, 200});
        device.project(x, y); // calibrates, then drifts (and recalibrates)
        const auto expected = // through the drifted medium and reference
          lightloop::testing::naive_product(x, false, holographic_matrix(device), true);
        device.project(x, y);
        return std::tuple{lightloop::testing::max_abs_diff(y, expected) /
                            lightloop::testing::max_abs(expected),
                          device.statistics(), y};
    };
    const auto [recalibrated_error, recalibrated, y_recalibrated] = run(1);
    const auto [stale_error, stale, y_stale] = run(0);
    CHECK(recalibrated_error < 1e-11);
    CHECK(stale_error > 1e-3);
    // 16 exposures at the start, then after each of the two projections.
    CHECK(recalibrated.calibration_frames == 3 * 16);
    CHECK(stale.calibration_frames == 16);
    CHECK(recalibrated.frames - recalibrated.calibration_frames ==
          stale.frames - stale.calibration_frames);
    // The drift is state: saved and loaded, the device continues as the
    // original does.
    using noisy_type = optical<holographic_readout<dmd_reference>, camera>;
    noisy_type original(holographic_readout<dmd_reference>{}, camera{}, ternary_encoder{},
                        {.drift = 0.02, .recalibrate_every = 30});
    original.configure(12, 200, 8);
    auto y = matrix<double>::from_shape({6, 200});
    original.project(x, y);
    original.project(x, y);
    state_writer saved;
    original.save_state(saved);
    noisy_type resumed(holographic_readout<dmd_reference>{}, camera{}, ternary_encoder{},
                       {.drift = 0.02, .recalibrate_every = 30});
    resumed.configure(12, 200, 8);
    state_reader reader(saved.bytes(), "test");
    resumed.load_state(reader);
    auto y_original = matrix<double>::from_shape({6, 200});
    auto y_resumed = matrix<double>::from_shape({6, 200});
    original.project(x, y_original);
    resumed.project(x, y_resumed);
    CHECK(lightloop::testing::identical(y_original, y_resumed));
    CHECK(original.statistics().calibration_frames == resumed.statistics().calibration_frames);
    // Only a stored medium drifts.
    using free_device = optical<holographic_readout<>, camera, ternary_encoder, matrix_free_medium>;
    CHECK_THROWS_AS(free_device(optical_settings{.drift = 0.01}), config_error);
    CHECK_THROWS_AS(device_type(optical_settings{.drift = 1.0}), config_error);
}

TEST_CASE(
  "the matrix-free medium regenerates the stored medium's entries bitwise and gives E = R x",
  "[projection][optical][medium]") {
    // Sizes that cut the tiles (64 rows, 512 columns) unevenly.
    constexpr std::size_t out = 150;
    constexpr std::size_t in = 1100;
    for (const bool bf16 : {false, true}) {
        transmission_matrix stored(out, in, 21, 2.5, bf16);
        matrix_free_medium free(out, in, 21, 2.5, bf16);
        auto check_entries = [&](auto zero) {
            using T = decltype(zero);
            std::vector<T> re(in);
            std::vector<T> im(in);
            bool same = true;
            for (std::size_t j = 0; j < out; ++j) {
                free.entries<T>(j, 0, in, re.data(), im.data());
                same = same && std::equal(re.begin(), re.end(), &stored.real<T>()(j, 0)) &&
                       std::equal(im.begin(), im.end(), &stored.imag<T>()(j, 0));
            }
            CHECK(same);
        };
        check_entries(0.0f);
        check_entries(0.0);
        // A double network's medium holds the float entries exactly.
        CHECK(lightloop::testing::max_abs_diff(stored.real<double>(), stored.real<float>()) == 0.0);
        if (bf16) {
            for (const float v : stored.real<float>()) {
                REQUIRE(v == lightloop::round_to_bf16(v));
            }
        }
    }
    // The products, against the stored R, in double and float, and on one
    // and two threads: the same bits (each pixel is one thread's sums).
    matrix_free_medium free(out, in, 21, 2.5);
    transmission_matrix stored(out, in, 21, 2.5);
    const auto x = binary_frames<double>(9, in, 0.4, 2);
    const auto expected_re =
      lightloop::testing::naive_product(x, false, stored.real<double>(), true);
    const auto expected_im =
      lightloop::testing::naive_product(x, false, stored.imag<double>(), true);
    auto field_with = [&](auto zero, int threads) {
        using T = decltype(zero);
        lightloop::set_blas_threads(threads);
        matrix<T> frames = x;
        auto re = matrix<T>::from_shape({9, out});
        auto im = matrix<T>::from_shape({9, out});
        free.field(frames.data(), 9, re.data(), im.data());
        lightloop::set_blas_threads(1);
        return std::pair{re, im};
    };
    const auto [re, im] = field_with(0.0, 1);
    CHECK(lightloop::testing::max_abs_diff(re, expected_re) < 1e-12);
    CHECK(lightloop::testing::max_abs_diff(im, expected_im) < 1e-12);
    const auto [re_f, im_f] = field_with(0.0f, 1);
    // Sums of ~440 float entries of size 1.1: float rounding below 1e-4.
    CHECK(lightloop::testing::max_abs_diff(re_f, expected_re) < 1e-4);
    CHECK(lightloop::testing::max_abs_diff(im_f, expected_im) < 1e-4);
    const auto [re_two, im_two] = field_with(0.0f, 2);
    CHECK(lightloop::testing::identical(re_f, re_two));
    CHECK(lightloop::testing::identical(im_f, im_two));
    CHECK(lightloop::shared_team().size() == 1);
}

TEST_CASE("the Walsh-Hadamard transform multiplies by the Sylvester-Hadamard matrix",
          "[projection][optical][medium]") {
    // H_jk = (-1)^popcount(j & k); 8192 crosses the transform's cache block.
    for (const std::size_t n : {1UL, 2UL, 8UL, 64UL, 8192UL}) {
        const auto x = random_matrix<double>(1, n, n);
        std::vector<double> h(x.begin(), x.end());
        lightloop::detail::walsh_hadamard(h.data(), n);
        double worst = 0.0;
        for (std::size_t j = 0; j < n; ++j) {
            double expected = 0.0;
            for (std::size_t k = 0; k < n; ++k) {
                expected += (std::popcount(j & k) % 2 == 0 ? 1.0 : -1.0) * x(0, k);
            }
            worst = std::max(worst, std::abs(h[j] - expected));
        }
        CHECK(worst < 1e-10 * std::sqrt(static_cast<double>(n)));
    }
}

TEST_CASE("the structured medium is a scaled unitary with the i.i.d. medium's entry statistics",
          "[projection][optical][medium]") {
    // in = out = n = 512: S S^H = σ² n I exactly (up to rounding), where an
    // i.i.d. matrix's Gram matrix fluctuates; entries have E|S|^2 = σ²,
    // E|S|^4 = 2 σ^4 (complex Gaussian), independent real and imaginary parts.
    constexpr std::size_t n = 512;
    const double variance = 2.5;
    structured_medium medium(n, n, 17, variance);
    REQUIRE(medium.size() == n);
    const auto [re, im] = medium_matrices(medium);
    double worst_gram = 0.0;
    for (std::size_t j = 0; j < n; j += 7) {
        for (std::size_t l = 0; l < n; ++l) {
            double g_re = 0.0;
            double g_im = 0.0;
            for (std::size_t k = 0; k < n; ++k) { // row j times conj(row l)
                g_re += re(j, k) * re(l, k) + im(j, k) * im(l, k);
                g_im += im(j, k) * re(l, k) - re(j, k) * im(l, k);
            }
            const double expected = j == l ? variance * n : 0.0;
            worst_gram = std::max({worst_gram, std::abs(g_re - expected), std::abs(g_im)});
        }
    }
    CHECK(worst_gram < 1e-9 * variance * n);
    double p2 = 0.0, p4 = 0.0, re2 = 0.0, cross = 0.0;
    for (std::size_t i = 0; i < re.size(); ++i) {
        const double p = re.data()[i] * re.data()[i] + im.data()[i] * im.data()[i];
        p2 += p;
        p4 += p * p;
        re2 += re.data()[i] * re.data()[i];
        cross += re.data()[i] * im.data()[i];
    }
    const double count = static_cast<double>(re.size());
    CHECK(std::abs(p2 / count / variance - 1.0) < 1e-9); // exact: unitary
    // The i.i.d. s.e. of these statistics: sqrt(20 / count) for E|S|^4 / σ^4,
    // sqrt(2 / count) for the real part's second moment, 1/sqrt(count) for
    // the correlation.
    CHECK(std::abs(p4 / count / (variance * variance) - 2.0) < 5 * std::sqrt(20.0 / count));
    CHECK(std::abs(re2 / count / (variance / 2) - 1.0) < 5 * std::sqrt(2.0 / count));
    CHECK(std::abs(cross / count / (variance / 2)) < 5 / std::sqrt(count));
    // Seeded: another seed, another medium.
    structured_medium other(n, n, 18, variance);
    CHECK_FALSE(lightloop::testing::identical(re, medium_matrices(other).first));
}

TEST_CASE("structured and i.i.d. media give complex Gaussian projections and preserve distances",
          "[projection][optical][medium]") {
    // A frame with m micromirrors on gives E_j ~ CN(0, σ² m) through an
    // i.i.d. medium. The structured medium's field of one frame over its
    // pixels should have the same distribution: second and fourth moments of
    // |E|^2, the kurtosis of Re E, and the tail P(|Re E| > 2 sd) = 0.0455.
    constexpr std::size_t in = 3000;
    constexpr std::size_t out = 4096;
    const double variance = 1.0;
    const auto frames = binary_frames<double>(8, in, 0.3, 12);
    auto statistics = [&](auto medium) {
        medium.template prepare<double>();
        auto re = matrix<double>::from_shape({8, out});
        auto im = matrix<double>::from_shape({8, out});
        medium.field(frames.data(), 8, re.data(), im.data());
        double p2 = 0.0, p4 = 0.0, r4 = 0.0, tail = 0.0;
        for (std::size_t r = 0; r < 8; ++r) {
            double on = 0.0;
            for (std::size_t k = 0; k < in; ++k) {
                on += frames(r, k);
            }
            const double power = variance * on;
            for (std::size_t j = 0; j < out; ++j) {
                const double a = re(r, j);
                const double b = im(r, j);
                const double p = (a * a + b * b) / power;
                p2 += p;
                p4 += p * p;
                const double z = a / std::sqrt(power / 2);
                r4 += z * z * z * z;
                tail += std::abs(z) > 2.0 ? 1.0 : 0.0;
            }
        }
        const double n = 8.0 * out;
        return std::array<double, 4>{p2 / n, p4 / n, r4 / n, tail / n};
    };
    const double n = 8.0 * out;
    for (const auto& [name, s] :
         {std::pair{"iid", statistics(transmission_matrix(out, in, 3, variance))},
          std::pair{"structured", statistics(structured_medium(out, in, 3, variance))}}) {
        INFO(name);
        // |E|^2 / power ~ Exp(1): mean 1 (s.e. 1/sqrt n), second moment 2
        // (s.e. sqrt(20/n)); Re E / sd ~ N(0, 1): fourth moment 3 (s.e.
        // sqrt(96/n)); the tail, binomial.
        CHECK(std::abs(s[0] - 1.0) < 5 / std::sqrt(n));
        CHECK(std::abs(s[1] - 2.0) < 5 * std::sqrt(20.0 / n));
        CHECK(std::abs(s[2] - 3.0) < 5 * std::sqrt(96.0 / n));
        CHECK(std::abs(s[3] - 0.0455) < 5 * std::sqrt(0.0455 * 0.9545 / n));
    }
    // Johnson-Lindenstrauss: for frames u, v, ||S(u - v)||^2 / (σ² out ||u - v||^2)
    // is a mean of `out` Exp(1) variables for an i.i.d. medium: within
    // 5 / sqrt(out) = 0.078 of 1 for every one of the 28 pairs (and tighter
    // for the structured medium, whose rows are orthogonal).
    auto distortion = [&](auto medium) {
        medium.template prepare<double>();
        auto re = matrix<double>::from_shape({8, out});
        auto im = matrix<double>::from_shape({8, out});
        medium.field(frames.data(), 8, re.data(), im.data());
        double worst = 0.0;
        for (std::size_t u = 0; u < 8; ++u) {
            for (std::size_t v = u + 1; v < 8; ++v) {
                double image = 0.0;
                double distance = 0.0;
                for (std::size_t j = 0; j < out; ++j) {
                    const double a = re(u, j) - re(v, j);
                    const double b = im(u, j) - im(v, j);
                    image += a * a + b * b;
                }
                for (std::size_t k = 0; k < in; ++k) {
                    distance += (frames(u, k) - frames(v, k)) * (frames(u, k) - frames(v, k));
                }
                worst = std::max(worst, std::abs(image / (variance * out * distance) - 1.0));
            }
        }
        return worst;
    };
    CHECK(distortion(transmission_matrix(out, in, 4, variance)) < 5 / std::sqrt(double(out)));
    CHECK(distortion(structured_medium(out, in, 4, variance)) < 5 / std::sqrt(double(out)));
}

TEST_CASE("an optical device with a matrix-free medium projects as the stored one does",
          "[projection][optical][medium]") {
    // Same seed, same R, same camera noise: the projections differ only by
    // the field's summation order, far below the camera's quantisation step
    // (which would flip a level only for a field within ~1e-7 of a step's edge).
    const auto x = ternary_batch<float>(40, 30, 8);
    auto project = [&](auto device) {
        device.configure(30, 200, 13);
        auto y = matrix<float>::from_shape({40, 200});
        device.project(x, y); // calibrates
        device.project(x, y);
        return std::pair{y, device.statistics()};
    };
    const auto [stored, stored_stats] = project(optical<>{});
    const auto [free, free_stats] = project(optical<holographic_readout<off_axis_reference>, camera,
                                                    ternary_encoder, matrix_free_medium>{});
    CHECK(lightloop::testing::max_abs_diff(stored, free) <
          1e-5 * lightloop::testing::max_abs(stored));
    CHECK(stored_stats.frames == free_stats.frames);
    CHECK(stored_stats.pixels_read == free_stats.pixels_read);
}

TEST_CASE("the holographic matrix has uncorrelated entries of the predicted variance",
          "[projection][optical][holographic]") {
    const std::size_t in = 40;
    const std::size_t out = 3000;
    const double n = static_cast<double>(in * out);
    SECTION("off-axis reference: uniform |r|, so every entry has variance 1 / in") {
        optical<holographic_readout<off_axis_reference>, ideal_camera> device;
        device.configure(in, out, 5);
        const auto m = holographic_matrix(device);
        const auto moments = lightloop::testing::moments_of(m);
        CHECK(std::abs(moments.mean) < 5 * std::sqrt(1.0 / in / n));
        CHECK(std::abs(moments.variance * in - 1.0) < 5 * std::sqrt(2.0 / n));
        // Correlation of horizontal and vertical neighbours: ~ N(0, 1/pairs).
        double horizontal = 0;
        double vertical = 0;
        for (std::size_t j = 0; j + 1 < out; ++j) {
            for (std::size_t k = 0; k + 1 < in; ++k) {
                horizontal += m(j, k) * m(j, k + 1);
                vertical += m(j, k) * m(j + 1, k);
            }
        }
        const double pairs = static_cast<double>((out - 1) * (in - 1));
        CHECK(std::abs(horizontal / pairs / moments.variance) < 5 / std::sqrt(pairs));
        CHECK(std::abs(vertical / pairs / moments.variance) < 5 / std::sqrt(pairs));
    }
    SECTION("DMD reference: row j has variance 2 σ² |r_j|^2 times the normalisation squared") {
        optical<holographic_readout<dmd_reference>, ideal_camera> device;
        device.configure(in, out, 6);
        const auto m = holographic_matrix(device);
        const auto& power = device.readout().calibrated_reference_power();
        const double norm2 = device.readout().normalisation() * device.readout().normalisation();
        double ratio_sum = 0;
        for (std::size_t j = 0; j < out; ++j) {
            double row = 0;
            for (std::size_t k = 0; k < in; ++k) {
                row += m(j, k) * m(j, k);
            }
            ratio_sum += (row / in) / (2.0 * 1.0 * power[j] * norm2);
        }
        // Mean over rows of (row second moment / prediction): s.e. sqrt(2 / n).
        CHECK(std::abs(ratio_sum / out - 1.0) < 5 * std::sqrt(2.0 / n));
        // And on average over rows the entries still have variance 1 / in.
        CHECK(std::abs(lightloop::testing::moments_of(m).variance * in - 1.0) < 0.05);
    }
}

TEST_CASE("the intensity readout's mean over random patterns is σ² ||x||^2",
          "[projection][optical][intensity]") {
    // E_j = sum over the m on-pixels of R_jk, so E_j ~ CN(0, σ² m) and
    // |E_j|^2 is exponential with mean σ² m = σ² ||x||^2 for binary x.
    const double variance = 2.5;
    const std::size_t in = 30;
    const std::size_t out = 500;
    const std::size_t patterns = 200;
    transmission_matrix medium(out, in, 9, variance);
    intensity_readout readout{false}; // raw intensities, not centered
    readout.configure(in, out, 0, variance);
    ideal_camera cam;
    auto frames = matrix<double>::from_shape({patterns, in});
    rng gen(10);
    std::vector<double> on(patterns, 0.0);
    for (std::size_t p = 0; p < patterns; ++p) {
        for (std::size_t k = 0; k < in; ++k) {
            frames(p, k) = gen.uniform() < 0.3 ? 1.0 : 0.0;
            on[p] += frames(p, k);
        }
    }
    auto re = matrix<double>::from_shape({patterns, out});
    auto im = matrix<double>::from_shape({patterns, out});
    auto intensity = matrix<double>::from_shape({patterns, out});
    auto scratch = matrix<double>::from_shape({patterns, out});
    medium.field(frames.data(), patterns, re.data(), im.data());
    readout.measure(re.data(), im.data(), patterns, cam, intensity.data(), scratch.data());
    double ratio = 0;
    for (std::size_t p = 0; p < patterns; ++p) {
        double mean = 0;
        for (std::size_t j = 0; j < out; ++j) {
            mean += intensity(p, j) / out;
        }
        ratio += mean / (variance * on[p]) / patterns;
    }
    // Each pattern's mean over `out` pixels of an exponential has relative s.e.
    // ~1/sqrt(out); averaged over patterns (rows of R shared, so not fully
    // independent) it is well inside 5%.
    CHECK(ratio == Approx(1.0).margin(0.05));
}

TEST_CASE("the camera quantises to within half an LSB and counts saturated pixels",
          "[projection][optical][camera]") {
    camera cam({.bits = 8, .read_noise = 0.0, .shot_noise = false});
    cam.set_exposure(100.0);
    const double lsb = cam.lsb();
    // counts = round(I / lsb) + offset clips at 255: saturated iff
    // I / lsb >= 255 - offset - 0.5.
    const double clip = (cam.max_count() - cam.settings().dark_offset - 0.5) * lsb;
    std::vector<double> intensity(20000);
    rng gen(3);
    for (double& v : intensity) {
        v = gen.uniform(0.0, 1.3 * clip);
    }
    std::vector<double> measured(intensity.size());
    cam.expose(std::span<const double>(intensity), std::span<double>(measured));
    std::uint64_t expected_saturated = 0;
    double worst = 0;
    for (std::size_t i = 0; i < intensity.size(); ++i) {
        if (intensity[i] >= clip) {
            ++expected_saturated;
            CHECK(measured[i] == Approx(cam.saturation_intensity()));
        } else {
            worst = std::max(worst, std::abs(measured[i] - intensity[i]));
        }
    }
    CHECK(worst <= 0.5 * lsb * (1 + 1e-12));
    CHECK(worst > 0.4 * lsb); // and it does quantise
    CHECK(cam.pixels_saturated() == expected_saturated);
    CHECK(cam.pixels_read() == intensity.size());
}

TEST_CASE("camera shot and read noise have the variance of their model",
          "[projection][optical][camera]") {
    // 16 bits over a 1e6-electron well: 15.3 electrons per count.
    // Reported intensity I' = electrons / exposure, electrons ~ Poisson(g I) +
    // N(0, read^2): Var(I') = (g I + read^2) / g^2.
    const double exposure = 50.0;
    const double read = 20.0;
    camera cam({.bits = 16, .full_well = 1e6, .read_noise = read, .dark_offset = 100});
    cam.reseed(8);
    cam.set_exposure(exposure);
    // 0.3, 2 and 40 give 15, 100 and 2000 electrons (with 20 e- of read noise
    // all drawn as one normal; the dim, exact case is tested below).
    for (const double level : {0.3, 2.0, 40.0}) {
        CAPTURE(level);
        std::vector<double> intensity(40000, level);
        std::vector<double> measured(intensity.size());
        cam.expose(std::span<const double>(intensity), std::span<double>(measured));
        const auto m = lightloop::testing::moments_of(measured);
        const double var = m.variance - m.mean * m.mean;
        // Plus the ADC's quantisation, LSB^2 / 12 (15 electrons per count
        // here: 5 % of the dimmest level's variance).
        const double lsb = cam.lsb();
        const double expected =
          (exposure * level + read * read) / (exposure * exposure) + lsb * lsb / 12.0;
        // Mean s.e. sqrt(var / n); variance relative s.e. ~sqrt(2 / n) = 0.7%.
        CHECK(std::abs(m.mean - level) < 5 * std::sqrt(expected / 40000.0));
        CHECK(var / expected == Approx(1.0).margin(0.05));
    }
}

TEST_CASE("dim pixels count photo-electrons exactly: Poisson, not its normal approximation",
          "[projection][optical][camera]") {
    // One count per electron (full well = 2^16 - 1 counts) and no read noise,
    // so the reported intensity at exposure 1 is the electron count itself.
    camera cam({.bits = 16, .full_well = 65535.0, .read_noise = 0.0, .dark_offset = 0.0});
    cam.reseed(12);
    cam.set_exposure(1.0);
    REQUIRE(cam.electrons_per_count() == 1.0);
    constexpr std::size_t n = 50000;
    const double mean = 2.5;
    std::vector<float> intensity(n, static_cast<float>(mean));
    std::vector<float> measured(n);
    cam.expose(std::span<const float>(intensity), std::span<float>(measured));
    std::vector<double> histogram(64, 0.0);
    for (const float v : measured) {
        REQUIRE(v == std::floor(v));
        REQUIRE(v >= 0.0f);
        histogram[static_cast<std::size_t>(v)] += 1.0;
    }
    // P(0) = e^-2.5 = 0.082, 60 s.e. of n p; the normal approximation
    // N(2.5, 2.5), rounded and clipped at 0, would give P(0) = 0.103.
    double p = std::exp(-mean);
    for (std::size_t k = 0; k < 15; ++k) {
        CAPTURE(k);
        CHECK(std::abs(histogram[k] - n * p) < 5 * std::sqrt(n * p * (1 - p)));
        p *= mean / static_cast<double>(k + 1);
    }
    CHECK_THROWS_WITH(camera({.bits = 24, .exposure = 1.0})
                        .expose(std::span<const float>(intensity), std::span<float>(measured)),
                      Catch::Contains("double"));
    // The same check before any exposure, for a program that knows its
    // pixels: 22 bits fit float, 23 and 24 need double.
    CHECK_NOTHROW(camera({.bits = 22}).check_pixels<float>());
    CHECK_THROWS_WITH(camera({.bits = 23}).check_pixels<float>(),
                      "lightloop::camera: a 23-bit ADC needs double pixels (float holds counts "
                      "exactly up to 22 bits)");
    CHECK_NOTHROW(camera({.bits = 24}).check_pixels<double>());
}

TEST_CASE("the camera draws exactly where the normal approximation would miss the skewness",
          "[projection][optical][camera]") {
    // A pixel's count, Poisson(m) + N(0, r^2), has third cumulant m; the
    // normal approximation has none. The camera uses the normal only where
    // the skewness m / (m + r^2)^(3/2) is at most 1/sqrt(30): so the third
    // cumulant measured is m where the test 30 m^2 > (m + r^2)^3 holds, and 0
    // where it fails - even for dim pixels, once the read noise is 2.11 e- or
    // more. One count per electron, and a black level of 100 counts so that
    // nothing clips at zero.
    struct level {
        double read;
        double mean;
        bool exact;
    };
    for (const level c : {level{1.0, 5.0, true}, level{1.0, 29.9, false}, level{2.0, 8.0, true},
                          level{2.2, 9.68, false}, level{5.0, 3.0, false}}) {
        CAPTURE(c.read, c.mean);
        REQUIRE((30 * c.mean * c.mean > std::pow(c.mean + c.read * c.read, 3)) == c.exact);
        camera cam({.bits = 16, .full_well = 65435.0, .read_noise = c.read, .dark_offset = 100.0});
        REQUIRE(cam.electrons_per_count() == 1.0);
        cam.reseed(21);
        cam.set_exposure(1.0);
        constexpr std::size_t n = 400000;
        std::vector<float> intensity(n, static_cast<float>(c.mean));
        std::vector<float> measured(n);
        cam.expose(std::span<const float>(intensity), std::span<float>(measured));
        double mean = 0;
        for (const float v : measured) {
            mean += v;
        }
        mean /= n;
        double m2 = 0;
        double m3 = 0;
        for (const float v : measured) {
            const double d = v - mean;
            m2 += d * d;
            m3 += d * d * d;
        }
        m2 /= n;
        m3 /= n;
        // s.e. of the third central moment ~ sqrt(15 sigma^6 / n); the
        // rounding to counts adds a symmetric error.
        const double se = std::sqrt(15 * m2 * m2 * m2 / n);
        CHECK(std::abs(m3 - (c.exact ? c.mean : 0.0)) < 5 * se);
        CHECK(m2 == Approx(c.mean + c.read * c.read + 1.0 / 12).epsilon(0.02));
    }
}

namespace {
template <class D>
concept sliceable_device = requires(D d) {
    d.configure_slice(1, 2, 3, 0, 1);
};
} // namespace

TEMPLATE_TEST_CASE("an optical device's slice of pixels projects the whole device's columns",
                   "[projection][optical][slice]", transmission_matrix, matrix_free_medium) {
    // An ideal camera and the off-axis reference: every output pixel is
    // 2 Re(r̄_j (R x)_j) / |r_j|^2 scaled by the mean |r|^2 (the same for any
    // set of pixels), so a slice is exactly those columns but for the
    // field's summation order.
    using device =
      optical<holographic_readout<off_axis_reference>, ideal_camera, ternary_encoder, TestType>;
    constexpr std::size_t in = 30;
    constexpr std::size_t total = 300;
    constexpr std::size_t first = 120;
    constexpr std::size_t count = 50;
    const auto x = ternary_batch<float>(12, in, 5);
    device whole;
    whole.configure(in, total, 77);
    device slice;
    slice.configure_slice(in, total, 77, first, count);
    CHECK(slice.output_size() == count);
    CHECK(slice.first_output() == first);
    CHECK(slice.medium().outputs() == count); // the other rows are never made
    CHECK(slice.medium().first_row() == first);
    auto y = matrix<float>::from_shape({12, total});
    auto part = matrix<float>::from_shape({12, count});
    whole.project(x, y);
    slice.project(x, part);
    auto columns = matrix<float>::from_shape({12, count});
    for (std::size_t r = 0; r < 12; ++r) {
        for (std::size_t c = 0; c < count; ++c) {
            columns(r, c) = y(r, first + c);
        }
    }
    CHECK(lightloop::testing::max_abs_diff(columns, part) <
          1e-5 * lightloop::testing::max_abs(columns));
    CHECK_THROWS_AS(slice.configure_slice(in, total, 77, 280, 30), config_error);
}

TEST_CASE("a slice's medium rows, DMD reference and sensor pattern are the whole device's",
          "[projection][optical][slice]") {
    constexpr std::size_t in = 20;
    constexpr std::size_t total = 200;
    constexpr std::size_t first = 64;
    constexpr std::size_t count = 70;
    // The stored medium's rows, bitwise.
    transmission_matrix whole_medium(total, in, 5, 1.0);
    transmission_matrix slice_medium(count, in, 5, 1.0);
    slice_medium.slice_rows(first);
    const auto& all = whole_medium.real<float>();
    const auto& mine = slice_medium.real<float>();
    bool same = mine.shape(0) == count;
    for (std::size_t j = 0; same && j < count; ++j) {
        for (std::size_t k = 0; k < in; ++k) {
            same = same && mine(j, k) == all(first + j, k) &&
                   slice_medium.imag<float>()(j, k) == whole_medium.imag<float>()(first + j, k);
        }
    }
    CHECK(same);
    // The DMD reference's field (|r_j|^2 before any calibration) and the
    // camera's gains and dark currents, at the slice's pixels.
    using device = optical<holographic_readout<dmd_reference>, camera>;
    const camera sensor({.prnu = 0.05, .dark_current = 2.0, .dsnu = 0.3});
    device whole(holographic_readout<dmd_reference>{}, sensor);
    device slice(holographic_readout<dmd_reference>{}, sensor);
    whole.configure(in, total, 31);
    slice.configure_slice(in, total, 31, first, count);
    const auto& power = whole.readout().calibrated_reference_power();
    const auto& slice_power = slice.readout().calibrated_reference_power();
    const auto& gains = whole.camera_model().pixel_gains();
    const auto& darks = whole.camera_model().pixel_dark_currents();
    REQUIRE(slice_power.size() == count);
    REQUIRE(slice.camera_model().pixel_gains().size() == count);
    bool pixels_same = true;
    for (std::size_t j = 0; j < count; ++j) {
        pixels_same = pixels_same && slice_power[j] == power[first + j] &&
                      slice.camera_model().pixel_gains()[j] == gains[first + j] &&
                      slice.camera_model().pixel_dark_currents()[j] == darks[first + j];
    }
    CHECK(pixels_same);
    // A medium that is not a set of independent rows has no slices.
    STATIC_REQUIRE(sliceable_device<optical<>>);
    STATIC_REQUIRE_FALSE(
      sliceable_device<optical<holographic_readout<>, camera, ternary_encoder, structured_medium>>);
}

// Named, not anonymous: the device it parameterises is a member of a
// per_scalar<> in the unity build (GCC's -Wsubobject-linkage).
namespace slice_tests {
/// A user's readout written before slices: configure without a first pixel.
struct readout_without_slices : intensity_readout {
    void configure(std::size_t in, std::size_t out, std::uint64_t seed, double variance) {
        intensity_readout::configure(in, out, seed, variance);
    }
};
} // namespace slice_tests

TEST_CASE("a readout without slices still serves whole devices and refuses a slice",
          "[projection][optical][slice]") {
    const auto x = ternary_batch<float>(8, 12, 2);
    optical<slice_tests::readout_without_slices> mine;
    optical<intensity_readout> theirs;
    mine.configure(12, 60, 4);
    theirs.configure(12, 60, 4);
    auto a = matrix<float>::from_shape({8, 60});
    auto b = matrix<float>::from_shape({8, 60});
    mine.project(x, a);
    theirs.project(x, b);
    CHECK(lightloop::testing::max_abs_diff(a, b) == 0.0);
    CHECK_THROWS_WITH(mine.configure_slice(12, 60, 4, 10, 20),
                      Catch::Contains("this readout's configure takes no first pixel"));
}

TEST_CASE("slices of an optical device draw camera noise of their own",
          "[projection][optical][slice]") {
    // Two slices of one device, shown the same field on their pixels: their
    // noise must not repeat from slice to slice.
    constexpr std::size_t in = 16;
    const auto x = ternary_batch<float>(32, in, 6);
    // Pixels [first, first + 200) of a 400-pixel device.
    const auto project = [&](auto device, std::size_t first) {
        device.configure_slice(in, 400, 3, first, 200);
        auto y = matrix<float>::from_shape({32, 200});
        device.project(x, y);
        return y;
    };
    const auto ya = project(optical<>{}, 0);
    const auto yb = project(optical<>{}, 200);
    // Noise alone: each slice's projection minus its noiseless one.
    const auto ia_y = project(optical<holographic_readout<>, ideal_camera>{}, 0);
    const auto ib_y = project(optical<holographic_readout<>, ideal_camera>{}, 200);
    double cross = 0.0;
    double na = 0.0;
    double nb = 0.0;
    for (std::size_t i = 0; i < ya.size(); ++i) {
        const double u = ya.data()[i] - ia_y.data()[i];
        const double v = yb.data()[i] - ib_y.data()[i];
        cross += u * v;
        na += u * u;
        nb += v * v;
    }
    // Independent noise: correlation ~ N(0, 1/6400); shared noise would give ~1.
    REQUIRE(na > 0.0);
    CHECK(std::abs(cross / std::sqrt(na * nb)) < 5.0 / std::sqrt(6400.0));
}

TEST_CASE("the camera's fixed pattern: per-pixel gains, and dark signal growing with exposure",
          "[projection][optical][camera]") {
    // Noise off and a 20-bit ADC (one count is 0.95 electrons): what remains
    // is the pattern. Pixel j reports g_j I + d_j, in electrons
    // exposure (g_j I + d_j).
    constexpr std::size_t pixels = 4000;
    camera cam({.bits = 20,
                .full_well = 1e6,
                .read_noise = 0.0,
                .shot_noise = false,
                .exposure = 1000.0,
                .prnu = 0.05,
                .dark_current = 2.0,
                .dsnu = 0.3});
    cam.configure_sensor(pixels, 9);
    const auto& gain = cam.pixel_gains();
    const auto& dark = cam.pixel_dark_currents();
    REQUIRE(gain.size() == pixels);
    // The pattern's statistics: mean gain 1 with rms prnu; dark currents of
    // mean dark_current and relative rms dsnu (5 standard errors).
    const auto gains = lightloop::testing::moments_of(gain); // raw moments
    const auto darks = lightloop::testing::moments_of(dark);
    const double gain_sd = std::sqrt(gains.variance - gains.mean * gains.mean);
    const double dark_sd = std::sqrt(darks.variance - darks.mean * darks.mean);
    const double n = pixels;
    CHECK(std::abs(gains.mean - 1.0) < 5 * 0.05 / std::sqrt(n));
    CHECK(std::abs(gain_sd / 0.05 - 1.0) < 5 / std::sqrt(2 * n));
    CHECK(std::abs(darks.mean / 2.0 - 1.0) < 5 * 0.3 / std::sqrt(n));
    // (max(0, 1 + 0.3 z) clips a 4e-4 tail: no visible change to the rms.)
    CHECK(std::abs(dark_sd / darks.mean / 0.3 - 1.0) < 5 / std::sqrt(2 * n));
    // Two rows: dark (I = 0) and lit (I = 100).
    std::vector<double> light(2 * pixels, 0.0);
    std::fill(light.begin() + pixels, light.end(), 100.0);
    std::vector<double> measured(2 * pixels);
    auto electrons_per_unit = [&](double exposure) {
        cam.set_exposure(exposure);
        cam.expose(std::span<const double>(light), std::span<double>(measured));
        return exposure;
    };
    const double step = cam.electrons_per_count(); // one ADC count, in electrons
    double worst_dark = 0.0;
    double worst_gain = 0.0;
    for (const double exposure : {1000.0, 4000.0}) {
        electrons_per_unit(exposure);
        for (std::size_t j = 0; j < pixels; ++j) {
            // Dark electrons exposure d_j: four times as many at four times
            // the exposure, within half a count.
            worst_dark =
              std::max(worst_dark, std::abs(measured[j] * exposure - exposure * dark[j]) / step);
            const double lit = (measured[pixels + j] - measured[j]) / 100.0;
            worst_gain = std::max(worst_gain, std::abs(lit - gain[j]));
        }
    }
    CHECK(worst_dark <= 0.5 + 1e-9);
    CHECK(worst_gain < 2 * step / (1000.0 * 100.0));
    // The pattern needs the sensor's width and whole rows.
    std::vector<double> odd(pixels + 1, 1.0);
    std::vector<double> odd_out(pixels + 1);
    CHECK_THROWS_AS(cam.expose(std::span<const double>(odd), std::span<double>(odd_out)),
                    config_error);
    camera unsized({.exposure = 1.0, .prnu = 0.01});
    CHECK_THROWS_AS(unsized.expose(std::span<const double>(light), std::span<double>(measured)),
                    config_error);
    CHECK_THROWS_AS(camera({.dsnu = -1.0}), config_error);
    // The optical device gives its camera the sensor's width and a pattern
    // drawn from its seed: a holographic projection through PRNU alone
    // scales output j by g_j (the calibrated |r|^2 carries the same gain,
    // so only the signal term is off), and the normalisation, set from the
    // mean calibrated |r|^2, by the ratio of the two devices'.
    optical<holographic_readout<off_axis_reference>, camera> device(
      holographic_readout<off_axis_reference>{},
      camera({.bits = 20, .full_well = 1e6, .read_noise = 0.0, .shot_noise = false, .prnu = 0.05}));
    device.configure(12, 300, 41);
    optical<holographic_readout<off_axis_reference>, ideal_camera> ideal;
    ideal.configure(12, 300, 41);
    const auto x = ternary_batch<double>(7, 12, 3);
    auto y = matrix<double>::from_shape({7, 300});
    auto y_ideal = matrix<double>::from_shape({7, 300});
    device.project(x, y);
    ideal.project(x, y_ideal);
    const auto& g = device.camera_model().pixel_gains();
    REQUIRE(g.size() == 300);
    const double ratio = device.readout().normalisation() / ideal.readout().normalisation();
    double worst = 0.0;
    for (std::size_t r = 0; r < 7; ++r) {
        for (std::size_t j = 0; j < 300; ++j) {
            worst = std::max(worst, std::abs(y(r, j) - ratio * g[j] * y_ideal(r, j)));
        }
    }
    // Quantisation of three exposures, against outputs of size ~1.
    CHECK(worst / lightloop::testing::max_abs(y_ideal) < 1e-3);
}

TEST_CASE("calibration sets the exposure so realistic inputs do not saturate",
          "[projection][optical][camera]") {
    camera cam;
    std::vector<double> sample(10000);
    rng gen(4);
    for (double& v : sample) {
        v = -std::log(1.0 - gen.uniform()) * 7.0; // exponential speckle, mean 7
    }
    CHECK_FALSE(cam.calibrated());
    cam.calibrate(std::span<const double>(sample));
    REQUIRE(cam.calibrated());
    // The 99.9 % quantile of Exp(mean 7) is 7 ln 1000 = 48.4; it must land at
    // 80 % of full well.
    CHECK(cam.settings().exposure * 7.0 * std::log(1000.0) ==
          Approx(0.8 * cam.settings().full_well).epsilon(0.1));
    std::vector<double> measured(sample.size());
    cam.expose(std::span<const double>(sample), std::span<double>(measured));
    // Saturation needs I > q / 0.8, i.e. 1.25 times the 99.9 % quantile:
    // P = 1000^-1.25 = 1.8e-4 for an exponential, plus noise.
    CHECK(static_cast<double>(cam.pixels_saturated()) / 10000.0 < 1e-3);
    CHECK_THROWS_AS(camera({.bits = 0}), config_error);
    // A black level of 4 counts needs 3 bits; 1 bit leaves no count above any.
    CHECK_THROWS_WITH(camera({.bits = 1}), "lightloop::camera: bits must be in [2, 24], got 1");
    CHECK_THROWS_WITH(camera({.bits = 2}), "lightloop::camera: dark_offset must be in [0, 2^bits "
                                           "- 2) = [0, 2) for a 2-bit ADC, got 4");
    CHECK(camera({.bits = 2, .dark_offset = 1.0}).max_count() == 3.0);
    // Infinite settings were taken: an infinite full well or read noise
    // makes every count garbage, an infinite frame rate a device of no time.
    const double inf = std::numeric_limits<double>::infinity();
    CHECK_THROWS_WITH(camera({.full_well = inf}),
                      "lightloop::camera: full_well must be positive and finite, got inf");
    CHECK_THROWS_WITH(camera({.read_noise = inf}),
                      "lightloop::camera: read_noise must be finite and >= 0, got inf");
    CHECK_THROWS_WITH(camera({.exposure = inf}),
                      "lightloop::camera: exposure must be finite and >= 0, got inf");
    CHECK_THROWS_WITH(cam.set_exposure(inf),
                      "lightloop::camera: exposure must be positive and finite, got inf");
    CHECK_THROWS_WITH(optical<>(optical_settings{.frame_rate = inf}),
                      "lightloop::optical: variance and frame_rate must be positive and finite, "
                      "got variance 1, frame_rate inf");
    CHECK_THROWS_WITH(optical<>(holographic_readout<>{off_axis_reference{.power = inf}}, camera{},
                                ternary_encoder{}, optical_settings{})
                        .configure(4, 8, 1),
                      Catch::Contains("power must be positive and finite and tilt finite, got "
                                      "power inf, tilt 0.25"));
    CHECK_THROWS_AS(cam.calibrate(std::span<const double>(std::vector<double>(5, 0.0))),
                    config_error);
    // A device with no micromirror or no pixel is refused by its sizes (it
    // was refused by its zero reference power, which names neither).
    CHECK_THROWS_WITH(optical<>{}.configure(0, 8, 1),
                      "lightloop::optical: needs at least one input (micromirror) and one output "
                      "(camera pixel), got 0 -> 8");
    CHECK_THROWS_WITH(optical<intensity_readout>{}.configure(4, 0, 1),
                      Catch::Contains("got 4 -> 0"));
    CHECK_THROWS_WITH(optical<>{}.configure_slice(4, 8, 1, 2, 0), Catch::Contains("got 4 -> 0"));
}

TEST_CASE("the holographic SNR falls as noise rises and rises with bit depth",
          "[projection][optical][snr]") {
    const auto x = ternary_batch<float>(64, 10, 12);
    std::uint64_t saturated = 0;
    auto snr = [&](camera_settings settings) {
        optical<holographic_readout<>, camera> device(holographic_readout<>{}, camera(settings),
                                                      ternary_encoder{}, {.track_snr = true});
        device.configure(10, 512, 77);
        auto y = matrix<float>::from_shape({64, 512});
        device.project(x, y);
        device.project(x, y);
        saturated += device.statistics().pixels_saturated;
        return device.statistics().snr_db();
    };
    const double quiet = snr({.read_noise = 0.0});
    const double noisy = snr({.read_noise = 30.0});
    const double loud = snr({.read_noise = 120.0});
    CAPTURE(quiet, noisy, loud);
    CHECK(quiet > noisy + 1.0);
    CHECK(noisy > loud + 3.0);
    // Quantisation alone (no shot or read noise, and headroom to spare so no
    // pixel clips): its variance falls by 4 per extra bit, so two more bits
    // gain 10 log10(16) = 12 dB.
    std::vector<double> by_bits;
    saturated = 0;
    for (const int bits : {6, 8, 10}) {
        by_bits.push_back(
          snr({.bits = bits, .read_noise = 0.0, .shot_noise = false, .headroom = 0.5}));
    }
    CAPTURE(by_bits[0], by_bits[1], by_bits[2]);
    REQUIRE(saturated == 0);
    CHECK(by_bits[1] - by_bits[0] == Approx(12.0).margin(2.5));
    CHECK(by_bits[2] - by_bits[1] == Approx(12.0).margin(2.5));
}

TEST_CASE("the holographic estimate is unbiased: its mean over camera noise is the noiseless "
          "projection",
          "[projection][optical][holographic]") {
    // One field E (4 rows x 256 pixels), measured in K independent trials, each
    // calibrating |r|^2 afresh (16 exposures) and exposing |E + r|^2 and |E|^2 with
    // shot and read noise. Each pixel's estimate (m(|E+r|^2) - P̂ - m(|E|^2)) times
    // the normalisation is unbiased when the camera is: its ADC fine against the
    // noise (16 bits: 0.15 e- a count against 5 e- of read noise), its black
    // level far above the read noise (1000 counts) and no pixel saturated, so that
    // neither rounding nor clipping shifts the mean. (The default 8-bit camera, 40 e- a
    // count, adds a rounding bias: measured here, an rms of 0.0025 against a per-pixel
    // standard error of 0.0017 at 400 trials, below what this test resolves.)
    // The mean over trials must equal 2 Re(r̄ E) times the exact normalisation
    // within its standard error: z = (mean - ideal) / (sd / sqrt(K)) over 1024
    // pixels has mean square 1 (its standard error sqrt(2/1024) = 0.044; five
    // allowed) and no |z| beyond 5.
    constexpr std::size_t rows = 4;
    constexpr std::size_t out = 256;
    constexpr std::size_t in = 32;
    constexpr int trials = 400;
    const auto re = random_matrix<double>(rows, out, 5, 3.0);
    const auto im = random_matrix<double>(rows, out, 6, 3.0);
    holographic_readout<> exact;
    exact.configure(in, out, 19, 1.0); // |r|^2 known exactly: the noiseless reference
    std::vector<double> ideal(rows * out);
    exact.measure_ideal(re.data(), im.data(), rows, ideal.data());

    // The brightest calibration pixel at 80 % of full well: no pixel saturates.
    const camera_settings settings{
      .bits = 16, .read_noise = 5.0, .dark_offset = 1000.0, .calibration_quantile = 1.0};
    std::uint64_t saturated = 0;
    std::vector<double> sum(rows * out, 0.0), sum_sq(rows * out, 0.0);
    std::vector<double> estimate(rows * out), scratch(rows * out);
    for (int k = 0; k < trials; ++k) {
        holographic_readout<> readout = exact;
        camera cam(settings);
        cam.reseed(lightloop::derive_seed(8, static_cast<std::uint64_t>(k)));
        readout.calibrate(re.data(), im.data(), rows, cam, scratch.data());
        readout.measure(re.data(), im.data(), rows, cam, estimate.data(), scratch.data());
        saturated += cam.pixels_saturated();
        for (std::size_t i = 0; i < estimate.size(); ++i) {
            sum[i] += estimate[i];
            sum_sq[i] += estimate[i] * estimate[i];
        }
    }
    double mean_z2 = 0.0;
    double worst = 0.0;
    double mean_sd = 0.0;
    for (std::size_t i = 0; i < ideal.size(); ++i) {
        const double mean = sum[i] / trials;
        const double sd = std::sqrt((sum_sq[i] / trials - mean * mean) * trials / (trials - 1));
        const double z = (mean - ideal[i]) / (sd / std::sqrt(double{trials}));
        mean_z2 += z * z / static_cast<double>(ideal.size());
        worst = std::max(worst, std::abs(z));
        mean_sd += sd / static_cast<double>(ideal.size());
    }
    CAPTURE(mean_z2, worst, mean_sd, lightloop::testing::max_abs(ideal));
    REQUIRE(saturated == 0);
    CHECK(mean_sd > 1e-3 * lightloop::testing::max_abs(ideal)); // the noise is real
    CHECK(std::abs(mean_z2 - 1.0) < 5 * 0.044);
    CHECK(worst < 5.0);
}

TEST_CASE("the optical device counts frames, device time and skips empty frames",
          "[projection][optical][statistics]") {
    const auto x = ternary_batch<float>(5, 8, 2);
    // Every row has a positive entry; count the rows that also have a negative one.
    std::size_t patterns = 0;
    for (std::size_t r = 0; r < 5; ++r) {
        bool negative = false;
        for (std::size_t k = 0; k < 8; ++k) {
            negative = negative || x(r, k) < 0;
        }
        patterns += negative ? 2 : 1;
    }
    auto y = matrix<float>::from_shape({5, 64});
    SECTION("holographic: two exposures per pattern plus 16 calibration frames") {
        optical<holographic_readout<>, camera> device(optical_settings{.frame_rate = 2000.0});
        device.configure(8, 64, 1);
        device.project(x, y);
        const auto stats = device.statistics();
        CHECK(stats.projections == 5);
        CHECK(stats.patterns == patterns);
        CHECK(stats.calibration_frames == 16);
        CHECK(stats.frames == 2 * patterns + 16);
        CHECK(stats.device_seconds() ==
              Approx((2.0 * static_cast<double>(patterns) + 16) / 2000.0));
        CHECK(stats.pixels_read == stats.frames * 64);
    }
    SECTION("intensity: one exposure per pattern; a zero row costs nothing and projects to 0") {
        optical<intensity_readout, camera> device;
        device.configure(8, 64, 1);
        device.project(x, y);
        CHECK(device.statistics().frames == patterns);
        const matrix<float> zero = xt::zeros<float>({2, 8});
        auto y0 = matrix<float>::from_shape({2, 64});
        device.project(zero, y0);
        CHECK(device.statistics().frames == patterns);
        CHECK(lightloop::testing::max_abs(y0) == 0.0);
    }
    SECTION("holographic: a zero row projects to 0 whatever the output held, the others not") {
        // Blocks write only their samples' rows; the rows of samples with
        // no frame are zeroed apart (frame_batch::zero_silent_rows).
        optical<holographic_readout<>, camera> device;
        device.configure(8, 64, 1);
        matrix<float> mixed = x;
        for (const std::size_t r : {std::size_t{0}, std::size_t{3}}) {
            std::fill(mixed.data() + r * 8, mixed.data() + (r + 1) * 8, 0.0f);
        }
        std::fill(y.begin(), y.end(), 7.0f);
        device.project(mixed, y);
        for (std::size_t r = 0; r < 5; ++r) {
            double largest = 0.0;
            std::size_t stale = 0; // entries still holding the 7 written before
            for (std::size_t j = 0; j < 64; ++j) {
                largest = std::max(largest, std::abs(static_cast<double>(y(r, j))));
                stale += y(r, j) == 7.0f ? 1U : 0U;
            }
            INFO("row " << r);
            CHECK(stale == 0);
            if (r == 0 || r == 3) {
                CHECK(largest == 0.0);
            } else {
                CHECK(largest > 0.0);
            }
        }
    }
    auto bad = matrix<float>::from_shape({5, 63});
    optical<> device;
    device.configure(8, 64, 1);
    CHECK_THROWS_WITH(device.project(x, bad), Catch::Contains("output is 5x63"));
}

TEST_CASE("the optical device is a function of its seed, noise included", "[projection][optical]") {
    const auto x = ternary_batch<float>(4, 10, 1);
    auto run = [&](std::uint64_t seed) {
        optical<holographic_readout<dmd_reference>, camera> device;
        device.configure(10, 128, seed);
        auto y = matrix<float>::from_shape({4, 128});
        device.project(x, y);
        device.project(x, y);
        return y;
    };
    CHECK(lightloop::testing::identical(run(3), run(3)));
    CHECK_FALSE(lightloop::testing::identical(run(3), run(4)));
}

TEMPLATE_TEST_CASE("an optical projection does not depend on the thread count",
                   "[projection][optical][parallel]", transmission_matrix, matrix_free_medium,
                   structured_medium) {
    // The camera noise of each block is seeded by the block, and blocks are
    // cut by the data, so 1 and 2 threads give the same bits.
    const auto x = ternary_batch<float>(100, 10, 21);
    auto project_with = [&](int threads) {
        lightloop::set_blas_threads(threads);
        REQUIRE(lightloop::shared_team().size() == static_cast<std::size_t>(threads));
        optical<holographic_readout<off_axis_reference>, camera, ternary_encoder, TestType> device;
        device.configure(10, 300, 5);
        auto y = matrix<float>::from_shape({100, 300});
        device.project(x, y); // calibrates
        device.project(x, y);
        lightloop::set_blas_threads(1);
        return std::pair{y, device.statistics()};
    };
    const auto [one, one_stats] = project_with(1);
    const auto [two, two_stats] = project_with(2);
    CHECK(lightloop::testing::max_abs_diff(one, two) == 0.0);
    CHECK(one_stats.pixels_read == two_stats.pixels_read);
    CHECK(one_stats.pixels_saturated == two_stats.pixels_saturated);
    CHECK(lightloop::shared_team().size() == 1);
}

TEST_CASE("the training-time model counts each method's work and the OPU's frames",
          "[projection][optical][time_model]") {
    // 100-50-40-10 at batch 8, GEMMs at 1e9 FLOP/s, memory at 1e9 B/s, an
    // OPU of 1000 frames/s with 30 pixels (the 90 hidden outputs need 3
    // tiles).
    const std::vector<std::size_t> widths{100, 50, 40, 10};
    const cpu_rates cpu{1e9, 1e9, 4};
    opu_device_model opu;
    opu.frame_rate = 1000;
    opu.pixels = 30;
    opu.transfer_bytes_per_second = 1e6;
    const double weights = 100 * 50 + 50 * 40 + 40 * 10; // 7400
    const double units = 50 + 40 + 10;
    const step_time bp = predict_step(widths, 8, step_method::backprop, cpu, opu);
    const step_time dense = predict_step(widths, 8, step_method::dfa_cpu, cpu, opu);
    const step_time opu_step = predict_step(widths, 8, step_method::dfa_opu, cpu, opu);
    CHECK(bp.gradients == Approx(2 * 8 * weights / 1e9));
    CHECK(bp.forward == Approx(2 * 8 * weights / 1e9 + 2 * 8 * units * 4 / 1e9));
    CHECK(bp.signals == Approx(2 * 8 * (50 * 40 + 40 * 10) / 1e9)); // not the first layer
    CHECK(dense.signals == Approx(2 * 8 * 10 * 90 / 1e9));          // e (8 x 10) into 90
    CHECK(opu_step.signals == 0.0);
    CHECK(opu_step.frames == 8 * 2 * 2 * 3); // samples x patterns x exposures x tiles
    CHECK(opu_step.device == Approx(opu_step.frames / 1000.0));
    // Transfer: 30 pixels per exposure at a byte each, then decoding.
    CHECK(opu_step.transfer ==
          Approx(opu_step.frames * 30 / 1e6 + (opu_step.frames * 30 * 4 + 2 * 8 * 90 * 4) / 1e9));
    CHECK(bp.total() == Approx(bp.forward + bp.signals + bp.gradients + bp.elementwise));
    // A fixed cost per step adds to every method's total alike.
    cpu_rates with_fixed = cpu;
    with_fixed.step_seconds = 2e-3;
    for (const step_method m :
         {step_method::backprop, step_method::dfa_cpu, step_method::dfa_opu}) {
        const step_time plain = predict_step(widths, 8, m, cpu, opu);
        const step_time fixed = predict_step(widths, 8, m, with_fixed, opu);
        CHECK(fixed.fixed == 2e-3);
        CHECK(fixed.total() == Approx(plain.total() + 2e-3));
    }
    with_fixed.step_seconds = -1.0;
    CHECK_THROWS_AS(predict_step(widths, 8, step_method::backprop, with_fixed), config_error);
    // The crossover search: a free OPU (infinitely fast frames and transfer)
    // beats CPU DFA at once; a 1-frame/s one never does.
    opu_device_model fast;
    fast.frame_rate = 1e30;
    fast.transfer_bytes_per_second = 1e30;
    CHECK(crossover_width(100, 2, 1000, 8, step_method::dfa_opu, step_method::dfa_cpu, cpu, fast) ==
          16);
    opu_device_model slow;
    slow.frame_rate = 1;
    CHECK(crossover_width(100, 2, 10, 8, step_method::dfa_opu, step_method::dfa_cpu, cpu, slow,
                          1 << 12) == 0);
    CHECK_THROWS_AS(predict_step({100}, 8, step_method::backprop, cpu), config_error);
    CHECK_THROWS_AS(predict_step(widths, 0, step_method::backprop, cpu), config_error);
}
