#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <lightloop/lightloop.hpp>

#include "support/helpers.hpp"

using namespace lightloop;

namespace {
/// Runs `opt` on a single parameter with the given gradient sequence.
template <class Optimizer>
std::vector<double> trajectory(Optimizer opt, double w0, std::vector<double> grads) {
    std::vector<double> w{w0};
    std::vector<double> out;
    for (const double g : grads) {
        const std::vector<double> gv{g};
        opt.begin_step();
        opt.update(0, std::span<double>(w), std::span<const double>(gv));
        out.push_back(w[0]);
    }
    return out;
}
} // namespace

TEST_CASE("sgd steps match hand computations", "[optim][sgd]") {
    SECTION("plain: w = 1 - 0.1 * 0.5") {
        const auto w = trajectory(sgd<double>{{.learning_rate = 0.1}}, 1.0, {0.5});
        CHECK(w[0] == Approx(0.95).epsilon(1e-15));
    }
    SECTION("momentum 0.9, g = 1, 1: v = 1, 1.9; w = -0.1, -0.29") {
        const auto w =
          trajectory(sgd<double>{{.learning_rate = 0.1, .momentum = 0.9}}, 0.0, {1.0, 1.0});
        CHECK(w[0] == Approx(-0.1).epsilon(1e-15));
        CHECK(w[1] == Approx(-0.29).epsilon(1e-15));
    }
    SECTION("nesterov 0.9, g = 1, 1: steps g + 0.9 v = 1.9, 2.71; w = -0.19, -0.461") {
        const auto w = trajectory(
          sgd<double>{{.learning_rate = 0.1, .momentum = 0.9, .nesterov = true}}, 0.0, {1.0, 1.0});
        CHECK(w[0] == Approx(-0.19).epsilon(1e-15));
        CHECK(w[1] == Approx(-0.461).epsilon(1e-15));
    }
    SECTION("weight decay 0.1, g = 0: w = 1 * (1 - 0.01) twice = 0.99, 0.9801") {
        const auto w =
          trajectory(sgd<double>{{.learning_rate = 0.1, .weight_decay = 0.1}}, 1.0, {0.0, 0.0});
        CHECK(w[0] == Approx(0.99).epsilon(1e-15));
        CHECK(w[1] == Approx(0.9801).epsilon(1e-15));
    }
}

TEST_CASE("adam steps match hand computations", "[optim][adam]") {
    SECTION("g = 0.5, -1 from w = 1 with lr 0.1") {
        // t=1: m = 0.05, v = 0.00025, m^ = 0.5, v^ = 0.25 -> w = 1 - 0.1 * 0.5 / 0.5 = 0.9
        // t=2: m = 0.045 - 0.1 = -0.055, v = 0.00024975 + 0.001 = 0.00124975,
        //      m^ = -0.055 / 0.19 = -0.289473684, v^ = 0.00124975 / 0.001999 = 0.625187594,
        //      w = 0.9 + 0.1 * 0.289473684 / 0.790688051 = 0.936610350
        const auto w = trajectory(adam<double>{{.learning_rate = 0.1}}, 1.0, {0.5, -1.0});
        CHECK(w[0] == Approx(0.9).epsilon(1e-7));
        CHECK(w[1] == Approx(0.936610350).epsilon(1e-8));
    }
    SECTION("L2 weight decay enters the moments; decoupled decay does not") {
        // g = 0, w = 1, wd = 0.1: L2 makes g = 0.1, so the first step is lr = 0.1
        // (m^ / sqrt(v^) = 1); AdamW only shrinks w by 1 - lr wd = 0.99.
        const auto l2 =
          trajectory(adam<double>{{.learning_rate = 0.1, .weight_decay = 0.1}}, 1.0, {0.0});
        const auto decoupled = trajectory(
          adam<double>{{.learning_rate = 0.1, .weight_decay = 0.1, .decoupled_weight_decay = true}},
          1.0, {0.0});
        CHECK(l2[0] == Approx(0.9).epsilon(1e-6));
        CHECK(decoupled[0] == Approx(0.99).epsilon(1e-15));
    }
}

