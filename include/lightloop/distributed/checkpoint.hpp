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
// checks its file whole; a write that stopped between the ranks' renames is
// finished from the temporaries it left (finish_interrupted_write); the
// ranks agree on what must be the same in every rank's file (data-parallel:
// the file's bits; layer-parallel: the epoch, the step count and the data
// order); only then does each load it.
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
#include "lightloop/train/fit.hpp"

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
            lightloop::detail::discard_temporary(lightloop::detail::shared_temporary_path(file));
        }
        throw data_error(who + ": the checkpoint could not be written on rank(s) " + failed +
                         "; every rank's previous checkpoint file is intact" +
                         (failure.empty()
                            ? std::string()
                            : " (rank " + std::to_string(comm.rank()) + ": " + failure + ")"));
    }
    try {
        for (const auto& file : mine) {
            lightloop::detail::replace_with_temporary(
              lightloop::detail::shared_temporary_path(file), file);
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
    lightloop::detail::write_checkpoint_temporary(lightloop::detail::shared_temporary_path(file),
                                                  payload);
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

/// A checkpoint's progress: its epoch and step count.
template <class Staged>
std::array<double, 2> progress_of(const Staged& staged) {
    return {static_cast<double>(staged.info.epoch), static_cast<double>(staged.info.steps)};
}

/// One of the files a rank resumes from, for finish_interrupted_write:
/// `staged` as read from `file` (nullopt: this rank has no such file),
/// stage(path) reads another file as it, and `puts_in_place` says whether
/// this rank wrote the file (and so puts its temporary in place).
template <class Staged, class Stage>
struct resumed_file {
    const std::filesystem::path& file;
    std::optional<Staged>& staged;
    Stage stage;
    bool puts_in_place = true;
    std::optional<Staged> newer{};

    bool behind(const std::array<double, 2>& newest) const {
        return staged && progress_of(*staged) != newest;
    }
    /// If behind `newest`: the file's temporary, if it reads as a
    /// checkpoint of the newest's progress.
    void look_beside(const std::array<double, 2>& newest) {
        if (!behind(newest)) {
            return;
        }
        try {
            auto read = stage(lightloop::detail::shared_temporary_path(file));
            if (progress_of(read) == newest) {
                newer.emplace(std::move(read));
            }
        } catch (const mpi_error&) {
            throw;
        } catch (const lightloop::error&) {
            // nothing newer here: the ranks' agreement refuses the files
        }
    }
};
template <class Staged, class Stage>
resumed_file(const std::filesystem::path&, std::optional<Staged>&, Stage, bool)
  -> resumed_file<Staged, Stage>;

/// Finishes a write_in_step that stopped between the ranks' renames (the
/// job killed there, or a rename that failed): some files then hold the new
/// checkpoint and the others the one before, each of those with the new one
/// whole beside it in its temporary, since no rank puts a file in place
/// before every rank has written its temporaries (so one file of the new
/// checkpoint anywhere proves every temporary complete). Where the files
/// the ranks resume from (`files`, this rank's) differ in progress, every
/// file behind the newest is read from its temporary instead; if every such
/// file on every rank finds the newest's progress there, the rank that
/// wrote each puts its temporary in place, completing the write, and each
/// rank resumes from what it read. Otherwise nothing changes, and the
/// ranks' agreement on what they read refuses the files, as before.
template <class... Files>
void finish_interrupted_write(communicator& comm, const std::string& who, Files&&... files) {
    std::array<double, 2> newest{0.0, 0.0};
    const auto take = [&](const auto& f) {
        if (f.staged) {
            const auto p = progress_of(*f.staged);
            newest = {std::max(newest[0], p[0]), std::max(newest[1], p[1])};
        }
    };
    (take(files), ...);
    comm.largest(std::span<double>(newest));
    if (!comm.any((files.behind(newest) || ...))) {
        return;
    }
    (files.look_beside(newest), ...);
    if (comm.any(((files.behind(newest) && !files.newer) || ...))) {
        return;
    }
    fail_together(
      comm,
      [&] {
          const auto put = [](const auto& f) {
              if (f.newer && f.puts_in_place) {
                  lightloop::detail::replace_with_temporary(
                    lightloop::detail::shared_temporary_path(f.file), f.file);
              }
          };
          (put(files), ...);
      },
      [&](const std::string& failed) {
          throw data_error(who + ": rank(s) " + failed +
                           " could not put in place the checkpoint file an interrupted write "
                           "left beside theirs (their message says why); nothing was loaded");
      });
    const auto adopt = [](auto& f) {
        if (f.newer) {
            f.staged.emplace(std::move(*f.newer));
        }
    };
    (adopt(files), ...);
}

/// fit_with's resume, in step, from this rank's `file` holding `part` of
/// `net` (stage_in_step: nullopt if no rank sees its file), `check` (fit's)
/// applied to its figures before anything is loaded; then
/// finish(staged, stage) (finish_interrupted_write with the files this rank
/// resumes from: `staged` is read from `file`, stage(path) reads another
/// file as it); then the ranks agree that checksum(staged) is rank 0's
/// (config_error naming the others: they `differ`), and only then does each
/// load its file.
template <class Network, class Optimizer, class Record, class Check, class Part, class Finish,
          class Checksum>
std::optional<checkpoint_info> resume_in_step(communicator& comm, const std::string& who,
                                              const std::filesystem::path& file, Network& net,
                                              Optimizer& opt, Record& record, const Check& check,
                                              const Part& part, Finish&& finish,
                                              Checksum&& checksum, const std::string& differ) {
    const auto stage = [&](const std::filesystem::path& from) {
        auto read = lightloop::detail::stage_checkpoint(net, opt, from, record, part);
        check(read.info);
        return read;
    };
    auto staged =
      stage_in_step(comm, who, file, true, "the checkpoint file", [&] { return stage(file); });
    if (!staged) {
        return std::nullopt;
    }
    finish(staged, stage);
    refuse_unlike_first(comm, checksum(*staged), who, differ + "; nothing was loaded");
    return lightloop::detail::commit_checkpoint(std::move(*staged), net, opt, record, part);
}

/// fit_with's check that each rank can keep its checkpoint file at `path`
/// (lightloop::detail::check_checkpoint_path: its directory exists, and it
/// is not one), agreed before any training: a rank that cannot throws its
/// own config_error, the others one naming it (a directory on one node only
/// would otherwise fail that rank alone, after an epoch of training).
inline void check_checkpoint_path_in_step(communicator& comm, const std::string& who,
                                          const std::filesystem::path& path) {
    fail_together(
      comm, [&] { lightloop::detail::check_checkpoint_path(path); },
      [&](const std::string& failed) {
          throw config_error(who + ": rank(s) " + failed + " cannot keep the checkpoint at " +
                             path.string() + " (their message says why); nothing was trained");
      });
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
    const auto directory = lightloop::detail::directory_of(path);
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
