// light_in_the_loop over MPI: the same experiment, flags and table, with each
// global batch split over the ranks (data-parallel: every rank holds the
// network, trains on rows rank, rank + p, ... of each batch, and the ranks sum
// their gradients before the same update).
//
//   mpirun -np 2 build/release/examples/light_in_the_loop_mpi --mode data --epochs 3
//
// Rank 0 prints the table and writes the CSV and SVG. Every rank keeps the
// same weights; an optical device has the seed's medium on every rank and a
// camera (noise stream) of its own. --threads is per rank (1 by default: one
// rank per core).
#include <lightloop/distributed/data_parallel.hpp>

#include "demo.hpp"

namespace {

/// The demo's fit over the ranks: rank 0 shows progress and writes the CSV.
struct data_parallel_runner {
    lightloop::distributed::communicator* comm;

    bool prints() const noexcept { return comm->rank() == 0; }
    std::string describe() const {
        return "data-parallel over " + std::to_string(comm->size()) +
               " MPI ranks: each global batch split over them, gradients summed";
    }
    template <class Net, class Optimizer>
    lightloop::fit_history fit(Net& net, Optimizer& opt, const lightloop::mnist_data& data,
                               const lightloop::fit_options& fo, const std::string& name,
                               const std::filesystem::path& csv) const {
        using namespace lightloop;
        distributed::give_rank_noise_stream(net, comm->rank());
        distributed::data_parallel<typename Net::value_type> parallel(*comm);
        if (prints()) {
            return fit_with(parallel, net, opt, data.train, data.test, fo, progress_bar(name),
                            csv_log(csv, name));
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
        app.add_option("--mode", mode, "data: data-parallel (each rank a shard of every batch)")
          ->check(CLI::IsMember({"data"}))
          ->capture_default_str();
        const demos::demo<demos::make_paper_network> d{
          "light_in_the_loop_mpi", "784-1024-1024-10 tanh", {}};
        // Every rank parses the same command line and fails alike; a rank
        // whose library call fails while the others go on ends the job.
        code = programs::run(app, argc, argv,
                             [&] { return demos::experiment(d, o, data_parallel_runner{&comm}); });
        if (code != 0 && comm.size() > 1) {
            std::fprintf(stderr, "light_in_the_loop_mpi: rank %zu stops the job (exit code %d)\n",
                         comm.rank(), code);
            std::fflush(stderr);
            distributed::environment::abort(code);
        }
    }
    return code;
}
