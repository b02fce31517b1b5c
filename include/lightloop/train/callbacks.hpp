#pragma once
// Callbacks for fit(): a progress bar, CSV and JSON logs, early stopping and
// a checkpoint every epoch. Each implements only the hooks it needs.

#include <unistd.h>

#include <cmath>
#include <cstddef>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <limits>
#include <memory>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "lightloop/core/describe.hpp"
#include "lightloop/core/error.hpp"
#include "lightloop/io/atomic_file.hpp"
#include "lightloop/io/checkpoint.hpp"
#include "lightloop/train/fit.hpp"

namespace lightloop {

namespace detail {

inline std::string format_duration(double seconds) {
    if (!std::isfinite(seconds) || seconds < 0) {
        return "--:--";
    }
    const auto s = static_cast<long long>(seconds + 0.5);
    char buf[32];
    if (s >= 3600) {
        std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", s / 3600, (s / 60) % 60, s % 60);
    } else {
        std::snprintf(buf, sizeof buf, "%lld:%02lld", s / 60, s % 60);
    }
    return buf;
}

/// JSON has no NaN or infinity: they become null.
inline std::string json_number(double v) {
    if (!std::isfinite(v)) {
        return "null";
    }
    std::ostringstream s;
    s << std::setprecision(10) << v;
    return s.str();
}

inline std::string csv_number(double v) {
    if (std::isnan(v)) {
        return "";
    }
    std::ostringstream s;
    s << std::setprecision(10) << v;
    return s.str();
}

} // namespace detail

/// A per-batch progress bar with samples/s, ETA and running loss, redrawn in
/// place on a terminal; on anything else (a pipe, a log file) it prints plain
/// lines: one at each quarter of an epoch and one per epoch.
class progress_bar {
public:
    explicit progress_bar(std::string label = "", std::FILE* stream = stdout)
      : label_(std::move(label))
      , stream_(stream)
      , terminal_(::isatty(::fileno(stream)) != 0) {}

    /// Forces terminal (true) or plain-line (false) output.
    progress_bar& terminal(bool on) {
        terminal_ = on;
        return *this;
    }

    void on_fit_begin(const fit_info& info) { epochs_ = info.epochs; }

    void on_resume(const fit_history& history) {
        std::fprintf(stream_, "%s resumed after epoch %zu/%zu from its checkpoint\n",
                     label_.c_str(), history.resumed_from_epoch, epochs_);
        std::fflush(stream_);
    }

    void on_epoch_begin(std::size_t) { next_quarter_ = 1; }

    void on_batch_end(const batch_info& b) {
        const double fraction =
          static_cast<double>(b.samples_done) / static_cast<double>(b.epoch_samples);
        const double rate = static_cast<double>(b.samples_done) / std::max(b.epoch_seconds, 1e-9);
        const double eta = static_cast<double>(b.epoch_samples - b.samples_done) / rate;
        if (terminal_) {
            constexpr int width = 30;
            const int filled = static_cast<int>(fraction * width);
            std::string bar(static_cast<std::size_t>(filled), '#');
            bar.resize(width, '.');
            std::fprintf(stream_,
                         "\r%s epoch %zu/%zu [%s] %3.0f%% %8.0f samples/s ETA %s loss %.4f",
                         label_.c_str(), b.epoch + 1, epochs_, bar.c_str(), 100.0 * fraction, rate,
                         detail::format_duration(eta).c_str(), b.running_loss);
            std::fflush(stream_);
        } else if (fraction * 4 >= static_cast<double>(next_quarter_) && next_quarter_ < 4) {
            std::fprintf(stream_, "%s epoch %zu/%zu %3.0f%% %.0f samples/s ETA %s loss %.4f\n",
                         label_.c_str(), b.epoch + 1, epochs_, 100.0 * fraction, rate,
                         detail::format_duration(eta).c_str(), b.running_loss);
            while (fraction * 4 >= static_cast<double>(next_quarter_)) {
                ++next_quarter_;
            }
        }
    }

