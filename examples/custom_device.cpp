// A user-defined projection device plugged into DFA without touching the
// library: the shape a driver for real optical hardware would take.
//
// `vendor_sdk` stands in for a vendor's API: it takes one binary micromirror
// pattern and returns one 8-bit camera image (here computed from a hidden
// random medium; on a real device, by light). `opu_driver` adapts it to
// lightloop's projection_device concept: it ternarizes each error vector with
// lightloop's encoder, acquires one image per non-empty frame, and decodes
// y = s₊ I(e₊) - s₋ I(e₋), each image centered on its mean, rescaled per
// sample to the dense device's RMS.
#include <lightloop/lightloop.hpp>

#include "cli.hpp"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <numeric>
#include <vector>

namespace {

class vendor_sdk {
public:
    vendor_sdk(std::size_t mirrors, std::size_t pixels, std::uint64_t seed)
      : mirrors_(mirrors)
      , pixels_(pixels)
      , medium_(2 * mirrors * pixels) {
        lightloop::rng gen(seed);
        for (double& v : medium_) {
            v = gen.normal() / std::sqrt(2.0);
        }
    }

    /// One exposure: |R x|^2 on each pixel, scaled and clipped to 8 bits.
    std::vector<std::uint8_t> acquire(const std::vector<std::uint8_t>& pattern) {
        ++exposures_;
        std::vector<std::uint8_t> image(pixels_);
        for (std::size_t j = 0; j < pixels_; ++j) {
            double re = 0;
            double im = 0;
            for (std::size_t k = 0; k < mirrors_; ++k) {
                if (pattern[k] != 0) {
                    re += medium_[2 * (j * mirrors_ + k)];
                    im += medium_[2 * (j * mirrors_ + k) + 1];
                }
            }
            const double counts = std::round(8.0 * (re * re + im * im));
            image[j] = static_cast<std::uint8_t>(std::min(counts, 255.0));
        }
        return image;
    }

    std::uint64_t exposures() const { return exposures_; }

private:
    std::size_t mirrors_;
    std::size_t pixels_;
    std::vector<double> medium_;
    std::uint64_t exposures_ = 0;
};

class opu_driver {
public:
    void configure(std::size_t in, std::size_t out, std::uint64_t seed) {
        in_ = in;
        out_ = out;
        sdk_ = std::make_shared<vendor_sdk>(in, out, seed);
    }
    std::size_t input_size() const { return in_; }
    std::size_t output_size() const { return out_; }

    template <class T>
    void project(const lightloop::matrix<T>& x, lightloop::matrix<T>& y) {
        std::vector<T> frames(2 * in_);
        std::vector<double> weights(2);
        std::vector<std::uint8_t> pattern(in_);
        for (std::size_t r = 0; r < x.shape(0); ++r) {
            encoder_.encode(std::span<const T>(x.data() + r * in_, in_), std::span<T>(frames),
                            std::span<double>(weights));
            T* row = y.data() + r * out_;
            std::fill(row, row + out_, T(0));
            for (std::size_t f = 0; f < 2; ++f) {
                std::size_t on = 0;
                for (std::size_t k = 0; k < in_; ++k) {
                    pattern[k] = frames[f * in_ + k] != T(0) ? 1 : 0;
                    on += pattern[k];
                }
                if (on == 0) {
                    continue;
                }
                const auto image = sdk_->acquire(pattern);
                const double mean =
                  std::accumulate(image.begin(), image.end(), 0.0) / static_cast<double>(out_);
                for (std::size_t j = 0; j < out_; ++j) {
                    row[j] += static_cast<T>(weights[f] * (image[j] - mean));
                }
            }
            // Same RMS as the dense device on the decoded input x̂: ||x̂|| / sqrt(in).
            double norm2 = 0;
            for (std::size_t k = 0; k < in_; ++k) {
                const double v = weights[0] * static_cast<double>(frames[k]) +
                                 weights[1] * static_cast<double>(frames[in_ + k]);
                norm2 += v * v;
            }
            double sum2 = 0;
            for (std::size_t j = 0; j < out_; ++j) {
                sum2 += static_cast<double>(row[j]) * static_cast<double>(row[j]);
            }
            if (sum2 > 0) {
                const double target = std::sqrt(norm2 / static_cast<double>(in_));
                const auto factor =
                  static_cast<T>(target / std::sqrt(sum2 / static_cast<double>(out_)));
                for (std::size_t j = 0; j < out_; ++j) {
                    row[j] *= factor;
                }
            }
        }
    }

    std::uint64_t exposures() const { return sdk_ ? sdk_->exposures() : 0; }

private:
    std::size_t in_ = 0;
    std::size_t out_ = 0;
    std::shared_ptr<vendor_sdk> sdk_;
    lightloop::ternary_encoder encoder_{};
};

static_assert(lightloop::projection_device<opu_driver>);

template <class Feedback>
double train(Feedback feedback, const lightloop::labelled_data<float>& train_set,
             const lightloop::labelled_data<float>& test_set) {
    using namespace lightloop;
    network net{std::move(feedback),     softmax_cross_entropy{},   7,
                dense<tanh_act>{6, 128}, dense<tanh_act>{128, 128}, dense<identity>{128, 4}};
    sgd opt{{.learning_rate = 0.05, .momentum = 0.9}};
    std::vector<std::size_t> order(train_set.size());
    std::iota(order.begin(), order.end(), std::size_t{0});
    rng gen(8);
    matrix<float> xb;
    matrix<float> yb;
    for (int epoch = 0; epoch < 20; ++epoch) {
        for (std::size_t i = order.size(); i > 1; --i) {
            std::swap(order[i - 1], order[gen.below(i)]);
        }
        for (std::size_t s = 0; s < order.size(); s += 32) {
            const std::span<const std::size_t> rows(order.data() + s,
                                                    std::min<std::size_t>(32, order.size() - s));
            gather_rows(train_set.inputs, rows, xb);
            gather_rows(train_set.targets, rows, yb);
            net.train_step(xb, yb, opt);
        }
    }
    if constexpr (requires { net.feedback().device().exposures(); }) {
        std::printf("  the driver took %llu exposures\n",
                    static_cast<unsigned long long>(net.feedback().device().exposures()));
    }
    return evaluate_accuracy(net, test_set.inputs, test_set.targets);
}

} // namespace

int main(int argc, char** argv) {
    using namespace lightloop;
    ensure_fast_blas(argv); // re-executes once if OpenBLAS fell back to a generic kernel
    CLI::App app{"Trains DFA through a user-written OPU driver (binary patterns in, 8-bit "
                 "images out) and through the dense Gaussian device.",
                 "custom_device"};
    return programs::run(app, argc, argv, [] {
        const auto train_set = make_blobs(300, 4, 6, 6, 0.4, 1, 2);
        const auto test_set = make_blobs(300, 4, 6, 6, 0.4, 1, 3);
        std::printf("DFA through the dense Gaussian device:\n");
        const double dense_acc = train(dfa<dense_gaussian>{}, train_set, test_set);
        std::printf("  test accuracy %.3f\n", dense_acc);
        std::printf("DFA through a user-written OPU driver (8-bit intensity camera):\n");
        const double driver_acc = train(dfa<opu_driver>{}, train_set, test_set);
        std::printf("  test accuracy %.3f\n", driver_acc);
        return 0;
    });
}
