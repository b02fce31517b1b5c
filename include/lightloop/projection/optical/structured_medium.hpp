#pragma once
// A structured scattering medium for the OPU's real scale (10^6 x 10^6): an
// O(n log n) random transform per frame instead of an O(n^2) matrix.
//
//   S = σ √n P_out (H D3)(H D2)(H D1) P_in,   U = (H D3)(H D2)(H D1)
//
// with n the power of two at or above max(in, out), P_in padding a frame
// with zeros to n, H the normalised Walsh-Hadamard transform (H^2 = I),
// D_i diagonal matrices of i.i.d. uniform phases e^{iθ} (from the
// counter-based generator, keyed by the seed) and P_out keeping the first
// `out` of the n outputs. This is the complex form of the structured
// orthogonal random features of Yu et al. (NeurIPS 2016, "Orthogonal random
// features": three HD blocks) after Fastfood (Le, Sarlós & Smola, ICML
// 2013). Each entry of U is a sum of n^2 signed phase products; E|S_jk|^2 =
// σ², as for the i.i.d. medium, and a projection of a fixed frame is close to
// complex Gaussian (tested against the i.i.d. medium: moments, Gaussianity,
// distances).
//
// How it differs from the i.i.d. medium and from a real one:
//   - U is unitary, so S's rows (with out = n, its columns too) are exactly
//     orthogonal: ||S x||^2 = σ² n ||x||^2 for out = n, where an i.i.d.
//     matrix gives a χ² fluctuation around it. A real lossless medium is
//     unitary as well, but the camera sees a small block of a huge unitary
//     matrix (speckle grains and micromirrors are far fewer than the
//     medium's modes), whose entries are close to independent; here the
//     block is most of U.
//   - Its entries are not independent: they are functions of 3n phases, not
//     n^2 draws. Hadamard structure ties entries far apart in the matrix,
//     unlike a medium's memory effect, which correlates neighbouring angles.
//   - Sizes are padded to a power of two: in, out < n waste the rest.
// It costs 3 n log2 n complex additions per frame and O(n) memory.

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "lightloop/core/bf16.hpp"
#include "lightloop/core/concepts.hpp"
#include "lightloop/core/counter_random.hpp"
#include "lightloop/core/error.hpp"
#include "lightloop/core/random.hpp"
#include "lightloop/core/seeded_matrix.hpp"
#include "lightloop/core/simd.hpp"
#include "lightloop/projection/optical/medium.hpp"

namespace lightloop {

namespace detail {

/// std::vector with one template parameter, as per_scalar takes (Clang 14
/// does not match std::vector's defaulted allocator parameter there).
template <class T>
using phase_vector = std::vector<T>;

/// In-place unnormalised Walsh-Hadamard transform of a (length n, a power of
/// two): the butterflies (a, b) -> (a + b, a - b) for spans 1, 2, 4, ...
/// Spans within a block of `block` values run block by block (the block stays
/// in cache), the wider ones as whole-array passes.
template <class T>
void walsh_hadamard(T* a, std::size_t n) noexcept {
    constexpr std::size_t block = 4096;
    const auto butterflies = [](T* x, std::size_t length, std::size_t first_span,
                                std::size_t last_span) {
        for (std::size_t h = first_span; h <= last_span && h < length; h *= 2) {
            for (std::size_t start = 0; start < length; start += 2 * h) {
                T* lo = x + start;
                T* hi = x + start + h;
                if (h >= xsimd::batch<T>::size) {
                    simd::for_each_lane<T>(h, [&](std::size_t i, auto lane) {
                        using V = decltype(lane);
                        const V u = simd::load<V>(lo + i);
                        const V v = simd::load<V>(hi + i);
                        simd::store(lo + i, u + v);
                        simd::store(hi + i, u - v);
                    });
                } else {
                    for (std::size_t i = 0; i < h; ++i) {
                        const T u = lo[i];
                        const T v = hi[i];
                        lo[i] = u + v;
                        hi[i] = u - v;
                    }
                }
            }
        }
    };
    const std::size_t inner = std::min(block, n);
    for (std::size_t start = 0; start < n; start += inner) {
        butterflies(a + start, inner, 1, inner / 2);
    }
    if (n > inner) {
        butterflies(a, n, inner, n / 2);
    }
}

} // namespace detail

class structured_medium : public medium_parameters {
public:
    static constexpr const char* name = "structured";
    static constexpr bool field_per_batch = false;
    /// HD blocks in the chain.
    static constexpr std::size_t blocks = 3;

