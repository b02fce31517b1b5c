#pragma once
// NumPy's .npz files: a network's parameters as named arrays, for Python.
//
//   save_weights_npz(net, "net.npz");      // then, in Python:
//   w = numpy.load("net.npz")              // w["layer0.weight"]: (out, in) float32
//   load_weights_npz(net, "net.npz");      // back into a network of the same widths
//
// Each array is one .npy member of a ZIP archive (numpy.savez's layout): the
// .npy bytes and the archive come from the small writers below (an .npy
// header as numpy.save writes it; stored entries, or deflated ones as
// numpy.savez_compressed writes, with zlib's CRC-32). The reader takes
// what numpy.savez and numpy.savez_compressed write (stored or deflated
// members, ZIP64 fields), float32 or float64, C or Fortran order, and checks
// everything it reads against the network before it allocates or changes
// anything: a refused file (missing, extra or misshapen arrays, another
// dtype, a truncated or corrupt archive) leaves the network as it was and the
// data_error names the problem ("layer1.weight: the file has shape (64, 32),
// the network (64, 64)").
//
// Names: layer<i>.<name>, with the names a layer gives its parameters in
// parameter_layout() (dense: weight (out x in) and bias (out)); a layer
// without it gets param<j>, flat.

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <zlib.h>

#include "lightloop/core/describe.hpp"
#include "lightloop/core/error.hpp"
#include "lightloop/core/tensor.hpp"
#include "lightloop/io/atomic_file.hpp"
#include "lightloop/io/crc32.hpp"

namespace lightloop {

namespace detail {

inline std::string shape_text(const std::vector<std::size_t>& shape) {
    std::string out = "(";
    for (std::size_t i = 0; i < shape.size(); ++i) {
        out += (i ? ", " : "") + std::to_string(shape[i]);
    }
    return out + (shape.size() == 1 ? ",)" : ")");
}

inline std::size_t element_count(const std::vector<std::size_t>& shape) {
    std::size_t n = 1;
    for (const std::size_t d : shape) {
        n *= d;
    }
    return n;
}

// ---- ZIP, the parts numpy's archives use ----------------------------------

inline void put16(std::string& out, std::uint32_t v) {
    out.push_back(static_cast<char>(v & 0xff));
    out.push_back(static_cast<char>((v >> 8) & 0xff));
}
inline void put32(std::string& out, std::uint32_t v) {
    put16(out, v & 0xffff);
    put16(out, v >> 16);
}

inline std::uint32_t crc_of(std::string_view bytes) {
    return crc32_of(std::as_bytes(std::span(bytes.data(), bytes.size())));
}

/// Raw deflate (no zlib header), as ZIP's method 8 stores a member.
inline std::string deflate_raw(const std::string& name, const std::string& data) {
    z_stream z{};
    if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY) !=
        Z_OK) {
        throw data_error("lightloop: " + name + ": zlib could not start deflating");
    }
    std::string out(deflateBound(&z, static_cast<uLong>(data.size())), '\0');
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
    z.avail_in = static_cast<uInt>(data.size());
    z.next_out = reinterpret_cast<Bytef*>(out.data());
    z.avail_out = static_cast<uInt>(out.size());
    const int status = deflate(&z, Z_FINISH);
    out.resize(z.total_out);
    deflateEnd(&z);
    if (status != Z_STREAM_END) {
        throw data_error("lightloop: " + name + ": zlib could not deflate it");
    }
    return out;
}

