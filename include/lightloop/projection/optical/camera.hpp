#pragma once
// Camera models: what the sensor reports for an intensity pattern.
//
// `camera` follows the usual sensor chain. An intensity I (in the simulator's
// field units) gives exposure * I expected photo-electrons; shot noise makes
// the count Poisson; read noise adds N(0, read_noise^2) electrons; the ADC
// converts electrons to counts at full_well / (2^bits - 1 - dark_offset)
// electrons per count, adds the black level dark_offset, rounds, and clips to
// [0, 2^bits - 1]. A pixel at the top count is saturated. The reported
// intensity inverts the known gain and offset: (counts - dark_offset) *
// electrons_per_count / exposure. Dark current and pixel non-uniformity are
// not modelled.
//
// Calibration: before the first exposure the device shows the camera a batch
// of realistic intensities; calibrate() sets the exposure so that their
// `calibration_quantile` (default 99.9 %) lands at `headroom` (default 80 %)
// of full well. About 0.1 % of such pixels may still saturate, and the device
// reports the fraction that did.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "lightloop/core/concepts.hpp"
#include "lightloop/core/error.hpp"
#include "lightloop/core/random.hpp"
#include "lightloop/core/ziggurat.hpp"

namespace lightloop {

/// Photo-electrons plus read noise for `mean` expected photo-electrons:
/// Poisson(mean) + N(0, read_noise^2). Below a mean of 30 the Poisson count is
/// drawn exactly (Knuth's product method); above it the sum is drawn as one
/// normal N(mean, mean + read_noise^2), the Poisson's normal approximation
/// (skewness 1/sqrt(mean) < 0.19 there; mean and variance exact). Normals come
/// from the ziggurat: this runs once per pixel per exposure.
inline double electron_draw(rng& gen, double mean, bool shot_noise, double read_noise) {
    if (!shot_noise || !(mean > 0.0)) {
        const double base = mean > 0.0 ? mean : 0.0;
        return read_noise > 0.0 ? base + read_noise * ziggurat_normal(gen) : base;
    }
    if (mean < 30.0) {
        const double limit = std::exp(-mean);
        double product = gen.uniform();
        double k = 0.0;
        while (product > limit) {
            product *= gen.uniform();
            k += 1.0;
        }
        return read_noise > 0.0 ? k + read_noise * ziggurat_normal(gen) : k;
    }
    return mean + std::sqrt(mean + read_noise * read_noise) * ziggurat_normal(gen);
}

struct camera_settings {
    int bits = 8;               ///< ADC bit depth
    double full_well = 10000.0; ///< electrons at the top of the ADC range
    double read_noise = 5.0;    ///< electrons rms, Gaussian
    double dark_offset = 4.0;   ///< black level, counts
    bool shot_noise = true;     ///< Poisson photo-electron statistics
    double headroom = 0.8;      ///< calibration target, fraction of full well
    double calibration_quantile = 0.999;
    double exposure = 0.0; ///< electrons per intensity unit; 0: set by calibrate()
};

class camera {
    /// std::round without the libm call (x86-64's baseline has no SSE4.1
    /// rounding instruction): truncation after adding +-0.5. |x| stays far
    /// below 2^62 here (counts of a <= 24-bit ADC plus noise).
    static double round_half_away(double x) noexcept {
        return static_cast<double>(static_cast<long long>(x + (x >= 0.0 ? 0.5 : -0.5)));
    }

public:
    explicit camera(camera_settings settings = {})
      : settings_(settings) {
        const auto& s = settings;
        require(s.bits >= 1 && s.bits <= 24, "bits", s.bits, "in [1, 24]");
        require(s.full_well > 0.0, "full_well", s.full_well, "positive");
        require(s.read_noise >= 0.0, "read_noise", s.read_noise, ">= 0");
        require(s.dark_offset >= 0.0 && s.dark_offset < max_count() - 1.0, "dark_offset",
                s.dark_offset, "in [0, 2^bits - 2)");
        require(s.headroom > 0.0 && s.headroom <= 1.0, "headroom", s.headroom, "in (0, 1]");
        require(s.calibration_quantile > 0.0 && s.calibration_quantile <= 1.0,
                "calibration_quantile", s.calibration_quantile, "in (0, 1]");
        require(s.exposure >= 0.0, "exposure", s.exposure, ">= 0");
    }

    void reseed(std::uint64_t seed) { gen_.reseed(seed); }

    bool calibrated() const noexcept { return settings_.exposure > 0.0; }

