#pragma once
// What dense and conv2d share: a weight matrix W (rows x cols), a bias of
// `rows`, their gradients, the fused activation, and the batch's
// pre-activation a, output h = f(a) and signal delta, each n x width.
//
// Its products run in the layer's precision (core/precision.hpp): for a
// mixed precision the layer also keeps its GEMM operands' bf16 copies: the
// weights' (written by the optimizer's pass, see visit_parameters), the
// batch input's and delta's (converted from the fp32 values when a product
// first needs them).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <span>
#include <type_traits>

#include "lightloop/core/bf16.hpp"
#include "lightloop/core/blas.hpp"
#include "lightloop/core/concepts.hpp"
#include "lightloop/core/finite.hpp"
#include "lightloop/core/parallel.hpp"
#include "lightloop/core/precision.hpp"
#include "lightloop/core/simd.hpp"
#include "lightloop/core/tensor.hpp"
#include "lightloop/layers/activations.hpp"

namespace lightloop::detail {

/// Per column c of the n x width row-major d: sums[c] = scale Σ_r d[r][c]
/// and, when x is given (the same shape), dots[c] = scale Σ_r d[r][c] x[r][c]:
/// the bias gradient of a dense layer, dβ and dγ of layer_norm. Columns in
/// pieces on lightloop's threads, each summed over the rows in order (the
/// same bits on any thread count and any grouping of the columns), four SIMD
/// batches of columns walked down the rows together in registers (256
/// contiguous bytes a row; one batch at a time, 64, took 2.5 times as long
/// with d in cache), then one batch at a time, then single columns (g++ 12
/// vectorised the plain loops at -O3 only).
template <scalar T>
void scaled_column_sums(const T* d, const std::type_identity_t<T>* x, std::size_t n,
                        std::size_t width, std::type_identity_t<T> scale, T* sums,
                        std::type_identity_t<T>* dots) {
    const auto run = [&](auto with_dots) {
        constexpr bool both = decltype(with_dots)::value;
        parallel_for_ranges(width, elementwise_grain / std::max<std::size_t>(n, 1),
                            [&](std::size_t first, std::size_t end) {
                                const T* rows = d + first;
                                const T* others = both ? x + first : nullptr;
                                T* sum_out = sums + first;
                                T* dot_out = both ? dots + first : nullptr;
                                const std::size_t stride = width;
                                const std::size_t count = n;
                                const T factor = scale;
                                using B = xsimd::batch<T>;
                                constexpr std::size_t L = B::size;
                                const std::size_t columns = end - first;
                                std::size_t c = 0;
                                for (; c + 4 * L <= columns; c += 4 * L) {
                                    B s0(T(0)), s1(T(0)), s2(T(0)), s3(T(0));
                                    B t0(T(0)), t1(T(0)), t2(T(0)), t3(T(0));
                                    const T* row = rows + c;
                                    const T* other = both ? others + c : nullptr;
                                    for (std::size_t r = 0; r < count; ++r) {
                                        const B d0 = B::load_unaligned(row);
                                        const B d1 = B::load_unaligned(row + L);
                                        const B d2 = B::load_unaligned(row + 2 * L);
                                        const B d3 = B::load_unaligned(row + 3 * L);
                                        if constexpr (both) {
                                            t0 += d0 * B::load_unaligned(other);
                                            t1 += d1 * B::load_unaligned(other + L);
                                            t2 += d2 * B::load_unaligned(other + 2 * L);
                                            t3 += d3 * B::load_unaligned(other + 3 * L);
                                            other += stride;
                                        }
                                        s0 += d0;
                                        s1 += d1;
                                        s2 += d2;
                                        s3 += d3;
                                        row += stride;
                                    }
                                    const B f(factor);
                                    (s0 * f).store_unaligned(sum_out + c);
                                    (s1 * f).store_unaligned(sum_out + c + L);
                                    (s2 * f).store_unaligned(sum_out + c + 2 * L);
                                    (s3 * f).store_unaligned(sum_out + c + 3 * L);
                                    if constexpr (both) {
                                        (t0 * f).store_unaligned(dot_out + c);
                                        (t1 * f).store_unaligned(dot_out + c + L);
                                        (t2 * f).store_unaligned(dot_out + c + 2 * L);
                                        (t3 * f).store_unaligned(dot_out + c + 3 * L);
                                    }
                                }
                                const T* rest = rows + c;
                                const T* rest_others = both ? others + c : nullptr;
                                T* rest_sums = sum_out + c;
                                T* rest_dots = both ? dot_out + c : nullptr;
                                simd::for_each_lane<T>(columns - c, [&](std::size_t k, auto lane) {
                                    using V = decltype(lane);
                                    V sum(T(0));
                                    V dot(T(0));
                                    for (std::size_t r = 0; r < count; ++r) {
                                        const V dv = simd::load<V>(rest + r * stride + k);
                                        if constexpr (both) {
                                            dot += dv * simd::load<V>(rest_others + r * stride + k);
                                        }
                                        sum += dv;
                                    }
                                    simd::store(rest_sums + k, sum * V(factor));
                                    if constexpr (both) {
                                        simd::store(rest_dots + k, dot * V(factor));
                                    }
                                });
                            });
    };
    if (x != nullptr) {
        run(std::true_type{});
    } else {
        run(std::false_type{});
    }
}

template <class Act, precision P>
class affine_layer {
public:
    using T = master_t<P>;
    using value_type = T;
    using activation_type = Act;
    using precision_type = P;
    using operand_type = operand_t<P>;
    static constexpr bool mixed = is_mixed_precision<P>;

