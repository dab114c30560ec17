// Pooling on CUDA: max_pool2d, max_pool2d_pick, max_pool2d_grad, max_pool2d_indices, and
// average pooling with its gradient, each windowed or adaptive.
//
// Own kernels rather than cuDNN's: cuDNN v9 deprecates its pooling calls
// (cudnnPoolingForward/Backward), they take symmetric padding only and no
// adaptive windows, their backward needs the forward's output (loom's
// gradient op reads x and dy), and max pooling's tie and NaN rule must match
// the CPU's bit for bit (first maximum; a NaN wins, the last of several).
// Pooling is bandwidth-bound: one thread per output (forward) or per input
// element (gradients: each sums the windows that contain it, in order, so
// results are deterministic without atomics).

#include "kernels/conv_geometry.hpp"
#include "kernels/cuda/common.cuh"

namespace loom::cuda {
namespace {

using conv::Window;

struct PoolGeo {
  int64_t planes, H, W, OH, OW;
  int64_t kh, kw, sh, sw, pt, pb, pl, pr;
  bool include_pad, adaptive;

  __host__ __device__ Window row(int64_t o) const {
    return adaptive ? conv::adaptive_window(o, H, OH) : conv::pool_window(o, H, kh, sh, pt, pb, include_pad);
  }
  __host__ __device__ Window col(int64_t o) const {
    return adaptive ? conv::adaptive_window(o, W, OW) : conv::pool_window(o, W, kw, sw, pl, pr, include_pad);
  }
  /// First and last output whose window along an axis may contain input index i (a superset).
  __host__ __device__ void outputs_of(int64_t i, int64_t in, int64_t out, int64_t k, int64_t s, int64_t pad,
                                      int64_t& lo, int64_t& hi) const {
    if (adaptive) {
      lo = i * out / in - 1, hi = (i + 1) * out / in + 1;
    } else {
      lo = (i + pad - k + 1) / s - 1, hi = (i + pad) / s;
    }
    lo = lo < 0 ? 0 : lo;
    hi = hi > out - 1 ? out - 1 : hi;
  }
};

PoolGeo geo_of(const Shape& x, const Shape& y, const Attrs& a) {
  PoolGeo g{x[0] * x[1], x[2], x[3], y[2], y[3], 1, 1, 1, 1, 0, 0, 0, 0, true, a.has("output_size")};
  if (!g.adaptive) {
    const std::vector<int64_t>&k = a.ints("kernel"), &s = a.ints("stride"), &p = a.ints("padding");
    g.kh = k[0], g.kw = k[1], g.sh = s[0], g.sw = s[1], g.pt = p[0], g.pb = p[1], g.pl = p[2], g.pr = p[3];
    g.include_pad = a.get_or("count_include_pad", true);
  }
  return g;
}

/// Index in the plane of the window's maximum: the first largest, unless a NaN comes (the last NaN).
template <class T>
__device__ int64_t window_argmax(const T* plane, int64_t W, const Window& r, const Window& c) {
  int64_t best = r.lo * W + c.lo;
  T bv = plane[best];
  for (int64_t h = r.lo; h < r.hi; ++h)
    for (int64_t w = c.lo; w < c.hi; ++w) {
      const T v = plane[h * W + w];
      if (v > bv || v != v) bv = v, best = h * W + w;
    }
  return best;
}

/// y[o] = src at the maximum of x's window o (src = x for max_pool2d).
template <class T>
__global__ void max_pool_kernel(PoolGeo g, const T* x, const T* src, T* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ow = i % g.OW, oh = (i / g.OW) % g.OH, p = i / (g.OH * g.OW);
    const int64_t base = p * g.H * g.W;
    y[i] = src[base + window_argmax(x + base, g.W, g.row(oh), g.col(ow))];
  }
}

/// y[o] = the index in its plane of the maximum of x's window o.
template <class T>
__global__ void max_pool_indices_kernel(PoolGeo g, const T* x, int64_t* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ow = i % g.OW, oh = (i / g.OW) % g.OH, p = i / (g.OH * g.OW);
    y[i] = window_argmax(x + p * g.H * g.W, g.W, g.row(oh), g.col(ow));
  }
}

