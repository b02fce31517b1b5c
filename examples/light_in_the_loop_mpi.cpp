// light_in_the_loop over MPI: the same experiment, flags and table, in one of
// two modes:
//   --mode data   every rank holds the network, trains on rows rank, rank + p,
//                 ... of each global batch, and the ranks sum their gradients
//                 before the same update;
//   --mode layer  DFA layer-parallel: each rank owns a block of layers,
//                 activations flow forward, the last rank broadcasts e (sign(e)
//                 for sign-DFA), each rank projects it through its slice of B
//                 (the direct methods only: DFA, sign-DFA, the optical DFAs);
//   --mode layer-pipelined  the same, each rank below the last forwarding
//                 the next batch while the previous one's error is on its way
//                 (weights at most one step stale).
//
//   mpirun -np 2 build/release/examples/light_in_the_loop_mpi --mode data --epochs 3
//   mpirun -np 2 build/release/examples/light_in_the_loop_mpi --mode layer --methods dfa
//
// Rank 0 prints the table and writes the CSV and SVG. Every rank keeps the
// same weights; an optical device has the seed's medium on every rank and a
// camera (noise stream) of its own. --threads is per rank (1 by default: one
// rank per core).
#include <lightloop/distributed/data_parallel.hpp>
#include <lightloop/distributed/layer_parallel.hpp>

#include "demo.hpp"

namespace {

/// The direct methods, which layer-parallel training slices.
template <class Feedback>
constexpr bool is_direct = false;
template <class Device>
constexpr bool is_direct<lightloop::dfa<Device>> = true;
template <class Device>
constexpr bool is_direct<lightloop::sign_dfa<Device>> = true;

/// The demo's fit over the ranks, in either mode: rank 0 shows progress and
/// writes the CSV.
struct parallel_runner {
    lightloop::distributed::communicator* comm;
    std::string mode; // data or layer

    bool prints() const noexcept { return comm->rank() == 0; }
    /// The direct methods as their own types (layer-parallel training
    /// slices their devices), the others through the demos' run-time choice.
    template <class Feedback>
    static auto take(Feedback feedback) {
        if constexpr (is_direct<Feedback>) {
            return feedback;
        } else {
            return lightloop::demos::method{std::move(feedback)};
        }
    }
    std::string describe() const {
        if (mode != "data") {
            return std::string(mode == "layer" ? "synchronous" : "pipelined") +
                   " DFA layer-parallel over " + std::to_string(comm->size()) +
                   " MPI ranks: each rank a block of layers, e broadcast from the last";
        }
        return "data-parallel over " + std::to_string(comm->size()) +
               " MPI ranks: each global batch split over them, gradients summed";
    }
    template <class Net, class Optimizer>
    lightloop::fit_history fit(Net& net, Optimizer& opt, const lightloop::mnist_data& data,
                               lightloop::fit_options fo, const std::string& name,
                               const std::filesystem::path& csv) const {
        using namespace lightloop;
        if (mode != "data") {
            if constexpr (requires { net.feedback().device_seed(); }) {
                distributed::dfa_layer_parallel<Net> parallel(
                  *comm, net,
                  mode == "layer-pipelined" ? distributed::layer_parallel_mode::pipelined
                                            : distributed::layer_parallel_mode::synchronous);
                return run(parallel, net, opt, data, fo, name, csv);
            } else {
                throw config_error("--mode " + mode + " cannot train " + name);
            }
        }
        distributed::give_rank_noise_stream(net, comm->rank());
        distributed::data_parallel<typename Net::value_type> parallel(*comm);
        return run(parallel, net, opt, data, fo, name, csv);
    }
    template <class Strategy, class Net, class Optimizer>
    lightloop::fit_history run(Strategy& parallel, Net& net, Optimizer& opt,
                               const lightloop::mnist_data& data, const lightloop::fit_options& fo,
                               const std::string& name, const std::filesystem::path& csv) const {
        using namespace lightloop;
        if (prints()) {
            // Plain lines, four an epoch: under mpiexec a rank's stdout is a
            // pseudo-terminal whatever mpiexec's own output is (a job's log
            // file, a pipe), and a bar redrawn in place filled the log with
            // a hundred carriage-return updates an epoch on one line.
            return fit_with(parallel, net, opt, data.train, data.test, fo,
                            progress_bar(name).terminal(false), csv_log(csv, name));
        }
        return fit_with(parallel, net, opt, data.train, data.test, fo);
    }
};

} // namespace

int main(int argc, char** argv) {
    using namespace lightloop;
    ensure_fast_blas(argv); // before MPI starts: may re-execute the program once
    distributed::environment mpi(argc, argv);
    int code = 0;
    {
        distributed::communicator comm;
        demos::options o;
        o.out = "light_in_the_loop_mpi_out";
        o.threads = 1;
        o.methods = {"bp", "dfa", "optical-intensity", "optical-holographic", "shallow"};
        std::string mode = "data";
        CLI::App app{"The Light-in-the-loop experiment over MPI ranks (run under mpirun): the "
                     "784-1024-1024-10 tanh network on Fashion-MNIST, each batch split over the "
                     "ranks.",
                     "light_in_the_loop_mpi"};
        demos::add_flags(app, o);
        app
          .add_option("--mode", mode,
                      "data: data-parallel (each rank a shard of every batch); layer: DFA "
                      "layer-parallel (each rank a block of layers; the direct methods only: "
                      "dfa, sign-dfa, optical-intensity, optical-holographic); "
                      "layer-pipelined: the same, the next batch forwarded while the error "
                      "of the previous one is on its way")
          ->check(CLI::IsMember({"data", "layer", "layer-pipelined"}))
          ->capture_default_str();
        const demos::demo<demos::make_paper_network> d{
          "light_in_the_loop_mpi", "784-1024-1024-10 tanh", {}};
        // Every rank parses the same command line and fails alike; a rank
        // whose library call fails while the others go on ends the job.
        code = programs::run(app, argc, argv, [&] {
            if (mode != "data" && app.count("--methods") == 0) {
                o.methods = {"dfa", "optical-intensity", "optical-holographic"};
            }
            for (const std::string& m : o.methods) {
                if (mode != "data" && m != "dfa" && m != "sign-dfa" && m != "optical-intensity" &&
                    m != "optical-holographic") {
                    throw config_error("--mode " + mode +
                                       " trains the direct methods only (dfa, sign-dfa, "
                                       "optical-intensity, optical-holographic), not " +
                                       m + ": its backward pass needs every layer's delta");
                }
            }
            return demos::experiment(d, o, parallel_runner{&comm, mode});
        });
        if (code != 0 && comm.size() > 1) {
            std::fprintf(stderr, "light_in_the_loop_mpi: rank %zu stops the job (exit code %d)\n",
                         comm.rank(), code);
            std::fflush(stderr);
            distributed::environment::abort(code);
        }
    }
    return code;
}
