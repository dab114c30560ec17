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
