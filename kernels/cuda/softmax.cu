// Fused softmax, log_softmax, logsumexp, softmax_grad and log_softmax_grad on
// CUDA (semantics: ops/softmax.cpp; the CPU kernels: kernels/cpu/softmax.cpp).
//
// The compact input is [outer, n, inner] around the reduced dims. Long
// contiguous rows (inner = 1) get one block each: a shared-memory tree for
// the maximum and the sum, then one pass writing the outputs. Otherwise one
// thread per (outer, inner) column walks its n elements (neighbouring threads
// read neighbouring columns, so loads coalesce). Trees and loops depend on
// the shapes only: results are deterministic.

#include "kernels/cuda/common.cuh"

namespace loom::cuda {
namespace {

enum class Kind { softmax, log_softmax, logsumexp, softmax_grad, log_softmax_grad };

__device__ __forceinline__ float ex(float x) { return expf(x); }
__device__ __forceinline__ double ex(double x) { return exp(x); }
__device__ __forceinline__ float lg(float x) { return logf(x); }
__device__ __forceinline__ double lg(double x) { return log(x); }
template <class T>
__device__ __forceinline__ T neg_inf() {
  return -T(INFINITY);
}
template <class T>
__device__ __forceinline__ bool is_inf(T x) {
  return x == T(INFINITY) || x == -T(INFINITY);
}

constexpr bool is_grad(Kind k) { return k == Kind::softmax_grad || k == Kind::log_softmax_grad; }

/// The row statistic before the write pass: the maximum (forward kinds) or
/// the sum the gradient needs. x walks the row with `stride`.
template <Kind K, class T>
__device__ __forceinline__ T first_term(const T* x, const T* g, int64_t j, int64_t stride) {
  if constexpr (K == Kind::softmax_grad) return x[j * stride] * g[j * stride];
  else if constexpr (K == Kind::log_softmax_grad) return g[j * stride];
  else return x[j * stride];
}

template <Kind K, class T>
__device__ __forceinline__ void combine1(T& a, T b) {
  if constexpr (is_grad(K)) a += b;
  else a = b > a ? b : a;  // NaN is left to the exponentials
}

/// The shift subtracted before exponentiating: the maximum, except that
/// logsumexp leaves an infinite maximum out (PyTorch).
template <Kind K, class T>
__device__ __forceinline__ T shift(T m) {
  if constexpr (K == Kind::logsumexp) return is_inf(m) ? T(0) : m;
  else return m;
}

/// Writes element j of the row given the statistics a (max or sum) and s (sum of exponentials).
template <Kind K, class T>
__device__ __forceinline__ void write(const T* x, const T* g, T* y, int64_t j, int64_t stride, T a, T s) {
  const int64_t o = j * stride;
  if constexpr (K == Kind::softmax) y[o] = ex(x[o] - a) / s;
  else if constexpr (K == Kind::log_softmax) y[o] = x[o] - a - lg(s);
  else if constexpr (K == Kind::softmax_grad) y[o] = x[o] * (g[o] - a);
  else if constexpr (K == Kind::log_softmax_grad) y[o] = g[o] - ex(x[o]) * a;
}

// Tree over the block in shared memory (blockDim.x a power of two).
template <Kind K, class T>
__device__ T block_tree(T v, T* sh, bool sum) {
  const unsigned t = threadIdx.x;
  sh[t] = v;
  __syncthreads();
  for (unsigned w = blockDim.x / 2; w > 0; w /= 2) {
    if (t < w) {
      if (sum) sh[t] += sh[t + w];
      else sh[t] = sh[t + w] > sh[t] ? sh[t + w] : sh[t];
    }
    __syncthreads();
  }
  v = sh[0];
  __syncthreads();
  return v;
}

// One block per contiguous row (inner = 1).
template <Kind K, class T>
__global__ void row_kernel(const T* x, const T* g, T* y, int64_t rows, int64_t n) {
  T* sh = dynamic_shared<T>();
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * n;
    const T* gr = g ? g + r * n : nullptr;
    T a = is_grad(K) ? T(0) : neg_inf<T>();
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) combine1<K, T>(a, first_term<K, T>(xr, gr, j, 1));
    a = block_tree<K, T>(a, sh, is_grad(K));
    T s = 0;
    if constexpr (!is_grad(K)) {
      a = shift<K, T>(a);
      for (int64_t j = threadIdx.x; j < n; j += blockDim.x) s += ex(xr[j] - a);
      s = block_tree<K, T>(s, sh, true);
    }
    if constexpr (K == Kind::logsumexp) {
      if (threadIdx.x == 0) y[r] = a + lg(s);
    } else {
      for (int64_t j = threadIdx.x; j < n; j += blockDim.x) write<K, T>(xr, gr, y + r * n, j, 1, a, s);
    }
  }
}

