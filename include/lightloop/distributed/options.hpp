#pragma once
// What every rank of a distributed fit_with must pass alike, agreed on before
// the first step.

#include <cstdint>
#include <span>
#include <string>

#include "lightloop/core/error.hpp"
#include "lightloop/distributed/communicator.hpp"
#include "lightloop/io/crc32.hpp"
#include "lightloop/train/fit.hpp"

namespace lightloop::distributed {

/// Throws config_error on every rank unless every rank passed the same
/// fit_options (the checkpoint only as set or not: one rank writes it).
/// Ranks that run other epoch counts or batch sizes stop at different steps
/// and leave the others waiting for them.
inline void agree_on_options(communicator& comm, const fit_options& o, const std::string& who) {
    const std::uint64_t fields[7] = {
      o.epochs,          o.batch,           o.seed,
      o.eval_batch,      o.alignment_probe, o.checkpoint.empty() ? 0u : 1u,
      o.resume ? 1u : 0u};
    const std::uint32_t crc = lightloop::detail::crc32_of(std::as_bytes(std::span(fields)));
    const std::string ranks = comm.ranks_unlike_first(static_cast<double>(crc));
    if (!ranks.empty()) {
        throw config_error(who + ": rank(s) " + ranks +
                           " passed fit_with other options than rank 0 (epochs, batch, seed, "
                           "eval_batch, alignment_probe, checkpoint or resume); every rank must "
                           "pass the same, or the ranks stop at different steps; nothing was "
                           "trained");
    }
}

} // namespace lightloop::distributed