    /// delta = s ⊙ f'(a), s an (n x width) block with row stride ld.
    void scale_by_derivative(const T* signal, std::size_t ld) {
        derivative_pass(signal, ld, nullptr);
    }

    /// max |delta| (+inf if an entry is not finite) as the pass that wrote
    /// delta measured it, or NaN if delta may have changed since (the
    /// non-const delta(), a new batch): the network's finiteness check
    /// before a gradient reads it here instead of making a pass of its own.
    double delta_magnitude() const noexcept { return delta_magnitude_; }

    /// f(W, dW) then f(b, db). A mixed layer passes a visitor that takes it
    /// the weights' bf16 copy as a third argument (an operand_copy) and
    /// leaves that copy to the visitor; for any other visitor it converts
    /// the weights again before its next product.
    template <class F>
    void visit_parameters(F&& f) {
        const std::span<T> w(weights_.data(), weights_.size());
        const std::span<const T> g(weight_gradient_.data(), weight_gradient_.size());
        if constexpr (!mixed) {
            f(w, g);
        } else if constexpr (std::is_invocable_v<F&, std::span<T>, std::span<const T>,
                                                 operand_copy<operand_type>>) {
            f(w, g,
              operand_copy<operand_type>{
                std::span<operand_type>(weights_operand_.data(), weights_operand_.size()),
                &weights_operand_current_});
        } else {
            weights_operand_current_ = false;
            f(w, g);
        }
        f(std::span<T>(bias_.data(), bias_.size()),
          std::span<const T>(bias_gradient_.data(), bias_gradient_.size()));
    }

    const matrix<T>& output() const noexcept { return output_; }
    const matrix<T>& pre_activation() const noexcept { return pre_activation_; }
    matrix<T>& delta() noexcept {
        delta_operand_current_ = false;
        delta_magnitude_ = std::numeric_limits<double>::quiet_NaN();
        return delta_;
    }
    const matrix<T>& delta() const noexcept { return delta_; }
    matrix<T>& weights() noexcept {
        weights_operand_current_ = false;
        return weights_;
    }
    const matrix<T>& weights() const noexcept { return weights_; }
    vector<T>& bias() noexcept { return bias_; }
    const vector<T>& bias() const noexcept { return bias_; }
    const matrix<T>& weight_gradient() const noexcept { return weight_gradient_; }
    const vector<T>& bias_gradient() const noexcept { return bias_gradient_; }
    const Act& activation_policy() const noexcept { return act_; }

protected:
    affine_layer(Act act, std::size_t rows, std::size_t cols)
      : act_(act) {
        weights_ = matrix<T>::from_shape({rows, cols});
        weight_gradient_ = matrix<T>::from_shape({rows, cols});
        bias_ = vector<T>::from_shape({rows});
        bias_gradient_ = vector<T>::from_shape({rows});
        weights_.fill(T(0));
        weight_gradient_.fill(T(0));
        bias_.fill(T(0));
        bias_gradient_.fill(T(0));
        if constexpr (mixed) {
            weights_operand_ = matrix<operand_type>::from_shape({rows, cols});
            warn_about_precision_once<P>();
        }
    }

    /// Where a product runs: spread over lightloop's team, or as one call
    /// on the calling thread (for a layer that spreads its own products
    /// over the team: conv2d's chunks).
    enum class site { team, caller };

