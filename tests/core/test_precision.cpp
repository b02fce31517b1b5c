// Mixed bf16 precision: the rounding, the backends' bf16 products against
// the product of their rounded operands, the mixed dense layer against the
// same references, the optimizers' fused copy, the network keeping that copy
// current, checkpoints and training.
#include <catch2/catch.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "support/files.hpp"
#include "support/helpers.hpp"

using namespace lightloop;

namespace precision_tests {

/// op(A) op(B) in double, from operands first rounded to bf16.
matrix<double> rounded_product(const matrix<float>& a, bool ta, const matrix<float>& b, bool tb) {
    matrix<float> ar = a;
    matrix<float> br = b;
    for (auto& v : ar) {
        v = round_to_bf16(v);
    }
    for (auto& v : br) {
        v = round_to_bf16(v);
    }
    return lightloop::testing::naive_product(ar, ta, br, tb);
}

/// The same products of |entries|: what bounds fp32 accumulation error.
matrix<double> magnitude_product(const matrix<float>& a, bool ta, const matrix<float>& b, bool tb) {
    matrix<float> aa = xt::abs(a);
    matrix<float> ba = xt::abs(b);
    return lightloop::testing::naive_product(aa, ta, ba, tb);
}

/// Products of bf16 values are exact in fp32; summing k of them in fp32 in
/// any order errs by at most (k - 1) u sum |a b| (u = 2^-24), the final scale
/// and the beta term by a rounding each.
double accumulation_bound(std::size_t k, double magnitude) {
    return (static_cast<double>(k) + 2.0) * std::ldexp(1.0, -24) * magnitude + 1e-30;
}

template <class Backend>
void check_backend_products(std::size_t m, std::size_t n, std::size_t k) {
    using operand = typename Backend::bf16_operand;
    for (const bool ta : {false, true}) {
        for (const bool tb : {false, true}) {
            const auto a = lightloop::testing::random_matrix<float>(ta ? k : m, ta ? m : k, 11);
            const auto b = lightloop::testing::random_matrix<float>(tb ? n : k, tb ? k : n, 12);
            std::vector<operand> a16(a.size());
            std::vector<operand> b16(b.size());
            convert_to_bf16(a.data(), a16.data(), a.size());
            convert_to_bf16(b.data(), b16.data(), b.size());
            const auto ref = rounded_product(a, ta, b, tb);
            const auto exact = lightloop::testing::naive_product(a, ta, b, tb);
            const auto mag = magnitude_product(a, ta, b, tb);
            const auto c0 = lightloop::testing::random_matrix<float>(m, n, 13);
            // Both entry points: spread over the team, and one call on the
            // calling thread (product_here, for layers that spread their own
            // work).
            for (const auto& [beta, here] : {std::pair{0.0f, false}, std::pair{1.0f, false},
                                             std::pair{0.0f, true}, std::pair{1.0f, true}}) {
                const float alpha = 0.25f;
                matrix<float> c = c0;
                const transpose op_a = ta ? transpose::yes : transpose::no;
                const transpose op_b = tb ? transpose::yes : transpose::no;
                if (here) {
                    Backend::product_here(op_a, op_b, m, n, k, alpha, a16.data(), a.shape(1),
                                          b16.data(), b.shape(1), beta, c.data(), n);
                } else {
                    Backend::product(op_a, op_b, m, n, k, alpha, a16.data(), a.shape(1), b16.data(),
                                     b.shape(1), beta, c.data(), n);
                }
                double worst = 0.0;
                double rounding_shift = 0.0;
                for (std::size_t i = 0; i < m; ++i) {
                    for (std::size_t j = 0; j < n; ++j) {
                        const double expected = alpha * ref(i, j) + beta * c0(i, j);
                        const double bound = accumulation_bound(k, alpha * mag(i, j)) +
                                             std::ldexp(std::abs(expected), -23);
                        worst = std::max(worst, std::abs(c(i, j) - expected) / bound);
                        rounding_shift =
                          std::max(rounding_shift, std::abs(alpha * (exact(i, j) - ref(i, j))) /
                                                     accumulation_bound(k, alpha * mag(i, j)));
                    }
                }
                INFO(Backend::name << " ta=" << ta << " tb=" << tb << " beta=" << beta
                                   << (here ? " product_here" : " product"));
                CHECK(worst <= 1.0);
                // Rounding the operands moves the product past that bound:
                // the check above tells bf16 operands from fp32 ones.
                CHECK(rounding_shift > 4.0);
            }
        }
    }
}

} // namespace precision_tests

TEST_CASE("bf16 rounds to nearest even, flushes subnormals and keeps NaN and infinity",
          "[core][precision]") {
    CHECK(to_float(to_bf16(1.0f)) == 1.0f);
    CHECK(to_float(to_bf16(-3.5f)) == -3.5f);
    // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even 1.
    CHECK(round_to_bf16(1.0f + std::ldexp(1.0f, -8)) == 1.0f);
    // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: to the even one.
    CHECK(round_to_bf16(1.0f + 3.0f * std::ldexp(1.0f, -8)) == 1.0f + std::ldexp(1.0f, -6));
    // Above halfway rounds up, below rounds down.
    CHECK(round_to_bf16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)) ==
          1.0f + std::ldexp(1.0f, -7));
    CHECK(round_to_bf16(1.0f + std::ldexp(1.0f, -8) - std::ldexp(1.0f, -20)) == 1.0f);
    // Subnormals become zeros of their sign.
    const float tiny = std::numeric_limits<float>::denorm_min() * 1000.0f;
    CHECK(std::bit_cast<std::uint32_t>(round_to_bf16(tiny)) == 0U);
    CHECK(std::bit_cast<std::uint32_t>(round_to_bf16(-tiny)) == 0x80000000U);
    // The smallest normal float stays.
    CHECK(round_to_bf16(std::numeric_limits<float>::min()) == std::numeric_limits<float>::min());
    // Past the largest bf16, to infinity; infinities and NaN stay.
    CHECK(std::isinf(round_to_bf16(std::numeric_limits<float>::max())));
    CHECK(round_to_bf16(-std::numeric_limits<float>::infinity()) ==
          -std::numeric_limits<float>::infinity());
    // A NaN whose payload sits in the dropped half stays a NaN.
    CHECK(std::isnan(round_to_bf16(std::bit_cast<float>(0x7f800001U))));
    CHECK(std::isnan(round_to_bf16(std::numeric_limits<float>::quiet_NaN())));
}

