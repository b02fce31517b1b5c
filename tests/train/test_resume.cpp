#include <catch2/catch.hpp>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <numeric>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

#include "support/files.hpp"
#include "support/helpers.hpp"

using namespace lightloop;

namespace {

// DFA through the noisy optical device: its calibration and noise counter are
// state a resumed run must restore, beside the weights and the momentum.
using optical_net =
  network<dfa<optical<>>, softmax_cross_entropy, dense<tanh_act>, dense<tanh_act>, dense<identity>>;

optical_net make_net() {
    return optical_net(dfa<optical<>>{}, softmax_cross_entropy{}, 11, dense<tanh_act>{6, 32},
                       dense<tanh_act>{32, 32}, dense<identity>{32, 4});
}

sgd<float> make_opt() {
    return sgd<float>{{.learning_rate = 0.05, .momentum = 0.9}};
}

fit_options options_for(const std::filesystem::path& checkpoint, std::size_t epochs) {
    return {.epochs = epochs, .batch = 32, .seed = 4, .checkpoint = checkpoint, .resume = true};
}

} // namespace

TEST_CASE("a run killed with SIGKILL resumes from its checkpoint to the same bits",
          "[train][checkpoint][resume]") {
    lightloop::testing::scratch_dir dir("resume");
    const auto train = lightloop::testing::blobs_task(2);
    const auto test = lightloop::testing::blobs_task(3, 50);
    constexpr std::size_t epochs = 40;

    auto straight = make_net();
    auto straight_opt = make_opt();
    const auto straight_history =
      fit(straight, straight_opt, train, test, options_for(dir / "straight.ckpt", epochs));

    const auto checkpoint = dir / "killed.ckpt";
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        int code = 0;
        try {
            auto net = make_net();
            auto opt = make_opt();
            fit(net, opt, train, test, options_for(checkpoint, epochs));
        } catch (...) {
            code = 1;
        }
        ::_exit(code); // never back into the test runner
    }
    // Kill the child as soon as its first checkpoint exists: mid-epoch, or
    // in the middle of writing the next one.
    int status = 0;
    bool exited_early = false;
    while (!std::filesystem::exists(checkpoint)) {
        if (::waitpid(child, &status, WNOHANG) == child) {
            exited_early = true;
            break;
        }
        std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    REQUIRE_FALSE(exited_early);
    ::kill(child, SIGKILL);
    REQUIRE(::waitpid(child, &status, 0) == child);
    REQUIRE(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == SIGKILL);

    auto resumed = make_net();
    auto resumed_opt = make_opt();
    const auto history = fit(resumed, resumed_opt, train, test, options_for(checkpoint, epochs));
    CAPTURE(history.resumed_from_epoch);
    REQUIRE(history.resumed_from_epoch >= 1);
    REQUIRE(history.resumed_from_epoch < epochs); // the kill came before the end
    // Every epoch's record, those before the kill from the checkpoint, as the
    // uninterrupted run recorded them (timings aside).
    REQUIRE(history.epochs.size() == epochs);
    REQUIRE(straight_history.epochs.size() == epochs);
    for (std::size_t i = 0; i < epochs; ++i) {
        const auto& a = straight_history.epochs[i];
        const auto& b = history.epochs[i];
        CAPTURE(i);
        CHECK(b.epoch == i + 1);
        CHECK(b.train_loss == a.train_loss);
        CHECK(b.train_accuracy == a.train_accuracy);
        CHECK(b.test_loss == a.test_loss);
        CHECK(b.test_accuracy == a.test_accuracy);
        CHECK(b.learning_rate == a.learning_rate);
        CHECK(b.has_device);
        CHECK(b.device_frames == a.device_frames);
    }
    CHECK(lightloop::testing::parameters_of(straight) ==
          lightloop::testing::parameters_of(resumed));
    CHECK(resumed.steps() == straight.steps());
    CHECK(resumed_opt.state() == straight_opt.state());
    const auto a = straight.feedback().device().statistics();
    const auto b = resumed.feedback().device().statistics();
    CHECK(a.frames == b.frames);
    CHECK(a.pixels_read == b.pixels_read);
    CHECK(a.noise_energy == b.noise_energy);

    // A finished run resumes to no new epoch, with the whole record; a run
    // with another batch size is refused before anything is loaded.
    const auto again = fit(resumed, resumed_opt, train, test, options_for(checkpoint, epochs));
    CHECK(again.resumed_from_epoch == epochs);
    CHECK(again.epochs.size() == epochs);
    auto other = options_for(checkpoint, epochs);
    other.batch = 64;
    auto fresh = make_net();
    auto fresh_opt = make_opt();
    const auto initial = lightloop::testing::parameters_of(fresh);
    CHECK_THROWS_WITH(fit(fresh, fresh_opt, train, test, other),
                      Catch::Contains("written with seed 4 and batch 32"));
    CHECK(lightloop::testing::parameters_of(fresh) == initial);
    CHECK(fresh.steps() == 0);
    CHECK(fresh_opt.state().empty());
}

