#include <catch2/catch.hpp>

#include <utility>
#include <vector>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <tuple>
#include <type_traits>

#include "support/files.hpp"
#include "support/helpers.hpp"
#include "support/user_layer.hpp"

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

/// A learning rule the library does not have: sign symmetry (Liao, Leibo
/// and Poggio 2016), backprop's layer-by-layer sweep with the signal going
/// down through sign(W) instead of W. Dense layers (it reads weights()).
struct sign_symmetry {
    static constexpr bool trains_hidden_layers = true;
    void configure(network_layout, std::uint64_t) {}

    template <class... Layers, scalar T>
    void backward(std::tuple<Layers...>& layers, const matrix<T>&) {
        propagate_down(layers, [](auto& above, std::size_t, matrix<T>& into) {
            const matrix<T> signs = xt::sign(above.weights());
            gemm(T(1), std::as_const(above).delta(), transpose::no, signs, transpose::no, T(0),
                 into);
        });
    }
};

/// A loss the library does not have: Huber's (PyTorch's HuberLoss, delta
/// 1): the mean over all n x d entries of r^2 / 2 where |r| <= 1 and
/// |r| - 1/2 beyond, r = out - y. The concept's convention: evaluate writes
/// the per-sample gradient, d l_s / d out with l_s = (1/d) sum_k huber(r_k),
/// which is clamp(r, -1, 1) / d (no 1/n).
struct huber {
    template <class T>
    T value(const matrix<T>& out, const matrix<T>& y) const {
        double total = 0;
        for (std::size_t i = 0; i < out.size(); ++i) {
            const double r = static_cast<double>(out.data()[i] - y.data()[i]);
            total += std::abs(r) <= 1.0 ? 0.5 * r * r : std::abs(r) - 0.5;
        }
        return static_cast<T>(total / static_cast<double>(out.size()));
    }
    template <class T>
    T evaluate(const matrix<T>& out, const matrix<T>& y, matrix<T>& grad) const {
        const T d = static_cast<T>(out.shape(1));
        for (std::size_t i = 0; i < out.size(); ++i) {
            grad.data()[i] = std::clamp(out.data()[i] - y.data()[i], T(-1), T(1)) / d;
        }
        return value(out, y);
    }
};

} // namespace user

static_assert(loss_function<user::huber> && loss_function<user::huber, double>);
static_assert(feedback_method<user::sign_symmetry>);
static_assert(activation<user::softsign> && activation<user::softsign, double>);
static_assert(projection_device<user::ternary_device>);
static_assert(layer<user::low_rank<tanh_act, float>> && layer<user::low_rank<tanh_act, double>>);

namespace {
/// Trains net on the blobs task as train/test_training.cpp does for its
/// floors (SGD, lr 0.05, momentum 0.9, batch 32, 30 epochs) and returns its
/// test accuracy.
template <class Network>
double accuracy_on_blobs(Network& net, sgd<>& opt) {
    lightloop::testing::train_epochs(net, opt, lightloop::testing::blobs_task(2), 32, 30, 7);
    const auto test = lightloop::testing::blobs_task(3);
    return evaluate_accuracy(net, test.inputs, test.targets);
}
} // namespace

TEST_CASE("a user-defined activation and device train without touching the library",
          "[network][concepts]") {
    auto net = make_network<dfa<user::ternary_device>, softmax_cross_entropy>(
      5, dense<user::softsign>{6, 64}, dense<user::softsign>{64, 64}, dense<identity>{64, 4});
    sgd opt{{.learning_rate = 0.05, .momentum = 0.9}};
    const double acc = accuracy_on_blobs(net, opt);
    CAPTURE(acc);
    // One projection per step: 30 epochs of ceil(1200 / 32) = 38 batches.
    CHECK(net.feedback().device().calls == 30 * 38);
    CHECK(net.feedback().device().output_size() == 128);
    // Same floor as dense DFA on this task (see train/test_training.cpp).
    CHECK(acc > 0.85);
}

