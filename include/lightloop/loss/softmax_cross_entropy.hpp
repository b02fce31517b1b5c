#pragma once
// Softmax cross-entropy on logits, mean over the batch.
//
// l_s = -sum_k y_k log softmax(o)_k = sum_k y_k (lse(o) - o_k), with
// lse(o) = m + log sum_k exp(o_k - m), m = max_k o_k, so no exp overflows.
// Per-sample gradient: softmax(o) * sum_k y_k - y, which is softmax(o) - y
// for one-hot or any target that sums to one (docs/DESIGN.md's e). A target
// entry that is negative or not finite is refused (data_error); fit checks a
// data set's targets whole before training (check_targets).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <string>

#include "lightloop/core/concepts.hpp"
#include "lightloop/core/describe.hpp"
#include "lightloop/core/error.hpp"
#include "lightloop/core/tensor.hpp"
#include "lightloop/loss/detail.hpp"

namespace lightloop {

struct softmax_cross_entropy : detail::loss_base<softmax_cross_entropy> {
    static constexpr const char* name = "softmax_cross_entropy";

    template <class T, bool WithGradient>
    static T compute(const matrix<T>& out, const matrix<T>& target, T* grad) {
        const std::size_t n = out.shape(0);
        const std::size_t d = out.shape(1);
        double total = 0.0;
        for (std::size_t r = 0; r < n; ++r) {
            const T* o = out.data() + r * d;
            const T* y = target.data() + r * d;
            const T m = *std::max_element(o, o + d);
            double sum_exp = 0.0;
            double target_sum = 0.0;
            double weighted = 0.0;
            for (std::size_t k = 0; k < d; ++k) {
                const auto yk = static_cast<double>(y[k]);
                if (!(yk >= 0.0 && yk <= std::numeric_limits<double>::max())) {
                    refuse_target(r, k, yk);
                }
                sum_exp += std::exp(static_cast<double>(o[k] - m));
                target_sum += yk;
                weighted += yk * static_cast<double>(o[k] - m);
            }
            const double log_sum = std::log(sum_exp);
            total += target_sum * log_sum - weighted;
            if constexpr (WithGradient) {
                T* g = grad + r * d;
                for (std::size_t k = 0; k < d; ++k) {
                    const double p = std::exp(static_cast<double>(o[k] - m) - log_sum);
                    g[k] = static_cast<T>(p * target_sum - static_cast<double>(y[k]));
                }
            }
        }
        return static_cast<T>(total / static_cast<double>(n));
    }

    /// Refuses, naming the first, a target in `target` that compute() would
    /// refuse at its batch (negative, or not finite): fit checks a data set's
    /// targets whole before training. `who` names the data ("lightloop::fit:
    /// the training data").
    template <class T>
    static void check_targets(const matrix<T>& target, const std::string& who) {
        const T* y = target.data();
        const std::size_t width = target.shape(1);
        for (std::size_t i = 0; i < target.size(); ++i) {
            const auto v = static_cast<double>(y[i]);
            if (!(v >= 0.0 && v <= std::numeric_limits<double>::max())) {
                throw data_error(who + "'s targets hold " + number_text(v) + " at row " +
                                 std::to_string(i / width) + ", column " +
                                 std::to_string(i % width) + "; " + probability_rule);
            }
        }
    }

private:
    static constexpr const char* probability_rule =
      "softmax_cross_entropy's targets are class probabilities (one-hot or soft labels), finite "
      "and never negative";

    /// A target that is no probability: with a negative one the loss has no
    /// lower bound, so training would drive it down forever instead of
    /// failing.
    [[noreturn]] static void refuse_target(std::size_t row, std::size_t column, double value) {
        throw data_error("lightloop::softmax_cross_entropy: target (" + std::to_string(row) + ", " +
                         std::to_string(column) + ") is " + number_text(value) + "; " +
                         probability_rule);
    }
};

static_assert(loss_function<softmax_cross_entropy> && loss_function<softmax_cross_entropy, double>);

} // namespace lightloop
