// safetensors reading and writing: an 8-byte little-endian header length, a
// JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {...}},
// then the tensors' bytes (little-endian, row-major), densely packed.

#include "frontend/checkpoint.hpp"

#include <algorithm>
#include <bit>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>

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

void json_string(std::string& out, const std::string& s) {
  out += '"';
  for (unsigned char c : s) {
    if (c == '"')
      out += "\\\"";
    else if (c == '\\')
      out += "\\\\";
    else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else
      out += char(c);
  }
  out += '"';
}

// ---- a small JSON reader, enough for safetensors headers; every error is a loom::Error.

struct Json {
  enum Kind { null, boolean, number, string, array, object } kind = null;
  bool b = false;
  double num = 0;
  bool integral = false;
  uint64_t u = 0;  // exact value of non-negative integers
  std::string str;
  std::vector<Json> items;
  std::vector<std::pair<std::string, Json>> members;
};

class Parser {
 public:
  Parser(std::string_view text, const std::string& path) : s_(text), path_(path) {}

  Json document() {
    Json v = value(0);
    ws();
    if (i_ != s_.size()) error("unexpected text after the JSON header");
    return v;
  }

 private:
  [[noreturn]] void error(const std::string& what) {
    fail("'", path_, "': malformed safetensors header: ", what, " at byte ", i_);
  }
  void ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\r' || s_[i_] == '\t')) ++i_;
  }
  char peek() {
    ws();
    if (i_ >= s_.size()) error("unexpected end");
    return s_[i_];
  }
  void expect(char c) {
    if (peek() != c) error(std::string("expected '") + c + "'");
    ++i_;
  }
  Json value(int depth) {
    if (depth > 64) error("nesting too deep");
    char c = peek();
    Json v;
    if (c == '{') {
      v.kind = Json::object;
      ++i_;
      if (peek() == '}') return ++i_, v;
      while (true) {
        if (peek() != '"') error("expected a key");
        std::string key = string();
        expect(':');
        v.members.emplace_back(std::move(key), value(depth + 1));
        if (peek() == ',') {
          ++i_;
          continue;
        }
        expect('}');
        return v;
      }
    }
    if (c == '[') {
      v.kind = Json::array;
      ++i_;
      if (peek() == ']') return ++i_, v;
      while (true) {
        v.items.push_back(value(depth + 1));
        if (peek() == ',') {
          ++i_;
          continue;
        }
        expect(']');
        return v;
      }
    }
    if (c == '"') {
      v.kind = Json::string;
      v.str = string();
      return v;
    }
    if (s_.compare(i_, 4, "true") == 0) return i_ += 4, v.kind = Json::boolean, v.b = true, v;
    if (s_.compare(i_, 5, "false") == 0) return i_ += 5, v.kind = Json::boolean, v;
    if (s_.compare(i_, 4, "null") == 0) return i_ += 4, v;
    return number();
  }
  Json number() {
    size_t start = i_;
    if (i_ < s_.size() && s_[i_] == '-') ++i_;
    bool digits = false, plain = true;
    uint64_t u = 0;
    bool overflow = false;
    while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') {
      digits = true;
      uint64_t d = uint64_t(s_[i_] - '0');
      if (u > (std::numeric_limits<uint64_t>::max() - d) / 10)
        overflow = true;
      else
        u = u * 10 + d;
      ++i_;
    }
    if (!digits) error("expected a value");
    while (i_ < s_.size() && (s_[i_] == '.' || s_[i_] == 'e' || s_[i_] == 'E' || s_[i_] == '+' || s_[i_] == '-' ||
                              (s_[i_] >= '0' && s_[i_] <= '9'))) {
      plain = false;
      ++i_;
    }
    Json v;
    v.kind = Json::number;
    std::string text(s_.substr(start, i_ - start));
    char* end = nullptr;
    v.num = std::strtod(text.c_str(), &end);
    if (!end || *end) error("bad number '" + text + "'");
    v.integral = plain && s_[start] != '-' && !overflow;
    v.u = u;
    return v;
  }
  std::string string() {
    expect('"');
    std::string out;
    while (true) {
      if (i_ >= s_.size()) error("unterminated string");
      char c = s_[i_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) error("control character in a string");
      if (c != '\\') {
        out += c;
        continue;
      }
      if (i_ >= s_.size()) error("unterminated escape");
      char e = s_[i_++];
      switch (e) {
        case '"':
          out += '"';
          break;
        case '\\':
          out += '\\';
          break;
        case '/':
          out += '/';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u': {
          uint32_t cp = hex4();
          if (cp >= 0xD800 && cp < 0xDC00) {
            if (i_ + 2 > s_.size() || s_[i_] != '\\' || s_[i_ + 1] != 'u') error("unpaired surrogate");
            i_ += 2;
            uint32_t lo = hex4();
            if (lo < 0xDC00 || lo >= 0xE000) error("bad surrogate pair");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          utf8(out, cp);
          break;
        }
        default:
          error(std::string("bad escape '\\") + e + "'");
      }
    }
  }
  uint32_t hex4() {
    if (i_ + 4 > s_.size()) error("short \\u escape");
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      char c = s_[i_++];
      v <<= 4;
      if (c >= '0' && c <= '9')
        v |= uint32_t(c - '0');
      else if (c >= 'a' && c <= 'f')
        v |= uint32_t(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F')
        v |= uint32_t(c - 'A' + 10);
      else
        error("bad \\u escape");
    }
    return v;
  }
  static void utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80)
      out += char(cp);
    else if (cp < 0x800)
      out += char(0xC0 | (cp >> 6)), out += char(0x80 | (cp & 0x3F));
    else if (cp < 0x10000)
      out += char(0xE0 | (cp >> 12)), out += char(0x80 | ((cp >> 6) & 0x3F)), out += char(0x80 | (cp & 0x3F));
    else
      out += char(0xF0 | (cp >> 18)), out += char(0x80 | ((cp >> 12) & 0x3F)), out += char(0x80 | ((cp >> 6) & 0x3F)),
          out += char(0x80 | (cp & 0x3F));
  }

  std::string_view s_;
  const std::string& path_;
  size_t i_ = 0;
};

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
  Json root = Parser(std::string_view(reinterpret_cast<const char*>(b.data() + 8), size_t(n)), path).document();
  LOOM_CHECK(root.kind == Json::object, "'", path, "': safetensors header is not a JSON object");
  std::set<std::string> names;
  for (auto& [name, v] : root.members) {
    if (name == "__metadata__") {
      LOOM_CHECK(v.kind == Json::object, "'", path, "': __metadata__ must be an object of strings");
      for (auto& [k, s] : v.members) {
        LOOM_CHECK(s.kind == Json::string, "'", path, "': __metadata__ value '", k, "' is not a string");
        f.metadata[k] = s.str;
      }
      continue;
    }
    LOOM_CHECK(names.insert(name).second, "'", path, "': tensor '", name, "' appears twice");
    LOOM_CHECK(v.kind == Json::object, "'", path, "': entry of tensor '", name, "' is not an object");
    Entry e;
    e.name = name;
    const Json *dt = nullptr, *shape = nullptr, *off = nullptr;
    for (auto& [k, x] : v.members) {
      if (k == "dtype")
        dt = &x;
      else if (k == "shape")
        shape = &x;
      else if (k == "data_offsets")
        off = &x;
    }
    LOOM_CHECK(dt && dt->kind == Json::string && shape && shape->kind == Json::array && off &&
                   off->kind == Json::array && off->items.size() == 2,
               "'", path, "': tensor '", name,
               "' needs \"dtype\" (string), \"shape\" (array) and \"data_offsets\" ([begin, end])");
    e.dtype_name = dt->str;
    e.known_dtype = parse_st_dtype(dt->str, e.dtype);
    size_t item = dtype_bytes(dt->str);
    LOOM_CHECK(item > 0, "'", path, "': tensor '", name, "' has unknown dtype '", dt->str, "'");
    unsigned __int128 count = 1;
    for (const Json& d : shape->items) {
      LOOM_CHECK(d.kind == Json::number && d.integral && d.u <= uint64_t(std::numeric_limits<int64_t>::max()), "'",
                 path, "': tensor '", name, "' has a bad shape entry");
      e.shape.push_back(int64_t(d.u));
      count *= d.u;
      LOOM_CHECK(count <= (unsigned __int128)(1) << 62, "'", path, "': tensor '", name, "' is impossibly large");
    }
    for (const Json& o : off->items)
      LOOM_CHECK(o.kind == Json::number && o.integral, "'", path, "': tensor '", name, "' has bad data_offsets");
    LOOM_CHECK(off->items[0].u <= off->items[1].u && off->items[1].u <= data_size, "'", path, "': tensor '", name,
               "' has data_offsets [", off->items[0].u, ", ", off->items[1].u, "] outside the ", data_size,
               " data bytes (truncated file?)");
    e.begin = size_t(off->items[0].u);
    e.end = size_t(off->items[1].u);
    LOOM_CHECK((unsigned __int128)(e.end - e.begin) == count * item, "'", path, "': tensor '", name, "' (", dt->str,
               shape_str(e.shape), ") needs ", uint64_t(count * item), " bytes, its data_offsets span ",
               e.end - e.begin);
    f.entries.push_back(std::move(e));
  }
  // The data must be covered exactly, without overlaps or holes.
  std::vector<const Entry*> sorted;
  for (const Entry& e : f.entries) sorted.push_back(&e);
  std::sort(sorted.begin(), sorted.end(), [](const Entry* a, const Entry* b) { return a->begin < b->begin; });
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
      json_string(header, k);
      header += ":";
      json_string(header, v);
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
    json_string(header, name);
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
    values.emplace_back(v, it->second.transposed ? a.transpose().compact() : a);
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
           " that match no variable of the graph");
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
  // The optimizer state first: a crash between the two writes leaves files whose metadata disagree.
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
  LOOM_CHECK(std::filesystem::exists(opt_path), "checkpoint '", path, "': its optimizer state '", opt_path,
             "' does not exist; to start a new training run from these weights, load them alone "
             "(checkpoint::load(session, model, path), or --load-weights in the trainers)");
  File state = parse(opt_path);
  for (const auto& [k, v] : weights.metadata) {
    auto it = state.metadata.find(k);
    LOOM_CHECK(it == state.metadata.end() || it->second == v, "checkpoint '", path, "' has ", k, " ", v, " but '",
               opt_path, "' has ", k, " ", it->second, ": the two files come from different saves");
  }
  auto values = resolve(weights, path, model_vars, {});
  auto rest = resolve(state, opt_path, named_rest(session, model), {});
  values.insert(values.end(), rest.begin(), rest.end());
  for (auto& [v, a] : values) session.set(v, a);
  return weights.metadata;
}

}  // namespace loom::checkpoint
