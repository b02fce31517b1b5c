#pragma once
// Alignment diagnostics: how close a feedback method's learning signal is to
// backprop's, the quantity behind "feedback alignment".
//
// gradient_alignment: on a probe batch, the cosine between each hidden
// layer's signal delta a_i under the network's method and under backprop,
// per sample; reported as mean and standard deviation over the batch. 1 is
// backprop itself; 0 is a signal orthogonal to the gradient. For shallow
// (no hidden signal) it is NaN.
//
// weight_alignment: the cosine between the fixed feedback matrix a method
// uses for hidden layer i and the matrix backprop would use, when the method
// exposes its matrices: feedback_alignment's B_{i+1} against W_{i+1}^T; a
// dense device's slice B_i (d_i x d_L) in dfa / drtp against
// (W_L ... W_{i+1})^T. NaN where it is not defined (backprop, shallow, optical
// devices, whose matrix is not materialised).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "lightloop/core/blas.hpp"
#include "lightloop/core/concepts.hpp"
#include "lightloop/core/shape.hpp"
#include "lightloop/core/tensor.hpp"
#include "lightloop/feedback/backprop.hpp"
#include "lightloop/feedback/choice.hpp"
#include "lightloop/feedback/detail.hpp"

namespace lightloop {

struct alignment_report {
    std::vector<double> mean;   ///< per hidden layer
    std::vector<double> spread; ///< standard deviation over the probe samples

