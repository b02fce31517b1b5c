#pragma once
// The fit loop: epochs of shuffled mini-batches, a learning-rate schedule,
// evaluation after every epoch, metrics, and callbacks through compile-time
// hooks.
//
//   auto history = fit(net, opt, train, test, {.epochs = 10, .batch = 128},
//                      cosine_schedule{}, progress_bar{}, csv_log{"run.csv"});
//
// A callback implements only the hooks it needs; each is found with a
// requires-expression, so a callback costs nothing where it has no hook:
//   on_fit_begin(const fit_info&)
//   on_resume(const fit_history&)                   the records a resumed run starts from
//   on_epoch_begin(std::size_t epoch)
//   on_batch_end(const batch_info&)
//   on_epoch_end(const epoch_record&[, Network&])   returning true stops training
//   on_fit_end(const fit_history&)
//   learning_rate(base, progress, epochs)           a schedule (train/schedule.hpp)

#include <array>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <limits>
#include <numeric>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "lightloop/core/error.hpp"
#include "lightloop/data/dataset.hpp"
#include "lightloop/data/synthetic.hpp"
#include "lightloop/feedback/choice.hpp"
#include "lightloop/io/checkpoint.hpp"
#include "lightloop/train/alignment.hpp"
#include "lightloop/train/metrics.hpp"

