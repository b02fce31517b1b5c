#pragma once
// The oneDNN GEMM backend: bf16 x bf16 -> fp32 products (and fp32 ones)
// through oneDNN's matmul primitive, which picks AMX or AVX512-BF16 for the
// CPU at run time; on a CPU with neither, bf16 operands are widened and run
// as fp32 products (bf16_products_native).
//
// Built when CMake finds oneDNN (LIGHTLOOP_WITH_ONEDNN, which defines the
// macro of the same name); without it this header declares nothing and
// bf16 networks run on the OpenBLAS backend's emulation (core/precision.hpp).
//
// Threads. Debian's oneDNN is an OpenMP build. Its products run here the way
// lightloop's OpenBLAS products do (core/blas.hpp): cut into pieces of C on
// lightloop's own team, each piece one oneDNN call held at one OpenMP thread
// (created and executed so), so no OpenMP team is ever started and nothing
// spins on the cores the element-wise passes need.
//
// Primitives are created once per piece shape (with its alpha and beta) and
// kept for the process, each with a pool of bindings (a stream, memory
// objects and a user-managed scratchpad), one per thread of the team, that
// executions borrow. A product of a shape seen before creates nothing, and
// takes no lock that sleeps: the cache is read under a shared lock and the
// pool under a spin lock (two threads' pieces met on mutexes there, a futex
// sleep and wake each time). oneDNN 2.6's execute itself
// still allocates a few small blocks per call inside the library (its argument map); the allocation
// test counts them apart from lightloop's own (tests/perf/test_allocations.cpp).

#if defined(LIGHTLOOP_WITH_ONEDNN)

#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "lightloop/core/bf16.hpp"
#include "lightloop/core/bf16_packing.hpp"
#include "lightloop/core/blas.hpp"
#include "lightloop/core/error.hpp"
#include "lightloop/core/parallel.hpp"

#if __has_include(<omp.h>)
#include <omp.h>
#else
extern "C" {
int omp_get_max_threads(void);
void omp_set_num_threads(int);
}
#endif

