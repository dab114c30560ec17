#include "ops/common.hpp"

#include <algorithm>

#include "ops/ops.hpp"

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

std::vector<Tensor> grad_through_composite(
    const GradContext& c, const std::function<std::vector<Tensor>(const std::vector<Tensor>&)>& composite) {
  std::vector<Tensor> in;
  for (const Tensor& t : c.inputs) in.push_back(identity(t));
  std::vector<Tensor> out = composite(in);
  Tensor loss;
  for (size_t i = 0; i < out.size(); ++i) {
    if (!c.douts[i].valid()) continue;
    Tensor t = sum(out[i] * c.douts[i]);
    loss = loss.valid() ? loss + t : t;
  }
  if (!loss.valid()) return std::vector<Tensor>(c.inputs.size());
  return gradients(loss, in, {}, {.unreachable_as_zero = false});
}

}  // namespace loom::detail
