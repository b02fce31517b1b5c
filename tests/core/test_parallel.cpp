#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <span>
#include <stdexcept>
#include <thread>
#include <vector>

#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <lightloop/core/blas.hpp>
#include <lightloop/core/parallel.hpp>
#include <lightloop/optim/adam.hpp>
#include <lightloop/optim/sgd.hpp>

using lightloop::thread_team;

TEST_CASE("a thread team runs every task exactly once, on distinct workers", "[core][parallel]") {
    thread_team team(3);
    REQUIRE(team.size() == 3);
    constexpr std::size_t tasks = 1000;
    for (int round = 0; round < 20; ++round) {
        std::vector<std::atomic<int>> runs(tasks);
        std::vector<std::atomic<int>> by_worker(team.size());
        // Catch's assertions are not thread-safe: tasks record, the test checks after.
        std::atomic<int> bad_worker{0};
        team.run(tasks, [&](std::size_t task, std::size_t worker) {
            if (worker >= 3) {
                bad_worker.fetch_add(1);
                return;
            }
            runs[task].fetch_add(1);
            by_worker[worker].fetch_add(1);
        });
        REQUIRE(bad_worker.load() == 0);
        for (const auto& r : runs) {
            REQUIRE(r.load() == 1);
        }
        int total = 0;
        for (const auto& w : by_worker) {
            total += w.load();
        }
        REQUIRE(total == static_cast<int>(tasks));
    }
    team.resize(1);
    CHECK(team.size() == 1);
    int serial = 0;
    team.run(5, [&](std::size_t, std::size_t worker) {
        CHECK(worker == 0);
        ++serial;
    });
    CHECK(serial == 5);
}

TEST_CASE("a thread team rethrows a task's exception after running the rest", "[core][parallel]") {
    thread_team team(2);
    std::atomic<int> ran{0};
    CHECK_THROWS_WITH(team.run(50,
                               [&](std::size_t task, std::size_t) {
                                   ran.fetch_add(1);
                                   if (task == 7) {
                                       throw std::runtime_error("task 7 failed");
                                   }
                               }),
                      "task 7 failed");
    CHECK(ran.load() == 50);
    // The team is still usable.
    std::atomic<int> after{0};
    team.run(10, [&](std::size_t, std::size_t) { after.fetch_add(1); });
    CHECK(after.load() == 10);
}

TEST_CASE("a run inside a run executes serially instead of deadlocking", "[core][parallel]") {
    thread_team team(2);
    std::atomic<int> inner{0};
    std::atomic<int> not_caller{0}; // inner tasks not run on the calling thread
    team.run(4, [&](std::size_t, std::size_t) {
        team.run(3, [&](std::size_t, std::size_t worker) {
            not_caller.fetch_add(worker == 0 ? 0 : 1);
            inner.fetch_add(1);
        });
    });
    CHECK(inner.load() == 12);
    CHECK(not_caller.load() == 0);
}

TEST_CASE("parallel_for_ranges covers its range once, in aligned pieces of at least the grain",
          "[core][parallel]") {
    lightloop::set_blas_threads(2);
    for (const std::size_t count : {std::size_t{0}, std::size_t{100}, std::size_t{1000},
                                    std::size_t{4096}, std::size_t{100003}}) {
        CAPTURE(count);
        std::vector<std::atomic<int>> hits(count);
        std::atomic<int> pieces{0};
        std::atomic<bool> aligned{true};
        std::atomic<bool> short_inner{false}; // a piece under the grain, not the last
        std::atomic<std::size_t> first{0};    // the first piece's size
        std::atomic<std::size_t> last{0};     // the last piece's size
        lightloop::parallel_for_ranges(count, 1000, [&](std::size_t begin, std::size_t end) {
            pieces.fetch_add(1);
            aligned = aligned && begin % 16 == 0;
            if (end < count && end - begin < 1000) {
                short_inner = true;
            }
            if (begin == 0) {
                first = end - begin;
            }
            if (end == count) {
                last = end - begin;
            }
            for (std::size_t i = begin; i < end; ++i) {
                hits[i].fetch_add(1);
            }
        });
        for (std::size_t i = 0; i < count; ++i) {
            REQUIRE(hits[i].load() == 1);
        }
        CHECK(aligned.load());
        CHECK_FALSE(short_inner.load());
        // Below two grains, one piece on the caller; above, several.
        if (count < 2000) {
            CHECK(pieces.load() == 1);
        } else {
            CHECK(pieces.load() >= 2);
        }
        // Guided: long pieces first (a quarter of the range on two
        // threads), and a run that ends on a short one, under two grains,
        // so that the other thread waits for little.
        if (count == 100003) {
            CHECK(first.load() == 25008);
            CHECK(last.load() < 2000);
        }
    }
    lightloop::set_blas_threads(1);
    lightloop::shared_team();
}

