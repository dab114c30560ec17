#pragma once
/// Philox4x32-10, a counter-based random generator (Salmon et al., SC'11).
/// Element i of a random tensor depends only on (seed, node key, run counter,
/// i), so the numbers are the same whatever the thread count and on CPU and
/// GPU. Header-only and usable from CUDA device code.

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define LOOM_HD __host__ __device__ __forceinline__
#else
#define LOOM_HD inline
#endif

namespace loom::philox {

struct U4 {
  uint32_t x[4];
};

LOOM_HD uint32_t mulhilo(uint32_t a, uint32_t b, uint32_t* hi) {
  uint64_t p = uint64_t(a) * b;
  *hi = uint32_t(p >> 32);
  return uint32_t(p);
}

/// Ten rounds of Philox4x32 on counter c with key k.
LOOM_HD U4 block(U4 c, uint32_t k0, uint32_t k1) {
  for (int r = 0; r < 10; ++r) {
    uint32_t hi0, hi1;
    uint32_t lo0 = mulhilo(0xD2511F53u, c.x[0], &hi0);
    uint32_t lo1 = mulhilo(0xCD9E8D57u, c.x[2], &hi1);
    c = U4{{hi1 ^ c.x[1] ^ k0, lo1, hi0 ^ c.x[3] ^ k1, lo0}};
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return c;
}

/// A stream key from the session seed and a node's key (splitmix64 mixing).
LOOM_HD uint64_t mix_key(uint64_t seed, uint64_t node_key) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ull * (node_key + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/// The four 32-bit words of block `index` in stream (key, run).
LOOM_HD U4 words(uint64_t key, uint64_t run, uint64_t index) {
  return block(U4{{uint32_t(index), uint32_t(index >> 32), uint32_t(run), uint32_t(run >> 32)}},
               uint32_t(key), uint32_t(key >> 32));
}

/// Uniform in [0, 1) from 24 random bits.
LOOM_HD float to_unit_float(uint32_t w) { return float(w >> 8) * (1.0f / 16777216.0f); }
/// Uniform in [0, 1) from 53 random bits.
LOOM_HD double to_unit_double(uint32_t hi, uint32_t lo) {
  return double(((uint64_t(hi) << 32) | lo) >> 11) * (1.0 / 9007199254740992.0);
}

/// Element k of block w's uniform [0,1) values: four float32 (one word each)
/// or two float64 (two words each).
LOOM_HD float uniform_f32(const U4& w, int k) { return to_unit_float(w.x[k]); }
LOOM_HD double uniform_f64(const U4& w, int k) { return to_unit_double(w.x[2 * k], w.x[2 * k + 1]); }
/// Element i of a uniform [0,1) stream.
LOOM_HD float uniform_f32(uint64_t key, uint64_t run, uint64_t i) { return uniform_f32(words(key, run, i / 4), int(i % 4)); }
LOOM_HD double uniform_f64(uint64_t key, uint64_t run, uint64_t i) {
  return uniform_f64(words(key, run, i / 2), int(i % 2));
}

/// Element k (0 or 1) of the standard normal pair of block w (Box-Muller).
LOOM_HD double normal(const U4& w, int k) {
  double u1 = 1.0 - to_unit_double(w.x[0], w.x[1]);  // (0, 1]: log is finite
  double u2 = to_unit_double(w.x[2], w.x[3]);
  double r = ::sqrt(-2.0 * ::log(u1));  // global names: loom::log(Tensor) must not hide them
  double a = 6.283185307179586 * u2;
  return k ? r * ::sin(a) : r * ::cos(a);
}
/// Element i of a standard normal stream: one block per pair.
LOOM_HD double normal(uint64_t key, uint64_t run, uint64_t i) { return normal(words(key, run, i / 2), int(i % 2)); }

}  // namespace loom::philox
