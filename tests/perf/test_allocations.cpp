// Once buffers exist for a batch size, a training step allocates nothing.
// This executable replaces the global operator new with a counting one
// (support/counting_new.hpp), so it is built apart from the other tests (and
// not under ASan, which has its own).
#include <catch2/catch.hpp>

#include <utility>

#include "support/counting_new.hpp"
#include "support/helpers.hpp"

using lightloop::testing::allocations;
using lightloop::testing::onednn_allocations;

namespace {
// oneDNN's count in the last steady_state_allocations window.
std::size_t last_onednn_allocations = 0;
} // namespace

using namespace lightloop;

namespace {
/// Allocations made by `steps` training steps after three warm-up steps, on
/// a 64-128-128-10 network at batch 32, or `width` times wider with 4x the
/// batch.
template <class P = float, class Feedback, class Optimizer>
std::size_t steady_state_allocations(Feedback feedback, Optimizer opt, std::size_t steps,
                                     std::size_t width = 1) {
    const std::size_t batch = width == 1 ? 32 : 128;
    network net{std::move(feedback),
                softmax_cross_entropy{},
                1,
                dense<tanh_act, P>{64 * width, 128 * width},
                dense<tanh_act, P>{128 * width, 128 * width},
                dense<identity, P>{128 * width, 10}};
    const auto x = lightloop::testing::random_matrix<float>(batch, 64 * width, 2);
    std::vector<int> labels(batch);
    for (std::size_t i = 0; i < batch; ++i) {
        labels[i] = static_cast<int>(i % 10);
    }
    const auto y = one_hot<float>(std::span<const int>(labels), 10);
    for (int i = 0; i < 3; ++i) {
        net.train_step(x, y, opt);
    }
    const std::size_t before = allocations.load();
    const std::size_t onednn_before = onednn_allocations.load();
    for (std::size_t i = 0; i < steps; ++i) {
        net.train_step(x, y, opt);
    }
    last_onednn_allocations = onednn_allocations.load() - onednn_before;
    return allocations.load() - before;
}
} // namespace

TEST_CASE("a steady-state training step allocates nothing", "[perf][allocation]") {
    const sgd momentum{{.learning_rate = 0.01, .momentum = 0.9}};
    CHECK(steady_state_allocations(backprop{}, momentum, 20) == 0);
    CHECK(steady_state_allocations(feedback_alignment{}, momentum, 20) == 0);
    CHECK(steady_state_allocations(dfa<dense_gaussian>{}, momentum, 20) == 0);
    CHECK(steady_state_allocations(drtp<dense_gaussian>{}, momentum, 20) == 0);
    CHECK(steady_state_allocations(shallow{}, momentum, 20) == 0);
    CHECK(steady_state_allocations(dfa<dense_gaussian>{}, adam{{.learning_rate = 1e-3}}, 20) == 0);
    CHECK(steady_state_allocations(dfa<optical<>>{}, momentum, 20) == 0);
    CHECK(steady_state_allocations(dfa<optical<intensity_readout>>{}, momentum, 20) == 0);
}

TEST_CASE("a steady-state mixed bf16 training step allocates nothing", "[perf][allocation]") {
    // lightloop's own code allocates nothing; oneDNN allocates the same few
    // blocks per product in every step (inside its execute), never more.
    const sgd momentum{{.learning_rate = 0.01, .momentum = 0.9}};
    for (const int threads : {1, 2}) {
        CAPTURE(threads);
        set_blas_threads(threads);
        const auto counted = [&](auto feedback, auto opt) {
            const std::size_t own = steady_state_allocations<mixed_bf16>(feedback, opt, 10, 4);
            return std::pair(own, last_onednn_allocations);
        };
        const auto [own_bp, onednn_bp] = counted(backprop{}, momentum);
        const auto [own_dfa, onednn_dfa] = counted(dfa<dense_gaussian>{}, momentum);
        const auto [own_adam, onednn_adam] =
          counted(dfa<dense_gaussian>{}, adam{{.learning_rate = 1e-3}});
        const auto [own_dfa_again, onednn_dfa_again] = counted(dfa<dense_gaussian>{}, momentum);
        CHECK(own_bp == 0);
        CHECK(own_dfa == 0);
        CHECK(own_adam == 0);
        CHECK(own_dfa_again == 0);
        // Steady: the same count for the same ten steps.
        CHECK(onednn_dfa == onednn_dfa_again);
        CHECK(onednn_adam == onednn_dfa);
        INFO("oneDNN's allocations in 10 DFA steps: " << onednn_dfa << ", backprop: " << onednn_bp);
        CHECK(onednn_bp >= onednn_dfa); // backprop runs more products
    }
    set_blas_threads(1);
}

