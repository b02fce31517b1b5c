#include <catch2/catch.hpp>

#include <utility>
#include <vector>

#include <cmath>
#include <limits>

#include "support/helpers.hpp"

using namespace lightloop;
using lightloop::testing::random_matrix;

// A user's own policies, written outside the library against its concepts.
namespace user {

/// softsign: f(a) = a / (1 + |a|), f'(a) = 1 / (1 + |a|)^2.
struct softsign {
    template <class T>
    T value(T a) const {
        return a / (T(1) + std::abs(a));
    }
    template <class T>
    T derivative(T a, T) const {
        const T d = T(1) + std::abs(a);
        return T(1) / (d * d);
    }
};

/// A sparse ternary random projection (Achlioptas 2003): entries +-sqrt(3/in)
/// with probability 1/6 each, 0 otherwise; computed with plain loops, as a
/// driver for some other hardware might. Counts its calls.
class ternary_device {
public:
    void configure(std::size_t in, std::size_t out, std::uint64_t seed) {
        in_ = in;
        out_ = out;
        entries_.assign(in * out, 0.0);
        lightloop::rng gen(seed);
        const double magnitude = std::sqrt(3.0 / static_cast<double>(in));
        for (auto& e : entries_) {
            const auto r = gen.below(6);
            e = r == 0 ? magnitude : r == 1 ? -magnitude : 0.0;
        }
    }
    template <class T>
    void project(const lightloop::matrix<T>& x, lightloop::matrix<T>& y) {
        ++calls;
        for (std::size_t r = 0; r < x.shape(0); ++r) {
            for (std::size_t j = 0; j < out_; ++j) {
                double s = 0;
                for (std::size_t k = 0; k < in_; ++k) {
                    s += entries_[j * in_ + k] * static_cast<double>(x(r, k));
                }
                y(r, j) = static_cast<T>(s);
            }
        }
    }
    std::size_t input_size() const { return in_; }
    std::size_t output_size() const { return out_; }

    std::size_t calls = 0;

private:
    std::size_t in_ = 0;
    std::size_t out_ = 0;
    std::vector<double> entries_;
};

} // namespace user

static_assert(activation<user::softsign> && activation<user::softsign, double>);
static_assert(projection_device<user::ternary_device>);

TEST_CASE("a user-defined activation and device train without touching the library",
          "[network][concepts]") {
    const auto train = lightloop::testing::blobs_task(2);
    const auto test = lightloop::testing::blobs_task(3);
    auto net = make_network<dfa<user::ternary_device>, softmax_cross_entropy>(
      5, dense<user::softsign>{6, 64}, dense<user::softsign>{64, 64}, dense<identity>{64, 4});
    sgd opt{{.learning_rate = 0.05, .momentum = 0.9}};
    lightloop::testing::train_epochs(net, opt, train, 32, 30, 7);
    const double acc = evaluate_accuracy(net, test.inputs, test.targets);
    CAPTURE(acc);
    // One projection per step: 30 epochs of ceil(1200 / 32) = 38 batches.
    CHECK(net.feedback().device().calls == 30 * 38);
    CHECK(net.feedback().device().output_size() == 128);
    // Same floor as dense DFA on this task (see train/test_training.cpp).
    CHECK(acc > 0.85);
}

TEST_CASE("layer size mismatches are reported with the layer and both sizes", "[network]") {
    CHECK_THROWS_AS((make_network<backprop, softmax_cross_entropy>(dense<tanh_act>{784, 100},
                                                                   dense<identity>{99, 10})),
                    shape_error);
    CHECK_THROWS_WITH((make_network<dfa<>, mse>(dense<tanh_act>{4, 8}, dense<tanh_act>{8, 6},
                                                dense<identity>{5, 2})),
                      Catch::Contains("layer 2 (dense 5 -> 2) takes 5 inputs") &&
                        Catch::Contains("layer 1 (dense 8 -> 6) gives 6"));
}

TEST_CASE("batches of the wrong shape are refused before anything changes", "[network]") {
    auto net =
      make_network<backprop, softmax_cross_entropy>(dense<tanh_act>{4, 8}, dense<identity>{8, 3});
    sgd opt{0.1};
    const matrix<float> w = net.layer<0>().weights();
    const auto x = random_matrix<float>(5, 4, 1);
    const matrix<float> bad_x = xt::zeros<float>({5, 3});
    const matrix<float> y = xt::zeros<float>({5, 3});
    const matrix<float> bad_y = xt::zeros<float>({4, 3});
    CHECK_THROWS_WITH(net.train_step(bad_x, y, opt), Catch::Contains("input batch is 5x3"));
    CHECK_THROWS_WITH(net.train_step(x, bad_y, opt), Catch::Contains("target batch is 4x3"));
    CHECK_THROWS_AS(net.forward(matrix<float>::from_shape({0, 4})), shape_error);
    CHECK(lightloop::testing::identical(net.layer<0>().weights(), w));
}

