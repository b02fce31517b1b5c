// libFuzzer target for the checkpoint loader. The first byte picks the mode:
// even, the rest is a whole file; odd, the rest is a payload that the target
// frames with the right magic, format, size and CRC-32, so the fuzzer reaches
// the parser behind the checksum. Any input is loaded or refused with a
// lightloop::error; never a crash, a sanitizer report or an unbounded
// allocation.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <vector>

#include <zlib.h>

#include "fuzz_network.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) {
        return 0;
    }
    static const auto path = lightloop::fuzz::scratch_file("checkpoint");
    static auto net = lightloop::fuzz::make_network();
    std::vector<char> file;
    if ((data[0] & 1) == 0) {
        file.assign(data + 1, data + size);
    } else {
        const std::uint64_t payload = size - 1;
        const std::uint32_t format = lightloop::checkpoint_format;
        const auto crc = static_cast<std::uint32_t>(
          crc32(crc32(0L, Z_NULL, 0), data + 1, static_cast<uInt>(payload)));
        file.resize(20 + payload);
        std::memcpy(file.data(), "LLCK", 4);
        std::memcpy(file.data() + 4, &format, 4);
        std::memcpy(file.data() + 8, &payload, 8);
        std::memcpy(file.data() + 16, data + 1, payload);
        std::memcpy(file.data() + 16 + payload, &crc, 4);
    }
    {
        std::ofstream out(path, std::ios::binary | std::ios::trunc);
        out.write(file.data(), static_cast<std::streamsize>(file.size()));
    }
    auto opt = lightloop::fuzz::make_optimizer();
    try {
        lightloop::load_checkpoint(net, opt, path);
    } catch (const lightloop::error&) {
    }
    return 0;
}