namespace lightloop {
namespace detail::onednn {

inline void check(dnnl_status_t status, const char* what) {
    if (status != dnnl_success) {
        throw error(std::string("lightloop: oneDNN ") + what +
                    " failed: " + dnnl_status2str(status));
    }
}

/// Holds the calling thread's OpenMP thread count at 1 (see the file
/// comment) and puts it back.
class omp_single_thread {
public:
    omp_single_thread()
      : saved_(omp_get_max_threads()) {
        if (saved_ != 1) {
            omp_set_num_threads(1);
        }
    }
    ~omp_single_thread() {
        if (saved_ != 1) {
            omp_set_num_threads(saved_);
        }
    }
    omp_single_thread(const omp_single_thread&) = delete;
    omp_single_thread& operator=(const omp_single_thread&) = delete;

private:
    int saved_;
};

/// One product's shape: C (m x n, ldc) = alpha op(A) op(B) + beta C. A B
/// packed for the kernel (core/bf16_packing.hpp) has its blocks' sizes and
/// strides here (zeros for a plain B, given by tb and ldb).
struct matmul_key {
    bool ta, tb;
    dnnl_data_type_t operands;
    std::size_t m, n, k, lda, ldb, ldc;
    float alpha, beta;
    std::size_t k_block = 0, n_block = 0, k_stride = 0, n_stride = 0;
    bool operator==(const matmul_key&) const noexcept = default;
};

struct matmul_key_hash {
    std::size_t operator()(const matmul_key& key) const noexcept {
        std::size_t h = std::hash<std::size_t>{}(key.m);
        const auto mix = [&h](std::size_t v) { h = h * 0x9e3779b97f4a7c15ULL + v + (h >> 29); };
        mix(key.n);
        mix(key.k);
        mix(key.lda);
        mix(key.ldb);
        mix(key.ldc);
        mix((static_cast<std::size_t>(key.ta) << 1) | static_cast<std::size_t>(key.tb));
        mix(static_cast<std::size_t>(key.operands));
        mix(std::hash<float>{}(key.alpha));
        mix(std::hash<float>{}(key.beta));
        mix(key.n_block);
        mix(key.n_stride);
        return h;
    }
};

/// The process's CPU engine.
inline dnnl_engine_t engine() {
    static const std::unique_ptr<dnnl_engine, dnnl_status_t (*)(dnnl_engine_t)> cpu = [] {
        dnnl_engine_t e = nullptr;
        check(dnnl_engine_create(&e, dnnl_cpu, 0), "engine creation");
        return std::unique_ptr<dnnl_engine, dnnl_status_t (*)(dnnl_engine_t)>(e,
                                                                              dnnl_engine_destroy);
    }();
    return cpu.get();
}

/// What one execution of a matmul needs of its own: a stream, memory
/// objects whose data pointers are set per call, and a scratchpad.
struct binding {
    dnnl_stream_t stream = nullptr;
    dnnl_memory_t a = nullptr, b = nullptr, c = nullptr, scratch = nullptr;
    std::vector<unsigned char> scratch_space;
    binding() = default;
    binding(const binding&) = delete;
    binding& operator=(const binding&) = delete;
    ~binding() {
        for (dnnl_memory_t m : {a, b, c, scratch}) {
            if (m != nullptr) {
                dnnl_memory_destroy(m);
            }
        }
        if (stream != nullptr) {
            dnnl_stream_destroy(stream);
        }
    }
};

/// A lock for a few instructions' work (a binding taken from or given back
/// to a pool): it spins, never sleeps. Two threads running pieces at once
/// met on a std::mutex here, and each meeting was a futex sleep and wake,
/// several a step on this virtual machine. A waiter yields its core after a
/// burst of pause hints: with more threads than cores (a user's own threads
/// training at once) the holder may have been preempted, and spinning would
/// keep it off the core for the rest of the time slice.
class spin_lock {
public:
    void lock() noexcept {
        while (held_.exchange(true, std::memory_order_acquire)) {
            for (int spins = 1; held_.load(std::memory_order_relaxed); ++spins) {
                spin_pause();
                if (spins % 64 == 0) {
                    std::this_thread::yield();
                }
            }
        }
    }
    void unlock() noexcept { held_.store(false, std::memory_order_release); }

private:
    std::atomic<bool> held_{false};
};

/// A created matmul: its primitive, its operands' descriptions, and a pool
/// of bindings, one per execution running at once (made for the team's
/// size when the matmul is created, so pieces on any thread find one).
struct matmul_entry {
    dnnl_primitive_t primitive = nullptr;
    dnnl_memory_desc_t a{}, b{}, c{}, scratch{};
    std::size_t scratch_bytes = 0;
    spin_lock pool_mutex;
    std::vector<std::unique_ptr<binding>> pool; // guarded by pool_mutex
    std::size_t bindings = 0;                   // made so far; guarded by pool_mutex
    matmul_entry() = default;
    matmul_entry(const matmul_entry&) = delete;
    matmul_entry& operator=(const matmul_entry&) = delete;
    ~matmul_entry() {
        pool.clear();
        if (primitive != nullptr) {
            dnnl_primitive_destroy(primitive);
        }
    }
};

inline dnnl_memory_desc_t matrix_desc(std::size_t rows, std::size_t cols, bool transposed,
                                      std::size_t ld, dnnl_data_type_t type) {
    dnnl_memory_desc_t md{};
    const dnnl_dims_t dims = {static_cast<dnnl_dim_t>(rows), static_cast<dnnl_dim_t>(cols)};
    const dnnl_dims_t strides = {transposed ? 1 : static_cast<dnnl_dim_t>(ld),
                                 transposed ? static_cast<dnnl_dim_t>(ld) : 1};
    check(dnnl_memory_desc_init_by_strides(&md, 2, dims, type, strides), "memory description");
    return md;
}

/// A bf16 B (k x n) packed in blocks of k_block x n_block, pairs of k
/// interleaved (core/bf16_packing.hpp), as oneDNN describes such a layout.
inline dnnl_memory_desc_t packed_desc(const matmul_key& key) {
    const auto round_up = [](std::size_t v, std::size_t to) { return (v + to - 1) / to * to; };
    dnnl_memory_desc_t md{};
    md.ndims = 2;
    md.dims[0] = static_cast<dnnl_dim_t>(key.k);
    md.dims[1] = static_cast<dnnl_dim_t>(key.n);
    md.padded_dims[0] = static_cast<dnnl_dim_t>(round_up(key.k, key.k_block));
    md.padded_dims[1] = static_cast<dnnl_dim_t>(round_up(key.n, key.n_block));
    md.data_type = dnnl_bf16;
    md.format_kind = dnnl_blocked;
    auto& blocking = md.format_desc.blocking;
    blocking.strides[0] = static_cast<dnnl_dim_t>(key.k_stride);
    blocking.strides[1] = static_cast<dnnl_dim_t>(key.n_stride);
    blocking.inner_nblks = 3;
    blocking.inner_blks[0] = static_cast<dnnl_dim_t>(key.k_block / 2);
    blocking.inner_blks[1] = static_cast<dnnl_dim_t>(key.n_block);
    blocking.inner_blks[2] = 2;
    blocking.inner_idxs[0] = 0;
    blocking.inner_idxs[1] = 1;
    blocking.inner_idxs[2] = 0;
    return md;
}

/// The name of the implementation oneDNN chose for `pd` ("brg:avx512_core_bf16").
inline std::string implementation(const_dnnl_primitive_desc_t pd) {
    const char* name = nullptr;
    check(dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &name),
          "implementation query");
    return name != nullptr ? name : "";
}

/// Creates the matmul for `key` (under the caller's omp_single_thread hold:
/// oneDNN sizes its work for the threads it sees at creation).
inline std::unique_ptr<matmul_entry> create_matmul(const matmul_key& key) {
    auto entry = std::make_unique<matmul_entry>();
    entry->a = matrix_desc(key.m, key.k, key.ta, key.lda, key.operands);
    entry->b = key.n_block != 0 ? packed_desc(key)
                                : matrix_desc(key.k, key.n, key.tb, key.ldb, key.operands);
    entry->c = matrix_desc(key.m, key.n, false, key.ldc, dnnl_f32);
    dnnl_matmul_desc_t desc{};
    check(dnnl_matmul_desc_init(&desc, &entry->a, &entry->b, nullptr, &entry->c), "matmul setup");
    dnnl_primitive_attr_t attr = nullptr;
    check(dnnl_primitive_attr_create(&attr), "attribute creation");
    const std::unique_ptr<dnnl_primitive_attr, dnnl_status_t (*)(dnnl_primitive_attr_t)> attr_owner(
      attr, dnnl_primitive_attr_destroy);
    check(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user),
          "scratchpad mode");
    if (key.alpha != 1.0f) {
        check(dnnl_primitive_attr_set_output_scales(attr, 1, 0, &key.alpha), "output scale");
    }
    if (key.beta != 0.0f) {
        dnnl_post_ops_t post = nullptr;
        check(dnnl_post_ops_create(&post), "post-op creation");
        const std::unique_ptr<dnnl_post_ops, dnnl_status_t (*)(dnnl_post_ops_t)> post_owner(
          post, dnnl_post_ops_destroy);
        check(dnnl_post_ops_append_sum(post, key.beta), "sum post-op");
        check(dnnl_primitive_attr_set_post_ops(attr, post), "post-ops");
    }
    dnnl_primitive_desc_t pd = nullptr;
    check(dnnl_primitive_desc_create(&pd, &desc, attr, engine(), nullptr), "matmul creation");
    const std::unique_ptr<dnnl_primitive_desc, dnnl_status_t (*)(dnnl_primitive_desc_t)> pd_owner(
      pd, dnnl_primitive_desc_destroy);
    if (key.n_block != 0 && implementation(pd).starts_with("ref")) {
        // oneDNN would run packed weights on its reference loops, orders of
        // magnitude slower: packed_weights_layout offers no layout then.
        throw error("lightloop: oneDNN has no fast kernel for packed bf16 weights at " +
                    std::to_string(key.m) + " x " + std::to_string(key.k) + " x " +
                    std::to_string(key.n) + " (" + implementation(pd) + ")");
    }
    const dnnl_memory_desc_t* scratch =
      dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    if (scratch != nullptr) {
        entry->scratch = *scratch;
        entry->scratch_bytes = dnnl_memory_desc_get_size(scratch);
    }
    check(dnnl_primitive_create(&entry->primitive, pd), "primitive creation");
    return entry;
}