/// dx[i] = the sum of dy over the windows whose maximum is input i.
template <class T>
__global__ void max_pool_grad_kernel(PoolGeo g, const T* x, const T* dy, T* dx, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t iw = i % g.W, ih = (i / g.W) % g.H, p = i / (g.H * g.W);
    const T* plane = x + p * g.H * g.W;
    int64_t oh0, oh1, ow0, ow1;
    g.outputs_of(ih, g.H, g.OH, g.kh, g.sh, g.pt, oh0, oh1);
    g.outputs_of(iw, g.W, g.OW, g.kw, g.sw, g.pl, ow0, ow1);
    T acc = 0;
    for (int64_t oh = oh0; oh <= oh1; ++oh) {
      const Window r = g.row(oh);
      if (ih < r.lo || ih >= r.hi) continue;
      for (int64_t ow = ow0; ow <= ow1; ++ow) {
        const Window c = g.col(ow);
        if (iw < c.lo || iw >= c.hi) continue;
        if (window_argmax(plane, g.W, r, c) == ih * g.W + iw) acc += dy[(p * g.OH + oh) * g.OW + ow];
      }
    }
    dx[i] = acc;
  }
}

template <class T>
__global__ void avg_pool_kernel(PoolGeo g, const T* x, T* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ow = i % g.OW, oh = (i / g.OW) % g.OH, p = i / (g.OH * g.OW);
    const T* plane = x + p * g.H * g.W;
    const Window r = g.row(oh), c = g.col(ow);
    T acc = 0;
    for (int64_t h = r.lo; h < r.hi; ++h)
      for (int64_t w = c.lo; w < c.hi; ++w) acc += plane[h * g.W + w];
    y[i] = acc / T(r.count * c.count);
  }
}

/// dx[i] = the sum over the windows containing input i of dy / window size.
template <class T>
__global__ void avg_pool_grad_kernel(PoolGeo g, const T* dy, T* dx, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t iw = i % g.W, ih = (i / g.W) % g.H, p = i / (g.H * g.W);
    int64_t oh0, oh1, ow0, ow1;
    g.outputs_of(ih, g.H, g.OH, g.kh, g.sh, g.pt, oh0, oh1);
    g.outputs_of(iw, g.W, g.OW, g.kw, g.sw, g.pl, ow0, ow1);
    T acc = 0;
    for (int64_t oh = oh0; oh <= oh1; ++oh) {
      const Window r = g.row(oh);
      if (ih < r.lo || ih >= r.hi) continue;
      for (int64_t ow = ow0; ow <= ow1; ++ow) {
        const Window c = g.col(ow);
        if (iw >= c.lo && iw < c.hi) acc += dy[(p * g.OH + oh) * g.OW + ow] / T(r.count * c.count);
      }
    }
    dx[i] = acc;
  }
}

template <class T>
void max_pool(const KernelCall& c, bool picking) {
  const PoolGeo g = geo_of(c.in[0].shape(), c.out[0].shape(), c.attrs);
  const int64_t n = c.out[0].numel();
  if (n == 0) return;
  const T* x = static_cast<const T*>(c.in[0].raw());
  launch(max_pool_kernel<T>, grid_for(n), kThreads, 0, stream_of(c), c.op, g, x,
         picking ? static_cast<const T*>(c.in[1].raw()) : x, static_cast<T*>(c.out[0].raw()), n);
}

template <class T>
void max_pool_indices(const KernelCall& c) {
  const PoolGeo g = geo_of(c.in[0].shape(), c.out[0].shape(), c.attrs);
  const int64_t n = c.out[0].numel();
  if (n == 0) return;
  launch(max_pool_indices_kernel<T>, grid_for(n), kThreads, 0, stream_of(c), c.op, g,
         static_cast<const T*>(c.in[0].raw()), static_cast<int64_t*>(c.out[0].raw()), n);
}