TEST_CASE("bulk and vector bf16 conversion equal the scalar one", "[core][precision]") {
    auto values = lightloop::testing::random_matrix<float>(1, 203, 5);
    values(0, 0) = std::numeric_limits<float>::infinity();
    values(0, 17) = std::numeric_limits<float>::quiet_NaN();
    values(0, 18) = std::numeric_limits<float>::denorm_min();
    values(0, 19) = 1.0f + std::ldexp(1.0f, -8);
    values(0, 200) = -0.0f;
    std::vector<bf16> bulk(values.size());
    std::vector<float> held(values.size());
    convert_to_bf16(values.data(), bulk.data(), values.size());
    convert_to_bf16(values.data(), held.data(), values.size());
    std::vector<bf16> lanes(values.size());
    simd::for_each_lane<float>(values.size(), [&](std::size_t i, auto lane) {
        using V = decltype(lane);
        simd::store_bf16(lanes.data() + i, simd::load<V>(values.data() + i));
    });
    for (std::size_t i = 0; i < values.size(); ++i) {
        INFO("entry " << i << " = " << values[i]);
        CHECK(bulk[i] == to_bf16(values[i]));
        CHECK(lanes[i] == to_bf16(values[i]));
        CHECK(std::bit_cast<std::uint32_t>(held[i]) ==
              std::bit_cast<std::uint32_t>(round_to_bf16(values[i])));
    }
}

TEST_CASE("bf16 products equal the fp32-accumulated product of the rounded operands",
          "[core][precision]") {
    // Small and odd; and large enough to be cut into pieces on two threads.
    precision_tests::check_backend_products<openblas_backend>(13, 37, 29);
#if defined(LIGHTLOOP_WITH_ONEDNN)
    precision_tests::check_backend_products<onednn_backend>(13, 37, 29);
    precision_tests::check_backend_products<onednn_backend>(96, 160, 300);
    // Wide enough to be cut into column pieces on the team (two of 272 and
    // 248 columns), every transpose.
    precision_tests::check_backend_products<onednn_backend>(96, 520, 200);
#endif
}

TEST_CASE("packed bf16 weights lie where their layout says, the padding zero",
          "[core][precision]") {
    // W (rows x cols) as oneDNN's AVX512-BF16 kernel packs it (32 x 64
    // blocks), a layout of narrower blocks, and W's rows packed in two
    // calls from an odd row (groups that start and end inside 16 rows).
    struct case_ {
        std::size_t rows, cols, n_block, split;
    };
    for (const case_ t : {case_{1024, 784, 64, 0}, case_{70, 37, 64, 0}, case_{70, 37, 16, 0},
                          case_{100, 65, 32, 37}, case_{33, 1, 16, 5}}) {
        INFO(t.rows << " x " << t.cols << ", blocks of " << t.n_block);
        packed_bf16_layout l;
        l.rows = t.rows;
        l.cols = t.cols;
        l.k_block = 32;
        l.n_block = t.n_block;
        const std::size_t k_padded = (t.cols + 31) / 32 * 32;
        const std::size_t n_padded = (t.rows + t.n_block - 1) / t.n_block * t.n_block;
        l.k_stride = 32 * t.n_block;
        l.n_stride = k_padded * t.n_block;
        l.size = k_padded * n_padded;
        const auto w = lightloop::testing::random_matrix<float>(t.rows, t.cols, 5);
        std::vector<bf16> plain(w.size());
        convert_to_bf16(w.data(), plain.data(), w.size());
        std::vector<bf16> converted(l.size);
        convert_to_packed_bf16(l, w.data(), converted.data());
        std::vector<bf16> packed(l.size);
        const std::size_t split = t.split == 0 ? t.rows : t.split;
        pack_bf16_rows(l, plain.data(), t.cols, 0, split, packed.data());
        pack_bf16_rows(l, plain.data() + split * t.cols, t.cols, split, t.rows - split,
                       packed.data());
        // Each entry where the layout says, by the definition: block (k / 32,
        // n / n_block), pair k % 32 / 2 of the block, output n % n_block,
        // then k's parity.
        std::vector<bool> used(l.size, false);
        bool placed = true;
        for (std::size_t r = 0; r < t.rows; ++r) {
            for (std::size_t c = 0; c < t.cols; ++c) {
                const std::size_t at = (c / 32) * (32 * t.n_block) + (r / t.n_block) * l.n_stride +
                                       (c % 32) / 2 * 2 * t.n_block + (r % t.n_block) * 2 + c % 2;
                placed = placed && l.offset(r, c) == at && converted[at] == plain[r * t.cols + c] &&
                         packed[at] == plain[r * t.cols + c];
                used[at] = true;
            }
        }
        CHECK(placed);
        bool padding_zero = true;
        for (std::size_t i = 0; i < l.size; ++i) {
            padding_zero =
              padding_zero && (used[i] || (converted[i].bits == 0 && packed[i].bits == 0));
        }
        CHECK(padding_zero);
    }
    // Layouts the packing cannot fill are refused, not written past.
    packed_bf16_layout wide{16, 64, 64, 64, 64 * 64, 64 * 64, 64 * 64};
    const std::vector<float> w(16 * 64, 1.0f);
    std::vector<bf16> room(64 * 64);
    CHECK_THROWS_WITH(convert_to_packed_bf16(wide, w.data(), room.data()),
                      Catch::Contains("blocks of 64 x 64"));
    packed_bf16_layout short_size{16, 64, 32, 64, 32 * 64, 64 * 64, 1000};
    CHECK_THROWS_WITH(convert_to_packed_bf16(short_size, w.data(), room.data()),
                      Catch::Contains("size 1000"));
    packed_bf16_layout fine{16, 64, 32, 64, 32 * 64, 64 * 64, 64 * 64};
    const std::vector<bf16> rows(16 * 64);
    CHECK_THROWS_WITH(pack_bf16_rows(fine, rows.data(), 64, 8, 9, room.data()),
                      Catch::Contains("rows 8 to 17 of a layout of 16"));
}