inline std::unique_ptr<binding> make_binding(const matmul_entry& entry) {
    auto bound = std::make_unique<binding>();
    check(dnnl_stream_create(&bound->stream, engine(), dnnl_stream_default_flags),
          "stream creation");
    check(dnnl_memory_create(&bound->a, &entry.a, engine(), DNNL_MEMORY_NONE), "memory creation");
    check(dnnl_memory_create(&bound->b, &entry.b, engine(), DNNL_MEMORY_NONE), "memory creation");
    check(dnnl_memory_create(&bound->c, &entry.c, engine(), DNNL_MEMORY_NONE), "memory creation");
    if (entry.scratch_bytes > 0) {
        bound->scratch_space.resize(entry.scratch_bytes);
        check(dnnl_memory_create(&bound->scratch, &entry.scratch, engine(),
                                 bound->scratch_space.data()),
              "scratchpad creation");
    }
    return bound;
}

/// Tops an entry's pool up to one binding per thread of the team, with room
/// for twice as many, so that taking and returning them allocates nothing:
/// at the entry's first use, and again when the team has grown since (a
/// product made on one thread, then cut into pieces that run at once).
/// Called with entry.pool_mutex held.
inline void fill_pool(matmul_entry& entry) {
    const std::size_t threads = parallel_threads();
    if (entry.bindings >= threads) {
        return;
    }
    entry.pool.reserve(2 * threads);
    for (; entry.bindings < threads; ++entry.bindings) {
        entry.pool.push_back(make_binding(entry));
    }
}

