// conv2d, conv2d_backward_data and conv2d_backward_filter on the CPU: im2col
// and GEMM through OpenBLAS (single-threaded calls, parallel over chunks of
// images in TBB tasks), for float32 and float64.
//
// A chunk of nb images is lowered to one column matrix col [Cg*taps, nb*P]
// (P = OH*OW output positions per image, image j at columns j*P..), so small
// feature maps (a 4x4 map has P = 16) still give GEMMs wide enough to run
// near peak; a chunk of one image writes straight into the output. Kernel taps
// that only ever read padding are dropped from the lowering (a 3x3 kernel on
// a 1x1 map keeps its centre: 9x fewer FLOPs); where the live taps of a
// single output position read the whole image, the images are the column
// matrix's rows as stored, with no copy and no scratch. The bias + ReLU
// epilogue runs on each output row while it is still in cache.
//
// Scratch (column matrices, gathered weights, per-task partial weight
// gradients) is the node's planned workspace: no allocation while running.
// The chunking depends on the shapes and the thread count only, so a session
// configuration gives the same bits on every run.

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/kernel.hpp"
#include "core/parallel.hpp"
#include "kernels/conv_geometry.hpp"
#include "kernels/cpu/conv_onednn.hpp"

namespace loom::cpu {
namespace {

using conv::Geometry;

void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
          float beta, float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(m), int(n), int(k),
              1.0f, a, int(lda), b, int(ldb), beta, c, int(ldc));
}
void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const double* a, int64_t lda, const double* b, int64_t ldb,
          double beta, double* c, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(m), int(n), int(k),
              1.0, a, int(lda), b, int(ldb), beta, c, int(ldc));
}

// ---------------------------------------------------------------- the lowering

/// How a node's work is split and what scratch it needs (elements of T).
struct Lowering {
  Geometry g;
  std::vector<int64_t> rows, cols;  // live kernel rows and columns
  bool all_taps = true;             // no tap dropped: the weight is used as stored
  bool direct = false;              // 1x1, stride 1, no padding: x is its own column matrix
  // One output position whose live taps read each pixel once (a 3x3 kernel on a
  // 1x1 map, stride 2 on 2x2): the column matrix is x, one image per row, so
  // the GEMMs read x, dy, y and dx as [images, channels] matrices, no scratch.
  bool x_rows = false;
  int64_t kd = 0;                   // rows of the column matrix: Cg * live taps
  int64_t nb = 1, chunks = 1, tasks = 1;
  int64_t wbuf = 0, col = 0, tmp = 0, partial = 0;  // scratch sizes (elements)

  int64_t cols_per_chunk() const { return nb * g.P(); }
  int64_t chunk_begin(int64_t c) const { return c * nb; }
  int64_t chunk_end(int64_t c) const { return std::min(g.N, (c + 1) * nb); }
  /// Chunks [lo, hi) of task t (a static split: deterministic per thread count).
  std::pair<int64_t, int64_t> task_chunks(int64_t t) const { return {t * chunks / tasks, (t + 1) * chunks / tasks}; }
  size_t bytes(size_t itemsize) const { return size_t(wbuf + tasks * (col + tmp) + partial) * itemsize; }
};

using onednn::Pass;

/// Columns per chunk the GEMMs aim for: wide enough to run near peak, and a
/// column matrix that stays in L2 for the usual channel counts.
constexpr int64_t kTargetColumns = 1024;

