#pragma once
// Internals shared by the CUDA kernels: the call's stream and device, launch
// sizes, stream-ordered temporaries, device-side error reports, strided
// operand descriptions passed to kernels by value, and the copy every shape
// kernel builds on.
//
// Kernels never use NDArray::compact()/clone()/fill(): those run on the
// legacy default stream, which does not wait for a session's (non-blocking)
// stream. Everything here is ordered on the call's stream.

#include <cuda_runtime.h>

#include <array>
#include <cstdint>
#include <functional>
#include <limits>
#include <type_traits>
#include <utility>

#include "core/kernel.hpp"
#include "kernels/cuda/check.hpp"

namespace loom::cuda {

inline cudaStream_t stream_of(const KernelCall& c) { return static_cast<cudaStream_t>(c.ctx.stream); }

/// Makes `d` current on this host thread (TBB workers do not inherit it).
inline void use_device(Device d) { LOOM_CUDA_CHECK(cudaSetDevice(d.index)); }

inline constexpr int kThreads = 256;

/// Blocks for a grid-stride loop over n items: enough to fill any current GPU, capped.
inline unsigned grid_for(int64_t n, int threads = kThreads) {
  int64_t b = (n + threads - 1) / threads;
  return unsigned(b < 1 ? 1 : b > 65536 ? 65536 : b);
}

/// Throws loom::Error naming the kernel when a launch failed.
inline void check_launch(std::string_view what) {
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) fail("CUDA: launching ", what, ": ", cudaGetErrorString(e));
}

/// Launches `kernel` on `stream` and checks the launch. Every launch goes
/// through here (LOOM_CUDA_EMULATION builds replace it with a host emulator,
/// see emulation/README.md).
#ifndef LOOM_CUDA_EMULATION
template <class... P, class... A>
void launch(void (*kernel)(P...), unsigned grid, unsigned block, size_t smem, cudaStream_t stream,
            std::string_view what, A&&... args) {
  kernel<<<grid, block, smem, stream>>>(std::forward<A>(args)...);
  check_launch(what);
}

/// The block's dynamic shared memory, as T[].
template <class T>
__device__ __forceinline__ T* dynamic_shared() {
  extern __shared__ __align__(16) unsigned char smem[];
  return reinterpret_cast<T*>(smem);
}
#endif

/// Sums a and b over the block into every thread's a and b: a tree in dynamic shared memory
/// (2 * blockDim.x doubles; blockDim.x a power of 2), the same order on every run.
__device__ inline void block_sum2(double& a, double& b) {
  double* sh = dynamic_shared<double>();
  sh[threadIdx.x] = a;
  sh[blockDim.x + threadIdx.x] = b;
  __syncthreads();
  for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) {
      sh[threadIdx.x] += sh[threadIdx.x + half];
      sh[blockDim.x + threadIdx.x] += sh[blockDim.x + threadIdx.x + half];
    }
    __syncthreads();
  }
  a = sh[0], b = sh[blockDim.x];
  __syncthreads();
}

/// Device memory that lives for one kernel call, allocated and freed in
/// stream order (no device-wide synchronization, unlike cudaMalloc/cudaFree).
class Temp {
 public:
  Temp() = default;
  Temp(size_t bytes, cudaStream_t s) : stream_(s) {
    if (bytes) LOOM_CUDA_CHECK(cudaMallocAsync(&p_, bytes, s));
  }
  Temp(const Temp&) = delete;
  Temp& operator=(const Temp&) = delete;
  Temp(Temp&& o) noexcept : p_(o.p_), stream_(o.stream_) { o.p_ = nullptr; }
  Temp& operator=(Temp&& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(stream_, o.stream_);
    return *this;
  }
  ~Temp() {
    if (p_) cudaFreeAsync(p_, stream_);
  }
  template <class T = void>
  T* get() const {
    return static_cast<T*>(p_);
  }

