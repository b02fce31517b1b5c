#include <catch2/catch.hpp>

#include "support/files.hpp"
#include "support/helpers.hpp"

using namespace lightloop;

TEST_CASE("a checkpoint restores every parameter and refuses a mismatch", "[io][checkpoint]") {
    lightloop::testing::scratch_dir dir("checkpoint");
    auto net =
      make_network<dfa<>, softmax_cross_entropy>(1, dense<tanh_act>{6, 9}, dense<identity>{9, 4});
    save_checkpoint(net, dir / "a.ckpt", 12);
    const matrix<float> w0 = net.layer<0>().weights();
    const vector<float> b1 = net.layer<1>().bias();
    net.layer<0>().weights() *= 2.0f;
    net.layer<1>().bias() += 1.0f;
    CHECK(load_checkpoint(net, dir / "a.ckpt") == 12);
    CHECK(lightloop::testing::identical(net.layer<0>().weights(), w0));
    CHECK(lightloop::testing::identical(net.layer<1>().bias(), b1));

    auto other =
      make_network<dfa<>, softmax_cross_entropy>(1, dense<tanh_act>{6, 8}, dense<identity>{8, 4});
    const matrix<float> before = other.layer<0>().weights();
    CHECK_THROWS_WITH(load_checkpoint(other, dir / "a.ckpt"),
                      Catch::Contains("parameter tensor 0 has 54 values") &&
                        Catch::Contains("the network's has 48"));
    CHECK(lightloop::testing::identical(other.layer<0>().weights(), before)); // untouched

    auto bytes = lightloop::testing::read_bytes(dir / "a.ckpt");
    bytes.resize(bytes.size() - 3);
    lightloop::testing::write_bytes(dir / "cut.ckpt", bytes);
    CHECK_THROWS_WITH(load_checkpoint(net, dir / "cut.ckpt"), Catch::Contains("truncated"));
    lightloop::testing::write_bytes(dir / "junk.ckpt", {'n', 'o', 'p', 'e'});
    CHECK_THROWS_WITH(load_checkpoint(net, dir / "junk.ckpt"),
                      Catch::Contains("not a lightloop checkpoint"));

    auto doubles = make_network<dfa<>, softmax_cross_entropy>(1, dense<tanh_act, double>{6, 9},
                                                              dense<identity, double>{9, 4});
    CHECK_THROWS_WITH(load_checkpoint(doubles, dir / "a.ckpt"), Catch::Contains("4-byte scalars"));
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