// Backprop through the user's layer (in the middle, so the layer below's
// gradient crosses its backpropagate) against central differences, in double
// as in feedback/test_gradients.cpp: a wrong factor, a transposed product or
// a missing 1/n is off by O(1) relative.
TEST_CASE("a user-defined layer's gradients match finite differences", "[network][concepts]") {
    auto net = make_network<backprop, softmax_cross_entropy>(
      11, dense<tanh_act, double>{5, 7}, user::low_rank<tanh_act, double>{7, 6, 2},
      dense<identity, double>{6, 4});
    net.layer<1>().visit_parameters([&](std::span<double> values, std::span<const double>) {
        lightloop::rng gen(values.size());
        for (double& v : values) {
            v += 0.3 * gen.normal(); // the bias away from 0 too
        }
    });
    const auto x = random_matrix<double>(6, 5, 12);
    const auto y = one_hot<double>(std::span<const int>(std::vector<int>{0, 1, 2, 3, 1, 2}), 4);
    const auto result = check_gradients(net, x, y, {.step = 1e-5, .floor = 1e-4});
    CAPTURE(result.worst_layer, result.worst_entry, result.max_abs_error);
    CHECK(result.entries_checked == (5 * 7 + 7) + (6 * 2 + 2 * 7 + 6) + (6 * 4 + 4));
    CHECK(result.max_rel_error < 1e-5);
}

// The same layer trained by the methods that use its parts differently:
// backprop its backpropagate, feedback alignment a random matrix in place of
// U V, DFA only its derivative and gradients. Floors as for dense layers on
// this task (train/test_training.cpp); its parameters save and load as
// param0..2 (io/npz.hpp), the network predicting the same after.
TEMPLATE_TEST_CASE("a user-defined layer trains with every method", "[network][concepts]", backprop,
                   feedback_alignment, dfa<>) {
    auto make = [] {
        return make_network<TestType, softmax_cross_entropy>(
          5, dense<tanh_act>{6, 64}, user::low_rank<tanh_act, float>{64, 64, 8},
          dense<identity>{64, 4});
    };
    auto net = make();
    sgd opt{{.learning_rate = 0.05, .momentum = 0.9}};
    const double acc = accuracy_on_blobs(net, opt);
    CAPTURE(acc);
    CHECK(acc > 0.85);

    const lightloop::testing::scratch_dir dir("user_layer");
    const auto path = dir / "weights.npz";
    save_weights_npz(net, path);
    CHECK(npz_file(path).names() ==
          std::vector<std::string>{"layer0.bias", "layer0.weight", "layer1.param0", "layer1.param1",
                                   "layer1.param2", "layer2.bias", "layer2.weight"});
    auto loaded = make();
    load_weights_npz(loaded, path);
    const auto test = lightloop::testing::blobs_task(3);
    CHECK(lightloop::testing::identical(loaded.forward(test.inputs), net.forward(test.inputs)));

    // fit's alignment probe with it: backprop's signals are backprop's
    // (cosine 1 in both hidden layers); the weight alignment of the layer
    // below it is NaN (no weights() to hold B against), the one above is
    // measured where the method has B (feedback alignment).
    // (`loaded` gets an optimizer of its own: fit refuses one that stepped
    // another network.)
    sgd loaded_opt{{.learning_rate = 0.05, .momentum = 0.9}};
    const auto history = fit(loaded, loaded_opt, lightloop::testing::blobs_task(2), test,
                             {.epochs = 1, .batch = 32, .seed = 8, .alignment_probe = 64});
    const auto& record = history.epochs.back();
    REQUIRE(record.alignment_mean.size() == 2);
    REQUIRE(record.weight_alignment.size() == 2);
    if constexpr (std::is_same_v<TestType, backprop>) {
        CHECK(record.alignment_mean[0] == Approx(1.0).margin(1e-5));
        CHECK(record.alignment_mean[1] == Approx(1.0).margin(1e-5));
    } else {
        CHECK(std::isfinite(record.alignment_mean[0]));
        CHECK(std::isfinite(record.alignment_mean[1]));
    }
    CHECK(std::isnan(record.weight_alignment[0]));
    CHECK(std::isfinite(record.weight_alignment[1]) ==
          std::is_same_v<TestType, feedback_alignment>);
}

