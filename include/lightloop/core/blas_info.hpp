#pragma once
// Which BLAS is running, and the OpenBLAS kernel trap.
//
// OpenBLAS picks its kernels when it is loaded, from the CPU id. Under some
// hypervisors it misreads the CPU and falls back to a generic kernel
// (openblas_get_corename() says "Prescott"), several times slower than the
// AVX2 or AVX-512 kernel the CPU supports. An AVX2 kernel on an AVX-512 CPU
// (an OpenBLAS older than the CPU, or OPENBLAS_CORETYPE=Haswell in the
// environment) is below it too: its SkylakeX kernel is faster there
// (measured in the README, "Threads").
// OPENBLAS_CORETYPE fixes the choice, but only if it is set before the library
// loads, so a program has to re-execute itself to apply it: ensure_fast_blas()
// does that, once.

#include <unistd.h>

#include <cblas.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

namespace lightloop {

struct cpu_features {
    bool avx2 = false;
    bool avx512 = false;      ///< AVX-512 F, BW and VL, what OpenBLAS's SkylakeX kernel needs
    bool avx512_bf16 = false; ///< AVX512-BF16: bf16 dot products in AVX-512 registers
    bool amx_bf16 = false;    ///< AMX tiles with bf16 (Sapphire Rapids and later)
};

inline cpu_features detect_cpu_features() noexcept {
    cpu_features f;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    f.avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    f.avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl");
    unsigned eax = 0;
    unsigned ebx = 0;
    unsigned ecx = 0;
    unsigned edx = 0;
    // CPUID leaf 7: sub-leaf 1 EAX bit 5 is AVX512_BF16; sub-leaf 0 EDX
    // bits 22 and 24 are AMX-BF16 and AMX-TILE.
    if (__get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) != 0) {
        f.avx512_bf16 = f.avx512 && (eax & (1U << 5U)) != 0;
    }
    if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) != 0) {
        f.amx_bf16 = (edx & (1U << 22U)) != 0 && (edx & (1U << 24U)) != 0;
    }
#endif
    return f;
}

/// "AMX-BF16 yes, AVX512-BF16 yes": the CPU's bf16 matrix features.
inline std::string matrix_features_text(cpu_features f) {
    return std::string("AMX-BF16 ") + (f.amx_bf16 ? "yes" : "no") + ", AVX512-BF16 " +
           (f.avx512_bf16 ? "yes" : "no");
}

/// Kernels OpenBLAS uses when it does not recognise the CPU: pre-AVX2 cores.
inline bool is_generic_kernel(std::string_view core) noexcept {
    constexpr std::array<std::string_view, 9> generic = {"Prescott",  "Katmai",     "Coppermine",
                                                         "Northwood", "Banias",     "Core2",
                                                         "Penryn",    "Dunnington", "Atom"};
    for (const auto name : generic) {
        if (core == name) {
            return true;
        }
    }
    return false;
}

/// OpenBLAS's AVX-512 kernels. Their GEMM tiles are at most 16 wide along
/// both of C's dimensions and each element's k sum has one order whatever the
/// tile, so a product cut into pieces on multiples of 16 has one thread's bits
/// (core/blas.hpp). Its AVX2 kernels do not keep that: the "Haswell" SGEMM
/// sums some columns next to a cut in another order.
inline bool is_avx512_kernel(std::string_view core) noexcept {
    return core == "SkylakeX" || core == "Cooperlake" || core == "SapphireRapids";
}

/// The OPENBLAS_CORETYPE to ask for on a CPU with these features ("" if none).
inline std::string recommended_coretype(cpu_features f) {
    if (f.avx512) {
        return "SkylakeX";
    }
    if (f.avx2) {
        return "Haswell";
    }
    return "";
}

