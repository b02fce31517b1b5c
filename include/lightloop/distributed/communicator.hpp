#pragma once
// MPI for lightloop: the process environment and a communicator whose
// collectives throw lightloop errors instead of aborting, and whose sums give
// every rank the same bits.
//
//   lightloop::distributed::environment mpi(argc, argv);
//   lightloop::distributed::communicator comm;   // a private copy of MPI_COMM_WORLD
//   comm.sum_identical(std::span<float>(gradient));
//
// This room sits above train/ (docs/DESIGN.md); it is the only part of the
// library that includes mpi.h, and it is built only with LIGHTLOOP_WITH_MPI.

// The C API only: Open MPI's deprecated C++ bindings stay out.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "lightloop/core/error.hpp"

namespace lightloop::distributed {

/// An MPI call failed, or another rank reported a failure in a collective
/// step; the message names the operation and the ranks involved.
class mpi_error : public error {
public:
    using error::error;
};

namespace detail {

template <class T>
MPI_Datatype datatype() {
    if constexpr (std::is_same_v<T, float>) {
        return MPI_FLOAT;
    } else if constexpr (std::is_same_v<T, double>) {
        return MPI_DOUBLE;
    } else if constexpr (std::is_same_v<T, std::uint64_t>) {
        return MPI_UINT64_T;
    } else if constexpr (std::is_same_v<T, std::int32_t>) {
        return MPI_INT32_T;
    } else if constexpr (std::is_same_v<T, std::uint8_t> || std::is_same_v<T, std::byte>) {
        return MPI_BYTE;
    } else {
        static_assert(sizeof(T) == 0, "lightloop::distributed: no MPI type for this scalar");
    }
}

inline std::string mpi_message(int code) {
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) {
        return "MPI error " + std::to_string(code);
    }
    return std::string(text, static_cast<std::size_t>(length));
}

/// MPI counts are ints: a longer message is refused, never truncated.
inline int mpi_count(std::size_t n, const char* what) {
    if (n > static_cast<std::size_t>(std::numeric_limits<int>::max())) {
        throw config_error(std::string("lightloop::distributed: ") + what + " of " +
                           std::to_string(n) + " values is longer than one MPI message allows");
    }
    return static_cast<int>(n);
}

} // namespace detail

/// Initialises MPI (threads: funneled, lightloop's team never calls MPI) for
/// the lifetime of the object, unless the program already has; finalises
/// only what it initialised.
class environment {
public:
    environment(int& argc, char**& argv) { start(&argc, &argv); }
    /// Without the program's arguments (MPI may not need them).
    environment() { start(nullptr, nullptr); }
    environment(const environment&) = delete;
    environment& operator=(const environment&) = delete;
    ~environment() {
        if (owns_) {
            int finalized = 0;
            MPI_Finalized(&finalized);
            if (finalized == 0) {
                MPI_Finalize();
            }
        }
    }

    /// Ends every process of the job with `code` (a rank that cannot go on:
    /// the others would wait in their next collective forever).
    [[noreturn]] static void abort(int code) {
        MPI_Abort(MPI_COMM_WORLD, code);
        std::abort(); // MPI_Abort does not return
    }

private:
    void start(int* argc, char*** argv) {
        int initialized = 0;
        MPI_Initialized(&initialized);
        if (initialized != 0) {
            return;
        }
        int provided = 0;
        const int rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
        if (rc != MPI_SUCCESS) {
            throw mpi_error("lightloop::distributed: MPI_Init_thread failed: " +
                            detail::mpi_message(rc));
        }
        owns_ = true;
        if (provided < MPI_THREAD_FUNNELED) {
            MPI_Finalize();
            owns_ = false;
            throw mpi_error("lightloop::distributed: this MPI gives thread level " +
                            std::to_string(provided) +
                            ", below MPI_THREAD_FUNNELED (the main thread calls MPI while "
                            "lightloop's worker threads exist)");
        }
    }

    bool owns_ = false;
};

/// How sum_identical moves the values: through a shared-memory window when
/// every rank is on one node (and the window can be made), else by a ring of
/// messages; or always by the ring.
enum class sum_route { shared_memory_if_one_node, ring };

