// Softmax cross-entropy kernels (ops/loss.cpp): rows in parallel; a row is
// read for its maximum, exponentiated once into the softmax output and
// normalized there (it stays in cache meanwhile); the gradient is one
// multiply per element. The row loops are kernels/cpu/simd.hpp's, cloned per
// instruction set.

#include <cmath>
#include <limits>
#include <type_traits>

#include "core/kernel.hpp"
#include "kernels/cpu/loops.hpp"
#include "kernels/cpu/simd.hpp"

namespace loom::cpu {
namespace {

/// Writes p = softmax(r) and returns log(sum exp(r)) = m + log(s), m the
/// row's maximum, s = sum exp(r - m). A NaN anywhere gives NaN (through the
/// sum, or through the scan when m is infinite). p may not alias r. Compiled
/// for each instruction set (kernels/cpu/simd.hpp): the exponentials are most
/// of a language model's loss.
template <class T>
LOOM_CPU_CLONES T softmax_row(const T* __restrict r, T* __restrict p, int64_t C) {
  const T m = simd::max(r, C);  // NaNs skipped
  if (!std::isfinite(m)) {      // +inf, or only -inf and NaN: no finite softmax
    T lse = m;
    for (int64_t j = 0; j < C; ++j)
      if (r[j] != r[j]) lse = r[j];
    for (int64_t j = 0; j < C; ++j) p[j] = std::numeric_limits<T>::quiet_NaN();
    return lse;
  }
  const T s = simd::sum_exp(r, m, p, C);
  const T inv = T(1) / s;
  for (int64_t q = 0; q < C; ++q) p[q] *= inv;
  return m + std::log(s);
}

/// dx = p * g, except (p - 1) g at the label (not p g - g: inf - inf would be NaN for an infinite g).
template <class T>
LOOM_CPU_CLONES void grad_row(const T* __restrict p, T g, int64_t label, T* __restrict dx, int64_t C) {
  for (int64_t j = 0; j < C; ++j) dx[j] = p[j] * g;
  dx[label] = (p[label] - T(1)) * g;
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
      T* probs = static_cast<T*>(c.out[1].raw());
      parallel_for(N, row_grain(C), [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) {
          const T* r = px + i * C;
          loss[i] = softmax_row(r, probs + i * C, C) - r[int64_t(py[i])];
        }
      });
    });
  });
}

void grad_kernel(const KernelCall& c) {
  const NDArray &p = c.in[0], &y = c.in[1];
  const int64_t N = p.shape()[0], C = p.shape()[1];
  dispatch_among(FloatTypes{}, p.dtype(), [&]<class T>() {
    dispatch_among(TypeList<int32_t, int64_t, uint8_t>{}, y.dtype(), [&]<class I>() {
      const T* pp = static_cast<const T*>(p.raw());
      const I* py = static_cast<const I*>(y.raw());
      for (int64_t i = 0; i < N; ++i) checked_label(c, py[i], C);
      const T* dloss = static_cast<const T*>(c.in[2].raw());
      T* out = static_cast<T*>(c.out[0].raw());
      parallel_for(N, row_grain(C), [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) grad_row(pp + i * C, dloss[i], int64_t(py[i]), out + i * C, C);
      });
    });
  });
}

const bool registered = [] {
  register_kernel("sparse_softmax_cross_entropy", DeviceKind::cpu, FloatTypes::dtypes(), {&forward_kernel, true});
  register_kernel("sparse_softmax_cross_entropy_grad", DeviceKind::cpu, FloatTypes::dtypes(), {&grad_kernel, true});
  return true;
}();

}  // namespace
}  // namespace loom::cpu
