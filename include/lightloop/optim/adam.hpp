#pragma once
// Adam (Kingma & Ba 2015) with bias correction, as PyTorch computes it:
//   g <- g + weight_decay * w            (L2; or, decoupled, AdamW below)
//   m <- beta1 m + (1 - beta1) g,  v <- beta2 v + (1 - beta2) g^2
//   w <- w - lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + epsilon)
// With decoupled_weight_decay (Loshchilov & Hutter 2019), the decay is not
// added to g but applied as w <- w (1 - lr * weight_decay) before the step.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>

#include "lightloop/core/bf16.hpp"
#include "lightloop/core/concepts.hpp"
#include "lightloop/core/describe.hpp"
#include "lightloop/core/error.hpp"
#include "lightloop/core/simd.hpp"
#include "lightloop/optim/detail.hpp"

namespace lightloop {

struct adam_settings {
    double learning_rate = 1e-3;
    double beta1 = 0.9;
    double beta2 = 0.999;
    double epsilon = 1e-8;
    double weight_decay = 0.0;
    bool decoupled_weight_decay = false;
};

template <scalar T = float>
class adam : public detail::elementwise_optimizer<adam<T>, T, 2> {
    using base = detail::elementwise_optimizer<adam<T>, T, 2>;
    friend base;
    using base::state_; // per slot [m | v], the first and second moments

public:
    using value_type = T;
    static constexpr const char* name = "adam";

    /// Default settings but the learning rate.
    explicit adam(double learning_rate)
      : adam(adam_settings{.learning_rate = learning_rate}) {}

    explicit adam(adam_settings settings = {})
      : settings_(settings) {
        detail::check_learning_rate("adam", settings.learning_rate);
        detail::require_setting(settings.beta1 >= 0.0 && settings.beta1 < 1.0, "adam", "beta1",
                                settings.beta1, "in [0, 1)");
        detail::require_setting(settings.beta2 >= 0.0 && settings.beta2 < 1.0, "adam", "beta2",
                                settings.beta2, "in [0, 1)");
        detail::require_setting(settings.epsilon > 0.0 && std::isfinite(settings.epsilon), "adam",
                                "epsilon", settings.epsilon, "finite and > 0");
        detail::require_setting(settings.weight_decay >= 0.0 &&
                                  std::isfinite(settings.weight_decay),
                                "adam", "weight_decay", settings.weight_decay, "finite and >= 0");
    }

    /// Advances the step count t used by the bias correction.
    void begin_step() noexcept { ++step_; }

    /// An upper bound on the magnitude of everything the next update of
    /// `slot` writes (the step after begin_step), given |w| <= w_max and
    /// |g| <= g_max: |m| and v grow at most to their averages with the
    /// gradient, and the step is at most lr |m̂| / epsilon. +inf when the
    /// inputs are not finite.
    double update_bound(std::size_t slot, double w_max, double g_max) const noexcept {
        const adam_settings& s = settings_;
        const double grad = g_max + (s.decoupled_weight_decay ? 0.0 : s.weight_decay * w_max);
        const double state = state_.largest(slot);
        const double m = s.beta1 * state + (1.0 - s.beta1) * grad;
        const double v = s.beta2 * state + (1.0 - s.beta2) * grad * grad;
        const double t = static_cast<double>(step_ + 1);
        const double step = s.learning_rate / (1.0 - std::pow(s.beta1, t)) * m / s.epsilon;
        const double kept =
          s.decoupled_weight_decay ? std::abs(1.0 - s.learning_rate * s.weight_decay) : 1.0;
        return detail::rounding_slack * std::max({m, v, kept * w_max + step});
    }

