#pragma once
// Names of policies, for checkpoint signatures and messages. A type names
// itself with `static constexpr const char* name` or, when its parameters
// matter, `std::string describe() const`; anything else is named by the
// compiler's spelling of its type, spaces removed. Layers name their
// parameter tensors with parameter_layout() (weight exports use it).

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace lightloop {

/// A parameter tensor's name and shape, in a layer's parameter_layout().
struct parameter_shape {
    std::string name;
    std::vector<std::size_t> shape;
};

namespace detail {

template <class T>
std::string type_name() {
    const std::string_view pretty = __PRETTY_FUNCTION__; // "... [with T = X; ...]" or "[T = X]"
    const auto start = pretty.find("T = ");
    if (start == std::string_view::npos) {
        return "unknown";
    }
    auto end = pretty.find_first_of(";]", start);
    std::string name(pretty.substr(start + 4, end - start - 4));
    std::erase(name, ' ');
    return name;
}

} // namespace detail

template <class T>
std::string name_of() {
    if constexpr (requires { std::string(T::name); }) {
        return std::string(T::name);
    } else {
        return detail::type_name<T>();
    }
}

template <class T>
std::string describe_object(const T& object) {
    if constexpr (requires {
                      { object.describe() } -> std::convertible_to<std::string>;
                  }) {
        return object.describe();
    } else {
        return name_of<T>();
    }
}

} // namespace lightloop
