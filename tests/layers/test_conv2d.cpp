#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "support/helpers.hpp"

using namespace lightloop;
using lightloop::testing::max_abs_diff;
using lightloop::testing::random_matrix;

namespace conv_tests {

/// The convolution by its definition, one multiply-add at a time: a[s][o][y][x]
/// = b[o] + sum over c, ky, kx of W[o][c][ky][kx] x[s][c][y·stride + ky -
/// pad][x·stride + kx - pad] (zero outside the map).
matrix<double> direct_convolution(const matrix<double>& x, const matrix<double>& w,
                                  const vector<double>& b, feature_shape in, conv2d_spec spec) {
    const std::size_t k = spec.kernel;
    const std::size_t oh = (in.height + 2 * spec.padding - k) / spec.stride + 1;
    const std::size_t ow = (in.width + 2 * spec.padding - k) / spec.stride + 1;
    auto a = matrix<double>::from_shape({x.shape(0), spec.out_channels * oh * ow});
    for (std::size_t s = 0; s < x.shape(0); ++s) {
        for (std::size_t o = 0; o < spec.out_channels; ++o) {
            for (std::size_t y = 0; y < oh; ++y) {
                for (std::size_t xo = 0; xo < ow; ++xo) {
                    double sum = b(o);
                    for (std::size_t c = 0; c < in.channels; ++c) {
                        for (std::size_t ky = 0; ky < k; ++ky) {
                            for (std::size_t kx = 0; kx < k; ++kx) {
                                const auto iy = static_cast<std::ptrdiff_t>(y * spec.stride + ky) -
                                                static_cast<std::ptrdiff_t>(spec.padding);
                                const auto ix = static_cast<std::ptrdiff_t>(xo * spec.stride + kx) -
                                                static_cast<std::ptrdiff_t>(spec.padding);
                                if (iy < 0 || ix < 0 ||
                                    iy >= static_cast<std::ptrdiff_t>(in.height) ||
                                    ix >= static_cast<std::ptrdiff_t>(in.width)) {
                                    continue;
                                }
                                sum +=
                                  w(o, (c * k + ky) * k + kx) *
                                  x(s, (c * in.height + static_cast<std::size_t>(iy)) * in.width +
                                         static_cast<std::size_t>(ix));
                            }
                        }
                    }
                    a(s, (o * oh + y) * ow + xo) = sum;
                }
            }
        }
    }
    return a;
}

/// tests/layers/torch_layers.py's fill: scale * sin(0.731 i + salt), with
/// Python's roundings (the volatile keeps GCC from fusing 0.731 i + salt into
/// one multiply-add, which moves sin's argument by an ulp).
std::vector<double> fill(std::size_t count, double salt, double scale) {
    std::vector<double> v(count);
    for (std::size_t i = 0; i < count; ++i) {
        volatile double product = 0.731 * static_cast<double>(i);
        v[i] = scale * std::sin(product + salt);
    }
    return v;
}

template <class M>
void fill_into(M& m, double salt, double scale) {
    const auto v = fill(m.size(), salt, scale);
    std::copy(v.begin(), v.end(), m.begin());
}

/// PyTorch's values: (case, quantity) -> the numbers.
std::map<std::pair<std::string, std::string>, std::vector<double>> torch_values() {
    std::ifstream in(std::string(LIGHTLOOP_TEST_SOURCE_DIR) + "/layers/torch_layers.tsv");
    REQUIRE(in);
    std::map<std::pair<std::string, std::string>, std::vector<double>> table;
    std::string line;
    while (std::getline(in, line)) {
        if (line.empty() || line[0] == '#') {
            continue;
        }
        std::istringstream fields(line);
        std::string name;
        std::string quantity;
        std::getline(fields, name, '\t');
        std::getline(fields, quantity, '\t');
        std::vector<double> values;
        double v = 0;
        while (fields >> v) {
            values.push_back(v);
        }
        table[{name, quantity}] = values;
    }
    return table;
}

template <class M>
double gap_to(const M& m, const std::vector<double>& expected) {
    REQUIRE(m.size() == expected.size());
    double gap = 0;
    std::size_t i = 0;
    for (const double v : m) {
        gap = std::max(gap, std::abs(v - expected[i++]));
    }
    return gap;
}

/// A conv layer's forward output, input gradient and parameter gradients for
/// L = (1/n) sum(h ⊙ G): the quantities torch_layers.py writes.
template <class Layer>
void run_layer_case(Layer& layer, std::size_t n, matrix<double>& input_gradient) {
    auto x = matrix<double>::from_shape({n, layer.input_size()});
    fill_into(x, 0.1, 1.0);
    layer.forward(x);
    const auto g = fill(n * layer.output_size(), 0.4, 1.0);
    layer.scale_by_derivative(g.data(), layer.output_size());
    input_gradient = matrix<double>::from_shape({n, layer.input_size()});
    layer.backpropagate(input_gradient);
    if constexpr (detail::has_parameters<Layer>()) {
        layer.compute_gradient(x);
    }
}

} // namespace conv_tests

