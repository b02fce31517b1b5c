#pragma once
// What a scattering medium is to the optical device, and the entries every
// i.i.d. medium shares.
//
// A medium turns binary DMD frames into the complex field on the camera,
// E = R x, for a fixed random R (out x in) known by its seed. Three media
// model it at different scales:
//   - transmission_matrix (stored): R held in memory, two GEMMs per batch;
//     fastest while R fits (the default);
//   - matrix_free_medium: the same R, regenerated tile by tile inside each
//     product, memory O(tile) whatever the size;
//   - structured_medium: a Hadamard-and-phases transform, O(n log n) per
//     frame and O(n) memory, for 10^6 x 10^6 (not i.i.d.: its file says how
//     it differs).
// The optical device takes the medium as a policy (its fourth parameter).

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "lightloop/core/bf16.hpp"
#include "lightloop/core/concepts.hpp"
#include "lightloop/core/counter_random.hpp"

namespace lightloop {

/// A medium the optical device can shine frames through. Constructed from
/// (outputs, inputs, seed, σ², bf16), it gives field(frames, rows, re, im):
/// Re E and Im E (rows x outputs, row stride outputs) of `rows` frames stored
/// row-major (rows x inputs). prepare<T>() makes anything field<T>() reads, so
/// concurrent calls of field only read. field_per_batch says field costs
/// about the same for one frame as for many (the device then calls it once
/// per projection, with every frame).
template <class M>
concept scattering_medium = std::default_initializable<M> && std::movable<M> &&
  std::constructible_from<M, std::size_t, std::size_t, std::uint64_t, double, bool> &&
  requires(M m, const M& cm, const float* xf, float* yf, const double* xd, double* yd,
           std::size_t n) {
    { M::name } -> std::convertible_to<const char*>;
    { M::field_per_batch } -> std::convertible_to<bool>;
    { cm.outputs() } -> std::same_as<std::size_t>;
    { cm.inputs() } -> std::same_as<std::size_t>;
    { cm.variance() } -> std::convertible_to<double>;
    { cm.seed() } -> std::same_as<std::uint64_t>;
    { cm.bf16() } -> std::same_as<bool>;
    m.template prepare<float>();
    m.template prepare<double>();
    m.field(xf, n, yf, yf);
    m.field(xd, n, yd, yd);
};

/// What every medium is given: its size (out x in), its seed, σ² (the
/// variance of each complex entry, E|R_jk|^2) and whether its entries are
/// rounded to bf16. The media derive from it.
class medium_parameters {
public:
    medium_parameters() = default;
    medium_parameters(std::size_t out, std::size_t in, std::uint64_t seed, double variance,
                      bool bf16)
      : out_(out)
      , in_(in)
      , variance_(variance)
      , seed_(seed)
      , bf16_(bf16) {}

    std::size_t outputs() const noexcept { return out_; }
    std::size_t inputs() const noexcept { return in_; }
    double variance() const noexcept { return variance_; }
    std::uint64_t seed() const noexcept { return seed_; }
    bool bf16() const noexcept { return bf16_; }
    /// Which row of the seed's R this medium's row 0 is: 0, or where a slice
    /// of camera pixels starts (layer-parallel training, each process its
    /// own pixels). Only a medium whose rows are independent draws
    /// (row_sliceable_medium: it has slice_rows) sets it.
    std::size_t first_row() const noexcept { return first_row_; }

protected:
    std::size_t first_row_ = 0;
    std::size_t out_ = 0;
    std::size_t in_ = 0;
    double variance_ = 1.0;
    std::uint64_t seed_ = 0;
    bool bf16_ = false;
};

/// A medium that can be made as a slice of camera pixels: rows [first,
/// first + out) of the out-of-total R its seed draws, the other rows never
/// drawn (slice_rows(first), before the first product).
template <class M>
concept row_sliceable_medium = scattering_medium<M> && requires(M m, std::size_t first) {
    m.slice_rows(first);
};

/// R's entries (row, [first, first + count)) into re and im: CN(σ²) from the
/// counter-based function, rounded to bf16 for a bf16 medium, in type T. The
/// one definition of the entries every medium that stores or regenerates R
/// shares.
template <scalar T>
void medium_entries(std::uint64_t seed, double variance, bool bf16, std::size_t row,
                    std::size_t first, std::size_t count, T* re, T* im) {
    const auto scale = static_cast<float>(std::sqrt(variance));
    if constexpr (std::is_same_v<T, float>) {
        complex_normal_row(seed, row, first, count, scale, re, im);
        if (bf16) {
            for (std::size_t i = 0; i < count; ++i) {
                re[i] = round_to_bf16(re[i]);
                im[i] = round_to_bf16(im[i]);
            }
        }
    } else {
        constexpr std::size_t chunk = 256;
        float wide_re[chunk];
        float wide_im[chunk];
        for (std::size_t done = 0; done < count; done += chunk) {
            const std::size_t n = std::min(chunk, count - done);
            medium_entries<float>(seed, variance, bf16, row, first + done, n, wide_re, wide_im);
            std::copy_n(wide_re, n, re + done);
            std::copy_n(wide_im, n, im + done);
        }
    }
}

} // namespace lightloop
