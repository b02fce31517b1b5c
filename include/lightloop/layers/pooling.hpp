#pragma once
// Parameter-free layers over feature maps: max_pool2d, avg_pool2d and
// flatten. Each sample is a row of C·H·W values, channel-major (core/shape.hpp).
//
// They have nothing to train (has_parameters = false): the network computes
// no gradient for them, and the direct methods (DFA, DRTP, sign-DFA) give them
// no slice of the projection. Backprop and feedback alignment pass the signal
// through them exactly: scale_by_derivative copies it (no activation), and
// backpropagate routes it to the inputs (max: to the window's maximum, kept
// from the forward pass, ties to the first; average: spread evenly).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "lightloop/core/concepts.hpp"
#include "lightloop/core/error.hpp"
#include "lightloop/core/parallel.hpp"
#include "lightloop/core/shape.hpp"
#include "lightloop/core/tensor.hpp"

namespace lightloop {

namespace detail {

/// What every parameter-free layer shares: sizes, the output and delta
/// buffers, the pass-through derivative, and no parameters.
template <scalar T>
class parameter_free_layer {
public:
    using value_type = T;
    static constexpr bool has_parameters = false;

    std::size_t input_size() const noexcept { return in_.size(); }
    std::size_t output_size() const noexcept { return out_.size(); }
    feature_shape input_shape() const noexcept { return in_; }
    feature_shape output_shape() const noexcept { return out_; }

    void initialize(std::uint64_t) noexcept {}
    const matrix<T>& output() const noexcept { return output_; }
    matrix<T>& delta() noexcept { return delta_; }
    const matrix<T>& delta() const noexcept { return delta_; }

    /// delta = s: no activation to differentiate.
    void scale_by_derivative(const T* signal, std::size_t ld) {
        const std::size_t n = delta_.shape(0);
        const std::size_t width = out_.size();
        T* d = delta_.data();
        if (signal == d && ld == width) {
            return;
        }
        for (std::size_t r = 0; r < n; ++r) {
            std::copy_n(signal + r * ld, width, d + r * width);
        }
    }

    void compute_gradient(const matrix<T>&) noexcept {}
    template <class F>
    void visit_parameters(F&&) noexcept {}

protected:
    parameter_free_layer(feature_shape in, feature_shape out)
      : in_(in)
      , out_(out) {}

    /// `name()` builds the layer's name only for the message: a forward
    /// pass allocates nothing.
    template <class Name>
    void check_input(const matrix<T>& x, Name&& name) const {
        if (x.shape(1) != in_.size()) {
            throw shape_error("lightloop::" + name() + ": input has " + std::to_string(x.shape(1)) +
                              " columns, expected " + std::to_string(in_.size()) + " (" +
                              in_.text() + ")");
        }
    }

    feature_shape in_;
    feature_shape out_;
    matrix<T> output_;
    matrix<T> delta_;
};

enum class pooling { max, average };

inline feature_shape pooled_shape(const char* who, feature_shape in, std::size_t window,
                                  std::size_t stride) {
    if (in.size() == 0 || window == 0 || stride == 0 || window > in.height || window > in.width) {
        throw config_error(std::string("lightloop::") + who + ": window " + std::to_string(window) +
                           " and stride " + std::to_string(stride) + " do not fit the input " +
                           in.text());
    }
    return {in.channels, (in.height - window) / stride + 1, (in.width - window) / stride + 1};
}

template <pooling Kind, scalar T>
class pool2d : public parameter_free_layer<T> {
    using base = parameter_free_layer<T>;

public:
    static constexpr const char* kind_name = Kind == pooling::max ? "max_pool2d" : "avg_pool2d";

    /// Windows of window x window, moved by `stride` (default: the window,
    /// PyTorch's default), no padding.
    pool2d(feature_shape in, std::size_t window, std::size_t stride = 0)
      : base(in, pooled_shape(kind_name, in, window, stride == 0 ? window : stride))
      , window_(window)
      , stride_(stride == 0 ? window : stride) {}

    const matrix<T>& forward(const matrix<T>& x) {
        this->check_input(x, [this] { return describe(); });
        const std::size_t n = x.shape(0);
        const std::size_t in_size = this->in_.size();
        const std::size_t out_size = this->out_.size();
        ensure_shape(this->output_, n, out_size);
        ensure_shape(this->delta_, n, out_size);
        if constexpr (Kind == pooling::max) {
            if (argmax_.size() != n * out_size) {
                argmax_.resize(n * out_size);
            }
        }
        const T* in = x.data();
        T* out = this->output_.data();
        parallel_for_rows(n, in_size, [&](std::size_t first, std::size_t end) {
            for (std::size_t r = first; r < end; ++r) {
                pool_sample(in + r * in_size, out + r * out_size, r * out_size);
            }
        });
        return this->output_;
    }

