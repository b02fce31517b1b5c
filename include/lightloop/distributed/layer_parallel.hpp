#pragma once
// DFA layer-parallel training over MPI: what backprop cannot have. Rank r owns
// a contiguous block of layers; activations flow forward rank to rank; the
// last rank computes the error e (batch x classes) and broadcasts it; each
// rank projects e through its own slice of the feedback (a seeded device
// regenerates only that slice) and updates its own layers at once. No delta
// travels backward.
//
//   lightloop::distributed::dfa_layer_parallel parallel(comm, net);
//   parallel.step(net, opt, x, y);          // every rank passes the same batch
//   fit_with(parallel, net, opt, train, test, {.epochs = 3});
//
// Synchronous: the bits are those of the same network trained by DFA in one
// process (the same layers do the same arithmetic on the same values, and the
// slice of the projection is the same columns of the same product; tested).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "lightloop/core/error.hpp"
#include "lightloop/core/tensor.hpp"
#include "lightloop/data/dataset.hpp"
#include "lightloop/distributed/communicator.hpp"
#include "lightloop/network.hpp"
#include "lightloop/train/fit.hpp"
#include "lightloop/train/metrics.hpp"

namespace lightloop::distributed {

/// Splits `costs` (one per layer) into `parts` contiguous blocks, each at
/// least one layer, minimising the largest block's cost.
inline std::vector<layer_range> balanced_split(std::span<const double> costs, std::size_t parts) {
    const std::size_t n = costs.size();
    if (parts == 0 || parts > n) {
        throw config_error("lightloop::distributed: cannot split " + std::to_string(n) +
                           " layers over " + std::to_string(parts) +
                           " ranks (each rank needs a layer)");
    }
    std::vector<double> prefix(n + 1, 0.0);
    for (std::size_t i = 0; i < n; ++i) {
        prefix[i + 1] = prefix[i] + costs[i];
    }
    constexpr double inf = std::numeric_limits<double>::infinity();
    // best[k][i]: the least largest block over layers [0, i) in k blocks.
    std::vector<std::vector<double>> best(parts + 1, std::vector<double>(n + 1, inf));
    std::vector<std::vector<std::size_t>> cut(parts + 1, std::vector<std::size_t>(n + 1, 0));
    best[0][0] = 0.0;
    for (std::size_t k = 1; k <= parts; ++k) {
        for (std::size_t i = k; i <= n; ++i) {
            for (std::size_t j = k - 1; j < i; ++j) {
                const double worst = std::max(best[k - 1][j], prefix[i] - prefix[j]);
                if (worst < best[k][i]) {
                    best[k][i] = worst;
                    cut[k][i] = j;
                }
            }
        }
    }
    std::vector<layer_range> ranges(parts);
    std::size_t end = n;
    for (std::size_t k = parts; k >= 1; --k) {
        ranges[k - 1] = {cut[k][end], end};
        end = cut[k][end];
    }
    return ranges;
}

/// DFA layer-parallel training of `Network` (a dfa<Device> network) over the
/// ranks of `comm`; also fit_with's strategy. Every rank constructs the same
/// network (same seed) and passes the same batches; rank r trains layers
/// owned(), and its device holds only its columns of the projection.
template <class Network>
class dfa_layer_parallel {
public:
    using T = typename Network::value_type;
    using feedback_type = typename Network::feedback_type;
    using device_type = typename feedback_type::device_type;
    static constexpr std::size_t depth = Network::depth;

    /// Blocks of layers balanced by parameter count, or `split` (one range
    /// per rank, contiguous, covering every layer in order).
    dfa_layer_parallel(communicator& comm, const Network& net, std::vector<layer_range> split = {})
      : comm_(&comm) {
        static_assert(
          requires(const feedback_type f) {
              f.device_seed();
              f.offset(std::size_t{});
              f.projection_size();
          },
          "lightloop::distributed::dfa_layer_parallel: the network must train with dfa<Device>");
        if (split.empty()) {
            std::vector<double> costs;
            net.visit_layers([&](const auto& l, std::size_t) {
                double cost = 1.0; // a layer without parameters still costs a pass
                if constexpr (requires { l.weights(); }) {
                    cost += static_cast<double>(l.weights().size());
                }
                costs.push_back(cost);
            });
            split = balanced_split(costs, comm.size());
        }
        check_split(split);
        ranges_ = std::move(split);
        mine_ = ranges_[comm.rank()];
        configure_slice(net);
    }

    communicator& comm() noexcept { return *comm_; }
    layer_range owned() const noexcept { return mine_; }
    const std::vector<layer_range>& ranges() const noexcept { return ranges_; }
    bool is_last() const noexcept { return comm_->rank() + 1 == comm_->size(); }
    /// This rank's columns of the projection: [first, first + count).
    std::size_t slice_first() const noexcept { return slice_first_; }
    std::size_t slice_count() const noexcept { return slice_count_; }
    device_type& device() noexcept { return device_; }