#if defined(LIGHTLOOP_WITH_ONEDNN)
TEST_CASE("oneDNN's product with packed weights is the rounded operands' product",
          "[core][precision]") {
    if (!detail::onednn::bf16_matmul_available()) {
        // No bf16 matmul in oneDNN here (an AVX2 CPU): no layout is offered.
        CHECK_FALSE(onednn_packed_weights_layout(128, 1024, 784).has_value());
        return;
    }
    struct shape {
        std::size_t m, rows, cols;
    };
    for (const shape s : {shape{128, 1024, 784}, shape{13, 70, 37}, shape{100, 10, 1024}}) {
        INFO(s.m << " x " << s.cols << " -> " << s.rows);
        const auto layout = onednn_packed_weights_layout(s.m, s.rows, s.cols);
        if (!layout) {
            // Without bf16 instructions (AVX-512 without AVX512-BF16) the
            // products run widened to fp32 and no layout is offered; the
            // layers run plain products. AVX512-BF16 and AMX offer one.
            INFO("oneDNN's ISA: " << onednn_isa());
            CHECK_FALSE(onednn_native_bf16());
            continue;
        }
        CHECK(layout->rows == s.rows);
        CHECK(layout->cols == s.cols);
        const auto x = lightloop::testing::random_matrix<float>(s.m, s.cols, 21);
        const auto w = lightloop::testing::random_matrix<float>(s.rows, s.cols, 22);
        std::vector<bf16> x16(x.size());
        convert_to_bf16(x.data(), x16.data(), x.size());
        std::vector<bf16> packed(layout->size);
        convert_to_packed_bf16(*layout, w.data(), packed.data());
        const auto ref = precision_tests::rounded_product(x, false, w, true);
        const auto mag = precision_tests::magnitude_product(x, false, w, true);
        const auto c0 = lightloop::testing::random_matrix<float>(s.m, s.rows, 23);
        const auto product = [&](int threads, float beta) {
            const auto before = static_cast<int>(parallel_threads());
            set_blas_threads(threads);
            matrix<float> c = c0;
            onednn_gemm_packed(s.m, 0.25f, x16.data(), *layout, packed.data(), beta, c.data());
            set_blas_threads(before);
            return c;
        };
        for (const float beta : {0.0f, 1.0f}) {
            const auto c = product(2, beta);
            double worst = 0.0;
            for (std::size_t i = 0; i < s.m; ++i) {
                for (std::size_t j = 0; j < s.rows; ++j) {
                    const double expected = 0.25 * ref(i, j) + beta * c0(i, j);
                    const double bound =
                      precision_tests::accumulation_bound(s.cols, 0.25 * mag(i, j)) +
                      std::ldexp(std::abs(expected), -23);
                    worst = std::max(worst, std::abs(c(i, j) - expected) / bound);
                }
            }
            INFO("beta " << beta);
            CHECK(worst <= 1.0);
            // Pieces of C's rows: the same bits on any thread count.
            CHECK(lightloop::testing::identical(c, product(1, beta)));
            CHECK(lightloop::testing::identical(c, product(3, beta)));
        }
    }
}

#endif

