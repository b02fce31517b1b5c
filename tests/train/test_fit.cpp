#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>

#include "support/files.hpp"
#include "support/helpers.hpp"

using namespace lightloop;

namespace {
std::string file_text(const std::filesystem::path& path) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

/// Stops after `after` epochs.
struct stop_after {
    std::size_t after;
    bool on_epoch_end(const epoch_record& r) const { return r.epoch >= after; }
};

/// Records the learning rate of every batch.
struct rate_recorder {
    std::vector<double> rates;
    void on_batch_end(const batch_info& b) { rates.push_back(b.learning_rate); }
};
} // namespace

TEST_CASE("fit trains, evaluates every epoch and feeds its callbacks", "[train][fit]") {
    lightloop::testing::scratch_dir dir("fit");
    const auto train = lightloop::testing::blobs_task(2);
    const auto test = lightloop::testing::blobs_task(3);
    auto net = make_network<dfa<>, softmax_cross_entropy>(
      7, dense<tanh_act>{6, 64}, dense<tanh_act>{64, 64}, dense<identity>{64, 4});
    sgd opt{{.learning_rate = 0.05, .momentum = 0.9}};
    std::FILE* progress = std::tmpfile();
    const auto history =
      fit(net, opt, train, test, {.epochs = 3, .batch = 32, .seed = 1, .alignment_probe = 64},
          progress_bar("dfa", progress).terminal(false), csv_log(dir / "log.csv", "dfa"),
          json_log(dir / "log.json"), checkpoint_every_epoch(dir / "net.ckpt"));
    REQUIRE(history.epochs.size() == 3);
    CHECK_FALSE(history.stopped_early);
    const auto& last = history.epochs.back();
    // The reported test accuracy is the network's on the test set.
    CHECK(last.test_accuracy == Approx(evaluate_accuracy(net, test.inputs, test.targets)));
    CHECK(last.test_accuracy > 0.7); // chance 0.25, linear ~0.6; 0.93 after 30 epochs
    CHECK(history.epochs.front().train_loss > last.train_loss);
    REQUIRE(last.alignment_mean.size() == 2);
    CHECK(last.alignment_mean[0] > 0.0); // DFA aligns: positive cosine with backprop
    CHECK(last.alignment_mean[0] <= 1.0);
    REQUIRE(last.weight_alignment.size() == 2);
    CHECK(std::isfinite(last.weight_alignment[0]));

    std::rewind(progress);
    char line[512];
    std::string text;
    while (std::fgets(line, sizeof line, progress) != nullptr) {
        text += line;
    }
    std::fclose(progress);
    CHECK_THAT(text, Catch::Contains("dfa epoch 1/3 ") && Catch::Contains("samples/s") &&
                       Catch::Contains("ETA") && Catch::Contains("dfa epoch 3/3  train loss"));
    CHECK(text.find('\r') == std::string::npos); // plain lines, not a redrawn bar

    const auto csv = file_text(dir / "log.csv");
    CHECK(std::count(csv.begin(), csv.end(), '\n') == 4); // header and 3 epochs
    CHECK_THAT(csv, Catch::StartsWith("run,epoch,learning_rate") && Catch::Contains("\ndfa,3,"));
    const auto json = file_text(dir / "log.json");
    CHECK_THAT(json, Catch::StartsWith("[\n  {\"epoch\": 1,") && Catch::EndsWith("}\n]\n"));
    CHECK(std::filesystem::exists(dir / "net.ckpt"));
    CHECK_FALSE(std::filesystem::exists(lightloop::detail::own_temporary_path(dir / "net.ckpt")));
}

TEST_CASE("a callback returning true stops training early", "[train][fit]") {
    const auto data = lightloop::testing::blobs_task(2, 20);
    auto net = make_network<backprop, softmax_cross_entropy>(1, dense<identity>{6, 4});
    sgd opt{0.01};
    const auto history = fit(net, opt, data, data, {.epochs = 10, .batch = 16}, stop_after{2});
    CHECK(history.epochs.size() == 2);
    CHECK(history.stopped_early);
}

