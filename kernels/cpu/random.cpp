// Random number kernels on Philox (core/philox.hpp): element i depends only on
// (seed, node key, run counter, i), so any split across threads gives the
// same numbers as the CUDA kernels.

#include "core/kernel.hpp"
#include "core/philox.hpp"
#include "kernels/cpu/loops.hpp"

namespace loom::cpu {
namespace {

/// Fills p[0, n) from whole Philox blocks: element i is value(words of block
/// i / E, i % E), E elements per block, as philox::uniform_f32 and the others
/// define it; each block is computed once, not once per element.
template <int E, class T, class Value>
void fill_blocks(T* p, int64_t n, uint64_t key, uint64_t run, Value value) {
  const int64_t blocks = (n + E - 1) / E;
  parallel_for(blocks, 1024, [&](int64_t lo, int64_t hi) {
    for (int64_t b = lo; b < hi; ++b) {
      const philox::U4 w = philox::words(key, run, uint64_t(b));
      for (int k = 0; k < E && b * E + k < n; ++k) p[b * E + k] = value(w, k);
    }
  });
}

template <bool Normal>
void random_kernel(const KernelCall& c) {
  const NDArray& o = c.out[0];
  const uint64_t key = philox::mix_key(c.ctx.seed, c.node_key), run = c.ctx.run_counter;
  const double a = c.attrs.f("a"), b = c.attrs.f("b");
  dispatch_among(FloatTypes{}, o.dtype(), [&]<class T>() {
    T* p = static_cast<T*>(o.raw());
    if constexpr (Normal)
      fill_blocks<2>(p, o.numel(), key, run, [&](const philox::U4& w, int k) { return T(a + b * philox::normal(w, k)); });
    else if constexpr (std::is_same_v<T, float>)
      fill_blocks<4>(p, o.numel(), key, run,
                     [&](const philox::U4& w, int k) { return T(a + (b - a) * double(philox::uniform_f32(w, k))); });
    else
      fill_blocks<2>(p, o.numel(), key, run,
                     [&](const philox::U4& w, int k) { return T(a + (b - a) * philox::uniform_f64(w, k)); });
  });
}

const bool registered = [] {
  register_kernel("random_uniform", DeviceKind::cpu, FloatTypes::dtypes(), {&random_kernel<false>});
  register_kernel("random_normal", DeviceKind::cpu, FloatTypes::dtypes(), {&random_kernel<true>});
  return true;
}();

}  // namespace
}  // namespace loom::cpu
