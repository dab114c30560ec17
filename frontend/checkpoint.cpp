// safetensors reading and writing: an 8-byte little-endian header length, a
// JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {...}},
// then the tensors' bytes (little-endian, row-major), densely packed.

#include "frontend/checkpoint.hpp"

#include <algorithm>
#include <bit>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <set>
#include <tuple>

#include <nlohmann/json.hpp>

#include "frontend/io.hpp"
#include "frontend/nn.hpp"

namespace loom::checkpoint {

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian");

namespace {

constexpr size_t kMaxHeader = size_t(100) << 20;  // as the reference implementation

const char* st_dtype(DType t) {
  switch (t) {
    case DType::float32:
      return "F32";
    case DType::float64:
      return "F64";
    case DType::int32:
      return "I32";
    case DType::int64:
      return "I64";
    case DType::uint8:
      return "U8";
    case DType::boolean:
      return "BOOL";
  }
  return "?";
}

bool parse_st_dtype(const std::string& s, DType& t) {
  static const std::pair<const char*, DType> table[] = {{"F32", float32}, {"F64", float64}, {"I32", int32},
                                                        {"I64", int64},   {"U8", uint8},    {"BOOL", boolean}};
  for (auto& [name, dt] : table)
    if (s == name) return t = dt, true;
  return false;
}

/// Appends s as a JSON string (nlohmann's escaping). A header must be JSON, so
/// bytes that are not UTF-8 are refused: the file could not be read back.
void json_string(std::string& out, const std::string& s, const std::string& path, const char* what) {
  using nlohmann::json;
  try {
    out += json(s).dump();
  } catch (const json::type_error&) {
    fail("checkpoint '", path, "': ", what, " ", json(s).dump(-1, ' ', false, json::error_handler_t::replace),
         " is not valid UTF-8 (a safetensors header is JSON)");
  }
}

/// One tensor entry of a parsed file.
struct Entry {
  std::string name;
  std::string dtype_name;
  DType dtype = float32;
  bool known_dtype = false;
  Shape shape;
  size_t begin = 0, end = 0;  // relative to the data section
};

struct File {
  std::vector<uint8_t> bytes;
  size_t data = 0;  // offset of the data section
  std::vector<Entry> entries;
  Metadata metadata;
};

size_t dtype_bytes(const std::string& st) {
  if (st == "BOOL" || st == "U8" || st == "I8" || st == "F8_E4M3" || st == "F8_E5M2") return 1;
  if (st == "F16" || st == "BF16" || st == "I16" || st == "U16") return 2;
  if (st == "F32" || st == "I32" || st == "U32") return 4;
  if (st == "F64" || st == "I64" || st == "U64") return 8;
  return 0;
}

/// The most dims a tensor of a file may have (PyTorch allows 64 too).
constexpr size_t kMaxDims = 64;

/// Reads a safetensors header as it streams through nlohmann's SAX parser,
/// straight into entries: its cost is bounded by the header's length (no
/// document tree: `[0,0,0,...]` costs nothing but the check that rejects it).
class HeaderReader final : public nlohmann::json_sax<nlohmann::json> {
 public:
  HeaderReader(File& f, const std::string& path) : f_(f), path_(path) {}

