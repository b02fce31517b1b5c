#include <catch2/catch.hpp>

#include "support/files.hpp"
#include "support/helpers.hpp"

using namespace lightloop;
using lightloop::testing::idx_bytes;
using lightloop::testing::scratch_dir;
using lightloop::testing::write_bytes;
using lightloop::testing::write_gzip;

namespace {
/// A small MNIST-layout directory: n images of 3x4 pixels with pixel value
/// (i * 12 + p) % 256 and label i % classes.
void write_mnist_dir(const scratch_dir& dir, std::size_t n_train, std::size_t n_test, bool gz) {
    auto write = [&](const std::string& stem, std::size_t n) {
        std::vector<std::uint8_t> pixels(n * 12);
        for (std::size_t i = 0; i < pixels.size(); ++i) {
            pixels[i] = static_cast<std::uint8_t>(i % 256);
        }
        std::vector<std::uint8_t> labels(n);
        for (std::size_t i = 0; i < n; ++i) {
            labels[i] = static_cast<std::uint8_t>(i % 10);
        }
        const auto images = idx_bytes({static_cast<std::uint32_t>(n), 3, 4}, pixels);
        const auto label_bytes = idx_bytes({static_cast<std::uint32_t>(n)}, labels);
        if (gz) {
            write_gzip(dir / (stem + "-images-idx3-ubyte.gz"), images);
            write_gzip(dir / (stem + "-labels-idx1-ubyte.gz"), label_bytes);
        } else {
            write_bytes(dir / (stem + "-images-idx3-ubyte"), images);
            write_bytes(dir / (stem + "-labels-idx1-ubyte"), label_bytes);
        }
    };
    write("train", n_train);
    write("t10k", n_test);
}
} // namespace

TEST_CASE("IDX files are read plain and gzip-compressed", "[data][idx]") {
    scratch_dir dir("idx_read");
    const std::vector<std::uint8_t> values{1, 2, 3, 4, 5, 6, 250, 255, 0, 7, 8, 9};
    write_bytes(dir / "plain", idx_bytes({2, 2, 3}, values));
    write_gzip(dir / "packed.gz", idx_bytes({2, 2, 3}, values));
    for (const char* name : {"plain", "packed.gz"}) {
        CAPTURE(name);
        const auto a = read_idx(dir / name, 3);
        CHECK(a.dims == std::vector<std::size_t>{2, 2, 3});
        CHECK(a.values == values);
    }
}

TEST_CASE("malformed IDX files are refused with the file and the fault", "[data][idx]") {
    scratch_dir dir("idx_bad");
    const std::vector<std::uint8_t> values(2 * 3 * 4, 9);
    const auto good = idx_bytes({2, 3, 4}, values);

    SECTION("wrong magic: a label file where images are expected") {
        write_bytes(dir / "f", idx_bytes({24}, values));
        CHECK_THROWS_WITH(read_idx(dir / "f", 3),
                          Catch::Contains((dir / "f").string()) &&
                            Catch::Contains("wrong magic number 0x00000801"));
    }
    SECTION("wrong magic: not IDX at all") {
        write_bytes(dir / "f", {'P', 'K', 3, 4, 0, 0, 0, 0});
        CHECK_THROWS_WITH(read_idx(dir / "f"), Catch::Contains("wrong magic number 0x504b0304"));
    }
    SECTION("truncated plain file") {
        auto cut = good;
        cut.resize(cut.size() - 5);
        write_bytes(dir / "f", cut);
        CHECK_THROWS_WITH(read_idx(dir / "f", 3), Catch::Contains("truncated") &&
                                                    Catch::Contains("declares 24 bytes") &&
                                                    Catch::Contains("holds 19"));
    }
    SECTION("truncated inside the header") {
        write_bytes(dir / "f", {0, 0, 8, 3, 0, 0});
        CHECK_THROWS_WITH(read_idx(dir / "f", 3), Catch::Contains("truncated"));
    }
    SECTION("trailing bytes") {
        auto longer = good;
        longer.push_back(1);
        write_bytes(dir / "f", longer);
        CHECK_THROWS_WITH(read_idx(dir / "f", 3), Catch::Contains("1 unexpected bytes"));
    }
    SECTION("absurd dimensions are refused before allocating") {
        // 4e9 images of 65535 x 65535 pixels: far past any limit.
        write_bytes(dir / "f", idx_bytes({4000000000u, 65535, 65535}, {}));
        CHECK_THROWS_WITH(read_idx(dir / "f", 3), Catch::Contains("absurd dimensions"));
        write_bytes(dir / "g", idx_bytes({10, 0, 28}, {}));
        CHECK_THROWS_WITH(read_idx(dir / "g", 3), Catch::Contains("dimension 1 is 0"));
    }
    SECTION("a gzip stream cut short") {
        write_gzip(dir / "f.gz", good);
        auto packed = lightloop::testing::read_bytes(dir / "f.gz");
        packed.resize(packed.size() / 2);
        write_bytes(dir / "f.gz", packed);
        CHECK_THROWS_WITH(read_idx(dir / "f.gz", 3),
                          Catch::Contains("f.gz") && Catch::Contains("truncated"));
    }
    SECTION("a corrupted gzip stream") {
        std::vector<std::uint8_t> big(5000);
        for (std::size_t i = 0; i < big.size(); ++i) {
            big[i] = static_cast<std::uint8_t>((i * 7919) % 251);
        }
        write_gzip(dir / "f.gz", idx_bytes({5000}, big));
        auto packed = lightloop::testing::read_bytes(dir / "f.gz");
        for (std::size_t i = 20; i < packed.size() - 10; i += 3) {
            packed[i] ^= 0x5a;
        }
        write_bytes(dir / "f.gz", packed);
        CHECK_THROWS_WITH(read_idx(dir / "f.gz", 1),
                          Catch::Contains("f.gz") &&
                            (Catch::Contains("corrupted gzip") || Catch::Contains("wrong magic")));
    }
    SECTION("a missing file") {
        CHECK_THROWS_WITH(read_idx(dir / "nothing"), Catch::Contains("no such file"));
    }
}

