// resample and resample_grad on the GPU (ops/resample.cpp), x viewed as
// [outer, in, inner] around the axis. The forward is one thread per output
// element summing its K taps. The transpose is deterministic without float
// atomics, as gather_grad: the (source, tap) pairs are stably radix-sorted by
// source (CUB), and one thread per dx element finds its run by binary search
// and adds its taps in increasing tap order, the CPU kernel's order.
// Out-of-range sources fail the call (check_in_range) and are skipped.

#include <cub/device/device_radix_sort.cuh>

#include "kernels/cuda/common.cuh"

namespace loom::cuda {
namespace {

struct Around {
  int64_t outer, in, inner, out, K;
};

Around around(const Shape& x, int64_t axis, const NDArray& sources) {
  Around a{1, x[size_t(axis)], 1, sources.shape()[0], sources.shape()[1]};
  for (int64_t d = 0; d < axis; ++d) a.outer *= x[size_t(d)];
  for (size_t d = size_t(axis) + 1; d < x.size(); ++d) a.inner *= x[d];
  return a;
}

template <class T, class I>
__global__ void resample_kernel(T* y, const T* x, const I* src, const T* w, Around a) {
  const int64_t total = a.outer * a.out * a.inner;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t j = e % a.inner, r = e / a.inner, o = r % a.out, b = r / a.out;
    const T* xb = x + b * a.in * a.inner + j;
    T acc = T(0);
    for (int64_t k = 0; k < a.K; ++k) {
      const I s = src[o * a.K + k];
      if (!in_range(s, a.in)) continue;
      acc += w[o * a.K + k] * xb[int64_t(s) * a.inner];
    }
    y[e] = acc;
  }
}

void resample_call(const KernelCall& c) {
  use_device(c.ctx.device);
  const NDArray &x = c.in[0], &sources = c.in[1], &y = c.out[0];
  const Around a = around(x.shape(), c.attrs.i("axis"), sources);
  cudaStream_t s = stream_of(c);
  dispatch_among(TypeList<int32_t, int64_t>{}, sources.dtype(), [&]<class I>() {
    check_in_range(c, static_cast<const I*>(sources.raw()), sources.numel(), a.in, "source");
    if (y.numel() == 0) return;
    dispatch_among(FloatTypes{}, y.dtype(), [&]<class T>() {
      launch(resample_kernel<T, I>, grid_for(y.numel()), kThreads, 0, s, c.op, static_cast<T*>(y.raw()),
             static_cast<const T*>(x.raw()), static_cast<const I*>(sources.raw()), static_cast<const T*>(c.in[2].raw()),
             a);
    });
  });
}

// Keys for the sort: the source of each tap, `in` (sorted last, summed nowhere) when out of range.
template <class I>
__global__ void tap_keys_kernel(const I* src, int64_t n, int64_t in, uint32_t* keys, uint32_t* taps) {
  for (int64_t q = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; q < n; q += int64_t(gridDim.x) * blockDim.x) {
    keys[q] = in_range(src[q], in) ? uint32_t(src[q]) : uint32_t(in);
    taps[q] = uint32_t(q);
  }
}

// dx[b, i, j] = sum over the taps q with source i (sorted keys) of w[q] * dy[b, q / K, j].
template <class T>
__global__ void resample_grad_kernel(T* dx, const T* dy, const uint32_t* keys, const uint32_t* taps, const T* w,
                                     Around a) {
  const int64_t total = a.outer * a.in * a.inner, n = a.out * a.K;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t j = e % a.inner, r = e / a.inner, i = r % a.in, b = r / a.in;
    int64_t lo = 0, hi = n;  // the first key >= i
    while (lo < hi) {
      const int64_t mid = (lo + hi) / 2;
      if (keys[mid] < uint32_t(i))
        lo = mid + 1;
      else
        hi = mid;
    }
    const T* g = dy + b * a.out * a.inner + j;
    T acc = T(0);
    for (int64_t q = lo; q < n && keys[q] == uint32_t(i); ++q) acc += w[taps[q]] * g[int64_t(taps[q] / a.K) * a.inner];
    dx[e] = acc;
  }
}

void resample_grad_call(const KernelCall& c) {
  use_device(c.ctx.device);
  const NDArray &sources = c.in[1], &dx = c.out[0];
  const Around a = around(dx.shape(), c.attrs.i("axis"), sources);
  const int64_t n = sources.numel();
  cudaStream_t s = stream_of(c);
  dispatch_among(TypeList<int32_t, int64_t>{}, sources.dtype(), [&]<class I>() {
    check_in_range(c, static_cast<const I*>(sources.raw()), n, a.in, "source");
    if (dx.numel() == 0) return;
    if (n == 0) return zero_array(dx, s);
    if (a.in >= int64_t(UINT32_MAX) || n > int64_t(UINT32_MAX))
      fail("resample_grad '", c.node, "': ", a.in, " positions or ", n, " taps exceed the 32-bit sort keys");
    Temp buf(size_t(4 * n) * sizeof(uint32_t), s);
    uint32_t* keys_in = buf.get<uint32_t>();
    uint32_t *taps_in = keys_in + n, *keys = keys_in + 2 * n, *taps = keys_in + 3 * n;
    launch(tap_keys_kernel<I>, grid_for(n), kThreads, 0, s, c.op, static_cast<const I*>(sources.raw()), n, a.in,
           keys_in, taps_in);
    int bits = 1;
    while (bits < 32 && (int64_t(1) << bits) <= a.in) ++bits;  // keys 0..in
    size_t tmp_bytes = 0;
    LOOM_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, tmp_bytes, keys_in, keys, taps_in, taps, n, 0, bits, s));
    Temp tmp(tmp_bytes, s);
    LOOM_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(tmp.get(), tmp_bytes, keys_in, keys, taps_in, taps, n, 0, bits, s));
    dispatch_among(FloatTypes{}, dx.dtype(), [&]<class T>() {
      launch(resample_grad_kernel<T>, grid_for(dx.numel()), kThreads, 0, s, c.op, static_cast<T*>(dx.raw()),
             static_cast<const T*>(c.in[0].raw()), keys, taps, static_cast<const T*>(c.in[2].raw()), a);
    });
  });
}

const bool registered = [] {
  register_kernel("resample", DeviceKind::cuda, FloatTypes::dtypes(), {&resample_call, true});
  register_kernel("resample_grad", DeviceKind::cuda, FloatTypes::dtypes(), {&resample_grad_call, true});
  return true;
}();

}  // namespace
}  // namespace loom::cuda
