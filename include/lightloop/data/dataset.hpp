#pragma once
// Mini-batches with seeded shuffling, and a seeded validation split.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "lightloop/core/describe.hpp"
#include "lightloop/core/error.hpp"
#include "lightloop/core/finite.hpp"
#include "lightloop/core/random.hpp"
#include "lightloop/data/synthetic.hpp"

namespace lightloop {

/// Refuses a data set whose parts disagree: as many input rows as target
/// rows as labels (size() counts the labels). `who` starts the message, e.g.
/// "lightloop::fit: the training data".
template <class T>
void check_rows(const labelled_data<T>& data, const std::string& who) {
    if (data.inputs.shape(0) != data.targets.shape(0) ||
        data.targets.shape(0) != data.labels.size()) {
        throw shape_error(who + " has " + std::to_string(data.inputs.shape(0)) + " input rows, " +
                          std::to_string(data.targets.shape(0)) + " target rows and " +
                          std::to_string(data.labels.size()) +
                          " labels; they must agree (one of each per sample)");
    }
}

/// check_rows, and refuses a data set holding a value that is not finite,
/// naming the first: a NaN input or target makes every loss and update after
/// it NaN.
template <class T>
void check_data(const labelled_data<T>& data, const std::string& who) {
    check_rows(data, who);
    for (const auto* part : {&data.inputs, &data.targets}) {
        const std::span<const T> values(part->data(), part->size());
        if (detail::all_finite(values)) {
            continue;
        }
        const auto bad = static_cast<std::size_t>(
          std::find_if(values.begin(), values.end(), [](T v) { return !std::isfinite(v); }) -
          values.begin());
        const std::size_t width = part->shape(1);
        throw data_error(who + "'s " + (part == &data.inputs ? "inputs" : "targets") + " hold " +
                         number_text(values[bad]) + " at row " + std::to_string(bad / width) +
                         ", column " + std::to_string(bad % width) +
                         "; every value must be finite");
    }
}

/// The rows of `data` listed in `rows`, in that order.
template <class T>
labelled_data<T> select_rows(const labelled_data<T>& data, std::span<const std::size_t> rows) {
    check_rows(data, "lightloop::select_rows: the data");
    labelled_data<T> out;
    gather_rows(data.inputs, rows, out.inputs);
    gather_rows(data.targets, rows, out.targets);
    out.labels.resize(rows.size());
    for (std::size_t i = 0; i < rows.size(); ++i) {
        out.labels[i] = data.labels[rows[i]];
    }
    return out;
}

/// Splits off a random `fraction` of `data` (seeded) for validation:
/// returns {training part, validation part}.
template <class T>
std::pair<labelled_data<T>, labelled_data<T>> split_validation(const labelled_data<T>& data,
                                                               double fraction,
                                                               std::uint64_t seed) {
    if (!(fraction > 0.0 && fraction < 1.0)) {
        throw config_error("lightloop::split_validation: fraction must be in (0, 1), got " +
                           number_text(fraction));
    }
    const std::size_t n = data.size();
    const auto held = static_cast<std::size_t>(static_cast<double>(n) * fraction);
    if (held == 0 || held == n) {
        throw config_error("lightloop::split_validation: " + std::to_string(n) +
                           " samples cannot be split at fraction " + number_text(fraction));
    }
    rng gen(seed);
    const auto order = detail::shuffled_order(n, gen);
    const std::span<const std::size_t> all(order);
    return {select_rows(data, all.subspan(held)), select_rows(data, all.first(held))};
}

/// Serves an epoch's mini-batches: the order is reshuffled for every epoch
/// from (seed, epoch), so a run is reproducible and an epoch can be replayed;
/// the last batch holds the remainder when the batch size does not divide n.
template <class T = float>
class batch_sampler {
public:
    batch_sampler(const labelled_data<T>& data, std::size_t batch, std::uint64_t seed,
                  bool shuffle = true)
      : data_(&data)
      , batch_(batch)
      , seed_(seed)
      , shuffle_(shuffle)
      , order_(data.size()) {
        if (batch == 0) {
            throw config_error("lightloop::batch_sampler: batch size must be positive");
        }
        check_rows(data, "lightloop::batch_sampler: the data");
        if (data.size() == 0) {
            throw config_error("lightloop::batch_sampler: empty data set");
        }
        std::iota(order_.begin(), order_.end(), std::size_t{0});
    }

