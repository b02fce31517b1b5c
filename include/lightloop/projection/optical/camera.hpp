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
// electrons_per_count / exposure.
//
// Fixed-pattern imperfections, each off by default: the sensor's pixels are
// not alike. With `prnu` (photo-response non-uniformity) pixel j converts
// light with gain g_j = max(0, 1 + prnu z_j); with `dark_current` it collects
// exposure * d_j dark electrons, d_j = dark_current max(0, 1 + dsnu z'_j)
// (dark-signal non-uniformity): dark current accumulates over the exposure
// time, to which the exposure (electrons per intensity unit) is
// proportional, so the dark signal grows with it. z and z' are i.i.d. N(0, 1)
// from the sensor's seed: one pattern per device, fixed over its life. Dark
// electrons have shot noise like the photo-electrons. The reported intensity
// corrects neither (a camera that corrected them would need flat and dark
// frames). The pattern needs the sensor's width: configure_sensor(pixels,
// seed), which the optical device calls; exposures are then whole rows of
// `pixels`.
//
// Calibration: before the first exposure the device shows the camera a batch
// of realistic intensities; calibrate() sets the exposure so that their
// `calibration_quantile` (default 99.9 %) lands at `headroom` (default 80 %)
// of full well. About 0.1 % of such pixels may still saturate, and the device
// reports the fraction that did.
//
// Noise draws: a pixel's count, Poisson(m) photo-electrons plus N(0, r^2)
// read noise, has mean m, variance m + r^2 and skewness m / (m + r^2)^(3/2).
// Where that skewness is at most 1/sqrt(30) = 0.18 (a Poisson of mean 30) the
// count is drawn as one normal N(m, m + r^2): mean and variance exact, the
// third moment off by at most that skewness. Elsewhere - dim pixels, and only
// when the read noise is small - the Poisson count is drawn exactly, by
// inversion of its CDF, and the read noise added. The skewness peaks at
// 0.385 / r (at m = 2 r^2), so with read noise of 2.11 electrons or more (the
// default is 5) no pixel needs the exact draw; with none, every pixel under 30
// electrons gets it. The draws run in bulk (rng_lanes), a chunk of pixels at
// a time: the camera simulates a million pixels per batch.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include <xsimd/xsimd.hpp>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "lightloop/core/concepts.hpp"
#include "lightloop/core/describe.hpp"
#include "lightloop/core/error.hpp"
#include "lightloop/core/random.hpp"
#include "lightloop/core/random_lanes.hpp"
#include "lightloop/core/seeded_matrix.hpp"

namespace lightloop {

struct camera_settings {
    int bits = 8;               ///< ADC bit depth
    double full_well = 10000.0; ///< electrons at the top of the ADC range
    double read_noise = 5.0;    ///< electrons rms, Gaussian
    double dark_offset = 4.0;   ///< black level, counts
    bool shot_noise = true;     ///< Poisson photo-electron statistics
    double headroom = 0.8;      ///< calibration target, fraction of full well
    double calibration_quantile = 0.999;
    double exposure = 0.0;     ///< electrons per intensity unit; 0: set by calibrate()
    double prnu = 0.0;         ///< rms of the pixels' gains around 1 (fixed pattern)
    double dark_current = 0.0; ///< mean dark electrons per pixel per unit of exposure
    double dsnu = 0.0;         ///< rms of the pixels' dark currents around the mean, relative
};

class camera {
public:
    camera()
      : camera(camera_settings{}) {}
    explicit camera(camera_settings settings)
      : settings_(settings) {
        const auto& s = settings;
        // One bit would leave no count between the black level and the top.
        require(s.bits >= 2 && s.bits <= 24, "bits", s.bits, "in [2, 24]");
        require(s.full_well > 0.0 && std::isfinite(s.full_well), "full_well", s.full_well,
                "positive and finite");
        require(s.read_noise >= 0.0 && std::isfinite(s.read_noise), "read_noise", s.read_noise,
                "finite and >= 0");
        if (!(s.dark_offset >= 0.0 && s.dark_offset < max_count() - 1.0)) {
            throw config_error("lightloop::camera: dark_offset must be in [0, 2^bits - 2) = [0, " +
                               number_text(max_count() - 1.0) + ") for a " +
                               std::to_string(s.bits) + "-bit ADC, got " +
                               number_text(s.dark_offset));
        }
        require(s.headroom > 0.0 && s.headroom <= 1.0, "headroom", s.headroom, "in (0, 1]");
        require(s.calibration_quantile > 0.0 && s.calibration_quantile <= 1.0,
                "calibration_quantile", s.calibration_quantile, "in (0, 1]");
        require(s.exposure >= 0.0 && std::isfinite(s.exposure), "exposure", s.exposure,
                "finite and >= 0");
        require(s.prnu >= 0.0 && std::isfinite(s.prnu), "prnu", s.prnu, ">= 0");
        require(s.dark_current >= 0.0 && std::isfinite(s.dark_current), "dark_current",
                s.dark_current, ">= 0");
        require(s.dsnu >= 0.0 && std::isfinite(s.dsnu), "dsnu", s.dsnu, ">= 0");
    }

