// batch_norm and batch_norm_grad on the CPU. x is [N, C, inner]: channel c
// owns N contiguous runs of `inner` values. Statistics run in parallel over
// channels, accumulating in double around a per-channel shift (the first
// value) so one pass suffices without the cancellation of a plain sum of
// squares; the element-wise passes run in parallel over the (n, c) runs.
//
//   forward:  1 pass for mean and var, 1 pass y = relu?((x - mean) * scale + bias)
//   backward: 1 pass for sum(g) and sum(g * x), 1 pass for dx
// where g is dy masked by the ReLU (recomputed from x, as the forward did).

#include <cmath>

#include "core/kernel.hpp"
#include "core/parallel.hpp"

namespace loom::cpu {
namespace {

struct Layout3 {
  int64_t N, C, inner;
  int64_t M() const { return N * inner; }
};
Layout3 layout_of(const Shape& s) {
  int64_t inner = 1;
  for (size_t i = 2; i < s.size(); ++i) inner *= s[i];
  return {s[0], s[1], inner};
}

/// Runs f(c) for every channel in parallel.
template <class F>
void for_channels(const Layout3& l, F&& f) {
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, l.M()));
  parallel_for(l.C, grain, [&](int64_t lo, int64_t hi) {
    for (int64_t c = lo; c < hi; ++c) f(c);
  });
}

/// Runs f(n, c, offset) for every run of `inner` values, in parallel.
template <class F>
void for_runs(const Layout3& l, F&& f) {
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, l.inner));
  parallel_for(l.N * l.C, grain, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) f(i / l.C, i % l.C, i * l.inner);
  });
}

/// The per-channel map y = (x - mean) * scale + bias (before the ReLU), from
/// the statistics as stored in T, so forward and backward agree on the mask.
/// Centering first keeps precision when the mean is large against the spread
/// (x * scale + shift would cancel two large terms).
template <class T>
struct Affine {
  T mean, scale, bias;
  double invstd;
  T operator()(T x) const { return (x - mean) * scale + bias; }
};
template <class T>
Affine<T> affine(T mean, T var, T w, T b, double eps) {
  const double invstd = 1.0 / std::sqrt(double(var) + eps);
  return {mean, T(double(w) * invstd), b, invstd};
}

template <class T>
void forward(const KernelCall& c) {
  const Layout3 l = layout_of(c.in[0].shape());
  const T* x = static_cast<const T*>(c.in[0].raw());
  const T* w = static_cast<const T*>(c.in[1].raw());
  const T* b = static_cast<const T*>(c.in[2].raw());
  T* y = static_cast<T*>(c.out[0].raw());
  T* mean = static_cast<T*>(c.out[1].raw());
  T* var = static_cast<T*>(c.out[2].raw());
  const double eps = c.attrs.f("eps");
  const bool relu = c.attrs.get_or("relu", false);
  if (l.M() == 0) {  // no values: NaN statistics (as PyTorch), nothing to normalize
    std::fill(mean, mean + l.C, T(NAN));
    std::fill(var, var + l.C, T(NAN));
    return;
  }
  std::vector<Affine<T>> maps(size_t(l.C));
  for_channels(l, [&](int64_t ch) {
    const T shift = x[ch * l.inner];
    double s1 = 0, s2 = 0;
    for (int64_t n = 0; n < l.N; ++n) {
      const T* p = x + (n * l.C + ch) * l.inner;
      double a1 = 0, a2 = 0;
      for (int64_t i = 0; i < l.inner; ++i) {
        const double d = double(p[i]) - double(shift);
        a1 += d;
        a2 += d * d;
      }
      s1 += a1, s2 += a2;
    }
    const double M = double(l.M()), m1 = s1 / M;
    mean[ch] = T(double(shift) + m1);
    var[ch] = T(std::max(0.0, s2 / M - m1 * m1));
    maps[size_t(ch)] = affine(mean[ch], var[ch], w[ch], b[ch], eps);
  });
  for_runs(l, [&](int64_t, int64_t ch, int64_t off) {
    const Affine<T> a = maps[size_t(ch)];
    const T* p = x + off;
    T* q = y + off;
    if (relu)
      for (int64_t i = 0; i < l.inner; ++i) q[i] = std::max(a(p[i]), T(0));
    else
      for (int64_t i = 0; i < l.inner; ++i) q[i] = a(p[i]);
  });
}