    double learning_rate() const noexcept { return settings_.learning_rate; }
    void set_learning_rate(double lr) {
        detail::check_learning_rate("adam", lr);
        settings_.learning_rate = lr;
    }
    const adam_settings& settings() const noexcept { return settings_; }
    /// "adam beta1 0.9 beta2 0.999 epsilon 1e-08 weight_decay 0": the
    /// settings but the learning rate (see sgd::describe).
    std::string describe() const {
        return "adam beta1 " + number_text(settings_.beta1) + " beta2 " +
               number_text(settings_.beta2) + " epsilon " + number_text(settings_.epsilon) +
               " weight_decay " + number_text(settings_.weight_decay) +
               (settings_.decoupled_weight_decay ? " decoupled" : "");
    }
    std::uint64_t step_count() const noexcept { return step_; }
    void save_state(state_writer& out) const {
        out.u64(step_);
        state_.save(out);
    }
    void load_state(state_reader& in) {
        const std::uint64_t step = in.u64("adam step count");
        state_.load(in);
        step_ = step;
    }

private:
    template <class Low>
    double update_impl(std::size_t slot, std::span<T> w, std::span<const T> g, Low* low,
                       value_block block) {
        detail::check_update_sizes("adam", slot, w.size(), g.size());
        detail::check_block("adam", slot, w.size(), block);
        if (step_ == 0) {
            throw config_error("lightloop::adam: update() before begin_step()");
        }
        const std::size_t count = w.size();
        const std::size_t at = block.first;
        const std::span<T> m = state_.get("adam", slot, 0, count);
        const std::span<T> v = state_.get("adam", slot, 1, count);
        const double t = static_cast<double>(step_);
        const T b1 = static_cast<T>(settings_.beta1);
        const T b2 = static_cast<T>(settings_.beta2);
        const T step_size =
          static_cast<T>(settings_.learning_rate / (1.0 - std::pow(settings_.beta1, t)));
        const T inv_sqrt_bc2 = static_cast<T>(1.0 / std::sqrt(1.0 - std::pow(settings_.beta2, t)));
        const T eps = static_cast<T>(settings_.epsilon);
        const T wd = static_cast<T>(settings_.weight_decay);
        const bool decoupled = settings_.decoupled_weight_decay;
        const T shrink = static_cast<T>(1.0 - settings_.learning_rate * settings_.weight_decay);
        const double largest =
          detail::update_in_pieces<T>(block.count, [&](std::size_t b, std::size_t e, auto& watch) {
              T* const wp = w.data() + at + b;
              [[maybe_unused]] Low* const lp = detail::advance(low, at + b);
              T* const mp = m.data() + at + b;
              T* const vp = v.data() + at + b;
              const T* const gp = g.data() + at + b;
              const T beta1 = b1;
              const T beta2 = b2;
              const T size = step_size;
              const T bias_correction = inv_sqrt_bc2;
              const T epsilon = eps;
              const T decay = wd;
              const T keep = shrink;
              const bool decouple = decoupled;
              simd::for_each_lane<T>(e - b, [&](std::size_t i, auto lane) {
                  using V = decltype(lane);
                  V wi = simd::load<V>(wp + i);
                  V grad = simd::load<V>(gp + i);
                  if (decouple) {
                      wi = wi * V(keep);
                  } else {
                      grad = grad + V(decay) * wi;
                  }
                  const V mi = V(beta1) * simd::load<V>(mp + i) + V(T(1) - beta1) * grad;
                  const V vi = V(beta2) * simd::load<V>(vp + i) + V(T(1) - beta2) * grad * grad;
                  simd::store(mp + i, mi);
                  simd::store(vp + i, vi);
                  using std::sqrt;
                  using xsimd::sqrt;
                  const V updated =
                    wi - V(size) * mi / (sqrt(vi) * V(bias_correction) + V(epsilon));
                  simd::store(wp + i, updated);
                  if constexpr (!std::is_void_v<Low>) {
                      simd::store_bf16(lp + i, updated);
                  }
                  watch.see(updated);
                  watch.see(mi);
                  watch.see(vi);
              });
          });
        state_.remember_largest(slot, largest);
        return largest;
    }

private:
    adam_settings settings_;
    std::uint64_t step_ = 0;
};

static_assert(optimizer<adam<float>> && optimizer<adam<double>>);

} // namespace lightloop
