#pragma once
// Run-time instruction-set dispatch and vectorizable math for hot CPU loops.
//
// LOOM_CPU_CLONES compiles a function three times, for AVX-512 (x86-64-v4),
// AVX2 + FMA (x86-64-v3) and baseline x86-64, and the dynamic loader picks
// the clone for the CPU the process runs on (GCC target_clones, an ifunc):
// a portable build still runs 16-lane loops on an AVX-512 machine, and never
// an instruction the machine lacks. ThreadSanitizer cannot run ifunc
// resolvers, so TSan builds (and other compilers or targets) get one plain
// version. Helpers called from a clone must be forced inline (LOOM_SIMD_INLINE):
// they then compile for the clone's instruction set.

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_THREAD__)
#define LOOM_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define LOOM_CPU_CLONES
#endif

/// The helpers below are forced inline: GCC would otherwise call one copy
/// compiled for the baseline instruction set from every clone.
#define LOOM_SIMD_INLINE inline __attribute__((always_inline))

namespace loom::cpu::simd {

/// Accumulator lanes: sums and maxima over a row keep this many partials so
/// that the loop vectorizes (and the summation order depends on n only).
inline constexpr int kLanes = 16;

/// exp(x) for float32, branch-free so that loops over it vectorize at any
/// width (kernels/cpu/elementwise.hpp's fast_exp does not at AVX2/AVX-512:
/// its rounding and two-step scaling become branches there). Cephes
/// polynomial, within 2 ulp of libm up to FLT_MAX; exp(-inf) = 0, exp(+inf) = inf, NaN stays NaN.
LOOM_SIMD_INLINE float exp(float x) {
  constexpr float kHi = 88.72283f, kLo = -87.33654f;  // log(FLT_MAX), log(FLT_MIN)
  float xc = x < kLo ? kLo : x;
  xc = xc > kHi ? kHi : xc;
  const float fn = (xc * 1.44269504088896341f + 12582912.f) - 12582912.f;  // round to nearest
  float r = xc - fn * 0.693359375f;
  r = r - fn * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t n = int32_t(fn), a = n >> 1, b = n - a;  // 2^n in two normal factors: n reaches 128
  float y = p * std::bit_cast<float>((a + 127) << 23) * std::bit_cast<float>((b + 127) << 23);
  y = x > kHi ? std::numeric_limits<float>::infinity() : y;
  y = x < kLo ? 0.0f : y;
  return x != x ? x : y;
}
/// float64 goes through libm (float64 is for checking, not for speed).
LOOM_SIMD_INLINE double exp(double x) { return std::exp(x); }

template <class T>
inline constexpr T kNegInf = -std::numeric_limits<T>::infinity();

/// Largest element of x[0, n) ignoring NaN (NaN reaches the results through
/// the exponentials); -inf when n is 0.
template <class T>
LOOM_SIMD_INLINE T max(const T* x, int64_t n) {
  T lane[kLanes];
  for (int k = 0; k < kLanes; ++k) lane[k] = kNegInf<T>;
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int k = 0; k < kLanes; ++k) lane[k] = x[i + k] > lane[k] ? x[i + k] : lane[k];
  T m = kNegInf<T>;
  for (int k = 0; k < kLanes; ++k) m = lane[k] > m ? lane[k] : m;
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

/// Sum of lanes in a fixed order.
template <class T>
LOOM_SIMD_INLINE T fold(const T (&lane)[kLanes]) {
  T s = 0;
  for (int k = 0; k < kLanes; ++k) s += lane[k];
  return s;
}

/// sum_i exp(x[i] - m), storing each term in y when y is not null.
template <class T>
LOOM_SIMD_INLINE T sum_exp(const T* x, T m, T* y, int64_t n) {
  T lane[kLanes] = {};
  int64_t i = 0;
  if (y) {
    for (; i + kLanes <= n; i += kLanes)
      for (int k = 0; k < kLanes; ++k) {
        const T e = exp(x[i + k] - m);
        y[i + k] = e;
        lane[k] += e;
      }
  } else {
    for (; i + kLanes <= n; i += kLanes)
      for (int k = 0; k < kLanes; ++k) lane[k] += exp(x[i + k] - m);
  }
  T s = fold(lane);
  for (; i < n; ++i) {
    const T e = exp(x[i] - m);
    if (y) y[i] = e;
    s += e;
  }
  return s;
}

/// sum_i a[i] * b[i] (b null: sum_i a[i]).
template <class T>
LOOM_SIMD_INLINE T dot(const T* a, const T* b, int64_t n) {
  T lane[kLanes] = {};
  int64_t i = 0;
  if (b) {
    for (; i + kLanes <= n; i += kLanes)
      for (int k = 0; k < kLanes; ++k) lane[k] += a[i + k] * b[i + k];
  } else {
    for (; i + kLanes <= n; i += kLanes)
      for (int k = 0; k < kLanes; ++k) lane[k] += a[i + k];
  }
  T s = fold(lane);
  for (; i < n; ++i) s += b ? a[i] * b[i] : a[i];
  return s;
}

}  // namespace loom::cpu::simd
