// The fuzz targets (see targets.hpp). Files are written to a private temporary
// directory and read back through the real readers, so the file layer is
// fuzzed too. An accepted file must round-trip: written by loom's writer and
// read again, it gives the same arrays.

#include "tests/fuzz/targets.hpp"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>

#include "core/autodiff.hpp"
#include "core/philox.hpp"
#include "core/session.hpp"
#include "frontend/checkpoint.hpp"
#include "frontend/data.hpp"
#include "frontend/text.hpp"
#include "ops/ops.hpp"

namespace loom::fuzz {

namespace {

[[noreturn]] void bug(const std::string& what) {
  std::fprintf(stderr, "fuzz: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

/// Runs f; a loom::Error is a normal outcome, anything else a bug.
template <class F>
bool survives(const char* stage, F&& f) {
  try {
    f();
    return true;
  } catch (const Error& e) {
    // Our own asserts start so; file contents quoted later in a message do not count. Missing and
    // mistyped attributes are caught only when read (attrs.hpp) until attribute schemas are checked
    // when nodes are built (issue 15); they are skipped here until then.
    if (std::strncmp(e.what(), "internal error (loom bug)", 25) == 0 && !std::strstr(e.what(), "core/attrs.hpp"))
      bug(std::string(stage) + ": " + e.what());
    return false;
  } catch (const std::exception& e) {
    bug(std::string(stage) + ": not a loom::Error: " + e.what());
  }
}

const std::string& scratch() {
  static const std::string dir = [] {
    auto d = std::filesystem::temp_directory_path() / ("loom_fuzz_" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d.string();
  }();
  return dir;
}

std::string put(const char* name, const uint8_t* data, size_t size) {
  const std::string path = scratch() + "/" + name;
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(data), std::streamsize(size));
  return path;
}

bool same(const NDArray& a, const NDArray& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  NDArray x = a.compact(), y = b.compact();
  return x.nbytes() == 0 || std::memcmp(x.raw(), y.raw(), x.nbytes()) == 0;
}

}  // namespace

int idx(const uint8_t* data, size_t size) {
  const std::string path = put("input.idx", data, size);
  NDArray a;
  if (!survives("read_idx", [&] { a = data::read_idx(path); })) return 0;
  if (a.dtype() == int64 || a.dtype() == boolean) bug("read_idx returned a dtype IDX cannot hold");
  for (bool gz : {false, true}) {
    const std::string again = scratch() + "/again.idx";
    survives("write_idx", [&] { data::write_idx(again, a, gz); });
    NDArray b;
    survives("read_idx (round trip)", [&] { b = data::read_idx(again); });
    if (!same(a, b)) bug("an IDX file does not round-trip");
  }
  return 0;
}

int safetensors(const uint8_t* data, size_t size) {
  const std::string path = put("input.safetensors", data, size);
  std::map<std::string, NDArray> tensors;
  checkpoint::Metadata meta;
  if (!survives("checkpoint::read", [&] { tensors = checkpoint::read(path); })) return 0;
  survives("checkpoint::read_metadata", [&] { meta = checkpoint::read_metadata(path); });
  const std::string again = scratch() + "/again.safetensors";
  survives("checkpoint::write", [&] {
    checkpoint::write(again, std::vector<std::pair<std::string, NDArray>>(tensors.begin(), tensors.end()), meta);
  });
  std::map<std::string, NDArray> back;
  survives("checkpoint::read (round trip)", [&] { back = checkpoint::read(again); });
  if (back.size() != tensors.size()) bug("a safetensors file does not round-trip (tensor count)");
  for (const auto& [name, t] : tensors)
    if (!back.count(name) || !same(t, back.at(name))) bug("tensor '" + name + "' does not round-trip");
  if (checkpoint::read_metadata(again) != meta) bug("metadata does not round-trip");
  return 0;
}

int cifar10(const uint8_t* data, size_t size) {
  const std::string path = put("input.bin", data, size);
  std::pair<NDArray, NDArray> r;
  if (!survives("read_cifar10_batch", [&] { r = data::read_cifar10_batch(path); })) return 0;
  const auto& [images, labels] = r;
  constexpr size_t kRecord = 1 + 3 * 32 * 32;
  const int64_t n = labels.numel();
  if (labels.dtype() != int64 || labels.ndim() != 1 || images.dtype() != uint8 || images.shape() != Shape{n, 3, 32, 32} ||
      size_t(n) * kRecord != size)
    bug("read_cifar10_batch: arrays of the wrong type or shape for " + std::to_string(size) + " bytes");
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* rec = data + size_t(i) * kRecord;
    if (labels.data<int64_t>()[i] != rec[0] || labels.data<int64_t>()[i] >= 10 ||
        std::memcmp(images.data<uint8_t>() + size_t(i) * (kRecord - 1), rec + 1, kRecord - 1) != 0)
      bug("read_cifar10_batch: record " + std::to_string(i) + " does not match the file");
  }
  return 0;
}

namespace {

/// A directory under scratch(), emptied.
std::string fresh_dir(const char* name) {
  const std::filesystem::path d = std::filesystem::path(scratch()) / name;
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d.string();
}

/// Every id names a word of the dictionary, and each word is a whitespace-free token.
void check_ids(const data::Dictionary& d, const std::vector<int64_t>& ids, const char* what) {
  for (int64_t id : ids) {
    if (id < 0 || id >= d.size()) bug(std::string(what) + ": id out of the dictionary");
    const std::string& w = d.word(id);
    if (w.empty() || d.find(w) != id) bug(std::string(what) + ": dictionary word and id disagree");
    for (char c : w)
      if (c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\v' || c == '\f')
        bug(std::string(what) + ": a word holds whitespace");
  }
}

/// Writes a small valid PTB split as `name` under the scratch directory.
void put_small_split(const char* name) {
  const std::string small = "a b\n";
  put(name, reinterpret_cast<const uint8_t*>(small.data()), small.size());
}

/// A small valid PTB corpus (its Corpus reads other files into its dictionary).
const std::string& fixed_corpus() {
  static const std::string dir = [] {
    const std::string d = fresh_dir("fixed");
    for (const char* f : {"fixed/train.txt", "fixed/valid.txt", "fixed/test.txt"}) put_small_split(f);
    return d;
  }();
  return dir;
}

int64_t count_eos(const data::Dictionary& d, const std::vector<int64_t>& ids) {
  const int64_t eos = d.find("<eos>");
  return std::count(ids.begin(), ids.end(), eos);
}

}  // namespace

int text(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  // As the train split of a PTB corpus: every line ends in <eos>.
  const std::string ptb = fresh_dir("ptb");
  put("ptb/train.txt", data, size);
  // Written, not copied: copy_file's sendfile fails on the EINTR of libFuzzer's timer signal.
  for (const char* f : {"ptb/valid.txt", "ptb/test.txt"}) put_small_split(f);
  std::unique_ptr<data::Corpus> corpus;
  if (survives("Corpus", [&] { corpus = std::make_unique<data::Corpus>(ptb); })) {
    check_ids(corpus->dictionary, corpus->train, "Corpus");
    const int64_t lines = std::count(bytes.begin(), bytes.end(), '\n') + (!bytes.empty() && bytes.back() != '\n');
    if (count_eos(corpus->dictionary, corpus->train) < lines) bug("Corpus: a line without its <eos>");
  }
  // As a fortune file: entries between "%" lines, tokenized; then the PTB
  // corpus made from them reads back with the counts fortunes_to_ptb reported.
  const std::string fortunes = fresh_dir("fortunes");
  put("fortunes/input", data, size);
  std::vector<std::vector<std::string>> entries;
  if (!survives("read_fortunes", [&] { entries = data::read_fortunes(fortunes); })) return 0;
  for (const auto& entry : entries)
    for (const std::string& w : entry)
      for (char c : w)
        if (w.empty() || static_cast<unsigned char>(c) <= ' ' || (c >= 'A' && c <= 'Z'))
          bug("read_fortunes: an empty, upper-case or whitespace-holding token");
  const std::string out = fresh_dir("fortunes_ptb");
  data::FortunesStats stats;
  if (!survives("fortunes_to_ptb", [&] { stats = data::fortunes_to_ptb(fortunes, out); })) return 0;
  if (stats.train.entries + stats.valid.entries + stats.test.entries != int64_t(entries.size()))
    bug("fortunes_to_ptb: entries lost or added");
  for (const auto& named : {std::pair{"train", &stats.train}, {"valid", &stats.valid}, {"test", &stats.test}}) {
    const char* name = named.first;  // not a structured binding: clang 14's lambdas cannot capture one
    const data::CorpusSplitStats* split = named.second;
    data::Corpus c0(fixed_corpus());  // any corpus: tokenize() reads into its dictionary
    std::vector<int64_t> ids;
    const bool read = survives("Corpus::tokenize (fortunes)", [&] { ids = c0.tokenize(data::ptb_file(out, name)); });
    if (!read) {
      if (split->entries > 0) bug(std::string("fortunes_to_ptb: its ") + name + " split does not read back");
      continue;
    }
    check_ids(c0.dictionary, ids, "Corpus (fortunes)");
    if (int64_t(ids.size()) != split->tokens || count_eos(c0.dictionary, ids) != split->entries)
      bug(std::string("fortunes_to_ptb: the ") + name + " split reads back with other token counts");
  }
  return 0;
}

// ---------------------------------------------------------------- graphs

namespace {

/// Draws decisions from the input bytes (zeros once they run out).
class Bytes {
 public:
  Bytes(const uint8_t* p, size_t n) : p_(p), n_(n) {}
  bool more() const { return i_ < n_; }
  uint8_t u8() { return i_ < n_ ? p_[i_++] : 0; }
  size_t pick(size_t k) { return k ? size_t(u8() | u8() << 8) % k : 0; }
  template <class T, size_t N>
  T one_of(const T (&xs)[N]) {
    return xs[pick(N)];
  }
  int64_t dim() {
    static const int64_t dims[] = {0, 1, 1, 2, 2, 3, 3, 4, 5, 8, -1};
    return one_of(dims);
  }
  int64_t integer(int64_t old) {
    const int64_t l = std::numeric_limits<int64_t>::max();
    const int64_t xs[] = {old, 0, 1, 2, 3, -1, -2, -3, 5, 64, l, -l - 1, int64_t(1) << 40, int64_t(INT32_MAX),
                          int64_t(uint64_t(old) + 1), int64_t(uint64_t(old) - 1), int64_t(0 - uint64_t(old))};
    return one_of(xs);
  }
  double real(double old) {
    const double xs[] = {old, 0.0, 1.0, -1.0, 0.5, 2.0, -0.0, 1e308, -1e308, INFINITY, -INFINITY, NAN, 1e-310};
    return one_of(xs);
  }

