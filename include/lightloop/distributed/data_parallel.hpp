#pragma once
// Data-parallel training over MPI: every rank holds the whole network, trains
// on its shard of every global batch (rows rank, rank + p, ... of one seeded
// shuffle), and the ranks sum their gradients before the same optimizer
// applies them on every rank.
//
//   lightloop::distributed::environment mpi(argc, argv);
//   lightloop::distributed::communicator comm;
//   auto net = make_network<dfa<dense_gaussian>, softmax_cross_entropy>(...);
//   lightloop::distributed::data_parallel<float> parallel(comm);
//   fit_with(parallel, net, opt, train, test, {.epochs = 3, .batch = 128});
//
// Weights stay bitwise identical on every rank: they start so (a network's
// first step checks that every rank holds rank 0's, seed and weights), the
// sums give every rank the same bits (communicator::sum_identical), and
// everything after them is the same arithmetic on the same values. A failure
// on one rank (a non-finite loss on its shard) is agreed on before any
// gradient moves, so every rank throws and none waits forever.
//
// The update is sharded where the optimizer's update is element-wise (sgd,
// adam: lightloop::detail::updates_blocks): each rank finishes the sum of
// its own block of every gradient only (communicator::sum_owned), updates
// that block of the weights, and the weights' blocks travel instead of the
// sums (share_owned): the same bits as the whole update on every rank, for
// 1/p of the update's work and less memory moved. The optimizer's state is
// then current only in each rank's own blocks; the ranks hand those round
// too (gather_state, which fit_with calls before each checkpoint and after
// the last epoch), so that rank 0 writes the one-process format and a run
// resumes on any number of ranks. Code that runs its own loop calls
// gather_state before it saves the optimizer, or steps it by other means.

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "lightloop/core/error.hpp"
#include "lightloop/core/random.hpp"
#include "lightloop/core/tensor.hpp"
#include "lightloop/data/dataset.hpp"
#include "lightloop/distributed/checkpoint.hpp"
#include "lightloop/distributed/communicator.hpp"
#include "lightloop/distributed/options.hpp"
#include "lightloop/feedback/choice.hpp"
#include "lightloop/io/checkpoint.hpp"
#include "lightloop/io/crc32.hpp"
#include "lightloop/network.hpp"
#include "lightloop/train/fit.hpp"
#include "lightloop/train/metrics.hpp"

namespace lightloop::distributed {

namespace detail {
/// A layer with running estimates (batch_norm).
template <class L, class T>
concept has_buffers = requires(L& l) {
    l.visit_buffers([](std::span<T>) {});
};
} // namespace detail

/// Gives rank r of a feedback method's device its own camera-noise stream
/// (an optical device; dense devices have no noise): the medium stays the
/// one the network's seed drew, identical on every rank.
template <class Network>
void give_rank_noise_stream(Network& net, std::size_t rank) {
    visit_method(net.feedback(), [&](auto& fb) {
        if constexpr (requires { fb.device().set_noise_stream(std::uint64_t{}); }) {
            fb.device().set_noise_stream(rank);
        }
    });
}

/// When data_parallel starts each layer's gradient sum: after the last
/// gradient (`off`, the default), or as soon as that layer's gradient exists
/// (`on`), so that it travels while the next layers' are computed. Through
/// shared memory (every rank on one node) a sum is the busy cores' own
/// copying, which nothing can overlap, and `on` changes nothing. On the ring
/// of messages, `on` pays only where the interconnect moves a message without
/// the CPU's help: lightloop's ranks call MPI between layers, not inside a
/// product. On one node, ring forced, it cost 11 % a step (README,
/// "Distributed training"); `distributed_throughput`'s data-overlap row
/// measures it on a cluster.
enum class sum_overlap { off, on };

/// Whether data_parallel shards the update (each rank updates its block of
/// every parameter tensor, then the blocks travel) where the optimizer
/// allows it (`sharded`, the default), or every rank updates everything
/// (`whole`). Both give the same bits. Overlapped sums (sum_overlap::on,
/// taken on the ring) update whole.
enum class update_split { sharded, whole };

/// fit_with's strategy for data-parallel training, and a step for code that
/// runs its own loop. T is the network's value_type.
template <class T>
class data_parallel {
public:
    explicit data_parallel(communicator& comm, sum_overlap overlap = sum_overlap::off,
                           update_split split = update_split::sharded)
      : comm_(&comm)
      , overlap_(overlap == sum_overlap::on && !comm.sums_in_shared_memory())
      , shard_(split == update_split::sharded && !overlap_ && comm.size() > 1) {}

