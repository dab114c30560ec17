// max_unpool2d and max_unpool2d_grad on the GPU (ops/unpool.cpp). An index
// given twice keeps the last value, as on the CPU, without a race: each
// value first claims its position with atomicMin of its order reversed (the
// smallest is the last value), then one thread per output
// element reads the claimed value or writes 0. The gradient is a gather.
// Out-of-range indices fail the call (check_in_range) and are skipped.

#include "kernels/cuda/common.cuh"

namespace loom::cuda {
namespace {

/// An unclaimed position; value k of a plane claims with kUnclaimed - 1 - k (later values are smaller).
constexpr unsigned long long kUnclaimed = ~0ull;

// claim[p * plane + ix[i]] = min(claim, kUnclaimed - 1 - (i within its plane)) for each value i.
__global__ void claim_kernel(const int64_t* ix, int64_t n, int64_t per, int64_t plane, unsigned long long* claim) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    if (!in_range(ix[i], plane)) continue;
    const int64_t p = i / per;
    atomicMin(claim + p * plane + ix[i], kUnclaimed - 1 - (unsigned long long)(i - p * per));
  }
}

template <class T>
__global__ void unpool_kernel(const T* y, const unsigned long long* claim, int64_t per, int64_t plane, T* out,
                              int64_t n) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x) {
    const unsigned long long k = claim[e];
    out[e] = k == kUnclaimed ? T(0) : y[(e / plane) * per + int64_t(kUnclaimed - 1 - k)];
  }
}

template <class T>
__global__ void unpool_grad_kernel(const T* dz, const int64_t* ix, int64_t per, int64_t plane, T* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = in_range(ix[i], plane) ? dz[(i / per) * plane + ix[i]] : T(0);
}

void unpool(const KernelCall& c) {
  use_device(c.ctx.device);
  const NDArray &y = c.in[0], &out = c.out[0];
  const int64_t planes = out.shape()[0] * out.shape()[1], plane = out.shape()[2] * out.shape()[3];
  const int64_t per = planes ? y.numel() / planes : 0, n = out.numel();
  const int64_t* ix = static_cast<const int64_t*>(c.in[1].raw());
  cudaStream_t s = stream_of(c);
  check_in_range(c, ix, y.numel(), plane, "index");
  if (n == 0) return;
  Temp claim(size_t(n) * sizeof(unsigned long long), s);
  LOOM_CUDA_CHECK(cudaMemsetAsync(claim.get(), 0xff, size_t(n) * sizeof(unsigned long long), s));
  if (y.numel() > 0)
    launch(claim_kernel, grid_for(y.numel()), kThreads, 0, s, c.op, ix, y.numel(), per, plane,
           claim.get<unsigned long long>());
  dispatch_among(FloatTypes{}, out.dtype(), [&]<class T>() {
    launch(unpool_kernel<T>, grid_for(n), kThreads, 0, s, c.op, static_cast<const T*>(y.raw()),
           claim.get<unsigned long long>(), per, plane, static_cast<T*>(out.raw()), n);
  });
}

void unpool_grad(const KernelCall& c) {
  use_device(c.ctx.device);
  const NDArray &dz = c.in[0], &out = c.out[0];
  const int64_t planes = dz.shape()[0] * dz.shape()[1], plane = dz.shape()[2] * dz.shape()[3];
  const int64_t per = planes ? out.numel() / planes : 0, n = out.numel();
  const int64_t* ix = static_cast<const int64_t*>(c.in[1].raw());
  check_in_range(c, ix, n, plane, "index");
  if (n == 0) return;
  dispatch_among(FloatTypes{}, out.dtype(), [&]<class T>() {
    launch(unpool_grad_kernel<T>, grid_for(n), kThreads, 0, stream_of(c), c.op, static_cast<const T*>(dz.raw()), ix,
           per, plane, static_cast<T*>(out.raw()), n);
  });
}

const bool registered = [] {
  register_kernel("max_unpool2d", DeviceKind::cuda, FloatTypes::dtypes(), {&unpool, true});
  register_kernel("max_unpool2d_grad", DeviceKind::cuda, FloatTypes::dtypes(), {&unpool_grad, true});
  return true;
}();

}  // namespace
}  // namespace loom::cuda