// One thread per (outer, inner) column of n elements at stride `inner`.
template <Kind K, class T>
__global__ void col_kernel(const T* x, const T* g, T* y, int64_t outer, int64_t n, int64_t inner) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < outer * inner;
       t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = t / inner, i = t - o * inner, base = o * n * inner + i;
    const T* xc = x + base;
    const T* gc = g ? g + base : nullptr;
    T a = is_grad(K) ? T(0) : neg_inf<T>();
    for (int64_t j = 0; j < n; ++j) combine1<K, T>(a, first_term<K, T>(xc, gc, j, inner));
    T s = 0;
    if constexpr (!is_grad(K)) {
      a = shift<K, T>(a);
      for (int64_t j = 0; j < n; ++j) s += ex(xc[j * inner] - a);
    }
    if constexpr (K == Kind::logsumexp) y[t] = a + lg(s);
    else
      for (int64_t j = 0; j < n; ++j) write<K, T>(xc, gc, y + base, j, inner, a, s);
  }
}

std::pair<int64_t, int64_t> reduced_dims(Kind kind, const Attrs& attrs, int64_t ndim) {
  auto norm = [&](int64_t a) { return a < 0 ? a + ndim : a; };
  if (kind != Kind::logsumexp) return {norm(attrs.i("axis")), norm(attrs.i("axis"))};
  const auto& axes = attrs.ints("axes");
  if (axes.empty()) return {0, ndim - 1};
  int64_t lo = norm(axes[0]), hi = lo;
  for (int64_t a : axes) lo = std::min(lo, norm(a)), hi = std::max(hi, norm(a));
  return {lo, hi};
}

template <Kind K>
void kernel(const KernelCall& c) {
  use_device(c.ctx.device);
  const NDArray& x = c.in[0];
  const auto [a0, a1] = reduced_dims(K, c.attrs, x.ndim());
  int64_t outer = 1, n = 1, inner = 1;
  for (int64_t d = 0; d < x.ndim(); ++d) (d < a0 ? outer : d <= a1 ? n : inner) *= x.shape()[size_t(d)];
  if (outer * inner == 0 || (K != Kind::logsumexp && n == 0)) return;
  dispatch_among(FloatTypes{}, c.out[0].dtype(), [&]<class T>() {
    const T* xp = static_cast<const T*>(x.raw());
    const T* gp = c.in.size() > 1 ? static_cast<const T*>(c.in[1].raw()) : nullptr;
    T* y = static_cast<T*>(c.out[0].raw());
    if (inner == 1 && n >= 256) {
      int threads = 32;
      while (threads < kThreads && threads < n) threads *= 2;
      launch(row_kernel<K, T>, unsigned(std::min<int64_t>(outer, 1 << 20)), unsigned(threads), threads * sizeof(T),
             stream_of(c), c.op, xp, gp, y, outer, n);
    } else {
      launch(col_kernel<K, T>, grid_for(outer * inner), kThreads, 0, stream_of(c), c.op, xp, gp, y, outer, n, inner);
    }
  });
}

const bool registered = [] {
  const auto f = FloatTypes::dtypes();
  register_kernel("softmax", DeviceKind::cuda, f, {.fn = &kernel<Kind::softmax>, .compact_inputs = true});
  register_kernel("log_softmax", DeviceKind::cuda, f, {.fn = &kernel<Kind::log_softmax>, .compact_inputs = true});
  register_kernel("logsumexp", DeviceKind::cuda, f, {.fn = &kernel<Kind::logsumexp>, .compact_inputs = true});
  register_kernel("softmax_grad", DeviceKind::cuda, f, {.fn = &kernel<Kind::softmax_grad>, .compact_inputs = true});
  register_kernel("log_softmax_grad", DeviceKind::cuda, f,
                  {.fn = &kernel<Kind::log_softmax_grad>, .compact_inputs = true});
  return true;
}();

}  // namespace
}  // namespace loom::cuda
