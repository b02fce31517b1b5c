#pragma once
// lightloop's version, for checkpoints and diagnostics. The three macros are
// the only place the version is written: CMakeLists.txt reads them.

#define LIGHTLOOP_VERSION_MAJOR 0
#define LIGHTLOOP_VERSION_MINOR 1
#define LIGHTLOOP_VERSION_PATCH 0

#define LIGHTLOOP_DETAIL_STRINGIFY_(x) #x
#define LIGHTLOOP_DETAIL_STRINGIFY(x) LIGHTLOOP_DETAIL_STRINGIFY_(x)

namespace lightloop {
inline constexpr int version_major = LIGHTLOOP_VERSION_MAJOR;
inline constexpr int version_minor = LIGHTLOOP_VERSION_MINOR;
inline constexpr int version_patch = LIGHTLOOP_VERSION_PATCH;
inline constexpr const char* version_string =
  LIGHTLOOP_DETAIL_STRINGIFY(LIGHTLOOP_VERSION_MAJOR) "." LIGHTLOOP_DETAIL_STRINGIFY(
    LIGHTLOOP_VERSION_MINOR) "." LIGHTLOOP_DETAIL_STRINGIFY(LIGHTLOOP_VERSION_PATCH);
} // namespace lightloop