TEST_CASE("early stopping waits `patience` epochs without improvement", "[train][fit]") {
    early_stopping stopper(2, 0.01);
    epoch_record r;
    r.test_loss = 1.0;
    CHECK_FALSE(stopper.on_epoch_end(r));
    r.test_loss = 0.995; // not better by more than 0.01
    CHECK_FALSE(stopper.on_epoch_end(r));
    r.test_loss = 0.5; // better: the count restarts
    CHECK_FALSE(stopper.on_epoch_end(r));
    r.test_loss = 0.6;
    CHECK_FALSE(stopper.on_epoch_end(r));
    r.test_loss = 0.7;
    CHECK(stopper.on_epoch_end(r));
    CHECK(stopper.best() == 0.5);
}

TEST_CASE("learning-rate schedules follow their formulas inside fit", "[train][schedule]") {
    CHECK(constant_schedule{}.learning_rate(0.1, 3.5, 10) == 0.1);
    CHECK(step_schedule{2, 0.5}.learning_rate(0.1, 3.9, 10) == Approx(0.05));
    CHECK(step_schedule{2, 0.5}.learning_rate(0.1, 4.0, 10) == Approx(0.025));
    // Refused at the first epoch, not at the drop where the rate would
    // become infinite.
    CHECK_THROWS_WITH(
      (step_schedule{2, std::numeric_limits<double>::infinity()}.learning_rate(0.1, 0.0, 10)),
      "lightloop::step_schedule: needs every > 0 and a finite gamma > 0, got every 2, gamma inf");
    // Cosine: base at 0, the midpoint of base and floor half-way, floor at the end.
    const cosine_schedule cosine{0.1};
    CHECK(cosine.learning_rate(1.0, 0.0, 4) == Approx(1.0));
    CHECK(cosine.learning_rate(1.0, 2.0, 4) == Approx(0.55));
    CHECK(cosine.learning_rate(1.0, 4.0, 4) == Approx(0.1));

    const auto data = lightloop::testing::blobs_task(2, 16); // 64 samples: 4 batches of 16
    auto net = make_network<backprop, softmax_cross_entropy>(1, dense<identity>{6, 4});
    sgd opt{0.2};
    rate_recorder rates;
    fit(net, opt, data, data, {.epochs = 2, .batch = 16}, step_schedule{1, 0.5}, rates);
    CHECK(rates.rates == std::vector<double>{0.2, 0.2, 0.2, 0.2, 0.1, 0.1, 0.1, 0.1});
    CHECK(opt.learning_rate() == 0.2); // restored after fit
}

TEST_CASE("evaluate averages loss and accuracy over its batches", "[train][fit]") {
    const auto data = lightloop::testing::blobs_task(2, 25);
    auto net = make_network<backprop, softmax_cross_entropy>(3, dense<tanh_act>{6, 8},
                                                             dense<identity>{8, 4});
    const auto whole = evaluate(net, data, 1000);
    const auto pieces = evaluate(net, data, 7); // 100 rows in uneven batches
    CHECK(pieces.loss == Approx(whole.loss).epsilon(1e-6));
    CHECK(pieces.accuracy == whole.accuracy);
    CHECK(whole.loss == Approx(net.loss(data.inputs, data.targets)).epsilon(1e-6));
    CHECK(whole.accuracy == evaluate_accuracy(net, data.inputs, data.targets));
}

TEST_CASE("fit refuses data that does not fit the network", "[train][fit]") {
    const auto data = lightloop::testing::blobs_task(2, 10);
    auto net = make_network<backprop, softmax_cross_entropy>(1, dense<identity>{5, 4});
    sgd opt{0.1};
    CHECK_THROWS_WITH(fit(net, opt, data, data, {.epochs = 1}),
                      Catch::Contains("training data is 6 -> 4 but the network is 5 -> 4"));
}