    communicator& comm() noexcept { return *comm_; }
    /// Whether steps start each layer's sum as soon as its gradient exists.
    bool overlaps_sums() const noexcept { return overlap_; }
    /// Whether steps shard the update with an optimizer that allows it.
    template <class Optimizer>
    bool shards_update() const noexcept {
        return shard_ && lightloop::detail::updates_blocks<Optimizer>;
    }

    /// One data-parallel step on this rank's shard (x, y): rows rank,
    /// rank + p, ... of the global batch (fill_shard's), which is how the
    /// step numbers its samples for per-sample draws (dropout's masks: each
    /// sample gets the mask it gets in one process). Returns the whole
    /// batch's figures, the same on every rank. Throws on every rank if any
    /// rank failed (naming those ranks), with no weight changed anywhere:
    /// shape_error if a rank's shard was malformed, divergence_error if its
    /// loss or a gradient was not finite.
    /// Overlapped or not, the sums are the same and so are the weights, bit
    /// for bit.
    template <class Network, class Optimizer>
    step_totals step(Network& net, Optimizer& opt, const matrix<T>& x, const matrix<T>& y) {
        // A network is checked before its first step here, and again when it
        // is another one in the same place (a loop that builds each network
        // where the last was) or was stepped or loaded elsewhere meanwhile:
        // its step count is not the one this object left. The optimizer is
        // agreed on likewise (optimizer_agreement), and the ranks' learning
        // rates compared. What each rank sees is a view of its own: the ranks
        // first vote (one reduction of four numbers), so that every rank runs
        // the checks together (one alone would wait in them forever).
        double votes[1 + optimizer_agreement::vote_size];
        votes[0] =
          checked_ != static_cast<const void*>(&net) || checked_steps_ != net.steps() ? 1.0 : 0.0;
        const auto rate = static_cast<double>(opt.learning_rate());
        optimizer_agreed_.vote(opt, rate, votes + 1);
        comm_->largest(std::span<double>(votes));
        if (votes[0] > 0.0) {
            check_same_network(net);
        }
        if (optimizer_agreement::disagree(votes + 1)) {
            optimizer_agreed_.agree(*comm_, opt, rate, who);
        }
        constexpr std::size_t depth = Network::depth;
        const std::size_t p = comm_->size();
        const std::size_t rank = comm_->rank();
        // What the ranks agree on before any weight changes: the batch's
        // loss sum, correct count and rows, each layer's gradient bound
        // weighted by rows, and which ranks failed.
        agreed_.assign(fixed + depth + p, 0.0);
        std::string failure;
        const auto rows = static_cast<double>(x.shape(0));
        // Overlapped, a sum's weights are fixed when it starts: the rows first.
        double total_rows[1] = {rows};
        if (overlap_) {
            comm_->sum_identical(std::span<double>(total_rows));
        }
        std::array<bool, depth> started{};
        in_flight_.clear();
        // The shard's rows are samples rank, rank + p, ... for the step.
        struct numbering_scope {
            Network& net;
            sample_numbering whole;
            ~numbering_scope() { net.number_samples(whole); }
        } numbering{net, net.sample_numbers()};
        net.number_samples({rank, p});
        try {
            double loss = 0.0;
            if (overlap_) {
                loss = static_cast<double>(net.compute_signals(x, y, net.feedback()));
                net.compute_layer_gradients(
                  x, {}, [&](std::size_t i) { start_sums(net, i, rows, total_rows[0], started); });
            } else {
                loss = static_cast<double>(net.compute_gradients(x, y));
            }
            agreed_[0] = loss * rows;
            agreed_[1] = static_cast<double>(
              count_correct(std::as_const(net).template layer<depth - 1>().output(), y));
            agreed_[2] = rows;
            for (std::size_t i = 0; i < depth; ++i) {
                if (net.trains_layer(i)) {
                    agreed_[fixed + i] = net.gradient_bound(i) * rows;
                }
            }
        } catch (const mpi_error&) {
            throw; // the ranks are no longer in step: nothing to agree on
        } catch (const shape_error& e) {
            failure = e.what();
            agreed_[fixed + depth + rank] = malformed_shard;
        } catch (const lightloop::error& e) {
            failure = e.what();
            agreed_[fixed + depth + rank] = failed_shard;
        }
        if (overlap_) {
            // Every rank starts the same sums in the same order, failed or not.
            for (std::size_t i = 0; i < depth; ++i) {
                if (net.trains_layer(i) && !started[i]) {
                    start_sums(net, i, rows, total_rows[0], started);
                }
            }
        }
        comm_->sum_identical(std::span<double>(agreed_));
        for (auto& sum : in_flight_) {
            sum.finish();
        }
        std::string failed_ranks;
        bool malformed = false;
        for (std::size_t r = 0; r < p; ++r) {
            if (agreed_[fixed + depth + r] != 0.0) {
                failed_ranks += (failed_ranks.empty() ? "" : ", ") + std::to_string(r);
                malformed = malformed || agreed_[fixed + depth + r] == malformed_shard;
            }
        }
        if (!failed_ranks.empty()) {
            const std::string what =
              "lightloop::distributed::data_parallel: step " + std::to_string(net.steps()) +
              (malformed ? " refused a malformed shard on rank(s) " : " failed on rank(s) ") +
              failed_ranks + "; no rank updated its weights" +
              (failure.empty() ? std::string()
                               : " (rank " + std::to_string(rank) + ": " + failure + ")");
            if (malformed) {
                throw shape_error(what);
            }
            throw divergence_error(what);
        }
        const double total = agreed_[2];
        const bool sharded = shards_update<Optimizer>();
        if (!overlap_) {
            net.visit_gradients([&](std::size_t, std::span<T> gradient) {
                const T scale = weigh_shard(gradient, rows, total);
                if (sharded) {
                    comm_->sum_owned(gradient, scale);
                } else {
                    comm_->sum_identical(gradient, scale);
                }
            });
        }
        for (std::size_t i = 0; i < depth; ++i) {
            if (net.trains_layer(i)) {
                // |sum_r (n_r / n) g_r| <= sum_r (n_r / n) |g_r|
                net.set_gradient_bound(i, agreed_[fixed + i] / total);
            }
        }
        if constexpr (lightloop::detail::updates_blocks<Optimizer>) {
            if (sharded) {
                shards parts{comm_};
                net.apply_gradient_blocks(opt, parts);
                state_sharded_ = true;
            } else {
                net.apply_gradients(opt);
            }
        } else {
            net.apply_gradients(opt);
        }
        checked_steps_ = net.steps();
        average_buffers(net, rows / total);
        return {agreed_[0], static_cast<std::size_t>(agreed_[1]), static_cast<std::size_t>(total)};
    }

