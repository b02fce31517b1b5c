#pragma once
// Names of policies, for checkpoint signatures and messages. A type names
// itself with `static constexpr const char* name` or, when its parameters
// matter, `std::string describe() const`; anything else is named by the
// compiler's spelling of its type, spaces removed. Layers name their
// parameter tensors with parameter_layout() (weight exports use it).
// Numbers in messages are written by number_text, in descriptions by
// setting_text.

#include <charconv>
#include <concepts>
#include <cstddef>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace lightloop {

/// A parameter tensor's name and shape, in a layer's parameter_layout().
struct parameter_shape {
    std::string name;
    std::vector<std::size_t> shape;
};

/// The shortest text that reads back as x: "0.1", "1e-07", "5", "nan".
template <std::floating_point T>
std::string number_text(T x) {
    char text[64];
    const auto end = std::to_chars(text, text + sizeof text, x).ptr;
    return std::string(text, end);
}

/// A setting's value in a description, which checkpoint signatures compare:
/// std::to_string's six decimals, as descriptions have always written it,
/// where they read back as x, else number_text. Six decimals alone wrote a
/// drift of 1e-6 and one of 1e-7 both as 0.000000, so a checkpoint of one
/// loaded into a network configured with the other.
template <std::floating_point T>
std::string setting_text(T x) {
    std::string fixed = std::to_string(x);
    if (static_cast<T>(std::strtod(fixed.c_str(), nullptr)) == x) {
        return fixed;
    }
    return number_text(x);
}

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

/// An object's name: its name() where its type has one that is known only at
/// run time (optimizer_choice: the held optimizer's), else name_of<T>().
template <class T>
std::string name_of(const T& object) {
    if constexpr (requires {
                      { object.name() } -> std::convertible_to<std::string>;
                  }) {
        return object.name();
    } else {
        return name_of<T>();
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
