#pragma once
// Checkpoints (format 3): everything a run needs to continue bit-identically,
// and what it has recorded so far.
//
// File: "LLCK" | u32 format | u64 payload bytes | payload | u32 CRC-32 (zlib)
// of the payload. Payload, in order:
//   library version (text); scalar bytes (u32);
//   architecture signature (text, one "key: value" line per item: scalar,
//     seed, loss, feedback method with its device and the device's
//     parameters, every layer's type and sizes);
//   epoch, network step count (u64); fit seed and batch size (u64, 0 when
//     saved outside fit);
//   optimizer name (text), then its state as a sized block (moments, step
//     count; empty for optimizers without state);
//   parameter tensors (u64 count; each a u64 length and the values), each
//     layer's parameters followed by its buffers (batch_norm's running
//     estimates);
//   feedback state as a sized block (an optical device's calibration,
//     statistics and noise counter; empty for dense devices);
//   run record as a sized block (fit's per-epoch records; empty when saved
//     outside fit). Format 2, without it, still loads.
// Fixed random matrices (feedback matrices, the transmission matrix, the
// reference) are regenerated from the seed, never stored. The data order is
// derived from (fit seed, epoch), and the camera noise of each block of an
// optical projection from (seed, block counter): those counters are the RNG
// state, so nothing else random needs saving.
//
// Writing: to "<path>.tmp" in the same directory, fsync, rename over <path>,
// fsync the directory. A crash at any point leaves the previous checkpoint
// or the new one, never a mixture. Loading reads the whole file, checks
// magic, format, size, CRC and signature, stages every component, and only
// then changes the network and optimizer: a refused file changes nothing.

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <zlib.h>

#include "lightloop/core/describe.hpp"
#include "lightloop/core/error.hpp"
#include "lightloop/io/atomic_file.hpp"
#include "lightloop/io/crc32.hpp"
#include "lightloop/io/state.hpp"
#include "lightloop/version.hpp"