    /// Whether the pixels differ (prnu or dark current set).
    bool has_fixed_pattern() const noexcept {
        return settings_.prnu > 0.0 || settings_.dark_current > 0.0;
    }

    /// Draws the fixed pattern of a sensor `pixels` wide from `seed` (see the
    /// file comment); with neither prnu nor dark current there is none.
    void configure_sensor(std::size_t pixels, std::uint64_t seed) {
        configure_sensor(pixels, seed, 0, pixels);
    }
    /// This camera as pixels [first, first + pixels) of a sensor `total`
    /// wide: their part of that sensor's fixed pattern, the rest drawn
    /// through and not kept.
    void configure_sensor(std::size_t pixels, std::uint64_t seed, std::size_t first,
                          std::size_t total) {
        if (first > total || pixels > total - first) {
            throw config_error("lightloop::camera: pixels [" + std::to_string(first) + ", " +
                               std::to_string(first + pixels) + ") are not on a sensor " +
                               std::to_string(total) + " wide");
        }
        pixels_ = pixels;
        gain_.clear();
        dark_.clear();
        gain_f_.clear();
        dark_f_.clear();
        if (!has_fixed_pattern()) {
            return;
        }
        rng gen(seed);
        gain_.resize(pixels);
        dark_.resize(pixels);
        const auto mine = [&](std::size_t j) { return j >= first && j < first + pixels; };
        for (std::size_t j = 0; j < total; ++j) {
            const double g = std::max(0.0, 1.0 + settings_.prnu * gen.normal());
            if (mine(j)) {
                gain_[j - first] = g;
            }
        }
        for (std::size_t j = 0; j < total; ++j) {
            const double d =
              settings_.dark_current * std::max(0.0, 1.0 + settings_.dsnu * gen.normal());
            if (mine(j)) {
                dark_[j - first] = d;
            }
        }
        gain_f_.assign(gain_.begin(), gain_.end());
        dark_f_.assign(dark_.begin(), dark_.end());
    }

    /// The pixels' gains and dark currents (electrons per unit of exposure);
    /// empty without a fixed pattern.
    const std::vector<double>& pixel_gains() const noexcept { return gain_; }
    const std::vector<double>& pixel_dark_currents() const noexcept { return dark_; }

    void reseed(std::uint64_t seed) { gen_.reseed(seed); }

    /// The sensor's settings (not the exposure, which is calibrated), for
    /// checkpoint signatures.
    std::string describe() const {
        const auto& s = settings_;
        std::string text = "camera bits=" + std::to_string(s.bits) +
                           " full_well=" + setting_text(s.full_well) +
                           " read_noise=" + setting_text(s.read_noise) +
                           " dark_offset=" + setting_text(s.dark_offset) +
                           " shot_noise=" + std::to_string(s.shot_noise);
        if (has_fixed_pattern()) {
            text += " prnu=" + setting_text(s.prnu) +
                    " dark_current=" + setting_text(s.dark_current) +
                    " dsnu=" + setting_text(s.dsnu);
        }
        return text;
    }

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
        require(electrons_per_unit > 0.0 && std::isfinite(electrons_per_unit), "exposure",
                electrons_per_unit, "positive and finite");
        settings_.exposure = electrons_per_unit;
    }

    /// Sizes the scratch expose() draws into for pixels of type T (once).
    /// The optical device calls it before its threads run: the copies the
    /// other threads expose with are made from this camera, and a thread
    /// that first exposes after warm-up would otherwise allocate then.
    template <scalar T>
    void prepare() {
        work_.template get<T>().resize();
    }

    /// Throws config_error if this ADC's counts do not fit pixels of type T
    /// (float holds them exactly up to 22 bits). expose() checks it; a
    /// program that knows its pixel type can check before it trains.
    template <scalar T>
    void check_pixels() const {
        if (std::is_same_v<T, float> && settings_.bits > 22) {
            throw config_error("lightloop::camera: a " + std::to_string(settings_.bits) +
                               "-bit ADC needs double pixels (float holds counts exactly up "
                               "to 22 bits)");
        }
    }