    /// Sets the exposure from a sample of intensities (see the file comment).
    template <scalar T>
    void calibrate(std::span<const T> intensities) {
        scratch_.assign(intensities.begin(), intensities.end());
        if (scratch_.empty()) {
            throw config_error("lightloop::camera::calibrate: no intensities to calibrate on");
        }
        const auto rank = static_cast<std::size_t>(
          std::ceil(settings_.calibration_quantile * static_cast<double>(scratch_.size())) - 1);
        const auto nth =
          scratch_.begin() + static_cast<std::ptrdiff_t>(std::min(rank, scratch_.size() - 1));
        std::nth_element(scratch_.begin(), nth, scratch_.end());
        const double level =
          *nth > 0.0 ? *nth : *std::max_element(scratch_.begin(), scratch_.end());
        if (!(level > 0.0) || !std::isfinite(level)) {
            throw config_error(
              "lightloop::camera::calibrate: intensities are all zero or not finite");
        }
        settings_.exposure = settings_.headroom * settings_.full_well / level;
        scratch_.clear();
        scratch_.shrink_to_fit();
    }

    void set_exposure(double electrons_per_unit) {
        require(electrons_per_unit > 0.0, "exposure", electrons_per_unit, "positive");
        settings_.exposure = electrons_per_unit;
    }

    template <scalar T>
    void expose(std::span<const T> intensity, std::span<T> measured) {
        if (!calibrated()) {
            throw config_error("lightloop::camera: expose() before calibrate() or set_exposure()");
        }
        const double exposure = settings_.exposure;
        const double epc = electrons_per_count();
        const double top = max_count();
        const double offset = settings_.dark_offset;
        const double read_noise = settings_.read_noise;
        const bool shot = settings_.shot_noise;
        const double to_intensity = epc / exposure;
        const double per_electron = 1.0 / epc;
        std::uint64_t saturated = 0;
        for (std::size_t i = 0; i < intensity.size(); ++i) {
            const double electrons =
              electron_draw(gen_, exposure * static_cast<double>(intensity[i]), shot, read_noise);
            double counts = round_half_away(electrons * per_electron) + offset;
            if (counts >= top) {
                counts = top;
                ++saturated;
            } else if (counts < 0.0) {
                counts = 0.0;
            }
            measured[i] = static_cast<T>((counts - offset) * to_intensity);
        }
        pixels_read_ += intensity.size();
        pixels_saturated_ += saturated;
    }

    std::uint64_t pixels_read() const noexcept { return pixels_read_; }
    std::uint64_t pixels_saturated() const noexcept { return pixels_saturated_; }
    void reset_counts() noexcept { pixels_read_ = pixels_saturated_ = 0; }

    const camera_settings& settings() const noexcept { return settings_; }
    double max_count() const noexcept { return std::ldexp(1.0, settings_.bits) - 1.0; }
    double electrons_per_count() const noexcept {
        return settings_.full_well / (max_count() - settings_.dark_offset);
    }
    /// One ADC step in intensity units (needs an exposure).
    double lsb() const noexcept { return electrons_per_count() / settings_.exposure; }
    /// The largest intensity reported without saturation.
    double saturation_intensity() const noexcept {
        return (max_count() - settings_.dark_offset) * lsb();
    }

private:
    static void require(bool ok, const char* name, double value, const char* expected) {
        if (!ok) {
            throw config_error(std::string("lightloop::camera: ") + name + " must be " + expected +
                               ", got " + std::to_string(value));
        }
    }

    camera_settings settings_;
    rng gen_{0};
    std::vector<double> scratch_;
    std::uint64_t pixels_read_ = 0;
    std::uint64_t pixels_saturated_ = 0;
};

/// A perfect sensor: reports the intensity it receives. The reference
/// against which the camera's noise is measured.
class ideal_camera {
public:
    void reseed(std::uint64_t) noexcept {}
    template <scalar T>
    void calibrate(std::span<const T>) noexcept {}
    static constexpr bool calibrated() noexcept { return true; }

    template <scalar T>
    void expose(std::span<const T> intensity, std::span<T> measured) {
        std::copy(intensity.begin(), intensity.end(), measured.begin());
        pixels_read_ += intensity.size();
    }

    std::uint64_t pixels_read() const noexcept { return pixels_read_; }
    static constexpr std::uint64_t pixels_saturated() noexcept { return 0; }
    void reset_counts() noexcept { pixels_read_ = 0; }

private:
    std::uint64_t pixels_read_ = 0;
};

static_assert(camera_model<camera> && camera_model<camera, double>);
static_assert(camera_model<ideal_camera> && camera_model<ideal_camera, double>);

} // namespace lightloop
