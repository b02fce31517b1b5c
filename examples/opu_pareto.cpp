// Accuracy against device time: how many OPU frames per sample DFA needs.
//
// The paper's network (784-1024-1024-10 tanh) trains on Fashion-MNIST with
// DFA through the simulated OPU under every encoder and readout asked for:
// ternarization at several thresholds (2 binary patterns per error vector)
// and bit-planes with k planes per sign (2k patterns), each read out by
// holography (2 exposures per pattern) or by intensity (1). Each setting is
// trained once per seed; the table gives its mean test accuracy, the camera
// exposures it took per training sample, and the modelled OPU time per epoch
// at the device's frame rate. The settings no other setting beats on both
// (higher accuracy at no more device time) form the Pareto front, marked *.
// Dense DFA on the CPU, same seeds, is the line to reach.
//
// --medium picks the scattering medium every setting goes through: iid (the
// stored transmission matrix, the default), matrix-free (the same entries,
// regenerated per product) or structured (the O(n log n) Hadamard-and-phases
// transform); the same study with --medium structured --encoders ternary and
// one threshold compares the structured medium with the i.i.d. one on the demo.
//
//   opu_pareto --epochs 5 --seeds 0,1,2 --thresholds 0.05,0.1,0.2,0.3 --planes 1,2,3,4
//
// Prints the table and writes <out>/opu_pareto.csv (every epoch of every run)
// and <out>/opu_pareto.svg (accuracy against OPU time per epoch).
#include "demo.hpp"

#include <algorithm>
#include <cstdio>
#include <iterator>
#include <string>
#include <tuple>
#include <vector>

namespace {

struct setting {
    std::string readout; // holographic or intensity
    std::string encoder; // ternary or bitplane
    double threshold = 0;
    std::size_t planes = 0;

    std::string name() const {
        char text[64];
        if (encoder == "ternary") {
            std::snprintf(text, sizeof text, "%s ternary %g", readout.c_str(), threshold);
        } else {
            std::snprintf(text, sizeof text, "%s bitplane k=%zu", readout.c_str(), planes);
        }
        return text;
    }
};

struct outcome {
    setting s;
    double accuracy = 0;          // mean test accuracy over the seeds, last epoch
    double frames_per_sample = 0; // camera exposures per training sample
    double seconds_per_epoch = 0; // modelled OPU time
    bool pareto = false;
};

/// Every device the study can build: two readouts, two encoders, three media.
template <class Medium>
using devices_through =
  std::tuple<lightloop::optical<lightloop::holographic_readout<>, lightloop::camera,
                                lightloop::ternary_encoder, Medium>,
             lightloop::optical<lightloop::holographic_readout<>, lightloop::camera,
                                lightloop::bitplane_encoder, Medium>,
             lightloop::optical<lightloop::intensity_readout, lightloop::camera,
                                lightloop::ternary_encoder, Medium>,
             lightloop::optical<lightloop::intensity_readout, lightloop::camera,
                                lightloop::bitplane_encoder, Medium>>;

template <class... Tuples>
struct choice_of;
template <class... A, class... B, class... C>
struct choice_of<std::tuple<A...>, std::tuple<B...>, std::tuple<C...>> {
    using type = lightloop::projection_choice<A..., B..., C...>;
};
using any_device = choice_of<devices_through<lightloop::transmission_matrix>,
                             devices_through<lightloop::matrix_free_medium>,
                             devices_through<lightloop::structured_medium>>::type;

/// Marks the settings no other beats: none with at least the accuracy at no
/// more device time, better in one of the two.
void mark_pareto(std::vector<outcome>& rows) {
    for (auto& r : rows) {
        r.pareto = std::none_of(rows.begin(), rows.end(), [&](const outcome& o) {
            return o.accuracy >= r.accuracy && o.seconds_per_epoch <= r.seconds_per_epoch &&
                   (o.accuracy > r.accuracy || o.seconds_per_epoch < r.seconds_per_epoch);
        });
    }
}

} // namespace

