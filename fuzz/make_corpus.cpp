// Writes the fuzzers' seed corpora, from the current formats: valid IDX
// files (plain and gzip, several ranks); a checkpoint of the fuzz network
// after a few training steps, with a run record, whole (mode byte 0) and as a
// bare payload (mode byte 1); its weights as an .npz file, stored and
// deflated (mode byte 0), and one of its arrays as a bare .npy member (mode
// byte 1).
//   fuzz_make_corpus <directory>   ->  <directory>/idx, checkpoint, npz
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <vector>

#include <zlib.h>

#include "cli.hpp"
#include "fuzz_network.hpp"

namespace {

using bytes = std::vector<std::uint8_t>;

void write(const std::filesystem::path& path, const bytes& b) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

bytes idx(const std::vector<std::uint32_t>& dims) {
    bytes b{0, 0, 0x08, static_cast<std::uint8_t>(dims.size())};
    std::size_t total = 1;
    for (const auto d : dims) {
        b.push_back(static_cast<std::uint8_t>(d >> 24));
        b.push_back(static_cast<std::uint8_t>(d >> 16));
        b.push_back(static_cast<std::uint8_t>(d >> 8));
        b.push_back(static_cast<std::uint8_t>(d));
        total *= d;
    }
    for (std::size_t i = 0; i < total; ++i) {
        b.push_back(static_cast<std::uint8_t>(i * 37));
    }
    return b;
}

void write_gzip(const std::filesystem::path& path, const bytes& b) {
    gzFile f = gzopen(path.c_str(), "wb");
    gzwrite(f, b.data(), static_cast<unsigned>(b.size()));
    gzclose(f);
}

int write_corpus(const std::filesystem::path& root) {
    std::filesystem::create_directories(root / "idx");
    std::filesystem::create_directories(root / "checkpoint");
    std::filesystem::create_directories(root / "npz");
    write(root / "idx" / "rank1", idx({5}));
    write(root / "idx" / "rank3", idx({2, 3, 4}));
    write_gzip(root / "idx" / "rank2.gz", idx({4, 7}));

    auto net = lightloop::fuzz::make_network();
    auto opt = lightloop::fuzz::make_optimizer();
    const auto data = lightloop::make_blobs<float>(8, 4, 6, 6, 0.4, 1, 2);
    for (int step = 0; step < 3; ++step) {
        net.train_step(data.inputs, data.targets, opt);
    }
    const auto file = root / "checkpoint" / "saved.ckpt";
    // With fit's run record for its one epoch, so the record parser is seeded.
    lightloop::detail::epoch_log record;
    record.epochs.resize(1);
    record.epochs[0].epoch = 1;
    record.epochs[0].alignment_mean = {0.5, 0.25};
    record.epochs[0].has_device = true;
    lightloop::save_checkpoint(net, opt, file, 1, 7, 32, record);
    std::ifstream in(file, std::ios::binary);
    const bytes saved(std::istreambuf_iterator<char>(in), {});
    std::filesystem::remove(file);
    bytes whole{0};
    whole.insert(whole.end(), saved.begin(), saved.end());
    write(root / "checkpoint" / "whole", whole);
    bytes payload{1};
    payload.insert(payload.end(), saved.begin() + 16, saved.end() - 4);
    write(root / "checkpoint" / "payload", payload);

    // The weights as save_weights_npz writes them (stored), and deflated as
    // numpy.savez_compressed would, each a whole file (mode byte 0).
    const auto weights = root / "npz" / "saved.npz";
    const auto whole_file = [&](const std::string& seed) {
        std::ifstream npz(weights, std::ios::binary);
        bytes archive{0};
        archive.insert(archive.end(), std::istreambuf_iterator<char>(npz), {});
        npz.close();
        std::filesystem::remove(weights);
        write(root / "npz" / seed, archive);
    };
    lightloop::save_weights_npz(net, weights);
    whole_file("whole");
    lightloop::save_weights_npz(net, weights, lightloop::npz_writer::members::deflated);
    whole_file("deflated");
    const auto& w = net.layer<0>().weights();
    const std::string npy = lightloop::detail::npy_bytes(std::span<const float>(w.data(), w.size()),
                                                         {w.shape(0), w.shape(1)});
    bytes member{1};
    member.insert(member.end(), npy.begin(), npy.end());
    write(root / "npz" / "member", member);
    std::cout << "seed corpora written to " << root << "\n";
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    std::string directory;
    CLI::App app{"Writes the fuzz targets' seed corpora (IDX files and checkpoints in the current "
                 "formats) under DIRECTORY.",
                 "fuzz_make_corpus"};
    app.add_option("directory", directory, "where the corpora go")->required();
    return lightloop::programs::run(app, argc, argv, [&] { return write_corpus(directory); });
}
