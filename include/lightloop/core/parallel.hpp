#pragma once
// lightloop's own threads, for all of a step's parallel work: its GEMMs (in
// pieces of C, each a one-thread OpenBLAS call, core/blas.hpp), the camera
// simulation of an optical projection, and the element-wise passes between
// GEMMs (a dense layer's bias + activation and derivative, optimizer
// updates, finite checks). One set of threads for everything: OpenBLAS's own
// workers spin after each of its threaded calls on the very cores the
// element-wise passes need, and wake slowly once asleep.
//
// One knob sets the count: lightloop uses as many threads as OpenBLAS is set
// to use (OPENBLAS_NUM_THREADS, or set_blas_threads()); OpenBLAS itself is
// held at one thread while lightloop's GEMMs run (blas_single_thread).
//
// That hold changes a process-wide setting: while a lightloop GEMM runs, a
// BLAS call from another thread of the program gets one thread, and with an
// OpenMP build of OpenBLAS, openblas_set_num_threads also sets the calling
// thread's OpenMP thread count. A program that relies on that count opts out
// with set_blas_thread_policy(blas_thread_policy::untouched): lightloop then
// never changes OpenBLAS's thread count, runs each GEMM as one OpenBLAS call
// (threaded as OpenBLAS is set), and uses its own team only for its
// element-wise passes and the optical simulation.
// lightloop's own passes give the same bits on any thread count: work is
// split into tasks by the data alone, and anything random inside a task is
// seeded by the task. A GEMM cut into pieces of whole kernel tiles (widths
// that are multiples of 16, like the paper's layers) does too; at other
// widths OpenBLAS's edge kernels can change the last bits of a product with
// the cut, as its own threading does.
//
// thread_team::run hands tasks to persistent workers (no thread is created
// and nothing is allocated per call). A run issued while the team is busy
// (a nested run, or a second thread using the shared team) executes serially
// on the calling thread instead of waiting.
//
// A training step issues a few dozen runs, most well under a millisecond
// apart, so waking a sleeping thread (a futex wake and a reschedule, tens of
// microseconds on a virtual machine) would cost a tenth of a step's parallel
// work. After each run the workers, and the caller waiting for them, spin on
// an atomic for up to `spin_time` before they sleep on a condition variable.
// Only while the team fits the CPUs the process may run on (available_cpus:
// its affinity mask, and a cgroup v2 CPU quota): a team larger than them
// sleeps at once, since a spinning thread would take the core a working one
// needs (README, "Threads", has the measurements). And a spinning thread
// yields its core every few microseconds, to threads of other processes
// sharing the CPUs.

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <cblas.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif
#if defined(__unix__)
#include <pthread.h>
#endif
#if defined(__linux__)
#include <fstream>
#include <sched.h>
#endif

namespace lightloop {

/// Whether lightloop may change OpenBLAS's process-wide thread count (see
/// the file comment).
enum class blas_thread_policy {
    managed,  ///< default: GEMMs in pieces on lightloop's team, OpenBLAS held at one thread
    untouched ///< OpenBLAS's count is never changed; each GEMM is one OpenBLAS call
};

namespace detail {
/// Who holds OpenBLAS at one thread (see blas_single_thread), and the count
/// it was set to before, which stays the process's thread count meanwhile.
struct blas_hold_state {
    std::mutex mutex;
    int holders = 0;             // guarded by mutex
    std::atomic<int> threads{0}; // OpenBLAS's own count while held, else 0
    std::atomic<bool> untouched{false};
};

inline blas_hold_state& blas_hold() {
    static blas_hold_state state;
    return state;
}

/// One step of a spin-wait: the CPU's pause hint where it has one (the
/// waiting core yields to its sibling and leaves the memory bus alone).
inline void spin_pause() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#endif
}

#if defined(__unix__)
/// How many fork()s separate this process from the one that first asked:
/// a child's copy is one more than its parent's (a pthread_atfork handler,
/// registered on the first call). A team compares it with the count its
/// workers were started under, where getpid() would make a system call per
/// run.
inline std::atomic<std::uint64_t>& forks_seen() {
    static std::atomic<std::uint64_t> forks{0};
    static const bool registered = [] {
        ::pthread_atfork(nullptr, nullptr,
                         [] { forks_seen().fetch_add(1, std::memory_order_relaxed); });
        return true;
    }();
    (void)registered;
    return forks;
}
#endif
/// The whole CPUs a cgroup v2 quota `text` ("200000 100000": 2; "150000
/// 100000": 1) allows, or 0 for none ("max 100000", or unreadable).
inline unsigned cgroup_quota_cpus(const std::string& text) noexcept {
    const std::size_t space = text.find(' ');
    if (space == std::string::npos || text.compare(0, space, "max") == 0) {
        return 0;
    }
    try {
        const double quota = std::stod(text.substr(0, space));
        const double period = std::stod(text.substr(space + 1));
        if (!(quota > 0.0 && period > 0.0)) {
            return 0;
        }
        return static_cast<unsigned>(std::max(1.0, std::floor(quota / period)));
    } catch (...) {
        return 0;
    }
}
} // namespace detail

