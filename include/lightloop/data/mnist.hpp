#pragma once
// The MNIST family (MNIST, Fashion-MNIST, KMNIST, ...) from a directory of
// IDX files with the standard names, plain or gzip-compressed:
//   train-images-idx3-ubyte[.gz]  train-labels-idx1-ubyte[.gz]
//   t10k-images-idx3-ubyte[.gz]   t10k-labels-idx1-ubyte[.gz]
// Images become rows of floats in [0, 1] (pixel / 255), optionally
// standardised with the training set's mean and standard deviation; labels
// become one-hot targets.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <filesystem>
#include <string>
#include <vector>

#include "lightloop/core/error.hpp"
#include "lightloop/data/idx.hpp"
#include "lightloop/data/synthetic.hpp"

namespace lightloop {

struct mnist_options {
    /// Subtract the training pixels' mean and divide by their standard
    /// deviation (one scalar each, applied to train and test alike).
    bool standardize = false;
    /// Keep only the first `limit` samples of each split (0: all).
    std::size_t train_limit = 0;
    std::size_t test_limit = 0;
};

struct mnist_data {
    labelled_data<float> train;
    labelled_data<float> test;
    std::size_t rows = 0;
    std::size_t cols = 0;
    std::size_t classes = 0;
};

namespace detail {

inline std::filesystem::path find_idx(const std::filesystem::path& dir, const std::string& stem) {
    for (const char* suffix : {"", ".gz"}) {
        const auto candidate = dir / (stem + suffix);
        std::error_code ec;
        if (std::filesystem::is_regular_file(candidate, ec)) {
            return candidate;
        }
    }
    throw data_error("lightloop: " + (dir / stem).string() + "[.gz]: no such file");
}

} // namespace detail

/// Images (rank 3) and labels (rank 1) of one split, checked against each
/// other; labels must lie in [0, classes).
template <class T = float>
labelled_data<T> load_idx_split(const std::filesystem::path& images_path,
                                const std::filesystem::path& labels_path, std::size_t classes,
                                std::size_t limit = 0, std::size_t* image_rows = nullptr,
                                std::size_t* image_cols = nullptr) {
    const idx_array images = read_idx(images_path, 3);
    const idx_array labels = read_idx(labels_path, 1);
    if (images.dims[0] != labels.dims[0]) {
        throw data_error("lightloop: " + images_path.string() + " has " +
                         std::to_string(images.dims[0]) + " images but " + labels_path.string() +
                         " has " + std::to_string(labels.dims[0]) + " labels");
    }
    const std::size_t n = limit == 0 ? images.dims[0] : std::min(limit, images.dims[0]);
    const std::size_t features = images.dims[1] * images.dims[2];
    if (image_rows != nullptr && image_cols != nullptr) {
        *image_rows = images.dims[1];
        *image_cols = images.dims[2];
    }
    labelled_data<T> data;
    data.inputs = matrix<T>::from_shape({n, features});
    data.targets = matrix<T>::from_shape({n, classes});
    data.targets.fill(T(0));
    data.labels.resize(n);
    for (std::size_t i = 0; i < n * features; ++i) {
        data.inputs.data()[i] = static_cast<T>(images.values[i]) / T(255);
    }
    for (std::size_t r = 0; r < n; ++r) {
        const std::size_t label = labels.values[r];
        if (label >= classes) {
            throw data_error("lightloop: " + labels_path.string() + ": label " +
                             std::to_string(label) + " at index " + std::to_string(r) +
                             " is not below the " + std::to_string(classes) + " classes");
        }
        data.labels[r] = label;
        data.targets(r, label) = T(1);
    }
    return data;
}

/// Loads a directory in the standard layout (10 classes).
inline mnist_data load_mnist(const std::filesystem::path& dir, mnist_options options = {}) {
    std::error_code ec;
    if (!std::filesystem::is_directory(dir, ec)) {
        throw data_error("lightloop: " + dir.string() + ": no such directory");
    }
    mnist_data out;
    out.classes = 10;
    out.train = load_idx_split(detail::find_idx(dir, "train-images-idx3-ubyte"),
                               detail::find_idx(dir, "train-labels-idx1-ubyte"), out.classes,
                               options.train_limit, &out.rows, &out.cols);
    out.test = load_idx_split(detail::find_idx(dir, "t10k-images-idx3-ubyte"),
                              detail::find_idx(dir, "t10k-labels-idx1-ubyte"), out.classes,
                              options.test_limit);
    if (out.train.inputs.shape(1) != out.test.inputs.shape(1)) {
        throw data_error("lightloop: " + dir.string() + ": training images have " +
                         std::to_string(out.train.inputs.shape(1)) + " pixels, test images " +
                         std::to_string(out.test.inputs.shape(1)));
    }
    if (options.standardize) {
        double sum = 0.0;
        double sum2 = 0.0;
        for (const float v : out.train.inputs) {
            sum += v;
            sum2 += static_cast<double>(v) * v;
        }
        const auto count = static_cast<double>(out.train.inputs.size());
        const double mean = sum / count;
        const double sd = std::sqrt(std::max(sum2 / count - mean * mean, 1e-12));
        for (auto* set : {&out.train, &out.test}) {
            for (float& v : set->inputs) {
                v = static_cast<float>((v - mean) / sd);
            }
        }
    }
    return out;
}

} // namespace lightloop
