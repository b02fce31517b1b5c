#pragma once
// What every rank of distributed training must pass alike, agreed on before
// it is used: a checksum against rank 0's, fit_with's options, the
// optimizer; and a failure on some ranks, thrown on every rank.

#include <cstdint>
#include <exception>
#include <span>
#include <string>
#include <utility>

#include "lightloop/core/describe.hpp"
#include "lightloop/core/error.hpp"
#include "lightloop/distributed/communicator.hpp"
#include "lightloop/io/crc32.hpp"
#include "lightloop/train/fit.hpp"

namespace lightloop::distributed {

/// Throws config_error on every rank if any rank's `checksum` (of what every
/// rank must pass alike) is not rank 0's: "<who>: rank(s) 1, 2 <differs>".
inline void refuse_unlike_first(communicator& comm, std::uint32_t checksum, const std::string& who,
                                const std::string& differs) {
    const std::string ranks = comm.ranks_unlike_first(static_cast<double>(checksum));
    if (!ranks.empty()) {
        throw config_error(who + ": rank(s) " + ranks + " " + differs);
    }
}

/// Agrees whether `mine` holds a failure on any rank, and if so throws on
/// every rank: a rank that failed rethrows its own error, every other rank
/// calls others(ranks), which throws, with the failed ranks listed ("1, 2").
template <class Others>
void rethrow_together(communicator& comm, const std::exception_ptr& mine, Others&& others) {
    const std::string failed = comm.ranks_where(mine != nullptr);
    if (!failed.empty()) {
        if (mine) {
            std::rethrow_exception(mine);
        }
        others(failed);
    }
}

/// Runs f() on every rank and agrees whether it failed anywhere (a
/// lightloop::error; an mpi_error passes through, the ranks out of step),
/// as rethrow_together.
template <class F, class Others>
void fail_together(communicator& comm, F&& f, Others&& others) {
    std::exception_ptr failure;
    try {
        f();
    } catch (const mpi_error&) {
        throw;
    } catch (const lightloop::error&) {
        failure = std::current_exception();
    }
    rethrow_together(comm, failure, std::forward<Others>(others));
}

/// fit_with's checks of its own inputs (options, data, widths), run on every
/// rank and agreed (fail_together): the ranks that failed throw their own
/// errors, the others a config_error naming them.
template <class F>
void check_inputs_together(communicator& comm, const std::string& who, F&& checks) {
    fail_together(comm, std::forward<F>(checks), [&](const std::string& failed) {
        throw config_error(who + ": rank(s) " + failed +
                           " refused their options or data before training (their own "
                           "messages say why); nothing was trained");
    });
}

/// rethrow_together of a failure kept until every rank meets (fit_with's
/// callbacks', before training and at each epoch's end): the others throw a
/// lightloop::error naming the ranks ("<who>: <what> failed on rank(s) 0;
/// every rank stopped <when>").
inline void throw_together(communicator& comm, const std::exception_ptr& mine,
                           const std::string& who, const char* what, const char* when) {
    rethrow_together(comm, mine, [&](const std::string& failed) {
        throw error(who + ": " + what + " failed on rank(s) " + failed + "; every rank stopped " +
                    when);
    });
}

/// Throws config_error on every rank unless every rank passed the same
/// fit_options (the checkpoint only as set or not: each rank may keep it at
/// a path of its own, a node's own disk).
/// Ranks that run other epoch counts or batch sizes stop at different steps
/// and leave the others waiting for them.
inline void agree_on_options(communicator& comm, const fit_options& o, const std::string& who) {
    const std::uint64_t fields[7] = {
      o.epochs,          o.batch,           o.seed,
      o.eval_batch,      o.alignment_probe, o.checkpoint.empty() ? 0u : 1u,
      o.resume ? 1u : 0u};
    refuse_unlike_first(comm, lightloop::detail::crc32_of(std::as_bytes(std::span(fields))), who,
                        "passed fit_with other options than rank 0 (epochs, batch, seed, "
                        "eval_batch, alignment_probe, checkpoint or resume); every rank must pass "
                        "the same, or the ranks stop at different steps; nothing was trained");
}

/// Throws config_error on every rank unless every rank steps the same
/// optimizer: its type, settings (describe_object) and learning rate, by
/// CRC-32 against rank 0's. Ranks with other settings would update with
/// other steps: data-parallel weights kept in step by the sums would still
/// be updated by p optimizers (each rank's block by its own, when sharded),
/// and layer-parallel blocks would not be one process's training.
/// `rate`: the learning rate to compare (the optimizer's own by default;
/// pipelined layer-parallel's the one each rank had for the batch).
template <class Optimizer>
void agree_on_optimizer(communicator& comm, const Optimizer& opt, const std::string& who,
                        double rate) {
    const std::string mine = describe_object(opt) + " learning_rate " + number_text(rate);
    refuse_unlike_first(comm, lightloop::detail::crc32_of(std::as_bytes(std::span(mine))), who,
                        "step(s) another optimizer than rank 0's (its type, settings or learning "
                        "rate; rank " +
                          std::to_string(comm.rank()) + ": " + mine +
                          "); every rank must step the same; nothing was updated");
}
template <class Optimizer>
void agree_on_optimizer(communicator& comm, const Optimizer& opt, const std::string& who) {
    agree_on_optimizer(comm, opt, who, static_cast<double>(opt.learning_rate()));
}

/// agree_on_optimizer before a strategy's first update with an optimizer,
/// and again whenever a rank steps another object or the ranks' learning
/// rates differ. The strategy votes every step, where every rank meets for
/// the same step, with `vote` (this rank's view: whether its optimizer is
/// not the one last agreed on, and its learning rate) reduced by maximum,
/// and agrees (`agree`, every rank together) if `disagree` says so. The
/// rates are compared every step without a string: a schedule moves them
/// alike, and one rank's alone is refused at once. `rate` is the rate the
/// ranks must share for the step: the optimizer's own, or (pipelined
/// layer-parallel, whose ranks below update a batch in the next call, under
/// that call's rate) the one each rank had when the batch went through it.
/// A rank entering the agreement on its own view alone (one that switched
/// to a copy) would wait in it forever.
class optimizer_agreement {
public:
    /// Slots `vote` fills.
    static constexpr std::size_t vote_size = 3;
    /// This rank's view: stale (1 or 0), the learning rate and its negative
    /// (a maximum of both is the largest and the smallest rate).
    template <class Optimizer>
    void vote(const Optimizer& opt, double rate, double* into) const noexcept {
        into[0] = checked_ != static_cast<const void*>(&opt) ? 1.0 : 0.0;
        into[1] = rate;
        into[2] = -rate;
    }
    /// Whether the votes, reduced by maximum over the ranks, call for the
    /// agreement: some rank's optimizer is stale, or the rates differ.
    static bool disagree(const double* votes) noexcept {
        return votes[0] > 0.0 || votes[1] != -votes[2];
    }
    /// agree_on_optimizer, remembered. Every rank calls it together.
    /// `who`: a C string, so that a step makes no std::string (nor allocates).
    template <class Optimizer>
    void agree(communicator& comm, const Optimizer& opt, double rate, const char* who) {
        checked_ = nullptr; // until agreed
        agree_on_optimizer(comm, opt, who, rate);
        checked_ = &opt;
    }

private:
    const void* checked_ = nullptr;
};

} // namespace lightloop::distributed