TEST_CASE("optimizer updates split over threads give the same bits as on one thread",
          "[core][parallel]") {
    // 300k parameters: the updates run in pieces on two threads.
    const std::size_t n = 300007;
    std::vector<float> g(n);
    std::vector<float> w0(n);
    for (std::size_t i = 0; i < n; ++i) {
        g[i] = static_cast<float>(std::sin(0.37 * static_cast<double>(i)));
        w0[i] = static_cast<float>(std::cos(0.11 * static_cast<double>(i)));
    }
    auto run = [&](int threads, auto opt) {
        lightloop::set_blas_threads(threads);
        std::vector<float> w = w0;
        for (int step = 0; step < 3; ++step) {
            opt.begin_step();
            opt.update(0, std::span<float>(w), std::span<const float>(g));
        }
        lightloop::set_blas_threads(1);
        return w;
    };
    const lightloop::sgd_settings momentum{
      .learning_rate = 0.1, .momentum = 0.9, .nesterov = true, .weight_decay = 1e-3};
    CHECK(run(1, lightloop::sgd<float>(momentum)) == run(2, lightloop::sgd<float>(momentum)));
    CHECK(run(1, lightloop::sgd<float>(0.1)) == run(2, lightloop::sgd<float>(0.1)));
    CHECK(run(1, lightloop::adam<float>()) == run(2, lightloop::adam<float>()));
    // And the pieces do update: three momentum steps moved every weight.
    const auto w = run(2, lightloop::sgd<float>(momentum));
    std::size_t moved = 0;
    for (std::size_t i = 0; i < n; ++i) {
        moved += w[i] != w0[i] ? std::size_t{1} : std::size_t{0};
    }
    CHECK(moved == n);
}

TEST_CASE("a child of fork() gets a working team (its parent's workers are not copied)",
          "[core][parallel]") {
    lightloop::set_blas_threads(2);
    std::atomic<int> ran{0};
    lightloop::shared_team().run(8, [&](std::size_t, std::size_t) { ran.fetch_add(1); });
    REQUIRE(ran.load() == 8);
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        ::alarm(20); // a hang fails the test instead of the suite
        std::atomic<int> in_child{0};
        lightloop::shared_team().run(8, [&](std::size_t, std::size_t) { in_child.fetch_add(1); });
        lightloop::set_blas_threads(1);
        lightloop::shared_team().run(3, [&](std::size_t, std::size_t) { in_child.fetch_add(1); });
        ::_exit(in_child.load() == 11 ? 0 : 1);
    }
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    INFO("signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0));
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    lightloop::set_blas_threads(1);
    lightloop::shared_team(); // back to one thread for the tests after
}

TEST_CASE("a thread team wakes its sleeping workers and waits for slow ones", "[core][parallel]") {
    // Pauses longer than the spin time put the workers to sleep between
    // runs; tasks longer than it put the caller to sleep while it waits.
    thread_team team(3);
    const auto nap = thread_team::spin_time * 4;
    for (int round = 0; round < 6; ++round) {
        std::this_thread::sleep_for(nap);
        std::vector<std::atomic<int>> runs(7);
        team.run(runs.size(), [&](std::size_t task, std::size_t) {
            if (round % 2 == 1 && task == 0) {
                std::this_thread::sleep_for(nap);
            }
            runs[task].fetch_add(1);
        });
        for (const auto& r : runs) {
            REQUIRE(r.load() == 1);
        }
    }
    // Back to back: the workers are caught spinning.
    std::atomic<int> total{0};
    for (int round = 0; round < 200; ++round) {
        team.run(3, [&](std::size_t, std::size_t) { total.fetch_add(1); });
    }
    CHECK(total.load() == 600);
}

