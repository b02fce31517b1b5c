// Once buffers exist for a batch size, a distributed training step allocates
// nothing in lightloop's code, on any rank: data-parallel by every route and
// update split, DFA layer-parallel in both modes, fp32 and mixed bf16. Like
// tests/perf/test_allocations.cpp, this executable replaces the global
// operator new with a counting one (so it is built apart, and not under
// ASan; support/counting_new.hpp); MPI allocates through malloc, which it
// does not count, and oneDNN's own blocks (its argument map on every
// primitive execution) are counted apart. Run under mpiexec on 2 ranks
// (tests/distributed/CMakeLists.txt).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdint>
#include <span>
#include <vector>

#include "distributed/mpi_session.hpp"
#include "lightloop/distributed/data_parallel.hpp"
#include "lightloop/distributed/layer_parallel.hpp"
#include "lightloop/lightloop.hpp"
#include "support/counting_new.hpp"
#include "support/helpers.hpp"

using lightloop::testing::allocations;

using namespace lightloop;
namespace dist = lightloop::distributed;
using lightloop::testing::on_every_rank;
using lightloop::testing::world;

namespace {

/// A 64-128-128-10 tanh network in precision P.
template <class Feedback, class P = float>
auto make_net() {
    return make_network<Feedback, softmax_cross_entropy>(
      1, dense<tanh_act, P>{64, 128}, dense<tanh_act, P>{128, 128}, dense<identity, P>{128, 10});
}

/// A batch of `rows` inputs (seeded by `seed`) and cyclic labels.
struct batch {
    matrix<float> x;
    matrix<float> y;
    batch(std::size_t rows, std::uint64_t seed)
      : x(lightloop::testing::random_matrix<float>(rows, 64, seed)) {
        std::vector<int> labels(rows);
        for (std::size_t i = 0; i < rows; ++i) {
            labels[i] = static_cast<int>(i % 10);
        }
        y = one_hot<float>(std::span<const int>(labels), 10);
    }
};

/// Allocations this rank made in 20 steps of `step()` after three to warm
/// up (and `finish()` after each run of steps, where a mode has one).
template <class Step, class Finish>
std::size_t steady_state(Step&& step, Finish&& finish) {
    for (int i = 0; i < 3; ++i) {
        step();
    }
    finish();
    const std::size_t before = allocations.load();
    for (int i = 0; i < 20; ++i) {
        step();
    }
    finish();
    return allocations.load() - before;
}

/// Data-parallel steps on this rank's shard (32 rows, its own), with `opt`.
template <class Feedback, class P = float, class Optimizer>
std::size_t data_parallel_allocations(dist::communicator& comm, Optimizer opt,
                                      dist::sum_overlap overlap = dist::sum_overlap::off,
                                      dist::update_split split = dist::update_split::sharded) {
    auto net = make_net<Feedback, P>();
    dist::data_parallel<float> parallel(comm, overlap, split);
    const batch shard(32, 10 + comm.rank());
    return steady_state([&] { parallel.step(net, opt, shard.x, shard.y); }, [] {});
}

/// Layer-parallel steps on the same 32 rows on every rank.
template <class Feedback, class P = float>
std::size_t layer_parallel_allocations(dist::layer_parallel_mode mode) {
    using net_type = decltype(make_net<Feedback, P>());
    net_type net = make_net<Feedback, P>();
    sgd<float> opt{{.learning_rate = 0.01, .momentum = 0.9}};
    dist::dfa_layer_parallel<net_type> parallel(*world, net, mode);
    const batch whole(32, 10);
    return steady_state([&] { parallel.step(net, opt, whole.x, whole.y); },
                        [&] { parallel.finish(net, opt); });
}

const sgd<float> momentum{{.learning_rate = 0.01, .momentum = 0.9}};

/// Whether no rank allocated (`count`: this rank's allocations); a rank that
/// did says how often.
bool nothing(std::size_t count) {
    if (count != 0) {
        UNSCOPED_INFO("rank " << world->rank() << ": " << count << " allocations in 20 steps");
    }
    return on_every_rank(count == 0);
}
} // namespace

TEST_CASE("a steady-state data-parallel step allocates nothing on any rank",
          "[distributed][allocation]") {
    using dist::sum_overlap;
    using dist::update_split;
    CHECK(nothing(data_parallel_allocations<dfa<dense_gaussian>>(*world, momentum)));
    CHECK(nothing(data_parallel_allocations<backprop>(*world, momentum)));
    CHECK(nothing(data_parallel_allocations<dfa<dense_gaussian>>(
      *world, adam<float>{{.learning_rate = 1e-3}})));
    CHECK(nothing(data_parallel_allocations<dfa<dense_gaussian>>(*world, momentum, sum_overlap::off,
                                                                 update_split::whole)));
    CHECK(nothing(data_parallel_allocations<dfa<optical<>>>(*world, momentum)));
    CHECK(nothing(data_parallel_allocations<dfa<dense_gaussian>, mixed_bf16>(*world, momentum)));
    // The ring, with and without sums started while the layers work.
    dist::communicator ring(MPI_COMM_WORLD, dist::sum_route::ring);
    CHECK(nothing(data_parallel_allocations<dfa<dense_gaussian>>(ring, momentum)));
    CHECK(nothing(data_parallel_allocations<dfa<dense_gaussian>>(ring, momentum, sum_overlap::on)));
}

TEST_CASE("a steady-state layer-parallel step allocates nothing on any rank",
          "[distributed][allocation]") {
    using dist::layer_parallel_mode;
    for (const auto mode : {layer_parallel_mode::synchronous, layer_parallel_mode::pipelined}) {
        INFO((mode == layer_parallel_mode::pipelined ? "pipelined" : "synchronous"));
        CHECK(nothing(layer_parallel_allocations<dfa<dense_gaussian>>(mode)));
        CHECK(nothing(layer_parallel_allocations<drtp<dense_gaussian>>(mode)));
        CHECK(nothing(layer_parallel_allocations<dfa<optical<>>>(mode)));
        CHECK(nothing(layer_parallel_allocations<dfa<dense_gaussian>, mixed_bf16>(mode)));
    }
}

TEST_CASE("the allocation counter counts under mpiexec", "[distributed][allocation]") {
    // Guards the tests above against a counter that never moves.
    const std::size_t before = allocations.load();
    // Through a volatile pointer, so the compiler cannot elide the pair.
    std::vector<int>* volatile p = new std::vector<int>(100);
    delete p;
    CHECK(on_every_rank(allocations.load() - before >= 2));
}

int main(int argc, char* argv[]) {
    return lightloop::testing::run_on_every_rank(argc, argv);
}