    /// C = alpha op(A) op(B) + beta C in the layer's precision: A and B are
    /// operands (operand_type), C is T.
    template <site Where = site::team>
    static void product(transpose ta, transpose tb, std::size_t m, std::size_t n, std::size_t k,
                        T alpha, const operand_type* a, std::size_t lda, const operand_type* b,
                        std::size_t ldb, T beta, T* c, std::size_t ldc) {
        using backend = typename precision_traits<P>::backend;
        if constexpr (std::is_same_v<T, double>) {
            if constexpr (Where == site::team) {
                gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
            } else {
                blas_call(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
            }
        } else if constexpr (Where == site::team) {
            backend::product(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        } else {
            backend::product_here(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        }
    }

    /// W as a GEMM operand: W itself, or its bf16 copy (converted here only
    /// if something other than the optimizer's pass changed W).
    const operand_type* weights_operand() const {
        if constexpr (mixed) {
            if (!weights_operand_current_) {
                convert_on_team(weights_.data(), weights_operand_.data(), weights_.size());
                weights_operand_current_ = true;
            }
            return weights_operand_.data();
        } else {
            return weights_.data();
        }
    }

    /// The batch input x (n x cols) as a GEMM operand: x itself, or its bf16
    /// copy, converted by the forward pass and reused by the gradient of the
    /// same x.
    const operand_type* input_operand(const matrix<T>& x, bool reuse) {
        if constexpr (mixed) {
            if (!reuse || input_source_ != x.data() || input_operand_.size() != x.size()) {
                ensure_shape(input_operand_, x.shape(0), x.shape(1));
                input_magnitude_ =
                  convert_on_team_measured(x.data(), input_operand_.data(), x.size());
                input_source_ = x.data();
            }
            return input_operand_.data();
        } else {
            return x.data();
        }
    }

    /// delta as a GEMM operand (converted once per new delta).
    const operand_type* delta_operand() const {
        if constexpr (mixed) {
            if (!delta_operand_current_) {
                ensure_shape(delta_operand_, delta_.shape(0), delta_.shape(1));
                convert_on_team(delta_.data(), delta_operand_.data(), delta_.size());
                delta_operand_current_ = true;
            }
            return delta_operand_.data();
        } else {
            return delta_.data();
        }
    }

    /// scale_by_derivative, and for a mixed layer delta's GEMM operand
    /// written in the same pass (dense, whose products read it; conv2d's
    /// primitives read delta itself).
    void scale_by_derivative_and_operand(const T* signal, std::size_t ld) {
        if constexpr (mixed) {
            ensure_shape(delta_operand_, delta_.shape(0), delta_.shape(1));
            derivative_pass(signal, ld, delta_operand_.data());
        } else {
            derivative_pass(signal, ld, nullptr);
        }
    }

    /// Shapes a, h and delta for a batch of n (allocates only when n changes).
    void shape_batch(std::size_t n, std::size_t width) {
        ensure_shape(pre_activation_, n, width);
        ensure_shape(output_, n, width);
        ensure_shape(delta_, n, width);
        delta_operand_current_ = false;
        delta_magnitude_ = std::numeric_limits<double>::quiet_NaN();
    }

    /// The gradient_bound of a layer whose every gradient entry is a mean
    /// over the n samples of a sum of `terms` products delta · x (the
    /// bias's, of delta alone): at most terms · delta_max · max(max |x|, 1),
    /// doubled for rounding; the sums before the 1/n must leave half of T's
    /// range, or the bound is +inf (the network then reads the gradients).
    double bound_gradient(const matrix<T>& x, double delta_max, double terms) const {
        // A mixed layer measured x as it converted it for the products the
        // gradient came from (input_operand).
        double x_max = std::numeric_limits<double>::quiet_NaN();
        if constexpr (mixed) {
            if (input_source_ == x.data() && input_operand_.size() == x.size()) {
                x_max = input_magnitude_;
            }
        }
        if (std::isnan(x_max)) {
            x_max = largest_magnitude_or_inf(std::span<const T>(x.data(), x.size()));
        }
        const double entry = terms * delta_max * std::max(x_max, 1.0);
        const double sum = static_cast<double>(delta_.shape(0)) * entry;
        // An infinite or NaN bound fails the comparison.
        if (!(sum < 0.5 * static_cast<double>(std::numeric_limits<T>::max()))) {
            return std::numeric_limits<double>::infinity();
        }
        return 2.0 * entry;
    }

    /// delta = s ⊙ f'(a), its magnitude kept, and delta's operand written
    /// into `copy` where one is given (current exactly then).
    void derivative_pass(const T* signal, std::size_t ld, operand_type* copy) {
        delta_magnitude_ = scale_rows_by_derivative(
          act_, signal, ld, pre_activation_.data(), output_.data(), delta_.data(),
          pre_activation_.shape(0), pre_activation_.shape(1), copy);
        delta_operand_current_ = copy != nullptr;
    }

    Act act_;
    matrix<T> weights_;
    vector<T> bias_;
    matrix<T> weight_gradient_;
    vector<T> bias_gradient_;
    matrix<T> pre_activation_;
    matrix<T> output_;
    matrix<T> delta_;
    // Mixed precision only: the operands' bf16 copies.
    mutable matrix<operand_type> weights_operand_;
    mutable bool weights_operand_current_ = false;
    matrix<operand_type> input_operand_;
    const T* input_source_ = nullptr;
    double input_magnitude_ = std::numeric_limits<double>::quiet_NaN(); // max |x| converted
    mutable matrix<operand_type> delta_operand_;
    mutable bool delta_operand_current_ = false;
    double delta_magnitude_ = std::numeric_limits<double>::quiet_NaN(); // see delta_magnitude()
};

} // namespace lightloop::detail