#if defined(LIGHTLOOP_WITH_ONEDNN)
TEST_CASE("oneDNN products give the same bits on one, two and three threads", "[core][precision]") {
    // A forward product (batch rows, a layer's outputs as columns: cut into
    // column pieces fixed by the shape), a wider one whose last piece is
    // narrower, the signal product of backprop (NN), and a weight gradient
    // (more rows than columns: cut into one row piece a thread on AVX-512,
    // into row pieces fixed by the shape on AVX2, where oneDNN's sums depend
    // on a product's height; CTest runs this under ONEDNN_MAX_CPU_ISA=AVX2).
    struct shape {
        std::size_t m, n, k;
        transpose ta, tb;
    };
    for (const shape s : {shape{128, 1024, 784, transpose::no, transpose::yes},
                          shape{128, 784, 1024, transpose::no, transpose::no},
                          shape{64, 1000, 300, transpose::no, transpose::yes},
                          shape{1024, 784, 128, transpose::yes, transpose::no}}) {
        INFO(s.m << " x " << s.n << ", " << s.k << " deep");
        const auto a = lightloop::testing::random_matrix<float>(
          s.ta == transpose::yes ? s.k : s.m, s.ta == transpose::yes ? s.m : s.k, 1);
        const auto b = lightloop::testing::random_matrix<float>(
          s.tb == transpose::yes ? s.n : s.k, s.tb == transpose::yes ? s.k : s.n, 2);
        std::vector<bf16> a16(a.size());
        std::vector<bf16> b16(b.size());
        convert_to_bf16(a.data(), a16.data(), a.size());
        convert_to_bf16(b.data(), b16.data(), b.size());
        const auto product = [&](int threads, const auto* ap, const auto* bp) {
            const auto before = static_cast<int>(parallel_threads());
            set_blas_threads(threads);
            matrix<float> c = matrix<float>::from_shape({s.m, s.n});
            onednn_gemm(s.ta, s.tb, s.m, s.n, s.k, 1.0f, ap, a.shape(1), bp, b.shape(1), 0.0f,
                        c.data(), s.n);
            set_blas_threads(before);
            return c;
        };
        const auto one = product(1, a16.data(), b16.data());
        CHECK(lightloop::testing::identical(one, product(2, a16.data(), b16.data())));
        CHECK(lightloop::testing::identical(one, product(3, a16.data(), b16.data())));
        const auto one32 = product(1, a.data(), b.data());
        CHECK(lightloop::testing::identical(one32, product(2, a.data(), b.data())));
        CHECK(lightloop::testing::identical(one32, product(3, a.data(), b.data())));
        if (!onednn_native_bf16()) {
            // Without bf16 instructions (ONEDNN_MAX_CPU_ISA lowers them in
            // CTest) the bf16 products are oneDNN's fp32 products of the bf16
            // values, not its emulated bf16 kernels (slower than its fp32).
            INFO("oneDNN's ISA: " << onednn_isa());
            matrix<float> a_values = a;
            matrix<float> b_values = b;
            std::transform(a16.begin(), a16.end(), a_values.begin(), to_float);
            std::transform(b16.begin(), b16.end(), b_values.begin(), to_float);
            CHECK(lightloop::testing::identical(one, product(1, a_values.data(), b_values.data())));
            CHECK(lightloop::testing::identical(one, product(2, a_values.data(), b_values.data())));
        }
    }
}
#endif

TEST_CASE("a mixed-precision dense layer computes from bf16 operands", "[layers][precision]") {
    using namespace precision_tests;
    const std::size_t n = 19;
    const std::size_t in = 37;
    const std::size_t out = 29;
    dense<tanh_act, mixed_bf16> layer(in, out);
    layer.initialize(3);
    for (std::size_t o = 0; o < out; ++o) {
        layer.bias()(o) = 0.01f * static_cast<float>(o);
    }
    const auto x = lightloop::testing::random_matrix<float>(n, in, 4);
    const matrix<float> h = layer.forward(x);
    const matrix<float> w = layer.weights();
    const auto a_ref = rounded_product(x, false, w, true);
    const auto a_mag = magnitude_product(x, false, w, true);
    for (std::size_t r = 0; r < n; ++r) {
        for (std::size_t c = 0; c < out; ++c) {
            const double a = a_ref(r, c) + layer.bias()(c);
            // tanh is 1-Lipschitz; its own rounding adds a few ulps.
            CHECK(std::abs(h(r, c) - std::tanh(a)) <= accumulation_bound(in, a_mag(r, c)) + 1e-6);
        }
    }
    // Backward: delta = s ⊙ f'(a), then delta W and (1/n) delta^T x, both from
    // bf16 operands.
    const auto signal = lightloop::testing::random_matrix<float>(n, out, 5);
    layer.scale_by_derivative(signal.data(), out);
    const matrix<float> delta = layer.delta();
    matrix<float> into = matrix<float>::from_shape({n, in});
    layer.backpropagate(into);
    const auto back_ref = rounded_product(delta, false, w, false);
    const auto back_mag = magnitude_product(delta, false, w, false);
    layer.compute_gradient(x);
    const auto grad_ref = rounded_product(delta, true, x, false);
    const auto grad_mag = magnitude_product(delta, true, x, false);
    double worst_back = 0.0;
    double worst_grad = 0.0;
    for (std::size_t r = 0; r < n; ++r) {
        for (std::size_t c = 0; c < in; ++c) {
            worst_back = std::max(worst_back, std::abs(into(r, c) - back_ref(r, c)) /
                                                accumulation_bound(out, back_mag(r, c)));
        }
    }
    for (std::size_t o = 0; o < out; ++o) {
        for (std::size_t c = 0; c < in; ++c) {
            const double expected = grad_ref(o, c) / static_cast<double>(n);
            const double bound = accumulation_bound(n, grad_mag(o, c) / static_cast<double>(n)) +
                                 std::ldexp(std::abs(expected), -23);
            worst_grad =
              std::max(worst_grad, std::abs(layer.weight_gradient()(o, c) - expected) / bound);
        }
    }
    CHECK(worst_back <= 1.0);
    CHECK(worst_grad <= 1.0);
    // The bias gradient is element-wise work: fp32 sums of the fp32 delta.
    for (std::size_t o = 0; o < out; ++o) {
        double sum = 0.0;
        for (std::size_t r = 0; r < n; ++r) {
            sum += delta(r, o);
        }
        CHECK(layer.bias_gradient()(o) == Approx(sum / static_cast<double>(n)).margin(1e-6));
    }
}

