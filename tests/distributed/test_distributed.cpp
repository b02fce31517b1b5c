// Distributed training over MPI: data-parallel and DFA layer-parallel. Run under mpiexec on 2 and 3
// ranks (tests/distributed/CMakeLists.txt); every rank runs every test case, and every check comes
// after the collectives a case makes, so a failed check on one rank cannot leave another waiting.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <memory>
#include <numeric>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <unistd.h>

#include "distributed/mpi_session.hpp"
#include "lightloop/distributed/data_parallel.hpp"
#include "lightloop/distributed/layer_parallel.hpp"
#include "lightloop/lightloop.hpp"
#include "support/helpers.hpp"
#include "support/user_layer.hpp"

using namespace lightloop;
namespace dist = lightloop::distributed;
using lightloop::testing::on_every_rank;
using lightloop::testing::world;

namespace {

template <class Network>
std::vector<typename Network::value_type> weights_of(const Network& net) {
    std::vector<typename Network::value_type> all;
    net.visit_layers([&](const auto& l, std::size_t) {
        if constexpr (requires { l.weights(); }) {
            all.insert(all.end(), l.weights().begin(), l.weights().end());
            all.insert(all.end(), l.bias().begin(), l.bias().end());
        }
    });
    return all;
}

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
    // memcmp takes no null pointer, even for no bytes (an empty vector's).
    return a.size() == b.size() &&
           (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

/// Every rank but rank 0, as the library's messages list them ("1, 2").
std::string ranks_above_0() {
    std::string ranks;
    for (std::size_t r = 1; r < world->size(); ++r) {
        ranks += (r > 1 ? ", " : "") + std::to_string(r);
    }
    return ranks;
}

/// Whether every rank holds exactly rank 0's values (checked on every rank).
template <class T>
bool same_bits_everywhere(const std::vector<T>& mine) {
    std::vector<T> root = mine;
    world->broadcast(std::span<T>(root), 0);
    return on_every_rank(same_bits(root, mine));
}

template <class T, class Feedback>
auto make_mlp(std::uint64_t seed) {
    return make_network<Feedback, softmax_cross_entropy>(
      seed, dense<tanh_act, T>{6, 24}, dense<tanh_act, T>{24, 16}, dense<identity, T>{16, 4});
}

/// A convolution on the 6 features as a 1 x 2 x 3 image, then flatten and
/// two dense layers: for data-parallel training, a convolution's gradients
/// summed over the ranks; for layer-parallel, blocks that hold a
/// convolution's projection slice (its 24 outputs) and a layer without
/// parameters.
template <class T, class Feedback>
auto make_cnn(std::uint64_t seed) {
    return make_network<Feedback, softmax_cross_entropy>(
      seed, conv2d<tanh_act, T>({1, 2, 3}, {.out_channels = 2, .kernel = 2, .padding = 1}),
      flatten<master_t<T>>({2, 3, 4}), dense<tanh_act, T>{24, 12}, dense<identity, T>{12, 4});
}

template <class T>
double max_difference(const std::vector<T>& a, const std::vector<T>& b) {
    double worst = 0.0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        worst = std::max(worst, std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
    }
    return worst;
}

/// Rows r, r + p, ... of `rows` (the shard fill_shard gives rank r).
template <class T>
void shard_of(const matrix<T>& all, std::size_t r, std::size_t p, matrix<T>& out) {
    std::vector<std::size_t> rows;
    for (std::size_t i = r; i < all.shape(0); i += p) {
        rows.push_back(i);
    }
    gather_rows(all, std::span<const std::size_t>(rows), out);
}

/// make_mlp with dropout after its first layer: per-sample masks.
template <class T, class Feedback>
auto make_dropout_mlp(std::uint64_t seed) {
    return make_network<Feedback, softmax_cross_entropy>(
      seed, dense<tanh_act, T>{6, 24}, dropout<T>(24, 0.3), dense<tanh_act, T>{24, 16},
      dense<identity, T>{16, 4});
}

enum class small_net { mlp, cnn, dropout };

/// Batch b of `count` consecutive rows of `data` (wrapping round) into x, y.
template <class Data, class T>
void consecutive_batch(const Data& data, std::size_t b, std::size_t count, matrix<T>& x,
                       matrix<T>& y) {
    std::vector<std::size_t> rows(count);
    for (std::size_t i = 0; i < count; ++i) {
        rows[i] = (b * count + i) % data.size();
    }
    gather_rows(data.inputs, std::span<const std::size_t>(rows), x);
    gather_rows(data.targets, std::span<const std::size_t>(rows), y);
}

/// Trains a data-parallel network and a one-process twin on the same global
/// batches (sizes `batches`), returns the largest weight difference; checks
/// that every rank's weights are bitwise rank 0's.
template <class T, class Feedback, small_net Kind = small_net::mlp>
double data_parallel_against_one_process(const std::vector<std::size_t>& batches,
                                         dist::communicator& comm = *world,
                                         dist::sum_overlap overlap = dist::sum_overlap::off,
                                         std::vector<T>* weights = nullptr) {
    const auto data = lightloop::testing::blobs_task<T>(5);
    const auto make = [](std::uint64_t seed) {
        if constexpr (Kind == small_net::cnn) {
            return make_cnn<T, Feedback>(seed);
        } else if constexpr (Kind == small_net::dropout) {
            return make_dropout_mlp<T, Feedback>(seed);
        } else {
            return make_mlp<T, Feedback>(seed);
        }
    };
    auto parallel_net = make(21);
    auto single_net = make(21);
    sgd<T> parallel_opt{{.learning_rate = 0.1, .momentum = 0.9}};
    sgd<T> single_opt{{.learning_rate = 0.1, .momentum = 0.9}};
    dist::data_parallel<T> parallel(comm, overlap);
    matrix<T> x;
    matrix<T> y;
    matrix<T> xs;
    matrix<T> ys;
    std::size_t start = 0;
    for (const std::size_t n : batches) {
        std::vector<std::size_t> rows(n);
        for (std::size_t i = 0; i < n; ++i) {
            rows[i] = (start + i) % data.size();
        }
        start += n;
        gather_rows(data.inputs, std::span<const std::size_t>(rows), x);
        gather_rows(data.targets, std::span<const std::size_t>(rows), y);
        shard_of(x, world->rank(), world->size(), xs);
        shard_of(y, world->rank(), world->size(), ys);
        const step_totals totals = parallel.step(parallel_net, parallel_opt, xs, ys);
        const double single_loss = static_cast<double>(single_net.train_step(x, y, single_opt));
        CHECK(totals.samples == n);
        CHECK(totals.loss_sum / static_cast<double>(n) ==
              Approx(single_loss).epsilon(std::is_same_v<T, double> ? 1e-12 : 1e-5));
    }
    CHECK(same_bits_everywhere(weights_of(parallel_net)));
    CHECK(parallel_net.steps() == batches.size());
    if (weights != nullptr) {
        *weights = weights_of(parallel_net);
    }
    return max_difference(weights_of(parallel_net), weights_of(single_net));
}

} // namespace

namespace {

/// Sums `count` values of very different sizes (so that the order of the
/// additions shows in the bits) over the ranks of `comm`, scaled by
/// `scale`; checks that every rank has the same bits and that each sum is
/// within p - 1 roundings (the additions) + 1 (the scaling) + 1/2 (this
/// check's exact sum rounded to a double) of its terms' magnitudes; returns
/// the sum.
template <class T>
std::vector<T> check_sum(dist::communicator& comm, std::size_t count, T scale) {
    const std::size_t p = comm.size();
    INFO(count << " values of " << sizeof(T) << " bytes scaled by " << scale << ", "
               << (comm.sums_in_shared_memory() ? "shared memory" : "ring"));
    const auto value = [](std::size_t r, std::size_t i) {
        return std::sin(static_cast<double>(i) * 0.7 + static_cast<double>(r)) *
               std::pow(10.0, static_cast<double>((i + r) % 9) - 4.0);
    };
    // Every rank's terms from one loop (the compiler may contract the
    // formula differently in two loops, and doubles would show it).
    std::vector<std::vector<T>> terms(p, std::vector<T>(count));
    for (std::size_t r = 0; r < p; ++r) {
        for (std::size_t i = 0; i < count; ++i) {
            terms[r][i] = static_cast<T>(value(r, i));
        }
    }
    std::vector<T> mine = terms[comm.rank()];
    comm.sum_identical(std::span<T>(mine), scale);
    CHECK(same_bits_everywhere(mine));
    const double unit = std::is_same_v<T, float> ? 0x1p-24 : 0x1p-53;
    double worst = 0.0;
    for (std::size_t i = 0; i < mine.size(); ++i) {
        long double exact = 0.0L;
        double size = 0.0;
        for (std::size_t r = 0; r < p; ++r) {
            const T term = terms[r][i];
            exact += term;
            size += std::abs(static_cast<double>(term));
        }
        exact *= static_cast<long double>(scale);
        size *= std::abs(static_cast<double>(scale));
        const double bound = (static_cast<double>(p) + 0.5) * unit * size;
        worst =
          std::max(worst, std::abs(static_cast<double>(mine[i]) - static_cast<double>(exact)) /
                            std::max(bound, 1e-300));
    }
    CHECK(worst <= 1.0);
    return mine;
}

} // namespace

TEST_CASE("sum_identical gives every rank the same bits of the sum, by either route",
          "[distributed]") {
    dist::communicator ring(MPI_COMM_WORLD, dist::sum_route::ring);
    CHECK_FALSE(ring.sums_in_shared_memory());
    // Every rank of these tests runs on this machine.
    CHECK(world->sums_in_shared_memory());
    // 1001 values split unevenly over the ranks; then more than two of the
    // shared window's chunks (2^18 floats, 2^17 doubles) and a part of one.
    for (const std::size_t count : {std::size_t{1001}, std::size_t{(1u << 19) + 4097}}) {
        const auto shared = check_sum<float>(*world, count, 1.0f);
        const auto ringed = check_sum<float>(ring, count, 1.0f);
        if (world->size() == 2) {
            CHECK(same_bits(shared, ringed)); // one addition: the same bits either way
        }
        check_sum<float>(*world, count, 0.25f);
        check_sum<double>(*world, count, 1.0 / 3.0);
        check_sum<double>(ring, count, 1.0 / 3.0);
    }
    // Fewer values than ranks: some blocks are empty.
    check_sum<float>(*world, 1, 0.5f);
    check_sum<float>(ring, 1, 0.5f);
}

TEST_CASE("sum_owned finishes this rank's block with sum_identical's bits; share_owned hands "
          "the blocks round",
          "[distributed]") {
    dist::communicator ring(MPI_COMM_WORLD, dist::sum_route::ring);
    for (dist::communicator* comm : {world, &ring}) {
        const std::size_t r = comm->rank();
        // Uneven blocks, fewer values than ranks, and more than two rounds
        // of the shared window.
        for (const std::size_t count :
             {std::size_t{1001}, std::size_t{1}, std::size_t{(1u << 19) + 4097}}) {
            INFO(count << " values, "
                       << (comm->sums_in_shared_memory() ? "shared memory" : "ring"));
            std::vector<float> terms(count);
            for (std::size_t i = 0; i < count; ++i) {
                terms[i] =
                  static_cast<float>(std::sin(0.3 * static_cast<double>(i + 7 * r)) *
                                     std::pow(10.0, static_cast<double>((i + r) % 7) - 3.0));
            }
            std::uint64_t mark = comm->bytes().sum;
            std::vector<float> whole = terms;
            comm->sum_identical(std::span<float>(whole), 0.5f);
            const std::uint64_t whole_bytes = comm->bytes().sum - mark;

            mark = comm->bytes().sum;
            std::vector<float> owned = terms;
            comm->sum_owned(std::span<float>(owned), 0.5f);
            const std::uint64_t owned_bytes = comm->bytes().sum - mark;
            const auto block = comm->owned_block(count);
            const auto part = [&](const std::vector<float>& v) {
                return std::vector<float>(v.begin() + static_cast<std::ptrdiff_t>(block.first),
                                          v.begin() +
                                            static_cast<std::ptrdiff_t>(block.first + block.count));
            };
            CHECK(same_bits(part(owned), part(whole)));
            // The blocks tile [0, count): every value is one rank's.
            std::vector<double> owners(count, 0.0);
            std::fill_n(owners.begin() + static_cast<std::ptrdiff_t>(block.first), block.count,
                        1.0);
            comm->sum_identical(std::span<double>(owners));
            CHECK(std::all_of(owners.begin(), owners.end(), [](double v) { return v == 1.0; }));

            // Each rank changes its own block (an update), then the blocks
            // travel: every rank holds every owner's bits.
            for (std::size_t i = block.first; i < block.first + block.count; ++i) {
                owned[i] *= -2.0f; // one rounding, nothing to contract
            }
            mark = comm->bytes().sum;
            comm->share_owned(std::span<float>(owned));
            const std::uint64_t shared_bytes = comm->bytes().sum - mark;
            for (float& v : whole) {
                v *= -2.0f;
            }
            CHECK(same_bits(owned, whole));
            CHECK(same_bits_everywhere(owned));
            // The two halves move what sum_identical moves.
            CHECK(owned_bytes + shared_bytes == whole_bytes);
        }
    }
}

TEST_CASE("data-parallel steps keep every rank's weights identical and follow one process",
          "[distributed]") {
    // In double the two runs differ only in the order of each gradient's
    // sums (each rank's shard, then the ranks), a few units in the last place
    // of terms of size 1 per step; through 6 steps of lr 0.1 with momentum
    // that stays far below 1e-12. Batches of 24 split evenly over 2 and 3
    // ranks, 25 and 7 do not (rows weighted n_r / n).
    const std::vector<std::size_t> batches{24, 25, 24, 7, 24, 24};
    SECTION("backprop, double") {
        CHECK(data_parallel_against_one_process<double, backprop>(batches) < 1e-12);
    }
    SECTION("dfa, double") {
        CHECK(data_parallel_against_one_process<double, dfa<dense_gaussian>>(batches) < 1e-12);
    }
    SECTION("a convolutional network, backprop and dfa, double") {
        CHECK(data_parallel_against_one_process<double, backprop, small_net::cnn>(batches) < 1e-12);
        CHECK(data_parallel_against_one_process<double, dfa<dense_gaussian>, small_net::cnn>(
                batches) < 1e-12);
    }
    SECTION("dropout: each shard's rows get their samples' masks, backprop and dfa, double") {
        // (every rank's row i drew sample i's mask before)
        CHECK(data_parallel_against_one_process<double, backprop, small_net::dropout>(batches) <
              1e-12);
        CHECK(data_parallel_against_one_process<double, dfa<dense_gaussian>, small_net::dropout>(
                batches) < 1e-12);
    }
    SECTION("dfa, float") {
        // fp32: the same argument at 2^-24; 1e-5 leaves room for the weights'
        // size (about 1) times a few roundings per step.
        CHECK(data_parallel_against_one_process<float, dfa<dense_gaussian>>(batches) < 1e-5);
    }
}

namespace {

/// The first six rows of the blobs task: every rank's batch in the failure
/// tests.
void six_rows(matrix<float>& x, matrix<float>& y) {
    const auto data = lightloop::testing::blobs_task<float>(5);
    const std::vector<std::size_t> rows{0, 1, 2, 3, 4, 5};
    gather_rows(data.inputs, std::span<const std::size_t>(rows), x);
    gather_rows(data.targets, std::span<const std::size_t>(rows), y);
}

/// A network whose slots (222, 37, 1073, 29, 116, 4 values) end between
/// vectors and split into blocks of every size on 2 and 3 ranks.
template <class P>
auto make_odd_mlp(std::uint64_t seed) {
    return make_network<dfa<dense_gaussian>, softmax_cross_entropy>(
      seed, dense<tanh_act, P>{6, 37}, dense<tanh_act, P>{37, 29}, dense<identity, P>{29, 4});
}

template <class T>
std::vector<T> flattened(const std::vector<std::vector<T>>& parts) {
    std::vector<T> all;
    for (const auto& part : parts) {
        all.insert(all.end(), part.begin(), part.end());
    }
    return all;
}

/// Data-parallel steps on `comm` with the update sharded and whole, on the
/// same batches from the same start: the same weights and (after the
/// sharded optimizer's blocks are handed round) the same optimizer state,
/// bit for bit.
template <class P, class Optimizer>
void check_sharded_update(dist::communicator& comm, const Optimizer& proto) {
    using T = typename Optimizer::value_type;
    INFO((comm.sums_in_shared_memory() ? "shared memory" : "ring"));
    const auto data = lightloop::testing::blobs_task<T>(5);
    auto sharded_net = make_odd_mlp<P>(21);
    auto whole_net = make_odd_mlp<P>(21);
    Optimizer sharded_opt = proto;
    Optimizer whole_opt = proto;
    dist::data_parallel<T> sharded(comm);
    dist::data_parallel<T> whole(comm, dist::sum_overlap::off, dist::update_split::whole);
    CHECK(sharded.template shards_update<Optimizer>() == (comm.size() > 1));
    CHECK_FALSE(whole.template shards_update<Optimizer>());
    matrix<T> x;
    matrix<T> y;
    matrix<T> xs;
    matrix<T> ys;
    std::size_t start = 0;
    for (const std::size_t n : {24u, 25u, 7u, 24u, 24u}) {
        std::vector<std::size_t> rows(n);
        for (std::size_t i = 0; i < n; ++i) {
            rows[i] = (start + 5 * i) % data.size();
        }
        start += n;
        gather_rows(data.inputs, std::span<const std::size_t>(rows), x);
        gather_rows(data.targets, std::span<const std::size_t>(rows), y);
        shard_of(x, comm.rank(), comm.size(), xs);
        shard_of(y, comm.rank(), comm.size(), ys);
        const step_totals a = sharded.step(sharded_net, sharded_opt, xs, ys);
        const step_totals b = whole.step(whole_net, whole_opt, xs, ys);
        CHECK(a.loss_sum == b.loss_sum);
    }
    CHECK(same_bits(weights_of(sharded_net), weights_of(whole_net)));
    CHECK(same_bits_everywhere(weights_of(sharded_net)));
    // The strategies' common form (the network is not needed here).
    sharded.gather_state(sharded_net, sharded_opt);
    CHECK(same_bits(flattened(sharded_opt.state()), flattened(whole_opt.state())));
    CHECK(same_bits_everywhere(flattened(sharded_opt.state())));
}

} // namespace

TEST_CASE("a sharded update gives the bits of the whole update on every rank, and its optimizer "
          "state after a checkpoint's hand-round",
          "[distributed]") {
    dist::communicator ring(MPI_COMM_WORLD, dist::sum_route::ring);
    for (dist::communicator* comm : {world, &ring}) {
        const sgd_settings nesterov{
          .learning_rate = 0.1, .momentum = 0.9, .nesterov = true, .weight_decay = 1e-3};
        const adam_settings decayed{.learning_rate = 1e-2, .weight_decay = 1e-3};
        check_sharded_update<float>(*comm, sgd<float>{nesterov});
        check_sharded_update<double>(*comm, sgd<double>{nesterov});
        check_sharded_update<float>(*comm, sgd<float>{0.05}); // no state
        check_sharded_update<float>(*comm, adam<float>{decayed});
        check_sharded_update<double>(*comm, adam<double>{decayed});
        // Mixed bf16: the bf16 copies each rank's update writes travel too.
        check_sharded_update<mixed_bf16>(*comm, sgd<float>{nesterov});
        check_sharded_update<mixed_bf16>(*comm, adam<float>{decayed});
    }
}

TEST_CASE("a sharded update that would overflow on one rank's block changes nothing on any rank",
          "[distributed]") {
    auto net = make_odd_mlp<float>(3);
    // Weight decay 10 on a weight of 3e38: the momentum would be 3e39.
    sgd<float> opt{{.learning_rate = 0.01, .momentum = 0.9, .weight_decay = 10.0}};
    dist::data_parallel<float> parallel(*world);
    matrix<float> x;
    matrix<float> y;
    six_rows(x, y);
    parallel.step(net, opt, x, y);
    auto& w = net.layer<1>().weights();
    const float kept = w(28, 36); // the last value: the last rank's block
    w(28, 36) = 3e38f;
    const auto before = weights_of(net);
    const auto state_before = flattened(opt.state());
    std::string message;
    try {
        parallel.step(net, opt, x, y);
    } catch (const divergence_error& e) {
        message = e.what();
    }
    CHECK(message.find("of layer 1") != std::string::npos);
    CHECK(message.find("no parameter and no optimizer state changed") != std::string::npos);
    CHECK(same_bits(weights_of(net), before));
    CHECK(same_bits(flattened(opt.state()), state_before));
    CHECK(net.steps() == 1);
    // Put back, the next step trains every rank alike.
    net.layer<1>().weights()(28, 36) = kept;
    parallel.step(net, opt, x, y);
    CHECK(net.steps() == 2);
    CHECK(same_bits_everywhere(weights_of(net)));
}

TEST_CASE("sums started on the ring travel while the rank works and give sum_identical's bits",
          "[distributed]") {
    dist::communicator ring(MPI_COMM_WORLD, dist::sum_route::ring);
    const std::size_t r = ring.rank();
    // Three sums in flight at once (one of fewer values than ranks, one of
    // several MiB), started and moved on in between the rank's own work,
    // against the same sums made one at a time by sum_identical.
    const std::vector<std::size_t> sizes{1001, 1, (std::size_t{1} << 19) + 4097};
    std::vector<std::vector<float>> started;
    std::vector<std::vector<float>> blocking;
    for (std::size_t k = 0; k < sizes.size(); ++k) {
        std::vector<float> terms(sizes[k]);
        for (std::size_t i = 0; i < terms.size(); ++i) {
            terms[i] = static_cast<float>(std::sin(0.3 * static_cast<double>(i + 7 * r + k)) *
                                          std::pow(10.0, static_cast<double>((i + r) % 7) - 3.0));
        }
        started.push_back(terms);
        blocking.push_back(terms);
    }
    const std::uint64_t bytes_before = ring.bytes().sum;
    std::vector<dist::sum_in_flight<float>> flights;
    for (std::size_t k = 0; k < sizes.size(); ++k) {
        flights.push_back(ring.start_sum(std::span<float>(started[k]), 0.5f));
        for (auto& f : flights) {
            f.progress();
        }
    }
    for (auto& f : flights) {
        f.finish();
        CHECK(f.finished());
    }
    const std::uint64_t bytes_started = ring.bytes().sum - bytes_before;
    for (std::size_t k = 0; k < sizes.size(); ++k) {
        ring.sum_identical(std::span<float>(blocking[k]), 0.5f);
        CHECK(same_bits(started[k], blocking[k]));
        CHECK(same_bits_everywhere(started[k]));
    }
    // The same messages: 2 (p - 1) blocks of each sum leave every rank.
    CHECK(bytes_started == ring.bytes().sum - bytes_before - bytes_started);
    // Through shared memory a started sum is finished at once.
    std::vector<float> here = blocking[0];
    auto done = world->start_sum(std::span<float>(here), 1.0f);
    CHECK(done.finished());
    CHECK(same_bits_everywhere(here));
}

TEST_CASE("data-parallel steps that start each layer's sum early give the same weights",
          "[distributed]") {
    // Overlap is asked for, and taken on the ring (a multi-node run's route);
    // through shared memory there is nothing to overlap. Overlapped or not,
    // the same sums of the same gradients: the same weights, bit for bit,
    // after steps with equal and unequal shards.
    dist::communicator ring(MPI_COMM_WORLD, dist::sum_route::ring);
    CHECK_FALSE(dist::data_parallel<float>(ring).overlaps_sums());
    CHECK(dist::data_parallel<float>(ring, dist::sum_overlap::on).overlaps_sums());
    CHECK_FALSE(dist::data_parallel<float>(*world, dist::sum_overlap::on).overlaps_sums());
    const std::vector<std::size_t> batches{24, 25, 24, 7, 24, 24};
    std::vector<double> overlapped;
    std::vector<double> after;
    std::vector<double> in_shared_memory;
    CHECK(data_parallel_against_one_process<double, backprop>(batches, ring, dist::sum_overlap::on,
                                                              &overlapped) < 1e-12);
    CHECK(data_parallel_against_one_process<double, backprop>(batches, ring, dist::sum_overlap::off,
                                                              &after) < 1e-12);
    CHECK(data_parallel_against_one_process<double, backprop>(
            batches, *world, dist::sum_overlap::on, &in_shared_memory) < 1e-12);
    CHECK(same_bits(overlapped, after));
    if (world->size() == 2) {
        CHECK(same_bits(overlapped, in_shared_memory)); // one addition either way
    }
    std::vector<float> dfa_overlapped;
    std::vector<float> dfa_after;
    CHECK(data_parallel_against_one_process<float, dfa<dense_gaussian>>(
            batches, ring, dist::sum_overlap::on, &dfa_overlapped) < 1e-5);
    CHECK(data_parallel_against_one_process<float, dfa<dense_gaussian>>(
            batches, ring, dist::sum_overlap::off, &dfa_after) < 1e-5);
    CHECK(same_bits(dfa_overlapped, dfa_after));
}

TEST_CASE("a failure on one rank stops every rank with nothing changed", "[distributed]") {
    dist::communicator ring(MPI_COMM_WORLD, dist::sum_route::ring);
    const bool overlapped = GENERATE(false, true);
    INFO((overlapped ? "sums started layer by layer on the ring" : "sums after the gradients"));
    auto net = make_mlp<float, dfa<dense_gaussian>>(3);
    sgd<float> opt{{.learning_rate = 0.1}};
    dist::data_parallel<float> parallel(
      overlapped ? ring : *world, overlapped ? dist::sum_overlap::on : dist::sum_overlap::off);
    matrix<float> x;
    matrix<float> y;
    six_rows(x, y);
    if (world->rank() == world->size() - 1) {
        x(1, 2) = std::numeric_limits<float>::quiet_NaN();
    }
    const auto before = weights_of(net);
    std::string message;
    try {
        parallel.step(net, opt, x, y);
    } catch (const divergence_error& e) {
        message = e.what();
    }
    const std::string last = std::to_string(world->size() - 1);
    CHECK(message.find("failed on rank(s) " + last + ";") != std::string::npos);
    CHECK(same_bits(weights_of(net), before));
    CHECK(net.steps() == 0);
    // The ranks are still in step: the next batch trains everywhere alike.
    if (world->rank() == world->size() - 1) {
        x(1, 2) = 0.5f;
    }
    parallel.step(net, opt, x, y);
    CHECK(net.steps() == 1);
    CHECK_FALSE(same_bits(weights_of(net), before));
    CHECK(same_bits_everywhere(weights_of(net)));
}

// A rank's malformed shard was reported as a divergence_error on every rank.
TEST_CASE("a malformed shard on one rank is a shape_error on every rank", "[distributed]") {
    auto net = make_mlp<float, dfa<dense_gaussian>>(3);
    sgd<float> opt{{.learning_rate = 0.1}};
    dist::data_parallel<float> parallel(*world);
    matrix<float> x;
    matrix<float> y;
    six_rows(x, y);
    const std::string last = std::to_string(world->size() - 1);
    const auto before = weights_of(net);
    std::string message;
    try {
        parallel.step(
          net, opt,
          world->rank() == world->size() - 1 ? matrix<float>(matrix<float>::from_shape({6, 5})) : x,
          y);
    } catch (const shape_error& e) {
        message = e.what();
    }
    INFO(message);
    CHECK(on_every_rank(message.find("step 0 refused a malformed shard on rank(s) " + last +
                                     "; no rank updated its weights") != std::string::npos));
    CHECK(on_every_rank(same_bits(weights_of(net), before) && net.steps() == 0));
    parallel.step(net, opt, x, y);
    CHECK(on_every_rank(net.steps() == 1));
}

namespace {

/// A new directory every rank names alike (rank 0's process id in the
/// name), made by rank 0; removed with the object, once every rank is done.
struct shared_directory {
    std::filesystem::path path;
    explicit shared_directory(const std::string& stem) {
        std::uint64_t id[1] = {static_cast<std::uint64_t>(::getpid())};
        world->broadcast(std::span<std::uint64_t>(id), 0);
        path = std::filesystem::temp_directory_path() / (stem + std::to_string(id[0]));
        if (world->rank() == 0) {
            std::filesystem::create_directories(path);
        }
        world->barrier();
    }
    shared_directory(const shared_directory&) = delete;
    shared_directory& operator=(const shared_directory&) = delete;
    ~shared_directory() {
        world->barrier();
        if (world->rank() == 0) {
            std::error_code ignored;
            std::filesystem::remove_all(path, ignored);
        }
    }
};

/// fit_with's options for the checkpoint tests: batches of 32 in seed 4's
/// order, resuming from and saving to `checkpoint` unless it is empty.
fit_options resumable(std::size_t epochs, const std::filesystem::path& checkpoint) {
    return {.epochs = epochs,
            .batch = 32,
            .seed = 4,
            .checkpoint = checkpoint,
            .resume = !checkpoint.empty()};
}

} // namespace

TEST_CASE("fit_with data_parallel: one checkpoint, resumed by every rank to the same bits",
          "[distributed]") {
    // Rank 0 writes; every rank reads. One directory for all ranks: rank 0's.
    const shared_directory shared("lightloop_dp_");
    const auto& dir = shared.path;
    const auto train = lightloop::testing::blobs_task<float>(2);
    const auto test = lightloop::testing::blobs_task<float>(3, 50);
    const auto options = [&](std::size_t epochs, bool resume) {
        return resumable(epochs, resume ? dir / "run.ckpt" : std::filesystem::path{});
    };
    using net_type = decltype(make_mlp<float, dfa<dense_gaussian>>(0));
    dist::data_parallel<float> parallel(*world);

    net_type straight = make_mlp<float, dfa<dense_gaussian>>(9);
    sgd<float> straight_opt{{.learning_rate = 0.05, .momentum = 0.9}};
    const auto straight_history =
      fit_with(parallel, straight, straight_opt, train, test, options(12, false));
    net_type single = make_mlp<float, dfa<dense_gaussian>>(9);
    sgd<float> single_opt{{.learning_rate = 0.05, .momentum = 0.9}};
    const auto single_history = fit(single, single_opt, train, test, options(12, false));

    net_type first = make_mlp<float, dfa<dense_gaussian>>(9);
    sgd<float> first_opt{{.learning_rate = 0.05, .momentum = 0.9}};
    fit_with(parallel, first, first_opt, train, test, options(6, true));
    world->barrier(); // rank 0's checkpoint is on disk before anyone reads it
    net_type resumed = make_mlp<float, dfa<dense_gaussian>>(9);
    sgd<float> resumed_opt{{.learning_rate = 0.05, .momentum = 0.9}};
    const auto resumed_history =
      fit_with(parallel, resumed, resumed_opt, train, test, options(12, true));

    CHECK(resumed_history.resumed_from_epoch == 6);
    CHECK(same_bits(weights_of(resumed), weights_of(straight)));
    CHECK(same_bits_everywhere(weights_of(straight)));
    // The sharded update's state, handed round after the last epoch: whole
    // on every rank.
    CHECK(same_bits_everywhere(flattened(straight_opt.state())));
    // The momentum is as far from the one process's as the weights are
    // (measured 3.4e-7 on 2 ranks, 7.2e-7 on 3); its largest value is 0.14,
    // which a rank's stale block would miss by about that much.
    CHECK(max_difference(flattened(straight_opt.state()), flattened(single_opt.state())) < 1e-5);
    // The figures are the whole batch's and the whole test set's, the same
    // on every rank; the task is learned (chance is 25%, a linear model about
    // 60%).
    // One process on the same batches: 456 fp32 steps from the same start
    // land within 1e-4 of each other (measured 2e-6 on 2 ranks, 5e-6 on 3).
    CHECK(max_difference(weights_of(single), weights_of(straight)) < 1e-4);
    CHECK(single_history.epochs.size() == straight_history.epochs.size());
    const double accuracy = straight_history.epochs.back().test_accuracy;
    CHECK(same_bits_everywhere(std::vector<double>{accuracy}));
    CHECK(accuracy > 0.8);
    CHECK(resumed_history.epochs.back().test_accuracy == accuracy);
}

namespace {

/// A callback that calls f(epoch) at the end of each epoch (after fit_with
/// has saved that epoch's checkpoint).
template <class F>
struct after_each_epoch {
    F f;
    bool on_epoch_end(const epoch_record& record) {
        f(record.epoch);
        return false;
    }
};
template <class F>
after_each_epoch(F) -> after_each_epoch<F>;

/// A callback that keeps the weights of the network fit_with hands the
/// epoch-end callbacks.
struct weights_each_epoch {
    std::vector<std::vector<float>>* seen;
    template <class Network>
    bool on_epoch_end(const epoch_record&, Network& net) {
        seen->push_back(weights_of(net));
        return false;
    }
};

/// A directory at "<file>.tmp" on this rank if `here`: the file's next
/// atomic write cannot make its temporary there.
void block_next_write(const std::filesystem::path& file, bool here) {
    if (here) {
        std::filesystem::create_directories(lightloop::detail::shared_temporary_path(file));
    }
}

/// The message of the lightloop::error `run` throws ("" if none), checked to
/// be of type E.
template <class E, class F>
std::string message_of(F&& run) {
    try {
        run();
    } catch (const E& e) {
        return e.what();
    } catch (const lightloop::error& e) {
        return std::string("another type of error: ") + e.what();
    }
    return "";
}

/// A data-parallel fit_with of the blobs task by an mlp with an optical
/// device (seed 9; sgd with momentum; each rank its own camera noise), for
/// `epochs` from and to the checkpoint at `path` (none if empty): the
/// network, optimizer and history, or the config_error's message.
struct optical_data_parallel_run {
    using net_type = decltype(make_mlp<float, dfa<optical<>>>(0));
    net_type net = make_mlp<float, dfa<optical<>>>(9);
    sgd<float> opt{{.learning_rate = 0.05, .momentum = 0.9}};
    fit_history history;
    std::string message;