  bool null() override { return scalar("null"); }
  bool boolean(bool) override { return scalar("a boolean"); }
  bool number_integer(number_integer_t v) override {
    return v < 0 ? scalar("a negative number") : number_unsigned(number_unsigned_t(v));
  }
  bool number_unsigned(number_unsigned_t v) override {
    if (skip_) return true;
    if (in_ == In::shape) {
      LOOM_CHECK(v <= uint64_t(std::numeric_limits<int64_t>::max()), "'", path_, "': tensor '", entry_.name,
                 "' has a bad shape entry");
      LOOM_CHECK(entry_.shape.size() < kMaxDims, "'", path_, "': tensor '", entry_.name, "' has more than ",
                 kMaxDims, " dims");
      entry_.shape.push_back(int64_t(v));
      return true;
    }
    if (in_ == In::offsets) {
      LOOM_CHECK(offsets_.size() < 2, "'", path_, "': tensor '", entry_.name, "' has bad data_offsets");
      offsets_.push_back(v);
      return true;
    }
    return scalar("a number");
  }
  bool number_float(number_float_t, const string_t&) override { return scalar("a fractional number"); }
  bool string(string_t& v) override {
    if (skip_) return true;
    if (in_ == In::metadata) {
      f_.metadata[key_] = v;
      return true;
    }
    if (in_ == In::entry && key_ == "dtype") {
      entry_.dtype_name = v;
      has_dtype_ = true;
      return true;
    }
    return scalar("a string");
  }
  bool binary(binary_t&) override { return scalar("binary data"); }
  bool key(string_t& k) override {
    if (skip_) return true;
    key_ = k;
    return true;
  }
  bool start_object(std::size_t) override {
    if (skip_) return ++skip_, true;
    switch (in_) {
      case In::start:
        in_ = In::root;
        return true;
      case In::root:
        if (key_ == "__metadata__") {
          LOOM_CHECK(!has_metadata_, "'", path_, "': __metadata__ appears twice");
          has_metadata_ = true;
          in_ = In::metadata;
          return true;
        }
        LOOM_CHECK(names_.insert(key_).second, "'", path_, "': tensor '", key_, "' appears twice");
        entry_ = Entry{};
        entry_.name = key_;
        has_dtype_ = has_shape_ = false;
        offsets_.clear();
        in_ = In::entry;
        return true;
      case In::entry:
        if (known_field()) return scalar("an object");
        return ++skip_, true;  // an unknown field: ignored, without storing it
      default:
        return scalar("an object");
    }
  }
  bool end_object() override {
    if (skip_) return --skip_, true;
    if (in_ == In::entry) finish_entry();
    in_ = in_ == In::root ? In::done : In::root;
    return true;
  }
  bool start_array(std::size_t) override {
    if (skip_) return ++skip_, true;
    if (in_ == In::entry && key_ == "shape") {
      entry_.shape.clear();
      has_shape_ = true;
      in_ = In::shape;
      return true;
    }
    if (in_ == In::entry && key_ == "data_offsets") {
      offsets_.clear();
      in_ = In::offsets;
      return true;
    }
    if (in_ == In::entry && !known_field()) return ++skip_, true;
    return scalar("an array");
  }
  bool end_array() override {
    if (skip_) return --skip_, true;
    in_ = In::entry;
    return true;
  }
  bool parse_error(std::size_t pos, const std::string&, const nlohmann::detail::exception& e) override {
    fail("'", path_, "': malformed safetensors header at byte ", pos, ": ", e.what());
  }

 private:
  enum class In { start, root, metadata, entry, shape, offsets, done };

  bool known_field() const { return key_ == "dtype" || key_ == "shape" || key_ == "data_offsets"; }
  /// A value where the layout has none (the value of an unknown field of an entry is ignored).
  bool scalar(const char* what) {
    if (skip_) return true;
    if (in_ == In::entry && !known_field()) return true;
    if (in_ == In::start) fail("'", path_, "': safetensors header is not a JSON object");
    if (in_ == In::metadata) fail("'", path_, "': __metadata__ value '", key_, "' is not a string");
    if (in_ == In::shape) fail("'", path_, "': tensor '", entry_.name, "' has a bad shape entry");
    if (in_ == In::offsets) fail("'", path_, "': tensor '", entry_.name, "' has bad data_offsets");
    if (in_ == In::root) fail("'", path_, "': entry of tensor '", key_, "' is not an object");
    fail("'", path_, "': tensor '", entry_.name, "' has ", what, " for \"", key_, "\"");
  }
  void finish_entry() {
    const std::string& name = entry_.name;
    LOOM_CHECK(has_dtype_ && has_shape_ && offsets_.size() == 2, "'", path_, "': tensor '", name,
               "' needs \"dtype\" (string), \"shape\" (array) and \"data_offsets\" ([begin, end])");
    entry_.known_dtype = parse_st_dtype(entry_.dtype_name, entry_.dtype);
    const size_t item = dtype_bytes(entry_.dtype_name);
    LOOM_CHECK(item > 0, "'", path_, "': tensor '", name, "' has unknown dtype '", entry_.dtype_name, "'");
    check_shape(entry_.shape, item, "'" + path_ + "': tensor '" + name + "'");
    const size_t data_size = f_.bytes.size() - f_.data;
    LOOM_CHECK(offsets_[0] <= offsets_[1] && offsets_[1] <= data_size, "'", path_, "': tensor '", name,
               "' has data_offsets [", offsets_[0], ", ", offsets_[1], "] outside the ", data_size,
               " data bytes (truncated file?)");
    entry_.begin = size_t(offsets_[0]);
    entry_.end = size_t(offsets_[1]);
    const size_t need = size_t(numel(entry_.shape)) * item;
    LOOM_CHECK(entry_.end - entry_.begin == need, "'", path_, "': tensor '", name, "' (", entry_.dtype_name,
               shape_str(entry_.shape), ") needs ", need, " bytes, its data_offsets span ", entry_.end - entry_.begin);
    f_.entries.push_back(std::move(entry_));
  }

