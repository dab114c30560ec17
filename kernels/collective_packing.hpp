#pragma once
// An allreduce of several tensors sends them as one message: packed one after
// another in the node's workspace. Shared by the CPU and NCCL kernels.

#include <cstddef>

#include "core/kernel.hpp"
#include "core/shape.hpp"

namespace loom::collective {

/// Workspace bytes of an allreduce over q.in: the inputs packed (none for one input, reduced in place).
inline size_t packed_workspace(const WorkspaceQuery& q) {
  if (q.in.size() < 2) return 0;
  size_t bytes = 0;
  for (const Shape& s : q.in) bytes += size_t(numel(s)) * dtype_size(q.dtype);
  return bytes;
}

}  // namespace loom::collective
