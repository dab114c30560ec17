// Pooling on the CPU: max_pool2d (windowed or adaptive) with its gradient (scatter to the window's
// maximum), the gather that is that gradient's gradient and the maxima's indices, and average
// pooling (windowed or adaptive) with its gradient. Window bounds come from
// one table per axis (kernels/conv_geometry.hpp); planes (n, c) run in
// parallel, each independent of the others.

#include <cmath>

#include "core/kernel.hpp"
#include "core/parallel.hpp"
#include "kernels/conv_geometry.hpp"
#include "kernels/cpu/simd.hpp"

namespace loom::cpu {
namespace {

using conv::Window;

struct Planes {
  int64_t count, H, W, OH, OW;  // planes (N*C), input and output sizes
};
Planes planes_of(const Shape& x, const Shape& y) { return {x[0] * x[1], x[2], x[3], y[2], y[3]}; }

/// Runs f(plane) for every plane, in parallel.
template <class F>
void for_planes(const Planes& p, F&& f) {
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, p.H * p.W));
  parallel_for(p.count, grain, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) f(i);
  });
}

/// Index (in the plane) of the window's maximum, by PyTorch's rule: the
/// first largest value, unless a NaN comes (the last NaN then).
template <class T>
int64_t argmax(const T* plane, int64_t W, const Window& r, const Window& c) {
  int64_t best = r.lo * W + c.lo;
  T bv = plane[best];
  for (int64_t h = r.lo; h < r.hi; ++h)
    for (int64_t w = c.lo; w < c.hi; ++w) {
      const T v = plane[h * W + w];
      const bool take = v > bv || v != v;
      bv = take ? v : bv;
      best = take ? h * W + w : best;
    }
  return best;
}

// ---- 2x2 windows at stride 2 without padding (MaxPool2d(2), the common case):
// one pass over pairs of rows, the window's position 0..3 chosen by selects.

/// Whether v replaces the running maximum m, by argmax()'s rule; bitwise
/// operators, not short-circuits, so the loops below vectorize.
template <class T>
inline bool beats(T v, T m) {
  return (v > m) | (v != v);
}

/// Outputs per block: the row loops run blocks of a compile-time width (an
/// AVX2 vector of floats) so they vectorize without scalar tails; a row's
/// last block overlaps the one before (its outputs are written twice, the
/// same values). Rows shorter than a block run the same code as a plain loop.
constexpr int64_t kBlock = 8;

/// out[o] = src's value at the maximum of x's window o (src = x: the maximum
/// itself), for n outputs; every load unconditional, selects instead of branches.
template <int64_t N, class T>
inline void pick_n(const T* __restrict x0, const T* __restrict x1, const T* __restrict s0, const T* __restrict s1,
                   T* __restrict out, int64_t n) {
  for (int64_t o = 0; o < (N ? N : n); ++o) {
    const T a = x0[2 * o], b = x0[2 * o + 1], c = x1[2 * o], d = x1[2 * o + 1];
    const T sa = s0[2 * o], sb = s0[2 * o + 1], sc = s1[2 * o], sd = s1[2 * o + 1];
    const bool t1 = beats(b, a);
    const T m1 = t1 ? b : a, v1 = t1 ? sb : sa;
    const bool t2 = beats(c, m1);
    const T m2 = t2 ? c : m1, v2 = t2 ? sc : v1;
    out[o] = beats(d, m2) ? sd : v2;
  }
}

/// The gradient for n outputs: dy at each window's maximum, zeros at the other three.
template <int64_t N, class T>
inline void grad_n(const T* __restrict x0, const T* __restrict x1, const T* __restrict dy, T* __restrict d0,
                   T* __restrict d1, int64_t n) {
  for (int64_t o = 0; o < (N ? N : n); ++o) {
    const T a = x0[2 * o], b = x0[2 * o + 1], c = x1[2 * o], d = x1[2 * o + 1];
    const bool t1 = beats(b, a);
    const T m1 = t1 ? b : a;
    const bool t2 = beats(c, m1);
    const bool t3 = beats(d, t2 ? c : m1);
    // dy goes to the last position that beat the running maximum; a chain of selects the vectorizer takes.
    const T g = dy[o], z = T(0);
    const T rest3 = t3 ? z : g, rest2 = t2 ? z : rest3;
    d1[2 * o + 1] = t3 ? g : z;
    d1[2 * o] = t2 ? rest3 : z;
    d0[2 * o + 1] = t1 ? rest2 : z;
    d0[2 * o] = t1 ? z : rest2;
  }
}

template <class T>
LOOM_CPU_CLONES void pick_block(const T* __restrict x0, const T* __restrict x1, const T* __restrict s0,
                            const T* __restrict s1, T* __restrict out) {
  pick_n<kBlock>(x0, x1, s0, s1, out, kBlock);
}

template <class T>
LOOM_CPU_CLONES void grad_block(const T* __restrict x0, const T* __restrict x1, const T* __restrict dy, T* __restrict d0,
                            T* __restrict d1) {
  grad_n<kBlock>(x0, x1, dy, d0, d1, kBlock);
}

