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
// slice of the projection is the same columns of the same product; tested)
// for the dense devices. An optical device's slice is the whole device's rows
// of R, reference and sensor, but it calibrates and draws camera noise on its
// own pixels, as a co-processor per rank would.
// Pipelined (layer_parallel_mode::pipelined): the ranks below the last forward
// the next batch while the previous batch's error is on its way, so their
// weights are at most one step stale; finish() applies the last update. They
// run their passes on two replicas of their layers in turn, which hand each
// other the weights, batch_norm's running estimates and the step count, so
// those follow every batch as in one process (a pass's dropout masks are
// those of its step). An evaluation between pipelined steps is refused until
// finish(): it would overwrite the pending update's activations.

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
#include "lightloop/feedback/direct.hpp"
#include "lightloop/network.hpp"
#include "lightloop/train/fit.hpp"
#include "lightloop/train/metrics.hpp"

namespace lightloop::distributed {

/// Synchronous: every rank waits for the step's error before the next
/// forward (bitwise single-process DFA). Pipelined: a rank below the last
/// forwards the next batch while the error of the previous one is on its way,
/// and updates with it afterwards (weights at most one step stale).
enum class layer_parallel_mode { synchronous, pipelined };

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

/// The split dfa_layer_parallel takes by default: `parts` blocks balanced
/// by each layer's weight count (one more for every layer: a layer without
/// parameters still costs a pass).
template <class Network>
std::vector<layer_range> balanced_layer_split(const Network& net, std::size_t parts) {
    std::vector<double> costs;
    net.visit_layers([&](const auto& l, std::size_t) {
        double cost = 1.0;
        if constexpr (requires { l.weights(); }) {
            cost += static_cast<double>(l.weights().size());
        }
        costs.push_back(cost);
    });
    return balanced_split(costs, parts);
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
    static_assert(
      requires(const feedback_type f, const matrix<T> batch, matrix<T> scratch) {
          typename feedback_type::device_type;
          feedback_type::projected_source(batch, batch, scratch);
          f.device_seed();
          f.offset(std::size_t{});
          f.projection_size();
      },
      "lightloop::distributed::dfa_layer_parallel: the network must train with a direct method "
      "(dfa, sign_dfa or drtp on a device) itself (a feedback_choice cannot be sliced: give the "
      "method as its own type)");
    using device_type = typename feedback_type::device_type;
    static constexpr std::size_t depth = Network::depth;

    /// Blocks of layers balanced by parameter count, or `split` (one range
    /// per rank, contiguous, covering every layer in order).
    dfa_layer_parallel(communicator& comm, const Network& net,
                       layer_parallel_mode mode = layer_parallel_mode::synchronous,
                       std::vector<layer_range> split = {})
      : comm_(&comm)
      , mode_(mode) {
        if (split.empty()) {
            split = balanced_layer_split(net, comm.size());
        }
        check_split(split);
        ranges_ = std::move(split);
        mine_ = ranges_[comm.rank()];
        configure_slice(net);
        if (pipelined() && !is_last()) {
            twin_.emplace_back(net); // the second set of activations in flight
        }
    }

    communicator& comm() noexcept { return *comm_; }
    layer_range owned() const noexcept { return mine_; }
    const std::vector<layer_range>& ranges() const noexcept { return ranges_; }
    bool is_last() const noexcept { return comm_->rank() + 1 == comm_->size(); }
    /// This rank's columns of the projection: [first, first + count).
    std::size_t slice_first() const noexcept { return slice_first_; }
    std::size_t slice_count() const noexcept { return slice_count_; }
    device_type& device() noexcept { return device_; }

    layer_parallel_mode mode() const noexcept { return mode_; }
    bool pipelined() const noexcept { return mode_ == layer_parallel_mode::pipelined; }

    /// One step on the batch (x, y), the same on every rank (rank 0 reads
    /// x, the last rank y); throws on every rank, nothing updated anywhere,
    /// if any rank failed.
    ///
    /// Synchronous: returns the batch's figures, the same on every rank.
    /// Pipelined: a rank below the last forwards this batch, then takes the
    /// error of the previous one and applies its update (staleness one); it
    /// returns the previous batch's figures, and finish() applies the last
    /// batch's update and returns its figures.
    template <class Optimizer>
    step_totals step(Network& net, Optimizer& opt, const matrix<T>& x, const matrix<T>& y) {
        // Every rank refuses a malformed batch alike before any message (a
        // rank that refused it alone would leave the next waiting).
        net.check_batch(x, y);
        unfinished_ = pipelined(); // on every rank, the last too
        if (!pipelined() || is_last()) {
            const matrix<T>& input = receive_input(net, x, received_[0]);
            const matrix<T>& out = net.forward_training(input, mine_);
            send_output(out);
            return update(net, opt, input, y, out);
        }
        // This batch's pass runs on the replica the pass two batches ago
        // used, which holds every update up to the previous batch's.
        const std::size_t k = passes_++;
        if (k == 0) {
            // A run starts from the network's weights on both replicas (the
            // twin missed the last update of a run with an odd number of
            // batches, and whatever changed the network since).
            first_step_ = net.steps();
            copy_owned(net, twin_.front());
        }
        Network& now = replica(net, k);
        now.set_steps(first_step_ + k); // the pass's step in one sequence (dropout's masks)
        matrix<T>& input = received_[k % 2];
        if (comm_->rank() == 0) {
            ensure_shape(input, x.shape(0), x.shape(1));
            std::copy(x.begin(), x.end(), input.begin()); // kept until its update
        } else {
            receive_input(net, x, input);
        }
        wait_sent(k % 2); // the replica's output goes out of date now
        const matrix<T>& out = now.forward_training(input, mine_);
        send_output_async(out, k % 2);
        if (k == 0) {
            return {};
        }
        return update_previous(net, opt, k - 1, y);
    }

    /// Pipelined: applies the last batch's update on the ranks below the
    /// last and returns its figures, so that `net` holds every update (the
    /// end of an epoch, before evaluation). Synchronous: nothing.
    template <class Optimizer>
    step_totals finish(Network& net, Optimizer& opt) {
        unfinished_ = false;
        if (!pipelined() || is_last() || passes_ == 0) {
            return {};
        }
        const std::size_t last = passes_ - 1;
        const matrix<T>& y = received_[last % 2]; // unused below the last rank
        const step_totals totals = update_previous(net, opt, last, y);
        if (&replica(net, last) != &net) {
            copy_owned(replica(net, last), net);
        }
        net.set_steps(first_step_ + passes_);
        wait_sent(0);
        wait_sent(1);
        passes_ = 0;
        return totals;
    }

    // --- fit_with's strategy -------------------------------------------------

    void begin(const batch_sampler<T>&) const {}
    template <class Optimizer>
    step_totals finish_epoch(Network& net, Optimizer& opt) {
        return finish(net, opt);
    }
    /// Every rank takes the whole batch (rank 0 uses its inputs, the last
    /// rank its targets).
    void fill(batch_sampler<T>& sampler, std::size_t b, matrix<T>& x, matrix<T>& y) const {
        sampler.fill(b, x, y);
    }
    /// The forward pass through the ranks, batch by batch; the last rank's
    /// figures are broadcast.
    template <class N>
    evaluation evaluate(N& net, const labelled_data<T>& data, std::size_t batch) {
        if (unfinished_) {
            throw config_error(
              "lightloop::distributed::dfa_layer_parallel: evaluate between pipelined steps would "
              "overwrite the activations the last batch's pending update needs; call "
              "finish(net, opt) first (fit_with does, at the end of every epoch)");
        }
        if (data.size() > 0) {
            check_rows(data, "lightloop::distributed::dfa_layer_parallel: the evaluated data");
            net.check_batch(data.inputs, data.targets);
        }
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
            const matrix<T>& out = net.forward(receive_input(net, xb, received_[0]), mine_);
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
    bool agree_to_stop(bool stop) { return comm_->any(stop); }
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
    /// A device that can be configured for a slice holds only those columns
    /// (the dense devices; the optical one on a stored or matrix-free
    /// medium, each rank then a device of its own on its pixels, with its
    /// own camera calibration and noise); another (the optical one on a
    /// structured medium) is the whole device, and the step copies its
    /// columns out of the whole projection.
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
        } else if (fb.projection_size() > 0) { // else nothing to project (no hidden layer)
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

    /// Rank 0: x; the others: the activations the rank below sends, into
    /// `into`.
    template <class N>
    const matrix<T>& receive_input(const N& net, const matrix<T>& x, matrix<T>& into) {
        if (comm_->rank() == 0) {
            return x;
        }
        ensure_shape(into, x.shape(0), net.widths()[mine_.first]);
        comm_->receive(std::span<T>(into.data(), into.size()), comm_->rank() - 1, activation_tag);
        return into;
    }

    /// The e of a pass (and the last rank's figures), this rank's slice of
    /// its projection into the deltas of `pass`, the gradients, an agreement
    /// that no rank failed, and the update.
    template <class Optimizer>
    step_totals update(Network& pass, Optimizer& opt, const matrix<T>& input, const matrix<T>& y,
                       const matrix<T>& out) {
        const std::size_t n = input.shape(0);
        std::string failure;
        ensure_shape(error_, n, pass.output_size());
        double figures[3] = {0.0, 0.0, 0.0}; // loss x n, correct, the last rank failed
        if (is_last()) {
            try {
                const double loss = static_cast<double>(pass.compute_output_error(y));
                figures[0] = loss * static_cast<double>(n);
                figures[1] = static_cast<double>(count_correct(out, y));
                // What the method projects (e, sign(e) or the target), as
                // in one process; sign(e) is written into error_ itself.
                const auto& e = lightloop::detail::read_delta(pass.template layer<depth - 1>());
                const matrix<T>& source = feedback_type::projected_source(e, y, error_);
                if (&source != &error_) {
                    std::copy(source.begin(), source.end(), error_.begin());
                }
            } catch (const lightloop::error& err) {
                failure = err.what();
                figures[2] = 1.0;
            }
        }
        comm_->broadcast(std::span<double>(figures), comm_->size() - 1);
        if (figures[2] != 0.0) {
            fail(pass, "the loss", failure);
        }
        comm_->broadcast(std::span<T>(error_.data(), error_.size()), comm_->size() - 1);
        if (slice_count_ > 0) {
            project_slice(n);
            const auto& fb = pass.feedback();
            pass.visit_layers([&](auto& l, std::size_t i) {
                if (has_slice<std::remove_cvref_t<decltype(l)>>(i)) {
                    l.scale_by_derivative(projected_.data() + (fb.offset(i) - slice_first_),
                                          slice_count_);
                }
            });
        }
        bool failed = false;
        try {
            pass.compute_layer_gradients(input, mine_);
        } catch (const lightloop::error& err) {
            failure = err.what();
            failed = true;
        }
        if (comm_->any(failed)) {
            fail(pass, "a gradient", failure);
        }
        pass.apply_gradients(opt, mine_);
        return {figures[0], static_cast<std::size_t>(figures[1]), n};
    }

    /// Pipelined, below the last rank: the update of pass k on its replica,
    /// whose weights first become the latest (the other replica's).
    template <class Optimizer>
    step_totals update_previous(Network& net, Optimizer& opt, std::size_t k, const matrix<T>& y) {
        Network& then = replica(net, k);
        copy_owned(replica(net, k + 1), then); // its activations stay those of pass k
        then.set_steps(first_step_ + k);       // one more once applied
        return update(then, opt, received_[k % 2], y, then.template layer<depth - 1>().output());
    }

    /// The network pass k runs on: `net` for even k, the twin for odd.
    Network& replica(Network& net, std::size_t k) { return k % 2 == 0 ? net : twin_.front(); }

    /// This rank's layers' parameters and buffers (batch_norm's running
    /// estimates, which each applied step moves), from one replica to the
    /// other. The visitor into `to` takes no bf16 copy of a mixed-precision
    /// layer's weights, so the layer marks that copy out of date: it is
    /// converted again before its next product, unless the optimizer's pass
    /// (which writes it) comes first, as in update_previous.
    void copy_owned(Network& from, Network& to) {
        spans_.clear();
        const auto keep = [&](std::span<T> values) { spans_.push_back(values); };
        from.visit_layers([&](auto& l, std::size_t i) {
            if (mine_.contains(i)) {
                // Read only: taking the bf16 copy (and leaving it) keeps it current.
                l.visit_parameters([&](std::span<T> values, auto&&...) { keep(values); });
                if constexpr (requires { l.visit_buffers(keep); }) {
                    l.visit_buffers(keep);
                }
            }
        });
        std::size_t at = 0;
        const auto put = [&](std::span<T> values) {
            std::copy(spans_[at].begin(), spans_[at].end(), values.begin());
            ++at;
        };
        to.visit_layers([&](auto& l, std::size_t i) {
            if (mine_.contains(i)) {
                l.visit_parameters([&](std::span<T> values, std::span<const T>) { put(values); });
                if constexpr (requires { l.visit_buffers(put); }) {
                    l.visit_buffers(put);
                }
            }
        });
    }

    void send_output_async(const matrix<T>& out, std::size_t slot) {
        if (!is_last()) {
            sent_[slot] = comm_->send_async(std::span<const T>(out.data(), out.size()),
                                            comm_->rank() + 1, activation_tag);
        }
    }
    void wait_sent(std::size_t slot) { comm_->wait(sent_[slot]); }
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
    layer_parallel_mode mode_;
    std::vector<Network> twin_;    // pipelined, below the last rank: the second replica
    std::size_t passes_ = 0;       // pipelined: batches forwarded since the last finish()
    std::uint64_t first_step_ = 0; // pipelined: the network's step count at the first of them
    bool unfinished_ = false;      // pipelined: steps since the last finish(), on every rank
    std::vector<std::span<T>> spans_;
    MPI_Request sent_[2] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL};
    std::vector<layer_range> ranges_;
    layer_range mine_{};
    device_type device_{};
    std::size_t slice_first_ = 0;
    std::size_t slice_count_ = 0;
    matrix<T> received_[2]; // a pass's input (two in flight when pipelined)
    matrix<T> error_;       // what is projected: e, sign(e) or the target
    matrix<T> projected_;
    matrix<T> whole_; // a whole projection, for a device without slices
};

} // namespace lightloop::distributed