    optical_data_parallel_run(dist::data_parallel<float>& parallel, std::size_t epochs,
                              const std::filesystem::path& path) {
        const auto train = lightloop::testing::blobs_task<float>(2);
        const auto test = lightloop::testing::blobs_task<float>(3, 50);
        dist::give_rank_noise_stream(net, world->rank());
        message = message_of<config_error>(
          [&] { history = fit_with(parallel, net, opt, train, test, resumable(epochs, path)); });
    }
};

} // namespace

// A checkpoint that rank 0 could not write threw on rank 0 alone, and the
// others waited for it in the next epoch's first collective forever.
// Each data-parallel rank's optical device is its own: its camera calibrates
// on the rank's shard and its noise counter follows the shard's blocks. A
// resumed run gave every rank rank 0's device, and trained on other bits.
TEST_CASE("fit_with data_parallel with an optical device resumes every rank's own device to the "
          "same bits",
          "[distributed]") {
    const shared_directory shared("lightloop_dp_optical_");
    const auto path = shared.path / "run.ckpt";
    dist::data_parallel<float> parallel(*world);
    using trained = optical_data_parallel_run;
    const auto run = [&](std::size_t epochs, bool resume) {
        return trained(parallel, epochs, resume ? path : std::filesystem::path{});
    };
    const trained straight = run(4, false);
    run(2, true);
    const auto own =
      dist::data_parallel<float>::device_checkpoint_path(path, world->rank(), world->size());
    CHECK(on_every_rank(std::filesystem::exists(own))); // rank 0's too: the others' are there
    const trained resumed = run(4, true);
    CHECK(on_every_rank(
      resumed.history.resumed_from_epoch == 2 &&
      same_bits(weights_of(resumed.net), weights_of(straight.net)) &&
      resumed.history.epochs.back().device_frames == straight.history.epochs.back().device_frames &&
      resumed.history.epochs.back().test_accuracy == straight.history.epochs.back().test_accuracy));
    // The last rank's device file missing: refused on every rank.
    world->barrier();
    if (world->rank() + 1 == world->size()) {
        std::filesystem::remove(own);
    }
    world->barrier();
    const trained missing = run(4, true);
    INFO(missing.message);
    CHECK(on_every_rank(missing.message.find("rank(s) " + std::to_string(world->size() - 1) +
                                             " cannot see their device's checkpoint file") !=
                          std::string::npos &&
                        missing.net.steps() == 0));
}

// A job killed between the ranks' renames of a data-parallel checkpoint
// with device files: the last rank's device file not yet renamed (the whole
// file and the other devices' of the new epoch), or rank 0 killed before it
// renamed anything (the whole file and its device's of the epoch before, the
// others' devices of the new one). Each resumes from the new epoch to the
// uninterrupted run's bits, from the temporaries the write left.
TEST_CASE("fit_with data_parallel finishes a checkpoint write interrupted between the ranks' "
          "renames",
          "[distributed]") {
    const shared_directory shared("lightloop_dp_interrupted_");
    dist::data_parallel<float> parallel(*world);
    using trained = optical_data_parallel_run;
    const auto run = [&](std::size_t epochs, const std::filesystem::path& path) {
        trained t(parallel, epochs, path);
        INFO(t.message);
        REQUIRE(t.message.empty());
        return t;
    };
    trained straight = run(4, {});
    const auto kill = [&](const std::string& name, auto&& unrenamed) {
        const auto path = shared.path / name;
        const auto own =
          dist::data_parallel<float>::device_checkpoint_path(path, world->rank(), world->size());
        const auto aside = [&](const std::filesystem::path& f) { return f.string() + ".aside"; };
        run(2, path);
        std::filesystem::copy_file(own, aside(own));
        if (world->rank() == 0) {
            std::filesystem::copy_file(path, aside(path));
        }
        world->barrier();
        run(3, path);
        for (const auto& f : unrenamed(path, own)) {
            std::filesystem::rename(f, lightloop::detail::shared_temporary_path(f));
            std::filesystem::copy_file(aside(f), f);
        }
        world->barrier();
        trained resumed = run(4, path);
        return resumed.history.resumed_from_epoch == 3 &&
               same_bits(weights_of(resumed.net), weights_of(straight.net)) &&
               resumed.history.epochs.back().device_frames ==
                 straight.history.epochs.back().device_frames &&
               resumed.history.epochs.back().test_accuracy ==
                 straight.history.epochs.back().test_accuracy;
    };
    using files = std::vector<std::filesystem::path>;
    const bool last = world->rank() + 1 == world->size();
    CHECK(on_every_rank(kill(
      "device.ckpt", [&](const auto&, const auto& own) { return last ? files{own} : files{}; })));
    CHECK(on_every_rank(kill("whole.ckpt", [&](const auto& path, const auto& own) {
        return world->rank() == 0 ? files{path, own} : files{};
    })));
}

// Every rank of an SPMD program given the same callbacks that write files
// (a checkpoint, a JSON log) writes the same paths at once: each writes its
// own temporary and renames it whole, the last one winning. With one shared
// temporary name one rank renamed the file another was still writing, the
// other's rename failed, it threw alone, and the others waited for it.
TEST_CASE("every rank may give fit_with the same callbacks that write files", "[distributed]") {
    const shared_directory shared("lightloop_same_files_");
    const auto train = lightloop::testing::blobs_task<float>(2);
    const auto test = lightloop::testing::blobs_task<float>(3, 50);
    const auto checkpoint = shared.path / "net.ckpt";
    const auto json = shared.path / "log.json";
    // Whether both files are whole: the checkpoint that of the network
    // trained (no collective may be left out on a rank that throws).
    const auto written_whole = [&](auto& net) {
        auto loaded = make_mlp<float, dfa<dense_gaussian>>(9);
        try {
            load_checkpoint(loaded, checkpoint);
        } catch (const lightloop::error& e) {
            UNSCOPED_INFO(e.what());
            return false;
        }
        std::ifstream in(json);
        const std::string text((std::istreambuf_iterator<char>(in)),
                               std::istreambuf_iterator<char>());
        return same_bits(weights_of(loaded), weights_of(net)) && text.starts_with("[") &&
               text.ends_with("]\n");
    };
    // Ten epochs of `parallel` training `net` with both callbacks on every
    // rank: whether no rank threw and both files are whole.
    const auto trains_and_writes = [&](auto& parallel, auto& net) {
        sgd<float> opt{{.learning_rate = 0.05, .momentum = 0.9}};
        std::string message;
        try {
            fit_with(parallel, net, opt, train, test, {.epochs = 10, .batch = 32, .seed = 4},
                     checkpoint_every_epoch(checkpoint), json_log(json));
        } catch (const lightloop::error& e) {
            message = e.what();
        }
        UNSCOPED_INFO(message);
        const bool finished = on_every_rank(message.empty());
        world->barrier();
        return on_every_rank(written_whole(net)) && finished;
    };
    using net_type = decltype(make_mlp<float, dfa<dense_gaussian>>(0));
    net_type data_net = make_mlp<float, dfa<dense_gaussian>>(9);
    dist::data_parallel<float> data(*world);
    CHECK(trains_and_writes(data, data_net));
    world->barrier();
    net_type layer_net = make_mlp<float, dfa<dense_gaussian>>(9);
    dist::dfa_layer_parallel<net_type> layers(*world, layer_net);
    CHECK(trains_and_writes(layers, layer_net));
}

TEST_CASE("fit_with data_parallel: a checkpoint that cannot be written stops every rank, and the "
          "previous one is intact",
          "[distributed]") {
    const shared_directory shared("lightloop_dp_write_");
    const auto path = shared.path / "run.ckpt";
    const auto train = lightloop::testing::blobs_task<float>(2, 10); // 40 rows
    auto net = make_mlp<float, dfa<dense_gaussian>>(3);
    sgd<float> opt{{.learning_rate = 0.05, .momentum = 0.9}};
    dist::data_parallel<float> parallel(*world);
    const fit_options options{
      .epochs = 3, .batch = 8, .seed = 2, .checkpoint = path, .resume = false};
    const std::string message = message_of<data_error>([&] {
        fit_with(parallel, net, opt, train, train, options,
                 after_each_epoch{[&](std::size_t epoch) {
                     block_next_write(path, world->rank() == 0 && epoch == 1);
                 }});
    });
    INFO(message);
    CHECK(on_every_rank(message.find("the checkpoint could not be written on rank(s) 0;") !=
                        std::string::npos));
    CHECK(on_every_rank(net.steps() == 10)); // stopped after the second epoch
    auto loaded = make_mlp<float, dfa<dense_gaussian>>(3);
    CHECK(on_every_rank(load_checkpoint(loaded, path).epoch == 1));
}

// Ranks resumed from whatever file each saw: a rank that did not see rank
// 0's started from scratch (and, with the run's epochs already done on rank
// 0, trained alone while rank 0 waited); ranks that saw other files trained
// on from different places.
TEST_CASE("fit_with data_parallel resumes only when every rank reads the same checkpoint",
          "[distributed]") {
    const shared_directory shared("lightloop_dp_resume_");
    const auto train = lightloop::testing::blobs_task<float>(2, 10); // 40 rows
    const auto options = [&](std::size_t epochs, const std::filesystem::path& path) {
        return fit_options{
          .epochs = epochs, .batch = 8, .seed = 2, .checkpoint = path, .resume = true};
    };
    dist::data_parallel<float> parallel(*world);
    const auto run = [&](std::size_t epochs, const std::filesystem::path& path) {
        auto net = make_mlp<float, dfa<dense_gaussian>>(3);
        sgd<float> opt{{.learning_rate = 0.05, .momentum = 0.9}};
        const std::string message = message_of<config_error>(
          [&] { fit_with(parallel, net, opt, train, train, options(epochs, path)); });
        CHECK(on_every_rank(net.steps() == 0 || message.empty()));
        return message;
    };
    const auto two = shared.path / "two.ckpt";
    const auto one = shared.path / "one.ckpt";
    CHECK(run(2, two).empty());
    CHECK(run(1, one).empty());
    world->barrier();
    // Rank 0's file, unseen by the others (each looks for a file of its own).
    const auto own = shared.path / ("rank" + std::to_string(world->rank()) + ".ckpt");
    if (world->rank() == 0) {
        std::filesystem::copy_file(two, own);
    }
    world->barrier();
    std::string message = run(2, own);
    INFO(message);
    CHECK(on_every_rank(message.find("rank(s) " + ranks_above_0() +
                                     " cannot see the checkpoint file the others resume from") !=
                        std::string::npos));
    // Every rank its own copy, the last rank's of the other run.
    world->barrier();
    std::filesystem::copy_file(world->rank() + 1 == world->size() ? one : two, own,
                               std::filesystem::copy_options::overwrite_existing);
    world->barrier();
    message = run(2, own);
    CHECK(
      on_every_rank(message.find("rank(s) " + std::to_string(world->size() - 1) +
                                 " read a checkpoint other than rank 0's") != std::string::npos));
    // The same bits on every rank: resumed.
    world->barrier();
    std::filesystem::copy_file(two, own, std::filesystem::copy_options::overwrite_existing);
    world->barrier();
    auto net = make_mlp<float, dfa<dense_gaussian>>(3);
    sgd<float> opt{{.learning_rate = 0.05, .momentum = 0.9}};
    const auto history = fit_with(parallel, net, opt, train, train, options(3, own));
    CHECK(on_every_rank(history.resumed_from_epoch == 2 && net.steps() == 15));
}

TEST_CASE("data_parallel refuses batches with fewer rows than ranks", "[distributed]") {
    const auto train = lightloop::testing::blobs_task<float>(2, 10); // 40 rows
    auto net = make_mlp<float, dfa<dense_gaussian>>(1);
    sgd<float> opt{{.learning_rate = 0.05}};
    dist::data_parallel<float> parallel(*world);
    // 40 = 2 x 19 + 2: the last batch has 2 rows, too few for 3 ranks.
    const fit_options options{.epochs = 1, .batch = 19};
    if (world->size() > 2) {
        CHECK_THROWS_WITH(fit_with(parallel, net, opt, train, train, options),
                          Catch::Contains("cannot be split over 3 ranks"));
    } else {
        CHECK_NOTHROW(fit_with(parallel, net, opt, train, train, options));
    }
}

// fit's checks of its own inputs (options, data, widths) ran on each rank
// alone: a rank whose data held a NaN threw before the first collective and
// left the others waiting in it forever.
TEST_CASE("fit_with refuses on every rank the options or data fit refuses on one rank",
          "[distributed]") {
    const std::size_t last = world->size() - 1;
    const auto good = lightloop::testing::blobs_task<float>(2, 10); // 40 rows
    auto bad = good;
    bad.inputs(5, 1) = std::numeric_limits<float>::quiet_NaN();
    const auto& train = world->rank() == last ? bad : good;
    const auto message_of = [](auto&& train_it) {
        std::string message;
        try {
            train_it();
        } catch (const lightloop::error& e) {
            message = e.what();
        }
        return message;
    };
    const auto refused_everywhere = [&](const std::string& message, std::uint64_t steps,
                                        std::size_t failing, const std::string& own,
                                        const std::string& strategy) {
        INFO(message);
        const std::string others = strategy + ": rank(s) " + std::to_string(failing) +
                                   " refused their options or data before training";
        const bool right =
          world->rank() == failing ? message.starts_with(own) : message.starts_with(others);
        return on_every_rank(right && steps == 0);
    };
    const std::string nan = "lightloop::fit: the training data's inputs hold nan at row 5";
    const std::string eval = "lightloop::fit: eval_batch (rows per forward pass when evaluating) "
                             "must be positive";
    SECTION("data-parallel") {
        auto net = make_mlp<float, dfa<dense_gaussian>>(1);
        sgd<float> opt{{.learning_rate = 0.05}};
        dist::data_parallel<float> parallel(*world);
        const std::string strategy = "lightloop::distributed::data_parallel";
        CHECK(refused_everywhere(
          message_of([&] { fit_with(parallel, net, opt, train, good, {.epochs = 1, .batch = 8}); }),
          net.steps(), last, nan, strategy));
        // An option only rank 0 got wrong.
        const fit_options options{
          .epochs = 1, .batch = 8, .eval_batch = world->rank() == 0 ? 0u : 256u};
        CHECK(
          refused_everywhere(message_of([&] { fit_with(parallel, net, opt, good, good, options); }),
                             net.steps(), 0, eval, strategy));
    }
    SECTION("layer-parallel") {
        auto net = make_mlp<float, dfa<dense_gaussian>>(1);
        sgd<float> opt{{.learning_rate = 0.05}};
        dist::dfa_layer_parallel<decltype(net)> parallel(*world, net,
                                                         dist::layer_parallel_mode::pipelined);
        CHECK(refused_everywhere(
          message_of([&] { fit_with(parallel, net, opt, train, good, {.epochs = 1, .batch = 8}); }),
          net.steps(), last, nan, "lightloop::distributed::dfa_layer_parallel"));
    }
}

// batch_norm over feature vectors needs two rows of a batch to train; a shard
// or batch of one was refused at that step, after the epoch's others (and a
// rank whose network had none waited for the others there).
TEST_CASE("fit_with refuses on every rank and before training a shard or batch too small for a "
          "layer's batch statistics",
          "[distributed]") {
    const auto train = lightloop::testing::blobs_task<float>(2, 10); // 40 rows
    const std::string p = std::to_string(world->size());
    // Rank 0's batch_norm normalises 8 features; the others' 2 channels of 2 x 2
    // (when `alike` is false): four values per channel in a sample.
    const auto make = [](bool alike) {
        return make_network<dfa<dense_gaussian>, softmax_cross_entropy>(
          1, dense<identity, float>{6, 8},
          batch_norm<tanh_act, float>(alike || world->rank() == 0 ? feature_shape{8, 1, 1}
                                                                  : feature_shape{2, 2, 2}),
          dense<identity, float>{8, 4});
    };
    const auto message_of = [](auto&& train_it) {
        std::string message;
        try {
            train_it();
        } catch (const config_error& e) {
            message = e.what();
        }
        return message;
    };
    SECTION("data-parallel: the last batch's smallest shard") {
        // 40 = 37 + 3: shards of one and two rows (one each on three ranks).
        for (const bool alike : {true, false}) {
            auto net = make(alike);
            sgd<float> opt{{.learning_rate = 0.05}};
            dist::data_parallel<float> parallel(*world);
            const std::string message = message_of(
              [&] { fit_with(parallel, net, opt, train, train, {.epochs = 1, .batch = 37}); });
            INFO(message);
            CHECK(on_every_rank(net.steps() == 0));
            if (alike || world->rank() == 0) {
                CHECK(message ==
                      "lightloop::fit: the smallest shard of the last batch of an epoch (40 "
                      "samples in batches of 37) over " +
                        p +
                        " ranks has 1 row, but layer 1 (batch_norm 8x1x1) trains on at least "
                        "2; choose a batch size that leaves no smaller batch; nothing was "
                        "trained");
            } else {
                CHECK(message == "lightloop::distributed::data_parallel: rank(s) 0 refused their "
                                 "options or data before training (their own messages say why); "
                                 "nothing was trained");
            }
        }
        // 40 = 2 x 18 + 4: shards of two rows on two ranks train, but not an
        // alignment probe of one row (every rank runs it after the epoch).
        if (world->size() == 2) {
            auto net = make(true);
            sgd<float> opt{{.learning_rate = 0.05}};
            dist::data_parallel<float> parallel(*world);
            const std::string probed = message_of([&] {
                fit_with(parallel, net, opt, train, train,
                         {.epochs = 1, .batch = 18, .alignment_probe = 1});
            });
            CHECK_THAT(probed, Catch::StartsWith("lightloop::fit: the alignment probe (the first 1 "
                                                 "test rows) has 1 row, but layer 1"));
            CHECK(on_every_rank(net.steps() == 0));
            fit_with(parallel, net, opt, train, train, {.epochs = 1, .batch = 18});
            CHECK(net.steps() == 3);
        }
    }
    SECTION("layer-parallel: the last batch") {
        // (Ranks with other networks are refused when the strategy is made.)
        using net_type = decltype(make(true));
        for (const auto mode :
             {dist::layer_parallel_mode::synchronous, dist::layer_parallel_mode::pipelined}) {
            net_type net = make(true);
            sgd<float> opt{{.learning_rate = 0.05}};
            dist::dfa_layer_parallel<net_type> parallel(*world, net, mode);
            // 40 = 3 x 13 + 1.
            const std::string message = message_of(
              [&] { fit_with(parallel, net, opt, train, train, {.epochs = 1, .batch = 13}); });
            INFO(message);
            CHECK(on_every_rank(net.steps() == 0));
            CHECK_THAT(message, Catch::StartsWith("lightloop::fit: the last batch of an epoch (40 "
                                                  "samples in batches of 13) has 1 row, but layer "
                                                  "1 (batch_norm 8x1x1) trains on at least 2"));
            fit_with(parallel, net, opt, train, train, {.epochs = 1, .batch = 19}); // 19, 19, 2
            CHECK(net.steps() == 3);
        }
    }
}

/// One data-parallel step: its config_error's message ("" if it trained),
/// having checked that it was refused on every rank with the network as it
/// was, or trained every rank alike.
template <class Network>
std::string message_of_checked_step(dist::data_parallel<float>& parallel, Network& net,
                                    sgd<float>& opt, const matrix<float>& x,
                                    const matrix<float>& y) {
    const auto before = weights_of(net);
    const std::uint64_t steps = net.steps();
    std::string message;
    try {
        parallel.step(net, opt, x, y);
    } catch (const config_error& e) {
        message = e.what();
    }
    const bool consistent = message.empty()
                              ? net.steps() == steps + 1 && same_bits_everywhere(weights_of(net))
                              : net.steps() == steps && same_bits(weights_of(net), before);
    CHECK(on_every_rank(consistent));
    return message;
}

// Ranks that built their networks from other seeds (seed + rank, say) trained
// p different networks with one summed gradient, each with its own feedback
// matrix, without a word.
TEST_CASE("data_parallel refuses ranks that hold different networks, on every rank",
          "[distributed]") {
    const std::size_t rank = world->rank();
    const std::size_t last = world->size() - 1;
    matrix<float> x;
    matrix<float> y;
    six_rows(x, y);
    const auto refusal = [&](auto& net) {
        sgd<float> opt{{.learning_rate = 0.1}};
        dist::data_parallel<float> parallel(*world);
        return message_of_checked_step(parallel, net, opt, x, y);
    };
    const std::string everyone_else = ranks_above_0();
    auto seeded_by_rank = make_mlp<float, dfa<dense_gaussian>>(13 + rank);
    const std::string seeds = refusal(seeded_by_rank);
    auto one_weight_off = make_mlp<float, dfa<dense_gaussian>>(13);
    if (rank == last) {
        one_weight_off.layer<1>().weights()(3, 4) += 1.0f;
    }
    const std::string weights = refusal(one_weight_off);
    auto same = make_mlp<float, dfa<dense_gaussian>>(13);
    const std::string none = refusal(same);
    INFO(seeds << "\n" << weights);
    CHECK(on_every_rank(seeds.find("data_parallel: rank(s) " + everyone_else +
                                   " hold a network other than rank 0's") != std::string::npos));
    CHECK(on_every_rank(weights.find("data_parallel: rank(s) " + std::to_string(last) +
                                     " hold a network other than rank 0's") != std::string::npos));
    CHECK(on_every_rank(none.empty()));
}

// One data_parallel for several networks in turn (a loop over seeds, say):
// each network built in the same place as the last one, or changed by
// another step, is checked again before its first step here. Checked once
// per address, a rank that built its next network from another seed trained
// it unnoticed.
TEST_CASE("data_parallel checks a network built in the place of the last one, or stepped "
          "elsewhere, again",
          "[distributed]") {
    const std::size_t rank = world->rank();
    const std::size_t last = world->size() - 1;
    matrix<float> x;
    matrix<float> y;
    six_rows(x, y);
    sgd<float> opt{{.learning_rate = 0.1}};
    dist::data_parallel<float> parallel(*world);
    auto net = make_mlp<float, dfa<dense_gaussian>>(13);
    const auto message_of_step = [&] { return message_of_checked_step(parallel, net, opt, x, y); };
    CHECK(on_every_rank(message_of_step().empty()));
    CHECK(on_every_rank(message_of_step().empty()));
    // The next network, in the same object: the last rank's from another seed.
    net = make_mlp<float, dfa<dense_gaussian>>(rank == last ? 14 : 13);
    const std::string rebuilt = message_of_step();
    // Every rank's from the same seed: trained.
    net = make_mlp<float, dfa<dense_gaussian>>(13);
    CHECK(on_every_rank(message_of_step().empty()));
    // Stepped on the last rank alone, in one process.
    if (rank == last) {
        net.train_step(x, y, opt);
    }
    const std::string stepped_alone = message_of_step();
    const std::string expected =
      "data_parallel: rank(s) " + std::to_string(last) + " hold a network other than rank 0's";
    INFO(rebuilt << "\n" << stepped_alone);
    CHECK(on_every_rank(rebuilt.find(expected) != std::string::npos));
    CHECK(on_every_rank(stepped_alone.find(expected) != std::string::npos));
}

// Ranks that passed fit_with other seeds (or other data) took shards of
// different batches: some samples twice in a step, others never.
TEST_CASE("fit_with data_parallel refuses ranks that sample other batches, on every rank",
          "[distributed]") {
    const std::size_t rank = world->rank();
    const std::size_t last = world->size() - 1;
    const auto train = lightloop::testing::blobs_task<float>(2, 10); // 40 rows
    std::vector<std::size_t> fewer(36);
    std::iota(fewer.begin(), fewer.end(), std::size_t{0});
    const auto shorter = select_rows(train, fewer);
    const auto refusal = [&](const labelled_data<float>& data, std::uint64_t seed) {
        auto net = make_mlp<float, dfa<dense_gaussian>>(1);
        sgd<float> opt{{.learning_rate = 0.05}};
        dist::data_parallel<float> parallel(*world);
        const auto before = weights_of(net);
        std::string message;
        try {
            fit_with(parallel, net, opt, data, train, {.epochs = 1, .batch = 8, .seed = seed});
        } catch (const config_error& e) {
            message = e.what();
        }
        CHECK(on_every_rank(message.empty()
                              ? net.steps() == 5
                              : same_bits(weights_of(net), before) && net.steps() == 0));
        return message;
    };
    const std::string everyone_else = ranks_above_0();
    const std::string seeds = refusal(train, 5 + rank);
    const std::string data = refusal(rank == last ? shorter : train, 5);
    const std::string none = refusal(train, 5);
    INFO(seeds << "\n" << data);
    // Another seed is caught with the options, before the sampler exists.
    CHECK(
      on_every_rank(seeds.find("data_parallel: rank(s) " + everyone_else +
                               " passed fit_with other options than rank 0") != std::string::npos));
    CHECK(on_every_rank(data.find("data_parallel: rank(s) " + std::to_string(last) +
                                  " sample the training data otherwise than rank 0") !=
                        std::string::npos));
    CHECK(on_every_rank(none.empty()));
}

TEST_CASE("optical DFA: every rank has the seed's medium and a camera of its own",
          "[distributed]") {
    using device = optical<>;
    device mine;
    mine.configure(10, 64, 77);
    mine.set_noise_stream(world->rank());
    const auto e = lightloop::testing::random_matrix<float>(8, 10, 5);
    matrix<float> y = matrix<float>::from_shape({8, 64});
    mine.project(e, y);
    std::vector<float> noisy(y.begin(), y.end());
    // Rank 0 sends its projection; each other rank compares it with its own
    // and with what its device gives on rank 0's noise stream.
    std::vector<float> root = noisy;
    world->broadcast(std::span<float>(root), 0);
    device as_rank0;
    as_rank0.configure(10, 64, 77);
    matrix<float> y0 = matrix<float>::from_shape({8, 64});
    as_rank0.project(e, y0);
    CHECK(same_bits(std::vector<float>(y0.begin(), y0.end()), root));
    if (world->rank() != 0) {
        CHECK_FALSE(same_bits(noisy, root));
        // Same medium: the two cameras' readings of one field agree up to
        // noise (the default camera's SNR is well above 10 dB).
        double diff = 0.0;
        double signal = 0.0;
        for (std::size_t i = 0; i < noisy.size(); ++i) {
            diff += (noisy[i] - root[i]) * (noisy[i] - root[i]);
            signal += root[i] * root[i];
        }
        CHECK(diff < 0.2 * signal);
    }
}

// A method picked at run time (feedback_choice) holding an optical DFA: the
// rank's noise stream reaches the held device, so its signals are those of
// the method alone on that stream, and not those of stream 0.
TEST_CASE("give_rank_noise_stream reaches the device a feedback_choice holds", "[distributed]") {
    using optical_dfa = dfa<optical<>>;
    auto hidden_signal = [](auto method, bool give_stream) {
        network net{std::move(method), softmax_cross_entropy{}, 9, dense<tanh_act>{10, 16},
                    dense<identity>{16, 4}};
        if (give_stream) {
            dist::give_rank_noise_stream(net, 3);
        }
        const auto x = lightloop::testing::random_matrix<float>(8, 10, 1);
        matrix<float> y = matrix<float>::from_shape({8, 4});
        y.fill(0.0f);
        for (std::size_t r = 0; r < 8; ++r) {
            y(r, r % 4) = 1.0f;
        }
        net.compute_gradients(x, y);
        const auto& delta = lightloop::detail::read_delta(net.template layer<0>());
        return std::vector<float>(delta.begin(), delta.end());
    };
    using method = feedback_choice<backprop, optical_dfa>;
    const auto chosen = hidden_signal(method{optical_dfa{}}, true);
    CHECK(same_bits(chosen, hidden_signal(optical_dfa{}, true)));
    CHECK_FALSE(same_bits(chosen, hidden_signal(method{optical_dfa{}}, false)));
}

namespace {

/// Four layers, so that 2 and 3 ranks each get a block.
template <class T, class Feedback>
auto make_deep(std::uint64_t seed) {
    return make_network<Feedback, softmax_cross_entropy>(
      seed, dense<tanh_act, T>{6, 24}, dense<tanh_act, T>{24, 16}, dense<tanh_act, T>{16, 12},
      dense<identity, T>{12, 4});
}

/// Layer i's parameters, tensor after tensor (visit_parameters' order:
/// dense's weights then bias).
template <class Network>
std::vector<typename Network::value_type> layer_parameters(Network& net, std::size_t layer) {
    std::vector<typename Network::value_type> w;
    net.visit_layers([&](auto& l, std::size_t i) {
        if constexpr (layer_has_parameters<decltype(l)>) {
            if (i == layer) {
                l.visit_parameters(
                  [&](auto values, auto) { w.insert(w.end(), values.begin(), values.end()); });
            }
        }
    });
    return w;
}

/// make_deep with a user's layer (support/user_layer.hpp) as the output
/// layer: the last rank reads e from a layer with only the concept's
/// required members (no const delta()).
template <class T, class Feedback>
auto make_deep_user_output(std::uint64_t seed) {
    return make_network<Feedback, softmax_cross_entropy>(
      seed, dense<tanh_act, T>{6, 24}, dense<tanh_act, T>{24, 16}, dense<tanh_act, T>{16, 12},
      user::low_rank<identity, T>{12, 4, 3});
}

enum class deep_net { mlp, user_output, cnn };

/// Synchronous layer-parallel training against the same direct method in
/// one process, on the same batches: whether each rank's layers hold the
/// single process's bits. T: a precision (float, double, mixed_bf16).
template <class T, deep_net Kind = deep_net::mlp, class Method = dfa<dense_gaussian>>
bool layer_parallel_matches_one_process() {
    const auto make = [](std::uint64_t seed) {
        if constexpr (Kind == deep_net::user_output) {
            return make_deep_user_output<T, Method>(seed);
        } else if constexpr (Kind == deep_net::cnn) {
            return make_cnn<T, Method>(seed);
        } else {
            return make_deep<T, Method>(seed);
        }
    };
    using net_type = decltype(make(0));
    using V = typename net_type::value_type; // T, or float for mixed bf16
    const auto data = lightloop::testing::blobs_task<V>(5);
    net_type parallel_net = make(13);
    net_type single_net = make(13);
    sgd<V> parallel_opt{{.learning_rate = 0.1, .momentum = 0.9}};
    sgd<V> single_opt{{.learning_rate = 0.1, .momentum = 0.9}};
    dist::dfa_layer_parallel<net_type> parallel(*world, parallel_net);
    matrix<V> x;
    matrix<V> y;
    bool losses_equal = true;
    for (std::size_t step = 0; step < 8; ++step) {
        std::vector<std::size_t> rows(step % 2 == 0 ? 32 : 19);
        for (std::size_t i = 0; i < rows.size(); ++i) {
            rows[i] = (step * 37 + i * 5) % data.size();
        }
        gather_rows(data.inputs, std::span<const std::size_t>(rows), x);
        gather_rows(data.targets, std::span<const std::size_t>(rows), y);
        const step_totals totals = parallel.step(parallel_net, parallel_opt, x, y);
        const double loss = static_cast<double>(single_net.train_step(x, y, single_opt));
        losses_equal = losses_equal && totals.loss_sum == loss * static_cast<double>(rows.size());
    }
    bool same = losses_equal && parallel_net.steps() == 8;
    for (std::size_t i = parallel.owned().first; i < parallel.owned().last; ++i) {
        same =
          same && same_bits(layer_parameters(parallel_net, i), layer_parameters(single_net, i));
    }
    return same;
}

} // namespace

// A callback that fails on one rank (a log on rank 0, as the README advises,
// whose disk is full) took that rank out of fit_with, and the others waited
// in their next step forever. Its failure is now kept until the epoch's end
// (no more of that rank's callbacks called, the epoch's steps taken with
// the others) and thrown on every rank together: the failing rank's own
// error, the others' naming it. The callback is given to that rank alone.
namespace {
struct failing_callback {
    std::size_t epoch_end = 0;        // 1-based: its on_epoch_end throws (0: never)
    std::size_t batch_epoch = 0;      // 1-based: its on_batch_end of batch 2 throws
    bool fit_begin = false;           // its on_fit_begin throws (a log's path refused)
    std::size_t not_an_exception = 0; // 1-based: its on_epoch_end throws an int
    std::size_t batches_seen = 0;
    void on_fit_begin(const fit_info&) const {
        if (fit_begin) {
            throw config_error("test log: its directory does not exist");
        }
    }
    void on_batch_end(const batch_info& b) {
        ++batches_seen;
        if (b.epoch + 1 == batch_epoch && b.batch == 2) {
            throw std::runtime_error("test progress: the terminal went away");
        }
    }
    void on_epoch_end(const epoch_record& r) {
        if (r.epoch == epoch_end) {
            throw data_error("test log: no space left on the device");
        }
        if (r.epoch == not_an_exception) {
            throw 42;
        }
    }
};

/// e.what() of anything run() throws, "" if nothing ("int 42" for an int).
template <class F>
std::string any_message(F&& run) {
    try {
        run();
    } catch (const std::exception& e) {
        return e.what();
    } catch (int value) {
        return "int " + std::to_string(value);
    }
    return "";
}
} // namespace

TEST_CASE("a callback that fails on one rank stops every rank at the epoch's end or before "
          "training",
          "[distributed]") {
    const std::size_t rank = world->rank();
    const std::size_t last = world->size() - 1;
    const auto data = lightloop::testing::blobs_task<float>(2, 10); // 40 rows: 5 batches of 8
    const fit_options options{.epochs = 3, .batch = 8};
    // fit_with on every rank, `callback` given to rank `failing` alone;
    // this rank's message and the network's step count after.
    const auto run = [&](auto& parallel, auto& net, std::size_t failing,
                         failing_callback callback) {
        sgd<float> opt{{.learning_rate = 0.05, .momentum = 0.9}};
        const std::string message = any_message([&] {
            if (rank == failing) {
                fit_with(parallel, net, opt, data, data, options, callback);
            } else {
                fit_with(parallel, net, opt, data, data, options);
            }
        });
        return std::pair{message, net.steps()};
    };
    const auto stopped_together = [&](const std::pair<std::string, std::uint64_t>& result,
                                      std::size_t failing, const std::string& own,
                                      std::uint64_t steps, const std::string& strategy) {
        INFO(result.first);
        const std::string others = strategy + ": a callback failed on rank(s) " +
                                   std::to_string(failing) + "; every rank stopped";
        const bool message_right =
          rank == failing ? result.first == own : result.first.find(others) != std::string::npos;
        return on_every_rank(message_right && result.second == steps);
    };
    const std::string disk = "test log: no space left on the device";
    const std::string terminal = "test progress: the terminal went away";
    const std::string log_path = "test log: its directory does not exist";
    SECTION("data-parallel") {
        auto net = make_mlp<float, dfa<dense_gaussian>>(1);
        dist::data_parallel<float> parallel(*world);
        // Rank 0's epoch-end log fails after epoch 2: every rank stops there.
        CHECK(stopped_together(run(parallel, net, 0, {.epoch_end = 2}), 0, disk, 10,
                               "lightloop::distributed::data_parallel"));
        // The last rank's batch callback fails in epoch 1: the epoch ends
        // on every rank, then every rank stops.
        auto again = make_mlp<float, dfa<dense_gaussian>>(1);
        CHECK(stopped_together(run(parallel, again, last, {.batch_epoch = 1}), last, terminal, 5,
                               "lightloop::distributed::data_parallel"));
        // Rank 0's log refuses its path before training: every rank stops
        // before the first step (it used to leave alone, the others waiting).
        auto fresh = make_mlp<float, dfa<dense_gaussian>>(1);
        CHECK(stopped_together(run(parallel, fresh, 0, {.fit_begin = true}), 0, log_path, 0,
                               "lightloop::distributed::data_parallel"));
        // A callback may throw what is not a std::exception: the same (that
        // rank left alone).
        auto odd = make_mlp<float, dfa<dense_gaussian>>(1);
        CHECK(stopped_together(run(parallel, odd, last, {.not_an_exception = 1}), last, "int 42", 5,
                               "lightloop::distributed::data_parallel"));
    }
    SECTION("layer-parallel, synchronous and pipelined") {
        for (const auto mode :
             {dist::layer_parallel_mode::synchronous, dist::layer_parallel_mode::pipelined}) {
            auto deep = make_deep<float, dfa<dense_gaussian>>(1);
            dist::dfa_layer_parallel<decltype(deep)> parallel(*world, deep, mode);
            CHECK(stopped_together(run(parallel, deep, 0, {.epoch_end = 2}), 0, disk, 10,
                                   "lightloop::distributed::dfa_layer_parallel"));
            auto again = make_deep<float, dfa<dense_gaussian>>(1);
            dist::dfa_layer_parallel<decltype(again)> parallel_again(*world, again, mode);
            CHECK(stopped_together(run(parallel_again, again, last, {.batch_epoch = 1}), last,
                                   terminal, 5, "lightloop::distributed::dfa_layer_parallel"));
            auto fresh = make_deep<float, dfa<dense_gaussian>>(1);
            dist::dfa_layer_parallel<decltype(fresh)> parallel_fresh(*world, fresh, mode);
            CHECK(stopped_together(run(parallel_fresh, fresh, last, {.fit_begin = true}), last,
                                   log_path, 0, "lightloop::distributed::dfa_layer_parallel"));
        }
    }
}

// Pipelined, the ranks below the last update a batch in the next call, with
// the learning rate of that call, while the last rank updates it at once: a
// schedule that moves the rate every batch (cosine) gives the ranks other
// rates for the same batch's update. The optimizer agreement compares the
// rate each rank had when the batch went through it, which is the same.
TEST_CASE("pipelined layer-parallel trains under a learning rate that moves every batch",
          "[distributed]") {
    const auto data = lightloop::testing::blobs_task<float>(2, 10); // 40 rows: 5 batches of 8
    auto deep = make_deep<float, dfa<dense_gaussian>>(1);
    dist::dfa_layer_parallel<decltype(deep)> parallel(*world, deep,
                                                      dist::layer_parallel_mode::pipelined);
    sgd<float> opt{{.learning_rate = 0.05, .momentum = 0.9}};
    const std::string message = any_message([&] {
        fit_with(parallel, deep, opt, data, data, {.epochs = 2, .batch = 8},
                 cosine_schedule{.floor = 0.1});
    });
    INFO(message);
    CHECK(on_every_rank(message.empty() && deep.steps() == 10));
}

TEST_CASE("balanced_split gives each rank a contiguous block, the largest as small as can be",
          "[distributed]") {
    const std::vector<double> paper{803841, 1049601, 10251};
    const auto two = dist::balanced_split(paper, 2);
    CHECK(two == std::vector<layer_range>{{0, 1}, {1, 3}});
    const std::vector<double> even{1, 1, 1, 1, 1, 1};
    CHECK(dist::balanced_split(even, 3) == std::vector<layer_range>{{0, 2}, {2, 4}, {4, 6}});
    CHECK(dist::balanced_split(even, 6).size() == 6);
    CHECK_THROWS_AS(dist::balanced_split(paper, 4), config_error);
}

TEST_CASE("a dense device's slice holds the same rows of B as the whole device", "[distributed]") {
    dense_gaussian whole;
    whole.configure(10, 300, 99);
    dense_gaussian slice;
    slice.configure_slice(10, 300, 99, 120, 50);
    const auto& b = whole.feedback_matrix<float>();
    const auto& part = slice.feedback_matrix<float>();
    REQUIRE(part.shape(0) == 50);
    bool same = true;
    for (std::size_t r = 0; r < 50; ++r) {
        for (std::size_t c = 0; c < 10; ++c) {
            same = same && part(r, c) == b(120 + r, c);
        }
    }
    CHECK(same);
    CHECK_THROWS_AS(slice.configure_slice(10, 300, 99, 290, 20), config_error);
}

TEST_CASE("synchronous DFA layer-parallel training is bitwise DFA in one process",
          "[distributed]") {
    CHECK(on_every_rank(layer_parallel_matches_one_process<float>()));
    CHECK(on_every_rank(layer_parallel_matches_one_process<double>()));
    CHECK(on_every_rank(layer_parallel_matches_one_process<mixed_bf16>()));
}

TEST_CASE("layer-parallel DFA of a convolutional network is bitwise DFA in one process",
          "[distributed]") {
    CHECK(on_every_rank(layer_parallel_matches_one_process<float, deep_net::cnn>()));
    CHECK(on_every_rank(layer_parallel_matches_one_process<mixed_bf16, deep_net::cnn>()));
}

TEST_CASE("layer-parallel DFA with a user's output layer is bitwise DFA in one process",
          "[distributed]") {
    CHECK(on_every_rank(layer_parallel_matches_one_process<float, deep_net::user_output>()));
}

// The ranks project what the method projects: sign(e) for sign-DFA, the
// target for DRTP (they projected e, training DFA instead).
TEST_CASE("synchronous sign-DFA and DRTP layer-parallel training are bitwise the method in one "
          "process",
          "[distributed]") {
    CHECK(on_every_rank(
      layer_parallel_matches_one_process<float, deep_net::mlp, sign_dfa<dense_gaussian>>()));
    CHECK(on_every_rank(
      layer_parallel_matches_one_process<float, deep_net::mlp, drtp<dense_uniform>>()));
}

TEST_CASE("DFA layer-parallel under fit_with: the dense device as one process, the optical one "
          "learns",
          "[distributed]") {
    const auto train = lightloop::testing::blobs_task<float>(2);
    const auto test = lightloop::testing::blobs_task<float>(3, 50);
    const fit_options options{.epochs = 12, .batch = 32, .seed = 4};
    {
        using net_type = decltype(make_deep<float, dfa<dense_gaussian>>(0));
        net_type net = make_deep<float, dfa<dense_gaussian>>(9);
        net_type single = make_deep<float, dfa<dense_gaussian>>(9);
        sgd<float> opt{{.learning_rate = 0.05, .momentum = 0.9}};
        sgd<float> single_opt{{.learning_rate = 0.05, .momentum = 0.9}};
        dist::dfa_layer_parallel<net_type> parallel(*world, net);
        std::vector<std::vector<float>> seen;
        std::vector<std::vector<float>> single_seen;
        const auto history =
          fit_with(parallel, net, opt, train, test, options, weights_each_epoch{&seen});
        const auto single_history =
          fit(single, single_opt, train, test, options, weights_each_epoch{&single_seen});
        // The network the callbacks get after each epoch is the whole one on
        // every rank (a callback that saves it saved the other ranks' layers
        // untrained before).
        CHECK(on_every_rank(seen.size() == options.epochs && seen == single_seen));
        {
            // Pipelined: after each epoch's last update, the whole network,
            // the same on every rank, and after the last one the network
            // fit_with hands back.
            net_type piped = make_deep<float, dfa<dense_gaussian>>(9);
            sgd<float> piped_opt{{.learning_rate = 0.05, .momentum = 0.9}};
            dist::dfa_layer_parallel<net_type> pipelined(*world, piped,
                                                         dist::layer_parallel_mode::pipelined);
            std::vector<std::vector<float>> piped_seen;
            fit_with(pipelined, piped, piped_opt, train, test, options,
                     weights_each_epoch{&piped_seen});
            CHECK(on_every_rank(piped_seen.size() == options.epochs &&
                                piped_seen.back() == weights_of(piped)));
            CHECK(same_bits_everywhere(piped_seen.front()));
        }
        CHECK(history.epochs.back().test_accuracy == single_history.epochs.back().test_accuracy);
        CHECK(history.epochs.back().train_loss == single_history.epochs.back().train_loss);
        CHECK(history.epochs.back().test_accuracy > 0.8);
        // The whole network on every rank, each layer from the rank that
        // trains it: one process's bits, and evaluated in one process.
        CHECK(on_every_rank(same_bits(weights_of(net), weights_of(single))));
        CHECK(on_every_rank(lightloop::evaluate(net, test).accuracy ==
                            history.epochs.back().test_accuracy));
        // And the whole optimizer: every layer's momentum from the rank that
        // trains it, so that one process goes on from here as from the
        // one-process run (the same bits an epoch later, below).
        CHECK(on_every_rank(same_bits(flattened(opt.state()), flattened(single_opt.state()))));
        // The alignment probe (backprop through every layer): measured on
        // the whole network, gathered on every rank before it, the same
        // figures as one process, and training as without it.
        fit_options probed = options;
        probed.alignment_probe = 64;
        net_type with_probe = make_deep<float, dfa<dense_gaussian>>(9);
        sgd<float> probe_opt{{.learning_rate = 0.05, .momentum = 0.9}};
        const auto probed_history = fit_with(parallel, with_probe, probe_opt, train, test, probed);
        net_type single_probed = make_deep<float, dfa<dense_gaussian>>(9);
        sgd<float> single_probe_opt{{.learning_rate = 0.05, .momentum = 0.9}};
        const auto single_probed_history =
          fit(single_probed, single_probe_opt, train, test, probed);
        bool same_alignment = true;
        for (std::size_t e = 0; e < probed_history.epochs.size(); ++e) {
            const epoch_record& a = probed_history.epochs[e];
            const epoch_record& b = single_probed_history.epochs[e];
            same_alignment = same_alignment && a.alignment_mean.size() == 3 &&
                             a.alignment_mean == b.alignment_mean &&
                             a.alignment_spread == b.alignment_spread &&
                             a.weight_alignment.size() == b.weight_alignment.size();
        }
        CHECK(on_every_rank(same_alignment));
        CHECK(on_every_rank(probed_history.epochs.back().alignment_mean[0] > 0.0));
        CHECK(on_every_rank(same_bits(weights_of(with_probe), weights_of(net))));
        // One process goes on from the state handed back.
        fit_options more = options;
        more.epochs = 1;
        fit(net, opt, train, test, more);
        fit(single, single_opt, train, test, more);
        CHECK(on_every_rank(same_bits(weights_of(net), weights_of(single))));
    }
    {
        // Each rank's optical device is its own pixels of the whole one: the
        // rows of R for its layers only (the others never drawn), a camera
        // of its own. Chance is 25%, a linear model 60%.
        using net_type = decltype(make_deep<float, dfa<optical<>>>(0));
        net_type net = make_deep<float, dfa<optical<>>>(9);
        sgd<float> opt{{.learning_rate = 0.05, .momentum = 0.9}};
        dist::dfa_layer_parallel<net_type> parallel(*world, net);
        const std::size_t pixels = parallel.slice_count();
        CHECK(parallel.device().output_size() == pixels);
        CHECK(parallel.device().medium().outputs() == pixels);
        CHECK(parallel.device().first_output() == parallel.slice_first());
        CHECK(pixels < net.feedback().projection_size());
        const auto history = fit_with(parallel, net, opt, train, test, options);
        CHECK(history.epochs.back().test_accuracy > 0.7);
        // This rank holds its rows of R only; the network's own device (the
        // whole one) never projects here, so it never draws R.
        // (R's real and imaginary parts, and their transpose for the narrow
        // input: four floats per entry.)
        CHECK(parallel.device().medium().stored_bytes() ==
              4 * pixels * net.output_size() * sizeof(float));
        CHECK(net.feedback().device().medium().stored_bytes() == 0);
    }
}

namespace {

/// Five layers (2 and 3 ranks each get a block): batch_norm's running
/// estimates and dropout's masks (drawn from the step count) are state a
/// resumed run must have.
template <class Feedback>
auto make_stateful(std::uint64_t seed) {
    return make_network<Feedback, softmax_cross_entropy>(
      seed, dense<tanh_act>{6, 24}, batch_norm<tanh_act>{24}, dropout<float>(24, 0.2),
      dense<tanh_act>{24, 16}, dense<identity>{16, 4});
}

/// Layers [first, last)'s parameters and buffers, tensor after tensor.
template <class Network>
std::vector<float> saved_tensors(Network& net, layer_range layers) {
    std::vector<float> all;
    net.visit_layers([&](auto& l, std::size_t i) {
        if (layers.contains(i)) {
            lightloop::detail::visit_saved(
              l, [&](auto values) { all.insert(all.end(), values.begin(), values.end()); });
        }
    });
    return all;
}

/// Layer-parallel training resumed from its checkpoint against the same
/// run uninterrupted: whether each rank's layers, optimizer state, device
/// figures and the run's figures are the same bits.
template <class Feedback>
bool layer_parallel_resumes_bitwise(dist::layer_parallel_mode mode) {
    const shared_directory shared("lightloop_lp_resume_");
    const auto path = shared.path / "run.ckpt";
    const auto train = lightloop::testing::blobs_task<float>(2);
    const auto test = lightloop::testing::blobs_task<float>(3, 50);
    const auto options = [&](std::size_t epochs, bool resume) {
        return resumable(epochs, resume ? path : std::filesystem::path{});
    };
    using net_type = decltype(make_stateful<Feedback>(0));
    const auto run = [&](net_type& net, adam<float>& opt, std::size_t epochs, bool resume) {
        dist::dfa_layer_parallel<net_type> parallel(*world, net, mode);
        return fit_with(parallel, net, opt, train, test, options(epochs, resume));
    };
    net_type straight = make_stateful<Feedback>(9);
    adam<float> straight_opt{{.learning_rate = 0.01}};
    const auto straight_history = run(straight, straight_opt, 4, false);
    net_type first = make_stateful<Feedback>(9);
    adam<float> first_opt{{.learning_rate = 0.01}};
    run(first, first_opt, 2, true);
    net_type resumed = make_stateful<Feedback>(9);
    adam<float> resumed_opt{{.learning_rate = 0.01}};
    const auto history = run(resumed, resumed_opt, 4, true);

    const dist::dfa_layer_parallel<net_type> split(*world, straight, mode);
    bool same =
      history.resumed_from_epoch == 2 && resumed.steps() == straight.steps() &&
      same_bits(saved_tensors(resumed, split.owned()), saved_tensors(straight, split.owned())) &&
      same_bits(flattened(resumed_opt.state()), flattened(straight_opt.state())) &&
      resumed_opt.step_count() == straight_opt.step_count() &&
      history.epochs.size() == straight_history.epochs.size();
    for (std::size_t e = 0; same && e < history.epochs.size(); ++e) {
        const epoch_record& a = history.epochs[e];
        const epoch_record& b = straight_history.epochs[e];
        same = a.train_loss == b.train_loss && a.test_accuracy == b.test_accuracy &&
               a.device_frames == b.device_frames && a.device_saturated == b.device_saturated;
    }
    if constexpr (std::is_same_v<Feedback, dfa<dense_gaussian>>) {
        if (mode == dist::layer_parallel_mode::synchronous) {
            // fit_with hands back the whole network and adam's moments on
            // every rank (each layer's from the rank that trains it), one
            // process's bits, after a resumed run too.
            net_type single = make_stateful<Feedback>(9);
            adam<float> single_opt{{.learning_rate = 0.01}};
            fit(single, single_opt, train, test, options(4, false));
            same = same && same_bits(saved_tensors(straight, {}), saved_tensors(single, {})) &&
                   same_bits(saved_tensors(resumed, {}), saved_tensors(single, {})) &&
                   same_bits(flattened(resumed_opt.state()), flattened(single_opt.state())) &&
                   resumed_opt.step_count() == single_opt.step_count();
        }
    }
    // Each rank wrote its own part.
    return same &&
           std::filesystem::exists(dist::rank_checkpoint_path(path, world->rank(), world->size()));
}

} // namespace

// Layer-parallel training refused checkpoints: each rank holds its own
// layers, optimizer state and device slice. Each rank now writes its part.
TEST_CASE("layer-parallel training resumes from its checkpoint to the uninterrupted run's bits",
          "[distributed]") {
    using dist::layer_parallel_mode;
    CHECK(on_every_rank(
      layer_parallel_resumes_bitwise<dfa<dense_gaussian>>(layer_parallel_mode::synchronous)));
    CHECK(on_every_rank(
      layer_parallel_resumes_bitwise<dfa<dense_gaussian>>(layer_parallel_mode::pipelined)));
    // An optical device slice's state: its calibration, statistics and
    // noise counter, each rank's own.
    CHECK(on_every_rank(
      layer_parallel_resumes_bitwise<dfa<optical<>>>(layer_parallel_mode::synchronous)));
    CHECK(on_every_rank(
      layer_parallel_resumes_bitwise<dfa<optical<>>>(layer_parallel_mode::pipelined)));
}

// With one batch an epoch, a pipelined epoch is one step and finish(): the
// synchronous step's bits. Parts written in one mode and resumed in the
// other then continue the uninterrupted synchronous run bit for bit: what
// the parts hold does not depend on the mode.
TEST_CASE("layer-parallel parts written in one mode resume in the other", "[distributed]") {
    const shared_directory shared("lightloop_lp_modes_");
    const auto train = lightloop::testing::blobs_task<float>(2, 8); // 32 rows: one batch an epoch
    const auto test = lightloop::testing::blobs_task<float>(3, 50);
    using net_type = decltype(make_stateful<dfa<dense_gaussian>>(0));
    using dist::layer_parallel_mode;
    struct trained {
        net_type net = make_stateful<dfa<dense_gaussian>>(9);
        adam<float> opt{{.learning_rate = 0.01}};
        fit_history history;
    };
    const auto run = [&](layer_parallel_mode mode, std::size_t epochs,
                         const std::filesystem::path& path) {
        trained t;
        dist::dfa_layer_parallel<net_type> parallel(*world, t.net, mode);
        t.history = fit_with(parallel, t.net, t.opt, train, test, resumable(epochs, path));
        return t;
    };
    trained straight = run(layer_parallel_mode::synchronous, 4, {});
    bool same = true;
    for (const auto& [first, then, name] :
         {std::tuple{layer_parallel_mode::synchronous, layer_parallel_mode::pipelined, "sync"},
          std::tuple{layer_parallel_mode::pipelined, layer_parallel_mode::synchronous, "piped"}}) {
        const auto path = shared.path / (std::string(name) + ".ckpt");
        run(first, 2, path);
        trained resumed = run(then, 4, path);
        same = same && resumed.history.resumed_from_epoch == 2 &&
               resumed.net.steps() == straight.net.steps() &&
               same_bits(saved_tensors(resumed.net, {}), saved_tensors(straight.net, {})) &&
               same_bits(flattened(resumed.opt.state()), flattened(straight.opt.state()));
    }
    CHECK(on_every_rank(same));
}

// A job killed between the ranks' renames of a checkpoint write leaves the
// last rank's part of the epoch before, with the new one whole in its
// temporary beside it (every temporary is written before any rank renames).
// Resuming finishes that write: every rank resumes from the new epoch, to the
// uninterrupted run's bits, and the temporary is in place. A temporary that
// is not the newest parts' epoch is refused as a part of another epoch.
TEST_CASE("layer-parallel resume finishes a checkpoint write interrupted between the ranks' "
          "renames",
          "[distributed]") {
    const shared_directory shared("lightloop_lp_interrupted_");
    const auto train = lightloop::testing::blobs_task<float>(2);
    const auto test = lightloop::testing::blobs_task<float>(3, 50);
    using net_type = decltype(make_stateful<dfa<dense_gaussian>>(0));
    const bool last = world->rank() + 1 == world->size();
    struct trained {
        net_type net = make_stateful<dfa<dense_gaussian>>(9);
        adam<float> opt{{.learning_rate = 0.01}};
        fit_history history;
    };
    const auto run = [&](std::size_t epochs, const std::filesystem::path& path) {
        trained t;
        dist::dfa_layer_parallel<net_type> parallel(*world, t.net);
        t.history = fit_with(parallel, t.net, t.opt, train, test, resumable(epochs, path));
        return t;
    };
    trained straight = run(4, {});
    const auto path = shared.path / "run.ckpt";
    const auto part = dist::rank_checkpoint_path(path, world->rank(), world->size());
    const auto temporary = lightloop::detail::shared_temporary_path(part);
    const auto aside = shared.path / ("aside" + std::to_string(world->rank()));
    run(2, path);
    std::filesystem::copy_file(part, aside);
    run(3, path);
    // The kill: the last rank's epoch-3 part not yet renamed.
    if (last) {
        std::filesystem::rename(part, temporary);
        std::filesystem::copy_file(aside, part);
    }
    world->barrier();
    trained finished = run(3, path); // nothing left to train
    CHECK(on_every_rank(finished.history.resumed_from_epoch == 3 &&
                        finished.net.steps() == straight.net.steps() / 4 * 3));
    CHECK(on_every_rank(!std::filesystem::exists(temporary)));
    trained resumed = run(4, path);
    CHECK(on_every_rank(
      resumed.history.resumed_from_epoch == 3 && resumed.net.steps() == straight.net.steps() &&
      same_bits(saved_tensors(resumed.net, {}), saved_tensors(straight.net, {})) &&
      same_bits(flattened(resumed.opt.state()), flattened(straight.opt.state()))));

    // Another epoch's part in the temporary (the one before), or a broken
    // one: nothing to finish, the parts refused as before, nothing loaded.
    const auto refused = [&] {
        net_type net = make_stateful<dfa<dense_gaussian>>(9);
        const std::vector<float> before = weights_of(net);
        adam<float> opt{{.learning_rate = 0.01}};
        dist::dfa_layer_parallel<net_type> parallel(*world, net);
        const std::string message = message_of<config_error>(
          [&] { fit_with(parallel, net, opt, train, test, resumable(5, path)); });
        return message.find("rank(s) " + std::to_string(world->size() - 1) +
                            " resumed from a part of another epoch or step than rank 0's") !=
                 std::string::npos &&
               net.steps() == 0 && same_bits(weights_of(net), before);
    };
    if (last) {
        std::filesystem::copy_file(aside, part, std::filesystem::copy_options::overwrite_existing);
        std::filesystem::copy_file(aside, temporary);
    }
    world->barrier();
    CHECK(on_every_rank(refused()));
    if (last) {
        std::filesystem::resize_file(temporary, 100);
    }
    world->barrier();
    CHECK(on_every_rank(refused()));
}

TEST_CASE("layer-parallel checkpoints are refused on every rank where they cannot resume as "
          "written",
          "[distributed]") {
    const shared_directory shared("lightloop_lp_refuse_");
    const auto path = shared.path / "run.ckpt";
    const auto part = dist::rank_checkpoint_path(path, world->rank(), world->size());
    const bool last = world->rank() + 1 == world->size();
    const auto train = lightloop::testing::blobs_task<float>(2, 10); // 40 rows
    using net_type = decltype(make_stateful<dfa<dense_gaussian>>(0));
    const auto options = [&](std::size_t epochs, const std::filesystem::path& at) {
        return fit_options{
          .epochs = epochs, .batch = 8, .seed = 2, .checkpoint = at, .resume = true};
    };
    struct outcome {
        std::string message;
        std::uint64_t steps;
        bool untouched;
    };
    // A run of `epochs` from `at` (whatever it holds): its error's message
    // (type E) and what it did to the network.
    const auto run = [&]<class E = config_error>(
      std::size_t epochs, const std::filesystem::path& at, auto... callbacks) {
        net_type net = make_stateful<dfa<dense_gaussian>>(5);
        const std::vector<float> before = weights_of(net);
        adam<float> opt{{.learning_rate = 0.01}};
        dist::dfa_layer_parallel<net_type> parallel(*world, net);
        const std::string message = message_of<E>(
          [&] { fit_with(parallel, net, opt, train, train, options(epochs, at), callbacks...); });
        // steps: the network's step count; untouched: no weight changed
        // (nothing loaded or trained).
        return outcome{message, net.steps(), same_bits(weights_of(net), before)};
    };
    // A part that cannot be written, on the last rank at the second epoch:
    // every rank throws, every part still the first epoch's.
    const outcome unwritten = run.template operator()<data_error>(
      3, path,
      after_each_epoch{[&](std::size_t epoch) { block_next_write(part, last && epoch == 1); }});
    INFO(unwritten.message);
    CHECK(on_every_rank(unwritten.message.find("the checkpoint could not be written on rank(s) " +
                                               std::to_string(world->size() - 1) + ";") !=
                        std::string::npos));
    CHECK(on_every_rank(unwritten.steps == 10));
    std::filesystem::remove(lightloop::detail::shared_temporary_path(part));
    const outcome resumed = run(1, path); // the first epoch's parts: nothing to do
    CHECK(on_every_rank(resumed.message.empty() && resumed.steps == 5));

    // A rank's part of another epoch (kept aside after the first epoch of a
    // longer run, put back after it).
    const auto aside = shared.path / ("aside" + std::to_string(world->rank()));
    const outcome longer = run(3, path, after_each_epoch{[&](std::size_t epoch) {
                                   if (epoch == 2) {
                                       std::filesystem::copy_file(part, aside);
                                   }
                               }});
    CHECK(on_every_rank(longer.message.empty() && longer.steps == 15));
    if (last) {
        std::filesystem::copy_file(aside, part, std::filesystem::copy_options::overwrite_existing);
    }
    world->barrier();
    const outcome mixed = run(4, path);
    INFO(mixed.message);
    CHECK(on_every_rank(
      mixed.message.find("rank(s) " + std::to_string(world->size() - 1) +
                         " resumed from a part of another epoch or step than rank 0's") !=
      std::string::npos));
    CHECK(on_every_rank(mixed.steps == 0 && mixed.untouched));
    // A missing part.
    if (last) {
        std::filesystem::remove(part);
    }
    world->barrier();
    const outcome missing = run(4, path);
    CHECK(
      on_every_rank(missing.message.find("rank(s) " + std::to_string(world->size() - 1) +
                                         " cannot see the checkpoint file") != std::string::npos));
    CHECK(on_every_rank(missing.steps == 0 && missing.untouched));
    // A part read as a whole checkpoint in one process: another signature.
    net_type one = make_stateful<dfa<dense_gaussian>>(5);
    if (world->rank() == 0) {
        CHECK_THROWS_WITH(load_checkpoint(one, part),
                          Catch::Contains("architecture mismatch at layer-parallel part"));
    }

    // A whole checkpoint where parts were looked for, and parts (of five
    // ranks) where a whole checkpoint was.
    const auto whole = shared.path / "whole.ckpt";
    const auto parts = shared.path / "parts.ckpt";
    if (world->rank() == 0) {
        save_checkpoint(one, whole, 1);
        std::ofstream(dist::rank_checkpoint_path(parts, 0, 5)) << "";
    }
    world->barrier();
    const outcome in_whole = run(1, whole);
    CHECK(
      on_every_rank(in_whole.message.find("is a whole checkpoint (one process or data-parallel "
                                          "training); layer-parallel training keeps one file per "
                                          "rank") != std::string::npos));
    const outcome other_count = run(1, parts);
    CHECK(
      on_every_rank(other_count.message.find("was written by 5 ranks in layer-parallel training, "
                                             "this run has " +
                                             std::to_string(world->size())) != std::string::npos));
    CHECK(on_every_rank(in_whole.steps == 0 && in_whole.untouched && other_count.steps == 0 &&
                        other_count.untouched));
    auto mlp = make_mlp<float, dfa<dense_gaussian>>(3);
    sgd<float> opt{{.learning_rate = 0.05}};
    dist::data_parallel<float> shards(*world);
    const std::string data_message = message_of<config_error>(
      [&] { fit_with(shards, mlp, opt, train, train, options(1, parts)); });
    CHECK(on_every_rank(data_message.find("was written in parts by layer-parallel training on 5 "
                                          "ranks") != std::string::npos));

    // Parts written with another split of the layers: refused by their
    // signature on the ranks whose block moved, and on every rank.
    const auto split_path = shared.path / "split.ckpt";
    const outcome written = run(1, split_path);
    CHECK(on_every_rank(written.message.empty()));
    net_type moved = make_stateful<dfa<dense_gaussian>>(5);
    const auto before = weights_of(moved);
    std::vector<layer_range> split = dist::balanced_layer_split(moved, world->size());
    const std::size_t cut = split[0].last > 1 ? split[0].last - 1 : split[0].last + 1;
    split[0].last = cut;
    split[1].first = cut;
    dist::dfa_layer_parallel<net_type> other_split(*world, moved,
                                                   dist::layer_parallel_mode::synchronous, split);
    adam<float> moved_opt{{.learning_rate = 0.01}};
    std::string split_message; // data_error on ranks 0 and 1, data_error naming them above
    try {
        fit_with(other_split, moved, moved_opt, train, train, options(2, split_path));
    } catch (const data_error& e) {
        split_message = e.what();
    }
    INFO(split_message);
    CHECK(on_every_rank((world->rank() > 1
                           ? split_message.find("rank(s) 0, 1 refused the checkpoint file")
                           : split_message.find("architecture mismatch at layer-parallel part")) !=
                        std::string::npos));
    CHECK(on_every_rank(same_bits(weights_of(moved), before) && moved.steps() == 0));
}

TEST_CASE("pipelined DFA layer-parallel: one step is synchronous, the next sees stale weights, "
          "and it learns",
          "[distributed]") {
    using net_type = decltype(make_deep<float, dfa<dense_gaussian>>(0));
    const auto data = lightloop::testing::blobs_task<float>(5);
    matrix<float> x[2];
    matrix<float> y[2];
    for (std::size_t b = 0; b < 2; ++b) {
        consecutive_batch(data, b, 32, x[b], y[b]);
    }
    const auto run = [&](dist::layer_parallel_mode mode, std::size_t steps) {
        net_type net = make_deep<float, dfa<dense_gaussian>>(13);
        sgd<float> opt{{.learning_rate = 0.1, .momentum = 0.9}};
        dist::dfa_layer_parallel<net_type> parallel(*world, net, mode);
        double loss = 0.0;
        for (std::size_t b = 0; b < steps; ++b) {
            loss += parallel.step(net, opt, x[b], y[b]).loss_sum;
        }
        loss += parallel.finish(net, opt).loss_sum;
        std::vector<float> mine;
        for (std::size_t i = parallel.owned().first; i < parallel.owned().last; ++i) {
            const auto w = layer_parameters(net, i);
            mine.insert(mine.end(), w.begin(), w.end());
        }
        return std::pair{mine, loss};
    };
    using dist::layer_parallel_mode;
    // One batch: nothing in flight is stale, so the bits are synchronous
    // mode's (the update waits for finish() below the last rank).
    const auto one_sync = run(layer_parallel_mode::synchronous, 1);
    const auto one_piped = run(layer_parallel_mode::pipelined, 1);
    CHECK(on_every_rank(same_bits(one_sync.first, one_piped.first)));
    CHECK(one_sync.second == one_piped.second);
    // Two: the first rank forwards the second batch before the first update,
    // so the layers above it see other inputs and every rank's bits differ
    // from synchronous mode's (the last rank's through its inputs).
    const auto two_sync = run(layer_parallel_mode::synchronous, 2);
    const auto two_piped = run(layer_parallel_mode::pipelined, 2);
    CHECK(on_every_rank(world->rank() == 0 || !same_bits(two_sync.first, two_piped.first)));
    // And it learns the task under fit_with as synchronous mode does (chance
    // 25%, a linear model 60%).
    const auto train = lightloop::testing::blobs_task<float>(2);
    const auto test = lightloop::testing::blobs_task<float>(3, 50);
    net_type net = make_deep<float, dfa<dense_gaussian>>(9);
    sgd<float> opt{{.learning_rate = 0.05, .momentum = 0.9}};
    dist::dfa_layer_parallel<net_type> parallel(*world, net, layer_parallel_mode::pipelined);
    const auto history =
      fit_with(parallel, net, opt, train, test, fit_options{.epochs = 12, .batch = 32, .seed = 4});
    CHECK(history.epochs.back().test_accuracy > 0.8);
    // Every batch's figures were counted once, the last through finish().
    CHECK(std::isfinite(history.epochs.back().train_loss));
}

// Below the last rank, pipelined training updates two replicas in turn and
// finish() copies the latest weights into the network. In mixed bf16 a
// layer's products read its weights' bf16 copy, which must follow: the copy
// kept the weights of the update before, so after an even number of batches
// the network evaluated (and began the next epoch) with stale weights.
TEST_CASE("pipelined layer-parallel in mixed bf16: after finish() the network's products use its "
          "latest weights",
          "[distributed]") {
    using net_type = decltype(make_deep<mixed_bf16, dfa<dense_gaussian>>(0));
    const auto data = lightloop::testing::blobs_task<float>(5);
    for (const std::size_t batches : {std::size_t{2}, std::size_t{3}}) {
        net_type net = make_deep<mixed_bf16, dfa<dense_gaussian>>(13);
        sgd<float> opt{{.learning_rate = 0.1, .momentum = 0.9}};
        dist::dfa_layer_parallel<net_type> parallel(*world, net,
                                                    dist::layer_parallel_mode::pipelined);
        matrix<float> x;
        matrix<float> y;
        for (std::size_t b = 0; b < batches; ++b) {
            consecutive_batch(data, b, 32, x, y);
            parallel.step(net, opt, x, y);
        }
        parallel.finish(net, opt);
        // The same weights with their bf16 copies converted anew (a visitor
        // that takes no copy marks it out of date).
        net_type fresh = net;
        fresh.visit_layers([](auto& l, std::size_t) {
            if constexpr (layer_has_parameters<decltype(l)>) {
                l.visit_parameters([](auto, auto) {});
            }
        });
        const layer_range mine = parallel.owned();
        const auto input = lightloop::testing::random_matrix<float>(8, net.widths()[mine.first], 3);
        const auto& out = net.forward(input, mine);
        const std::vector<float> ours(out.begin(), out.end());
        const auto& expected = fresh.forward(input, mine);
        CAPTURE(batches);
        CHECK(on_every_rank(same_bits(ours, std::vector<float>(expected.begin(), expected.end()))));
    }
}

// Below the last rank, pipelined passes alternate between two replicas.
// Each applied its own updates only: its step count and a batch_norm's
// running estimates saw every other batch, and finish() copied parameters
// alone into the network, which then counted half the steps and held the
// running estimates of every other batch. Two batches: both passes run on
// the initial weights (the first update comes after the second pass), so
// the batch statistics each commits are known here.
TEST_CASE("pipelined layer-parallel counts every step and moves running estimates with every "
          "batch",
          "[distributed]") {
    const auto make = [](std::uint64_t seed) {
        return make_network<dfa<dense_gaussian>, softmax_cross_entropy>(
          seed, dense<tanh_act>{6, 24}, batch_norm<tanh_act>{24}, dense<tanh_act>{24, 16},
          dense<identity>{16, 4});
    };
    using net_type = decltype(make(0));
    const auto data = lightloop::testing::blobs_task<float>(5);
    net_type net = make(13);
    const net_type initial = make(13);
    sgd<float> opt{{.learning_rate = 0.1, .momentum = 0.9}};
    dist::dfa_layer_parallel<net_type> parallel(*world, net, dist::layer_parallel_mode::pipelined);
    REQUIRE(parallel.owned().contains(1) == (world->rank() == 0)); // rank 0 holds the batch_norm
    std::vector<std::vector<double>> means;
    std::vector<std::vector<double>> variances;
    constexpr std::size_t rows = 32;
    for (std::size_t b = 0; b < 2; ++b) {
        matrix<float> x;
        matrix<float> y;
        consecutive_batch(data, b, rows, x, y);
        parallel.step(net, opt, x, y);
        // The batch_norm's input in this pass: the first layer's output on
        // the initial weights; its mean and unbiased variance per feature.
        net_type fresh = initial;
        const auto& h = fresh.forward(x, {0, 1});
        std::vector<double> mean(24, 0.0);
        std::vector<double> variance(24, 0.0);
        for (std::size_t c = 0; c < 24; ++c) {
            for (std::size_t r = 0; r < rows; ++r) {
                mean[c] += static_cast<double>(h(r, c)) / rows;
            }
            for (std::size_t r = 0; r < rows; ++r) {
                const double d = static_cast<double>(h(r, c)) - mean[c];
                variance[c] += d * d / (rows - 1);
            }
        }
        means.push_back(mean);
        variances.push_back(variance);
    }
    parallel.finish(net, opt);
    bool estimates = true;
    if (world->rank() == 0) {
        // r <- (1 - m) r + m · batch from (0, 1), batch 0 then batch 1.
        const double m = 0.1;
        const auto& layer = std::as_const(net).layer<1>();
        for (std::size_t c = 0; c < 24; ++c) {
            const double mean = (1 - m) * (m * means[0][c]) + m * means[1][c];
            const double variance = (1 - m) * ((1 - m) + m * variances[0][c]) + m * variances[1][c];
            estimates = estimates &&
                        std::abs(static_cast<double>(layer.running_mean()[c]) - mean) < 1e-6 &&
                        std::abs(static_cast<double>(layer.running_var()[c]) - variance) < 1e-6;
        }
    }
    CHECK(on_every_rank(estimates));
    CHECK(on_every_rank(net.steps() == 2));
}

// Below the last rank, the pass after finish() ran on the twin replica,
// which had not taken the network's latest weights: after an odd number of
// batches the twin missed the last update, and the next update copied the
// twin's weights over the network's (the update was lost); weights the user
// set after constructing the strategy were overwritten likewise. A run of
// pipelined steps now starts from the network's weights on both replicas,
// as a strategy constructed afresh does.
TEST_CASE("pipelined layer-parallel runs start from the network's weights", "[distributed]") {
    using net_type = decltype(make_deep<float, dfa<dense_gaussian>>(0));
    const auto data = lightloop::testing::blobs_task<float>(5);
    const auto halve = [](net_type& net) {
        net.visit_layers([](auto& l, std::size_t) {
            l.visit_parameters([](std::span<float> values, auto&&...) {
                for (float& v : values) {
                    v *= 0.5f;
                }
            });
        });
    };
    // Two runs of 3 batches, then `fresh` a new strategy for the second;
    // `late_change` halves the weights after constructing the strategy
    // rather than before.
    const auto train = [&](bool fresh, bool late_change) {
        net_type net = make_deep<float, dfa<dense_gaussian>>(13);
        sgd<float> opt{{.learning_rate = 0.1, .momentum = 0.9}};
        if (!late_change) {
            halve(net);
        }
        auto parallel = std::make_unique<dist::dfa_layer_parallel<net_type>>(
          *world, net, dist::layer_parallel_mode::pipelined);
        if (late_change) {
            halve(net);
        }
        matrix<float> x;
        matrix<float> y;
        for (std::size_t run = 0; run < 2; ++run) {
            if (run == 1 && fresh) {
                parallel = std::make_unique<dist::dfa_layer_parallel<net_type>>(
                  *world, net, dist::layer_parallel_mode::pipelined);
            }
            for (std::size_t b = 0; b < 3; ++b) {
                consecutive_batch(data, run * 3 + b, 16, x, y);
                parallel->step(net, opt, x, y);
            }
            parallel->finish(net, opt);
        }
        return weights_of(net);
    };
    const auto reference = train(true, false);
    CHECK(on_every_rank(same_bits(train(false, false), reference)));
    CHECK(on_every_rank(same_bits(train(true, true), reference)));
}

// Between pipelined steps the ranks below the last hold a batch whose
// update is pending, with its activations in a replica (the network itself
// after an odd number of batches): an evaluation there overwrote them and
// the pending update used the evaluation's. It is refused on every rank alike
// until finish().
TEST_CASE("pipelined layer-parallel refuses an evaluation before finish()", "[distributed]") {
    using net_type = decltype(make_deep<float, dfa<dense_gaussian>>(0));
    const auto data = lightloop::testing::blobs_task<float>(5);
    const auto test = lightloop::testing::blobs_task<float>(3, 50);
    net_type net = make_deep<float, dfa<dense_gaussian>>(13);
    sgd<float> opt{{.learning_rate = 0.1, .momentum = 0.9}};
    dist::dfa_layer_parallel<net_type> parallel(*world, net, dist::layer_parallel_mode::pipelined);
    matrix<float> x;
    matrix<float> y;
    consecutive_batch(data, 0, 16, x, y);
    parallel.step(net, opt, x, y);
    std::string message;
    try {
        parallel.evaluate(net, test, 25);
    } catch (const config_error& e) {
        message = e.what();
    }
    parallel.finish(net, opt);
    const auto after = parallel.evaluate(net, test, 25);
    CHECK(on_every_rank(message.find("call finish(net, opt) first") != std::string::npos));
    CHECK(on_every_rank(std::isfinite(after.loss)));
    CHECK(net.steps() == 1);
}

// Rank 0 refused a batch of the wrong width in its forward pass while the
// rank above waited for its activations forever. Every rank's verdict on its
// batch now goes up with the batch, and every rank throws the refusal.
TEST_CASE("layer-parallel training refuses a malformed batch on every rank, nothing changed",
          "[distributed]") {
    using net_type = decltype(make_deep<float, dfa<dense_gaussian>>(0));
    const auto data = lightloop::testing::blobs_task<float>(5);
    for (const auto mode :
         {dist::layer_parallel_mode::synchronous, dist::layer_parallel_mode::pipelined}) {
        net_type net = make_deep<float, dfa<dense_gaussian>>(13);
        sgd<float> opt{{.learning_rate = 0.1, .momentum = 0.9}};
        dist::dfa_layer_parallel<net_type> parallel(*world, net, mode);
        matrix<float> x;
        matrix<float> y;
        consecutive_batch(data, 0, 8, x, y);
        const auto before = weights_of(net);
        const auto refused = [&](const matrix<float>& bx, const matrix<float>& by,
                                 const char* expected) {
            std::string message;
            try {
                parallel.step(net, opt, bx, by);
                parallel.finish(net, opt); // pipelined: a step reports the previous batch
            } catch (const shape_error& e) {
                message = e.what();
            }
            INFO(message);
            return message.find(expected) != std::string::npos;
        };
        const matrix<float> narrow = matrix<float>::from_shape({8, 5});
        const matrix<float> wide_target = matrix<float>::from_shape({8, 5});
        const matrix<float> short_target = matrix<float>::from_shape({7, 4});
        const matrix<float> empty = matrix<float>::from_shape({0, 6});
        const matrix<float> empty_target = matrix<float>::from_shape({0, 4});
        const bool all_refused = refused(narrow, y, "input batch is 8x5, expected n x 6") &&
                                 refused(x, wide_target, "target batch is 8x5, expected 8x4") &&
                                 refused(x, short_target, "target batch is 7x4, expected 8x4") &&
                                 refused(empty, empty_target, "with n > 0");
        std::string evaluated;
        try {
            parallel.evaluate(net, labelled_data<float>{narrow, y, std::vector<std::size_t>(8, 0)},
                              4);
        } catch (const shape_error& e) {
            evaluated = e.what();
        }
        const bool unchanged = same_bits(weights_of(net), before) && net.steps() == 0;
        // The ranks are still in step: a good batch trains.
        parallel.step(net, opt, x, y);
        parallel.finish(net, opt);
        CHECK(on_every_rank(all_refused));
        CHECK(on_every_rank(evaluated.find("expected n x 6") != std::string::npos));
        CHECK(on_every_rank(unchanged));
        CHECK(net.steps() == 1);
    }
}

// Pipelined, the last rank threw a failed batch's loss at once while the
// ranks below learnt of it a call later, so a loop that stopped at the first
// exception left them a step apart, with a batch in flight.
TEST_CASE("a batch whose loss fails stops every layer-parallel rank in the same call",
          "[distributed]") {
    using net_type = decltype(make_deep<float, dfa<dense_gaussian>>(0));
    const auto data = lightloop::testing::blobs_task<float>(5);
    matrix<float> x;
    matrix<float> y;
    consecutive_batch(data, 0, 8, x, y);
    matrix<float> poisoned = x;
    poisoned(3, 2) = std::numeric_limits<float>::quiet_NaN();
    const auto initial = weights_of(make_deep<float, dfa<dense_gaussian>>(13));
    for (const auto mode :
         {dist::layer_parallel_mode::synchronous, dist::layer_parallel_mode::pipelined}) {
        net_type net = make_deep<float, dfa<dense_gaussian>>(13);
        sgd<float> opt{{.learning_rate = 0.1, .momentum = 0.9}};
        dist::dfa_layer_parallel<net_type> parallel(*world, net, mode);
        std::string message;
        bool step_threw = false;
        try {
            step_threw = true;
            parallel.step(net, opt, poisoned, y);
            step_threw = false;
            parallel.finish(net, opt);
        } catch (const divergence_error& e) {
            message = e.what();
        }
        INFO(message);
        CHECK(on_every_rank(message.find("the loss failed at step 0; no rank updated its layers") !=
                            std::string::npos));
        // Every rank in the same call: the step synchronous, finish() pipelined.
        CHECK(on_every_rank(step_threw == (mode == dist::layer_parallel_mode::synchronous)));
        CHECK(on_every_rank(same_bits(weights_of(net), initial) && net.steps() == 0));
        parallel.step(net, opt, x, y);
        parallel.finish(net, opt);
        CHECK(on_every_rank(net.steps() == 1 && !same_bits(weights_of(net), initial)));
    }
}

// Each rank updates its own block: an update that would overflow on one rank
// was refused there alone, while the others updated theirs and went on (a
// loop stopped by the exception on one rank left the others waiting).
TEST_CASE("a layer-parallel update that would overflow on one rank changes nothing on any rank",
          "[distributed]") {
    using net_type = decltype(make_deep<float, dfa<dense_gaussian>>(0));
    const auto data = lightloop::testing::blobs_task<float>(5);
    matrix<float> x;
    matrix<float> y;
    consecutive_batch(data, 0, 8, x, y);
    for (const auto mode :
         {dist::layer_parallel_mode::synchronous, dist::layer_parallel_mode::pipelined}) {
        net_type net = make_deep<float, dfa<dense_gaussian>>(13);
        // Weight decay 10 on a weight of 3e38: the momentum would be 3e39.
        sgd<float> opt{{.learning_rate = 0.01, .momentum = 0.9, .weight_decay = 10.0}};
        dist::dfa_layer_parallel<net_type> parallel(*world, net, mode);
        const bool last = world->rank() + 1 == world->size();
        auto& w = net.layer<3>().weights(); // the last rank's
        const float kept = w(2, 1);
        if (last) {
            w(2, 1) = 3e38f;
        }
        const auto before = weights_of(net);
        std::string message;
        try {
            parallel.step(net, opt, x, y);
            parallel.finish(net, opt);
        } catch (const divergence_error& e) {
            message = e.what();
        }
        INFO(message);
        CHECK(on_every_rank(message.find("the update failed at step 0") != std::string::npos));
        CHECK(on_every_rank(message.find("no parameter and no optimizer state changed") !=
                            std::string::npos));
        CHECK(on_every_rank(same_bits(weights_of(net), before) && net.steps() == 0));
        // Put back, the next step trains every rank.
        net.layer<3>().weights()(2, 1) = kept;
        parallel.step(net, opt, x, y);
        parallel.finish(net, opt);
        CHECK(on_every_rank(net.steps() == 1 && !same_bits(weights_of(net), before)));
    }
}

// The activations of one rank's block are the input of the next one's: ranks
// that built networks of other widths met in MPI with messages of the wrong
// size.
TEST_CASE("layer-parallel training refuses ranks that built different networks", "[distributed]") {
    const std::size_t rank = world->rank();
    const auto make = [](std::uint64_t seed, std::size_t hidden) {
        return make_network<dfa<dense_gaussian>, softmax_cross_entropy>(
          seed, dense<tanh_act, float>{6, hidden}, dense<tanh_act, float>{hidden, 16},
          dense<tanh_act, float>{16, 12}, dense<identity, float>{12, 4});
    };
    using net_type = decltype(make(0, 24));
    const auto refusal = [&](const net_type& net) {
        try {
            dist::dfa_layer_parallel<net_type> parallel(*world, net);
        } catch (const config_error& e) {
            return std::string(e.what());
        }
        return std::string();
    };
    const std::string widths = refusal(make(13, rank == 1 ? 20 : 24));
    const std::string seeds = refusal(make(13 + rank, 24));
    const std::string none = refusal(make(13, 24));
    const std::string everyone_else = ranks_above_0();
    INFO(widths << "\n" << seeds);
    CHECK(on_every_rank(widths.find("dfa_layer_parallel: rank(s) 1 built a network other than "
                                    "rank 0's") != std::string::npos));
    CHECK(on_every_rank(seeds.find("dfa_layer_parallel: rank(s) " + everyone_else +
                                   " built a network other than rank 0's") != std::string::npos));
    CHECK(on_every_rank(none.empty()));
}

// An evaluation with batch 0 looped forever in layer-parallel training (and
// threw on the ranks that had rows, leaving the others waiting, in
// data-parallel); one of no data returned NaN where one process refuses it.
TEST_CASE("distributed evaluations refuse no data and a zero batch on every rank",
          "[distributed]") {
    const auto data = lightloop::testing::blobs_task<float>(5);
    const labelled_data<float> none{
      matrix<float>::from_shape({0, 6}), matrix<float>::from_shape({0, 4}), {}};
    const auto refusal = [](auto&& evaluate) {
        try {
            evaluate();
        } catch (const config_error& e) {
            return std::string(e.what());
        }
        return std::string();
    };
    using net_type = decltype(make_deep<float, dfa<dense_gaussian>>(0));
    net_type deep = make_deep<float, dfa<dense_gaussian>>(13);
    dist::dfa_layer_parallel<net_type> layers(*world, deep);
    auto mlp = make_mlp<float, dfa<dense_gaussian>>(13);
    dist::data_parallel<float> shards(*world);
    const std::string layer_zero = refusal([&] { layers.evaluate(deep, data, 0); });
    const std::string layer_none = refusal([&] { layers.evaluate(deep, none, 16); });
    const std::string data_zero = refusal([&] { shards.evaluate(mlp, data, 0); });
    const std::string data_none = refusal([&] { shards.evaluate(mlp, none, 16); });
    INFO(layer_zero << "\n" << layer_none << "\n" << data_zero << "\n" << data_none);
    const std::string wanted = "needs data and a positive batch size";
    CHECK(on_every_rank(layer_zero.find(wanted) != std::string::npos));
    CHECK(on_every_rank(layer_none.find(wanted) != std::string::npos));
    CHECK(on_every_rank(data_zero.find(wanted) != std::string::npos));
    CHECK(on_every_rank(data_none.find(wanted) != std::string::npos));
    // Still in step: each evaluates as one process does.
    CHECK(on_every_rank(layers.evaluate(deep, data, 64).loss == evaluate(deep, data, 64).loss));
    CHECK(on_every_rank(
      std::abs(shards.evaluate(mlp, data, 64).loss - evaluate(mlp, data, 64).loss) < 1e-6));
}

// A rank passed fit_with more epochs than the others went on stepping alone
// and waited for them forever.
namespace {
/// fit_with of `train` with `options` on a data-parallel mlp and a
/// layer-parallel deep network: each one's config_error message, checked to
/// have trained nothing on any rank.
std::pair<std::string, std::string> refusals(const labelled_data<float>& train,
                                             const fit_options& options) {
    const auto refusal = [&](auto& parallel, auto& net) {
        sgd<float> opt{{.learning_rate = 0.05}};
        const auto before = weights_of(net);
        std::string message;
        try {
            fit_with(parallel, net, opt, train, train, options);
        } catch (const config_error& e) {
            message = e.what();
        }
        CHECK(on_every_rank(same_bits(weights_of(net), before) && net.steps() == 0));
        return message;
    };
    auto mlp = make_mlp<float, dfa<dense_gaussian>>(1);
    dist::data_parallel<float> shards(*world);
    std::string data_message = refusal(shards, mlp);
    auto deep = make_deep<float, dfa<dense_gaussian>>(1);
    dist::dfa_layer_parallel<decltype(deep)> layers(*world, deep);
    return {std::move(data_message), refusal(layers, deep)};
}
} // namespace

TEST_CASE("fit_with over ranks refuses ranks that pass other fit_options, on every rank",
          "[distributed]") {
    const auto train = lightloop::testing::blobs_task<float>(2, 10); // 40 rows
    const std::size_t epochs = world->rank() + 1 == world->size() ? 2 : 1;
    const auto [data_message, layer_message] =
      refusals(train, {.epochs = epochs, .batch = 8, .seed = 5});
    INFO(data_message << "\n" << layer_message);
    const std::string wanted = ": rank(s) " + std::to_string(world->size() - 1) +
                               " passed fit_with other options than rank 0";
    CHECK(on_every_rank(data_message.find("data_parallel" + wanted) != std::string::npos));
    CHECK(on_every_rank(layer_message.find("dfa_layer_parallel" + wanted) != std::string::npos));
}

// A checkpoint in a directory one rank's node does not have failed that
// rank's first save alone, after an epoch of training.
TEST_CASE("fit_with refuses, on every rank and before training, a checkpoint a rank cannot keep",
          "[distributed]") {
    const shared_directory shared("lightloop_checkpoint_path_");
    const auto train = lightloop::testing::blobs_task<float>(2, 10); // 40 rows
    const bool last = world->rank() + 1 == world->size();
    // Each rank its own path (a node's own disk), the last rank's in a
    // directory that does not exist.
    const auto path = last ? shared.path / "missing" / "net.ckpt" : shared.path / "net.ckpt";
    const auto [data_message, layer_message] =
      refusals(train, {.epochs = 2, .batch = 8, .seed = 5, .checkpoint = path});
    INFO(data_message << "\n" << layer_message);
    const std::string wanted =
      last ? "the checkpoint's directory " + (shared.path / "missing").string() + " does not exist"
           : ": rank(s) " + std::to_string(world->size() - 1) + " cannot keep the checkpoint at";
    CHECK(on_every_rank(data_message.find(wanted) != std::string::npos &&
                        layer_message.find(wanted) != std::string::npos));
}

// Ranks that stepped optimizers of other settings (a momentum or learning
// rate by rank) updated with p different rules: data-parallel weights stayed
// in step through the sums but each rank's block was updated by its own
// rule, and layer-parallel blocks were no longer one process's training.
TEST_CASE("distributed training refuses ranks that step another optimizer, on every rank",
          "[distributed]") {
    const bool last = world->rank() + 1 == world->size();
    const auto data = lightloop::testing::blobs_task<float>(2, 10); // 40 rows
    matrix<float> x;
    matrix<float> y;
    consecutive_batch(data, 0, 8, x, y);
    matrix<float> xs;
    matrix<float> ys;
    shard_of(x, world->rank(), world->size(), xs);
    shard_of(y, world->rank(), world->size(), ys);
    const std::string wanted =
      ": rank(s) " + std::to_string(world->size() - 1) + " step(s) another optimizer than rank 0's";
    // Whether one step with `opt` on each strategy was refused on every
    // rank, naming the last, with the networks untouched; `messages`: this
    // rank's two messages ("\n" if neither refused).
    const auto refused_everywhere = [&](auto opt, std::string& messages) {
        auto mlp = make_mlp<float, dfa<dense_gaussian>>(1);
        auto deep = make_deep<float, dfa<dense_gaussian>>(1);
        const auto mlp_before = weights_of(mlp);
        const auto deep_before = weights_of(deep);
        dist::data_parallel<float> shards(*world);
        dist::dfa_layer_parallel<decltype(deep)> layers(*world, deep);
        auto other = opt;
        const std::string data_message =
          message_of<config_error>([&] { shards.step(mlp, opt, xs, ys); });
        const std::string layer_message =
          message_of<config_error>([&] { layers.step(deep, other, x, y); });
        messages = data_message + "\n" + layer_message;
        return on_every_rank(data_message.find("data_parallel" + wanted) != std::string::npos &&
                             layer_message.find("dfa_layer_parallel" + wanted) !=
                               std::string::npos &&
                             same_bits(weights_of(mlp), mlp_before) && mlp.steps() == 0 &&
                             same_bits(weights_of(deep), deep_before) && deep.steps() == 0);
    };
    std::string messages;
    CHECK(refused_everywhere(sgd<float>{{.learning_rate = 0.05, .momentum = last ? 0.5 : 0.9}},
                             messages));
    INFO(messages);
    if (last) {
        CHECK_THAT(messages, Catch::Contains("sgd momentum 0.5 weight_decay 0 learning_rate 0.05"));
    }
    CHECK(refused_everywhere(adam<float>{{.learning_rate = last ? 0.02 : 0.01}}, messages));
    if (last) {
        CHECK_THAT(messages, Catch::Contains("adam beta1 0.9 beta2 0.999 epsilon 1e-08 "
                                             "weight_decay 0 learning_rate 0.02"));
    }
    // The same optimizer everywhere: both step.
    CHECK_FALSE(refused_everywhere(sgd<float>{{.learning_rate = 0.05, .momentum = 0.9}}, messages));
    CHECK(on_every_rank(messages == "\n"));
}

// The optimizer is agreed on again when a rank steps another object (a copy:
// the same settings and state, so training goes on) or changes its learning
// rate alone. Before, the agreement was remembered by address on each rank:
// a rank that switched to a copy entered the agreement alone and every rank
// waited forever, and a learning rate changed on one rank went unnoticed.
TEST_CASE("distributed training agrees on the optimizer again when a rank steps another or "
          "changes its learning rate",
          "[distributed]") {
    const bool last = world->rank() + 1 == world->size();
    const auto data = lightloop::testing::blobs_task<float>(2, 10); // 40 rows
    matrix<float> x;
    matrix<float> y;
    consecutive_batch(data, 0, 8, x, y);
    const std::string wanted =
      ": rank(s) " + std::to_string(world->size() - 1) + " step(s) another optimizer than rank 0's";
    // Two steps with `opt`, one with a copy on the last rank (no refusal:
    // the same settings and state), then the last rank's learning rate
    // changed alone: refused on every rank in the same call, the network
    // as it was. `step(opt)` runs one step; `calls` steps until the refusal
    // (pipelined, a failure is reported with the next call).
    const auto switch_and_refuse = [&](auto& net, auto&& step, std::size_t calls,
                                       const std::string& strategy) {
        sgd<float> opt{{.learning_rate = 0.05, .momentum = 0.9}};
        step(opt);
        step(opt);
        sgd<float> copy = opt;
        auto& now = last ? copy : opt;
        CHECK(message_of<config_error>([&] { step(now); }).empty());
        const std::uint64_t steps = net.steps();
        const auto before = weights_of(net);
        if (last) {
            now.set_learning_rate(0.02);
        }
        // No collective of the test's own between pipelined calls: the
        // ranks' calls are one batch apart there.
        std::string message;
        std::size_t refused_in = 0;
        for (std::size_t call = 1; call <= calls && message.empty(); ++call) {
            message = message_of<config_error>([&] { step(now); });
            refused_in = call;
        }
        INFO(message);
        CHECK(on_every_rank(refused_in == calls));
        CHECK(on_every_rank(message.find(strategy + wanted) != std::string::npos));
        if (calls == 1) { // pipelined, the weights are a batch behind before the call
            CHECK(on_every_rank(net.steps() == steps && same_bits(weights_of(net), before)));
        }
    };
    SECTION("data-parallel") {
        matrix<float> xs;
        matrix<float> ys;
        shard_of(x, world->rank(), world->size(), xs);
        shard_of(y, world->rank(), world->size(), ys);
        auto mlp = make_mlp<float, dfa<dense_gaussian>>(1);
        dist::data_parallel<float> shards(*world);
        const auto initial = weights_of(mlp);
        switch_and_refuse(
          mlp, [&](auto& opt) { shards.step(mlp, opt, xs, ys); }, 1, "data_parallel");
        CHECK(on_every_rank(mlp.steps() == 3));
        CHECK(same_bits_everywhere(weights_of(mlp)));
        CHECK_FALSE(same_bits(weights_of(mlp), initial));
    }
    SECTION("layer-parallel, synchronous and pipelined") {
        for (const auto mode :
             {dist::layer_parallel_mode::synchronous, dist::layer_parallel_mode::pipelined}) {
            auto deep = make_deep<float, dfa<dense_gaussian>>(1);
            dist::dfa_layer_parallel<decltype(deep)> layers(*world, deep, mode);
            const bool piped = mode == dist::layer_parallel_mode::pipelined;
            switch_and_refuse(
              deep, [&](auto& opt) { layers.step(deep, opt, x, y); }, piped ? 2 : 1,
              "dfa_layer_parallel");
            // Three batches' updates applied; pipelined, the refused batch's
            // not, and the one after it dropped.
            CHECK(on_every_rank(deep.steps() == 3));
        }
    }
}

// Rank 0 reads a batch's inputs and the last rank its targets: ranks passing
// different batches trained rank 0's inputs against the last rank's targets
// without a word, and batches of different sizes met in MPI as messages of
// the wrong size (one rank threw, the others waited forever).
TEST_CASE("layer-parallel training refuses ranks that pass different batches, on every rank",
          "[distributed]") {
    using net_type = decltype(make_deep<float, dfa<dense_gaussian>>(0));
    const auto data = lightloop::testing::blobs_task<float>(5);
    const std::size_t rank = world->rank();
    const std::size_t last = world->size() - 1;
    matrix<float> x;
    matrix<float> y;
    consecutive_batch(data, 0, 8, x, y);
    const auto initial = weights_of(make_deep<float, dfa<dense_gaussian>>(13));
    // What one good step from the initial weights gives.
    net_type reference = make_deep<float, dfa<dense_gaussian>>(13);
    {
        sgd<float> opt{{.learning_rate = 0.1, .momentum = 0.9}};
        dist::dfa_layer_parallel<net_type> parallel(*world, reference);
        parallel.step(reference, opt, x, y);
    }
    struct divergence {
        std::size_t rank; // the rank whose batch differs
        std::size_t rows; // its batch's rows
        std::size_t b;    // and which of the data's batches of that size
    };
    const std::string last_rank = std::to_string(last);
    const std::string shape_refusal = "shape: lightloop::distributed::dfa_layer_parallel: ";
    const std::string data_refusal = "data: lightloop::distributed::dfa_layer_parallel: ";
    const std::vector<std::pair<divergence, std::string>> cases = {
      {{last, 6, 0},
       shape_refusal + "rank " + last_rank + " passed a batch of 6 rows and rank 0 one of 8"},
      {{last, 10, 0},
       shape_refusal + "rank " + last_rank + " passed a batch of 10 rows and rank 0 one of 8"},
      {{0, 6, 0}, shape_refusal + "rank 1 passed a batch of 8 rows and rank 0 one of 6"},
      {{last, 8, 1}, data_refusal + "rank " + last_rank + "'s targets are not rank 0's"},
      {{1, 8, 3}, data_refusal + "rank 1's targets are not rank 0's"},
      {{1, 0, 0}, shape_refusal + "rank 1 refused its batch"}, // rows 0: a batch of the wrong width
    };
    for (const auto mode :
         {dist::layer_parallel_mode::synchronous, dist::layer_parallel_mode::pipelined}) {
        for (const auto& [bad, expected] : cases) {
            INFO((mode == dist::layer_parallel_mode::pipelined ? "pipelined: " : "synchronous: ")
                 << expected);
            net_type net = make_deep<float, dfa<dense_gaussian>>(13);
            sgd<float> opt{{.learning_rate = 0.1, .momentum = 0.9}};
            dist::dfa_layer_parallel<net_type> parallel(*world, net, mode);
            matrix<float> bx = x;
            matrix<float> by = y;
            if (rank == bad.rank && bad.rows == 0) {
                bx = matrix<float>::from_shape({8, 5});
            } else if (rank == bad.rank) {
                consecutive_batch(data, bad.b, bad.rows, bx, by);
            }
            const bool pipelined = mode == dist::layer_parallel_mode::pipelined;
            // Pipelined, a step reports the previous batch: finish() reports
            // the last.
            const auto attempt = [&](const matrix<float>& sx, const matrix<float>& sy) {
                try {
                    parallel.step(net, opt, sx, sy);
                    parallel.finish(net, opt);
                } catch (const shape_error& e) {
                    return std::string("shape: ") + e.what();
                } catch (const data_error& e) {
                    return std::string("data: ") + e.what();
                }
                return std::string();
            };
            const std::string message = attempt(bx, by);
            const bool unchanged = same_bits(weights_of(net), initial) && net.steps() == 0;
            // Then the same good batch everywhere: the ranks still in step.
            const std::string none = attempt(x, y);
            // Pipelined, a refusal reported by the next step drops that
            // step's batch on every rank; passed again, it trains.
            std::string reported;
            if (pipelined) {
                net = make_deep<float, dfa<dense_gaussian>>(13);
                dist::dfa_layer_parallel<net_type> again(*world, net, mode);
                sgd<float> fresh{{.learning_rate = 0.1, .momentum = 0.9}};
                again.step(net, fresh, bx, by);
                try {
                    again.step(net, fresh, x, y);
                } catch (const lightloop::error& e) {
                    reported = e.what();
                }
                again.step(net, fresh, x, y);
                again.finish(net, fresh);
            }
            INFO(message << "\n" << reported);
            CHECK(on_every_rank(message.rfind(expected, 0) == 0));
            CHECK(on_every_rank(message.find("every rank must pass the same batch") !=
                                std::string::npos));
            CHECK(on_every_rank(none.empty()));
            CHECK(on_every_rank(unchanged));
            CHECK(on_every_rank(
              !pipelined ||
              (reported.find(expected.substr(expected.find("rank "))) != std::string::npos &&
               reported.find("which was dropped: pass that batch again") != std::string::npos)));
            // Only the good batch trained, and counts a step.
            CHECK(on_every_rank(same_bits(weights_of(net), weights_of(reference))));
            CHECK(on_every_rank(net.steps() == 1));
        }
    }
}

TEST_CASE("a layer-parallel evaluation refuses ranks that evaluate different data",
          "[distributed]") {
    using net_type = decltype(make_deep<float, dfa<dense_gaussian>>(0));
    const auto data = lightloop::testing::blobs_task<float>(5);
    net_type net = make_deep<float, dfa<dense_gaussian>>(13);
    dist::dfa_layer_parallel<net_type> parallel(*world, net);
    const std::size_t rank = world->rank();
    const std::size_t last = world->size() - 1;
    const auto whole = parallel.evaluate(net, data, 16);
    const auto refusal = [&](const labelled_data<float>& mine) {
        try {
            parallel.evaluate(net, mine, 16);
        } catch (const shape_error& e) {
            return std::string("shape: ") + e.what();
        } catch (const data_error& e) {
            return std::string("data: ") + e.what();
        }
        return std::string();
    };
    std::vector<std::size_t> first(40);
    std::iota(first.begin(), first.end(), std::size_t{0});
    const auto fewer = select_rows(data, first);
    std::iota(first.begin(), first.end(), std::size_t{40});
    const auto others = select_rows(data, first);
    const std::string last_rank = std::to_string(last);
    const std::string who = "lightloop::distributed::dfa_layer_parallel: ";
    const std::string fewer_message = refusal(rank == last ? fewer : data);
    const std::string others_message = refusal(rank == last ? others : fewer);
    const std::string malformed_message =
      refusal(rank == 0 ? labelled_data<float>{matrix<float>::from_shape({4, 5}),
                                               matrix<float>::from_shape({4, 4}),
                                               std::vector<std::size_t>(4, 0)}
                        : data);
    INFO(fewer_message << "\n" << others_message << "\n" << malformed_message);
    CHECK(on_every_rank(fewer_message.rfind("shape: " + who + "rank " + last_rank +
                                              " evaluates 40 samples and rank 0 1200",
                                            0) == 0));
    CHECK(on_every_rank(others_message.rfind("data: " + who + "rank " + last_rank +
                                               "'s evaluated targets are not rank 0's",
                                             0) == 0));
    CHECK(on_every_rank(
      malformed_message.rfind("shape: " + who + "rank 0's evaluated data is malformed", 0) == 0));
    CHECK((rank != 0 || malformed_message.find("(rank 0: lightloop::network: input batch is 4x5") !=
                          std::string::npos));
    // Still in step: the same data everywhere evaluates as before.
    const auto again = parallel.evaluate(net, data, 16);
    CHECK(on_every_rank(again.loss == whole.loss && again.accuracy == whole.accuracy));
}

int main(int argc, char* argv[]) {
    return lightloop::testing::run_on_every_rank(argc, argv);
}