/// A binding taken from an entry's pool for one execution, given back after.
class borrowed_binding {
public:
    explicit borrowed_binding(matmul_entry& entry)
      : entry_(entry) {
        {
            const std::lock_guard<spin_lock> lock(entry.pool_mutex);
            fill_pool(entry);
            if (!entry.pool.empty()) {
                bound_ = std::move(entry.pool.back());
                entry.pool.pop_back();
            } else {
                ++entry.bindings; // more executions at once than threads
            }
        }
        if (!bound_) {
            bound_ = make_binding(entry);
        }
    }
    ~borrowed_binding() {
        const std::lock_guard<spin_lock> lock(entry_.pool_mutex);
        entry_.pool.push_back(std::move(bound_));
    }
    borrowed_binding(const borrowed_binding&) = delete;
    borrowed_binding& operator=(const borrowed_binding&) = delete;
    binding& operator*() const noexcept { return *bound_; }

private:
    matmul_entry& entry_;
    std::unique_ptr<binding> bound_;
};

/// Every matmul created so far, for the process.
class matmul_cache {
public:
    // The engine is made first, so that it outlives the primitives and
    // streams at exit (statics die in reverse order of construction).
    matmul_cache() { engine(); }

    /// Shared for a shape seen before (readers never wait for each other:
    /// two threads' pieces look up at once), exclusive to create one.
    matmul_entry& get(const matmul_key& key) {
        {
            const std::shared_lock<std::shared_mutex> reading(mutex_);
            const auto found = entries_.find(key);
            if (found != entries_.end()) {
                return *found->second;
            }
        }
        const std::lock_guard<std::shared_mutex> writing(mutex_);
        auto found = entries_.find(key);
        if (found == entries_.end()) {
            found = entries_.emplace(key, create_matmul(key)).first;
        }
        return *found->second;
    }

private:
    std::shared_mutex mutex_;
    std::unordered_map<matmul_key, std::unique_ptr<matmul_entry>, matmul_key_hash> entries_;
};

inline matmul_cache& matmuls() {
    static matmul_cache cache;
    return cache;
}

/// Set while a thread is inside a oneDNN execution.
inline bool& inside_call() {
    thread_local bool inside = false;
    return inside;
}

/// Points memory object `m` at `data` for the next execution on `s`.
inline void bind(dnnl_memory_t m, const void* data, dnnl_stream_t s) {
    check(dnnl_memory_set_data_handle_v2(m, const_cast<void*>(data), s), "memory binding");
}

/// Runs primitive `p` with `args` on `s` and waits for it, marked as inside
/// oneDNN for the allocation test.
inline void execute(dnnl_primitive_t p, dnnl_stream_t s, const dnnl_exec_arg_t* args, int count,
                    const char* what) {
    inside_call() = true;
    struct leave {
        ~leave() { inside_call() = false; }
    } const leaving;
    check(dnnl_primitive_execute(p, s, count, args), what);
    check(dnnl_stream_wait(s), "stream wait");
}

/// Runs one piece on the calling thread.
inline void run_matmul(const matmul_key& key, const void* a, const void* b, float* c) {
    const omp_single_thread hold;
    matmul_entry& entry = matmuls().get(key);
    const borrowed_binding borrowed(entry);
    binding& bound = *borrowed;
    bind(bound.a, a, bound.stream);
    bind(bound.b, b, bound.stream);
    bind(bound.c, c, bound.stream);
    const dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, bound.a},
                                     {DNNL_ARG_WEIGHTS, bound.b},
                                     {DNNL_ARG_DST, bound.c},
                                     {DNNL_ARG_SCRATCHPAD, bound.scratch}};
    execute(entry.primitive, bound.stream, args, bound.scratch != nullptr ? 4 : 3, "matmul");
}