/// A ZIP archive of stored members, as numpy.savez writes, or deflated ones,
/// as numpy.savez_compressed does.
class zip_writer {
public:
    void add(const std::string& name, const std::string& data, bool deflated = false) {
        constexpr std::uint64_t limit = 0xfffffffeULL;
        const auto too_large = [&] {
            return data_error("lightloop: " + name + ": too large for a ZIP archive without ZIP64");
        };
        if (data.size() > limit || bytes_.size() > limit || name.size() > 0xffff) {
            throw too_large();
        }
        const std::uint32_t crc = crc_of(data);
        const auto offset = static_cast<std::uint32_t>(bytes_.size());
        const auto size = static_cast<std::uint32_t>(data.size());
        const std::string packed = deflated ? deflate_raw(name, data) : std::string{};
        const std::string& body = deflated ? packed : data;
        if (body.size() > limit) { // incompressible data near the limit grows
            throw too_large();
        }
        const auto stored = static_cast<std::uint32_t>(body.size());
        const std::uint32_t method = deflated ? 8 : 0;
        // Local file header; time 00:00, date 1980-01-01.
        put32(bytes_, 0x04034b50);
        for (const std::uint32_t v : {20u, 0u, method, 0u, 0x21u}) { // version, flags, ..., date
            put16(bytes_, v);
        }
        put32(bytes_, crc);
        put32(bytes_, stored);
        put32(bytes_, size);
        put16(bytes_, static_cast<std::uint32_t>(name.size()));
        put16(bytes_, 0);
        bytes_ += name;
        bytes_ += body;
        // Its central directory entry.
        put32(central_, 0x02014b50);
        for (const std::uint32_t v : {20u, 20u, 0u, method, 0u, 0x21u}) {
            put16(central_, v);
        }
        put32(central_, crc);
        put32(central_, stored);
        put32(central_, size);
        put16(central_, static_cast<std::uint32_t>(name.size()));
        for (int i = 0; i < 4; ++i) { // extra, comment, disk, internal attributes
            put16(central_, 0);
        }
        put32(central_, 0); // external attributes
        put32(central_, offset);
        central_ += name;
        ++count_;
    }

    /// The archive: members, central directory, end record.
    std::string finish() const {
        if (count_ > 0xffff || bytes_.size() + central_.size() > 0xfffffffeULL) {
            throw data_error("lightloop: too many or too large arrays for a ZIP archive");
        }
        std::string out = bytes_ + central_;
        put32(out, 0x06054b50);
        put16(out, 0);
        put16(out, 0);
        put16(out, static_cast<std::uint32_t>(count_));
        put16(out, static_cast<std::uint32_t>(count_));
        put32(out, static_cast<std::uint32_t>(central_.size()));
        put32(out, static_cast<std::uint32_t>(bytes_.size()));
        put16(out, 0);
        return out;
    }

private:
    std::string bytes_;
    std::string central_;
    std::size_t count_ = 0;
};

/// A member of an archive in memory, located but not yet read.
struct zip_member {
    std::uint16_t method = 0;
    std::uint32_t crc = 0;
    std::uint64_t compressed = 0;
    std::uint64_t size = 0;
    std::uint64_t header_offset = 0;
};

