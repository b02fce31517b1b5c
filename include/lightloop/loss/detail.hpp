#pragma once
// Shape checks and the value/evaluate pair shared by the losses.

#include <string>

#include "lightloop/core/concepts.hpp"
#include "lightloop/core/error.hpp"
#include "lightloop/core/tensor.hpp"

namespace lightloop::detail {

template <class T>
void check_loss_shapes(const char* loss_name, const matrix<T>& out, const matrix<T>& target) {
    if (out.shape(0) != target.shape(0) || out.shape(1) != target.shape(1)) {
        throw shape_error(std::string("lightloop::") + loss_name + ": output is " +
                          std::to_string(out.shape(0)) + "x" + std::to_string(out.shape(1)) +
                          " but target is " + std::to_string(target.shape(0)) + "x" +
                          std::to_string(target.shape(1)));
    }
    if (out.shape(0) == 0) {
        throw shape_error(std::string("lightloop::") + loss_name + ": empty batch");
    }
}

/// value() and evaluate() for a loss whose Derived::compute<T, WithGradient>
/// (out, target, grad) returns the mean loss and, if asked, writes the
/// per-sample gradient.
template <class Derived>
struct loss_base {
    template <scalar T>
    T value(const matrix<T>& out, const matrix<T>& target) const {
        check_loss_shapes(Derived::name, out, target);
        return Derived::template compute<T, false>(out, target, nullptr);
    }

    template <scalar T>
    T evaluate(const matrix<T>& out, const matrix<T>& target, matrix<T>& grad) const {
        check_loss_shapes(Derived::name, out, target);
        ensure_shape(grad, out.shape(0), out.shape(1));
        return Derived::template compute<T, true>(out, target, grad.data());
    }
};

} // namespace lightloop::detail
