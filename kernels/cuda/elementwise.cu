// Element-wise CUDA kernels that move or fill data: copy/cast (any dtype pair,
// strided on both sides), assign, full and where, plus the copy/fill helpers
// the shape kernels and matmul build on. Arithmetic is in unary.cu/binary.cu.
//
// Every kernel here goes through launch_loop (common.cuh): operands broadcast
// to the iteration shape, dims merged, so compact or scalar operands take the
// division-free path. The source dtype of a copy is a runtime switch inside
// the kernel: one instantiation per destination dtype, not per pair.

#include <cstring>

#include "kernels/cuda/common.cuh"

namespace loom::cuda {

namespace {

template <class R>
struct CopyF {
  R* dst;
  const void* src;
  DType src_dtype;
  __device__ void operator()(const int64_t (&off)[2]) const { dst[off[0]] = load_as<R>(src, src_dtype, off[1]); }
};

template <class U>
struct FillF {
  U* dst;
  U bits;
  __device__ void operator()(const int64_t (&off)[1]) const { dst[off[0]] = bits; }
};

template <class U>
struct MoveF {
  U* dst;
  const U* src;
  __device__ void operator()(const int64_t (&off)[2]) const { dst[off[0]] = src[off[1]]; }
};

// out = cond ? x : y, moving elements as unsigned words of their size.
template <class U>
struct WhereF {
  U* out;
  const uint8_t* cond;
  const U* x;
  const U* y;
  __device__ void operator()(const int64_t (&off)[4]) const { out[off[0]] = cond[off[1]] ? x[off[2]] : y[off[3]]; }
};

char* at(void* p, int64_t elems, DType t) { return static_cast<char*>(p) + elems * int64_t(dtype_size(t)); }

// Byte range [lo, hi) a view touches.
std::pair<const char*, const char*> byte_range(const View& v) {
  Layout l = v.layout;
  auto [lo, hi] = l.extent();
  const size_t z = dtype_size(v.dtype);
  return {static_cast<const char*>(v.data) + lo * int64_t(z), static_cast<const char*>(v.data) + hi * int64_t(z)};
}

}  // namespace

uint64_t element_bits(double value, DType t) {
  uint64_t bits = 0;
  dispatch(t, [&]<class T>() {
    T x = convert<T>(value);
    std::memcpy(&bits, &x, sizeof(T));
  });
  return bits;
}

void copy_view(const View& dst, const View& src, cudaStream_t s) {
  LOOM_ASSERT(dst.layout.shape == src.layout.shape, "copy: shapes differ");
  const int64_t n = dst.numel();
  if (n == 0) return;
  if (dst.data == src.data && dst.layout.strides == src.layout.strides && dst.dtype == src.dtype) return;
  // Overlapping storage (e.g. assigning a transposed view of a variable to
  // itself): read everything before writing anything.
  auto [dlo, dhi] = byte_range(dst);
  auto [slo, shi] = byte_range(src);
  if (dlo < shi && slo < dhi) {
    CompactView tmp = copy_to_temp(src, s);
    return copy_view(dst, tmp.view, s);
  }
  if (dst.dtype == src.dtype && dst.layout.is_compact() && src.layout.is_compact()) {
    LOOM_CUDA_CHECK(cudaMemcpyAsync(dst.data, src.data, size_t(n) * dtype_size(dst.dtype), cudaMemcpyDeviceToDevice, s));
    return;
  }
  Loop<2> L = make_loop<2>(dst.layout.shape, {&dst.layout, &src.layout});
  dispatch(dst.dtype, [&]<class R>() {
    launch_loop<2>(L, s, "copy", [&](const std::array<int64_t, 2>& b) {
      return CopyF<R>{static_cast<R*>(dst.data) + b[0], at(src.data, b[1], src.dtype), src.dtype};
    });
  });
}

CompactView compact_on(const View& v, cudaStream_t s) {
  if (v.layout.is_compact()) return {Temp(), v};
  return copy_to_temp(v, s);
}

CompactView copy_to_temp(const View& v, cudaStream_t s) {
  CompactView r;
  r.mem = Temp(size_t(v.numel()) * dtype_size(v.dtype), s);
  r.view = {r.mem.get(), Layout::compact(v.layout.shape), v.dtype};
  // Source and a fresh temporary never overlap.
  Loop<2> L = make_loop<2>(v.layout.shape, {&r.view.layout, &v.layout});
  // Same dtype: move words (a typed copy would only add conversions).
  dispatch_size(v.dtype, [&]<class U>() {
    launch_loop<2>(L, s, "compact", [&](const std::array<int64_t, 2>& b) {
      return MoveF<U>{static_cast<U*>(r.view.data) + b[0], static_cast<const U*>(v.data) + b[1]};
    });
  });
  return r;
}

void fill_view(const View& dst, double value, cudaStream_t s) {
  if (dst.numel() == 0) return;
  const uint64_t bits = element_bits(value, dst.dtype);
  if (bits == 0 && dst.layout.is_compact()) {
    LOOM_CUDA_CHECK(cudaMemsetAsync(dst.data, 0, size_t(dst.numel()) * dtype_size(dst.dtype), s));
    return;
  }
  Loop<1> L = make_loop<1>(dst.layout.shape, {&dst.layout});
  dispatch_size(dst.dtype, [&]<class U>() {
    launch_loop<1>(L, s, "fill", [&](const std::array<int64_t, 1>& b) {
      return FillF<U>{static_cast<U*>(dst.data) + b[0], U(bits)};
    });
  });
}

void zero_array(const NDArray& dst, cudaStream_t s) {
  if (dst.numel() == 0) return;
  LOOM_ASSERT(dst.is_compact(), "zero_array: not compact");
  LOOM_CUDA_CHECK(cudaMemsetAsync(dst.raw(), 0, dst.nbytes(), s));
}

namespace {

// Copies in[0] into out[0]; the dtypes may differ (this is also "cast").
void copy_kernel(const KernelCall& c) {
  use_device(c.ctx.device);
  copy_array(c.out[0], c.in[0], stream_of(c));
}

// Writes in[1] (broadcast) into the variable's storage, out[0].
void assign_kernel(const KernelCall& c) {
  use_device(c.ctx.device);
  if (c.out[0].raw() == c.in[1].raw() && c.in[1].layout().strides == c.out[0].strides()) return;
  copy_array(c.out[0], c.in[1].broadcast_to(c.out[0].shape()), stream_of(c));
}

// Fills out[0] with attribute "value" (inputs, if any, only give the shape).
void fill_kernel(const KernelCall& c) {
  use_device(c.ctx.device);
  fill_view(view_of(c.out[0]), c.attrs.f("value"), stream_of(c));
}

void where_kernel(const KernelCall& c) {
  use_device(c.ctx.device);
  const NDArray& o = c.out[0];
  const Layout lo = o.layout(), l0 = c.in[0].layout(), l1 = c.in[1].layout(), l2 = c.in[2].layout();
  Loop<4> L = make_loop<4>(o.shape(), {&lo, &l0, &l1, &l2});
  dispatch_size(o.dtype(), [&]<class U>() {
    launch_loop<4>(L, stream_of(c), "where", [&](const std::array<int64_t, 4>& b) {
      return WhereF<U>{static_cast<U*>(o.raw()) + b[0], static_cast<const uint8_t*>(c.in[0].raw()) + b[1],
                       static_cast<const U*>(c.in[1].raw()) + b[2], static_cast<const U*>(c.in[2].raw()) + b[3]};
    });
  });
}

const bool registered = [] {
  const auto all = AllTypes::dtypes();
  register_kernel("copy", DeviceKind::cuda, all, {&copy_kernel});
  register_kernel("cast", DeviceKind::cuda, all, {&copy_kernel});
  register_kernel("where", DeviceKind::cuda, all, {&where_kernel});
  register_kernel("assign", DeviceKind::cuda, all, {&assign_kernel});
  register_kernel("full", DeviceKind::cuda, all, {&fill_kernel});
  return true;
}();

}  // namespace
}  // namespace loom::cuda
