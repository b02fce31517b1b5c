#include <catch2/catch.hpp>

#include "support/files.hpp"
#include "support/helpers.hpp"

#include <atomic>
#include <cstring>
#include <filesystem>
#include <limits>
#include <span>
#include <thread>
#include <utility>

#include <unistd.h>

using namespace lightloop;

namespace {

using small_dfa = network<dfa<>, softmax_cross_entropy, dense<tanh_act>, dense<identity>>;

small_dfa make_small(std::size_t hidden = 9, std::uint64_t seed = 1) {
    return small_dfa(dfa<>{}, softmax_cross_entropy{}, seed, dense<tanh_act>{6, hidden},
                     dense<identity>{hidden, 4});
}

/// The optimizer every test here saves and loads: SGD with momentum.
sgd<float> momentum_sgd() {
    return sgd<float>{{.learning_rate = 0.05, .momentum = 0.9}};
}

/// A few SGD steps so the momentum buffers hold something.
template <class Network, class Optimizer>
void train_a_little(Network& net, Optimizer& opt, std::uint64_t seed) {
    const auto data = lightloop::testing::blobs_task(seed);
    for (std::size_t b = 0; b < 5; ++b) {
        matrix<float> xb;
        matrix<float> yb;
        std::vector<std::size_t> rows(32);
        for (std::size_t i = 0; i < rows.size(); ++i) {
            rows[i] = b * 32 + i;
        }
        gather_rows(data.inputs, std::span<const std::size_t>(rows), xb);
        gather_rows(data.targets, std::span<const std::size_t>(rows), yb);
        net.train_step(xb, yb, opt);
    }
}

/// A copy of `bytes` with the header and CRC remade for the payload between
/// them, so a test can reach the checks behind the CRC.
std::vector<std::uint8_t> reframe(std::vector<std::uint8_t> bytes) {
    const auto payload = std::as_bytes(std::span(bytes).subspan(16, bytes.size() - 20));
    const auto header = lightloop::detail::checkpoint_header(payload.size());
    const std::uint32_t crc = lightloop::detail::crc32_of(payload);
    std::memcpy(bytes.data(), header.data(), header.size());
    std::memcpy(bytes.data() + bytes.size() - 4, &crc, 4);
    return bytes;
}

} // namespace

TEST_CASE("a checkpoint restores weights, optimizer state and step count", "[io][checkpoint]") {
    lightloop::testing::scratch_dir dir("checkpoint");
    auto net = make_small();
    auto opt = momentum_sgd();
    train_a_little(net, opt, 2);
    save_checkpoint(net, opt, dir / "a.ckpt", 12, 5, 32);
    const matrix<float> w0 = net.layer<0>().weights();
    const vector<float> b1 = net.layer<1>().bias();
    const auto momentum = opt.state();
    REQUIRE(momentum.size() == 4);

    // Diverge from the saved state, then load it back.
    train_a_little(net, opt, 3);
    REQUIRE_FALSE(lightloop::testing::identical(net.layer<0>().weights(), w0));
    const checkpoint_info info = load_checkpoint(net, opt, dir / "a.ckpt");
    CHECK(info.epoch == 12);
    CHECK(info.steps == 5);
    CHECK(info.fit_seed == 5);
    CHECK(info.batch == 32);
    CHECK(info.optimizer == "sgd");
    CHECK(info.library_version == version_string);
    CHECK(net.steps() == 5);
    CHECK(lightloop::testing::identical(net.layer<0>().weights(), w0));
    CHECK(lightloop::testing::identical(net.layer<1>().bias(), b1));
    CHECK(opt.state() == momentum);
    CHECK_THAT(info.architecture, Catch::Contains("layer 0: dense<tanh> 6 -> 9") &&
                                    Catch::Contains("feedback: dfa dense_gaussian scale=1") &&
                                    Catch::Contains("seed: 1"));

    // Weights only: any optimizer state in the file is skipped.
    net.layer<0>().weights() *= 2.0f;
    CHECK(load_checkpoint(net, dir / "a.ckpt").epoch == 12);
    CHECK(lightloop::testing::identical(net.layer<0>().weights(), w0));
    // A different optimizer cannot take sgd's state.
    adam<float> other_opt;
    CHECK_THROWS_WITH(load_checkpoint(net, other_opt, dir / "a.ckpt"),
                      Catch::Contains("saved with optimizer 'sgd', resuming with 'adam'"));
}

