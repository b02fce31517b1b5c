#pragma once
// Sign-DFA (the "sDFA" of Frenkel, Lefebvre & Bol 2021, after Nøkland 2016):
// delta a_i = (B_i sign(e)) ⊙ f'(a_i). The hidden layers see a random
// projection of the error's sign only: a ternary vector, which a binary
// micromirror device displays without the ternarization DFA's error needs.
// With softmax cross-entropy, sign(e) is -1 at the target class and +1
// elsewhere (0 where e is exactly 0), so the signal carries almost nothing
// but the target and behaves much like DRTP's. The output layer still learns
// from e. Same single projection as DFA, through the same devices.

#include "lightloop/core/concepts.hpp"
#include "lightloop/feedback/direct.hpp"
#include "lightloop/projection/dense_random.hpp"

namespace lightloop {

template <class Device = dense_gaussian>
requires projection_device<Device>
class sign_dfa : public detail::direct_feedback<Device, detail::projected_signal::error_sign> {
public:
    using detail::direct_feedback<Device, detail::projected_signal::error_sign>::direct_feedback;
};

static_assert(feedback_method<sign_dfa<dense_gaussian>>);

} // namespace lightloop
