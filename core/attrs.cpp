#include "core/attrs.hpp"

#include <functional>
#include <sstream>

namespace loom {

Attrs::Attrs(std::initializer_list<std::pair<std::string, AttrValue>> items) {
  for (const auto& [k, v] : items) set(k, v);
}

Attrs& Attrs::set(std::string name, AttrValue value) {
  for (auto& [k, v] : items_)
    if (k == name) {
      v = std::move(value);
      return *this;
    }
  items_.emplace_back(std::move(name), std::move(value));
  return *this;
}

const AttrValue* Attrs::find(std::string_view name) const {
  for (const auto& [k, v] : items_)
    if (k == name) return &v;
  return nullptr;
}

std::string attr_str(const AttrValue& v) {
  std::ostringstream os;
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, bool>) os << (x ? "true" : "false");
        else if constexpr (std::is_same_v<T, std::vector<int64_t>> || std::is_same_v<T, std::vector<double>>) {
          os << "[";
          for (size_t i = 0; i < x.size(); ++i) os << (i ? "," : "") << x[i];
          os << "]";
        } else if constexpr (std::is_same_v<T, NDArray>) os << "<" << x.dtype() << shape_str(x.shape()) << ">";
        else os << x;
      },
      v);
  return os.str();
}

std::string Attrs::str() const {
  std::string r;
  for (const auto& [k, v] : items_) {
    if (!r.empty()) r += ", ";
    r += k + "=" + attr_str(v);
  }
  return r;
}

static bool value_equal(const AttrValue& a, const AttrValue& b) {
  if (a.index() != b.index()) return false;
  return std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        const T& y = std::get<T>(b);
        if constexpr (std::is_same_v<T, NDArray>)
          return x.buffer() == y.buffer() && x.shape() == y.shape() && x.strides() == y.strides() &&
                 x.offset() == y.offset() && x.dtype() == y.dtype();
        else return x == y;
      },
      a);
}

bool Attrs::operator==(const Attrs& o) const {
  if (items_.size() != o.items_.size()) return false;
  for (const auto& [k, v] : items_) {
    const AttrValue* w = o.find(k);
    if (!w || !value_equal(v, *w)) return false;
  }
  return true;
}

size_t Attrs::hash() const {
  size_t h = items_.size();
  for (const auto& [k, v] : items_) {
    size_t e = std::hash<std::string>{}(k) ^ (v.index() * 0x9e3779b97f4a7c15ULL);
    std::visit(
        [&](const auto& x) {
          using T = std::decay_t<decltype(x)>;
          if constexpr (std::is_same_v<T, NDArray>) e ^= std::hash<const void*>{}(x.buffer().get());
          else if constexpr (std::is_same_v<T, std::vector<int64_t>> || std::is_same_v<T, std::vector<double>>) {
            for (auto y : x) e = e * 31 + std::hash<typename T::value_type>{}(y);
          } else if constexpr (std::is_same_v<T, DType>) e ^= size_t(x);
          else e ^= std::hash<T>{}(x);
        },
        v);
    h += e * 0x9e3779b97f4a7c15ULL;  // a sum: equal bags in any order hash alike
  }
  return h;
}

}  // namespace loom

// ---------------------------------------------------------------- schemas