namespace precision_tests {

/// conv2d<identity, P> (float or a mixed precision) against double
/// convolutions: forward, backward data (through W and through other
/// filters) and the weight gradient, each within the bound of fp32 sums of
/// its terms, from bf16-rounded operands when P is mixed. `chunks` samples
/// chunks of the layer's products, the last one shorter.
template <class P>
void check_conv_against_double(feature_shape in, conv2d_spec spec, std::size_t chunks) {
    constexpr bool round = is_mixed_precision<P>;
    conv2d<identity, P> layer(in, spec);
    const std::size_t n = (chunks - 1) * layer.chunk_samples() + 1;
    CAPTURE(layer.describe(), n);
    layer.initialize(3);
    for (std::size_t c = 0; c < spec.out_channels; ++c) {
        layer.bias()(c) = 0.1f * static_cast<float>(c + 1);
    }
    const auto x = lightloop::testing::random_matrix<float>(n, in.size(), 4);
    // Double layers on the rounded operands (the reference), on their
    // magnitudes (what bounds fp32 sums), and on the unrounded ones.
    const auto as_double = [](const auto& m, bool rounded, bool magnitude) {
        matrix<double> d = xt::zeros<double>(m.shape());
        for (std::size_t i = 0; i < m.size(); ++i) {
            const float v = rounded ? round_to_bf16(m.data()[i]) : m.data()[i];
            d.data()[i] = magnitude ? std::abs(v) : v;
        }
        return d;
    };
    conv2d<identity, double> ref(in, spec);
    conv2d<identity, double> mag(in, spec);
    conv2d<identity, double> exact(in, spec);
    ref.weights() = as_double(layer.weights(), round, false);
    mag.weights() = as_double(layer.weights(), round, true);
    exact.weights() = as_double(layer.weights(), false, false);
    for (std::size_t c = 0; c < spec.out_channels; ++c) {
        ref.bias()(c) = exact.bias()(c) = layer.bias()(c);
    }
    const matrix<double> x_ref = as_double(x, round, false);
    const matrix<double> x_mag = as_double(x, round, true);
    const matrix<double> x_exact = as_double(x, false, false);
    const matrix<float> a = layer.forward(x);
    ref.forward(x_ref);
    mag.forward(x_mag);
    exact.forward(x_exact);
    const std::size_t patch = layer.patch_size();
    double worst = 0.0;
    double rounding_shift = 0.0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        const double expected = ref.output().data()[i];
        const double sums = accumulation_bound(patch, mag.output().data()[i]);
        worst = std::max(worst, std::abs(a.data()[i] - expected) /
                                  (sums + std::ldexp(std::abs(expected), -23)));
        rounding_shift =
          std::max(rounding_shift, std::abs(exact.output().data()[i] - expected) / sums);
    }
    CHECK(worst <= 1.0);
    if constexpr (round) {
        // fp32 operands would miss the reference by more than the bound.
        CHECK(rounding_shift > 4.0);
    } else {
        CHECK(rounding_shift == 0.0);
    }

    // Backward data and the weight gradient, from bf16 delta, W and x.
    const auto signal = lightloop::testing::random_matrix<float>(n, layer.output_size(), 5);
    layer.scale_by_derivative(signal.data(), layer.output_size());
    ref.delta() = as_double(layer.delta(), round, false);
    mag.delta() = as_double(layer.delta(), round, true);
    matrix<float> into = matrix<float>::from_shape({n, in.size()});
    matrix<double> into_ref = matrix<double>::from_shape({n, in.size()});
    matrix<double> into_mag = matrix<double>::from_shape({n, in.size()});
    layer.backpropagate(into);
    ref.backpropagate(into_ref);
    mag.backpropagate(into_mag);
    // Each input gradient sums C_out·k·k terms (the product's, then col2im's).
    const std::size_t back_terms = spec.out_channels * spec.kernel * spec.kernel;
    double worst_back = 0.0;
    for (std::size_t i = 0; i < into.size(); ++i) {
        worst_back = std::max(worst_back, std::abs(into.data()[i] - into_ref.data()[i]) /
                                            accumulation_bound(back_terms, into_mag.data()[i]));
    }
    CHECK(worst_back <= 1.0);
    // Through other filters (feedback alignment's), rounded the same way.
    const auto filters =
      lightloop::testing::random_matrix<float>(spec.out_channels, layer.patch_size(), 6);
    layer.backpropagate_with(filters, into);
    ref.backpropagate_with(as_double(filters, round, false), into_ref);
    mag.backpropagate_with(as_double(filters, round, true), into_mag);
    double worst_feedback = 0.0;
    for (std::size_t i = 0; i < into.size(); ++i) {
        worst_feedback =
          std::max(worst_feedback, std::abs(into.data()[i] - into_ref.data()[i]) /
                                     accumulation_bound(back_terms, into_mag.data()[i]));
    }
    CHECK(worst_feedback <= 1.0);
    layer.compute_gradient(x);
    ref.compute_gradient(x_ref);
    mag.compute_gradient(x_mag);
    const std::size_t positions = layer.output_shape().height * layer.output_shape().width;
    double worst_grad = 0.0;
    for (std::size_t i = 0; i < layer.weight_gradient().size(); ++i) {
        const double expected = ref.weight_gradient().data()[i];
        const double bound = accumulation_bound(n * positions, mag.weight_gradient().data()[i]) +
                             std::ldexp(std::abs(expected), -23);
        worst_grad =
          std::max(worst_grad, std::abs(layer.weight_gradient().data()[i] - expected) / bound);
    }
    CHECK(worst_grad <= 1.0);
    // The bias gradient is element-wise work on the fp32 delta.
    matrix<double> delta_exact = as_double(layer.delta(), false, false);
    for (std::size_t c = 0; c < spec.out_channels; ++c) {
        double sum = 0.0;
        for (std::size_t r = 0; r < n; ++r) {
            for (std::size_t p = 0; p < positions; ++p) {
                sum += delta_exact(r, c * positions + p);
            }
        }
        CHECK(layer.bias_gradient()(c) == Approx(sum / static_cast<double>(n)).epsilon(1e-5));
    }
}

} // namespace precision_tests

