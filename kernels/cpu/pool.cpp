// Pooling on the CPU: max_pool2d with its gradient (scatter to the window's
// maximum) and the gather that is that gradient's gradient, and average
// pooling (windowed or adaptive) with its gradient. Window bounds come from
// one table per axis (kernels/conv_geometry.hpp); planes (n, c) run in
// parallel, each independent of the others.

#include <cmath>

#include "core/kernel.hpp"
#include "core/parallel.hpp"
#include "kernels/conv_geometry.hpp"

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

/// Index (in the plane) of the window's maximum: the first one, or the first NaN.
template <class T>
int64_t argmax(const T* plane, int64_t W, const Window& r, const Window& c) {
  int64_t best = r.lo * W + c.lo;
  T bv = plane[best];
  for (int64_t h = r.lo; h < r.hi; ++h)
    for (int64_t w = c.lo; w < c.hi; ++w) {
      const T v = plane[h * W + w];
      if (v > bv || (std::isnan(v) && !std::isnan(bv))) bv = v, best = h * W + w;
    }
  return best;
}

/// max_pool2d (the maximum itself) and max_pool2d_pick (picking: input 1 read at the maximum of input 0).
template <class T>
void max_pool(const KernelCall& c, bool picking) {
  const Planes p = planes_of(c.in[0].shape(), c.out[0].shape());
  const conv::PoolWindows win = conv::pool_windows(c.in[0].shape(), c.out[0].shape(), c.attrs);
  const T* x = static_cast<const T*>(c.in[0].raw());
  const T* src = picking ? static_cast<const T*>(c.in[1].raw()) : x;
  T* y = static_cast<T*>(c.out[0].raw());
  for_planes(p, [&](int64_t i) {
    const T* xp = x + i * p.H * p.W;
    const T* sp = src + i * p.H * p.W;
    T* yp = y + i * p.OH * p.OW;
    for (int64_t oh = 0; oh < p.OH; ++oh)
      for (int64_t ow = 0; ow < p.OW; ++ow) yp[oh * p.OW + ow] = sp[argmax(xp, p.W, win.rows[size_t(oh)], win.cols[size_t(ow)])];
  });
}

template <class T>
void max_pool_grad(const KernelCall& c) {
  const Planes p = planes_of(c.in[0].shape(), c.in[1].shape());
  const conv::PoolWindows win = conv::pool_windows(c.in[0].shape(), c.in[1].shape(), c.attrs);
  const T* x = static_cast<const T*>(c.in[0].raw());
  const T* dy = static_cast<const T*>(c.in[1].raw());
  T* dx = static_cast<T*>(c.out[0].raw());
  for_planes(p, [&](int64_t i) {
    const T* xp = x + i * p.H * p.W;
    const T* dp = dy + i * p.OH * p.OW;
    T* gp = dx + i * p.H * p.W;
    std::fill(gp, gp + p.H * p.W, T(0));
    for (int64_t oh = 0; oh < p.OH; ++oh)
      for (int64_t ow = 0; ow < p.OW; ++ow) gp[argmax(xp, p.W, win.rows[size_t(oh)], win.cols[size_t(ow)])] += dp[oh * p.OW + ow];
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
  reg("max_pool2d", [](const KernelCall& c) {
    dispatch_among(FloatTypes{}, c.out[0].dtype(), [&]<class T>() { max_pool<T>(c, false); });
  });
  reg("max_pool2d_pick", [](const KernelCall& c) {
    dispatch_among(FloatTypes{}, c.out[0].dtype(), [&]<class T>() { max_pool<T>(c, true); });
  });
  reg("max_pool2d_grad", [](const KernelCall& c) {
    dispatch_among(FloatTypes{}, c.out[0].dtype(), [&]<class T>() { max_pool_grad<T>(c); });
  });
  for (const char* op : {"avg_pool2d", "adaptive_avg_pool2d"})
    reg(op, [](const KernelCall& c) { dispatch_among(FloatTypes{}, c.out[0].dtype(), [&]<class T>() { avg_pool<T>(c); }); });
  for (const char* op : {"avg_pool2d_grad", "adaptive_avg_pool2d_grad"})
    reg(op, [](const KernelCall& c) {
      dispatch_among(FloatTypes{}, c.out[0].dtype(), [&]<class T>() { avg_pool_grad<T>(c); });
    });
  return true;
}();

}  // namespace
}  // namespace loom::cpu
