// layer_norm and layer_norm_grad on CUDA.
//
// x is seen as R rows of D values; one block per row (grid-stride over rows):
//   forward:  the row's mean, then its sum of squared deviations (sums in
//             double, block_sum2's fixed tree), then y = (x - mean) * rstd
//             (* w (+ b));
//   backward: the weight and bias gradients first (dx may overwrite x or
//             dy): per-column sums over fixed chunks of rows into the node's
//             planned workspace, then the chunks in order (deterministic);
//             then per row the sums of g = dy (* w) and g * xhat, and
//             dx = rstd * (g - mean(g) - xhat * mean(g * xhat)).

#include "kernels/cuda/common.cuh"

namespace loom::cuda {
namespace {

constexpr int kRowThreads = 256;
constexpr int64_t kMaxChunks = 128;

struct Rows {
  int64_t R, D;
};
Rows rows_of(const Shape& x, int64_t dims) {
  const size_t k = size_t(dims);
  return {numel(Shape(x.begin(), x.end() - k)), numel(Shape(x.end() - k, x.end()))};
}
int64_t chunk_rows(const Rows& r) { return std::max<int64_t>(1, (r.R + kMaxChunks - 1) / kMaxChunks); }
int64_t chunks_of(const Rows& r) { return (r.R + chunk_rows(r) - 1) / chunk_rows(r); }

/// Backward with weights: dweight and dbias partials (D doubles each) per chunk of rows.
size_t workspace(const WorkspaceQuery& q) {
  if (q.in.size() < 5) return 0;
  const Rows r = rows_of(q.in[0], q.attrs.i("dims"));
  return size_t(2 * chunks_of(r) * r.D) * sizeof(double);
}

template <class T>
__global__ void forward_kernel(Rows r, const T* x, const T* w, const T* b, double eps, T* y, T* mean, T* rstd) {
  for (int64_t i = blockIdx.x; i < r.R; i += gridDim.x) {
    const T* row = x + i * r.D;
    double s = 0, unused = 0;
    for (int64_t j = threadIdx.x; j < r.D; j += blockDim.x) s += double(row[j]);
    block_sum2(s, unused);
    const T m = T(s / double(r.D));  // NaN for D = 0, as PyTorch
    double sq = 0;
    for (int64_t j = threadIdx.x; j < r.D; j += blockDim.x) {
      const double d = double(row[j] - m);
      sq += d * d;
    }
    block_sum2(sq, unused);  // every read of the row is done: y may overwrite it
    const T rs = T(1.0 / sqrt(sq / double(r.D) + eps));
    if (threadIdx.x == 0) mean[i] = m, rstd[i] = rs;
    T* out = y + i * r.D;
    for (int64_t j = threadIdx.x; j < r.D; j += blockDim.x) {
      const T v = w ? (row[j] - m) * rs * w[j] : (row[j] - m) * rs;
      out[j] = b ? v + b[j] : v;
    }
  }
}

/// Column sums of dy * xhat and dy over each chunk's rows: block b covers column block
/// b % col_blocks of chunk b / col_blocks, a thread per column.
template <class T>
__global__ void param_partials_kernel(Rows r, int64_t rows_per_chunk, int64_t chunks, const T* x, const T* dy,
                                      const T* mean, const T* rstd, double* partial) {
  const int64_t col_blocks = (r.D + blockDim.x - 1) / blockDim.x;
  for (int64_t blk = blockIdx.x; blk < col_blocks * chunks; blk += gridDim.x) {
    const int64_t chunk = blk / col_blocks, j = (blk % col_blocks) * blockDim.x + threadIdx.x;
    if (j >= r.D) continue;
    const int64_t lo = chunk * rows_per_chunk, hi = min(r.R, lo + rows_per_chunk);
    double sw = 0, sb = 0;
    for (int64_t i = lo; i < hi; ++i) {
      const T g = dy[i * r.D + j];
      sw += double(g * ((x[i * r.D + j] - mean[i]) * rstd[i]));
      sb += double(g);
    }
    partial[2 * chunk * r.D + j] = sw;
    partial[(2 * chunk + 1) * r.D + j] = sb;
  }
}

template <class T>
__global__ void param_grads_kernel(Rows r, int64_t chunks, const double* partial, T* dw, T* db) {
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < r.D; j += int64_t(gridDim.x) * blockDim.x) {
    double sw = 0, sb = 0;
    for (int64_t k = 0; k < chunks; ++k) sw += partial[2 * k * r.D + j], sb += partial[(2 * k + 1) * r.D + j];
    dw[j] = T(sw), db[j] = T(sb);
  }
}

template <class T>
__global__ void input_grad_kernel(Rows r, const T* x, const T* dy, const T* mean, const T* rstd, const T* w, T* dx) {
  for (int64_t i = blockIdx.x; i < r.R; i += gridDim.x) {
    const T *xr = x + i * r.D, *dyr = dy + i * r.D;
    const T m = mean[i], rs = rstd[i];
    double sg = 0, sgx = 0;
    for (int64_t j = threadIdx.x; j < r.D; j += blockDim.x) {
      const T g = w ? dyr[j] * w[j] : dyr[j];
      sg += double(g), sgx += double(g * ((xr[j] - m) * rs));
    }
    block_sum2(sg, sgx);  // every read of the row is done: dx may overwrite x or dy
    const T a = T(sg / double(r.D)), c = T(sgx / double(r.D));
    T* out = dx + i * r.D;
    for (int64_t j = threadIdx.x; j < r.D; j += blockDim.x) {
      const T g = w ? dyr[j] * w[j] : dyr[j];
      out[j] = rs * (g - a - (xr[j] - m) * rs * c);
    }
  }
}

unsigned row_grid(const Rows& r) { return unsigned(std::min<int64_t>(r.R, 65535)); }
constexpr size_t kRowShared = 2 * kRowThreads * sizeof(double);

template <class T>
void forward(const KernelCall& c) {
  const Rows r = rows_of(c.in[0].shape(), c.attrs.i("dims"));
  if (r.R == 0) return;
  auto in = [&](size_t i) { return c.in.size() > i ? static_cast<const T*>(c.in[i].raw()) : nullptr; };
  launch(forward_kernel<T>, row_grid(r), kRowThreads, kRowShared, stream_of(c), "layer_norm", r, in(0), in(1), in(2),
         c.attrs.f("eps"), static_cast<T*>(c.out[0].raw()), static_cast<T*>(c.out[1].raw()),
         static_cast<T*>(c.out[2].raw()));
}

template <class T>
void backward(const KernelCall& c) {
  const Rows r = rows_of(c.in[0].shape(), c.attrs.i("dims"));
  const cudaStream_t s = stream_of(c);
  auto in = [&](size_t i) { return c.in.size() > i ? static_cast<const T*>(c.in[i].raw()) : nullptr; };
  if (in(4) && r.D > 0) {  // the weight gradients first: dx may overwrite x or dy
    const int64_t chunks = chunks_of(r);
    LOOM_CHECK(c.workspace_bytes >= size_t(2 * chunks * r.D) * sizeof(double), c.op, " '", c.node,
               "': workspace too small");
    double* partial = static_cast<double*>(c.workspace);
    const int64_t blocks = (r.D + kThreads - 1) / kThreads * chunks;
    if (blocks > 0)
      launch(param_partials_kernel<T>, unsigned(std::min<int64_t>(blocks, 65535)), kThreads, 0, s,
             "layer_norm_grad weight sums", r, chunk_rows(r), chunks, in(0), in(1), in(2), in(3), partial);
    launch(param_grads_kernel<T>, grid_for(r.D), kThreads, 0, s, "layer_norm_grad weight gradients", r, chunks,
           static_cast<const double*>(partial), static_cast<T*>(c.out[1].raw()), static_cast<T*>(c.out[2].raw()));
  }
  if (r.R == 0 || r.D == 0) return;
  launch(input_grad_kernel<T>, row_grid(r), kRowThreads, kRowShared, s, "layer_norm_grad", r, in(0), in(1), in(2),
         in(3), in(4), static_cast<T*>(c.out[0].raw()));
}

const bool registered = [] {
  register_kernel("layer_norm", DeviceKind::cuda, FloatTypes::dtypes(),
                  {[](const KernelCall& c) {
                     use_device(c.ctx.device);
                     dispatch_among(FloatTypes{}, c.out[0].dtype(), [&]<class T>() { forward<T>(c); });
                   },
                   true});
  KernelInfo bwd{[](const KernelCall& c) {
                   use_device(c.ctx.device);
                   dispatch_among(FloatTypes{}, c.out[0].dtype(), [&]<class T>() { backward<T>(c); });
                 },
                 true};
  bwd.workspace = &workspace;
  register_kernel("layer_norm_grad", DeviceKind::cuda, FloatTypes::dtypes(), bwd);
  return true;
}();

}  // namespace
}  // namespace loom::cuda