  File& f_;
  const std::string& path_;
  In in_ = In::start;
  int skip_ = 0;  // depth inside an ignored value
  std::string key_;
  Entry entry_;
  bool has_dtype_ = false, has_shape_ = false, has_metadata_ = false;
  std::vector<uint64_t> offsets_;
  std::set<std::string> names_;
};

File parse(const std::string& path) {
  File f;
  f.bytes = io::read_file(path);
  const auto& b = f.bytes;
  LOOM_CHECK(b.size() >= 8, "'", path, "': not a safetensors file: ", b.size(),
             " bytes, shorter than the 8-byte header length");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = n << 8 | b[size_t(i)];
  LOOM_CHECK(n <= kMaxHeader, "'", path, "': not a safetensors file: header length ", n, " is implausible");
  LOOM_CHECK(n <= b.size() - 8, "'", path, "': truncated safetensors file: header of ", n, " bytes, file has ",
             b.size(), " bytes");
  LOOM_CHECK(n >= 2 && b[8] == '{', "'", path, "': not a safetensors file: the header does not start with '{'");
  f.data = 8 + size_t(n);
  const size_t data_size = b.size() - f.data;
  HeaderReader reader(f, path);
  const char* text = reinterpret_cast<const char*>(b.data() + 8);
  nlohmann::json::sax_parse(text, text + n, &reader);
  // The data must be covered exactly, without overlaps or holes.
  std::vector<const Entry*> sorted;
  for (const Entry& e : f.entries) sorted.push_back(&e);
  // By (begin, end): an empty tensor [x, x] goes before the one that starts at x.
  std::sort(sorted.begin(), sorted.end(),
            [](const Entry* a, const Entry* b) { return std::pair(a->begin, a->end) < std::pair(b->begin, b->end); });
  size_t at = 0;
  for (const Entry* e : sorted) {
    LOOM_CHECK(e->begin == at, "'", path, "': tensor '", e->name, "' data starts at ", e->begin, ", expected ", at,
               e->begin < at ? " (overlapping tensors)" : " (a hole in the data)");
    at = e->end;
  }
  LOOM_CHECK(at == data_size, "'", path, "': ", data_size - at, " bytes after the last tensor's data");
  return f;
}

NDArray array_of(const File& f, const Entry& e, const std::string& path) {
  LOOM_CHECK(e.known_dtype, "'", path, "': tensor '", e.name, "' has dtype ", e.dtype_name,
             ", which loom does not support (F32, F64, I32, I64, U8, BOOL)");
  NDArray a = NDArray::empty(e.shape, e.dtype);
  if (e.end > e.begin) std::memcpy(a.raw(), f.bytes.data() + f.data + e.begin, e.end - e.begin);
  if (e.dtype == boolean) {
    uint8_t* p = static_cast<uint8_t*>(a.raw());
    for (int64_t i = 0; i < a.numel(); ++i)
      LOOM_CHECK(p[i] <= 1, "'", path, "': BOOL tensor '", e.name, "' holds byte ", int(p[i]), " at element ", i);
  }
  return a;
}

}  // namespace

void write(const std::string& path, const std::vector<std::pair<std::string, NDArray>>& tensors,
           const Metadata& metadata) {
  std::set<std::string> names;
  std::vector<NDArray> host;
  std::string header = "{";
  bool first = true;
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    bool f2 = true;
    for (auto& [k, v] : metadata) {
      if (!f2) header += ",";
      json_string(header, k, path, "metadata key");
      header += ":";
      json_string(header, v, path, "metadata value");
      f2 = false;
    }
    header += "}";
    first = false;
  }
  size_t offset = 0;
  for (auto& [name, array] : tensors) {
    LOOM_CHECK(!name.empty() && name != "__metadata__", "checkpoint '", path, "': invalid tensor name '", name, "'");
    LOOM_CHECK(names.insert(name).second, "checkpoint '", path, "': tensor name '", name, "' is used twice");
    LOOM_CHECK(array.defined(), "checkpoint '", path, "': tensor '", name, "' is undefined");
    NDArray h = array.to(Device::cpu()).compact();
    if (!first) header += ",";
    first = false;
    json_string(header, name, path, "tensor name");
    header += ":{\"dtype\":\"";
    header += st_dtype(h.dtype());
    header += "\",\"shape\":[";
    for (size_t i = 0; i < h.shape().size(); ++i) {
      if (i) header += ',';
      header += std::to_string(h.shape()[i]);
    }
    header += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + h.nbytes()) + "]}";
    offset += h.nbytes();
    host.push_back(h);
  }
  header += "}";
  while ((8 + header.size()) % 8) header += ' ';  // data starts 8-aligned
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[size_t(i)] = char((n >> (8 * i)) & 0xff);
  out += header;
  out.reserve(out.size() + offset);
  for (const NDArray& h : host) out.append(static_cast<const char*>(h.raw()), h.nbytes());
  io::write_file_atomically(path, out);
}

