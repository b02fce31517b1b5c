// The experiment of "Light-in-the-loop: using a photonics co-processor for
// scalable training of neural networks" (Launay et al., 2020): a 784-1024-1024-10
// tanh network on Fashion-MNIST trained with backprop, with DFA through a dense
// Gaussian matrix, with DFA through the simulated optical co-processor
// (holographic and intensity readouts), and shallow (hidden layers frozen).
//
// Prints a table (test accuracy, gradient alignment with backprop, wall time,
// optical frames and modelled OPU time), writes every epoch to
// <out>/light_in_the_loop.csv and the learning curves to
// <out>/light_in_the_loop.svg.
//
// Defaults run in a few minutes on 2 cores (2 epochs); the paper-scale run is
// --epochs 10 or more. See --help for the flags.
#include <lightloop/lightloop.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace {

struct options {
    std::string data = "/usr/share/datasets/fashion-mnist";
    std::string out = "light_in_the_loop_out";
    std::size_t epochs = 2;
    std::size_t batch = 128;
    double learning_rate = 0.01;
    std::string optimizer = "sgd"; // sgd (momentum 0.9) or adam
    std::uint64_t seed = 0;
    double threshold = 0.1;
    int camera_bits = 8;
    double read_noise = 5.0; // electrons rms
    int threads = 2;
    std::size_t train_limit = 0;
    std::string methods = "bp,dfa,optical-intensity,optical-holographic,shallow";
};

[[noreturn]] void usage(const std::string& message, int code = 2) {
    std::fprintf(code == 0 ? stdout : stderr,
                 "%s%s"
                 "usage: light_in_the_loop [flags]\n"
                 "  --data DIR         IDX directory with the standard MNIST file names, plain or "
                 ".gz\n"
                 "                     (default /usr/share/datasets/fashion-mnist, Debian's "
                 "dataset-fashion-mnist)\n"
                 "  --out DIR          where the CSV and SVG go (default light_in_the_loop_out)\n"
                 "  --epochs N         (default 2)\n"
                 "  --batch N          (default 128)\n"
                 "  --lr X             learning rate (default 0.01)\n"
                 "  --optimizer NAME   sgd (momentum 0.9, default) or adam\n"
                 "  --seed N           network, feedback and batch-order seed (default 0)\n"
                 "  --threshold X      ternarization threshold, relative to max|e| (default 0.1)\n"
                 "  --camera-bits N    camera ADC bit depth (default 8)\n"
                 "  --noise X          camera read noise, electrons rms (default 5)\n"
                 "  --threads N        threads for GEMMs and everything else (default 2)\n"
                 "  --train-limit N    use only the first N training images (default all)\n"
                 "  --methods LIST     comma-separated subset of\n"
                 "                     bp,fa,dfa,optical-intensity,optical-holographic,shallow\n",
                 message.c_str(), message.empty() ? "" : "\n");
    std::exit(code);
}

options parse(int argc, char** argv) {
    options o;
    for (int i = 1; i < argc; ++i) {
        const std::string flag = argv[i];
        if (flag == "--help" || flag == "-h") {
            usage("", 0);
        }
        if (i + 1 >= argc) {
            usage("light_in_the_loop: " + flag + " needs a value");
        }
        const std::string value = argv[++i];
        char* end = nullptr;
        auto number = [&]() {
            const double v = std::strtod(value.c_str(), &end);
            if (end == value.c_str() || *end != '\0' || !std::isfinite(v)) {
                usage("light_in_the_loop: " + flag + " takes a number, got '" + value + "'");
            }
            return v;
        };
        auto count = [&]() {
            const double v = number();
            if (v < 0 || v != std::floor(v)) {
                usage("light_in_the_loop: " + flag + " takes a whole number, got '" + value + "'");
            }
            return static_cast<std::size_t>(v);
        };
        if (flag == "--data") {
            o.data = value;
        } else if (flag == "--out") {
            o.out = value;
        } else if (flag == "--epochs") {
            o.epochs = count();
        } else if (flag == "--batch") {
            o.batch = count();
        } else if (flag == "--lr") {
            o.learning_rate = number();
        } else if (flag == "--optimizer") {
            o.optimizer = value;
        } else if (flag == "--seed") {
            o.seed = count();
        } else if (flag == "--threshold") {
            o.threshold = number();
        } else if (flag == "--camera-bits") {
            o.camera_bits = static_cast<int>(count());
        } else if (flag == "--noise") {
            o.read_noise = number();
        } else if (flag == "--threads") {
            o.threads = static_cast<int>(count());
        } else if (flag == "--train-limit") {
            o.train_limit = count();
        } else if (flag == "--methods") {
            o.methods = value;
        } else {
            usage("light_in_the_loop: unknown flag " + flag);
        }
    }
    if (o.epochs == 0 || o.batch == 0 || !(o.learning_rate > 0) || o.threads < 1) {
        usage("light_in_the_loop: epochs, batch, lr and threads must be positive");
    }
    if (o.optimizer != "sgd" && o.optimizer != "adam") {
        usage("light_in_the_loop: --optimizer is sgd or adam, got '" + o.optimizer + "'");
    }
    return o;
}