/// The CPUs this thread may run on: its affinity mask (what taskset, numactl
/// or mpirun's binding left it), at most a cgroup v2 CPU quota's whole CPUs
/// (a container's --cpus), else the machine's count; at least 1.
inline std::size_t available_cpus() {
    std::size_t cpus = std::max(1u, std::thread::hardware_concurrency());
#if defined(__linux__)
    cpu_set_t set;
    CPU_ZERO(&set);
    if (::sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) {
        cpus = static_cast<std::size_t>(CPU_COUNT(&set));
    }
    std::ifstream quota_file("/sys/fs/cgroup/cpu.max");
    std::string quota;
    if (quota_file && std::getline(quota_file, quota)) {
        if (const unsigned allowed = detail::cgroup_quota_cpus(quota); allowed > 0) {
            cpus = std::min<std::size_t>(cpus, allowed);
        }
    }
#endif
    return cpus;
}

/// The thread count lightloop uses: OpenBLAS's (OPENBLAS_NUM_THREADS, or
/// set_blas_threads()), at least 1.
inline std::size_t parallel_threads() {
    const int held = detail::blas_hold().threads.load(std::memory_order_acquire);
    return static_cast<std::size_t>(std::max(1, held > 0 ? held : openblas_get_num_threads()));
}

/// Sets the policy for every later GEMM: call it before training, not while
/// lightloop's GEMMs run on other threads.
inline void set_blas_thread_policy(blas_thread_policy policy) {
    detail::blas_hold().untouched.store(policy == blas_thread_policy::untouched,
                                        std::memory_order_release);
}

inline blas_thread_policy get_blas_thread_policy() {
    return detail::blas_hold().untouched.load(std::memory_order_acquire)
             ? blas_thread_policy::untouched
             : blas_thread_policy::managed;
}

/// Holds OpenBLAS at one thread for its lifetime and then restores its
/// count; parallel_threads() reports the restored count meanwhile. lightloop's
/// gemm spreads a product over its own team, each piece a one-thread OpenBLAS
/// call: OpenBLAS's workers would otherwise take part (two callers each
/// asking for T threads), and after each product they spin for up to 2^28
/// cycles on the cores the team needs. Holds nest and may be taken by
/// several threads at once; the last to leave restores the count. Under
/// blas_thread_policy::untouched it does nothing.
class blas_single_thread {
public:
    blas_single_thread()
      : active_(get_blas_thread_policy() == blas_thread_policy::managed) {
        if (!active_) {
            return;
        }
        auto& hold = detail::blas_hold();
        const std::lock_guard<std::mutex> lock(hold.mutex);
        if (hold.holders++ == 0) {
            const int threads = std::max(1, openblas_get_num_threads());
            hold.threads.store(threads, std::memory_order_release);
            if (threads > 1) {
                openblas_set_num_threads(1);
            }
        }
    }
    ~blas_single_thread() {
        if (!active_) {
            return;
        }
        auto& hold = detail::blas_hold();
        const std::lock_guard<std::mutex> lock(hold.mutex);
        if (--hold.holders == 0) {
            const int threads = hold.threads.load(std::memory_order_relaxed);
            if (threads > 1) {
                openblas_set_num_threads(threads);
            }
            hold.threads.store(0, std::memory_order_release);
        }
    }
    blas_single_thread(const blas_single_thread&) = delete;
    blas_single_thread& operator=(const blas_single_thread&) = delete;

private:
    bool active_; // the policy when the hold was taken
};