namespace lightloop {

inline constexpr std::uint32_t checkpoint_format = 3;
/// The oldest format load_checkpoint reads (format 2 lacks the run record).
inline constexpr std::uint32_t checkpoint_oldest_format = 2;

/// What a checkpoint says about the run it came from.
struct checkpoint_info {
    std::uint64_t epoch = 0;
    std::uint64_t steps = 0;
    std::uint64_t fit_seed = 0;
    std::uint64_t batch = 0;
    std::string library_version;
    std::string optimizer;
    std::string architecture;
};

namespace detail {

template <class L>
std::string layer_signature(const L& l) {
    if constexpr (requires { l.signature(); }) {
        return l.signature();
    } else {
        return name_of<L>() + " " + std::to_string(l.input_size()) + " -> " +
               std::to_string(l.output_size());
    }
}

inline constexpr char checkpoint_magic[4] = {'L', 'L', 'C', 'K'};

/// The 16 bytes before a payload: magic, format, payload size. The CRC-32 of
/// the payload (crc32_of) follows it.
inline std::array<std::byte, 16> checkpoint_header(std::uint64_t payload_size) {
    std::array<std::byte, 16> header;
    std::memcpy(header.data(), checkpoint_magic, 4);
    std::memcpy(header.data() + 4, &checkpoint_format, 4);
    std::memcpy(header.data() + 8, &payload_size, 8);
    return header;
}

/// Reads a whole checkpoint file and checks its frame: magic, format, size,
/// CRC. Returns the payload; `format` receives the file's format.
inline std::vector<std::byte> read_checkpoint_payload(const std::filesystem::path& path,
                                                      std::uint32_t& format_out) {
    std::error_code ec;
    const auto file_size = std::filesystem::file_size(path, ec);
    if (ec) {
        throw data_error("lightloop: " + path.string() + ": cannot open checkpoint (" +
                         ec.message() + ")");
    }
    const std::string where = path.string();
    constexpr std::size_t frame = 4 + 4 + 8 + 4;
    if (file_size < 8) {
        throw data_error("lightloop: " + where + ": truncated checkpoint (" +
                         std::to_string(file_size) + " bytes)");
    }
    std::ifstream in(path, std::ios::binary);
    char head[16] = {};
    in.read(head, static_cast<std::streamsize>(std::min<std::uintmax_t>(file_size, 16)));
    if (!in && !in.eof()) {
        throw data_error("lightloop: " + where + ": cannot read checkpoint");
    }
    if (std::memcmp(head, checkpoint_magic, 4) != 0) {
        throw data_error("lightloop: " + where + ": not a lightloop checkpoint (bad magic)");
    }
    std::uint32_t format = 0;
    std::memcpy(&format, head + 4, 4);
    if (format > checkpoint_format) {
        throw data_error("lightloop: " + where + ": checkpoint format " + std::to_string(format) +
                         " is newer than this library reads (" + std::to_string(checkpoint_format) +
                         "); upgrade lightloop");
    }
    if (format < checkpoint_oldest_format) {
        throw data_error("lightloop: " + where + ": checkpoint format " + std::to_string(format) +
                         " predates optimizer and device state; this library reads formats " +
                         std::to_string(checkpoint_oldest_format) + " to " +
                         std::to_string(checkpoint_format));
    }
    format_out = format;
    if (file_size < frame) {
        throw data_error("lightloop: " + where + ": truncated checkpoint (" +
                         std::to_string(file_size) + " bytes)");
    }
    std::uint64_t payload_size = 0;
    std::memcpy(&payload_size, head + 8, 8);
    if (payload_size != file_size - frame) {
        throw data_error("lightloop: " + where + ": " +
                         (payload_size > file_size - frame ? "truncated checkpoint"
                                                           : "trailing bytes after checkpoint") +
                         " (header says " + std::to_string(payload_size) +
                         " payload bytes, the file holds " + std::to_string(file_size - frame) +
                         ")");
    }
    std::vector<std::byte> payload(static_cast<std::size_t>(payload_size));
    in.seekg(16);
    in.read(reinterpret_cast<char*>(payload.data()), static_cast<std::streamsize>(payload.size()));
    std::uint32_t stored_crc = 0;
    in.read(reinterpret_cast<char*>(&stored_crc), 4);
    if (!in) {
        throw data_error("lightloop: " + where +
                         ": truncated checkpoint (file changed while read)");
    }
    const std::uint32_t crc = crc32_of(payload);
    if (crc != stored_crc) {
        throw data_error("lightloop: " + where + ": checkpoint is corrupt (CRC-32 " +
                         std::to_string(crc) + ", stored " + std::to_string(stored_crc) + ")");
    }
    return payload;
}

inline std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> lines;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        lines.push_back(line);
    }
    return lines;
}

/// Throws naming the first line where two signatures differ.
inline void check_signature(const std::string& where, const std::string& stored,
                            const std::string& current) {
    if (stored == current) {
        return;
    }
    const auto a = lines_of(stored);
    const auto b = lines_of(current);
    for (std::size_t i = 0; i < std::max(a.size(), b.size()); ++i) {
        const std::string left = i < a.size() ? a[i] : "(nothing)";
        const std::string right = i < b.size() ? b[i] : "(nothing)";
        if (left != right) {
            const std::string& named = i < a.size() ? left : right; // a line with a key
            const auto colon = named.find(':');
            const std::string key =
              colon == std::string::npos ? "line " + std::to_string(i + 1) : named.substr(0, colon);
            auto value = [](const std::string& line) {
                const auto c = line.find(": ");
                return c == std::string::npos ? line : line.substr(c + 2);
            };
            throw data_error("lightloop: " + where + ": architecture mismatch at " + key +
                             ": the checkpoint has '" + value(left) + "', the network has '" +
                             value(right) + "'");
        }
    }
}

struct no_optimizer {
    static constexpr const char* name = "none";
};

/// A checkpoint without a run record (saved outside fit).
struct no_record {};

} // namespace detail