std::map<std::string, NDArray> read(const std::string& path) {
  File f = parse(path);
  std::map<std::string, NDArray> out;
  for (const Entry& e : f.entries) out.emplace(e.name, array_of(f, e, path));
  return out;
}

Metadata read_metadata(const std::string& path) { return parse(path).metadata; }

// ---- names and layouts: PyTorch's state_dict, and the loom 0.1 files before it.

std::string state_dict_name(const std::string& variable_name) {
  std::string n = variable_name;
  std::replace(n.begin(), n.end(), '/', '.');
  return n;
}

namespace {

/// Checkpoint name -> variable, for the variables a save or load covers.
using Named = std::vector<std::pair<std::string, Tensor>>;

Named named_variables(Session& s, const std::vector<Tensor>& given, const char* what) {
  std::vector<Tensor> vars = given.empty() ? s.graph().variables() : given;
  Named out;
  for (const Tensor& v : vars) {
    LOOM_CHECK(v.valid() && &v.graph() == &s.graph() && v.op() == "variable", what, ": '", v.valid() ? v.name() : "?",
               "' is not a variable of the session's graph");
    out.emplace_back(state_dict_name(v.name()), v);
  }
  return out;
}

Named named_state(Session& s, const nn::Module& model, const char* what) {
  Named state = model.state_dict();
  LOOM_CHECK(!state.empty(), what, ": the ", model.type_name(), " has no variables yet (call it on a tensor first)");
  for (const auto& [key, v] : state)
    LOOM_CHECK(&v.graph() == &s.graph(), what, ": the ", model.type_name(), "'s '", key,
               "' lives in another graph than the session's");
  return state;
}

/// The variables of the session's graph that `model` does not hold (optimizer state, counters).
Named named_rest(Session& s, const nn::Module& model) {
  std::set<int> in_model;
  for (const auto& [n, t] : model.state_dict()) in_model.insert(t.node_id());
  Named out;
  for (const Tensor& v : s.graph().variables())
    if (!in_model.count(v.node_id())) out.emplace_back(state_dict_name(v.name()), v);
  return out;
}

/// loom 0.1 wrote graph names ("1/weight") and Linear weights [in, out]: a
/// file with a '/' in a tensor name is one of those (loom now never writes
/// '/'), and so is one its trainers marked "format": "loom" (now "pt").
bool is_legacy(const File& f) {
  auto format = f.metadata.find("format");
  return (format != f.metadata.end() && format->second == "loom") ||
         std::any_of(f.entries.begin(), f.entries.end(),
                     [](const Entry& e) { return e.name.find('/') != std::string::npos; });
}

/// In loom 0.1 every 2-D tensor named ".../weight" was a Linear weight, stored
/// [in, out]; its optimizer state (".../weight/m", ".../weight/momentum") too.
bool legacy_transposed(const Entry& e) {
  if (e.shape.size() != 2) return false;
  std::string n = e.name;
  if (auto slash = n.rfind('/'); slash != std::string::npos && n.substr(slash + 1) != "weight") n.resize(slash);
  return n == "weight" || (n.size() > 7 && n.compare(n.size() - 7, 7, "/weight") == 0);
}

/// Whether two host arrays of one shape and dtype hold the same bytes.
bool same_bytes(const NDArray& a, const NDArray& b) {
  const NDArray x = a.compact(), y = b.compact();
  return std::memcmp(x.raw(), y.raw(), x.nbytes()) == 0;
}

struct Source {
  const Entry* entry = nullptr;
  bool transposed = false;  // stored [in, out] by loom 0.1: read transposed
};

/// Checks every variable against the file and returns the values to set, so
/// that a failed check changes nothing.
std::vector<std::pair<Tensor, NDArray>> resolve(const File& f, const std::string& path, const Named& vars,
                                                const LoadOptions& options) {
  const bool legacy = is_legacy(f);
  std::map<std::string, Source> by_name;
  for (const Entry& e : f.entries)
    by_name[legacy ? state_dict_name(e.name) : e.name] = {&e, legacy && legacy_transposed(e)};
  const char* note = legacy ? " (a loom 0.1 file: its 2-D 'weight' tensors are read transposed)" : "";
  std::vector<std::pair<Tensor, NDArray>> values;
  std::vector<std::string> missing;
  std::set<const Entry*> used;
  std::map<int, std::pair<std::string, size_t>> first_key;  // variable -> its first key and value
  for (const auto& [key, v] : vars) {
    const std::string what = key == state_dict_name(v.name()) ? "variable '" + v.name() + "'"
                                                               : "variable '" + v.name() + "' ('" + key + "' in the file)";
    auto it = by_name.find(key);
    if (it == by_name.end()) {
      // loom 0.1 had no num_batches_tracked: it stays 0, as PyTorch does for old state dicts.
      const bool tolerated = legacy && key.ends_with("num_batches_tracked");
      if (!tolerated) missing.push_back(v.name());
      continue;
    }
    const Entry& e = *it->second.entry;
    used.insert(&e);
    Shape shape = e.shape;
    if (it->second.transposed) std::swap(shape[0], shape[1]);
    LOOM_CHECK(e.known_dtype && e.dtype == v.dtype(), "checkpoint '", path, "': ", what, " is ", dtype_name(v.dtype()),
               " in the graph but ", e.dtype_name, " in the file");
    LOOM_CHECK(shape == v.shape(), "checkpoint '", path, "': ", what, " has shape ", S(v.shape()), " in the graph but ",
               S(shape), " in the file", note);
    NDArray a = array_of(f, e, path);
    if (it->second.transposed) a = a.transpose().compact();
    // A tied variable has a key per owner (PyTorch saves both): the file's copies must agree.
    auto [first, fresh] = first_key.emplace(v.node_id(), std::make_pair(key, values.size()));
    if (!fresh) {
      LOOM_CHECK(same_bytes(values[first->second.second].second, a), "checkpoint '", path, "': '", first->second.first,
                 "' and '", key, "' are one tied variable '", v.name(), "' but differ in the file");
      continue;
    }
    values.emplace_back(v, a);
  }
  if (!missing.empty() && !options.allow_missing) {
    std::string list;
    for (size_t i = 0; i < missing.size() && i < 8; ++i) list += (i ? ", '" : "'") + missing[i] + "'";
    if (missing.size() > 8) list += ", ... (" + std::to_string(missing.size()) + " in all)";
    fail("checkpoint '", path, "': the file has no tensor for variable", missing.size() > 1 ? "s " : " ", list);
  }
  if (!options.allow_unexpected) {
    std::vector<std::string> extra;
    for (const Entry& e : f.entries)
      if (!used.count(&e)) extra.push_back(e.name);
    if (!extra.empty()) {
      std::string list;
      for (size_t i = 0; i < extra.size() && i < 8; ++i) list += (i ? ", '" : "'") + extra[i] + "'";
      if (extra.size() > 8) list += ", ... (" + std::to_string(extra.size()) + " in all)";
      fail("checkpoint '", path, "': the file has tensor", extra.size() > 1 ? "s " : " ", list,
           extra.size() > 1 ? " that match" : " that matches", " no variable of the graph");
    }
  }
  return values;
}

void save_named(Session& session, const Named& vars, const std::string& path, const Metadata& metadata) {
  std::vector<std::pair<std::string, NDArray>> tensors;
  std::map<std::string, std::string> taken;
  for (const auto& [key, v] : vars) {
    auto [it, fresh] = taken.emplace(key, v.name());
    LOOM_CHECK(fresh, "checkpoint '", path, "': variables '", it->second, "' and '", v.name(),
               "' would both be saved as '", key, "'");
    tensors.emplace_back(key, session.get(v));
  }
  Metadata meta = metadata;
  meta.emplace("format", "pt");
  write(path, tensors, meta);
}

Metadata load_named(Session& session, const Named& vars, const std::string& path, const LoadOptions& options) {
  File f = parse(path);
  for (auto& [v, a] : resolve(f, path, vars, options)) session.set(v, a);
  return f.metadata;
}

}  // namespace

