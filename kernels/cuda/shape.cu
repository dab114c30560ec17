// Kernels of the shape ops that move data: concat, pad, dilate, slice_grad
// (strided copies into views of the output), gather, gather_grad, one_hot.
//
// Out-of-range indices are the user's error: a check kernel records the first
// offending position on the device and the CPU kernel's message is raised
// from it (DeviceCheck: in a session when the run next waits for the GPU).
//
// concat of compact inputs is one launch (an LSTM's concatenates one input
// per time step); other layouts copy each input into its slice of the output.
//
// gather_grad is deterministic without float atomics: the (row, position)
// pairs are stably radix-sorted by row (CUB), then one thread per (row,
// column) adds its dy rows in increasing position, in the element type, which
// is exactly the CPU kernel's order of additions.

#include <cub/device/device_radix_sort.cuh>

#include "kernels/cuda/common.cuh"

namespace loom::cuda {
namespace {

std::vector<Slice> slices_of(const Attrs& a) {
  const auto &st = a.ints("starts"), &sp = a.ints("stops"), &sk = a.ints("steps");
  std::vector<Slice> r;
  for (size_t i = 0; i < st.size(); ++i) r.push_back({st[i], sp[i], sk[i]});
  return r;
}

void slice_grad_kernel(const KernelCall& c) {
  use_device(c.ctx.device);
  zero_array(c.out[0], stream_of(c));
  copy_array(c.out[0].slice(slices_of(c.attrs)), c.in[0], stream_of(c));
}

constexpr int kConcatParts = 64;

/// Compact inputs of a concat: part i fills [begin[i], begin[i + 1]) of each of the output's outer rows.
struct ConcatParts {
  const void* src[kConcatParts];
  int64_t begin[kConcatParts + 1];
};

template <class U>
__global__ void concat_compact_kernel(U* out, ConcatParts p, int parts, int64_t row, int64_t total) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = e / row, r = e - o * row;
    int lo = 0, hi = parts - 1;  // the last part beginning at or before r
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      if (p.begin[mid] <= r)
        lo = mid;
      else
        hi = mid - 1;
    }
    const int64_t width = p.begin[lo + 1] - p.begin[lo];
    out[e] = static_cast<const U*>(p.src[lo])[o * width + (r - p.begin[lo])];
  }
}

/// One launch for up to kConcatParts compact inputs into a compact output; false when they are not.
bool concat_compact(const KernelCall& c, int64_t ax) {
  const NDArray& o = c.out[0];
  if (c.in.size() > size_t(kConcatParts) || !o.is_compact()) return false;
  int64_t inner = 1;
  for (int64_t d = ax + 1; d < o.ndim(); ++d) inner *= o.shape()[size_t(d)];
  ConcatParts p{};
  int parts = 0;
  int64_t at = 0;
  for (const NDArray& x : c.in) {
    if (!x.is_compact()) return false;
    const int64_t width = x.shape()[size_t(ax)] * inner;
    if (width == 0) continue;
    p.src[parts] = x.raw(), p.begin[parts++] = at;
    at += width;
  }
  p.begin[parts] = at;
  const int64_t total = o.numel();
  if (total == 0 || parts == 0) return true;
  dispatch_size(o.dtype(), [&]<class U>() {
    launch(concat_compact_kernel<U>, grid_for(total), kThreads, 0, stream_of(c), c.op, static_cast<U*>(o.raw()), p,
           parts, at, total);
  });
  return true;
}

void concat_kernel(const KernelCall& c) {
  use_device(c.ctx.device);
  const NDArray& o = c.out[0];
  int64_t ax = c.attrs.i("axis");
  if (ax < 0) ax += o.ndim();
  if (concat_compact(c, ax)) return;
  int64_t off = 0;
  for (const NDArray& x : c.in) {
    std::vector<Slice> s(size_t(ax) + 1);
    const int64_t n = x.shape()[size_t(ax)];
    s[size_t(ax)] = {off, off + n, 1};
    copy_array(o.slice(s), x, stream_of(c));
    off += n;
  }
}

