// Softmax cross-entropy kernels (ops/loss.cpp) on the GPU: the forward runs
// one block per row (a shared-memory tree for the row's maximum, then for the
// sum of exponentials: a fixed order, hence deterministic) and writes each
// row's loss and lse; the gradient is element-wise over [N, C], recomputing
// the softmax from the logits and lse (it may overwrite the logits). Labels
// are checked first, like gather's indices: a bad one is reported with the
// CPU kernel's message (in a session when the run next waits for the GPU).

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/math.cuh"
#include "kernels/range_check.hpp"

namespace loom::cuda {
namespace {

constexpr int kRowThreads = 256;

template <class T>
__device__ __forceinline__ bool finite(T v) {
  return v - v == T(0);  // false for NaN and infinities
}

// Combines one value per thread of the block (blockDim.x a power of two) into
// thread 0's result, returned to every thread. max: NaN wins.
template <class T, bool kMax>
__device__ T block_combine(T v, T* sh) {
  const unsigned t = threadIdx.x;
  sh[t] = v;
  __syncthreads();
  for (unsigned w = blockDim.x / 2; w > 0; w /= 2) {
    if (t < w) {
      const T a = sh[t], b = sh[t + w];
      sh[t] = kMax ? ((a != a || b != b) ? a + b : (b > a ? b : a)) : a + b;
    }
    __syncthreads();
  }
  v = sh[0];
  __syncthreads();  // sh is reused next
  return v;
}

template <class T, class I>
__global__ void forward_kernel(const T* x, const I* y, T* loss, T* lse_out, int64_t N, int64_t C) {
  T* sh = dynamic_shared<T>();
  for (int64_t i = blockIdx.x; i < N; i += gridDim.x) {
    const T* r = x + i * C;
    T m = -T(INFINITY);
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x) {
      const T v = r[j];
      m = (v != v || m != m) ? v + m : (v > m ? v : m);
    }
    m = block_combine<T, true>(m, sh);
    T s = T(0);
    if (finite(m))
      for (int64_t j = threadIdx.x; j < C; j += blockDim.x) s += d_exp(r[j] - m);
    s = block_combine<T, false>(s, sh);
    if (threadIdx.x == 0) {
      const int64_t label = int64_t(y[i]);
      const T lse = finite(m) ? m + d_log(s) : m;  // m NaN (the combine keeps NaN), +inf or -inf
      lse_out[i] = lse;
      loss[i] = label >= 0 && label < C ? lse - r[label] : lse;  // a bad label fails the call afterwards
    }
  }
}

template <class T, class I>
__global__ void grad_kernel(const T* x, const I* y, const T* lse, const T* dloss, T* out, int64_t N, int64_t C) {
  const int64_t total = N * C;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e / C, j = e - i * C;
    const T p = finite(lse[i]) ? d_exp(x[e] - lse[i]) : T(NAN);  // no finite lse: no softmax
    out[e] = (p - (int64_t(y[i]) == j ? T(1) : T(0))) * dloss[i];
  }
}

void forward(const KernelCall& c) {
  use_device(c.ctx.device);
  const NDArray &x = c.in[0], &y = c.in[1];
  const int64_t N = x.shape()[0], C = x.shape()[1];
  dispatch_among(FloatTypes{}, x.dtype(), [&]<class T>() {
    dispatch_among(TypeList<int32_t, int64_t, uint8_t>{}, y.dtype(), [&]<class I>() {
      check_in_range(c, static_cast<const I*>(y.raw()), y.numel(), C, "label");
      if (N == 0) return;
      const unsigned grid = unsigned(std::min<int64_t>(N, 65536));
      launch(forward_kernel<T, I>, grid, kRowThreads, kRowThreads * sizeof(T), stream_of(c), c.op,
             static_cast<const T*>(x.raw()), static_cast<const I*>(y.raw()), static_cast<T*>(c.out[0].raw()),
             static_cast<T*>(c.out[1].raw()), N, C);
    });
  });
}

void backward(const KernelCall& c) {
  use_device(c.ctx.device);
  const NDArray &x = c.in[0], &y = c.in[1];
  const int64_t N = x.shape()[0], C = x.shape()[1];
  dispatch_among(FloatTypes{}, x.dtype(), [&]<class T>() {
    dispatch_among(TypeList<int32_t, int64_t, uint8_t>{}, y.dtype(), [&]<class I>() {
      check_in_range(c, static_cast<const I*>(y.raw()), y.numel(), C, "label");
      if (N * C == 0) return;
      auto in = [&](size_t k) { return static_cast<const T*>(c.in[k].raw()); };
      launch(grad_kernel<T, I>, grid_for(N * C), kThreads, 0, stream_of(c), c.op, in(0), static_cast<const I*>(y.raw()),
             in(2), in(3), static_cast<T*>(c.out[0].raw()), N, C);
    });
  });
}

/// Copies x and records the first element outside the range.
template <class T>
__global__ void check_range_kernel(const T* x, T* y, int64_t n, T low, T high, bool allow_nan,
                                   unsigned long long* first_bad) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const T v = x[i];
    if (!((v >= low && v <= high) || (allow_nan && v != v))) atomicMin(first_bad, (unsigned long long)i);
    y[i] = v;
  }
}

void check_range(const KernelCall& c) {
  use_device(c.ctx.device);
  const int64_t n = c.in[0].numel();
  if (n == 0) return;
  const RangeCheck r = range_check(c.attrs);
  DeviceCheck check(c);
  dispatch_among(FloatTypes{}, c.out[0].dtype(), [&]<class T>() {
    launch(check_range_kernel<T>, grid_for(n), kThreads, 0, stream_of(c), c.op, static_cast<const T*>(c.in[0].raw()),
           static_cast<T*>(c.out[0].raw()), n, T(r.low), T(r.high), r.allow_nan, check.pos());
  });
  check.finish([op = std::string(c.op), node = std::string(c.node), r](const BadElement& e) {
    fail(op, " '", node, "': element ", int64_t(e.pos), " is ", r.outside());
  });
}

const bool registered = [] {
  register_kernel("check_range", DeviceKind::cuda, FloatTypes::dtypes(), {&check_range, true});
  register_kernel("sparse_softmax_cross_entropy", DeviceKind::cuda, FloatTypes::dtypes(), {&forward, true});
  register_kernel("sparse_softmax_cross_entropy_grad", DeviceKind::cuda, FloatTypes::dtypes(), {&backward, true});
  return true;
}();

}  // namespace
}  // namespace loom::cuda
