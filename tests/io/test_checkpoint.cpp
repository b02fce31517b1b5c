#include <catch2/catch.hpp>

#include "support/files.hpp"
#include "support/helpers.hpp"

#include <cstring>
#include <filesystem>
#include <span>

using namespace lightloop;

namespace {

using small_dfa = network<dfa<>, softmax_cross_entropy, dense<tanh_act>, dense<identity>>;

small_dfa make_small(std::size_t hidden = 9, std::uint64_t seed = 1) {
    return small_dfa(dfa<>{}, softmax_cross_entropy{}, seed, dense<tanh_act>{6, hidden},
                     dense<identity>{hidden, 4});
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
    sgd opt{{.learning_rate = 0.05, .momentum = 0.9}};
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
    sgd opt{{.learning_rate = 0.05, .momentum = 0.9}};
    train_a_little(net, opt, 2);
    save_checkpoint(net, opt, dir / "a.ckpt", 3);
    const auto good = lightloop::testing::read_bytes(dir / "a.ckpt");

    auto target = make_small(9, 1);
    sgd target_opt{{.learning_rate = 0.05, .momentum = 0.9}};
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
    SECTION("a newer format") {
        auto bytes = good;
        bytes[4] = 3;
        refuses(bytes, "checkpoint format 3 is newer than this library reads (2)");
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

TEST_CASE("a failed save leaves the previous checkpoint intact", "[io][checkpoint]") {
    lightloop::testing::scratch_dir dir("checkpoint_atomic");
    auto net = make_small();
    save_checkpoint(net, dir / "a.ckpt", 1);
    const auto first = lightloop::testing::read_bytes(dir / "a.ckpt");
    // The temporary file's name is taken by a directory: the write fails.
    std::filesystem::create_directory(dir / "a.ckpt.tmp");
    net.layer<0>().weights() *= 2.0f;
    CHECK_THROWS_WITH(save_checkpoint(net, dir / "a.ckpt", 2),
                      Catch::Contains("cannot write checkpoint"));
    CHECK(lightloop::testing::read_bytes(dir / "a.ckpt") == first);
    CHECK(load_checkpoint(net, dir / "a.ckpt").epoch == 1);
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