/// The central directory of an archive held in memory; every field checked
/// against the archive's bounds. `where` names the file in messages.
class zip_reader {
public:
    zip_reader(std::string_view bytes, std::string where)
      : bytes_(bytes)
      , where_(std::move(where)) {
        // The end record: 22 bytes and a comment of at most 64 KiB.
        if (bytes_.size() < 22) {
            fail("not a ZIP archive (too short)");
        }
        std::size_t end = bytes_.size() - 22;
        const std::size_t lowest = bytes_.size() >= 22 + 0xffff ? bytes_.size() - 22 - 0xffff : 0;
        while (u32(end) != 0x06054b50) {
            if (end == lowest) {
                fail("not a ZIP archive (no end of central directory)");
            }
            --end;
        }
        std::uint64_t entries = u16(end + 10);
        std::uint64_t central_size = u32(end + 12);
        std::uint64_t central_offset = u32(end + 16);
        if (entries == 0xffff || central_size == 0xffffffffULL || central_offset == 0xffffffffULL) {
            // ZIP64: a locator just before the end record points at the
            // ZIP64 end record.
            if (end < 20 || u32(end - 20) != 0x07064b50) {
                fail("ZIP64 end of central directory locator missing");
            }
            const std::uint64_t record = u64(end - 20 + 8);
            need(record, 56);
            if (u32(record) != 0x06064b50) {
                fail("ZIP64 end of central directory record missing");
            }
            entries = u64(record + 32);
            central_size = u64(record + 40);
            central_offset = u64(record + 48);
        }
        need(central_offset, central_size);
        std::uint64_t at = central_offset;
        for (std::uint64_t i = 0; i < entries; ++i) {
            need(at, 46);
            if (u32(at) != 0x02014b50) {
                fail("corrupt central directory");
            }
            zip_member m;
            const std::uint16_t flags = u16(at + 8);
            m.method = u16(at + 10);
            m.crc = u32(at + 16);
            m.compressed = u32(at + 20);
            m.size = u32(at + 24);
            const std::uint64_t name_length = u16(at + 28);
            const std::uint64_t extra_length = u16(at + 30);
            const std::uint64_t comment_length = u16(at + 32);
            m.header_offset = u32(at + 42);
            need(at + 46, name_length + extra_length + comment_length);
            std::string name(bytes_.substr(static_cast<std::size_t>(at + 46),
                                           static_cast<std::size_t>(name_length)));
            if (flags & 1U) {
                fail(name + " is encrypted");
            }
            read_zip64_extra(at + 46 + name_length, extra_length, m);
            if (!members_.emplace(std::move(name), m).second) {
                fail("a member name appears twice");
            }
            at += 46 + name_length + extra_length + comment_length;
        }
    }

    const std::map<std::string, zip_member>& members() const noexcept { return members_; }

    /// A member's bytes (inflated if deflated), at most `limit` of them, CRC
    /// checked.
    std::string read(const std::string& name, const zip_member& m, std::uint64_t limit) const {
        if (m.size > limit) {
            fail(name + " holds " + std::to_string(m.size) + " bytes, more than its array needs");
        }
        need(m.header_offset, 30);
        if (u32(m.header_offset) != 0x04034b50) {
            fail(name + ": corrupt local header");
        }
        const std::uint64_t data =
          m.header_offset + 30 + u16(m.header_offset + 26) + u16(m.header_offset + 28);
        need(data, m.compressed);
        const std::string_view stored =
          bytes_.substr(static_cast<std::size_t>(data), static_cast<std::size_t>(m.compressed));
        std::string out;
        if (m.method == 0) {
            if (m.compressed != m.size) {
                fail(name + ": stored sizes disagree");
            }
            out.assign(stored);
        } else if (m.method == 8) {
            out = inflate_raw(name, stored, m.size);
        } else {
            fail(name + ": compression method " + std::to_string(m.method) +
                 " (only stored and deflate are read)");
        }
        if (crc_of(out) != m.crc) {
            fail(name + ": CRC-32 mismatch (corrupt archive)");
        }
        return out;
    }

    [[noreturn]] void fail(const std::string& what) const {
        throw data_error("lightloop: " + where_ + ": " + what);
    }

private:
    void need(std::uint64_t at, std::uint64_t count) const {
        if (at > bytes_.size() || count > bytes_.size() - at) {
            fail("truncated archive");
        }
    }
    std::uint64_t little(std::uint64_t at, int count) const {
        need(at, static_cast<std::uint64_t>(count));
        std::uint64_t v = 0;
        for (int i = count - 1; i >= 0; --i) {
            v = (v << 8) | static_cast<unsigned char>(
                             bytes_[static_cast<std::size_t>(at) + static_cast<std::size_t>(i)]);
        }
        return v;
    }
    std::uint16_t u16(std::uint64_t at) const { return static_cast<std::uint16_t>(little(at, 2)); }
    std::uint32_t u32(std::uint64_t at) const { return static_cast<std::uint32_t>(little(at, 4)); }
    std::uint64_t u64(std::uint64_t at) const { return little(at, 8); }