namespace lightloop {

struct fit_options {
    std::size_t epochs = 10;
    std::size_t batch = 128;
    /// Seeds the batch order (epoch e uses derive_seed(seed, e)).
    std::uint64_t seed = 0;
    /// Rows per forward pass when evaluating.
    std::size_t eval_batch = 1000;
    /// Samples in the probe batch for the alignment metrics (0: off). The
    /// probe is the first rows of the test set.
    std::size_t alignment_probe = 0;
    /// Saved after every epoch (atomically; network, optimizer state,
    /// device state, progress). Empty: no checkpoints.
    std::filesystem::path checkpoint{};
    /// Continue from `checkpoint` if it exists: same seed and thread count
    /// give the same weights as an uninterrupted run. The history then holds
    /// every epoch: the checkpoint's records of those before it, then the
    /// resumed ones (a format-2 checkpoint has no records: the resumed ones
    /// only). resumed_from_epoch says where the resumed part begins.
    bool resume = false;
};

struct fit_info {
    std::size_t epochs = 0;
    std::size_t batches_per_epoch = 0;
    std::size_t train_samples = 0;
    std::size_t test_samples = 0;
};

struct batch_info {
    std::size_t epoch = 0;
    std::size_t batch = 0;
    std::size_t batches = 0;
    std::size_t samples_done = 0;  ///< in this epoch
    std::size_t epoch_samples = 0; ///< in the whole epoch
    double loss = 0.0;             ///< this batch's
    double running_loss = 0.0;     ///< mean over the epoch so far
    double learning_rate = 0.0;
    double epoch_seconds = 0.0; ///< since the epoch began
};

struct epoch_record {
    std::size_t epoch = 0; ///< 1-based
    double learning_rate = 0.0;
    double train_loss = 0.0;     ///< mean of the epoch's batch losses (before each update)
    double train_accuracy = 0.0; ///< on each batch before its update
    double test_loss = 0.0;
    double test_accuracy = 0.0;
    double seconds = 0.0; ///< training time of the epoch, evaluation excluded
    double samples_per_second = 0.0;
    std::vector<double> alignment_mean;   ///< gradient alignment per hidden layer
    std::vector<double> alignment_spread; ///< its standard deviation over the probe
    std::vector<double> weight_alignment; ///< per hidden layer, NaN where undefined
    bool has_device = false;              ///< an optical device reported statistics
    std::uint64_t device_frames = 0;      ///< cumulative
    double device_seconds = 0.0;          ///< cumulative modelled OPU time
    double device_saturated = 0.0;        ///< fraction of pixels saturated so far
    double device_snr_db = std::numeric_limits<double>::quiet_NaN();
};

struct fit_history {
    std::vector<epoch_record> epochs;   ///< every epoch (on resume too: fit_options::resume)
    std::size_t resumed_from_epoch = 0; ///< epochs done before this call (resume)
    bool stopped_early = false;
    double seconds = 0.0;
};

struct evaluation {
    double loss = 0.0;
    double accuracy = 0.0;
};

/// Mean loss and accuracy of `net` on rows [first, last) of `data` (all of
/// it by default), `batch` rows per forward pass.
template <class Network>
evaluation evaluate(Network& net, const labelled_data<typename Network::value_type>& data,
                    std::size_t batch = 1000, std::size_t first = 0,
                    std::size_t last = std::numeric_limits<std::size_t>::max()) {
    using T = typename Network::value_type;
    check_rows(data, "lightloop::evaluate: the data");
    last = std::min(last, data.size());
    if (first >= last || batch == 0) {
        throw config_error("lightloop::evaluate: needs data (rows " + std::to_string(first) +
                           " to " + std::to_string(last) + " of " + std::to_string(data.size()) +
                           ") and a positive batch size");
    }
    matrix<T> xb;
    matrix<T> yb;
    std::vector<std::size_t> rows;
    double loss = 0.0;
    std::size_t correct = 0;
    for (std::size_t start = first; start < last; start += batch) {
        const std::size_t count = std::min(batch, last - start);
        rows.resize(count);
        for (std::size_t i = 0; i < count; ++i) {
            rows[i] = start + i;
        }
        gather_rows(data.inputs, std::span<const std::size_t>(rows), xb);
        gather_rows(data.targets, std::span<const std::size_t>(rows), yb);
        const auto& out = net.forward(xb);
        loss +=
          static_cast<double>(net.loss_function().value(out, yb)) * static_cast<double>(count);
        correct += count_correct(out, yb);
    }
    const auto n = static_cast<double>(last - first);
    return {loss / n, static_cast<double>(correct) / n};
}

namespace detail {

template <class Callback, class Network>
bool call_epoch_end(Callback& cb, const epoch_record& record, Network& net) {
    if constexpr (requires {
                      { cb.on_epoch_end(record, net) } -> std::convertible_to<bool>;
                  }) {
        return cb.on_epoch_end(record, net);
    } else if constexpr (requires { cb.on_epoch_end(record, net); }) {
        cb.on_epoch_end(record, net);
    } else if constexpr (requires {
                             { cb.on_epoch_end(record) } -> std::convertible_to<bool>;
                         }) {
        return cb.on_epoch_end(record);
    } else if constexpr (requires { cb.on_epoch_end(record); }) {
        cb.on_epoch_end(record);
    }
    return false;
}

/// An optical device's figures into the epoch's record (a dense device has
/// none).
template <class Device>
void record_statistics(const Device& device, epoch_record& record) {
    if constexpr (requires { device.statistics(); }) {
        const auto stats = device.statistics();
        record.has_device = true;
        record.device_frames = stats.frames;
        record.device_seconds = stats.device_seconds();
        record.device_saturated = stats.saturated_fraction();
        record.device_snr_db = stats.snr_db();
    }
}

template <class Network>
void record_device(Network& net, epoch_record& record) {
    visit_method(net.feedback(), [&](auto& fb) {
        if constexpr (requires { fb.device(); }) {
            record_statistics(fb.device(), record);
        }
    });
}

/// The fields of an epoch record a checkpoint keeps beside its number, in
/// file order, for writing (R = const epoch_record) and reading alike: the
/// scalars, the alignment vectors (with their names for errors), then after
/// the device flag and frame count, the device's scalars.
template <class R>
auto kept_fields(R& e) {
    return std::tuple{std::array{&e.learning_rate, &e.train_loss, &e.train_accuracy, &e.test_loss,
                                 &e.test_accuracy, &e.seconds, &e.samples_per_second},
                      std::array{std::pair{&e.alignment_mean, "alignment means"},
                                 std::pair{&e.alignment_spread, "alignment spreads"},
                                 std::pair{&e.weight_alignment, "weight alignments"}},
                      std::array{&e.device_seconds, &e.device_saturated, &e.device_snr_db}};
}

/// Whether `opt` holds state from earlier steps: momentum or moments in any
/// slot, or a step count.
template <class Optimizer>
bool holds_state(const Optimizer& opt) {
    if constexpr (requires { opt.step_count(); }) {
        if (opt.step_count() > 0) {
            return true;
        }
    }
    if constexpr (requires { opt.state(); }) {
        for (const auto& slot : opt.state()) {
            if (!slot.empty()) {
                return true;
            }
        }
    }
    return false;
}

/// Which training data a run trained on: its samples, input width and the
/// CRC-32 of its inputs and targets. A checkpoint keeps it in its run record,
/// so that a resume on other data (another subset, other preprocessing) is
/// refused, not continued as though it were the run that was interrupted.
struct data_fingerprint {
    std::uint64_t samples = 0;
    std::uint64_t width = 0;
    std::uint32_t crc = 0;