    // --- fit_with's strategy -------------------------------------------------

    /// fit_with's checks of its own inputs (options, data, widths), run on
    /// every rank and agreed: a rank whose options or data failed them alone
    /// would leave the others waiting in the first collective.
    template <class F>
    void check_together(F&& checks) {
        check_inputs_together(*comm_, who, std::forward<F>(checks));
    }
    /// Every rank passed the same fit_options.
    void check_options(const fit_options& options) { agree_on_options(*comm_, options, who); }
    /// Every rank can keep its checkpoint file at `path`, agreed before any
    /// training (distributed/checkpoint.hpp).
    void check_checkpoint_path(const std::filesystem::path& path) {
        detail::check_checkpoint_path_in_step(*comm_, who, path);
    }
    /// Every rank samples the same global batches (the same data's targets,
    /// batch size, seed and shuffling, compared by CRC-32: ranks that passed
    /// other seeds or other data would take shards of different batches,
    /// some samples twice and others never), and needs a row of each.
    void begin(const batch_sampler<T>& sampler) {
        const std::uint64_t how[4] = {sampler.samples(), sampler.batch_size(), sampler.seed(),
                                      sampler.shuffles() ? 1u : 0u};
        const matrix<T>& targets = sampler.data().targets;
        const std::uint32_t crc = lightloop::detail::crc32_of(
          std::as_bytes(std::span<const T>(targets.data(), targets.size())),
          lightloop::detail::crc32_of(std::as_bytes(std::span(how))));
        refuse_unlike_first(*comm_, crc, who,
                            "sample the training data otherwise than rank 0 (its size, targets, "
                            "batch size or seed differ); every rank must pass the same data and "
                            "fit_options, or the shards are not of one global batch; nothing was "
                            "trained");
        const std::size_t smallest = sampler.smallest_batch_rows();
        if (smallest < comm_->size()) {
            throw config_error(
              "lightloop::distributed::data_parallel: " + sampler.smallest_batch_text() + " has " +
              std::to_string(smallest) + " rows, which cannot be split over " +
              std::to_string(comm_->size()) + " ranks (every rank needs a row of every batch)");
        }
    }
    /// The rows of a rank's smallest shard (the smallest batch's rows over
    /// the ranks, rounded down) and where they are: fit checks, agreed, that
    /// every layer trains on them (a shard too small would be refused
    /// mid-epoch, after the epoch's steps).
    std::pair<std::size_t, std::string> smallest_share(const batch_sampler<T>& sampler) const {
        const std::size_t p = comm_->size();
        return {sampler.smallest_batch_rows() / p, "the smallest shard of " +
                                                     sampler.smallest_batch_text() + " over " +
                                                     std::to_string(p) + " ranks"};
    }
    void fill(batch_sampler<T>& sampler, std::size_t b, matrix<T>& x, matrix<T>& y) const {
        sampler.fill_shard(b, comm_->rank(), comm_->size(), x, y);
    }
    /// Each rank evaluates a contiguous part of the data; the sums are
    /// combined (the same figures on every rank).
    /// A rank whose part fails (no data, a batch of 0, malformed data)
    /// throws its error, and every other rank says so, instead of waiting.
    template <class Network>
    evaluation evaluate(Network& net, const labelled_data<T>& data, std::size_t batch) {
        const std::size_t p = comm_->size();
        const std::size_t first = data.size() * comm_->rank() / p;
        const std::size_t last = data.size() * (comm_->rank() + 1) / p;
        double sums[3] = {0.0, 0.0, static_cast<double>(last - first)};
        fail_together(
          *comm_,
          [&] {
              if (data.size() == 0 || batch == 0) {
                  throw config_error("lightloop::distributed::data_parallel: an evaluation needs "
                                     "data and a positive batch size (rows " +
                                     std::to_string(data.size()) + ", batch " +
                                     std::to_string(batch) + ")");
              }
              if (last > first) {
                  const evaluation mine = lightloop::evaluate(net, data, batch, first, last);
                  sums[0] = mine.loss * sums[2];
                  sums[1] = mine.accuracy * sums[2];
              }
          },
          [](const std::string&) {
              throw config_error("lightloop::distributed::data_parallel: the evaluation failed "
                                 "on another rank (its error names the problem); nothing was "
                                 "evaluated");
          });
        comm_->sum_identical(std::span<double>(sums));
        return {sums[0] / sums[2], sums[1] / sums[2]};
    }
    /// Rank 0 writes the checkpoint (every rank holds the same weights and,
    /// after gather_state, the same optimizer state), once every rank is
    /// ready (gather_state) and in step with every rank: a failure to write
    /// it throws on every rank (distributed/checkpoint.hpp). A device with
    /// state of its own on each rank (an optical one: its camera calibrated
    /// on the rank's shard, its noise counter) is rank 0's in that file; each
    /// rank also writes its own beside it (device_checkpoint_path; rank 0's
    /// says the others' are there), so that a resumed run is the
    /// uninterrupted one bit for bit.
    template <class Network, class Optimizer, class Record>
    void save_checkpoint(Network& net, Optimizer& opt, const std::filesystem::path& path,
                         std::uint64_t epoch, std::uint64_t seed, std::uint64_t batch,
                         const Record& record) {
        gather_state(opt);
        const std::size_t rank = comm_->rank();
        std::vector<std::filesystem::path> files;
        if (rank == 0) {
            files.push_back(path);
        }
        const bool own_device = has_device_state(net);
        if (own_device) {
            files.push_back(device_checkpoint_path(path, rank, comm_->size()));
        }
        detail::write_in_step(*comm_, who, files, [&] {
            if (rank == 0) {
                detail::write_part_temporary(path, net, opt, epoch, seed, batch, record,
                                             lightloop::detail::whole_network(net));
            }
            if (own_device) {
                detail::write_part_temporary(files.back(), net, lightloop::detail::no_optimizer{},
                                             epoch, seed, batch, lightloop::detail::no_record{},
                                             device_part(net));
            }
        });
    }
    /// Every rank resumes from the checkpoint at `path`, in step: every
    /// rank must see it (or none), accept it, and read the same bits
    /// (distributed/checkpoint.hpp); a rank with a device file of its own
    /// (save_checkpoint) takes its device from it, which must be of the same
    /// epoch and step. Without device files (another number of ranks wrote
    /// the checkpoint, or one process) every rank's device takes rank 0's
    /// state. A write that stopped between the ranks' renames (the job
    /// killed there) is finished first, from the temporaries it left
    /// (detail::finish_interrupted_write). A checkpoint written in parts by
    /// layer-parallel training is refused.
    template <class Network, class Optimizer, class Record, class Check>
    std::optional<checkpoint_info> resume(Network& net, Optimizer& opt,
                                          const std::filesystem::path& path, Record& record,
                                          const Check& check) {
        const auto device_file = device_checkpoint_path(path, comm_->rank(), comm_->size());
        const auto device_stage = [&](const std::filesystem::path& from) {
            return lightloop::detail::stage_checkpoint(net, lightloop::detail::no_optimizer{}, from,
                                                       lightloop::detail::no_record{},
                                                       device_part(net));
        };
        auto device = detail::stage_in_step(*comm_, who, device_file, has_device_state(net),
                                            "their device's checkpoint file",
                                            [&] { return device_stage(device_file); });
        auto resumed = detail::resume_in_step(
          *comm_, who, path, net, opt, record, check, lightloop::detail::whole_network(net),
          [&](auto& staged, const auto& stage) {
              // rank 0 wrote the whole file, each rank its device's
              detail::finish_interrupted_write(
                *comm_, who, detail::resumed_file{path, staged, stage, comm_->rank() == 0},
                detail::resumed_file{device_file, device, device_stage, true});
          },
          [&](const auto& staged) {
              const bool same_progress = !device || (device->info.epoch == staged.info.epoch &&
                                                     device->info.steps == staged.info.steps);
              return same_progress ? staged.crc : ~staged.crc;
          },
          "read a checkpoint other than rank 0's (another copy, another run's file at the same "
          "path, or a device file of another epoch); every rank must resume from the same "
          "checkpoint");
        if (!resumed) {
            detail::refuse_other_layout(*comm_, who, path, false);
        } else {
            state_sharded_ = false; // the whole state, read by every rank
            if (device) {
                net.feedback() = std::move(*device->feedback);
            }
        }
        return resumed;
    }
    /// Where rank `rank` of `ranks` keeps its device's state beside a
    /// data-parallel checkpoint at `path` ("<path>.device<r>-of-<p>").
    static std::filesystem::path device_checkpoint_path(const std::filesystem::path& path,
                                                        std::size_t rank, std::size_t ranks) {
        return path.string() + ".device" + std::to_string(rank) + "-of-" + std::to_string(ranks);
    }
    /// After the last epoch: gather_state, so that the optimizer fit_with
    /// hands back holds its whole state on every rank.
    template <class Network, class Optimizer>
    void finish_fit(Network&, Optimizer& opt) {
        gather_state(opt);
    }

