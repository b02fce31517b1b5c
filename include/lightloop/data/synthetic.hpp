#pragma once
// Small synthetic classification tasks with a known structure, seeded, for
// tests, examples and quick experiments.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numbers>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "lightloop/core/error.hpp"
#include "lightloop/core/random.hpp"
#include "lightloop/core/tensor.hpp"

namespace lightloop {

/// Inputs (n x d), one-hot targets (n x classes) and the labels, row-aligned.
template <class T = float>
struct labelled_data {
    matrix<T> inputs;
    matrix<T> targets;
    std::vector<std::size_t> labels;

    std::size_t size() const noexcept { return labels.size(); }
};

namespace detail {

template <class T>
labelled_data<T> allocate_labelled(std::size_t n, std::size_t dim, std::size_t classes) {
    labelled_data<T> data;
    data.inputs = matrix<T>::from_shape({n, dim});
    data.targets = matrix<T>::from_shape({n, classes});
    data.targets.fill(T(0));
    data.labels.resize(n);
    return data;
}

/// Random order of 0..n-1 (Fisher-Yates), so tasks are not class-sorted.
inline std::vector<std::size_t> shuffled_order(std::size_t n, rng& gen) {
    std::vector<std::size_t> order(n);
    for (std::size_t i = 0; i < n; ++i) {
        order[i] = i;
    }
    for (std::size_t i = n; i > 1; --i) {
        std::swap(order[i - 1], order[gen.below(i)]);
    }
    return order;
}

inline void require_positive(const char* fn, const char* what, std::size_t value) {
    if (value == 0) {
        throw config_error(std::string("lightloop::") + fn + ": " + what + " must be positive");
    }
}

} // namespace detail

/// `classes` interleaved spiral arms in the plane, `per_class` points each:
/// arm k at radius r = t and angle 2 pi (k / classes + turns * t), t uniform in
/// [0.05, 1], plus isotropic Gaussian noise of standard deviation `noise`.
/// Not linearly separable for more than one turn.
template <class T = float>
labelled_data<T> make_spirals(std::size_t per_class, std::size_t classes, double turns,
                              double noise, std::uint64_t seed) {
    detail::require_positive("make_spirals", "per_class", per_class);
    detail::require_positive("make_spirals", "classes", classes);
    const std::size_t n = per_class * classes;
    auto data = detail::allocate_labelled<T>(n, 2, classes);
    rng gen(seed);
    const auto order = detail::shuffled_order(n, gen);
    for (std::size_t i = 0; i < n; ++i) {
        const std::size_t k = i % classes;
        const double t = gen.uniform(0.05, 1.0);
        const double angle = 2.0 * std::numbers::pi *
                             (static_cast<double>(k) / static_cast<double>(classes) + turns * t);
        const std::size_t r = order[i];
        data.inputs(r, 0) = static_cast<T>(t * std::cos(angle) + noise * gen.normal());
        data.inputs(r, 1) = static_cast<T>(t * std::sin(angle) + noise * gen.normal());
        data.targets(r, k) = T(1);
        data.labels[r] = k;
    }
    return data;
}

/// Each of `classes` classes is a mixture of `modes` Gaussian clusters in
/// `dim` dimensions: cluster centres N(0, I) drawn from `task_seed`, points
/// centre + spread N(0, I) drawn from `sample_seed`. The same task_seed with
/// two sample seeds gives a training and a test set of one task. With several
/// modes per class no linear classifier separates the classes.
template <class T = float>
labelled_data<T> make_blobs(std::size_t per_class, std::size_t classes, std::size_t modes,
                            std::size_t dim, double spread, std::uint64_t task_seed,
                            std::uint64_t sample_seed) {
    detail::require_positive("make_blobs", "per_class", per_class);
    detail::require_positive("make_blobs", "classes", classes);
    detail::require_positive("make_blobs", "modes", modes);
    detail::require_positive("make_blobs", "dim", dim);
    const std::size_t n = per_class * classes;
    auto data = detail::allocate_labelled<T>(n, dim, classes);
    rng centre_gen(task_seed);
    std::vector<double> centres(classes * modes * dim);
    for (auto& c : centres) {
        c = centre_gen.normal();
    }
    rng gen(sample_seed);
    const auto order = detail::shuffled_order(n, gen);
    for (std::size_t i = 0; i < n; ++i) {
        const std::size_t k = i % classes;
        const std::size_t mode = gen.below(modes);
        const double* centre = centres.data() + (k * modes + mode) * dim;
        const std::size_t r = order[i];
        for (std::size_t j = 0; j < dim; ++j) {
            data.inputs(r, j) = static_cast<T>(centre[j] + spread * gen.normal());
        }
        data.targets(r, k) = T(1);
        data.labels[r] = k;
    }
    return data;
}

/// Copies rows `rows` of `source` into `dest` (resized to rows.size() x cols
/// only if its shape differs): the gather behind a mini-batch.
template <class T>
void gather_rows(const matrix<T>& source, std::span<const std::size_t> rows, matrix<T>& dest) {
    const std::size_t cols = source.shape(1);
    ensure_shape(dest, rows.size(), cols);
    for (std::size_t i = 0; i < rows.size(); ++i) {
        if (rows[i] >= source.shape(0)) {
            throw shape_error("lightloop::gather_rows: row " + std::to_string(rows[i]) + " of a " +
                              std::to_string(source.shape(0)) + "-row matrix");
        }
        const T* from = source.data() + rows[i] * cols;
        std::copy(from, from + cols, dest.data() + i * cols);
    }
}

} // namespace lightloop