    /// The ZIP64 extra field (id 1) holds, in order, whichever of the sizes
    /// and the offset were 0xffffffff in the entry.
    void read_zip64_extra(std::uint64_t at, std::uint64_t length, zip_member& m) const {
        const std::uint64_t end = at + length;
        while (at + 4 <= end) {
            const std::uint16_t id = u16(at);
            const std::uint64_t size = u16(at + 2);
            if (at + 4 + size > end) {
                fail("corrupt extra field");
            }
            if (id == 1) {
                std::uint64_t field = at + 4;
                for (std::uint64_t* v : {&m.size, &m.compressed, &m.header_offset}) {
                    if (*v == 0xffffffffULL) {
                        if (field + 8 > at + 4 + size) {
                            fail("corrupt ZIP64 extra field");
                        }
                        *v = u64(field);
                        field += 8;
                    }
                }
            }
            at += 4 + size;
        }
    }

    std::string inflate_raw(const std::string& name, std::string_view in,
                            std::uint64_t size) const {
        // Deflate expands its input 1032 times at most: a larger size is a
        // corrupt (or hostile) entry, refused before anything is allocated.
        if (size / 1032 > in.size()) {
            fail(name + ": declares " + std::to_string(size) + " bytes inflated from " +
                 std::to_string(in.size()) + " (deflate expands 1032 times at most)");
        }
        std::string out;
        z_stream z{};
        if (inflateInit2(&z, -MAX_WBITS) != Z_OK) {
            fail(name + ": zlib could not start inflating");
        }
        std::size_t in_done = 0;
        std::size_t out_done = 0;
        int status = Z_OK;
        while (status == Z_OK) {
            if (out_done == out.size() && out.size() < size) {
                // The output grows with what the stream gives, up to the
                // declared size: memory follows the data, not the header.
                out.resize(static_cast<std::size_t>(std::min<std::uint64_t>(
                  size, std::max<std::uint64_t>(1U << 16, 2 * out.size()))));
            }
            constexpr std::size_t piece = 1U << 30;
            z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data() + in_done));
            z.avail_in = static_cast<uInt>(std::min(in.size() - in_done, piece));
            z.next_out = reinterpret_cast<Bytef*>(out.data() + out_done);
            z.avail_out = static_cast<uInt>(std::min(out.size() - out_done, piece));
            const uInt in_before = z.avail_in;
            const uInt out_before = z.avail_out;
            status = inflate(&z, Z_NO_FLUSH);
            in_done += in_before - z.avail_in;
            out_done += out_before - z.avail_out;
            if (status == Z_OK && in_before == z.avail_in && out_before == z.avail_out) {
                status = Z_BUF_ERROR; // no progress: truncated or oversized
            }
        }
        inflateEnd(&z);
        if (status != Z_STREAM_END || out_done != size) {
            fail(name + ": corrupt deflate stream");
        }
        return out;
    }

    std::string_view bytes_;
    std::string where_;
    std::map<std::string, zip_member> members_;
};

// ---- NPY ---------------------------------------------------------------------

/// numpy's name for T's dtype: '<f4' for float, '<f8' for double, '<i4' for a
/// 32-bit int ('<' little-endian, '|' for single bytes).
template <class T>
std::string npy_descr() {
    static_assert(std::is_arithmetic_v<T>, "lightloop::npz_writer: arrays of numbers only");
    const char order =
      sizeof(T) == 1 ? '|' : (std::endian::native == std::endian::little ? '<' : '>');
    const char kind = std::is_same_v<T, bool>       ? 'b'
                      : std::is_floating_point_v<T> ? 'f'
                      : std::is_signed_v<T>         ? 'i'
                                                    : 'u';
    return std::string{order, kind} + std::to_string(sizeof(T));
}

