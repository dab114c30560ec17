// The Adam update kernel (ops/optim.cpp): one pass, every element read before
// it is written, so p, m and v may be updated in their variables' memory.

#include <cmath>

#include "core/kernel.hpp"
#include "kernels/cpu/loops.hpp"

namespace loom::cpu {
namespace {

void adam_kernel(const KernelCall& c) {
  dispatch_among(FloatTypes{}, c.out[0].dtype(), [&]<class T>() {
    const T* p = static_cast<const T*>(c.in[0].raw());
    const T* m = static_cast<const T*>(c.in[1].raw());
    const T* v = static_cast<const T*>(c.in[2].raw());
    const T* g = static_cast<const T*>(c.in[3].raw());
    const T step = *static_cast<const T*>(c.in[4].raw()), eps = *static_cast<const T*>(c.in[5].raw());
    const T decay = *static_cast<const T*>(c.in[6].raw());
    // The constants as the composite form rounds them (computed in double, cast once).
    const T b1 = T(c.attrs.f("beta1")), c1 = T(1.0 - c.attrs.f("beta1"));
    const T b2 = T(c.attrs.f("beta2")), c2 = T(1.0 - c.attrs.f("beta2"));
    T* po = static_cast<T*>(c.out[0].raw());
    T* mo = static_cast<T*>(c.out[1].raw());
    T* vo = static_cast<T*>(c.out[2].raw());
    parallel_for(c.out[0].numel(), kGrain / 4, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        const T gi = g[i];
        const T mi = m[i] * b1 + gi * c1;
        const T vi = v[i] * b2 + (gi * gi) * c2;
        const T pi = p[i] * decay - step * mi / (std::sqrt(vi) + eps);
        mo[i] = mi;
        vo[i] = vi;
        po[i] = pi;
      }
    });
  });
}

const bool registered = [] {
  register_kernel("adam_update", DeviceKind::cpu, FloatTypes::dtypes(), {&adam_kernel, true});
  return true;
}();

}  // namespace
}  // namespace loom::cpu
