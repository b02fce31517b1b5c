#include <catch2/catch.hpp>

#include <cmath>

#include "support/files.hpp"
#include "support/helpers.hpp"

using namespace lightloop;
using lightloop::testing::max_abs_diff;
using lightloop::testing::random_matrix;

namespace {
/// One sample of shape 2 x 4 x 4 holding 0, 1, ..., 31 with one twist: in
/// channel 1 the window maxima sit in different corners.
matrix<double> ramp_sample() {
    auto x = matrix<double>::from_shape({1, 32});
    for (std::size_t i = 0; i < 32; ++i) {
        x(0, i) = static_cast<double>(i);
    }
    x(0, 16 + 0) = 100; // channel 1, window (0, 0): maximum at its top-left
    x(0, 16 + 6) = 90;  // window (0, 1): at (1, 2), its bottom-left
    return x;
}

/// dense 6 -> 32 (read as 2x4x4 maps), 2x2 max pooling, flatten, dense 8 -> 3,
/// in double, trained by Method with loss Loss.
template <class Method, class Loss = softmax_cross_entropy>
auto pooled_stack(std::uint64_t seed) {
    return make_network<Method, Loss>(seed, dense<tanh_act, double>{6, 32},
                                      max_pool2d<double>({2, 4, 4}, 2), flatten<double>({2, 2, 2}),
                                      dense<identity, double>{8, 3});
}
} // namespace

TEST_CASE("max and average pooling take each window's maximum and mean, channel by channel",
          "[layers][pooling]") {
    max_pool2d<double> maximum({2, 4, 4}, 2);
    avg_pool2d<double> average({2, 4, 4}, 2);
    REQUIRE(maximum.output_shape() == feature_shape{2, 2, 2});
    const auto x = ramp_sample();
    const auto& m = maximum.forward(x);
    const auto& a = average.forward(x);
    // Channel 0: windows of a 4 x 4 ramp; maxima at their bottom-right corners.
    CHECK(m(0, 0) == 5);
    CHECK(m(0, 1) == 7);
    CHECK(m(0, 2) == 13);
    CHECK(m(0, 3) == 15);
    CHECK(a(0, 0) == (0 + 1 + 4 + 5) / 4.0);
    CHECK(a(0, 3) == (10 + 11 + 14 + 15) / 4.0);
    CHECK(m(0, 4) == 100);
    CHECK(m(0, 5) == 90);
    CHECK(a(0, 4) == (100 + 17 + 20 + 21) / 4.0);

    // Backward: each window's signal goes to its maximum, or a quarter to each entry.
    maximum.delta() = matrix<double>{{1, 2, 3, 4, 5, 6, 7, 8}};
    average.delta() = maximum.delta();
    auto into = matrix<double>::from_shape({1, 32});
    maximum.backpropagate(into);
    CHECK(into(0, 5) == 1);
    CHECK(into(0, 15) == 4);
    CHECK(into(0, 16) == 5);
    CHECK(into(0, 22) == 6);
    double total = 0;
    for (const double v : into) {
        total += v;
    }
    CHECK(total == 36); // nothing else received anything
    average.backpropagate(into);
    CHECK(into(0, 0) == 0.25);
    CHECK(into(0, 5) == 0.25);
    CHECK(into(0, 31) == 2.0);

    // A stride other than the window: 3 x 3 windows every 1 on 4 x 4 give 2 x 2.
    max_pool2d<double> overlapping({1, 4, 4}, 3, 1);
    CHECK(overlapping.output_shape() == feature_shape{1, 2, 2});
    CHECK_THROWS_AS((max_pool2d<double>({1, 2, 2}, 3)), config_error);
}

