#include <catch2/catch.hpp>

#include <cmath>

#include "support/helpers.hpp"

using namespace lightloop;
using lightloop::testing::transposed;

namespace {
const auto alignment_x = lightloop::testing::random_matrix<double>(32, 6, 1);
const auto alignment_y = one_hot<double>(
  std::span<const int>(std::vector<int>{0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3,
                                        0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3}),
  4);
} // namespace

TEST_CASE("backprop is perfectly aligned with itself", "[train][alignment]") {
    auto net = make_network<backprop, softmax_cross_entropy>(4, dense<tanh_act, double>{6, 10},
                                                             dense<tanh_act, double>{10, 8},
                                                             dense<identity, double>{8, 4});
    const auto report = gradient_alignment(net, alignment_x, alignment_y);
    REQUIRE(report.mean.size() == 2);
    for (std::size_t i = 0; i < 2; ++i) {
        CHECK(report.mean[i] == Approx(1.0).epsilon(1e-12));
        CHECK(report.spread[i] == Approx(0.0).margin(1e-6));
    }
}

TEST_CASE("DFA's alignment is 1 when B equals the forward weights, and small at random",
          "[train][alignment]") {
    auto net = make_network<dfa<dense_gaussian>, softmax_cross_entropy>(
      5, dense<tanh_act, double>{6, 10}, dense<identity, double>{10, 4});
    // Random B at initialisation: a cosine between unrelated vectors in 10-D
    // has mean 0 and spread ~1/sqrt(10); the mean over 32 samples stays small.
    const auto random = gradient_alignment(net, alignment_x, alignment_y);
    CHECK(std::abs(random.mean[0]) < 0.5);
    CHECK(random.spread[0] > 0.05);
    // Weight alignment of unrelated random matrices: the cosine of two random
    // vectors in 64 x 4 = 256 dimensions has sd 1/16; 0.3 is about 5 sd.
    auto wide = make_network<dfa<dense_gaussian>, softmax_cross_entropy>(
      5, dense<tanh_act, double>{6, 64}, dense<identity, double>{64, 4});
    CHECK(std::abs(weight_alignment(wide)[0]) < 0.3);

    net.feedback().device().feedback_matrix<double>() = transposed(net.layer<1>().weights());
    CHECK(gradient_alignment(net, alignment_x, alignment_y).mean[0] == Approx(1.0).epsilon(1e-12));
    CHECK(weight_alignment(net)[0] == Approx(1.0).epsilon(1e-12));
}

TEST_CASE("weight alignment compares B_i with the product of the weights above",
          "[train][alignment]") {
    // Two hidden layers: B_0 (rows 0..9 of B) stands in for (W_2 W_1)^T.
    auto net = make_network<dfa<dense_gaussian>, softmax_cross_entropy>(
      6, dense<tanh_act, double>{6, 10}, dense<tanh_act, double>{10, 8},
      dense<identity, double>{8, 4});
    auto& b = net.feedback().device().feedback_matrix<double>(); // (10 + 8) x 4
    const auto product = lightloop::testing::naive_product(net.layer<1>().weights(), true,
                                                           transposed(net.layer<2>().weights()),
                                                           false); // (W_2 W_1)^T = W_1^T W_2^T
    const auto w2t = transposed(net.layer<2>().weights());
    for (std::size_t r = 0; r < 10; ++r) {
        for (std::size_t c = 0; c < 4; ++c) {
            b(r, c) = -product(r, c); // anti-aligned
        }
    }
    for (std::size_t r = 0; r < 8; ++r) {
        for (std::size_t c = 0; c < 4; ++c) {
            b(10 + r, c) = w2t(r, c);
        }
    }
    const auto alignment = weight_alignment(net);
    CHECK(alignment[0] == Approx(-1.0).epsilon(1e-12));
    CHECK(alignment[1] == Approx(1.0).epsilon(1e-12));
}

TEST_CASE("feedback alignment's weight alignment and shallow's undefined alignment",
          "[train][alignment]") {
    auto fa = make_network<feedback_alignment, softmax_cross_entropy>(
      7, dense<tanh_act, double>{6, 10}, dense<identity, double>{10, 4});
    fa.feedback().feedback_matrix<double>(0) = transposed(fa.layer<1>().weights());
    CHECK(weight_alignment(fa)[0] == Approx(1.0).epsilon(1e-12));
    CHECK(gradient_alignment(fa, alignment_x, alignment_y).mean[0] == Approx(1.0).epsilon(1e-12));

    auto frozen = make_network<shallow, softmax_cross_entropy>(7, dense<tanh_act, double>{6, 10},
                                                               dense<identity, double>{10, 4});
    CHECK(std::isnan(gradient_alignment(frozen, alignment_x, alignment_y).mean[0]));
    CHECK(std::isnan(weight_alignment(frozen)[0]));
}