TEST_CASE("a resumed run's callbacks start from the records before the checkpoint",
          "[train][checkpoint][resume]") {
    lightloop::testing::scratch_dir dir("resume_callbacks");
    const auto train = lightloop::testing::blobs_task(2);
    const auto test = lightloop::testing::blobs_task(3, 50);

    // Uninterrupted: six epochs.
    auto straight = make_net();
    auto straight_opt = make_opt();
    early_stopping straight_stop(100);
    fit(straight, straight_opt, train, test, options_for(dir / "straight.ckpt", 6), straight_stop);

    // Three epochs, then resumed to six with fresh callbacks.
    const auto checkpoint = dir / "split.ckpt";
    {
        auto net = make_net();
        auto opt = make_opt();
        fit(net, opt, train, test, options_for(checkpoint, 3), json_log(dir / "split.json"));
    }
    auto net = make_net();
    auto opt = make_opt();
    early_stopping stop(100);
    json_log log(dir / "split.json");
    const auto history = fit(net, opt, train, test, options_for(checkpoint, 6), stop, log);
    CHECK(history.resumed_from_epoch == 3);
    // early_stopping replayed epochs 1-3 before seeing 4-6: the same best as
    // the uninterrupted run's, bit for bit.
    CHECK(stop.best() == straight_stop.best());
    // The JSON log holds all six epochs, not only the resumed three.
    std::ifstream in(dir / "split.json");
    const std::string text((std::istreambuf_iterator<char>(in)), {});
    for (int epoch = 1; epoch <= 6; ++epoch) {
        CHECK_THAT(text, Catch::Contains("{\"epoch\": " + std::to_string(epoch) + ","));
    }

    // Resuming the finished run replays all six without training.
    early_stopping replay(100);
    CHECK(fit(net, opt, train, test, options_for(checkpoint, 6), replay).resumed_from_epoch == 6);
    CHECK(replay.best() == straight_stop.best());
}

// A resume on other training data (a subset, one value changed) continued
// the checkpoint as though it were the interrupted run; the seed and batch
// size were the only things compared.
TEST_CASE("a resume on other training data is refused before anything is loaded",
          "[train][checkpoint][resume]") {
    lightloop::testing::scratch_dir dir("resume_other_data");
    const auto train = lightloop::testing::blobs_task(2);
    const std::size_t n = train.size();
    const auto test = lightloop::testing::blobs_task(3, 50);
    const auto checkpoint = dir / "run.ckpt";
    {
        auto net = make_net();
        auto opt = make_opt();
        fit(net, opt, train, test, options_for(checkpoint, 1));
    }
    std::vector<std::size_t> first_rows(n - 1);
    std::iota(first_rows.begin(), first_rows.end(), std::size_t{0});
    const auto fewer = select_rows(train, std::span<const std::size_t>(first_rows));
    auto changed = train;
    changed.inputs(123, 4) += 0.5f;
    auto net = make_net();
    auto opt = make_opt();
    const matrix<float> before = net.layer<0>().weights();
    const std::string other =
      "the checkpoint's run trained on other data (" + std::to_string(n) + " samples of 6 inputs";
    CHECK_THROWS_WITH(
      fit(net, opt, fewer, test, options_for(checkpoint, 2)),
      Catch::Contains(other) &&
        Catch::Contains("than this one (" + std::to_string(n - 1) + " samples of 6 inputs") &&
        Catch::Contains("nothing was loaded"));
    CHECK_THROWS_AS(fit(net, opt, changed, test, options_for(checkpoint, 2)), data_error);
    CHECK_THROWS_WITH(
      fit(net, opt, changed, test, options_for(checkpoint, 2)),
      Catch::Contains(other) &&
        Catch::Contains("than this one (" + std::to_string(n) + " samples of 6 inputs"));
    CHECK(net.steps() == 0);
    CHECK(lightloop::testing::identical(net.layer<0>().weights(), before));
    CHECK(opt.state().empty());
    // The same data resumes.
    CHECK(fit(net, opt, train, test, options_for(checkpoint, 2)).resumed_from_epoch == 1);
    CHECK(net.steps() == 2 * ((n + 31) / 32));
}

