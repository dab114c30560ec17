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

namespace {

constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u, kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;

/// 64 blocks at a time, one array per word: the round loop over 64 lanes
/// vectorizes, at 1.6x the speed of philox_blocks' eight-lane vectors
/// (whose 64-bit multiplies are slow). Written as a helper of its own it
/// made the eight-lane path of short calls 15% slower (attention's dropout
/// rows), so that path stays inline below.
LOOM_SIMD_INLINE void philox_64(uint64_t key, uint64_t run, uint64_t first, uint32_t* w) {
  constexpr int L = 64;
  uint32_t c0[L], c1[L], c2[L], c3[L];
  for (int l = 0; l < L; ++l) {
    const uint64_t idx = first + uint64_t(l);
    c0[l] = uint32_t(idx), c1[l] = uint32_t(idx >> 32), c2[l] = uint32_t(run), c3[l] = uint32_t(run >> 32);
  }
  uint32_t k0 = uint32_t(key), k1 = uint32_t(key >> 32);
  for (int r = 0; r < 10; ++r) {
    for (int l = 0; l < L; ++l) {
      const uint64_t p0 = uint64_t(c0[l]) * kM0, p1 = uint64_t(c2[l]) * kM1;
      const uint32_t n0 = uint32_t(p1 >> 32) ^ c1[l] ^ k0, n2 = uint32_t(p0 >> 32) ^ c3[l] ^ k1;
      c1[l] = uint32_t(p1), c3[l] = uint32_t(p0), c0[l] = n0, c2[l] = n2;
    }
    k0 += kW0, k1 += kW1;
  }
  for (int l = 0; l < L; ++l) w[4 * l] = c0[l], w[4 * l + 1] = c1[l], w[4 * l + 2] = c2[l], w[4 * l + 3] = c3[l];
}

}  // namespace

/// 64 blocks at a time, then the rest (and calls for few blocks, as
/// attention's rows) eight at a time in 64-bit vector lanes (GCC vector
/// extensions).
LOOM_CPU_CLONES void philox_blocks(uint64_t key, uint64_t run, uint64_t first, int64_t n, uint32_t* w) {
  int64_t b = 0;
  for (; b + 64 <= n; b += 64) philox_64(key, run, first + uint64_t(b), w + 4 * b);
  typedef uint64_t U8 __attribute__((vector_size(64)));
  const U8 low = U8{} + 0xFFFFFFFFull;
  for (int64_t b0 = b; b0 < n; b0 += 8) {
    U8 c0, c1, c2, c3;
    for (int l = 0; l < 8; ++l) {
      const uint64_t idx = first + uint64_t(b0 + l);
      c0[l] = idx & 0xFFFFFFFFull, c1[l] = idx >> 32, c2[l] = run & 0xFFFFFFFFull, c3[l] = run >> 32;
    }
    uint64_t k0 = key & 0xFFFFFFFFull, k1 = key >> 32;
    for (int r = 0; r < 10; ++r) {
      const U8 p0 = c0 * uint64_t(kM0), p1 = c2 * uint64_t(kM1);
      const U8 n0 = (p1 >> 32) ^ c1 ^ k0, n2 = (p0 >> 32) ^ c3 ^ k1;
      c1 = p1 & low, c3 = p0 & low, c0 = n0, c2 = n2;
      k0 = (k0 + kW0) & 0xFFFFFFFFull;
      k1 = (k1 + kW1) & 0xFFFFFFFFull;
    }
    for (int64_t l = 0; l < std::min<int64_t>(8, n - b0); ++l) {
      uint32_t* o = w + 4 * (b0 + l);
      o[0] = uint32_t(c0[l]), o[1] = uint32_t(c1[l]), o[2] = uint32_t(c2[l]), o[3] = uint32_t(c3[l]);
    }
  }
}

namespace {

/// p[j] = value(w, j) for j in [0, n): element j of a chunk of blocks whose
/// words are w. Compiled per instruction set: the uniform values are a
/// vectorizable conversion of consecutive words.
template <class T, class Value>
LOOM_CPU_CLONES void fill_chunk(T* p, const uint32_t* w, int64_t n, Value value) {
  for (int64_t j = 0; j < n; ++j) p[j] = value(w, j);
}

/// Fills p[0, n) from whole Philox blocks, E elements per block: element i
/// is value(the words of its chunk, i - the chunk's first element), as
/// philox::uniform_f32 and the others define it; each block is computed
/// once, not once per element, and kChunk blocks at a time by philox_blocks.
template <int E, class T, class Value>
void fill_blocks(T* p, int64_t n, uint64_t key, uint64_t run, Value value) {
  constexpr int64_t kChunk = 256;
  const int64_t blocks = (n + E - 1) / E;
  parallel_for(blocks, 1024, [&](int64_t lo, int64_t hi) {
    uint32_t w[4 * kChunk];
    for (int64_t b0 = lo; b0 < hi; b0 += kChunk) {
      const int64_t nb = std::min(kChunk, hi - b0);
      philox_blocks(key, run, uint64_t(b0), nb, w);
      const int64_t first = b0 * E;
      fill_chunk(p + first, w, std::min(n, (b0 + nb) * E) - first, value);
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
    if constexpr (Normal)  // a pair per block
      fill_blocks<2>(p, o.numel(), key, run, [a, b](const uint32_t* w, int64_t j) {
        const uint32_t* q = w + 4 * (j / 2);
        return T(a + b * philox::normal(philox::U4{{q[0], q[1], q[2], q[3]}}, int(j % 2)));
      });
    else if constexpr (std::is_same_v<T, float>)  // a word per element
      fill_blocks<4>(p, o.numel(), key, run, [a, b](const uint32_t* w, int64_t j) {
        return T(a + (b - a) * double(philox::to_unit_float(w[j])));
      });
    else  // two words per element
      fill_blocks<2>(p, o.numel(), key, run, [a, b](const uint32_t* w, int64_t j) {
        return T(a + (b - a) * philox::to_unit_double(w[2 * j], w[2 * j + 1]));
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