struct result {
    std::string name;
    lightloop::fit_history history;
    double alignment = 0;
};

template <class Feedback>
result run(const std::string& name, Feedback feedback, const options& o,
           const lightloop::mnist_data& data) {
    using namespace lightloop;
    network net{std::move(feedback),
                softmax_cross_entropy{},
                o.seed,
                dense<tanh_act>{data.train.inputs.shape(1), 1024},
                dense<tanh_act>{1024, 1024},
                dense<identity>{1024, data.classes}};
    const fit_options fo{
      .epochs = o.epochs, .batch = o.batch, .seed = o.seed, .alignment_probe = 512};
    auto callbacks = [&](auto& opt) {
        return fit(net, opt, data.train, data.test, fo, progress_bar(name),
                   csv_log(std::filesystem::path(o.out) / "light_in_the_loop.csv", name));
    };
    result r{name, {}, 0};
    if (o.optimizer == "adam") {
        adam opt{{.learning_rate = o.learning_rate}};
        r.history = callbacks(opt);
    } else {
        sgd opt{{.learning_rate = o.learning_rate, .momentum = 0.9}};
        r.history = callbacks(opt);
    }
    const auto& last = r.history.epochs.back();
    r.alignment = alignment_report{last.alignment_mean, last.alignment_spread}.overall();
    return r;
}

} // namespace

int main(int argc, char** argv) {
    using namespace lightloop;
    ensure_fast_blas(argv); // re-executes once if OpenBLAS fell back to a generic kernel
    const options o = parse(argc, argv);
    set_blas_threads(o.threads);
    mnist_data data;
    try {
        data = load_mnist(o.data, {.train_limit = o.train_limit});
    } catch (const error& e) {
        std::fprintf(stderr,
                     "%s\nlight_in_the_loop: needs an IDX data directory: install Debian's "
                     "dataset-fashion-mnist, or pass --data DIR\n",
                     e.what());
        return 1;
    }
    std::filesystem::create_directories(o.out);
    std::filesystem::remove(std::filesystem::path(o.out) / "light_in_the_loop.csv");
    std::printf("lightloop %s | BLAS kernel %s, %d thread(s) | %s: %zu train, %zu test, %zux%zu\n",
                version_string, blas_core_name().c_str(), o.threads, o.data.c_str(),
                data.train.size(), data.test.size(), data.rows, data.cols);
    std::printf("784-1024-1024-10 tanh, %s lr %g, batch %zu, %zu epochs, seed %llu; optical: "
                "threshold %g, %d-bit camera, read noise %g e-\n\n",
                o.optimizer.c_str(), o.learning_rate, o.batch, o.epochs,
                static_cast<unsigned long long>(o.seed), o.threshold, o.camera_bits, o.read_noise);

    const camera cam({.bits = o.camera_bits, .read_noise = o.read_noise});
    const ternary_encoder encoder(o.threshold);
    std::vector<result> results;
    auto wanted = [&](const std::string& m) {
        return ("," + o.methods + ",").find("," + m + ",") != std::string::npos;
    };
    if (wanted("bp")) {
        results.push_back(run("backprop", backprop{}, o, data));
    }
    if (wanted("fa")) {
        results.push_back(run("feedback alignment", feedback_alignment{}, o, data));
    }
    if (wanted("dfa")) {
        results.push_back(run("dfa dense", dfa<dense_gaussian>{}, o, data));
    }
    if (wanted("optical-intensity")) {
        using device = optical<intensity_readout, camera>;
        results.push_back(run("dfa optical intensity",
                              dfa<device>{device{intensity_readout{}, cam, encoder}}, o, data));
    }
    if (wanted("optical-holographic")) {
        using device = optical<holographic_readout<off_axis_reference>, camera>;
        results.push_back(run("dfa optical holographic",
                              dfa<device>{device{holographic_readout<>{}, cam, encoder}}, o, data));
    }
    if (wanted("shallow")) {
        results.push_back(run("shallow", shallow{}, o, data));
    }
    if (results.empty()) {
        usage("light_in_the_loop: --methods selected nothing");
    }

    std::printf("\n%-24s %10s %10s %10s %12s %12s\n", "method", "test acc %", "alignment", "wall s",
                "OPU frames", "OPU time s");
    line_chart chart{"Fashion-MNIST, 784-1024-1024-10 tanh", "epoch", "test accuracy (%)", {}};
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
    const auto svg = std::filesystem::path(o.out) / "light_in_the_loop.svg";
    write_svg(chart, svg);
    std::printf("\nalignment: mean cosine between each hidden layer's signal and backprop's, on "
                "512 test images\nwrote %s and %s\n",
                (std::filesystem::path(o.out) / "light_in_the_loop.csv").c_str(), svg.c_str());
}
