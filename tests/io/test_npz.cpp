#include <catch2/catch.hpp>

#include <cstdint>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <xtensor/xarray.hpp>
#include <xtensor/xnpy.hpp>

#include "support/files.hpp"
#include "support/helpers.hpp"

using namespace lightloop;

namespace {
auto small_network(std::uint64_t seed, std::size_t hidden = 16) {
    return make_network<dfa<>, softmax_cross_entropy>(
      seed, dense<tanh_act>{6, hidden}, dense<tanh_act>{hidden, 8}, dense<identity>{8, 4});
}

std::string read_bytes(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::filesystem::path& path, const std::string& bytes) {
    std::ofstream(path, std::ios::binary) << bytes;
}
} // namespace

TEST_CASE("weights saved as .npz load back into a network of the same widths, bit for bit",
          "[io][npz]") {
    lightloop::testing::scratch_dir dir("npz_round_trip");
    auto net = small_network(3);
    const auto data = lightloop::testing::blobs_task(2, 10);
    sgd opt{{.learning_rate = 0.05, .momentum = 0.9}};
    for (int step = 0; step < 5; ++step) {
        net.train_step(data.inputs, data.targets, opt); // biases away from zero
    }
    save_weights_npz(net, dir / "net.npz");
    auto other = small_network(4); // other weights
    REQUIRE(lightloop::testing::parameters_of(other) != lightloop::testing::parameters_of(net));
    load_weights_npz(other, dir / "net.npz");
    CHECK(lightloop::testing::parameters_of(other) == lightloop::testing::parameters_of(net));
    CHECK(lightloop::testing::identical(other.forward(data.inputs), net.forward(data.inputs)));

    // The file names each array and gives it its layer's shape.
    const npz_file file(dir / "net.npz");
    CHECK(file.names() == std::vector<std::string>{"layer0.bias", "layer0.weight", "layer1.bias",
                                                   "layer1.weight", "layer2.bias",
                                                   "layer2.weight"});
    const auto [shape, values] = file.array<float>("layer1.weight");
    CHECK(shape == std::vector<std::size_t>{8, 16});
    CHECK(lightloop::testing::identical(file.matrix_array<float>("layer1.weight"),
                                        net.layer<1>().weights()));
    CHECK_FALSE(std::filesystem::exists(lightloop::detail::own_temporary_path(dir / "net.npz")));
}

TEST_CASE("loading refuses a file that does not fit the network, naming the array, and changes "
          "nothing",
          "[io][npz]") {
    lightloop::testing::scratch_dir dir("npz_refuse");
    auto net = small_network(3);
    save_weights_npz(net, dir / "net.npz");
    auto check_refused = [&](const std::filesystem::path& path, const std::string& message) {
        auto target = small_network(5);
        const auto before = lightloop::testing::parameters_of(target);
        CHECK_THROWS_AS(load_weights_npz(target, path), data_error);
        CHECK_THROWS_WITH(load_weights_npz(target, path), Catch::Contains(message));
        CHECK(lightloop::testing::parameters_of(target) == before);
    };
    // Other widths: the first array that differs, with both shapes.
    {
        auto wide = small_network(3, 17);
        auto before = lightloop::testing::parameters_of(wide);
        CHECK_THROWS_WITH(load_weights_npz(wide, dir / "net.npz"),
                          Catch::Contains("layer0.weight: the file has shape (16, 6), the network "
                                          "(17, 6)"));
        CHECK(lightloop::testing::parameters_of(wide) == before);
    }
    // A missing array and an array the network does not have.
    npz_writer partial;
    npz_writer extra;
    net.visit_layers([&](auto& l, std::size_t i) {
        const std::string stem = "layer" + std::to_string(i) + ".";
        partial.add(stem + "weight", l.weights());
        extra.add(stem + "weight", l.weights());
        extra.add(stem + "bias", std::span<const float>(l.bias().data(), l.bias().size()),
                  {l.bias().size()});
        if (i != 2) {
            partial.add(stem + "bias", std::span<const float>(l.bias().data(), l.bias().size()),
                        {l.bias().size()});
        }
    });
    partial.write(dir / "partial.npz");
    check_refused(dir / "partial.npz", "layer2.bias is not in the file");
    extra.add("momentum", net.layer<0>().weights());
    extra.write(dir / "extra.npz");
    check_refused(dir / "extra.npz", "the file has momentum.npy, which the network does not");
    // Another dtype: integers are not weights.
    npz_writer integers;
    const std::vector<int> counts(16 * 6, 1);
    integers.add("layer0.weight", std::span<const int>(counts), {16, 6});
    integers.write(dir / "integers.npz");
    check_refused(dir / "integers.npz", "dtype '<i4'");
    // A corrupt byte in an array's data, a truncated file, not an archive.
    std::string bytes = read_bytes(dir / "net.npz");
    std::string corrupt = bytes;
    corrupt[200] = static_cast<char>(corrupt[200] ^ 0x40);
    write_bytes(dir / "corrupt.npz", corrupt);
    check_refused(dir / "corrupt.npz", "CRC-32 mismatch");
    write_bytes(dir / "cut.npz", bytes.substr(0, bytes.size() - 30));
    check_refused(dir / "cut.npz", "no end of central directory");
    write_bytes(dir / "hollow.npz", bytes.substr(0, 100) + bytes.substr(bytes.size() - 22));
    check_refused(dir / "hollow.npz", "truncated archive");
    write_bytes(dir / "text.npz", "not a zip file at all, just text long enough");
    check_refused(dir / "text.npz", "not a ZIP archive");
    check_refused(dir / "absent.npz", "cannot open");
}