 private:
  void* p_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

/// A typed strided view of device memory without ownership: `data` is the
/// address of element (0, ..., 0); layout.offset is unused (0).
struct View {
  void* data = nullptr;
  Layout layout;
  DType dtype = float32;
  int64_t numel() const { return loom::numel(layout.shape); }
};
inline View view_of(const NDArray& a) { return {a.raw(), Layout{a.shape(), a.strides(), 0}, a.dtype()}; }

/// A compact copy of a view in a stream-ordered temporary (or the view itself
/// when it is already compact: `mem` is then empty).
struct CompactView {
  Temp mem;
  View view;
};
CompactView compact_on(const View& v, cudaStream_t s);
/// Always a fresh compact copy (e.g. of a source overlapping its destination).
CompactView copy_to_temp(const View& v, cudaStream_t s);

/// The first bad element a device check found: its position (~0: none) and value.
struct BadElement {
  unsigned long long pos;
  long long value;
};

/// A device-side check of one call's operands (indices, labels, divisors). In
/// a session run its result is copied to pinned memory behind the kernels and
/// reported when the session next waits for the device (core's
/// DeferredChecks), so the run need not stop here; kernels launched after it
/// skip the bad elements. In an eager call, or with `now` (a kernel that must
/// not run on bad input), it waits and reports at once.
class DeviceCheck {
 public:
  explicit DeviceCheck(const KernelCall& c, bool now = false);
  DeviceCheck(const DeviceCheck&) = delete;
  DeviceCheck& operator=(const DeviceCheck&) = delete;
  /// Where the check kernels atomicMin the positions of bad elements.
  unsigned long long* pos() const { return &slot_->pos; }
  /// Records base[pos] as the value, behind the check kernels (on the stream).
  template <class I>
  void record_value(const I* base);
  /// Reports a found element through `report` (which throws the op's error), now or later.
  void finish(std::function<void(const BadElement&)> report);

 private:
  const KernelCall& c_;
  BadElement* slot_ = nullptr;  // device memory
  BadElement* host_ = nullptr;  // deferred: the slot's pinned copy
  Temp eager_;                  // eager: the slot's memory
};

template <class I>
__global__ void record_value_kernel(BadElement* e, const I* base) {
  if (e->pos != ~0ull) e->value = (long long)base[e->pos];
}

template <class I>
void DeviceCheck::record_value(const I* base) {
  launch(record_value_kernel<I>, 1, 1, 0, stream_of(c_), c_.op, slot_, base);
}

template <class I>
__device__ __forceinline__ bool in_range(I v, int64_t limit) {
  if constexpr (std::is_signed_v<I>)
    return v >= I(0) && int64_t(v) < limit;
  else
    return int64_t(v) < limit;
}

template <class I>
__global__ void find_out_of_range_kernel(const I* v, int64_t n, int64_t limit, unsigned long long* first_bad) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    if (!in_range(v[i], limit)) atomicMin(first_bad, (unsigned long long)i);
}

/// Fails the call with the CPU kernel's message ("<op> '<node>': <noun> 7 out of range [0, 5)") when one of n
/// compact values (indices, labels) is outside [0, limit): now, or at the session's next synchronization
/// (DeviceCheck). Kernels launched after it must skip such values.
template <class I>
void check_in_range(const KernelCall& c, const I* values, int64_t n, int64_t limit, const char* noun) {
  if (n == 0) return;
  DeviceCheck check(c);
  launch(find_out_of_range_kernel<I>, grid_for(n), kThreads, 0, stream_of(c), c.op, values, n, limit, check.pos());
  check.record_value(values);
  check.finish([op = std::string(c.op), node = std::string(c.node), limit, noun](const BadElement& e) {
    fail(op, " '", node, "': ", noun, " ", int64_t(e.value), " out of range [0, ", limit, ")");
  });
}

// ---------------------------------------------------------------- strided loops

/// Dims a kernel resolves itself after merging; more are looped on the host.
inline constexpr int kMaxDims = 10;

/// Iteration shape and per-operand strides (elements), passed to kernels by value.
template <int N>
struct Strided {
  int ndim = 0;
  int64_t shape[kMaxDims];
  int64_t stride[N][kMaxDims];
};