TEST_CASE("conv2d in fp32 and mixed bf16 computes what double convolutions do",
          "[layers][precision][conv]") {
    using namespace precision_tests;
    // Several chunks with a shorter last; strides, padding, non-square maps,
    // and a stride that leaves the last input rows unread.
    const conv2d_spec k5{.out_channels = 3, .kernel = 5, .padding = 2};
    const conv2d_spec strided{.out_channels = 4, .kernel = 3, .stride = 2, .padding = 1};
    const conv2d_spec wide_pad{.out_channels = 2, .kernel = 4, .stride = 3, .padding = 3};
    const conv2d_spec unread{.out_channels = 2, .kernel = 2, .stride = 2};
    check_conv_against_double<float>({2, 28, 28}, k5, 3);
    check_conv_against_double<mixed_bf16>({2, 28, 28}, k5, 3);
    check_conv_against_double<float>({3, 7, 6}, strided, 1);
    check_conv_against_double<mixed_bf16>({3, 7, 6}, strided, 2);
    check_conv_against_double<float>({1, 9, 4}, wide_pad, 2);
    check_conv_against_double<mixed_bf16>({1, 9, 4}, wide_pad, 1);
    check_conv_against_double<float>({2, 5, 5}, unread, 2);
    check_conv_against_double<mixed_bf16>({2, 5, 5}, unread, 2);
    check_conv_against_double<mixed_bf16_on<openblas_backend>>({2, 28, 28}, k5, 3);
}

#if defined(LIGHTLOOP_WITH_ONEDNN)
TEST_CASE("without bf16 instructions a mixed conv2d runs oneDNN's fp32 convolutions of the "
          "bf16 values",
          "[layers][precision][conv]") {
    // oneDNN 2.6 emulates bf16 convolutions on AVX-512 without AVX512-BF16
    // (slower than its fp32 ones) and has none on AVX2, so there a mixed
    // layer rounds its operands to bf16 values and convolves them as floats:
    // exactly what a float layer gives from the rounded x, W and delta
    // (CTest runs this under ONEDNN_MAX_CPU_ISA=AVX2 and AVX512_CORE). With
    // bf16 instructions the layer runs oneDNN's bf16 primitives (tested
    // against double convolutions above).
    if (onednn_native_bf16()) {
        SUCCEED("bf16 convolutions run on bf16 instructions here: " << onednn_isa());
        return;
    }
    INFO("oneDNN's ISA: " << onednn_isa());
    const auto rounded = [](const matrix<float>& m) {
        matrix<float> r = m;
        std::transform(m.begin(), m.end(), r.begin(), round_to_bf16);
        return r;
    };
    const feature_shape in{3, 9, 8};
    const conv2d_spec spec{.out_channels = 5, .kernel = 3, .stride = 2, .padding = 1};
    conv2d<identity, mixed_bf16> mixed(in, spec);
    conv2d<identity, float> plain(in, spec);
    mixed.initialize(4);
    mixed.bias()(1) = 0.25f;
    plain.weights() = rounded(mixed.weights());
    plain.bias() = mixed.bias();
    // 37 samples: two full chunks and a shorter last one.
    const auto x = lightloop::testing::random_matrix<float>(37, in.size(), 5);
    const auto signal = lightloop::testing::random_matrix<float>(37, mixed.output_size(), 6);
    const matrix<float> x_values = rounded(x);
    const matrix<float> d_values = rounded(signal);
    for (const int threads : {1, 2}) {
        INFO(threads << " threads");
        set_blas_threads(threads);
        const matrix<float> a = mixed.forward(x);
        CHECK(lightloop::testing::identical(a, plain.forward(x_values)));
        mixed.scale_by_derivative(signal.data(), signal.shape(1));
        plain.scale_by_derivative(d_values.data(), d_values.shape(1));
        mixed.compute_gradient(x);
        plain.compute_gradient(x_values);
        CHECK(lightloop::testing::identical(mixed.weight_gradient(), plain.weight_gradient()));
        matrix<float> back_mixed = matrix<float>::from_shape({37, in.size()});
        matrix<float> back_plain = back_mixed;
        mixed.backpropagate(back_mixed);
        plain.backpropagate(back_plain);
        CHECK(lightloop::testing::identical(back_mixed, back_plain));
    }
    set_blas_threads(1);
}
#endif

TEST_CASE("the optimizers write the weights' bf16 copy in their update pass",
          "[optim][precision]") {
    const auto g = lightloop::testing::random_matrix<float>(1, 301, 8);
    const auto w0 = lightloop::testing::random_matrix<float>(1, 301, 9);
    const auto check_optimizer = [&](auto plain, auto fused) {
        matrix<float> w_plain = w0;
        matrix<float> w_fused = w0;
        std::vector<bf16> copy(w0.size());
        std::vector<float> held(w0.size());
        for (int step = 0; step < 3; ++step) {
            plain.begin_step();
            fused.begin_step();
            const double a = plain.update_and_measure(0, std::span<float>(w_plain.data(), 301),
                                                      std::span<const float>(g.data(), 301));
            const double b = fused.update_and_measure(0, std::span<float>(w_fused.data(), 301),
                                                      std::span<const float>(g.data(), 301),
                                                      std::span<bf16>(copy));
            CHECK(a == b);
        }
        matrix<float> w_held = w0;
        auto again = fused;
        CHECK(lightloop::testing::identical(w_plain, w_fused));
        for (std::size_t i = 0; i < w0.size(); ++i) {
            CHECK(copy[i] == to_bf16(w_fused[i]));
        }
        // The emulating backend's copy: floats holding the rounded values.
        again.begin_step();
        std::vector<float> w_again(w_fused.begin(), w_fused.end());
        again.update_and_measure(0, std::span<float>(w_again),
                                 std::span<const float>(g.data(), 301), std::span<float>(held));
        for (std::size_t i = 0; i < w0.size(); ++i) {
            CHECK(held[i] == round_to_bf16(w_again[i]));
        }
    };
    check_optimizer(sgd<float>{{.learning_rate = 0.1, .momentum = 0.9}},
                    sgd<float>{{.learning_rate = 0.1, .momentum = 0.9}});
    check_optimizer(sgd<float>{{.learning_rate = 0.1}}, sgd<float>{{.learning_rate = 0.1}});
    check_optimizer(adam<float>{{.learning_rate = 0.01}}, adam<float>{{.learning_rate = 0.01}});
    sgd<float> opt{0.1};
    std::vector<float> w(4, 1.0f);
    std::vector<float> grad(4, 1.0f);
    std::vector<bf16> short_copy(3);
    CHECK_THROWS_WITH(opt.update_and_measure(0, std::span<float>(w), std::span<const float>(grad),
                                             std::span<bf16>(short_copy)),
                      Catch::Contains("bf16 copy of 3"));
}