TEST_CASE("optimizers keep separate state per slot", "[optim]") {
    sgd<double> opt{{.learning_rate = 0.1, .momentum = 0.9}};
    std::vector<double> a{0.0};
    std::vector<double> b{0.0};
    const std::vector<double> one{1.0};
    const std::vector<double> zero{0.0};
    opt.begin_step();
    opt.update(0, std::span<double>(a), std::span<const double>(one));
    opt.update(1, std::span<double>(b), std::span<const double>(zero));
    opt.begin_step();
    opt.update(0, std::span<double>(a), std::span<const double>(one));
    opt.update(1, std::span<double>(b), std::span<const double>(zero));
    CHECK(a[0] == Approx(-0.29));
    CHECK(b[0] == 0.0);
    std::vector<double> wrong{0.0, 0.0};
    const std::vector<double> wrong_g{0.0, 0.0};
    CHECK_THROWS_AS(opt.update(0, std::span<double>(wrong), std::span<const double>(wrong_g)),
                    shape_error);
}

TEST_CASE("optimizers refuse invalid settings", "[optim]") {
    CHECK_THROWS_AS((sgd<>{{.learning_rate = -0.1}}), config_error);
    CHECK_THROWS_AS((sgd<>{{.learning_rate = 0.1, .momentum = 1.0}}), config_error);
    CHECK_THROWS_AS((sgd<>{{.learning_rate = 0.1, .nesterov = true}}), config_error);
    CHECK_THROWS_WITH(adam<>{{.beta2 = 1.5}}, Catch::Contains("beta2"));
    // Infinite settings were taken: an infinite epsilon stops adam learning
    // without a word, an infinite weight decay turns every weight into NaN.
    const double inf = std::numeric_limits<double>::infinity();
    CHECK_THROWS_WITH((sgd<>{{.learning_rate = 0.1, .weight_decay = inf}}),
                      "lightloop::sgd: weight_decay must be finite and >= 0, got inf");
    CHECK_THROWS_WITH(adam<>{{.epsilon = inf}},
                      "lightloop::adam: epsilon must be finite and > 0, got inf");
    CHECK_THROWS_WITH(adam<>{{.weight_decay = inf}},
                      "lightloop::adam: weight_decay must be finite and >= 0, got inf");
    CHECK_THROWS_WITH((sgd<>{{.learning_rate = -0.1}}),
                      "lightloop::sgd: learning_rate must be positive and finite, got -0.1");
    adam<double> opt;
    std::vector<double> w{1.0};
    const std::vector<double> g{1.0};
    CHECK_THROWS_AS(opt.update(0, std::span<double>(w), std::span<const double>(g)), config_error);
    sgd<float> s;
    CHECK_THROWS_AS(s.set_learning_rate(0.0), config_error);
}

namespace {

/// 1003 weights and gradients: whole SIMD batches and a scalar tail of 3 on
/// every width xsimd may pick (2, 4, 8 or 16 lanes; 1003 = 62 * 16 + 11).
struct long_arrays {
    std::vector<float> w, g;
    explicit long_arrays(std::uint64_t seed)
      : w(1003)
      , g(1003) {
        rng gen(seed);
        for (std::size_t i = 0; i < w.size(); ++i) {
            w[i] = static_cast<float>(gen.uniform() - 0.5);
            g[i] = static_cast<float>(gen.uniform() - 0.5);
        }
    }
};

} // namespace

TEST_CASE("sgd's vectorised update matches the formula on every element, batch lanes and tail",
          "[optim][sgd]") {
    for (const bool nesterov : {false, true}) {
        long_arrays a(3);
        sgd<float> opt{
          {.learning_rate = 0.1, .momentum = 0.9, .nesterov = nesterov, .weight_decay = 0.01}};
        std::vector<double> w(a.w.begin(), a.w.end()), v(w.size(), 0.0);
        for (int step = 0; step < 3; ++step) {
            opt.begin_step();
            opt.update(0, std::span<float>(a.w), std::span<const float>(a.g));
            for (std::size_t i = 0; i < w.size(); ++i) {
                const double grad = a.g[i] + 0.01 * w[i];
                v[i] = 0.9 * v[i] + grad;
                w[i] -= 0.1 * (nesterov ? grad + 0.9 * v[i] : v[i]);
            }
        }
        for (std::size_t i = 0; i < w.size(); ++i) {
            REQUIRE(a.w[i] == Approx(w[i]).margin(1e-6));
        }
    }
}