Lowering lower(const Geometry& g, Pass pass, int threads) {
  Lowering L;
  L.g = g;
  L.rows = conv::live_taps(g.R, g.OH, g.H, g.sh, g.pt, g.dh);
  L.cols = conv::live_taps(g.S, g.OW, g.W, g.sw, g.pl, g.dw);
  L.all_taps = int64_t(L.rows.size()) == g.R && int64_t(L.cols.size()) == g.S;
  L.kd = g.Cg() * int64_t(L.rows.size() * L.cols.size());
  const int64_t P = std::max<int64_t>(1, g.P());
  L.nb =
      P >= kTargetColumns / 2 ? 1 : std::min((kTargetColumns + P - 1) / P, (g.N + threads - 1) / std::max(threads, 1));
  L.nb = std::max<int64_t>(1, std::min(L.nb, g.N));
  L.chunks = g.N == 0 ? 0 : (g.N + L.nb - 1) / L.nb;
  L.tasks = std::max<int64_t>(1, std::min<int64_t>(L.chunks, threads));
  L.direct =
      g.R == 1 && g.S == 1 && g.sh == 1 && g.sw == 1 && g.pt == 0 && g.pl == 0 && g.pb == 0 && g.pr == 0 && L.nb == 1;
  L.x_rows = g.P() == 1 && int64_t(L.rows.size()) == g.H && int64_t(L.cols.size()) == g.W;
  const int64_t cols = L.nb * g.P();
  if (!L.all_taps && pass != Pass::backward_filter) L.wbuf = g.K * L.kd;
  if (!L.direct && !L.x_rows) L.col = L.kd * cols;
  if (L.nb > 1 && !L.x_rows) L.tmp = g.Kg() * cols;
  if (pass == Pass::backward_filter) L.partial = (L.tasks - 1) * g.K * L.kd;  // task 0 accumulates in dw
  return L;
}

/// Lowers image `x` (its group's first channel) into col rows (c, live r, live s), `ld` apart.
template <class T>
void im2col(const Lowering& L, const T* x, T* col, int64_t ld) {
  const Geometry& g = L.g;
  T* row = col;
  for (int64_t c = 0; c < g.Cg(); ++c)
    for (int64_t r : L.rows)
      for (int64_t s : L.cols) {
        const T* plane = x + c * g.HW();
        for (int64_t oh = 0; oh < g.OH; ++oh) {
          T* out = row + oh * g.OW;
          const int64_t ih = g.in_row(oh, r);
          if (ih < 0 || ih >= g.H) {
            std::fill(out, out + g.OW, T(0));
            continue;
          }
          const T* in = plane + ih * g.W;
          for (int64_t ow = 0; ow < g.OW; ++ow) {
            const int64_t iw = g.in_col(ow, s);
            out[ow] = iw >= 0 && iw < g.W ? in[iw] : T(0);
          }
        }
        row += ld;
      }
}

/// The adjoint of im2col: adds col rows back into image `dx` (its group's channels).
template <class T>
void col2im(const Lowering& L, const T* col, int64_t ld, T* dx) {
  const Geometry& g = L.g;
  const T* row = col;
  for (int64_t c = 0; c < g.Cg(); ++c)
    for (int64_t r : L.rows)
      for (int64_t s : L.cols) {
        T* plane = dx + c * g.HW();
        for (int64_t oh = 0; oh < g.OH; ++oh) {
          const int64_t ih = g.in_row(oh, r);
          if (ih < 0 || ih >= g.H) continue;
          const T* in = row + oh * g.OW;
          T* out = plane + ih * g.W;
          for (int64_t ow = 0; ow < g.OW; ++ow) {
            const int64_t iw = g.in_col(ow, s);
            if (iw >= 0 && iw < g.W) out[iw] += in[ow];
          }
        }
        row += ld;
      }
}

/// The weight as a [K, kd] matrix: as stored, or gathered to the live taps.
template <class T>
const T* weight_matrix(const Lowering& L, const T* w, T* buf) {
  if (L.all_taps) return w;
  const Geometry& g = L.g;
  T* out = buf;
  for (int64_t k = 0; k < g.K; ++k)
    for (int64_t c = 0; c < g.Cg(); ++c)
      for (int64_t r : L.rows)
        for (int64_t s : L.cols) *out++ = w[((k * g.Cg() + c) * g.R + r) * g.S + s];
  return buf;
}

