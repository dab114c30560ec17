// batch_norm and batch_norm_grad on the CPU.
//
// x [N, C, ...] is seen as N rows of L = C * inner values (inner: the
// positions per channel). Every loop runs along a row with per-column
// coefficient arrays (a channel's value repeated over its inner positions),
// so it vectorizes the same for a 28x28 map and for a 1x1 one, and
// per-column sums over the rows need no horizontal reductions:
//
//   forward:  1 pass: per-column sums of x - x[0] and its square (the shift
//             keeps one pass exact), combined per channel in double;
//             1 pass: y = relu?((x - mean) * scale + bias)
//   backward: 1 pass: per-column sums of g and g * (x - mean), g being dy
//             masked by the ReLU (recomputed from x, as the forward did);
//             1 pass: dx = k * (g + k2 * (x - mean) + k0)
//
// Column sums run in parallel over column blocks (each block is summed by
// one task, in row order: deterministic), the element-wise passes over rows.
// The coefficient and sum arrays live in the node's planned workspace.

#include <cmath>

#include "core/kernel.hpp"
#include "core/parallel.hpp"
#include "kernels/cpu/simd.hpp"

namespace loom::cpu {
namespace {

struct Rows {
  int64_t N, C, inner;
  int64_t L() const { return C * inner; }
};
Rows rows_of(const Shape& s) {
  int64_t inner = 1;
  for (size_t i = 2; i < s.size(); ++i) inner *= s[i];
  return {s[0], s[1], inner};
}

/// Workspace arrays (elements of T) of a node: `count` arrays of L values.
constexpr int64_t kArrays = 6;
size_t workspace(const WorkspaceQuery& q) {
  const Rows r = rows_of(q.in[0]);
  return size_t(kArrays * r.L()) * dtype_size(q.dtype);
}

/// Runs f(lo, hi) over column blocks of [0, L), in parallel.
template <class F>
void for_columns(const Rows& r, F&& f) {
  const int64_t grain = std::max<int64_t>(256, 65536 / std::max<int64_t>(1, r.N));
  parallel_for(r.L(), grain, f);
}

/// Runs f(row) for every row, in parallel.
template <class F>
void for_rows(const Rows& r, F&& f) {
  parallel_for(r.N, std::max<int64_t>(1, 32768 / std::max<int64_t>(1, r.L())), [&](int64_t lo, int64_t hi) {
    for (int64_t n = lo; n < hi; ++n) f(n);
  });
}

// ---- the loops (one row of columns [lo, hi) at a time; cloned per instruction set)

template <class T>
LOOM_CPU_CLONES void sum_shifted(const T* __restrict x, const T* __restrict shift, T* __restrict s1, T* __restrict s2,
                             int64_t lo, int64_t hi) {
  for (int64_t j = lo; j < hi; ++j) {
    const T d = x[j] - shift[j];
    s1[j] += d;
    s2[j] += d * d;
  }
}

// normalize and input_grad may write over x (and dy): OpDef::inplace; no __restrict there.
template <bool Relu, class T>
LOOM_CPU_CLONES void normalize(const T* x, T* y, const T* __restrict m, const T* __restrict s,
                           const T* __restrict b, int64_t L) {
  for (int64_t j = 0; j < L; ++j) {
    const T v = (x[j] - m[j]) * s[j] + b[j];
    y[j] = Relu && v < T(0) ? T(0) : v;  // a NaN stays NaN (PyTorch's relu)
  }
}

/// dy, or 0 where the ReLU clamped the forward value (its input (x - m) * s + b <= 0): a NaN
/// input lets dy through, as PyTorch's threshold_backward (y <= 0 ? 0 : dy) on relu's NaN.
/// Written as a select, not a branch: the mask is data, so the loops vectorize.
template <bool Relu, class T>
inline T masked(T dy, T xc, T s, T b) {
  if constexpr (Relu)
    return xc * s + b <= T(0) ? T(0) : dy;
  else
    return dy;
}

template <bool Relu, class T>
LOOM_CPU_CLONES void sum_grads(const T* __restrict x, const T* __restrict dy, const T* __restrict m, const T* __restrict s,
                           const T* __restrict b, T* __restrict sg, T* __restrict sgx, int64_t lo, int64_t hi) {
  for (int64_t j = lo; j < hi; ++j) {
    const T xc = x[j] - m[j];
    const T g = masked<Relu>(dy[j], xc, s[j], b[j]);
    sg[j] += g;
    sgx[j] += g * xc;
  }
}

template <bool Relu, class T>
LOOM_CPU_CLONES void input_grad(const T* x, const T* dy, T* dx, const T* __restrict m,
                            const T* __restrict s, const T* __restrict b, const T* __restrict k, const T* __restrict k2,
                            const T* __restrict k0, int64_t L) {
  for (int64_t j = 0; j < L; ++j) {
    const T xc = x[j] - m[j];
    dx[j] = k[j] * (masked<Relu>(dy[j], xc, s[j], b[j]) + k2[j] * xc + k0[j]);
  }
}

/// Per-channel scale from the statistics as stored in T, so forward and
/// backward recompute the same ReLU mask.
template <class T>
double invstd_of(T var, double eps) {
  return 1.0 / std::sqrt(double(var) + eps);
}

template <class T>
T* array(const KernelCall& c, const Rows& r, int64_t i) {
  LOOM_CHECK(c.workspace_bytes >= size_t(kArrays * r.L()) * sizeof(T), c.op, " '", c.node, "': workspace too small");
  return static_cast<T*>(c.workspace) + i * r.L();
}

template <class T>
void forward(const KernelCall& c) {
  const Rows r = rows_of(c.in[0].shape());
  const T* x = static_cast<const T*>(c.in[0].raw());
  const T* w = static_cast<const T*>(c.in[1].raw());
  const T* bias = static_cast<const T*>(c.in[2].raw());
  T* y = static_cast<T*>(c.out[0].raw());
  T* mean = static_cast<T*>(c.out[1].raw());
  T* var = static_cast<T*>(c.out[2].raw());
  const double eps = c.attrs.f("eps");
  const bool relu = c.attrs.get_or("relu", false);
  if (r.N == 0 || r.inner == 0) {  // no values: NaN statistics (as PyTorch), nothing to normalize
    std::fill(mean, mean + r.C, T(NAN));
    std::fill(var, var + r.C, T(NAN));
    return;
  }
  const int64_t L = r.L();
  T *s1 = array<T>(c, r, 0), *s2 = array<T>(c, r, 1), *shift = array<T>(c, r, 5);
  // Shift by row 0 where it is finite: an infinite shift would turn the column's sum into
  // inf - inf = NaN, where PyTorch's plain sum gives the infinity.
  for (int64_t j = 0; j < L; ++j) shift[j] = std::isfinite(x[j]) ? x[j] : T(0);
  for_columns(r, [&](int64_t lo, int64_t hi) {
    std::fill(s1 + lo, s1 + hi, T(0));
    std::fill(s2 + lo, s2 + hi, T(0));
    for (int64_t n = 0; n < r.N; ++n) sum_shifted(x + n * L, shift, s1, s2, lo, hi);
  });
  // Per channel, in double: sum x = sum_j (s1 + N K_j); sum (x - mu)^2 = sum_j s2 + 2 (K_j - mu) s1 + N (K_j - mu)^2.
  const double M = double(r.N * r.inner), Nd = double(r.N);
  T *me = array<T>(c, r, 2), *se = array<T>(c, r, 3), *be = array<T>(c, r, 4);
  for (int64_t ch = 0; ch < r.C; ++ch) {
    const int64_t j0 = ch * r.inner, j1 = j0 + r.inner;
    double total = 0;
    for (int64_t j = j0; j < j1; ++j) total += double(s1[j]) + Nd * double(shift[j]);
    const double mu = total / M;
    double sq = 0;
    for (int64_t j = j0; j < j1; ++j) {
      const double k = double(shift[j]) - mu;
      sq += double(s2[j]) + 2 * k * double(s1[j]) + Nd * k * k;
    }
    mean[ch] = T(mu);
    var[ch] = T(sq / M < 0 ? 0.0 : sq / M);  // rounding can go below 0; NaN stays NaN (std::max would drop it)
    const double scale = double(w[ch]) * invstd_of(var[ch], eps);
    std::fill(me + j0, me + j1, mean[ch]);
    std::fill(se + j0, se + j1, T(scale));
    std::fill(be + j0, be + j1, bias[ch]);
  }
  for_rows(r, [&](int64_t n) {
    if (relu)
      normalize<true>(x + n * L, y + n * L, me, se, be, L);
    else
      normalize<false>(x + n * L, y + n * L, me, se, be, L);
  });
}

template <class T>
void backward(const KernelCall& c) {
  const Rows r = rows_of(c.in[0].shape());
  const T* x = static_cast<const T*>(c.in[0].raw());
  const T* dy = static_cast<const T*>(c.in[1].raw());
  const T* w = static_cast<const T*>(c.in[2].raw());
  const T* bias = static_cast<const T*>(c.in[3].raw());
  const T* mean = static_cast<const T*>(c.in[4].raw());
  const T* var = static_cast<const T*>(c.in[5].raw());
  T* dx = static_cast<T*>(c.out[0].raw());
  T* dw = static_cast<T*>(c.out[1].raw());
  T* db = static_cast<T*>(c.out[2].raw());
  const double eps = c.attrs.f("eps");
  const bool relu = c.attrs.get_or("relu", false);
  const int64_t L = r.L();
  if (L == 0 || r.N == 0) {
    std::fill(dw, dw + r.C, T(0));
    std::fill(db, db + r.C, T(0));
    return;
  }
  T *me = array<T>(c, r, 0), *se = array<T>(c, r, 1), *be = array<T>(c, r, 2);
  T *sg = array<T>(c, r, 3), *sgx = array<T>(c, r, 4);
  for (int64_t ch = 0; ch < r.C; ++ch) {
    const int64_t j0 = ch * r.inner, j1 = j0 + r.inner;
    std::fill(me + j0, me + j1, mean[ch]);
    std::fill(se + j0, se + j1, T(double(w[ch]) * invstd_of(var[ch], eps)));
    std::fill(be + j0, be + j1, bias[ch]);
  }
  for_columns(r, [&](int64_t lo, int64_t hi) {
    std::fill(sg + lo, sg + hi, T(0));
    std::fill(sgx + lo, sgx + hi, T(0));
    for (int64_t n = 0; n < r.N; ++n) {
      if (relu)
        sum_grads<true>(x + n * L, dy + n * L, me, se, be, sg, sgx, lo, hi);
      else
        sum_grads<false>(x + n * L, dy + n * L, me, se, be, sg, sgx, lo, hi);
    }
  });
  // dx = w invstd (g - db/M - xhat dw/M) = k (g + k2 (x - mean) + k0), per channel, with
  // k = w invstd factored out as PyTorch does: an infinite weight gives dx = +-inf, not
  // inf - inf = NaN. The sums arrays are done with, so k, k2, k0 reuse them and the last array.
  T *ke = sg, *k2e = sgx, *k0e = array<T>(c, r, 5);
  const double M = double(r.N * r.inner);
  for (int64_t ch = 0; ch < r.C; ++ch) {
    const int64_t j0 = ch * r.inner, j1 = j0 + r.inner;
    double dbias = 0, dcent = 0;
    for (int64_t j = j0; j < j1; ++j) dbias += double(sg[j]), dcent += double(sgx[j]);
    const double invstd = invstd_of(var[ch], eps), dweight = dcent * invstd;
    db[ch] = T(dbias);
    dw[ch] = T(dweight);
    const double k = double(w[ch]) * invstd, k2 = -dweight / M * invstd, k0 = -dbias / M;
    std::fill(ke + j0, ke + j1, T(k));
    std::fill(k2e + j0, k2e + j1, T(k2));
    std::fill(k0e + j0, k0e + j1, T(k0));
  }
  for_rows(r, [&](int64_t n) {
    if (relu)
      input_grad<true>(x + n * L, dy + n * L, dx + n * L, me, se, be, ke, k2e, k0e, L);
    else
      input_grad<false>(x + n * L, dy + n * L, dx + n * L, me, se, be, ke, k2e, k0e, L);
  });
}

const bool registered = [] {
  KernelInfo fwd{
      [](const KernelCall& c) { dispatch_among(FloatTypes{}, c.out[0].dtype(), [&]<class T>() { forward<T>(c); }); },
      true};
  fwd.workspace = &workspace;
  register_kernel("batch_norm", DeviceKind::cpu, FloatTypes::dtypes(), fwd);
  KernelInfo bwd{
      [](const KernelCall& c) { dispatch_among(FloatTypes{}, c.out[0].dtype(), [&]<class T>() { backward<T>(c); }); },
      true};
  bwd.workspace = &workspace;
  register_kernel("batch_norm_grad", DeviceKind::cpu, FloatTypes::dtypes(), bwd);
  return true;
}();

}  // namespace
}  // namespace loom::cpu
