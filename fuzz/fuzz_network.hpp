#pragma once
// The network the checkpoint fuzzer loads into, shared with the corpus
// generator so the seed checkpoints always match it. DFA through the optical
// device, so the device's state section is exercised too.

#include <cstdint>
#include <filesystem>
#include <string>

#include <unistd.h>

#include <lightloop/lightloop.hpp>

namespace lightloop::fuzz {

using fuzz_network =
  network<dfa<optical<>>, softmax_cross_entropy, dense<tanh_act>, dense<identity>>;

inline fuzz_network make_network() {
    return fuzz_network(dfa<optical<>>{}, softmax_cross_entropy{}, 3, dense<tanh_act>{6, 8},
                        dense<identity>{8, 4});
}

inline sgd<float> make_optimizer() {
    return sgd<float>{{.learning_rate = 0.1, .momentum = 0.9}};
}

/// A per-process scratch file for one input.
inline std::filesystem::path scratch_file(const std::string& name) {
    return std::filesystem::temp_directory_path() /
           ("lightloop_fuzz_" + name + "_" + std::to_string(::getpid()));
}

} // namespace lightloop::fuzz