TEST_CASE("adam's moments and step count survive a checkpoint", "[io][checkpoint]") {
    lightloop::testing::scratch_dir dir("checkpoint_adam");
    auto net = make_small();
    adam<float> opt{{.learning_rate = 1e-3}};
    train_a_little(net, opt, 2);
    save_checkpoint(net, opt, dir / "a.ckpt", 1);
    adam<float> fresh{{.learning_rate = 1e-3}};
    auto copy = make_small();
    load_checkpoint(copy, fresh, dir / "a.ckpt");
    CHECK(fresh.step_count() == opt.step_count());
    CHECK(fresh.state() == opt.state());
    // The same next step from both.
    train_a_little(net, opt, 4);
    train_a_little(copy, fresh, 4);
    CHECK(lightloop::testing::identical(net.layer<0>().weights(), copy.layer<0>().weights()));
}

TEST_CASE("loading refuses damaged or foreign checkpoints and changes nothing",
          "[io][checkpoint]") {
    lightloop::testing::scratch_dir dir("checkpoint_bad");
    auto net = make_small();
    auto opt = momentum_sgd();
    train_a_little(net, opt, 2);
    save_checkpoint(net, opt, dir / "a.ckpt", 3);
    const auto good = lightloop::testing::read_bytes(dir / "a.ckpt");

    auto target = make_small(9, 1);
    auto target_opt = momentum_sgd();
    const matrix<float> before = target.layer<0>().weights();
    auto refuses = [&](const std::vector<std::uint8_t>& bytes, const std::string& message) {
        lightloop::testing::write_bytes(dir / "bad.ckpt", bytes);
        CAPTURE(message);
        CHECK_THROWS_WITH(load_checkpoint(target, target_opt, dir / "bad.ckpt"),
                          Catch::Contains(message));
        CHECK(lightloop::testing::identical(target.layer<0>().weights(), before));
        CHECK(target_opt.state().empty());
        CHECK(target.steps() == 0);
    };

    SECTION("magic") {
        auto bytes = good;
        bytes[0] = 'X';
        refuses(bytes, "not a lightloop checkpoint (bad magic)");
        refuses({'n', 'o', 'p', 'e'}, "truncated checkpoint (4 bytes)");
    }
    SECTION("a newer format, and one before optimizer state") {
        auto bytes = good;
        bytes[4] = 5;
        refuses(bytes, "checkpoint format 5 is newer than this library reads (4)");
        bytes[4] = 1;
        refuses(bytes, "checkpoint format 1 predates optimizer and device state; this library "
                       "reads formats 2 to 4");
    }
    SECTION("truncation, at every length") {
        for (const std::size_t keep :
             {std::size_t{10}, std::size_t{19}, good.size() / 2, good.size() - 1}) {
            auto bytes = good;
            bytes.resize(keep);
            refuses(bytes, "truncated checkpoint");
        }
    }
    SECTION("a flipped bit") {
        auto bytes = good;
        bytes[bytes.size() / 2] ^= std::uint8_t{0x10};
        refuses(bytes, "checkpoint is corrupt (CRC-32");
    }
    SECTION("an architecture mismatch names the layer and how it differs") {
        auto wider = make_small(8, 1);
        save_checkpoint(wider, opt, dir / "wider.ckpt", 3);
        refuses(lightloop::testing::read_bytes(dir / "wider.ckpt"),
                "architecture mismatch at layer 0: the checkpoint has 'dense<tanh> 6 -> 8', "
                "the network has 'dense<tanh> 6 -> 9'");
        auto reseeded = make_small(9, 2);
        save_checkpoint(reseeded, opt, dir / "seed.ckpt", 3);
        refuses(lightloop::testing::read_bytes(dir / "seed.ckpt"),
                "architecture mismatch at seed: the checkpoint has '2', the network has '1'");
        auto fa = network(feedback_alignment{}, softmax_cross_entropy{}, 1, dense<tanh_act>{6, 9},
                          dense<identity>{9, 4});
        save_checkpoint(fa, opt, dir / "fa.ckpt", 3);
        refuses(lightloop::testing::read_bytes(dir / "fa.ckpt"),
                "architecture mismatch at feedback: the checkpoint has 'feedback_alignment");
    }
    SECTION("settings that differ past six decimals") {
        // Descriptions once wrote both scales as 0.000000.
        auto fa_network = [](double scale) {
            return network(feedback_alignment{scale}, softmax_cross_entropy{}, 1,
                           dense<tanh_act>{6, 9}, dense<identity>{9, 4});
        };
        auto small = fa_network(1e-7);
        save_checkpoint(small, opt, dir / "small.ckpt", 3);
        auto other = fa_network(2e-7);
        auto other_opt = momentum_sgd();
        const matrix<float> kept = other.layer<0>().weights();
        CHECK_THROWS_WITH(load_checkpoint(other, other_opt, dir / "small.ckpt"),
                          Catch::Contains("architecture mismatch at feedback: the checkpoint has "
                                          "'feedback_alignment scale=1e-07', the network has "
                                          "'feedback_alignment scale=2e-07'"));
        CHECK(lightloop::testing::identical(other.layer<0>().weights(), kept));
        auto same = fa_network(1e-7);
        auto same_opt = momentum_sgd();
        load_checkpoint(same, same_opt, dir / "small.ckpt");
        CHECK(lightloop::testing::identical(same.layer<0>().weights(), small.layer<0>().weights()));
    }
    SECTION("an optical device whose medium is rounded to bf16") {
        // Its entries differ from the fp32 medium's: the description says so.
        auto optical_network = [](bool bf16_medium) {
            return network(dfa<optical<>>{optical<>{optical_settings{.bf16_medium = bf16_medium}}},
                           softmax_cross_entropy{}, 1, dense<tanh_act>{6, 9},
                           dense<identity>{9, 4});
        };
        auto rounded = optical_network(true);
        save_checkpoint(rounded, opt, dir / "rounded.ckpt", 3);
        auto plain = optical_network(false);
        auto plain_opt = momentum_sgd();
        CHECK_THROWS_WITH(load_checkpoint(plain, plain_opt, dir / "rounded.ckpt"),
                          Catch::Contains("architecture mismatch at feedback") &&
                            Catch::Contains("variance=1.000000 bf16_medium', the network has"));
        auto same = optical_network(true);
        auto same_opt = momentum_sgd();
        CHECK_NOTHROW(load_checkpoint(same, same_opt, dir / "rounded.ckpt"));
    }
    SECTION("a consistent frame around a bad payload (what only a fuzzer finds)") {
        auto bytes = good;
        bytes.insert(bytes.end() - 4, {'x', 'y'}); // trailing payload bytes
        refuses(reframe(bytes), "unread bytes");
    }
    SECTION("the scalar type") {
        auto doubles = network(dfa<>{}, softmax_cross_entropy{}, 1, dense<tanh_act, double>{6, 9},
                               dense<identity, double>{9, 4});
        CHECK_THROWS_WITH(load_checkpoint(doubles, dir / "a.ckpt"),
                          Catch::Contains("4-byte scalars"));
    }
}

