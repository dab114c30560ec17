// batch_norm and batch_norm_grad on CUDA.
//
// Own kernels rather than cuDNN's: cuDNN v9 deprecates its batch-norm calls
// (cudnnBatchNormalizationForwardTraining/Backward) and returns the inverse
// standard deviation rather than the variance loom's op outputs, and the
// ReLU folded into loom's op (ConvBN) would need extra passes around them.
// Two passes each way, as on the CPU:
//   statistics: one block per channel, a shifted sum and sum of squares in
//     double over the channel's values in a fixed order, a tree in shared
//     memory (deterministic);
//   element-wise: one thread per element, y = relu?((x - mean) * scale + b),
//     or dx = k * (g + k2 * (x - mean) + k0) from the gradient sums.

#include "kernels/cuda/common.cuh"

namespace loom::cuda {
namespace {

constexpr int kStatThreads = 256;

struct Layout {
  int64_t N, C, inner;
  __host__ __device__ int64_t M() const { return N * inner; }
};
Layout layout_of(const Shape& s) {
  int64_t inner = 1;
  for (size_t i = 2; i < s.size(); ++i) inner *= s[i];
  return {s[0], s[1], inner};
}

/// Value j of channel c: element (j / inner, c, j % inner).
__device__ __forceinline__ int64_t at(const Layout& l, int64_t c, int64_t j) {
  return ((j / l.inner) * l.C + c) * l.inner + j % l.inner;
}

template <class T>
__global__ void stats_kernel(Layout l, const T* x, T* mean, T* var) {
  for (int64_t c = blockIdx.x; c < l.C; c += gridDim.x) {
    // A finite shift: an infinite one would make the sum inf - inf = NaN (PyTorch's is inf).
    const double x0 = double(x[at(l, c, 0)]), shift = x0 - x0 == 0.0 ? x0 : 0.0;  // x0 if finite
    double s1 = 0, s2 = 0;
    for (int64_t j = threadIdx.x; j < l.M(); j += blockDim.x) {
      const double d = double(x[at(l, c, j)]) - shift;
      s1 += d, s2 += d * d;
    }
    block_sum2(s1, s2);
    if (threadIdx.x == 0) {
      const double M = double(l.M()), m1 = s1 / M;
      mean[c] = T(shift + m1);
      const double v = s2 / M - m1 * m1;
      var[c] = T(v < 0 ? 0 : v);  // rounding can go below 0; NaN stays NaN
    }
  }
}

template <class T>
__global__ void normalize_kernel(Layout l, const T* x, const T* w, const T* b, const T* mean, const T* var, double eps,
                                 bool relu, T* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = (i / l.inner) % l.C;
    const T scale = T(double(w[c]) / sqrt(double(var[c]) + eps));
    const T v = (x[i] - mean[c]) * scale + b[c];
    y[i] = relu && v < T(0) ? T(0) : v;  // a NaN stays NaN, as on the CPU
  }
}

/// dy, or 0 where the ReLU clamped the forward value (recomputed from x as the forward did);
/// a NaN lets dy through, as PyTorch's threshold_backward and the CPU kernel.
template <class T>
__device__ __forceinline__ T masked(T dy, T xc, T scale, T b, bool relu) {
  return relu && xc * scale + b <= T(0) ? T(0) : dy;
}

template <class T>
__global__ void grad_sums_kernel(Layout l, const T* x, const T* dy, const T* w, const T* b, const T* mean, const T* var,
                                 double eps, bool relu, T* dw, T* db) {
  for (int64_t c = blockIdx.x; c < l.C; c += gridDim.x) {
    const double invstd = 1.0 / sqrt(double(var[c]) + eps);
    const T scale = T(double(w[c]) * invstd);
    double sg = 0, sgx = 0;
    for (int64_t j = threadIdx.x; j < l.M(); j += blockDim.x) {
      const int64_t i = at(l, c, j);
      const T xc = x[i] - mean[c];
      const T g = masked(dy[i], xc, scale, b[c], relu);
      sg += double(g), sgx += double(g) * double(xc);
    }
    block_sum2(sg, sgx);
    if (threadIdx.x == 0) db[c] = T(sg), dw[c] = T(sgx * invstd);
  }
}

template <class T>
__global__ void input_grad_kernel(Layout l, const T* x, const T* dy, const T* w, const T* b, const T* mean,
                                  const T* var, const T* dw, const T* db, double eps, bool relu, T* dx, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = (i / l.inner) % l.C;
    const double invstd = 1.0 / sqrt(double(var[c]) + eps), M = double(l.M());
    // w invstd factored out, as on the CPU: an infinite weight gives +-inf, not inf - inf.
    const double k = double(w[c]) * invstd, k2 = -double(dw[c]) / M * invstd, k0 = -double(db[c]) / M;
    const T xc = x[i] - mean[c];
    dx[i] = T(k) * (masked(dy[i], xc, T(k), b[c], relu) + T(k2) * xc + T(k0));
  }
}