TEST_CASE("a non-finite loss stops the step and names it", "[network]") {
    auto net =
      make_network<dfa<>, softmax_cross_entropy>(dense<tanh_act>{4, 8}, dense<identity>{8, 3});
    sgd opt{{.learning_rate = 0.1, .momentum = 0.9}};
    const auto x = random_matrix<float>(5, 4, 1);
    const auto y = one_hot<float>(std::span<const int>(std::vector<int>{0, 1, 2, 0, 1}), 3);
    net.train_step(x, y, opt);
    net.layer<1>().bias()(0) = std::numeric_limits<float>::infinity();
    const matrix<float> w0 = net.layer<0>().weights();
    CHECK_THROWS_AS(net.train_step(x, y, opt), divergence_error);
    CHECK_THROWS_WITH(net.train_step(x, y, opt), Catch::Contains("at step 1"));
    CHECK(lightloop::testing::identical(net.layer<0>().weights(), w0));
    CHECK(net.steps() == 1);
}

namespace {
/// Makes a projection 1e30 times too large: finite, but enough for delta^T x
/// to overflow float with inputs of 1e10.
struct amplify {
    template <class M>
    void operator()(M& y) const {
        y *= typename M::value_type(1e30);
    }
};
using loud_device = lightloop::testing::altered_device<amplify>;
} // namespace

TEST_CASE("a gradient that overflows from a finite delta is caught before the update",
          "[network][divergence]") {
    // Identity hidden layer: delta = 1e30 * B e is finite, the input 1e10, so the gradient
    // (1/n) delta^T x is ~1e40: infinite in float. The layer's bound says it cannot vouch for
    // it, so the network checks the gradient itself.
    auto net = make_network<dfa<loud_device>, softmax_cross_entropy>(dense<identity>{4, 8},
                                                                     dense<identity>{8, 3});
    sgd opt{0.1};
    matrix<float> x = random_matrix<float>(5, 4, 1);
    x *= 1e10f;
    const auto y = one_hot<float>(std::span<const int>(std::vector<int>{0, 1, 2, 0, 1}), 3);
    const matrix<float> w0 = net.layer<0>().weights();
    CHECK_THROWS_WITH(net.train_step(x, y, opt),
                      Catch::Contains("gradient of layer 0 (dense 4 -> 8) is not finite at step "
                                      "0; weights were not updated"));
    CHECK(lightloop::testing::identical(net.layer<0>().weights(), w0));
    // The same inputs at an ordinary size train.
    x /= 1e10f;
    CHECK(std::isfinite(net.train_step(x, y, opt)));
}

namespace {
/// Plain gradient descent with none of the optional members: no bound, no
/// measure, no state to save.
struct bare_descent {
    using value_type = float;
    double lr = 1.0;
    void begin_step() {}
    void update(std::size_t, std::span<float> w, std::span<const float> g) {
        for (std::size_t i = 0; i < w.size(); ++i) {
            w[i] = -2.0f * w[i] - static_cast<float>(lr) * g[i]; // like weight decay 3 at lr 1
        }
    }
    double learning_rate() const { return lr; }
    void set_learning_rate(double rate) { lr = rate; }
};
static_assert(optimizer<bare_descent>);

} // namespace

