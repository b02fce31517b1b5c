#pragma once
// lightloop's version, for checkpoints and diagnostics.

#define LIGHTLOOP_VERSION_MAJOR 0
#define LIGHTLOOP_VERSION_MINOR 1
#define LIGHTLOOP_VERSION_PATCH 0

namespace lightloop {
inline constexpr int version_major = LIGHTLOOP_VERSION_MAJOR;
inline constexpr int version_minor = LIGHTLOOP_VERSION_MINOR;
inline constexpr int version_patch = LIGHTLOOP_VERSION_PATCH;
inline constexpr const char* version_string = "0.1.0";
} // namespace lightloop