/// One row of n outputs from input rows x0, x1 (and src rows s0, s1).
template <class T>
void pick_row2(const T* x0, const T* x1, const T* s0, const T* s1, T* out, int64_t n) {
  if (n < kBlock) return pick_n<0>(x0, x1, s0, s1, out, n);
  for (int64_t o = 0; o < n; o += kBlock) {
    const int64_t b = std::min(o, n - kBlock);
    pick_block(x0 + 2 * b, x1 + 2 * b, s0 + 2 * b, s1 + 2 * b, out + b);
  }
}

template <class T>
void grad_row2(const T* x0, const T* x1, const T* dy, T* d0, T* d1, int64_t n) {
  if (n < kBlock) return grad_n<0>(x0, x1, dy, d0, d1, n);
  for (int64_t o = 0; o < n; o += kBlock) {
    const int64_t b = std::min(o, n - kBlock);
    grad_block(x0 + 2 * b, x1 + 2 * b, dy + b, d0 + 2 * b, d1 + 2 * b);
  }
}

/// Whole 2x2 windows at stride 2 (ceil_mode's partial last windows go the general way).
bool is_2x2_stride_2(const Attrs& a, const Planes& p) {
  return !a.has("output_size") && a.ints("kernel") == std::vector<int64_t>{2, 2} &&
         a.ints("stride") == std::vector<int64_t>{2, 2} && a.ints("padding") == std::vector<int64_t>{0, 0, 0, 0} &&
         2 * p.OH <= p.H && 2 * p.OW <= p.W;
}

/// max_pool2d (the maximum itself) and max_pool2d_pick (picking: input 1 read at the maximum of input 0).
template <class T>
void max_pool(const KernelCall& c, bool picking) {
  const Planes p = planes_of(c.in[0].shape(), c.out[0].shape());
  const T* x = static_cast<const T*>(c.in[0].raw());
  const T* src = picking ? static_cast<const T*>(c.in[1].raw()) : x;
  T* y = static_cast<T*>(c.out[0].raw());
  if (is_2x2_stride_2(c.attrs, p)) {
    for_planes(p, [&](int64_t i) {
      const T *xp = x + i * p.H * p.W, *sp = src + i * p.H * p.W;
      for (int64_t oh = 0; oh < p.OH; ++oh)
        pick_row2(xp + 2 * oh * p.W, xp + (2 * oh + 1) * p.W, sp + 2 * oh * p.W, sp + (2 * oh + 1) * p.W,
                  y + (i * p.OH + oh) * p.OW, p.OW);
    });
    return;
  }
  const conv::PoolWindows win = conv::pool_windows(c.in[0].shape(), c.out[0].shape(), c.attrs);
  for_planes(p, [&](int64_t i) {
    const T* xp = x + i * p.H * p.W;
    const T* sp = src + i * p.H * p.W;
    T* yp = y + i * p.OH * p.OW;
    for (int64_t oh = 0; oh < p.OH; ++oh)
      for (int64_t ow = 0; ow < p.OW; ++ow)
        yp[oh * p.OW + ow] = sp[argmax(xp, p.W, win.rows[size_t(oh)], win.cols[size_t(ow)])];
  });
}

/// max_pool2d_indices: each window's maximum as its index in the plane (int64).
template <class T>
void max_pool_indices(const KernelCall& c) {
  const Planes p = planes_of(c.in[0].shape(), c.out[0].shape());
  const conv::PoolWindows win = conv::pool_windows(c.in[0].shape(), c.out[0].shape(), c.attrs);
  const T* x = static_cast<const T*>(c.in[0].raw());
  int64_t* y = static_cast<int64_t*>(c.out[0].raw());
  for_planes(p, [&](int64_t i) {
    const T* xp = x + i * p.H * p.W;
    int64_t* yp = y + i * p.OH * p.OW;
    for (int64_t oh = 0; oh < p.OH; ++oh)
      for (int64_t ow = 0; ow < p.OW; ++ow)
        yp[oh * p.OW + ow] = argmax(xp, p.W, win.rows[size_t(oh)], win.cols[size_t(ow)]);
  });
}

template <class T>
void max_pool_grad(const KernelCall& c) {
  const Planes p = planes_of(c.in[0].shape(), c.in[1].shape());
  const T* x = static_cast<const T*>(c.in[0].raw());
  const T* dy = static_cast<const T*>(c.in[1].raw());
  T* dx = static_cast<T*>(c.out[0].raw());
  if (is_2x2_stride_2(c.attrs, p)) {
    for_planes(p, [&](int64_t i) {
      const T* xp = x + i * p.H * p.W;
      T* gp = dx + i * p.H * p.W;
      for (int64_t oh = 0; oh < p.OH; ++oh) {
        T *d0 = gp + 2 * oh * p.W, *d1 = d0 + p.W;
        grad_row2(xp + 2 * oh * p.W, xp + (2 * oh + 1) * p.W, dy + (i * p.OH + oh) * p.OW, d0, d1, p.OW);
        if (p.W > 2 * p.OW) d0[p.W - 1] = d1[p.W - 1] = T(0);  // an odd width's last column is in no window
      }
      if (p.H > 2 * p.OH) std::fill(gp + (p.H - 1) * p.W, gp + p.H * p.W, T(0));
    });
    return;
  }
  const conv::PoolWindows win = conv::pool_windows(c.in[0].shape(), c.in[1].shape(), c.attrs);
  for_planes(p, [&](int64_t i) {
    const T* xp = x + i * p.H * p.W;
    const T* dp = dy + i * p.OH * p.OW;
    T* gp = dx + i * p.H * p.W;
    std::fill(gp, gp + p.H * p.W, T(0));
    for (int64_t oh = 0; oh < p.OH; ++oh)
      for (int64_t ow = 0; ow < p.OW; ++ow)
        gp[argmax(xp, p.W, win.rows[size_t(oh)], win.cols[size_t(ow)])] += dp[oh * p.OW + ow];
  });
}

