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
//
// Max pooling over 2 x 2 windows moved by 2, the CNNs' usual case, has
// AVX-512 kernels (below) where the compiler targets it: a feature map's rows
// (14 or 7 outputs wide in the demo's CNN) are too short for the compiler's
// own vectoriser, and a scalar loop mispredicts a branch per window on
// random data. The kernels give the same values and indices, ties included.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "lightloop/core/concepts.hpp"
#include "lightloop/core/error.hpp"
#include "lightloop/core/parallel.hpp"
#include "lightloop/core/shape.hpp"
#include "lightloop/core/tensor.hpp"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

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

#if defined(__AVX512F__)
/// The masks of one 16-output step of the 2 x 2 kernels with `left` outputs
/// to go: the step's outputs, and the first and second 16 of the 32 inputs
/// of each of its rows.
struct masks_of_2x2 {
    __mmask16 lanes, low, high;
};
inline masks_of_2x2 masks_2x2(std::size_t left) noexcept {
    const unsigned k = static_cast<unsigned>(std::min<std::size_t>(16, left));
    const unsigned inputs = 2 * k;
    return {static_cast<__mmask16>((1u << k) - 1),
            static_cast<__mmask16>(inputs >= 16 ? 0xFFFFu : (1u << inputs) - 1),
            static_cast<__mmask16>(inputs > 16 ? (1u << (inputs - 16)) - 1 : 0u)};
}

/// 0, 2, ..., 30: the left column of each window among 32 inputs.
inline __m512i even_lanes_2x2() noexcept {
    return _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
}

/// One row of 2 x 2 maxima, `count` outputs from the input rows at `top` and
/// `top + width` (row-major, `corner` the index of top[0] in the sample):
/// out[x] and argmax[x] (the sample index of the window's first maximum in
/// reading order, as the general loop finds it). 16 outputs a step; masked
/// loads and stores for the rest, which never touch memory past the rows.
inline void max_pool_row_2x2(const float* top, std::uint32_t corner, std::uint32_t width,
                             std::size_t count, float* out, std::uint32_t* argmax) noexcept {
    const __m512i even = even_lanes_2x2();
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    const __m512i down = _mm512_set1_epi32(static_cast<int>(width));
    for (std::size_t x = 0; x < count; x += 16) {
        const auto [lanes, low, high] = masks_2x2(count - x);
        const float* t = top + 2 * x;
        const float* b = t + width;
        const __m512 t0 = _mm512_maskz_loadu_ps(low, t);
        const __m512 t1 = _mm512_maskz_loadu_ps(high, t + 16);
        const __m512 b0 = _mm512_maskz_loadu_ps(low, b);
        const __m512 b1 = _mm512_maskz_loadu_ps(high, b + 16);
        const __m512i first =
          _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(corner + 2 * x)), even);
        __m512 best = _mm512_permutex2var_ps(t0, even, t1);
        __m512i at = first;
        const auto take = [&](__m512 candidate, __m512i index) {
            const __mmask16 larger = _mm512_cmp_ps_mask(candidate, best, _CMP_GT_OQ);
            best = _mm512_mask_mov_ps(best, larger, candidate);
            at = _mm512_mask_mov_epi32(at, larger, index);
        };
        const __m512i right = _mm512_add_epi32(first, _mm512_set1_epi32(1));
        take(_mm512_permutex2var_ps(t0, odd, t1), right);
        take(_mm512_permutex2var_ps(b0, even, b1), _mm512_add_epi32(first, down));
        take(_mm512_permutex2var_ps(b0, odd, b1), _mm512_add_epi32(right, down));
        _mm512_mask_storeu_ps(out + x, lanes, best);
        _mm512_mask_storeu_epi32(argmax + x, lanes, at);
    }
}

