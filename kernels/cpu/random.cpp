// Random number kernels on Philox (core/philox.hpp): element i depends only on
// (seed, node key, run counter, i), so any split across threads gives the
// same numbers as the CUDA kernels.

#include "kernels/cpu/random.hpp"

#include <algorithm>

#include "core/kernel.hpp"
#include "core/philox.hpp"
#include "kernels/cpu/loops.hpp"
#include "kernels/cpu/simd.hpp"

namespace loom::cpu {

LOOM_CPU_CLONES void philox_blocks(uint64_t key, uint64_t run, uint64_t first, int64_t n, uint32_t* w) {
  typedef uint64_t U8 __attribute__((vector_size(64)));
  const U8 low = U8{} + 0xFFFFFFFFull;
  for (int64_t b0 = 0; b0 < n; b0 += 8) {
    U8 c0, c1, c2, c3;
    for (int l = 0; l < 8; ++l) {
      const uint64_t idx = first + uint64_t(b0 + l);
      c0[l] = idx & 0xFFFFFFFFull, c1[l] = idx >> 32, c2[l] = run & 0xFFFFFFFFull, c3[l] = run >> 32;
    }
    uint64_t k0 = key & 0xFFFFFFFFull, k1 = key >> 32;
    for (int r = 0; r < 10; ++r) {
      const U8 p0 = c0 * 0xD2511F53ull, p1 = c2 * 0xCD9E8D57ull;
      const U8 n0 = (p1 >> 32) ^ c1 ^ k0, n2 = (p0 >> 32) ^ c3 ^ k1;
      c1 = p1 & low, c3 = p0 & low, c0 = n0, c2 = n2;
      k0 = (k0 + 0x9E3779B9u) & 0xFFFFFFFFull;
      k1 = (k1 + 0xBB67AE85u) & 0xFFFFFFFFull;
    }
    for (int64_t l = 0; l < std::min<int64_t>(8, n - b0); ++l) {
      uint32_t* o = w + 4 * (b0 + l);
      o[0] = uint32_t(c0[l]), o[1] = uint32_t(c1[l]), o[2] = uint32_t(c2[l]), o[3] = uint32_t(c3[l]);
    }
  }
}

namespace {

/// Fills p[0, n) from whole Philox blocks: element i is value(the four words
/// of block i / E, i % E), E elements per block, as philox::uniform_f32 and
/// the others define it; each block is computed once, not once per element,
/// and kChunk blocks at a time by philox_blocks.
template <int E, class T, class Value>
void fill_blocks(T* p, int64_t n, uint64_t key, uint64_t run, Value value) {
  constexpr int64_t kChunk = 64;
  const int64_t blocks = (n + E - 1) / E;
  parallel_for(blocks, 1024, [&](int64_t lo, int64_t hi) {
    uint32_t w[4 * kChunk];
    for (int64_t b0 = lo; b0 < hi; b0 += kChunk) {
      philox_blocks(key, run, uint64_t(b0), std::min(kChunk, hi - b0), w);
      const int64_t first = b0 * E, last = std::min(n, std::min(b0 + kChunk, hi) * E);
      for (int64_t i = first; i < last; ++i) p[i] = value(w + 4 * ((i - first) / E), int((i - first) % E));
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
      fill_blocks<2>(p, o.numel(), key, run, [&](const uint32_t* w, int k) {
        return T(a + b * philox::normal(philox::U4{{w[0], w[1], w[2], w[3]}}, k));
      });
    else if constexpr (std::is_same_v<T, float>)
      fill_blocks<4>(p, o.numel(), key, run,
                     [&](const uint32_t* w, int k) { return T(a + (b - a) * double(philox::to_unit_float(w[k]))); });
    else
      fill_blocks<2>(p, o.numel(), key, run, [&](const uint32_t* w, int k) {
        return T(a + (b - a) * philox::to_unit_double(w[2 * k], w[2 * k + 1]));
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