namespace detail {
/// f(values) for each tensor a checkpoint holds of `layer`: its parameters,
/// then its buffers (batch_norm's running estimates: not trained, saved).
template <class Layer, class F>
void visit_saved(Layer& layer, F&& f) {
    layer.visit_parameters([&](auto values, auto) { f(values); });
    if constexpr (requires { layer.visit_buffers(f); }) {
        layer.visit_buffers(f);
    }
}
} // namespace detail

/// The architecture signature of `net`: what a checkpoint must match.
template <class Network>
std::string architecture_signature(const Network& net) {
    using T = typename Network::value_type;
    std::string s;
    s += "scalar: " + std::string(sizeof(T) == 4 ? "float" : "double") + "\n";
    s += "seed: " + std::to_string(net.seed()) + "\n";
    s += "loss: " + describe_object(net.loss_function()) + "\n";
    s += "feedback: " + describe_object(net.feedback()) + "\n";
    net.visit_layers([&](const auto& layer, std::size_t i) {
        s += "layer " + std::to_string(i) + ": " + detail::layer_signature(layer) + "\n";
    });
    return s;
}

/// Saves `net`, the optimizer's state and the progress counters to `path`,
/// atomically. fit_seed and batch record the run's data order for resume;
/// `record` (with save_state(state_writer&)) what the run has recorded.
template <class Network, class Optimizer, class Record = detail::no_record>
void save_checkpoint(Network& net, const Optimizer& opt, const std::filesystem::path& path,
                     std::uint64_t epoch, std::uint64_t fit_seed = 0, std::uint64_t batch = 0,
                     const Record& record = {}) {
    using T = typename Network::value_type;
    state_writer w;
    w.text(version_string);
    w.u32(static_cast<std::uint32_t>(sizeof(T)));
    w.text(architecture_signature(net));
    w.u64(epoch);
    w.u64(net.steps());
    w.u64(fit_seed);
    w.u64(batch);
    w.text(name_of(opt));
    state_writer optimizer_state;
    if constexpr (requires { opt.save_state(optimizer_state); }) {
        opt.save_state(optimizer_state);
    }
    w.block(optimizer_state);
    std::uint64_t tensors = 0;
    net.visit_layers(
      [&](auto& layer, std::size_t) { detail::visit_saved(layer, [&](auto) { ++tensors; }); });
    w.u64(tensors);
    net.visit_layers([&](auto& layer, std::size_t) {
        detail::visit_saved(
          layer, [&](auto values) { w.values(std::span<const T>(values.data(), values.size())); });
    });
    auto& feedback = net.feedback();
    state_writer feedback_state;
    if constexpr (requires { feedback.save_state(feedback_state); }) {
        feedback.save_state(feedback_state);
    }
    w.block(feedback_state);
    state_writer run_record;
    if constexpr (requires { record.save_state(run_record); }) {
        record.save_state(run_record);
    }
    w.block(run_record);
    const auto& payload = w.bytes();
    const auto header = detail::checkpoint_header(payload.size());
    const std::uint32_t crc = detail::crc32_of(payload);
    detail::write_atomically(path, {header, payload, std::as_bytes(std::span(&crc, 1))});
}

/// Weights and progress only (no optimizer state).
template <class Network>
void save_checkpoint(Network& net, const std::filesystem::path& path, std::uint64_t epoch) {
    save_checkpoint(net, detail::no_optimizer{}, path, epoch);
}

