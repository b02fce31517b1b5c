#pragma once
// Checkpoints (format 4): everything a run needs to continue bit-identically,
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
//   run record as a sized block (fit's per-epoch records, then the training
//     data's fingerprint: samples, input width (u64), CRC-32 of its inputs
//     and targets (u32); empty when saved outside fit). Format 2, without
//     the block, and format 3, without the fingerprint, still load.
// Fixed random matrices (feedback matrices, the transmission matrix, the
// reference) are regenerated from the seed, never stored. The data order is
// derived from (fit seed, epoch), and the camera noise of each block of an
// optical projection from (seed, block counter): those counters are the RNG
// state, so nothing else random needs saving.
//
// Writing: to this process's own temporary in the same directory
// ("<path>.<host>.<pid>.tmp", io/atomic_file.hpp), fsync, rename over <path>,
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

inline constexpr std::uint32_t checkpoint_format = 4;
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

namespace detail {

/// Every layer of a network: a whole checkpoint's.
struct every_layer {
    constexpr bool operator()(std::size_t) const noexcept { return true; }
};

/// What a checkpoint file holds of a run besides its optimizer and progress:
/// the tensors of the layers `holds(i)` names, the state of `feedback` (none
/// when null, or when it has no save_state), and `signature`, what the file
/// must match. A whole checkpoint (save_checkpoint) holds every layer, the
/// network's feedback, the network's architecture signature; a part of a run
/// kept elsewhere (a layer-parallel rank: its block of layers and its slice
/// of the device) names its own, and its signature says which part it is.
template <class Feedback, class Holds = every_layer>
struct checkpoint_part {
    std::string signature;
    Feedback* feedback = nullptr;
    Holds holds{};
};

/// The part a whole checkpoint of `net` holds.
template <class Network>
auto whole_network(Network& net) {
    using feedback_type = std::remove_reference_t<decltype(net.feedback())>;
    return checkpoint_part<feedback_type>{architecture_signature(net), &net.feedback()};
}

template <class Feedback>
inline constexpr bool saves_state = requires(const Feedback& f, state_writer& out) {
    f.save_state(out);
};

/// The payload of a checkpoint of `part` of `net` (see the file's layout).
template <class Network, class Optimizer, class Record, class Feedback, class Holds>
std::vector<std::byte> checkpoint_payload(Network& net, const Optimizer& opt, std::uint64_t epoch,
                                          std::uint64_t fit_seed, std::uint64_t batch,
                                          const Record& record,
                                          const checkpoint_part<Feedback, Holds>& part) {
    using T = typename Network::value_type;
    state_writer w;
    w.text(version_string);
    w.u32(static_cast<std::uint32_t>(sizeof(T)));
    w.text(part.signature);
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
    net.visit_layers([&](auto& layer, std::size_t i) {
        if (part.holds(i)) {
            visit_saved(layer, [&](auto) { ++tensors; });
        }
    });
    w.u64(tensors);
    net.visit_layers([&](auto& layer, std::size_t i) {
        if (part.holds(i)) {
            visit_saved(layer, [&](auto values) {
                w.values(std::span<const T>(values.data(), values.size()));
            });
        }
    });
    state_writer feedback_state;
    if constexpr (saves_state<Feedback>) {
        if (part.feedback != nullptr) {
            part.feedback->save_state(feedback_state);
        }
    }
    w.block(feedback_state);
    state_writer run_record;
    if constexpr (requires { record.save_state(run_record); }) {
        record.save_state(run_record);
    }
    w.block(run_record);
    return w.bytes();
}

/// A checkpoint's payload framed (header, payload, CRC-32) in `temporary`,
/// fsync'd: the first half of an atomic write (replace_with_temporary).
inline void write_checkpoint_temporary(const std::filesystem::path& temporary,
                                       std::span<const std::byte> payload) {
    const auto header = checkpoint_header(payload.size());
    const std::uint32_t crc = crc32_of(payload);
    write_temporary(temporary, {header, payload, std::as_bytes(std::span(&crc, 1))});
}

/// A checkpoint read and checked whole, nothing changed yet: what
/// commit_checkpoint puts into the network, optimizer, feedback and record.
template <class T, class Optimizer, class Feedback, class Record>
struct staged_checkpoint {
    checkpoint_info info;
    std::uint32_t crc = 0; ///< the payload's CRC-32: which file this was
    std::vector<std::vector<T>> values;
    Optimizer opt;
    std::optional<Feedback> feedback;
    std::optional<Record> record;
};

/// Reads `path` as a checkpoint of `part` of `net` and checks it whole: the
/// signature must be the part's and the optimizer's type `opt`'s (unless no
/// optimizer is loaded). Changes nothing.
template <class Network, class Optimizer, class Record, class Feedback, class Holds>
auto stage_checkpoint(Network& net, const Optimizer& opt, const std::filesystem::path& path,
                      const Record& record, const checkpoint_part<Feedback, Holds>& part) {
    using T = typename Network::value_type;
    std::uint32_t format = 0;
    const std::vector<std::byte> payload = read_checkpoint_payload(path, format);
    const std::string where = path.string();
    state_reader r(payload, where);
    staged_checkpoint<T, Optimizer, Feedback, Record> staged{{}, crc32_of(payload), {}, opt, {},
                                                             {}};
    checkpoint_info& info = staged.info;
    info.library_version = r.text("library version");
    const std::uint32_t scalar_bytes = r.u32("scalar size");
    if (scalar_bytes != sizeof(T)) {
        r.fail("checkpoint holds " + std::to_string(scalar_bytes) +
               "-byte scalars, the network uses " + std::to_string(sizeof(T)));
    }
    info.architecture = r.text("architecture");
    check_signature(where, info.architecture, part.signature);
    info.epoch = r.u64("epoch");
    info.steps = r.u64("step count");
    info.fit_seed = r.u64("fit seed");
    info.batch = r.u64("batch size");
    info.optimizer = r.text("optimizer name");
    state_reader optimizer_state = r.block("optimizer state");
    if constexpr (!std::is_same_v<Optimizer, no_optimizer>) {
        if (info.optimizer != name_of(opt)) {
            r.fail("checkpoint was saved with optimizer '" + info.optimizer + "', resuming with '" +
                   name_of(opt) + "'");
        }
        if constexpr (requires { staged.opt.load_state(optimizer_state); }) {
            staged.opt.load_state(optimizer_state);
        }
        optimizer_state.expect_end("optimizer state");
    }
    const std::uint64_t tensors = r.u64("tensor count");
    net.visit_layers([&](auto& layer, std::size_t i) {
        if (part.holds(i)) {
            visit_saved(layer, [&](auto v) { staged.values.emplace_back(v.size()); });
        }
    });
    if (tensors != staged.values.size()) {
        r.fail("checkpoint has " + std::to_string(tensors) + " parameter tensors, the network " +
               std::to_string(staged.values.size()));
    }
    for (std::size_t t = 0; t < staged.values.size(); ++t) {
        r.values_into(std::span<T>(staged.values[t]),
                      ("parameter tensor " + std::to_string(t)).c_str());
    }
    state_reader feedback_state = r.block("feedback state");
    std::optional<state_reader> run_record;
    if (format >= 3) {
        run_record.emplace(r.block("run record"));
    }
    r.expect_end("checkpoint");
    if constexpr (requires(Feedback f, state_reader & in) { f.load_state(in); }) {
        if (part.feedback != nullptr) {
            staged.feedback.emplace(*part.feedback);
            staged.feedback->load_state(feedback_state);
        }
    }
    feedback_state.expect_end("feedback state");
    if constexpr (requires(Record s, state_reader & in) { s.load_state(in, info.epoch); }) {
        if (run_record && run_record->remaining() > 0) {
            staged.record.emplace(record);
            staged.record->load_state(*run_record, info.epoch);
            run_record->expect_end("run record");
        }
    }
    return staged;
}

/// Puts a staged checkpoint into `net` (the part's layers and the step
/// count), `opt` (unless no optimizer is loaded), the part's feedback and
/// `record` (if the file held one).
template <class Network, class Optimizer, class Record, class Feedback, class Holds>
checkpoint_info commit_checkpoint(
  staged_checkpoint<typename Network::value_type, Optimizer, Feedback, Record>&& staged,
  Network& net, Optimizer& opt, Record& record, const checkpoint_part<Feedback, Holds>& part) {
    std::size_t t = 0;
    net.visit_layers([&](auto& layer, std::size_t i) {
        if (part.holds(i)) {
            visit_saved(layer, [&](auto v) {
                std::copy(staged.values[t].begin(), staged.values[t].end(), v.begin());
                ++t;
            });
        }
    });
    net.set_steps(staged.info.steps);
    if (staged.feedback) {
        *part.feedback = std::move(*staged.feedback);
    }
    if constexpr (!std::is_same_v<Optimizer, no_optimizer>) {
        opt = std::move(staged.opt);
    }
    if (staged.record) {
        record = std::move(*staged.record);
    }
    return staged.info;
}

} // namespace detail

/// Saves `net`, the optimizer's state and the progress counters to `path`,
/// atomically. fit_seed and batch record the run's data order for resume;
/// `record` (with save_state(state_writer&)) what the run has recorded.
template <class Network, class Optimizer, class Record = detail::no_record>
void save_checkpoint(Network& net, const Optimizer& opt, const std::filesystem::path& path,
                     std::uint64_t epoch, std::uint64_t fit_seed = 0, std::uint64_t batch = 0,
                     const Record& record = {}) {
    const auto payload = detail::checkpoint_payload(net, opt, epoch, fit_seed, batch, record,
                                                    detail::whole_network(net));
    const auto temporary = detail::own_temporary_path(path);
    detail::write_checkpoint_temporary(temporary, payload);
    detail::replace_with_temporary(temporary, path);
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
    const auto part = detail::whole_network(net);
    return detail::commit_checkpoint(detail::stage_checkpoint(net, opt, path, record, part), net,
                                     opt, record, part);
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