template <class T>
void forward(const KernelCall& c) {
  const Layout l = layout_of(c.in[0].shape());
  const cudaStream_t s = stream_of(c);
  T* mean = static_cast<T*>(c.out[1].raw());
  T* var = static_cast<T*>(c.out[2].raw());
  if (l.C == 0) return;
  if (l.M() == 0) {  // NaN statistics, as the CPU (and PyTorch)
    fill_view(view_of(c.out[1]), NAN, s);
    fill_view(view_of(c.out[2]), NAN, s);
    return;
  }
  const T* x = static_cast<const T*>(c.in[0].raw());
  launch(stats_kernel<T>, unsigned(std::min<int64_t>(l.C, 65535)), kStatThreads, 2 * kStatThreads * sizeof(double), s,
         "batch_norm statistics", l, x, mean, var);
  const int64_t n = c.out[0].numel();
  launch(normalize_kernel<T>, grid_for(n), kThreads, 0, s, "batch_norm", l, x, static_cast<const T*>(c.in[1].raw()),
         static_cast<const T*>(c.in[2].raw()), mean, var, c.attrs.f("eps"), c.attrs.get_or("relu", false),
         static_cast<T*>(c.out[0].raw()), n);
}

template <class T>
void backward(const KernelCall& c) {
  const Layout l = layout_of(c.in[0].shape());
  const cudaStream_t s = stream_of(c);
  if (l.C == 0) return;
  if (l.M() == 0) {
    zero_array(c.out[1], s);
    zero_array(c.out[2], s);
    return;
  }
  auto in = [&](size_t i) { return static_cast<const T*>(c.in[i].raw()); };
  T* dw = static_cast<T*>(c.out[1].raw());
  T* db = static_cast<T*>(c.out[2].raw());
  const double eps = c.attrs.f("eps");
  const bool relu = c.attrs.get_or("relu", false);
  launch(grad_sums_kernel<T>, unsigned(std::min<int64_t>(l.C, 65535)), kStatThreads, 2 * kStatThreads * sizeof(double),
         s, "batch_norm_grad sums", l, in(0), in(1), in(2), in(3), in(4), in(5), eps, relu, dw, db);
  const int64_t n = c.out[0].numel();
  launch(input_grad_kernel<T>, grid_for(n), kThreads, 0, s, "batch_norm_grad", l, in(0), in(1), in(2), in(3), in(4),
         in(5), static_cast<const T*>(dw), static_cast<const T*>(db), eps, relu, static_cast<T*>(c.out[0].raw()), n);
}

const bool registered = [] {
  register_kernel("batch_norm", DeviceKind::cuda, FloatTypes::dtypes(),
                  {[](const KernelCall& c) {
                     use_device(c.ctx.device);
                     dispatch_among(FloatTypes{}, c.out[0].dtype(), [&]<class T>() { forward<T>(c); });
                   },
                   true});
  register_kernel("batch_norm_grad", DeviceKind::cuda, FloatTypes::dtypes(),
                  {[](const KernelCall& c) {
                     use_device(c.ctx.device);
                     dispatch_among(FloatTypes{}, c.out[0].dtype(), [&]<class T>() { backward<T>(c); });
                   },
                   true});
  return true;
}();

}  // namespace
}  // namespace loom::cuda
