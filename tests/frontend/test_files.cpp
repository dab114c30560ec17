// Files as an adversarial user leaves them: FIFOs and devices where files are
// expected, symlinks, temporaries of a killed save, headers that declare
// absurd sizes, and data loaders asked for absurd batches. Every reader and
// writer goes through core/file.hpp, so each case is checked on the real
// readers (IDX, safetensors) and writers (checkpoints, IDX, session exports).

#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

// util.hpp (and core/philox.hpp in it) before ops/ops.hpp: philox must see the C math functions.
#include "tests/util.hpp"

#include "frontend/checkpoint.hpp"
#include "frontend/data.hpp"
#include "frontend/io.hpp"

using namespace loom;
using loom::test::contains;
using loom::test::error_of;
using loom::test::TempDir;

namespace fs = std::filesystem;

namespace {

void write_bytes(const std::string& path, const std::string& b) {
  std::ofstream f(path, std::ios::binary);
  f << b;
}

std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

std::string safetensors(const std::string& json, size_t data_bytes) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[size_t(i)] = char((json.size() >> (8 * i)) & 0xff);
  return out + json + std::string(data_bytes, '\0');
}

/// The pid of a process that has exited (and been reaped).
long dead_pid() {
  pid_t p = ::fork();
  if (p == 0) ::_exit(0);
  int status = 0;
  ::waitpid(p, &status, 0);
  return long(p);
}

long max_rss_mb() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1024;
}

}  // namespace

