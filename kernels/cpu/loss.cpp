// Softmax cross-entropy kernels (ops/loss.cpp): rows in parallel; the
// forward reads a row for its maximum and again (from cache) for its sum of
// exponentials, and writes only the loss and lse; the gradient recomputes
// each exponential from the logits and lse. The row loops are
// kernels/cpu/simd.hpp's, cloned per instruction set: the exponentials are
// most of a language model's loss.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "core/kernel.hpp"
#include "kernels/cpu/loops.hpp"
#include "kernels/cpu/simd.hpp"
#include "kernels/range_check.hpp"

namespace loom::cpu {
namespace {

/// log(sum_j exp(r_j)) = m + log(s), m the row's maximum, s = sum exp(r - m).
/// A NaN anywhere gives NaN (through the sum, or through the scan when m is
/// infinite); +inf gives +inf, a row of -inf gives -inf. The row `next` (r
/// itself for the last row) is prefetched while the exponentials are
/// computed: without it the forward ran at the memory's speed, then at the
/// exponentials'.
template <class T>
LOOM_CPU_CLONES T row_lse(const T* r, const T* next, int64_t C) {
  const T m = simd::max(r, C);  // NaNs skipped
  if (!std::isfinite(m)) {
    T lse = m;
    for (int64_t j = 0; j < C; ++j)
      if (r[j] != r[j]) lse = r[j];
    return lse;
  }
  return m + std::log(simd::sum_exp(r, m, static_cast<T*>(nullptr), C, next));
}

/// y = exp(x - lse) g, prefetching the n elements at `ahead` (what is read
/// next) meanwhile.
template <class T>
LOOM_SIMD_INLINE void exp_scaled(const T* __restrict x, T lse, T g, T* __restrict y, int64_t n, const T* ahead) {
  constexpr int kLine = 64 / sizeof(T);
  int64_t j = 0;
  for (; j + kLine <= n; j += kLine) {
    __builtin_prefetch(ahead + j);
    for (int k = 0; k < kLine; ++k) y[j + k] = simd::exp(x[j + k] - lse) * g;
  }
  for (; j < n; ++j) y[j] = simd::exp(x[j] - lse) * g;
}

/// dx = exp(x - lse) g, except (p - 1) g at the label (not p g - g: inf - inf
/// would be NaN for an infinite g). NaN throughout when lse is not finite (no
/// softmax). dx may be x: the label's element is read first. `next` is the
/// row read after this one (prefetched meanwhile), or x when there is none.
template <class T>
LOOM_CPU_CLONES void grad_row(const T* x, T lse, T g, int64_t label, T* dx, int64_t C, const T* next) {
  if (!std::isfinite(lse)) {
    for (int64_t j = 0; j < C; ++j) dx[j] = std::numeric_limits<T>::quiet_NaN();
    return;
  }
  const T at_label = (simd::exp(x[label] - lse) - T(1)) * g;
  if (dx == x) {
    // In place, through a copy of each chunk: a read-modify-write of the
    // same lines with this much arithmetic ran 1.6x slower than reading one
    // array and writing another (184 MB, one thread).
    constexpr int64_t kChunk = 2048;
    T copy[kChunk];
    for (int64_t j = 0; j < C; j += kChunk) {
      const int64_t n = std::min(kChunk, C - j);
      std::memcpy(copy, x + j, size_t(n) * sizeof(T));
      exp_scaled(copy, lse, g, dx + j, n, j + 2 * kChunk <= C ? x + j + kChunk : next);
    }
  } else {
    exp_scaled(x, lse, g, dx, C, next);
  }
  dx[label] = at_label;
}

template <class I>
int64_t checked_label(const KernelCall& c, I v, int64_t C) {
  bool bad = int64_t(v) >= C;
  if constexpr (std::is_signed_v<I>) bad |= v < 0;
  if (bad) fail(c.op, " '", c.node, "': label ", int64_t(v), " out of range [0, ", C, ")");
  return int64_t(v);
}

int64_t row_grain(int64_t C) { return std::max<int64_t>(1, kGrain / std::max<int64_t>(C, 1)); }

void forward_kernel(const KernelCall& c) {
  const NDArray &x = c.in[0], &y = c.in[1];
  const int64_t N = x.shape()[0], C = x.shape()[1];
  dispatch_among(FloatTypes{}, x.dtype(), [&]<class T>() {
    dispatch_among(TypeList<int32_t, int64_t, uint8_t>{}, y.dtype(), [&]<class I>() {
      const T* px = static_cast<const T*>(x.raw());
      const I* py = static_cast<const I*>(y.raw());
      for (int64_t i = 0; i < N; ++i) checked_label(c, py[i], C);
      T* loss = static_cast<T*>(c.out[0].raw());
      T* lse = static_cast<T*>(c.out[1].raw());
      parallel_for(N, row_grain(C), [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) {
          const T* r = px + i * C;
          lse[i] = row_lse(r, i + 1 < hi ? r + C : r, C);
          loss[i] = lse[i] - r[int64_t(py[i])];
        }
      });
    });
  });
}

void grad_kernel(const KernelCall& c) {
  const NDArray &x = c.in[0], &y = c.in[1];
  const int64_t N = x.shape()[0], C = x.shape()[1];
  dispatch_among(FloatTypes{}, x.dtype(), [&]<class T>() {
    dispatch_among(TypeList<int32_t, int64_t, uint8_t>{}, y.dtype(), [&]<class I>() {
      const T* px = static_cast<const T*>(x.raw());
      const I* py = static_cast<const I*>(y.raw());
      for (int64_t i = 0; i < N; ++i) checked_label(c, py[i], C);
      const T* lse = static_cast<const T*>(c.in[2].raw());
      const T* dloss = static_cast<const T*>(c.in[3].raw());
      T* out = static_cast<T*>(c.out[0].raw());
      parallel_for(N, row_grain(C), [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) {
          const T* row = px + i * C;
          grad_row(row, lse[i], dloss[i], int64_t(py[i]), out + i * C, C, i + 1 < hi ? row + C : row);
        }
      });
    });
  });
}

/// check_range: the first element outside the range fails the call; otherwise a copy.
void check_range_kernel(const KernelCall& c) {
  const RangeCheck r = range_check(c.attrs);
  dispatch_among(FloatTypes{}, c.out[0].dtype(), [&]<class T>() {
    const T* x = static_cast<const T*>(c.in[0].raw());
    const int64_t n = c.in[0].numel();
    std::atomic<int64_t> first{n};
    parallel_for(n, kGrain, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i)
        if (!r.admits(x[i])) {
          int64_t seen = first.load();
          while (i < seen && !first.compare_exchange_weak(seen, i)) {
          }
          return;
        }
    });
    if (first.load() < n) fail(c.op, " '", c.node, "': element ", first.load(), " is ", r.outside());
    std::copy(x, x + n, static_cast<T*>(c.out[0].raw()));
  });
}

const bool registered = [] {
  register_kernel("check_range", DeviceKind::cpu, FloatTypes::dtypes(), {&check_range_kernel, true});
  register_kernel("sparse_softmax_cross_entropy", DeviceKind::cpu, FloatTypes::dtypes(), {&forward_kernel, true});
  register_kernel("sparse_softmax_cross_entropy_grad", DeviceKind::cpu, FloatTypes::dtypes(), {&grad_kernel, true});
  return true;
}();

}  // namespace
}  // namespace loom::cpu