TEST_CASE("an MNIST-layout directory loads, plain or gzip, with its checks", "[data][idx]") {
    for (const bool gz : {false, true}) {
        CAPTURE(gz);
        scratch_dir dir(gz ? "mnist_gz" : "mnist_plain");
        write_mnist_dir(dir, 30, 20, gz);
        const auto data = load_mnist(dir.path());
        REQUIRE(data.train.size() == 30);
        REQUIRE(data.test.size() == 20);
        CHECK(data.rows == 3);
        CHECK(data.cols == 4);
        CHECK(data.train.inputs.shape(1) == 12);
        // Pixel i of the file is i % 256, scaled to [0, 1].
        CHECK(data.train.inputs(2, 5) == Approx(static_cast<float>((2 * 12 + 5) % 256) / 255.0f));
        CHECK(data.train.labels[13] == 3);
        CHECK(data.train.targets(13, 3) == 1.0f);
        const auto limited = load_mnist(dir.path(), {.train_limit = 10});
        CHECK(limited.train.size() == 10);
        const auto standard = load_mnist(dir.path(), {.standardize = true});
        const auto m = lightloop::testing::moments_of(standard.train.inputs);
        CHECK(m.mean == Approx(0.0).margin(1e-5));
        CHECK(m.variance == Approx(1.0).epsilon(1e-4));
    }
}

TEST_CASE("inconsistent image and label files are refused", "[data][idx]") {
    scratch_dir dir("mnist_bad");
    write_mnist_dir(dir, 30, 20, false);
    SECTION("counts differ") {
        write_bytes(dir / "t10k-labels-idx1-ubyte",
                    idx_bytes({19}, std::vector<std::uint8_t>(19, 1)));
        CHECK_THROWS_WITH(load_mnist(dir.path()),
                          Catch::Contains("has 20 images") && Catch::Contains("has 19 labels"));
    }
    SECTION("a label outside the classes") {
        std::vector<std::uint8_t> labels(20, 1);
        labels[7] = 12;
        write_bytes(dir / "t10k-labels-idx1-ubyte", idx_bytes({20}, labels));
        CHECK_THROWS_WITH(load_mnist(dir.path()), Catch::Contains("label 12 at index 7") &&
                                                    Catch::Contains("t10k-labels-idx1-ubyte"));
    }
    SECTION("a missing file") {
        std::filesystem::remove(dir / "train-labels-idx1-ubyte");
        CHECK_THROWS_WITH(load_mnist(dir.path()),
                          Catch::Contains("train-labels-idx1-ubyte[.gz]: no such file"));
    }
    CHECK_THROWS_WITH(load_mnist(dir / "nope"), Catch::Contains("no such directory"));
}