/// Whether p[0, n) holds no inf or NaN: a branch-free OR that vectorizes (a cheap
/// first look before the per-channel scans below, which run only when it fails).
template <class T>
bool all_finite(const T* p, int64_t n) {
  int bad = 0;
  for (int64_t i = 0; i < n; ++i) bad |= !(std::fabs(p[i]) <= std::numeric_limits<T>::max());
  return !bad;
}

/// Output channels whose dropped taps (those that only ever read padding) hold a
/// non-finite weight. Padding is zeros that are multiplied (the reference, PyTorch's
/// im2col kernels): 0 * inf = NaN reaches every output of such a channel, though the
/// lowering never multiplies those taps. Reads the dropped weights only.
template <class T>
std::vector<int64_t> channels_with_nonfinite_dropped_taps(const Lowering& L, const T* w) {
  const Geometry& g = L.g;
  std::vector<int64_t> taps, out;  // dropped taps as offsets r * S + s
  for (int64_t r = 0; r < g.R; ++r)
    for (int64_t s = 0; s < g.S; ++s)
      if (!std::binary_search(L.rows.begin(), L.rows.end(), r) || !std::binary_search(L.cols.begin(), L.cols.end(), s))
        taps.push_back(r * g.S + s);
  const int64_t RS = g.R * g.S;
  if (taps.empty() || all_finite(w, g.K * g.Cg() * RS)) return out;
  for (int64_t k = 0; k < g.K; ++k) {
    bool nonfinite = false;
    for (int64_t c = 0; c < g.Cg(); ++c)
      for (int64_t t : taps) nonfinite |= !std::isfinite(w[(k * g.Cg() + c) * RS + t]);
    if (nonfinite) out.push_back(k);
  }
  return out;
}

/// Per-task scratch: the column matrix and the gathered-rows buffer.
template <class T>
struct Scratch {
  T* col;
  T* tmp;
};

template <class T>
struct Buffers {
  T* wbuf;
  std::vector<Scratch<T>> task;
  T* partial;
};

template <class T>
Buffers<T> carve(const Lowering& L, const KernelCall& c) {
  LOOM_CHECK(c.workspace_bytes >= L.bytes(sizeof(T)), c.op, " '", c.node, "': workspace of ", c.workspace_bytes,
             " bytes, need ", L.bytes(sizeof(T)));
  T* p = static_cast<T*>(c.workspace);
  Buffers<T> b;
  b.wbuf = p;
  p += L.wbuf;
  for (int64_t t = 0; t < L.tasks; ++t) {
    b.task.push_back({p, p + L.col});
    p += L.col + L.tmp;
  }
  b.partial = p;
  return b;
}

/// The lowering for this call: the kernel's thread count, lowered until the
/// planned workspace fits (an eager call may run with another thread count).
Lowering lower_for(const KernelCall& c, const Geometry& g, Pass pass, size_t itemsize) {
  int threads = current_threads();
  Lowering L = lower(g, pass, threads);
  while (threads > 1 && L.bytes(itemsize) > c.workspace_bytes) L = lower(g, pass, --threads);
  return L;
}

/// Runs f(task, chunk) for every chunk, tasks in parallel, chunks of a task in order.
template <class F>
void for_chunks(const Lowering& L, F&& f) {
  parallel_for(L.tasks, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t) {
      auto [c0, c1] = L.task_chunks(t);
      for (int64_t ch = c0; ch < c1; ++ch) f(t, ch);
    }
  });
}

// ---------------------------------------------------------------- forward

template <class T>
void epilogue(T* row, int64_t n, const T* bias, bool relu) {
  const T b = bias ? *bias : T(0);
  if (relu)  // a NaN stays NaN (PyTorch's relu)
    for (int64_t i = 0; i < n; ++i) row[i] = row[i] + b < T(0) ? T(0) : row[i] + b;
  else if (bias)
    for (int64_t i = 0; i < n; ++i) row[i] += b;
}

