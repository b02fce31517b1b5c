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

#include "lightloop/core/bf16.hpp"
#include "lightloop/core/error.hpp"
#include "lightloop/core/value_block.hpp"

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
    } else if constexpr (std::is_same_v<T, std::uint16_t>) {
        return MPI_UINT16_T;
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

template <class T>
class sum_in_flight;

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
    /// its neighbour (the steps of a sum_in_flight, waited for one after
    /// another). (MPI's all-reduce promises the same result on every
    /// rank only as advice to implementors; Open MPI's reduce-scatter took
    /// 2.5 times as long as this ring on 2 ranks here.)
    ///
    /// With every rank on one node the values go through a shared-memory
    /// window instead, in rounds: rank b finishes block b, and each round
    /// each rank copies a piece of every block the others finish into its
    /// part of the window, adds its own piece (every rank's terms in rank
    /// order) and scales it, and copies the others' finished pieces back:
    /// two barriers a round and no message, the same bits on every rank, and
    /// the same bits as the ring on two ranks.
    template <class T>
    void sum_identical(std::span<T> values, T scale = T(1)) {
        sum_over_ranks(values, scale, sum_reach::everywhere);
    }

    /// sum_identical(values, scale) started now and finished by the
    /// returned object's progress() / finish() (and at the latest by its
    /// destructor), so that work can go on while the values travel: on the
    /// ring, the same messages and additions as sum_identical's, hence the
    /// same bits, sent without blocking, one ring step after another as
    /// progress() finds the last one done. Through shared memory (one node)
    /// the sum is the cores' own copying, which nothing can overlap: it is
    /// done here and the object returned finished. `values` must stay put,
    /// untouched, until the sum is finished. Every rank starts its sums in
    /// the same order; at most `sums_in_flight_limit` at once.
    template <class T>
    sum_in_flight<T> start_sum(std::span<T> values, T scale = T(1));

    /// How many started sums may be unfinished at once (each has its own tag).
    static constexpr std::size_t sums_in_flight_limit = 1024;

    /// The part [first, first + count) of `values` of an n-value sum that
    /// this rank finishes: the ranks' blocks tile [0, n) in p contiguous
    /// blocks of about n / p values (block_of: starts on multiples of 16
    /// values), and which rank finishes which depends on the route.
    value_block owned_block(std::size_t n) const noexcept {
        const std::size_t p = size();
        const std::size_t b = p == 1 || sums_in_shared_memory() ? rank() : (rank() + 1) % p;
        return block_of(n, b, p);
    }

    /// The first half of sum_identical: afterwards this rank's owned_block
    /// of `values` holds the sum over the ranks times `scale`, the same bits
    /// as sum_identical gives there; the rest of `values` is left
    /// unspecified. Half the traffic of sum_identical. With share_owned, for
    /// an update each rank makes on its own block only (the weights then
    /// travel instead of the sums).
    template <class T>
    void sum_owned(std::span<T> values, T scale = T(1)) {
        sum_over_ranks(values, scale, sum_reach::owned);
    }

    /// The second half: every rank's owned_block of `values` is copied to
    /// the same block on every other rank, so that all ranks hold the same
    /// bits everywhere.
    template <class T>
    void share_owned(std::span<T> values) {
        const std::size_t p = size();
        if (p == 1 || values.empty()) {
            return;
        }
        if (sums_in_shared_memory()) {
            share_in_shared_memory(values);
            return;
        }
        sum_in_flight<T>(*this, values, T(1), sum_tag, p - 1, 2 * (p - 1)).finish();
    }
    /// share_owned for bf16 values (a mixed-precision layer's copy of its
    /// weights), moved as their 16-bit patterns.
    void share_owned(std::span<bf16> values) {
        // A bf16 and its one member are pointer-interconvertible.
        share_owned(
          std::span<std::uint16_t>(reinterpret_cast<std::uint16_t*>(values.data()), values.size()));
    }

    /// Replaces each of `values` by its largest value over the ranks (exact,
    /// so the same on every rank).
    void largest(std::span<double> values) {
        if (size_ == 1 || values.empty()) {
            return;
        }
        check(MPI_Allreduce(MPI_IN_PLACE, values.data(),
                            detail::mpi_count(values.size(), "a maximum"), MPI_DOUBLE, MPI_MAX,
                            comm_),
              "MPI_Allreduce (largest over ranks)");
    }

    /// Whether any rank passed true (every rank gets the same answer).
    bool any(bool mine) {
        double votes[1] = {mine ? 1.0 : 0.0};
        sum_identical(std::span<double>(votes));
        return votes[0] > 0.0;
    }

    /// The ranks whose `value` is not rank 0's, listed ("1, 2"; empty if
    /// none), the same on every rank: whether the ranks hold one thing,
    /// compared by a checksum of it.
    std::string ranks_unlike_first(double value) {
        double first[1] = {value};
        broadcast(std::span<double>(first), 0);
        return ranks_where(first[0] != value);
    }

    /// The ranks that passed true, listed ("1, 2"; empty if none), the same
    /// on every rank.
    std::string ranks_where(bool mine) {
        std::vector<double> votes(size(), 0.0);
        votes[rank()] = mine ? 1.0 : 0.0;
        sum_identical(std::span<double>(votes));
        std::string ranks;
        for (std::size_t r = 0; r < votes.size(); ++r) {
            if (votes[r] != 0.0) {
                ranks += (ranks.empty() ? "" : ", ") + std::to_string(r);
            }
        }
        return ranks;
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
    friend class sum_in_flight;

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

    /// Whether a sum's finished blocks reach every rank (sum_identical) or
    /// stay on the rank that finished each (sum_owned).
    enum class sum_reach { everywhere, owned };

    /// The shared-memory rounds: rank b finishes block b (owned_block) of
    /// `values`, `piece` values of each block a round, so that a round's
    /// terms fit a rank's chunk of the window. f(offset) runs one round:
    /// block b's values [offset, offset + length(b, offset)).
    template <class T>
    struct shared_rounds {
        std::size_t n;
        std::size_t p;
        std::size_t piece = window_chunk_bytes / sizeof(T) / p;
        std::size_t first(std::size_t b) const noexcept { return block_of(n, b, p).first; }
        std::size_t length(std::size_t b, std::size_t offset) const noexcept {
            const std::size_t count = block_of(n, b, p).count;
            return offset < count ? std::min(piece, count - offset) : 0;
        }
        template <class F>
        void run(F&& f) const {
            const std::size_t longest = largest_block(n, p); // the same on every rank
            for (std::size_t offset = 0; offset < longest; offset += piece) {
                f(offset);
            }
        }
    };

    /// sum_identical (everywhere) or sum_owned (owned): on the ring, all its
    /// steps or the reduce-scatter's.
    template <class T>
    void sum_over_ranks(std::span<T> values, T scale, sum_reach mode) {
        const std::size_t p = size();
        if (p == 1 || values.empty()) {
            scale_in_place(values, scale);
        } else if (sums_in_shared_memory()) {
            sum_in_shared_memory(values, scale, mode);
        } else {
            sum_in_flight<T>(*this, values, scale, sum_tag, 0,
                             mode == sum_reach::everywhere ? 2 * (p - 1) : p - 1)
              .finish();
        }
    }

    template <class T>
    void sum_in_shared_memory(std::span<T> values, T scale, sum_reach mode) {
        const shared_rounds<T> rounds{values.size(), size()};
        const std::size_t p = size();
        const std::size_t r = rank();
        T* const terms = terms_of<T>(r);
        T* const finished = result_of<T>(r);
        // What the other ranks read from this rank's part: its terms for
        // their blocks and its finished block (on two ranks, what the ring
        // sends).
        std::size_t read_by_others = 0;
        rounds.run([&](std::size_t offset) {
            for (std::size_t b = 0; b < p; ++b) {
                if (b != r) {
                    const T* const from = values.data() + rounds.first(b) + offset;
                    std::copy(from, from + rounds.length(b, offset), terms + b * rounds.piece);
                    read_by_others += rounds.length(b, offset);
                }
            }
            window_fence(); // every rank's terms are in
            const std::size_t n = rounds.length(r, offset);
            T* const mine = values.data() + rounds.first(r) + offset;
            // Every rank's term in rank order; the last addition, scaled, is
            // written to this rank's values (and to the window) in one pass.
            const auto term_of = [&](std::size_t q) -> const T* {
                return q == r ? mine : terms_of<T>(q) + r * rounds.piece;
            };
            const bool everywhere = mode == sum_reach::everywhere;
            for (std::size_t q = 1; q < p; ++q) {
                const T* const before = q == 1 ? term_of(0) : finished;
                const T* const add = term_of(q);
                if (q + 1 < p) {
                    for (std::size_t i = 0; i < n; ++i) {
                        finished[i] = before[i] + add[i];
                    }
                } else {
                    for (std::size_t i = 0; i < n; ++i) {
                        T sum = before[i] + add[i];
                        if (scale != T(1)) {
                            sum *= scale;
                        }
                        mine[i] = sum;
                        if (everywhere) {
                            finished[i] = sum;
                        }
                    }
                }
            }
            // Two barriers a round: after the second every rank is done with
            // this round's terms, so the next round's overwrite nothing still
            // read (and a finished block is rewritten only after the next
            // round's first).
            window_fence();
            if (everywhere) {
                read_by_others += (p - 1) * n;
                copy_blocks(values, rounds, offset,
                            [this](std::size_t b) { return result_of<T>(b); });
            }
        });
        bytes_.sum += read_by_others * sizeof(T);
    }

    /// share_owned through the window: each round, every rank's piece of its
    /// block in its part for terms, then copied by the others. (Not in its
    /// part for finished blocks: after a sum_identical another rank may still
    /// be copying those until this call's first barrier; a part's terms are
    /// written only before a call's first barrier and read only between its
    /// first and second.)
    template <class T>
    void share_in_shared_memory(std::span<T> values) {
        const shared_rounds<T> rounds{values.size(), size()};
        const std::size_t r = rank();
        std::size_t read_by_others = 0;
        rounds.run([&](std::size_t offset) {
            const std::size_t n = rounds.length(r, offset);
            const T* const mine = values.data() + rounds.first(r) + offset;
            std::copy(mine, mine + n, terms_of<T>(r));
            window_fence();
            read_by_others += (size() - 1) * n;
            copy_blocks(values, rounds, offset, [this](std::size_t b) { return terms_of<T>(b); });
            window_fence(); // read before the next round overwrites them
        });
        bytes_.sum += read_by_others * sizeof(T);
    }

    /// The other ranks' pieces of this round, from their parts of the window
    /// (where(b) gives rank b's piece).
    template <class T, class Where>
    void copy_blocks(std::span<T> values, const shared_rounds<T>& rounds, std::size_t offset,
                     Where&& where) const {
        for (std::size_t b = 0; b < size(); ++b) {
            if (b != rank()) {
                const T* const from = where(b);
                std::copy(from, from + rounds.length(b, offset),
                          values.data() + rounds.first(b) + offset);
            }
        }
    }

    /// A chunk of one rank's terms in the shared window (its finished block
    /// after it).
    static constexpr std::size_t window_chunk_bytes = std::size_t{1} << 20;

    MPI_Comm comm_ = MPI_COMM_NULL;
    int rank_ = 0;
    int size_ = 1;
    static constexpr int sum_tag = 0x5eed;
    static constexpr int first_flight_tag = 0x6000; // started sums: one tag each
    std::size_t sums_started_ = 0;
    /// Buffers for the blocks sums in flight receive, lent to each sum
    /// while it is on its way and kept for the next ones.
    std::vector<std::vector<std::byte>> spare_blocks_;

    /// The spare block that holds `bytes` with the least to spare (or,
    /// if none holds them, the largest, grown): sums of different sizes in
    /// flight at once then each find their own size again, and once every
    /// step's sums have run, none allocates.
    std::vector<std::byte> borrow_block(std::size_t bytes) {
        std::vector<std::byte> block;
        if (!spare_blocks_.empty()) {
            std::size_t best = 0;
            for (std::size_t i = 1; i < spare_blocks_.size(); ++i) {
                const std::size_t have = spare_blocks_[i].capacity();
                const std::size_t kept = spare_blocks_[best].capacity();
                const bool fits = have >= bytes;
                if (kept >= bytes ? fits && have < kept : have > kept) {
                    best = i;
                }
            }
            block = std::move(spare_blocks_[best]);
            if (best + 1 != spare_blocks_.size()) {
                spare_blocks_[best] = std::move(spare_blocks_.back());
            }
            spare_blocks_.pop_back();
        }
        block.resize(bytes);
        return block;
    }
    void return_block(std::vector<std::byte>&& block) {
        if (!block.empty()) {
            spare_blocks_.push_back(std::move(block));
        }
    }
    MPI_Win window_ = MPI_WIN_NULL;
    std::vector<std::byte*> parts_; // each rank's part of the window, mapped here
    traffic bytes_;
};

/// A sum over the ranks on its way (communicator::start_sum): the ring of
/// sum_identical as non-blocking messages, one step in flight at a time.
/// Step s < p - 1 of rank r sends block (r - s) to the next rank and
/// receives block (r - s - 1) from the previous one, which it then adds to
/// its own; after them block (r + 1) is complete here and is scaled; the
/// next p - 1 steps pass the complete blocks round as they are.
template <class T>
class sum_in_flight {
public:
    sum_in_flight() = default; // finished, nothing to do
    /// The ring's steps [first_step, end_step) of the 2 (p - 1): all of them
    /// (sum_identical), the reduce-scatter's p - 1 (sum_owned) or the
    /// all-gather's (share_owned).
    sum_in_flight(communicator& comm, std::span<T> values, T scale, int tag,
                  std::size_t first_step = 0, std::size_t end_step = all_steps)
      : comm_(&comm)
      , values_(values)
      , scale_(scale)
      , tag_(tag)
      , step_(first_step)
      , end_(std::min(end_step, steps()))
      , incoming_(first_step < comm.size() - 1 // the reduce-scatter's steps receive into it
                    ? comm.borrow_block(largest_block(values.size(), comm.size()) * sizeof(T))
                    : std::vector<std::byte>()) {
        if (step_ < end_) {
            post();
        } else {
            comm.return_block(std::move(incoming_));
        }
    }
    sum_in_flight(sum_in_flight&& other) noexcept { swap(other); }
    sum_in_flight& operator=(sum_in_flight&& other) noexcept {
        if (this != &other) {
            abandon();
            swap(other);
        }
        return *this;
    }
    sum_in_flight(const sum_in_flight&) = delete;
    sum_in_flight& operator=(const sum_in_flight&) = delete;
    /// Finishes the sum (the other ranks wait for this rank's part).
    ~sum_in_flight() { abandon(); }

    bool finished() const noexcept { return comm_ == nullptr || step_ >= end_; }

    /// Moves the sum on as far as it can without waiting; true once it is
    /// finished.
    bool progress() {
        while (!finished()) {
            int done = 0;
            comm_->check(MPI_Testall(2, requests_, &done, MPI_STATUSES_IGNORE),
                         "MPI_Testall (sum over ranks)");
            if (done == 0) {
                return false;
            }
            complete_step();
        }
        return true;
    }

    /// Waits for the sum to finish.
    void finish() {
        while (!finished()) {
            comm_->check(MPI_Waitall(2, requests_, MPI_STATUSES_IGNORE),
                         "MPI_Waitall (sum over ranks)");
            complete_step();
        }
    }

private:
    std::size_t ranks() const noexcept { return comm_->size(); }
    std::size_t steps() const noexcept { return 2 * (ranks() - 1); }
    static constexpr std::size_t all_steps = std::size_t(-1);
    std::size_t first(std::size_t b) const noexcept {
        return block_of(values_.size(), b, ranks()).first;
    }
    T* incoming() noexcept { return reinterpret_cast<T*>(incoming_.data()); }
    std::size_t count(std::size_t b) const noexcept {
        return block_of(values_.size(), b, ranks()).count;
    }

    /// Posts step step_'s send and receive.
    void post() {
        const std::size_t p = ranks();
        const std::size_t r = comm_->rank();
        const std::size_t s = step_ < p - 1 ? step_ : step_ - (p - 1);
        const bool reducing = step_ < p - 1;
        const std::size_t out = reducing ? (r + p - s) % p : (r + 1 + p - s) % p;
        in_ = reducing ? (r + 2 * p - s - 1) % p : (r + p - s) % p;
        T* into = reducing ? incoming() : values_.data() + first(in_);
        const MPI_Datatype type = detail::datatype<T>();
        const auto next = static_cast<int>((r + 1) % p);
        const auto previous = static_cast<int>((r + p - 1) % p);
        comm_->check(MPI_Irecv(into, detail::mpi_count(count(in_), "a sum"), type, previous, tag_,
                               comm_->handle(), &requests_[0]),
                     "MPI_Irecv (sum over ranks)");
        comm_->check(MPI_Isend(values_.data() + first(out), detail::mpi_count(count(out), "a sum"),
                               type, next, tag_, comm_->handle(), &requests_[1]),
                     "MPI_Isend (sum over ranks)");
        comm_->bytes_.sum += count(out) * sizeof(T);
    }

    /// The step's messages are done: add what came in (reduce-scatter), scale
    /// the complete block after the last addition, post the next step.
    void complete_step() {
        const std::size_t p = ranks();
        if (step_ < p - 1) {
            T* into = values_.data() + first(in_);
            const T* const incoming_values = incoming();
            for (std::size_t i = 0; i < count(in_); ++i) {
                into[i] = incoming_values[i] + into[i];
            }
            if (step_ == p - 2) {
                const std::size_t complete = (comm_->rank() + 1) % p;
                communicator::scale_in_place(values_.subspan(first(complete), count(complete)),
                                             scale_);
            }
        }
        ++step_;
        if (step_ < end_) {
            post();
        }
    }

    /// Finishes the sum if it is on its way (errors cannot leave a
    /// destructor: they would surface in the rank's next call instead),
    /// then hands its block back. A sum keeps its block until it goes (not
    /// only until it finishes), so that the sums a step starts borrow the
    /// same blocks every step, however their messages happen to overlap.
    void abandon() noexcept {
        try {
            finish();
        } catch (...) {
        }
        if (comm_ != nullptr) {
            try {
                comm_->return_block(std::move(incoming_));
            } catch (...) { // no room to keep it: it is freed
            }
        }
        comm_ = nullptr;
    }

    void swap(sum_in_flight& other) noexcept {
        std::swap(comm_, other.comm_);
        std::swap(values_, other.values_);
        std::swap(scale_, other.scale_);
        std::swap(tag_, other.tag_);
        std::swap(step_, other.step_);
        std::swap(end_, other.end_);
        std::swap(in_, other.in_);
        std::swap(requests_, other.requests_);
        incoming_.swap(other.incoming_);
    }

    communicator* comm_ = nullptr;
    std::span<T> values_;
    T scale_ = T(1);
    int tag_ = 0;
    std::size_t step_ = 0;
    std::size_t end_ = 0; // the step after the last this object makes
    std::size_t in_ = 0;  // the block the step's receive brings
    MPI_Request requests_[2] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL};
    std::vector<std::byte> incoming_; // lent by the communicator
};

template <class T>
sum_in_flight<T> communicator::start_sum(std::span<T> values, T scale) {
    if (size() == 1 || values.empty() || sums_in_shared_memory()) {
        sum_identical(values, scale);
        return {};
    }
    const int tag = first_flight_tag + static_cast<int>(sums_started_ % sums_in_flight_limit);
    ++sums_started_;
    return sum_in_flight<T>(*this, values, scale, tag);
}

} // namespace lightloop::distributed