TEST_CASE("fit refuses data whose parts disagree or that holds a value that is not finite",
          "[train][fit]") {
    const auto data = lightloop::testing::blobs_task(2, 25);
    auto net = make_network<backprop, softmax_cross_entropy>(1, dense<tanh_act>{6, 8},
                                                             dense<identity>{8, 4});
    sgd opt{0.1};
    const matrix<float> before = net.layer<0>().weights();
    const auto refuses = [&](const labelled_data<float>& train, const labelled_data<float>& test,
                             const std::string& message) {
        CAPTURE(message);
        CHECK_THROWS_WITH(fit(net, opt, train, test, {.epochs = 1}), Catch::Contains(message));
        CHECK(lightloop::testing::identical(net.layer<0>().weights(), before));
        CHECK(net.steps() == 0);
    };
    auto fewer_labels = data;
    fewer_labels.labels.pop_back();
    // Trained on the first 99 rows before, the last one silently left out.
    refuses(fewer_labels, data,
            "lightloop::fit: the training data has 100 input rows, 100 target rows and 99 labels");
    CHECK_THROWS_AS(fit(net, opt, fewer_labels, data, {.epochs = 1}), shape_error);
    refuses(data, fewer_labels,
            "lightloop::fit: the test data has 100 input rows, 100 target rows and 99 labels");
    auto nan_input = data;
    nan_input.inputs(3, 2) = std::numeric_limits<float>::quiet_NaN();
    // Reported a test loss of nan before.
    refuses(data, nan_input,
            "lightloop::fit: the test data's inputs hold nan at row 3, column 2; every value "
            "must be finite");
    CHECK_THROWS_AS(fit(net, opt, data, nan_input, {.epochs = 1}), data_error);
    auto infinite_target = data;
    infinite_target.targets(7, 1) = -std::numeric_limits<float>::infinity();
    refuses(infinite_target, data, "the training data's targets hold -inf at row 7, column 1");
    // A negative target (no class probability) was refused by the loss at
    // its batch, after the epoch's steps before it.
    auto negative_target = data;
    negative_target.targets(97, 2) = -1.0f;
    refuses(negative_target, data,
            "lightloop::fit: the training data's targets hold -1 at row 97, column 2; "
            "softmax_cross_entropy's targets are class probabilities");
    CHECK_THROWS_AS(fit(net, opt, negative_target, data, {.epochs = 1}), data_error);
    refuses(data, negative_target, "lightloop::fit: the test data's targets hold -1 at row 97");
    // The sampler and evaluate check the parts agree too.
    CHECK_THROWS_WITH(batch_sampler<float>(fewer_labels, 10, 1),
                      Catch::Contains("lightloop::batch_sampler: the data has 100 input rows"));
    CHECK_THROWS_WITH(evaluate(net, fewer_labels),
                      Catch::Contains("lightloop::evaluate: the data has 100 input rows"));
}

TEST_CASE("the alignment probe leaves the optical device and the training run as they were",
          "[train][fit][optical]") {
    // The probe runs the feedback method on a copy of it: the camera's noise
    // stream, the frame counters and the calibration of the device that
    // trains are untouched, so the run ends in the same weights, bit for bit,
    // and the frames are the training's only.
    const auto train = lightloop::testing::blobs_task(2, 40);
    const auto test = lightloop::testing::blobs_task(3, 40);
    auto run = [&](std::size_t probe) {
        auto net = make_network<dfa<optical<>>, softmax_cross_entropy>(
          11, dense<tanh_act>{6, 32}, dense<tanh_act>{32, 32}, dense<identity>{32, 4});
        sgd opt{{.learning_rate = 0.05, .momentum = 0.9}};
        const auto history = fit(net, opt, train, test,
                                 {.epochs = 3, .batch = 32, .seed = 2, .alignment_probe = probe});
        return std::tuple{net.layer<0>().weights(), net.layer<2>().weights(),
                          net.feedback().device().statistics(), history};
    };
    const auto [w0, w2, stats, history] = run(0);
    const auto [probed_w0, probed_w2, probed_stats, probed_history] = run(64);
    CHECK(lightloop::testing::identical(w0, probed_w0));
    CHECK(lightloop::testing::identical(w2, probed_w2));
    CHECK(probed_stats.projections == 3 * 160); // training samples only
    CHECK(probed_stats.projections == stats.projections);
    CHECK(probed_stats.frames == stats.frames);
    CHECK(probed_stats.pixels_read == stats.pixels_read);
    CHECK(probed_history.epochs.back().device_frames == history.epochs.back().device_frames);
    REQUIRE(probed_history.epochs.back().alignment_mean.size() == 2);
    // The probe did run: a measured cosine (after three short epochs its sign
    // is not settled: it depends on the draw of the medium).
    const double cosine = probed_history.epochs.back().alignment_mean[0];
    CHECK((std::isfinite(cosine) && cosine != 0.0 && std::abs(cosine) <= 1.0));
}

