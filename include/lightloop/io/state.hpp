#pragma once
// Byte streams for checkpoint state. A component that has state to save
// (an optimizer's moments, an optical device's calibration and noise counter)
// gives itself
//     void save_state(state_writer&) const;
//     void load_state(state_reader&);
// and the checkpoint finds them with a requires-expression. load_state must
// read everything before changing anything, or work on a copy: the checkpoint
// loader stages components and commits them only when the whole file is read.
//
// Values are stored little-endian, as the machine holds them (lightloop
// refuses to build on big-endian machines rather than write unportable files).

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "lightloop/core/error.hpp"

namespace lightloop {

static_assert(std::endian::native == std::endian::little,
              "lightloop checkpoints are little-endian; this machine is not");

class state_writer {
public:
    void u32(std::uint32_t v) { raw(&v, sizeof v); }
    void u64(std::uint64_t v) { raw(&v, sizeof v); }
    void f64(double v) { raw(&v, sizeof v); }
    void text(std::string_view s) {
        u64(s.size());
        raw(s.data(), s.size());
    }
    /// A length, then the values.
    template <class T>
    void values(std::span<const T> v) {
        u64(v.size());
        raw(v.data(), v.size() * sizeof(T));
    }

    /// Another writer's bytes, with their length: a section a reader can
    /// hand to a component, or skip.
    void block(const state_writer& inner) {
        u64(inner.bytes_.size());
        raw(inner.bytes_.data(), inner.bytes_.size());
    }

    const std::vector<std::byte>& bytes() const noexcept { return bytes_; }

private:
    void raw(const void* data, std::size_t size) {
        const auto* p = static_cast<const std::byte*>(data);
        bytes_.insert(bytes_.end(), p, p + size);
    }

    std::vector<std::byte> bytes_;
};

class state_reader {
public:
    /// Reads from `bytes`; `source` names the file in error messages.
    state_reader(std::span<const std::byte> bytes, std::string source)
      : bytes_(bytes)
      , source_(std::move(source)) {}

    std::uint32_t u32(const char* what) { return pod<std::uint32_t>(what); }
    std::uint64_t u64(const char* what) { return pod<std::uint64_t>(what); }
    double f64(const char* what) { return pod<double>(what); }

    std::string text(const char* what) {
        const std::uint64_t size = u64(what);
        need(size, what);
        std::string s(reinterpret_cast<const char*>(bytes_.data() + at_),
                      static_cast<std::size_t>(size));
        at_ += static_cast<std::size_t>(size);
        return s;
    }

    /// Values whose count must be exactly `out.size()`.
    template <class T>
    void values_into(std::span<T> out, const char* what) {
        const std::uint64_t count = u64(what);
        if (count != out.size()) {
            fail(std::string(what) + " has " + std::to_string(count) + " values, expected " +
                 std::to_string(out.size()));
        }
        read_values(out.data(), out.size(), what);
    }

    /// Values of any count the remaining bytes can hold.
    template <class T>
    std::vector<T> values(const char* what) {
        const std::uint64_t count = u64(what);
        if (count > remaining() / sizeof(T)) {
            fail(std::string("truncated checkpoint (") + what + " claims " + std::to_string(count) +
                 " values)");
        }
        std::vector<T> out(static_cast<std::size_t>(count));
        read_values(out.data(), out.size(), what);
        return out;
    }

    /// A section written by state_writer::block, as a reader of its own.
    state_reader block(const char* what) {
        const std::uint64_t size = u64(what);
        need(size, what);
        state_reader inner(bytes_.subspan(at_, static_cast<std::size_t>(size)), source_);
        at_ += static_cast<std::size_t>(size);
        return inner;
    }

    /// Fails unless every byte was read.
    void expect_end(const char* what) const {
        if (remaining() != 0) {
            fail(std::to_string(remaining()) + " unread bytes in the " + what);
        }
    }

    std::size_t remaining() const noexcept { return bytes_.size() - at_; }
    const std::string& source() const noexcept { return source_; }

    [[noreturn]] void fail(const std::string& why) const {
        throw data_error("lightloop: " + source_ + ": " + why);
    }

private:
    void need(std::uint64_t size, const char* what) const {
        if (size > remaining()) {
            fail(std::string("truncated checkpoint (reading ") + what + ")");
        }
    }

    template <class V>
    V pod(const char* what) {
        need(sizeof(V), what);
        V v;
        std::memcpy(&v, bytes_.data() + at_, sizeof(V));
        at_ += sizeof(V);
        return v;
    }

    template <class T>
    void read_values(T* out, std::size_t count, const char* what) {
        if (count == 0) {
            return; // out may be null: memcpy must not see it
        }
        need(static_cast<std::uint64_t>(count) * sizeof(T), what);
        std::memcpy(out, bytes_.data() + at_, count * sizeof(T));
        at_ += count * sizeof(T);
    }

    std::span<const std::byte> bytes_;
    std::string source_;
    std::size_t at_ = 0;
};

} // namespace lightloop
