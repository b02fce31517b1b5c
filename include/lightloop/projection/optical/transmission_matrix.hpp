#pragma once
// The stored scattering medium: a fixed complex Gaussian transmission matrix
// R (out x in) with i.i.d. CN(0, σ²) entries, i.e. real and imaginary parts
// i.i.d. N(0, σ²/2). The field on the camera for a DMD frame x is E = R x,
// computed as two real GEMMs (Re R x, Im R x). R is known only by its seed:
// entry (j, k) is medium_entries' (optical/medium.hpp), a pure
// function of (seed, j, k), so this matrix is a cache of the function that
// matrix_free_medium evaluates inside its products (bitwise the same entries,
// tested). A double network sees the same entries, widened.
//
// A bf16 medium rounds R's entries to bf16 (core/bf16.hpp). The frames are
// binary, exact in bf16, so nothing else is rounded: the field is the exact
// sum of bf16 entries, accumulated in fp32 (wide inputs run it as bf16 GEMMs
// on the default bf16 backend, the same values). It halves what a stored
// medium would take and runs wide inputs on the CPU's bf16 units.
//
// A drifting bf16 medium keeps R itself unrounded, in fp32 (memory beside
// its rounded copy), and rounds the copies its products read from it after
// every drift step. Rounding R in place instead loses the steps smaller than
// half a bf16 ulp: the contraction sqrt(keep) R rounds back to R, small
// innovations vanish, and the medium neither decorrelates as the model says
// nor keeps its variance.

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <type_traits>
#include <vector>

#include "lightloop/core/bf16.hpp"
#include "lightloop/core/blas.hpp"
#include "lightloop/core/concepts.hpp"
#include "lightloop/core/error.hpp"
#include "lightloop/core/precision.hpp"
#include "lightloop/core/random.hpp"
#include "lightloop/core/seeded_matrix.hpp"
#include "lightloop/core/simd.hpp"
#include "lightloop/core/tensor.hpp"
#include "lightloop/io/state.hpp"
#include "lightloop/projection/optical/medium.hpp"

namespace lightloop {

namespace detail {

/// The machine's physical memory in bytes, 0 when unknown.
inline double physical_memory_bytes() noexcept {
    const long pages = sysconf(_SC_PHYS_PAGES);
    const long page = sysconf(_SC_PAGE_SIZE);
    return pages > 0 && page > 0 ? static_cast<double>(pages) * static_cast<double>(page) : 0.0;
}

} // namespace detail

class transmission_matrix : public medium_parameters {
public:
    static constexpr const char* name = "stored";
    /// field() costs the same per frame however the frames are grouped.
    static constexpr bool field_per_batch = false;

    transmission_matrix() = default;
    /// `bf16`: round R's entries to bf16 (see the file comment).
    transmission_matrix(std::size_t out, std::size_t in, std::uint64_t seed, double variance,
                        bool bf16 = false)
      : medium_parameters(out, in, seed, variance, bf16) {}

    /// This medium's row 0 is row `first` of the seed's R (a slice of
    /// camera pixels; rows are independent draws): rows [first, first +
    /// outputs()) are drawn, no other. Forgets what was drawn or drifted so
    /// far.
    void slice_rows(std::size_t first) {
        *this = transmission_matrix(out_, in_, seed_, variance_, bf16_);
        first_row_ = first;
    }

    /// Bytes of R held now, in every form drawn so far (floats, doubles, the
    /// transposed and bf16 copies): 0 until a product or an accessor needs R.
    std::size_t stored_bytes() const noexcept {
        return (real_.f.size() + imag_.f.size() + transposed_.f.size() + state_re_.size() +
                state_im_.size()) *
                 sizeof(float) +
               (real_.d.size() + imag_.d.size() + transposed_.d.size()) * sizeof(double) +
               (real_operand_.size() + imag_operand_.size()) * sizeof(operand);
    }

    /// Re R and Im R (out x in) in type T, drawn on first use.
    template <scalar T>
    const matrix<T>& real() {
        draw<T>();
        return real_.template get<T>();
    }
    template <scalar T>
    const matrix<T>& imag() {
        draw<T>();
        return imag_.template get<T>();
    }

    /// The medium drifts: R <- sqrt(keep) R + sqrt(1 - keep) N, with N a fresh
    /// CN(0, σ²) matrix drawn from (seed, step). After F frames of the
    /// per-frame model R(t+1) = √(1-ε) R(t) + √ε N(t), keep = (1-ε)^F gives
    /// exactly the same distribution (the F innovations sum to one Gaussian
    /// of variance 1 - keep), and R keeps its variance σ². Every copy drawn
    /// so far drifts, and the caches field() reads are refreshed in place.
    void drift(double keep, std::uint64_t step) {
        if (real_.f.size() == 0 && real_.d.size() == 0) {
            draw<float>(); // the seed's R, which then drifts
        }
        if (bf16_) {
            unrounded_state();
        }
        drifted_ = true;
        const auto a = std::sqrt(keep);
        const auto b = std::sqrt(1.0 - keep);
        const std::uint64_t key = derive_seed(seed_, step + 1);
        std::vector<float> n_re(in_);
        std::vector<float> n_im(in_);
        for (std::size_t j = 0; j < out_; ++j) {
            medium_entries<float>(key, variance_, false, first_row_ + j, 0, in_, n_re.data(),
                                  n_im.data());
            if (bf16_) {
                drift_state_row(j, a, b, n_re, n_im);
            } else {
                drift_row<float>(j, a, b, n_re, n_im);
                drift_row<double>(j, a, b, n_re, n_im);
            }
        }
        refresh_caches<float>();
        refresh_caches<double>();
    }

