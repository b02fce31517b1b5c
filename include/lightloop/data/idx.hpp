#pragma once
// IDX files (the MNIST family's format), plain or gzip-compressed.
//
// Format: two zero bytes, a type byte (0x08: unsigned byte), a rank byte,
// then `rank` big-endian uint32 dimensions, then the values in row-major
// order. Every fault is a data_error naming the file: a file that cannot be
// opened, a wrong magic number, a rank other than the one expected, absurd
// dimensions, a truncated file, trailing bytes, or a corrupted gzip stream.
// Nothing is allocated on the header's word: a plain file's size is checked
// against the dimensions first, and gzip data is inflated in bounded chunks,
// so a lying header can make the reader fail but not allocate more than the
// file really holds (or `max_bytes`).

#include <zlib.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "lightloop/core/error.hpp"

namespace lightloop {

struct idx_array {
    std::vector<std::size_t> dims;
    std::vector<std::uint8_t> values;
};

struct idx_limits {
    /// The largest payload accepted, in bytes.
    std::size_t max_bytes = std::size_t{1} << 32;
    /// The largest value accepted for any dimension but the first.
    std::size_t max_dimension = 1u << 16;
};

namespace detail {

[[noreturn]] inline void idx_fail(const std::filesystem::path& path, const std::string& fault) {
    throw data_error("lightloop: " + path.string() + ": " + fault);
}

struct gz_closer {
    void operator()(gzFile_s* f) const noexcept { gzclose(f); }
};

/// Reads up to `count` bytes; returns how many arrived. A zlib error throws.
inline std::size_t gz_read_some(gzFile file, const std::filesystem::path& path, std::uint8_t* into,
                                std::size_t count) {
    std::size_t done = 0;
    while (done < count) {
        const auto chunk =
          static_cast<unsigned>(std::min<std::size_t>(count - done, std::size_t{1} << 24));
        const int got = gzread(file, into + done, chunk);
        if (got <= 0) {
            int code = 0;
            const char* message = gzerror(file, &code);
            if (code == Z_BUF_ERROR) {
                idx_fail(path, "truncated: the gzip stream ends early");
            }
            if (got < 0 || (code != Z_OK && code != Z_STREAM_END)) {
                idx_fail(path, std::string("corrupted gzip stream (") +
                                 (message != nullptr ? message : "zlib error") + ")");
            }
            break;
        }
        done += static_cast<std::size_t>(got);
    }
    return done;
}

} // namespace detail

/// Reads an unsigned-byte IDX file of rank `expected_rank` (0: any rank).
inline idx_array read_idx(const std::filesystem::path& path, std::size_t expected_rank = 0,
                          idx_limits limits = {}) {
    using detail::idx_fail;
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec)) {
        idx_fail(path, "no such file");
    }
    std::unique_ptr<gzFile_s, detail::gz_closer> file(gzopen(path.c_str(), "rb"));
    if (!file) {
        idx_fail(path, "cannot open");
    }
    // zlib reads a plain file transparently; gzdirect says which it found.
    const bool compressed = gzdirect(file.get()) == 0;
    std::array<std::uint8_t, 4> magic{};
    if (detail::gz_read_some(file.get(), path, magic.data(), 4) != 4) {
        idx_fail(path, "truncated: shorter than the 4-byte IDX magic number");
    }
    const std::uint32_t magic_value = (std::uint32_t{magic[0]} << 24) |
                                      (std::uint32_t{magic[1]} << 16) |
                                      (std::uint32_t{magic[2]} << 8) | std::uint32_t{magic[3]};
    char hex[16];
    std::snprintf(hex, sizeof hex, "0x%08x", magic_value);
    if (magic[0] != 0 || magic[1] != 0 || magic[2] != 0x08 || magic[3] == 0 ||
        (expected_rank != 0 && magic[3] != expected_rank)) {
        std::string expected = expected_rank != 0 ? "0x0000080" + std::to_string(expected_rank)
                                                  : std::string("0x000008NN");
        idx_fail(path, std::string("wrong magic number ") + hex + " (expected " + expected +
                         ": unsigned-byte IDX of rank " +
                         (expected_rank != 0 ? std::to_string(expected_rank) : "any") + ")");
    }
    const std::size_t rank = magic[3];
    std::vector<std::uint8_t> header(4 * rank);
    if (detail::gz_read_some(file.get(), path, header.data(), header.size()) != header.size()) {
        idx_fail(path, "truncated: header ends inside the dimensions");
    }
    idx_array out;
    std::size_t total = 1;
    for (std::size_t d = 0; d < rank; ++d) {
        const std::size_t dim =
          (std::size_t{header[4 * d]} << 24) | (std::size_t{header[4 * d + 1]} << 16) |
          (std::size_t{header[4 * d + 2]} << 8) | std::size_t{header[4 * d + 3]};
        if (dim == 0 || (d > 0 && dim > limits.max_dimension)) {
            idx_fail(path, "absurd dimensions: dimension " + std::to_string(d) + " is " +
                             std::to_string(dim));
        }
        if (total > limits.max_bytes / dim) {
            idx_fail(path, "absurd dimensions: more than " + std::to_string(limits.max_bytes) +
                             " bytes of data declared");
        }
        total *= dim;
        out.dims.push_back(dim);
    }
    const std::size_t header_bytes = 4 + 4 * rank;
    if (!compressed) {
        const auto size = static_cast<std::size_t>(std::filesystem::file_size(path, ec));
        if (size < header_bytes + total) {
            idx_fail(path, "truncated: the header declares " + std::to_string(total) +
                             " bytes of data but the file holds " +
                             std::to_string(size - header_bytes));
        }
        if (size > header_bytes + total) {
            idx_fail(path, std::to_string(size - header_bytes - total) +
                             " unexpected bytes after the data");
        }
        out.values.resize(total);
        if (detail::gz_read_some(file.get(), path, out.values.data(), total) != total) {
            idx_fail(path, "truncated while reading");
        }
        return out;
    }
    // Inflate in chunks: memory grows only as data actually arrives.
    constexpr std::size_t chunk = std::size_t{1} << 22;
    while (out.values.size() < total) {
        const std::size_t start = out.values.size();
        const std::size_t want = std::min(chunk, total - start);
        out.values.resize(start + want);
        const std::size_t got =
          detail::gz_read_some(file.get(), path, out.values.data() + start, want);
        if (got < want) {
            idx_fail(path, "truncated: the header declares " + std::to_string(total) +
                             " bytes of data but the stream holds " + std::to_string(start + got));
        }
    }
    std::uint8_t extra = 0;
    if (detail::gz_read_some(file.get(), path, &extra, 1) != 0) {
        idx_fail(path, "unexpected bytes after the data");
    }
    return out;
}

} // namespace lightloop