/// The backward pass of max_pool_row_2x2 when the windows tile the input:
/// the two input rows at `top` and `top + width` get signal[x] at argmax[x]
/// and zero at the window's other three entries.
inline void max_unpool_row_2x2(const float* signal, const std::uint32_t* argmax,
                               std::uint32_t corner, std::uint32_t width, std::size_t count,
                               float* top) noexcept {
    const __m512i even = even_lanes_2x2();
    const __m512i low_half =
      _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i high_half = _mm512_add_epi32(low_half, _mm512_set1_epi32(8));
    const __m512i one = _mm512_set1_epi32(1);
    const __m512i down = _mm512_set1_epi32(static_cast<int>(width));
    for (std::size_t x = 0; x < count; x += 16) {
        const auto [lanes, low, high] = masks_2x2(count - x);
        const __m512 v = _mm512_maskz_loadu_ps(lanes, signal + x);
        const __m512i at = _mm512_maskz_loadu_epi32(lanes, argmax + x);
        const __m512i first =
          _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(corner + 2 * x)), even);
        const __m512i below = _mm512_add_epi32(first, down);
        const __m512 tl = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(at, first), v);
        const __m512 tr =
          _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(at, _mm512_add_epi32(first, one)), v);
        const __m512 bl = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(at, below), v);
        const __m512 br =
          _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(at, _mm512_add_epi32(below, one)), v);
        float* t = top + 2 * x;
        float* b = t + width;
        _mm512_mask_storeu_ps(t, low, _mm512_permutex2var_ps(tl, low_half, tr));
        _mm512_mask_storeu_ps(t + 16, high, _mm512_permutex2var_ps(tl, high_half, tr));
        _mm512_mask_storeu_ps(b, low, _mm512_permutex2var_ps(bl, low_half, br));
        _mm512_mask_storeu_ps(b + 16, high, _mm512_permutex2var_ps(bl, high_half, br));
    }
}
#endif

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
#if defined(__AVX512F__)
        if constexpr (has_fast_2x2) {
            if (fast_2x2()) {
                parallel_for_rows(n, in_size, [&](std::size_t first, std::size_t end) {
                    for (std::size_t r = first; r < end; ++r) {
                        for_2x2_rows([&](std::size_t top, std::size_t row) {
                            max_pool_row_2x2(
                              in + r * in_size + top, static_cast<std::uint32_t>(top),
                              static_cast<std::uint32_t>(this->in_.width), this->out_.width,
                              out + r * out_size + row, argmax_.data() + r * out_size + row);
                        });
                    }
                });
                return this->output_;
            }
        }
#endif
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
        const T* d = this->delta_.data();
        T* g = into.data();
        const feature_shape in = this->in_;
        const feature_shape out = this->out_;
#if defined(__AVX512F__)
        if constexpr (has_fast_2x2) {
            if (fast_2x2() && in.height == 2 * out.height && in.width == 2 * out.width) {
                // The windows tile the input: each entry is written once.
                parallel_for_rows(n, in_size, [&](std::size_t first, std::size_t end) {
                    for (std::size_t r = first; r < end; ++r) {
                        for_2x2_rows([&](std::size_t top, std::size_t row) {
                            max_unpool_row_2x2(
                              d + r * out_size + row, argmax_.data() + r * out_size + row,
                              static_cast<std::uint32_t>(top), static_cast<std::uint32_t>(in.width),
                              out.width, g + r * in_size + top);
                        });
                    }
                });
                return;
            }
        }
#endif
        std::fill(into.begin(), into.end(), T(0));
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

    std::size_t window() const noexcept {
        return window_;
    }
    std::size_t stride() const noexcept {
        return stride_;
    }

    /// "max_pool2d 32x28x28 k2 s2", for checkpoint signatures and messages.
    std::string describe() const {
        return std::string(kind_name) + " " + this->in_.text() + " k" + std::to_string(window_) +
               " s" + std::to_string(stride_);
    }
    std::string signature() const {
        return describe();
    }

private:
    /// Whether the AVX-512 kernels take this layer (float max pooling over
    /// 2 x 2 windows moved by 2).
    static constexpr bool has_fast_2x2 = std::is_same_v<T, float> && Kind == pooling::max;
    bool fast_2x2() const noexcept {
        return has_fast_2x2 && window_ == 2 && stride_ == 2;
    }

    /// f(top, row) for each output row of a sample: `top` the index of its
    /// windows' first input row, `row` of its first output.
    template <class F>
    void for_2x2_rows(F&& f) const {
        const feature_shape is = this->in_;
        const feature_shape os = this->out_;
        for (std::size_t c = 0; c < os.channels; ++c) {
            for (std::size_t oy = 0; oy < os.height; ++oy) {
                f((c * is.height + 2 * oy) * is.width, (c * os.height + oy) * os.width);
            }
        }
    }

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
                        T largest = in[corner];
                        for (std::size_t ky = 0; ky < window_; ++ky) {
                            for (std::size_t kx = 0; kx < window_; ++kx) {
                                const std::size_t i = corner + ky * is.width + kx;
                                const bool larger = in[i] > largest;
                                best = larger ? i : best;
                                largest = larger ? in[i] : largest;
                            }
                        }
                        out[o] = largest;
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
