// Neural-network functions, as compositions of primitive ops (their gradients
// come for free). Promote one to a fused primitive only when profiling shows
// it matters.

#include "ops/common.hpp"
#include "ops/ops.hpp"

namespace loom {

// The composites softmax and log_softmax: oracles of the fused ops (ops/softmax.cpp).
// As PyTorch: shifted by the unmasked max, so a +inf logit (or a row of
// -inf) makes the row NaN, and a -inf logit gets probability 0.
Tensor composite::log_softmax(const Tensor& x, int64_t axis) {
  Tensor shifted = x - detail::stable_max(x, {axis});
  return shifted - log(sum(exp(shifted), {axis}, true));
}

Tensor composite::softmax(const Tensor& x, int64_t axis) { return exp(composite::log_softmax(x, axis)); }

Tensor softmax_cross_entropy(const Tensor& logits, const Tensor& labels) {
  const Shape &l = logits.shape(), &y = labels.shape();
  LOOM_CHECK(l.size() == 2, "softmax_cross_entropy: logits '", logits.name(), "' must be [N, C], got ", S(l));
  LOOM_CHECK(y.size() == 1, "softmax_cross_entropy: labels '", labels.name(), "' must be [N], got ", S(y));
  LOOM_CHECK(l[0] < 0 || y[0] < 0 || l[0] == y[0], "softmax_cross_entropy: ", S(l), " logits for ", S(y), " labels");
  LOOM_CHECK(is_integral(labels.dtype()) && labels.dtype() != boolean, "softmax_cross_entropy: labels '",
             labels.name(), "' must be integers, got ", dtype_name(labels.dtype()));
  LOOM_CHECK(l[1] > 0, "softmax_cross_entropy: the class dim of ", S(l), " must be known");
  // One fused primitive (ops/loss.cpp): the composite took ten passes over the logits.
  return mean(sparse_softmax_cross_entropy(logits, labels)[0]);
}

Tensor dropout(const Tensor& x, double p, bool training) {
  LOOM_CHECK(p >= 0 && p <= 1, "dropout: p must be in [0, 1], got ", p);
  LOOM_CHECK(is_floating(x.dtype()), "dropout: expected a floating tensor, got ", dtype_name(x.dtype()), " '", x.name(),
             "' (PyTorch: result type Float can't be cast to the input's)");
  if (!training || p == 0) return x;
  if (p == 1) return zeros_like(x);  // PyTorch's p = 1: all dropped (no 1/(1-p) to scale by)
  Tensor keep = random_uniform_like(x) >= p;
  return where(keep, x * (1.0 / (1.0 - p)), 0.0);
}

}  // namespace loom