/// The bytes of an .npy file holding `values` in C order with `shape`, the
/// same bytes as numpy.save writes: the magic, format 1.0 (2.0 for a header
/// over 64 KiB), the header's dict followed by numpy's room for the first
/// axis to grow in place (21 characters for its length) and padded with
/// spaces and a newline to a multiple of 64 bytes (by 1 to 64 spaces), then
/// the values as they lie in memory.
template <class T>
std::string npy_bytes(std::span<const T> values, const std::vector<std::size_t>& shape) {
    std::string dict = "{'descr': '" + npy_descr<T>() +
                       "', 'fortran_order': False, 'shape': " + shape_text(shape) + ", }";
    if (!shape.empty()) {
        dict.append(21 - std::min<std::size_t>(21, std::to_string(shape[0]).size()), ' ');
    }
    const auto padded = [&](std::size_t prefix) {
        return dict.size() + 1 + 64 - (prefix + dict.size() + 1) % 64;
    };
    const bool wide = padded(10) > 0xffff;
    dict.append(padded(wide ? 12 : 10) - dict.size() - 1, ' ');
    dict.push_back('\n');
    std::string out = "\x93NUMPY";
    out.push_back(static_cast<char>(wide ? 2 : 1));
    out.push_back('\0');
    if (wide) {
        put32(out, static_cast<std::uint32_t>(dict.size()));
    } else {
        put16(out, static_cast<std::uint32_t>(dict.size()));
    }
    out += dict;
    const auto data = std::as_bytes(values);
    out.append(reinterpret_cast<const char*>(data.data()), data.size());
    return out;
}

/// What an .npy header says: little-endian float32 or float64, the order and
/// the shape; the data starts at `data_offset`.
struct npy_header {
    bool is_double = false;
    bool fortran_order = false;
    std::vector<std::size_t> shape;
    std::size_t data_offset = 0;
};

/// The value of `key` in the header's Python dict literal, as text.
inline std::string_view npy_field(std::string_view dict, std::string_view key) {
    const std::string quoted = "'" + std::string(key) + "'";
    const std::size_t at = dict.find(quoted);
    if (at == std::string_view::npos) {
        return {};
    }
    std::size_t begin = dict.find(':', at + quoted.size());
    if (begin == std::string_view::npos) {
        return {};
    }
    ++begin;
    while (begin < dict.size() && dict[begin] == ' ') {
        ++begin;
    }
    std::size_t end = begin;
    if (begin < dict.size() && dict[begin] == '(') {
        end = dict.find(')', begin);
        return end == std::string_view::npos ? std::string_view{}
                                             : dict.substr(begin, end - begin + 1);
    }
    while (end < dict.size() && dict[end] != ',' && dict[end] != '}') {
        ++end;
    }
    return dict.substr(begin, end - begin);
}