namespace {

/// Writes a NaN into the projection from the fail_at-th call on.
struct nan_from {
    std::size_t fail_at = 0;
    std::size_t calls = 0;
    template <class M>
    void operator()(M& y) {
        if (calls++ >= fail_at) {
            y(0, 3) = std::numeric_limits<typename M::value_type>::quiet_NaN();
        }
    }
};
using failing_device = lightloop::testing::altered_device<nan_from>;

} // namespace

TEST_CASE("divergence stops training at its step, names the layer, and keeps the last good "
          "checkpoint",
          "[train][checkpoint][divergence]") {
    lightloop::testing::scratch_dir dir("divergence");
    const auto train = lightloop::testing::blobs_task(2);
    const auto test = lightloop::testing::blobs_task(3, 50);
    // 1200 samples in batches of 32: 38 steps an epoch; step 45 is in epoch 2.
    auto net = network(dfa<failing_device>{failing_device{{}, {45}}}, softmax_cross_entropy{}, 5,
                       dense<tanh_act>{6, 16}, dense<identity>{16, 4});
    sgd<float> opt{{.learning_rate = 0.05, .momentum = 0.9}};
    const fit_options options{.epochs = 5, .batch = 32, .seed = 1, .checkpoint = dir / "run.ckpt"};
    CHECK_THROWS_WITH(fit(net, opt, train, test, options),
                      Catch::Contains("feedback signal of layer 0 (dense 6 -> 16) is not finite "
                                      "at step 45; weights were not updated"));
    CHECK(net.steps() == 45);
    CHECK(lightloop::testing::all_finite(net.layer<0>().weights()));

    // The checkpoint is epoch 1's, equal to a clean one-epoch run.
    auto clean = network(dfa<failing_device>{failing_device{{}, {1000}}}, softmax_cross_entropy{},
                         5, dense<tanh_act>{6, 16}, dense<identity>{16, 4});
    sgd<float> clean_opt{{.learning_rate = 0.05, .momentum = 0.9}};
    fit(clean, clean_opt, train, test, {.epochs = 1, .batch = 32, .seed = 1});
    auto restored = network(dfa<failing_device>{}, softmax_cross_entropy{}, 5,
                            dense<tanh_act>{6, 16}, dense<identity>{16, 4});
    sgd<float> restored_opt{{.learning_rate = 0.05, .momentum = 0.9}};
    CHECK(load_checkpoint(restored, restored_opt, dir / "run.ckpt").epoch == 1);
    CHECK(lightloop::testing::identical(restored.layer<0>().weights(), clean.layer<0>().weights()));

    // Weights that overflow in an update are caught at that step, by layer.
    auto blowup =
      network(dfa<>{}, softmax_cross_entropy{}, 5, dense<tanh_act>{6, 16}, dense<identity>{16, 4});
    // A learning rate of 1e39 is finite in double, infinite in float.
    sgd<float> huge{{.learning_rate = 1e39}};
    const matrix<float> xb = train.inputs;
    const matrix<float> yb = train.targets;
    CHECK_THROWS_WITH(
      blowup.train_step(xb, yb, huge),
      Catch::Contains("weights of layer 0 (dense 6 -> 16) is not finite at step 0"));
}