void pad_kernel(const KernelCall& c) {
  use_device(c.ctx.device);
  const NDArray& o = c.out[0];
  const auto& p = c.attrs.ints("pads");
  fill_view(view_of(o), c.attrs.f("value"), stream_of(c));
  std::vector<Slice> s;
  for (size_t i = 0; i < p.size() / 2; ++i) s.push_back({p[2 * i], o.shape()[i] - p[2 * i + 1], 1});
  copy_array(o.slice(s), c.in[0], stream_of(c));
}

void dilate_kernel(const KernelCall& c) {
  use_device(c.ctx.device);
  const NDArray& o = c.out[0];
  zero_array(o, stream_of(c));
  std::vector<Slice> s(size_t(o.ndim()));
  for (int64_t a : c.attrs.ints("axes")) s[size_t(a < 0 ? a + o.ndim() : a)].step = c.attrs.i("dilation") + 1;
  copy_array(o.slice(s), c.in[0], stream_of(c));
}

// ---------------------------------------------------------------- gather

// out[i, j] = table[ix[i], j] for rows of `width` elements moved as words U;
// bad indices are skipped (the call fails after the launch).
template <class U, class I>
__global__ void gather_rows_kernel(U* out, const U* table, const I* ix, int64_t n, int64_t width, int64_t rows) {
  const int64_t total = n * width;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e / width, j = e - i * width;
    const I v = ix[i];
    if (!in_range(v, rows)) continue;
    out[e] = table[int64_t(v) * width + j];
  }
}

void gather_kernel(const KernelCall& c) {
  use_device(c.ctx.device);
  const NDArray &t = c.in[0], &idx = c.in[1], &o = c.out[0];
  const int64_t rows = t.shape()[0], width = rows ? t.numel() / rows : 0, n = idx.numel();
  cudaStream_t s = stream_of(c);
  dispatch_among(TypeList<int32_t, int64_t>{}, idx.dtype(), [&]<class I>() {
    check_in_range(c, static_cast<const I*>(idx.raw()), idx.numel(), rows, "index");
    if (n * width > 0)
      dispatch_size(t.dtype(), [&]<class U>() {
        launch(gather_rows_kernel<U, I>, grid_for(n * width), kThreads, 0, s, c.op, static_cast<U*>(o.raw()),
               static_cast<const U*>(t.raw()), static_cast<const I*>(idx.raw()), n, width, rows);
      });
  });
}

// ---------------------------------------------------------------- gather_grad

// Bad indices (the call fails later) get key `rows`: sorted last, summed nowhere.
template <class I>
__global__ void sort_input_kernel(const I* ix, int64_t n, int64_t rows, uint32_t* keys, uint32_t* pos) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    keys[i] = in_range(ix[i], rows) ? uint32_t(ix[i]) : uint32_t(rows);
    pos[i] = uint32_t(i);
  }
}

// Thread (k, j) with k the first of a run of equal rows in sorted order sums
// column j of dy over that run, in increasing position.
template <class T>
__global__ void segment_sum_kernel(T* out, const T* dy, const uint32_t* rows, const uint32_t* pos, int64_t n,
                                   int64_t width, int64_t nrows) {
  const int64_t total = n * width;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t k = e / width, j = e - k * width;
    const uint32_t r = rows[k];
    if (r >= nrows || (k > 0 && rows[k - 1] == r)) continue;
    T acc = T(0);
    for (int64_t q = k; q < n && rows[q] == r; ++q) acc += dy[int64_t(pos[q]) * width + j];
    out[int64_t(r) * width + j] = acc;
  }
}

