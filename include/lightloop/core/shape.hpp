#pragma once
// The shape of one sample's features. A batch is always an n x (C·H·W)
// row-major matrix, one sample per row, each row channel-major (PyTorch's
// NCHW, flattened): a dense layer's d outputs are the shape {d, 1, 1}, a
// convolution's are C maps of H x W, and reading one as the other is free.

#include <cstddef>
#include <span>
#include <string>

namespace lightloop {

struct feature_shape {
    std::size_t channels = 1;
    std::size_t height = 1;
    std::size_t width = 1;

    constexpr std::size_t size() const noexcept { return channels * height * width; }
    friend constexpr bool operator==(const feature_shape&, const feature_shape&) = default;

    /// "32x28x28".
    std::string text() const {
        return std::to_string(channels) + "x" + std::to_string(height) + "x" +
               std::to_string(width);
    }
};

/// Which sample of the whole batch each row of a batch is: row r is sample
/// first + r * stride. A process's shard of a batch in data-parallel training
/// (rows rank, rank + p, ...) is {rank, p}; a whole batch is {0, 1}. Layers
/// that draw per sample (dropout's masks) draw by it, so that a sample gets
/// the same draw whichever process holds it.
struct sample_numbering {
    std::size_t first = 0;
    std::size_t stride = 1;

    constexpr std::size_t operator()(std::size_t row) const noexcept {
        return first + row * stride;
    }
    friend constexpr bool operator==(const sample_numbering&, const sample_numbering&) = default;
};

/// The fixed random weights feedback alignment draws for a layer whose
/// backward-data product can run through weights other than its own
/// (conv2d's backpropagate_with): rows x cols entries of N(0, scale^2 /
/// fan_in), fan_in the number of terms each input gradient sums. A dense
/// layer needs none: its B is the d_in x d_out matrix of the widths.
struct feedback_weights_shape {
    std::size_t rows = 0;
    std::size_t cols = 0;
    std::size_t fan_in = 0;
    /// The layer's backward product transports no weight matrix (layer_norm:
    /// only its own statistics and an elementwise scale): feedback alignment
    /// passes the signal through it exactly and draws nothing for it.
    bool exact = false;
};

/// What a feedback method is configured with: the widths {d_0, d_1, ...,
/// d_L} and, per layer (L entries), whether it has parameters to train. An
/// empty has_parameters means every layer has them.
struct network_layout {
    std::span<const std::size_t> widths;
    std::span<const bool> has_parameters{};
    /// Per layer (L entries, or empty): the random feedback weights a layer
    /// with its own backward-data product asks for; all zero for the others.
    std::span<const feedback_weights_shape> feedback_weights{};

    /// Whether layer i (0-based) has parameters.
    constexpr bool trains(std::size_t i) const noexcept {
        return has_parameters.empty() || has_parameters[i];
    }
};

namespace detail {
/// Whether a layer type has parameters to train: layers without any
/// (pooling, flatten) say `static constexpr bool has_parameters = false`.
template <class L>
constexpr bool has_parameters() {
    if constexpr (requires { L::has_parameters; }) {
        return L::has_parameters;
    } else {
        return true;
    }
}
/// Whether a layer's backward product transports no weight matrix
/// (`static constexpr bool backward_is_local = true`: layer_norm), so that
/// feedback alignment passes the signal through it exactly.
template <class L>
constexpr bool backward_is_local() {
    if constexpr (requires { L::backward_is_local; }) {
        return L::backward_is_local;
    } else {
        return false;
    }
}
} // namespace detail

} // namespace lightloop
