#pragma once
// The Python that runs the benchmark peers (PyTorch, JAX): $LOOM_PYTHON, set
// by `./build.sh bench-*` to the venv it installs them in; else the venv's
// default place; else python3 from PATH.

#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "core/error.hpp"

extern char** environ;

namespace loom::samples {

inline std::string peer_python() {
  if (const char* p = std::getenv("LOOM_PYTHON"); p && *p) return p;
  const std::string venv = std::string(LOOM_SAMPLES_DIR) + "/../build/venv/bin/python";
  if (std::filesystem::exists(venv)) return venv;
  return "python3";
}

/// The peers' environment: this process's without LD_LIBRARY_PATH. A user may
/// set it for loom's CUDA libraries, but PyTorch would then load those (an
/// older system cuDNN, say, which its LSTM refuses) instead of its wheel's.
inline std::vector<char*> peer_environment() {
  std::vector<char*> env;
  for (char** e = environ; *e; ++e)
    if (std::strncmp(*e, "LD_LIBRARY_PATH=", 16) != 0) env.push_back(*e);
  env.push_back(nullptr);
  return env;
}

/// The shell words that start `python` as a peer (for popen), in the same environment.
inline std::string peer_shell(const std::string& python) { return "env -u LD_LIBRARY_PATH '" + python + "'"; }

/// A peer process (a PyTorch or JAX script run with --serve) speaking a line
/// protocol: it greets with a JSON line holding "ready", then answers each
/// command line with one JSON line; "quit" ends it. `who` names the peer in
/// errors ("PyTorch").
class Peer {
 public:
  Peer(const std::vector<std::string>& args, std::string who) : who_(std::move(who)) {
    int in[2], out[2];
    LOOM_CHECK(::pipe(in) == 0 && ::pipe(out) == 0, "peer ", who_, ": pipe failed");
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    for (int fd : {in[0], in[1], out[0], out[1]}) posix_spawn_file_actions_addclose(&fa, fd);
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    std::vector<char*> env = peer_environment();
    int rc = posix_spawnp(&pid_, argv[0], &fa, nullptr, argv.data(), env.data());
    posix_spawn_file_actions_destroy(&fa);
    ::close(in[0]);
    ::close(out[1]);
    if (rc != 0) {
      ::close(in[1]);
      ::close(out[0]);
      fail("cannot start ", who_, " ('", args[0], "'): ", std::strerror(rc));
    }
    to_ = ::fdopen(in[1], "w");
    from_ = ::fdopen(out[0], "r");
    greeting_ = read_line();
    LOOM_CHECK(greeting_.find("\"ready\"") != std::string::npos, "unexpected greeting from ", who_, ": ", greeting_);
  }
  Peer(const Peer&) = delete;
  Peer& operator=(const Peer&) = delete;
  ~Peer() {
    if (to_) {
      std::fputs("quit\n", to_);
      std::fclose(to_);
    }
    if (from_) std::fclose(from_);
    int status = 0;
    if (pid_ > 0) ::waitpid(pid_, &status, 0);
  }
  /// Sends one command line; returns the answer line.
  std::string request(const std::string& line) {
    std::fputs((line + "\n").c_str(), to_);
    std::fflush(to_);
    return read_line();
  }
  const std::string& greeting() const { return greeting_; }

 private:
  std::string read_line() {
    char* buf = nullptr;
    size_t cap = 0;
    ssize_t n = ::getline(&buf, &cap, from_);
    std::string s = n > 0 ? std::string(buf, size_t(n)) : std::string();
    std::free(buf);
    LOOM_CHECK(n > 0, "the ", who_,
               " process ended early (its error is above; the ./build.sh bench-* commands install the peers)");
    return s;
  }
  std::string who_, greeting_;
  pid_t pid_ = -1;
  FILE* to_ = nullptr;
  FILE* from_ = nullptr;
};

/// CPU seconds this process has used (user + system, all threads).
inline double cpu_seconds() {
  struct rusage u {};
  ::getrusage(RUSAGE_SELF, &u);
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + 1e-6 * double(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

/// The median of v (v not empty).
inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/// A comma list of a peer's thread counts (an option's value, e.g. "1,2"), each in [0, 4096] (0: the peer's
/// default, all cores).
inline std::vector<int> thread_counts(const std::string& list, const char* option) {
  std::vector<int> out;
  for (size_t a = 0, b; a < list.size(); a = b + 1) {
    b = std::min(list.find(',', a), list.size());
    const std::string item = list.substr(a, b - a);
    char* end = nullptr;
    const long n = std::strtol(item.c_str(), &end, 10);
    LOOM_CHECK(!item.empty() && *end == '\0' && n >= 0 && n <= 4096, option, ": '", item,
               "' is not a thread count in [0, 4096]");
    out.push_back(int(n));
  }
  LOOM_CHECK(!out.empty(), option, " is empty");
  return out;
}

/// The path of a companion script: `given`, else samples/<name> found from
/// the working directory or from the executable's place in the build tree.
inline std::string find_script(const std::string& given, const std::string& name) {
  if (!given.empty()) return given;
  namespace fs = std::filesystem;
  std::vector<fs::path> candidates{fs::path(LOOM_SAMPLES_DIR) / name, fs::path("samples") / name};
  for (const fs::path& p : candidates)
    if (fs::exists(p)) return fs::weakly_canonical(p).string();
  fail("cannot find samples/", name, " (run from the repository root or pass --script)");
}

}  // namespace loom::samples
