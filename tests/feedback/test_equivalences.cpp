#include <catch2/catch.hpp>

#include "support/files.hpp"
#include "support/helpers.hpp"

using namespace lightloop;
using lightloop::testing::max_abs;
using lightloop::testing::max_abs_diff;
using lightloop::testing::naive_product;
using lightloop::testing::random_matrix;
using lightloop::testing::transposed;

namespace {
const std::vector<int> equivalence_labels{0, 1, 2, 1, 0, 2, 2, 1};

matrix<double> equivalence_targets() {
    return one_hot<double>(std::span<const int>(equivalence_labels), 3);
}

/// Largest difference between two networks' weight gradients, layer by layer.
template <class NetA, class NetB>
double gradient_gap(NetA& a, NetB& b) {
    double gap = 0.0;
    detail::for_index<NetA::depth>([&](auto index) {
        constexpr std::size_t i = decltype(index)::value;
        gap = std::max(gap, max_abs_diff(a.template layer<i>().weight_gradient(),
                                         b.template layer<i>().weight_gradient()));
        gap = std::max(gap, max_abs_diff(a.template layer<i>().bias_gradient(),
                                         b.template layer<i>().bias_gradient()));
    });
    return gap;
}
} // namespace

TEST_CASE("DFA with B = W2^T gives exactly backprop's update", "[feedback][dfa]") {
    const std::uint64_t seed = 21;
    CAPTURE(seed);
    auto bp = make_network<backprop, softmax_cross_entropy>(seed, dense<tanh_act, double>{6, 9},
                                                            dense<identity, double>{9, 3});
    auto direct = make_network<dfa<dense_gaussian>, softmax_cross_entropy>(
      seed, dense<tanh_act, double>{6, 9}, dense<identity, double>{9, 3});
    const auto x = random_matrix<double>(8, 6, seed);
    const auto y = equivalence_targets();

    // With its own random B, DFA's hidden gradient differs from backprop's.
    bp.compute_gradients(x, y);
    direct.compute_gradients(x, y);
    CHECK(max_abs(bp.layer<1>().weight_gradient()) > 1e-3);
    CHECK(gradient_gap(bp, direct) > 1e-3);

    // The device computes y = e B^T with B (9 x 3); B = W2^T makes B e = W2^T e.
    direct.feedback().device().feedback_matrix<double>() = transposed(direct.layer<1>().weights());
    bp.compute_gradients(x, y);
    direct.compute_gradients(x, y);
    CHECK(gradient_gap(bp, direct) < 1e-14);

    sgd<double> opt_bp{{.learning_rate = 0.5, .momentum = 0.9}};
    sgd<double> opt_dfa{{.learning_rate = 0.5, .momentum = 0.9}};
    bp.apply_gradients(opt_bp);
    direct.apply_gradients(opt_dfa);
    CHECK(max_abs_diff(bp.layer<0>().weights(), direct.layer<0>().weights()) < 1e-14);
    CHECK(max_abs_diff(bp.layer<1>().weights(), direct.layer<1>().weights()) < 1e-14);
}

TEST_CASE("feedback alignment with B_{i+1} = W_{i+1}^T is backprop", "[feedback][fa]") {
    const std::uint64_t seed = 22;
    CAPTURE(seed);
    auto bp = make_network<backprop, softmax_cross_entropy>(seed, dense<sigmoid, double>{6, 8},
                                                            dense<tanh_act, double>{8, 5},
                                                            dense<identity, double>{5, 3});
    auto fa = make_network<feedback_alignment, softmax_cross_entropy>(
      seed, dense<sigmoid, double>{6, 8}, dense<tanh_act, double>{8, 5},
      dense<identity, double>{5, 3});
    const auto x = random_matrix<double>(8, 6, seed);
    const auto y = equivalence_targets();
    REQUIRE(fa.feedback().hidden_layers() == 2);

    bp.compute_gradients(x, y);
    fa.compute_gradients(x, y);
    CHECK(gradient_gap(bp, fa) > 1e-3);

    fa.feedback().feedback_matrix<double>(0) = transposed(fa.layer<1>().weights());
    fa.feedback().feedback_matrix<double>(1) = transposed(fa.layer<2>().weights());
    fa.compute_gradients(x, y);
    CHECK(gradient_gap(bp, fa) < 1e-14);
}