TEST_CASE("conv2d computes the convolution by its definition, across chunks and strides",
          "[layers][conv]") {
    struct setting {
        feature_shape in;
        conv2d_spec spec;
        std::size_t n;
    };
    // The last one spans several chunks of the products.
    const std::vector<setting> settings{
      {{3, 7, 6}, {.out_channels = 4, .kernel = 3, .stride = 2, .padding = 1}, 3},
      {{2, 5, 5}, {.out_channels = 3, .kernel = 2}, 2},
      {{1, 9, 4}, {.out_channels = 2, .kernel = 4, .stride = 3, .padding = 3}, 2},
      {{1, 28, 28}, {.out_channels = 3, .kernel = 5, .padding = 2}, 60}};
    for (const setting& s : settings) {
        conv2d<identity, double> layer(s.in, s.spec);
        layer.initialize(5);
        conv_tests::fill_into(layer.bias(), 0.3, 0.5);
        const auto x = random_matrix<double>(s.n, s.in.size(), 6);
        const auto expected =
          conv_tests::direct_convolution(x, layer.weights(), layer.bias(), s.in, s.spec);
        CAPTURE(layer.describe());
        if (s.n == 60) {
            REQUIRE(layer.chunk_samples() < 30);
        }
        CHECK(layer.output_size() == expected.shape(1));
        CHECK(max_abs_diff(layer.forward(x), expected) < 1e-13);
    }
    conv2d<> first({1, 28, 28}, {.out_channels = 32, .kernel = 5, .padding = 2});
    CHECK(first.output_shape() == feature_shape{32, 28, 28});
    conv2d<> second({32, 14, 14}, {.out_channels = 64, .kernel = 5, .padding = 2});
    CHECK(second.output_shape() == feature_shape{64, 14, 14});
    CHECK(second.parameter_layout()[0].shape == std::vector<std::size_t>{64, 32, 5, 5});
}

