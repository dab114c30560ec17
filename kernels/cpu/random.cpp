// Random number kernels on Philox (core/philox.hpp): element i depends only on
// (seed, node key, run counter, i), so any split across threads gives the
// same numbers as the CUDA kernels.

#include "core/kernel.hpp"
#include "core/philox.hpp"
#include "kernels/cpu/loops.hpp"

namespace loom::cpu {
namespace {

template <bool Normal>
void random_kernel(const KernelCall& c) {
  const NDArray& o = c.out[0];
  const uint64_t key = philox::mix_key(c.ctx.seed, c.node_key), run = c.ctx.run_counter;
  const double a = c.attrs.f("a"), b = c.attrs.f("b");
  dispatch_among(FloatTypes{}, o.dtype(), [&]<class T>() {
    T* p = static_cast<T*>(o.raw());
    parallel_for(o.numel(), 4096, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        if constexpr (Normal) p[i] = T(a + b * philox::normal(key, run, uint64_t(i)));
        else if constexpr (std::is_same_v<T, float>) p[i] = T(a + (b - a) * double(philox::uniform_f32(key, run, uint64_t(i))));
        else p[i] = T(a + (b - a) * philox::uniform_f64(key, run, uint64_t(i)));
      }
    });
  });
}

const bool registered = [] {
  register_kernel("random_uniform", DeviceKind::cpu, FloatTypes::dtypes(), {&random_kernel<false>});
  register_kernel("random_normal", DeviceKind::cpu, FloatTypes::dtypes(), {&random_kernel<true>});
  return true;
}();

}  // namespace
}  // namespace loom::cpu
