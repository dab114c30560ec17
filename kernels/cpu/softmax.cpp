// Fused softmax, log_softmax, logsumexp and the softmax backward ops
// (definitions and semantics in ops/softmax.cpp).
//
// The compact input is viewed as [outer, n, inner] with the reduced dims in
// the middle. With inner = 1 each row is contiguous: one task range per group
// of rows, three vectorized passes per row (max, sum of exponentials, write).
// With inner > 1 the same passes run over blocks of kCols adjacent columns,
// vectorized across the columns. Row and block functions are compiled per
// instruction set and picked at run time (kernels/cpu/simd.hpp). Partial sums
// live in fixed lanes, so results do not depend on the thread count.

#include <algorithm>

#include "core/kernel.hpp"
#include "kernels/cpu/loops.hpp"
#include "kernels/cpu/simd.hpp"

namespace loom::cpu {
namespace {

namespace sd = simd;

enum class Kind { softmax, log_softmax, logsumexp, softmax_grad, log_softmax_grad };

// ---------------------------------------------------------------- one contiguous row

// a: the input (x, or y for the grad ops), b: dy for the grad ops; out: the
// row's n outputs, or one value for logsumexp; next: the row of a read next
// (prefetched during the exponentials), or a.
template <class T>
LOOM_CPU_CLONES void row(Kind kind, const T* a, const T* b, T* out, int64_t n, const T* next) {
  switch (kind) {
    case Kind::softmax: {
      const T m = sd::max(a, n);
      const T inv = T(1) / sd::sum_exp(a, m, out, n, next);
      for (int64_t j = 0; j < n; ++j) out[j] *= inv;
      return;
    }
    case Kind::log_softmax: {
      // (x - m) - log s, as PyTorch: x - (m + log s) would round x - m at the magnitude of m.
      const T m = sd::max(a, n);
      const T l = std::log(sd::sum_exp<T>(a, m, nullptr, n, next));
      for (int64_t j = 0; j < n; ++j) out[j] = (a[j] - m) - l;
      return;
    }
    case Kind::logsumexp: {
      T m = sd::max(a, n);
      m = std::isinf(m) ? T(0) : m;  // PyTorch: an infinite max is not subtracted
      *out = m + std::log(sd::sum_exp<T>(a, m, nullptr, n, next));
      return;
    }
    case Kind::softmax_grad: {
      const T s = sd::dot(a, b, n);
      for (int64_t j = 0; j < n; ++j) out[j] = a[j] * (b[j] - s);
      return;
    }
    case Kind::log_softmax_grad: {
      const T s = sd::dot<T>(b, nullptr, n);
      for (int64_t j = 0; j < n; ++j) out[j] = b[j] - sd::exp(a[j]) * s;
      return;
    }
  }
}

// ---------------------------------------------------------------- a block of columns

constexpr int64_t kCols = 64;

// Row j of the block starts at p + j * stride; w <= kCols columns.
template <class T>
LOOM_CPU_CLONES void cols(Kind kind, const T* a, const T* b, T* out, int64_t n, int64_t stride, int64_t w) {
  T m[kCols], s[kCols];
  for (int64_t c = 0; c < w; ++c) m[c] = sd::kNegInf<T>, s[c] = 0;
  const bool grad = kind == Kind::softmax_grad || kind == Kind::log_softmax_grad;
  for (int64_t j = 0; j < n; ++j) {
    const T* x = a + j * stride;
    const T* g = b ? b + j * stride : nullptr;
    if (kind == Kind::softmax_grad)
      for (int64_t c = 0; c < w; ++c) s[c] += x[c] * g[c];
    else if (kind == Kind::log_softmax_grad)
      for (int64_t c = 0; c < w; ++c) s[c] += g[c];
    else
      for (int64_t c = 0; c < w; ++c) m[c] = x[c] > m[c] ? x[c] : m[c];
  }
  if (kind == Kind::logsumexp)
    for (int64_t c = 0; c < w; ++c) m[c] = std::isinf(m[c]) ? T(0) : m[c];
  if (kind == Kind::softmax) {  // keep the exponentials: the last pass only scales them
    for (int64_t j = 0; j < n; ++j)
      for (int64_t c = 0; c < w; ++c) {
        const T e = sd::exp(a[j * stride + c] - m[c]);
        out[j * stride + c] = e;
        s[c] += e;
      }
  } else if (!grad) {
    for (int64_t j = 0; j < n; ++j)
      for (int64_t c = 0; c < w; ++c) s[c] += sd::exp(a[j * stride + c] - m[c]);
  }
  switch (kind) {
    case Kind::logsumexp:
      for (int64_t c = 0; c < w; ++c) out[c] = m[c] + std::log(s[c]);
      return;
    case Kind::softmax:
      for (int64_t c = 0; c < w; ++c) s[c] = T(1) / s[c];
      for (int64_t j = 0; j < n; ++j)
        for (int64_t c = 0; c < w; ++c) out[j * stride + c] *= s[c];
      return;
    case Kind::log_softmax:
      for (int64_t c = 0; c < w; ++c) s[c] = std::log(s[c]);
      for (int64_t j = 0; j < n; ++j)
        for (int64_t c = 0; c < w; ++c) out[j * stride + c] = (a[j * stride + c] - m[c]) - s[c];
      return;
    case Kind::softmax_grad:
      for (int64_t j = 0; j < n; ++j)
        for (int64_t c = 0; c < w; ++c) out[j * stride + c] = a[j * stride + c] * (b[j * stride + c] - s[c]);
      return;
    case Kind::log_softmax_grad:
      for (int64_t j = 0; j < n; ++j)
        for (int64_t c = 0; c < w; ++c)
          out[j * stride + c] = b[j * stride + c] - sd::exp(a[j * stride + c]) * s[c];
      return;
  }
}

// ---------------------------------------------------------------- the kernels

/// The reduced dims [a0, a1] of a call.
std::pair<int64_t, int64_t> reduced_dims(Kind kind, const Attrs& attrs, int64_t ndim) {
  if (kind != Kind::logsumexp) {
    int64_t a = attrs.i("axis");
    a = a < 0 ? a + ndim : a;
    return {a, a};
  }
  const auto& axes = attrs.ints("axes");
  if (axes.empty()) return {0, ndim - 1};
  auto norm = [&](int64_t a) { return a < 0 ? a + ndim : a; };
  int64_t lo = norm(axes[0]), hi = lo;
  for (int64_t a : axes) lo = std::min(lo, norm(a)), hi = std::max(hi, norm(a));
  return {lo, hi};
}

template <class T>
void run(Kind kind, const KernelCall& c) {
  const NDArray& x = c.in[0];
  const Shape& s = x.shape();
  const auto [a0, a1] = reduced_dims(kind, c.attrs, x.ndim());
  int64_t outer = 1, n = 1, inner = 1;
  for (int64_t d = 0; d < x.ndim(); ++d) (d < a0 ? outer : d <= a1 ? n : inner) *= s[size_t(d)];
  const T* a = static_cast<const T*>(x.raw());
  const T* b = c.in.size() > 1 ? static_cast<const T*>(c.in[1].raw()) : nullptr;
  T* y = static_cast<T*>(c.out[0].raw());
  const bool reduce = kind == Kind::logsumexp;
  // Nothing to write (a zero dim, reduced or not): return before looping over the other dims, whose product
  // may be huge when one dim is 0.
  if (c.out[0].numel() == 0) return;
  if (inner == 1) {
    parallel_for(outer, std::max<int64_t>(1, kGrain / std::max<int64_t>(n, 1)), [&](int64_t lo, int64_t hi) {
      for (int64_t o = lo; o < hi; ++o) {
        const T* x = a + o * n;
        row<T>(kind, x, b ? b + o * n : nullptr, y + (reduce ? o : o * n), n, o + 1 < hi ? x + n : x);
      }
    });
    return;
  }
  const int64_t blocks = (inner + kCols - 1) / kCols;
  parallel_for(outer * blocks, std::max<int64_t>(1, kGrain / std::max<int64_t>(n * kCols, 1)), [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t o = t / blocks, c0 = (t % blocks) * kCols, w = std::min(kCols, inner - c0);
      const int64_t in_off = o * n * inner + c0;
      cols<T>(kind, a + in_off, b ? b + in_off : nullptr, y + (reduce ? o * inner + c0 : in_off), n, inner, w);
    }
  });
}

template <Kind K>
void kernel(const KernelCall& c) {
  dispatch_among(FloatTypes{}, c.out[0].dtype(), [&]<class T>() { run<T>(K, c); });
}

const bool registered = [] {
  const auto f = FloatTypes::dtypes();
  register_kernel("softmax", DeviceKind::cpu, f, {.fn = &kernel<Kind::softmax>, .compact_inputs = true});
  register_kernel("log_softmax", DeviceKind::cpu, f, {.fn = &kernel<Kind::log_softmax>, .compact_inputs = true});
  register_kernel("logsumexp", DeviceKind::cpu, f, {.fn = &kernel<Kind::logsumexp>, .compact_inputs = true});
  register_kernel("softmax_grad", DeviceKind::cpu, f, {.fn = &kernel<Kind::softmax_grad>, .compact_inputs = true});
  register_kernel("log_softmax_grad", DeviceKind::cpu, f,
                  {.fn = &kernel<Kind::log_softmax_grad>, .compact_inputs = true});
  return true;
}();

}  // namespace
}  // namespace loom::cpu
