#pragma once
// zlib's CRC-32 over any length (zlib takes lengths that fit an unsigned int):
// checkpoints frame their payload with it, the NumPy archives their members.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>

#include <zlib.h>

namespace lightloop::detail {

/// The CRC-32 of `bytes`, or of what `crc` was the CRC-32 of followed by them.
inline std::uint32_t crc32_of(std::span<const std::byte> bytes, std::uint32_t crc_before = 0) {
    uLong crc = crc_before;
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
