#pragma once
// Tensor aliases used throughout lightloop.
//
// A batch is a row-major matrix with one sample per row (n x d), as in
// PyTorch; a dense layer's weights W are (out x in), so a = h W^T + b is one
// GEMM per layer and the formulas of docs/DESIGN.md read with rows as samples.

#include <cstddef>
#include <xtensor/xtensor.hpp>

namespace lightloop {

template <class T>
using matrix = xt::xtensor<T, 2>;

template <class T>
using vector = xt::xtensor<T, 1>;

/// Sets `m` to shape (rows x cols); storage is reallocated only when the
/// element count changes, so a steady batch size allocates nothing.
template <class T>
void ensure_shape(matrix<T>& m, std::size_t rows, std::size_t cols) {
    if (m.shape(0) != rows || m.shape(1) != cols) {
        m.resize({rows, cols});
    }
}

} // namespace lightloop