    /// Fixes the order of `epoch`'s batches.
    void start_epoch(std::size_t epoch) {
        std::iota(order_.begin(), order_.end(), std::size_t{0});
        if (shuffle_) {
            rng gen(derive_seed(seed_, epoch));
            for (std::size_t i = order_.size(); i > 1; --i) {
                std::swap(order_[i - 1], order_[gen.below(i)]);
            }
        }
    }

    std::size_t batches() const noexcept { return (order_.size() + batch_ - 1) / batch_; }
    std::size_t samples() const noexcept { return order_.size(); }
    std::size_t batch_size() const noexcept { return batch_; }
    std::uint64_t seed() const noexcept { return seed_; }
    bool shuffles() const noexcept { return shuffle_; }
    const labelled_data<T>& data() const noexcept { return *data_; }

    /// Copies batch `b` of the current epoch into x and y (resized only when
    /// the batch's size differs from theirs).
    void fill(std::size_t b, matrix<T>& x, matrix<T>& y) const {
        const std::size_t start = b * batch_;
        if (start >= order_.size()) {
            throw config_error("lightloop::batch_sampler: batch " + std::to_string(b) + " of " +
                               std::to_string(batches()));
        }
        const std::span<const std::size_t> rows(order_.data() + start,
                                                std::min(batch_, order_.size() - start));
        gather_rows(data_->inputs, rows, x);
        gather_rows(data_->targets, rows, y);
    }

    /// Rows in batch `b` of an epoch.
    std::size_t batch_rows(std::size_t b) const noexcept {
        const std::size_t start = b * batch_;
        return start < order_.size() ? std::min(batch_, order_.size() - start) : 0;
    }

    /// Rows in an epoch's smallest batch: the last, which holds the
    /// remainder when the batch size does not divide the data.
    std::size_t smallest_batch_rows() const noexcept { return batch_rows(batches() - 1); }

    /// "the last batch of an epoch (129 samples in batches of 128)", or
    /// "every batch (batches of 128)": where smallest_batch_rows is, for
    /// messages.
    std::string smallest_batch_text() const {
        const std::string sizes = std::to_string(batch_) + ")";
        return smallest_batch_rows() < batch_
                 ? "the last batch of an epoch (" + std::to_string(samples()) +
                     " samples in batches of " + sizes
                 : "every batch (batches of " + sizes;
    }

    /// Shard `shard` of `shards` of batch `b`: its rows `shard`, `shard` +
    /// `shards`, ... (data-parallel training: the ranks split every batch of
    /// one shuffle). Every shard must get a row: refused when the batch has
    /// fewer rows than shards.
    void fill_shard(std::size_t b, std::size_t shard, std::size_t shards, matrix<T>& x,
                    matrix<T>& y) {
        const std::size_t rows = batch_rows(b);
        if (shards == 0 || shard >= shards || rows < shards) {
            throw config_error("lightloop::batch_sampler: shard " + std::to_string(shard) + " of " +
                               std::to_string(shards) + " of batch " + std::to_string(b) + " (" +
                               std::to_string(rows) +
                               " rows): every shard needs a row of every batch");
        }
        shard_rows_.clear();
        for (std::size_t i = b * batch_ + shard; i < b * batch_ + rows; i += shards) {
            shard_rows_.push_back(order_[i]);
        }
        gather_rows(data_->inputs, std::span<const std::size_t>(shard_rows_), x);
        gather_rows(data_->targets, std::span<const std::size_t>(shard_rows_), y);
    }

private:
    const labelled_data<T>* data_;
    std::size_t batch_;
    std::uint64_t seed_;
    bool shuffle_;
    std::vector<std::size_t> order_;
    std::vector<std::size_t> shard_rows_; // fill_shard's, kept for its capacity
};

} // namespace lightloop
