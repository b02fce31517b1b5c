#include <catch2/catch.hpp>

#include "support/helpers.hpp"

using namespace lightloop;

namespace {
// The synthetic task and network of test_training.cpp, trained with a given
// feedback object.
template <class Feedback>
std::pair<double, Feedback> optical_train(Feedback feedback, std::uint64_t seed) {
    const auto train = lightloop::testing::blobs_task(2);
    const auto test = lightloop::testing::blobs_task(3);
    network net{std::move(feedback),    softmax_cross_entropy{}, seed,
                dense<tanh_act>{6, 64}, dense<tanh_act>{64, 64}, dense<identity>{64, 4}};
    sgd opt{{.learning_rate = 0.05, .momentum = 0.9}};
    lightloop::testing::train_epochs(net, opt, train, 32, 30, seed + 1);
    return {evaluate_accuracy(net, test.inputs, test.targets), net.feedback()};
}
} // namespace

// Same task, network, learning rate and seeds for every device (the optical
// output is scaled to the dense device's normalisation, so one learning rate
// serves all). Holographic DFA must stay within 3 points of dense DFA on the
// mean of four seeds: ternarization and camera noise cost about 0.6 here
// (measured, seeds 7-10: dense 0.935/0.913/0.924/0.931, holographic 0.930/
// 0.911/0.923/0.924; a single seed swings by 2, and with the medium drawn
// by the earlier sequential generator the cost was 1.5). The intensity readout is a non-linear
// projection; it only has to beat the linear classifier (~0.6) by a clear
// margin (measured 0.92-0.93).
TEST_CASE("DFA through the optical devices trains like DFA through the dense device",
          "[train][optical]") {
    double dense_mean = 0;
    double holographic_mean = 0;
    for (const std::uint64_t seed : {7ULL, 8ULL, 9ULL, 10ULL}) {
        CAPTURE(seed);
        const double dense_acc = optical_train(dfa<dense_gaussian>{}, seed).first;
        auto [holographic_acc, holographic] =
          optical_train(dfa<optical<>>{optical<>(holographic_readout<>{}, camera{},
                                                 ternary_encoder{}, {.track_snr = true})},
                        seed);
        const double intensity_acc = optical_train(dfa<optical<intensity_readout>>{}, seed).first;
        const auto stats = holographic.device().statistics();
        CAPTURE(dense_acc, holographic_acc, intensity_acc, stats.snr_db(),
                stats.saturated_fraction());
        dense_mean += dense_acc / 4;
        holographic_mean += holographic_acc / 4;
        CHECK(intensity_acc > 0.75);
        // 30 epochs x 1200 samples, at most 2 patterns x 2 exposures each.
        CHECK(stats.projections == 30 * 1200);
        CHECK(stats.frames <= 4 * 30 * 1200 + 16);
        CHECK(stats.pixels_read == stats.frames * 128); // 128 pixels: the hidden widths
        CHECK(stats.saturated_fraction() < 1e-3);
        CHECK(stats.snr_db() > 15.0);
    }
    CAPTURE(dense_mean, holographic_mean);
    CHECK(holographic_mean > dense_mean - 0.03);
}

TEST_CASE("DRTP trains through the optical device", "[train][optical]") {
    const double acc = optical_train(drtp<optical<>>{}, 7).first;
    CAPTURE(acc);
    CHECK(acc > 0.70); // DRTP's dense floor (test_training.cpp)
}

// The structured medium (Hadamard transforms and random phases, not i.i.d.)
// must train as the i.i.d. medium does: holographic DFA within 0.5 points on
// the mean of eight seeds (measured, seeds 7-14: i.i.d. 0.9190, structured
// 0.9189; single seeds differ by up to 1.6 points either way). Not tagged
// [train]: the release preset's second pass of the training tests on two
// threads would repeat its sixteen runs at five times the cost (the
// structured medium's threads are tested in test_optical.cpp).
TEST_CASE("holographic DFA through the structured medium trains as through the i.i.d. medium",
          "[optical][medium][accuracy]") {
    using structured_opu =
      optical<holographic_readout<off_axis_reference>, camera, ternary_encoder, structured_medium>;
    double iid_mean = 0;
    double structured_mean = 0;
    for (std::uint64_t seed = 7; seed < 15; ++seed) {
        const double iid = optical_train(dfa<optical<>>{}, seed).first;
        const double structured = optical_train(dfa<structured_opu>{}, seed).first;
        CAPTURE(seed, iid, structured);
        CHECK(structured > 0.9); // each seed trains
        iid_mean += iid / 8;
        structured_mean += structured / 8;
    }
    CAPTURE(iid_mean, structured_mean);
    CHECK(std::abs(structured_mean - iid_mean) < 0.005);
}