    /// After sharded updates each rank's optimizer state is current in its
    /// own blocks only: the ranks hand them round, so that every rank holds
    /// all of it. Every rank calls it before the state is saved, and before
    /// `opt` is stepped by anything but this object (another data_parallel,
    /// whose blocks may be other ones, or one process). Nothing to do
    /// otherwise.
    template <class Optimizer>
    void gather_state(Optimizer& opt) {
        if constexpr (lightloop::detail::updates_blocks<Optimizer>) {
            if (state_sharded_) {
                opt.visit_state(
                  [&](std::size_t, std::span<T> state) { comm_->share_owned(state); });
                state_sharded_ = false;
            }
        }
    }
    /// gather_state(opt), in the form dfa_layer_parallel's takes, so that a
    /// loop of one's own reads alike over both strategies.
    template <class Network, class Optimizer>
    void gather_state(Network&, Optimizer& opt) {
        gather_state(opt);
    }
    /// A callback's failure on some ranks (fit_with keeps it until the ranks
    /// meet: before training, and at each epoch's end), thrown on every
    /// rank: the failing rank's own error.
    void agree_on_failure(const std::exception_ptr& mine, const char* what, const char* when) {
        throw_together(*comm_, mine, who, what, when);
    }
    /// Stops when any rank's callbacks ask to.
    bool agree_to_stop(bool stop) { return comm_->any(stop); }

private:
    /// Whether the network's feedback has state of its own (an optical
    /// device's calibration and counters; dense devices have none).
    template <class Network>
    static bool has_device_state(Network& net) {
        state_writer state;
        if constexpr (lightloop::detail::saves_state<
                        std::remove_reference_t<decltype(net.feedback())>>) {
            std::as_const(net).feedback().save_state(state);
        }
        return !state.bytes().empty();
    }
    struct no_layer {
        constexpr bool operator()(std::size_t) const noexcept { return false; }
    };
    /// A rank's device file: no layer, its feedback's state, the network's
    /// signature with a line naming the rank.
    template <class Network>
    auto device_part(Network& net) const {
        using feedback_type = std::remove_reference_t<decltype(net.feedback())>;
        return lightloop::detail::checkpoint_part<feedback_type, no_layer>{
          architecture_signature(net) + "data-parallel device: rank " +
            std::to_string(comm_->rank()) + " of " + std::to_string(comm_->size()) + "\n",
          &net.feedback(), no_layer{}};
    }

