#pragma once
// The scattering medium: a fixed complex Gaussian transmission matrix R
// (out x in) with i.i.d. CN(0, σ²) entries, i.e. real and imaginary parts
// i.i.d. N(0, σ²/2). The field on the camera for a DMD frame x is E = R x,
// computed as two real GEMMs (Re R x, Im R x). R is known only by its seed and
// regenerated from it.
//
// A bf16 medium rounds R's entries to bf16 (core/bf16.hpp). The frames are
// binary, exact in bf16, so nothing else is rounded: the field is the exact
// sum of bf16 entries, accumulated in fp32 (wide inputs run it as bf16 GEMMs
// on the default bf16 backend, the same values). It halves what a stored
// medium would take and runs wide inputs on the CPU's bf16 units.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "lightloop/core/bf16.hpp"
#include "lightloop/core/blas.hpp"
#include "lightloop/core/concepts.hpp"
#include "lightloop/core/precision.hpp"
#include "lightloop/core/random.hpp"
#include "lightloop/core/seeded_matrix.hpp"
#include "lightloop/core/simd.hpp"
#include "lightloop/core/tensor.hpp"

namespace lightloop {

class transmission_matrix {
public:
    transmission_matrix() = default;
    /// `bf16`: round R's entries to bf16 (see the file comment).
    transmission_matrix(std::size_t out, std::size_t in, std::uint64_t seed, double variance,
                        bool bf16 = false)
      : variance_(variance)
      , seed_(seed)
      , bf16_(bf16)
      , real_(out, in, derive_seed(seed, 0), std::sqrt(variance / 2.0))
      , imag_(out, in, derive_seed(seed, 1), std::sqrt(variance / 2.0)) {}

    /// Whether R's entries are rounded to bf16.
    bool bf16() const noexcept { return bf16_; }

    std::size_t outputs() const noexcept { return real_.rows(); }
    std::size_t inputs() const noexcept { return real_.cols(); }
    /// σ², the variance of each complex entry (E|R_jk|^2).
    double variance() const noexcept { return variance_; }
    std::uint64_t seed() const noexcept { return seed_; }

    template <scalar T>
    const matrix<T>& real() {
        return rounded<T>(real_.template get<T>(), 0);
    }
    template <scalar T>
    const matrix<T>& imag() {
        return rounded<T>(imag_.template get<T>(), 1);
    }

    /// Draws everything field<T>() reads, so that concurrent calls only read.
    template <scalar T>
    void prepare() {
        real<T>();
        imag<T>();
        if (inputs() <= direct_max_inputs) {
            transposed<T>();
        } else if constexpr (std::is_same_v<T, float>) {
            if (bf16_) {
                prepare_operands();
            }
        }
    }

    /// Up to this many inputs, field() sums R's columns directly (the DMD's
    /// frames are sparse and binary, and a GEMM with K this small runs far
    /// below its peak); above it, two real GEMMs.
    static constexpr std::size_t direct_max_inputs = 64;