template <class T>
constexpr dnnl_data_type_t data_type() {
    if constexpr (std::is_same_v<T, bf16>) {
        return dnnl_bf16;
    } else {
        static_assert(std::is_same_v<T, float>, "oneDNN products take bf16 or float operands");
        return dnnl_f32;
    }
}

/// Handles the products oneDNN is not given: none at all (m or n zero), or
/// no sum (k zero: C = beta C, as BLAS does). True when it handled one.
inline bool empty_product(std::size_t m, std::size_t n, std::size_t k, float beta, float* c,
                          std::size_t ldc) {
    if (m == 0 || n == 0) {
        return true;
    }
    if (k != 0) {
        return false;
    }
    for (std::size_t r = 0; r < m; ++r) {
        for (std::size_t col = 0; col < n; ++col) {
            c[r * ldc + col] = beta == 0.0f ? 0.0f : beta * c[r * ldc + col];
        }
    }
    return true;
}

/// The key of C (m x n) = alpha op(A) op(B) + beta C with these operands.
template <class Operand>
matmul_key key_of(transpose ta, transpose tb, std::size_t m, std::size_t n, std::size_t k,
                  std::size_t lda, std::size_t ldb, std::size_t ldc, float alpha, float beta) {
    return {ta == transpose::yes,
            tb == transpose::yes,
            data_type<Operand>(),
            m,
            n,
            k,
            lda,
            ldb,
            ldc,
            alpha,
            beta};
}

/// Whether oneDNN creates bf16 matmuls on this CPU: oneDNN 2.6 has them
/// from AVX-512 up (emulated there without AVX512-BF16), not on AVX2 CPUs,
/// where lightloop widens bf16 operands to floats instead. Probed once per
/// process.
inline bool bf16_matmul_available() {
    static const bool available = [] {
        try {
            const omp_single_thread hold;
            create_matmul(
              key_of<bf16>(transpose::no, transpose::no, 16, 16, 16, 16, 16, 16, 1.0f, 0.0f));
            return true;
        } catch (const error&) {
            return false;
        }
    }();
    return available;
}

/// Whether oneDNN runs bf16 matmuls on bf16 instructions here (AMX or
/// AVX512-BF16: its effective ISA, which ONEDNN_MAX_CPU_ISA can lower).
inline bool native_bf16_isa() {
    const dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    return isa == dnnl_cpu_isa_avx512_core_bf16 || isa == dnnl_cpu_isa_avx512_core_amx;
}

/// Whether bf16 products run as oneDNN bf16 matmuls: only where they run
/// on bf16 instructions. Elsewhere oneDNN 2.6 either has no bf16 matmul
/// (AVX2) or emulates one (AVX-512 without AVX512-BF16) several times slower
/// than its own fp32 matmul (README, "Mixed precision"), so lightloop widens
/// the bf16 operands to floats and runs fp32 products: the same values
/// (a product of two bf16 values is exact in fp32), at fp32 speed.
inline bool bf16_products_native() {
    static const bool native = native_bf16_isa() && bf16_matmul_available();
    return native;
}

/// Whether oneDNN's products here sum a C's rows differently by the height
/// of the product: its AVX2 (and older) matmuls (`gemm:jit`) do, so a weight
/// gradient cut into one row piece a thread had other bits on three threads
/// than on one; its AVX-512 ones (`brg:`) do not (tested on both).
inline bool sums_depend_on_height() {
    static const bool depend =
      (dnnl_get_effective_cpu_isa() & dnnl_cpu_isa_avx512_core) != dnnl_cpu_isa_avx512_core;
    return depend;
}

/// A bf16 operand (rows x cols, leading dimension ld) widened to floats in
/// `buffer` (which grows once to the largest operand seen), in pieces on
/// lightloop's team.
inline const float* widened(const bf16* values, std::size_t rows, std::size_t cols, std::size_t ld,
                            std::vector<float>& buffer) {
    const std::size_t count = rows == 0 ? 0 : (rows - 1) * ld + cols;
    if (buffer.size() < count) {
        buffer.resize(count);
    }
    float* const out = buffer.data();
    parallel_for_ranges(count, elementwise_grain, [&](std::size_t begin, std::size_t end) {
        for (std::size_t i = begin; i < end; ++i) {
            out[i] = to_float(values[i]);
        }
    });
    return out;
}