    void on_epoch_end(const epoch_record& r) {
        if (terminal_) {
            std::fprintf(stream_, "\r\033[K");
        }
        std::fprintf(stream_, "%s epoch %zu/%zu  train loss %.4f acc %.2f%%  ", label_.c_str(),
                     r.epoch, epochs_, r.train_loss, 100.0 * r.train_accuracy);
        if (!std::isnan(r.test_loss)) { // NaN: the fit has no test set
            std::fprintf(stream_, "test loss %.4f acc %.2f%%  ", r.test_loss,
                         100.0 * r.test_accuracy);
        }
        std::fprintf(stream_, "%.1f s (%.0f samples/s)\n", r.seconds, r.samples_per_second);
        std::fflush(stream_);
    }

private:
    std::string label_;
    std::FILE* stream_;
    bool terminal_;
    std::size_t epochs_ = 0;
    std::size_t next_quarter_ = 1;
};

/// One CSV row per epoch, appended and flushed as each epoch ends. `run`
/// (a method name, say) is written as the first column so several runs can
/// share one file; the header is written when the file is new. A resumed
/// run's rows are those of its checkpoint's records, then its own: on
/// resume, this run's rows in the file (from the run that was interrupted,
/// which may have logged less or more than its checkpoint holds) are
/// replaced by the records, atomically; other runs' rows stay.
class csv_log {
public:
    explicit csv_log(std::filesystem::path path, std::string run = "")
      : path_(std::move(path))
      , run_(std::move(run)) {}

    /// A log that cannot be kept at its path is refused before training,
    /// not after the first epoch.
    void on_fit_begin(const fit_info&) const {
        detail::check_file_path(path_, "lightloop::csv_log", "CSV log", "a log names a file");
    }

    void on_resume(const fit_history& history) {
        std::string kept;
        std::error_code ec;
        if (std::filesystem::exists(path_, ec)) {
            std::ifstream in(path_);
            if (!in) {
                throw data_error("lightloop: " + path_.string() + ": cannot read CSV log");
            }
            const std::string mine = run_ + ',';
            bool header = true;
            for (std::string line; std::getline(in, line); header = false) {
                if (header || line.rfind(mine, 0) != 0) {
                    kept += line + '\n';
                }
            }
        }
        detail::write_atomically(path_, {std::as_bytes(std::span(kept))}, "CSV log");
        for (const epoch_record& r : history.epochs) {
            on_epoch_end(r);
        }
    }

    void on_epoch_end(const epoch_record& r) {
        std::error_code ec;
        const bool fresh =
          !std::filesystem::exists(path_, ec) || std::filesystem::file_size(path_, ec) == 0;
        std::ofstream out(path_, std::ios::app);
        if (!out) {
            throw data_error("lightloop: " + path_.string() + ": cannot write CSV log");
        }
        if (fresh) {
            out << "run,epoch,learning_rate,train_loss,train_accuracy,test_loss,test_accuracy,"
                   "seconds,samples_per_second,alignment,device_frames,device_seconds,"
                   "device_saturated,device_snr_db\n";
        }
        double alignment = std::numeric_limits<double>::quiet_NaN();
        if (!r.alignment_mean.empty()) {
            alignment = alignment_report{r.alignment_mean, r.alignment_spread}.overall();
        }
        using detail::csv_number;
        out << run_ << ',' << r.epoch << ',' << csv_number(r.learning_rate) << ','
            << csv_number(r.train_loss) << ',' << csv_number(r.train_accuracy) << ','
            << csv_number(r.test_loss) << ',' << csv_number(r.test_accuracy) << ','
            << csv_number(r.seconds) << ',' << csv_number(r.samples_per_second) << ','
            << csv_number(alignment) << ',';
        if (r.has_device) {
            out << r.device_frames << ',' << csv_number(r.device_seconds) << ','
                << csv_number(r.device_saturated) << ',' << csv_number(r.device_snr_db);
        } else {
            out << ",,,";
        }
        out << '\n';
    }

private:
    std::filesystem::path path_;
    std::string run_;
};

/// The whole history as a JSON array of epoch objects, rewritten (atomically)
/// after every epoch so an interrupted run still leaves a valid file.
class json_log {
public:
    explicit json_log(std::filesystem::path path)
      : path_(std::move(path)) {}

    /// A log that cannot be kept at its path is refused before training,
    /// not after the first epoch.
    void on_fit_begin(const fit_info&) const {
        detail::check_file_path(path_, "lightloop::json_log", "JSON log", "a log names a file");
    }

    /// A resumed run's file starts with the records before the checkpoint.
    void on_resume(const fit_history& history) { records_ = history.epochs; }