    structured_medium() = default;
    /// `bf16` rounds the phases' cosines and sines to bf16 (the transform is
    /// then exact arithmetic on them, in the network's type).
    structured_medium(std::size_t out, std::size_t in, std::uint64_t seed, double variance,
                      bool bf16 = false)
      : medium_parameters(out, in, seed, variance, bf16)
      , size_(std::bit_ceil(std::max<std::size_t>({in, out, 1}))) {
        if (size_ > (std::size_t{1} << 40)) {
            throw config_error("lightloop::structured_medium: " + std::to_string(in) + " x " +
                               std::to_string(out) + " is beyond 2^40");
        }
    }

    /// n: the transform's length, the power of two at or above in and out.
    std::size_t size() const noexcept { return size_; }

    /// Draws the phases in type T.
    template <scalar T>
    void prepare() {
        auto& p = phases_.template get<T>();
        if (p.empty() && size_ > 0) {
            p.resize(2 * blocks * size_);
            std::vector<float> re(size_);
            std::vector<float> im(size_);
            for (std::size_t b = 0; b < blocks; ++b) {
                // Row b of a CN(0, 1) matrix: its phases are uniform.
                complex_normal_row(seed_, b, 0, size_, 1.0f, re.data(), im.data());
                for (std::size_t k = 0; k < size_; ++k) {
                    const double radius =
                      std::hypot(static_cast<double>(re[k]), static_cast<double>(im[k]));
                    double c = radius > 0.0 ? re[k] / radius : 1.0;
                    double s = radius > 0.0 ? im[k] / radius : 0.0;
                    if (bf16_) {
                        c = round_to_bf16(static_cast<float>(c));
                        s = round_to_bf16(static_cast<float>(s));
                    }
                    p[(2 * b) * size_ + k] = static_cast<T>(c);
                    p[(2 * b + 1) * size_ + k] = static_cast<T>(s);
                }
            }
        }
    }

    /// E = S x for `rows` frames stored row-major at `frames` (rows x in);
    /// writes Re E and Im E, each (rows x out) with row stride out. Call
    /// prepare<T>() first when calling from several threads.
    template <scalar T>
    void field(const T* frames, std::size_t rows, T* re, T* im) {
        prepare<T>();
        const std::vector<T>& phases = phases_.template get<T>();
        const std::size_t n = size_;
        // σ √n for S, 1/√n for each of the three normalised H.
        const auto scale = static_cast<T>(std::sqrt(variance_) / static_cast<double>(n));
        thread_local std::vector<T> work;
        if (work.size() < 2 * n) {
            work.resize(2 * n);
        }
        T* a = work.data();
        T* b = work.data() + n;
        for (std::size_t r = 0; r < rows; ++r) {
            // D1 x: a real frame times the phases.
            const T* x = frames + r * in_;
            const T* c1 = phases.data();
            const T* s1 = phases.data() + n;
            for (std::size_t k = 0; k < in_; ++k) {
                a[k] = c1[k] * x[k];
                b[k] = s1[k] * x[k];
            }
            std::fill(a + in_, a + n, T(0));
            std::fill(b + in_, b + n, T(0));
            detail::walsh_hadamard(a, n);
            detail::walsh_hadamard(b, n);
            for (std::size_t block = 1; block < blocks; ++block) {
                rotate(a, b, phases.data() + 2 * block * n, phases.data() + (2 * block + 1) * n, n);
                detail::walsh_hadamard(a, n);
                detail::walsh_hadamard(b, n);
            }
            T* out_re = re + r * out_;
            T* out_im = im + r * out_;
            const std::size_t out = out_;
            simd::for_each_lane<T>(out, [&](std::size_t j, auto lane) {
                using V = decltype(lane);
                simd::store(out_re + j, simd::load<V>(a + j) * V(scale));
                simd::store(out_im + j, simd::load<V>(b + j) * V(scale));
            });
        }
    }

private:
    /// (a + i b) <- (c + i s)(a + i b), element-wise.
    template <class T>
    static void rotate(T* a, T* b, const T* c, const T* s, std::size_t n) noexcept {
        simd::for_each_lane<T>(n, [&](std::size_t k, auto lane) {
            using V = decltype(lane);
            const V x = simd::load<V>(a + k);
            const V y = simd::load<V>(b + k);
            const V cos = simd::load<V>(c + k);
            const V sin = simd::load<V>(s + k);
            simd::store(a + k, cos * x - sin * y);
            simd::store(b + k, sin * x + cos * y);
        });
    }

    std::size_t size_ = 0;
    /// Per block b: cos θ (n), then sin θ (n).
    detail::per_scalar<detail::phase_vector> phases_;
};

static_assert(scattering_medium<structured_medium>);

} // namespace lightloop
