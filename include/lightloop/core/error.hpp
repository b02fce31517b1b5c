#pragma once
// Error types. Every error lightloop throws derives from lightloop::error, and
// its message names the object at fault and the values involved.

#include <stdexcept>
#include <string>

namespace lightloop {

/// Base of every exception lightloop throws.
class error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// Two sizes that must agree do not (layer widths, batch shapes, device sizes).
class shape_error : public error {
public:
    using error::error;
};

/// A setting is outside its valid range (a negative learning rate, a zero width).
class config_error : public error {
public:
    using error::error;
};

/// A data file is missing, malformed, truncated or inconsistent; the message
/// names the file and the fault.
class data_error : public error {
public:
    using error::error;
};

/// Training produced a non-finite value; nothing was updated at that step.
class divergence_error : public error {
public:
    using error::error;
};

} // namespace lightloop