    /// One synchronous step on the batch (x, y), the same on every rank
    /// (rank 0 reads x, the last rank y). Returns the batch's figures, the
    /// same on every rank; throws on every rank, nothing updated anywhere,
    /// if any rank failed.
    template <class Optimizer>
    step_totals step(Network& net, Optimizer& opt, const matrix<T>& x, const matrix<T>& y) {
        const std::size_t n = x.shape(0);
        const std::size_t classes = net.output_size();
        const matrix<T>& input = receive_input(net, x);
        std::string failure;
        const matrix<T>& out = net.forward_training(input, mine_);
        send_output(out);
        // e, then loss x n, correct count and the last rank's failure flag.
        ensure_shape(error_, n, classes);
        double figures[3] = {0.0, 0.0, 0.0};
        if (is_last()) {
            try {
                const double loss = static_cast<double>(net.compute_output_error(y));
                figures[0] = loss * static_cast<double>(n);
                figures[1] = static_cast<double>(count_correct(out, y));
                const auto& e = std::as_const(net).template layer<depth - 1>().delta();
                std::copy(e.begin(), e.end(), error_.begin());
            } catch (const lightloop::error& err) {
                failure = err.what();
                figures[2] = 1.0;
            }
        }
        comm_->broadcast(std::span<double>(figures), comm_->size() - 1);
        if (figures[2] != 0.0) {
            fail(net, "the loss", failure);
        }
        comm_->broadcast(std::span<T>(error_.data(), error_.size()), comm_->size() - 1);
        // This rank's slice of B e, into its hidden layers' deltas.
        if (slice_count_ > 0) {
            project_slice(n);
            const auto& fb = net.feedback();
            net.visit_layers([&](auto& l, std::size_t i) {
                if (has_slice<std::remove_cvref_t<decltype(l)>>(i)) {
                    l.scale_by_derivative(projected_.data() + (fb.offset(i) - slice_first_),
                                          slice_count_);
                }
            });
        }
        double failed[1] = {0.0};
        try {
            net.compute_layer_gradients(input, mine_);
        } catch (const lightloop::error& err) {
            failure = err.what();
            failed[0] = 1.0;
        }
        comm_->sum_identical(std::span<double>(failed));
        if (failed[0] != 0.0) {
            fail(net, "a gradient", failure);
        }
        net.apply_gradients(opt, mine_);
        return {figures[0], static_cast<std::size_t>(figures[1]), n};
    }

    // --- fit_with's strategy -------------------------------------------------

    void begin(const batch_sampler<T>&) const {}
    /// Every rank takes the whole batch (rank 0 uses its inputs, the last
    /// rank its targets).
    void fill(batch_sampler<T>& sampler, std::size_t b, matrix<T>& x, matrix<T>& y) const {
        sampler.fill(b, x, y);
    }
    /// The forward pass through the ranks, batch by batch; the last rank's
    /// figures are broadcast.
    template <class N>
    evaluation evaluate(N& net, const labelled_data<T>& data, std::size_t batch) {
        double sums[2] = {0.0, 0.0};
        matrix<T> xb;
        matrix<T> yb;
        std::vector<std::size_t> rows;
        for (std::size_t start = 0; start < data.size(); start += batch) {
            const std::size_t count = std::min(batch, data.size() - start);
            rows.resize(count);
            for (std::size_t i = 0; i < count; ++i) {
                rows[i] = start + i;
            }
            gather_rows(data.inputs, std::span<const std::size_t>(rows), xb);
            gather_rows(data.targets, std::span<const std::size_t>(rows), yb);
            const matrix<T>& out = net.forward(receive_input(net, xb), mine_);
            send_output(out);
            if (is_last()) {
                sums[0] += static_cast<double>(net.loss_function().value(out, yb)) *
                           static_cast<double>(count);
                sums[1] += static_cast<double>(count_correct(out, yb));
            }
        }
        comm_->broadcast(std::span<double>(sums), comm_->size() - 1);
        const auto n = static_cast<double>(data.size());
        return {sums[0] / n, sums[1] / n};
    }
    /// Rank 0 writes the run's files. Checkpoints need every rank's layers in
    /// one file, which this mode does not gather yet: fit_with is refused one.
    bool writes_files() const noexcept { return comm_->rank() == 0; }
    /// This rank's device's figures (the network's own device is not used).
    void record_device(epoch_record& record) const {
        lightloop::detail::record_statistics(device_, record);
    }
    bool agree_to_stop(bool stop) {
        double votes[1] = {stop ? 1.0 : 0.0};
        comm_->sum_identical(std::span<double>(votes));
        return votes[0] > 0.0;
    }
    void check_options(const fit_options& options) const {
        if (!options.checkpoint.empty()) {
            throw config_error("lightloop::distributed::dfa_layer_parallel: checkpoints are not "
                               "written in layer-parallel mode yet (each rank holds its own "
                               "layers); train without fit_options::checkpoint");
        }
        if (options.alignment_probe > 0) {
            throw config_error("lightloop::distributed::dfa_layer_parallel: the alignment probe "
                               "needs backprop through every layer on one rank; set "
                               "fit_options::alignment_probe to 0");
        }
    }

private:
    void check_split(const std::vector<layer_range>& split) const {
        bool ok = split.size() == comm_->size();
        std::size_t next = 0;
        for (const layer_range& r : split) {
            ok = ok && r.first == next && r.last > r.first;
            next = r.last;
        }
        if (!ok || next != depth) {
            throw config_error("lightloop::distributed::dfa_layer_parallel: the split must give "
                               "each of the " +
                               std::to_string(comm_->size()) +
                               " ranks a contiguous block of layers, in order, covering all " +
                               std::to_string(depth));
        }
    }