/// Element offsets of linear index i for each operand. One merged dim (compact
/// or scalar-broadcast operands) needs no division; 32-bit division when i fits.
template <int N>
__device__ __forceinline__ void offsets_of(const Strided<N>& s, int64_t i, int64_t (&off)[N]) {
#pragma unroll
  for (int k = 0; k < N; ++k) off[k] = 0;
  if (s.ndim == 1) {
#pragma unroll
    for (int k = 0; k < N; ++k) off[k] = i * s.stride[k][0];
    return;
  }
  if (i <= int64_t(0xFFFFFFFFu)) {
    uint32_t r = uint32_t(i);
    for (int d = s.ndim - 1; d > 0; --d) {
      uint32_t n = uint32_t(s.shape[d]), q = r / n, c = r - q * n;
      r = q;
#pragma unroll
      for (int k = 0; k < N; ++k) off[k] += int64_t(c) * s.stride[k][d];
    }
#pragma unroll
    for (int k = 0; k < N; ++k) off[k] += int64_t(r) * s.stride[k][0];
    return;
  }
  int64_t r = i;
  for (int d = s.ndim - 1; d > 0; --d) {
    int64_t n = s.shape[d], q = r / n, c = r - q * n;
    r = q;
#pragma unroll
    for (int k = 0; k < N; ++k) off[k] += c * s.stride[k][d];
  }
#pragma unroll
  for (int k = 0; k < N; ++k) off[k] += r * s.stride[k][0];
}

/// f(offsets) for every element of the iteration space (grid-stride loop).
template <int N, class F>
__global__ void strided_kernel(Strided<N> s, int64_t n, F f) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[N];
    offsets_of<N>(s, i, off);
    f(off);
  }
}

/// A loop over `shape` with operands given by layouts (operand 0 is usually
/// the output; the others broadcast to `shape`). Dims of size 1 are dropped and
/// dims contiguous for every operand merged, as on the CPU.
template <int N>
struct Loop {
  std::vector<int64_t> shape;
  std::array<std::vector<int64_t>, N> strides;
  std::array<int64_t, N> base{};  // element offset of each operand's first element
};

template <int N>
Loop<N> make_loop(const Shape& shape, const std::array<const Layout*, N>& ops) {
  Loop<N> L;
  std::array<std::vector<int64_t>, N> st;
  for (int k = 0; k < N; ++k) {
    const Layout& l = *ops[size_t(k)];
    st[size_t(k)].assign(shape.size(), 0);
    size_t off = shape.size() - l.shape.size();
    for (size_t i = 0; i < l.shape.size(); ++i)
      if (l.shape[i] != 1) st[size_t(k)][off + i] = l.strides[i];
  }
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    bool merge = !L.shape.empty();
    for (int k = 0; k < N && merge; ++k) merge = L.strides[size_t(k)].back() == st[size_t(k)][d] * shape[d];
    if (merge) {
      L.shape.back() *= shape[d];
      for (int k = 0; k < N; ++k) L.strides[size_t(k)].back() = st[size_t(k)][d];
    } else {
      L.shape.push_back(shape[d]);
      for (int k = 0; k < N; ++k) L.strides[size_t(k)].push_back(st[size_t(k)][d]);
    }
  }
  if (L.shape.empty()) {
    L.shape.push_back(1);
    for (int k = 0; k < N; ++k) L.strides[size_t(k)].push_back(0);
  }
  return L;
}

