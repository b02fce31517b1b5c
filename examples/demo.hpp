#pragma once
// What the two Fashion-MNIST demos share (light_in_the_loop: the paper's
// dense network; fashion_cnn: a CNN): the flags, one run per method through
// fit, the table of test accuracy, alignment with backprop, wall time and
// modelled OPU time, and the CSV and SVG files. A demo gives its network,
// its name and its default methods.
#include <lightloop/lightloop.hpp>

#include "cli.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace lightloop::demos {

struct options {
    std::string data = "/usr/share/datasets/fashion-mnist";
    std::string out;        // the demo's own default
    std::size_t epochs = 2; // the demo's own default
    std::size_t batch = 128;
    double learning_rate = 0.01;
    std::string optimizer = "sgd"; // sgd (momentum 0.9) or adam
    std::uint64_t seed = 0;
    double threshold = 0.1;
    int camera_bits = 8;
    double read_noise = 5.0; // electrons rms
    int threads = 2;
    std::size_t train_limit = 0;
    std::size_t test_limit = 0;
    std::string precision = "fp32";        // fp32, or bf16 (mixed: core/precision.hpp)
    std::string medium_precision = "fp32"; // the optical medium's entries: fp32, or bf16
    std::vector<std::string> methods;      // the demo's own defaults
    std::string checkpoint;                // a directory: each method's checkpoint ("": none)
    bool resume = false;                   // each method from its checkpoint, where it has one
};

/// What differs between the demos: the network, its name, and the files'
/// stem ("light_in_the_loop": light_in_the_loop.csv and .svg).
template <class MakeNetwork>
struct demo {
    std::string stem;
    std::string architecture; // "784-1024-1024-10 tanh"
    MakeNetwork make_network; // (feedback, seed, data, precision_tag<P>) -> network
};

/// The paper's network (784-1024-1024-10 tanh): light_in_the_loop's and
/// light_in_the_loop_mpi's.
struct make_paper_network {
    /// P: float, or mixed_bf16 (--precision bf16).
    template <class Feedback, class P>
    auto operator()(Feedback feedback, std::uint64_t seed, const lightloop::mnist_data& data,
                    lightloop::precision_tag<P>) const {
        using namespace lightloop;
        return network{std::move(feedback),
                       softmax_cross_entropy{},
                       seed,
                       dense<tanh_act, P>{data.train.inputs.shape(1), 1024},
                       dense<tanh_act, P>{1024, 1024},
                       dense<identity, P>{1024, data.classes}};
    }
};

/// The command line (--help lists it).
inline void add_flags(CLI::App& app, options& o) {
    app
      .add_option("--data", o.data,
                  "IDX directory with the standard MNIST file names, plain or .gz (Debian's "
                  "dataset-fashion-mnist by default)")
      ->capture_default_str();
    app.add_option("--out", o.out, "where the CSV and SVG go")->capture_default_str();
    app.add_option("--epochs", o.epochs, "passes over the training set")
      ->check(lightloop::programs::positive())
      ->capture_default_str();
    app.add_option("--batch", o.batch, "samples per step")
      ->check(lightloop::programs::positive())
      ->capture_default_str();
    app.add_option("--lr", o.learning_rate, "learning rate")
      ->check(lightloop::programs::positive())
      ->capture_default_str();
    app.add_option("--optimizer", o.optimizer, "sgd (momentum 0.9) or adam")
      ->check(CLI::IsMember({"sgd", "adam"}))
      ->capture_default_str();
    app.add_option("--seed", o.seed, "network, feedback and batch-order seed")
      ->capture_default_str();
    app.add_option("--threshold", o.threshold, "ternarization threshold, relative to max|e|")
      ->capture_default_str();
    app.add_option("--camera-bits", o.camera_bits, "camera ADC bit depth")->capture_default_str();
    app.add_option("--noise", o.read_noise, "camera read noise, electrons rms")
      ->capture_default_str();
    lightloop::programs::add_threads(app, o.threads);
    app.add_option("--train-limit", o.train_limit, "use only the first N training images (0: all)")
      ->capture_default_str();
    app
      .add_option("--test-limit", o.test_limit,
                  "evaluate on the first N test images only (0: all); the alignment probe takes "
                  "at most 512 of them")
      ->capture_default_str();
    app
      .add_option("--precision", o.precision,
                  "fp32, or bf16: mixed precision (bf16 GEMM operands accumulated in fp32, fp32 "
                  "weights and element-wise work)")
      ->check(CLI::IsMember({"fp32", "bf16"}))
      ->capture_default_str();
    app
      .add_option("--medium-precision", o.medium_precision,
                  "the optical medium's entries: fp32, or bf16 (R rounded to bf16, its products "
                  "bf16 GEMMs; the frames are binary, so the field is otherwise exact)")
      ->check(CLI::IsMember({"fp32", "bf16"}))
      ->capture_default_str();
    app.add_option("--methods", o.methods, "comma-separated methods to train")
      ->delimiter(',')
      ->check(CLI::IsMember(
        {"bp", "fa", "dfa", "sign-dfa", "optical-intensity", "optical-holographic", "shallow"}))
      ->capture_default_str();
    CLI::Option* checkpoint = app.add_option(
      "--checkpoint", o.checkpoint,
      "a directory: each method's training is saved there after every epoch (one file per "
      "method; over MPI in the layer modes, one per rank)");
    app
      .add_flag("--resume", o.resume,
                "continue each method from its checkpoint in --checkpoint's directory, where it "
                "has one, to the uninterrupted run's result")
      ->needs(checkpoint);
}

