#pragma once
// Files written whole or not at all: a temporary file beside the target,
// fsync'd, renamed over it, and the directory fsync'd. A crash or a full disk
// leaves the previous file. Checkpoints, JSON logs and weight exports use it.

#include <cstddef>
#include <filesystem>
#include <initializer_list>
#include <span>
#include <string>
#include <system_error>

#include <fcntl.h>
#include <unistd.h>

#include "lightloop/core/error.hpp"

namespace lightloop::detail {

/// Where write_temporary writes `path`'s new contents: "<path>.tmp".
inline std::filesystem::path temporary_path(const std::filesystem::path& path) {
    return path.string() + ".tmp";
}

/// The first half of write_atomically: the pieces one after the other in
/// "<path>.tmp", fsync'd. Every failure throws data_error, removes the
/// temporary and leaves `path` as it was.
inline void write_temporary(const std::filesystem::path& path,
                            std::initializer_list<std::span<const std::byte>> pieces,
                            const std::string& what = "checkpoint") {
    const std::filesystem::path temporary = temporary_path(path);
    const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        throw data_error("lightloop: " + temporary.string() + ": cannot write " + what);
    }
    for (const auto bytes : pieces) {
        std::size_t done = 0;
        while (done < bytes.size()) {
            const ::ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
            if (n <= 0) {
                ::close(fd);
                std::error_code ignored;
                std::filesystem::remove(temporary, ignored);
                throw data_error("lightloop: " + temporary.string() +
                                 ": write failed (disk full?); the previous " + what +
                                 " is intact");
            }
            done += static_cast<std::size_t>(n);
        }
    }
    std::error_code ec;
    if (::fsync(fd) != 0 || ::close(fd) != 0) {
        std::filesystem::remove(temporary, ec);
        throw data_error("lightloop: " + temporary.string() + ": fsync failed; the previous " +
                         what + " is intact");
    }
}

/// Removes what write_temporary left for `path`, if anything.
inline void discard_temporary(const std::filesystem::path& path) noexcept {
    std::error_code ignored;
    std::filesystem::remove(temporary_path(path), ignored);
}

/// The second half: "<path>.tmp" renamed over `path`, and the directory
/// fsync'd.
inline void replace_with_temporary(const std::filesystem::path& path,
                                   const std::string& what = "checkpoint") {
    std::error_code ec;
    std::filesystem::rename(temporary_path(path), path, ec);
    if (ec) {
        throw data_error("lightloop: " + path.string() + ": cannot replace " + what + " (" +
                         ec.message() + ")");
    }
    const auto directory =
      path.parent_path().empty() ? std::filesystem::path(".") : path.parent_path();
    const int dir = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir >= 0) {
        ::fsync(dir);
        ::close(dir);
    }
}

/// Writes the pieces one after the other to `path`, atomically (temporary
/// file, fsync, rename, directory fsync); `what` names the file in messages.
/// Every failure throws data_error and leaves the previous file.
inline void write_atomically(const std::filesystem::path& path,
                             std::initializer_list<std::span<const std::byte>> pieces,
                             const std::string& what = "checkpoint") {
    write_temporary(path, pieces, what);
    replace_with_temporary(path, what);
}

} // namespace lightloop::detail
