// Compiled with LIGHTLOOP_WITH_ONEDNN undefined in a build that has oneDNN
// (tests/package/CMakeLists.txt): the OpenBLAS-only library must compile,
// the paths every layer takes without oneDNN included. Not linked or run:
// the release build without oneDNN is a configuration of its own; this only
// keeps the headers honest about the macro (a discarded `if constexpr`
// branch naming detail::onednn once broke that build unnoticed).
#if defined(LIGHTLOOP_WITH_ONEDNN)
#error "LIGHTLOOP_WITH_ONEDNN should be undefined here"
#endif

#include <lightloop/lightloop.hpp>

namespace lightloop::package_check {

template <class P>
double one_cnn_step(const matrix<float>& x, const matrix<float>& y) {
    auto net = make_network<dfa<dense_gaussian>, softmax_cross_entropy>(
      1, conv2d<tanh_act, P>({1, 8, 8}, {.out_channels = 4, .kernel = 3, .padding = 1}),
      max_pool2d<>({4, 8, 8}, 2), flatten<>({4, 4, 4}), dense<tanh_act, P>{64, 16},
      dense<identity, P>{16, 3});
    sgd<float> opt{{.learning_rate = 0.1, .momentum = 0.9}};
    return net.train_step(x, y, opt);
}

double both_precisions(const matrix<float>& x, const matrix<float>& y) {
    return one_cnn_step<float>(x, y) + one_cnn_step<mixed_bf16>(x, y);
}

} // namespace lightloop::package_check
