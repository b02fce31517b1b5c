// The simulated OPU at its real scale: F binary frames through the whole
// optical chain (ternary encoder, medium, off-axis holographic readout, 8-bit
// camera with shot and read noise) at up to 10^6 micromirrors by 10^6 camera
// pixels, with the time per frame and the peak memory.
//
//   opu_scale --in 1000000 --out 1000000 --frames 4 --medium structured
//
// --medium iid stores R (2 in out floats) and is refused when that exceeds
// the machine's memory (by the library); matrix-free regenerates the same R inside each
// product (time grows as in x out, memory does not); structured is the
// O(n log n) Hadamard-and-phases transform (optical/structured_medium.hpp).
#include <lightloop/lightloop.hpp>

#include "cli.hpp"

#include <sys/resource.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace {

struct settings {
    std::size_t in = 100000;
    std::size_t out = 100000;
    std::size_t frames = 4;
    std::string medium = "structured";
    std::uint64_t seed = 1;
    int threads = 2;
};

double peak_mebibytes() {
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    return static_cast<double>(usage.ru_maxrss) / 1024.0; // KiB on Linux
}

double gibibytes(double bytes) {
    return bytes / (1024.0 * 1024.0 * 1024.0);
}

template <class Medium>
int run(const settings& s) {
    using namespace lightloop;
    set_blas_threads(s.threads);
    optical<holographic_readout<off_axis_reference>, camera, ternary_encoder, Medium> device;
    device.configure(s.in, s.out, s.seed);
    // Binary inputs: the ternary encoder shows each as one frame (its
    // negative frame is empty and skipped).
    auto x = matrix<float>::from_shape({s.frames, s.in});
    rng gen(derive_seed(s.seed, 7));
    for (auto& v : x) {
        v = gen.uniform() < 0.5 ? 1.0f : 0.0f;
    }
    auto y = matrix<float>::from_shape({s.frames, s.out});
    using clock = std::chrono::steady_clock;
    const auto t0 = clock::now();
    device.project(x, y); // the first projection calibrates the camera on it
    const auto t1 = clock::now();
    device.project(x, y);
    const auto t2 = clock::now();
    const optical_statistics stats = device.statistics();
    const double first = std::chrono::duration<double>(t1 - t0).count();
    const double second = std::chrono::duration<double>(t2 - t1).count();
    const auto per_frame = second / static_cast<double>(s.frames);
    double sum2 = 0.0;
    for (const float v : y) {
        sum2 += static_cast<double>(v) * v;
    }
    std::printf("medium %s: %zu micromirrors -> %zu camera pixels, %zu frames, %d threads\n",
                Medium::name, s.in, s.out, s.frames, s.threads);
    std::printf("first projection (with calibration): %.3f s\n", first);
    std::printf("projection: %.3f s, %.4f s per frame\n", second, per_frame);
    std::printf("camera exposures: %llu (%llu calibrating), modelled OPU time %.4f s\n",
                static_cast<unsigned long long>(stats.frames),
                static_cast<unsigned long long>(stats.calibration_frames), stats.device_seconds());
    std::printf("output rms %.4g, saturated pixels %.2e\n",
                std::sqrt(sum2 / static_cast<double>(y.size())), stats.saturated_fraction());
    std::printf("peak memory: %.1f MiB (a stored R would hold %.1f GiB)\n", peak_mebibytes(),
                gibibytes(2.0 * 4.0 * static_cast<double>(s.in) * static_cast<double>(s.out)));
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    lightloop::ensure_fast_blas(argv);
    CLI::App app{"The simulated OPU at scale: time per frame and peak memory of the optical "
                 "chain.",
                 "opu_scale"};
    settings s;
    app.add_option("--in", s.in, "micromirrors (inputs)")
      ->check(lightloop::programs::positive())
      ->capture_default_str();
    app.add_option("--out", s.out, "camera pixels (outputs)")
      ->check(lightloop::programs::positive())
      ->capture_default_str();
    app.add_option("--frames", s.frames, "binary frames projected")
      ->check(lightloop::programs::positive())
      ->capture_default_str();
    app.add_option("--medium", s.medium, "iid (stored R), matrix-free or structured")
      ->check(CLI::IsMember({"iid", "matrix-free", "structured"}))
      ->capture_default_str();
    app.add_option("--seed", s.seed, "seed of the medium, reference and noise")
      ->capture_default_str();
    lightloop::programs::add_threads(app, s.threads);
    return lightloop::programs::run(app, argc, argv, [&] {
        if (s.medium == "iid") { // refused when R would not fit in memory
            return run<lightloop::transmission_matrix>(s);
        }
        if (s.medium == "matrix-free") {
            return run<lightloop::matrix_free_medium>(s);
        }
        return run<lightloop::structured_medium>(s);
    });
}
