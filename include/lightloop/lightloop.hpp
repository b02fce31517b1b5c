#pragma once
// lightloop: neural-network training with direct feedback alignment and its
// relatives, with the error projection on a simulated photonic co-processor.
// This umbrella header includes every public header.

#include "lightloop/version.hpp"

#include "lightloop/core/bf16_packing.hpp"
#include "lightloop/core/blas.hpp"
#include "lightloop/core/blas_info.hpp"
#include "lightloop/core/concepts.hpp"
#include "lightloop/core/describe.hpp"
#include "lightloop/core/error.hpp"
#include "lightloop/core/parallel.hpp"
#include "lightloop/core/random.hpp"
#include "lightloop/core/random_lanes.hpp"
#include "lightloop/core/seeded_matrix.hpp"
#include "lightloop/core/shape.hpp"
#include "lightloop/core/tensor.hpp"

#include "lightloop/layers/activations.hpp"
#include "lightloop/layers/affine.hpp"
#include "lightloop/layers/batch_norm.hpp"
#include "lightloop/layers/conv2d.hpp"
#include "lightloop/layers/dense.hpp"
#include "lightloop/layers/dropout.hpp"
#include "lightloop/layers/init.hpp"
#include "lightloop/layers/layer_norm.hpp"
#include "lightloop/layers/pooling.hpp"

#include "lightloop/loss/mse.hpp"
#include "lightloop/loss/softmax_cross_entropy.hpp"

#include "lightloop/projection/choice.hpp"
#include "lightloop/projection/dense_random.hpp"
#include "lightloop/projection/optical.hpp"

#include "lightloop/feedback/backprop.hpp"
#include "lightloop/feedback/choice.hpp"
#include "lightloop/feedback/dfa.hpp"
#include "lightloop/feedback/drtp.hpp"
#include "lightloop/feedback/feedback_alignment.hpp"
#include "lightloop/feedback/shallow.hpp"
#include "lightloop/feedback/sign_dfa.hpp"
#include "lightloop/feedback/sweep.hpp"

#include "lightloop/optim/adam.hpp"
#include "lightloop/optim/choice.hpp"
#include "lightloop/optim/sgd.hpp"

#include "lightloop/network.hpp"

#include "lightloop/data/dataset.hpp"
#include "lightloop/data/idx.hpp"
#include "lightloop/data/mnist.hpp"
#include "lightloop/data/one_hot.hpp"
#include "lightloop/data/synthetic.hpp"
#include "lightloop/io/atomic_file.hpp"
#include "lightloop/io/checkpoint.hpp"
#include "lightloop/io/npz.hpp"
#include "lightloop/io/state.hpp"
#include "lightloop/io/svg_plot.hpp"
#include "lightloop/train/alignment.hpp"
#include "lightloop/train/callbacks.hpp"
#include "lightloop/train/fit.hpp"
#include "lightloop/train/gradient_check.hpp"
#include "lightloop/train/metrics.hpp"
#include "lightloop/train/schedule.hpp"
