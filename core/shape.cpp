#include "core/shape.hpp"

#include "core/error.hpp"

namespace loom {

std::string shape_str(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) r += ",";
    r += s[i] < 0 ? "?" : std::to_string(s[i]);
  }
  return r + "]";
}

int64_t numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) {
    LOOM_ASSERT(d >= 0, "numel of a shape with a dynamic dim ", shape_str(s));
    n *= d;
  }
  return n;
}

bool is_static(const Shape& s) {
  for (int64_t d : s)
    if (d < 0) return false;
  return true;
}

Strides compact_strides(const Shape& s) {
  Strides st(s.size());
  int64_t acc = 1;
  for (size_t i = s.size(); i-- > 0;) {
    st[i] = acc;
    acc *= s[i] > 0 ? s[i] : 1;
  }
  return st;
}

int normalize_axis(int64_t axis, int64_t ndim, const char* what) {
  if (axis < -ndim || axis >= ndim || (ndim == 0 && axis != 0 && axis != -1))
    fail(what, ": axis ", axis, " out of range for a ", ndim, "-d tensor");
  return int(axis < 0 ? axis + ndim : axis);
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* what) {
  size_t n = std::max(a.size(), b.size());
  Shape r(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    if (da == db) r[i] = da;
    else if (da == 1) r[i] = db;
    else if (db == 1) r[i] = da;
    else if (da < 0) r[i] = db;  // dynamic: checked again when resolved at plan time
    else if (db < 0) r[i] = da;
    else fail(what, ": cannot broadcast ", shape_str(a), " with ", shape_str(b));
  }
  return r;
}

}  // namespace loom