/// Runs product(a, b) on the operands as given, or, for bf16 operands where
/// bf16 products do not run natively (bf16_products_native), on their
/// widened copies (the same values; fp32 speed): product is called with
/// float operands then.
template <class Operand, class Product>
void with_supported_operands(transpose ta, transpose tb, std::size_t m, std::size_t n,
                             std::size_t k, const Operand* a, std::size_t lda, const Operand* b,
                             std::size_t ldb, Product&& product) {
    if constexpr (std::is_same_v<Operand, bf16>) {
        if (!bf16_products_native()) {
            thread_local std::vector<float> wide_a;
            thread_local std::vector<float> wide_b;
            const bool at = ta == transpose::yes;
            const bool bt = tb == transpose::yes;
            product(widened(a, at ? k : m, at ? m : k, lda, wide_a),
                    widened(b, bt ? n : k, bt ? k : n, ldb, wide_b));
            return;
        }
    }
    product(a, b);
}

} // namespace detail::onednn

/// The columns of one piece of a short, wide oneDNN product spread over the
/// team (onednn_gemm): four pieces of a 1024-wide layer; and the rows of one
/// piece of a tall one where oneDNN's sums depend on a product's height.
inline constexpr std::size_t onednn_column_piece = 256;
inline constexpr std::size_t onednn_row_piece = 256;

/// C (m x n, row-major, ldc; fp32) = alpha op(A) op(B) + beta C through
/// oneDNN, with A and B both bf16 (accumulated in fp32) or both float, spread
/// over lightloop's team like lightloop::gemm.
template <class Operand>
void onednn_gemm(transpose ta, transpose tb, std::size_t m, std::size_t n, std::size_t k,
                 float alpha, const Operand* a, std::size_t lda, const Operand* b, std::size_t ldb,
                 float beta, float* c, std::size_t ldc) {
    if (detail::onednn::empty_product(m, n, k, beta, c, ldc)) {
        return;
    }
    detail::onednn::with_supported_operands(
      ta, tb, m, n, k, a, lda, b, ldb, [&](const auto* a_operand, const auto* b_operand) {
          using Supported = std::remove_cv_t<std::remove_pointer_t<decltype(a_operand)>>;
          // Each piece reorders the B it reads for the kernel itself. A C
          // with at least as many rows as columns (a weight gradient) is
          // cut along its rows, one piece a thread: oneDNN's AVX-512 sums do
          // not depend on a product's height, so C has the same bits on any
          // thread count; its AVX2 ones do, and there the row pieces are
          // fixed by the shape alone, like the column pieces below. A short,
          // wide C (a forward product: the batch's rows, a layer's outputs
          // as columns) is cut along its columns, so that each piece
          // reorders only its part of B (row pieces each reordered all of
          // it, and the forward pass hardly gained from a second thread);
          // oneDNN's sums depend on a product's width (its blocking of k
          // follows n), so those pieces are fixed by the shape alone, the
          // same on one thread (tested).
          detail::gemm_on_team(
            ta, tb, m, n, k, a_operand, lda, b_operand, ldb, c, ldc, 1, onednn_column_piece,
            detail::onednn::sums_depend_on_height() ? onednn_row_piece : 0,
            [&](std::size_t rows, std::size_t cols, const Supported* ap, const Supported* bp,
                float* cp) {
                detail::onednn::run_matmul(detail::onednn::key_of<Supported>(
                                             ta, tb, rows, cols, k, lda, ldb, ldc, alpha, beta),
                                           ap, bp, cp);
            });
      });
}

/// As onednn_gemm, as one oneDNN call on the calling thread alone, for a
/// caller that spreads its own products over the team (conv2d's chunks).
template <class Operand>
void onednn_gemm_here(transpose ta, transpose tb, std::size_t m, std::size_t n, std::size_t k,
                      float alpha, const Operand* a, std::size_t lda, const Operand* b,
                      std::size_t ldb, float beta, float* c, std::size_t ldc) {
    if (detail::onednn::empty_product(m, n, k, beta, c, ldc)) {
        return;
    }
    detail::onednn::with_supported_operands(
      ta, tb, m, n, k, a, lda, b, ldb, [&](const auto* a_operand, const auto* b_operand) {
          using Supported = std::remove_cv_t<std::remove_pointer_t<decltype(a_operand)>>;
          detail::onednn::run_matmul(
            detail::onednn::key_of<Supported>(ta, tb, m, n, k, lda, ldb, ldc, alpha, beta),
            a_operand, b_operand, c);
      });
}

