#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <span>
#include <tuple>
#include <vector>

#include "support/files.hpp"
#include "support/helpers.hpp"

using namespace lightloop;

namespace {

using picked_method =
  feedback_choice<backprop, feedback_alignment, dfa<dense_gaussian>, dfa<optical<>>, shallow>;

/// A method written for widths only (configure(widths, seed)), which cannot
/// skip a layer without parameters.
struct widths_only_method {
    static constexpr bool trains_hidden_layers = true;
    void configure(std::span<const std::size_t>, std::uint64_t) {}
    template <class... Layers, scalar T>
    void backward(std::tuple<Layers...>&, const matrix<T>&) {}
};

static_assert(feedback_method<picked_method>);
static_assert(std::default_initializable<picked_method>);
static_assert(feedback_method<feedback_choice<widths_only_method, backprop>>);
static_assert(detail::is_choice<picked_method> && !detail::is_choice<backprop>);

template <class Method>
auto method_network(Method method) {
    return network{std::move(method),      softmax_cross_entropy{}, 21,
                   dense<tanh_act>{6, 32}, dense<tanh_act>{32, 32}, dense<identity>{32, 4}};
}

/// Equal entry for entry, NaN equal to NaN (an alignment a method does not
/// have is NaN).
bool same_or_both_nan(const std::vector<double>& a, const std::vector<double>& b) {
    if (a.size() != b.size()) {
        return false;
    }
    for (std::size_t i = 0; i < a.size(); ++i) {
        if (!(a[i] == b[i] || (std::isnan(a[i]) && std::isnan(b[i])))) {
            return false;
        }
    }
    return true;
}

struct method_run {
    std::vector<float> parameters;
    fit_history history;
};

template <class Method>
method_run fit_with_probes(Method method) {
    const auto train = lightloop::testing::blobs_task(2, 60);
    const auto test = lightloop::testing::blobs_task(3, 20);
    auto net = method_network(std::move(method));
    sgd opt{{.learning_rate = 0.05, .momentum = 0.9}};
    fit_history history =
      fit(net, opt, train, test, {.epochs = 2, .batch = 32, .seed = 5, .alignment_probe = 40});
    return {lightloop::testing::parameters_of(net), std::move(history)};
}

} // namespace

// The choice dispatches configure and backward to the held method, and the
// network asks it whether the hidden layers train: the same steps to the bit
// as the method alone, for every alternative (backprop, feedback alignment,
// DFA on a dense and on an optical device, shallow). fit's records through
// the choice are the method's own: the device's frames (an optical device),
// the weight alignment (feedback alignment's B against W, DFA's dense B
// against the product of the weights above) and the gradient alignment.
TEST_CASE("a network through a feedback_choice takes the held method's own steps",
          "[feedback][choice]") {
    const auto check = [](auto method, const char* name) {
        INFO(name);
        const method_run alone = fit_with_probes(method);
        const method_run chosen = fit_with_probes(picked_method{method});
        CHECK(chosen.parameters == alone.parameters);
        REQUIRE(chosen.history.epochs.size() == alone.history.epochs.size());
        for (std::size_t e = 0; e < alone.history.epochs.size(); ++e) {
            const epoch_record& a = alone.history.epochs[e];
            const epoch_record& c = chosen.history.epochs[e];
            CHECK(c.train_loss == a.train_loss);
            CHECK(c.test_accuracy == a.test_accuracy);
            CHECK(c.has_device == a.has_device);
            CHECK(c.device_frames == a.device_frames);
            CHECK(same_or_both_nan(c.alignment_mean, a.alignment_mean));
            CHECK(same_or_both_nan(c.weight_alignment, a.weight_alignment));
        }
        return chosen;
    };
    const method_run bp = check(backprop{}, "backprop");
    const method_run fa = check(feedback_alignment{}, "feedback alignment");
    const method_run dense = check(dfa<dense_gaussian>{}, "dfa dense");
    const method_run optical_run = check(dfa<optical<>>{}, "dfa optical");
    const method_run frozen = check(shallow{}, "shallow");

    // What the records hold, so that the comparisons above compare something.
    const epoch_record& last_fa = fa.history.epochs.back();
    CHECK(std::isfinite(last_fa.weight_alignment.at(0)));
    CHECK(std::isfinite(dense.history.epochs.back().weight_alignment.at(0)));
    CHECK(optical_run.history.epochs.back().has_device);
    CHECK(optical_run.history.epochs.back().device_frames > 0);
    CHECK(std::isfinite(last_fa.alignment_mean.at(0)));
    CHECK(bp.parameters != fa.parameters);
    CHECK(fa.parameters != dense.parameters);
    // Shallow through the choice freezes the hidden layers: they keep their
    // initial weights (the network's layers before any step).
    const auto initial = lightloop::testing::parameters_of(method_network(shallow{}));
    const std::size_t hidden_count = 6 * 32 + 32 + 32 * 32 + 32;
    CHECK(std::vector<float>(frozen.parameters.begin(), frozen.parameters.begin() + hidden_count) ==
          std::vector<float>(initial.begin(), initial.begin() + hidden_count));
    CHECK(frozen.parameters != initial);
}