inline npy_header parse_npy_header(std::string_view npy, const std::string& name,
                                   const zip_reader& zip) {
    if (npy.size() < 10 || npy.substr(0, 6) != "\x93NUMPY") {
        zip.fail(name + ": not an .npy array");
    }
    const auto major = static_cast<unsigned char>(npy[6]);
    std::size_t length = 0;
    std::size_t start = 0;
    if (major == 1) {
        length = static_cast<unsigned char>(npy[8]) |
                 (static_cast<std::size_t>(static_cast<unsigned char>(npy[9])) << 8);
        start = 10;
    } else if (major == 2 || major == 3) {
        if (npy.size() < 12) {
            zip.fail(name + ": truncated .npy header");
        }
        for (int i = 3; i >= 0; --i) {
            length =
              (length << 8) | static_cast<unsigned char>(npy[8 + static_cast<std::size_t>(i)]);
        }
        start = 12;
    } else {
        zip.fail(name + ": .npy format version " + std::to_string(major) + " is not read");
    }
    if (length > npy.size() - start) {
        zip.fail(name + ": truncated .npy header");
    }
    const std::string_view dict = npy.substr(start, length);
    npy_header h;
    h.data_offset = start + length;
    const std::string_view descr = npy_field(dict, "descr");
    if (descr == "'<f4'") {
        h.is_double = false;
    } else if (descr == "'<f8'") {
        h.is_double = true;
    } else {
        zip.fail(name + ": dtype " + std::string(descr) +
                 " (little-endian float32 '<f4' or float64 '<f8' are read)");
    }
    const std::string_view order = npy_field(dict, "fortran_order");
    if (order != "False" && order != "True") {
        zip.fail(name + ": no fortran_order in the .npy header");
    }
    h.fortran_order = order == "True";
    const std::string_view shape = npy_field(dict, "shape");
    if (shape.size() < 2 || shape.front() != '(' || shape.back() != ')') {
        zip.fail(name + ": no shape in the .npy header");
    }
    std::size_t i = 1;
    while (i + 1 < shape.size()) {
        while (i + 1 < shape.size() && (shape[i] == ' ' || shape[i] == ',')) {
            ++i;
        }
        if (i + 1 >= shape.size()) {
            break;
        }
        std::size_t value = 0;
        const std::size_t first = i;
        while (i + 1 < shape.size() && shape[i] >= '0' && shape[i] <= '9') {
            if (value > (std::numeric_limits<std::size_t>::max() - 9) / 10) {
                zip.fail(name + ": absurd shape");
            }
            value = value * 10 + static_cast<std::size_t>(shape[i] - '0');
            ++i;
        }
        if (i == first) {
            zip.fail(name + ": malformed shape " + std::string(shape));
        }
        h.shape.push_back(value);
    }
    return h;
}

/// Reads member `name` into `out` in C order, converting float64 to T and
/// Fortran order to C order. With `expected`, the shape must equal it (checked
/// before the data is read); without, the member's size bounds the read.
/// Returns the shape.
template <class T>
std::vector<std::size_t> read_npy_member(const zip_reader& zip, const std::string& name,
                                         const zip_member& m,
                                         const std::vector<std::size_t>* expected,
                                         std::vector<T>& out) {
    // Header (numpy pads it to a multiple of 64; a few hundred bytes) plus
    // float64 data.
    const std::uint64_t limit =
      expected ? 65536 + 8 * static_cast<std::uint64_t>(element_count(*expected)) : m.size;
    const std::string npy = zip.read(name + ".npy", m, limit);
    const npy_header h = parse_npy_header(npy, name, zip);
    if (expected && h.shape != *expected) {
        zip.fail(name + ": the file has shape " + shape_text(h.shape) + ", the network " +
                 shape_text(*expected));
    }
    const std::size_t width = h.is_double ? 8 : 4;
    const std::size_t available = (npy.size() - h.data_offset) / width;
    std::size_t count = 1;
    for (const std::size_t d : h.shape) {
        if (d != 0 && count > available / d) {
            zip.fail(name + ": shape " + shape_text(h.shape) +
                     " needs more data than the file has");
        }
        count *= d;
    }
    if (npy.size() - h.data_offset != count * width) {
        zip.fail(name + ": " + std::to_string(npy.size() - h.data_offset) + " bytes of data for " +
                 std::to_string(count) + " values");
    }
    if (h.fortran_order && h.shape.size() > 2) {
        zip.fail(name + ": Fortran order is read for 1-D and 2-D arrays only");
    }
    out.resize(count);
    const char* data = npy.data() + h.data_offset;
    const std::size_t rows = h.shape.size() == 2 ? h.shape[0] : 1;
    const std::size_t cols = h.shape.size() == 2 ? h.shape[1] : count;
    for (std::size_t i = 0; i < count; ++i) {
        // Element i in C order; in Fortran order a 2-D array stores (r, c)
        // at c * rows + r.
        const std::size_t source =
          h.fortran_order && h.shape.size() == 2 ? (i % cols) * rows + i / cols : i;
        if (h.is_double) {
            double v = 0;
            std::memcpy(&v, data + source * 8, 8);
            out[i] = static_cast<T>(v);
        } else {
            float v = 0;
            std::memcpy(&v, data + source * 4, 4);
            out[i] = static_cast<T>(v);
        }
    }
    return h.shape;
}

