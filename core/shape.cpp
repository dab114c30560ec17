#include "core/shape.hpp"

#include "core/error.hpp"

namespace loom {

std::string shape_str(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) r += ",";
    r += s[i] == -1 ? "?" : std::to_string(s[i]);
  }
  return r + "]";
}

namespace {
/// Product of the known nonzero dims, or -1 when it overflows int64.
int64_t extent(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s)
    if (d > 0 && __builtin_mul_overflow(n, d, &n)) return -1;
  return n;
}
}  // namespace

int64_t numel(const Shape& s) {
  for (int64_t d : s) LOOM_ASSERT(d >= 0, "numel of a shape with a dynamic dim ", shape_str(s));
  const int64_t n = extent(s);
  if (n < 0) fail("shape ", shape_str(s), " has more than 2^63 elements");
  for (int64_t d : s)
    if (d == 0) return 0;
  return n;
}

size_t checked_bytes(const Shape& s, size_t itemsize) {
  check_shape(s, itemsize, "array");
  return size_t(numel(s)) * itemsize;
}

bool valid_shape(const Shape& s, size_t itemsize) {
  for (int64_t d : s)
    if (d < -1) return false;
  const int64_t n = extent(s);
  return n >= 0 && (!itemsize || n <= kMaxArrayBytes / int64_t(itemsize));
}

void check_shape(const Shape& s, size_t itemsize, std::string_view what) {
  for (int64_t d : s)
    if (d < -1) fail(what, ": shape ", shape_str(s), " has dim ", d, " (dims are >= 0, or -1 for dynamic)");
  const int64_t n = extent(s);
  if (n < 0) fail(what, ": shape ", shape_str(s), " has more than 2^63 elements");
  if (itemsize && n > kMaxArrayBytes / int64_t(itemsize))
    fail(what, ": shape ", shape_str(s), " of ", itemsize, "-byte elements needs more than 2^48 bytes");
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
    if (s[i] > 0 && __builtin_mul_overflow(acc, s[i], &acc)) fail("shape ", shape_str(s), " has more than 2^63 elements");
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