TEST_CASE("a step whose update overflows the last layer changes nothing", "[network][divergence]") {
    // With lr 1 and weight decay 3 an update maps w to -2 w - g: the hidden layers' weights
    // stay near 1, the last layer's entry of 2e38 becomes -4e38, beyond float (DFA, so the
    // huge weight does not reach the hidden layers' signals). The step must
    // leave every layer, the optimizer's state (momentum; Adam's moments and step count) and
    // the step count as they were, then train on once the weight is sane.
    const matrix<float> x = random_matrix<float>(6, 4, 3);
    const auto y = one_hot<float>(std::span<const int>(std::vector<int>{0, 1, 2, 0, 1, 2}), 3);
    auto check = [&](auto opt, const char* after) {
        auto net = make_network<dfa<>, softmax_cross_entropy>(
          5, dense<tanh_act>{4, 8}, dense<tanh_act>{8, 8}, dense<identity>{8, 3});
        sgd warm{{.learning_rate = 0.01, .momentum = 0.9}};
        net.train_step(x, y, warm);
        opt.set_learning_rate(1e-3);
        net.train_step(x, y, opt); // the optimizer has state now
        opt.set_learning_rate(1.0);
        net.layer<2>().weights()(1, 2) = 2e38f;
        const auto before = lightloop::testing::parameters_of(net);
        const auto opt_before = opt;
        CHECK_THROWS_WITH(net.train_step(x, y, opt),
                          Catch::Contains("weights of layer 2 (dense 8 -> 3) is not finite at "
                                          "step 2") &&
                            Catch::Contains(after));
        CHECK(lightloop::testing::parameters_of(net) == before);
        CHECK(net.steps() == 2);
        if constexpr (requires { opt.state(); }) {
            CHECK(opt.state() == opt_before.state());
        }
        if constexpr (requires { opt.step_count(); }) {
            CHECK(opt.step_count() == opt_before.step_count());
        }
        // Restored exactly: the next step equals the one a copy of the state takes.
        net.layer<2>().weights()(1, 2) = 0.5f;
        auto copy = net;
        auto copy_opt = opt_before;
        opt.set_learning_rate(1e-3);
        copy_opt.set_learning_rate(1e-3);
        net.train_step(x, y, opt);
        copy.train_step(x, y, copy_opt);
        CHECK(lightloop::testing::parameters_of(net) == lightloop::testing::parameters_of(copy));
        CHECK(net.steps() == 3);
    };
    check(sgd<float>{{.learning_rate = 1.0, .momentum = 0.9, .weight_decay = 3.0}},
          "no parameter and no optimizer state changed");
    check(adam<float>{{.learning_rate = 1.0, .weight_decay = 3.0, .decoupled_weight_decay = true}},
          "no parameter and no optimizer state changed");
    check(bare_descent{}, "no parameter changed (the optimizer has no save_state");
}

TEST_CASE("the step's overflow check trusts no stale measure of the weights",
          "[network][divergence]") {
    // The network proves a step safe from the largest weight its last update wrote. A weight
    // set through layer<I>() afterwards is measured again before the next update, so the
    // proof fails and the step is still all or nothing.
    const matrix<float> x = random_matrix<float>(6, 4, 3);
    const auto y = one_hot<float>(std::span<const int>(std::vector<int>{0, 1, 2, 0, 1, 2}), 3);
    auto net =
      make_network<dfa<>, softmax_cross_entropy>(5, dense<tanh_act>{4, 8}, dense<identity>{8, 3});
    sgd<float> opt{{.learning_rate = 1.0, .weight_decay = 3.0}};
    net.train_step(x, y, opt);
    net.train_step(x, y, opt);
    auto& last = net.layer<1>(); // measured again at the next step
    last.weights()(0, 0) = 2e38f;
    const auto before = lightloop::testing::parameters_of(net);
    CHECK_THROWS_WITH(net.train_step(x, y, opt),
                      Catch::Contains("no parameter and no optimizer state changed"));
    CHECK(lightloop::testing::parameters_of(net) == before);
}

TEST_CASE("the seed fixes every weight and feedback matrix", "[network]") {
    auto a =
      make_network<dfa<>, softmax_cross_entropy>(9, dense<relu>{4, 8}, dense<identity>{8, 3});
    auto b =
      make_network<dfa<>, softmax_cross_entropy>(9, dense<relu>{4, 8}, dense<identity>{8, 3});
    auto c =
      make_network<dfa<>, softmax_cross_entropy>(10, dense<relu>{4, 8}, dense<identity>{8, 3});
    CHECK(lightloop::testing::identical(a.layer<0>().weights(), b.layer<0>().weights()));
    CHECK(lightloop::testing::identical(a.feedback().device().feedback_matrix<float>(),
                                        b.feedback().device().feedback_matrix<float>()));
    CHECK_FALSE(lightloop::testing::identical(a.layer<0>().weights(), c.layer<0>().weights()));
    CHECK_FALSE(lightloop::testing::identical(a.feedback().device().feedback_matrix<float>(),
                                              c.feedback().device().feedback_matrix<float>()));
    // Layers draw from distinct streams: two equal-shaped layers differ.
    auto d = make_network<backprop, mse>(9, dense<relu>{8, 8}, dense<identity>{8, 8});
    CHECK_FALSE(lightloop::testing::identical(d.layer<0>().weights(), d.layer<1>().weights()));
}

TEST_CASE("the network can be built by class template argument deduction", "[network]") {
    network net{dfa<dense_uniform>{dense_uniform{0.5}}, mse{}, 3, dense<tanh_act>{3, 5},
                dense<identity>{5, 2}};
    CHECK(net.feedback().device().scale() == 0.5);
    CHECK(net.widths() == std::array<std::size_t, 3>{3, 5, 2});
    CHECK(decltype(net)::depth == 2);
}