TEST_CASE("a network asks a feedback_choice which layers train", "[feedback][choice]") {
    auto frozen = method_network(picked_method{shallow{}});
    CHECK_FALSE(frozen.trains_hidden_layers());
    CHECK_FALSE(frozen.trains_layer(0));
    CHECK_FALSE(frozen.trains_layer(1));
    CHECK(frozen.trains_layer(2));
    auto trained = method_network(picked_method{backprop{}});
    CHECK(trained.trains_hidden_layers());
    CHECK(trained.trains_layer(0));
    CHECK(trained.feedback().index() == 0);
    CHECK(frozen.feedback().index() == 4);
    CHECK(frozen.feedback().get_if<shallow>() != nullptr);
    CHECK(frozen.feedback().get_if<backprop>() == nullptr);
    CHECK(describe_object(frozen.feedback()) == describe_object(shallow{}));
    CHECK(picked_method{}.index() == 0);
}

// The signature records the held method's description and the state is the
// held method's (an optical device's calibration and noise counter), so a
// checkpoint moves between the choice and the method alone both ways, and
// the next steps are the same; a choice holding another method refuses it.
TEST_CASE("a checkpoint saved through a feedback_choice resumes with the method alone",
          "[feedback][choice][checkpoint]") {
    const lightloop::testing::scratch_dir dir("feedback_choice");
    const auto path = dir / "choice.llck";
    const auto data = lightloop::testing::blobs_task(2, 60);
    auto chosen = method_network(picked_method{dfa<optical<>>{}});
    sgd opt{{.learning_rate = 0.05, .momentum = 0.9}};
    lightloop::testing::train_epochs(chosen, opt, data, 32, 1, 5);
    save_checkpoint(chosen, opt, path, 1);

    auto alone = method_network(dfa<optical<>>{});
    sgd alone_opt{{.learning_rate = 0.05, .momentum = 0.9}};
    load_checkpoint(alone, alone_opt, path);
    CHECK(lightloop::testing::parameters_of(alone) == lightloop::testing::parameters_of(chosen));
    lightloop::testing::train_epochs(chosen, opt, data, 32, 1, 6);
    lightloop::testing::train_epochs(alone, alone_opt, data, 32, 1, 6);
    CHECK(lightloop::testing::parameters_of(alone) == lightloop::testing::parameters_of(chosen));
    CHECK(alone.feedback().device().statistics().frames ==
          chosen.feedback().get_if<dfa<optical<>>>()->device().statistics().frames);

    save_checkpoint(alone, alone_opt, path, 2);
    auto back = method_network(picked_method{dfa<optical<>>{}});
    sgd back_opt{{.learning_rate = 0.05, .momentum = 0.9}};
    load_checkpoint(back, back_opt, path);
    CHECK(lightloop::testing::parameters_of(back) == lightloop::testing::parameters_of(alone));
    auto other = method_network(picked_method{backprop{}});
    CHECK_THROWS_WITH(load_checkpoint(other, back_opt, path), Catch::Contains("backprop"));
}

// A method written for widths only serves, through the choice, a network
// whose layers all have parameters, and is refused by name for one with a
// layer without (the network alone refuses it when compiled).
TEST_CASE("a feedback_choice refuses a widths-only method for a layer without parameters",
          "[feedback][choice]") {
    using choice = feedback_choice<backprop, widths_only_method>;
    CHECK_NOTHROW(method_network(choice{widths_only_method{}}));
    auto with_flatten = [](choice method) {
        return network{std::move(method),     softmax_cross_entropy{}, 3,
                       dense<tanh_act>{6, 8}, flatten<>({8, 1, 1}),    dense<identity>{8, 4}};
    };
    CHECK_NOTHROW(with_flatten(choice{backprop{}}));
    CHECK_THROWS_WITH(with_flatten(choice{widths_only_method{}}),
                      Catch::Contains("configure(widths, seed) only") &&
                        Catch::Contains("layer 1"));
}

// visit_method reaches the method a choice holds, through a choice inside a
// choice too, and a method that is no choice is itself.
TEST_CASE("visit_method reaches the held method", "[feedback][choice]") {
    dfa<dense_gaussian> plain;
    CHECK(visit_method(plain, [&](auto& m) { return static_cast<void*>(&m); }) ==
          static_cast<void*>(&plain));
    using inner = feedback_choice<backprop, dfa<dense_gaussian>>;
    feedback_choice<shallow, inner> nested{inner{dfa<dense_gaussian>{}}};
    const bool reached = visit_method(nested, [](auto& m) {
        return std::is_same_v<std::remove_cvref_t<decltype(m)>, dfa<dense_gaussian>>;
    });
    CHECK(reached);
    CHECK(nested.trains_hidden_layers());
    CHECK(describe_object(nested) == describe_object(dfa<dense_gaussian>{}));
}
