#pragma once
// What the tests run under mpiexec share: `world`, a communicator over
// MPI_COMM_WORLD while the session runs; on_every_rank, a check agreed by
// every rank; and their main, every rank running Catch's session.

#include <catch2/catch.hpp>

#include <span>

#include "lightloop/distributed/communicator.hpp"

namespace lightloop::testing {

/// Every rank, while run_on_every_rank's session runs.
inline distributed::communicator* world = nullptr;

/// Whether a check held on every rank (each rank passes its own verdict).
inline bool on_every_rank(bool mine) {
    double votes[1] = {mine ? 1.0 : 0.0};
    world->sum_identical(std::span<double>(votes));
    return votes[0] == static_cast<double>(world->size());
}

/// Runs the test session on this rank. A rank whose checks failed ends the
/// job (another rank may be in a collective this one will never join).
inline int run_on_every_rank(int argc, char* argv[]) {
    distributed::environment mpi(argc, argv);
    int result = 0;
    {
        distributed::communicator comm;
        world = &comm;
        Catch::Session session;
        result = session.run(argc, argv);
        world = nullptr;
    }
    if (result != 0) {
        distributed::environment::abort(1);
    }
    return 0;
}

} // namespace lightloop::testing