int main(int argc, char** argv) {
    using namespace lightloop;
    ensure_fast_blas(argv);
    demos::options o;
    o.out = "opu_pareto_out";
    o.epochs = 5;
    std::vector<std::uint64_t> seeds{0, 1, 2};
    std::vector<double> thresholds{0.05, 0.1, 0.2, 0.3};
    std::vector<std::size_t> planes{1, 2, 3, 4};
    std::vector<std::string> readouts{"holographic", "intensity"};
    std::vector<std::string> encoders{"ternary", "bitplane"};
    std::string medium = "iid";
    CLI::App app{"DFA through the simulated OPU under each encoder and readout: test accuracy "
                 "against camera exposures per sample and modelled OPU time, its Pareto front, "
                 "and dense DFA's accuracy on the same seeds.",
                 "opu_pareto"};
    demos::add_flags(app, o);
    app.remove_option(app.get_option("--methods"));
    app.remove_option(app.get_option("--precision"));
    app.remove_option(app.get_option("--medium-precision")); // its devices are its own
    app.remove_option(app.get_option("--resume"));           // needs --checkpoint: removed first
    app.remove_option(app.get_option("--checkpoint"));       // runs that share a method's name
    app.remove_option(app.get_option("--threshold"));
    app.remove_option(app.get_option("--seed"));
    app.add_option("--seeds", seeds, "seeds to average over, comma-separated")
      ->delimiter(',')
      ->capture_default_str();
    app
      .add_option("--thresholds", thresholds,
                  "ternarization thresholds relative to max|e|, each in [0, 1)")
      ->delimiter(',')
      ->capture_default_str();
    app.add_option("--planes", planes, "bit-plane counts k, each in [1, 16]")
      ->delimiter(',')
      ->capture_default_str();
    app
      .add_option("--encoders", encoders,
                  "ternary (at each --thresholds), bitplane (each --planes), or both")
      ->delimiter(',')
      ->check(CLI::IsMember({"ternary", "bitplane"}))
      ->capture_default_str();
    app.add_option("--readouts", readouts, "holographic, intensity, or both")
      ->delimiter(',')
      ->check(CLI::IsMember({"holographic", "intensity"}))
      ->capture_default_str();
    app.add_option("--medium", medium, "iid (stored R), matrix-free or structured")
      ->check(CLI::IsMember({"iid", "matrix-free", "structured"}))
      ->capture_default_str();
    const demos::demo<demos::make_paper_network> d{"opu_pareto", "784-1024-1024-10 tanh", {}};
    return programs::run(app, argc, argv, [&] {
        auto wanted = [&](const char* encoder) {
            return std::find(encoders.begin(), encoders.end(), encoder) != encoders.end();
        };
        if (!wanted("ternary")) {
            thresholds.clear();
        }
        if (!wanted("bitplane")) {
            planes.clear();
        }
        // Every encoder is built once before the data loads, so that a bad
        // value is refused before any training.
        for (const double t : thresholds) {
            (void)ternary_encoder(t);
        }
        for (const std::size_t k : planes) {
            (void)bitplane_encoder(k);
        }
        const camera cam = demos::make_camera(o);
        const mnist_data data = demos::begin_study(d, o);
        std::printf("lightloop %s | %s: %zu train, %zu test | %s, sgd lr %g, batch %zu, %zu "
                    "epochs, mean of %zu seed(s)\nmedium %s, %d-bit camera, read noise %g e-, %g "
                    "frames/s\n\n",
                    version_string, o.data.c_str(), data.train.size(), data.test.size(),
                    d.architecture.c_str(), o.learning_rate, o.batch, o.epochs, seeds.size(),
                    medium.c_str(), o.camera_bits, o.read_noise, optical_settings{}.frame_rate);
        demos::one_process_as_given runner;
        const double samples = static_cast<double>(o.epochs * data.train.size());

        // One setting over every seed: the mean accuracy and the device's counts.
        auto over_seeds = [&](auto make_feedback, const std::string& name, outcome& out) {
            double accuracy = 0;
            double frames = 0;
            double seconds = 0;
            for (const std::uint64_t seed : seeds) {
                demos::options run = o;
                run.seed = seed;
                const demos::result r = demos::run_in<float>(
                  d, name + " seed " + std::to_string(seed), make_feedback(), run, data, runner);
                const auto& last = r.history.epochs.back();
                accuracy += last.test_accuracy;
                frames += static_cast<double>(last.device_frames);
                seconds += last.device_seconds;
            }
            const auto n = static_cast<double>(seeds.size());
            out.accuracy = accuracy / n;
            out.frames_per_sample = frames / n / samples;
            out.seconds_per_epoch = seconds / n / static_cast<double>(o.epochs);
        };

        outcome dense;
        over_seeds([] { return dfa<dense_gaussian>{}; }, "dfa dense", dense);

        std::vector<setting> settings;
        for (const std::string& readout : readouts) {
            for (const double t : thresholds) {
                settings.push_back({readout, "ternary", t, 0});
            }
            for (const std::size_t k : planes) {
                settings.push_back({readout, "bitplane", 0, k});
            }
        }
        std::vector<outcome> rows;
        for (const setting& s : settings) {
            outcome out{s};
            // One device per readout, encoder and medium, built afresh for
            // each seed and held by one choice type: the network and its
            // training are compiled once, not once per device type.
            auto through = [&]<class Medium, class Readout, class Encoder>(Readout readout,
                                                                           Encoder encoder) {
                using device = optical<Readout, camera, Encoder, Medium>;
                over_seeds(
                  [&] {
                      return dfa<any_device>{any_device{device{readout, cam, encoder}}};
                  },
                  "dfa optical " + s.name(), out);
            };
            auto study = [&](auto readout, auto encoder) {
                if (medium == "structured") {
                    through.template operator()<structured_medium>(readout, encoder);
                } else if (medium == "matrix-free") {
                    through.template operator()<matrix_free_medium>(readout, encoder);
                } else {
                    through.template operator()<transmission_matrix>(readout, encoder);
                }
            };
            if (s.readout == "holographic") {
                if (s.encoder == "ternary") {
                    study(holographic_readout<>{}, ternary_encoder(s.threshold));
                } else {
                    study(holographic_readout<>{}, bitplane_encoder(s.planes));
                }
            } else if (s.encoder == "ternary") {
                study(intensity_readout{}, ternary_encoder(s.threshold));
            } else {
                study(intensity_readout{}, bitplane_encoder(s.planes));
            }
            rows.push_back(out);
        }
        mark_pareto(rows);

        std::printf("\n%-28s %14s %16s %12s %10s %7s\n", "readout and encoder", "frames/sample",
                    "OPU s per epoch", "test acc %", "vs dense", "pareto");
        std::printf("%-28s %14s %16s %12.2f %10s %7s\n", "dense DFA (CPU)", "-", "-",
                    100.0 * dense.accuracy, "-", "");
        for (const outcome& r : rows) {
            std::printf("%-28s %14.2f %16.1f %12.2f %+10.2f %7s\n", r.s.name().c_str(),
                        r.frames_per_sample, r.seconds_per_epoch, 100.0 * r.accuracy,
                        100.0 * (r.accuracy - dense.accuracy), r.pareto ? "*" : "");
        }
        // The cheapest holographic setting within half a point of dense DFA.
        const outcome* cheapest = nullptr;
        for (const outcome& r : rows) {
            if (r.s.readout == "holographic" && r.accuracy >= dense.accuracy - 0.005 &&
                (cheapest == nullptr || r.seconds_per_epoch < cheapest->seconds_per_epoch)) {
                cheapest = &r;
            }
        }
        if (cheapest != nullptr) {
            std::printf("\nholographic DFA within 0.5 points of dense DFA: %s, %.2f frames per "
                        "sample, %.1f s of OPU time per epoch\n",
                        cheapest->s.name().c_str(), cheapest->frames_per_sample,
                        cheapest->seconds_per_epoch);
        } else {
            std::printf("\nno holographic setting came within 0.5 points of dense DFA\n");
        }

        // The chart: one line per readout and encoder family, the front, and
        // dense DFA's accuracy across the whole range of device time.
        line_chart chart{"Fashion-MNIST, " + d.architecture + ", DFA through the OPU",
                         "modelled OPU time per epoch (s)",
                         "test accuracy (%)",
                         {}};
        const auto [first, last] =
          std::minmax_element(rows.begin(), rows.end(), [](const outcome& a, const outcome& b) {
              return a.seconds_per_epoch < b.seconds_per_epoch;
          });
        for (const std::string& readout : readouts) {
            for (const std::string encoder : {"ternary", "bitplane"}) {
                plot_series s{readout + " " + encoder, {}, {}};
                for (const outcome& r : rows) {
                    if (r.s.readout == readout && r.s.encoder == encoder) {
                        s.x.push_back(r.seconds_per_epoch);
                        s.y.push_back(100.0 * r.accuracy);
                    }
                }
                if (!s.x.empty()) {
                    chart.series.push_back(std::move(s));
                }
            }
        }
        std::vector<outcome> front;
        std::copy_if(rows.begin(), rows.end(), std::back_inserter(front),
                     [](const outcome& r) { return r.pareto; });
        std::sort(front.begin(), front.end(), [](const outcome& a, const outcome& b) {
            return a.seconds_per_epoch < b.seconds_per_epoch;
        });
        plot_series pareto{"Pareto front", {}, {}};
        for (const outcome& r : front) {
            pareto.x.push_back(r.seconds_per_epoch);
            pareto.y.push_back(100.0 * r.accuracy);
        }
        chart.series.push_back(std::move(pareto));
        chart.series.push_back({"dense DFA (CPU)",
                                {first->seconds_per_epoch, last->seconds_per_epoch},
                                {100.0 * dense.accuracy, 100.0 * dense.accuracy}});
        const auto svg = std::filesystem::path(o.out) / (d.stem + ".svg");
        write_svg(chart, svg);
        std::printf("wrote %s and %s\n", (std::filesystem::path(o.out) / (d.stem + ".csv")).c_str(),
                    svg.c_str());
        return 0;
    });
}
