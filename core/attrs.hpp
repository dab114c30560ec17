#pragma once
/// Attributes of a graph node: a small typed key-value bag. It lives in core
/// (not as per-op structs in ops/) because kernels, which depend only on core,
/// read the attributes of the node they run.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <span>
#include <utility>
#include <variant>
#include <vector>

#include "core/dtype.hpp"
#include "core/ndarray.hpp"

namespace loom {

using AttrValue = std::variant<bool, int64_t, double, std::string, std::vector<int64_t>,
                               std::vector<double>, DType, NDArray>;

class Attrs {
 public:
  Attrs() = default;
  Attrs(std::initializer_list<std::pair<std::string, AttrValue>> items);

  Attrs& set(std::string name, AttrValue value);
  bool has(std::string_view name) const { return find(name) != nullptr; }
  const AttrValue* find(std::string_view name) const;

  /// The attribute `name` as T; a missing or mistyped attribute is a loom bug
  /// (ops validate user input when nodes are built).
  template <class T>
  const T& get(std::string_view name) const {
    const AttrValue* v = find(name);
    LOOM_ASSERT(v, "missing attribute '", name, "'");
    const T* p = std::get_if<T>(v);
    LOOM_ASSERT(p, "attribute '", name, "' has another type");
    return *p;
  }
  template <class T>
  T get_or(std::string_view name, T fallback) const {
    const AttrValue* v = find(name);
    if (!v) return fallback;
    const T* p = std::get_if<T>(v);
    return p ? *p : fallback;
  }
  int64_t i(std::string_view name) const { return get<int64_t>(name); }
  double f(std::string_view name) const { return get<double>(name); }
  bool b(std::string_view name) const { return get<bool>(name); }
  const std::vector<int64_t>& ints(std::string_view name) const { return get<std::vector<int64_t>>(name); }

  bool empty() const { return items_.empty(); }
  auto begin() const { return items_.begin(); }
  auto end() const { return items_.end(); }

  /// "axes=[1], keepdims=true" for errors, traces and DOT files.
  std::string str() const;
  /// Equality for common-subexpression elimination (NDArrays compare by storage identity).
  bool operator==(const Attrs& o) const;
  size_t hash() const;

 private:
  std::vector<std::pair<std::string, AttrValue>> items_;
};

std::string attr_str(const AttrValue& v);

// ---------------------------------------------------------------- schemas

/// What an attribute holds. `axis` and `axes` are integers indexing the
/// dimensions of an input: Graph::add resolves negative values against that
/// input's rank once, at build time, so kernels only see 0 <= axis < rank.
enum class AttrKind : uint8_t { boolean, integer, real, string, integers, reals, dtype, array, axis, axes };
std::string_view attr_kind_name(AttrKind kind);

/// One declared attribute of an op.
struct AttrSpec {
  std::string name;
  AttrKind kind = AttrKind::integer;
  bool required = true;
  std::optional<AttrValue> fallback;  // set on a node that omits it (optional attributes only)
  int input = 0;                      // axis, axes: the input whose dimensions they index
  bool inserted = false;              // axes: positions in the output, of rank input rank + count (expand_dims)
};

/// The attributes an op accepts (OpDef::attrs). Default-constructed means
/// "not declared" (such ops are accepted unchecked, and the registry sweep
/// fails for them); AttrSchema::none() declares an op without attributes.
class AttrSchema {
 public:
  AttrSchema() = default;
  AttrSchema(std::initializer_list<AttrSpec> specs) : specs_(specs), declared_(true) {}
  static AttrSchema none() {
    AttrSchema s;
    s.declared_ = true;
    return s;
  }
  bool declared() const { return declared_; }
  const std::vector<AttrSpec>& specs() const { return specs_; }
  const AttrSpec* find(std::string_view name) const;
  /// "axes: axes, keepdims: boolean = false" for errors and docs.
  std::string str() const;

 private:
  std::vector<AttrSpec> specs_;
  bool declared_ = false;
};

/// Shorthands for declaring schemas: `d.attrs = {attr::axes(), attr::defaulted("keepdims", false)};`
namespace attr {
inline AttrSpec required(std::string name, AttrKind kind) { return {std::move(name), kind, true, {}, 0, false}; }
inline AttrSpec optional(std::string name, AttrKind kind) { return {std::move(name), kind, false, {}, 0, false}; }
/// Optional; a node without it gets `value` (the kind follows value's type).
AttrSpec defaulted(std::string name, AttrValue value);
inline AttrSpec axis(std::string name = "axis", int input = 0) {
  return {std::move(name), AttrKind::axis, true, {}, input, false};
}
inline AttrSpec axes(std::string name = "axes", int input = 0) {
  return {std::move(name), AttrKind::axes, true, {}, input, false};
}
}  // namespace attr

/// Checks `attrs` against `schema` for a node of op `op` named `node` whose
/// inputs have ranks `ranks`: unknown, missing or mistyped attributes and
/// out-of-range axes raise loom::Error naming op, node and attribute. Returns
/// the attributes normalized: integers given for reals converted, defaults
/// filled in, axes made non-negative.
Attrs check_attrs(const AttrSchema& schema, std::string_view op, std::string_view node, std::span<const size_t> ranks,
                  Attrs attrs);

}  // namespace loom
