#pragma once
// Readouts: how camera intensities become a projection.
//
// Both work on the field E = R x of `rows` frames (Re E, Im E; rows x out) and
// write one decoded row per frame. The device then recombines the frames of a
// sample with the encoder's weights.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "lightloop/core/concepts.hpp"
#include "lightloop/core/counter_random.hpp"
#include "lightloop/core/describe.hpp"
#include "lightloop/core/error.hpp"
#include "lightloop/core/seeded_matrix.hpp"
#include "lightloop/core/simd.hpp"
#include "lightloop/io/state.hpp"
#include "lightloop/projection/optical/reference.hpp"

namespace lightloop {

namespace detail {
/// out = re^2 + im^2, element-wise: the intensity of a field.
template <class T>
void squared_magnitude(const T* re, const T* im, std::size_t count, T* out) {
    simd::for_each_lane<T>(count, [&](std::size_t i, auto lane) {
        using V = decltype(lane);
        const V a = simd::load<V>(re + i);
        const V b = simd::load<V>(im + i);
        simd::store(out + i, a * a + b * b);
    });
}
} // namespace detail

/// The raw intensity |R x|^2: what a lensless OPU measures in one frame, a
/// non-linear random projection. A sample is decoded as y(e₊) - y(e₋)
/// (weighted by the encoder's scale). One exposure per frame.
///
/// Centering (the default): each frame's intensities have the common mean
/// E|E_j|^2 = σ² ||x||^2 on every pixel, so y(e₊) - y(e₋) carries an offset
/// σ² (|e₊| - |e₋|) shared by every hidden unit. The readout subtracts each
/// frame's mean over its output pixels. On Fashion-MNIST (784-1024-1024-10
/// tanh, one epoch of DFA) the raw readout reached 35 % and the centered one
/// 78 %. intensity_readout{false} gives the raw intensities.
///
/// Scale: |R x|^2 is quadratic in x, so no constant makes it match the dense
/// device. Each sample's output is instead rescaled so its RMS over the output
/// pixels equals the RMS the dense device gives for the same encoded input,
/// ||x̂|| / sqrt(in), computed from the measured intensities alone.
class intensity_readout {
public:
    static constexpr const char* name = "intensity";
    static constexpr std::size_t exposures_per_frame = 1;

    intensity_readout() = default;
    /// centered: subtract from each frame its mean over the output pixels
    /// (an estimate of E|E_j|^2 = σ² ||x||^2, the same for every pixel), so
    /// y(e₊) - y(e₋) loses its common-mode offset σ² (|e₊| - |e₋|).
    explicit intensity_readout(bool centered)
      : centered_(centered) {}
    bool centered() const noexcept { return centered_; }
    std::string describe() const { return centered_ ? "intensity centered" : "intensity raw"; }

    /// `first`: where these pixels start on the camera (a slice; nothing here
    /// depends on it).
    void configure(std::size_t in, std::size_t out, std::uint64_t /*seed*/, double /*variance*/,
                   std::size_t /*first*/ = 0) {
        in_ = in;
        out_ = out;
    }

    /// Calibrates the camera's exposure on this batch's intensities. Returns
    /// the extra exposures calibration took (none: it reuses the batch).
    template <scalar T, class Camera>
    std::size_t calibrate(const T* re, const T* im, std::size_t rows, Camera& cam, T* scratch) {
        intensity(re, im, rows, scratch);
        cam.calibrate(std::span<const T>(scratch, rows * out_));
        return 0;
    }

    template <scalar T, class Camera>
    void measure(const T* re, const T* im, std::size_t rows, Camera& cam, T* decoded, T* scratch) {
        intensity(re, im, rows, scratch);
        cam.expose(std::span<const T>(scratch, rows * out_), std::span<T>(decoded, rows * out_));
        center(decoded, rows);
    }

    template <scalar T>
    void measure_ideal(const T* re, const T* im, std::size_t rows, T* decoded) {
        intensity(re, im, rows, decoded);
        center(decoded, rows);
    }

