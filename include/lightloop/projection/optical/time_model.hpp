#pragma once
// When do the optics win? A model of the time per training step of a dense
// network, for backprop on the CPU, DFA on the CPU, and DFA with its random
// projection on an OPU.
//
// Every step runs the forward pass and the weight gradients on the CPU
// (2 n d_{i-1} d_i flops each per layer, batch n), then
//   - backprop: the signals back through every layer but the first,
//     2 n d_i d_{i-1} flops each;
//   - DFA on the CPU: one projection of the error e (n x C) into the hidden
//     layers' H = Σ d_i outputs, 2 n C H flops;
//   - DFA on the OPU: the same projection as camera frames. Each sample shows
//     `patterns_per_sample` binary patterns (ternary: e₊ and e₋), each taking
//     `exposures_per_pattern` exposures (holographic: 2), once per tile of
//     the projection that fits the device (ceil(C / micromirrors) x
//     ceil(H / pixels)). Time: frames / frame rate, plus the images' transfer
//     to the host and their decoding (element-wise, on the CPU).
// GEMMs run at `gemm_flops` (the weight gradients', whose inner dimension
// is the batch, at `gradient_gemm_flops`), element-wise passes (activations,
// derivatives, the update, the decoding) at `bytes_per_second`, and every
// step pays a fixed `step_seconds`; the parts add up (no overlap of device
// and host). The OPU replaces only the projection, whose cost on the CPU is
// C/d of a layer's: it pays when C H is large, as for the "trillions of
// parameters" feedback matrices of the optical-training papers, not for a
// 10-class error.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include "lightloop/core/error.hpp"

namespace lightloop {

/// What the CPU does per second, measured on this machine or given for
/// another.
struct cpu_rates {
    double gemm_flops = 2e11;       ///< FLOP/s of the forward and signal GEMMs
    double bytes_per_second = 2e10; ///< element-wise passes' memory bandwidth
    std::size_t scalar_bytes = 4;   ///< fp32
    /// FLOP/s of the weight-gradient GEMMs, whose inner dimension is the
    /// batch (slower at small batches); 0: gemm_flops.
    double gradient_gemm_flops = 0;
    /// Seconds every step costs whatever its size: handing work to the
    /// threads, the loss, the small passes. Measured as a tiny network's step
    /// minus its predicted work; it weighs at small widths only.
    double step_seconds = 0;
};

/// An OPU as the model sees it (LightOn's: 1500 frames/s, 10^6 x 10^6).
struct opu_device_model {
    double frame_rate = 1500.0;             ///< camera exposures per second
    std::size_t micromirrors = 1000000;     ///< inputs per frame
    std::size_t pixels = 1000000;           ///< outputs per frame
    double patterns_per_sample = 2.0;       ///< binary patterns shown per vector (ternary: 2)
    double exposures_per_pattern = 2.0;     ///< holographic: 2, intensity: 1
    double transfer_bytes_per_second = 1e9; ///< camera images to the host
    double bytes_per_pixel = 1.0;           ///< an 8-bit camera
};

enum class step_method { backprop, dfa_cpu, dfa_opu };

inline const char* step_method_name(step_method m) noexcept {
    switch (m) {
        case step_method::backprop:
            return "backprop (CPU)";
        case step_method::dfa_cpu:
            return "DFA (CPU)";
        case step_method::dfa_opu:
            return "DFA (OPU projection)";
    }
    return "?";
}

/// Seconds per step, by part.
struct step_time {
    double forward = 0;     ///< forward GEMMs and activations
    double signals = 0;     ///< backprop's backward GEMMs, or the CPU projection
    double gradients = 0;   ///< weight-gradient GEMMs
    double elementwise = 0; ///< derivatives and the update
    double device = 0;      ///< OPU frames (frames / frame rate)
    double transfer = 0;    ///< camera images to the host, and their decoding
    double fixed = 0;       ///< the per-step cost of any step (cpu_rates::step_seconds)
    double frames = 0;      ///< OPU exposures per step