 private:
  const uint8_t* p_;
  size_t n_, i_ = 0;
};

/// The attributes of one of `op`'s examples, some values replaced (types kept).
Attrs mutate(const Attrs& from, Bytes& in) {
  Attrs out;
  for (const auto& [k, v] : from) {
    AttrValue x = v;
    if (in.pick(3) == 0) {
      if (auto* i = std::get_if<int64_t>(&x)) *i = in.integer(*i);
      else if (auto* d = std::get_if<double>(&x)) *d = in.real(*d);
      else if (auto* b = std::get_if<bool>(&x)) *b = !*b;
      else if (auto* t = std::get_if<DType>(&x)) *t = in.one_of(kAllDTypes);
      else if (auto* vi = std::get_if<std::vector<int64_t>>(&x)) {
        if (in.pick(4) == 0) vi->push_back(in.integer(0));
        else if (!vi->empty() && in.pick(4) == 0) vi->pop_back();
        for (auto& e : *vi)
          if (in.pick(2)) e = in.integer(e);
      } else if (auto* vd = std::get_if<std::vector<double>>(&x)) {
        for (auto& e : *vd) e = in.real(e);
      }
    }
    out.set(k, x);
  }
  return out;
}

/// Values a feed or constant of this type may hold: small, with edge cases.
NDArray value_of(const Shape& shape, DType dtype, Bytes& in) {
  NDArray a = NDArray::empty(shape, float64);
  static const double xs[] = {0, 1, -1, 2, 0.5, -3, 7, 1e-3, 100, INFINITY, -INFINITY, NAN};
  const size_t kinds = is_floating(dtype) ? 12 : 9;
  const uint64_t seed = in.u8();
  for (int64_t i = 0; i < a.numel(); ++i)
    a.data<double>()[i] = xs[philox::words(seed, 0, uint64_t(i)).x[0] % kinds];
  return a.astype(dtype);
}

/// LOOM_FUZZ_VERBOSE=1 prints each graph program as it is built (to read a crash).
bool verbose() {
  static const bool v = std::getenv("LOOM_FUZZ_VERBOSE") != nullptr;
  return v;
}

bool small_enough(const Graph& g) {
  for (int id = 0; id < g.size(); ++id)
    for (const TensorType& t : g.node(id).outputs) {
      double n = 1;
      for (int64_t d : t.shape) n *= double(d < 0 ? 8 : d);
      if (n > double(1 << 16)) return false;
    }
  return true;
}

/// Session options drawn from the input.
SessionOptions session_options(Bytes& in) {
  SessionOptions o{.threads = 1 + int(in.pick(2)),
                   .executor = in.pick(2) ? Executor::parallel : Executor::serial,
                   .check_numerics = in.pick(4) == 0,
                   .cse = in.pick(3) != 0,
                   .constant_folding = in.pick(3) != 0,
                   .fusion = in.pick(3) != 0};
  // Shapes fed at run time can be far larger than the declared ones small_enough checks (a pad of 2^31 on
  // a dynamic dim): a plan over the budget is a loom::Error, where allocating it would exhaust the fuzzer.
  o.memory_budget = size_t(256) << 20;
  return o;
}

}  // namespace

int graph(const uint8_t* data, size_t size) {
  static const std::vector<const OpDef*> ops = [] {
    std::vector<const OpDef*> r;
    for (const OpDef* op : registered_ops())
      if (op->name != "placeholder" && op->name != "variable" && op->name != "constant" && op->examples) r.push_back(op);
    return r;
  }();
  static std::map<std::string, std::vector<OpExample>> examples;
  Bytes in(data, size);
  Graph g;
  std::vector<Tensor> pool, floats, targets;
  std::vector<std::pair<Tensor, NDArray>> feeds;
  auto add_source = [&](int kind) {
    Shape s(in.pick(4));
    for (auto& d : s) d = in.dim();
    const DType t = in.pick(3) ? float32 : in.one_of(kAllDTypes);
    const std::string name = std::string("s").append(std::to_string(g.size()));
    Tensor x;
    if (kind == 0) {
      if (!survives("placeholder", [&] { x = g.placeholder(name, s, t); })) return;
      Shape fed = s;
      for (auto& d : fed) d = d < 0 ? int64_t(in.pick(4)) : d;
      feeds.push_back({x, value_of(fed, t, in)});
    } else {
      for (auto& d : s) d = d < 0 ? 2 : d;
      NDArray v = value_of(s, t, in);
      if (kind == 1) x = g.constant(v);
      else x = g.variable(name, s, [v](const NDArray& a, uint64_t) { a.assign(v); }, t);
    }
    pool.push_back(x);
    if (is_floating(t) && kind != 1) floats.push_back(x);
  };
  for (int k = 0; k < 3; ++k) add_source(k % 3);
  for (int step = 0; step < 16 && in.more(); ++step) {
    if (in.pick(6) == 0) {
      add_source(int(in.pick(3)));
      continue;
    }
    const OpDef& op = *ops[in.pick(ops.size())];
    auto it = examples.find(op.name);
    if (it == examples.end()) it = examples.emplace(op.name, op.examples(7)).first;
    if (it->second.empty()) continue;
    const OpExample& ex = it->second[in.pick(it->second.size())];
    size_t n = ex.inputs.size();
    if (in.pick(8) == 0) n = in.pick(4);
    std::vector<Tensor> args;
    for (size_t i = 0; i < n && !pool.empty(); ++i) args.push_back(pool[pool.size() - 1 - in.pick(std::min<size_t>(pool.size(), 6))]);
    const Attrs attrs = mutate(ex.attrs, in);
    if (verbose()) {
      std::fprintf(stderr, "fuzz: %s(", op.name.c_str());
      for (const Tensor& t : args) std::fprintf(stderr, " %s%s", dtype_name(t.dtype()).data(), shape_str(t.shape()).c_str());
      std::fprintf(stderr, " ) %s\n", attrs.str().c_str());
    }
    survives("Graph::add", [&] {
      for (const Tensor& t : g.add(op.name, args, attrs)) {
        pool.push_back(t);
        if (op.writes_input >= 0) targets.push_back(t);
      }
      if (op.name == "no_op") targets.push_back(Tensor(&g, g.size() - 1, 0));
    });
  }
  std::vector<Tensor> fetches;
  for (size_t i = pool.size(); i-- > 0 && fetches.size() < 3;)
    if (!pool[i].node().outputs.empty() && pool[i].op() != "assign") fetches.push_back(pool[i]);
  if (!fetches.empty() && is_floating(fetches[0].dtype()) && in.pick(2))
    survives("gradients", [&] {
      for (const Tensor& d : gradients(sum(fetches[0]), floats)) fetches.push_back(d);
    });
  if (!small_enough(g)) return 0;
  Session s(g, session_options(in));
  for (int run = 0; run < 2; ++run)
    survives("Session::run", [&] { s.run(fetches, feeds, run ? targets : std::vector<Tensor>{}); });
  return 0;
}

}  // namespace loom::fuzz
