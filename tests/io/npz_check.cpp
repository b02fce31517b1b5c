// The NumPy side of the weight export, in three steps CTest chains:
//   npz_check export DIR   trains a small network, writes DIR/weights.npz and
//                          DIR/probe.npz (an input batch and the network's output,
//                          deflated)
//   npz_numpy_check.py DIR reads them with numpy, redoes the forward pass, and
//                          writes DIR/from_numpy.npz (changed weights, compressed)
//                          and DIR/numpy_output.npz (numpy's output with them)
//   npz_check import DIR   loads DIR/from_numpy.npz and checks lightloop's output
//                          against numpy's
#include <lightloop/lightloop.hpp>

#include "cli.hpp"

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>

namespace {

auto make_net(std::uint64_t seed) {
    using namespace lightloop;
    return make_network<dfa<>, softmax_cross_entropy>(
      seed, dense<tanh_act>{6, 32}, dense<tanh_act>{32, 16}, dense<identity>{16, 4});
}

int export_files(const std::filesystem::path& dir) {
    using namespace lightloop;
    auto net = make_net(3);
    const auto data = make_blobs<float>(50, 4, 6, 6, 0.4, 1, 2);
    sgd opt{{.learning_rate = 0.05, .momentum = 0.9}};
    for (int step = 0; step < 20; ++step) {
        net.train_step(data.inputs, data.targets, opt);
    }
    std::filesystem::create_directories(dir);
    save_weights_npz(net, dir / "weights.npz");
    npz_writer probe(npz_writer::members::deflated); // as numpy.savez_compressed writes
    probe.add("input", data.inputs);
    probe.add("output", net.forward(data.inputs));
    // Other dtypes and shapes, for numpy to read: the input in float64, and
    // int32 and single-byte counts of one and zero dimensions.
    const std::vector<double> input64(data.inputs.begin(), data.inputs.end());
    probe.add("input64", std::span<const double>(input64),
              {data.inputs.shape(0), data.inputs.shape(1)});
    const std::vector<std::int32_t> counts{-3, 0, 70000};
    probe.add("counts", std::span<const std::int32_t>(counts), {3});
    const std::uint8_t one = 1;
    probe.add("scalar", std::span<const std::uint8_t>(&one, 1), {});
    // An empty array whose header text ends a 64-byte line exactly, which
    // numpy pads by a whole line more.
    probe.add("empty", std::span<const float>(), {0, 100, 1000, 1000, 1000, 1000, 1000, 1000});
    probe.write(dir / "probe.npz");
    std::printf("wrote %s and %s\n", (dir / "weights.npz").c_str(), (dir / "probe.npz").c_str());
    return 0;
}

int import_files(const std::filesystem::path& dir) {
    using namespace lightloop;
    auto net = make_net(9);
    load_weights_npz(net, dir / "from_numpy.npz");
    const npz_file probe(dir / "probe.npz");
    const npz_file expected(dir / "numpy_output.npz");
    const auto output = net.forward(probe.matrix_array<float>("input"));
    const auto numpy_output = expected.matrix_array<float>("output");
    if (output.shape() != numpy_output.shape()) {
        std::printf("output shapes differ\n");
        return 1;
    }
    double worst = 0;
    for (std::size_t i = 0; i < output.size(); ++i) {
        worst =
          std::max(worst, std::abs(static_cast<double>(output.data()[i] - numpy_output.data()[i])));
    }
    // float32 forward passes of width <= 32: rounding ~1e-6.
    std::printf("lightloop with numpy's weights against numpy's forward pass: max |diff| %.3g\n",
                worst);
    return worst < 1e-5 ? 0 : 1;
}

} // namespace

int main(int argc, char** argv) {
    std::string step;
    std::string dir;
    CLI::App app{"Round trip of a network's weights through NumPy (see the file comment).",
                 "npz_check"};
    app.add_option("step", step, "export or import")
      ->required()
      ->check(CLI::IsMember({"export", "import"}));
    app.add_option("dir", dir, "the files' directory")->required();
    return lightloop::programs::run(
      app, argc, argv, [&] { return step == "export" ? export_files(dir) : import_files(dir); });
}