namespace detail::onednn {

/// The key of the forward product's piece C (m x n) = alpha A W^T + beta C
/// with W packed by `l`.
inline matmul_key packed_key(std::size_t m, std::size_t n, std::size_t lda, std::size_t ldc,
                             float alpha, float beta, const packed_bf16_layout& l) {
    matmul_key key =
      key_of<bf16>(transpose::no, transpose::no, m, n, l.cols, lda, 0, ldc, alpha, beta);
    key.k_block = l.k_block;
    key.n_block = l.n_block;
    key.k_stride = l.k_stride;
    key.n_stride = l.n_stride;
    return key;
}

/// The layout oneDNN's bf16 matmul picks for its B (k x n) when left to
/// choose (format "any"), at C m x n, if it is one packed_bf16_layout can
/// describe: blocks of 32 k (16 pairs) by a multiple of 16 n, blocks in
/// order along k, then along n.
inline std::optional<packed_bf16_layout> chosen_layout(std::size_t m, std::size_t k,
                                                       std::size_t n) {
    const dnnl_memory_desc_t a = matrix_desc(m, k, false, k, dnnl_bf16);
    const dnnl_memory_desc_t c = matrix_desc(m, n, false, n, dnnl_f32);
    dnnl_memory_desc_t b{};
    const dnnl_dims_t dims = {static_cast<dnnl_dim_t>(k), static_cast<dnnl_dim_t>(n)};
    check(dnnl_memory_desc_init_by_tag(&b, 2, dims, dnnl_bf16, dnnl_format_tag_any),
          "memory description");
    dnnl_matmul_desc_t desc{};
    check(dnnl_matmul_desc_init(&desc, &a, &b, nullptr, &c), "matmul setup");
    dnnl_primitive_desc_t pd = nullptr;
    check(dnnl_primitive_desc_create(&pd, &desc, nullptr, engine(), nullptr), "matmul creation");
    const std::unique_ptr<dnnl_primitive_desc, dnnl_status_t (*)(dnnl_primitive_desc_t)> pd_owner(
      pd, dnnl_primitive_desc_destroy);
    const dnnl_memory_desc_t* chosen = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    if (chosen == nullptr || chosen->format_kind != dnnl_blocked || chosen->offset0 != 0) {
        return std::nullopt;
    }
    const auto& blocking = chosen->format_desc.blocking;
    if (blocking.inner_nblks != 3 || blocking.inner_idxs[0] != 0 || blocking.inner_idxs[1] != 1 ||
        blocking.inner_idxs[2] != 0 || blocking.inner_blks[0] != 16 ||
        blocking.inner_blks[2] != 2 || blocking.inner_blks[1] <= 0 ||
        blocking.inner_blks[1] % 16 != 0) {
        return std::nullopt;
    }
    packed_bf16_layout l;
    l.rows = n;
    l.cols = k;
    l.k_block = 32;
    l.n_block = static_cast<std::size_t>(blocking.inner_blks[1]);
    const std::size_t k_padded = (k + 31) / 32 * 32;
    const std::size_t n_padded = (n + l.n_block - 1) / l.n_block * l.n_block;
    l.k_stride = 32 * l.n_block;
    l.n_stride = k_padded * l.n_block;
    l.size = k_padded * n_padded;
    if (blocking.strides[0] != static_cast<dnnl_dim_t>(l.k_stride) ||
        blocking.strides[1] != static_cast<dnnl_dim_t>(l.n_stride) ||
        chosen->padded_dims[0] != static_cast<dnnl_dim_t>(k_padded)) {
        return std::nullopt;
    }
    return l;
}

} // namespace detail::onednn