    template <scalar T>
    void finish_sample(std::span<T> y, double encoded_norm2) const {
        double sum2 = 0.0;
        for (const T v : y) {
            sum2 += static_cast<double>(v) * static_cast<double>(v);
        }
        if (sum2 <= 0.0) {
            return;
        }
        const double rms = std::sqrt(sum2 / static_cast<double>(y.size()));
        const double target = std::sqrt(encoded_norm2 / static_cast<double>(in_));
        const auto factor = static_cast<T>(target / rms);
        T* const values = y.data();
        simd::for_each_lane<T>(y.size(), [&](std::size_t j, auto lane) {
            using V = decltype(lane);
            simd::store(values + j, simd::load<V>(values + j) * V(factor));
        });
    }

private:
    template <class T>
    void intensity(const T* re, const T* im, std::size_t rows, T* out) const {
        detail::squared_magnitude(re, im, rows * out_, out);
    }

    template <class T>
    void center(T* rows_data, std::size_t rows) const {
        if (!centered_) {
            return;
        }
        for (std::size_t r = 0; r < rows; ++r) {
            T* row = rows_data + r * out_;
            double mean = 0.0;
            for (std::size_t j = 0; j < out_; ++j) {
                mean += static_cast<double>(row[j]);
            }
            const auto m = static_cast<T>(mean / static_cast<double>(out_));
            simd::for_each_lane<T>(out_, [&](std::size_t j, auto lane) {
                using V = decltype(lane);
                simd::store(row + j, simd::load<V>(row + j) - V(m));
            });
        }
    }

    bool centered_ = true;
    std::size_t in_ = 0;
    std::size_t out_ = 0;
};

/// Holographic readout. The camera sees |E + r|^2 = |E|^2 + |r|^2 + 2 Re(r̄ E).
/// Each frame costs two exposures: one with the reference (|E + r|^2) and one
/// without (|E|^2); |r|^2 is calibrated once, averaged over
/// `calibration_frames` exposures of the reference alone. What remains,
///     |E + r|^2 - |r|^2 - |E|^2 = 2 Re(r̄ ⊙ R x) = M x,   M = 2 Re(r̄ ⊙ R),
/// is LINEAR in x, so B e_t = B e₊ - B e₋ holds. Given r, M_jk =
/// 2 |r_j| Re(exp(-i arg r_j) R_jk) ~ N(0, 2 σ² |r_j|^2): a real Gaussian matrix.
///
/// Scale: the output is divided by sqrt(in * 2 σ² mean_j |r_j|^2) (with the
/// calibrated |r|^2), so M's entries have variance 1 / in on average, the
/// dense device's normalisation: one learning rate serves both devices.
template <class Reference = off_axis_reference>
class holographic_readout {
public:
    static constexpr const char* name = "holographic";
    static constexpr std::size_t exposures_per_frame = 2;

    holographic_readout() = default;
    explicit holographic_readout(Reference reference, std::size_t calibration_frames = 16)
      : reference_(reference)
      , calibration_frames_(calibration_frames) {
        if (calibration_frames == 0) {
            throw config_error("lightloop::holographic_readout: calibration_frames must be >= 1");
        }
    }

    std::string describe() const {
        return "holographic reference=" + describe_object(reference_) +
               " calibration_frames=" + std::to_string(calibration_frames_);
    }

    /// The calibrated |r|^2, for checkpoints.
    void save_state(state_writer& out) const {
        out.values(std::span<const double>(calibrated_power_));
    }