TEST_CASE("fit refuses options it cannot run before it trains", "[train][fit]") {
    const auto train = lightloop::testing::blobs_task(2, 10);
    auto net =
      make_network<dfa<>, softmax_cross_entropy>(1, dense<tanh_act>{6, 8}, dense<identity>{8, 4});
    const auto before = net.layer<0>().weights();
    sgd opt{0.1};
    SECTION("an alignment probe without a test set") {
        CHECK_THROWS_AS(
          fit(net, opt, train, labelled_data<float>{}, {.epochs = 2, .alignment_probe = 16}),
          config_error);
        CHECK_THROWS_WITH(
          fit(net, opt, train, labelled_data<float>{}, {.epochs = 2, .alignment_probe = 16}),
          Catch::Contains("alignment_probe is 16 but there is no test set"));
    }
    SECTION("an evaluation batch of zero") {
        // It was refused by evaluate, after the first epoch had trained.
        CHECK_THROWS_WITH(fit(net, opt, train, train, {.epochs = 2, .eval_batch = 0}),
                          "lightloop::fit: eval_batch (rows per forward pass when evaluating) "
                          "must be positive");
    }
    SECTION("a schedule with a bad setting, or one that starts at no rate") {
        // Refused at the first batch; over MPI, a rank given another
        // schedule threw there alone.
        CHECK_THROWS_WITH(fit(net, opt, train, train, {.epochs = 2}, step_schedule{0, 0.5}),
                          "lightloop::step_schedule: needs every > 0 and a finite gamma > 0, got "
                          "every 0, gamma 0.5");
        struct negative_schedule {
            double learning_rate(double base, double, std::size_t) const { return -base; }
        };
        CHECK_THROWS_WITH(fit(net, opt, train, train, {.epochs = 2}, negative_schedule{}),
                          "lightloop::fit: the learning-rate schedule starts at -0.1 (base 0.1); a "
                          "rate must be positive and finite");
        CHECK_THROWS_AS(fit(net, opt, train, train, {.epochs = 2}, negative_schedule{}),
                        config_error);
    }
    SECTION("a resume without a checkpoint") {
        // It trained from scratch and saved nothing.
        CHECK_THROWS_WITH(fit(net, opt, train, train, {.epochs = 2, .resume = true}),
                          Catch::Contains("resume is set but checkpoint is empty"));
    }
    SECTION("a checkpoint in a directory that does not exist, or a directory") {
        // Refused when the first epoch's save failed, after the epoch.
        lightloop::testing::scratch_dir dir("fit_checkpoint_path");
        CHECK_THROWS_WITH(
          fit(net, opt, train, train, {.epochs = 2, .checkpoint = dir / "missing" / "net.ckpt"}),
          Catch::Contains("the checkpoint's directory " + (dir / "missing").string() +
                          " does not exist (create it first); nothing was trained"));
        CHECK_THROWS_WITH(fit(net, opt, train, train, {.epochs = 2, .checkpoint = dir.path()}),
                          Catch::Contains("is a directory: fit_options::checkpoint names a file"));
        CHECK_THROWS_AS(fit(net, opt, train, train, {.epochs = 2, .checkpoint = dir.path()}),
                        config_error);
    }
    CHECK(net.steps() == 0);
    CHECK(lightloop::testing::identical(before, net.layer<0>().weights()));
}

