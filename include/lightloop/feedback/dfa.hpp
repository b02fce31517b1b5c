#pragma once
// Direct feedback alignment (Nøkland 2016): delta a_i = (B_i e) ⊙ f'(a_i),
// every B_i e taken from one projection of the output error e by Device.

#include "lightloop/core/concepts.hpp"
#include "lightloop/feedback/direct.hpp"
#include "lightloop/projection/dense_random.hpp"

namespace lightloop {

template <class Device = dense_gaussian>
requires projection_device<Device>
class dfa : public detail::direct_feedback<Device, detail::projected_signal::error> {
public:
    using detail::direct_feedback<Device, detail::projected_signal::error>::direct_feedback;
};

static_assert(feedback_method<dfa<dense_gaussian>>);
static_assert(feedback_method<dfa<dense_uniform>>);

} // namespace lightloop