TEST_CASE("DFA makes one projection of e into the summed hidden widths and slices it",
          "[feedback][dfa]") {
    auto net = make_network<dfa<dense_gaussian>, softmax_cross_entropy>(
      23, dense<tanh_act, double>{4, 5}, dense<relu, double>{5, 7}, dense<identity, double>{7, 3});
    REQUIRE(net.feedback().projection_size() == 12);
    REQUIRE(net.feedback().device().input_size() == 3);
    const auto x = random_matrix<double>(8, 4, 1);
    net.compute_gradients(x, equivalence_targets());
    // Each hidden delta is (e B^T)[:, slice] ⊙ f'(a) with slices [0, 5) and [5, 12).
    const auto projected = naive_product(net.layer<2>().delta(), false,
                                         net.feedback().device().feedback_matrix<double>(), true);
    double gap = 0;
    for (std::size_t r = 0; r < 8; ++r) {
        for (std::size_t c = 0; c < 5; ++c) {
            const double h = net.layer<0>().output()(r, c);
            gap =
              std::max(gap, std::abs(net.layer<0>().delta()(r, c) - projected(r, c) * (1 - h * h)));
        }
        for (std::size_t c = 0; c < 7; ++c) {
            const double relu_slope = net.layer<1>().pre_activation()(r, c) > 0 ? 1.0 : 0.0;
            gap = std::max(
              gap, std::abs(net.layer<1>().delta()(r, c) - projected(r, 5 + c) * relu_slope));
        }
    }
    CHECK(gap < 1e-14);
}

TEST_CASE("DRTP's hidden signal depends on the target, not the output", "[feedback][drtp]") {
    auto net = make_network<drtp<dense_gaussian>, softmax_cross_entropy>(
      24, dense<tanh_act, double>{6, 9}, dense<identity, double>{9, 3});
    const auto x = random_matrix<double>(8, 6, 2);
    const auto y = equivalence_targets();
    net.compute_gradients(x, y);
    const matrix<double> hidden = net.layer<0>().delta();
    const matrix<double> error = net.layer<1>().delta();

    // It is (y* B^T) ⊙ f'(a), computed from the target alone.
    const auto projected =
      naive_product(y, false, net.feedback().device().feedback_matrix<double>(), true);
    double gap = 0;
    for (std::size_t r = 0; r < 8; ++r) {
        for (std::size_t c = 0; c < 9; ++c) {
            const double h = net.layer<0>().output()(r, c);
            gap = std::max(gap, std::abs(hidden(r, c) - projected(r, c) * (1 - h * h)));
        }
    }
    CHECK(gap < 1e-14);

    // Changing the output layer changes e but leaves the hidden signal alone.
    net.layer<1>().weights() *= -3.0;
    net.compute_gradients(x, y);
    CHECK(max_abs_diff(net.layer<1>().delta(), error) > 1e-2);
    CHECK(max_abs_diff(net.layer<0>().delta(), hidden) == 0.0);

    // Changing the target changes it.
    const auto other =
      one_hot<double>(std::span<const int>(std::vector<int>{2, 2, 2, 2, 2, 2, 2, 2}), 3);
    net.compute_gradients(x, other);
    CHECK(max_abs_diff(net.layer<0>().delta(), hidden) > 1e-2);
}

TEST_CASE("sign-DFA projects the sign of e, with the same matrix DFA uses", "[feedback][dfa]") {
    // Same seed: the same weights and the same B. sign-DFA's hidden signal is
    // (sign(e) B^T) ⊙ f'(a); with an MSE loss e has entries of both signs and
    // some exactly zero (outputs equal to their targets), whose sign is 0.
    auto direct = make_network<dfa<dense_gaussian>, mse>(26, dense<tanh_act, double>{6, 9},
                                                         dense<identity, double>{9, 3});
    auto signed_net = make_network<sign_dfa<dense_gaussian>, mse>(26, dense<tanh_act, double>{6, 9},
                                                                  dense<identity, double>{9, 3});
    REQUIRE(
      lightloop::testing::identical(direct.feedback().device().feedback_matrix<double>(),
                                    signed_net.feedback().device().feedback_matrix<double>()));
    const auto x = random_matrix<double>(8, 6, 4);
    signed_net.forward(x);
    matrix<double> y = signed_net.layer<1>().output();
    y(0, 0) += 0.5;
    y(1, 2) -= 0.25; // every other entry of e is exactly 0
    signed_net.compute_gradients(x, y);
    direct.compute_gradients(x, y);
    const matrix<double>& e = signed_net.layer<1>().delta();
    CHECK(max_abs_diff(e, direct.layer<1>().delta()) == 0.0); // the output learns from e
    matrix<double> signs = e;
    for (auto& v : signs) {
        v = v > 0 ? 1.0 : (v < 0 ? -1.0 : 0.0);
    }
    CHECK(signs(0, 0) == -1.0);
    CHECK(signs(1, 2) == 1.0);
    CHECK(signs(2, 0) == 0.0);
    const auto projected =
      naive_product(signs, false, signed_net.feedback().device().feedback_matrix<double>(), true);
    double gap = 0;
    for (std::size_t r = 0; r < 8; ++r) {
        for (std::size_t c = 0; c < 9; ++c) {
            const double h = signed_net.layer<0>().output()(r, c);
            gap = std::max(
              gap, std::abs(signed_net.layer<0>().delta()(r, c) - projected(r, c) * (1 - h * h)));
        }
    }
    CHECK(gap < 1e-14);
    // DFA's signal differs: it projects e itself.
    CHECK(max_abs_diff(direct.layer<0>().delta(), signed_net.layer<0>().delta()) > 1e-3);
}