    template <scalar T>
    void expose(std::span<const T> intensity, std::span<T> measured) {
        if (!calibrated()) {
            throw config_error("lightloop::camera: expose() before calibrate() or set_exposure()");
        }
        if (measured.size() != intensity.size()) {
            throw shape_error("lightloop::camera::expose: " + std::to_string(intensity.size()) +
                              " intensities but " + std::to_string(measured.size()) + " outputs");
        }
        check_pixels<T>();
        prepare<T>();
        if (!has_fixed_pattern()) {
            for (std::size_t i = 0; i < intensity.size(); i += chunk) {
                const std::size_t n = std::min(chunk, intensity.size() - i);
                expose_chunk<T>(intensity.data() + i, measured.data() + i, n, nullptr, nullptr);
            }
        } else {
            if (pixels_ == 0 || gain_.size() != pixels_ || intensity.size() % pixels_ != 0) {
                throw config_error(
                  "lightloop::camera: with prnu or dark current, configure_sensor(pixels, seed) "
                  "first and expose whole rows (" +
                  std::to_string(intensity.size()) + " values, sensor " + std::to_string(pixels_) +
                  " pixels wide)");
            }
            // Row by row, each chunk with its pixels' gains and dark signals
            // (electrons per unit of exposure).
            const T* gain = detail::double_or_float<T>(gain_, gain_f_);
            const T* dark = detail::double_or_float<T>(dark_, dark_f_);
            for (std::size_t row = 0; row < intensity.size(); row += pixels_) {
                for (std::size_t j = 0; j < pixels_; j += chunk) {
                    const std::size_t n = std::min(chunk, pixels_ - j);
                    expose_chunk<T>(intensity.data() + row + j, measured.data() + row + j, n,
                                    gain + j, dark + j);
                }
            }
        }
        pixels_read_ += intensity.size();
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
                               ", got " + number_text(value));
        }
    }

    static constexpr std::size_t chunk = 1024;
    /// 1 / (the skewness the normal approximation may miss)^2: 30, as for a
    /// Poisson of mean 30. A pixel of mean m > 0 is drawn exactly when
    /// m / (m + r^2)^(3/2) exceeds 1/sqrt(30), i.e. when 30 m^2 > (m + r^2)^3
    /// (only ever for m < 30).
    static constexpr float inverse_skewness_squared = 30.0f;

    /// Whether any mean needs the exact draw at read-noise variance v: the
    /// skewness peaks at m = 2 v, where 30 m^2 > (m + v)^3 iff v < 120 / 27.
    bool exact_draws_possible() const noexcept {
        return settings_.shot_noise &&
               settings_.read_noise * settings_.read_noise < 4.0 * inverse_skewness_squared / 27.0;
    }

    /// The exact-draw test on a batch (or a scalar) of means.
    template <class V>
    static auto needs_exact(V m, V read_var) noexcept {
        const V t = m + read_var;
        return (m > V(0)) && (V(inverse_skewness_squared) * (m * m) > t * t * t);
    }

    /// Rounds to nearest (ties to even) with no libm call and no SSE4.1:
    /// adding 1.5 * 2^(mantissa bits) leaves no fraction bits. Exact for
    /// |x| < 2^22 in float and 2^51 in double; beyond, the result is off by at
    /// most one unit, and only far above the ADC's range, where it is clipped.
    template <class B>
    static B round_nearest(B x) noexcept {
        using T = typename B::value_type;
        const B shift(T(1.5) * std::ldexp(T(1), std::numeric_limits<T>::digits - 1));
        return (x + shift) - shift;
    }

    /// Per-chunk scratch in the pixel type, allocated on the first exposure.
    template <class T>
    struct workspace {
        std::vector<float> normal;
        std::vector<T> normal_t; // the normals in T (double only)
        std::vector<T> mean;
        std::vector<T> electrons;
        std::vector<std::uint32_t> dim; // pixels drawn exactly
        std::vector<double> dim_mean;
        std::vector<double> dim_count;
        std::vector<double> uniform;
        void resize() {
            if (normal.size() != chunk) {
                normal.resize(chunk);
                normal_t.resize(std::is_same_v<T, float> ? 0 : chunk);
                mean.resize(chunk);
                electrons.resize(chunk);
                dim.resize(chunk + 16);
                dim_mean.resize(chunk);
                dim_count.resize(chunk);
                uniform.resize(chunk + rng_lanes::group);
            }
        }
    };

    /// Exposes n <= chunk pixels, in T with xsimd batches; through the
    /// pixels' gains and dark signals when `gain` is given.
    template <class T>
    void expose_chunk(const T* intensity, T* measured, std::size_t n, const T* gain,
                      const T* dark) {
        using batch = xsimd::batch<T>;
        auto& w = work_.template get<T>();
        const bool shot = settings_.shot_noise;
        const T read_noise = static_cast<T>(settings_.read_noise);

        gen_.fill_normal(std::span<float>(w.normal.data(), n));
        const T* z = nullptr;
        if constexpr (std::is_same_v<T, float>) {
            z = w.normal.data();
        } else {
            std::copy(w.normal.begin(), w.normal.begin() + static_cast<std::ptrdiff_t>(n),
                      w.normal_t.begin());
            z = w.normal_t.data();
        }
        T* mean = w.mean.data();
        T* electrons = w.electrons.data();

        // Every pixel as if bright, then the dim ones exactly.
        const batch exposure(static_cast<T>(settings_.exposure));
        const batch shot_factor(shot ? T(1) : T(0));
        const batch read_var(read_noise * read_noise);
        const bool exact_possible = exact_draws_possible();
        const auto dim_seen =
          gain != nullptr
            ? (exact_possible
                 ? bright_pixels<true, true>(intensity, z, gain, dark, n, mean, electrons, exposure,
                                             shot_factor, read_var)
                 : bright_pixels<true, false>(intensity, z, gain, dark, n, mean, electrons,
                                              exposure, shot_factor, read_var))
            : (exact_possible
                 ? bright_pixels<false, true>(intensity, z, gain, dark, n, mean, electrons,
                                              exposure, shot_factor, read_var)
                 : bright_pixels<false, false>(intensity, z, gain, dark, n, mean, electrons,
                                               exposure, shot_factor, read_var));
        if (exact_possible && xsimd::any(dim_seen)) {
            // The dim pixels again, exactly: a Poisson count plus read noise
            // from the same normal.
            const std::size_t dim = find_dim(mean, n, read_noise * read_noise, w.dim.data());
            for (std::size_t d = 0; d < dim; ++d) {
                w.dim_mean[d] = static_cast<double>(mean[w.dim[d]]);
            }
            gen_.poisson_inversion(w.dim_mean.data(), w.dim_count.data(), w.uniform.data(), dim);
            for (std::size_t d = 0; d < dim; ++d) {
                const std::size_t p = w.dim[d];
                electrons[p] = static_cast<T>(w.dim_count[d]) + read_noise * z[p];
            }
        }

        const batch per_electron(static_cast<T>(1.0 / electrons_per_count()));
        const batch top(static_cast<T>(max_count()));
        const batch offset(static_cast<T>(settings_.dark_offset));
        const batch to_intensity(static_cast<T>(electrons_per_count() / settings_.exposure));
        // Pad pixels have no electrons: they read the black level, unsaturated.
        const batch saturated =
          digitise(electrons, measured, n, per_electron, top, offset, to_intensity);
        pixels_saturated_ += static_cast<std::uint64_t>(xsimd::hadd(saturated));
    }

    /// The first pass of expose_chunk: every pixel as if bright (or without
    /// shot noise), one normal each, mean + sqrt(shot variance + read
    /// variance) z; the means are kept for the exact draws. Returns the lanes
    /// that saw a mean needing the exact draw (with Exact). Its own function,
    /// the constants passed by value: no store to the pixels can alias them,
    /// so they stay in registers. The tail is a batch padded with zeros
    /// (intensity 0), computed and dropped.
    template <bool FixedPattern, bool Exact, class B, class T = typename B::value_type>
    static auto bright_pixels(const T* intensity, const T* z, const T* gain, const T* dark,
                              std::size_t n, T* mean, T* electrons, B exposure, B shot_factor,
                              B read_var) noexcept {
        const B zero(T(0));
        auto dim_seen = zero > zero;
        const auto pixels = [&](std::size_t i, B light, B normal, B g, B d) {
            if constexpr (FixedPattern) { // gain g_j, d_j dark electrons per unit of exposure
                light = xsimd::fma(g, xsimd::max(light, zero), d);
            }
            const B m = xsimd::max(exposure * light, zero);
            m.store_unaligned(mean + i);
            if constexpr (Exact) {
                dim_seen = dim_seen || needs_exact(m, read_var);
            }
            const B sd = xsimd::sqrt(xsimd::fma(shot_factor, m, read_var));
            xsimd::fma(sd, normal, m).store_unaligned(electrons + i);
        };
        const std::size_t full = n / B::size * B::size;
        for (std::size_t i = 0; i < full; i += B::size) {
            pixels(i, B::load_unaligned(intensity + i), B::load_unaligned(z + i),
                   FixedPattern ? B::load_unaligned(gain + i) : zero,
                   FixedPattern ? B::load_unaligned(dark + i) : zero);
        }
        if (full < n) {
            pixels(full, load_padded<B>(intensity, full, n), load_padded<B>(z, full, n),
                   FixedPattern ? load_padded<B>(gain, full, n) : zero,
                   FixedPattern ? load_padded<B>(dark, full, n) : zero);
        }
        return dim_seen;
    }

    /// The ADC: gain, black level, rounding, clipping; then the known gain
    /// and offset inverted. Returns the saturated pixels per lane.
    template <class B, class T = typename B::value_type>
    static B digitise(const T* electrons, T* measured, std::size_t n, B per_electron, B top,
                      B offset, B to_intensity) noexcept {
        const B zero(T(0));
        B saturated(T(0));
        const auto convert = [&](std::size_t i) {
            const B counts =
              round_nearest(B::load_unaligned(electrons + i) * per_electron) + offset;
            saturated += xsimd::select(counts >= top, B(T(1)), zero);
            return (xsimd::min(xsimd::max(counts, zero), top) - offset) * to_intensity;
        };
        const std::size_t full = n / B::size * B::size;
        for (std::size_t i = 0; i < full; i += B::size) {
            convert(i).store_unaligned(measured + i);
        }
        if (full < n) {
            store_padded(convert(full), measured, full, n);
        }
        return saturated;
    }

    /// Writes the indices of the pixels that need the exact draw (see
    /// needs_exact) to `index` (room for n + 16) and returns how many there
    /// are: branch-free, and with AVX-512 sixteen pixels at a time by
    /// compress.
    template <class T>
    static std::size_t find_dim(const T* mean, std::size_t n, T read_var,
                                std::uint32_t* index) noexcept {
        std::size_t dim = 0;
        std::size_t i = 0;
#if defined(__AVX512F__)
        if constexpr (std::is_same_v<T, float>) {
            using batch16 = xsimd::batch<float, xsimd::avx512f>;
            const batch16 v(read_var);
            __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
            const __m512i step = _mm512_set1_epi32(16);
            for (; i + 16 <= n; i += 16) {
                // needs_exact's mask is an AVX-512 mask register here.
                const __mmask16 is_dim = needs_exact(batch16::load_unaligned(mean + i), v);
                // Compress in a register and store all sixteen lanes: the
                // compress-to-memory form is microcoded on AMD Zen 4, many
                // times slower; `index` has room for the lanes past the count.
                _mm512_storeu_si512(index + dim, _mm512_maskz_compress_epi32(is_dim, lane));
                dim += static_cast<std::size_t>(__builtin_popcount(is_dim));
                lane = _mm512_add_epi32(lane, step);
            }
        }
#endif
        for (; i < n; ++i) {
            index[dim] = static_cast<std::uint32_t>(i);
            dim += needs_exact(mean[i], read_var) ? std::size_t{1} : std::size_t{0};
        }
        return dim;
    }

    /// Stores the lanes of b that fall before n at data + i.
    template <class B, class T>
    static void store_padded(B b, T* data, std::size_t i, std::size_t n) noexcept {
        if (i + B::size <= n) {
            b.store_unaligned(data + i);
            return;
        }
        alignas(64) T part[B::size];
        b.store_aligned(part);
        std::copy(part, part + (n - i), data + i);
    }

    /// A batch from data[i, i + width), zeros past n.
    template <class B, class T>
    static B load_padded(const T* data, std::size_t i, std::size_t n) noexcept {
        if (i + B::size <= n) {
            return B::load_unaligned(data + i);
        }
        alignas(64) T part[B::size] = {};
        std::copy(data + i, data + n, part);
        return B::load_aligned(part);
    }

    camera_settings settings_;
    std::size_t pixels_ = 0;    // the sensor's width (configure_sensor)
    std::vector<double> gain_;  // the fixed pattern: per-pixel gain
    std::vector<double> dark_;  // and dark electrons per unit of exposure
    std::vector<float> gain_f_; // float copies of the two, read by float exposures
    std::vector<float> dark_f_;
    rng_lanes gen_{0};
    detail::per_scalar<workspace> work_;
    std::vector<double> scratch_;
    std::uint64_t pixels_read_ = 0;
    std::uint64_t pixels_saturated_ = 0;
};

/// A perfect sensor: reports the intensity it receives. The reference
/// against which the camera's noise is measured.
class ideal_camera {
public:
    static constexpr const char* name = "ideal_camera";
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