TEST_CASE("descriptions keep six decimals where they are exact and every digit elsewhere",
          "[io][checkpoint]") {
    // Six decimals: what checkpoints written before number_text hold.
    CHECK(setting_text(1.0) == "1.000000");
    CHECK(setting_text(0.1) == "0.100000");
    CHECK(setting_text(0.1f) == "0.100000");
    CHECK(setting_text(1e-6) == "0.000001");
    CHECK(setting_text(-0.25) == "-0.250000");
    CHECK(setting_text(0.0) == "0.000000");
    // Past six decimals, the shortest text that reads back.
    CHECK(setting_text(1e-7) == "1e-07");
    CHECK(setting_text(2.5e-7) == "2.5e-07");
    CHECK(setting_text(0.1234567) == "0.1234567");
    CHECK(setting_text(1.0 / 3.0) == "0.3333333333333333");
    CHECK(setting_text(1.0f / 3.0f) == "0.33333334");
    CHECK(setting_text(std::numeric_limits<double>::infinity()) == "inf");
    CHECK(setting_text(std::numeric_limits<double>::quiet_NaN()) == "nan");
    // Messages: the shortest text.
    CHECK(number_text(0.0) == "0");
    CHECK(number_text(30.0) == "30");
    CHECK(number_text(1e-7) == "1e-07");
    CHECK(number_text(-0.5f) == "-0.5");
}