namespace detail {
/// Sets the number of threads OpenBLAS, and with it lightloop, uses for every
/// later call (taking effect when no lightloop GEMM holds OpenBLAS).
inline void set_thread_count(int threads) {
    auto& hold = detail::blas_hold();
    const std::lock_guard<std::mutex> lock(hold.mutex);
    if (hold.holders > 0) {
        hold.threads.store(threads, std::memory_order_release);
    } else {
        openblas_set_num_threads(threads);
    }
}
} // namespace detail

class thread_team {
public:
    explicit thread_team(std::size_t threads = 1) { resize(threads); }
    thread_team(const thread_team&) = delete;
    thread_team& operator=(const thread_team&) = delete;
    ~thread_team() { stop(); }

    /// Threads that run tasks, the caller's included.
    std::size_t size() const noexcept { return workers_.size() + 1; }

    /// Whether idle threads spin before they sleep (see the file comment):
    /// the team fits the CPUs available when it was last sized.
    bool spins() const noexcept { return spins_.load(std::memory_order_relaxed); }

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
        spins_.store(threads <= available_cpus(), std::memory_order_relaxed);
        stopping_.store(false, std::memory_order_relaxed);
        workers_.reserve(threads - 1);
        for (std::size_t id = 1; id < threads; ++id) {
            // No run is in progress (run_mutex_ is held): the worker waits
            // for the generation after this one.
            workers_.emplace_back([this, id, seen = generation_.load()] { worker_main(id, seen); });
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
            busy_.store(workers_.size(), std::memory_order_relaxed);
            error_ = nullptr;
            // Publishes the fields above to workers spinning on generation_.
            generation_.fetch_add(1, std::memory_order_release);
        }
        wake_.notify_all();
        work(0);
        if (!spin_until([this] { return busy_.load(std::memory_order_acquire) == 0; })) {
            std::unique_lock<std::mutex> lock(state_mutex_);
            // Seen by the last worker to finish (both sides sequentially
            // consistent: it either sees this or finished before the
            // predicate's load), which then notifies under the lock.
            caller_waiting_.store(true);
            done_.wait(lock, [this] { return busy_.load() == 0; });
            caller_waiting_.store(false, std::memory_order_relaxed);
        }
        // Every worker wrote error_ before its release of busy_, which the
        // loads above acquired: no lock, which a worker still notifying
        // would hold (a futex wait and wake per run on the caller).
        if (error_) {
            std::rethrow_exception(std::exchange(error_, nullptr));
        }
    }

    /// How long an idle worker, or a caller waiting for the workers, spins
    /// before it sleeps.
    static constexpr std::chrono::microseconds spin_time{500};

