// layer_norm and layer_norm_grad on the CPU.
//
// x is seen as R rows of D values. Each row is handled while it is in cache:
//   forward:  mean, then the sum of squared deviations (two passes: exact
//             for rows far from 0), then y = (x - mean) * rstd (* w (+ b));
//   backward: sums of g = dy (* w) and g * xhat over the row, then
//             dx = rstd * (g - mean(g) - xhat * mean(g * xhat)).
// Row sums keep simd::kLanes partials (the loops vectorize; the order
// depends on D only). Rows run in parallel; the weight and bias gradients
// (column sums over the rows) are summed per chunk of rows into the node's
// planned workspace and the chunks combined in order: chunk boundaries depend
// on the shape only, so results do not depend on the thread count.

#include <cmath>

#include "core/kernel.hpp"
#include "core/parallel.hpp"
#include "kernels/cpu/simd.hpp"

namespace loom::cpu {
namespace {

using simd::kLanes;

struct Rows {
  int64_t R, D;
};
Rows rows_of(const Shape& x, int64_t dims) {
  const size_t k = size_t(dims);
  return {numel(Shape(x.begin(), x.end() - k)), numel(Shape(x.end() - k, x.end()))};
}

/// Rows per chunk of the weight gradients' partial sums: at most 64 chunks,
/// each of at least ~16K values.
int64_t chunk_rows(const Rows& r) {
  const int64_t by_count = (r.R + 63) / 64, by_size = (16384 + r.D - 1) / std::max<int64_t>(1, r.D);
  return std::max<int64_t>(1, std::max(by_count, by_size));
}
int64_t chunks_of(const Rows& r) { return (r.R + chunk_rows(r) - 1) / chunk_rows(r); }

/// Backward with weights: a dweight and a dbias partial (D values each) per chunk.
size_t workspace(const WorkspaceQuery& q) {
  if (q.in.size() < 5) return 0;
  const Rows r = rows_of(q.in[0], q.attrs.i("dims"));
  return size_t(2 * chunks_of(r) * r.D) * dtype_size(q.dtype);
}

template <class T>
LOOM_SIMD_INLINE T lane_sum(const T* x, int64_t n) {
  T lane[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int k = 0; k < kLanes; ++k) lane[k] += x[j + k];
  T s = simd::fold(lane);
  for (; j < n; ++j) s += x[j];
  return s;
}

template <class T>
LOOM_SIMD_INLINE T lane_sum_sq(const T* x, T m, int64_t n) {
  T lane[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int k = 0; k < kLanes; ++k) lane[k] += (x[j + k] - m) * (x[j + k] - m);
  T s = simd::fold(lane);
  for (; j < n; ++j) s += (x[j] - m) * (x[j] - m);
  return s;
}

// y may overwrite x (OpDef::inplace): no __restrict on them.
template <class T>
LOOM_CPU_CLONES void forward_row(const T* x, T* y, const T* __restrict w, const T* __restrict b, int64_t D, double eps,
                                 T& mean, T& rstd) {
  const T m = lane_sum(x, D) / T(D);  // NaN for D = 0, as PyTorch
  const T r = T(1.0 / std::sqrt(double(lane_sum_sq(x, m, D)) / double(D) + eps));
  mean = m, rstd = r;
  if (b)
    for (int64_t j = 0; j < D; ++j) y[j] = (x[j] - m) * r * w[j] + b[j];
  else if (w)
    for (int64_t j = 0; j < D; ++j) y[j] = (x[j] - m) * r * w[j];
  else
    for (int64_t j = 0; j < D; ++j) y[j] = (x[j] - m) * r;
}

/// g[j] = dy[j] (* w[j]): the gradient reaching the normalized value.
template <bool Affine, class T>
LOOM_SIMD_INLINE T grad_at(const T* dy, const T* w, int64_t j) {
  if constexpr (Affine)
    return dy[j] * w[j];
  else
    return dy[j];
}

/// sum_j g[j] * xhat[j] (Centered; xhat = (x - m) * r, per element as the reference, so that an
/// infinite r gives NaN, not inf), or sum_j g[j]. One accumulator array per loop: with two in one
/// loop GCC shuffled the lanes through the stack instead of keeping two vector registers.
template <bool Affine, bool Centered, class T>
LOOM_SIMD_INLINE T lane_sum_grad(const T* dy, const T* w, const T* x, T m, T r, int64_t n) {
  auto term = [&](int64_t j) {
    return Centered ? grad_at<Affine>(dy, w, j) * ((x[j] - m) * r) : grad_at<Affine>(dy, w, j);
  };
  T lane[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int k = 0; k < kLanes; ++k) lane[k] += term(j + k);
  T s = simd::fold(lane);
  for (; j < n; ++j) s += term(j);
  return s;
}

/// One row's dx (which may overwrite x or dy); with weights, adds its dweight and dbias terms to pw, pb.
template <bool Affine, class T>
LOOM_CPU_CLONES void backward_row(const T* x, const T* dy, T* dx, const T* __restrict w, T* __restrict pw,
                                  T* __restrict pb, int64_t D, T m, T r) {
  const T sg = lane_sum_grad<Affine, false>(dy, w, x, m, r, D);
  const T sgx = lane_sum_grad<Affine, true>(dy, w, x, m, r, D);
  int64_t j = 0;
  if constexpr (Affine)
    for (j = 0; j < D; ++j) {
      pw[j] += dy[j] * ((x[j] - m) * r);
      pb[j] += dy[j];
    }
  const T a = sg / T(D), c = sgx / T(D);
  for (j = 0; j < D; ++j) dx[j] = r * (grad_at<Affine>(dy, w, j) - a - (x[j] - m) * r * c);
}

template <class T>
void forward(const KernelCall& c) {
  const Rows r = rows_of(c.in[0].shape(), c.attrs.i("dims"));
  const T* x = static_cast<const T*>(c.in[0].raw());
  const T* w = c.in.size() >= 2 ? static_cast<const T*>(c.in[1].raw()) : nullptr;
  const T* b = c.in.size() == 3 ? static_cast<const T*>(c.in[2].raw()) : nullptr;
  T* y = static_cast<T*>(c.out[0].raw());
  T* mean = static_cast<T*>(c.out[1].raw());
  T* rstd = static_cast<T*>(c.out[2].raw());
  const double eps = c.attrs.f("eps");
  parallel_for(r.R, std::max<int64_t>(1, 32768 / std::max<int64_t>(1, r.D)), [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) forward_row(x + i * r.D, y + i * r.D, w, b, r.D, eps, mean[i], rstd[i]);
  });
}

template <class T>
void backward(const KernelCall& c) {
  const Rows r = rows_of(c.in[0].shape(), c.attrs.i("dims"));
  const T* x = static_cast<const T*>(c.in[0].raw());
  const T* dy = static_cast<const T*>(c.in[1].raw());
  const T* mean = static_cast<const T*>(c.in[2].raw());
  const T* rstd = static_cast<const T*>(c.in[3].raw());
  const T* w = c.in.size() == 5 ? static_cast<const T*>(c.in[4].raw()) : nullptr;
  T* dx = static_cast<T*>(c.out[0].raw());
  const int64_t chunks = chunks_of(r), D = r.D;
  T* partial = static_cast<T*>(c.workspace);  // [chunks][2][D] when w is set
  if (w)
    LOOM_CHECK(c.workspace_bytes >= size_t(2 * chunks * D) * sizeof(T), c.op, " '", c.node, "': workspace too small");
  parallel_chunks(r.R, chunk_rows(r), [&](int64_t chunk, int64_t lo, int64_t hi) {
    T* pw = w ? partial + 2 * chunk * D : nullptr;
    T* pb = w ? pw + D : nullptr;
    if (w) std::fill(pw, pw + 2 * D, T(0));
    for (int64_t i = lo; i < hi; ++i) {
      if (w)
        backward_row<true>(x + i * D, dy + i * D, dx + i * D, w, pw, pb, D, mean[i], rstd[i]);
      else
        backward_row<false>(x + i * D, dy + i * D, dx + i * D, w, pw, pb, D, mean[i], rstd[i]);
    }
  });
  if (!w) return;
  T* dw = static_cast<T*>(c.out[1].raw());
  T* db = static_cast<T*>(c.out[2].raw());
  for (int64_t j = 0; j < D; ++j) {
    double sw = 0, sb = 0;
    for (int64_t k = 0; k < chunks; ++k) sw += double(partial[2 * k * D + j]), sb += double(partial[(2 * k + 1) * D + j]);
    dw[j] = T(sw), db[j] = T(sb);
  }
}

const bool registered = [] {
  register_kernel("layer_norm", DeviceKind::cpu, FloatTypes::dtypes(),
                  {[](const KernelCall& c) {
                     dispatch_among(FloatTypes{}, c.out[0].dtype(), [&]<class T>() { forward<T>(c); });
                   },
                   true});
  KernelInfo bwd{
      [](const KernelCall& c) { dispatch_among(FloatTypes{}, c.out[0].dtype(), [&]<class T>() { backward<T>(c); }); },
      true};
  bwd.workspace = &workspace;
  register_kernel("layer_norm_grad", DeviceKind::cpu, FloatTypes::dtypes(), bwd);
  return true;
}();

}  // namespace
}  // namespace loom::cpu