namespace {
/// Three epochs' records with every field set, NaN and empty vectors included.
lightloop::detail::epoch_log three_epochs() {
    lightloop::detail::epoch_log log;
    for (std::size_t i = 1; i <= 3; ++i) {
        epoch_record e;
        e.epoch = i;
        e.learning_rate = 0.1 / static_cast<double>(i);
        e.train_loss = 1.5 - 0.25 * static_cast<double>(i);
        e.train_accuracy = 0.5 + 0.1 * static_cast<double>(i);
        e.test_loss = 1.25 + static_cast<double>(i);
        e.test_accuracy = 0.375 * static_cast<double>(i);
        e.seconds = 2.5 * static_cast<double>(i);
        e.samples_per_second = 1000.0 + static_cast<double>(i);
        e.alignment_mean = {0.5, 0.25 * static_cast<double>(i)};
        e.alignment_spread = {0.125};
        e.weight_alignment = {std::numeric_limits<double>::quiet_NaN(), 0.75};
        e.has_device = i != 2;
        e.device_frames = 1000 * i;
        e.device_seconds = 0.75 * static_cast<double>(i);
        e.device_saturated = 0.001;
        e.device_snr_db = i == 3 ? 21.5 : std::numeric_limits<double>::quiet_NaN();
        log.epochs.push_back(e);
    }
    return log;
}

bool same_bits(double a, double b) {
    return std::memcmp(&a, &b, sizeof a) == 0;
}
} // namespace

