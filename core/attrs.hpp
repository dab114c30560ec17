#pragma once
/// Attributes of a graph node: a small typed key-value bag. It lives in core
/// (not as per-op structs in ops/) because kernels, which depend only on core,
/// read the attributes of the node they run.

#include <cstdint>
#include <string>
#include <string_view>
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

}  // namespace loom