template <class T>
void forward(const KernelCall& c) {
  const Geometry g = conv::geometry(c.in[0].shape(), c.in[1].shape(), c.out[0].shape(), c.attrs);
  const Lowering L = lower_for(c, g, Pass::forward, sizeof(T));
  if (g.N == 0) return;
  const Buffers<T> buf = carve<T>(L, c);
  const T* x = static_cast<const T*>(c.in[0].raw());
  const T* wm = weight_matrix(L, static_cast<const T*>(c.in[1].raw()), buf.wbuf);
  const T* bias = c.in.size() > 2 ? static_cast<const T*>(c.in[2].raw()) : nullptr;
  const bool relu = c.attrs.get_or("relu", false);
  T* y = static_cast<T*>(c.out[0].raw());
  const int64_t P = g.P(), Kg = g.Kg(), Cg = g.Cg();
  for_chunks(L, [&](int64_t t, int64_t ch) {
    const Scratch<T>& s = buf.task[size_t(t)];
    const int64_t n0 = L.chunk_begin(ch), n1 = L.chunk_end(ch), ld = (n1 - n0) * P;
    for (int64_t gi = 0; gi < g.groups; ++gi) {
      const T* wg = wm + gi * Kg * L.kd;
      if (L.x_rows) {  // y[n, group] = x[n, group] @ wg^T
        T* out = y + n0 * g.K + gi * Kg;
        gemm(false, true, n1 - n0, Kg, L.kd, x + (n0 * g.C + gi * Cg) * g.HW(), g.C * g.HW(), wg, L.kd, T(0), out, g.K);
        for (int64_t n = 0; n < n1 - n0; ++n)
          for (int64_t k = 0; k < Kg; ++k) epilogue(out + n * g.K + k, 1, bias ? bias + gi * Kg + k : nullptr, relu);
        continue;
      }
      const T* col = s.col;
      if (L.direct)
        col = x + (n0 * g.C + gi * Cg) * P;
      else
        for (int64_t n = n0; n < n1; ++n) im2col(L, x + (n * g.C + gi * Cg) * g.HW(), s.col + (n - n0) * P, ld);
      if (L.nb == 1) {
        T* out = y + (n0 * g.K + gi * Kg) * P;
        gemm(false, false, Kg, P, L.kd, wg, L.kd, col, ld, T(0), out, P);
        for (int64_t k = 0; k < Kg; ++k) epilogue(out + k * P, P, bias ? bias + gi * Kg + k : nullptr, relu);
        continue;
      }
      gemm(false, false, Kg, ld, L.kd, wg, L.kd, col, ld, T(0), s.tmp, ld);
      for (int64_t n = n0; n < n1; ++n)
        for (int64_t k = 0; k < Kg; ++k) {
          T* out = y + (n * g.K + gi * Kg + k) * P;
          std::memcpy(out, s.tmp + k * ld + (n - n0) * P, size_t(P) * sizeof(T));
          epilogue(out, P, bias ? bias + gi * Kg + k : nullptr, relu);
        }
    }
  });
  for (int64_t k : channels_with_nonfinite_dropped_taps(L, static_cast<const T*>(c.in[1].raw())))
    for (int64_t n = 0; n < g.N; ++n) std::fill_n(y + (n * g.K + k) * P, P, T(NAN));
}

/// dy rows of group gi for images [n0, n1) as one [Kg, (n1-n0)*P] matrix:
/// in place for one image, else gathered into `tmp`.
template <class T>
const T* gather_dy(const Lowering& L, const T* dy, int64_t n0, int64_t n1, int64_t gi, T* tmp) {
  const Geometry& g = L.g;
  const int64_t P = g.P(), Kg = g.Kg(), ld = (n1 - n0) * P;
  if (n1 - n0 == 1) return dy + (n0 * g.K + gi * Kg) * P;
  for (int64_t n = n0; n < n1; ++n)
    for (int64_t k = 0; k < Kg; ++k)
      std::memcpy(tmp + k * ld + (n - n0) * P, dy + (n * g.K + gi * Kg + k) * P, size_t(P) * sizeof(T));
  return tmp;
}