TEST_CASE("adam's vectorised update matches the formula on every element, batch lanes and tail",
          "[optim][adam]") {
    for (const bool decoupled : {false, true}) {
        long_arrays a(4);
        adam<float> opt{
          {.learning_rate = 0.01, .weight_decay = 0.1, .decoupled_weight_decay = decoupled}};
        std::vector<double> w(a.w.begin(), a.w.end()), m(w.size(), 0.0), v(w.size(), 0.0);
        for (int t = 1; t <= 3; ++t) {
            opt.begin_step();
            opt.update(0, std::span<float>(a.w), std::span<const float>(a.g));
            for (std::size_t i = 0; i < w.size(); ++i) {
                double grad = a.g[i];
                if (decoupled) {
                    w[i] *= 1.0 - 0.01 * 0.1;
                } else {
                    grad += 0.1 * w[i];
                }
                m[i] = 0.9 * m[i] + 0.1 * grad;
                v[i] = 0.999 * v[i] + 0.001 * grad * grad;
                const double m_hat = m[i] / (1.0 - std::pow(0.9, t));
                const double v_hat = v[i] / (1.0 - std::pow(0.999, t));
                w[i] -= 0.01 * m_hat / (std::sqrt(v_hat) + 1e-8);
            }
        }
        for (std::size_t i = 0; i < w.size(); ++i) {
            REQUIRE(a.w[i] == Approx(w[i]).margin(1e-6));
        }
    }
}

TEST_CASE("update_and_measure reports the largest value written, and an overflow in a batch "
          "lane, in the tail or in the state",
          "[optim]") {
    // 1003 = 62 batches of 16 + 11: element 500 is in a batch on every SIMD width, 1002 in
    // the tail. Every weight moves by about lr = 1e38 (finite in float); only the one at
    // -3e38 leaves float's range.
    auto check = [](auto make_optimizer) {
        for (const std::size_t at : {std::size_t{500}, std::size_t{1002}}) {
            auto opt = make_optimizer();
            std::vector<float> w(1003, 0.5f), g(1003, 1.0f);
            opt.begin_step();
            const double largest =
              opt.update_and_measure(0, std::span<float>(w), std::span<const float>(g));
            // The largest of the weights and the state written, exactly.
            double expected = lightloop::testing::max_abs(w);
            for (const auto& slot : opt.state()) {
                expected = std::max(expected, lightloop::testing::max_abs(slot));
            }
            CHECK(largest == expected);
            std::fill(w.begin(), w.end(), 0.5f);
            w[at] = -3e38f;
            opt.begin_step();
            CHECK(std::isinf(
              opt.update_and_measure(0, std::span<float>(w), std::span<const float>(g))));
            CHECK(std::isinf(w[at]));
            CHECK(std::isfinite(w[at == 500 ? 1002 : 500]));
        }
    };
    check([] { return sgd<float>{{.learning_rate = 1e38}}; });
    check([] { return sgd<float>{{.learning_rate = 0.5e38, .momentum = 0.5}}; });
    check([] { return sgd<float>{{.learning_rate = 0.3e38, .momentum = 0.5, .nesterov = true}}; });
    // Adam without first-moment averaging: its bias correction lr / (1 - beta1^t) would
    // itself overflow for lr = 1e38.
    check([] { return adam<float>{{.learning_rate = 1e38, .beta1 = 0.0}}; });

    // Adam's second moment overflows ((1 - beta2) g^2 = 1e41) while the weights stay
    // finite: the state is watched too.
    adam<float> opt{{.learning_rate = 1e-3}};
    std::vector<float> w(1003, 0.5f), g(1003, 1.0f);
    g[1002] = 1e22f;
    opt.begin_step();
    CHECK(std::isinf(opt.update_and_measure(0, std::span<float>(w), std::span<const float>(g))));
    CHECK(std::isfinite(lightloop::testing::max_abs(w)));
}