TEST_CASE("fit refuses a batch too small for a layer's batch statistics before it trains",
          "[train][fit]") {
    // batch_norm over feature vectors needs two rows to train; the last batch
    // of 40 rows in batches of 13 has one. It was refused at that batch, after
    // the epoch's other steps.
    const auto train = lightloop::testing::blobs_task(2, 10); // 40 rows
    auto net = make_network<dfa<>, softmax_cross_entropy>(
      1, dense<identity>{6, 8}, batch_norm<tanh_act>{8}, dense<identity>{8, 4});
    const auto before = net.layer<0>().weights();
    sgd opt{0.1};
    CHECK_THROWS_WITH(fit(net, opt, train, train, {.epochs = 1, .batch = 13}),
                      "lightloop::fit: the last batch of an epoch (40 samples in batches of 13) "
                      "has 1 row, but layer 1 (batch_norm 8x1x1) trains on at least 2; choose a "
                      "batch size that leaves no smaller batch; nothing was trained");
    CHECK_THROWS_AS(fit(net, opt, train, train, {.epochs = 1, .batch = 1}), config_error);
    CHECK_THROWS_WITH(fit(net, opt, train, train, {.epochs = 1, .batch = 1}),
                      Catch::StartsWith("lightloop::fit: every batch (batches of 1) has 1 row"));
    // The alignment probe runs a training pass after each epoch: refused
    // there, after the epoch, with a probe of one row.
    CHECK_THROWS_WITH(fit(net, opt, train, train, {.epochs = 1, .batch = 19, .alignment_probe = 1}),
                      "lightloop::fit: the alignment probe (the first 1 test rows) has 1 row, but "
                      "layer 1 (batch_norm 8x1x1) trains on at least 2; probe more rows "
                      "(fit_options::alignment_probe, and the test set); nothing was trained");
    const auto one_row = select_rows(train, std::vector<std::size_t>{0});
    CHECK_THROWS_WITH(
      fit(net, opt, train, one_row, {.epochs = 1, .batch = 19, .alignment_probe = 16}),
      Catch::StartsWith("lightloop::fit: the alignment probe (the first 1 test rows) has 1 row"));
    CHECK(net.steps() == 0);
    CHECK(lightloop::testing::identical(before, net.layer<0>().weights()));
    // A last batch of two rows trains, and so does a probe of two.
    fit(net, opt, train, train, {.epochs = 1, .batch = 19, .alignment_probe = 2});
    CHECK(net.steps() == 3);
    // Over feature maps a single sample has four values per channel: batches
    // of one train.
    auto maps = make_network<dfa<>, softmax_cross_entropy>(
      1, dense<identity>{6, 8}, batch_norm<tanh_act>{feature_shape{2, 2, 2}},
      dense<identity>{8, 4});
    fit(maps, opt, train, train, {.epochs = 1, .batch = 13});
    CHECK(maps.steps() == 4);
}