    /// Before a network's first step here: every rank holds rank 0's network
    /// (architecture and seed, hence feedback; weights and running
    /// estimates). Ranks that built theirs from other seeds would each train
    /// their own weights with one summed gradient, and their own feedback
    /// matrices, without a word. The CRC-32 of each rank's is agreed on.
    template <class Network>
    void check_same_network(Network& net) {
        const std::string signature = architecture_signature(net);
        std::uint32_t crc = lightloop::detail::crc32_of(std::as_bytes(std::span(signature)));
        const auto add = [&](std::span<T> values) {
            crc = lightloop::detail::crc32_of(std::as_bytes(values), crc);
        };
        net.visit_layers([&](auto& l, std::size_t) {
            // Read only: taking the bf16 copy (and leaving it) keeps it current.
            l.visit_parameters([&](std::span<T> values, auto&&...) { add(values); });
            if constexpr (requires { l.visit_buffers(add); }) {
                l.visit_buffers(add);
            }
        });
        refuse_unlike_first(*comm_, crc, who,
                            "hold a network other than rank 0's (its architecture, seed, weights "
                            "or running estimates differ); every rank must build the same network "
                            "with the same seed and change it alike, or the ranks train different "
                            "networks; nothing was trained");
        checked_ = &net;
        checked_steps_ = net.steps();
    }

