#pragma once
/// Eager execution of one op on NDArrays, outside any graph: infers the
/// outputs, applies view ops as views, and runs the registered kernel. Used by
/// constant folding, by the checks of every op, and handy in user code.

#include <span>
#include <string_view>
#include <vector>

#include "core/kernel.hpp"
#include "core/op.hpp"

namespace loom {

struct InvokeOptions {
  uint64_t seed = 0;         // for random ops
  uint64_t run_counter = 0;
  uint64_t node_key = 0;
};

/// Runs `op` on `inputs` (all on one device) and returns its outputs.
std::vector<NDArray> invoke(std::string_view op, const std::vector<NDArray>& inputs, const Attrs& attrs = {},
                            const InvokeOptions& options = {});

}  // namespace loom