/// The layout in which oneDNN's bf16 kernel reads a layer's weights W (rows
/// outputs x cols inputs) as the B = W^T of its forward product x W^T, for
/// batches like `batch` (core/bf16_packing.hpp), or nothing: where bf16
/// products do not run on bf16 instructions (bf16_products_native), where
/// oneDNN picks a layout of another kind, or would run packed weights on no
/// fast kernel. Read from oneDNN at run time (it differs
/// between kernels: AVX512-BF16, AMX); the same for one-sample batches, or
/// nothing.
inline std::optional<packed_bf16_layout> onednn_packed_weights_layout(std::size_t batch,
                                                                      std::size_t rows,
                                                                      std::size_t cols) {
    if (batch == 0 || rows == 0 || cols == 0 || !detail::onednn::bf16_products_native()) {
        return std::nullopt;
    }
    const detail::onednn::omp_single_thread hold;
    std::optional<packed_bf16_layout> layout;
    for (const std::size_t m : {batch, std::size_t{1}}) {
        const auto chosen = detail::onednn::chosen_layout(m, cols, rows);
        if (!chosen || (layout && !(*layout == *chosen))) {
            return std::nullopt;
        }
        layout = chosen;
        try {
            detail::onednn::create_matmul(
              detail::onednn::packed_key(m, rows, cols, rows, 1.0f, 0.0f, *layout));
        } catch (const error&) {
            return std::nullopt;
        }
    }
    return layout;
}

/// C (m x l.rows, row-major; fp32) = alpha A W^T + beta C through oneDNN,
/// with A (m x l.cols, row-major) bf16 and W's bf16 copy `w` packed by `l`
/// (onednn_packed_weights_layout). Spread over lightloop's team in pieces of
/// C's rows, each reading all of W as it lies (no piece rearranges it), and
/// each as wide as C: oneDNN's sums depend on a product's width, not its
/// height, so C has the same bits on any thread count (tested). The packed
/// kernel takes A and C whole, not inside wider matrices.
inline void onednn_gemm_packed(std::size_t m, float alpha, const bf16* a,
                               const packed_bf16_layout& l, const bf16* w, float beta, float* c) {
    check_packed_layout(l, "onednn_gemm_packed");
    if (detail::onednn::empty_product(m, l.rows, l.cols, beta, c, l.rows)) {
        return;
    }
    const auto piece = [&](std::size_t first, std::size_t rows) {
        detail::onednn::run_matmul(
          detail::onednn::packed_key(rows, l.rows, l.cols, l.rows, alpha, beta, l),
          a + first * l.cols, w, c + first * l.rows);
    };
    const double macs =
      static_cast<double>(m) * static_cast<double>(l.rows) * static_cast<double>(l.cols);
    const std::size_t pieces =
      std::min({parallel_threads(),
                std::max<std::size_t>(1, static_cast<std::size_t>(macs / detail::gemm_piece_macs)),
                (m + 15) / 16});
    if (pieces <= 1) {
        piece(0, m);
        return;
    }
    const std::size_t step = ((m + pieces - 1) / pieces + 15) / 16 * 16;
    shared_team().run(pieces, [&](std::size_t index, std::size_t) {
        const std::size_t first = std::min(m, index * step);
        const std::size_t rows = std::min(m, first + step) - first;
        if (rows > 0) {
            piece(first, rows);
        }
    });
}

/// The instruction set oneDNN dispatches to on this CPU: "AMX", "AVX512-BF16",
/// "AVX-512", "AVX2", ... (its effective ISA, which ONEDNN_MAX_CPU_ISA can
/// lower).
inline std::string onednn_isa() {
    switch (dnnl_get_effective_cpu_isa()) {
        case dnnl_cpu_isa_avx512_core_amx:
            return "AMX";
        case dnnl_cpu_isa_avx512_core_bf16:
            return "AVX512-BF16";
        case dnnl_cpu_isa_avx512_core_vnni:
            return "AVX-512 (VNNI, no bf16)";
        case dnnl_cpu_isa_avx512_core:
            return "AVX-512 (no bf16)";
        case dnnl_cpu_isa_avx2_vnni:
        case dnnl_cpu_isa_avx2:
            return "AVX2 (no bf16)";
        default:
            return "pre-AVX2 (no bf16)";
    }
}

/// Whether oneDNN runs bf16 products on AMX here (its effective ISA: not
/// where ONEDNN_MAX_CPU_ISA lowers it, nor where the kernel does not grant
/// the AMX tile state).
inline bool onednn_runs_amx() {
    return dnnl_get_effective_cpu_isa() == dnnl_cpu_isa_avx512_core_amx;
}

/// Whether oneDNN's effective ISA has bf16 instructions (AMX or
/// AVX512-BF16); without them bf16 matmuls run widened to fp32 products.
inline bool onednn_native_bf16() {
    return detail::onednn::native_bf16_isa();
}

} // namespace lightloop

#endif // LIGHTLOOP_WITH_ONEDNN
