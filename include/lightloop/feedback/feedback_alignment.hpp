#pragma once
// Feedback alignment (Lillicrap et al. 2016):
// delta a_i = (B_{i+1} delta a_{i+1}) ⊙ f'(a_i), with a fixed random B_{i+1}
// of W_{i+1}^T's shape (d_i x d_{i+1}) in place of W_{i+1}^T. The signal still
// travels layer by layer; only the weights it travels through are random.
// B_{i+1} has i.i.d. N(0, scale^2 / d_{i+1}) entries: the same fan-in
// normalisation as the dense projection devices (see dense_random.hpp).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "lightloop/core/blas.hpp"
#include "lightloop/core/concepts.hpp"
#include "lightloop/core/describe.hpp"
#include "lightloop/core/error.hpp"
#include "lightloop/core/random.hpp"
#include "lightloop/core/seeded_matrix.hpp"
#include "lightloop/core/shape.hpp"
#include "lightloop/core/tensor.hpp"
#include "lightloop/feedback/sweep.hpp"

namespace lightloop {

class feedback_alignment {
public:
    /// "feedback_alignment scale=1", for checkpoint signatures.
    std::string describe() const { return "feedback_alignment scale=" + setting_text(scale_); }
    static constexpr bool trains_hidden_layers = true;

    explicit feedback_alignment(double scale = 1.0)
      : scale_(scale) {
        if (!(scale > 0.0) || !std::isfinite(scale)) {
            throw config_error("lightloop::feedback_alignment: scale must be positive, got " +
                               number_text(scale));
        }
    }

    void configure(network_layout layout, std::uint64_t seed) {
        const auto widths = layout.widths;
        detail::check_widths("feedback_alignment", widths);
        matrices_.clear();
        // Hidden layer i (0-based, i < L-1) has width widths[i+1] and gets its
        // signal from the layer above, of width widths[i+2], through B_{i+1}
        // if that layer has weights; through a layer without parameters
        // (pooling, flatten) it passes exactly, with no matrix (0 x 0 here).
        // A layer with its own backward-data product (conv2d) says which
        // random weights replace its own there (layout.feedback_weights); a
        // layer whose backward product transports no weight matrix
        // (layer_norm) is passed through exactly, like one without parameters.
        for (std::size_t i = 0; i + 2 < widths.size(); ++i) {
            const bool weighted = layout.trains(i + 1);
            const feedback_weights_shape own = layout.feedback_weights.empty()
                                                 ? feedback_weights_shape{}
                                                 : layout.feedback_weights[i + 1];
            feedback_weights_shape shape{widths[i + 1], widths[i + 2], widths[i + 2]};
            if (!weighted || own.exact) {
                shape = {};
            } else if (own.rows != 0) {
                shape = own;
            }
            matrices_.emplace_back(
              shape.rows, shape.cols, derive_seed(seed, i),
              scale_ / std::sqrt(static_cast<double>(std::max<std::size_t>(shape.fan_in, 1))));
        }
    }

    /// B_{i+1} (d_i x d_{i+1}), the matrix hidden layer i (0-based) receives
    /// its signal through; for a layer above with its own backward-data
    /// product, the random weights of its random_feedback_shape() (conv2d:
    /// filters of W's shape). Mutable, so B can be imposed (tests set it to W^T).
    template <scalar T>
    matrix<T>& feedback_matrix(std::size_t hidden_layer) {
        if (hidden_layer >= matrices_.size()) {
            throw config_error("lightloop::feedback_alignment: no hidden layer " +
                               std::to_string(hidden_layer) + " (there are " +
                               std::to_string(matrices_.size()) + ")");
        }
        return matrices_[hidden_layer].template get<T>();
    }

    std::size_t hidden_layers() const noexcept { return matrices_.size(); }

    template <class... Layers, scalar T>
    void backward(std::tuple<Layers...>& layers, const matrix<T>& /*target*/) {
        // delta_i = delta_{i+1} B_{i+1}^T with rows as samples.
        propagate_down(layers, [&](auto& above, std::size_t i, matrix<T>& into) {
            using above_type = std::remove_cvref_t<decltype(above)>;
            if constexpr (!detail::has_parameters<above_type>() ||
                          detail::backward_is_local<above_type>()) {
                above.backpropagate(into); // no weight matrix to replace
            } else if constexpr (requires {
                                     above.backpropagate_with(feedback_matrix<T>(i), into);
                                 }) {
                above.backpropagate_with(feedback_matrix<T>(i), into);
            } else {
                gemm(T(1), detail::read_delta(above), transpose::no, feedback_matrix<T>(i),
                     transpose::yes, T(0), into);
            }
        });
    }

private:
    double scale_;
    std::vector<seeded_matrix<gaussian_entries>> matrices_;
};

static_assert(feedback_method<feedback_alignment>);

} // namespace lightloop