// fit(a, opt, ...) then fit(b, opt, ...) started b with a's momentum (Adam:
// its moments and step count), without a word.
TEST_CASE("fit refuses an optimizer that stepped another network", "[train][fit]") {
    const auto train = lightloop::testing::blobs_task(2, 10);
    const auto make = [] {
        return make_network<dfa<>, softmax_cross_entropy>(1, dense<tanh_act>{6, 8},
                                                          dense<identity>{8, 4});
    };
    const fit_options options{.epochs = 1, .batch = 8};
    const auto refused_on_fresh = [&](auto& opt) {
        auto b = make();
        const auto before = b.layer<0>().weights();
        CHECK_THROWS_WITH(fit(b, opt, train, train, options),
                          Catch::StartsWith("lightloop::fit: the optimizer holds state from "
                                            "earlier steps (momentum, moments or a step count) "
                                            "but the network has never been stepped"));
        CHECK_THROWS_AS(fit(b, opt, train, train, options), config_error);
        CHECK(b.steps() == 0);
        CHECK(lightloop::testing::identical(before, b.layer<0>().weights()));
    };
    auto a = make();
    sgd momentum{{.learning_rate = 0.05, .momentum = 0.9}};
    fit(a, momentum, train, train, options);
    refused_on_fresh(momentum);
    auto c = make();
    adam moments{{.learning_rate = 1e-3}};
    fit(c, moments, train, train, options);
    refused_on_fresh(moments);
    // The network it stepped trains on with it; a stateless optimizer carries
    // nothing over.
    fit(a, momentum, train, train, options);
    CHECK(a.steps() == 10);
    sgd plain{0.05};
    fit(a, plain, train, train, options);
    auto d = make();
    fit(d, plain, train, train, options);
    CHECK(d.steps() == 5);
}

TEST_CASE("early stopping without a test set watches the training loss", "[train][fit]") {
    // The training loss of this learnable task falls every epoch: a stopper
    // that read the missing test loss (once 0 every epoch) stopped after
    // `patience` epochs.
    const auto train = lightloop::testing::blobs_task(2, 20);
    auto net = make_network<backprop, softmax_cross_entropy>(1, dense<tanh_act>{6, 16},
                                                             dense<identity>{16, 4});
    sgd opt{{.learning_rate = 0.02, .momentum = 0.9}};
    early_stopping stopper(2);
    const auto history =
      fit(net, opt, train, labelled_data<float>{}, {.epochs = 6, .batch = 16}, stopper);
    CHECK(history.epochs.size() == 6);
    CHECK_FALSE(history.stopped_early);
    CHECK(stopper.watches_training_loss());
    CHECK(stopper.best() == history.epochs.back().train_loss);
    // No test set: no test figures, not zeros.
    CHECK(std::isnan(history.epochs.back().test_loss));
    CHECK(std::isnan(history.epochs.back().test_accuracy));

    // With a test set it watches the test loss.
    early_stopping with_test(2);
    fit(net, opt, train, train, {.epochs = 1, .batch = 16}, with_test);
    CHECK_FALSE(with_test.watches_training_loss());
    CHECK_THROWS_AS(early_stopping(0), config_error);
}

TEST_CASE("a resumed run's CSV rows are its checkpoint's records, then its own; its progress says "
          "where it resumed",
          "[train][fit]") {
    lightloop::testing::scratch_dir dir("csv_resume");
    const auto path = dir / "log.csv";
    // Run "a" logged epochs 1 to 3 before it was stopped, runs "b" and "ab"
    // (a's name as a prefix) one epoch each.
    csv_log a(path, "a");
    csv_log b(path, "b");
    csv_log ab(path, "ab");
    epoch_record r;
    for (std::size_t e = 1; e <= 3; ++e) {
        r.epoch = e;
        a.on_epoch_end(r);
        if (e == 1) {
            b.on_epoch_end(r);
            ab.on_epoch_end(r);
        }
    }
    // Resumed from its checkpoint of epoch 2, whose records (test accuracy
    // 0.5) replace a's rows; then its epoch 3.
    fit_history history;
    history.resumed_from_epoch = 2;
    for (std::size_t e = 1; e <= 2; ++e) {
        epoch_record saved;
        saved.epoch = e;
        saved.test_accuracy = 0.5;
        history.epochs.push_back(saved);
    }
    csv_log resumed(path, "a");
    resumed.on_resume(history);
    r.epoch = 3;
    resumed.on_epoch_end(r);
    const auto csv = file_text(path);
    CHECK(std::count(csv.begin(), csv.end(), '\n') == 6); // header, b, ab, a's three epochs
    CHECK_THAT(csv, Catch::StartsWith("run,epoch,") && Catch::Contains("\nb,1,") &&
                      Catch::Contains("\nab,1,") && Catch::Contains("\na,1,") &&
                      Catch::Contains("\na,2,") && Catch::EndsWith("\n"));
    CHECK(csv.find("\na,1,") > csv.find("\nab,1,")); // a's rows rewritten after the others'
    // The records' figures, not the interrupted run's rows: a's epochs 1
    // and 2 only carry test accuracy 0.5.
    std::size_t records = 0;
    for (auto at = csv.find(",0.5,"); at != std::string::npos; at = csv.find(",0.5,", at + 1)) {
        ++records;
    }
    CHECK(records == 2);

    std::FILE* progress = std::tmpfile();
    progress_bar bar("a", progress);
    bar.terminal(false).on_fit_begin({.epochs = 4});
    bar.on_resume(history);
    std::rewind(progress);
    char line[256] = {};
    REQUIRE(std::fgets(line, sizeof line, progress) != nullptr);
    std::fclose(progress);
    CHECK(std::string(line) == "a resumed after epoch 2/4 from its checkpoint\n");
}

