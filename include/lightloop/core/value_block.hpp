#pragma once
// Contiguous blocks of a tensor's values, one per process: how a sum over
// processes divides its work (each block finished by one process), and how
// a sharded update divides a parameter tensor (each process updates one
// block). The blocks start on multiples of 16 values: an element-wise pass
// over a block (simd::for_each_lane) then treats every value as the pass
// over the whole tensor does (in a vector, or in the scalar tail at the
// tensor's end, never in a block's scalar tail), so that an update done
// block by block gives the same bits as one done at once, whatever the
// compiler contracts. 16 values are a 64-byte cache line of floats, which
// also keeps two processes off one line.

#include <algorithm>
#include <cstddef>

namespace lightloop {

/// Values [first, first + count) of a tensor.
struct value_block {
    std::size_t first = 0;
    std::size_t count = 0;
    friend constexpr bool operator==(value_block, value_block) noexcept = default;
};

/// Block starts are multiples of this many values (see the file comment).
inline constexpr std::size_t value_block_granule = 16;

/// Block b of p contiguous blocks that tile [0, n): about n / p values
/// each, starts rounded down to value_block_granule (so a small tensor's
/// early blocks may be empty and its last one hold it all).
constexpr value_block block_of(std::size_t n, std::size_t b, std::size_t p) noexcept {
    const auto start = [&](std::size_t k) {
        return k >= p ? n : n * k / p / value_block_granule * value_block_granule;
    };
    return {start(b), start(b + 1) - start(b)};
}

/// The most values any of block_of(n, ., p) holds.
constexpr std::size_t largest_block(std::size_t n, std::size_t p) noexcept {
    std::size_t largest = 0;
    for (std::size_t b = 0; b < p; ++b) {
        largest = std::max(largest, block_of(n, b, p).count);
    }
    return largest;
}

} // namespace lightloop