    static constexpr const char* who = "lightloop::distributed::data_parallel";
    static constexpr std::size_t fixed = 3; // agreed_: loss sum, correct, rows
    // agreed_[fixed + depth + r]: rank r's shard failed (its loss, a gradient)
    // or was malformed (a shape_error).
    static constexpr double failed_shard = 1.0;
    static constexpr double malformed_shard = 2.0;

    /// Prepares `gradient` (this rank's g_r over its `rows` of the batch's
    /// `total`) for the sum over ranks of sum_r (n_r / n) g_r, and returns
    /// the scale the sum applies. With equal shards every rank's weight is
    /// 1/p, applied once to the sum on each block's one rank (exact for p a
    /// power of two); else each rank weighs its own.
    T weigh_shard(std::span<T> gradient, double rows, double total) const {
        const std::size_t p = comm_->size();
        if (rows * static_cast<double>(p) == total) {
            return static_cast<T>(1.0 / static_cast<double>(p));
        }
        const auto before = static_cast<T>(rows / total);
        for (T& v : gradient) {
            v *= before;
        }
        return T(1);
    }

    /// Starts the sums of trained layer i's gradients and moves the sums
    /// already on their way on.
    template <class Network>
    void start_sums(Network& net, std::size_t i, double rows, double total,
                    std::span<bool> started) {
        started[i] = true;
        net.visit_gradients([&](std::size_t layer, std::span<T> gradient) {
            if (layer == i) {
                in_flight_.push_back(
                  comm_->start_sum(gradient, weigh_shard(gradient, rows, total)));
            }
        });
        for (auto& sum : in_flight_) {
            sum.progress();
        }
    }