TEST_CASE("a cgroup CPU quota reads as its whole CPUs", "[core][parallel]") {
    CHECK(lightloop::detail::cgroup_quota_cpus("max 100000") == 0); // no quota
    CHECK(lightloop::detail::cgroup_quota_cpus("200000 100000") == 2);
    CHECK(lightloop::detail::cgroup_quota_cpus("150000 100000") == 1);
    CHECK(lightloop::detail::cgroup_quota_cpus("50000 100000") == 1); // at least one
    CHECK(lightloop::detail::cgroup_quota_cpus("") == 0);
    CHECK(lightloop::detail::cgroup_quota_cpus("x y") == 0);
    CHECK(lightloop::detail::cgroup_quota_cpus("0 100000") == 0);
}

// A team larger than the CPUs it may run on must not spin: a spinning idle
// thread takes the core a working one needs (README, "Threads", has the
// step's speed before and after).
TEST_CASE("a thread team larger than the CPUs it may run on sleeps instead of spinning",
          "[core][parallel]") {
    cpu_set_t before;
    REQUIRE(::sched_getaffinity(0, sizeof before, &before) == 0);
    std::size_t first = 0;
    while (!CPU_ISSET(first, &before)) {
        ++first;
    }
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(first, &one);
    REQUIRE(::sched_setaffinity(0, sizeof one, &one) == 0); // this thread only
    const std::size_t pinned = available_cpus();
    bool pinned_team_spins = true;
    std::vector<std::atomic<int>> runs(5);
    {
        thread_team team(2); // its worker inherits the mask
        pinned_team_spins = team.spins();
        for (int round = 0; round < 50; ++round) {
            team.run(runs.size(), [&](std::size_t task, std::size_t) { runs[task].fetch_add(1); });
        }
    }
    REQUIRE(::sched_setaffinity(0, sizeof before, &before) == 0);
    CHECK(pinned == 1);
    CHECK_FALSE(pinned_team_spins);
    for (const auto& r : runs) {
        CHECK(r.load() == 50); // and it runs every task, sleeping between runs
    }
    const std::size_t cpus = available_cpus();
    CHECK(cpus <= static_cast<std::size_t>(CPU_COUNT(&before)));
    thread_team fits(cpus);
    CHECK((fits.spins() || cpus == 1));
    thread_team over(cpus + 1);
    CHECK_FALSE(over.spins());
}

TEST_CASE("under the untouched policy lightloop never changes OpenBLAS's thread count",
          "[core][parallel][blas]") {
    // A thread of the user's program samples OpenBLAS's count while lightloop runs GEMMs
    // large enough to be cut into pieces. Managed (the default), the hold sets it to 1
    // for the duration of each GEMM; untouched, the sampler only ever sees the user's 2,
    // and the products are the same up to rounding.
    const int before = openblas_get_num_threads();
    set_blas_threads(2);
    const std::size_t n = 384; // 384^3 = 56M multiply-adds: cut into pieces when managed
    std::vector<float> a(n * n), b(n * n), managed_c(n * n), untouched_c(n * n);
    for (std::size_t i = 0; i < a.size(); ++i) {
        a[i] = static_cast<float>((i * 7919) % 97) / 97.0f - 0.5f;
        b[i] = static_cast<float>((i * 104729) % 89) / 89.0f - 0.5f;
    }
    auto sample_while = [&](std::vector<float>& c) {
        std::atomic<bool> done{false};
        std::atomic<int> smallest{1 << 20};
        std::thread sampler([&] {
            while (!done.load(std::memory_order_acquire)) {
                smallest.store(std::min(smallest.load(), openblas_get_num_threads()));
            }
        });
        for (int repeat = 0; repeat < 40; ++repeat) {
            gemm(transpose::no, transpose::no, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f,
                 c.data(), n);
        }
        done.store(true, std::memory_order_release);
        sampler.join();
        return smallest.load();
    };
    REQUIRE(get_blas_thread_policy() == blas_thread_policy::managed);
    CHECK(sample_while(managed_c) == 1);
    set_blas_thread_policy(blas_thread_policy::untouched);
    CHECK(sample_while(untouched_c) == 2);
    {
        const blas_single_thread hold; // a no-op now
        CHECK(openblas_get_num_threads() == 2);
    }
    CHECK(parallel_threads() == 2); // lightloop's own passes still use the count
    set_blas_thread_policy(blas_thread_policy::managed);
    double worst = 0.0;
    for (std::size_t i = 0; i < managed_c.size(); ++i) {
        worst = std::max(worst, static_cast<double>(std::abs(managed_c[i] - untouched_c[i])));
    }
    CHECK(worst < 1e-4); // sums of 384 products of size <= 0.25: float rounding only
    set_blas_threads(before);
}