void save(Session& session, const std::string& path, const std::vector<Tensor>& variables, const Metadata& metadata) {
  save_named(session, named_variables(session, variables, "checkpoint::save"), path, metadata);
}

void save(Session& session, const nn::Module& model, const std::string& path, const Metadata& metadata) {
  save_named(session, named_state(session, model, "checkpoint::save"), path, metadata);
}

Metadata load(Session& session, const std::string& path, const std::vector<Tensor>& variables,
              const LoadOptions& options) {
  return load_named(session, named_variables(session, variables, "checkpoint::load"), path, options);
}

Metadata load(Session& session, const nn::Module& model, const std::string& path, const LoadOptions& options) {
  Named vars = named_state(session, model, "checkpoint::load");
  File f = parse(path);
  LoadOptions o = options;
  o.allow_unexpected = o.allow_unexpected || is_legacy(f);  // a loom 0.1 file also holds the optimizer state
  for (auto& [v, a] : resolve(f, path, vars, o)) session.set(v, a);
  return f.metadata;
}

std::string optimizer_path(const std::string& path) {
  const std::string ext = ".safetensors";
  if (path.size() > ext.size() && path.ends_with(ext))
    return path.substr(0, path.size() - ext.size()) + ".optim" + ext;
  return path + ".optim" + ext;
}