template <class T>
void backward(const KernelCall& c) {
  const Layout3 l = layout_of(c.in[0].shape());
  const T* x = static_cast<const T*>(c.in[0].raw());
  const T* dy = static_cast<const T*>(c.in[1].raw());
  const T* w = static_cast<const T*>(c.in[2].raw());
  const T* b = static_cast<const T*>(c.in[3].raw());
  const T* mean = static_cast<const T*>(c.in[4].raw());
  const T* var = static_cast<const T*>(c.in[5].raw());
  T* dx = static_cast<T*>(c.out[0].raw());
  T* dw = static_cast<T*>(c.out[1].raw());
  T* db = static_cast<T*>(c.out[2].raw());
  const double eps = c.attrs.f("eps");
  const bool relu = c.attrs.get_or("relu", false);
  // Per channel: dx = k * g + k2 * (x - mean) + k0, from db = sum(g) and dw = sum(g * xhat).
  struct Coef {
    Affine<T> a;
    T k, k2, k0;
  };
  std::vector<Coef> coef(size_t(l.C));
  for_channels(l, [&](int64_t ch) {
    const Affine<T> a = affine(mean[ch], var[ch], w[ch], b[ch], eps);
    double sg = 0, sgx = 0;
    for (int64_t n = 0; n < l.N; ++n) {
      const int64_t off = (n * l.C + ch) * l.inner;
      const T *p = x + off, *d = dy + off;
      double a1 = 0, a2 = 0;
      for (int64_t i = 0; i < l.inner; ++i) {
        const T g = relu && !(a(p[i]) > T(0)) ? T(0) : d[i];
        a1 += double(g);
        a2 += double(g) * (double(p[i]) - double(mean[ch]));
      }
      sg += a1, sgx += a2;
    }
    const double M = double(l.M()), dbias = sg, dweight = sgx * a.invstd;
    db[ch] = T(dbias);
    dw[ch] = T(dweight);
    // dx = w*invstd * (g - db/M - xhat * dw/M), xhat = (x - mean) * invstd
    const double k = double(w[ch]) * a.invstd, k2 = -k * dweight / M * a.invstd;
    coef[size_t(ch)] = {a, T(k), T(k2), T(-k * dbias / M)};
  });
  if (l.M() == 0) return;
  for_runs(l, [&](int64_t, int64_t ch, int64_t off) {
    const Coef q = coef[size_t(ch)];
    const T *p = x + off, *d = dy + off;
    T* o = dx + off;
    if (relu)
      for (int64_t i = 0; i < l.inner; ++i) {
        const T g = q.a(p[i]) > T(0) ? d[i] : T(0);
        o[i] = q.k * g + q.k2 * (p[i] - q.a.mean) + q.k0;
      }
    else
      for (int64_t i = 0; i < l.inner; ++i) o[i] = q.k * d[i] + q.k2 * (p[i] - q.a.mean) + q.k0;
  });
}

const bool registered = [] {
  register_kernel("batch_norm", DeviceKind::cpu, FloatTypes::dtypes(),
                  {[](const KernelCall& c) {
                     dispatch_among(FloatTypes{}, c.out[0].dtype(), [&]<class T>() { forward<T>(c); });
                   },
                   true});
  register_kernel("batch_norm_grad", DeviceKind::cpu, FloatTypes::dtypes(),
                  {[](const KernelCall& c) {
                     dispatch_among(FloatTypes{}, c.out[0].dtype(), [&]<class T>() { backward<T>(c); });
                   },
                   true});
  return true;
}();

}  // namespace
}  // namespace loom::cpu
