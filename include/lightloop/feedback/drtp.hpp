#pragma once
// Direct random target projection (Frenkel, Lefebvre & Bol 2021):
// delta a_i = (B_i y*) ⊙ f'(a_i). The hidden layers see a random projection of
// the one-hot target, not of the error, so their signal does not depend on the
// network's output and needs no backward pass at all. The output layer still
// learns from e. Same single projection as DFA, through the same devices.

#include "lightloop/core/concepts.hpp"
#include "lightloop/feedback/direct.hpp"
#include "lightloop/projection/dense_random.hpp"

namespace lightloop {

template <class Device = dense_gaussian>
requires projection_device<Device>
class drtp : public detail::direct_feedback<Device, detail::projected_signal::target> {
public:
    using detail::direct_feedback<Device, detail::projected_signal::target>::direct_feedback;
};

static_assert(feedback_method<drtp<dense_gaussian>>);

} // namespace lightloop