TEST_CASE("float64 and Fortran-order arrays load converted to the network's layout", "[io][npz]") {
    // What a Python user may hand back: float64 (numpy's default) and a transposed
    // (Fortran-ordered) weight matrix. The writer below stores layer0.weight as
    // the column-major array xtensor's own writer (xt::dump_npy) marks
    // fortran_order: True.
    lightloop::testing::scratch_dir dir("npz_convert");
    auto net = small_network(3);
    npz_writer out;
    net.visit_layers([&](auto& l, std::size_t i) {
        const std::string stem = "layer" + std::to_string(i) + ".";
        std::vector<double> w(l.weights().begin(), l.weights().end());
        for (double& v : w) {
            v *= 0.5;
        }
        out.add(stem + "weight", std::span<const double>(w),
                {l.weights().shape(0), l.weights().shape(1)});
        std::vector<double> b(l.bias().size(), 0.25 * static_cast<double>(i + 1));
        out.add(stem + "bias", std::span<const double>(b), {b.size()});
    });
    out.write(dir / "doubles.npz");
    auto target = small_network(5);
    load_weights_npz(target, dir / "doubles.npz");
    for (std::size_t r = 0; r < 8; ++r) {
        for (std::size_t c = 0; c < 16; ++c) {
            CHECK(target.layer<1>().weights()(r, c) == net.layer<1>().weights()(r, c) * 0.5f);
        }
    }
    CHECK(target.layer<2>().bias()(3) == 0.75f);

    // Fortran order: the archive built by hand around xtensor's column-major .npy.
    xt::xarray<float, xt::layout_type::column_major> f = xt::zeros<float>({16, 6});
    for (std::size_t r = 0; r < 16; ++r) {
        for (std::size_t c = 0; c < 6; ++c) {
            f(r, c) = static_cast<float>(10 * r + c);
        }
    }
    const std::string npy = xt::dump_npy(f);
    REQUIRE(npy.find("'fortran_order': True") != std::string::npos);
    detail::zip_writer zip;
    zip.add("layer0.weight.npy", npy);
    npz_file whole(dir / "doubles.npz");
    for (const auto& name : whole.names()) {
        if (name != "layer0.weight") {
            const auto [shape, values] = whole.array<double>(name);
            zip.add(name + ".npy", detail::npy_bytes(std::span<const double>(values), shape));
        }
    }
    write_bytes(dir / "fortran.npz", zip.finish());
    load_weights_npz(target, dir / "fortran.npz");
    CHECK(target.layer<0>().weights()(0, 5) == 5.0f);
    CHECK(target.layer<0>().weights()(15, 0) == 150.0f);
    CHECK(target.layer<0>().weights()(7, 3) == 73.0f);
}

namespace {
/// A user layer whose parameter_layout() disagrees with what visit_parameters
/// visits (one weight instead of out x in).
struct misdescribed_dense : dense<identity> {
    using dense<identity>::dense;
    std::vector<parameter_shape> parameter_layout() const {
        return {{"weight", {1, 1}}, {"bias", {output_size()}}};
    }
};
static_assert(layer<misdescribed_dense>);
} // namespace

