#pragma once
// The main of the tests run under mpiexec: every rank runs Catch's session
// with `world` pointing at a communicator over MPI_COMM_WORLD.

#include <catch2/catch.hpp>

#include "lightloop/distributed/communicator.hpp"

namespace lightloop::testing {

/// Runs the test session on this rank. A rank whose checks failed ends the
/// job (another rank may be in a collective this one will never join).
inline int run_on_every_rank(int argc, char* argv[], distributed::communicator*& world) {
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