    /// into (n x C·H·W of the input) = the signal routed back through the
    /// windows.
    void backpropagate(matrix<T>& into) const {
        const std::size_t n = this->delta_.shape(0);
        const std::size_t in_size = this->in_.size();
        const std::size_t out_size = this->out_.size();
        std::fill(into.begin(), into.end(), T(0));
        const T* d = this->delta_.data();
        T* g = into.data();
        const feature_shape in = this->in_;
        const feature_shape out = this->out_;
        parallel_for_rows(n, in_size, [&](std::size_t first, std::size_t end) {
            for (std::size_t r = first; r < end; ++r) {
                const T* dr = d + r * out_size;
                T* gr = g + r * in_size;
                if constexpr (Kind == pooling::max) {
                    for (std::size_t o = 0; o < out_size; ++o) {
                        gr[argmax_[r * out_size + o]] += dr[o];
                    }
                } else {
                    const T share = T(1) / static_cast<T>(window_ * window_);
                    for (std::size_t c = 0; c < out.channels; ++c) {
                        for (std::size_t oy = 0; oy < out.height; ++oy) {
                            for (std::size_t ox = 0; ox < out.width; ++ox) {
                                const T v = dr[(c * out.height + oy) * out.width + ox] * share;
                                for (std::size_t ky = 0; ky < window_; ++ky) {
                                    T* row = gr + (c * in.height + oy * stride_ + ky) * in.width +
                                             ox * stride_;
                                    for (std::size_t kx = 0; kx < window_; ++kx) {
                                        row[kx] += v;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        });
    }

    std::size_t window() const noexcept { return window_; }
    std::size_t stride() const noexcept { return stride_; }

    /// "max_pool2d 32x28x28 k2 s2", for checkpoint signatures and messages.
    std::string describe() const {
        return std::string(kind_name) + " " + this->in_.text() + " k" + std::to_string(window_) +
               " s" + std::to_string(stride_);
    }
    std::string signature() const { return describe(); }

private:
    void pool_sample(const T* in, T* out, std::size_t argmax_base) {
        const feature_shape is = this->in_;
        const feature_shape os = this->out_;
        for (std::size_t c = 0; c < os.channels; ++c) {
            for (std::size_t oy = 0; oy < os.height; ++oy) {
                for (std::size_t ox = 0; ox < os.width; ++ox) {
                    const std::size_t o = (c * os.height + oy) * os.width + ox;
                    const std::size_t corner =
                      (c * is.height + oy * stride_) * is.width + ox * stride_;
                    if constexpr (Kind == pooling::max) {
                        std::size_t best = corner;
                        for (std::size_t ky = 0; ky < window_; ++ky) {
                            for (std::size_t kx = 0; kx < window_; ++kx) {
                                const std::size_t i = corner + ky * is.width + kx;
                                if (in[i] > in[best]) {
                                    best = i;
                                }
                            }
                        }
                        out[o] = in[best];
                        argmax_[argmax_base + o] = static_cast<std::uint32_t>(best);
                    } else {
                        T sum = 0;
                        for (std::size_t ky = 0; ky < window_; ++ky) {
                            for (std::size_t kx = 0; kx < window_; ++kx) {
                                sum += in[corner + ky * is.width + kx];
                            }
                        }
                        out[o] = sum / static_cast<T>(window_ * window_);
                    }
                }
            }
        }
    }

    std::size_t window_;
    std::size_t stride_;
    std::vector<std::uint32_t> argmax_; // per output: the input index of its maximum
};

} // namespace detail

/// Max pooling over window x window, stride the window unless given.
template <scalar T = float>
using max_pool2d = detail::pool2d<detail::pooling::max, T>;

/// Average pooling over window x window, stride the window unless given.
template <scalar T = float>
using avg_pool2d = detail::pool2d<detail::pooling::average, T>;

/// The feature maps read as one vector per sample, for a dense layer to
/// take: the storage is already that vector (channel-major rows), so flatten
/// copies and names the change of shape.
template <scalar T = float>
class flatten : public detail::parameter_free_layer<T> {
public:
    explicit flatten(feature_shape in)
      : detail::parameter_free_layer<T>(in, {in.size(), 1, 1}) {}

    const matrix<T>& forward(const matrix<T>& x) {
        this->check_input(x, [this] { return describe(); });
        ensure_shape(this->output_, x.shape(0), x.shape(1));
        ensure_shape(this->delta_, x.shape(0), x.shape(1));
        std::copy(x.begin(), x.end(), this->output_.begin());
        return this->output_;
    }

    void backpropagate(matrix<T>& into) const {
        std::copy(this->delta_.begin(), this->delta_.end(), into.begin());
    }

    std::string describe() const { return "flatten " + this->in_.text(); }
    std::string signature() const { return describe(); }
};

static_assert(layer<max_pool2d<float>> && layer<avg_pool2d<double>> && layer<flatten<float>>);

} // namespace lightloop