template <class T>
void avg_pool(const KernelCall& c) {
  const Planes p = planes_of(c.in[0].shape(), c.out[0].shape());
  const conv::PoolWindows win = conv::pool_windows(c.in[0].shape(), c.out[0].shape(), c.attrs);
  const T* x = static_cast<const T*>(c.in[0].raw());
  T* y = static_cast<T*>(c.out[0].raw());
  for_planes(p, [&](int64_t i) {
    const T* xp = x + i * p.H * p.W;
    T* yp = y + i * p.OH * p.OW;
    for (int64_t oh = 0; oh < p.OH; ++oh) {
      const Window& r = win.rows[size_t(oh)];
      for (int64_t ow = 0; ow < p.OW; ++ow) {
        const Window& q = win.cols[size_t(ow)];
        T acc = 0;
        for (int64_t h = r.lo; h < r.hi; ++h)
          for (int64_t w = q.lo; w < q.hi; ++w) acc += xp[h * p.W + w];
        yp[oh * p.OW + ow] = acc / T(r.count * q.count);
      }
    }
  });
}

template <class T>
void avg_pool_grad(const KernelCall& c) {
  // in: dy, x (shape only)
  const Planes p = planes_of(c.in[1].shape(), c.in[0].shape());
  const conv::PoolWindows win = conv::pool_windows(c.in[1].shape(), c.in[0].shape(), c.attrs);
  const T* dy = static_cast<const T*>(c.in[0].raw());
  T* dx = static_cast<T*>(c.out[0].raw());
  for_planes(p, [&](int64_t i) {
    const T* dp = dy + i * p.OH * p.OW;
    T* gp = dx + i * p.H * p.W;
    std::fill(gp, gp + p.H * p.W, T(0));
    for (int64_t oh = 0; oh < p.OH; ++oh) {
      const Window& r = win.rows[size_t(oh)];
      for (int64_t ow = 0; ow < p.OW; ++ow) {
        const Window& q = win.cols[size_t(ow)];
        const T g = dp[oh * p.OW + ow] / T(r.count * q.count);
        for (int64_t h = r.lo; h < r.hi; ++h)
          for (int64_t w = q.lo; w < q.hi; ++w) gp[h * p.W + w] += g;
      }
    }
  });
}

const bool registered = [] {
  auto reg = [](const char* op, KernelFn f) { register_kernel(op, DeviceKind::cpu, FloatTypes::dtypes(), {f, true}); };
  for (const char* op : {"max_pool2d", "adaptive_max_pool2d"})
    reg(op, [](const KernelCall& c) {
      dispatch_among(FloatTypes{}, c.out[0].dtype(), [&]<class T>() { max_pool<T>(c, false); });
    });
  for (const char* op : {"max_pool2d_pick", "adaptive_max_pool2d_pick"})
    reg(op, [](const KernelCall& c) {
      dispatch_among(FloatTypes{}, c.out[0].dtype(), [&]<class T>() { max_pool<T>(c, true); });
    });
  for (const char* op : {"max_pool2d_grad", "adaptive_max_pool2d_grad"})
    reg(op, [](const KernelCall& c) {
      dispatch_among(FloatTypes{}, c.out[0].dtype(), [&]<class T>() { max_pool_grad<T>(c); });
    });
  for (const char* op : {"max_pool2d_indices", "adaptive_max_pool2d_indices"})
    register_kernel(op, DeviceKind::cpu, {int64},
                    {[](const KernelCall& c) {
                       dispatch_among(FloatTypes{}, c.in[0].dtype(), [&]<class T>() { max_pool_indices<T>(c); });
                     },
                     true});
  for (const char* op : {"avg_pool2d", "adaptive_avg_pool2d"})
    reg(op, [](const KernelCall& c) {
      dispatch_among(FloatTypes{}, c.out[0].dtype(), [&]<class T>() { avg_pool<T>(c); });
    });
  for (const char* op : {"avg_pool2d_grad", "adaptive_avg_pool2d_grad"})
    reg(op, [](const KernelCall& c) {
      dispatch_among(FloatTypes{}, c.out[0].dtype(), [&]<class T>() { avg_pool_grad<T>(c); });
    });
  return true;
}();

}  // namespace
}  // namespace loom::cpu