    void on_epoch_end(const epoch_record& r) {
        records_.push_back(r);
        std::ostringstream out;
        out << "[\n";
        for (std::size_t i = 0; i < records_.size(); ++i) {
            write(out, records_[i]);
            out << (i + 1 < records_.size() ? ",\n" : "\n");
        }
        out << "]\n";
        const std::string text = std::move(out).str();
        detail::write_atomically(path_, {std::as_bytes(std::span(text.data(), text.size()))},
                                 "JSON log");
    }

private:
    static void write_array(std::ostream& out, const std::vector<double>& values) {
        out << '[';
        for (std::size_t i = 0; i < values.size(); ++i) {
            out << (i > 0 ? ", " : "") << detail::json_number(values[i]);
        }
        out << ']';
    }

    static void write(std::ostream& out, const epoch_record& r) {
        using detail::json_number;
        out << "  {\"epoch\": " << r.epoch
            << ", \"learning_rate\": " << json_number(r.learning_rate)
            << ", \"train_loss\": " << json_number(r.train_loss)
            << ", \"train_accuracy\": " << json_number(r.train_accuracy)
            << ", \"test_loss\": " << json_number(r.test_loss)
            << ", \"test_accuracy\": " << json_number(r.test_accuracy)
            << ", \"seconds\": " << json_number(r.seconds)
            << ", \"samples_per_second\": " << json_number(r.samples_per_second)
            << ", \"alignment_mean\": ";
        write_array(out, r.alignment_mean);
        out << ", \"alignment_spread\": ";
        write_array(out, r.alignment_spread);
        out << ", \"weight_alignment\": ";
        write_array(out, r.weight_alignment);
        if (r.has_device) {
            out << ", \"device\": {\"frames\": " << r.device_frames
                << ", \"seconds\": " << json_number(r.device_seconds)
                << ", \"saturated_fraction\": " << json_number(r.device_saturated)
                << ", \"snr_db\": " << json_number(r.device_snr_db) << '}';
        }
        out << '}';
    }

    std::filesystem::path path_;
    std::vector<epoch_record> records_;
};

/// Stops when the test loss has not improved by more than `min_delta` for
/// `patience` consecutive epochs. In a fit without a test set it watches the
/// training loss instead (told by on_fit_begin).
class early_stopping {
public:
    explicit early_stopping(std::size_t patience = 3, double min_delta = 0.0)
      : patience_(patience)
      , min_delta_(min_delta) {
        if (patience == 0) {
            throw config_error("lightloop::early_stopping: patience must be positive");
        }
        if (!(min_delta >= 0.0) || !std::isfinite(min_delta)) {
            throw config_error("lightloop::early_stopping: min_delta must be finite and >= 0, "
                               "got " +
                               number_text(min_delta));
        }
    }

    void on_fit_begin(const fit_info& info) {
        watch_training_loss_ = info.test_samples == 0;
        best_ = std::numeric_limits<double>::infinity();
        waited_ = 0;
    }

    /// A resumed run replays the records before the checkpoint, so it stops
    /// where an uninterrupted one would.
    void on_resume(const fit_history& history) {
        best_ = std::numeric_limits<double>::infinity();
        waited_ = 0;
        for (const epoch_record& r : history.epochs) {
            on_epoch_end(r);
        }
    }

    bool on_epoch_end(const epoch_record& r) {
        const double loss = watch_training_loss_ ? r.train_loss : r.test_loss;
        if (loss < best_ - min_delta_) {
            best_ = loss;
            waited_ = 0;
            return false;
        }
        return ++waited_ >= patience_;
    }

    double best() const noexcept { return best_; }
    /// Whether it watches the training loss (a fit without a test set).
    bool watches_training_loss() const noexcept { return watch_training_loss_; }

private:
    bool watch_training_loss_ = false;
    std::size_t patience_;
    double min_delta_;
    double best_ = std::numeric_limits<double>::infinity();
    std::size_t waited_ = 0;
};

/// Saves the network's parameters after every epoch (io/checkpoint.hpp),
/// without the optimizer's state: for a resumable run use fit_options::
/// checkpoint, which saves everything (and, over MPI, is written by the
/// ranks in step; give this callback to one rank only).
class checkpoint_every_epoch {
public:
    explicit checkpoint_every_epoch(std::filesystem::path path)
      : path_(std::move(path)) {}

    /// A checkpoint that cannot be kept at its path is refused before
    /// training, not after the first epoch.
    void on_fit_begin(const fit_info&) const {
        detail::check_file_path(path_, "lightloop::checkpoint_every_epoch", "checkpoint",
                                "it names a file");
    }

    template <class Network>
    void on_epoch_end(const epoch_record& r, Network& net) {
        save_checkpoint(net, path_, r.epoch);
    }

private:
    std::filesystem::path path_;
};

} // namespace lightloop
