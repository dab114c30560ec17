// CUDA kernels of the collective ops (ops/collective.cpp) over NCCL, ordered
// on the session's stream. One NCCL communicator per (process group, GPU),
// created at the first collective: rank 0 makes the unique id and the group's
// host communicator (MPI, core/comm.hpp) broadcasts it. Built where the CUDA
// toolkit has NCCL (LOOM_WITH_NCCL); elsewhere, and under the CUDA emulator,
// they are registered as the host fallback kernel: through host memory and
// the host communicator (MPI), ordered on the stream.

#if !defined(LOOM_WITH_NCCL) || defined(LOOM_CUDA_EMULATION)

#include "core/kernel.hpp"

namespace loom::cuda {
namespace {
const bool registered = [] {
  for (const char* op : {"allreduce", "reduce_to_root", "reduce_scatter"})
    register_kernel(op, DeviceKind::cuda, {float32, float64, int32, int64}, host_fallback_kernel());
  for (const char* op : {"broadcast", "allgather"})
    register_kernel(op, DeviceKind::cuda, AllTypes::dtypes(), host_fallback_kernel());
  return true;
}();
}  // namespace
}  // namespace loom::cuda

#else

#include <nccl.h>

#include <cstring>
#include <map>
#include <mutex>

#include "core/comm.hpp"
#include "kernels/collective_packing.hpp"
#include "kernels/cuda/common.cuh"

namespace loom::cuda {
namespace {

void check_nccl(ncclResult_t r, const char* what) {
  if (r != ncclSuccess) fail("NCCL: ", what, ": ", ncclGetErrorString(r));
}
#define LOOM_NCCL_CHECK(call) check_nccl((call), #call)

struct Group {
  std::shared_ptr<Communicator> host;
  ncclComm_t comm;
};

/// The NCCL communicator of the process group on the call's GPU, checked against the graph's group size.
const Group& group_of(const KernelCall& c) {
  static std::mutex mu;
  static std::map<std::pair<const Communicator*, int>, Group> groups;  // kept for the process's life
  std::shared_ptr<Communicator> host = communicator();
  LOOM_CHECK(host->size() == c.attrs.i("ranks"), c.op, " '", c.node, "': the graph was built for a group of ",
             c.attrs.i("ranks"), " ranks but runs in one of ", host->size(), " (", host->name(),
             "): set the communicator before building the graph");
  std::lock_guard lock(mu);
  auto key = std::make_pair(host.get(), c.ctx.device.index);
  auto it = groups.find(key);
  if (it != groups.end()) return it->second;
  ncclUniqueId id;
  if (host->rank() == 0) LOOM_NCCL_CHECK(ncclGetUniqueId(&id));
  host->broadcast(&id, sizeof id, 0);
  Group g{host, nullptr};
  LOOM_NCCL_CHECK(ncclCommInitRank(&g.comm, host->size(), id, host->rank()));
  return groups.emplace(key, std::move(g)).first->second;
}

ncclDataType_t nccl_type(DType t) {
  if (t == float32) return ncclFloat32;
  if (t == float64) return ncclFloat64;
  if (t == int32) return ncclInt32;
  if (t == int64) return ncclInt64;
  fail("NCCL: cannot reduce ", dtype_name(t));
}

void allreduce_kernel(const KernelCall& c) {
  use_device(c.ctx.device);
  const Group& g = group_of(c);
  cudaStream_t s = stream_of(c);
  const ncclRedOp_t op = c.attrs.get<std::string>("reduction") == "mean" ? ncclAvg : ncclSum;
  const ncclDataType_t t = nccl_type(c.out[0].dtype());
  if (c.in.size() == 1) {
    LOOM_NCCL_CHECK(ncclAllReduce(c.in[0].raw(), c.out[0].raw(), size_t(c.in[0].numel()), t, op, g.comm, s));
    return;
  }
  char* w = static_cast<char*>(c.workspace);
  size_t off = 0, count = 0;
  for (const NDArray& x : c.in) {
    LOOM_CUDA_CHECK(cudaMemcpyAsync(w + off, x.raw(), x.nbytes(), cudaMemcpyDeviceToDevice, s));
    off += x.nbytes();
    count += size_t(x.numel());
  }
  LOOM_NCCL_CHECK(ncclAllReduce(w, w, count, t, op, g.comm, s));
  off = 0;
  for (const NDArray& y : c.out) {
    LOOM_CUDA_CHECK(cudaMemcpyAsync(y.raw(), w + off, y.nbytes(), cudaMemcpyDeviceToDevice, s));
    off += y.nbytes();
  }
}

void broadcast_kernel(const KernelCall& c) {
  use_device(c.ctx.device);
  const Group& g = group_of(c);
  LOOM_NCCL_CHECK(ncclBroadcast(c.in[0].raw(), c.out[0].raw(), c.in[0].nbytes(), ncclChar, int(c.attrs.i("root")),
                                g.comm, stream_of(c)));
}

void reduce_to_root_kernel(const KernelCall& c) {
  use_device(c.ctx.device);
  const Group& g = group_of(c);
  const int root = int(c.attrs.i("root"));
  LOOM_NCCL_CHECK(ncclReduce(c.in[0].raw(), c.out[0].raw(), size_t(c.in[0].numel()), nccl_type(c.in[0].dtype()),
                             ncclSum, root, g.comm, stream_of(c)));
  if (g.host->rank() != root) LOOM_CUDA_CHECK(cudaMemsetAsync(c.out[0].raw(), 0, c.out[0].nbytes(), stream_of(c)));
}

void allgather_kernel(const KernelCall& c) {
  use_device(c.ctx.device);
  const Group& g = group_of(c);
  LOOM_NCCL_CHECK(ncclAllGather(c.in[0].raw(), c.out[0].raw(), c.in[0].nbytes(), ncclChar, g.comm, stream_of(c)));
}

void reduce_scatter_kernel(const KernelCall& c) {
  use_device(c.ctx.device);
  const Group& g = group_of(c);
  LOOM_NCCL_CHECK(ncclReduceScatter(c.in[0].raw(), c.out[0].raw(), size_t(c.out[0].numel()), nccl_type(c.in[0].dtype()),
                                    ncclSum, g.comm, stream_of(c)));
}

const bool registered = [] {
  const std::vector<DType> summable = {float32, float64, int32, int64};
  register_kernel("allreduce", DeviceKind::cuda, summable,
                  {.fn = &allreduce_kernel, .compact_inputs = true, .workspace = &collective::packed_workspace});
  register_kernel("reduce_to_root", DeviceKind::cuda, summable, {.fn = &reduce_to_root_kernel, .compact_inputs = true});
  register_kernel("reduce_scatter", DeviceKind::cuda, summable, {.fn = &reduce_scatter_kernel, .compact_inputs = true});
  const std::vector<DType> all = AllTypes::dtypes();
  register_kernel("broadcast", DeviceKind::cuda, all, {.fn = &broadcast_kernel, .compact_inputs = true});
  register_kernel("allgather", DeviceKind::cuda, all, {.fn = &allgather_kernel, .compact_inputs = true});
  return true;
}();

}  // namespace
}  // namespace loom::cuda

#endif  // LOOM_WITH_NCCL && !LOOM_CUDA_EMULATION: NCCL
