// random_uniform / random_normal on Philox (core/philox.hpp): element i depends
// only on (seed, node key, run counter, i), computed by the same header code
// as the CPU kernel. The final scaling uses explicitly rounded operations so
// nvcc cannot contract it into an FMA the CPU does not use: uniform numbers
// are bit-identical to the CPU's. Normal numbers go through the device's
// log/sin/cos, which may differ from the host libm in the last ulp.

#include "core/philox.hpp"
#include "kernels/cuda/common.cuh"

namespace loom::cuda {
namespace {

template <class T, bool Normal>
__global__ void random_kernel(T* out, int64_t n, uint64_t key, uint64_t run, double a, double b) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    double v;
    if constexpr (Normal) v = __dadd_rn(a, __dmul_rn(b, philox::normal(key, run, uint64_t(i))));
    else if constexpr (std::is_same_v<T, float>) v = __dadd_rn(a, __dmul_rn(b - a, double(philox::uniform_f32(key, run, uint64_t(i)))));
    else v = __dadd_rn(a, __dmul_rn(b - a, philox::uniform_f64(key, run, uint64_t(i))));
    out[i] = T(v);
  }
}

template <bool Normal>
void random_op(const KernelCall& c) {
  use_device(c.ctx.device);
  const NDArray& o = c.out[0];
  const uint64_t key = philox::mix_key(c.ctx.seed, c.node_key), run = c.ctx.run_counter;
  const double a = c.attrs.f("a"), b = c.attrs.f("b");
  const int64_t n = o.numel();
  if (n == 0) return;
  dispatch_among(FloatTypes{}, o.dtype(), [&]<class T>() {
    launch(random_kernel<T, Normal>, grid_for(n), kThreads, 0, stream_of(c), c.op, static_cast<T*>(o.raw()), n, key,
           run, a, b);
  });
}

const bool registered = [] {
  register_kernel("random_uniform", DeviceKind::cuda, FloatTypes::dtypes(), {&random_op<false>});
  register_kernel("random_normal", DeviceKind::cuda, FloatTypes::dtypes(), {&random_op<true>});
  return true;
}();

}  // namespace
}  // namespace loom::cuda