TEST_CASE("a steady-state training step on two threads allocates nothing", "[perf][allocation]") {
    // 256-512-512-10 at batch 128: the GEMMs run in pieces on the team (16M
    // and 33M multiply-adds) and so do the element-wise passes (262k weights).
    set_blas_threads(2);
    const sgd momentum{{.learning_rate = 0.01, .momentum = 0.9}};
    CHECK(steady_state_allocations(backprop{}, momentum, 10, 4) == 0);
    CHECK(steady_state_allocations(dfa<dense_gaussian>{}, momentum, 10, 4) == 0);
    CHECK(steady_state_allocations(dfa<dense_gaussian>{}, adam{{.learning_rate = 1e-3}}, 10, 4) ==
          0);
    CHECK(steady_state_allocations(dfa<optical<>>{}, momentum, 10, 4) == 0);
    set_blas_threads(1);
}

/// Allocations over ten steady-state steps of `net` (after three to warm up)
/// on a batch of 64 with ten classes, each step followed by an evaluation
/// pass; resets the thread count to one.
template <class Net>
std::size_t allocations_with_evaluation(Net& net) {
    sgd opt{{.learning_rate = 0.01, .momentum = 0.9}};
    const auto x = lightloop::testing::random_matrix<float>(64, net.input_size(), 2);
    std::vector<int> labels(64);
    for (std::size_t i = 0; i < 64; ++i) {
        labels[i] = static_cast<int>(i % 10);
    }
    const auto y = one_hot<float>(std::span<const int>(labels), 10);
    for (int i = 0; i < 3; ++i) {
        net.train_step(x, y, opt);
        net.forward(x);
    }
    const std::size_t before = allocations.load();
    for (int i = 0; i < 10; ++i) {
        net.train_step(x, y, opt);
        net.forward(x);
    }
    set_blas_threads(1);
    return allocations.load() - before;
}

TEST_CASE("a steady-state step through convolution, pooling, flatten and dropout allocates "
          "nothing",
          "[perf][allocation][pooling][conv]") {
    // A 1x16x16 input, conv 8 5x5 pad 2 (two chunks of the batch: the team
    // runs them on two threads), 2x2 max pooling (its argmax kept per
    // output), flatten, dense 512 -> 32, dropout, dense 32 -> 10; every
    // method that handles layers without parameters, one and two threads,
    // with an evaluation pass between steps (dropout switches its mask off
    // and on); in fp32 and in mixed bf16 (the layers' bf16 operand copies,
    // and feedback alignment's filters converted for the backward product).
    auto pooled = [](auto feedback, std::size_t threads, auto precision) {
        using P = typename decltype(precision)::type;
        set_blas_threads(static_cast<int>(threads));
        conv2d<tanh_act, P> conv({1, 16, 16}, {.out_channels = 8, .kernel = 5, .padding = 2});
        REQUIRE(conv.chunk_samples() < 64);
        network net{std::move(feedback),
                    softmax_cross_entropy{},
                    1,
                    std::move(conv),
                    max_pool2d<>({8, 16, 16}, 2),
                    flatten<>({8, 8, 8}),
                    dense<tanh_act, P>{512, 32},
                    dropout<>(32, 0.3),
                    dense<identity, P>{32, 10}};
        return allocations_with_evaluation(net);
    };
    const auto each_method = [&](std::size_t threads, auto precision) {
        CHECK(pooled(backprop{}, threads, precision) == 0);
        CHECK(pooled(feedback_alignment{}, threads, precision) == 0);
        CHECK(pooled(dfa<dense_gaussian>{}, threads, precision) == 0);
    };
    for (const std::size_t threads : {1U, 2U}) {
        CAPTURE(threads);
        each_method(threads, precision_tag<float>{});
        each_method(threads, precision_tag<mixed_bf16>{});
    }
}

TEST_CASE("a steady-state step through the norms allocates nothing", "[perf][allocation][norm]") {
    // conv 4 3x3 (no activation), batch_norm with tanh, flatten, dense 256 -> 32,
    // layer_norm with tanh, dense 32 -> 10; evaluation passes between steps
    // (batch_norm switches to its running estimates and back).
    auto normed = [](auto feedback, std::size_t threads) {
        set_blas_threads(static_cast<int>(threads));
        network net{std::move(feedback),
                    softmax_cross_entropy{},
                    1,
                    conv2d<identity>({1, 8, 8}, {.out_channels = 4, .kernel = 3, .padding = 1}),
                    batch_norm<tanh_act>({4, 8, 8}),
                    flatten<>({4, 8, 8}),
                    dense<identity>{256, 32},
                    layer_norm<tanh_act>(32),
                    dense<identity>{32, 10}};
        return allocations_with_evaluation(net);
    };
    for (const std::size_t threads : {1U, 2U}) {
        CAPTURE(threads);
        CHECK(normed(backprop{}, threads) == 0);
        CHECK(normed(feedback_alignment{}, threads) == 0);
        CHECK(normed(dfa<dense_gaussian>{}, threads) == 0);
    }
}

TEST_CASE("the allocation counter counts", "[perf][allocation]") {
    // Guards the test above against a counter that never moves.
    const std::size_t before = allocations.load();
    // Through a volatile pointer, so the compiler cannot elide the pair.
    std::vector<int>* volatile p = new std::vector<int>(100);
    delete p;
    CHECK(allocations.load() - before >= 2);
}