/// Where a method's checkpoint goes: "<dir>/<stem>.<name, spaces as
/// dashes>.ckpt" ("" without --checkpoint).
inline std::filesystem::path checkpoint_path(const options& o, const std::string& stem,
                                             std::string name) {
    if (o.checkpoint.empty()) {
        return {};
    }
    std::replace(name.begin(), name.end(), ' ', '-');
    return std::filesystem::path(o.checkpoint) / (stem + "." + name + ".ckpt");
}

/// The demos' camera. Built before the data loads, so that a bad setting is
/// refused first; the demos' networks expose float pixels, so an ADC whose
/// counts need double ones is refused here too.
inline lightloop::camera make_camera(const options& o) {
    lightloop::camera cam({.bits = o.camera_bits, .read_noise = o.read_noise});
    cam.check_pixels<float>();
    return cam;
}

/// Test images in fit's alignment probe (its first rows, all if fewer).
inline constexpr std::size_t probe_images = 512;

struct result {
    std::string name;
    lightloop::fit_history history;
    double alignment = 0;
};

/// The demos' optical devices: both readouts through one device type, so the
/// network and its training are compiled once for the two.
using intensity_device = lightloop::optical<lightloop::intensity_readout, lightloop::camera>;
using holographic_device =
  lightloop::optical<lightloop::holographic_readout<lightloop::off_axis_reference>,
                     lightloop::camera>;
using device = lightloop::projection_choice<intensity_device, holographic_device>;

/// The demos' feedback method, --methods': one type whichever is picked, so
/// the network, its step, fit, checkpoints and the alignment probes are
/// compiled once for each precision, not once for each method as well.
using method = lightloop::feedback_choice<
  lightloop::backprop, lightloop::feedback_alignment, lightloop::dfa<lightloop::dense_gaussian>,
  lightloop::sign_dfa<lightloop::dense_gaussian>, lightloop::dfa<device>, lightloop::shallow>;

/// How a demo runs fit: in this process. light_in_the_loop_mpi has one over
/// MPI ranks, where only rank 0 prints and writes files.
struct one_process {
    bool prints() const noexcept { return true; }
    /// The method a network is built with: the demos' run-time choice.
    template <class Feedback>
    static method take(Feedback feedback) {
        return method{std::move(feedback)};
    }
    template <class Net, class Optimizer>
    lightloop::fit_history fit(Net& net, Optimizer& opt, const lightloop::mnist_data& data,
                               const lightloop::fit_options& fo, const std::string& name,
                               const std::filesystem::path& csv) const {
        return lightloop::fit(net, opt, data.train, data.test, fo, lightloop::progress_bar(name),
                              lightloop::csv_log(csv, name));
    }
};

/// The studies' (opu_drift, opu_pareto): each method as its own type, for
/// methods the demos' choice does not hold (their devices), and because
/// they train no more than two.
struct one_process_as_given : one_process {
    template <class Feedback>
    static Feedback take(Feedback feedback) {
        return feedback;
    }
};

/// The demos' optimizer, --optimizer's: one type whichever is picked, so
/// each method's training is compiled once, not once per optimizer.
using optimizer = lightloop::optimizer_choice<lightloop::sgd<>, lightloop::adam<>>;

inline optimizer make_optimizer(const options& o) {
    if (o.optimizer == "adam") {
        return lightloop::adam{{.learning_rate = o.learning_rate}};
    }
    return lightloop::sgd{{.learning_rate = o.learning_rate, .momentum = 0.9}};
}