TEST_CASE("conv2d, pooling and the norms equal PyTorch's outputs and gradients for fixed weights",
          "[layers][conv][torch]") {
    Catch::StringMaker<double>::precision = 17;
    const auto torch = conv_tests::torch_values();
    const auto value = [&](const std::string& name, const std::string& quantity) {
        const auto found = torch.find({name, quantity});
        REQUIRE(found != torch.end());
        return found->second;
    };
    // In double, to the last bits: PyTorch sums in another order, so its
    // weight gradients (entries up to 6, sums of up to 128 terms) differ by a
    // few ulp, as many as the GEMM kernel's own order gives (OpenBLAS's
    // AVX-512 kernels within 4e-15 here, its AVX2 kernel 7.6e-15): the bound
    // is 16 ulp of 6, far below the worst case of two orders of 128 terms (2 * 127 * u
    // * sum |terms|, about 1e-12). Everything else agrees within 1e-15.
    const auto check_conv = [&](auto layer, const std::string& name, std::size_t n) {
        CAPTURE(name);
        conv_tests::fill_into(layer.weights(), 0.2, 0.4);
        conv_tests::fill_into(layer.bias(), 0.3, 0.2);
        matrix<double> input_gradient;
        conv_tests::run_layer_case(layer, n, input_gradient);
        CHECK(conv_tests::gap_to(layer.output(), value(name, "output")) < 1e-15);
        CHECK(conv_tests::gap_to(input_gradient, value(name, "input_gradient")) < 1e-15);
        CHECK(conv_tests::gap_to(layer.weight_gradient(), value(name, "weight_gradient")) <
              16 * 8.9e-16);
        CHECK(conv_tests::gap_to(layer.bias_gradient(), value(name, "bias_gradient")) < 1e-15);
    };
    check_conv(conv2d<tanh_act, double>(
                 {3, 7, 6}, {.out_channels = 4, .kernel = 3, .stride = 2, .padding = 1}),
               "conv_s2_p1_tanh", 2);
    check_conv(conv2d<identity, double>({2, 5, 5}, {.out_channels = 3, .kernel = 2}),
               "conv_k2_identity", 1);
    check_conv(conv2d<tanh_act, double>({1, 8, 8}, {.out_channels = 2, .kernel = 5, .padding = 2}),
               "conv_k5_p2_tanh", 2);
    // γ and β filled like the filters and biases: both show in the output.
    check_conv(layer_norm<tanh_act, double>({3, 2, 2}), "layer_norm_tanh", 3);

    {
        // Batch normalisation: a training pass (batch statistics), its running
        // estimates after the step, then an evaluation pass.
        const std::string name = "batch_norm_tanh";
        batch_norm<tanh_act, double> norm({2, 3, 3});
        conv_tests::fill_into(norm.weights(), 0.2, 0.4);
        conv_tests::fill_into(norm.bias(), 0.3, 0.2);
        auto x = matrix<double>::from_shape({3, 18});
        conv_tests::fill_into(x, 0.1, 1.0);
        CHECK(conv_tests::gap_to(norm.forward_training(x, 0), value(name, "output")) < 1e-15);
        const auto g = conv_tests::fill(3 * 18, 0.4, 1.0);
        norm.scale_by_derivative(g.data(), 18);
        auto into = matrix<double>::from_shape({3, 18});
        norm.backpropagate(into);
        CHECK(conv_tests::gap_to(into, value(name, "input_gradient")) < 1e-15);
        norm.compute_gradient(x);
        CHECK(conv_tests::gap_to(norm.weight_gradient(), value(name, "weight_gradient")) < 1e-15);
        CHECK(conv_tests::gap_to(norm.bias_gradient(), value(name, "bias_gradient")) < 1e-15);
        norm.commit_training_pass();
        CHECK(conv_tests::gap_to(norm.running_mean(), value(name, "running_mean")) < 1e-15);
        CHECK(conv_tests::gap_to(norm.running_var(), value(name, "running_var")) < 1e-15);
        CHECK(conv_tests::gap_to(norm.forward(x), value(name, "evaluation_output")) < 1e-15);
    }

    const auto check_pool = [&](auto layer, const std::string& name, std::size_t n) {
        CAPTURE(name);
        matrix<double> input_gradient;
        conv_tests::run_layer_case(layer, n, input_gradient);
        CHECK(conv_tests::gap_to(layer.output(), value(name, "output")) < 1e-15);
        CHECK(conv_tests::gap_to(input_gradient, value(name, "input_gradient")) < 1e-15);
    };
    check_pool(max_pool2d<double>({2, 7, 7}, 3, 2), "max_pool_k3_s2", 2);
    check_pool(avg_pool2d<double>({2, 4, 5}, 2, 1), "avg_pool_k2_s1", 1);

    // The stack: conv, tanh, max-pool, flatten, dense, softmax cross-entropy, by backprop.
    auto net = make_network<backprop, softmax_cross_entropy>(
      1, conv2d<tanh_act, double>({1, 6, 6}, {.out_channels = 3, .kernel = 3, .padding = 1}),
      max_pool2d<double>({3, 6, 6}, 2), flatten<double>({3, 3, 3}), dense<identity, double>{27, 4});
    conv_tests::fill_into(net.layer<0>().weights(), 0.2, 0.4);
    conv_tests::fill_into(net.layer<0>().bias(), 0.3, 0.2);
    conv_tests::fill_into(net.layer<3>().weights(), 0.5, 0.3);
    conv_tests::fill_into(net.layer<3>().bias(), 0.6, 0.1);
    auto x = matrix<double>::from_shape({3, 36});
    conv_tests::fill_into(x, 0.1, 1.0);
    const auto y = one_hot<double>(std::span<const int>(std::vector<int>{0, 2, 3}), 4);
    const double loss = net.compute_gradients(x, y);
    CHECK(std::abs(loss - value("stack", "loss")[0]) < 1e-15);
    CHECK(conv_tests::gap_to(net.layer<3>().output(), value("stack", "output")) < 1e-15);
    const auto& conv = net.layer<0>();
    const auto& top = net.layer<3>();
    CHECK(conv_tests::gap_to(conv.weight_gradient(), value("stack", "conv_weight_gradient")) <
          1e-15);
    CHECK(conv_tests::gap_to(conv.bias_gradient(), value("stack", "conv_bias_gradient")) < 1e-15);
    CHECK(conv_tests::gap_to(top.weight_gradient(), value("stack", "dense_weight_gradient")) <
          1e-15);
    CHECK(conv_tests::gap_to(top.bias_gradient(), value("stack", "dense_bias_gradient")) < 1e-15);
}