private:
    /// Polls `ready` (with the CPU's pause hint) for up to spin_time (once
    /// if the team does not spin); true once it holds, false if the time ran
    /// out first.
    template <class Ready>
    bool spin_until(Ready&& ready) const {
        if (!spins()) {
            return ready();
        }
        using clock = std::chrono::steady_clock;
        const auto deadline = clock::now() + spin_time;
        for (;;) {
            for (int i = 0; i < 64; ++i) {
                if (ready()) {
                    return true;
                }
                detail::spin_pause();
            }
            if (clock::now() >= deadline) {
                return ready();
            }
            // Lets a thread of another process (a second training run on
            // the same cores) have the core while this one waits, rather
            // than spinning through its time slices (README, "Threads").
            // Free when nothing else wants the core.
            std::this_thread::yield();
        }
    }

    /// In a child of fork() the workers do not exist (only the forking thread
    /// is copied): their handles can be neither joined nor destroyed, so they
    /// are set aside, reachable, and the team starts again from the caller
    /// alone. The mutexes and condition variables are built afresh too: the
    /// copies still count the parent's waiting workers, and a notify would
    /// wait for them forever.
    void adopt_after_fork() {
#if defined(__unix__)
        const std::uint64_t forks = detail::forks_seen().load(std::memory_order_relaxed);
        if (forks == forks_) {
            return;
        }
        forks_ = forks;
        // Never destroyed: a joinable std::thread's destructor terminates.
        static auto* abandoned = new std::vector<std::vector<std::thread>>();
        abandoned->push_back(std::move(workers_));
        workers_.clear();
        busy_.store(0, std::memory_order_relaxed);
        stopping_.store(false, std::memory_order_relaxed);
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
            const auto called = [&] {
                return stopping_.load(std::memory_order_acquire) ||
                       generation_.load(std::memory_order_acquire) != seen;
            };
            if (!spin_until(called)) {
                std::unique_lock<std::mutex> lock(state_mutex_);
                wake_.wait(lock, called);
            }
            if (stopping_.load(std::memory_order_acquire)) {
                return;
            }
            seen = generation_.load(std::memory_order_acquire);
            work(id);
            // The last worker out wakes the caller only if it went to sleep
            // (caller_waiting_, set before its last look at busy_): a caller
            // still spinning sees busy_ == 0 itself.
            if (busy_.fetch_sub(1) == 1 && caller_waiting_.load()) {
                // Under the lock: the caller either saw busy_ == 0 or is
                // already waiting for this notification.
                const std::lock_guard<std::mutex> lock(state_mutex_);
                done_.notify_one();
            }
        }
    }

    void stop() {
        {
            const std::lock_guard<std::mutex> lock(state_mutex_);
            stopping_.store(true, std::memory_order_release);
        }
        wake_.notify_all();
        for (auto& worker : workers_) {
            worker.join();
        }
        workers_.clear();
    }

    std::vector<std::thread> workers_;
    std::mutex run_mutex_;   // held for the duration of a run
    std::mutex state_mutex_; // written under it: everything below except next_ and busy_
    std::condition_variable wake_;
    std::condition_variable done_;
    std::atomic<std::uint64_t> generation_{0}; // a new run; read without the lock
    std::atomic<bool> stopping_{false};
    void (*call_)(void*, std::size_t, std::size_t) = nullptr;
    void* context_ = nullptr;
    std::size_t tasks_ = 0;
    std::atomic<std::size_t> next_{0};
    std::atomic<std::size_t> busy_{0};        // workers still in this run
    std::atomic<bool> caller_waiting_{false}; // the caller sleeps on done_
    std::atomic<bool> spins_{true};           // the team fits the available CPUs
    std::exception_ptr error_;
#if defined(__unix__)
    // The forks this process descends from when workers_ were started
    // (detail::forks_seen; a counter, not getpid(): a system call per run).
    std::uint64_t forks_ = detail::forks_seen().load(std::memory_order_relaxed);
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
/// more than waking a thread.
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
    // Guided pieces: each a share of what is left (half of it over the
    // threads), down to the grain, so that most of the range goes in long
    // pieces and the run ends on short ones (a worker that wakes late, or
    // runs slower, takes fewer, and the last piece leaves the others idle
    // for little).
    constexpr std::size_t most_pieces = 64;
    std::array<std::size_t, most_pieces + 1> edges{};
    std::size_t pieces = 0;
    for (std::size_t begin = 0; begin < count; ++pieces) { // the last piece takes the rest
        edges[pieces] = begin;
        const std::size_t left = count - begin;
        const std::size_t share =
          (std::max(grain, left / (2 * threads)) + 15) / 16 * 16; // on multiples of 16
        begin = pieces + 1 == most_pieces || left < share + grain ? count : begin + share;
    }
    edges[pieces] = count;
    shared_team().run(pieces,
                      [&](std::size_t piece, std::size_t) { f(edges[piece], edges[piece + 1]); });
}

/// parallel_for_ranges over the rows of a (rows x row_size) array, each
/// piece about `grain` elements: f(first_row, end_row).
template <class F>
void parallel_for_rows(std::size_t rows, std::size_t row_size, F&& f) {
    parallel_for_ranges(rows, elementwise_grain / std::max<std::size_t>(row_size, 1),
                        std::forward<F>(f));
}

} // namespace lightloop
