#pragma once
// Dense random projection devices: y = x B^T for a fixed random B (out x in),
// the digital reference for the optical co-processor.
//
// Scaling. Entries of B are i.i.d. with mean 0 and variance scale^2 / in, so
// each output (B e)_j = sum_k B_jk e_k has variance scale^2 ||e||^2 / in: the
// projected signal has the same RMS as the entries of e, whatever the number
// of classes or the width projected into. This is the fan-in normalisation
// of LeCun initialisation applied to the feedback path. Feedback-alignment
// results (Lillicrap et al. 2016; Nøkland 2016) hold for any fixed random B;
// its scale acts as a per-layer learning-rate factor, which this choice pins
// to "the hidden signal is as large as the output error", so the learning
// rate that suits backprop's output layer suits the hidden layers too. The
// optical devices are scaled to the same normalisation. `scale` (default 1)
// multiplies the standard deviation for users who want another convention.
//
// The matrix is regenerated from its seed, never stored: draws are made in
// double and rounded to the network's scalar type, materialised the first
// time that type is used.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "lightloop/core/blas.hpp"
#include "lightloop/core/concepts.hpp"
#include "lightloop/core/describe.hpp"
#include "lightloop/core/error.hpp"
#include "lightloop/core/random.hpp"
#include "lightloop/core/seeded_matrix.hpp"
#include "lightloop/core/tensor.hpp"

namespace lightloop {

template <class Entries>
class dense_random_projection {
public:
    dense_random_projection()
      : dense_random_projection(1.0) {}
    explicit dense_random_projection(double scale)
      : scale_(scale) {
        if (!(scale > 0.0) || !std::isfinite(scale)) {
            throw config_error("lightloop::dense_" + std::string(Entries::name) +
                               ": scale must be positive and finite, got " + number_text(scale));
        }
    }

    void configure(std::size_t in, std::size_t out, std::uint64_t seed) {
        check_sizes(in, out);
        in_ = in;
        out_ = out;
        matrix_ = seeded_matrix<Entries>(out, in, seed, entry_stddev());
    }

    /// Outputs [first, first + count) of the device configure(in, total,
    /// seed) makes: the same rows of B (the same values), the others never
    /// stored. Layer-parallel DFA gives each rank the slice of its layers.
    void configure_slice(std::size_t in, std::size_t total, std::uint64_t seed, std::size_t first,
                         std::size_t count) {
        if (first + count > total || count == 0) {
            throw config_error("lightloop::dense_" + std::string(Entries::name) + ": slice [" +
                               std::to_string(first) + ", " + std::to_string(first + count) +
                               ") of " + std::to_string(total) + " outputs");
        }
        check_sizes(in, count);
        in_ = in;
        out_ = count;
        matrix_ = seeded_matrix<Entries>(first, count, in, seed, entry_stddev());
    }

    /// "dense_gaussian scale=1", for checkpoint signatures (the seed is the
    /// network's).
    std::string describe() const {
        return "dense_" + std::string(Entries::name) + " scale=" + setting_text(scale_);
    }

    std::size_t input_size() const noexcept { return in_; }
    std::size_t output_size() const noexcept { return out_; }
    std::uint64_t seed() const noexcept { return matrix_.seed(); }
    double scale() const noexcept { return scale_; }

    /// Standard deviation of B's entries: scale / sqrt(in).
    double entry_stddev() const noexcept {
        return scale_ / std::sqrt(static_cast<double>(in_ == 0 ? 1 : in_));
    }

    /// B (out x in) in scalar type T, drawn from the seed on first use. The
    /// reference is mutable so tests and experiments can impose a matrix.
    template <scalar T>
    matrix<T>& feedback_matrix() {
        return matrix_.template get<T>();
    }

    template <scalar T>
    void project(const matrix<T>& x, matrix<T>& y) {
        if (x.shape(1) != in_ || y.shape(0) != x.shape(0) || y.shape(1) != out_) {
            throw shape_error("lightloop::dense_" + std::string(Entries::name) + " (" +
                              std::to_string(in_) + " -> " + std::to_string(out_) + "): input is " +
                              std::to_string(x.shape(0)) + "x" + std::to_string(x.shape(1)) +
                              ", output is " + std::to_string(y.shape(0)) + "x" +
                              std::to_string(y.shape(1)));
        }
        gemm(T(1), x, transpose::no, feedback_matrix<T>(), transpose::yes, T(0), y);
    }

private:
    /// An empty B would project every error to nothing and train no hidden
    /// layer: refused, as the optical device refuses it.
    static void check_sizes(std::size_t in, std::size_t out) {
        if (in == 0 || out == 0) {
            throw config_error("lightloop::dense_" + std::string(Entries::name) +
                               ": needs at least one input and one output, got " +
                               std::to_string(in) + " -> " + std::to_string(out));
        }
    }

    double scale_;
    std::size_t in_ = 0;
    std::size_t out_ = 0;
    seeded_matrix<Entries> matrix_;
};

/// B with i.i.d. N(0, scale^2 / in) entries.
using dense_gaussian = dense_random_projection<gaussian_entries>;
/// B with i.i.d. uniform entries of variance scale^2 / in.
using dense_uniform = dense_random_projection<uniform_entries>;

static_assert(projection_device<dense_gaussian> && projection_device<dense_gaussian, double>);
static_assert(projection_device<dense_uniform> && projection_device<dense_uniform, double>);

} // namespace lightloop
