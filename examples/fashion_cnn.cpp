// A convolutional network on Fashion-MNIST under backprop, DFA through a
// dense Gaussian matrix, DFA through the simulated optical co-processor
// (holographic readout) and shallow training (hidden layers frozen):
//
//   conv 1->32 5x5 pad 2, tanh, max-pool 2
//   conv 32->64 5x5 pad 2, tanh, max-pool 2
//   dense 3136->1024 tanh, dense 1024->10
//
// DFA projects the output error once into both convolutions' feature maps
// (32x28x28 and 64x14x14) and the hidden dense layer; nothing travels back
// through a convolution. The flags, table, CSV and SVG are light_in_the_loop's
// (<out>/fashion_cnn.csv, <out>/fashion_cnn.svg); the default is one epoch,
// a few minutes on 2 cores. --precision bf16 trains it in mixed bf16 (every
// conv2d and dense layer). See --help for the flags.
#include "demo.hpp"

namespace {

struct make_cnn {
    /// In fp32, or in mixed bf16 (--precision bf16: every conv2d and dense
    /// layer's products on bf16 operands).
    template <class Feedback, class P>
    auto operator()(Feedback feedback, std::uint64_t seed, const lightloop::mnist_data& data,
                    lightloop::precision_tag<P>) const {
        using namespace lightloop;
        const feature_shape image{1, data.rows, data.cols};
        conv2d<tanh_act, P> conv1(image, {.out_channels = 32, .kernel = 5, .padding = 2});
        max_pool2d<> pool1(conv1.output_shape(), 2);
        conv2d<tanh_act, P> conv2(pool1.output_shape(),
                                  {.out_channels = 64, .kernel = 5, .padding = 2});
        max_pool2d<> pool2(conv2.output_shape(), 2);
        flatten<> flat(pool2.output_shape());
        return network{std::move(feedback),
                       softmax_cross_entropy{},
                       seed,
                       std::move(conv1),
                       std::move(pool1),
                       std::move(conv2),
                       std::move(pool2),
                       flat,
                       dense<tanh_act, P>{flat.output_size(), 1024},
                       dense<identity, P>{1024, data.classes}};
    }
};

} // namespace

int main(int argc, char** argv) {
    using namespace lightloop;
    ensure_fast_blas(argv); // re-executes once if OpenBLAS fell back to a generic kernel
    demos::options o;
    o.out = "fashion_cnn_out";
    o.epochs = 1;
    o.methods = {"bp", "dfa", "optical-holographic", "shallow"};
    CLI::App app{"A CNN (conv 32 5x5, pool, conv 64 5x5, pool, dense 1024, dense 10; tanh) on "
                 "Fashion-MNIST trained with backprop, DFA through a dense matrix and through the "
                 "simulated optical co-processor, and shallow training.",
                 "fashion_cnn"};
    demos::add_flags(app, o);
    const demos::demo<make_cnn> d{
      "fashion_cnn", "conv 32 5x5, pool 2, conv 64 5x5, pool 2, 1024, 10 tanh", {}};
    return programs::run(app, argc, argv, [&] { return demos::experiment(d, o); });
}