template <class Net, class Runner>
result train(const std::string& stem, const std::string& name, Net net, const options& o,
             const lightloop::mnist_data& data, Runner& runner) {
    using namespace lightloop;
    const fit_options fo{.epochs = o.epochs,
                         .batch = o.batch,
                         .seed = o.seed,
                         .alignment_probe = probe_images,
                         .checkpoint = checkpoint_path(o, stem, name),
                         .resume = o.resume};
    optimizer opt = make_optimizer(o);
    result r{name,
             runner.fit(net, opt, data, fo, name, std::filesystem::path(o.out) / (stem + ".csv")),
             0};
    const auto& last = r.history.epochs.back();
    r.alignment = alignment_report{last.alignment_mean, last.alignment_spread}.overall();
    return r;
}

/// One method's run in precision P (float or mixed_bf16).
template <class P, class Demo, class Feedback, class Runner>
result run_in(const Demo& d, const std::string& name, Feedback feedback, const options& o,
              const lightloop::mnist_data& data, Runner& runner) {
    return train(
      d.stem, name,
      d.make_network(runner.take(std::move(feedback)), o.seed, data, lightloop::precision_tag<P>{}),
      o, data, runner);
}

/// One method's run in the precision o.precision names. A study that offers
/// no --precision calls run_in<float> instead, so that its methods are
/// compiled once, not once for each precision.
template <class Demo, class Feedback, class Runner>
result run(const Demo& d, const std::string& name, Feedback feedback, const options& o,
           const lightloop::mnist_data& data, Runner& runner) {
    if (o.precision == "bf16") {
        return run_in<lightloop::mixed_bf16>(d, name, std::move(feedback), o, data, runner);
    }
    return run_in<float>(d, name, std::move(feedback), o, data, runner);
}

/// One run per wanted method, in the table's order.
template <class Demo, class Runner>
std::vector<result> for_each_method(const Demo& d, const options& o,
                                    const lightloop::mnist_data& data, Runner& runner,
                                    const lightloop::camera& cam,
                                    const lightloop::ternary_encoder& encoder) {
    using namespace lightloop;
    std::vector<result> results;
    auto wanted = [&](const std::string& m) {
        return std::find(o.methods.begin(), o.methods.end(), m) != o.methods.end();
    };
    if (wanted("bp")) {
        results.push_back(run(d, "backprop", backprop{}, o, data, runner));
    }
    if (wanted("fa")) {
        results.push_back(run(d, "feedback alignment", feedback_alignment{}, o, data, runner));
    }
    if (wanted("dfa")) {
        results.push_back(run(d, "dfa dense", dfa<dense_gaussian>{}, o, data, runner));
    }
    if (wanted("sign-dfa")) {
        results.push_back(run(d, "sign-dfa dense", sign_dfa<dense_gaussian>{}, o, data, runner));
    }
    const optical_settings settings{.bf16_medium = o.medium_precision == "bf16"};
    if (wanted("optical-intensity")) {
        results.push_back(
          run(d, "dfa optical intensity",
              dfa<device>{intensity_device{intensity_readout{}, cam, encoder, settings}}, o, data,
              runner));
    }
    if (wanted("optical-holographic")) {
        results.push_back(
          run(d, "dfa optical holographic",
              dfa<device>{holographic_device{holographic_readout<>{}, cam, encoder, settings}}, o,
              data, runner));
    }
    if (wanted("shallow")) {
        results.push_back(run(d, "shallow", shallow{}, o, data, runner));
    }

    return results;
}

/// A study's start (opu_drift, opu_pareto), after its settings are checked:
/// the threads, the data, and its CSV emptied.
template <class Demo>
lightloop::mnist_data begin_study(const Demo& d, const options& o) {
    lightloop::set_blas_threads(o.threads);
    lightloop::mnist_data data =
      lightloop::load_mnist(o.data, {.train_limit = o.train_limit, .test_limit = o.test_limit});
    std::filesystem::create_directories(o.out);
    std::filesystem::remove(std::filesystem::path(o.out) / (d.stem + ".csv"));
    return data;
}