TEST_CASE("a layer that misdescribes its parameters is refused by save and load, and nothing "
          "changes",
          "[io][npz]") {
    lightloop::testing::scratch_dir dir("npz_misdescribed");
    auto net = make_network<backprop, mse>(3, misdescribed_dense{4, 3});
    CHECK_THROWS_AS(save_weights_npz(net, dir / "net.npz"), shape_error);
    CHECK_FALSE(std::filesystem::exists(dir / "net.npz"));
    npz_writer out;
    const std::vector<float> one{2.0f};
    const std::vector<float> bias(3, 0.5f);
    out.add("layer0.weight", std::span<const float>(one), {1, 1});
    out.add("layer0.bias", std::span<const float>(bias), {3});
    out.write(dir / "small.npz");
    const auto before = lightloop::testing::parameters_of(net);
    CHECK_THROWS_WITH(load_weights_npz(net, dir / "small.npz"),
                      Catch::Contains("parameter_layout() does not match"));
    CHECK(lightloop::testing::parameters_of(net) == before);
}

namespace {
/// An archive holding one deflated member, `name`.npy, made of `npy` (as
/// numpy.savez_compressed writes it), its headers patched to declare
/// `declared` inflated bytes.
std::string deflated_archive(const std::string& name, const std::string& npy,
                             std::uint32_t declared) {
    detail::zip_writer zip;
    zip.add(name + ".npy", npy, true);
    std::string archive = zip.finish();
    const auto put = [&](std::size_t at, std::uint32_t v) {
        for (std::size_t i = 0; i < 4; ++i) {
            archive[at + i] = static_cast<char>((v >> (8 * i)) & 0xff);
        }
    };
    put(22, declared);                              // the local header's inflated size
    put(archive.find("PK\x01\x02") + 24, declared); // the central directory's
    return archive;
}
} // namespace

TEST_CASE("a deflated member is read as its stream gives it, and a size its bytes cannot "
          "inflate to is refused before anything is allocated",
          "[io][npz]") {
    lightloop::testing::scratch_dir dir("npz_deflated");
    // 40 000 floats: the output grows through several sizes.
    std::vector<float> values(40000);
    for (std::size_t i = 0; i < values.size(); ++i) {
        values[i] = static_cast<float>(i % 97) * 0.5f;
    }
    const std::string npy = detail::npy_bytes(std::span<const float>(values), {200, 200});
    const auto size = static_cast<std::uint32_t>(npy.size());
    const auto read = [&](std::uint32_t declared) {
        write_bytes(dir / "a.npz", deflated_archive("a", npy, declared));
        return npz_file(dir / "a.npz").array<float>("a");
    };
    const auto [shape, back] = read(size);
    CHECK(shape == std::vector<std::size_t>{200, 200});
    CHECK(back == values);
    // npz_writer's deflated members: the same values from a smaller file.
    npz_writer stored;
    npz_writer packed(npz_writer::members::deflated);
    for (npz_writer* w : {&stored, &packed}) {
        w->add("a", std::span<const float>(values), {200, 200});
    }
    stored.write(dir / "stored.npz");
    packed.write(dir / "packed.npz");
    CHECK(npz_file(dir / "packed.npz").array<float>("a").second == values);
    CHECK(std::filesystem::file_size(dir / "packed.npz") * 4 <
          std::filesystem::file_size(dir / "stored.npz"));
    // A network's weights saved deflated load back bit for bit.
    auto net = small_network(3);
    save_weights_npz(net, dir / "net.npz", npz_writer::members::deflated);
    auto other = small_network(5);
    load_weights_npz(other, dir / "net.npz");
    CHECK(lightloop::testing::parameters_of(other) == lightloop::testing::parameters_of(net));
    // A header claiming 4 GB from a few hundred bytes (the deflated stream):
    // refused by the ratio, with no 4 GB allocation (the fuzzer's limit).
    CHECK_THROWS_WITH(read(0xF0000000U), Catch::Contains("deflate expands 1032 times at most"));
    // Sizes the stream does not give, either way.
    CHECK_THROWS_WITH(read(size + 1000), Catch::Contains("a.npy: corrupt deflate stream"));
    CHECK_THROWS_WITH(read(size - 1), Catch::Contains("a.npy: corrupt deflate stream"));
}
