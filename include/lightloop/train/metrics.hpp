#pragma once
// Classification metrics.

#include <algorithm>
#include <cstddef>
#include <string>

#include "lightloop/core/error.hpp"
#include "lightloop/core/tensor.hpp"

namespace lightloop {

/// Index of the largest entry of row r.
template <class T>
std::size_t argmax_row(const matrix<T>& m, std::size_t r) {
    const T* row = m.data() + r * m.shape(1);
    return static_cast<std::size_t>(std::max_element(row, row + m.shape(1)) - row);
}

/// Number of rows whose argmax matches the target's argmax (one-hot targets).
template <class T>
std::size_t count_correct(const matrix<T>& output, const matrix<T>& target) {
    if (output.shape(0) != target.shape(0) || output.shape(1) != target.shape(1)) {
        throw shape_error("lightloop::accuracy: output is " + std::to_string(output.shape(0)) +
                          "x" + std::to_string(output.shape(1)) + ", target is " +
                          std::to_string(target.shape(0)) + "x" + std::to_string(target.shape(1)));
    }
    std::size_t correct = 0;
    for (std::size_t r = 0; r < output.shape(0); ++r) {
        if (argmax_row(output, r) == argmax_row(target, r)) {
            ++correct;
        }
    }
    return correct;
}

/// Fraction of rows whose argmax matches the target's argmax (one-hot targets).
template <class T>
double accuracy(const matrix<T>& output, const matrix<T>& target) {
    if (output.shape(0) == 0) {
        throw shape_error("lightloop::accuracy: empty batch");
    }
    return static_cast<double>(count_correct(output, target)) /
           static_cast<double>(output.shape(0));
}

/// Accuracy of `net` on (x, target) in one forward pass.
template <class Network>
double evaluate_accuracy(Network& net, const matrix<typename Network::value_type>& x,
                         const matrix<typename Network::value_type>& target) {
    return accuracy(net.forward(x), target);
}

} // namespace lightloop
