#pragma once
// lightloop's own threads, for the work between GEMMs that OpenBLAS cannot
// parallelise for us: the camera simulation of an optical projection, and the
// element-wise passes between GEMMs (a dense layer's bias + activation and
// derivative, optimizer updates, finite checks).
//
// One knob sets both: lightloop's parallel loops use as many threads as
// OpenBLAS is set to use (OPENBLAS_NUM_THREADS, or set_blas_threads()).
// Results never depend on the thread count: work is split into tasks by the
// data alone, and anything random inside a task is seeded by the task.
//
// thread_team::run hands tasks to persistent workers (no thread is created
// and nothing is allocated per call). A run issued while the team is busy
// (a nested run, or a second thread using the shared team) executes serially
// on the calling thread instead of waiting.

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <cblas.h>
#if defined(__unix__)
#include <sys/types.h>
#include <unistd.h>
#endif

namespace lightloop {

/// The thread count lightloop's parallel loops use: OpenBLAS's, at least 1.
inline std::size_t parallel_threads() {
    return static_cast<std::size_t>(std::max(1, openblas_get_num_threads()));
}

class thread_team {
public:
    explicit thread_team(std::size_t threads = 1) { resize(threads); }
    thread_team(const thread_team&) = delete;
    thread_team& operator=(const thread_team&) = delete;
    ~thread_team() { stop(); }

    /// Threads that run tasks, the caller's included.
    std::size_t size() const noexcept { return workers_.size() + 1; }

    /// Starts or stops workers so that size() == max(threads, 1). Waits for
    /// a run in progress.
    void resize(std::size_t threads) {
        adopt_after_fork();
        threads = std::max<std::size_t>(threads, 1);
        if (threads == size()) {
            return;
        }
        const std::lock_guard<std::mutex> running(run_mutex_);
        stop();
        stopping_ = false;
        workers_.reserve(threads - 1);
        for (std::size_t id = 1; id < threads; ++id) {
            // No run is in progress (run_mutex_ is held): the worker waits
            // for the generation after this one.
            workers_.emplace_back([this, id, seen = generation_] { worker_main(id, seen); });
        }
    }

    /// Calls f(task, worker) for every task in [0, tasks), spread over the
    /// team, and returns when all are done. `worker` (< size()) identifies
    /// the thread, for per-thread scratch; the caller is worker 0. If tasks
    /// throw, the rest still run and the first exception is rethrown here.
    template <class F>
    void run(std::size_t tasks, F&& f) {
        adopt_after_fork();
        std::unique_lock<std::mutex> running(run_mutex_, std::try_to_lock);
        if (!running.owns_lock() || workers_.empty() || tasks <= 1) {
            for (std::size_t task = 0; task < tasks; ++task) {
                f(task, std::size_t{0});
            }
            return;
        }
        using callable = std::remove_reference_t<F>;
        {
            const std::lock_guard<std::mutex> lock(state_mutex_);
            call_ = [](void* context, std::size_t task, std::size_t worker) {
                (*static_cast<callable*>(context))(task, worker);
            };
            context_ = const_cast<void*>(static_cast<const void*>(std::addressof(f)));
            tasks_ = tasks;
            next_.store(0, std::memory_order_relaxed);
            busy_ = workers_.size();
            error_ = nullptr;
            ++generation_;
        }
        wake_.notify_all();
        work(0);
        std::unique_lock<std::mutex> lock(state_mutex_);
        done_.wait(lock, [this] { return busy_ == 0; });
        if (error_) {
            std::rethrow_exception(std::exchange(error_, nullptr));
        }
    }

private:
    /// In a child of fork() the workers do not exist (only the forking thread
    /// is copied): their handles can be neither joined nor destroyed, so they
    /// are set aside, reachable, and the team starts again from the caller
    /// alone. The mutexes and condition variables are built afresh too: the
    /// copies still count the parent's waiting workers, and a notify would
    /// wait for them forever.
    void adopt_after_fork() {
#if defined(__unix__)
        const ::pid_t pid = ::getpid();
        if (pid == owner_) {
            return;
        }
        owner_ = pid;
        // Never destroyed: a joinable std::thread's destructor terminates.
        static auto* abandoned = new std::vector<std::vector<std::thread>>();
        abandoned->push_back(std::move(workers_));
        workers_.clear();
        busy_ = 0;
        stopping_ = false;
        // New objects over the copies (whose destructors could block).
        std::construct_at(&run_mutex_);
        std::construct_at(&state_mutex_);
        std::construct_at(&wake_);
        std::construct_at(&done_);
#endif
    }