    /// Whether layer i is one of this rank's hidden layers with a slice of
    /// the projection (trained: it has parameters).
    template <class L>
    bool has_slice(std::size_t i) const {
        return lightloop::detail::has_parameters<L>() && mine_.contains(i) && i + 1 < depth;
    }

    /// The device slice: the columns of this rank's hidden trained layers.
    /// A device that can be configured for a slice holds only those columns;
    /// another (the optical one, so far) is the whole device, and the step
    /// copies its columns out of the whole projection.
    void configure_slice(const Network& net) {
        const auto& fb = net.feedback();
        std::size_t first = fb.projection_size();
        std::size_t end = 0;
        net.visit_layers([&](const auto& l, std::size_t i) {
            if (has_slice<std::remove_cvref_t<decltype(l)>>(i)) {
                first = std::min(first, fb.offset(i));
                end = std::max(end, fb.offset(i) + l.output_size());
            }
        });
        slice_first_ = end > 0 ? first : 0;
        slice_count_ = end > 0 ? end - first : 0;
        device_ = fb.device(); // its settings, configured below
        if constexpr (slices_device) {
            if (slice_count_ > 0) {
                device_.configure_slice(net.output_size(), fb.projection_size(), fb.device_seed(),
                                        slice_first_, slice_count_);
            }
        } else {
            device_.configure(net.output_size(), fb.projection_size(), fb.device_seed());
        }
    }

    /// This rank's columns of the projection of error_ into projected_.
    void project_slice(std::size_t n) {
        ensure_shape(projected_, n, slice_count_);
        if constexpr (slices_device) {
            device_.project(error_, projected_);
        } else {
            ensure_shape(whole_, n, device_.output_size());
            device_.project(error_, whole_);
            for (std::size_t r = 0; r < n; ++r) {
                std::copy_n(whole_.data() + r * whole_.shape(1) + slice_first_, slice_count_,
                            projected_.data() + r * slice_count_);
            }
        }
    }

    /// Rank 0: x; the others: the activations the rank below sends.
    template <class N>
    const matrix<T>& receive_input(const N& net, const matrix<T>& x) {
        if (comm_->rank() == 0) {
            return x;
        }
        ensure_shape(received_, x.shape(0), net.widths()[mine_.first]);
        comm_->receive(std::span<T>(received_.data(), received_.size()), comm_->rank() - 1,
                       activation_tag);
        return received_;
    }
    void send_output(const matrix<T>& out) {
        if (!is_last()) {
            comm_->send(std::span<const T>(out.data(), out.size()), comm_->rank() + 1,
                        activation_tag);
        }
    }

    [[noreturn]] void fail(const Network& net, const char* what, const std::string& mine) const {
        throw divergence_error(
          "lightloop::distributed::dfa_layer_parallel: " + std::string(what) + " failed at step " +
          std::to_string(net.steps()) + "; no rank updated its layers" +
          (mine.empty() ? std::string()
                        : " (rank " + std::to_string(comm_->rank()) + ": " + mine + ")"));
    }

    static constexpr bool slices_device =
      requires(device_type d, std::size_t k, std::uint64_t seed) {
        d.configure_slice(k, k, seed, k, k);
    };
    static constexpr int activation_tag = 17;
    communicator* comm_;
    std::vector<layer_range> ranges_;
    layer_range mine_{};
    device_type device_{};
    std::size_t slice_first_ = 0;
    std::size_t slice_count_ = 0;
    matrix<T> received_;
    matrix<T> error_;
    matrix<T> projected_;
    matrix<T> whole_; // a whole projection, for a device without slices
};

} // namespace lightloop::distributed
