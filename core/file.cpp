// Safe reads and atomic writes (see file.hpp).

#include "core/file.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <optional>
#include <utility>

namespace loom::io {

namespace {

/// A system call, repeated while a signal interrupts it (a program's timer,
/// a profiler: what libFuzzer's SIGALRM did to std::filesystem::copy_file).
template <class Call>
auto retry_interrupted(Call call) {
  decltype(call()) r;
  do r = call();
  while (r < 0 && errno == EINTR);
  return r;
}

/// Closes a descriptor on every exit.
struct Fd {
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

const char* kind_of(mode_t m) {
  if (S_ISDIR(m)) return "a directory";
  if (S_ISFIFO(m)) return "a FIFO";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  if (S_ISSOCK(m)) return "a socket";
  return "not a regular file";
}

std::string dir_of(const std::string& p) {
  const size_t slash = p.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : p.substr(0, slash);
}

std::string base_of(const std::string& p) {
  const size_t slash = p.rfind('/');
  return slash == std::string::npos ? p : p.substr(slash + 1);
}

/// `path` with its symlinks followed (up to 40, like the kernel), so a write
/// replaces the link's target and keeps the link. The result may not exist.
std::string resolve_links(const std::string& path) {
  std::string p = path;
  for (int hops = 0; hops < 40; ++hops) {
    struct stat st {};
    if (::lstat(p.c_str(), &st) != 0 || !S_ISLNK(st.st_mode)) return p;
    std::string target(size_t(PATH_MAX), '\0');
    const ssize_t n = ::readlink(p.c_str(), target.data(), target.size());
    if (n < 0) fail("cannot write '", path, "': cannot read the symlink '", p, "': ", std::strerror(errno));
    target.resize(size_t(n));
    p = target.empty() || target[0] == '/' ? target : dir_of(p) + "/" + target;
  }
  fail("cannot write '", path, "': too many levels of symbolic links");
}

/// Removes temporaries of `target` whose writer process no longer exists
/// (a save killed midway); those of live processes are left alone.
void remove_stale_temporaries(const std::string& target) {
  const std::string dir = dir_of(target), prefix = base_of(target) + ".tmp.";
  DIR* d = ::opendir(dir.c_str());
  if (!d) return;
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    long pid = 0;
    unsigned long long n = 0;
    int used = 0;
    if (std::sscanf(name.c_str() + prefix.size(), "%ld.%llu%n", &pid, &n, &used) != 2 ||
        prefix.size() + size_t(used) != name.size() || pid <= 0 || pid == long(::getpid()))
      continue;
    if (::kill(pid_t(pid), 0) == 0 || errno != ESRCH) continue;  // alive (or not ours to judge)
    const std::string p = dir + "/" + name;
    struct stat st {};
    if (::lstat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode)) ::unlink(p.c_str());
  }
  ::closedir(d);
}

}  // namespace

std::vector<uint8_t> read_file(const std::string& path, size_t max_bytes) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer; the type is checked before any read.
  Fd f{retry_interrupted([&] { return ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC); })};
  LOOM_CHECK(f.fd >= 0, "cannot open '", path, "': ", std::strerror(errno));
  struct stat st {};
  LOOM_CHECK(::fstat(f.fd, &st) == 0, "cannot read '", path, "': ", std::strerror(errno));
  LOOM_CHECK(S_ISREG(st.st_mode), "cannot read '", path, "': ", kind_of(st.st_mode), ", not a regular file");
  LOOM_CHECK(::fcntl(f.fd, F_SETFL, 0) == 0, "cannot read '", path, "': ", std::strerror(errno));
  LOOM_CHECK(uint64_t(st.st_size) <= max_bytes, "cannot read '", path, "': ", st.st_size, " bytes, more than the ",
             max_bytes, " this reader accepts");
  return guard_memory(path, [&] {
    std::vector<uint8_t> bytes(size_t(st.st_size));
    size_t done = 0;
    uint8_t more[1 << 12];  // past the size fstat gave: the file may have grown since
    while (true) {
      const bool full = done == bytes.size();
      const ssize_t n = retry_interrupted([&] {
        return full ? ::read(f.fd, more, sizeof more) : ::read(f.fd, bytes.data() + done, bytes.size() - done);
      });
      LOOM_CHECK(n >= 0, "error reading '", path, "': ", std::strerror(errno));
      if (n == 0) break;
      if (full) {
        LOOM_CHECK(bytes.size() + size_t(n) <= max_bytes, "cannot read '", path, "': more than the ", max_bytes,
                   " bytes this reader accepts");
        bytes.insert(bytes.end(), more, more + n);
      }
      done += size_t(n);
    }
    return bytes;
  });
}

std::string temporary_name(const std::string& target, long pid, uint64_t n) {
  return target + ".tmp." + std::to_string(pid) + "." + std::to_string(n);
}

namespace {

/// The regular file a write of `path` replaces (links followed), and whether it exists.
std::pair<std::string, std::optional<struct stat>> write_target(const std::string& path) {
  LOOM_CHECK(!path.empty(), "write: empty file name");
  std::string target = resolve_links(path);
  struct stat st {};
  if (::stat(target.c_str(), &st) != 0) return {std::move(target), std::nullopt};
  LOOM_CHECK(S_ISREG(st.st_mode), "cannot write '", path, "': it is ", kind_of(st.st_mode),
             ", not a regular file; refusing to replace it");
  return {std::move(target), st};
}

/// A new temporary beside `target`, opened for writing (its name in `tmp`).
Fd create_temporary(const std::string& path, const std::string& target, const std::optional<struct stat>& st,
                    std::string& tmp) {
  static std::atomic<uint64_t> counter{0};
  tmp = temporary_name(target, long(::getpid()), counter++);
  const int fd = retry_interrupted([&] {
    return ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, st ? st->st_mode & 07777 : 0644);
  });
  LOOM_CHECK(fd >= 0, "cannot write '", path, "': cannot create '", tmp, "': ", std::strerror(errno));
  return Fd{fd};
}

}  // namespace

void check_writable(const std::string& path) {
  const auto [target, st] = write_target(path);
  std::string tmp;
  create_temporary(path, target, st, tmp);
  ::unlink(tmp.c_str());
}

void write_file_atomically(const std::string& path, std::string_view bytes) {
  const auto [target, st] = write_target(path);
  const bool exists = st.has_value();
  remove_stale_temporaries(target);
  std::string tmp;
  Fd f = create_temporary(path, target, st, tmp);
  auto abandon = [&](const char* what) {
    const int e = errno;
    ::unlink(tmp.c_str());
    fail("cannot write '", path, "': ", what, ": ", std::strerror(e));
  };
  if (exists) (void)::fchmod(f.fd, st->st_mode & 07777);  // keep the target's permissions (despite the umask)
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t w = retry_interrupted([&] { return ::write(f.fd, bytes.data() + done, bytes.size() - done); });
    if (w <= 0) abandon("write failed");
    done += size_t(w);
  }
  if (retry_interrupted([&] { return ::fsync(f.fd); }) != 0) abandon("fsync failed");
  const int fd = f.fd;
  f.fd = -1;
  if (::close(fd) != 0) abandon("close failed");
  if (std::rename(tmp.c_str(), target.c_str()) != 0) abandon(("rename from '" + tmp + "' failed").c_str());
  // Make the rename itself durable (best effort: some filesystems refuse).
  Fd dir{::open(dir_of(target).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  if (dir.fd >= 0) (void)::fsync(dir.fd);
}

}  // namespace loom::io