// Max pooling against its definition, written out naively here: each
// window's first maximum in reading order, its signal routed there and
// nowhere else. Inputs from {0, ..., 3} make ties in most windows. The float
// layers with 2 x 2 windows moved by 2 run the AVX-512 kernels where the
// build targets them (rows of 3, 16 and 20 outputs: one masked step, one
// full, one full and a masked rest; an odd input keeps the last row and
// column out of every window, so the backward pass falls back to the general
// loop there); double and the other windows run the general loop.
template <class T>
void check_max_pool_against_definition(feature_shape in, std::size_t window, std::size_t stride) {
    CAPTURE(in.text(), window, stride);
    max_pool2d<T> pool(in, window, stride);
    const feature_shape out = pool.output_shape();
    const std::size_t n = 3;
    rng gen(in.size() + window);
    auto x = matrix<T>::from_shape({n, in.size()});
    for (auto& v : x) {
        v = static_cast<T>(gen.below(4));
    }
    auto signal = matrix<T>::from_shape({n, out.size()});
    for (auto& v : signal) {
        v = static_cast<T>(gen.uniform() + 0.5);
    }
    const auto& y = pool.forward(x);
    pool.delta() = signal;
    auto into = matrix<T>::from_shape({n, in.size()});
    std::fill(into.begin(), into.end(), T(-7)); // whatever was there must go
    pool.backpropagate(into);

    auto expected_y = matrix<T>::from_shape({n, out.size()});
    auto expected_into = matrix<T>::from_shape({n, in.size()});
    std::fill(expected_into.begin(), expected_into.end(), T(0));
    for (std::size_t r = 0; r < n; ++r) {
        for (std::size_t c = 0; c < out.channels; ++c) {
            for (std::size_t oy = 0; oy < out.height; ++oy) {
                for (std::size_t ox = 0; ox < out.width; ++ox) {
                    std::size_t best = 0;
                    bool found = false;
                    for (std::size_t ky = 0; ky < window; ++ky) {
                        for (std::size_t kx = 0; kx < window; ++kx) {
                            const std::size_t i =
                              (c * in.height + oy * stride + ky) * in.width + ox * stride + kx;
                            if (!found || x(r, i) > x(r, best)) {
                                best = i;
                                found = true;
                            }
                        }
                    }
                    const std::size_t o = (c * out.height + oy) * out.width + ox;
                    expected_y(r, o) = x(r, best);
                    expected_into(r, best) += signal(r, o);
                }
            }
        }
    }
    CHECK(max_abs_diff(y, expected_y) == 0);
    CHECK(max_abs_diff(into, expected_into) == 0);
}

TEST_CASE("max pooling takes each window's first maximum and routes the signal there, ties "
          "included",
          "[layers][pooling]") {
    for (const feature_shape in : {feature_shape{3, 6, 6}, feature_shape{2, 32, 32},
                                   feature_shape{2, 4, 40}, feature_shape{2, 5, 7}}) {
        check_max_pool_against_definition<float>(in, 2, 2);
        check_max_pool_against_definition<double>(in, 2, 2);
    }
    check_max_pool_against_definition<float>({2, 7, 7}, 3, 2);
    check_max_pool_against_definition<float>({1, 6, 6}, 2, 1);
}

// Backprop through pooling and flatten against central finite differences, in
// double (the tolerance argument of test_gradients.cpp: 1e-5 relative). Random
// inputs leave no ties inside a window, where max pooling has no derivative.
TEST_CASE("backprop through pooling and flatten matches finite differences",
          "[layers][pooling][gradient]") {
    const auto x = random_matrix<double>(5, 6, 21);
    const auto y = one_hot<double>(std::span<const int>(std::vector<int>{0, 1, 2, 1, 0}), 3);
    auto with_max = pooled_stack<backprop>(22);
    auto with_average = make_network<backprop, mse>(
      22, dense<tanh_act, double>{6, 32}, avg_pool2d<double>({2, 4, 4}, 2),
      flatten<double>({2, 2, 2}), dense<identity, double>{8, 3});
    const auto y_real = random_matrix<double>(5, 3, 23);
    const auto a = check_gradients(with_max, x, y, {.step = 1e-5, .floor = 1e-4});
    const auto b = check_gradients(with_average, x, y_real, {.step = 1e-5, .floor = 1e-4});
    CAPTURE(a.worst_layer, b.worst_layer);
    CHECK(a.entries_checked == (6 * 32 + 32) + (8 * 3 + 3)); // pooling has no parameters
    CHECK(a.max_rel_error < 1e-5);
    CHECK(b.max_rel_error < 1e-5);
}