/// Loads a checkpoint written by save_checkpoint into `net`, `opt` and
/// `record` (with load_state(state_reader&, epoch); left as it is when the
/// file holds no run record): the architecture and the optimizer type must
/// match. Validates the whole file before changing anything.
template <class Network, class Optimizer, class Record>
checkpoint_info load_checkpoint(Network& net, Optimizer& opt, const std::filesystem::path& path,
                                Record& record) {
    using T = typename Network::value_type;
    std::uint32_t format = 0;
    const std::vector<std::byte> payload = detail::read_checkpoint_payload(path, format);
    const std::string where = path.string();
    state_reader r(payload, where);
    checkpoint_info info;
    info.library_version = r.text("library version");
    const std::uint32_t scalar_bytes = r.u32("scalar size");
    if (scalar_bytes != sizeof(T)) {
        r.fail("checkpoint holds " + std::to_string(scalar_bytes) +
               "-byte scalars, the network uses " + std::to_string(sizeof(T)));
    }
    info.architecture = r.text("architecture");
    detail::check_signature(where, info.architecture, architecture_signature(net));
    info.epoch = r.u64("epoch");
    info.steps = r.u64("step count");
    info.fit_seed = r.u64("fit seed");
    info.batch = r.u64("batch size");
    info.optimizer = r.text("optimizer name");
    constexpr bool load_optimizer = !std::is_same_v<Optimizer, detail::no_optimizer>;
    state_reader optimizer_state = r.block("optimizer state");
    Optimizer staged_opt = opt;
    if constexpr (load_optimizer) {
        if (info.optimizer != name_of(opt)) {
            r.fail("checkpoint was saved with optimizer '" + info.optimizer + "', resuming with '" +
                   name_of(opt) + "'");
        }
        if constexpr (requires { staged_opt.load_state(optimizer_state); }) {
            staged_opt.load_state(optimizer_state);
        }
        optimizer_state.expect_end("optimizer state");
    }
    const std::uint64_t tensors = r.u64("tensor count");
    std::vector<std::vector<T>> values;
    net.visit_layers([&](auto& layer, std::size_t) {
        detail::visit_saved(layer, [&](auto v) { values.emplace_back(v.size()); });
    });
    if (tensors != values.size()) {
        r.fail("checkpoint has " + std::to_string(tensors) + " parameter tensors, the network " +
               std::to_string(values.size()));
    }
    for (std::size_t t = 0; t < values.size(); ++t) {
        r.values_into(std::span<T>(values[t]), ("parameter tensor " + std::to_string(t)).c_str());
    }
    state_reader feedback_state = r.block("feedback state");
    std::optional<state_reader> run_record;
    if (format >= 3) {
        run_record.emplace(r.block("run record"));
    }
    r.expect_end("checkpoint");
    using feedback_type = std::remove_reference_t<decltype(net.feedback())>;
    constexpr bool feedback_has_state = requires(feedback_type f, state_reader & in) {
        f.load_state(in);
    };
    std::optional<feedback_type> staged_feedback;
    if constexpr (feedback_has_state) {
        staged_feedback.emplace(net.feedback());
        staged_feedback->load_state(feedback_state);
    }
    feedback_state.expect_end("feedback state");
    std::optional<Record> staged_record;
    if constexpr (requires(Record staged, state_reader & in) {
                      staged.load_state(in, info.epoch);
                  }) {
        if (run_record && run_record->remaining() > 0) {
            staged_record.emplace(record);
            staged_record->load_state(*run_record, info.epoch);
            run_record->expect_end("run record");
        }
    }
    // Commit.
    std::size_t t = 0;
    net.visit_layers([&](auto& layer, std::size_t) {
        detail::visit_saved(layer, [&](auto v) {
            std::copy(values[t].begin(), values[t].end(), v.begin());
            ++t;
        });
    });
    net.set_steps(info.steps);
    if constexpr (feedback_has_state) {
        net.feedback() = std::move(*staged_feedback);
    }
    if constexpr (load_optimizer) {
        opt = std::move(staged_opt);
    }
    if (staged_record) {
        record = std::move(*staged_record);
    }
    return info;
}

/// As above, ignoring any run record the file holds.
template <class Network, class Optimizer>
checkpoint_info load_checkpoint(Network& net, Optimizer& opt, const std::filesystem::path& path) {
    detail::no_record none;
    return load_checkpoint(net, opt, path, none);
}

/// Loads weights and progress only, whatever optimizer state the file holds.
template <class Network>
checkpoint_info load_checkpoint(Network& net, const std::filesystem::path& path) {
    detail::no_optimizer none;
    return load_checkpoint(net, none, path);
}

} // namespace lightloop