    /// A reference that passes through the medium (Reference::through_medium:
    /// the DMD reference, r = R_ref x_ref) drifts with it: r <- sqrt(keep) r +
    /// sqrt(1 - keep) CN(0, σ² m), m the reference's lit micromirrors (the
    /// sum of its drifting columns), drawn from (seed, step). The calibrated
    /// |r|^2 goes stale until recalibrate(). A separate beam (off-axis) does
    /// not drift.
    void drift(double keep, std::uint64_t seed, std::uint64_t step) {
        if constexpr (requires { Reference::through_medium; }) {
            if constexpr (Reference::through_medium) {
                const double a = std::sqrt(keep);
                const double b = std::sqrt((1.0 - keep) * reference_.innovation_power(variance_));
                std::vector<float> n_re(out_);
                std::vector<float> n_im(out_);
                complex_normal_row(derive_seed(seed, step + 1), 0, first_pixel_, out_, 1.0f,
                                   n_re.data(), n_im.data());
                for (std::size_t j = 0; j < out_; ++j) {
                    reference_re_[j] = a * reference_re_[j] + b * n_re[j];
                    reference_im_[j] = a * reference_im_[j] + b * n_im[j];
                }
                reference_changed();
            }
        }
    }

    /// The reference field as it stands (it drifts), for checkpoints.
    void save_reference(state_writer& out) const {
        out.values(std::span<const double>(reference_re_));
        out.values(std::span<const double>(reference_im_));
    }
    void load_reference(state_reader& in) {
        std::vector<double> re(out_);
        std::vector<double> im(out_);
        in.values_into(std::span<double>(re), "reference field (real part)");
        in.values_into(std::span<double>(im), "reference field (imaginary part)");
        reference_re_ = std::move(re);
        reference_im_ = std::move(im);
        reference_changed();
    }
    void load_state(state_reader& in) {
        std::vector<double> power(out_);
        in.values_into(std::span<double>(power), "calibrated reference power");
        calibrated_power_ = std::move(power);
        set_normalisation();
    }

    /// `first`: where these pixels start on the camera (a slice of it): the
    /// reference there.
    void configure(std::size_t in, std::size_t out, std::uint64_t seed, double variance,
                   std::size_t first = 0) {
        in_ = in;
        out_ = out;
        first_pixel_ = first;
        variance_ = variance;
        reference_.make(out, in, seed, variance, reference_re_, reference_im_, first);
        reference_changed();
        calibrated_power_ = reference_power_;
        set_normalisation();
    }

    /// Sets the camera's exposure on this batch's brighter exposures, |E + r|^2,
    /// then measures |r|^2 with the reference alone. Returns the extra
    /// exposures (calibration_frames).
    template <scalar T, class Camera>
    std::size_t calibrate(const T* re, const T* im, std::size_t rows, Camera& cam, T* scratch) {
        with_reference(re, im, rows, scratch);
        cam.calibrate(std::span<const T>(scratch, rows * out_));
        return recalibrate<T>(cam);
    }

    /// Measures |r|^2 again with the reference alone, at the camera's
    /// exposure: calibration_frames exposures, returned.
    template <scalar T, class Camera>
    std::size_t recalibrate(Camera& cam) {
        std::vector<T> power(out_);
        std::vector<T> measured(out_);
        for (std::size_t j = 0; j < out_; ++j) {
            power[j] = static_cast<T>(reference_power_[j]);
        }
        std::fill(calibrated_power_.begin(), calibrated_power_.end(), 0.0);
        for (std::size_t c = 0; c < calibration_frames_; ++c) {
            cam.expose(std::span<const T>(power), std::span<T>(measured));
            for (std::size_t j = 0; j < out_; ++j) {
                calibrated_power_[j] += static_cast<double>(measured[j]);
            }
        }
        for (double& p : calibrated_power_) {
            p /= static_cast<double>(calibration_frames_);
        }
        set_normalisation();
        return calibration_frames_;
    }

    template <scalar T, class Camera>
    void measure(const T* re, const T* im, std::size_t rows, Camera& cam, T* decoded, T* scratch) {
        const std::size_t count = rows * out_;
        with_reference(re, im, rows, scratch);
        cam.expose(std::span<const T>(scratch, count), std::span<T>(scratch, count));
        detail::squared_magnitude(re, im, count, decoded);
        cam.expose(std::span<const T>(decoded, count), std::span<T>(decoded, count));
        const auto norm = static_cast<T>(normalisation_);
        const T* power = detail::double_or_float<T>(calibrated_power_, calibrated_power_f_);
        for (std::size_t r = 0; r < rows; ++r) {
            const T* with = scratch + r * out_;
            T* row = decoded + r * out_;
            simd::for_each_lane<T>(out_, [&](std::size_t j, auto lane) {
                using V = decltype(lane);
                simd::store(row + j, (simd::load<V>(with + j) - simd::load<V>(power + j) -
                                      simd::load<V>(row + j)) *
                                       V(norm));
            });
        }
    }

