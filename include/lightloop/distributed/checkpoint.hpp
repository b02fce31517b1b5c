#pragma once
// Checkpoints of distributed training, written and resumed by every rank in
// step. A rank that fails alone (a full disk, a file it cannot see or read)
// would otherwise throw alone and leave the others waiting in their next
// collective; ranks that resume from different files would train on from
// different places.
//
// Writing: every rank that writes a file writes it to its temporary first;
// only once every rank has done so does each put its file in place, so that
// a failure anywhere leaves every rank's previous file (data_error on every
// rank, naming the ranks).
// Resuming: every rank sees its file or none does; every rank reads and
// checks its file whole; the ranks agree on what must be the same in every
// rank's file (data-parallel: the file's bits; layer-parallel: the epoch,
// the step count and the data order); only then does each load it.
// Data-parallel training keeps a whole checkpoint (rank 0 writes it, every
// rank reads it) and, for a device with state of its own on each rank (an
// optical one), each rank's device beside it ("<path>.device<r>-of-<p>",
// data_parallel::device_checkpoint_path); layer-parallel training one file
// per rank,
// "<path>.rank<r>-of-<p>" (rank_checkpoint_path), each that rank's layers,
// optimizer state and device slice. Each refuses the other's files, and
// parts written by another number of ranks, by name.

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <utility>

#include "lightloop/core/error.hpp"
#include "lightloop/distributed/communicator.hpp"
#include "lightloop/distributed/options.hpp"
#include "lightloop/io/atomic_file.hpp"
#include "lightloop/io/checkpoint.hpp"