TEST_CASE("a checkpoint carries fit's epoch records, and reads format 2 without them",
          "[io][checkpoint]") {
    lightloop::testing::scratch_dir dir("checkpoint_record");
    auto net = make_small();
    auto opt = momentum_sgd();
    train_a_little(net, opt, 2);
    const auto saved = three_epochs();
    save_checkpoint(net, opt, dir / "a.ckpt", 3, 5, 32, saved);

    auto target = make_small();
    auto target_opt = momentum_sgd();
    lightloop::detail::epoch_log loaded;
    CHECK(load_checkpoint(target, target_opt, dir / "a.ckpt", loaded).epoch == 3);
    REQUIRE(loaded.epochs.size() == 3);
    for (std::size_t i = 0; i < 3; ++i) {
        const auto& a = saved.epochs[i];
        const auto& b = loaded.epochs[i];
        CAPTURE(i);
        CHECK(b.epoch == a.epoch);
        for (const auto& [x, y] : {std::pair{a.learning_rate, b.learning_rate},
                                   {a.train_loss, b.train_loss},
                                   {a.train_accuracy, b.train_accuracy},
                                   {a.test_loss, b.test_loss},
                                   {a.test_accuracy, b.test_accuracy},
                                   {a.seconds, b.seconds},
                                   {a.samples_per_second, b.samples_per_second},
                                   {a.device_seconds, b.device_seconds},
                                   {a.device_saturated, b.device_saturated},
                                   {a.device_snr_db, b.device_snr_db}}) {
            CHECK(same_bits(x, y));
        }
        CHECK(b.alignment_mean == a.alignment_mean);
        CHECK(b.alignment_spread == a.alignment_spread);
        REQUIRE(b.weight_alignment.size() == 2);
        CHECK(same_bits(b.weight_alignment[0], a.weight_alignment[0]));
        CHECK(b.weight_alignment[1] == a.weight_alignment[1]);
        CHECK(b.has_device == a.has_device);
        CHECK(b.device_frames == a.device_frames);
    }

    // Records that disagree with the epoch count are refused, and nothing
    // (weights, optimizer, records) changes.
    auto two = three_epochs();
    two.epochs.pop_back();
    save_checkpoint(net, opt, dir / "short.ckpt", 3, 5, 32, two);
    auto untouched = make_small();
    auto untouched_opt = momentum_sgd();
    const matrix<float> before = untouched.layer<0>().weights();
    lightloop::detail::epoch_log kept = three_epochs();
    kept.epochs.resize(1);
    CHECK_THROWS_WITH(load_checkpoint(untouched, untouched_opt, dir / "short.ckpt", kept),
                      Catch::Contains("run record holds 2 epochs, the checkpoint 3"));
    CHECK(lightloop::testing::identical(untouched.layer<0>().weights(), before));
    CHECK(untouched_opt.state().empty());
    CHECK(kept.epochs.size() == 1);

    // A format-2 file: the same payload without the run record block.
    save_checkpoint(net, opt, dir / "plain.ckpt", 3, 5, 32);
    auto bytes = lightloop::testing::read_bytes(dir / "plain.ckpt");
    bytes.erase(bytes.end() - 12, bytes.end() - 4); // the empty block's u64 size
    bytes = reframe(bytes);
    bytes[4] = 2;
    lightloop::testing::write_bytes(dir / "format2.ckpt", bytes);
    auto old = make_small();
    auto old_opt = momentum_sgd();
    CHECK(load_checkpoint(old, old_opt, dir / "format2.ckpt", kept).epoch == 3);
    CHECK(lightloop::testing::identical(old.layer<0>().weights(), net.layer<0>().weights()));
    CHECK(old_opt.state() == opt.state());
    CHECK(kept.epochs.size() == 1); // no record in the file: left as it was
    // The same bytes labelled format 3 lack the block.
    bytes[4] = 3;
    lightloop::testing::write_bytes(dir / "format3.ckpt", bytes);
    CHECK_THROWS_WITH(load_checkpoint(old, old_opt, dir / "format3.ckpt"),
                      Catch::Contains("truncated checkpoint (reading run record)"));
}

TEST_CASE("a failed save leaves the previous checkpoint intact", "[io][checkpoint]") {
    lightloop::testing::scratch_dir dir("checkpoint_atomic");
    auto net = make_small();
    save_checkpoint(net, dir / "a.ckpt", 1);
    const auto first = lightloop::testing::read_bytes(dir / "a.ckpt");
    // The temporary file's name is taken by a directory: the write fails.
    std::filesystem::create_directory(lightloop::detail::own_temporary_path(dir / "a.ckpt"));
    net.layer<0>().weights() *= 2.0f;
    CHECK_THROWS_WITH(save_checkpoint(net, dir / "a.ckpt", 2),
                      Catch::Contains("cannot write checkpoint (Is a directory)"));
    CHECK(lightloop::testing::read_bytes(dir / "a.ckpt") == first);
    // Why a write could not start is said ("cannot write checkpoint" alone
    // left a missing directory to be guessed).
    CHECK_THROWS_WITH(save_checkpoint(net, dir / "no_such_directory" / "a.ckpt", 2),
                      Catch::Contains("cannot write checkpoint (No such file or directory)"));
    CHECK(load_checkpoint(net, dir / "a.ckpt").epoch == 1);
}

