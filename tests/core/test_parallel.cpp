#include <catch2/catch.hpp>

#include <atomic>
#include <stdexcept>
#include <thread>
#include <vector>

#include <lightloop/core/parallel.hpp>

using lightloop::thread_team;

TEST_CASE("a thread team runs every task exactly once, on distinct workers", "[core][parallel]") {
    thread_team team(3);
    REQUIRE(team.size() == 3);
    constexpr std::size_t tasks = 1000;
    for (int round = 0; round < 20; ++round) {
        std::vector<std::atomic<int>> runs(tasks);
        std::vector<std::atomic<int>> by_worker(team.size());
        team.run(tasks, [&](std::size_t task, std::size_t worker) {
            REQUIRE(worker < 3);
            runs[task].fetch_add(1);
            by_worker[worker].fetch_add(1);
        });
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
    team.run(4, [&](std::size_t, std::size_t) {
        team.run(3, [&](std::size_t, std::size_t worker) {
            CHECK(worker == 0);
            inner.fetch_add(1);
        });
    });
    CHECK(inner.load() == 12);
}
