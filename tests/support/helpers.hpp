#pragma once
// Helpers shared by the tests: reference computations written the slow,
// obvious way, and a mini-batch loop.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <span>
#include <vector>

#include <lightloop/lightloop.hpp>

namespace lightloop::testing {

template <class T>
matrix<T> random_matrix(std::size_t rows, std::size_t cols, std::uint64_t seed,
                        double stddev = 1.0) {
    auto m = matrix<T>::from_shape({rows, cols});
    rng gen(seed);
    fill_normal(std::span<T>(m.data(), m.size()), gen, stddev);
    return m;
}

/// C = op(A) op(B) by the textbook triple loop, in double.
template <class TA, class TB>
matrix<double> naive_product(const matrix<TA>& a, bool ta, const matrix<TB>& b, bool tb) {
    const std::size_t m = ta ? a.shape(1) : a.shape(0);
    const std::size_t k = ta ? a.shape(0) : a.shape(1);
    const std::size_t n = tb ? b.shape(0) : b.shape(1);
    auto c = matrix<double>::from_shape({m, n});
    for (std::size_t i = 0; i < m; ++i) {
        for (std::size_t j = 0; j < n; ++j) {
            double s = 0.0;
            for (std::size_t p = 0; p < k; ++p) {
                const double av = static_cast<double>(ta ? a(p, i) : a(i, p));
                const double bv = static_cast<double>(tb ? b(j, p) : b(p, j));
                s += av * bv;
            }
            c(i, j) = s;
        }
    }
    return c;
}

template <class A, class B>
double max_abs_diff(const A& a, const B& b) {
    double worst = 0.0;
    auto ia = a.begin();
    auto ib = b.begin();
    for (; ia != a.end(); ++ia, ++ib) {
        worst = std::max(worst, std::abs(static_cast<double>(*ia) - static_cast<double>(*ib)));
    }
    return worst;
}

/// No NaN and no infinity.
template <class A>
bool all_finite(const A& a) {
    for (const auto v : a) {
        if (!std::isfinite(static_cast<double>(v))) {
            return false;
        }
    }
    return true;
}

/// Same shape and bitwise-equal values (xtensor's == does not mix with
/// Catch's expression decomposition, so tests call this).
template <class A, class B>
bool identical(const A& a, const B& b) {
    return a.shape() == b.shape() && std::equal(a.begin(), a.end(), b.begin());
}

template <class A>
double max_abs(const A& a) {
    double worst = 0.0;
    for (auto v : a) {
        worst = std::max(worst, std::abs(static_cast<double>(v)));
    }
    return worst;
}

struct sample_moments {
    double mean;
    double variance; // second moment about 0
    double kurtosis; // fourth moment over variance^2
    double max_abs;
};

/// Moments of a tensor's entries, in double.
template <class A>
sample_moments moments_of(const A& values) {
    double sum = 0;
    double sum2 = 0;
    double sum4 = 0;
    double largest = 0;
    for (const auto raw : values) {
        const auto v = static_cast<double>(raw);
        sum += v;
        sum2 += v * v;
        sum4 += v * v * v * v;
        largest = std::max(largest, std::abs(v));
    }
    const auto n = static_cast<double>(values.size());
    const double var = sum2 / n;
    return {sum / n, var, (sum4 / n) / (var * var), largest};
}

template <class T>
matrix<T> transposed(const matrix<T>& m) {
    auto t = matrix<T>::from_shape({m.shape(1), m.shape(0)});
    for (std::size_t i = 0; i < m.shape(0); ++i) {
        for (std::size_t j = 0; j < m.shape(1); ++j) {
            t(j, i) = m(i, j);
        }
    }
    return t;
}

/// `epochs` passes of shuffled mini-batches of `batch` rows (the last partial
/// batch included) over `data`.
/// Every dense layer's weights then bias, input to output (slot order), read
/// through const access so the network's own bookkeeping is left alone.
template <class Network>
std::vector<float> parameters_of(const Network& net) {
    std::vector<float> all;
    net.visit_layers([&](const auto& l, std::size_t) {
        if constexpr (requires { l.weights(); }) { // pooling and flatten have none
            all.insert(all.end(), l.weights().begin(), l.weights().end());
            all.insert(all.end(), l.bias().begin(), l.bias().end());
        }
    });
    return all;
}

template <class Network, class Optimizer>
void train_epochs(Network& net, Optimizer& opt,
                  const labelled_data<typename Network::value_type>& data, std::size_t batch,
                  std::size_t epochs, std::uint64_t seed) {
    using T = typename Network::value_type;
    std::vector<std::size_t> order(data.size());
    std::iota(order.begin(), order.end(), std::size_t{0});
    rng gen(seed);
    matrix<T> xb;
    matrix<T> yb;
    for (std::size_t e = 0; e < epochs; ++e) {
        for (std::size_t i = order.size(); i > 1; --i) {
            std::swap(order[i - 1], order[gen.below(i)]);
        }
        for (std::size_t start = 0; start < order.size(); start += batch) {
            const std::size_t count = std::min(batch, order.size() - start);
            const std::span<const std::size_t> rows(order.data() + start, count);
            gather_rows(data.inputs, rows, xb);
            gather_rows(data.targets, rows, yb);
            net.train_step(xb, yb, opt);
        }
    }
}

/// The synthetic task the training tests share: 4 classes, each a mixture of
/// 6 Gaussian clusters in 6 dimensions (spread 0.4). Chance is 25%; a linear
/// classifier reaches about 60%, so beating it needs learned hidden features.
template <class T = float>
labelled_data<T> blobs_task(std::uint64_t sample_seed, std::size_t per_class = 300) {
    return make_blobs<T>(per_class, 4, 6, 6, 0.4, /*task_seed=*/1, sample_seed);
}

/// The dense Gaussian device with its projections changed afterwards by
/// alter(y): for tests of what the network does with a device's bad output.
template <class Alter>
struct altered_device {
    dense_gaussian inner;
    Alter alter;
    void configure(std::size_t in, std::size_t out, std::uint64_t seed) {
        inner.configure(in, out, seed);
    }
    std::size_t input_size() const noexcept { return inner.input_size(); }
    std::size_t output_size() const noexcept { return inner.output_size(); }
    template <scalar T>
    void project(const matrix<T>& x, matrix<T>& y) {
        inner.project(x, y);
        alter(y);
    }
};

} // namespace lightloop::testing
