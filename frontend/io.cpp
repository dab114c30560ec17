// File helpers: whole-file reads, atomic writes, gzip through zlib.

#include "frontend/io.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "core/error.hpp"

namespace loom::io {

std::vector<uint8_t> read_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  LOOM_CHECK(fd >= 0, "cannot open '", path, "': ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    int e = errno;
    bool stat_ok = ::fstat(fd, &st) == 0;
    ::close(fd);
    fail("cannot read '", path, "': ", stat_ok ? "not a regular file" : std::strerror(e));
  }
  std::vector<uint8_t> bytes;
  bytes.reserve(size_t(st.st_size));
  uint8_t buf[1 << 16];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      ::close(fd);
      fail("error reading '", path, "': ", std::strerror(e));
    }
    if (n == 0) break;
    bytes.insert(bytes.end(), buf, buf + n);
  }
  ::close(fd);
  return bytes;
}

void write_file_atomically(const std::string& path, std::string_view bytes) {
  LOOM_CHECK(!path.empty(), "write: empty file name");
  static std::atomic<uint64_t> counter{0};
  const std::string tmp = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  LOOM_CHECK(fd >= 0, "cannot write '", path, "': cannot create '", tmp, "': ", std::strerror(errno));
  auto abandon = [&](const char* what) {
    int e = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    fail("cannot write '", path, "': ", what, ": ", std::strerror(e));
  };
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) abandon("write failed");
    done += size_t(w);
  }
  if (::fsync(fd) != 0) abandon("fsync failed");
  if (::close(fd) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    fail("cannot write '", path, "': close failed: ", std::strerror(e));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    fail("cannot write '", path, "': rename from '", tmp, "' failed: ", std::strerror(e));
  }
  // Make the rename itself durable (best effort: some filesystems refuse).
  std::string dir = path.find('/') == std::string::npos ? "." : path.substr(0, path.rfind('/') + 1);
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
}

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
    if (limit && out.size() > limit(out)) {
      error = "holds more data than its header declares";
      break;
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