    template <class T>
    static data_fingerprint of(const labelled_data<T>& data) {
        const auto bytes = [](const matrix<T>& m) {
            return std::as_bytes(std::span<const T>(m.data(), m.size()));
        };
        return {data.size(), data.inputs.shape(1),
                crc32_of(bytes(data.targets), crc32_of(bytes(data.inputs)))};
    }
    bool operator==(const data_fingerprint&) const = default;
    std::string text() const {
        return std::to_string(samples) + " samples of " + std::to_string(width) +
               " inputs, CRC-32 " + std::to_string(crc);
    }
};

/// fit's run record in a checkpoint: the epoch records so far, then (format
/// 4) the training data's fingerprint. Loading compares the file's
/// fingerprint with `data` when both are there, and refuses another.
struct epoch_log {
    std::vector<epoch_record> epochs;
    std::optional<data_fingerprint> data;

    void save_state(state_writer& w) const {
        w.u64(epochs.size());
        for (const epoch_record& e : epochs) {
            const auto [scalars, vectors, device] = kept_fields(e);
            w.u64(e.epoch);
            for (const double* v : scalars) {
                w.f64(*v);
            }
            for (const auto& [v, name] : vectors) {
                w.values(std::span<const double>(*v));
            }
            w.u32(e.has_device ? 1 : 0);
            w.u64(e.device_frames);
            for (const double* v : device) {
                w.f64(*v);
            }
        }
        if (data) {
            w.u64(data->samples);
            w.u64(data->width);
            w.u32(data->crc);
        }
    }

