// A drifting optical medium: test accuracy of holographic DFA against the
// medium's drift rate, with and without recalibrating the reference.
//
// The paper's network (784-1024-1024-10 tanh) trains on Fashion-MNIST with
// DFA through a simulated OPU whose reference comes from reserved
// micromirrors (dmd_reference), so it passes through the medium and drifts
// with it. Per frame, R(t+1) = √(1-ε) R(t) + √ε N(t): the feedback matrix
// decorrelates over training, as in a real scattering medium (temperature,
// vibration). Recalibration measures the reference's |r|^2 again every K
// frames (16 exposures each, counted in the frames).
//
//   opu_drift --drift-rates 0,1e-7,1e-6,1e-5 --recalibrate-every 20000 --epochs 2
//
// Prints a table and writes <out>/opu_drift.csv (every epoch of every run).
#include "demo.hpp"

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

int main(int argc, char** argv) {
    using namespace lightloop;
    ensure_fast_blas(argv);
    demos::options o;
    o.out = "opu_drift_out";
    std::vector<double> rates{0.0, 1e-7, 1e-6, 1e-5};
    std::uint64_t every = 20000;
    CLI::App app{"Holographic DFA through a drifting simulated OPU: test accuracy against the "
                 "drift rate, with and without recalibrating the reference.",
                 "opu_drift"};
    demos::add_flags(app, o);
    app.remove_option(app.get_option("--methods"));
    app.remove_option(app.get_option("--precision"));
    app.remove_option(app.get_option("--medium-precision")); // its devices are its own
    app.remove_option(app.get_option("--resume"));           // needs --checkpoint: removed first
    app.remove_option(app.get_option("--checkpoint"));       // runs that share a method's name
    app.add_option("--drift-rates", rates, "drift ε per frame, comma-separated, each in [0, 1)")
      ->delimiter(',')
      ->check(CLI::Range(0.0, 0.999999))
      ->capture_default_str();
    app.add_option("--recalibrate-every", every, "frames between recalibrations (when on)")
      ->check(programs::positive())
      ->capture_default_str();
    const demos::demo<demos::make_paper_network> d{"opu_drift", "784-1024-1024-10 tanh", {}};
    return programs::run(app, argc, argv, [&] {
        const camera cam = demos::make_camera(o);
        const ternary_encoder encoder(o.threshold);
        const mnist_data data = demos::begin_study(d, o);
        std::printf("lightloop %s | %s: %zu train, %zu test | %s, sgd lr %g, batch %zu, %zu "
                    "epochs, seed %llu\nholographic DFA, DMD reference (drifts with the "
                    "medium), %d-bit camera, read noise %g e-\n\n",
                    version_string, o.data.c_str(), data.train.size(), data.test.size(),
                    d.architecture.c_str(), o.learning_rate, o.batch, o.epochs,
                    static_cast<unsigned long long>(o.seed), o.camera_bits, o.read_noise);
        using device = optical<holographic_readout<dmd_reference>, camera>;
        demos::one_process_as_given runner;
        struct row {
            double rate;
            std::uint64_t every;
            double accuracy;
            std::uint64_t frames;
            double seconds;
        };
        std::vector<row> rows;
        for (const double rate : rates) {
            for (const std::uint64_t recalibrate : {std::uint64_t{0}, every}) {
                const std::string name = "drift " + number_text(rate) + " recalibrate " +
                                         (recalibrate > 0 ? std::to_string(recalibrate) : "never");
                const demos::result r = demos::run_in<float>(
                  d, name,
                  dfa<device>{device{holographic_readout<dmd_reference>{},
                                     cam,
                                     encoder,
                                     {.drift = rate, .recalibrate_every = recalibrate}}},
                  o, data, runner);
                const auto& last = r.history.epochs.back();
                rows.push_back(
                  {rate, recalibrate, last.test_accuracy, last.device_frames, last.device_seconds});
            }
        }
        std::printf("\n%-10s %-14s %10s %12s %18s %12s\n", "drift ε", "recalibrate", "test acc %",
                    "OPU frames", "corr(R_end, R_0)", "OPU time s");
        for (const row& r : rows) {
            // The medium's correlation with its start after F frames: (1-ε)^(F/2).
            const double correlation = std::pow(1.0 - r.rate, 0.5 * static_cast<double>(r.frames));
            std::printf("%-10.0e %-14s %10.2f %12llu %18.3f %12.1f\n", r.rate,
                        r.every > 0 ? ("every " + std::to_string(r.every)).c_str() : "never",
                        100.0 * r.accuracy, static_cast<unsigned long long>(r.frames), correlation,
                        r.seconds);
        }
        std::printf("\nwrote %s\n", (std::filesystem::path(o.out) / (d.stem + ".csv")).c_str());
        return 0;
    });
}