// ---------------------------------------------------------------- backward data

template <class T>
void backward_data(const KernelCall& c) {
  // in: dy [N, K, OH, OW], w, x (shape only); out: dx [N, C, H, W]
  const Geometry g = conv::geometry(c.out[0].shape(), c.in[1].shape(), c.in[0].shape(), c.attrs);
  const Lowering L = lower_for(c, g, Pass::backward_data, sizeof(T));
  if (g.N == 0) return;
  const Buffers<T> buf = carve<T>(L, c);
  const T* dy = static_cast<const T*>(c.in[0].raw());
  const T* wm = weight_matrix(L, static_cast<const T*>(c.in[1].raw()), buf.wbuf);
  T* dx = static_cast<T*>(c.out[0].raw());
  const int64_t P = g.P(), Kg = g.Kg(), Cg = g.Cg();
  for_chunks(L, [&](int64_t t, int64_t ch) {
    const Scratch<T>& s = buf.task[size_t(t)];
    const int64_t n0 = L.chunk_begin(ch), n1 = L.chunk_end(ch), ld = (n1 - n0) * P;
    for (int64_t gi = 0; gi < g.groups; ++gi) {
      const T* wg = wm + gi * Kg * L.kd;
      if (L.x_rows) {  // dx[n, group] = dy[n, group] @ wg: each pixel written once
        gemm(false, false, n1 - n0, L.kd, Kg, dy + n0 * g.K + gi * Kg, g.K, wg, L.kd, T(0),
             dx + (n0 * g.C + gi * Cg) * g.HW(), g.C * g.HW());
        continue;
      }
      const T* d = gather_dy(L, dy, n0, n1, gi, s.tmp);
      if (L.direct) {  // dx[n, group] = wg^T @ dy[n, group]
        gemm(true, false, Cg, P, Kg, wg, L.kd, d, ld, T(0), dx + (n0 * g.C + gi * Cg) * P, P);
        continue;
      }
      gemm(true, false, L.kd, ld, Kg, wg, L.kd, d, ld, T(0), s.col, ld);
      for (int64_t n = n0; n < n1; ++n) {
        T* img = dx + (n * g.C + gi * Cg) * g.HW();
        std::fill(img, img + Cg * g.HW(), T(0));
        col2im(L, s.col + (n - n0) * P, ld, img);
      }
    }
  });
}

// ---------------------------------------------------------------- backward filter

/// Moves the [K, kd] weight gradient of the live taps, held in dw's first
/// K * kd elements, to its place in dw [K, Cg, R, S], from the last element
/// down: each goes to a position at or above its own, above every element not
/// yet moved. Dropped taps only ever multiply padding zeros: they get 0, or NaN
/// where dy holds a non-finite value (0 * inf), as the reference and PyTorch's
/// im2col kernels.
template <class T>
void spread_live_taps(const Lowering& L, const T* dy, T* dw) {
  const Geometry& g = L.g;
  const int64_t P = g.P(), RS = g.R * g.S;
  std::vector<char> live(size_t(RS), 0);
  for (int64_t r : L.rows)
    for (int64_t s : L.cols) live[size_t(r * g.S + s)] = 1;
  const bool finite = all_finite(dy, g.N * g.K * P);
  int64_t i = g.K * L.kd;  // elements not yet moved: [0, i)
  for (int64_t k = g.K; k-- > 0;) {
    bool nonfinite = false;
    for (int64_t n = 0; n < g.N && !finite && !nonfinite; ++n) nonfinite = !all_finite(dy + (n * g.K + k) * P, P);
    const T dropped = nonfinite ? T(NAN) : T(0);
    for (int64_t block = (k + 1) * g.Cg(); block-- > k * g.Cg();)  // one (k, c): its R * S taps
      for (int64_t tap = RS; tap-- > 0;) dw[block * RS + tap] = live[size_t(tap)] ? dw[--i] : dropped;
  }
}

