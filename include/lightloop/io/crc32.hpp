#pragma once
// zlib's CRC-32 over any length (zlib takes lengths that fit an unsigned int):
// checkpoints frame their payload with it, the NumPy archives their members.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>

#include <zlib.h>

namespace lightloop::detail {

inline std::uint32_t crc32_of(std::span<const std::byte> bytes) {
    uLong crc = crc32(0L, Z_NULL, 0);
    const auto* p = reinterpret_cast<const Bytef*>(bytes.data());
    std::size_t left = bytes.size();
    while (left > 0) {
        const auto piece = static_cast<uInt>(std::min<std::size_t>(left, 1u << 30));
        crc = crc32(crc, p, piece);
        p += piece;
        left -= piece;
    }
    return static_cast<std::uint32_t>(crc);
}

} // namespace lightloop::detail
