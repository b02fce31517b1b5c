// libFuzzer target for the checkpoint loader. The first byte picks the mode:
// even, the rest is a whole file; odd, the rest is a payload that the target
// frames with the right magic, format, size and CRC-32, so the fuzzer reaches
// the parser behind the checksum. Any input is loaded or refused with a
// lightloop::error; never a crash, a sanitizer report or an unbounded
// allocation.
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <span>

#include "fuzz_network.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) {
        return 0;
    }
    static const auto path = lightloop::fuzz::scratch_file("checkpoint");
    static auto net = lightloop::fuzz::make_network();
    const auto rest = std::as_bytes(std::span(data + 1, size - 1));
    {
        std::ofstream out(path, std::ios::binary | std::ios::trunc);
        auto put = [&](std::span<const std::byte> bytes) {
            out.write(reinterpret_cast<const char*>(bytes.data()),
                      static_cast<std::streamsize>(bytes.size()));
        };
        if ((data[0] & 1) != 0) { // frame it the way save_checkpoint does
            const std::uint32_t crc = lightloop::detail::crc32_of(rest);
            put(lightloop::detail::checkpoint_header(rest.size()));
            put(rest);
            put(std::as_bytes(std::span(&crc, 1)));
        } else {
            put(rest);
        }
    }
    auto opt = lightloop::fuzz::make_optimizer();
    lightloop::detail::epoch_log record; // fit's run record, parsed too
    try {
        lightloop::load_checkpoint(net, opt, path, record);
    } catch (const lightloop::error&) {
    }
    return 0;
}