namespace {
/// Trains a copy of `net` under backprop and under Method for three steps and
/// checks their output layers end bit for bit the same.
template <class Method, class... Layers>
void check_trains_as_backprop(const Layers&... layers) {
    auto bp = make_network<backprop, softmax_cross_entropy>(31, layers...);
    auto direct = make_network<Method, softmax_cross_entropy>(31, layers...);
    const auto x = random_matrix<float>(8, 6, 4);
    const auto y = one_hot<float>(std::span<const int>(equivalence_labels), 3);
    sgd opt_bp{{.learning_rate = 0.1, .momentum = 0.9}};
    sgd opt_direct{{.learning_rate = 0.1, .momentum = 0.9}};
    const matrix<float> w0 = bp.template layer<sizeof...(Layers) - 1>().weights();
    for (int step = 0; step < 3; ++step) {
        bp.train_step(x, y, opt_bp);
        direct.train_step(x, y, opt_direct);
    }
    const auto& out_bp = bp.template layer<sizeof...(Layers) - 1>();
    const auto& out_direct = direct.template layer<sizeof...(Layers) - 1>();
    CHECK(max_abs_diff(out_bp.weights(), w0) > 1e-3);
    CHECK(lightloop::testing::identical(out_bp.weights(), out_direct.weights()));
    CHECK(lightloop::testing::identical(out_bp.bias(), out_direct.bias()));
    CHECK(direct.feedback().projection_size() == 0);
}
} // namespace

TEST_CASE("direct methods with no hidden layer to train are backprop on the output layer",
          "[feedback][dfa]") {
    // Nothing to project into: the device stays unconfigured (the library's
    // devices refuse zero outputs) and the step is backprop's.
    check_trains_as_backprop<dfa<dense_gaussian>>(dense<identity>{6, 3});
    check_trains_as_backprop<drtp<dense_uniform>>(dense<identity>{6, 3});
    check_trains_as_backprop<dfa<optical<>>>(dense<identity>{6, 3});
    check_trains_as_backprop<sign_dfa<optical<intensity_readout>>>(flatten<float>({6, 1, 1}),
                                                                   dense<identity>{6, 3});
    auto net = make_network<dfa<optical<>>, softmax_cross_entropy>(31, dense<identity>{6, 3});
    sgd opt{{.learning_rate = 0.1}};
    net.train_step(random_matrix<float>(8, 6, 4),
                   one_hot<float>(std::span<const int>(equivalence_labels), 3), opt);
    CHECK(net.feedback().device().statistics().frames == 0);

    // Its checkpoint holds no device state, and loads.
    const lightloop::testing::scratch_dir dir("no_hidden_layer");
    save_checkpoint(net, opt, dir / "net.llck", 1);
    auto loaded = make_network<dfa<optical<>>, softmax_cross_entropy>(31, dense<identity>{6, 3});
    sgd loaded_opt{{.learning_rate = 0.1}};
    CHECK(!lightloop::testing::identical(loaded.layer<0>().weights(), net.layer<0>().weights()));
    load_checkpoint(loaded, loaded_opt, dir / "net.llck");
    CHECK(lightloop::testing::identical(loaded.layer<0>().weights(), net.layer<0>().weights()));
}

TEST_CASE("shallow training leaves hidden weights bit-identical", "[feedback][shallow]") {
    auto net = make_network<shallow, softmax_cross_entropy>(
      25, dense<tanh_act>{6, 9}, dense<tanh_act>{9, 9}, dense<identity>{9, 3});
    auto reference = make_network<backprop, softmax_cross_entropy>(
      25, dense<tanh_act>{6, 9}, dense<tanh_act>{9, 9}, dense<identity>{9, 3});
    const matrix<float> w0 = net.layer<0>().weights();
    const vector<float> b0 = net.layer<0>().bias();
    const matrix<float> w1 = net.layer<1>().weights();
    const matrix<float> w2 = net.layer<2>().weights();
    const auto x = random_matrix<float>(8, 6, 3);
    const auto y = one_hot<float>(std::span<const int>(equivalence_labels), 3);

    // The output layer learns from its true gradient, as under backprop.
    net.compute_gradients(x, y);
    reference.compute_gradients(x, y);
    CHECK(max_abs_diff(net.layer<2>().weight_gradient(), reference.layer<2>().weight_gradient()) ==
          0.0);

    sgd opt{{.learning_rate = 0.1, .momentum = 0.9, .weight_decay = 0.01}};
    for (int step = 0; step < 5; ++step) {
        net.train_step(x, y, opt);
    }
    CHECK(lightloop::testing::identical(net.layer<0>().weights(), w0));
    CHECK(lightloop::testing::identical(net.layer<0>().bias(), b0));
    CHECK(lightloop::testing::identical(net.layer<1>().weights(), w1));
    CHECK(max_abs_diff(net.layer<2>().weights(), w2) > 1e-3);
}
