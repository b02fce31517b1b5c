#pragma once
// Fast standard normal draws by the ziggurat method (Marsaglia & Tsang 2000,
// 128 layers), for the camera's per-pixel noise where Box-Muller's log, sqrt,
// sin and cos per pair dominate the simulation. The layer index and the
// value use disjoint bits of one 64-bit draw (Doornik 2005 noted the
// correlation of the original's shared bits). About 99 % of draws take the
// fast path: one multiply and one compare.

#include <cmath>
#include <cstdint>

#include "lightloop/core/random.hpp"

namespace lightloop {

namespace detail {

struct ziggurat_tables {
    double w[128];
    double f[128];
    std::uint32_t k[128];

    ziggurat_tables() noexcept {
        const double m1 = 2147483648.0; // 2^31
        double dn = 3.442619855899;
        double tn = dn;
        const double vn = 9.91256303526217e-3;
        const double q = vn / std::exp(-0.5 * dn * dn);
        k[0] = static_cast<std::uint32_t>((dn / q) * m1);
        k[1] = 0;
        w[0] = q / m1;
        w[127] = dn / m1;
        f[0] = 1.0;
        f[127] = std::exp(-0.5 * dn * dn);
        for (int i = 126; i >= 1; --i) {
            dn = std::sqrt(-2.0 * std::log(vn / dn + std::exp(-0.5 * dn * dn)));
            k[i + 1] = static_cast<std::uint32_t>((dn / tn) * m1);
            tn = dn;
            f[i] = std::exp(-0.5 * dn * dn);
            w[i] = dn / m1;
        }
    }
};

inline const ziggurat_tables& ziggurat() noexcept {
    static const ziggurat_tables tables;
    return tables;
}

} // namespace detail

/// One N(0, 1) draw.
inline double ziggurat_normal(rng& gen) noexcept {
    const auto& t = detail::ziggurat();
    constexpr double tail_start = 3.442619855899;
    for (;;) {
        const std::uint64_t bits = gen();
        const auto layer = static_cast<unsigned>(bits & 127u);
        const auto hz = static_cast<std::int32_t>(static_cast<std::uint32_t>(bits >> 32));
        const double x = static_cast<double>(hz) * t.w[layer];
        const std::uint32_t magnitude =
          hz < 0 ? static_cast<std::uint32_t>(-static_cast<std::int64_t>(hz))
                 : static_cast<std::uint32_t>(hz);
        if (magnitude < t.k[layer]) {
            return x;
        }
        if (layer == 0) {
            // The tail beyond the base layer, by Marsaglia's exponential method.
            double tail = 0.0;
            double y = 0.0;
            do {
                tail = -std::log(1.0 - gen.uniform()) / tail_start;
                y = -std::log(1.0 - gen.uniform());
            } while (y + y < tail * tail);
            return hz > 0 ? tail_start + tail : -tail_start - tail;
        }
        if (t.f[layer] + gen.uniform() * (t.f[layer - 1] - t.f[layer]) < std::exp(-0.5 * x * x)) {
            return x;
        }
    }
}

} // namespace lightloop
