#include "ops/common.hpp"

#include <algorithm>

namespace loom::detail {

std::vector<int64_t> normalize_axes(const std::vector<int64_t>& axes, int64_t ndim, const InferContext& c) {
  std::vector<int64_t> r;
  if (axes.empty()) {
    for (int64_t i = 0; i < ndim; ++i) r.push_back(i);
    return r;
  }
  for (int64_t a : axes) {
    if (a < -ndim || a >= ndim) c.fail("axis ", a, " out of range for a ", ndim, "-d tensor");
    r.push_back(a < 0 ? a + ndim : a);
  }
  std::sort(r.begin(), r.end());
  if (std::adjacent_find(r.begin(), r.end()) != r.end()) c.fail("repeated axis in ", attr_str(axes));
  return r;
}

}  // namespace loom::detail