void gather_grad_kernel(const KernelCall& c) {
  use_device(c.ctx.device);
  const NDArray &dy = c.in[0], &idx = c.in[1], &o = c.out[0];
  const int64_t rows = o.shape()[0], width = rows ? o.numel() / rows : 0, n = idx.numel();
  cudaStream_t s = stream_of(c);
  zero_array(o, s);
  dispatch_among(TypeList<int32_t, int64_t>{}, idx.dtype(), [&]<class I>() {
    check_in_range(c, static_cast<const I*>(idx.raw()), idx.numel(), rows, "index");
    if (n == 0 || width == 0) return;
    if (rows >= int64_t(UINT32_MAX) || n > int64_t(UINT32_MAX))
      fail("gather_grad '", c.node, "': ", rows, " rows or ", n, " indices exceed the 32-bit sort keys");
    // Sort (row, position) pairs by row; the radix sort is stable, so positions stay increasing within a row.
    Temp buf(size_t(4 * n) * sizeof(uint32_t), s);
    uint32_t* keys_in = buf.get<uint32_t>();
    uint32_t* pos_in = keys_in + n;
    uint32_t* keys = keys_in + 2 * n;
    uint32_t* pos = keys_in + 3 * n;
    launch(sort_input_kernel<I>, grid_for(n), kThreads, 0, s, c.op, static_cast<const I*>(idx.raw()), n, rows, keys_in,
           pos_in);
    int bits = 1;
    while (bits < 32 && (int64_t(1) << bits) <= rows) ++bits;  // keys 0..rows
    size_t tmp_bytes = 0;
    LOOM_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, tmp_bytes, keys_in, keys, pos_in, pos, n, 0, bits, s));
    Temp tmp(tmp_bytes, s);
    LOOM_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(tmp.get(), tmp_bytes, keys_in, keys, pos_in, pos, n, 0, bits, s));
    dispatch_among(FloatTypes{}, o.dtype(), [&]<class T>() {
      launch(segment_sum_kernel<T>, grid_for(n * width), kThreads, 0, s, c.op, static_cast<T*>(o.raw()),
             static_cast<const T*>(dy.raw()), keys, pos, n, width, rows);
    });
  });
}

// ---------------------------------------------------------------- one_hot

// out[i, ix[i]] = one (an element of `size` bytes); out is already zeroed.
template <class I>
__global__ void one_hot_kernel(void* out, const I* ix, int64_t n, int64_t depth, int size, uint64_t one) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const I v = ix[i];
    if (!in_range(v, depth)) continue;
    const int64_t e = i * depth + int64_t(v);
    switch (size) {
      case 1: static_cast<uint8_t*>(out)[e] = uint8_t(one); break;
      case 4: static_cast<uint32_t*>(out)[e] = uint32_t(one); break;
      default: static_cast<uint64_t*>(out)[e] = one; break;
    }
  }
}

void one_hot_kernel_call(const KernelCall& c) {
  use_device(c.ctx.device);
  const NDArray &idx = c.in[0], &o = c.out[0];
  const int64_t depth = o.shape().back(), n = idx.numel();
  cudaStream_t s = stream_of(c);
  zero_array(o, s);
  dispatch_among(TypeList<int32_t, int64_t, uint8_t>{}, idx.dtype(), [&]<class I>() {
    check_in_range(c, static_cast<const I*>(idx.raw()), idx.numel(), depth, "index");
    if (n > 0) {
      launch(one_hot_kernel<I>, grid_for(n), kThreads, 0, s, c.op, o.raw(), static_cast<const I*>(idx.raw()), n, depth,
             int(o.itemsize()), element_bits(1.0, o.dtype()));
    }
  });
}

// ---------------------------------------------------------------- arange_like

__global__ void arange_kernel(int64_t* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = i;
}

void arange_like_kernel(const KernelCall& c) {
  use_device(c.ctx.device);
  const int64_t n = c.out[0].numel();
  if (n > 0)
    launch(arange_kernel, grid_for(n), kThreads, 0, stream_of(c), c.op, static_cast<int64_t*>(c.out[0].raw()), n);
}

const bool registered = [] {
  const auto all = AllTypes::dtypes();
  register_kernel("arange_like", DeviceKind::cuda, {int64}, {&arange_like_kernel, true});
  register_kernel("slice_grad", DeviceKind::cuda, all, {&slice_grad_kernel});
  register_kernel("concat", DeviceKind::cuda, all, {&concat_kernel});
  register_kernel("pad", DeviceKind::cuda, all, {&pad_kernel});
  register_kernel("dilate", DeviceKind::cuda, all, {&dilate_kernel});
  register_kernel("gather", DeviceKind::cuda, all, {&gather_kernel, true});
  register_kernel("gather_grad", DeviceKind::cuda, FloatTypes::dtypes(), {&gather_grad_kernel, true});
  register_kernel("one_hot", DeviceKind::cuda, all, {&one_hot_kernel_call, true});
  return true;
}();

}  // namespace
}  // namespace loom::cuda
