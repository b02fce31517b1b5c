#pragma once
// Labels to one-hot target rows.

#include <cstddef>
#include <span>
#include <string>
#include <type_traits>

#include "lightloop/core/error.hpp"
#include "lightloop/core/tensor.hpp"

namespace lightloop {

/// (n x classes) matrix with row r the one-hot vector of labels[r]. Throws
/// config_error naming the row if a label is outside [0, classes).
template <class T = float, class Label>
matrix<T> one_hot(std::span<const Label> labels, std::size_t classes) {
    auto out = matrix<T>::from_shape({labels.size(), classes});
    out.fill(T(0));
    for (std::size_t r = 0; r < labels.size(); ++r) {
        const auto label = labels[r];
        bool negative = false;
        if constexpr (std::is_signed_v<Label>) {
            negative = label < Label(0);
        }
        if (negative || static_cast<std::size_t>(label) >= classes) {
            throw config_error("lightloop::one_hot: label " + std::to_string(label) + " at row " +
                               std::to_string(r) + " is outside [0, " + std::to_string(classes) +
                               ")");
        }
        out(r, static_cast<std::size_t>(label)) = T(1);
    }
    return out;
}

} // namespace lightloop