/// Every parameter of `l` with its name and shape: parameter_layout() where
/// the layer has it, else param<j> with the flat size.
template <class Layer>
std::vector<parameter_shape> layout_of(Layer& l) {
    std::vector<parameter_shape> layout;
    if constexpr (requires { l.parameter_layout(); }) {
        layout = l.parameter_layout();
    } else {
        l.visit_parameters([&](auto values, auto) {
            layout.push_back({"param" + std::to_string(layout.size()), {values.size()}});
        });
    }
    return layout;
}

} // namespace detail

/// Arrays of numbers (float32, float64, integers) under chosen names, written
/// as one .npz file (numpy.load reads it): for weights (save_weights_npz) and
/// anything else a Python user should see beside them.
class npz_writer {
public:
    /// How the arrays are stored: as numpy.savez does (the default), or
    /// deflated, as numpy.savez_compressed does.
    enum class members { stored, deflated };

    npz_writer() = default;
    explicit npz_writer(members how)
      : how_(how) {}

    template <class T>
    void add(const std::string& name, std::span<const T> values,
             const std::vector<std::size_t>& shape) {
        if (detail::element_count(shape) != values.size()) {
            throw shape_error("lightloop::npz_writer: " + name + " has " +
                              std::to_string(values.size()) + " values for shape " +
                              detail::shape_text(shape));
        }
        if (name.empty() || name.find('/') != std::string::npos) {
            throw config_error("lightloop::npz_writer: array name '" + name +
                               "' must be non-empty and without '/'");
        }
        zip_.add(name + ".npy", detail::npy_bytes(values, shape), how_ == members::deflated);
    }
    template <class T>
    void add(const std::string& name, const matrix<T>& m) {
        add(name, std::span<const T>(m.data(), m.size()), {m.shape(0), m.shape(1)});
    }

    /// Writes the archive atomically (the previous file survives a failure).
    void write(const std::filesystem::path& path) const {
        const std::string archive = zip_.finish();
        detail::write_atomically(path, {std::as_bytes(std::span(archive.data(), archive.size()))},
                                 "NumPy archive");
    }

private:
    detail::zip_writer zip_;
    members how_ = members::stored;
};

/// An .npz file read whole: its array names and any float32 / float64 array
/// in it (converted to T, C order). Every read is checked: a data_error names
/// the file, the array and the fault.
class npz_file {
public:
    explicit npz_file(const std::filesystem::path& path)
      : where_(path.string()) {
        std::ifstream in(path, std::ios::binary);
        if (!in) {
            throw data_error("lightloop: " + where_ + ": cannot open NumPy archive");
        }
        bytes_.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
        zip_.emplace(bytes_, where_);
    }

    /// The arrays' names (members without their ".npy"), sorted.
    std::vector<std::string> names() const {
        std::vector<std::string> out;
        for (const auto& [member, m] : zip_->members()) {
            if (member.size() > 4 && member.ends_with(".npy")) {
                out.push_back(member.substr(0, member.size() - 4));
            }
        }
        return out;
    }

    /// Array `name` as (shape, values in C order).
    template <class T>
    std::pair<std::vector<std::size_t>, std::vector<T>> array(const std::string& name) const {
        const auto found = zip_->members().find(name + ".npy");
        if (found == zip_->members().end()) {
            zip_->fail(name + " is not in the file");
        }
        std::vector<T> values;
        auto shape = detail::read_npy_member(*zip_, name, found->second, nullptr, values);
        return {std::move(shape), std::move(values)};
    }