    /// E = R x for `rows` frames stored row-major at `frames` (rows x in);
    /// writes Re E and Im E, each (rows x out) with row stride out.
    template <scalar T>
    void field(const T* frames, std::size_t rows, T* re, T* im) {
        const std::size_t in = inputs();
        const std::size_t out = outputs();
        if (in > direct_max_inputs) {
            if constexpr (std::is_same_v<T, float>) {
                if (bf16_) {
                    bf16_field(frames, rows, re, im);
                    return;
                }
            }
            gemm(transpose::no, transpose::yes, rows, out, in, T(1), frames, in, real<T>().data(),
                 in, T(0), re, out);
            gemm(transpose::no, transpose::yes, rows, out, in, T(1), frames, in, imag<T>().data(),
                 in, T(0), im, out);
            return;
        }
        // Row k of `columns` holds column k of Re R then column k of Im R.
        // Each output row is written once: the sum over the frame's non-zero
        // inputs (a few, for sparse binary frames), a batch of pixels at a time.
        const matrix<T>& columns = transposed<T>();
        std::array<const T*, direct_max_inputs> used;
        std::array<T, direct_max_inputs> weight;
        for (std::size_t r = 0; r < rows; ++r) {
            std::size_t count = 0;
            for (std::size_t k = 0; k < in; ++k) {
                const T v = frames[r * in + k];
                if (v != T(0)) {
                    used[count] = columns.data() + k * 2 * out;
                    weight[count] = v;
                    ++count;
                }
            }
            T* re_row = re + r * out;
            T* im_row = im + r * out;
            simd::for_each_lane<T>(out, [&](std::size_t j, auto lane) {
                using V = decltype(lane);
                V sum_re(T(0));
                V sum_im(T(0));
                for (std::size_t c = 0; c < count; ++c) {
                    const V w(weight[c]);
                    sum_re += w * simd::load<V>(used[c] + j);
                    sum_im += w * simd::load<V>(used[c] + out + j);
                }
                simd::store(re_row + j, sum_re);
                simd::store(im_row + j, sum_im);
            });
        }
    }

private:
    using operand = mixed_bf16::operand_type;

    /// m with its entries rounded to bf16 for a bf16 medium, once per type
    /// and part (`part` 0 real, 1 imaginary).
    template <scalar T>
    const matrix<T>& rounded(matrix<T>& m, int part) {
        bool& done = rounded_[std::is_same_v<T, float> ? 0 : 1][part];
        if (bf16_ && !done) {
            for (auto& v : m) {
                v = static_cast<T>(round_to_bf16(static_cast<float>(v)));
            }
            done = true;
        }
        return m;
    }

    /// R's entries as bf16 GEMM operands, made once.
    void prepare_operands() {
        if (real_operand_.size() == 0) {
            real_operand_.resize({outputs(), inputs()});
            imag_operand_.resize({outputs(), inputs()});
            convert_to_bf16(real<float>().data(), real_operand_.data(), real_operand_.size());
            convert_to_bf16(imag<float>().data(), imag_operand_.data(), imag_operand_.size());
        }
    }

    /// The wide field as two bf16 GEMMs (frames and R exact in bf16).
    void bf16_field(const float* frames, std::size_t rows, float* re, float* im) {
        const std::size_t in = inputs();
        const std::size_t out = outputs();
        prepare_operands();
        // Per thread: the device runs its blocks on the team.
        thread_local std::vector<operand> binary;
        if (binary.size() < rows * in) {
            binary.resize(rows * in);
        }
        convert_to_bf16(frames, binary.data(), rows * in);
        mixed_bf16::backend::product(transpose::no, transpose::yes, rows, out, in, 1.0f,
                                     binary.data(), in, real_operand_.data(), in, 0.0f, re, out);
        mixed_bf16::backend::product(transpose::no, transpose::yes, rows, out, in, 1.0f,
                                     binary.data(), in, imag_operand_.data(), in, 0.0f, im, out);
    }

    double variance_ = 1.0;
    std::uint64_t seed_ = 0;
    bool bf16_ = false;
    bool rounded_[2][2] = {{false, false}, {false, false}};
    matrix<operand> real_operand_;
    matrix<operand> imag_operand_;
    seeded_matrix<gaussian_entries> real_;
    seeded_matrix<gaussian_entries> imag_;
    detail::per_scalar<matrix> transposed_;

    /// (in x 2 out): row k is column k of Re R, then column k of Im R.
    template <class T>
    const matrix<T>& transposed() {
        matrix<T>& t = transposed_.template get<T>();
        if (t.size() == 0) {
            const std::size_t in = inputs();
            const std::size_t out = outputs();
            t.resize({in, 2 * out});
            const matrix<T>& a = real<T>();
            const matrix<T>& b = imag<T>();
            for (std::size_t j = 0; j < out; ++j) {
                for (std::size_t k = 0; k < in; ++k) {
                    t(k, j) = a(j, k);
                    t(k, out + j) = b(j, k);
                }
            }
        }
        return t;
    }
};

} // namespace lightloop