TEST_SUITE("frontend/files") {
  TEST_CASE("readers refuse FIFOs and devices without blocking") {
    TempDir dir;
    const std::string fifo = dir / "pipe";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    CHECK(contains(error_of([&] { data::read_idx(fifo); }), "'" + fifo + "': a FIFO, not a regular file"));
    CHECK(contains(error_of([&] { checkpoint::read(fifo); }), "a FIFO, not a regular file"));
    CHECK(contains(error_of([&] { checkpoint::read_metadata(fifo); }), "a FIFO"));
    CHECK(contains(error_of([&] { data::read_idx("/dev/zero"); }), "'/dev/zero': a character device"));
  }

  TEST_CASE("writers refuse to replace what is not a regular file") {
    TempDir dir;
    const std::string fifo = dir / "pipe";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    const auto one = std::vector<std::pair<std::string, NDArray>>{{"a", NDArray::from<float>({1})}};
    CHECK(contains(error_of([&] { checkpoint::write(fifo, one); }), "it is a FIFO, not a regular file; refusing"));
    struct stat st {};
    REQUIRE(::lstat(fifo.c_str(), &st) == 0);
    CHECK(S_ISFIFO(st.st_mode));  // still the FIFO
    CHECK(contains(error_of([&] { data::write_idx("/dev/null", NDArray::from<float>({1})); }),
                   "'/dev/null': it is a character device"));
    CHECK(contains(error_of([&] { checkpoint::write(dir.path.string(), one); }), "a directory"));
    int files = 0;
    for (auto& e : fs::directory_iterator(dir.path)) files += e.is_regular_file();
    CHECK(files == 0);  // no temporary left behind
  }

  TEST_CASE("check_writable refuses what a save would refuse, before it, and leaves nothing behind") {
    TempDir dir;
    const std::string fifo = dir / "pipe", missing = dir / "no/such/dir/m.safetensors";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    CHECK(contains(error_of([&] { io::check_writable(fifo); }), "'" + fifo + "': it is a FIFO"));
    CHECK(contains(error_of([&] { io::check_writable(dir.path.string()); }), "a directory, not a regular file"));
    const std::string err = error_of([&] { io::check_writable(missing); });
    CHECK(contains(err, "cannot write '" + missing + "'"));
    CHECK(contains(err, "No such file or directory"));
    CHECK(contains(error_of([&] { io::check_writable(""); }), "empty file name"));
    const std::string fresh = dir / "fresh.safetensors", kept = dir / "kept.safetensors";
    write_bytes(kept, "a user's file");
    CHECK(error_of([&] { io::check_writable(fresh); }).empty());
    CHECK(error_of([&] { io::check_writable(kept); }).empty());
    CHECK(read_all(kept) == "a user's file");
    std::vector<std::string> names;
    for (auto& e : fs::directory_iterator(dir.path)) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    CHECK(names == std::vector<std::string>{"kept.safetensors", "pipe"});  // no probe left, nothing created
  }

  TEST_CASE("a save through a symlink replaces the link's target and keeps the link") {
    TempDir dir;
    fs::create_directories(dir.path / "real");
    const std::string target = dir / "real/model.safetensors", link = dir / "model.safetensors";
    checkpoint::write(target, {{"a", NDArray::from<float>({1})}});
    fs::create_symlink("real/model.safetensors", link);  // relative, as users make them
    checkpoint::write(link, {{"a", NDArray::from<float>({2})}});
    CHECK(fs::is_symlink(link));
    CHECK(checkpoint::read(target)["a"].to_vector<float>() == std::vector<float>{2});
    // A chain of links, and a dangling one: the final target is written.
    fs::create_symlink("model.safetensors", dir / "chain");
    fs::create_symlink(dir / "real/new.safetensors", dir / "dangling");
    checkpoint::write(dir / "chain", {{"a", NDArray::from<float>({3})}});
    checkpoint::write(dir / "dangling", {{"a", NDArray::from<float>({4})}});
    CHECK(checkpoint::read(target)["a"].to_vector<float>() == std::vector<float>{3});
    CHECK(fs::is_symlink(dir / "dangling"));
    CHECK(checkpoint::read(dir / "real/new.safetensors")["a"].to_vector<float>() == std::vector<float>{4});
    fs::create_symlink("loop_b", dir / "loop_a");
    fs::create_symlink("loop_a", dir / "loop_b");
    CHECK(contains(error_of([&] { checkpoint::write(dir / "loop_a", {{"a", NDArray::from<float>({1})}}); }),
                   "too many levels of symbolic links"));
  }

  TEST_CASE("a save removes the temporaries a killed save left, and only those") {
    TempDir dir;
    const std::string p = dir / "c.safetensors";
    const std::string stale = io::temporary_name(p, dead_pid(), 7), live = io::temporary_name(p, long(::getppid()), 3);
    const std::string other = io::temporary_name(dir / "other.safetensors", dead_pid(), 1);
    for (const std::string& t : {stale, live, other}) write_bytes(t, "half a checkpoint");
    write_bytes(dir / "c.safetensors.tmp.notes", "a user's file");
    checkpoint::write(p, {{"a", NDArray::from<float>({5})}});
    CHECK(!fs::exists(stale));
    CHECK(fs::exists(live));   // its writer may still be running
    CHECK(fs::exists(other));  // another target's business
    CHECK(fs::exists(dir / "c.safetensors.tmp.notes"));
    CHECK(checkpoint::read(p)["a"].to_vector<float>() == std::vector<float>{5});
  }

  TEST_CASE("a save keeps the file's permissions") {
    TempDir dir;
    const std::string p = dir / "c.safetensors";
    checkpoint::write(p, {{"a", NDArray::from<float>({1})}});
    fs::permissions(p, fs::perms::owner_read | fs::perms::owner_write);
    checkpoint::write(p, {{"a", NDArray::from<float>({2})}});
    CHECK(fs::status(p).permissions() == (fs::perms::owner_read | fs::perms::owner_write));
  }

  TEST_CASE("an IDX header cannot make the reader allocate what the file cannot hold") {
    TempDir dir;
    // 16 GiB of ubyte declared by a few bytes of gzip: refused before inflating or allocating.
    std::string header{0, 0, 8, 3};
    for (uint32_t d : {16384u, 1024u, 1024u})
      for (int s = 24; s >= 0; s -= 8) header.push_back(char(d >> s));
    const std::string p = dir / "bomb.gz";
    const std::vector<uint8_t> z = io::gzip(header + std::string(4096, '\0'));
    write_bytes(p, std::string(z.begin(), z.end()));
    const long before = max_rss_mb();
    CHECK(contains(error_of([&] { data::read_idx(p); }),
                   "declares ubyte[16384,1024,1024] (17179869200 bytes), more than " + std::to_string(z.size()) +
                       " bytes of gzip data can hold"));
    CHECK(max_rss_mb() - before < 64);
    // Dims whose bytes exceed any machine's memory, raw: refused from the header alone.
    std::string raw{0, 0, 0x0E, 2, 0x7F, 0, 0, 0, 0x7F, 0, 0, 0};
    write_bytes(dir / "huge", raw);
    CHECK(contains(error_of([&] { data::read_idx(dir / "huge"); }), "needs more than 2^48 bytes"));
  }

  TEST_CASE("a 100 MiB safetensors header of [0,0,0,...] costs no more than its bytes") {
    TempDir dir;
    // head + body repeated + tail, a header of about 100 MiB, written without holding it in memory.
    auto write_header = [](const std::string& path, const std::string& head, const std::string& body,
                           const std::string& tail, const std::string& data) {
      const size_t reps = ((size_t(100) << 20) - head.size() - tail.size()) / body.size();
      const uint64_t n = head.size() + reps * body.size() + tail.size();
      std::ofstream f(path, std::ios::binary);
      for (int i = 0; i < 8; ++i) f.put(char((n >> (8 * i)) & 0xff));
      f << head;
      const std::string block = [&] {
        std::string b;
        for (int i = 0; i < 4096; ++i) b += body;
        return b;
      }();
      for (size_t i = 0; i < reps / 4096; ++i) f << block;
      for (size_t i = 0; i < reps % 4096; ++i) f << body;
      f << tail << data;
    };
    write_header(dir / "dims", R"({"a":{"dtype":"U8","shape":[)", "0,", R"(0],"data_offsets":[0,0]}})", "");
    const long before = max_rss_mb();
    CHECK(contains(error_of([&] { checkpoint::read(dir / "dims"); }), "tensor 'a' has more than 64 dims"));
    // An unknown field holding such an array (nested, too) is skipped without being stored.
    write_header(dir / "junk", R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"junk":[)", "[0],", "0]}}",
                 std::string(1, '\1'));
    CHECK(checkpoint::read(dir / "junk")["a"].shape() == Shape{1});
    // The file is read once (100 MiB); a document tree of it would take gigabytes.
    CHECK(max_rss_mb() - before < 400);
    CHECK(contains(error_of([&] {
                     checkpoint::read(dir / "none");
                   }),
                   "cannot open"));
    write_bytes(dir / "big", safetensors(R"({"a":{"dtype":"F64","shape":[1099511627776,1099511627776],"data_offsets":[0,0]}})", 0));
    CHECK(contains(error_of([&] { checkpoint::read(dir / "big"); }), "tensor 'a': shape [1099511627776,1099511627776]"));
    write_bytes(dir / "deep", safetensors(R"({"a":{"dtype":"U8","shape":[[1]],"data_offsets":[0,1]}})", 1));
    CHECK(contains(error_of([&] { checkpoint::read(dir / "deep"); }), "bad shape entry"));
    write_bytes(dir / "meta", safetensors(R"({"__metadata__":{"k":{"x":1}}})", 0));
    CHECK(contains(error_of([&] { checkpoint::read(dir / "meta"); }), "__metadata__ value 'k' is not a string"));
  }

  TEST_CASE("session exports are atomic writes too") {
    TempDir dir;
    Graph g;
    Tensor x = g.placeholder("x", {2});
    Session s(g, {.profile = true});
    s.run1(x * 2.0, {{x, NDArray::zeros({2})}});
    const std::string fifo = dir / "trace.json";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    CHECK(contains(error_of([&] { s.export_trace(fifo); }), "a FIFO, not a regular file"));
    s.export_dot(dir / "plan.dot");
    CHECK(contains(read_all(dir / "plan.dot"), "digraph plan"));
  }

  TEST_CASE("data loaders: batch sizes up to INT64_MAX give whole epochs") {
    NDArray x = NDArray::arange(10, int64);
    data::DataLoader all(std::make_shared<data::TensorDataset>(std::vector<NDArray>{x}), {.batch_size = INT64_MAX});
    CHECK(all.size() == 1);
    int64_t seen = 0;
    for (const data::Batch& b : all.epoch(0)) seen += b[0].shape()[0];
    CHECK(seen == 10);
    data::DataLoader dropped(std::make_shared<data::TensorDataset>(std::vector<NDArray>{x}),
                             {.batch_size = INT64_MAX, .drop_last = true});
    CHECK(dropped.size() == 0);
    data::DataLoader almost(std::make_shared<data::TensorDataset>(std::vector<NDArray>{x}), {.batch_size = INT64_MAX - 1});
    CHECK(almost.size() == 1);
  }
}