    /// A 2-D array as a matrix.
    template <class T>
    matrix<T> matrix_array(const std::string& name) const {
        auto [shape, values] = array<T>(name);
        if (shape.size() != 2) {
            zip_->fail(name + " has shape " + detail::shape_text(shape) + ", not a matrix");
        }
        auto m = matrix<T>::from_shape({shape[0], shape[1]});
        std::copy(values.begin(), values.end(), m.begin());
        return m;
    }

    const detail::zip_reader& archive() const { return *zip_; }

private:
    std::string where_;
    std::string bytes_;
    std::optional<detail::zip_reader> zip_;
};

/// Writes every layer's parameters to `path` as layer<i>.<name> arrays
/// (dense: layer0.weight, (out x in), and layer0.bias), in the network's
/// scalar type; stored as numpy.savez does, or deflated on request.
template <class Network>
void save_weights_npz(Network& net, const std::filesystem::path& path,
                      npz_writer::members how = npz_writer::members::stored) {
    using T = typename Network::value_type;
    npz_writer out(how);
    net.visit_layers([&](auto& l, std::size_t index) {
        const auto layout = detail::layout_of(l);
        std::size_t j = 0;
        l.visit_parameters([&](auto values, auto) {
            if (j >= layout.size() || detail::element_count(layout[j].shape) != values.size()) {
                throw shape_error("lightloop::save_weights_npz: layer " + std::to_string(index) +
                                  "'s parameter_layout() does not match what visit_parameters "
                                  "visits (tensor " +
                                  std::to_string(j) + ")");
            }
            const parameter_shape& p = layout[j++];
            out.add("layer" + std::to_string(index) + "." + p.name,
                    std::span<const T>(values.data(), values.size()), p.shape);
        });
    });
    out.write(path);
}

/// Reads `path` (save_weights_npz's layout, or numpy.savez /
/// savez_compressed of the same names and shapes) into `net`. Every array
/// is read and checked first; on any mismatch or fault a data_error names it
/// and the network is unchanged.
template <class Network>
void load_weights_npz(Network& net, const std::filesystem::path& path) {
    using T = typename Network::value_type;
    const npz_file file(path);
    const detail::zip_reader& zip = file.archive();
    std::map<std::string, bool> used;
    for (const auto& [name, member] : zip.members()) {
        used[name] = false;
    }
    std::vector<std::vector<T>> staged;
    net.visit_layers([&](auto& l, std::size_t index) {
        for (const parameter_shape& p : detail::layout_of(l)) {
            const std::string name = "layer" + std::to_string(index) + "." + p.name;
            const auto found = zip.members().find(name + ".npy");
            if (found == zip.members().end()) {
                zip.fail(name + " is not in the file (the network has " + name + " of shape " +
                         detail::shape_text(p.shape) + ")");
            }
            used[found->first] = true;
            staged.emplace_back();
            detail::read_npy_member(zip, name, found->second, &p.shape, staged.back());
        }
    });
    for (const auto& [name, was_used] : used) {
        if (!was_used) {
            zip.fail("the file has " + name + ", which the network does not");
        }
    }
    // A layer whose parameter_layout() disagrees with visit_parameters is
    // refused before anything is written.
    std::size_t k = 0;
    bool fits = true;
    net.visit_layers([&](auto& l, std::size_t) {
        l.visit_parameters([&](auto values, auto) {
            fits = fits && k < staged.size() && staged[k].size() == values.size();
            ++k;
        });
    });
    if (!fits || k != staged.size()) {
        throw shape_error("lightloop::load_weights_npz: a layer's parameter_layout() does not "
                          "match what its visit_parameters visits");
    }
    k = 0;
    net.visit_layers([&](auto& l, std::size_t) {
        l.visit_parameters([&](auto values, auto) {
            std::copy(staged[k].begin(), staged[k].end(), values.begin());
            ++k;
        });
    });
}

} // namespace lightloop
