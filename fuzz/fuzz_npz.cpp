// libFuzzer target for the .npz reader. The first byte picks the mode: even,
// the rest is a whole file; odd, the rest is the bytes of one .npy member,
// which the target stores in a valid archive (as layer0.weight.npy, with the
// right CRC-32), so the fuzzer reaches the .npy parser behind the checksum.
// Every array is read in both precisions and the file loaded into the fuzz
// network: each read ends in its values or in a lightloop::error; never a
// crash, a sanitizer report or an allocation the input cannot back.
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <string>

#include "fuzz_network.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) {
        return 0;
    }
    static const auto path = lightloop::fuzz::scratch_file("npz");
    static auto net = lightloop::fuzz::make_network();
    std::string file(reinterpret_cast<const char*>(data + 1), size - 1);
    if ((data[0] & 1) != 0) {
        lightloop::detail::zip_writer zip;
        zip.add("layer0.weight.npy", file);
        file = zip.finish();
    }
    {
        std::ofstream out(path, std::ios::binary | std::ios::trunc);
        out.write(file.data(), static_cast<std::streamsize>(file.size()));
    }
    try {
        const lightloop::npz_file archive(path);
        for (const std::string& name : archive.names()) {
            try {
                (void)archive.array<float>(name);
                (void)archive.array<double>(name);
            } catch (const lightloop::error&) {
            }
        }
    } catch (const lightloop::error&) {
    }
    try {
        lightloop::load_weights_npz(net, path);
    } catch (const lightloop::error&) {
    }
    return 0;
}