namespace precision_tests {

template <class P>
auto make_mixed_net(std::uint64_t seed) {
    return make_network<dfa<dense_gaussian>, softmax_cross_entropy>(
      seed, dense<tanh_act, P>{2, 32}, dense<tanh_act, P>{32, 32}, dense<identity, P>{32, 3});
}

/// The logits of the first layer's forward computed from the layer's current
/// fp32 weights, rounded: what the layer must give if its bf16 copy is
/// current.
template <class Net>
double first_layer_error(Net& net, const matrix<float>& x) {
    const auto& l = std::as_const(net).template layer<0>();
    const matrix<float> w = l.weights();
    const auto a_ref = rounded_product(x, false, w, true);
    const auto a_mag = magnitude_product(x, false, w, true);
    auto& layer = net.template layer<0>();
    const matrix<float> h = layer.forward(x);
    double worst = 0.0;
    for (std::size_t r = 0; r < x.shape(0); ++r) {
        for (std::size_t c = 0; c < w.shape(0); ++c) {
            const double expected = std::tanh(a_ref(r, c) + l.bias()(c));
            worst = std::max(worst, std::abs(h(r, c) - expected) /
                                      (accumulation_bound(x.shape(1), a_mag(r, c)) + 1e-6));
        }
    }
    return worst;
}

} // namespace precision_tests

TEST_CASE("a mixed network keeps the weights' bf16 copy current, and sees changes made outside",
          "[network][precision]") {
    const auto data = make_spirals(64, 3, 1.0, 0.02, 1);
    auto net = precision_tests::make_mixed_net<mixed_bf16>(3);
    sgd<float> opt{{.learning_rate = 0.05, .momentum = 0.9}};
    for (int step = 0; step < 5; ++step) {
        net.train_step(data.inputs, data.targets, opt);
    }
    // The optimizer's pass wrote the copy the next product uses.
    CHECK(precision_tests::first_layer_error(net, data.inputs) <= 1.0);
    // Weights changed through the layer: the next product sees them.
    net.layer<0>().weights() *= -2.0f;
    CHECK(precision_tests::first_layer_error(net, data.inputs) <= 1.0);
    // And after more steps.
    net.train_step(data.inputs, data.targets, opt);
    CHECK(precision_tests::first_layer_error(net, data.inputs) <= 1.0);
}

TEST_CASE("a mixed network's step that overflows leaves no stale bf16 copy behind",
          "[network][precision][divergence]") {
    // Layers 0 and 1 update first (their copies written from the new weights), then layer 2
    // overflows and every weight is put back: the copies must follow the weights back.
    const auto data = make_spirals(64, 3, 1.0, 0.02, 1);
    auto net = precision_tests::make_mixed_net<mixed_bf16>(3);
    sgd<float> opt{{.learning_rate = 1.0, .weight_decay = 3.0}};
    net.train_step(data.inputs, data.targets, opt);
    const matrix<float> w0 = std::as_const(net).layer<0>().weights();
    net.layer<2>().weights()(1, 2) = 2e38f;
    CHECK_THROWS_WITH(net.train_step(data.inputs, data.targets, opt),
                      Catch::Contains("no parameter and no optimizer state changed"));
    REQUIRE(lightloop::testing::identical(std::as_const(net).layer<0>().weights(), w0));
    CHECK(precision_tests::first_layer_error(net, data.inputs) <= 1.0);
}

TEST_CASE("a mixed network's checkpoint restores what it predicts", "[io][precision]") {
    lightloop::testing::scratch_dir dir("precision");
    const auto data = make_spirals(64, 3, 1.0, 0.02, 1);
    auto net = precision_tests::make_mixed_net<mixed_bf16>(3);
    sgd<float> opt{{.learning_rate = 0.05, .momentum = 0.9}};
    for (int step = 0; step < 5; ++step) {
        net.train_step(data.inputs, data.targets, opt);
    }
    save_checkpoint(net, opt, dir / "mixed.ckpt", 1);
    const matrix<float> before = net.forward(data.inputs);
    // Another network of the same architecture whose bf16 copy is current
    // for other weights: loading must not leave it predicting from them.
    auto other = precision_tests::make_mixed_net<mixed_bf16>(3);
    sgd<float> other_opt{{.learning_rate = 0.05, .momentum = 0.9}};
    other.train_step(data.inputs, data.targets, other_opt);
    REQUIRE_FALSE(lightloop::testing::identical(other.forward(data.inputs), before));
    load_checkpoint(other, other_opt, dir / "mixed.ckpt");
    CHECK(lightloop::testing::identical(other.forward(data.inputs), before));
    // The fp32 master weights load into an fp32 network too.
    auto full = precision_tests::make_mixed_net<float>(3);
    sgd<float> full_opt{{.learning_rate = 0.05, .momentum = 0.9}};
    load_checkpoint(full, full_opt, dir / "mixed.ckpt");
    CHECK(lightloop::testing::identical(full.layer<0>().weights(), net.layer<0>().weights()));
}