// A process killed mid-write leaves "<path>.<host>.<pid>.tmp"; nothing read
// it, and nothing removed it (a long job preempted again and again filled its
// disk with partial checkpoints). The next write on the host removes those
// of processes that no longer run, and only those.
TEST_CASE("a write removes the temporaries that ended writers of its file left on this host",
          "[io][checkpoint]") {
    lightloop::testing::scratch_dir dir("checkpoint_abandoned");
    const auto path = dir / "a.ckpt";
    const std::string host = lightloop::detail::host_name();
    const auto beside = [&](const std::string& rest) { return dir / ("a.ckpt." + rest); };
    // 999999999 is above any Linux pid_max (at most 2^22): no such process.
    const auto ended = beside(host + ".999999999.tmp");
    const auto running = beside(host + "." + std::to_string(::getppid()) + ".tmp");
    const auto elsewhere = beside("another-host.999999999.tmp");
    const auto not_ours = beside(host + ".12ab.tmp");
    const auto other_file = dir / ("b.ckpt." + host + ".999999999.tmp");
    // This library's names carry the writing thread's number too.
    const auto ended_thread = beside(host + ".999999999.3.tmp");
    const auto running_thread = beside(host + "." + std::to_string(::getppid()) + ".1.tmp");
    const auto not_ours_thread = beside(host + ".999999999.x.tmp");
    for (const auto& file : {ended, running, elsewhere, not_ours, other_file, ended_thread,
                             running_thread, not_ours_thread}) {
        lightloop::testing::write_bytes(file, std::vector<std::uint8_t>(16, 7));
    }
    auto net = make_small();
    save_checkpoint(net, path, 1);
    CHECK(load_checkpoint(net, path).epoch == 1);
    CHECK_FALSE(std::filesystem::exists(ended));
    CHECK(std::filesystem::exists(running));
    CHECK(std::filesystem::exists(elsewhere));
    CHECK(std::filesystem::exists(not_ours));
    CHECK(std::filesystem::exists(other_file));
    CHECK_FALSE(std::filesystem::exists(ended_thread));
    CHECK(std::filesystem::exists(running_thread));
    CHECK(std::filesystem::exists(not_ours_thread));
    // The same for any atomic write (an export, a log).
    lightloop::testing::write_bytes(ended, std::vector<std::uint8_t>(16, 7));
    const std::vector<std::byte> text(3, std::byte{'x'});
    lightloop::detail::write_atomically(path, {std::span<const std::byte>(text)}, "test file");
    CHECK_FALSE(std::filesystem::exists(ended));
    CHECK(std::filesystem::exists(running));
}

// Threads of one process writing the same file at once (two fits of a sweep
// given the same checkpoint or log) shared one temporary name: one renamed
// the file the other was still writing, whose rename then failed, or the
// renamed file held both writes' bytes. Each now writes its own temporary,
// and every write leaves the file whole.
TEST_CASE("threads writing the same file at once each leave it whole", "[io][checkpoint]") {
    lightloop::testing::scratch_dir dir("checkpoint_threads");
    const auto path = dir / "a.ckpt";
    std::atomic<int> failures{0};
    const auto writer = [&](float scale) {
        auto net = make_small();
        net.layer<0>().weights() *= scale;
        for (std::uint64_t epoch = 1; epoch <= 40; ++epoch) {
            try {
                save_checkpoint(net, path, epoch);
            } catch (const lightloop::error&) {
                failures.fetch_add(1);
            }
        }
    };
    std::thread first(writer, 2.0f);
    std::thread second(writer, 3.0f);
    first.join();
    second.join();
    CHECK(failures.load() == 0);
    auto net = make_small();
    CHECK(load_checkpoint(net, path).epoch == 40); // whole: its CRC holds
    CHECK(lightloop::detail::own_temporary_path(path) != [&] {
        std::filesystem::path other;
        std::thread([&] { other = lightloop::detail::own_temporary_path(path); }).join();
        return other;
    }());
}

