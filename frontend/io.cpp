// gzip through zlib.

#include "frontend/io.hpp"

#include <zlib.h>

#include <limits>

#include "core/error.hpp"

namespace loom::io {

bool is_gzip(const std::vector<uint8_t>& b) { return b.size() >= 2 && b[0] == 0x1f && b[1] == 0x8b; }

std::vector<uint8_t> gunzip(const std::vector<uint8_t>& in, const std::string& path,
                            const std::function<size_t(const std::vector<uint8_t>&)>& limit) {
  z_stream z{};
  LOOM_CHECK(inflateInit2(&z, 15 + 16) == Z_OK, "'", path, "': cannot initialize zlib");
  // Ends the stream on every exit, also when `limit` throws.
  struct End {
    z_stream* z;
    ~End() { inflateEnd(z); }
  } end{&z};
  std::vector<uint8_t> out;
  size_t pos = 0;
  int rc = Z_OK;
  std::string error;
  // Members follow each other; each must end properly (Z_STREAM_END).
  while (error.empty()) {
    z.next_in = const_cast<Bytef*>(in.data() + pos);
    size_t avail = in.size() - pos;
    z.avail_in = uInt(std::min<size_t>(avail, 1u << 30));
    uint8_t chunk[1 << 16];
    z.next_out = chunk;
    z.avail_out = sizeof chunk;
    rc = inflate(&z, Z_NO_FLUSH);
    size_t produced = sizeof chunk - z.avail_out;
    out.insert(out.end(), chunk, chunk + produced);
    pos = size_t(reinterpret_cast<const uint8_t*>(z.next_in) - in.data());
    if (limit) {
      const size_t most = limit(out);
      if (out.size() > most) {
        error = "holds more data than its header declares";
        break;
      }
      if (most != std::numeric_limits<size_t>::max() && out.capacity() < most) out.reserve(most);
    }
    if (rc == Z_STREAM_END) {
      if (pos == in.size()) break;
      // Another member, or trailing zero padding (allowed by gzip tools).
      bool zeros = true;
      for (size_t i = pos; i < in.size() && zeros; ++i) zeros = in[i] == 0;
      if (zeros) break;
      if (inflateReset(&z) != Z_OK) error = "cannot reset zlib";
      continue;
    }
    if (rc == Z_OK) continue;
    if (rc == Z_BUF_ERROR) {
      // No progress possible: the input ended inside a member.
      if (produced == 0 && pos == in.size())
        error = "truncated gzip data (unexpected end of file)";
      else if (produced == 0 && avail == in.size() - pos)
        error = "corrupt gzip data (no progress)";
      continue;
    }
    error = std::string("corrupt gzip data (") + (z.msg ? z.msg : "zlib error " + std::to_string(rc)) + ")";
  }
  LOOM_CHECK(error.empty(), "'", path, "': ", error);
  return out;
}

NDArray new_array(const Shape& shape, DType dtype, const std::string& path) {
  try {
    return NDArray::empty(shape, dtype);
  } catch (const Error& e) {
    fail("'", path, "': cannot hold its ", dtype_name(dtype), shape_str(shape), ": ", e.what());
  }
}

std::vector<uint8_t> gzip(std::string_view bytes) {
  z_stream z{};
  LOOM_CHECK(deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK,
             "gzip: cannot initialize zlib");
  std::vector<uint8_t> out(deflateBound(&z, uLong(bytes.size())) + 64);
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data()));
  z.avail_in = uInt(bytes.size());
  z.next_out = out.data();
  z.avail_out = uInt(out.size());
  int rc = deflate(&z, Z_FINISH);
  size_t n = out.size() - z.avail_out;
  deflateEnd(&z);
  LOOM_CHECK(rc == Z_STREAM_END, "gzip: compression failed");
  out.resize(n);
  return out;
}

}  // namespace loom::io
