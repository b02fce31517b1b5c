// The body both ODR translation units compile: it includes everything and
// instantiates the same templates. Included by odr_a.cpp and odr_b.cpp with a
// different LIGHTLOOP_ODR_FUNCTION each.
#include <lightloop/lightloop.hpp>

double LIGHTLOOP_ODR_FUNCTION() {
    using namespace lightloop;
    const auto data = make_spirals(20, 2, 0.5, 0.01, 1);
    auto net = make_network<dfa<dense_gaussian>, softmax_cross_entropy>(4, dense<tanh_act>{2, 8},
                                                                        dense<identity>{8, 2});
    sgd opt{{.learning_rate = 0.1, .momentum = 0.9}};
    double loss = 0;
    for (int i = 0; i < 5; ++i) {
        loss = static_cast<double>(net.train_step(data.inputs, data.targets, opt));
    }
    return loss;
}