TEST_CASE("the SVG chart draws one line and one legend entry per series", "[io][plot]") {
    lightloop::testing::scratch_dir dir("plot");
    line_chart chart{"Learning curves", "epoch", "test accuracy", {}};
    chart.series.push_back({"backprop", {1, 2, 3}, {0.8, 0.85, 0.87}});
    chart.series.push_back({"dfa <optical>", {1, 2, 3}, {0.78, 0.83, 0.86}});
    write_svg(chart, dir / "c.svg");
    std::ifstream in(dir / "c.svg");
    const std::string svg((std::istreambuf_iterator<char>(in)), {});
    CHECK(svg.rfind("<svg", 0) == 0);
    std::size_t lines = 0;
    for (auto at = svg.find("<polyline"); at != std::string::npos;
         at = svg.find("<polyline", at + 1)) {
        ++lines;
    }
    CHECK(lines == 2);
    CHECK_THAT(svg, Catch::Contains(">backprop<") && Catch::Contains("dfa &lt;optical&gt;"));
}

namespace {

/// An optimizer with only the contract's required members: plain SGD.
struct bare_sgd {
    using value_type = float;
    static constexpr const char* name = "bare_sgd";
    double lr = 0.05;
    void begin_step() {}
    void update(std::size_t, std::span<float> w, std::span<const float> g) {
        for (std::size_t i = 0; i < w.size(); ++i) {
            w[i] -= static_cast<float>(lr) * g[i];
        }
    }
    double learning_rate() const { return lr; }
    void set_learning_rate(double rate) { lr = rate; }
};

/// The same without a name.
struct nameless_sgd {
    using value_type = float;
    void begin_step() {}
    void update(std::size_t, std::span<float>, std::span<const float>) {}
    double learning_rate() const { return 0.05; }
    void set_learning_rate(double) {}
};

using sgd_or_adam = optimizer_choice<sgd<float>, adam<float>>;

template <class O>
constexpr bool saves_state = requires(O o, const O co, state_writer& out, state_reader& in) {
    co.save_state(out);
    o.load_state(in);
};

} // namespace

