#pragma once
// Finite-difference gradient checker (in the manner of dlib's test_layer).
//
// Compares the gradients a network computes (compute_gradients) against
// central differences of its loss, (L(w + h) - L(w - h)) / 2h, entry by entry
// (the training loss: with dropout, the step's masks).
// Only backprop computes true gradients; for the other feedback methods the
// mismatch measures how far their signal is from the gradient. Use double:
// in float, rounding in L swamps the O(h^2) truncation error. A network with
// mixed-precision layers is refused (config_error): their products round the
// weights to bf16's 8 bits, which a step of h does not move, so the
// differences would be noise (PyTorch's gradcheck refuses below double too).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <type_traits>
#include <vector>

#include "lightloop/core/describe.hpp"
#include "lightloop/core/error.hpp"
#include "lightloop/core/precision.hpp"
#include "lightloop/core/tensor.hpp"

namespace lightloop {

struct gradient_check_result {
    /// max |analytic - numeric| over every checked entry.
    double max_abs_error = 0.0;
    /// max |analytic - numeric| / max(|analytic|, |numeric|, floor).
    double max_rel_error = 0.0;
    /// Layer (0-based) and entry index where max_rel_error occurred.
    std::size_t worst_layer = 0;
    std::size_t worst_entry = 0;
    std::size_t entries_checked = 0;
};

struct gradient_check_options {
    double step = 1e-5;
    /// Denominator floor for the relative error, so entries whose gradient is
    /// ~0 are judged by their absolute error.
    double floor = 1e-7;
    /// Check every `stride`-th entry of each parameter tensor (1 = all).
    /// check_gradients refuses a step that is not a positive number, a
    /// negative floor and a stride of 0.
    std::size_t stride = 1;
};

template <class Network>
gradient_check_result check_gradients(Network& net, const matrix<typename Network::value_type>& x,
                                      const matrix<typename Network::value_type>& target,
                                      gradient_check_options options = {}) {
    using T = typename Network::value_type;
    if (!(std::isfinite(options.step) && options.step > 0.0) ||
        !(std::isfinite(options.floor) && options.floor >= 0.0) || options.stride == 0) {
        throw config_error("lightloop::check_gradients: step must be a positive number, floor a "
                           "number >= 0 and stride at least 1; got step " +
                           number_text(options.step) + ", floor " + number_text(options.floor) +
                           ", stride " + std::to_string(options.stride));
    }
    net.visit_layers([](const auto& layer, std::size_t layer_index) {
        using L = std::remove_cvref_t<decltype(layer)>;
        if constexpr (requires { typename L::precision_type; }) {
            if constexpr (is_mixed_precision<typename L::precision_type>) {
                throw config_error("lightloop::check_gradients: layer " +
                                   std::to_string(layer_index) +
                                   " is mixed precision: its products round the weights to "
                                   "bf16, which a finite difference does not see; check the same "
                                   "network in double (or float)");
            }
        }
    });
    net.compute_gradients(x, target);
    gradient_check_result result;
    std::vector<T> analytic;
    net.visit_layers([&](auto& layer, std::size_t layer_index) {
        if (!net.trains_layer(layer_index)) {
            return;
        }
        layer.visit_parameters([&](auto values, auto gradient) {
            analytic.assign(gradient.begin(), gradient.end());
            for (std::size_t j = 0; j < values.size(); j += options.stride) {
                const T saved = values[j];
                values[j] = static_cast<T>(saved + options.step);
                const double plus = static_cast<double>(net.training_loss(x, target));
                values[j] = static_cast<T>(saved - options.step);
                const double minus = static_cast<double>(net.training_loss(x, target));
                values[j] = saved;
                const double numeric = (plus - minus) / (2.0 * options.step);
                const double a = static_cast<double>(analytic[j]);
                const double abs_error = std::abs(a - numeric);
                const double rel_error =
                  abs_error / std::max({std::abs(a), std::abs(numeric), options.floor});
                result.max_abs_error = std::max(result.max_abs_error, abs_error);
                if (rel_error > result.max_rel_error) {
                    result.max_rel_error = rel_error;
                    result.worst_layer = layer_index;
                    result.worst_entry = j;
                }
                ++result.entries_checked;
            }
        });
    });
    return result;
}

} // namespace lightloop
