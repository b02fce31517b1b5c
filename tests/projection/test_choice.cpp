#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <vector>

#include "support/files.hpp"
#include "support/helpers.hpp"

using namespace lightloop;

namespace {

using holographic_device = optical<>;
using intensity_device = optical<intensity_readout>;
using optical_choice = projection_choice<holographic_device, intensity_device>;

// The optional members offered: those every alternative has (statistics,
// feedback_matrix, configure_slice), and those any alternative has
// (set_noise_stream; save_state and load_state always).
template <class D>
constexpr bool has_statistics = requires(const D d) {
    d.statistics();
};
template <class D>
constexpr bool has_feedback_matrix = requires(D d) {
    d.template feedback_matrix<float>();
};
template <class D>
constexpr bool has_slices = requires(D d) {
    d.configure_slice(4, 8, 1, 0, 4);
};
template <class D>
constexpr bool has_noise_stream = requires(D d) {
    d.set_noise_stream(1);
};

static_assert(detail::distinct_types<dense_gaussian, dense_uniform>() &&
              !detail::distinct_types<dense_gaussian, dense_uniform, dense_gaussian>());
static_assert(projection_device<optical_choice> && projection_device<optical_choice, double>);
static_assert(has_statistics<optical_choice> && has_slices<optical_choice> &&
              has_noise_stream<optical_choice> && !has_feedback_matrix<optical_choice>);
using dense_choice = projection_choice<dense_gaussian, dense_uniform>;
static_assert(has_feedback_matrix<dense_choice> && has_slices<dense_choice> &&
              !has_statistics<dense_choice> && !has_noise_stream<dense_choice>);
using mixed_choice = projection_choice<dense_gaussian, holographic_device>;
static_assert(!has_statistics<mixed_choice> && !has_feedback_matrix<mixed_choice> &&
              has_slices<mixed_choice> && has_noise_stream<mixed_choice>);

template <class Device>
auto small_network(Device device) {
    return network{dfa<Device>{std::move(device)}, softmax_cross_entropy{}, 21,
                   dense<tanh_act>{6, 32},         dense<tanh_act>{32, 32}, dense<identity>{32, 4}};
}

} // namespace

// The choice dispatches each call to the held device, whose own projection
// runs: the same steps to the bit as the device alone, camera noise and
// frame counts included, for either alternative held. The two alternatives
// train differently, so holding the wrong one would show.
TEST_CASE("DFA through a projection_choice takes the held device's own steps",
          "[projection][choice]") {
    const auto data = lightloop::testing::blobs_task(2, 60);
    auto train = [&](auto device) {
        auto net = small_network(std::move(device));
        sgd opt{{.learning_rate = 0.05, .momentum = 0.9}};
        lightloop::testing::train_epochs(net, opt, data, 32, 2, 5);
        return std::pair{lightloop::testing::parameters_of(net),
                         net.feedback().device().statistics()};
    };
    const auto [holographic, holographic_stats] = train(holographic_device{});
    const auto [intensity, intensity_stats] = train(intensity_device{});
    const auto [chose_holographic, chose_holographic_stats] =
      train(optical_choice{holographic_device{}});
    const auto [chose_intensity, chose_intensity_stats] = train(optical_choice{intensity_device{}});
    CHECK(chose_holographic == holographic);
    CHECK(chose_intensity == intensity);
    CHECK(holographic != intensity);
    CHECK(chose_holographic_stats.frames == holographic_stats.frames);
    CHECK(chose_intensity_stats.frames == intensity_stats.frames);
    CHECK(holographic_stats.frames != intensity_stats.frames); // two exposures a frame, or one
    CHECK(optical_choice{intensity_device{}}.index() == 1);
    CHECK(optical_choice{intensity_device{}}.describe() == describe_object(intensity_device{}));
    CHECK(optical_choice{}.index() == 0);
}