TEST_CASE("an optimizer picked at run time trains and checkpoints as the optimizer it holds",
          "[io][checkpoint][optim]") {
    // It offers an optional member of the contract only where every
    // alternative has it: the network's proofs and fused updates see the
    // truth.
    static_assert(optimizer<sgd_or_adam> && optimizer<optimizer_choice<sgd<float>, bare_sgd>>);
    static_assert(lightloop::detail::updates_blocks<sgd_or_adam>);
    static_assert(saves_state<sgd_or_adam>);
    static_assert(!lightloop::detail::bounds_updates<optimizer_choice<sgd<float>, bare_sgd>>);
    static_assert(!saves_state<optimizer_choice<sgd<float>, bare_sgd>>);

    SECTION("the same steps, to the bit, as the held optimizer (fp32 and mixed bf16)") {
        auto plain_net = make_small();
        auto chosen_net = make_small();
        adam<float> plain{{.learning_rate = 1e-3}};
        sgd_or_adam chosen = adam<float>{{.learning_rate = 1e-3}};
        train_a_little(plain_net, plain, 2);
        train_a_little(chosen_net, chosen, 2);
        CHECK(chosen.name() == "adam");
        CHECK(chosen.index() == 1);
        CHECK(lightloop::testing::identical(plain_net.layer<0>().weights(),
                                            chosen_net.layer<0>().weights()));
        CHECK(
          lightloop::testing::identical(plain_net.layer<1>().bias(), chosen_net.layer<1>().bias()));
        REQUIRE(chosen.get_if<adam<float>>() != nullptr);
        CHECK(chosen.get_if<sgd<float>>() == nullptr);
        CHECK(chosen.get_if<adam<float>>()->state() == plain.state());
        CHECK(chosen.get_if<adam<float>>()->step_count() == plain.step_count());

        // Mixed bf16: the update also writes the layers' bf16 copies.
        auto make_mixed = [] {
            return network(dfa<>{}, softmax_cross_entropy{}, 1, dense<tanh_act, mixed_bf16>{6, 9},
                           dense<identity, mixed_bf16>{9, 4});
        };
        auto plain_mixed = make_mixed();
        auto chosen_mixed = make_mixed();
        auto plain_sgd = momentum_sgd();
        sgd_or_adam chosen_sgd = momentum_sgd();
        train_a_little(plain_mixed, plain_sgd, 3);
        train_a_little(chosen_mixed, chosen_sgd, 3);
        CHECK(lightloop::testing::identical(plain_mixed.layer<0>().weights(),
                                            chosen_mixed.layer<0>().weights()));
        CHECK(lightloop::testing::identical(plain_mixed.layer<1>().weights(),
                                            chosen_mixed.layer<1>().weights()));
        CHECK(chosen_sgd.get_if<sgd<float>>()->state() == plain_sgd.state());

        chosen_sgd.set_learning_rate(0.25);
        CHECK(chosen_sgd.learning_rate() == 0.25);
        CHECK(chosen_sgd.get_if<sgd<float>>()->learning_rate() == 0.25);

        // Only the required members: the plain update.
        optimizer_choice<sgd<float>, bare_sgd> bare_choice = bare_sgd{};
        bare_sgd bare;
        auto bare_net = make_small();
        auto bare_chosen_net = make_small();
        train_a_little(bare_net, bare, 4);
        train_a_little(bare_chosen_net, bare_choice, 4);
        CHECK(bare_choice.name() == "bare_sgd");
        // An alternative without a name of its own goes by its type's.
        const optimizer_choice<sgd<float>, nameless_sgd> nameless = nameless_sgd{};
        CHECK_THAT(nameless.name(), Catch::Contains("nameless_sgd"));
        CHECK(lightloop::testing::identical(bare_net.layer<0>().weights(),
                                            bare_chosen_net.layer<0>().weights()));
    }

    SECTION("its checkpoints name the held optimizer and resume it, through a choice or not") {
        lightloop::testing::scratch_dir dir("checkpoint_choice");
        auto net = make_small();
        sgd_or_adam chosen = adam<float>{{.learning_rate = 1e-3}};
        train_a_little(net, chosen, 2);
        save_checkpoint(net, chosen, dir / "chosen.ckpt", 1);

        auto plain_net = make_small();
        adam<float> plain{{.learning_rate = 1e-3}};
        CHECK(load_checkpoint(plain_net, plain, dir / "chosen.ckpt").optimizer == "adam");
        CHECK(plain.state() == chosen.get_if<adam<float>>()->state());
        CHECK(plain.step_count() == chosen.get_if<adam<float>>()->step_count());
        train_a_little(net, chosen, 5);
        train_a_little(plain_net, plain, 5);
        CHECK(
          lightloop::testing::identical(net.layer<0>().weights(), plain_net.layer<0>().weights()));

        // An sgd checkpoint: a choice holding adam refuses it and keeps its
        // state; one holding sgd resumes it.
        auto sgd_net = make_small();
        auto opt = momentum_sgd();
        train_a_little(sgd_net, opt, 3);
        save_checkpoint(sgd_net, opt, dir / "sgd.ckpt", 1);
        const auto kept = chosen.get_if<adam<float>>()->state();
        CHECK_THROWS_WITH(load_checkpoint(net, chosen, dir / "sgd.ckpt"),
                          Catch::Contains("saved with optimizer 'sgd', resuming with 'adam'"));
        CHECK(chosen.get_if<adam<float>>()->state() == kept);
        sgd_or_adam chosen_sgd = momentum_sgd();
        auto resumed = make_small();
        CHECK(load_checkpoint(resumed, chosen_sgd, dir / "sgd.ckpt").optimizer == "sgd");
        CHECK(chosen_sgd.get_if<sgd<float>>()->state() == opt.state());
        CHECK(lightloop::testing::identical(resumed.layer<0>().weights(),
                                            sgd_net.layer<0>().weights()));
    }
}