    /// Running estimates (batch_norm's) become the row-weighted mean of the
    /// ranks': exact for running means (the global batch's mean), the mean
    /// of the ranks' variances for running variances.
    template <class Network>
    void average_buffers(Network& net, double weight) {
        using layers = std::remove_cvref_t<decltype(std::as_const(net).layers())>;
        if constexpr (has_buffers<layers>::value) { // else visit_layers would cost a measurement
            net.visit_layers([&](auto& layer, std::size_t) {
                if constexpr (requires { layer.visit_buffers([](std::span<T>) {}); }) {
                    layer.visit_buffers([&](std::span<T> values) {
                        for (T& v : values) {
                            v = static_cast<T>(v * weight);
                        }
                        comm_->sum_identical(values);
                    });
                }
            });
        }
    }

    template <class Layers>
    struct has_buffers;
    template <class... Layers>
    struct has_buffers<std::tuple<Layers...>> {
        static constexpr bool value = (detail::has_buffers<Layers, T> || ...);
    };

    /// apply_gradient_blocks' view of the ranks.
    struct shards {
        communicator* comm;
        value_block block(std::size_t n) const noexcept { return comm->owned_block(n); }
        bool all(bool mine) { return !comm->any(!mine); }
        void largest(std::span<double> values) { comm->largest(values); }
        template <class U>
        void share(std::span<U> values) {
            comm->share_owned(values);
        }
    };

    communicator* comm_;
    bool overlap_;
    bool shard_;
    bool state_sharded_ = false; // some optimizer state current only in own blocks
    std::vector<double> agreed_;
    const void* checked_ = nullptr;   // the network last found the same on every rank
    std::uint64_t checked_steps_ = 0; // its step count after the last step here
    optimizer_agreement optimizer_agreed_;
    std::vector<sum_in_flight<T>> in_flight_; // this step's sums on their way
};

} // namespace lightloop::distributed
