#pragma once
// A layer the library does not have, written outside it against the layer
// concept's required members alone: the proof that a user's layer plugs in
// (test_network.cpp; distributed/test_distributed.cpp trains it as the output
// layer of a layer-parallel network).

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>

#include <lightloop/lightloop.hpp>

namespace user {

using lightloop::gemm;
using lightloop::matrix;
using lightloop::transpose;
using lightloop::vector;

/// A layer the library does not have, written against the layer concept
/// alone: dense with a weight of rank r, W = U V (U out x r, V r x in), as in
/// low-rank factorisations: z = x V^T, a = z U^T + b, h = f(a).
template <class Act, class T>
class low_rank {
public:
    using value_type = T;

    low_rank(std::size_t in, std::size_t out, std::size_t rank)
      : u_(matrix<T>::from_shape({out, rank}))
      , v_(matrix<T>::from_shape({rank, in}))
      , b_(vector<T>::from_shape({out}))
      , du_(matrix<T>::from_shape({out, rank}))
      , dv_(matrix<T>::from_shape({rank, in}))
      , db_(vector<T>::from_shape({out})) {}

    std::size_t input_size() const { return v_.shape(1); }
    std::size_t output_size() const { return u_.shape(0); }

    /// U and V normal with var(u) var(v) r = 2 / (in + out), Glorot's
    /// variance for each entry of U V; b = 0.
    void initialize(std::uint64_t seed) {
        lightloop::rng gen(seed);
        const double width = static_cast<double>(input_size() + output_size());
        const double sd = std::pow(2.0 / width / static_cast<double>(u_.shape(1)), 0.25);
        for (auto& w : u_) {
            w = static_cast<T>(sd * gen.normal());
        }
        for (auto& w : v_) {
            w = static_cast<T>(sd * gen.normal());
        }
        b_.fill(T(0));
    }

    const matrix<T>& forward(const matrix<T>& x) {
        const std::size_t n = x.shape(0);
        if (z_.shape(0) != n) {
            z_ = matrix<T>::from_shape({n, u_.shape(1)});
            a_ = matrix<T>::from_shape({n, output_size()});
            h_ = matrix<T>::from_shape({n, output_size()});
            delta_ = matrix<T>::from_shape({n, output_size()});
        }
        gemm(T(1), x, transpose::no, v_, transpose::yes, T(0), z_);
        gemm(T(1), z_, transpose::no, u_, transpose::yes, T(0), a_);
        for (std::size_t i = 0; i < n; ++i) {
            for (std::size_t j = 0; j < output_size(); ++j) {
                a_(i, j) += b_(j);
                h_(i, j) = act_.value(a_(i, j));
            }
        }
        return h_;
    }
    const matrix<T>& output() const { return h_; }
    matrix<T>& delta() { return delta_; }

    /// delta = s ⊙ f'(a); s may be delta's own storage.
    void scale_by_derivative(const T* s, std::size_t ld) {
        for (std::size_t i = 0; i < delta_.shape(0); ++i) {
            for (std::size_t j = 0; j < output_size(); ++j) {
                delta_(i, j) = s[i * ld + j] * act_.derivative(a_(i, j), h_(i, j));
            }
        }
    }

    /// into = delta U V.
    void backpropagate(matrix<T>& into) const {
        matrix<T> du = matrix<T>::from_shape({delta_.shape(0), u_.shape(1)});
        gemm(T(1), delta_, transpose::no, u_, transpose::no, T(0), du);
        gemm(T(1), du, transpose::no, v_, transpose::no, T(0), into);
    }

    /// dU = (1/n) delta^T z, dV = (1/n) (delta U)^T x, db = (1/n) sum delta.
    void compute_gradient(const matrix<T>& x) {
        const std::size_t n = x.shape(0);
        const T scale = T(1) / static_cast<T>(n);
        gemm(scale, delta_, transpose::yes, z_, transpose::no, T(0), du_);
        matrix<T> du = matrix<T>::from_shape({n, u_.shape(1)});
        gemm(T(1), delta_, transpose::no, u_, transpose::no, T(0), du);
        gemm(scale, du, transpose::yes, x, transpose::no, T(0), dv_);
        for (std::size_t j = 0; j < output_size(); ++j) {
            T sum = 0;
            for (std::size_t i = 0; i < n; ++i) {
                sum += delta_(i, j);
            }
            db_(j) = sum * scale;
        }
    }

    template <class F>
    void visit_parameters(F&& f) {
        f(std::span<T>(u_.data(), u_.size()), std::span<const T>(du_.data(), du_.size()));
        f(std::span<T>(v_.data(), v_.size()), std::span<const T>(dv_.data(), dv_.size()));
        f(std::span<T>(b_.data(), b_.size()), std::span<const T>(db_.data(), db_.size()));
    }

private:
    Act act_{};
    matrix<T> u_, v_;
    vector<T> b_;
    matrix<T> du_, dv_;
    vector<T> db_;
    matrix<T> z_, a_, h_, delta_; // this batch's
};

} // namespace user