// Backprop with the user's loss against central differences: a gradient
// written per batch mean (a 1/n too many) or without its 1/d is off by a
// factor of 6 or 4. Targets spread so that some residuals pass |r| = 1 and
// some do not (no residual within the step of the kink, checked).
TEST_CASE("a user-defined loss's gradients match finite differences", "[network][concepts]") {
    auto net = make_network<backprop, user::huber>(31, dense<tanh_act, double>{5, 7},
                                                   dense<identity, double>{7, 4});
    const auto x = random_matrix<double>(6, 5, 32);
    const auto y = random_matrix<double>(6, 4, 33, 1.5);
    const matrix<double> r = net.forward(x) - y;
    CHECK(xt::amax(xt::abs(r))() > 1.0);
    CHECK(xt::amin(xt::abs(r))() < 1.0);
    CHECK(xt::amin(xt::abs(xt::abs(r) - 1.0))() > 1e-3);
    const auto result = check_gradients(net, x, y, {.step = 1e-5, .floor = 1e-4});
    CAPTURE(result.worst_layer, result.worst_entry, result.max_abs_error);
    CHECK(result.entries_checked == (5 * 7 + 7) + (7 * 4 + 4));
    CHECK(result.max_rel_error < 1e-5);
}

// The user's method gives each hidden layer the signal it defines,
// delta_i = (delta_{i+1} sign(W_{i+1})) ⊙ f'(a_i), computed here by hand from
// the layers' state; backprop's differs (so the comparison can fail). Then it
// trains to the dense layers' floor on blobs (sign symmetry trains nearly as
// backprop does: Liao et al.).
TEST_CASE("a user-defined feedback method gives its own signals and trains",
          "[network][concepts]") {
    auto net = make_network<user::sign_symmetry, softmax_cross_entropy>(
      21, dense<tanh_act, double>{5, 7}, dense<tanh_act, double>{7, 6},
      dense<identity, double>{6, 4});
    const auto x = random_matrix<double>(6, 5, 22);
    const auto y = one_hot<double>(std::span<const int>(std::vector<int>{0, 1, 2, 3, 1, 2}), 4);
    net.compute_gradients(x, y);
    using lightloop::testing::max_abs_diff;
    using lightloop::testing::naive_product;
    const matrix<double> signs2 = xt::sign(net.layer<2>().weights());
    const matrix<double> signs1 = xt::sign(net.layer<1>().weights());
    const matrix<double>& top = std::as_const(net.layer<2>()).delta();
    const matrix<double>& h1 = net.layer<1>().output();
    const matrix<double>& h0 = net.layer<0>().output();
    const matrix<double> expected1 = naive_product(top, false, signs2, false) * (1.0 - h1 * h1);
    CHECK(max_abs_diff(std::as_const(net.layer<1>()).delta(), expected1) < 1e-12);
    const matrix<double> expected0 =
      naive_product(std::as_const(net.layer<1>()).delta(), false, signs1, false) * (1.0 - h0 * h0);
    CHECK(max_abs_diff(std::as_const(net.layer<0>()).delta(), expected0) < 1e-12);
    const matrix<double> backprop1 =
      naive_product(top, false, net.layer<2>().weights(), false) * (1.0 - h1 * h1);
    CHECK(max_abs_diff(backprop1, expected1) > 0.1 * lightloop::testing::max_abs(expected1));

    auto make = [] {
        return make_network<user::sign_symmetry, softmax_cross_entropy>(
          5, dense<tanh_act>{6, 64}, dense<tanh_act>{64, 64}, dense<identity>{64, 4});
    };
    auto trained = make();
    sgd opt{{.learning_rate = 0.05, .momentum = 0.9}};
    const double acc = accuracy_on_blobs(trained, opt);
    CAPTURE(acc);
    CHECK(acc > 0.85);

    // A checkpoint names the user's method in its signature and resumes.
    const lightloop::testing::scratch_dir dir("user_method");
    save_checkpoint(trained, opt, dir / "net.ckpt", 30);
    auto resumed = make();
    sgd resumed_opt{{.learning_rate = 0.05, .momentum = 0.9}};
    REQUIRE(lightloop::testing::parameters_of(resumed) !=
            lightloop::testing::parameters_of(trained));
    load_checkpoint(resumed, resumed_opt, dir / "net.ckpt");
    CHECK(lightloop::testing::parameters_of(resumed) == lightloop::testing::parameters_of(trained));
    const auto test = lightloop::testing::blobs_task(3);
    CHECK(evaluate_accuracy(resumed, test.inputs, test.targets) == acc);
    auto other = make_network<backprop, softmax_cross_entropy>(
      5, dense<tanh_act>{6, 64}, dense<tanh_act>{64, 64}, dense<identity>{64, 4});
    CHECK_THROWS_WITH(load_checkpoint(other, resumed_opt, dir / "net.ckpt"),
                      Catch::Contains("sign_symmetry"));
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
