// libFuzzer target for the IDX reader (plain and gzip): any input is either
// read consistently or refused with a lightloop::error; never a crash, a
// sanitizer report, or an allocation the file cannot back (run with
// -malloc_limit_mb).
#include <cstddef>
#include <cstdint>
#include <fstream>

#include <lightloop/data/idx.hpp>

#include "fuzz_network.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static const auto path = lightloop::fuzz::scratch_file("idx");
    {
        std::ofstream out(path, std::ios::binary | std::ios::trunc);
        out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
    }
    try {
        const auto array = lightloop::read_idx(path);
        std::size_t total = 1;
        for (const std::size_t d : array.dims) {
            total *= d;
        }
        if (array.dims.empty() || total != array.values.size()) {
            __builtin_trap(); // accepted, but the values do not fill the dimensions
        }
    } catch (const lightloop::error&) {
    }
    return 0;
}