namespace lightloop::distributed {

/// Rank `rank` of `ranks`'s file of a checkpoint kept in parts
/// (layer-parallel training): "<path>.rank<r>-of-<p>".
inline std::filesystem::path rank_checkpoint_path(const std::filesystem::path& path,
                                                  std::size_t rank, std::size_t ranks) {
    return path.string() + ".rank" + std::to_string(rank) + "-of-" + std::to_string(ranks);
}

namespace detail {

/// Every rank writes its files' temporaries (write(); a rank may have
/// none); once every rank has, each puts its files in place. A failure
/// anywhere throws data_error on every rank, naming the ranks, with every
/// file as it was (unless putting a file in place failed, which the message
/// says).
template <class Write>
void write_in_step(communicator& comm, const std::string& who,
                   std::span<const std::filesystem::path> mine, Write&& write) {
    std::string failure;
    try {
        if (!mine.empty()) {
            write();
        }
    } catch (const mpi_error&) {
        throw;
    } catch (const lightloop::error& e) {
        failure = e.what();
    }
    std::string failed = comm.ranks_where(!failure.empty());
    if (!failed.empty()) {
        for (const auto& file : mine) {
            lightloop::detail::discard_temporary(file);
        }
        throw data_error(who + ": the checkpoint could not be written on rank(s) " + failed +
                         "; every rank's previous checkpoint file is intact" +
                         (failure.empty()
                            ? std::string()
                            : " (rank " + std::to_string(comm.rank()) + ": " + failure + ")"));
    }
    try {
        for (const auto& file : mine) {
            lightloop::detail::replace_with_temporary(file);
        }
    } catch (const mpi_error&) {
        throw;
    } catch (const lightloop::error& e) {
        failure = e.what();
    }
    failed = comm.ranks_where(!failure.empty());
    if (!failed.empty()) {
        throw data_error(who + ": rank(s) " + failed +
                         " could not put the new checkpoint file in place, where the previous "
                         "one stays; every other file is the new one" +
                         (failure.empty()
                            ? std::string()
                            : " (rank " + std::to_string(comm.rank()) + ": " + failure + ")"));
    }
}

/// The temporary of `file` (write_in_step's first half), holding `part` of
/// `net`.
template <class Network, class Optimizer, class Record, class Part>
void write_part_temporary(const std::filesystem::path& file, Network& net, const Optimizer& opt,
                          std::uint64_t epoch, std::uint64_t seed, std::uint64_t batch,
                          const Record& record, const Part& part) {
    const auto payload =
      lightloop::detail::checkpoint_payload(net, opt, epoch, seed, batch, record, part);
    lightloop::detail::write_checkpoint_temporary(file, payload);
}

/// Every rank's `file` read and checked in step by stage() (which changes
/// nothing): nullopt on every rank if no rank that `wants` one sees its
/// file; config_error on every rank naming the ranks that want one and do
/// not see it; a rank that refuses its file throws its own error and the
/// others a data_error naming it. `what` names the file in messages.
template <class Stage>
auto stage_in_step(communicator& comm, const std::string& who, const std::filesystem::path& file,
                   bool wants, const std::string& what, Stage&& stage) {
    std::optional<decltype(stage())> staged;
    std::error_code ec;
    const bool sees = wants && std::filesystem::exists(file, ec);
    if (!comm.any(sees)) {
        return staged;
    }
    const std::string missing = comm.ranks_where(wants && !sees);
    if (!missing.empty()) {
        throw config_error(who + ": rank(s) " + missing + " cannot see " + what +
                           " the others resume from (rank " + std::to_string(comm.rank()) + ": " +
                           file.string() +
                           "); every rank must see its own (a shared directory, or a copy on "
                           "every node); nothing was loaded");
    }
    fail_together(
      comm,
      [&] {
          if (sees) {
              staged.emplace(stage());
          }
      },
      [&](const std::string& refused) {
          throw data_error(who + ": rank(s) " + refused + " refused " + what +
                           " (its message says why); nothing was loaded on any rank");
      });
    return staged;
}

/// fit_with's resume, in step, from this rank's `file` holding `part` of
/// `net` (stage_in_step: nullopt if no rank sees its file), `check` (fit's)
/// applied to its figures before anything is loaded; then the ranks agree
/// that checksum(staged) is rank 0's (config_error naming the others: they
/// `differ`), and only then does each load its file.
template <class Network, class Optimizer, class Record, class Check, class Part, class Checksum>
std::optional<checkpoint_info> resume_in_step(communicator& comm, const std::string& who,
                                              const std::filesystem::path& file, Network& net,
                                              Optimizer& opt, Record& record, const Check& check,
                                              const Part& part, Checksum&& checksum,
                                              const std::string& differ) {
    auto staged = stage_in_step(comm, who, file, true, "the checkpoint file", [&] {
        auto read = lightloop::detail::stage_checkpoint(net, opt, file, record, part);
        check(read.info);
        return read;
    });
    if (!staged) {
        return std::nullopt;
    }
    refuse_unlike_first(comm, checksum(*staged), who, differ + "; nothing was loaded");
    return lightloop::detail::commit_checkpoint(std::move(*staged), net, opt, record, part);
}

/// What a directory holds besides the checkpoint a run looked for, which no
/// rank saw: a whole file at `path`, or the parts "<path>.rank<r>-of-<p>" of
/// a checkpoint written by `ranks` ranks (the first found; 0 if none).
struct other_checkpoint {
    bool whole = false;
    std::size_t ranks = 0;
};

inline other_checkpoint look_for_other_checkpoint(const std::filesystem::path& path) {
    other_checkpoint found;
    std::error_code ec;
    found.whole = std::filesystem::exists(path, ec);
    const std::string prefix = path.filename().string() + ".rank";
    const auto directory =
      path.parent_path().empty() ? std::filesystem::path(".") : path.parent_path();
    for (std::filesystem::directory_iterator it(directory, ec), end; !ec && it != end;
         it.increment(ec)) {
        const std::string name = it->path().filename().string();
        const auto of = name.rfind("-of-");
        if (name.rfind(prefix, 0) != 0 || of == std::string::npos || name.ends_with(".tmp")) {
            continue;
        }
        const std::string count = name.substr(of + 4);
        if (!count.empty() && count.size() < 10 &&
            std::all_of(count.begin(), count.end(), [](char c) { return c >= '0' && c <= '9'; })) {
            found.ranks = std::stoul(count);
            break;
        }
    }
    return found;
}

/// When no rank saw the checkpoint it resumes from: refuses, on every rank,
/// a checkpoint of the other layout at the same path (rank 0 looks), which
/// the run would otherwise ignore and overwrite, training from scratch.
/// `parts`: this run keeps its checkpoint in one file per rank.
inline void refuse_other_layout(communicator& comm, const std::string& who,
                                const std::filesystem::path& path, bool parts) {
    std::array<double, 2> found{0.0, 0.0};
    if (comm.rank() == 0) {
        const other_checkpoint other = look_for_other_checkpoint(path);
        found = {other.whole ? 1.0 : 0.0, static_cast<double>(other.ranks)};
    }
    comm.broadcast(std::span<double>(found), 0);
    const auto ranks = static_cast<std::size_t>(found[1]);
    if (parts && found[0] != 0.0) {
        throw config_error(who + ": " + path.string() +
                           " is a whole checkpoint (one process or data-parallel training); "
                           "layer-parallel training keeps one file per rank (" +
                           rank_checkpoint_path(path, comm.rank(), comm.size()).string() +
                           "): resume it as it was written; nothing was loaded");
    }
    if (parts && ranks > 0 && ranks != comm.size()) {
        throw config_error(who + ": the checkpoint at " + path.string() + " was written by " +
                           std::to_string(ranks) +
                           " ranks in layer-parallel training, this run "
                           "has " +
                           std::to_string(comm.size()) + ": resume it on " + std::to_string(ranks) +
                           " ranks; nothing was loaded");
    }
    if (!parts && ranks > 0) {
        throw config_error(who + ": the checkpoint at " + path.string() +
                           " was written in parts by layer-parallel training on " +
                           std::to_string(ranks) + " ranks (" +
                           rank_checkpoint_path(path, 0, ranks).string() +
                           ", ...): resume it with dfa_layer_parallel; nothing was loaded");
    }
}

} // namespace detail
} // namespace lightloop::distributed
