#pragma once
// Stochastic gradient descent with momentum, Nesterov momentum and L2 weight
// decay, with PyTorch's conventions so hyperparameters carry over:
//   g <- g + weight_decay * w
//   v <- momentum * v + g                       (v starts at 0)
//   w <- w - lr * (nesterov ? g + momentum * v : v)
// With momentum 0 this is plain w <- w - lr * g.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>
#include <string>
#include <type_traits>

#include "lightloop/core/bf16.hpp"
#include "lightloop/core/concepts.hpp"
#include "lightloop/core/describe.hpp"
#include "lightloop/core/simd.hpp"
#include "lightloop/optim/detail.hpp"

namespace lightloop {

struct sgd_settings {
    double learning_rate = 0.01;
    double momentum = 0.0;
    bool nesterov = false;
    double weight_decay = 0.0;
};

template <scalar T = float>
class sgd : public detail::elementwise_optimizer<sgd<T>, T, 1> {
    using base = detail::elementwise_optimizer<sgd<T>, T, 1>;
    friend base;
    using base::state_; // per slot the momentum (none without momentum)

public:
    using value_type = T;
    static constexpr const char* name = "sgd";

    /// Default settings but the learning rate.
    explicit sgd(double learning_rate)
      : sgd(sgd_settings{.learning_rate = learning_rate}) {}

    explicit sgd(sgd_settings settings = {})
      : settings_(settings) {
        detail::check_learning_rate("sgd", settings.learning_rate);
        detail::require_setting(settings.momentum >= 0.0 && settings.momentum < 1.0, "sgd",
                                "momentum", settings.momentum, "in [0, 1)");
        detail::require_setting(settings.weight_decay >= 0.0 &&
                                  std::isfinite(settings.weight_decay),
                                "sgd", "weight_decay", settings.weight_decay, "finite and >= 0");
        detail::require_setting(!settings.nesterov || settings.momentum > 0.0, "sgd",
                                "momentum (with nesterov)", settings.momentum, "> 0");
    }

    void begin_step() noexcept {}

    /// An upper bound on the magnitude of everything the next update of
    /// `slot` writes, given |w| <= w_max and |g| <= g_max (+inf when the
    /// inputs are not finite). The network proves with it, before any
    /// weight changes, that a step cannot overflow.
    double update_bound(std::size_t slot, double w_max, double g_max) const noexcept {
        const double grad = g_max + settings_.weight_decay * w_max;
        if (settings_.momentum == 0.0) {
            return detail::rounding_slack * (w_max + settings_.learning_rate * grad);
        }
        const double velocity = settings_.momentum * state_.largest(slot) + grad;
        const double step = settings_.nesterov ? grad + settings_.momentum * velocity : velocity;
        return detail::rounding_slack * std::max(velocity, w_max + settings_.learning_rate * step);
    }

    double learning_rate() const noexcept { return settings_.learning_rate; }
    void set_learning_rate(double lr) {
        detail::check_learning_rate("sgd", lr);
        settings_.learning_rate = lr;
    }
    const sgd_settings& settings() const noexcept { return settings_; }
    /// "sgd momentum 0.9 nesterov weight_decay 0": the settings but the
    /// learning rate (which schedules move), for messages and for checking
    /// that processes step the same optimizer.
    std::string describe() const {
        return "sgd momentum " + number_text(settings_.momentum) +
               (settings_.nesterov ? " nesterov" : "") + " weight_decay " +
               number_text(settings_.weight_decay);
    }
    void save_state(state_writer& out) const { state_.save(out); }
    void load_state(state_reader& in) { state_.load(in); }

private:
    template <class Low>
    double update_impl(std::size_t slot, std::span<T> w, std::span<const T> g, Low* low,
                       value_block block) {
        detail::check_update_sizes("sgd", slot, w.size(), g.size());
        detail::check_block("sgd", slot, w.size(), block);
        const T lr = static_cast<T>(settings_.learning_rate);
        const T mu = static_cast<T>(settings_.momentum);
        const T wd = static_cast<T>(settings_.weight_decay);
        const std::size_t count = w.size();
        const std::size_t at = block.first;
        if (settings_.momentum == 0.0) {
            return detail::update_in_pieces<T>(
              block.count, [&](std::size_t b, std::size_t e, auto& watch) {
                  T* const wp = w.data() + at + b;
                  [[maybe_unused]] Low* const lp = detail::advance(low, at + b);
                  const T* const gp = g.data() + at + b;
                  const T rate = lr;
                  const T decay = wd;
                  simd::for_each_lane<T>(e - b, [&](std::size_t i, auto lane) {
                      using V = decltype(lane);
                      const V wi = simd::load<V>(wp + i);
                      const V updated = wi - V(rate) * (simd::load<V>(gp + i) + V(decay) * wi);
                      simd::store(wp + i, updated);
                      if constexpr (!std::is_void_v<Low>) {
                          simd::store_bf16(lp + i, updated);
                      }
                      watch.see(updated);
                  });
              });
        }
        const std::span<T> v = state_.get("sgd", slot, 0, count);
        const bool nesterov = settings_.nesterov;
        const double largest =
          detail::update_in_pieces<T>(block.count, [&](std::size_t b, std::size_t e, auto& watch) {
              T* const wp = w.data() + at + b;
              [[maybe_unused]] Low* const lp = detail::advance(low, at + b);
              T* const vp = v.data() + at + b;
              const T* const gp = g.data() + at + b;
              const T rate = lr;
              const T momentum = mu;
              const T decay = wd;
              const bool ahead = nesterov;
              simd::for_each_lane<T>(e - b, [&](std::size_t i, auto lane) {
                  using V = decltype(lane);
                  const V wi = simd::load<V>(wp + i);
                  const V grad = simd::load<V>(gp + i) + V(decay) * wi;
                  const V vi = V(momentum) * simd::load<V>(vp + i) + grad;
                  simd::store(vp + i, vi);
                  const V updated = wi - V(rate) * (ahead ? V(grad + V(momentum) * vi) : vi);
                  simd::store(wp + i, updated);
                  if constexpr (!std::is_void_v<Low>) {
                      simd::store_bf16(lp + i, updated);
                  }
                  watch.see(updated);
                  watch.see(vi);
              });
          });
        state_.remember_largest(slot, largest);
        return largest;
    }

private:
    sgd_settings settings_;
};

static_assert(optimizer<sgd<float>> && optimizer<sgd<double>>);

} // namespace lightloop
