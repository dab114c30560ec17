// resample and resample_grad on the CPU. x is viewed as [outer, in, inner]
// around the axis: an output row (inner contiguous elements) is a weighted
// sum of its taps' input rows, read in place. The transpose is the same loop
// over the inverted table (each dx row gathers the dy rows that read it, in
// increasing (o, k)): no scatter, so no atomics, and deterministic.

#include "core/kernel.hpp"
#include "core/parallel.hpp"
#include "kernels/cpu/loops.hpp"
#include "kernels/cpu/simd.hpp"

namespace loom::cpu {
namespace {

/// Each output row's taps, CSR: row r reads input rows src[q] with weight w[q], q in [begin[r], begin[r + 1]).
template <class T>
struct Taps {
  std::vector<int64_t> begin, src;
  std::vector<T> w;
};

/// sources [out, K] as int64, each checked against the axis size `in`.
std::vector<int64_t> checked_sources(const KernelCall& c, const NDArray& sources, int64_t in) {
  std::vector<int64_t> r(size_t(sources.numel()));
  dispatch_among(TypeList<int32_t, int64_t>{}, sources.dtype(), [&]<class I>() {
    const I* s = static_cast<const I*>(sources.raw());
    for (size_t i = 0; i < r.size(); ++i) {
      if (s[i] < 0 || int64_t(s[i]) >= in)
        fail(c.op, " '", c.node, "': source ", int64_t(s[i]), " out of range [0, ", in, ")");
      r[i] = int64_t(s[i]);
    }
  });
  return r;
}

/// The forward's taps: output o reads sources[o, k] with weights[o, k].
template <class T>
Taps<T> forward_taps(const KernelCall& c, int64_t in) {
  const NDArray& sources = c.in[1];
  const int64_t out = sources.shape()[0], K = sources.shape()[1];
  Taps<T> t{std::vector<int64_t>(size_t(out + 1)), checked_sources(c, sources, in), {}};
  for (int64_t o = 0; o <= out; ++o) t.begin[size_t(o)] = o * K;
  const T* w = static_cast<const T*>(c.in[2].raw());
  t.w.assign(w, w + out * K);
  return t;
}

/// The transpose's taps: input i gathers every (o, k) with sources[o, k] == i, in increasing (o, k).
template <class T>
Taps<T> transposed_taps(const KernelCall& c, int64_t in) {
  const NDArray& sources = c.in[1];
  const int64_t K = sources.shape()[1];
  const std::vector<int64_t> src = checked_sources(c, sources, in);
  const T* w = static_cast<const T*>(c.in[2].raw());
  Taps<T> t{std::vector<int64_t>(size_t(in + 1), 0), std::vector<int64_t>(src.size()), std::vector<T>(src.size())};
  for (int64_t s : src) ++t.begin[size_t(s + 1)];
  for (size_t i = 1; i < t.begin.size(); ++i) t.begin[i] += t.begin[i - 1];
  std::vector<int64_t> next(t.begin.begin(), t.begin.end() - 1);
  for (size_t q = 0; q < src.size(); ++q) {
    const int64_t at = next[size_t(src[q])]++;
    t.src[size_t(at)] = int64_t(q) / K;
    t.w[size_t(at)] = w[q];
  }
  return t;
}

/// [outer, axis, inner] sizes of `s` around `axis`.
std::array<int64_t, 3> around(const Shape& s, int64_t axis) {
  int64_t outer = 1, inner = 1;
  for (int64_t a = 0; a < axis; ++a) outer *= s[size_t(a)];
  for (size_t a = size_t(axis) + 1; a < s.size(); ++a) inner *= s[a];
  return {outer, s[size_t(axis)], inner};
}

/// y[j] = sum over the taps of w * x[src * inner + j], j < inner, for one output row.
template <class T>
LOOM_CPU_CLONES void weighted_row(const T* __restrict x, int64_t inner, const int64_t* src, const T* w, int64_t taps,
                                  T* __restrict y) {
  for (int64_t j = 0; j < inner; ++j) y[j] = T(0);
  for (int64_t q = 0; q < taps; ++q) {
    const T* xq = x + src[q] * inner;
    for (int64_t j = 0; j < inner; ++j) y[j] += w[q] * xq[j];
  }
}

/// The last axis (inner 1): y[r] = sum over row r's taps of w * x[src], for the `rows` outputs of one line.
template <class T>
LOOM_CPU_CLONES void weighted_points(const T* __restrict x, const int64_t* begin, const int64_t* src, const T* w,
                                     int64_t rows, T* __restrict y) {
  for (int64_t r = 0; r < rows; ++r) {
    T acc = T(0);
    for (int64_t q = begin[r]; q < begin[r + 1]; ++q) acc += w[q] * x[src[q]];
    y[r] = acc;
  }
}

/// y [outer, rows, inner] from x [outer, in, inner] by the taps of each of the `rows` output rows.
template <class T>
void resample_rows(const T* x, int64_t outer, int64_t in, int64_t inner, const Taps<T>& t, T* y) {
  const int64_t rows = int64_t(t.begin.size()) - 1, taps = std::max<int64_t>(1, int64_t(t.src.size()));
  if (inner == 1) {
    parallel_for(outer, std::max<int64_t>(1, kGrain / taps), [&](int64_t lo, int64_t hi) {
      for (int64_t b = lo; b < hi; ++b)
        weighted_points(x + b * in, t.begin.data(), t.src.data(), t.w.data(), rows, y + b * rows);
    });
    return;
  }
  const int64_t per_row = std::max<int64_t>(1, inner * taps / std::max<int64_t>(1, rows));
  parallel_for(outer * rows, std::max<int64_t>(1, kGrain / per_row), [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      const int64_t b = r / rows, o = r % rows, q = t.begin[size_t(o)];
      weighted_row(x + b * in * inner, inner, t.src.data() + q, t.w.data() + q, t.begin[size_t(o) + 1] - q,
                   y + r * inner);
    }
  });
}

template <class T>
void resample_typed(const KernelCall& c) {
  const auto [outer, in, inner] = around(c.in[0].shape(), c.attrs.i("axis"));
  resample_rows(static_cast<const T*>(c.in[0].raw()), outer, in, inner, forward_taps<T>(c, in),
                static_cast<T*>(c.out[0].raw()));
}

template <class T>
void resample_grad_typed(const KernelCall& c) {
  const auto [outer, in, inner] = around(c.out[0].shape(), c.attrs.i("axis"));
  const int64_t out = c.in[1].shape()[0];
  resample_rows(static_cast<const T*>(c.in[0].raw()), outer, out, inner, transposed_taps<T>(c, in),
                static_cast<T*>(c.out[0].raw()));
}

void resample_kernel(const KernelCall& c) {
  dispatch_among(FloatTypes{}, c.out[0].dtype(), [&]<class T>() { resample_typed<T>(c); });
}

void resample_grad_kernel(const KernelCall& c) {
  dispatch_among(FloatTypes{}, c.out[0].dtype(), [&]<class T>() { resample_grad_typed<T>(c); });
}

const bool registered = [] {
  register_kernel("resample", DeviceKind::cpu, FloatTypes::dtypes(), {&resample_kernel, true});
  register_kernel("resample_grad", DeviceKind::cpu, FloatTypes::dtypes(), {&resample_grad_kernel, true});
  return true;
}();

}  // namespace
}  // namespace loom::cpu
