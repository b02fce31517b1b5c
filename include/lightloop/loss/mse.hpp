#pragma once
// Mean squared error, as PyTorch's MSELoss: the mean over all n x d entries.
// Per sample l_s = (1/d) sum_k (o_k - y_k)^2, per-sample gradient 2 (o - y) / d.

#include <cstddef>

#include "lightloop/core/concepts.hpp"
#include "lightloop/core/tensor.hpp"
#include "lightloop/loss/detail.hpp"

namespace lightloop {

struct mse : detail::loss_base<mse> {
    static constexpr const char* name = "mse";

    template <class T, bool WithGradient>
    static T compute(const matrix<T>& out, const matrix<T>& target, T* grad) {
        const std::size_t count = out.size();
        const double d = static_cast<double>(out.shape(1));
        const T scale = static_cast<T>(2.0 / d);
        double total = 0.0;
        for (std::size_t i = 0; i < count; ++i) {
            const T diff = out.data()[i] - target.data()[i];
            total += static_cast<double>(diff) * static_cast<double>(diff);
            if constexpr (WithGradient) {
                grad[i] = scale * diff;
            }
        }
        return static_cast<T>(total / static_cast<double>(count));
    }
};

static_assert(loss_function<mse> && loss_function<mse, double>);

} // namespace lightloop