// Central differences in double (the tolerance argument of test_gradients.cpp:
// 1e-5 relative): every parameter of two convolutions with stride and padding,
// through pooling, flatten and dense layers.
TEST_CASE("backprop through conv2d matches finite differences", "[layers][conv][gradient]") {
    auto net = make_network<backprop, softmax_cross_entropy>(
      41,
      conv2d<tanh_act, double>({2, 7, 7},
                               {.out_channels = 3, .kernel = 3, .stride = 2, .padding = 1}),
      conv2d<sigmoid, double>({3, 4, 4}, {.out_channels = 4, .kernel = 2}),
      avg_pool2d<double>({4, 3, 3}, 2, 1), flatten<double>({4, 2, 2}),
      dense<identity, double>{16, 3});
    const auto x = random_matrix<double>(4, 98, 42);
    const auto y = one_hot<double>(std::span<const int>(std::vector<int>{0, 1, 2, 1}), 3);
    const auto result = check_gradients(net, x, y, {.step = 1e-5, .floor = 1e-4});
    CAPTURE(result.worst_layer, result.worst_entry);
    CHECK(result.entries_checked == (3 * 18 + 3) + (4 * 12 + 4) + (16 * 3 + 3));
    CHECK(result.max_rel_error < 1e-5);
}

TEST_CASE("conv2d gives the same bits on one and two threads", "[layers][conv]") {
    // Several chunks (checked below): the weight gradient's groups, not the
    // threads, fix the order of its sums.
    // In fp32 and in mixed bf16.
    const auto x = random_matrix<float>(130, 784, 51);
    const auto signal = random_matrix<float>(130, 3 * 784, 52);
    const auto run = [&](int threads, auto precision) {
        using P = typename decltype(precision)::type;
        set_blas_threads(threads);
        conv2d<tanh_act, P> layer({1, 28, 28}, {.out_channels = 3, .kernel = 5, .padding = 2});
        layer.initialize(53);
        REQUIRE(layer.chunk_samples() < 40);
        const matrix<float> out = layer.forward(x);
        layer.scale_by_derivative(signal.data(), signal.shape(1));
        layer.compute_gradient(x);
        auto into = matrix<float>::from_shape({130, 784});
        layer.backpropagate(into);
        return std::vector<matrix<float>>{
          out, layer.weight_gradient(), into,
          matrix<float>(xt::reshape_view(layer.bias_gradient(), {1, 3}))};
    };
    const auto compare = [&](auto precision) {
        const auto one = run(1, precision);
        const auto two = run(2, precision);
        set_blas_threads(1);
        for (std::size_t i = 0; i < one.size(); ++i) {
            CAPTURE(i);
            CHECK(one[i] == two[i]);
        }
    };
    compare(precision_tag<float>{});
    compare(precision_tag<mixed_bf16>{});
}