TEST_CASE("mixed bf16 training matches fp32 accuracy on spirals", "[train][precision]") {
    const auto train = make_spirals(300, 3, 1.0, 0.02, 1);
    const auto test = make_spirals(300, 3, 1.0, 0.02, 2);
    const auto accuracy = [&](auto net) {
        adam<float> opt{{.learning_rate = 3e-3}};
        for (int step = 0; step < 1500; ++step) {
            net.train_step(train.inputs, train.targets, opt);
        }
        return evaluate_accuracy(net, test.inputs, test.targets);
    };
    const double full = accuracy(precision_tests::make_mixed_net<float>(7));
    const double mixed = accuracy(precision_tests::make_mixed_net<mixed_bf16>(7));
    const double emulated =
      accuracy(precision_tests::make_mixed_net<mixed_bf16_on<openblas_backend>>(7));
    INFO("fp32 " << full << ", bf16 " << mixed << ", bf16 emulated " << emulated);
    CHECK(full >= 0.95);
    CHECK(mixed >= 0.95);
    CHECK(emulated >= 0.95);
    CHECK(std::abs(mixed - full) <= 0.02);
}

namespace precision_tests {

/// 10 log10(sum ideal^2 / sum (y - ideal)^2).
double snr_db(const matrix<float>& y, const matrix<float>& ideal) {
    double signal = 0.0;
    double noise = 0.0;
    for (std::size_t i = 0; i < y.size(); ++i) {
        signal += static_cast<double>(ideal[i]) * ideal[i];
        noise += (static_cast<double>(y[i]) - ideal[i]) * (static_cast<double>(y[i]) - ideal[i]);
    }
    return 10.0 * std::log10(signal / noise);
}

} // namespace precision_tests

TEST_CASE("a bf16 medium changes the holographic projection's SNR by less than 0.1 dB",
          "[projection][optical][precision]") {
    // DFA's errors for a batch of 128 (softmax minus one-hot), projected
    // 10 -> 1024 through the default 8-bit camera with read noise, against
    // the exact projection of the fp32 medium (an ideal camera).
    auto e = lightloop::testing::random_matrix<float>(128, 10, 21, 0.1);
    for (std::size_t r = 0; r < 128; ++r) {
        e(r, r % 10) -= 0.8f;
    }
    const auto project = [&](auto device) {
        device.configure(10, 1024, 77);
        auto y = matrix<float>::from_shape({128, 1024});
        device.project(e, y); // calibrates
        device.project(e, y);
        return std::pair(y, device);
    };
    using real_device = optical<holographic_readout<>, camera>;
    const auto [exact, ideal_device] = project(optical<holographic_readout<>, ideal_camera>{});
    const auto [y32, device32] = project(real_device{});
    auto [y16, device16] = project(
      real_device(holographic_readout<>{}, camera{}, ternary_encoder{}, {.bf16_medium = true}));
    const double snr32 = precision_tests::snr_db(y32, exact);
    const double snr16 = precision_tests::snr_db(y16, exact);
    CAPTURE(snr32, snr16);
    CHECK(std::abs(snr16 - snr32) < 0.1);
    // The medium really is rounded, and that changes the measurement.
    const matrix<float>& r16 = device16.medium().real<float>();
    CHECK(std::all_of(r16.begin(), r16.end(), [](float v) { return v == round_to_bf16(v); }));
    CHECK_FALSE(lightloop::testing::identical(y16, y32));
}

TEST_CASE("a wide bf16 medium's field is the fp32 sum of its rounded entries",
          "[projection][optical][precision]") {
    // 100 inputs: past direct_max_inputs, the field runs as bf16 GEMMs.
    const std::size_t in = 100;
    const std::size_t out = 70;
    const std::size_t rows = 9;
    transmission_matrix rounded(out, in, 5, 1.0, true);
    transmission_matrix full(out, in, 5, 1.0, false);
    REQUIRE(in > transmission_matrix::direct_max_inputs);
    rng gen(6);
    auto frames = matrix<float>::from_shape({rows, in});
    for (auto& v : frames) {
        v = gen.uniform() < 0.3 ? 1.0f : 0.0f;
    }
    auto re = matrix<float>::from_shape({rows, out});
    auto im = matrix<float>::from_shape({rows, out});
    rounded.prepare<float>();
    rounded.field(frames.data(), rows, re.data(), im.data());
    const matrix<float>& r_full = full.real<float>();
    const matrix<float>& i_full = full.imag<float>();
    double worst = 0.0;
    for (std::size_t r = 0; r < rows; ++r) {
        for (std::size_t j = 0; j < out; ++j) {
            double sum_re = 0.0;
            double sum_im = 0.0;
            double mag = 0.0;
            for (std::size_t k = 0; k < in; ++k) {
                if (frames(r, k) != 0.0f) {
                    sum_re += round_to_bf16(r_full(j, k));
                    sum_im += round_to_bf16(i_full(j, k));
                    mag += std::abs(r_full(j, k)) + std::abs(i_full(j, k));
                }
            }
            const double bound = precision_tests::accumulation_bound(in, mag);
            worst = std::max(
              {worst, std::abs(re(r, j) - sum_re) / bound, std::abs(im(r, j) - sum_im) / bound});
        }
    }
    CHECK(worst <= 1.0);
}
