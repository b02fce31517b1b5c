#pragma once
// Seeded weight initialisers.
//
// For W of shape (fan_out x fan_in) the schemes draw i.i.d. entries with
//   Glorot/Xavier (Glorot & Bengio 2010): Var = 2 / (fan_in + fan_out)
//   He/Kaiming    (He et al. 2015):       Var = 2 / fan_in   (for relu)
//   LeCun         (LeCun et al. 1998):    Var = 1 / fan_in
// either normal, or uniform on [-s, s] with s = sqrt(3 Var) (same variance).

#include <cmath>
#include <cstddef>
#include <span>
#include <string_view>

#include "lightloop/core/random.hpp"
#include "lightloop/core/tensor.hpp"

namespace lightloop {

enum class init {
    glorot_uniform,
    glorot_normal,
    he_uniform,
    he_normal,
    lecun_uniform,
    lecun_normal
};

/// The variance scheme `scheme` gives a (fan_out x fan_in) matrix's entries.
constexpr double init_variance(init scheme, std::size_t fan_in, std::size_t fan_out) noexcept {
    const auto in = static_cast<double>(fan_in);
    const auto out = static_cast<double>(fan_out);
    switch (scheme) {
        case init::glorot_uniform:
        case init::glorot_normal:
            return 2.0 / (in + out);
        case init::he_uniform:
        case init::he_normal:
            return 2.0 / in;
        case init::lecun_uniform:
        case init::lecun_normal:
            return 1.0 / in;
    }
    return 1.0 / in;
}

constexpr bool init_is_uniform(init scheme) noexcept {
    return scheme == init::glorot_uniform || scheme == init::he_uniform ||
           scheme == init::lecun_uniform;
}

constexpr std::string_view to_string(init scheme) noexcept {
    switch (scheme) {
        case init::glorot_uniform:
            return "glorot_uniform";
        case init::glorot_normal:
            return "glorot_normal";
        case init::he_uniform:
            return "he_uniform";
        case init::he_normal:
            return "he_normal";
        case init::lecun_uniform:
            return "lecun_uniform";
        case init::lecun_normal:
            return "lecun_normal";
    }
    return "unknown";
}

/// Draws W (fan_out x fan_in) from `scheme` with generator `gen`.
template <class T>
void initialize_weights(matrix<T>& w, init scheme, rng& gen) {
    const double variance = init_variance(scheme, w.shape(1), w.shape(0));
    const std::span<T> values(w.data(), w.size());
    if (init_is_uniform(scheme)) {
        fill_uniform(values, gen, std::sqrt(3.0 * variance));
    } else {
        fill_normal(values, gen, std::sqrt(variance));
    }
}

} // namespace lightloop
