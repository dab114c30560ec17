#pragma once
/// Symbolic reverse-mode differentiation: graph to graph.

#include <vector>

#include "core/graph.hpp"

namespace loom {

struct GradientOptions {
  /// For an x that y does not depend on: zeros shaped like x (true) or an
  /// invalid Tensor the caller can test with valid() (false).
  bool unreachable_as_zero = true;
};

/// Adds the nodes computing d(sum(y * dy))/dx for every x in xs and returns
/// them. dy defaults to ones shaped like y. Only nodes on a path from some x
/// to y are differentiated; fan-in contributions are summed; gradients of
/// broadcast inputs are reduced to the input's shape; stop_gradient and
/// non-differentiable ops (comparisons, argmax, ...) pass nothing back.
/// The new nodes are ordinary ops, so the result can be differentiated again.
std::vector<Tensor> gradients(const Tensor& y, const std::vector<Tensor>& xs, const Tensor& dy = {},
                              const GradientOptions& options = {});

/// Reduces g (a gradient of broadcast shape) to the shape of `like`: the one
/// helper every broadcasting gradient goes through.
Tensor reduce_to_shape_of(const Tensor& g, const Tensor& like);

}  // namespace loom