TEST_CASE("update_bound bounds everything the next update writes", "[optim]") {
    // Random weights and gradients over several steps: the bound from max|w| and max|g|
    // holds for the largest value the update then writes, and is not loose by orders of
    // magnitude where the step is simple.
    auto check = [](auto opt, double tightest) {
        long_arrays a(9);
        for (int step = 0; step < 4; ++step) {
            for (auto& g : a.g) {
                g *= 1.5f; // growing gradients
            }
            const double w_max = lightloop::testing::max_abs(a.w);
            const double g_max = lightloop::testing::max_abs(a.g);
            const double bound = opt.update_bound(0, w_max, g_max);
            opt.begin_step();
            const double largest =
              opt.update_and_measure(0, std::span<float>(a.w), std::span<const float>(a.g));
            CHECK(largest <= bound);
            CHECK(largest >= tightest * bound);
        }
        CHECK(std::isinf(opt.update_bound(0, 1.0, std::numeric_limits<double>::infinity())));
    };
    check(sgd<float>{{.learning_rate = 0.1}}, 0.3);
    check(sgd<float>{{.learning_rate = 0.1, .momentum = 0.9, .weight_decay = 0.01}}, 0.1);
    check(sgd<float>{{.learning_rate = 0.1, .momentum = 0.9, .nesterov = true}}, 0.1);
    check(adam<float>{{.learning_rate = 0.01, .weight_decay = 0.1}}, 0.0);
    check(adam<float>{{.learning_rate = 0.01, .weight_decay = 0.1, .decoupled_weight_decay = true}},
          0.0);
}

// Layer-parallel training hands each slot's state from the rank that steps
// it to the others (distributed::dfa_layer_parallel::gather_state).
TEST_CASE("a slot's state adopted from another optimizer continues its trajectory", "[optim]") {
    auto check = [](auto make) {
        // `whole` steps slots 0 and 1; `part` only slot 1 (another process
        // steps slot 0), then takes slot 0's state from `whole`.
        auto whole = make();
        auto part = make();
        std::vector<float> w0{0.5f, -0.25f, 1.0f};
        std::vector<float> w1{0.1f, 0.2f};
        std::vector<float> p1 = w1;
        const auto step = [](auto& opt, std::size_t slot, std::vector<float>& w, float scale) {
            std::vector<float> g(w.size());
            for (std::size_t i = 0; i < g.size(); ++i) {
                g[i] = scale * (static_cast<float>(i) - 0.7f);
            }
            opt.update(slot, std::span<float>(w), std::span<const float>(g));
        };
        for (int s = 0; s < 3; ++s) {
            whole.begin_step();
            part.begin_step();
            step(whole, 0, w0, 1.0f + static_cast<float>(s));
            step(whole, 1, w1, 0.5f);
            step(part, 1, p1, 0.5f);
        }
        REQUIRE(part.state().size() == 2);
        CHECK(part.state()[0].empty());
        part.adopt_state(0, whole.state()[0]);
        CHECK(part.state() == whole.state());
        // The next step of slot 0 from the adopted state: the same bits, and
        // the bound the adopted state gives holds for what it writes.
        std::vector<float> q0 = w0;
        std::vector<float> g(w0.size(), -1.5f);
        const double bound = part.update_bound(0, lightloop::testing::max_abs(q0), 1.5);
        whole.begin_step();
        part.begin_step();
        whole.update(0, std::span<float>(w0), std::span<const float>(g));
        const double written =
          part.update_and_measure(0, std::span<float>(q0), std::span<const float>(g));
        CHECK(q0 == w0);
        CHECK(written <= bound);
        // A state whose length is no multiple of the optimizer's buffers.
        const std::size_t buffers = whole.state()[0].size() / w0.size();
        if (buffers > 1) {
            CHECK_THROWS_AS(part.adopt_state(0, std::vector<float>(buffers * 3 + 1)), shape_error);
        }
    };
    check([] { return sgd<float>{{.learning_rate = 0.1, .momentum = 0.9}}; });
    check([] { return adam<float>{{.learning_rate = 0.01}}; });
    using choice = optimizer_choice<sgd<float>, adam<float>>;
    check([] { return choice{adam<float>{{.learning_rate = 0.01, .weight_decay = 0.1}}}; });
}
