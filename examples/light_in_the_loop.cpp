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
// Defaults run in under a minute on 2 cores (2 epochs); the paper-scale run
// is --epochs 10 or more. See --help for the flags.
#include "demo.hpp"

int main(int argc, char** argv) {
    using namespace lightloop;
    ensure_fast_blas(argv); // re-executes once if OpenBLAS fell back to a generic kernel
    demos::options o;
    o.out = "light_in_the_loop_out";
    o.methods = {"bp", "dfa", "optical-intensity", "optical-holographic", "shallow"};
    CLI::App app{"The Light-in-the-loop experiment: a 784-1024-1024-10 tanh network on "
                 "Fashion-MNIST trained with backprop, DFA through a dense matrix and through "
                 "the simulated optical co-processor, and shallow training.",
                 "light_in_the_loop"};
    demos::add_flags(app, o);
    const demos::demo<demos::make_paper_network> d{
      "light_in_the_loop", "784-1024-1024-10 tanh", {}};
    return programs::run(app, argc, argv, [&] { return demos::experiment(d, o); });
}
