#pragma once
/// Self-checks of the op library, shared by the test suite and `loom_ops
/// --check`: each op's kernels against its reference implementation, and its
/// gradient rule against central differences in float64.

#include <functional>
#include <string>
#include <vector>

#include "core/graph.hpp"
#include "core/session.hpp"

namespace loom {

struct CheckResult {
  bool ok = true;
  double max_error = 0;  // largest error relative to the tolerance's scale
  std::string detail;    // what failed, or a note
};

/// Runs example `ex` of `op` eagerly (float inputs cast to `dtype`) and
/// compares every output with the op's reference implementation.
CheckResult check_forward(const OpDef& op, const OpExample& ex, DType dtype = float32);

/// Builds y = f(inputs), loss = sum_k sum(y_k * w_k) with fixed random w_k,
/// and compares gradients() of loss with respect to inputs `wrt` with central
/// differences (float64 placeholders; other inputs are constants).
CheckResult check_gradient_fn(const std::function<std::vector<Tensor>(const std::vector<Tensor>&)>& f,
                              const std::vector<NDArray>& inputs, const std::vector<int>& wrt, double h = 1e-6,
                              double tolerance = 1e-5);

/// check_gradient_fn for example `ex` of a registered op.
CheckResult check_gradient(const OpDef& op, const OpExample& ex);

}  // namespace loom
