#pragma once
// Helpers shared by the convolution and pooling ops (not a public header):
// the frontend functions take 1 or 2 values per spatial attribute and 1, 2 or
// 4 padding values; nodes always carry the normalized forms.

#include <vector>

#include "core/attrs.hpp"
#include "core/error.hpp"

namespace loom::detail {

/// 1 value -> both axes (h, w); 2 -> as given.
inline std::vector<int64_t> pair_attr(const std::vector<int64_t>& v, const char* what, const char* name) {
  LOOM_CHECK(v.size() == 1 || v.size() == 2, what, ": ", name, " needs 1 or 2 values (h, w), got ", attr_str(v));
  return v.size() == 1 ? std::vector<int64_t>{v[0], v[0]} : v;
}

/// 1 value -> every side; 2 (h, w) -> top = bottom = h, left = right = w; 4 -> (top, bottom, left, right).
inline std::vector<int64_t> padding4(const std::vector<int64_t>& p, const char* what) {
  if (p.size() == 1) return {p[0], p[0], p[0], p[0]};
  if (p.size() == 2) return {p[0], p[0], p[1], p[1]};
  LOOM_CHECK(p.size() == 4, what, ": padding needs 1, 2 (h, w) or 4 (top, bottom, left, right) values, got ",
             attr_str(p));
  return p;
}

}  // namespace loom::detail