    /// Mean of the per-layer means over the hidden layers that have a
    /// signal of their own (pooling and flatten have none under the direct
    /// methods: NaN there); NaN if none has.
    double overall() const {
        double s = 0.0;
        std::size_t layers = 0;
        for (const double m : mean) {
            if (std::isfinite(m)) {
                s += m;
                ++layers;
            }
        }
        return layers > 0 ? s / static_cast<double>(layers)
                          : std::numeric_limits<double>::quiet_NaN();
    }
};

namespace detail {

inline double cosine(const double dot, const double a2, const double b2) {
    if (a2 <= 0.0 || b2 <= 0.0) {
        return std::numeric_limits<double>::quiet_NaN();
    }
    return dot / std::sqrt(a2 * b2);
}

} // namespace detail

/// Per-layer cosine between the network's hidden signals and backprop's on
/// (x, target). Runs the feedback method on a copy of it, so the network's
/// device (an optical device's noise stream, frame counters, calibration)
/// is left exactly as it was and training goes on as without the probe; the
/// weights and parameter gradients are untouched (the layers' activations and
/// signals are overwritten).
template <class Network>
alignment_report gradient_alignment(Network& net, const matrix<typename Network::value_type>& x,
                                    const matrix<typename Network::value_type>& target) {
    using T = typename Network::value_type;
    constexpr std::size_t hidden = Network::depth - 1;
    alignment_report report;
    report.mean.assign(hidden, std::numeric_limits<double>::quiet_NaN());
    report.spread.assign(hidden, std::numeric_limits<double>::quiet_NaN());
    if constexpr (hidden > 0) {
        if (!net.trains_hidden_layers()) {
            return report;
        }
        typename Network::feedback_type probe_method = std::as_const(net).feedback();
        net.compute_signals(x, target, probe_method);
        std::vector<matrix<T>> method(hidden);
        detail::for_index<hidden>([&](auto index) {
            constexpr std::size_t i = decltype(index)::value;
            method[i] = detail::read_delta(net.template layer<i>());
        });
        backprop exact; // needs no configuration
        net.compute_signals(x, target, exact);
        detail::for_index<hidden>([&](auto index) {
            constexpr std::size_t i = decltype(index)::value;
            if constexpr (!Network::parametrized[i]) {
                return; // no signal of its own under the direct methods: NaN
            }
            const matrix<T>& bp = detail::read_delta(net.template layer<i>());
            const std::size_t n = bp.shape(0);
            const std::size_t d = bp.shape(1);
            double sum = 0.0;
            double sum2 = 0.0;
            std::size_t counted = 0;
            for (std::size_t r = 0; r < n; ++r) {
                double dot = 0.0;
                double a2 = 0.0;
                double b2 = 0.0;
                for (std::size_t c = 0; c < d; ++c) {
                    const auto a = static_cast<double>(method[i](r, c));
                    const auto b = static_cast<double>(bp(r, c));
                    dot += a * b;
                    a2 += a * a;
                    b2 += b * b;
                }
                const double cos = detail::cosine(dot, a2, b2);
                if (std::isfinite(cos)) {
                    sum += cos;
                    sum2 += cos * cos;
                    ++counted;
                }
            }
            if (counted > 0) {
                const double m = sum / static_cast<double>(counted);
                report.mean[i] = m;
                report.spread[i] =
                  std::sqrt(std::max(0.0, sum2 / static_cast<double>(counted) - m * m));
            }
        });
    }
    return report;
}

namespace detail {
/// Whether a layer's weights() is its plain weight matrix W (dense): a
/// layer without weights() (a user's, say) stands for no matrix here, nor do
/// a convolution's filters or a normalisation's elementwise scale.
template <class L>
constexpr bool has_plain_weights() {
    return requires(const L& l) {
        l.weights();
    }
    &&!backward_is_local<L>() && !requires(const L& l) {
        l.random_feedback_shape();
    };
}
/// Whether every layer of a tuple has plain weights.
template <class Tuple>
struct plain_weights;
template <class... Layers>
struct plain_weights<std::tuple<Layers...>> {
    static constexpr bool value = (has_plain_weights<Layers>() && ...);
};
} // namespace detail

/// Per-layer cosine between the method's fixed feedback matrix and the
/// forward weights it stands in for (see the file comment).
template <class Network>
std::vector<double> weight_alignment(Network& net) {
    using T = typename Network::value_type;
    constexpr std::size_t hidden = Network::depth - 1;
    std::vector<double> out(hidden, std::numeric_limits<double>::quiet_NaN());
    auto matrix_cosine = [](const matrix<T>& a, std::size_t a_row0, const matrix<T>& b) {
        double dot = 0.0;
        double a2 = 0.0;
        double b2 = 0.0;
        for (std::size_t r = 0; r < b.shape(0); ++r) {
            for (std::size_t c = 0; c < b.shape(1); ++c) {
                const auto av = static_cast<double>(a(a_row0 + r, c));
                const auto bv = static_cast<double>(b(r, c));
                dot += av * bv;
                a2 += av * av;
                b2 += bv * bv;
            }
        }
        return detail::cosine(dot, a2, b2);
    };
    // The held method, where it was picked at run time (feedback_choice).
    visit_method(net.feedback(), [&](auto& fb) {
        if constexpr (requires { fb.template feedback_matrix<T>(std::size_t{0}); }) {
            // feedback_alignment: B_{i+1} (d_i x d_{i+1}) against W_{i+1}^T, or
            // a convolution's random filters against its filters W_{i+1}.
            detail::for_index<hidden>([&](auto index) {
                constexpr std::size_t i = decltype(index)::value;
                const auto& above = std::as_const(net).template layer<i + 1>();
                using above_type = std::remove_cvref_t<decltype(above)>;
                if constexpr (!Network::parametrized[i + 1] ||
                              detail::backward_is_local<above_type>()) {
                    return; // the signal passes it exactly: no random weights, NaN
                } else if constexpr (requires { above.random_feedback_shape(); }) {
                    out[i] = matrix_cosine(fb.template feedback_matrix<T>(i), 0, above.weights());
                } else if constexpr (!detail::has_plain_weights<above_type>()) {
                    return; // no weights() to compare B with (a user's layer): NaN
                } else {
                    const auto& w = std::as_const(net).template layer<i + 1>().weights();
                    auto wt = matrix<T>::from_shape({w.shape(1), w.shape(0)});
                    for (std::size_t r = 0; r < w.shape(0); ++r) {
                        for (std::size_t c = 0; c < w.shape(1); ++c) {
                            wt(c, r) = w(r, c);
                        }
                    }
                    out[i] = matrix_cosine(fb.template feedback_matrix<T>(i), 0, wt);
                }
            });
        } else if constexpr (requires { fb.device().template feedback_matrix<T>(); } &&
                             Network::all_parametrized &&
                             detail::plain_weights<
                               std::remove_cvref_t<decltype(std::as_const(net).layers())>>::value) {
            // (Defined for dense stacks: with a layer without weights between, a
            // convolution or a normalisation, the product of the weights above
            // stands for no matrix: NaN.)
            // dfa / drtp with a dense device: rows [offset_i, offset_i + d_i) of B
            // against P_i = (W_L ... W_{i+1})^T, built from the top down.
            const matrix<T>& b = fb.device().template feedback_matrix<T>();
            matrix<T> product; // P_{i+1}, d_{i+1} x d_L
            detail::for_index_reversed<hidden>([&](auto index) {
                constexpr std::size_t i = decltype(index)::value;
                const auto& w =
                  std::as_const(net).template layer<i + 1>().weights(); // d_{i+1} x d_i
                auto p = matrix<T>::from_shape({w.shape(1), net.output_size()});
                if constexpr (i + 1 == hidden) {
                    for (std::size_t r = 0; r < w.shape(0); ++r) {
                        for (std::size_t c = 0; c < w.shape(1); ++c) {
                            p(c, r) = w(r, c);
                        }
                    }
                } else {
                    gemm(T(1), w, transpose::yes, product, transpose::no, T(0), p);
                }
                product = p;
                out[i] = matrix_cosine(b, fb.offset(i), p);
            });
        }
    });
    return out;
}

} // namespace lightloop