TEST_CASE("feedback alignment through conv2d with B = W is backprop; DFA never runs a "
          "backward-data product",
          "[layers][conv][dfa]") {
    const auto x = random_matrix<double>(4, 2 * 6 * 6, 61);
    const auto y = one_hot<double>(std::span<const int>(std::vector<int>{0, 1, 2, 1}), 3);
    const auto stack = [](auto method, std::uint64_t seed) {
        return make_network<decltype(method), softmax_cross_entropy>(
          seed, conv2d<tanh_act, double>({2, 6, 6}, {.out_channels = 3, .kernel = 3, .padding = 1}),
          conv2d<tanh_act, double>({3, 6, 6}, {.out_channels = 4, .kernel = 3, .stride = 2}),
          max_pool2d<double>({4, 2, 2}, 2), flatten<double>({4, 1, 1}),
          dense<identity, double>{4, 3});
    };
    auto bp = stack(backprop{}, 62);
    auto fa = stack(feedback_alignment{}, 62);
    REQUIRE(fa.feedback().feedback_matrix<double>(0).shape(0) == 4);  // W's shape: 4 filters
    REQUIRE(fa.feedback().feedback_matrix<double>(0).shape(1) == 27); // of 3x3x3
    bp.compute_gradients(x, y);
    fa.compute_gradients(x, y);
    CHECK(max_abs_diff(fa.layer<0>().weight_gradient(), bp.layer<0>().weight_gradient()) > 1e-4);
    fa.feedback().feedback_matrix<double>(0) = fa.layer<1>().weights();
    fa.feedback().feedback_matrix<double>(3) =
      lightloop::testing::transposed(fa.layer<4>().weights());
    fa.compute_gradients(x, y);
    CHECK(max_abs_diff(fa.layer<0>().weight_gradient(), bp.layer<0>().weight_gradient()) < 1e-15);
    CHECK(max_abs_diff(fa.layer<1>().weight_gradient(), bp.layer<1>().weight_gradient()) < 1e-15);
    // The diagnostics compare the random filters with the filters they replace.
    const auto weights = weight_alignment(fa);
    CHECK(std::abs(weights[0] - 1.0) < 1e-12);
    CHECK(std::isnan(weights[1])); // a max-pool above: no weights
    const auto signals = gradient_alignment(fa, x, y);
    CHECK(std::abs(signals.mean[0] - 1.0) < 1e-12);
    CHECK(std::isnan(signals.mean[2])); // the max-pool has no signal of its own

    // DFA: the error is projected into both feature maps (3x6x6 and 4x2x2
    // slices), nothing travels back through a convolution.
    auto direct = stack(dfa<dense_gaussian>{}, 63);
    CHECK(direct.feedback().projection_size() == 3 * 36 + 4 * 4);
    sgd<double> opt{0.01};
    for (int step = 0; step < 3; ++step) {
        direct.train_step(x, y, opt);
    }
    CHECK(direct.layer<0>().backward_data_products() == 0);
    CHECK(direct.layer<1>().backward_data_products() == 0);
    bp.compute_gradients(x, y);
    CHECK(bp.layer<1>().backward_data_products() == 2); // backprop needs it (layer 0's needs none)
    CHECK(bp.layer<0>().backward_data_products() == 0);

    // The overall alignment averages the layers that have a signal of their
    // own (the probe runs backprop, backward data included).
    const auto report = gradient_alignment(direct, x, y);
    REQUIRE(std::isnan(report.mean[2]));
    REQUIRE(std::isnan(report.mean[3]));
    CHECK(std::abs(report.overall() - (report.mean[0] + report.mean[1]) / 2) < 1e-15);
}