    void work(std::size_t worker) {
        for (;;) {
            const std::size_t task = next_.fetch_add(1, std::memory_order_relaxed);
            if (task >= tasks_) {
                return;
            }
            try {
                call_(context_, task, worker);
            } catch (...) {
                const std::lock_guard<std::mutex> lock(state_mutex_);
                if (!error_) {
                    error_ = std::current_exception();
                }
            }
        }
    }

    void worker_main(std::size_t id, std::uint64_t seen) {
        for (;;) {
            {
                std::unique_lock<std::mutex> lock(state_mutex_);
                wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
                if (stopping_) {
                    return;
                }
                seen = generation_;
            }
            work(id);
            const std::lock_guard<std::mutex> lock(state_mutex_);
            if (--busy_ == 0) {
                done_.notify_one();
            }
        }
    }

    void stop() {
        {
            const std::lock_guard<std::mutex> lock(state_mutex_);
            stopping_ = true;
        }
        wake_.notify_all();
        for (auto& worker : workers_) {
            worker.join();
        }
        workers_.clear();
    }

    std::vector<std::thread> workers_;
    std::mutex run_mutex_;   // held for the duration of a run
    std::mutex state_mutex_; // guards everything below except next_
    std::condition_variable wake_;
    std::condition_variable done_;
    std::uint64_t generation_ = 0;
    bool stopping_ = false;
    void (*call_)(void*, std::size_t, std::size_t) = nullptr;
    void* context_ = nullptr;
    std::size_t tasks_ = 0;
    std::atomic<std::size_t> next_{0};
    std::size_t busy_ = 0;
    std::exception_ptr error_;
#if defined(__unix__)
    ::pid_t owner_ = ::getpid(); // the process whose threads workers_ are
#endif
};

/// The process's team, resized to parallel_threads() on each call.
inline thread_team& shared_team() {
    static thread_team team;
    team.resize(parallel_threads());
    return team;
}

/// Elements per piece for element-wise passes split over threads (dense
/// layers' passes, optimizer updates, finite checks): a piece is then worth
/// more than waking a thread, about 10 us.
inline constexpr std::size_t elementwise_grain = 32768;

/// Calls f(begin, end) on pieces covering [0, count), spread over the shared
/// team: for element-wise passes over large arrays (optimizer updates, finite
/// checks) between OpenBLAS's GEMMs, which would otherwise leave the other
/// cores idle. Pieces hold at least `grain` elements (one piece, on the
/// caller's thread, below 2 grain or with one thread) and start on multiples
/// of 16 elements; f must not depend on how [0, count) is cut.
template <class F>
void parallel_for_ranges(std::size_t count, std::size_t grain, F&& f) {
    grain = std::max<std::size_t>(grain, 16);
    const std::size_t threads = count / grain >= 2 ? parallel_threads() : 1;
    if (threads <= 1) {
        f(std::size_t{0}, count);
        return;
    }
    // A few pieces per thread: a worker that wakes late takes fewer.
    const std::size_t pieces = std::min(count / grain, 4 * threads);
    const std::size_t step = ((count + pieces - 1) / pieces + 15) / 16 * 16;
    shared_team().run(pieces, [&](std::size_t piece, std::size_t) {
        const std::size_t begin = std::min(count, piece * step);
        const std::size_t end = std::min(count, begin + step);
        if (begin < end) {
            f(begin, end);
        }
    });
}

/// parallel_for_ranges over the rows of a (rows x row_size) array, each
/// piece about `grain` elements: f(first_row, end_row).
template <class F>
void parallel_for_rows(std::size_t rows, std::size_t row_size, F&& f) {
    parallel_for_ranges(rows, elementwise_grain / std::max<std::size_t>(row_size, 1),
                        std::forward<F>(f));
}

} // namespace lightloop