void save_training(Session& session, const nn::Module& model, const std::string& path, const Metadata& metadata) {
  Named model_vars = named_state(session, model, "checkpoint::save_training");
  // Both targets checked before either is written, so that a bad path leaves the old pair as it was; the
  // optimizer state first: a crash between the two writes leaves files whose metadata disagree.
  io::check_writable(optimizer_path(path));
  io::check_writable(path);
  save_named(session, named_rest(session, model), optimizer_path(path), metadata);
  save_named(session, model_vars, path, metadata);
}

Metadata load_training(Session& session, const nn::Module& model, const std::string& path) {
  Named model_vars = named_state(session, model, "checkpoint::load_training");
  File weights = parse(path);
  if (is_legacy(weights)) {  // loom 0.1: one file with every variable
    for (auto& [v, a] : resolve(weights, path, named_variables(session, {}, "checkpoint::load_training"), {}))
      session.set(v, a);
    return weights.metadata;
  }
  const std::string opt_path = optimizer_path(path);
  std::error_code ec;  // (a name too long for the file system is "does not exist", not a filesystem_error)
  LOOM_CHECK(std::filesystem::exists(opt_path, ec), "checkpoint '", path, "': its optimizer state '", opt_path,
             "' does not exist; to start a new training run from these weights, load them alone "
             "(checkpoint::load(session, model, path), or --load-weights in the trainers)");
  File state = parse(opt_path);
  // save_training writes the same metadata into both files: a key in one only, or with another value, is a
  // pair from different saves.
  for (const auto& [a, a_path, b, b_path] : {std::tuple{&weights.metadata, &path, &state.metadata, &opt_path},
                                             std::tuple{&state.metadata, &opt_path, &weights.metadata, &path}})
    for (const auto& [k, v] : *a) {
      auto it = b->find(k);
      LOOM_CHECK(it != b->end() && it->second == v, "checkpoint '", *a_path, "' has ", k, " ", v, " but '", *b_path,
                 "' has ", it == b->end() ? "none" : k + " " + it->second, ": the two files come from different saves");
    }
  auto values = resolve(weights, path, model_vars, {});
  auto rest = resolve(state, opt_path, named_rest(session, model), {});
  values.insert(values.end(), rest.begin(), rest.end());
  for (auto& [v, a] : values) session.set(v, a);
  return weights.metadata;
}

}  // namespace loom::checkpoint
