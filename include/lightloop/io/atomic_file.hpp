#pragma once
// Files written whole or not at all: a temporary file beside the target,
// fsync'd, renamed over it, and the directory fsync'd. A crash or a full disk
// leaves the previous file. Checkpoints, JSON logs and weight exports use it.

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <span>
#include <string>
#include <system_error>

#include <fcntl.h>
#include <signal.h>
#include <sys/types.h>
#include <unistd.h>

#include "lightloop/core/error.hpp"

namespace lightloop::detail {

/// This machine's name ("" if it has none to give).
inline std::string host_name() {
    char host[256] = {};
    if (::gethostname(host, sizeof host - 1) != 0) {
        host[0] = '\0';
    }
    return host;
}

/// The directory `path` is in ("." for a bare file name).
inline std::filesystem::path directory_of(const std::filesystem::path& path) {
    return path.parent_path().empty() ? std::filesystem::path(".") : path.parent_path();
}

/// Before anything is trained: config_error unless a file can be kept at
/// `path`, its directory existing and `path` not being one. `who` and `what`
/// name it ("lightloop::fit", "checkpoint"); `names_a_file` says what `path`
/// should be.
inline void check_file_path(const std::filesystem::path& path, const std::string& who,
                            const std::string& what, const std::string& names_a_file) {
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec)) {
        throw config_error(who + ": the " + what + " " + path.string() +
                           " is a directory: " + names_a_file + "; nothing was trained");
    }
    const auto directory = directory_of(path);
    if (!std::filesystem::is_directory(directory, ec)) {
        throw config_error(who + ": the " + what + "'s directory " + directory.string() +
                           " does not exist (create it first); nothing was trained");
    }
}

/// The temporary of a write whose halves several processes run in step:
/// "<path>.tmp", a name any process can find again (distributed/
/// checkpoint.hpp finishes an interrupted write from it).
inline std::filesystem::path shared_temporary_path(const std::filesystem::path& path) {
    return path.string() + ".tmp";
}

/// This thread's number among those of the process that wrote a file: 0,
/// 1, 2, ... in the order they first asked.
inline std::uint64_t writer_thread_number() {
    static std::atomic<std::uint64_t> next{0};
    thread_local const std::uint64_t mine = next.fetch_add(1, std::memory_order_relaxed);
    return mine;
}

/// The temporary of this thread's own atomic write of `path`:
/// "<path>.<host>.<pid>.<thread>.tmp" (writer_thread_number). Processes, and
/// threads of one process, that write the same file at once (every rank of
/// an MPI job given the same callback; two fits of a sweep given the same
/// log) then each write their own and rename it whole over `path`, the last
/// one winning; with one shared name, one would rename the file another was
/// still writing, and the other's rename would fail. A process killed
/// mid-write leaves its temporary behind (never read); the next write of
/// `path` on the same host removes it (remove_abandoned_temporaries).
inline std::filesystem::path own_temporary_path(const std::filesystem::path& path) {
    return path.string() + "." + host_name() + "." + std::to_string(::getpid()) + "." +
           std::to_string(writer_thread_number()) + ".tmp";
}

/// Removes what processes of this host killed mid-write left beside `path`:
/// own_temporary_path's "<path>.<host>.<pid>.<thread>.tmp" (or an older
/// library's "<path>.<host>.<pid>.tmp") of a pid that no longer runs
/// (kill(pid, 0) says ESRCH), a partial file nobody reads. A running
/// process's, another host's (whose processes this one cannot see) and
/// anything else are left alone. Best effort: nothing here throws.
inline void remove_abandoned_temporaries(const std::filesystem::path& path) noexcept {
    try {
        const std::string prefix = path.filename().string() + "." + host_name() + ".";
        const std::string suffix = ".tmp";
        const auto directory = directory_of(path);
        std::error_code ec;
        for (std::filesystem::directory_iterator it(directory, ec), end; !ec && it != end;
             it.increment(ec)) {
            const std::string name = it->path().filename().string();
            if (name.size() <= prefix.size() + suffix.size() || !name.starts_with(prefix) ||
                !name.ends_with(suffix)) {
                continue;
            }
            const std::string middle =
              name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
            const auto all_digits = [](const std::string& text, std::size_t most) {
                return !text.empty() && text.size() <= most &&
                       std::all_of(text.begin(), text.end(),
                                   [](char c) { return c >= '0' && c <= '9'; });
            };
            // "<pid>.<thread>", or an older library's "<pid>"
            const std::size_t dot = middle.find('.');
            const std::string digits = middle.substr(0, dot); // the pid
            if (!all_digits(digits, 9) ||
                (dot != std::string::npos && !all_digits(middle.substr(dot + 1), 19))) {
                continue;
            }
            const auto pid = static_cast<::pid_t>(std::stol(digits));
            if (pid <= 0 || pid == ::getpid() || ::kill(pid, 0) == 0 || errno != ESRCH) {
                continue; // running, or not this process's to judge (EPERM: it runs)
            }
            std::error_code ignored;
            std::filesystem::remove(it->path(), ignored);
        }
    } catch (...) { // best effort (a name that does not convert, an allocation)
    }
}

/// The first half of an atomic write: the pieces one after the other in
/// `temporary`, fsync'd. Every failure throws data_error naming the
/// temporary, removes it, and leaves what it replaces as it was.
inline void write_temporary(const std::filesystem::path& temporary,
                            std::initializer_list<std::span<const std::byte>> pieces,
                            const std::string& what = "checkpoint") {
    const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        throw data_error("lightloop: " + temporary.string() + ": cannot write " + what + " (" +
                         std::generic_category().message(errno) + ")");
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

/// Removes `temporary`, if it is there.
inline void discard_temporary(const std::filesystem::path& temporary) noexcept {
    std::error_code ignored;
    std::filesystem::remove(temporary, ignored);
}

/// The second half: `temporary` renamed over `path`, and the directory
/// fsync'd; then what writers of `path` killed mid-write on this host left
/// (remove_abandoned_temporaries).
inline void replace_with_temporary(const std::filesystem::path& temporary,
                                   const std::filesystem::path& path,
                                   const std::string& what = "checkpoint") {
    std::error_code ec;
    std::filesystem::rename(temporary, path, ec);
    if (ec) {
        throw data_error("lightloop: " + path.string() + ": cannot replace " + what + " (" +
                         ec.message() + ")");
    }
    const auto directory = directory_of(path);
    const int dir = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir >= 0) {
        ::fsync(dir);
        ::close(dir);
    }
    remove_abandoned_temporaries(path);
}

/// Writes the pieces one after the other to `path`, atomically (this
/// process's own temporary file, fsync, rename, directory fsync); `what`
/// names the file in messages. Every failure throws data_error and leaves
/// the previous file.
inline void write_atomically(const std::filesystem::path& path,
                             std::initializer_list<std::span<const std::byte>> pieces,
                             const std::string& what = "checkpoint") {
    const auto temporary = own_temporary_path(path);
    write_temporary(temporary, pieces, what);
    replace_with_temporary(temporary, path, what);
}

} // namespace lightloop::detail
