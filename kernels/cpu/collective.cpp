// CPU kernels of the collective ops (ops/collective.cpp): host memory handed to
// the process's communicator (core/comm.hpp; MPI in libloom_mpi). A bucket of
// several tensors travels as one message through the node's workspace.

#include <cstring>

#include "core/comm.hpp"
#include "core/kernel.hpp"
#include "kernels/collective_packing.hpp"

namespace loom::cpu {
namespace {

/// memcpy of n bytes; nothing for n = 0, where an empty tensor's pointer may be null.
void copy_bytes(void* dst, const void* src, size_t n) {
  if (n) std::memcpy(dst, src, n);
}

/// The group the node runs in, checked against the size its graph was built for.
std::shared_ptr<Communicator> group_of(const KernelCall& c) {
  std::shared_ptr<Communicator> g = communicator();
  LOOM_CHECK(g->size() == c.attrs.i("ranks"), c.op, " '", c.node, "': the graph was built for a group of ",
             c.attrs.i("ranks"), " ranks but runs in one of ", g->size(), " (", g->name(),
             "): set the communicator before building the graph");
  return g;
}

void scale(const NDArray& a, double f) {
  if (a.dtype() == float32) {
    float* p = a.data<float>();
    for (int64_t i = 0; i < a.numel(); ++i) p[i] = float(double(p[i]) * f);
  } else {
    double* p = a.data<double>();
    for (int64_t i = 0; i < a.numel(); ++i) p[i] *= f;
  }
}

void allreduce_kernel(const KernelCall& c) {
  auto g = group_of(c);
  const DType t = c.out[0].dtype();
  if (c.in.size() == 1) {
    if (c.out[0].raw() != c.in[0].raw()) copy_bytes(c.out[0].raw(), c.in[0].raw(), c.in[0].nbytes());
    g->allreduce_sum(c.out[0].raw(), size_t(c.out[0].numel()), t);
  } else {
    char* w = static_cast<char*>(c.workspace);
    size_t off = 0, count = 0;
    for (const NDArray& x : c.in) {
      copy_bytes(w + off, x.raw(), x.nbytes());
      off += x.nbytes();
      count += size_t(x.numel());
    }
    LOOM_ASSERT(off <= c.workspace_bytes, "allreduce workspace too small");
    g->allreduce_sum(w, count, t);
    off = 0;
    for (const NDArray& y : c.out) {
      copy_bytes(y.raw(), w + off, y.nbytes());
      off += y.nbytes();
    }
  }
  if (c.attrs.get<std::string>("reduction") == "mean" && g->size() > 1)
    for (const NDArray& y : c.out) scale(y, 1.0 / double(g->size()));
}

void broadcast_kernel(const KernelCall& c) {
  auto g = group_of(c);
  if (c.out[0].raw() != c.in[0].raw()) copy_bytes(c.out[0].raw(), c.in[0].raw(), c.in[0].nbytes());
  g->broadcast(c.out[0].raw(), c.out[0].nbytes(), int(c.attrs.i("root")));
}

void reduce_to_root_kernel(const KernelCall& c) {
  auto g = group_of(c);
  if (c.out[0].raw() != c.in[0].raw()) copy_bytes(c.out[0].raw(), c.in[0].raw(), c.in[0].nbytes());
  g->allreduce_sum(c.out[0].raw(), size_t(c.out[0].numel()), c.out[0].dtype());
  if (g->rank() != c.attrs.i("root")) std::memset(c.out[0].raw(), 0, c.out[0].nbytes());
}

void allgather_kernel(const KernelCall& c) { group_of(c)->allgather(c.in[0].raw(), c.out[0].raw(), c.in[0].nbytes()); }

size_t reduce_scatter_workspace(const WorkspaceQuery& q) { return size_t(numel(q.in[0])) * dtype_size(q.dtype); }

// The whole sum, then this rank's block: simple, and bandwidth-optimal enough for gradients of allgather.
void reduce_scatter_kernel(const KernelCall& c) {
  auto g = group_of(c);
  LOOM_ASSERT(c.workspace_bytes >= c.in[0].nbytes(), "reduce_scatter workspace too small");
  copy_bytes(c.workspace, c.in[0].raw(), c.in[0].nbytes());
  g->allreduce_sum(c.workspace, size_t(c.in[0].numel()), c.in[0].dtype());
  copy_bytes(c.out[0].raw(), static_cast<char*>(c.workspace) + size_t(g->rank()) * c.out[0].nbytes(),
              c.out[0].nbytes());
}

const bool registered = [] {
  const std::vector<DType> summable = {float32, float64, int32, int64};
  register_kernel("allreduce", DeviceKind::cpu, summable,
                  {.fn = &allreduce_kernel, .compact_inputs = true, .workspace = &collective::packed_workspace});
  register_kernel("reduce_to_root", DeviceKind::cpu, summable, {.fn = &reduce_to_root_kernel, .compact_inputs = true});
  register_kernel("reduce_scatter", DeviceKind::cpu, summable,
                  {.fn = &reduce_scatter_kernel, .compact_inputs = true, .workspace = &reduce_scatter_workspace});
  const std::vector<DType> all = AllTypes::dtypes();
  register_kernel("broadcast", DeviceKind::cpu, all, {.fn = &broadcast_kernel, .compact_inputs = true});
  register_kernel("allgather", DeviceKind::cpu, all, {.fn = &allgather_kernel, .compact_inputs = true});
  return true;
}();

}  // namespace
}  // namespace loom::cpu
