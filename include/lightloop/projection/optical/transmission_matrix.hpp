#pragma once
// The scattering medium: a fixed complex Gaussian transmission matrix R
// (out x in) with i.i.d. CN(0, σ²) entries, i.e. real and imaginary parts
// i.i.d. N(0, σ²/2). The field on the camera for a DMD frame x is E = R x,
// computed as two real GEMMs (Re R x, Im R x). R is known only by its seed and
// regenerated from it.

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "lightloop/core/blas.hpp"
#include "lightloop/core/concepts.hpp"
#include "lightloop/core/random.hpp"
#include "lightloop/core/seeded_matrix.hpp"
#include "lightloop/core/tensor.hpp"

namespace lightloop {

class transmission_matrix {
public:
    transmission_matrix() = default;
    transmission_matrix(std::size_t out, std::size_t in, std::uint64_t seed, double variance)
      : variance_(variance)
      , seed_(seed)
      , real_(out, in, derive_seed(seed, 0), std::sqrt(variance / 2.0))
      , imag_(out, in, derive_seed(seed, 1), std::sqrt(variance / 2.0)) {}

    std::size_t outputs() const noexcept { return real_.rows(); }
    std::size_t inputs() const noexcept { return real_.cols(); }
    /// σ², the variance of each complex entry (E|R_jk|^2).
    double variance() const noexcept { return variance_; }
    std::uint64_t seed() const noexcept { return seed_; }

    template <scalar T>
    const matrix<T>& real() {
        return real_.template get<T>();
    }
    template <scalar T>
    const matrix<T>& imag() {
        return imag_.template get<T>();
    }

    /// E = R x for `rows` frames stored row-major at `frames` (rows x in);
    /// writes Re E and Im E, each (rows x out) with row stride out.
    template <scalar T>
    void field(const T* frames, std::size_t rows, T* re, T* im) {
        const std::size_t in = inputs();
        const std::size_t out = outputs();
        gemm(transpose::no, transpose::yes, rows, out, in, T(1), frames, in, real<T>().data(), in,
             T(0), re, out);
        gemm(transpose::no, transpose::yes, rows, out, in, T(1), frames, in, imag<T>().data(), in,
             T(0), im, out);
    }

private:
    double variance_ = 1.0;
    std::uint64_t seed_ = 0;
    seeded_matrix<gaussian_entries> real_;
    seeded_matrix<gaussian_entries> imag_;
};

} // namespace lightloop