template <class T>
void backward_filter(const KernelCall& c) {
  // in: x, dy, w (shape only); out: dw [K, Cg, R, S]
  const Geometry g = conv::geometry(c.in[0].shape(), c.out[0].shape(), c.in[1].shape(), c.attrs);
  const Lowering L = lower_for(c, g, Pass::backward_filter, sizeof(T));
  T* dw = static_cast<T*>(c.out[0].raw());
  const int64_t wsize = g.K * g.Cg() * g.R * g.S;
  if (g.N == 0 || L.chunks == 0) {
    std::fill(dw, dw + wsize, T(0));
    return;
  }
  const Buffers<T> buf = carve<T>(L, c);
  const T* x = static_cast<const T*>(c.in[0].raw());
  const T* dy = static_cast<const T*>(c.in[1].raw());
  const int64_t P = g.P(), Kg = g.Kg(), Cg = g.Cg(), slot = g.K * L.kd;
  // Task t accumulates into its own [K, kd] matrix, task 0 into dw itself (its
  // first K * kd elements when taps are dropped; spread_live_taps moves them).
  auto acc_of = [&](int64_t t) { return t == 0 ? dw : buf.partial + (t - 1) * slot; };
  parallel_for(L.tasks, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t) {
      const Scratch<T>& s = buf.task[size_t(t)];
      T* acc = acc_of(t);
      auto [c0, c1] = L.task_chunks(t);
      for (int64_t ch = c0; ch < c1; ++ch) {
        const int64_t n0 = L.chunk_begin(ch), n1 = L.chunk_end(ch), ld = (n1 - n0) * P;
        const T beta = ch == c0 ? T(0) : T(1);
        for (int64_t gi = 0; gi < g.groups; ++gi) {
          T* out = acc + gi * Kg * L.kd;
          if (L.x_rows) {  // dw[group] = dy[., group]^T @ x[., group]
            gemm(true, false, Kg, L.kd, n1 - n0, dy + n0 * g.K + gi * Kg, g.K, x + (n0 * g.C + gi * Cg) * g.HW(),
                 g.C * g.HW(), beta, out, L.kd);
            continue;
          }
          const T* col = s.col;
          if (L.direct)
            col = x + (n0 * g.C + gi * Cg) * P;
          else
            for (int64_t n = n0; n < n1; ++n) im2col(L, x + (n * g.C + gi * Cg) * g.HW(), s.col + (n - n0) * P, ld);
          const T* d = gather_dy(L, dy, n0, n1, gi, s.tmp);
          gemm(false, true, Kg, L.kd, ld, d, ld, col, ld, beta, out, L.kd);
        }
      }
    }
  });
  // Sum the tasks' matrices in task order.
  for (int64_t t = 1; t < L.tasks; ++t) {
    const T* p = acc_of(t);
    for (int64_t i = 0; i < slot; ++i) dw[i] += p[i];
  }
  if (!L.all_taps) spread_live_taps(L, dy, dw);
}

// ---------------------------------------------------------------- engines and registration

/// The convolution geometry of a conv2d, conv2d_backward_data or conv2d_backward_filter node.
Geometry geometry_of(Pass pass, std::span<const Shape> in, std::span<const Shape> out, const Attrs& a) {
  switch (pass) {
    case Pass::forward:
      return conv::geometry(in[0], in[1], out[0], a);
    case Pass::backward_data:
      return conv::geometry(out[0], in[1], in[0], a);
    case Pass::backward_filter:
      return conv::geometry(in[0], out[0], in[1], a);
  }
  return {};
}