TEST_CASE("a float conv network's gradients under DFA and backprop match its double twin",
          "[layers][conv][dfa]") {
    // The whole step in a network (forward of every layer, then each
    // layer's gradient from the input its forward kept), several chunks with
    // a shorter last, two steps (the second from updated weights): float
    // layers (oneDNN's primitives where built) against double (im2col) with
    // the same weights and feedback matrix.
    const auto make = [](auto method, auto precision) {
        using T = typename decltype(precision)::type;
        return make_network<decltype(method), softmax_cross_entropy>(
          71, conv2d<tanh_act, T>({1, 12, 12}, {.out_channels = 4, .kernel = 3, .padding = 1}),
          max_pool2d<T>({4, 12, 12}, 2),
          conv2d<tanh_act, T>({4, 6, 6}, {.out_channels = 6, .kernel = 3, .padding = 1}),
          max_pool2d<T>({6, 6, 6}, 2), flatten<T>({6, 3, 3}), dense<tanh_act, T>{54, 16},
          dense<identity, T>{16, 10});
    };
    const std::size_t n = 40;
    const auto x64 = random_matrix<double>(n, 144, 72);
    const matrix<float> x32 = xt::cast<float>(x64);
    std::vector<int> labels(n);
    for (std::size_t i = 0; i < n; ++i) {
        labels[i] = static_cast<int>(i % 10);
    }
    const auto y64 = one_hot<double>(std::span<const int>(labels), 10);
    const auto y32 = one_hot<float>(std::span<const int>(labels), 10);
    const auto compare = [&](auto method) {
        auto single = make(method, precision_tag<float>{});
        auto twin = make(method, precision_tag<double>{});
        // The twin takes the float network's weights (and DFA's matrix).
        const auto copy_layer = [&](auto& from, auto& to) {
            to.weights() = xt::cast<double>(from.weights());
            to.bias() = xt::cast<double>(from.bias());
        };
        copy_layer(single.template layer<0>(), twin.template layer<0>());
        copy_layer(single.template layer<2>(), twin.template layer<2>());
        copy_layer(single.template layer<5>(), twin.template layer<5>());
        copy_layer(single.template layer<6>(), twin.template layer<6>());
        if constexpr (std::is_same_v<decltype(method), dfa<dense_gaussian>>) {
            twin.feedback().device().template feedback_matrix<double>() =
              xt::cast<double>(single.feedback().device().template feedback_matrix<float>());
        }
        sgd<float> opt32{0.05};
        sgd<double> opt64{0.05};
        for (int step = 0; step < 2; ++step) {
            CAPTURE(step);
            single.compute_gradients(x32, y32);
            twin.compute_gradients(x64, y64);
            const auto gap = [](const auto& a, const auto& b) {
                return max_abs_diff(matrix<double>(xt::cast<double>(a)), b) /
                       std::max(1e-12, static_cast<double>(xt::amax(xt::abs(b))()));
            };
            CHECK(gap(single.template layer<0>().weight_gradient(),
                      twin.template layer<0>().weight_gradient()) < 1e-4);
            CHECK(gap(single.template layer<2>().weight_gradient(),
                      twin.template layer<2>().weight_gradient()) < 1e-4);
            CHECK(gap(single.template layer<5>().weight_gradient(),
                      twin.template layer<5>().weight_gradient()) < 1e-4);
            single.apply_gradients(opt32);
            twin.apply_gradients(opt64);
        }
    };
    compare(backprop{});
    compare(dfa<dense_gaussian>{});
}

TEST_CASE("conv2d refuses settings that do not fit, naming them", "[layers][conv]") {
    CHECK_THROWS_WITH((conv2d<>({1, 4, 4}, {.out_channels = 2, .kernel = 5})),
                      Catch::Contains("does not fit") && Catch::Contains("1x4x4"));
    CHECK_THROWS_AS((conv2d<>({1, 4, 4}, {.out_channels = 0, .kernel = 3})), config_error);
    CHECK_THROWS_AS((conv2d<>({1, 4, 4}, {.out_channels = 2, .kernel = 3, .stride = 0})),
                    config_error);
    CHECK_THROWS_AS((conv2d<>({1, 4, 4}, {.out_channels = 2, .kernel = 3, .padding = 3})),
                    config_error);
    conv2d<> layer({1, 4, 4}, {.out_channels = 2, .kernel = 3});
    CHECK_THROWS_AS(layer.forward(random_matrix<float>(2, 15, 1)), shape_error);
    CHECK_THROWS_WITH(
      (make_network<backprop, mse>(1, conv2d<tanh_act>({1, 6, 6}, {.out_channels = 2, .kernel = 3}),
                                   max_pool2d<>({2, 6, 6}, 2), dense<identity>{18, 3})),
      Catch::Contains("takes 72") && Catch::Contains("gives 32"));
    // The right size, the wrong maps: 2x4x4 read as 4x2x4.
    CHECK_THROWS_WITH((make_network<backprop, mse>(
                        1, conv2d<tanh_act>({1, 6, 6}, {.out_channels = 2, .kernel = 3}),
                        max_pool2d<>({4, 2, 4}, 2), flatten<>({4, 1, 2}), dense<identity>{8, 3})),
                      Catch::Contains("takes maps of 4x2x4") && Catch::Contains("gives 2x4x4"));
}
