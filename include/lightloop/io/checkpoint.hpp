#pragma once
// Checkpoints, simple format (version 1): every parameter tensor of a network
// in slot order, with the epoch. Written atomically: to a temporary file in
// the same directory, flushed, then renamed over the target, so a crash during
// a save leaves the previous checkpoint intact. Fixed random matrices are not
// stored: they are regenerated from the network's seed.
//
// Layout (little-endian): "LLCK" | u32 version | u32 scalar bytes |
// u64 epoch | u64 tensor count | per tensor: u64 length, values.

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <type_traits>
#include <vector>

#include "lightloop/core/error.hpp"

namespace lightloop {

inline constexpr std::uint32_t checkpoint_version = 1;

namespace detail {

template <class V>
void write_pod(std::ofstream& out, const V& value) {
    out.write(reinterpret_cast<const char*>(&value), sizeof(V));
}

template <class V>
V read_pod(std::ifstream& in, const std::filesystem::path& path, const char* what) {
    V value{};
    in.read(reinterpret_cast<char*>(&value), sizeof(V));
    if (!in) {
        throw data_error("lightloop: " + path.string() + ": truncated checkpoint (reading " + what +
                         ")");
    }
    return value;
}

} // namespace detail

/// Saves every parameter of `net` and `epoch` to `path`, atomically.
template <class Network>
void save_checkpoint(Network& net, const std::filesystem::path& path, std::uint64_t epoch) {
    using T = typename Network::value_type;
    const std::filesystem::path temporary = path.string() + ".tmp";
    {
        std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
        if (!out) {
            throw data_error("lightloop: " + temporary.string() + ": cannot write checkpoint");
        }
        out.write("LLCK", 4);
        detail::write_pod(out, checkpoint_version);
        detail::write_pod(out, static_cast<std::uint32_t>(sizeof(T)));
        detail::write_pod(out, epoch);
        std::uint64_t tensors = 0;
        net.visit_layers([&](auto& layer, std::size_t) {
            layer.visit_parameters([&](auto, auto) { ++tensors; });
        });
        detail::write_pod(out, tensors);
        net.visit_layers([&](auto& layer, std::size_t) {
            layer.visit_parameters([&](auto values, auto) {
                detail::write_pod(out, static_cast<std::uint64_t>(values.size()));
                out.write(reinterpret_cast<const char*>(values.data()),
                          static_cast<std::streamsize>(values.size() * sizeof(T)));
            });
        });
        out.flush();
        if (!out) {
            throw data_error("lightloop: " + temporary.string() + ": write failed (disk full?)");
        }
    }
    std::error_code ec;
    std::filesystem::rename(temporary, path, ec);
    if (ec) {
        throw data_error("lightloop: " + path.string() + ": cannot replace checkpoint (" +
                         ec.message() + ")");
    }
}

/// Loads parameters saved by save_checkpoint into `net` (same architecture)
/// and returns the epoch. Validates everything before changing anything.
template <class Network>
std::uint64_t load_checkpoint(Network& net, const std::filesystem::path& path) {
    using T = typename Network::value_type;
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        throw data_error("lightloop: " + path.string() + ": cannot open checkpoint");
    }
    char magic[4] = {};
    in.read(magic, 4);
    if (!in || std::string(magic, 4) != "LLCK") {
        throw data_error("lightloop: " + path.string() + ": not a lightloop checkpoint");
    }
    const auto version = detail::read_pod<std::uint32_t>(in, path, "version");
    if (version != checkpoint_version) {
        throw data_error("lightloop: " + path.string() + ": checkpoint version " +
                         std::to_string(version) + ", this library reads " +
                         std::to_string(checkpoint_version));
    }
    const auto scalar_bytes = detail::read_pod<std::uint32_t>(in, path, "scalar size");
    if (scalar_bytes != sizeof(T)) {
        throw data_error("lightloop: " + path.string() + ": checkpoint holds " +
                         std::to_string(scalar_bytes) + "-byte scalars, the network uses " +
                         std::to_string(sizeof(T)));
    }
    const auto epoch = detail::read_pod<std::uint64_t>(in, path, "epoch");
    const auto tensors = detail::read_pod<std::uint64_t>(in, path, "tensor count");
    std::vector<std::vector<T>> values;
    std::vector<std::size_t> expected;
    net.visit_layers([&](auto& layer, std::size_t) {
        layer.visit_parameters([&](auto v, auto) { expected.push_back(v.size()); });
    });
    if (tensors != expected.size()) {
        throw data_error("lightloop: " + path.string() + ": checkpoint has " +
                         std::to_string(tensors) + " parameter tensors, the network " +
                         std::to_string(expected.size()));
    }
    for (std::size_t t = 0; t < expected.size(); ++t) {
        const auto length = detail::read_pod<std::uint64_t>(in, path, "tensor length");
        if (length != expected[t]) {
            throw data_error("lightloop: " + path.string() + ": parameter tensor " +
                             std::to_string(t) + " has " + std::to_string(length) +
                             " values, the network's has " + std::to_string(expected[t]));
        }
        values.emplace_back(expected[t]);
        in.read(reinterpret_cast<char*>(values.back().data()),
                static_cast<std::streamsize>(expected[t] * sizeof(T)));
        if (!in) {
            throw data_error("lightloop: " + path.string() + ": truncated checkpoint (tensor " +
                             std::to_string(t) + ")");
        }
    }
    std::size_t t = 0;
    net.visit_layers([&](auto& layer, std::size_t) {
        layer.visit_parameters([&](auto v, auto) {
            std::copy(values[t].begin(), values[t].end(), v.begin());
            ++t;
        });
    });
    return epoch;
}

} // namespace lightloop
