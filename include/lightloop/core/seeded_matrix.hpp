#pragma once
// A fixed random matrix known by its seed.
//
// Feedback matrices are never stored in checkpoints: the seed regenerates
// them. Entries are drawn in double and rounded to the scalar type the
// network uses; each type's copy is materialised on first use only, so a
// float network never holds a double copy.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "lightloop/core/concepts.hpp"
#include "lightloop/core/random.hpp"
#include "lightloop/core/tensor.hpp"

namespace lightloop {

namespace detail {

/// One buffer per scalar type, for policies used by float and double networks.
template <template <class> class Tensor>
struct per_scalar {
    Tensor<float> f;
    Tensor<double> d;

    template <class T>
    Tensor<T>& get() noexcept {
        if constexpr (std::is_same_v<T, float>) {
            return f;
        } else {
            return d;
        }
    }
    template <class T>
    const Tensor<T>& get() const noexcept {
        if constexpr (std::is_same_v<T, float>) {
            return f;
        } else {
            return d;
        }
    }
};

/// A per-element table kept in double with a float copy: the one a loop in
/// pixel type T reads.
template <class T>
const T* double_or_float(const std::vector<double>& d, const std::vector<float>& f) noexcept {
    if constexpr (std::is_same_v<T, float>) {
        return f.data();
    } else {
        return d.data();
    }
}

} // namespace detail

/// i.i.d. N(0, 1) entries before scaling.
struct gaussian_entries {
    static constexpr const char* name = "gaussian";
    static double draw(rng& gen) { return gen.normal(); }
};

/// i.i.d. U[-sqrt 3, sqrt 3] entries (unit variance) before scaling.
struct uniform_entries {
    static constexpr const char* name = "uniform";
    static double draw(rng& gen) { return gen.uniform(-std::sqrt(3.0), std::sqrt(3.0)); }
};

template <class Entries = gaussian_entries>
class seeded_matrix {
public:
    seeded_matrix() = default;
    seeded_matrix(std::size_t rows, std::size_t cols, std::uint64_t seed, double stddev)
      : rows_(rows)
      , cols_(cols)
      , seed_(seed)
      , stddev_(stddev) {}
    /// Rows [first_row, first_row + rows) of the matrix the seed draws: the
    /// same values as those rows of the whole, the others never stored (they
    /// are drawn and dropped).
    seeded_matrix(std::size_t first_row, std::size_t rows, std::size_t cols, std::uint64_t seed,
                  double stddev)
      : rows_(rows)
      , cols_(cols)
      , seed_(seed)
      , stddev_(stddev)
      , first_row_(first_row) {}

    std::size_t rows() const noexcept { return rows_; }
    std::size_t cols() const noexcept { return cols_; }
    std::uint64_t seed() const noexcept { return seed_; }
    std::size_t first_row() const noexcept { return first_row_; }
    double stddev() const noexcept { return stddev_; }

    /// The matrix in scalar type T (rows x cols), drawn on first use. The
    /// reference is mutable so a test or an experiment can impose a matrix.
    template <scalar T>
    matrix<T>& get() {
        matrix<T>& m = storage_.template get<T>();
        bool& ready = std::is_same_v<T, float> ? float_ready_ : double_ready_;
        if (!ready) {
            m.resize({rows_, cols_});
            rng gen(seed_);
            for (std::size_t skipped = 0; skipped < first_row_ * cols_; ++skipped) {
                Entries::draw(gen);
            }
            for (auto& v : m) {
                v = static_cast<T>(stddev_ * Entries::draw(gen));
            }
            ready = true;
        }
        return m;
    }

private:
    std::size_t rows_ = 0;
    std::size_t cols_ = 0;
    std::uint64_t seed_ = 0;
    double stddev_ = 1.0;
    std::size_t first_row_ = 0;
    // Not std::optional: GCC 12 under ASan warns spuriously on optional<xtensor>.
    detail::per_scalar<matrix> storage_;
    bool float_ready_ = false;
    bool double_ready_ = false;
};

} // namespace lightloop