/// oneDNN's direct kernels for float32 wherever it has a JIT implementation,
/// except where im2col measured faster (README, "Convolution kernels"):
/// - the weight gradient of layers whose kernels have taps that only see
///   padding, which im2col skips (ResNet9's 2x2 and 1x1 maps: 2-3x);
/// - every pass of layers with one output position whose taps read the
///   whole image (x_rows: plain GEMMs over the images, no reorder; ResNet9's
///   res2 forward 1.6x, its input gradient 2.5x, conv4's 3x, and a workspace
///   of the gathered weights only, where oneDNN's held 720,896 bytes);
/// - inputs of fewer than 4 channels (per group): oneDNN pads them to its
///   16-channel blocks. Its direct kernel still wins the forward and weight
///   gradient of strided first layers (ResNet9's 7x7 stride 4: 5x), not the
///   stride-1 ones nor any input gradient (3-8x slower).
/// float64, and shapes oneDNN has no JIT kernel for, use im2col.
std::shared_ptr<const onednn::Conv> onednn_conv(Pass pass, std::span<const Shape> in, std::span<const Shape> out,
                                                const Attrs& a, DType dtype, int threads, bool build) {
  if (dtype != float32) return nullptr;
  const Geometry g = geometry_of(pass, in, out, a);
  const Lowering L = lower(g, pass, 1);
  if (L.x_rows || (pass == Pass::backward_filter && !L.all_taps)) return nullptr;
  if (g.Cg() < 4 && (pass == Pass::backward_data || (g.sh == 1 && g.sw == 1))) return nullptr;
  return onednn::make(g, pass, pass == Pass::forward && in.size() > 2, a.get_or("relu", false), threads, build);
}

template <Pass P>
size_t workspace(const WorkspaceQuery& q) {
  if (auto c = onednn_conv(P, q.in, q.out, q.attrs, q.dtype, q.threads, false)) return onednn::workspace_bytes(*c);
  return lower(geometry_of(P, q.in, q.out, q.attrs), P, q.threads).bytes(dtype_size(q.dtype));
}

std::vector<Shape> shapes_of(std::span<const NDArray> a) {
  std::vector<Shape> s;
  for (const NDArray& x : a) s.push_back(x.shape());
  return s;
}

/// Builds the oneDNN primitives once per plan (null: im2col). Plans bind the
/// node's workspace first: the task count is the largest whose workspace fits
/// it. Eager calls (invoke, constant folding) prepare before they allocate the
/// workspace, for the calling arena's thread count: that count, then.
template <Pass P>
std::shared_ptr<const void> prepare(const KernelCall& c) {
  const std::vector<Shape> in = shapes_of(c.in), out = shapes_of(c.out);
  const bool planned = c.workspace != nullptr;
  for (int t = current_threads(); t >= 1; --t) {
    auto sized = onednn_conv(P, in, out, c.attrs, c.out[0].dtype(), t, false);
    if (!sized) return nullptr;
    if (!planned || onednn::workspace_bytes(*sized) <= c.workspace_bytes)
      return onednn_conv(P, in, out, c.attrs, c.out[0].dtype(), t, true);
  }
  return nullptr;
}

template <Pass P>
void kernel(const KernelCall& c) {
  if (c.state) return onednn::run(*static_cast<const onednn::Conv*>(c.state), c);
  dispatch_among(FloatTypes{}, c.out[0].dtype(), [&]<class T>() {
    if constexpr (P == Pass::forward)
      forward<T>(c);
    else if constexpr (P == Pass::backward_data)
      backward_data<T>(c);
    else
      backward_filter<T>(c);
  });
}

template <Pass P>
void register_pass(const char* op) {
  KernelInfo k{&kernel<P>, true, &prepare<P>};
  k.workspace = &workspace<P>;
  register_kernel(op, DeviceKind::cpu, FloatTypes::dtypes(), k);
}

const bool registered = [] {
  register_pass<Pass::forward>("conv2d");
  register_pass<Pass::backward_data>("conv2d_backward_data");
  register_pass<Pass::backward_filter>("conv2d_backward_filter");
  return true;
}();

}  // namespace
}  // namespace loom::cpu