    /// The matrices as they stand once drifted (before, R is the seed's and
    /// nothing is saved): each type's copy, empty where none was drawn; a
    /// bf16 medium's float copy is its unrounded state. load_state puts them
    /// back.
    void save_state(state_writer& out) const {
        if (!drifted_) {
            for (int part = 0; part < 2; ++part) {
                out.values(std::span<const float>());
            }
            for (int part = 0; part < 2; ++part) {
                out.values(std::span<const double>());
            }
            return;
        }
        if (bf16_) {
            out.values(std::span<const float>(state_re_.data(), state_re_.size()));
            out.values(std::span<const float>(state_im_.data(), state_im_.size()));
        } else {
            save_copy<float>(out);
        }
        save_copy<double>(out);
    }
    void load_state(state_reader& in) {
        drifted_ = false; // until a copy is loaded
        state_re_ = matrix<float>();
        state_im_ = matrix<float>();
        load_copy<float>(in);
        load_copy<double>(in);
        if (bf16_ && real_.f.size() != 0) {
            // The unrounded state, and the copy the products read rounded
            // from it (a state saved before the state was kept unrounded
            // holds rounded values, which rounding leaves alone).
            state_re_ = real_.f;
            state_im_ = imag_.f;
            round_copies(0, out_);
        }
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

    /// Refuses a matrix larger than the machine's memory (it would end in
    /// the kernel's out-of-memory killer, not an exception).
    void check_fits(std::size_t scalar_bytes) const {
        const double bytes = 2.0 * static_cast<double>(out_) * static_cast<double>(in_) *
                             static_cast<double>(scalar_bytes);
        const double memory = detail::physical_memory_bytes();
        if (memory > 0.0 && bytes > memory) {
            const auto gib = [](double b) {
                char text[32];
                std::snprintf(text, sizeof text, "%.1f", b / (1024.0 * 1024.0 * 1024.0));
                return std::string(text);
            };
            throw config_error("lightloop::transmission_matrix: a stored " + std::to_string(out_) +
                               " x " + std::to_string(in_) + " medium needs " + gib(bytes) +
                               " GiB, more than the " + gib(memory) +
                               " GiB this machine has: use matrix_free_medium or "
                               "structured_medium");
        }
    }

    /// v <- a v + b n, in double, stored in T.
    template <class T>
    static void drift_values(T* values, double a, double b, const float* n, std::size_t count) {
        for (std::size_t k = 0; k < count; ++k) {
            values[k] =
              static_cast<T>(a * static_cast<double>(values[k]) + b * static_cast<double>(n[k]));
        }
    }

    template <class T>
    void drift_row(std::size_t j, double a, double b, const std::vector<float>& n_re,
                   const std::vector<float>& n_im) {
        matrix<T>& re = real_.template get<T>();
        if (re.size() == 0) {
            return;
        }
        drift_values(re.data() + j * in_, a, b, n_re.data(), in_);
        drift_values(imag_.template get<T>().data() + j * in_, a, b, n_im.data(), in_);
    }

    /// A bf16 medium's row j drifts in its unrounded state; the copies
    /// follow, rounded.
    void drift_state_row(std::size_t j, double a, double b, const std::vector<float>& n_re,
                         const std::vector<float>& n_im) {
        drift_values(state_re_.data() + j * in_, a, b, n_re.data(), in_);
        drift_values(state_im_.data() + j * in_, a, b, n_im.data(), in_);
        round_copies(j, j + 1);
    }

    /// A bf16 medium's unrounded state, made before its first drift step:
    /// the seed's entries unrounded, or (R loaded from a state that held
    /// only rounded values) the rounded ones.
    void unrounded_state() {
        if (state_re_.size() != 0) {
            return;
        }
        check_fits(sizeof(float));
        state_re_.resize({out_, in_});
        state_im_.resize({out_, in_});
        if (!drifted_) {
            for (std::size_t j = 0; j < out_; ++j) {
                medium_entries<float>(seed_, variance_, false, first_row_ + j, 0, in_,
                                      state_re_.data() + j * in_, state_im_.data() + j * in_);
            }
        } else if (real_.f.size() != 0) {
            std::copy(real_.f.begin(), real_.f.end(), state_re_.begin());
            std::copy(imag_.f.begin(), imag_.f.end(), state_im_.begin());
        } else {
            std::copy(real_.d.begin(), real_.d.end(), state_re_.begin());
            std::copy(imag_.d.begin(), imag_.d.end(), state_im_.begin());
        }
    }

    /// Rows [first, last) of every drawn copy: the state rounded to bf16.
    void round_copies(std::size_t first, std::size_t last) {
        for (std::size_t i = first * in_; i < last * in_; ++i) {
            const float re = round_to_bf16(state_re_.data()[i]);
            const float im = round_to_bf16(state_im_.data()[i]);
            if (real_.f.size() != 0) {
                real_.f.data()[i] = re;
                imag_.f.data()[i] = im;
            }
            if (real_.d.size() != 0) {
                real_.d.data()[i] = re;
                imag_.d.data()[i] = im;
            }
        }
    }

    /// Remakes, in place, what prepare() derived from R in type T.
    template <class T>
    void refresh_caches() {
        matrix<T>& t = transposed_.template get<T>();
        if (t.size() != 0) {
            fill_transposed(t);
        }
        if constexpr (std::is_same_v<T, float>) {
            if (real_operand_.size() != 0) {
                convert_to_bf16(real_.f.data(), real_operand_.data(), real_operand_.size());
                convert_to_bf16(imag_.f.data(), imag_operand_.data(), imag_operand_.size());
            }
        }
    }

    template <class T>
    void save_copy(state_writer& out) const {
        const matrix<T>& re = real_.template get<T>();
        const matrix<T>& im = imag_.template get<T>();
        out.values(std::span<const T>(re.data(), re.size()));
        out.values(std::span<const T>(im.data(), im.size()));
    }

    /// One type's copy from a state: replaces this medium's, or, empty,
    /// drops it (draw() then converts the other type's).
    template <class T>
    void load_copy(state_reader& in) {
        const std::vector<T> re = in.template values<T>("medium (real part)");
        const std::vector<T> im = in.template values<T>("medium (imaginary part)");
        if (re.size() != im.size() || (!re.empty() && re.size() != out_ * in_)) {
            in.fail("medium holds " + std::to_string(re.size()) + " + " +
                    std::to_string(im.size()) + " entries, expected " + std::to_string(out_ * in_) +
                    " each");
        }
        matrix<T>& real = real_.template get<T>();
        matrix<T>& imag = imag_.template get<T>();
        transposed_.template get<T>() = matrix<T>();
        if constexpr (std::is_same_v<T, float>) {
            real_operand_ = matrix<operand>();
            imag_operand_ = matrix<operand>();
        }
        if (re.empty()) {
            real = matrix<T>();
            imag = matrix<T>();
            return;
        }
        real.resize({out_, in_});
        imag.resize({out_, in_});
        std::copy(re.begin(), re.end(), real.begin());
        std::copy(im.begin(), im.end(), imag.begin());
        drifted_ = true;
    }

    /// Fills Re R and Im R in type T, once.
    template <scalar T>
    void draw() {
        matrix<T>& re = real_.template get<T>();
        if (re.size() == 0 && out_ * in_ > 0) {
            check_fits(sizeof(T));
            matrix<T>& im = imag_.template get<T>();
            re.resize({out_, in_});
            im.resize({out_, in_});
            if (drifted_) { // no longer the seed's: the other type's copy, converted
                using U = std::conditional_t<std::is_same_v<T, float>, double, float>;
                std::copy(real_.template get<U>().begin(), real_.template get<U>().end(),
                          re.begin());
                std::copy(imag_.template get<U>().begin(), imag_.template get<U>().end(),
                          im.begin());
                return;
            }
            for (std::size_t j = 0; j < out_; ++j) {
                medium_entries<T>(seed_, variance_, bf16_, first_row_ + j, 0, in_,
                                  re.data() + j * in_, im.data() + j * in_);
            }
        }
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

    bool drifted_ = false; // R is no longer the seed's (drift, or a loaded state)
    // A bf16 medium that drifts: R unrounded (the copies hold it rounded).
    matrix<float> state_re_;
    matrix<float> state_im_;
    matrix<operand> real_operand_;
    matrix<operand> imag_operand_;
    detail::per_scalar<matrix> real_;
    detail::per_scalar<matrix> imag_;
    detail::per_scalar<matrix> transposed_;

    /// (in x 2 out): row k is column k of Re R, then column k of Im R.
    template <class T>
    const matrix<T>& transposed() {
        matrix<T>& t = transposed_.template get<T>();
        if (t.size() == 0) {
            t.resize({inputs(), 2 * outputs()});
            fill_transposed(t);
        }
        return t;
    }

    template <class T>
    void fill_transposed(matrix<T>& t) {
        const std::size_t in = inputs();
        const std::size_t out = outputs();
        const matrix<T>& a = real<T>();
        const matrix<T>& b = imag<T>();
        for (std::size_t j = 0; j < out; ++j) {
            for (std::size_t k = 0; k < in; ++k) {
                t(k, j) = a(j, k);
                t(k, out + j) = b(j, k);
            }
        }
    }
};

} // namespace lightloop
