// The Adam update (ops/optim.cpp) on the GPU: one pass over compact p, m, v, g
// (the kernel asks for compact inputs). Each thread reads element i of every
// input before writing element i of the outputs, so the outputs may alias the
// variables p, m and v. The scalar inputs live in device memory and are read
// by every thread (they are one cache line).

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/math.cuh"

namespace loom::cuda {
namespace {

template <class T>
__global__ void adam_kernel(T* po, T* mo, T* vo, const T* p, const T* m, const T* v, const T* g, const T* step_p,
                            const T* eps_p, const T* decay_p, T b1, T c1, T b2, T c2, int64_t n) {
  const T step = *step_p, eps = *eps_p, decay = *decay_p;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const T gi = g[i];
    const T mi = m[i] * b1 + gi * c1;
    const T vi = v[i] * b2 + (gi * gi) * c2;
    const T pi = p[i] * decay - step * mi / (d_sqrt(vi) + eps);
    mo[i] = mi;
    vo[i] = vi;
    po[i] = pi;
  }
}

void adam_update(const KernelCall& c) {
  use_device(c.ctx.device);
  const int64_t n = c.out[0].numel();
  if (n == 0) return;
  dispatch_among(FloatTypes{}, c.out[0].dtype(), [&]<class T>() {
    auto in = [&](int k) { return static_cast<const T*>(c.in[size_t(k)].raw()); };
    auto out = [&](int k) { return static_cast<T*>(c.out[size_t(k)].raw()); };
    const double b1 = c.attrs.f("beta1"), b2 = c.attrs.f("beta2");
    launch(adam_kernel<T>, grid_for(n), kThreads, 0, stream_of(c), c.op, out(0), out(1), out(2), in(0), in(1), in(2),
           in(3), in(4), in(5), in(6), T(b1), T(1.0 - b1), T(b2), T(1.0 - b2), n);
  });
}

const bool registered = [] {
  register_kernel("adam_update", DeviceKind::cuda, FloatTypes::dtypes(), {&adam_update, true});
  return true;
}();

}  // namespace
}  // namespace loom::cuda
