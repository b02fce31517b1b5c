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

/// Writes the pieces one after the other to `path`, atomically (temporary
/// file, fsync, rename, directory fsync); `what` names the file in messages.
/// Every failure throws data_error and leaves the previous file.
inline void write_atomically(const std::filesystem::path& path,
                             std::initializer_list<std::span<const std::byte>> pieces,
                             const std::string& what = "checkpoint") {
    const std::filesystem::path temporary = path.string() + ".tmp";
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
    std::filesystem::rename(temporary, path, ec);
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

} // namespace lightloop::detail