namespace loom {

std::string_view attr_kind_name(AttrKind kind) {
  switch (kind) {
    case AttrKind::boolean: return "boolean";
    case AttrKind::integer: return "integer";
    case AttrKind::real: return "real";
    case AttrKind::string: return "string";
    case AttrKind::integers: return "integer list";
    case AttrKind::reals: return "real list";
    case AttrKind::dtype: return "dtype";
    case AttrKind::array: return "array";
    case AttrKind::axis: return "axis";
    case AttrKind::axes: return "axis list";
  }
  return "?";
}

namespace {

/// The kind of value a variant alternative is (axis and axes hold integers).
AttrKind kind_of(const AttrValue& v) {
  static constexpr AttrKind kinds[] = {AttrKind::boolean,  AttrKind::integer, AttrKind::real,  AttrKind::string,
                                       AttrKind::integers, AttrKind::reals,   AttrKind::dtype, AttrKind::array};
  return kinds[v.index()];
}

AttrKind storage_kind(AttrKind k) {
  return k == AttrKind::axis ? AttrKind::integer : k == AttrKind::axes ? AttrKind::integers : k;
}

/// v converted to what `kind` stores, or nullopt when it is another type.
std::optional<AttrValue> coerce(const AttrValue& v, AttrKind kind) {
  const AttrKind want = storage_kind(kind), have = kind_of(v);
  if (want == have) return v;
  if (want == AttrKind::real && have == AttrKind::integer) return double(std::get<int64_t>(v));
  if (want == AttrKind::reals && have == AttrKind::integers) {
    const auto& xs = std::get<std::vector<int64_t>>(v);
    return std::vector<double>(xs.begin(), xs.end());
  }
  return std::nullopt;
}

struct AttrChecker {
  std::string_view op, node;
  template <class... A>
  [[noreturn]] void fail(A&&... a) const {
    loom::fail(op, " '", node, "': ", std::forward<A>(a)...);
  }
  int64_t axis(int64_t a, int64_t rank, const AttrSpec& s) const {
    if (a < -rank || a >= rank) fail("axis ", a, " out of range for a ", rank, "-d tensor (attribute '", s.name, "')");
    return a < 0 ? a + rank : a;
  }
  /// Resolves negative axes against input `s.input`'s rank.
  void normalize(const AttrSpec& s, std::span<const size_t> ranks, AttrValue& v) const {
    if (s.kind != AttrKind::axis && s.kind != AttrKind::axes) return;
    if (size_t(s.input) >= ranks.size()) fail("attribute '", s.name, "' indexes input ", s.input, ", which is missing");
    const int64_t rank = int64_t(ranks[size_t(s.input)]);
    if (s.kind == AttrKind::axis) {
      v = axis(std::get<int64_t>(v), rank, s);
      return;
    }
    auto xs = std::get<std::vector<int64_t>>(v);
    const int64_t r = s.inserted ? rank + int64_t(xs.size()) : rank;
    for (int64_t& a : xs) a = axis(a, r, s);
    for (size_t i = 0; i < xs.size(); ++i)
      for (size_t j = 0; j < i; ++j)
        if (xs[i] == xs[j]) fail("repeated axis in ", attr_str(std::get<std::vector<int64_t>>(v)), " (attribute '", s.name, "')");
    v = std::move(xs);
  }
};

}  // namespace

const AttrSpec* AttrSchema::find(std::string_view name) const {
  for (const AttrSpec& s : specs_)
    if (s.name == name) return &s;
  return nullptr;
}

std::string AttrSchema::str() const {
  std::string r;
  for (const AttrSpec& s : specs_) {
    r += (r.empty() ? "" : ", ") + s.name + ": " + std::string(attr_kind_name(s.kind));
    if (s.fallback) r += " = " + attr_str(*s.fallback);
    else if (!s.required) r += " (optional)";
  }
  return r.empty() ? "no attributes" : r;
}

AttrSpec attr::defaulted(std::string name, AttrValue value) {
  return {std::move(name), kind_of(value), false, std::move(value), 0, false};
}

Attrs check_attrs(const AttrSchema& schema, std::string_view op, std::string_view node, std::span<const size_t> ranks,
                  Attrs attrs) {
  if (!schema.declared()) return attrs;
  const AttrChecker ck{op, node};
  for (const auto& [name, value] : attrs)
    if (!schema.find(name)) ck.fail("unknown attribute '", name, "' (", op, " takes ", schema.str(), ")");
  Attrs out;
  for (const AttrSpec& s : schema.specs()) {
    const AttrValue* v = attrs.find(s.name);
    if (!v) {
      if (s.required) ck.fail("missing attribute '", s.name, "' (", attr_kind_name(s.kind), ")");
      if (s.fallback) out.set(s.name, *s.fallback);
      continue;
    }
    std::optional<AttrValue> c = coerce(*v, s.kind);
    if (!c) {
      const std::string_view want = attr_kind_name(s.kind);
      ck.fail("attribute '", s.name, "' must be ", std::string_view("aeiou").find(want[0]) == std::string_view::npos ? "a " : "an ",
              want, ", got ", attr_kind_name(kind_of(*v)), " ", attr_str(*v));
    }
    ck.normalize(s, ranks, *c);
    out.set(s.name, std::move(*c));
  }
  return out;
}

}  // namespace loom