TEST_CASE("direct methods give layers without parameters no slice; feedback alignment passes "
          "through them",
          "[layers][pooling][dfa]") {
    const auto x = random_matrix<double>(5, 6, 31);
    const auto y = one_hot<double>(std::span<const int>(std::vector<int>{0, 1, 2, 1, 0}), 3);
    // DFA: one projection of e into the one trained hidden layer's 32 outputs.
    auto direct = pooled_stack<dfa<dense_gaussian>>(32);
    REQUIRE(direct.feedback().projection_size() == 32);
    REQUIRE(direct.feedback().device().output_size() == 32);
    direct.compute_gradients(x, y);
    const auto projected = lightloop::testing::naive_product(
      direct.layer<3>().delta(), false, direct.feedback().device().feedback_matrix<double>(), true);
    double gap = 0;
    for (std::size_t r = 0; r < 5; ++r) {
        for (std::size_t c = 0; c < 32; ++c) {
            const double h = direct.layer<0>().output()(r, c);
            gap = std::max(
              gap, std::abs(direct.layer<0>().delta()(r, c) - projected(r, c) * (1 - h * h)));
        }
    }
    CHECK(gap < 1e-14);
    CHECK(std::isnan(gradient_alignment(direct, x, y).mean[1])); // the pool has no signal

    // Feedback alignment with B = W^T above the flatten is backprop, through the
    // pooling's exact routing.
    auto bp = pooled_stack<backprop>(33);
    auto fa = pooled_stack<feedback_alignment>(33);
    fa.compute_gradients(x, y);
    bp.compute_gradients(x, y);
    CHECK(max_abs_diff(fa.layer<0>().weight_gradient(), bp.layer<0>().weight_gradient()) > 1e-4);
    fa.feedback().feedback_matrix<double>(2) =
      lightloop::testing::transposed(fa.layer<3>().weights());
    fa.compute_gradients(x, y);
    CHECK(max_abs_diff(fa.layer<0>().weight_gradient(), bp.layer<0>().weight_gradient()) < 1e-14);
}

TEST_CASE("a network refuses pooling that does not fit the layer below, naming both",
          "[layers][pooling]") {
    CHECK_THROWS_WITH(
      (make_network<backprop, mse>(1, dense<tanh_act>{6, 30}, max_pool2d<>({2, 4, 4}, 2),
                                   dense<identity>{8, 3})),
      Catch::Contains("max_pool2d 2x4x4 k2 s2") && Catch::Contains("takes 32") &&
        Catch::Contains("gives 30"));
    max_pool2d<> pool({2, 4, 4}, 2);
    CHECK_THROWS_AS(pool.forward(random_matrix<float>(2, 30, 1)), shape_error);
}

TEST_CASE("a network with pooling trains and its checkpoint round-trips",
          "[layers][pooling][train]") {
    // The synthetic task of test_training.cpp: dense 6 -> 2x8x8 maps, 2x2 max pooling,
    // dense 32 -> 4, backprop. Measured 0.93, 0.93, 0.92 for seeds 7-9; it must clear
    // the floor of the methods that learn hidden features there (0.88).
    lightloop::testing::scratch_dir dir("pooling");
    const auto train = lightloop::testing::blobs_task(2);
    const auto test = lightloop::testing::blobs_task(3);
    auto make = [] {
        return make_network<backprop, softmax_cross_entropy>(
          7, dense<tanh_act>{6, 128}, max_pool2d<>({2, 8, 8}, 2), flatten<>({2, 4, 4}),
          dense<identity>{32, 4});
    };
    auto net = make();
    sgd opt{{.learning_rate = 0.05, .momentum = 0.9}};
    lightloop::testing::train_epochs(net, opt, train, 32, 20, 8);
    const double accuracy = evaluate_accuracy(net, test.inputs, test.targets);
    CAPTURE(accuracy);
    CHECK(accuracy > 0.88);
    save_checkpoint(net, opt, dir / "net.ckpt", 1);
    auto copy = make(); // untrained
    sgd copy_opt{{.learning_rate = 0.05, .momentum = 0.9}};
    REQUIRE(lightloop::testing::parameters_of(copy) != lightloop::testing::parameters_of(net));
    load_checkpoint(copy, copy_opt, dir / "net.ckpt");
    CHECK(lightloop::testing::parameters_of(copy) == lightloop::testing::parameters_of(net));
    CHECK(evaluate_accuracy(copy, test.inputs, test.targets) == accuracy);
}