TEST_CASE("a log that cannot be written throws lightloop's own error", "[train][fit]") {
    lightloop::testing::scratch_dir dir("fit_log_error");
    std::filesystem::create_directories(dir / "taken" / "inside"); // a non-empty directory
    json_log log(dir / "taken");
    epoch_record r;
    r.epoch = 1;
    // Renaming the finished file over a directory fails: a data_error naming
    // the file, not std::filesystem::filesystem_error.
    CHECK_THROWS_AS(log.on_epoch_end(r), lightloop::error);
    CHECK_THROWS_WITH(log.on_epoch_end(r), Catch::Contains("taken") && Catch::Contains("JSON log"));
    csv_log csv(dir / "taken");
    CHECK_THROWS_AS(csv.on_epoch_end(r), lightloop::error);
}

TEST_CASE("fit refuses a log or checkpoint callback whose path cannot hold its file before it "
          "trains",
          "[train][fit]") {
    // Each was refused by its first write, after the first epoch.
    lightloop::testing::scratch_dir dir("fit_log_path");
    const auto train = lightloop::testing::blobs_task(2, 10);
    auto net =
      make_network<dfa<>, softmax_cross_entropy>(1, dense<tanh_act>{6, 8}, dense<identity>{8, 4});
    const auto before = net.layer<0>().weights();
    sgd opt{0.1};
    const fit_options options{.epochs = 1, .batch = 8};
    const std::string missing = (dir / "missing").string();
    CHECK_THROWS_WITH(fit(net, opt, train, train, options, csv_log(dir / "missing" / "log.csv")),
                      "lightloop::csv_log: the CSV log's directory " + missing +
                        " does not exist (create it first); nothing was trained");
    CHECK_THROWS_AS(fit(net, opt, train, train, options, csv_log(dir / "missing" / "log.csv")),
                    config_error);
    CHECK_THROWS_WITH(fit(net, opt, train, train, options, json_log(dir.path())),
                      "lightloop::json_log: the JSON log " + dir.path().string() +
                        " is a directory: a log names a file; nothing was trained");
    CHECK_THROWS_WITH(
      fit(net, opt, train, train, options, checkpoint_every_epoch(dir / "missing" / "net.ckpt")),
      Catch::StartsWith("lightloop::checkpoint_every_epoch: the checkpoint's directory " + missing +
                        " does not exist"));
    CHECK(net.steps() == 0);
    CHECK(lightloop::testing::identical(before, net.layer<0>().weights()));
    // In a directory that exists, each writes its file.
    fit(net, opt, train, train, options, csv_log(dir / "log.csv"), json_log(dir / "log.json"),
        checkpoint_every_epoch(dir / "net.ckpt"));
    CHECK(std::filesystem::exists(dir / "log.csv"));
    CHECK(std::filesystem::exists(dir / "log.json"));
    CHECK(std::filesystem::exists(dir / "net.ckpt"));
}