// The signature records the held device's description and the state is the
// held device's, so a checkpoint moves between the choice and the device
// alone both ways, and the next steps (camera noise included) are the same.
TEST_CASE("a checkpoint saved through a projection_choice resumes with the device alone",
          "[projection][choice][checkpoint]") {
    const lightloop::testing::scratch_dir dir("choice");
    const auto path = dir / "choice.llck";
    const auto data = lightloop::testing::blobs_task(2, 60);
    auto chosen = small_network(optical_choice{holographic_device{}});
    sgd opt{{.learning_rate = 0.05, .momentum = 0.9}};
    lightloop::testing::train_epochs(chosen, opt, data, 32, 1, 5);
    save_checkpoint(chosen, opt, path, 1);

    auto alone = small_network(holographic_device{});
    sgd alone_opt{{.learning_rate = 0.05, .momentum = 0.9}};
    load_checkpoint(alone, alone_opt, path);
    CHECK(lightloop::testing::parameters_of(alone) == lightloop::testing::parameters_of(chosen));
    CHECK(alone.feedback().device().statistics().frames ==
          chosen.feedback().device().statistics().frames);
    lightloop::testing::train_epochs(chosen, opt, data, 32, 1, 6);
    lightloop::testing::train_epochs(alone, alone_opt, data, 32, 1, 6);
    CHECK(lightloop::testing::parameters_of(alone) == lightloop::testing::parameters_of(chosen));

    // Back into a choice: holding the same device it loads; holding the
    // other, the signature names the difference.
    save_checkpoint(alone, alone_opt, path, 2);
    auto back = small_network(optical_choice{holographic_device{}});
    sgd back_opt{{.learning_rate = 0.05, .momentum = 0.9}};
    load_checkpoint(back, back_opt, path);
    CHECK(lightloop::testing::parameters_of(back) == lightloop::testing::parameters_of(alone));
    auto other = small_network(optical_choice{intensity_device{}});
    CHECK_THROWS_WITH(load_checkpoint(other, back_opt, path), Catch::Contains("intensity"));
}

// The members offered on condition reach the held device: a dense choice's
// B is the held device's (the projection is x B^T against it, and the fit
// loop's weight alignment reads it); a noise stream set through a choice is
// the held optical device's.
TEST_CASE("a projection_choice's optional members reach the held device", "[projection][choice]") {
    dense_choice uniform{dense_uniform{}};
    dense_uniform alone;
    uniform.configure(5, 40, 9);
    alone.configure(5, 40, 9);
    CHECK(lightloop::testing::identical(uniform.feedback_matrix<float>(),
                                        alone.feedback_matrix<float>()));
    CHECK(uniform.input_size() == 5);
    CHECK(uniform.output_size() == 40);
    const auto x = lightloop::testing::random_matrix<float>(7, 5, 3);
    auto y = matrix<float>::from_shape({7, 40});
    uniform.project(x, y);
    const auto expected =
      lightloop::testing::naive_product(x, false, alone.feedback_matrix<float>(), true);
    CHECK(lightloop::testing::max_abs_diff(y, expected) < 1e-5);

    // fit's alignment probe: the weight alignment needs B (NaN without it).
    const auto train = lightloop::testing::blobs_task(2, 60);
    const auto test = lightloop::testing::blobs_task(3, 30);
    auto fit_alignment = [&](auto device) {
        auto net = small_network(std::move(device));
        sgd opt{{.learning_rate = 0.05, .momentum = 0.9}};
        const auto history =
          fit(net, opt, train, test, fit_options{.epochs = 1, .batch = 32, .alignment_probe = 64});
        return history.epochs.back().weight_alignment;
    };
    const auto through_choice = fit_alignment(dense_choice{dense_uniform{}});
    REQUIRE(through_choice.size() == 2);
    CHECK(std::isfinite(through_choice[0]));
    CHECK(through_choice == fit_alignment(dense_uniform{}));

    // A noise stream through a choice that also offers a dense device.
    const auto e = lightloop::testing::random_matrix<float>(6, 4, 11);
    auto project = [&](auto& device, std::uint64_t stream) {
        device.set_noise_stream(stream);
        device.configure(4, 48, 13);
        auto out = matrix<float>::from_shape({6, 48});
        device.project(e, out);
        return out;
    };
    mixed_choice chosen{holographic_device{}};
    holographic_device own;
    const auto stream_3 = project(chosen, 3);
    CHECK(lightloop::testing::identical(stream_3, project(own, 3)));
    CHECK(!lightloop::testing::identical(stream_3, project(own, 0)));

    // A slice through a choice (layer-parallel DFA): the held device's slice,
    // pixels [16, 40) of 48, and not the other alternative's.
    auto slice = [&](auto device) {
        device.configure_slice(4, 48, 13, 16, 24);
        auto out = matrix<float>::from_shape({6, 24});
        device.project(e, out);
        return out;
    };
    const auto chosen_slice = slice(optical_choice{intensity_device{}});
    CHECK(lightloop::testing::identical(chosen_slice, slice(intensity_device{})));
    CHECK(!lightloop::testing::identical(chosen_slice, slice(holographic_device{})));
}
