#pragma once
// Learning-rate schedules. A schedule is a callback with the hook
//     double learning_rate(double base, double progress, std::size_t epochs) const
// where progress counts epochs done, fractions included (2.5 = half-way
// through the third epoch); fit() asks it before every batch.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <numbers>
#include <string>

#include "lightloop/core/describe.hpp"
#include "lightloop/core/error.hpp"

namespace lightloop {

/// The base rate throughout.
struct constant_schedule {
    double learning_rate(double base, double, std::size_t) const noexcept { return base; }
};

/// base * gamma^floor(progress / every): a drop every `every` epochs.
struct step_schedule {
    std::size_t every = 10;
    double gamma = 0.1;

    double learning_rate(double base, double progress, std::size_t) const {
        if (every == 0 || !(gamma > 0.0) || !std::isfinite(gamma)) {
            throw config_error(
              "lightloop::step_schedule: needs every > 0 and a finite gamma > 0, got every " +
              std::to_string(every) + ", gamma " + number_text(gamma));
        }
        return base * std::pow(gamma, std::floor(progress / static_cast<double>(every)));
    }
};

/// Cosine annealing from base to base * floor over the run (Loshchilov &
/// Hutter 2017, without restarts).
struct cosine_schedule {
    double floor = 0.0;

    double learning_rate(double base, double progress, std::size_t epochs) const {
        if (!(floor >= 0.0 && floor <= 1.0)) {
            throw config_error("lightloop::cosine_schedule: floor must be in [0, 1], got " +
                               number_text(floor));
        }
        const double t = epochs == 0 ? 1.0 : std::min(1.0, progress / static_cast<double>(epochs));
        const double low = base * floor;
        return low + (base - low) * 0.5 * (1.0 + std::cos(std::numbers::pi * t));
    }
};

} // namespace lightloop
