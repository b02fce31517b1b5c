#pragma once
// The CNN's two convolutions, as throughput and bench_step time them
// (conv 1 -> 32 on 28 x 28 and conv 32 -> 64 on 14 x 14, 5 x 5, padding 2),
// and one pass of a conv2d layer over a batch as a call.

#include <cstddef>
#include <functional>
#include <memory>

#include <benchmark/benchmark.h>

#include <lightloop/lightloop.hpp>

namespace lightloop::bench {

struct cnn_convolution {
    std::size_t in, out, side; ///< channels in and out, the square map's side
    std::size_t positions() const { return side * side; }
};
inline constexpr cnn_convolution cnn_convolutions[] = {{1, 32, 28}, {32, 64, 14}};

/// Which product of a convolution: forward, weight gradient, backward data.
enum class conv_pass { forward, weight_gradient, backward_data };

/// The pass of a conv2d<identity, P> of cnn_convolutions[conv] over `batch`
/// samples, as a call that holds the layer, its input (0.3) and its signal
/// (0.01); the forward pass has run once.
template <class P>
std::function<void()> conv_layer_pass(std::size_t conv, conv_pass pass, std::size_t batch) {
    const cnn_convolution c = cnn_convolutions[conv];
    auto layer = std::make_shared<conv2d<identity, P>>(
      feature_shape{c.in, c.side, c.side},
      conv2d_spec{.out_channels = c.out, .kernel = 5, .padding = 2});
    layer->initialize(1);
    auto x =
      std::make_shared<matrix<float>>(matrix<float>::from_shape({batch, layer->input_size()}));
    x->fill(0.3f);
    auto into = std::make_shared<matrix<float>>(*x);
    layer->forward(*x);
    layer->delta().fill(0.01f);
    switch (pass) {
        case conv_pass::forward:
            return [layer, x] { benchmark::DoNotOptimize(layer->forward(*x).data()); };
        case conv_pass::weight_gradient:
            return [layer, x] {
                layer->compute_gradient(*x);
                benchmark::DoNotOptimize(layer->weight_gradient().data());
            };
        default:
            return [layer, into] {
                layer->backpropagate(*into);
                benchmark::DoNotOptimize(into->data());
            };
    }
}

} // namespace lightloop::bench