template <class T>
void max_pool_grad(const KernelCall& c) {
  const PoolGeo g = geo_of(c.in[0].shape(), c.in[1].shape(), c.attrs);
  const int64_t n = c.out[0].numel();
  if (n == 0) return;
  launch(max_pool_grad_kernel<T>, grid_for(n), kThreads, 0, stream_of(c), c.op, g, static_cast<const T*>(c.in[0].raw()),
         static_cast<const T*>(c.in[1].raw()), static_cast<T*>(c.out[0].raw()), n);
}

template <class T>
void avg_pool(const KernelCall& c) {
  const PoolGeo g = geo_of(c.in[0].shape(), c.out[0].shape(), c.attrs);
  const int64_t n = c.out[0].numel();
  if (n == 0) return;
  launch(avg_pool_kernel<T>, grid_for(n), kThreads, 0, stream_of(c), c.op, g, static_cast<const T*>(c.in[0].raw()),
         static_cast<T*>(c.out[0].raw()), n);
}

template <class T>
void avg_pool_grad(const KernelCall& c) {
  const PoolGeo g = geo_of(c.in[1].shape(), c.in[0].shape(), c.attrs);  // in: dy, x (shape only)
  const int64_t n = c.out[0].numel();
  if (n == 0) return;
  launch(avg_pool_grad_kernel<T>, grid_for(n), kThreads, 0, stream_of(c), c.op, g, static_cast<const T*>(c.in[0].raw()),
         static_cast<T*>(c.out[0].raw()), n);
}

const bool registered = [] {
  auto reg = [](const char* op, KernelFn f) { register_kernel(op, DeviceKind::cuda, FloatTypes::dtypes(), {f, true}); };
  for (const char* op : {"max_pool2d", "adaptive_max_pool2d"})
    reg(op, [](const KernelCall& c) {
      use_device(c.ctx.device);
      dispatch_among(FloatTypes{}, c.out[0].dtype(), [&]<class T>() { max_pool<T>(c, false); });
    });
  for (const char* op : {"max_pool2d_pick", "adaptive_max_pool2d_pick"})
    reg(op, [](const KernelCall& c) {
      use_device(c.ctx.device);
      dispatch_among(FloatTypes{}, c.out[0].dtype(), [&]<class T>() { max_pool<T>(c, true); });
    });
  for (const char* op : {"max_pool2d_indices", "adaptive_max_pool2d_indices"})
    register_kernel(op, DeviceKind::cuda, {int64},
                    {[](const KernelCall& c) {
                       use_device(c.ctx.device);
                       dispatch_among(FloatTypes{}, c.in[0].dtype(), [&]<class T>() { max_pool_indices<T>(c); });
                     },
                     true});
  for (const char* op : {"max_pool2d_grad", "adaptive_max_pool2d_grad"})
    reg(op, [](const KernelCall& c) {
      use_device(c.ctx.device);
      dispatch_among(FloatTypes{}, c.out[0].dtype(), [&]<class T>() { max_pool_grad<T>(c); });
    });
  for (const char* op : {"avg_pool2d", "adaptive_avg_pool2d"})
    reg(op, [](const KernelCall& c) {
      use_device(c.ctx.device);
      dispatch_among(FloatTypes{}, c.out[0].dtype(), [&]<class T>() { avg_pool<T>(c); });
    });
  for (const char* op : {"avg_pool2d_grad", "adaptive_avg_pool2d_grad"})
    reg(op, [](const KernelCall& c) {
      use_device(c.ctx.device);
      dispatch_among(FloatTypes{}, c.out[0].dtype(), [&]<class T>() { avg_pool_grad<T>(c); });
    });
  return true;
}();

}  // namespace
}  // namespace loom::cuda