/// A private duplicate of an MPI communicator (MPI_COMM_WORLD by default)
/// whose errors return to lightloop, which throws mpi_error naming the call.
/// Counts the bytes this rank hands to MPI, per kind of traffic.
class communicator {
public:
    explicit communicator(MPI_Comm parent = MPI_COMM_WORLD,
                          sum_route route = sum_route::shared_memory_if_one_node) {
        check(MPI_Comm_dup(parent, &comm_), "MPI_Comm_dup");
        check(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
        check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
        check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
        if (route == sum_route::shared_memory_if_one_node && size_ > 1) {
            open_shared_window();
        }
    }
    communicator(const communicator&) = delete;
    communicator& operator=(const communicator&) = delete;
    /// Collective where a shared window was made (MPI_Win_free), as
    /// MPI_Comm_free is: every rank destroys its communicator, or none does
    /// (a rank that cannot go on ends the job with environment::abort).
    ~communicator() {
        int finalized = 0;
        MPI_Finalized(&finalized);
        if (finalized != 0) {
            return;
        }
        if (window_ != MPI_WIN_NULL) {
            MPI_Win_unlock_all(window_);
            MPI_Win_free(&window_);
        }
        if (comm_ != MPI_COMM_NULL) {
            MPI_Comm_free(&comm_);
        }
    }

    std::size_t rank() const noexcept { return static_cast<std::size_t>(rank_); }
    std::size_t size() const noexcept { return static_cast<std::size_t>(size_); }
    MPI_Comm handle() const noexcept { return comm_; }
    /// Whether sum_identical goes through shared memory (every rank on one
    /// node) rather than the ring.
    bool sums_in_shared_memory() const noexcept { return window_ != MPI_WIN_NULL; }

    /// Replaces `values` on every rank by their sum over the ranks times
    /// `scale`, the same bits on every rank: a ring reduce-scatter leaves each
    /// block of the sum complete on one rank only (added in a fixed order),
    /// that rank scales it, and a ring all-gather copies the blocks to all.
    /// Each rank sends 2 (p - 1) / p of the values in 2 (p - 1) messages to
    /// its neighbour. (MPI's all-reduce promises the same result on every
    /// rank only as advice to implementors; Open MPI's reduce-scatter took
    /// 2.5 times as long as this ring on 2 ranks here.)
    ///
    /// With every rank on one node the values go through a shared-memory
    /// window instead, in chunks: each rank copies the blocks the others
    /// will add into its part of the window, adds its own block (every
    /// rank's terms in rank order) and scales it, and copies the others'
    /// finished blocks back: two barriers a chunk and no message, the same
    /// bits on every rank, and the same bits as the ring on two ranks.
    template <class T>
    void sum_identical(std::span<T> values, T scale = T(1)) {
        const std::size_t p = size();
        if (p == 1 || values.empty()) {
            scale_in_place(values, scale);
            return;
        }
        if (sums_in_shared_memory()) {
            sum_in_shared_memory(values, scale);
            return;
        }
        const std::size_t n = values.size();
        const auto first = [&](std::size_t b) { return n * b / p; };
        const auto count = [&](std::size_t b) { return first(b + 1) - first(b); };
        block_.resize((n / p + 1) * sizeof(T));
        T* incoming = reinterpret_cast<T*>(block_.data());
        const std::size_t r = rank();
        const std::size_t next = (r + 1) % p;
        const std::size_t previous = (r + p - 1) % p;
        const MPI_Datatype type = detail::datatype<T>();
        std::uint64_t sent = 0;
        // Reduce-scatter: at step s rank r passes block (r - s) on and adds
        // block (r - s - 1) from its left neighbour to its own values; after
        // p - 1 steps block (r + 1) mod p is complete on rank r.
        for (std::size_t s = 0; s + 1 < p; ++s) {
            const std::size_t out = (r + p - s) % p;
            const std::size_t in = (r + 2 * p - s - 1) % p;
            check(MPI_Sendrecv(values.data() + first(out), detail::mpi_count(count(out), "a sum"),
                               type, static_cast<int>(next), sum_tag, incoming,
                               detail::mpi_count(count(in), "a sum"), type,
                               static_cast<int>(previous), sum_tag, comm_, MPI_STATUS_IGNORE),
                  "MPI_Sendrecv (sum over ranks, reduce-scatter)");
            T* into = values.data() + first(in);
            for (std::size_t i = 0; i < count(in); ++i) {
                into[i] = incoming[i] + into[i];
            }
            sent += count(out);
        }
        const std::size_t complete = (r + 1) % p;
        scale_in_place(values.subspan(first(complete), count(complete)), scale);
        // All-gather: at step s rank r passes block (r + 1 - s) on and takes
        // block (r - s) from its left neighbour as it is.
        for (std::size_t s = 0; s + 1 < p; ++s) {
            const std::size_t out = (r + 1 + p - s) % p;
            const std::size_t in = (r + p - s) % p;
            check(MPI_Sendrecv(values.data() + first(out), detail::mpi_count(count(out), "a sum"),
                               type, static_cast<int>(next), sum_tag, values.data() + first(in),
                               detail::mpi_count(count(in), "a sum"), type,
                               static_cast<int>(previous), sum_tag, comm_, MPI_STATUS_IGNORE),
                  "MPI_Sendrecv (sum over ranks, all-gather)");
            sent += count(out);
        }
        bytes_.sum += sent * sizeof(T);
    }

    /// Whether any rank passed true (every rank gets the same answer).
    bool any(bool mine) {
        double votes[1] = {mine ? 1.0 : 0.0};
        sum_identical(std::span<double>(votes));
        return votes[0] > 0.0;
    }

    /// Copies `values` from rank `root` to every rank.
    template <class T>
    void broadcast(std::span<T> values, std::size_t root = 0) {
        if (size_ == 1 || values.empty()) {
            return;
        }
        check(MPI_Bcast(values.data(), detail::mpi_count(values.size(), "a broadcast"),
                        detail::datatype<T>(), static_cast<int>(root), comm_),
              "MPI_Bcast");
        if (rank() == root) {
            bytes_.broadcast += values.size() * sizeof(T) * (size() - 1);
        }
    }

    /// Sends `values` to rank `to` (blocking).
    template <class T>
    void send(std::span<const T> values, std::size_t to, int tag) {
        check(MPI_Send(values.data(), detail::mpi_count(values.size(), "a message"),
                       detail::datatype<T>(), static_cast<int>(to), tag, comm_),
              "MPI_Send");
        bytes_.point_to_point += values.size() * sizeof(T);
    }

    /// Starts sending `values` to rank `to`; they must stay as they are
    /// until wait() on the returned request.
    template <class T>
    MPI_Request send_async(std::span<const T> values, std::size_t to, int tag) {
        MPI_Request request = MPI_REQUEST_NULL;
        check(MPI_Isend(values.data(), detail::mpi_count(values.size(), "a message"),
                        detail::datatype<T>(), static_cast<int>(to), tag, comm_, &request),
              "MPI_Isend");
        bytes_.point_to_point += values.size() * sizeof(T);
        return request;
    }
    /// Waits for a request of send_async (a null request returns at once).
    void wait(MPI_Request& request) { check(MPI_Wait(&request, MPI_STATUS_IGNORE), "MPI_Wait"); }

    /// Receives exactly values.size() values from rank `from` (blocking).
    template <class T>
    void receive(std::span<T> values, std::size_t from, int tag) {
        MPI_Status status;
        check(MPI_Recv(values.data(), detail::mpi_count(values.size(), "a message"),
                       detail::datatype<T>(), static_cast<int>(from), tag, comm_, &status),
              "MPI_Recv");
        int count = 0;
        MPI_Get_count(&status, detail::datatype<T>(), &count);
        if (static_cast<std::size_t>(count) != values.size()) {
            throw mpi_error("lightloop::distributed: rank " + std::to_string(rank_) + " expected " +
                            std::to_string(values.size()) + " values from rank " +
                            std::to_string(from) + " and got " + std::to_string(count));
        }
    }

    void barrier() { check(MPI_Barrier(comm_), "MPI_Barrier"); }

    /// Bytes this rank has handed to MPI since construction (or reset), by
    /// kind: sums (reduce-scatter + all-gather), broadcasts (the root's
    /// copies to every other rank), point-to-point sends.
    struct traffic {
        std::uint64_t sum = 0;
        std::uint64_t broadcast = 0;
        std::uint64_t point_to_point = 0;
        std::uint64_t total() const noexcept { return sum + broadcast + point_to_point; }
    };
    const traffic& bytes() const noexcept { return bytes_; }
    void reset_bytes() noexcept { bytes_ = {}; }

    void check(int rc, const char* call) const {
        if (rc != MPI_SUCCESS) {
            throw mpi_error("lightloop::distributed: " + std::string(call) + " failed on rank " +
                            std::to_string(rank_) + ": " + detail::mpi_message(rc));
        }
    }

private:
    template <class T>
    static void scale_in_place(std::span<T> block, T scale) {
        if (scale != T(1)) {
            for (T& v : block) {
                v *= scale;
            }
        }
    }

    /// Makes the shared window when every rank shares this node's memory;
    /// leaves window_ null (the ring) when they do not or when any rank
    /// could not make it, so all ranks take the same route.
    void open_shared_window() {
        MPI_Comm node = MPI_COMM_NULL;
        check(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node),
              "MPI_Comm_split_type");
        int node_size = 0;
        MPI_Comm_size(node, &node_size);
        const bool one_node = node_size == size_;
        int made = 0;
        if (one_node) {
            // Each rank's part: a chunk of its terms, then its finished block.
            const std::size_t part = window_chunk_bytes + result_bytes();
            void* base = nullptr;
            made = MPI_Win_allocate_shared(static_cast<MPI_Aint>(part), 1, MPI_INFO_NULL, node,
                                           &base, &window_) == MPI_SUCCESS
                     ? 1
                     : 0;
        }
        MPI_Comm_free(&node);
        if (!one_node) {
            return;
        }
        int everywhere = 0;
        check(MPI_Allreduce(&made, &everywhere, 1, MPI_INT, MPI_MIN, comm_),
              "MPI_Allreduce (shared window made?)");
        if (everywhere == 0) {
            if (made != 0) {
                MPI_Win_free(&window_);
            }
            window_ = MPI_WIN_NULL;
            return;
        }
        parts_.assign(size(), nullptr);
        for (int q = 0; q < size_; ++q) {
            MPI_Aint bytes = 0;
            int unit = 0;
            void* at = nullptr;
            check(MPI_Win_shared_query(window_, q, &bytes, &unit, &at), "MPI_Win_shared_query");
            parts_[static_cast<std::size_t>(q)] = static_cast<std::byte*>(at);
        }
        check(MPI_Win_lock_all(MPI_MODE_NOCHECK, window_), "MPI_Win_lock_all");
    }