/// Launches strided_kernel over the loop. `make_f(base)` builds the functor
/// with operand k starting `base[k]` elements past its first element (nonzero
/// only when dims beyond kMaxDims are looped here on the host).
template <int N, class MakeF>
void launch_loop(const Loop<N>& L, cudaStream_t stream, std::string_view what, MakeF&& make_f) {
  int64_t n_all = 1;
  for (int64_t d : L.shape) n_all *= d;
  if (n_all == 0) return;
  const int nd = int(L.shape.size());
  const int outer = nd > kMaxDims ? nd - kMaxDims : 0;
  Strided<N> s;
  s.ndim = nd - outer;
  int64_t n = 1;
  for (int d = 0; d < s.ndim; ++d) {
    s.shape[d] = L.shape[size_t(outer + d)];
    n *= s.shape[d];
    for (int k = 0; k < N; ++k) s.stride[k][d] = L.strides[size_t(k)][size_t(outer + d)];
  }
  std::vector<int64_t> idx(size_t(outer), 0);
  while (true) {
    std::array<int64_t, N> base = L.base;
    for (int d = 0; d < outer; ++d)
      for (int k = 0; k < N; ++k) base[size_t(k)] += idx[size_t(d)] * L.strides[size_t(k)][size_t(d)];
    launch(strided_kernel<N, decltype(make_f(base))>, grid_for(n), kThreads, 0, stream, what, s, n, make_f(base));
    int d = outer - 1;
    for (; d >= 0; --d) {
      if (++idx[size_t(d)] < L.shape[size_t(d)]) break;
      idx[size_t(d)] = 0;
    }
    if (d < 0) return;
  }
}

// ---------------------------------------------------------------- element types

/// The CPU's conversion rules (kernels/cpu/elementwise.cpp): bool is x != 0,
/// float to integer saturates and maps NaN to 0.
template <class R, class T>
__host__ __device__ __forceinline__ R convert(T x) {
  if constexpr (std::is_same_v<R, bool>) {
    return x != T(0);
  } else if constexpr (std::is_floating_point_v<T> && std::is_integral_v<R>) {
    if (!(x == x)) return R(0);
    if (x <= T(std::numeric_limits<R>::lowest())) return std::numeric_limits<R>::lowest();
    if (x >= T(std::numeric_limits<R>::max())) return std::numeric_limits<R>::max();
    return R(x);
  } else {
    return R(x);
  }
}

/// Element `off` of a `src`-typed array, converted to R (a runtime switch
/// instead of one kernel per dtype pair).
template <class R>
__device__ __forceinline__ R load_as(const void* p, DType src, int64_t off) {
  switch (src) {
    case DType::float32: return convert<R>(static_cast<const float*>(p)[off]);
    case DType::float64: return convert<R>(static_cast<const double*>(p)[off]);
    case DType::int32: return convert<R>(static_cast<const int32_t*>(p)[off]);
    case DType::int64: return convert<R>(static_cast<const int64_t*>(p)[off]);
    case DType::uint8: return convert<R>(static_cast<const uint8_t*>(p)[off]);
    case DType::boolean: return convert<R>(static_cast<const bool*>(p)[off]);
  }
  return R();
}

/// Unsigned integer of the same size as a dtype's element (for moving bytes).
template <size_t Size>
using Bits = std::conditional_t<Size == 1, uint8_t, std::conditional_t<Size == 4, uint32_t, uint64_t>>;

/// Calls f.template operator()<U>() with U = Bits<dtype_size(t)>.
template <class F>
void dispatch_size(DType t, F&& f) {
  switch (dtype_size(t)) {
    case 1: f.template operator()<uint8_t>(); return;
    case 4: f.template operator()<uint32_t>(); return;
    case 8: f.template operator()<uint64_t>(); return;
  }
  LOOM_ASSERT(false, "unexpected element size of ", dtype_name(t));
}

/// `value` converted to dtype t (CPU rules), as the bits of one element.
uint64_t element_bits(double value, DType t);

// ---------------------------------------------------------------- shared kernels (elementwise.cu)

/// dst[...] = src[...] converted to dst's dtype; shapes equal, both may be strided.
void copy_view(const View& dst, const View& src, cudaStream_t s);
inline void copy_array(const NDArray& dst, const NDArray& src, cudaStream_t s) {
  copy_view(view_of(dst), view_of(src), s);
}
/// Sets every element of `dst` (any layout) to `value` converted to its dtype.
void fill_view(const View& dst, double value, cudaStream_t s);
/// Zeroes a compact array.
void zero_array(const NDArray& dst, cudaStream_t s);

}  // namespace loom::cuda
