#pragma once
// A counting replacement of the global operator new, for the executables that
// hold training steps to no allocation (tests/perf/test_allocations.cpp, and
// tests/distributed/test_allocations.cpp under mpiexec). Include it in one
// translation unit of an executable built apart from the other tests, and not
// under a sanitizer (which replaces operator new too). It counts operator new
// only: C libraries' malloc (MPI's) is not seen.

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>

#include "lightloop/lightloop.hpp"

namespace lightloop::testing {

/// Allocations made through operator new outside oneDNN.
inline std::atomic<std::size_t> allocations{0};
/// oneDNN 2.6's primitive execute allocates a few small blocks inside the
/// library on every call (its argument map): counted apart, so that the
/// tests hold lightloop's own code to zero and oneDNN's to a constant.
inline std::atomic<std::size_t> onednn_allocations{0};

inline bool inside_onednn() noexcept {
#if defined(LIGHTLOOP_WITH_ONEDNN)
    return lightloop::detail::onednn::inside_call();
#else
    return false;
#endif
}

} // namespace lightloop::testing

void* operator new(std::size_t size) {
    using namespace lightloop::testing;
    (inside_onednn() ? onednn_allocations : allocations).fetch_add(1, std::memory_order_relaxed);
    if (void* p = std::malloc(size == 0 ? 1 : size)) {
        return p;
    }
    throw std::bad_alloc();
}
void* operator new[](std::size_t size) {
    return ::operator new(size);
}
void operator delete(void* p) noexcept {
    std::free(p);
}
void operator delete[](void* p) noexcept {
    std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
    std::free(p);
}
void operator delete[](void* p, std::size_t) noexcept {
    std::free(p);
}
