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
// finish(): it would overwrite the pending update's activations. The ranks'
// calls are a batch apart until finish(), so nothing else uses the
// strategy's communicator meanwhile (its collectives would meet the wrong
// batch's).
//
// Every rank must pass the same batch: a note goes up with each batch's
// activations (rank 0's rows and its targets' CRC-32, and the first rank that
// refused the batch), so that ranks passing different batches are refused
// on every rank instead of training rank 0's inputs against the last rank's
// targets, or meeting in MPI with messages of the wrong size.
//
// fit_with's checkpoints are one file per rank, that rank's part
// ("<path>.rank<r>-of-<p>": its layers, optimizer state and device slice;
// distributed/checkpoint.hpp), and fit_with hands back the whole trained
// network and its optimizer's state on every rank (gather_network,
// gather_state).

#include <algorithm>
#include <array>
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
#include "lightloop/distributed/checkpoint.hpp"
#include "lightloop/distributed/communicator.hpp"
#include "lightloop/distributed/options.hpp"
#include "lightloop/feedback/direct.hpp"
#include "lightloop/io/checkpoint.hpp"
#include "lightloop/io/crc32.hpp"
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
        check_same_network(net);
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
    /// if the batch failed anywhere or a rank refused it: its own malformed
    /// (shape_error), or not rank 0's (rows: shape_error, targets:
    /// data_error).
    ///
    /// Synchronous: returns the batch's figures, the same on every rank.
    /// Pipelined: a rank below the last forwards this batch, then takes the
    /// error of the previous one and applies its update (staleness one); it
    /// returns the previous batch's figures, and finish() applies the last
    /// batch's update and returns its figures. Every rank reports a batch's
    /// failure in the same call: the next step, which then drops its own
    /// batch on every rank (the message says so), or finish().
    template <class Optimizer>
    step_totals step(Network& net, Optimizer& opt, const matrix<T>& x, const matrix<T>& y) {
        unfinished_ = pipelined(); // on every rank, the last too
        if (deferred_.pending) {
            // Pipelined, the last rank: the previous batch failed, and the
            // ranks below learn it now and drop this call's batch, which
            // they have sent on: it is taken and dropped here too.
            drop_batch(net);
            throw_deferred(net, dropped);
        }
        if (!pipelined() || is_last()) {
            const bool forwards = receive_batch(net, x, y, 0, false);
            const matrix<T>& input = comm_->rank() == 0 ? x : received_[0];
            const matrix<T>& out = forwards ? net.forward_training(input, mine_)
                                            : net.template layer<depth - 1>().output();
            send_batch(0, forwards ? &out : nullptr, false);
            return update(net, opt, input, y, out, 0, "");
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
        const std::size_t slot = k % 2;
        wait_sent(slot); // the slot's note and the replica's output go out of date now
        // Rank 0 keeps x in the slot until its update.
        const bool forwards = receive_batch(net, x, y, slot, true);
        pass_rate_[slot] = static_cast<double>(opt.learning_rate()); // what the last rank has
        const matrix<T>* out = forwards ? &now.forward_training(received_[slot], mine_) : nullptr;
        send_batch(slot, out, true);
        if (k == 0) {
            return {};
        }
        return update_previous(net, opt, k - 1, y, dropped);
    }

    /// Pipelined: applies the last batch's update on the ranks below the
    /// last and returns its figures, so that `net` holds every update (the
    /// end of an epoch, before evaluation). Synchronous: nothing.
    template <class Optimizer>
    step_totals finish(Network& net, Optimizer& opt) {
        unfinished_ = false;
        if (deferred_.pending) {
            throw_deferred(net, ""); // the last rank: its last batch failed
        }
        if (!pipelined() || is_last() || passes_ == 0) {
            return {};
        }
        const std::size_t last = passes_ - 1;
        const matrix<T>& y = received_[last % 2]; // unused below the last rank
        const step_totals totals = update_previous(net, opt, last, y, "");
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
        agree_on_data(net, data, batch);
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
    /// Every rank writes its part of the checkpoint, in step with the
    /// others (distributed/checkpoint.hpp): rank_checkpoint_path(path, r,
    /// p), holding its layers, its optimizer state (its layers' slots) and
    /// its device slice's state (calibration, noise counter, drift), with a
    /// signature that names the part. After finish_epoch: no update pending.
    template <class Optimizer, class Record>
    void save_checkpoint(Network& net, const Optimizer& opt, const std::filesystem::path& path,
                         std::uint64_t epoch, std::uint64_t seed, std::uint64_t batch,
                         const Record& record) {
        const auto file = rank_checkpoint_path(path, comm_->rank(), comm_->size());
        detail::write_in_step(*comm_, who, std::span(&file, 1), [&] {
            detail::write_part_temporary(file, net, opt, epoch, seed, batch, record, part_of(net));
        });
    }
    /// Every rank resumes from its part, in step: every rank must see its
    /// file (or none), accept it, and find the same epoch, step count and
    /// data order in it as rank 0 (distributed/checkpoint.hpp), after
    /// finishing a write that stopped between the ranks' renames (the job
    /// killed there) from the temporaries it left. A whole
    /// checkpoint at `path`, or parts written by another number of ranks,
    /// are refused.
    template <class Optimizer, class Record, class Check>
    std::optional<checkpoint_info> resume(Network& net, Optimizer& opt,
                                          const std::filesystem::path& path, Record& record,
                                          const Check& check) {
        const auto file = rank_checkpoint_path(path, comm_->rank(), comm_->size());
        auto resumed = detail::resume_in_step(
          *comm_, who, file, net, opt, record, check, part_of(net),
          [&](auto& staged, const auto& stage) {
              detail::finish_interrupted_write(*comm_, who,
                                               detail::resumed_file{file, staged, stage, true});
          },
          [](const auto& staged) {
              const std::uint64_t progress[4] = {staged.info.epoch, staged.info.steps,
                                                 staged.info.fit_seed, staged.info.batch};
              return lightloop::detail::crc32_of(std::as_bytes(std::span(progress)));
          },
          "resumed from a part of another epoch or step than rank 0's (a part that was not "
          "replaced with the others', or another run's); every rank's part must come from the "
          "same checkpoint");
        if (!resumed) {
            detail::refuse_other_layout(*comm_, who, path, true);
        }
        return resumed;
    }
    /// After the last epoch: gather_network and gather_state, so that
    /// fit_with hands back the whole trained network and its optimizer on
    /// every rank.
    template <class Optimizer>
    void finish_fit(Network& net, Optimizer& opt) {
        gather_network(net);
        gather_state(net, opt);
    }
    /// Every layer's optimizer state (sgd's momentum, adam's moments) from
    /// the rank that trains it, so that every rank's optimizer holds all of
    /// it: to go on training in one process as from a one-process run, or
    /// to save it. Every rank calls it, between steps. Training goes on
    /// from it unchanged (each rank steps its own layers' slots, which it
    /// already held). An optimizer without state() and adopt_state(slot,
    /// values) (sgd, adam and a choice of them have both) keeps each rank's
    /// own layers' state.
    template <class Optimizer>
    void gather_state(Network& net, Optimizer& opt) {
        if constexpr (lightloop::detail::adopts_state<Optimizer>) {
            if (unfinished_) {
                throw config_error(who + std::string(": gather_state between pipelined steps "
                                                     "would miss the pending update; call "
                                                     "finish(net, opt) first"));
            }
            std::size_t slot = 0; // the network's numbering: every parameter tensor, in order
            net.visit_layers([&](auto& l, std::size_t i) {
                const std::size_t owner = owner_of(i);
                // Three parameters: a mixed layer's bf16 copy is left current.
                l.visit_parameters([&](std::span<T>, std::span<const T>, auto...) {
                    const bool mine = comm_->rank() == owner;
                    const auto& held = opt.state();
                    std::uint64_t count = mine && slot < held.size() ? held[slot].size() : 0;
                    comm_->broadcast(std::span(&count, 1), owner);
                    if (count > 0) {
                        std::vector<T> values =
                          mine ? held[slot] : std::vector<T>(static_cast<std::size_t>(count));
                        comm_->broadcast(std::span<T>(values), owner);
                        if (!mine) {
                            opt.adopt_state(slot, std::move(values));
                        }
                    }
                    ++slot;
                });
            });
        }
    }
    /// Every rank's layers (parameters and buffers: batch_norm's running
    /// estimates) from the rank that trains them, so that every rank holds
    /// the whole trained network: to evaluate, save or export it in one
    /// process. Every rank calls it, between steps (pipelined: after
    /// finish()). Training goes on from it unchanged (each rank trains its
    /// own layers, which it already held). gather_state does the same for the
    /// optimizer.
    void gather_network(Network& net) {
        if (unfinished_) {
            throw config_error(who + std::string(": gather_network between pipelined steps would "
                                                 "miss the pending update; call finish(net, "
                                                 "opt) first"));
        }
        net.visit_layers([&](auto& l, std::size_t i) {
            const std::size_t owner = owner_of(i);
            // Written through the visitor that marks a mixed-precision
            // layer's bf16 copy out of date (converted again before its next
            // product).
            l.visit_parameters(
              [&](std::span<T> values, std::span<const T>) { comm_->broadcast(values, owner); });
            if constexpr (requires { l.visit_buffers([](std::span<T>) {}); }) {
                l.visit_buffers([&](std::span<T> values) { comm_->broadcast(values, owner); });
            }
        });
    }
    /// This rank's device's figures (the network's own device is not used).
    void record_device(epoch_record& record) const {
        lightloop::detail::record_statistics(device_, record);
    }
    /// A callback's failure on some ranks (fit_with keeps it until the ranks
    /// meet: before training, and at each epoch's end), thrown on every
    /// rank: the failing rank's own error.
    void agree_on_failure(const std::exception_ptr& mine, const char* what, const char* when) {
        throw_together(*comm_, mine, who, what, when);
    }
    bool agree_to_stop(bool stop) { return comm_->any(stop); }
    /// fit_with's checks of its own inputs (options, data, widths), run on
    /// every rank and agreed: a rank whose options or data failed them alone
    /// would leave the others waiting in the first collective.
    template <class F>
    void check_together(F&& checks) {
        check_inputs_together(*comm_, who, std::forward<F>(checks));
    }
    /// Every rank's options rank 0's (a rank refusing its own alone would
    /// leave the others waiting).
    void check_options(const fit_options& options) { agree_on_options(*comm_, options, who); }
    /// Every rank can keep its checkpoint file at `path`, agreed before any
    /// training (distributed/checkpoint.hpp).
    void check_checkpoint_path(const std::filesystem::path& path) {
        detail::check_checkpoint_path_in_step(*comm_, who, path);
    }
    /// After each epoch's last update, before fit_with reads the network
    /// (the alignment probe, which runs backprop through every layer, and
    /// the epoch-end callbacks, which may save or export it): the whole
    /// network on every rank (gather_network). Each rank's own copy of the
    /// other ranks' layers is never trained: a callback that saved it saved
    /// those layers as they were built. The probe then measures what one
    /// process would, on the same weights (it changes no weight, and no
    /// layer's update reads what it overwrites). Training goes on from it
    /// unchanged.
    void before_epoch_end(Network& net) { gather_network(net); }

private:
    /// The rank that trains layer i.
    std::size_t owner_of(std::size_t i) const noexcept {
        std::size_t owner = 0;
        while (!ranges_[owner].contains(i)) {
            ++owner;
        }
        return owner;
    }
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
                device_configured_ = true;
            }
        } else if (fb.projection_size() > 0) { // else nothing to project (no hidden layer)
            device_.configure(net.output_size(), fb.projection_size(), fb.device_seed());
            device_configured_ = true;
        }
    }

    /// What this rank's part of a checkpoint holds: its layers and its
    /// device slice (when configured: a rank with no hidden trained layer
    /// has none), under the network's signature and a line naming the part.
    auto part_of(Network& net) {
        struct owned {
            layer_range range;
            bool operator()(std::size_t i) const noexcept { return range.contains(i); }
        };
        return lightloop::detail::checkpoint_part<device_type, owned>{
          architecture_signature(net) + "layer-parallel part: rank " +
            std::to_string(comm_->rank()) + " of " + std::to_string(comm_->size()) + ", layers " +
            std::to_string(mine_.first) + " to " + std::to_string(mine_.last - 1) + "\n",
          device_configured_ ? &device_ : nullptr, owned{mine_}};
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

    /// Every rank must build the same network (architecture and seed): the
    /// activations of one rank's block are the input of the next one's, and
    /// each rank's slice of the feedback is the seed's. The CRC-32 of each
    /// rank's architecture signature is agreed on.
    void check_same_network(const Network& net) {
        const std::string signature = architecture_signature(net);
        refuse_unlike_first(*comm_,
                            lightloop::detail::crc32_of(std::as_bytes(std::span(signature))), who,
                            "built a network other than rank 0's (its architecture or seed "
                            "differs); every rank must build the same network with the same seed");
    }

    // --- every rank passes the same batch -------------------------------------
    //
    // Rank 0 reads a batch's inputs and the last rank its targets, so ranks
    // that pass different batches (a sampler seeded by rank, a shard each)
    // would train rank 0's inputs against the last rank's targets, and
    // batches of different sizes would meet in MPI as messages of the wrong
    // size. A note goes up with each batch's activations: rank 0's rows and
    // its targets' CRC-32, and the first rank that refuses the batch (its
    // own shapes malformed, or its rows or targets not rank 0's). A refused
    // batch goes no further; the last rank broadcasts the refusal with the
    // figures, and every rank throws it, nothing updated.

    // unusable: an evaluation of no data, or in batches of 0 rows
    enum class refusal : int { none = 0, malformed = 1, rows = 2, targets = 3, unusable = 4 };
    // rank 0's rows, its targets' CRC-32, the refusing rank + 1 (0: none),
    // the refusal, that rank's rows
    using batch_note = std::array<double, 5>;

    static double checksum(const matrix<T>& values) {
        return static_cast<double>(lightloop::detail::crc32_of(
          std::as_bytes(std::span<const T>(values.data(), values.size()))));
    }

    /// This rank's verdict on its batch, added to the note.
    void note_batch(const Network& net, const matrix<T>& x, const matrix<T>& y, batch_note& note,
                    std::size_t slot) {
        refusal why = refusal::none;
        own_failure_[slot].clear();
        try {
            net.check_batch(x, y);
        } catch (const lightloop::error& e) {
            own_failure_[slot] = e.what();
            why = refusal::malformed;
        }
        const auto rows = static_cast<double>(y.shape(0));
        const double targets = checksum(y);
        if (comm_->rank() == 0) {
            note = {rows, targets, 0.0, 0.0, 0.0};
        } else if (why == refusal::none) {
            why = rows != note[0]      ? refusal::rows
                  : targets != note[1] ? refusal::targets
                                       : refusal::none;
        }
        if (why != refusal::none && note[2] == 0.0) {
            note[2] = static_cast<double>(comm_->rank() + 1);
            note[3] = static_cast<double>(static_cast<int>(why));
            note[4] = rows;
        }
    }

    /// The note of the batch in `slot` and, if no rank below refused it, its
    /// input: rank 0's own (copied into the slot if `keep`: a pipelined
    /// pass keeps it until its update), or the activations of the rank
    /// below. Returns whether this rank forwards the batch.
    bool receive_batch(const Network& net, const matrix<T>& x, const matrix<T>& y, std::size_t slot,
                       bool keep) {
        batch_note& note = notes_[slot];
        const std::size_t rank = comm_->rank();
        if (rank > 0) {
            comm_->receive(std::span<double>(note), rank - 1, note_tag);
        }
        const bool sent_below = rank > 0 && note[2] == 0.0;
        note_batch(net, x, y, note, slot);
        if (sent_below) {
            receive_activations(net, slot);
        } else if (rank == 0 && keep && note[2] == 0.0) {
            matrix<T>& into = received_[slot];
            ensure_shape(into, x.shape(0), x.shape(1));
            std::copy(x.begin(), x.end(), into.begin());
        }
        return note[2] == 0.0;
    }

    /// The activations the rank below sent with the note in `slot`, sized
    /// by rank 0's rows (whatever this rank's batch is).
    void receive_activations(const Network& net, std::size_t slot) {
        matrix<T>& into = received_[slot];
        ensure_shape(into, static_cast<std::size_t>(notes_[slot][0]), net.widths()[mine_.first]);
        comm_->receive(std::span<T>(into.data(), into.size()), comm_->rank() - 1, activation_tag);
    }

    /// The note of the batch in `slot` and, unless the batch was refused,
    /// this rank's output `out`, to the rank above (`async`: until
    /// wait_sent(slot)).
    void send_batch(std::size_t slot, const matrix<T>* out, bool async) {
        if (is_last()) {
            return;
        }
        const std::size_t above = comm_->rank() + 1;
        const std::span<const double> note(notes_[slot]);
        if (async) {
            noted_[slot] = comm_->send_async(note, above, note_tag);
            if (out != nullptr) {
                sent_[slot] = comm_->send_async(std::span<const T>(out->data(), out->size()), above,
                                                activation_tag);
            }
        } else {
            comm_->send(note, above, note_tag);
            if (out != nullptr) {
                send_output(*out);
            }
        }
    }

    /// Before an evaluation: every rank's data well formed, not empty and
    /// rank 0's (its size and targets), and its batch positive, agreed by
    /// every rank.
    template <class N>
    void agree_on_data(const N& net, const labelled_data<T>& data, std::size_t batch) {
        std::string mine;
        refusal why = refusal::none;
        try {
            check_rows(data, "lightloop::distributed::dfa_layer_parallel: the evaluated data");
            if (data.size() == 0 || batch == 0) {
                why = refusal::unusable;
            } else {
                net.check_batch(data.inputs, data.targets);
            }
        } catch (const lightloop::error& e) {
            mine = e.what();
            why = refusal::malformed;
        }
        const auto size = static_cast<double>(data.size());
        const double targets = checksum(data.targets);
        // Rank 0's size, its targets' CRC-32, whether its data is well formed.
        double first[3] = {size, targets, why == refusal::none ? 1.0 : 0.0};
        comm_->broadcast(std::span<double>(first), 0);
        if (why == refusal::none && first[2] != 0.0) {
            why = size != first[0]      ? refusal::rows
                  : targets != first[1] ? refusal::targets
                                        : refusal::none;
        }
        // Each rank's refusal and size.
        std::vector<double> verdicts(2 * comm_->size(), 0.0);
        verdicts[2 * comm_->rank()] = static_cast<double>(static_cast<int>(why));
        verdicts[2 * comm_->rank() + 1] = size;
        comm_->sum_identical(std::span<double>(verdicts));
        for (std::size_t r = 0; r < comm_->size(); ++r) {
            const auto kind = static_cast<refusal>(static_cast<int>(verdicts[2 * r]));
            if (kind == refusal::none) {
                continue;
            }
            const std::string rank = "rank " + std::to_string(r);
            std::string what = "lightloop::distributed::dfa_layer_parallel: ";
            if (kind == refusal::malformed) {
                what += rank + "'s evaluated data is malformed";
            } else if (kind == refusal::unusable) {
                throw config_error(what + "an evaluation needs data and a positive batch size; " +
                                   rank + " has " +
                                   std::to_string(static_cast<std::size_t>(verdicts[2 * r + 1])) +
                                   " samples, or a batch of 0; nothing was evaluated");
            } else if (kind == refusal::rows) {
                what += rank + " evaluates " +
                        std::to_string(static_cast<std::size_t>(verdicts[2 * r + 1])) +
                        " samples and rank 0 " + std::to_string(static_cast<std::size_t>(first[0]));
            } else {
                what += rank + "'s evaluated targets are not rank 0's";
            }
            what += "; every rank must evaluate the same data; nothing was evaluated";
            if (!mine.empty()) {
                what += " (rank " + std::to_string(comm_->rank()) + ": " + mine + ")";
            }
            if (kind == refusal::targets) {
                throw data_error(what);
            }
            throw shape_error(what);
        }
    }

    /// Every rank throws the refusal of a batch the last rank broadcast.
    [[noreturn]] void refuse(const Network& net, const double* figures, const std::string& mine,
                             const char* aside) const {
        const auto why = static_cast<refusal>(static_cast<int>(figures[3]));
        const std::string rank = std::to_string(static_cast<std::size_t>(figures[4]));
        const std::string step = std::to_string(net.steps());
        std::string what = "lightloop::distributed::dfa_layer_parallel: ";
        if (why == refusal::malformed) {
            what += "rank " + rank + " refused its batch at step " + step;
        } else if (why == refusal::rows) {
            what += "rank " + rank + " passed a batch of " +
                    std::to_string(static_cast<std::size_t>(figures[5])) +
                    " rows and rank 0 one of " +
                    std::to_string(static_cast<std::size_t>(figures[6])) + " at step " + step;
        } else {
            what += "rank " + rank + "'s targets are not rank 0's at step " + step;
        }
        what += "; every rank must pass the same batch (rank 0 reads its inputs, the last rank "
                "its targets); no rank updated its layers";
        what += aside;
        if (!mine.empty()) {
            what += " (rank " + std::to_string(comm_->rank()) + ": " + mine + ")";
        }
        if (why == refusal::targets) {
            throw data_error(what);
        }
        throw shape_error(what);
    }

    /// The e of a pass (and the last rank's figures), this rank's slice of
    /// its projection into the deltas of `pass`, the gradients, an agreement
    /// that no rank failed, and the update.
    template <class Optimizer>
    step_totals update(Network& pass, Optimizer& opt, const matrix<T>& input, const matrix<T>& y,
                       const matrix<T>& out, std::size_t slot, const char* aside) {
        const std::size_t n = input.shape(0);
        std::string failure;
        ensure_shape(error_, n, pass.output_size());
        // loss x n, correct, failed (1: the loss, 2: the batch was refused),
        // and a refusal's kind, rank, that rank's rows and rank 0's
        double figures[7] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
        const batch_note& note = notes_[slot];
        if (is_last() && note[2] != 0.0) {
            figures[2] = 2.0;
            figures[3] = note[3];
            figures[4] = note[2] - 1.0;
            figures[5] = note[4];
            figures[6] = note[0];
        } else if (is_last()) {
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
            return failed(pass, figures[2] == 2.0 ? "" : "the loss", failure, figures, aside,
                          own_failure_[slot]);
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
        bool gradient_failed = false;
        try {
            pass.compute_layer_gradients(input, mine_);
        } catch (const lightloop::error& err) {
            failure = err.what();
            gradient_failed = true;
        }
        // With the ranks' views of the optimizer (optimizer_agreement: a first
        // update, another object, the learning rates): every rank is here for
        // the same batch in either mode, so the optimizer is agreed on by
        // every rank together, before anything is updated.
        // Pipelined, a rank below the last updates the batch a call after the
        // last rank did, under that call's rate: the rates compared are the
        // ones each rank had when the batch went through it.
        const double rate =
          pipelined() && !is_last() ? pass_rate_[slot] : static_cast<double>(opt.learning_rate());
        double votes[1 + optimizer_agreement::vote_size];
        votes[0] = gradient_failed ? 1.0 : 0.0;
        optimizer_agreed_.vote(opt, rate, votes + 1);
        comm_->largest(std::span<double>(votes));
        if (votes[0] > 0.0) {
            return failed(pass, "a gradient", failure, figures, aside);
        }
        if (optimizer_agreement::disagree(votes + 1)) {
            try {
                optimizer_agreed_.agree(*comm_, opt, rate, who);
            } catch (const config_error& refused) {
                return failed(pass, "", refused.what(), figures, aside, {}, "", true);
            }
        }
        try {
            // All or nothing on every rank: the proof and any overflow agreed.
            pass.apply_gradients(opt, mine_, [&](bool mine) { return !comm_->any(!mine); });
        } catch (const mpi_error&) {
            throw;
        } catch (const divergence_error& err) {
            return failed(pass, "the update", err.what(), figures, aside, {}, each_rank_says);
        }
        return {figures[0], static_cast<std::size_t>(figures[1]), n};
    }

    /// Pipelined, below the last rank: the update of pass k on its replica,
    /// whose weights first become the latest (the other replica's). If
    /// every rank agrees that the batch failed, the pipeline starts again:
    /// both replicas hold the latest weights (the copy), and a batch
    /// forwarded since is dropped (`aside` says so).
    template <class Optimizer>
    step_totals update_previous(Network& net, Optimizer& opt, std::size_t k, const matrix<T>& y,
                                const char* aside) {
        Network& then = replica(net, k);
        copy_owned(replica(net, k + 1), then); // its activations stay those of pass k
        then.set_steps(first_step_ + k);       // one more once applied
        try {
            return update(then, opt, received_[k % 2], y, then.template layer<depth - 1>().output(),
                          k % 2, aside);
        } catch (const mpi_error&) {
            throw; // the ranks are no longer in step
        } catch (const lightloop::error&) {
            net.set_steps(first_step_ + k);
            wait_sent(0); // the rank above has taken what was sent
            wait_sent(1);
            passes_ = 0;
            throw;
        }
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

    void wait_sent(std::size_t slot) {
        comm_->wait(noted_[slot]);
        comm_->wait(sent_[slot]);
    }
    void send_output(const matrix<T>& out) {
        if (!is_last()) {
            comm_->send(std::span<const T>(out.data(), out.size()), comm_->rank() + 1,
                        activation_tag);
        }
    }

    // A batch every rank agreed failed: its loss, a gradient or the update
    // (what), or a refusal (figures[2] == 2); failure: the failing rank's
    // message, mine: this rank's own verdict on its batch; outcome: what
    // became of the layers.
    struct failure_note {
        bool pending = false;
        const char* what = "";
        std::string failure;
        std::string mine;
        const char* outcome = "";
        std::array<double, 7> figures{};
        bool refused_optimizer = false; // `failure` is the agreement's config_error
    };
    static constexpr const char* each_rank_says =
      "every rank stopped (each rank's message says what its own update changed)";

    /// Throws a batch's failure on every rank, nothing updated; pipelined,
    /// the last rank keeps it for its next call (or finish()), where the
    /// ranks below learn it, and returns nothing.
    step_totals failed(const Network& net, const char* what, std::string failure,
                       const double* figures, const char* aside, std::string mine = {},
                       const char* outcome = "no rank updated its layers",
                       bool refused_optimizer = false) {
        failure_note note{true,    what, std::move(failure), std::move(mine),
                          outcome, {},   refused_optimizer};
        std::copy_n(figures, note.figures.size(), note.figures.begin());
        if (pipelined() && is_last()) {
            deferred_ = std::move(note);
            return {};
        }
        throw_failure(net, note, aside);
    }

    void throw_deferred(const Network& net, const char* aside) {
        failure_note note = std::move(deferred_);
        deferred_ = {};
        throw_failure(net, note, aside);
    }

    [[noreturn]] void throw_failure(const Network& net, const failure_note& note,
                                    const char* aside) const {
        if (note.figures[2] == 2.0) {
            refuse(net, note.figures.data(), note.mine, aside);
        }
        if (note.refused_optimizer) {
            throw config_error(note.failure + aside);
        }
        throw divergence_error(
          "lightloop::distributed::dfa_layer_parallel: " + std::string(note.what) +
          " failed at step " + std::to_string(net.steps()) + "; " + note.outcome + aside +
          (note.failure.empty()
             ? std::string()
             : " (rank " + std::to_string(comm_->rank()) + ": " + note.failure + ")"));
    }

    /// Pipelined, the last rank: the batch the rank below sent, taken and
    /// dropped.
    void drop_batch(const Network& net) {
        comm_->receive(std::span<double>(notes_[0]), comm_->rank() - 1, note_tag);
        if (notes_[0][2] == 0.0) {
            receive_activations(net, 0);
        }
    }

    // Pipelined: a failure is reported with the next call, whose batch is
    // dropped on every rank.
    static constexpr const char* dropped =
      "; pipelined, it is reported with the next batch, which was dropped: pass that batch again";

    static constexpr bool slices_device =
      requires(device_type d, std::size_t k, std::uint64_t seed) {
        d.configure_slice(k, k, seed, k, k);
    };
    static constexpr const char* who = "lightloop::distributed::dfa_layer_parallel";
    static constexpr int activation_tag = 17;
    static constexpr int note_tag = 18;
    communicator* comm_;
    layer_parallel_mode mode_;
    std::vector<Network> twin_;    // pipelined, below the last rank: the second replica
    std::size_t passes_ = 0;       // pipelined: batches forwarded since the last finish()
    std::uint64_t first_step_ = 0; // pipelined: the network's step count at the first of them
    failure_note deferred_;        // pipelined, the last rank: a failure the others learn next
    bool unfinished_ = false;      // pipelined: steps since the last finish(), on every rank
    optimizer_agreement optimizer_agreed_;
    std::vector<std::span<T>> spans_;
    MPI_Request sent_[2] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL};
    MPI_Request noted_[2] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL};
    batch_note notes_[2] = {};   // a pass's note (two in flight when pipelined)
    double pass_rate_[2] = {};   // pipelined: the learning rate when a pass went through
    std::string own_failure_[2]; // why this rank's own check refused a pass's batch
    std::vector<layer_range> ranges_;
    layer_range mine_{};
    device_type device_{};
    bool device_configured_ = false; // a rank with no hidden trained layer has no slice
    std::size_t slice_first_ = 0;
    std::size_t slice_count_ = 0;
    matrix<T> received_[2]; // a pass's input (two in flight when pipelined)
    matrix<T> error_;       // what is projected: e, sign(e) or the target
    matrix<T> projected_;
    matrix<T> whole_; // a whole projection, for a device without slices
};

} // namespace lightloop::distributed
