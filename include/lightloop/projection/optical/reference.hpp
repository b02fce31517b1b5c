#pragma once
// Reference fields for holographic readout. Each makes the complex field r
// (one value per camera pixel) that interferes with the signal E.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numbers>
#include <string>
#include <vector>

#include "lightloop/core/describe.hpp"
#include "lightloop/core/error.hpp"
#include "lightloop/core/random.hpp"

namespace lightloop {

/// Off-axis holography, as in the paper: a separate plane-wave beam of
/// uniform amplitude A, tilted so its phase ramps by `tilt` cycles per camera
/// pixel, r_j = A exp(2 pi i tilt j). Its power A^2 is `power` times σ² in,
/// the mean |E_j|^2 of a frame with every micromirror on. Uniform amplitude
/// makes every row of M = 2 Re(r̄ ⊙ R) equally strong.
struct off_axis_reference {
    double power = 1.0;
    double tilt = 0.25;

    static constexpr const char* name = "off-axis";

    std::string describe() const {
        return "off-axis power=" + setting_text(power) + " tilt=" + setting_text(tilt);
    }

    /// r_j for the camera pixels [first, first + out).
    void make(std::size_t out, std::size_t in, std::uint64_t /*seed*/, double variance,
              std::vector<double>& re, std::vector<double>& im, std::size_t first = 0) const {
        if (!(power > 0.0) || !std::isfinite(power) || !std::isfinite(tilt)) {
            throw config_error(
              "lightloop::off_axis_reference: power must be positive and finite and tilt "
              "finite, got power " +
              number_text(power) + ", tilt " + number_text(tilt));
        }
        const double amplitude = std::sqrt(power * variance * static_cast<double>(in));
        re.resize(out);
        im.resize(out);
        for (std::size_t j = 0; j < out; ++j) {
            const double phase = 2.0 * std::numbers::pi * tilt * static_cast<double>(first + j);
            re[j] = amplitude * std::cos(phase);
            im[j] = amplitude * std::sin(phase);
        }
    }
};

/// In-line reference from the DMD itself: `pixels` micromirrors beside the
/// signal's are reserved and show a fixed random pattern (each on with
/// probability `density`, seeded), so r = R_ref x_ref through the same medium:
/// r_j ~ CN(0, σ² m) with m mirrors on. No second beam is needed, but |r_j|
/// varies from pixel to pixel (Rayleigh), so the rows of M have unequal
/// strength, and weak-reference pixels are noisier.
struct dmd_reference {
    std::size_t pixels = 64;
    double density = 0.5;

    static constexpr const char* name = "dmd";
    /// r passes through the medium, and drifts with it.
    static constexpr bool through_medium = true;

    /// E|r_j|^2 = σ² m for the m lit reference micromirrors of `seed`'s
    /// pattern (make()'s): the power of the innovation a drift adds to r.
    double innovation_power(double variance) const noexcept {
        return variance * static_cast<double>(lit);
    }

    std::string describe() const {
        return "dmd pixels=" + std::to_string(pixels) + " density=" + setting_text(density);
    }

    /// r_j for the camera pixels [first, first + out); the rows before them
    /// are drawn through and not kept.
    void make(std::size_t out, std::size_t /*in*/, std::uint64_t seed, double variance,
              std::vector<double>& re, std::vector<double>& im, std::size_t first = 0) {
        if (pixels == 0 || !(density > 0.0 && density <= 1.0)) {
            throw config_error("lightloop::dmd_reference: needs pixels > 0 and density in (0, 1]");
        }
        rng pattern_gen(derive_seed(seed, 0));
        std::vector<bool> on(pixels);
        bool any = false;
        for (std::size_t k = 0; k < pixels; ++k) {
            on[k] = pattern_gen.uniform() < density;
            any = any || on[k];
        }
        if (!any) {
            on[0] = true;
        }
        lit = static_cast<std::size_t>(std::count(on.begin(), on.end(), true));
        // The reserved columns of R, drawn row by row: CN(0, σ²) entries.
        rng medium_gen(derive_seed(seed, 1));
        const double sd = std::sqrt(variance / 2.0);
        re.assign(out, 0.0);
        im.assign(out, 0.0);
        for (std::size_t j = 0; j < first + out; ++j) {
            for (std::size_t k = 0; k < pixels; ++k) {
                const double a = sd * medium_gen.normal();
                const double b = sd * medium_gen.normal();
                if (on[k] && j >= first) {
                    re[j - first] += a;
                    im[j - first] += b;
                }
            }
        }
    }

    /// The lit micromirrors of the last pattern make() drew (not a setting).
    std::size_t lit = 0;
};

} // namespace lightloop