    double total() const noexcept {
        return forward + signals + gradients + elementwise + device + transfer + fixed;
    }
};

/// The predicted time of one step of a dense network with layer widths
/// `widths` (input, hidden..., classes) at batch `batch`.
inline step_time predict_step(const std::vector<std::size_t>& widths, std::size_t batch,
                              step_method method, const cpu_rates& cpu,
                              const opu_device_model& opu = {}) {
    if (widths.size() < 2 || batch == 0 ||
        std::any_of(widths.begin(), widths.end(), [](std::size_t w) { return w == 0; })) {
        throw config_error("lightloop::predict_step: needs a batch and at least two non-zero "
                           "widths (input and classes)");
    }
    if (!(cpu.gemm_flops > 0.0) || !(cpu.bytes_per_second > 0.0) || !(cpu.step_seconds >= 0.0) ||
        !(opu.frame_rate > 0.0) || !(opu.transfer_bytes_per_second > 0.0) ||
        opu.micromirrors == 0 || opu.pixels == 0) {
        throw config_error("lightloop::predict_step: rates and device sizes must be positive");
    }
    const auto n = static_cast<double>(batch);
    const double scalar = static_cast<double>(cpu.scalar_bytes);
    double weights = 0; // Σ d_{i-1} d_i
    double later = 0;   // the same without the first layer
    double units = 0;   // Σ d_i, every layer's outputs
    double hidden = 0;  // H: the hidden layers' outputs
    const std::size_t layers = widths.size() - 1;
    for (std::size_t i = 1; i <= layers; ++i) {
        const double product = static_cast<double>(widths[i - 1]) * static_cast<double>(widths[i]);
        weights += product;
        later += i > 1 ? product : 0.0;
        units += static_cast<double>(widths[i]);
        hidden += i < layers ? static_cast<double>(widths[i]) : 0.0;
    }
    const auto classes = static_cast<double>(widths.back());
    step_time t;
    t.fixed = cpu.step_seconds;
    // Forward: GEMMs, then the activation (read a, write h).
    t.forward = 2 * n * weights / cpu.gemm_flops + 2 * n * units * scalar / cpu.bytes_per_second;
    const double gradient_rate =
      cpu.gradient_gemm_flops > 0 ? cpu.gradient_gemm_flops : cpu.gemm_flops;
    t.gradients = 2 * n * weights / gradient_rate;
    // The signal times f'(a) per unit (read signal and a, write), and the
    // update: read weight, gradient and momentum, write weight and momentum.
    t.elementwise = (3 * n * units + 5 * (weights + units)) * scalar / cpu.bytes_per_second;
    switch (method) {
        case step_method::backprop:
            t.signals = 2 * n * later / cpu.gemm_flops;
            break;
        case step_method::dfa_cpu:
            t.signals = 2 * n * classes * hidden / cpu.gemm_flops;
            break;
        case step_method::dfa_opu: {
            const double tiles = std::ceil(classes / static_cast<double>(opu.micromirrors)) *
                                 std::ceil(hidden / static_cast<double>(opu.pixels));
            t.frames = n * opu.patterns_per_sample * opu.exposures_per_pattern * tiles;
            t.device = t.frames / opu.frame_rate;
            const double pixels_read =
              t.frames * std::min(hidden, static_cast<double>(opu.pixels)); // per exposure
            // Decoding reads each exposure's pixels and accumulates the projection.
            t.transfer = pixels_read * opu.bytes_per_pixel / opu.transfer_bytes_per_second +
                         (pixels_read * scalar + 2 * n * hidden * scalar) / cpu.bytes_per_second;
            break;
        }
    }
    return t;
}

/// The hidden width w at which `method` becomes faster than `against` for
/// networks input-w-...-w-classes with `depth` hidden layers, searched over
/// powers of two up to `max_width` (0 when it never does).
inline std::size_t crossover_width(std::size_t input, std::size_t depth, std::size_t classes,
                                   std::size_t batch, step_method method, step_method against,
                                   const cpu_rates& cpu, const opu_device_model& opu,
                                   std::size_t max_width = std::size_t{1} << 22) {
    for (std::size_t w = 16; w <= max_width; w *= 2) {
        std::vector<std::size_t> widths{input};
        widths.insert(widths.end(), depth, w);
        widths.push_back(classes);
        if (predict_step(widths, batch, method, cpu, opu).total() <
            predict_step(widths, batch, against, cpu, opu).total()) {
            return w;
        }
    }
    return 0;
}

} // namespace lightloop
