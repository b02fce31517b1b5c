#pragma once
// What an optical device is set up with, and what it counts.

#include <cmath>
#include <cstdint>
#include <limits>

namespace lightloop {

struct optical_settings {
    /// σ², the variance of the transmission matrix's complex entries.
    double variance = 1.0;
    /// Frames (camera exposures) per second of the modelled device.
    double frame_rate = 1500.0;
    /// Also compute the noiseless projection of every batch and accumulate the
    /// SNR of the measured one against it (costs a second decode).
    bool track_snr = false;
    /// Round the medium's entries to bf16 (transmission_matrix.hpp): the
    /// frames are binary, so the field is otherwise exact.
    bool bf16_medium = false;
    /// ε, the medium's drift per frame: R(t+1) = √(1-ε) R(t) + √ε N(t)
    /// (0: a stable medium). Applied between projections, for the frames each
    /// took; a reference through the medium (dmd_reference) drifts with it.
    double drift = 0.0;
    /// Measure the holographic reference's |r|^2 again every this many
    /// frames (0: only once, at the start); its exposures are counted.
    std::uint64_t recalibrate_every = 0;
};

struct optical_statistics {
    std::uint64_t projections = 0;        ///< vectors projected
    std::uint64_t patterns = 0;           ///< non-empty binary frames displayed
    std::uint64_t frames = 0;             ///< camera exposures, calibration included
    std::uint64_t calibration_frames = 0; ///< of which spent calibrating
    std::uint64_t pixels_read = 0;
    std::uint64_t pixels_saturated = 0;
    double frame_rate = 1500.0;
    double signal_energy = 0.0; ///< sum of the noiseless projections squared (track_snr)
    double noise_energy = 0.0;  ///< sum of (measured - noiseless)^2 (track_snr)

    /// The time a real OPU at frame_rate would have taken.
    double device_seconds() const noexcept { return static_cast<double>(frames) / frame_rate; }
    double saturated_fraction() const noexcept {
        return pixels_read == 0
                 ? 0.0
                 : static_cast<double>(pixels_saturated) / static_cast<double>(pixels_read);
    }
    /// 10 log10(signal / noise) of the measured projections against the
    /// noiseless ones; +inf with no noise, NaN when not tracked.
    double snr_db() const noexcept {
        if (signal_energy == 0.0) {
            return std::numeric_limits<double>::quiet_NaN();
        }
        if (noise_energy == 0.0) {
            return std::numeric_limits<double>::infinity();
        }
        return 10.0 * std::log10(signal_energy / noise_energy);
    }
};

} // namespace lightloop