struct blas_report {
    std::string config; ///< openblas_get_config()
    std::string core;   ///< openblas_get_corename()
    int threads = 1;    ///< openblas_get_num_threads()
    cpu_features cpu;
    bool generic = false; ///< a generic kernel on a CPU that has better
    /// A kernel below what the CPU runs: generic on an AVX2 or AVX-512 CPU, or
    /// an AVX2 one on an AVX-512 CPU.
    bool below_cpu = false;
    /// Whether a GEMM cut on multiples of 16 has one thread's bits (an
    /// AVX-512 kernel: is_avx512_kernel).
    bool thread_invariant_bits = false;
    std::string recommended;
};

/// Whether OpenBLAS's kernel `core` is below what a CPU with `cpu` runs.
inline bool kernel_below_cpu(std::string_view core, cpu_features cpu) noexcept {
    if (is_generic_kernel(core)) {
        return cpu.avx2 || cpu.avx512;
    }
    return cpu.avx512 && !is_avx512_kernel(core);
}

inline blas_report blas_info() {
    blas_report r;
    const char* config = openblas_get_config();
    const char* core = openblas_get_corename();
    r.config = config != nullptr ? config : "unknown";
    r.core = core != nullptr ? core : "unknown";
    r.threads = openblas_get_num_threads();
    r.cpu = detect_cpu_features();
    r.recommended = recommended_coretype(r.cpu);
    r.generic = is_generic_kernel(r.core) && !r.recommended.empty();
    r.below_cpu = kernel_below_cpu(r.core, r.cpu);
    r.thread_invariant_bits = is_avx512_kernel(r.core);
    return r;
}

/// A warning to print when OpenBLAS runs a kernel below the CPU (a generic
/// one on an AVX2 or AVX-512 CPU, an AVX2 one on an AVX-512 CPU); nothing
/// otherwise.
inline std::optional<std::string> blas_warning(const blas_report& r) {
    if (!r.below_cpu) {
        return std::nullopt;
    }
    return "lightloop: OpenBLAS chose its " + std::string(r.generic ? "generic " : "") + "'" +
           r.core + "' kernel on a CPU with " + (r.cpu.avx512 ? "AVX-512" : "AVX2") +
           "; set OPENBLAS_CORETYPE=" + r.recommended + " before the program starts (" +
           (r.generic ? "several times faster" : "faster") + " GEMMs)";
}

/// Whether a program should re-execute itself with OPENBLAS_CORETYPE set:
/// the kernel is below the CPU, the user set no core type, has not
/// opted out (LIGHTLOOP_NO_REEXEC) and this is not already the re-executed run.
inline bool should_reexec(const blas_report& r, bool coretype_set, bool opted_out,
                          bool already_reexecuted) noexcept {
    return r.below_cpu && !coretype_set && !opted_out && !already_reexecuted;
}

/// Call first in main(). If OpenBLAS chose a kernel below the CPU (a generic
/// one on an AVX2/AVX-512 CPU, an AVX2 one on an AVX-512 CPU), re-executes
/// the program once with OPENBLAS_CORETYPE set to the matching kernel. Opt
/// out with LIGHTLOOP_NO_REEXEC=1. If it cannot re-execute, or the user's
/// OPENBLAS_CORETYPE still gives a kernel below the CPU, prints the warning
/// to stderr and carries on.
inline void ensure_fast_blas(char** argv) {
    const blas_report r = blas_info();
    const bool coretype_set = std::getenv("OPENBLAS_CORETYPE") != nullptr;
    const char* opt_out = std::getenv("LIGHTLOOP_NO_REEXEC");
    const bool opted_out = opt_out != nullptr && std::strcmp(opt_out, "0") != 0;
    const bool reexecuted = std::getenv("LIGHTLOOP_REEXECUTED") != nullptr;
    if (should_reexec(r, coretype_set, opted_out, reexecuted)) {
        ::setenv("OPENBLAS_CORETYPE", r.recommended.c_str(), 1);
        ::setenv("LIGHTLOOP_REEXECUTED", "1", 1);
        ::execv("/proc/self/exe", argv);
        // execv only returns on failure: fall through to the warning.
    }
    if (const auto warning = blas_warning(r)) {
        std::fprintf(stderr, "%s\n", warning->c_str());
    }
}

} // namespace lightloop
