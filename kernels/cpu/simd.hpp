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

#include "kernels/elementwise_ops.hpp"

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

/// exp(x) for float32: kernels/elementwise_ops.hpp's, branch-free.
LOOM_SIMD_INLINE float exp(float x) { return ew::fast_exp(x); }
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

/// sum_i exp(x[i] - m), storing each term in y when y is not null, and
/// prefetching the n elements at `ahead` meanwhile: the next row, whose reads
/// from memory then overlap these exponentials instead of following them (x
/// itself when there is none).
template <class T>
LOOM_SIMD_INLINE T sum_exp(const T* x, T m, T* y, int64_t n, const T* ahead) {
  T lane[kLanes] = {};
  int64_t i = 0;
  if (y) {
    for (; i + kLanes <= n; i += kLanes) {
      __builtin_prefetch(ahead + i);  // a 64-byte line per 16 floats
      for (int k = 0; k < kLanes; ++k) {
        const T e = exp(x[i + k] - m);
        y[i + k] = e;
        lane[k] += e;
      }
    }
  } else {
    for (; i + kLanes <= n; i += kLanes) {
      __builtin_prefetch(ahead + i);
      for (int k = 0; k < kLanes; ++k) lane[k] += exp(x[i + k] - m);
    }
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
