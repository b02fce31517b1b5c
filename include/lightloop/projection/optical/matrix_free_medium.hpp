#pragma once
// A scattering medium that never stores R: the same i.i.d. CN(0, σ²) matrix
// as the stored transmission_matrix (entry (j, k) from medium_entries, a pure
// function of the seed, j and k), regenerated tile by tile inside each
// product. Memory is one tile per thread whatever the size, so a 10^5 x 10^5
// medium (80 GB stored) runs on a laptop; each product pays for regenerating
// R once, whatever the number of frames, so the device hands it every frame
// of a projection at once (field_per_batch).
//
// field() splits R's rows (camera pixels) into tiles over lightloop's team;
// a tile's columns are drawn a block at a time and multiplied into the
// frames with GEMMs. Each output pixel is one thread's sums in a fixed order,
// so the field does not depend on the thread count.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "lightloop/core/blas.hpp"
#include "lightloop/core/concepts.hpp"
#include "lightloop/core/parallel.hpp"
#include "lightloop/projection/optical/medium.hpp"

namespace lightloop {

class matrix_free_medium : public medium_parameters {
public:
    static constexpr const char* name = "matrix-free";
    static constexpr bool field_per_batch = true;
    /// A tile is tile_rows rows of R by tile_columns columns: its real and
    /// imaginary parts (256 KiB in float) stay in L2 while the frames stream
    /// through.
    static constexpr std::size_t tile_rows = 64;
    static constexpr std::size_t tile_columns = 512;

    matrix_free_medium() = default;
    /// `bf16`: R's entries rounded to bf16, as a bf16 stored medium's.
    matrix_free_medium(std::size_t out, std::size_t in, std::uint64_t seed, double variance,
                       bool bf16 = false)
      : medium_parameters(out, in, seed, variance, bf16) {}

    /// This medium's row 0 is row `first` of the seed's R (rows are
    /// independent draws: a slice regenerates only its own).
    void slice_rows(std::size_t first) noexcept { first_row_ = first; }

    /// Nothing to make: field() only reads the medium's settings.
    template <scalar T>
    void prepare() const noexcept {}

    /// This medium's entries (row, [first, first + count)), as field() uses
    /// them.
    template <scalar T>
    void entries(std::size_t row, std::size_t first, std::size_t count, T* re, T* im) const {
        medium_entries<T>(seed_, variance_, bf16_, first_row_ + row, first, count, re, im);
    }

    /// E = R x for `rows` frames stored row-major at `frames` (rows x in);
    /// writes Re E and Im E, each (rows x out) with row stride out.
    template <scalar T>
    void field(const T* frames, std::size_t rows, T* re, T* im) const {
        if (rows == 0 || out_ == 0) {
            return;
        }
        if (in_ == 0) {
            std::fill(re, re + rows * out_, T(0));
            std::fill(im, im + rows * out_, T(0));
            return;
        }
        const std::size_t tiles = (out_ + tile_rows - 1) / tile_rows;
        shared_team().run(tiles, [&](std::size_t tile, std::size_t) {
            std::vector<T>& scratch = tile_scratch<T>();
            T* tile_re = scratch.data();
            T* tile_im = scratch.data() + tile_rows * tile_columns;
            const std::size_t first_row = tile * tile_rows;
            const std::size_t tile_height = std::min(tile_rows, out_ - first_row);
            for (std::size_t k = 0; k < in_; k += tile_columns) {
                const std::size_t width = std::min(tile_columns, in_ - k);
                for (std::size_t j = 0; j < tile_height; ++j) {
                    entries<T>(first_row + j, k, width, tile_re + j * width, tile_im + j * width);
                }
                const T beta = k == 0 ? T(0) : T(1);
                gemm(transpose::no, transpose::yes, rows, tile_height, width, T(1), frames + k, in_,
                     tile_re, width, beta, re + first_row, out_);
                gemm(transpose::no, transpose::yes, rows, tile_height, width, T(1), frames + k, in_,
                     tile_im, width, beta, im + first_row, out_);
            }
        });
    }

private:
    /// This thread's tile (real part, then imaginary), allocated on its first
    /// product only.
    template <class T>
    static std::vector<T>& tile_scratch() {
        thread_local std::vector<T> scratch(2 * tile_rows * tile_columns);
        return scratch;
    }
};

static_assert(row_sliceable_medium<matrix_free_medium>);

} // namespace lightloop