template <class Demo, class Runner = one_process>
int experiment(const Demo& d, const options& o, Runner runner = {}) {
    using namespace lightloop;
    set_blas_threads(o.threads);
    if (o.precision == "bf16") {
        // Before the data is read; the layers then warn no more.
        warn_about_precision_once<mixed_bf16>();
    }
    const camera cam = make_camera(o);
    const ternary_encoder encoder(o.threshold);
    mnist_data data;
    try {
        data = load_mnist(o.data, {.train_limit = o.train_limit, .test_limit = o.test_limit});
    } catch (const data_error& e) {
        throw data_error(std::string(e.what()) +
                         "\n(an IDX data directory is needed: install Debian's "
                         "dataset-fashion-mnist, or pass --data DIR)");
    }
    if (!o.checkpoint.empty()) { // every process: a rank may keep its own on its node
        std::filesystem::create_directories(o.checkpoint);
    }
    if (!runner.prints()) { // another process prints the table and writes the files
        for_each_method(d, o, data, runner, cam, encoder);
        return 0;
    }
    std::filesystem::create_directories(o.out);
    std::filesystem::remove(std::filesystem::path(o.out) / (d.stem + ".csv"));
    const std::string data_name =
      std::filesystem::path(o.data).filename().empty()
        ? std::filesystem::path(o.data).parent_path().filename().string()
        : std::filesystem::path(o.data).filename().string();
    std::printf("lightloop %s | BLAS kernel %s, %d thread(s) | %s: %zu train, %zu test, %zux%zu\n",
                version_string, blas_core_name().c_str(), o.threads, o.data.c_str(),
                data.train.size(), data.test.size(), data.rows, data.cols);
    std::printf("CPU matrix features: %s | bf16 products: %s\n",
                matrix_features_text(detect_cpu_features()).c_str(), bf16_dispatch().c_str());
    std::printf("%s, %s, %s lr %g, batch %zu, %zu epochs, seed %llu; optical: "
                "threshold %g, %d-bit camera, read noise %g e-, %s medium\n\n",
                d.architecture.c_str(),
                o.precision == "bf16" ? "mixed bf16 (bf16 GEMM operands, fp32 weights)" : "fp32",
                o.optimizer.c_str(), o.learning_rate, o.batch, o.epochs,
                static_cast<unsigned long long>(o.seed), o.threshold, o.camera_bits, o.read_noise,
                o.medium_precision.c_str());
    if constexpr (requires { runner.describe(); }) {
        std::printf("%s\n\n", runner.describe().c_str());
    }
    if (!o.checkpoint.empty()) {
        std::printf("checkpoints in %s, after every epoch%s\n\n", o.checkpoint.c_str(),
                    o.resume ? "; each method resumes from its own where it has one" : "");
    }

    const std::vector<result> results = for_each_method(d, o, data, runner, cam, encoder);

    std::printf("\n%-24s %10s %10s %10s %12s %12s\n", "method", "test acc %", "alignment", "wall s",
                "OPU frames", "OPU time s");
    line_chart chart{data_name + ", " + d.architecture, "epoch", "test accuracy (%)", {}};
    for (const auto& r : results) {
        const auto& last = r.history.epochs.back();
        const std::string alignment =
          std::isfinite(r.alignment) ? std::to_string(r.alignment).substr(0, 5) : "-";
        if (last.has_device) {
            std::printf("%-24s %10.2f %10s %10.1f %12llu %12.1f\n", r.name.c_str(),
                        100.0 * last.test_accuracy, alignment.c_str(), r.history.seconds,
                        static_cast<unsigned long long>(last.device_frames), last.device_seconds);
        } else {
            std::printf("%-24s %10.2f %10s %10.1f %12s %12s\n", r.name.c_str(),
                        100.0 * last.test_accuracy, alignment.c_str(), r.history.seconds, "-", "-");
        }
        plot_series s{r.name, {}, {}};
        for (const auto& e : r.history.epochs) {
            s.x.push_back(static_cast<double>(e.epoch));
            s.y.push_back(100.0 * e.test_accuracy);
        }
        chart.series.push_back(s);
    }
    const auto svg = std::filesystem::path(o.out) / (d.stem + ".svg");
    write_svg(chart, svg);
    // Methods that train no hidden layer measure no alignment (their column
    // shows "-"); the footer only where some method did.
    if (std::any_of(results.begin(), results.end(),
                    [](const result& r) { return std::isfinite(r.alignment); })) {
        std::printf("\nalignment: mean cosine between each hidden layer's signal and backprop's, "
                    "on %zu test images",
                    std::min(probe_images, data.test.size()));
    }
    std::printf("\nwrote %s and %s\n", (std::filesystem::path(o.out) / (d.stem + ".csv")).c_str(),
                svg.c_str());
    return 0;
}

} // namespace lightloop::demos