    /// The linear term computed directly, 2 Re(r̄ E) times the normalisation.
    template <scalar T>
    void measure_ideal(const T* re, const T* im, std::size_t rows, T* decoded) const {
        const auto norm = 2.0 * normalisation_;
        for (std::size_t r = 0; r < rows; ++r) {
            for (std::size_t j = 0; j < out_; ++j) {
                const std::size_t i = r * out_ + j;
                decoded[i] = static_cast<T>(norm * (reference_re_[j] * static_cast<double>(re[i]) +
                                                    reference_im_[j] * static_cast<double>(im[i])));
            }
        }
    }

    template <scalar T>
    void finish_sample(std::span<T>, double) const noexcept {}

    const std::vector<double>& reference_real() const noexcept { return reference_re_; }
    const std::vector<double>& reference_imag() const noexcept { return reference_im_; }
    const std::vector<double>& calibrated_reference_power() const noexcept {
        return calibrated_power_;
    }
    /// The factor applied to |E + r|^2 - |r|^2 - |E|^2.
    double normalisation() const noexcept { return normalisation_; }
    const Reference& reference() const noexcept { return reference_; }

private:
    template <class T>
    void with_reference(const T* re, const T* im, std::size_t rows, T* out) const {
        const T* ref_re = detail::double_or_float<T>(reference_re_, reference_re_f_);
        const T* ref_im = detail::double_or_float<T>(reference_im_, reference_im_f_);
        for (std::size_t r = 0; r < rows; ++r) {
            const T* re_row = re + r * out_;
            const T* im_row = im + r * out_;
            T* row = out + r * out_;
            simd::for_each_lane<T>(out_, [&](std::size_t j, auto lane) {
                using V = decltype(lane);
                const V a = simd::load<V>(re_row + j) + simd::load<V>(ref_re + j);
                const V b = simd::load<V>(im_row + j) + simd::load<V>(ref_im + j);
                simd::store(row + j, a * a + b * b);
            });
        }
    }

    void set_normalisation() {
        double mean_power = 0.0;
        for (const double p : calibrated_power_) {
            mean_power += p;
        }
        mean_power /= static_cast<double>(std::max<std::size_t>(out_, 1));
        if (!(mean_power > 0.0)) {
            throw config_error(
              "lightloop::holographic_readout: calibrated reference power is zero");
        }
        normalisation_ = 1.0 / std::sqrt(static_cast<double>(in_) * 2.0 * variance_ * mean_power);
        calibrated_power_f_.assign(calibrated_power_.begin(), calibrated_power_.end());
    }

    /// |r|^2 and the float copies, from the reference field as it now is
    /// (made, drifted or loaded).
    void reference_changed() {
        reference_power_.resize(out_);
        for (std::size_t j = 0; j < out_; ++j) {
            reference_power_[j] =
              reference_re_[j] * reference_re_[j] + reference_im_[j] * reference_im_[j];
        }
        reference_re_f_.assign(reference_re_.begin(), reference_re_.end());
        reference_im_f_.assign(reference_im_.begin(), reference_im_.end());
    }

    Reference reference_{};
    std::size_t calibration_frames_ = 16;
    std::size_t in_ = 0;
    std::size_t out_ = 0;
    std::size_t first_pixel_ = 0; // where these pixels start on the camera
    double variance_ = 1.0;
    std::vector<double> reference_re_;
    std::vector<double> reference_im_;
    std::vector<double> reference_power_;
    std::vector<double> calibrated_power_;
    std::vector<float> reference_re_f_; // float copies of the three above
    std::vector<float> reference_im_f_;
    std::vector<float> calibrated_power_f_;
    double normalisation_ = 1.0;
};

} // namespace lightloop