    /// Bytes of a finished block: a chunk's share, rounded up to a cache line.
    std::size_t result_bytes() const noexcept {
        const std::size_t share = (window_chunk_bytes + size() - 1) / size();
        return (share + 63) / 64 * 64 + 64;
    }
    template <class T>
    T* terms_of(std::size_t q) const noexcept {
        return reinterpret_cast<T*>(parts_[q]);
    }
    template <class T>
    T* result_of(std::size_t q) const noexcept {
        return reinterpret_cast<T*>(parts_[q] + window_chunk_bytes);
    }
    /// Everything written to the window before it is seen by every rank after.
    void window_fence() {
        check(MPI_Win_sync(window_), "MPI_Win_sync");
        check(MPI_Barrier(comm_), "MPI_Barrier (shared-memory sum)");
        check(MPI_Win_sync(window_), "MPI_Win_sync");
    }

    template <class T>
    void sum_in_shared_memory(std::span<T> values, T scale) {
        const std::size_t p = size();
        const std::size_t r = rank();
        const std::size_t chunk = window_chunk_bytes / sizeof(T);
        T* const finished = result_of<T>(r);
        // What the other ranks read from this rank's part: its terms for
        // their blocks and its finished block (on two ranks, what the ring
        // sends).
        std::size_t read_by_others = 0;
        for (std::size_t start = 0; start < values.size(); start += chunk) {
            const std::size_t c = std::min(chunk, values.size() - start);
            T* const mine = values.data() + start;
            const auto first = [&](std::size_t b) { return c * b / p; };
            T* const terms = terms_of<T>(r);
            for (std::size_t b = 0; b < p; ++b) {
                if (b != r) {
                    std::copy(mine + first(b), mine + first(b + 1), terms + first(b));
                }
            }
            window_fence(); // every rank's terms are in
            const std::size_t lo = first(r);
            const std::size_t n = first(r + 1) - lo;
            const T* const rank0 = r == 0 ? mine + lo : terms_of<T>(0) + lo;
            std::copy(rank0, rank0 + n, finished);
            for (std::size_t q = 1; q < p; ++q) {
                const T* const add = q == r ? mine + lo : terms_of<T>(q) + lo;
                for (std::size_t i = 0; i < n; ++i) {
                    finished[i] = finished[i] + add[i];
                }
            }
            scale_in_place(std::span<T>(finished, n), scale);
            std::copy(finished, finished + n, mine + lo);
            window_fence(); // every block is finished
            for (std::size_t b = 0; b < p; ++b) {
                if (b != r) {
                    const T* const from = result_of<T>(b);
                    std::copy(from, from + (first(b + 1) - first(b)), mine + first(b));
                }
            }
            // The next chunk's terms overwrite nothing another rank still
            // reads: every rank read them before the second fence.
            read_by_others += (c - n) + (p - 1) * n;
        }
        bytes_.sum += read_by_others * sizeof(T);
    }

    /// A chunk of one rank's terms in the shared window (its finished block
    /// after it).
    static constexpr std::size_t window_chunk_bytes = std::size_t{1} << 20;

    MPI_Comm comm_ = MPI_COMM_NULL;
    int rank_ = 0;
    int size_ = 1;
    static constexpr int sum_tag = 0x5eed;
    std::vector<std::byte> block_; // a block of a sum in flight
    MPI_Win window_ = MPI_WIN_NULL;
    std::vector<std::byte*> parts_; // each rank's part of the window, mapped here
    traffic bytes_;
};

} // namespace lightloop::distributed