    /// Reads the records of epochs 1..epoch, in order.
    void load_state(state_reader& r, std::uint64_t epoch) {
        const std::uint64_t count = r.u64("epoch record count");
        if (count != epoch) {
            r.fail("run record holds " + std::to_string(count) + " epochs, the checkpoint " +
                   std::to_string(epoch));
        }
        std::vector<epoch_record> loaded;
        for (std::uint64_t i = 0; i < count; ++i) {
            epoch_record e;
            const auto [scalars, vectors, device] = kept_fields(e);
            const std::uint64_t number = r.u64("epoch record");
            if (number != i + 1) {
                r.fail("run record " + std::to_string(i + 1) + " is numbered " +
                       std::to_string(number));
            }
            e.epoch = static_cast<std::size_t>(number);
            for (double* v : scalars) {
                *v = r.f64("epoch record");
            }
            for (const auto& [v, name] : vectors) {
                *v = r.values<double>(name);
            }
            const std::uint32_t flag = r.u32("device flag");
            if (flag > 1) {
                r.fail("run record " + std::to_string(i + 1) + " has device flag " +
                       std::to_string(flag));
            }
            e.has_device = flag == 1;
            e.device_frames = r.u64("device frames");
            for (double* v : device) {
                *v = r.f64("device figures");
            }
            loaded.push_back(std::move(e));
        }
        if (r.remaining() > 0) { // a format-4 run record of fit's
            data_fingerprint saved;
            saved.samples = r.u64("training data's samples");
            saved.width = r.u64("training data's width");
            saved.crc = r.u32("training data's CRC-32");
            if (data && saved != *data) {
                r.fail("the checkpoint's run trained on other data (" + saved.text() +
                       ") than this one (" + data->text() +
                       "); a resume continues the same run on the same data; nothing was "
                       "loaded");
            }
        }
        epochs = std::move(loaded);
    }
};

/// sum / count, or NaN when nothing was counted.
inline double mean_or_nan(double sum, std::size_t count) noexcept {
    return count > 0 ? sum / static_cast<double>(count) : std::numeric_limits<double>::quiet_NaN();
}

} // namespace detail

/// One training step's figures over the whole batch (every process's
/// share of it, in data-parallel training).
struct step_totals {
    double loss_sum = 0.0; ///< the batch's mean loss times its rows
    std::size_t correct = 0;
    std::size_t samples = 0;
};

namespace detail {
/// Before any training: config_error unless fit can keep a checkpoint at
/// `path` (or its parts beside it): its directory must exist, and `path`
/// must not be one. Refused after an epoch of training instead, when the
/// first save failed.
inline void check_checkpoint_path(const std::filesystem::path& path) {
    check_file_path(path, "lightloop::fit", "checkpoint",
                    "fit_options::checkpoint names a file (in an existing directory)");
}

/// config_error unless every layer of `net` trains on a batch of `rows` rows
/// (a layer's smallest_training_batch(): batch_norm over feature vectors
/// needs 2), before any training: a batch too small would be refused
/// mid-epoch, after the epoch's steps. `where` names the batch, `fix` says
/// what to change.
template <class Network>
void check_training_rows(const Network& net, std::size_t rows, const std::string& where,
                         const char* fix = "choose a batch size that leaves no smaller batch") {
    net.visit_layers([&](const auto& layer, std::size_t i) {
        if constexpr (requires {
                          { layer.smallest_training_batch() } -> std::convertible_to<std::size_t>;
                      }) {
            const std::size_t needed = layer.smallest_training_batch();
            if (rows < needed) {
                throw config_error("lightloop::fit: " + where + " has " + std::to_string(rows) +
                                   " row" + (rows == 1 ? "" : "s") + ", but layer " +
                                   std::to_string(i) + " (" + describe_object(layer) +
                                   ") trains on at least " + std::to_string(needed) + "; " + fix +
                                   "; nothing was trained");
            }
        }
    });
}

/// check_training_rows of the alignment probe's `rows` (none: no probe): it
/// runs the training pass of the next step after each epoch.
template <class Network>
void check_probe_rows(const Network& net, std::size_t rows) {
    if (rows > 0) {
        check_training_rows(
          net, rows, "the alignment probe (the first " + std::to_string(rows) + " test rows)",
          "probe more rows (fit_options::alignment_probe, and the test set)");
    }
}

/// The checks fit makes of a checkpoint it resumes from, before anything is
/// loaded: the run's seed and batch size (the data order).
struct resume_check {
    const std::filesystem::path* path;
    std::uint64_t seed = 0;
    std::uint64_t batch = 0;
    void operator()(const checkpoint_info& saved) const {
        if (saved.fit_seed != seed || saved.batch != batch) {
            throw config_error("lightloop::fit: " + path->string() + " was written with seed " +
                               std::to_string(saved.fit_seed) + " and batch " +
                               std::to_string(saved.batch) + "; this run uses seed " +
                               std::to_string(seed) + " and batch " + std::to_string(batch));
        }
    }
};
} // namespace detail

/// How fit trains on one process. A strategy says how fit's checks of its
/// own inputs are run (optionally, check_together(checks): on every process,
/// agreed), how a batch is taken from the sampler (optionally,
/// smallest_share(sampler): the rows a process gets of the smallest batch
/// and where they are, which every layer must train on), how a step and an evaluation run, how the
/// checkpoint is saved after an epoch and resumed from (every process calls both), what it does to
/// the network before the epoch's figures and callbacks read it (optionally,
/// before_epoch_end(net)), what happens after the last epoch (optionally, finish_fit(net, opt)),
/// how processes agree to stop, and (optionally, agree_on_failure(std::exception_ptr, what, when))
/// how a callback's failure on some processes is thrown on all, before training and at each epoch's
/// end; distributed/ has the strategies over several processes (fit_with).
struct single_process {
    template <class T>
    void begin(const batch_sampler<T>&) const noexcept {}
    template <class T>
    void fill(batch_sampler<T>& sampler, std::size_t b, matrix<T>& x, matrix<T>& y) const {
        sampler.fill(b, x, y);
    }
    template <class Network, class Optimizer, class T>
    step_totals step(Network& net, Optimizer& opt, const matrix<T>& x, const matrix<T>& y) const {
        const double loss = static_cast<double>(net.train_step(x, y, opt));
        const std::size_t correct =
          count_correct(std::as_const(net).template layer<Network::depth - 1>().output(), y);
        return {loss * static_cast<double>(x.shape(0)), correct, x.shape(0)};
    }
    template <class Network>
    evaluation evaluate(Network& net, const labelled_data<typename Network::value_type>& data,
                        std::size_t batch) const {
        return lightloop::evaluate(net, data, batch);
    }
    template <class Network, class Optimizer, class Record>
    void save_checkpoint(Network& net, const Optimizer& opt, const std::filesystem::path& path,
                         std::uint64_t epoch, std::uint64_t seed, std::uint64_t batch,
                         const Record& record) const {
        lightloop::save_checkpoint(net, opt, path, epoch, seed, batch, record);
    }
    /// The checkpoint at `path`, loaded into net, opt and record if it
    /// exists and `check` accepts it (nothing changed otherwise).
    template <class Network, class Optimizer, class Record, class Check>
    std::optional<checkpoint_info> resume(Network& net, Optimizer& opt,
                                          const std::filesystem::path& path, Record& record,
                                          const Check& check) const {
        std::error_code exists_error;
        if (!std::filesystem::exists(path, exists_error)) {
            return std::nullopt;
        }
        const auto part = detail::whole_network(net);
        auto staged = detail::stage_checkpoint(net, opt, path, record, part);
        check(staged.info);
        return detail::commit_checkpoint(std::move(staged), net, opt, record, part);
    }
    bool agree_to_stop(bool stop) const noexcept { return stop; }
};

/// fit with a strategy: single_process{} is fit itself; a distributed one
/// (distributed/data_parallel.hpp) runs the same loop on every rank.
template <class Strategy, class Network, optimizer Optimizer, class... Callbacks>
fit_history fit_with(Strategy& strategy, Network& net, Optimizer& opt,
                     const labelled_data<typename Network::value_type>& train,
                     const labelled_data<typename Network::value_type>& test, fit_options options,
                     Callbacks&&... callbacks) {
    using T = typename Network::value_type;
    using clock = std::chrono::steady_clock;
    // The learning rate at `progress` (epochs done, fractions included): the
    // schedules' chain from `base`.
    const auto scheduled_rate = [&](double base, double progress) {
        double lr = base;
        (([&] {
             if constexpr (requires {
                               {
                                   callbacks.learning_rate(lr, progress, options.epochs)
                                   } -> std::convertible_to<double>;
                           }) {
                 lr = callbacks.learning_rate(lr, progress, options.epochs);
             }
         }()),
         ...);
        return lr;
    };
    // fit's checks of its own inputs. Over several processes (a strategy
    // with check_together) they run on every process and are agreed: one
    // whose options or data failed them alone would leave the others waiting
    // in the first collective.
    std::optional<batch_sampler<T>> checked_sampler;
    const auto check_inputs = [&] {
        if (options.epochs == 0) {
            throw config_error("lightloop::fit: epochs must be positive");
        }
        // A resume with nowhere to resume from would train from scratch and
        // save nothing, silently.
        if (options.resume && options.checkpoint.empty()) {
            throw config_error("lightloop::fit: resume is set but checkpoint is empty: give the "
                               "checkpoint file to resume from (and save to)");
        }
        // Refused here, not by the first evaluation after an epoch of training.
        if (options.eval_batch == 0) {
            throw config_error("lightloop::fit: eval_batch (rows per forward pass when evaluating) "
                               "must be positive");
        }
        check_data(train, "lightloop::fit: the training data");
        check_data(test, "lightloop::fit: the test data");
        auto check_widths = [&](const labelled_data<T>& data, const char* which) {
            if (data.inputs.shape(1) != net.input_size() ||
                data.targets.shape(1) != net.output_size()) {
                throw shape_error("lightloop::fit: " + std::string(which) + " data is " +
                                  std::to_string(data.inputs.shape(1)) + " -> " +
                                  std::to_string(data.targets.shape(1)) + " but the network is " +
                                  std::to_string(net.input_size()) + " -> " +
                                  std::to_string(net.output_size()));
            }
        };
        check_widths(train, "training");
        if (options.alignment_probe > 0 && test.size() == 0) {
            throw config_error("lightloop::fit: alignment_probe is " +
                               std::to_string(options.alignment_probe) +
                               " but there is no test set to probe (the probe is its first rows)");
        }
        if (test.size() > 0) {
            check_widths(test, "test");
        }
        if constexpr (requires { net.loss_function().check_targets(train.targets, ""); }) {
            net.loss_function().check_targets(train.targets, "lightloop::fit: the training data");
            net.loss_function().check_targets(test.targets, "lightloop::fit: the test data");
        }
        // An optimizer's state belongs to the network it stepped: another
        // network would start with its momentum (Adam: its moments and step
        // count), silently.
        if (net.steps() == 0 && detail::holds_state(opt)) {
            throw config_error("lightloop::fit: the optimizer holds state from earlier steps "
                               "(momentum, moments or a step count) but the network has never "
                               "been stepped: that state came from stepping another network "
                               "object (weights loaded into a new one included); give each "
                               "network an optimizer of its own; nothing was trained");
        }
        checked_sampler.emplace(train, options.batch, options.seed);
        // A schedule with a bad setting, refused here rather than at the
        // first batch (over MPI, where a rank given another one threw alone).
        const double first_rate = scheduled_rate(opt.learning_rate(), 0.0);
        if (!(first_rate > 0.0 && std::isfinite(first_rate))) {
            throw config_error("lightloop::fit: the learning-rate schedule starts at " +
                               number_text(first_rate) + " (base " +
                               number_text(opt.learning_rate()) +
                               "); a rate must be positive and finite");
        }
    };
    // Runs checks that may throw: on every process and agreed where the
    // strategy says how (check_together), else here.
    const auto run_checks = [&](const auto& checks) {
        if constexpr (requires { strategy.check_together(checks); }) {
            strategy.check_together(checks);
        } else {
            checks();
        }
    };
    run_checks(check_inputs);
    if constexpr (requires { strategy.check_options(options); }) {
        strategy.check_options(options);
    }
    if (!options.checkpoint.empty()) {
        if constexpr (requires { strategy.check_checkpoint_path(options.checkpoint); }) {
            strategy.check_checkpoint_path(options.checkpoint); // e.g. agreed by every process
        } else {
            detail::check_checkpoint_path(options.checkpoint);
        }
    }
    batch_sampler<T>& sampler = *checked_sampler;
    strategy.begin(sampler);
    // Every layer trains on the rows a process gets of the smallest batch (a
    // strategy that splits batches says its smallest share) and on the
    // alignment probe's.
    const std::size_t probe_rows = std::min(options.alignment_probe, test.size());
    run_checks([&] {
        if constexpr (requires { strategy.smallest_share(sampler); }) {
            const auto [rows, where] = strategy.smallest_share(sampler);
            detail::check_training_rows(net, rows, where);
        } else {
            detail::check_training_rows(net, sampler.smallest_batch_rows(),
                                        sampler.smallest_batch_text());
        }
        detail::check_probe_rows(net, probe_rows);
    });
    const double base_lr = opt.learning_rate();
    const fit_info info{options.epochs, sampler.batches(), train.size(), test.size()};
    // A callback's failure. One process: thrown at once. Over several (a
    // strategy with agree_on_failure), kept until every process meets (before
    // training, for on_fit_begin and on_resume; else at the epoch's end):
    // this process calls no more of its callbacks, takes the epoch's steps
    // with the others, and every process throws together there (this one its
    // own error). A process that left alone would leave the others waiting in
    // their next step forever.
    constexpr bool agrees_on_failure = requires {
        strategy.agree_on_failure(std::exception_ptr{}, "a callback", "before training");
    };
    std::exception_ptr callback_failure;
    const auto call_back = [&](auto&& call) {
        if constexpr (!agrees_on_failure) {
            call();
        } else if (!callback_failure) {
            try {
                call();
            } catch (...) { // whatever it throws, a std::exception or not
                callback_failure = std::current_exception();
            }
        }
    };
    call_back([&] {
        (
          [&] {
              if constexpr (requires { callbacks.on_fit_begin(info); }) {
                  callbacks.on_fit_begin(info);
              }
          }(),
          ...);
    });

    matrix<T> probe_x;
    matrix<T> probe_y;
    if (options.alignment_probe > 0) {
        std::vector<std::size_t> rows(probe_rows);
        std::iota(rows.begin(), rows.end(), std::size_t{0});
        gather_rows(test.inputs, std::span<const std::size_t>(rows), probe_x);
        gather_rows(test.targets, std::span<const std::size_t>(rows), probe_y);
    }

    fit_history history;
    // Kept in each checkpoint's run record; a resume compares it.
    std::optional<detail::data_fingerprint> fingerprint;
    if (!options.checkpoint.empty()) {
        fingerprint = detail::data_fingerprint::of(train);
    }
    if (options.resume) {
        detail::epoch_log before{{}, fingerprint};
        const std::optional<checkpoint_info> saved =
          strategy.resume(net, opt, options.checkpoint, before,
                          detail::resume_check{&options.checkpoint, options.seed, options.batch});
        if (saved) {
            history.resumed_from_epoch = static_cast<std::size_t>(saved->epoch);
            history.epochs = std::move(before.epochs);
            call_back([&] {
                (
                  [&] {
                      if constexpr (requires { callbacks.on_resume(history); }) {
                          callbacks.on_resume(history);
                      }
                  }(),
                  ...);
            });
        }
    }
    if constexpr (agrees_on_failure) {
        strategy.agree_on_failure(callback_failure, "a callback", "before training");
    }
    const auto fit_start = clock::now();
    matrix<T> xb;
    matrix<T> yb;
    for (std::size_t epoch = history.resumed_from_epoch; epoch < options.epochs; ++epoch) {
        call_back([&] {
            (([&] {
                 if constexpr (requires { callbacks.on_epoch_begin(epoch); }) {
                     callbacks.on_epoch_begin(epoch);
                 }
             }()),
             ...);
        });
        sampler.start_epoch(epoch);
        const auto epoch_start = clock::now();
        double loss_sum = 0.0;
        std::size_t correct = 0;
        std::size_t done = 0;
        double lr = base_lr;
        for (std::size_t b = 0; b < sampler.batches(); ++b) {
            const double progress = static_cast<double>(epoch) +
                                    static_cast<double>(b) / static_cast<double>(sampler.batches());
            lr = scheduled_rate(base_lr, progress);
            opt.set_learning_rate(lr);
            strategy.fill(sampler, b, xb, yb);
            const step_totals totals = strategy.step(net, opt, xb, yb);
            // (a pipelined strategy's first step has no figures yet)
            const double loss = detail::mean_or_nan(totals.loss_sum, totals.samples);
            correct += totals.correct;
            loss_sum += totals.loss_sum;
            done += totals.samples;
            const batch_info batch{
              epoch,
              b,
              sampler.batches(),
              done,
              sampler.samples(),
              loss,
              detail::mean_or_nan(loss_sum, done),
              lr,
              std::chrono::duration<double>(clock::now() - epoch_start).count()};
            call_back([&] {
                (([&] {
                     if constexpr (requires { callbacks.on_batch_end(batch); }) {
                         callbacks.on_batch_end(batch);
                     }
                 }()),
                 ...);
            });
        }
        if constexpr (requires { strategy.finish_epoch(net, opt); }) {
            // A pipelined strategy's last batch of the epoch, applied now.
            const step_totals totals = strategy.finish_epoch(net, opt);
            correct += totals.correct;
            loss_sum += totals.loss_sum;
            done += totals.samples;
        }
        epoch_record record;
        record.epoch = epoch + 1;
        record.learning_rate = lr;
        record.seconds = std::chrono::duration<double>(clock::now() - epoch_start).count();
        record.samples_per_second = static_cast<double>(done) / record.seconds;
        record.train_loss = loss_sum / static_cast<double>(done);
        record.train_accuracy = static_cast<double>(correct) / static_cast<double>(done);
        if constexpr (requires { strategy.before_epoch_end(net); }) {
            // e.g. the whole network on every process, before anything here
            // reads it: the alignment probe, the epoch-end callbacks
            strategy.before_epoch_end(net);
        }
        if (options.alignment_probe > 0) {
            const auto report = gradient_alignment(net, probe_x, probe_y);
            record.alignment_mean = report.mean;
            record.alignment_spread = report.spread;
            record.weight_alignment = weight_alignment(net);
        }
        if (test.size() > 0) {
            const evaluation eval = strategy.evaluate(net, test, options.eval_batch);
            record.test_loss = eval.loss;
            record.test_accuracy = eval.accuracy;
        } else { // no test set: no figures, rather than zeros that read as perfect
            record.test_loss = std::numeric_limits<double>::quiet_NaN();
            record.test_accuracy = std::numeric_limits<double>::quiet_NaN();
        }
        detail::record_device(net, record);
        if constexpr (requires { strategy.record_device(record); }) {
            strategy.record_device(record); // a device of the strategy's own
        }
        history.epochs.push_back(record);
        if (!options.checkpoint.empty()) { // every process
            strategy.save_checkpoint(net, opt, options.checkpoint, epoch + 1, options.seed,
                                     options.batch, detail::epoch_log{history.epochs, fingerprint});
        }
        bool stop = false;
        call_back([&] { ((stop = detail::call_epoch_end(callbacks, record, net) || stop), ...); });
        if constexpr (agrees_on_failure) {
            strategy.agree_on_failure(callback_failure, "a callback", "at the end of the epoch");
        }
        if (strategy.agree_to_stop(stop)) {
            history.stopped_early = epoch + 1 < options.epochs;
            break;
        }
    }
    opt.set_learning_rate(base_lr);
    if constexpr (requires { strategy.finish_fit(net, opt); }) {
        strategy.finish_fit(net, opt); // e.g. optimizer state kept in parts, made whole
    }
    history.seconds = std::chrono::duration<double>(clock::now() - fit_start).count();
    (
      [&] {
          if constexpr (requires { callbacks.on_fit_end(history); }) {
              callbacks.on_fit_end(history);
          }
      }(),
      ...);
    return history;
}

template <class Network, optimizer Optimizer, class... Callbacks>
fit_history fit(Network& net, Optimizer& opt,
                const labelled_data<typename Network::value_type>& train,
                const labelled_data<typename Network::value_type>& test, fit_options options,
                Callbacks&&... callbacks) {
    single_process one;
    return fit_with(one, net, opt, train, test, std::move(options),
                    std::forward<Callbacks>(callbacks)...);
}

} // namespace lightloop
