// Fused scaled dot-product attention on the CPU, flash-attention style (the
// op and its semantics: ops/attention.cpp).
//
// Forward: one task per (batch, query tile of kBq rows). For each key tile of
// kBk keys it computes the scores S = scale Q K^T (one small GEMM), applies
// the masks, and folds the tile into a running row maximum m, denominator l
// and output accumulator O with an online softmax (O and l rescaled by
// exp(m_old - m_new)); a second GEMM adds P V. The [Tq, Tk] matrix never
// exists: memory is O(T) per call, plus the per-thread tiles.
// Backward: one task per (batch, group of key tiles). For each key tile and
// each query tile it recomputes P = exp(S - lse) from the saved logsumexp and
// accumulates dV += P'^T dO, dS = P' * (dO V^T) - P * D, dK += scale dS^T Q
// and dQ += scale dS K, with D = rowsum(dO * O) - dlse. Each task owns its
// rows of dK and dV; dQ goes straight to the output when a batch is one task,
// or to one partial per group, summed in group order afterwards. Groups and
// tiles depend on the shapes only, so results do not depend on the thread
// count.
//
// The tile products are the kernel's own GEMM (gemm_tile: 4 x 128-byte
// register blocks), compiled per instruction set like the row work
// (kernels/cpu/simd.hpp). It reads its left operand through any strides and
// its right operand by rows, so inputs are used in place (views included)
// and only K^T and V^T tiles, or a right operand without unit column stride,
// are packed. On this project's machines OpenBLAS' run-time detection may
// fall back to its SSE3 kernels (a virtual CPU it does not recognize); these
// tiles run at the width the CPU has either way. Tiles live in the kernel's
// workspace, one slot per thread of the session's arena, so nothing is
// allocated while it runs.

#include <algorithm>
#include <cstring>

#include "core/kernel.hpp"
#include "core/philox.hpp"
#include "kernels/cpu/loops.hpp"
#include "kernels/cpu/random.hpp"
#include "kernels/cpu/simd.hpp"

namespace loom::cpu {
namespace {

namespace sd = simd;

constexpr int64_t kBq = 64, kBk = 128;
/// Backward: a batch's key tiles are split into groups until there are this many tasks.
constexpr int64_t kTargetTasks = 16;

// ---------------------------------------------------------------- geometry

/// A [batch..., rows, cols] operand: element (b, r, c) at base + offset(b) + r rs + c cs.
template <class T>
struct Operand {
  const T* base = nullptr;
  std::vector<int64_t> bstride;  // per batch dim of the call (0: broadcast)
  int64_t rs = 0, cs = 0;
};

struct Geometry {
  Shape batch;  // q's leading dims
  int64_t nb = 1, tq = 0, tk = 0, d = 0, dv = 0;
  double scale = 1, p = 0;
  bool causal = false;
  int mask = -1, rng = -1, dlse = -1;  // input slots (ops/attention.cpp's Slots)
  uint64_t key = 0, run = 0;
  /// Element offset of linear batch index b for the given batch strides.
  int64_t offset(int64_t b, const std::vector<int64_t>& bs) const {
    int64_t off = 0;
    for (size_t i = batch.size(); i-- > 0;) {
      off += (b % batch[i]) * bs[i];
      b /= batch[i];
    }
    return off;
  }
};

Geometry geometry(const Attrs& a, std::span<const Shape> in, bool backward) {
  Geometry g;
  const Shape& q = in[0];
  const size_t nd = q.size();
  g.batch.assign(q.begin(), q.end() - 2);
  g.nb = numel(g.batch);
  g.tq = q[nd - 2], g.d = q[nd - 1], g.tk = in[1][nd - 2], g.dv = in[2][nd - 1];
  g.scale = a.f("scale"), g.causal = a.get_or<bool>("causal", false), g.p = a.get_or<double>("dropout", 0.0);
  int i = backward ? 6 : 3;
  if (backward && a.get_or<bool>("dlse", false)) g.dlse = i++;
  if (a.get_or<bool>("mask", false)) g.mask = i++;
  if (g.p > 0) g.rng = i++;
  return g;
}

/// Operand a as a [batch..., rows, cols] array; a may have fewer dims and
/// broadcast (a mask of shape [tk] or [], say).
template <class T>
Operand<T> operand(const NDArray& a, const Geometry& g, int64_t rows, int64_t cols) {
  Operand<T> o;
  o.base = static_cast<const T*>(a.raw());
  Shape full = g.batch;
  full.push_back(rows);
  full.push_back(cols);
  std::vector<int64_t> st = broadcast_strides(a.layout(), full);  // masks broadcast
  o.bstride.assign(st.begin(), st.end() - 2);
  o.rs = st[st.size() - 2], o.cs = st.back();
  return o;
}

int64_t tiles(int64_t n, int64_t b) { return (n + b - 1) / b; }

/// Backward key-tile groups per batch (shapes only).
int64_t groups(const Geometry& g) {
  return std::clamp<int64_t>((kTargetTasks + g.nb - 1) / std::max<int64_t>(g.nb, 1), 1, std::max<int64_t>(1, tiles(g.tk, kBk)));
}

// ---------------------------------------------------------------- workspace

/// One thread's tiles, in elements of T (each buffer padded to 64 bytes).
struct Slot {
  int64_t s, p2, dp, q, k, v, kt, vt, dO, o, rows, u, words, total;
};
size_t pad(int64_t n, size_t size) { return (size_t(n) * size + 63) / 64 * 64 / size; }

Slot slot_layout(const Geometry& g, size_t size) {
  Slot s{};
  int64_t at = 0;
  auto take = [&](int64_t n) {
    int64_t r = at;
    at += int64_t(pad(n, size));
    return r;
  };
  s.s = take(kBq * kBk);
  s.p2 = take(kBq * kBk);
  s.dp = take(kBq * kBk);
  s.q = take(kBq * g.d);
  s.k = take(kBk * g.d);
  s.v = take(kBk * g.dv);
  s.kt = take(kBk * g.d);
  s.vt = take(kBk * g.dv);
  s.dO = take(kBq * g.dv);
  s.o = take(kBq * g.dv);
  s.rows = take(4 * kBq);  // m, l, corr (forward); lse, D (backward)
  s.u = take(kBk);
  s.words = take(int64_t((4 * (kBk / 4 + 2) * sizeof(uint32_t) + size - 1) / size));  // Philox blocks
  s.total = at;
  return s;
}

size_t partial_elems(const Geometry& g) { return groups(g) > 1 ? size_t(g.nb * groups(g) * g.tq * g.d) : 0; }

// The workspace: the backward's dQ partials (if any), then one slot per thread.
size_t workspace(const WorkspaceQuery& w, bool backward) {
  const Geometry g = geometry(w.attrs, w.in, backward);
  const size_t size = dtype_size(w.dtype);
  const size_t slots = size_t(std::max(1, w.threads));
  return ((backward ? partial_elems(g) : 0) + slots * size_t(slot_layout(g, size).total)) * size;
}
size_t forward_workspace(const WorkspaceQuery& w) { return workspace(w, false); }
size_t backward_workspace(const WorkspaceQuery& w) { return workspace(w, true); }

/// This thread's slot of the workspace (`skip` elements of partials first).
/// Threads outside an arena (ThreadSanitizer builds run kernels inline on
/// plain threads) use slot 0.
template <class T>
T* slot_of(const KernelCall& c, const Slot& s, size_t skip) {
  const int idx = std::max(0, oneapi::tbb::this_task_arena::current_thread_index());
  const size_t need = (skip + size_t(idx + 1) * size_t(s.total)) * sizeof(T);
  LOOM_ASSERT(need <= c.workspace_bytes, c.op, ": thread slot ", idx, " beyond the workspace");
  return static_cast<T*>(c.workspace) + skip + size_t(idx) * size_t(s.total);
}

// ---------------------------------------------------------------- GEMM on tiles

/// A strided matrix view: element (r, c) at p[r * rs + c * cs].
template <class T>
struct Mat {
  const T* p;
  int64_t rs, cs;
  Mat<T> t() const { return {p, cs, rs}; }  // the transpose, as a view
};

/// Rows [r0, r0 + n) of operand o in batch b, as a view.
template <class T>
Mat<T> rows_of(const Operand<T>& o, const Geometry& g, int64_t b, int64_t r0) {
  return {o.base + g.offset(b, o.bstride) + r0 * o.rs, o.rs, o.cs};
}

/// m as a row-major matrix (unit column stride): in place, or packed into scratch (ld = cols).
template <class T>
Mat<T> by_rows(Mat<T> m, int64_t rows, int64_t cols, T* scratch) {
  if (m.cs == 1 || cols <= 1) return m;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) scratch[r * cols + c] = m.p[r * m.rs + c * m.cs];
  return {scratch, std::max<int64_t>(cols, 1), 1};
}

/// The transpose of m (rows x cols) packed row-major into scratch: cols x rows, ld = ld.
template <class T>
Mat<T> transposed(Mat<T> m, int64_t rows, int64_t cols, T* scratch, int64_t ld) {
  for (int64_t c = 0; c < cols; ++c)
    for (int64_t r = 0; r < rows; ++r) scratch[c * ld + r] = m.p[r * m.rs + c * m.cs];
  return {scratch, ld, 1};
}

/// C[m x n] = beta C + alpha A[m x k] B[k x n]; A any strides, B with unit
/// column stride, C row-major (ldc). Register blocks of kMr rows x 128 bytes
/// of columns, accumulated over k (beta = 0 never reads C).
template <class T>
LOOM_CPU_CLONES void gemm_tile(int64_t m, int64_t n, int64_t k, T alpha, Mat<T> a, Mat<T> b, T beta, T* c,
                               int64_t ldc) {
  constexpr int64_t kMr = 4, kNr = 128 / sizeof(T);
  for (int64_t i0 = 0; i0 < m; i0 += kMr)
    for (int64_t j0 = 0; j0 < n; j0 += kNr) {
      const int64_t mr = std::min(kMr, m - i0), nr = std::min(kNr, n - j0);
      T acc[kMr][kNr] = {};
      const T* ai = a.p + i0 * a.rs;
      if (mr == kMr && nr == kNr) {
        for (int64_t l = 0; l < k; ++l) {
          const T* bl = b.p + l * b.rs + j0;
          T av[kMr];
          for (int64_t r = 0; r < kMr; ++r) av[r] = ai[r * a.rs + l * a.cs];
          for (int64_t r = 0; r < kMr; ++r)
            for (int64_t j = 0; j < kNr; ++j) acc[r][j] += av[r] * bl[j];
        }
      } else {
        for (int64_t l = 0; l < k; ++l)
          for (int64_t r = 0; r < mr; ++r) {
            const T av = ai[r * a.rs + l * a.cs];
            const T* bl = b.p + l * b.rs + j0;
            for (int64_t j = 0; j < nr; ++j) acc[r][j] += av * bl[j];
          }
      }
      for (int64_t r = 0; r < mr; ++r) {
        T* cr = c + (i0 + r) * ldc + j0;
        if (beta == T(0))
          for (int64_t j = 0; j < nr; ++j) cr[j] = alpha * acc[r][j];
        else
          for (int64_t j = 0; j < nr; ++j) cr[j] = beta * cr[j] + alpha * acc[r][j];
      }
    }
}

// ---------------------------------------------------------------- masks and dropout

/// Adds the mask and the causal -inf to an nq x nk score tile at (q0, k0) of
/// batch b whose element (i, j) is at s[i * si + j * sj].
template <class T>
void mask_tile(T* s, int64_t si, int64_t sj, const Geometry& g, const Operand<T>* fmask, const Operand<bool>* bmask,
               int64_t b, int64_t q0, int64_t nq, int64_t k0, int64_t nk) {
  if (fmask) {
    const T* m = fmask->base + g.offset(b, fmask->bstride);
    for (int64_t i = 0; i < nq; ++i)
      for (int64_t j = 0; j < nk; ++j) s[i * si + j * sj] += m[(q0 + i) * fmask->rs + (k0 + j) * fmask->cs];
  }
  if (bmask) {
    const bool* m = bmask->base + g.offset(b, bmask->bstride);
    for (int64_t i = 0; i < nq; ++i)
      for (int64_t j = 0; j < nk; ++j)
        if (!m[(q0 + i) * bmask->rs + (k0 + j) * bmask->cs]) s[i * si + j * sj] = sd::kNegInf<T>;
  }
  if (g.causal)
    for (int64_t i = 0; i < nq; ++i)
      for (int64_t j = std::max<int64_t>(0, q0 + i + 1 - k0); j < nk; ++j) s[i * si + j * sj] = sd::kNegInf<T>;
}

/// Uniform numbers of weights (i, k0 .. k0 + n) of batch b (philox::uniform_f32
/// of their linear index); `words` holds n / 4 + 2 blocks of scratch.
void uniforms(const Geometry& g, int64_t b, int64_t i, int64_t k0, int64_t n, float* u, uint32_t* words) {
  const uint64_t first = uint64_t((b * g.tq + i) * g.tk + k0);
  const uint64_t block0 = first / 4;
  philox_blocks(g.key, g.run, block0, int64_t((first + uint64_t(n) + 3) / 4 - block0), words);
  const uint32_t* w = words + (first - block0 * 4);
  for (int64_t j = 0; j < n; ++j) u[j] = philox::to_unit_float(w[j]);
}

// ---------------------------------------------------------------- row work (vectorized, per ISA)

/// Online softmax of a transposed score tile in place: st[j * ld + i] is
/// score (i, j) for nq queries i and nk keys j, vectorized across queries.
/// Updates each query's maximum m and denominator l, turns the scores into
/// exp(s - m), and leaves in corr the factor its output row must be scaled by.
template <class T>
LOOM_CPU_CLONES void online_cols(T* st, int64_t ld, int64_t nk, int64_t nq, T* m, T* l, T* corr) {
  T mt[kBq], sum[kBq];
  for (int64_t i = 0; i < nq; ++i) mt[i] = m[i], sum[i] = 0;
  for (int64_t j = 0; j < nk; ++j)
    for (int64_t i = 0; i < nq; ++i) mt[i] = st[j * ld + i] > mt[i] ? st[j * ld + i] : mt[i];
  for (int64_t i = 0; i < nq; ++i) {
    mt[i] = mt[i] == sd::kNegInf<T> ? T(0) : mt[i];  // every key so far masked: exp(-inf - 0) = 0
    corr[i] = sd::exp(m[i] - mt[i]);
  }
  for (int64_t j = 0; j < nk; ++j)
    for (int64_t i = 0; i < nq; ++i) {
      const T e = sd::exp(st[j * ld + i] - mt[i]);
      st[j * ld + i] = e;
      sum[i] += e;
    }
  for (int64_t i = 0; i < nq; ++i) {
    l[i] = l[i] * corr[i] + sum[i];
    m[i] = l[i] == T(0) ? sd::kNegInf<T> : mt[i];
  }
}

/// p[j] = exp(s[j] - lse) in place (zeros for a fully masked row, lse = -inf).
template <class T>
LOOM_CPU_CLONES void probs_row(T* s, int64_t n, T lse) {
  if (lse == sd::kNegInf<T>) {
    std::fill(s, s + n, T(0));
    return;
  }
  for (int64_t j = 0; j < n; ++j) s[j] = sd::exp(s[j] - lse);
}

/// Dropout: p2[j] = u[j] >= rate ? p[j] / (1 - rate) : 0 (the draw compared in float32 on every device).
template <class T>
LOOM_CPU_CLONES void drop_row(const T* p, const float* u, T* p2, int64_t n, double rate) {
  const T inv = T(1 / (1 - rate));
  const float r = float(rate);
  for (int64_t j = 0; j < n; ++j) p2[j] = u[j] >= r ? p[j] * inv : T(0);
}

/// dS in place of dP: ds[j] = p2[j] * dp[j] - p[j] * D.
template <class T>
LOOM_CPU_CLONES void ds_row(const T* p, const T* p2, T* dp, int64_t n, T D) {
  for (int64_t j = 0; j < n; ++j) dp[j] = p2[j] * dp[j] - p[j] * D;
}

template <class T>
LOOM_CPU_CLONES void scale_row(T* x, int64_t n, T f) {
  for (int64_t j = 0; j < n; ++j) x[j] *= f;
}

// ---------------------------------------------------------------- the call's inputs

template <class T>
struct Inputs {
  Geometry g;
  Operand<T> q, k, v;
  std::optional<Operand<T>> fmask;
  std::optional<Operand<bool>> bmask;
};

template <class T>
Inputs<T> inputs_of(const KernelCall& c, bool backward) {
  std::vector<Shape> shapes;
  for (const NDArray& a : c.in) shapes.push_back(a.shape());
  Inputs<T> in{geometry(c.attrs, shapes, backward), {}, {}, {}, {}, {}};
  const Geometry& g = in.g;
  in.q = operand<T>(c.in[0], g, g.tq, g.d), in.k = operand<T>(c.in[1], g, g.tk, g.d);
  in.v = operand<T>(c.in[2], g, g.tk, g.dv);
  if (g.mask >= 0) {
    const NDArray& m = c.in[size_t(g.mask)];
    if (m.dtype() == boolean) in.bmask = operand<bool>(m, g, g.tq, g.tk);
    else in.fmask = operand<T>(m, g, g.tq, g.tk);
  }
  if (g.rng >= 0) {
    const NDArray& key = c.in[size_t(g.rng)];  // any layout (a view may be reversed)
    const int64_t* k = static_cast<const int64_t*>(key.raw());
    in.g.key = uint64_t(k[0]), in.g.run = uint64_t(k[key.strides()[0]]);
  }
  return in;
}

/// Key tiles a query tile [q0, q0 + nq) sees (causal: none past its last row).
int64_t key_tiles_for(const Geometry& g, int64_t q0, int64_t nq) {
  const int64_t all = tiles(g.tk, kBk);
  return g.causal ? std::min(all, tiles(std::min(g.tk, q0 + nq), kBk)) : all;
}

// ---------------------------------------------------------------- forward

template <class T>
void forward_tile(const KernelCall& c, const Inputs<T>& in, const Slot& sl, int64_t b, int64_t q0) {
  const Geometry& g = in.g;
  const int64_t nq = std::min(kBq, g.tq - q0);
  T* w = slot_of<T>(c, sl, 0);
  T *st = w + sl.s, *acc = w + sl.o, *m = w + sl.rows, *l = m + kBq, *corr = l + kBq;
  float* u = reinterpret_cast<float*>(w + sl.u);
  T* p2 = w + sl.p2;
  // Scores transposed, S^T = scale K Q^T: Q^T is packed once per query tile
  // and K is read in place; the softmax then runs across the queries.
  const Mat<T> qt = transposed(rows_of(in.q, g, b, q0), nq, g.d, w + sl.q, kBq);
  std::fill(acc, acc + nq * g.dv, T(0));
  std::fill(m, m + nq, sd::kNegInf<T>);
  std::fill(l, l + nq, T(0));
  for (int64_t t = 0, n_kt = key_tiles_for(g, q0, nq); t < n_kt; ++t) {
    const int64_t k0 = t * kBk, nk = std::min(kBk, g.tk - k0);
    const Mat<T> vm = by_rows(rows_of(in.v, g, b, k0), nk, g.dv, w + sl.v);
    gemm_tile<T>(nk, nq, g.d, T(g.scale), rows_of(in.k, g, b, k0), qt, T(0), st, kBq);
    mask_tile(st, 1, kBq, g, in.fmask ? &*in.fmask : nullptr, in.bmask ? &*in.bmask : nullptr, b, q0, nq, k0, nk);
    online_cols(st, kBq, nk, nq, m, l, corr);
    for (int64_t i = 0; i < nq; ++i)
      if (corr[i] != T(1)) scale_row(acc + i * g.dv, g.dv, corr[i]);
    Mat<T> p{st, 1, kBq};  // P = (S^T)^T
    if (g.p > 0) {
      const T inv = T(1 / (1 - g.p));
      for (int64_t i = 0; i < nq; ++i) {
        uniforms(g, b, q0 + i, k0, nk, u, reinterpret_cast<uint32_t*>(w + sl.words));
        for (int64_t j = 0; j < nk; ++j) p2[j * kBq + i] = u[j] >= float(g.p) ? st[j * kBq + i] * inv : T(0);
      }
      p.p = p2;
    }
    gemm_tile<T>(nq, g.dv, nk, T(1), p, vm, T(1), acc, g.dv);  // O += P V
  }
  T* out = static_cast<T*>(c.out[0].raw()) + (b * g.tq + q0) * g.dv;
  T* lse = static_cast<T*>(c.out[1].raw()) + b * g.tq + q0;
  for (int64_t i = 0; i < nq; ++i) {
    const bool empty = l[i] == T(0);  // every key masked
    const T inv = empty ? T(0) : T(1) / l[i];
    for (int64_t d = 0; d < g.dv; ++d) out[i * g.dv + d] = acc[i * g.dv + d] * inv;
    lse[i] = empty ? sd::kNegInf<T> : m[i] + std::log(l[i]);
  }
}

template <class T>
void forward(const KernelCall& c) {
  const Inputs<T> in = inputs_of<T>(c, false);
  const Geometry& g = in.g;
  const Slot sl = slot_layout(g, sizeof(T));
  const int64_t qt = tiles(g.tq, kBq);
  parallel_for(g.nb * qt, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t) forward_tile(c, in, sl, t / qt, (t % qt) * kBq);
  });
}

// ---------------------------------------------------------------- backward

/// Rows of the outputs (compact) and of the gradient inputs.
template <class T>
struct Grads {
  Operand<T> out, lse, dout, dlse;
  bool has_dlse = false;
  T *dq, *dk, *dv;
  T* partial = nullptr;  // [nb, groups, tq, d] when groups > 1
  int64_t groups = 1;
};

/// One key tile of batch b against every query tile that sees it.
template <class T>
void backward_key_tile(const KernelCall& c, const Inputs<T>& in, const Grads<T>& gr, const Slot& sl, int64_t b,
                       int64_t k0, T* dq) {
  const Geometry& g = in.g;
  const int64_t nk = std::min(kBk, g.tk - k0);
  T* w = slot_of<T>(c, sl, partial_elems(g));
  T *s = w + sl.s, *p2 = w + sl.p2, *dp = w + sl.dp, *lse = w + sl.rows, *D = lse + kBq;
  float* u = reinterpret_cast<float*>(w + sl.u);
  const Mat<T> kv = rows_of(in.k, g, b, k0), vv = rows_of(in.v, g, b, k0);
  const Mat<T> kt = transposed(kv, nk, g.d, w + sl.kt, kBk), vt = transposed(vv, nk, g.dv, w + sl.vt, kBk);
  const Mat<T> km = by_rows(kv, nk, g.d, w + sl.k);
  T* dk = gr.dk + (b * g.tk + k0) * g.d;
  T* dv = gr.dv + (b * g.tk + k0) * g.dv;
  std::fill(dk, dk + nk * g.d, T(0));
  std::fill(dv, dv + nk * g.dv, T(0));
  const int64_t first_qt = g.causal ? std::min(k0, g.tq) / kBq : 0;  // causal: rows before k0 see none of these keys
  for (int64_t q0 = first_qt * kBq; q0 < g.tq; q0 += kBq) {
    const int64_t nq = std::min(kBq, g.tq - q0);
    const Mat<T> qm = by_rows(rows_of(in.q, g, b, q0), nq, g.d, w + sl.q);
    const Mat<T> dom = by_rows(rows_of(gr.dout, g, b, q0), nq, g.dv, w + sl.dO);
    const T* o = gr.out.base + g.offset(b, gr.out.bstride) + q0 * gr.out.rs;
    const T* d_o = gr.dout.base + g.offset(b, gr.dout.bstride) + q0 * gr.dout.rs;
    const T* ls = gr.lse.base + g.offset(b, gr.lse.bstride) + q0 * gr.lse.cs;
    const T* dl = gr.has_dlse ? gr.dlse.base + g.offset(b, gr.dlse.bstride) + q0 * gr.dlse.cs : nullptr;
    for (int64_t i = 0; i < nq; ++i) {
      T acc = 0;
      for (int64_t d = 0; d < g.dv; ++d) acc += d_o[i * gr.dout.rs + d * gr.dout.cs] * o[i * gr.out.rs + d * gr.out.cs];
      lse[i] = ls[i * gr.lse.cs];
      D[i] = acc - (dl ? dl[i * gr.dlse.cs] : T(0));
    }
    gemm_tile<T>(nq, nk, g.d, T(g.scale), qm, kt, T(0), s, kBk);
    mask_tile(s, kBk, 1, g, in.fmask ? &*in.fmask : nullptr, in.bmask ? &*in.bmask : nullptr, b, q0, nq, k0, nk);
    for (int64_t i = 0; i < nq; ++i) probs_row(s + i * kBk, nk, lse[i]);
    T* pd = s;  // the weights after dropout
    if (g.p > 0) {
      for (int64_t i = 0; i < nq; ++i) {
        uniforms(g, b, q0 + i, k0, nk, u, reinterpret_cast<uint32_t*>(w + sl.words));
        drop_row(s + i * kBk, u, p2 + i * kBk, nk, g.p);
      }
      pd = p2;
    }
    gemm_tile<T>(nk, g.dv, nq, T(1), Mat<T>{pd, kBk, 1}.t(), dom, T(1), dv, g.dv);  // dV += P'^T dO
    gemm_tile<T>(nq, nk, g.dv, T(1), dom, vt, T(0), dp, kBk);                       // dP' = dO V^T
    for (int64_t i = 0; i < nq; ++i) ds_row(s + i * kBk, pd + i * kBk, dp + i * kBk, nk, D[i]);
    gemm_tile<T>(nk, g.d, nq, T(g.scale), Mat<T>{dp, kBk, 1}.t(), qm, T(1), dk, g.d);    // dK += scale dS^T Q
    gemm_tile<T>(nq, g.d, nk, T(g.scale), Mat<T>{dp, kBk, 1}, km, T(1), dq + q0 * g.d, g.d);  // dQ += scale dS K
  }
}

template <class T>
void backward(const KernelCall& c) {
  const Inputs<T> in = inputs_of<T>(c, true);
  const Geometry& g = in.g;
  const Slot sl = slot_layout(g, sizeof(T));
  Grads<T> gr;
  gr.out = operand<T>(c.in[3], g, g.tq, g.dv), gr.dout = operand<T>(c.in[5], g, g.tq, g.dv);
  auto vec = [&](const NDArray& a) {  // lse and dlse: [batch..., tq]
    Operand<T> o;
    o.base = static_cast<const T*>(a.raw());
    o.bstride.assign(a.strides().begin(), a.strides().end() - 1);
    o.cs = a.strides().back();
    return o;
  };
  gr.lse = vec(c.in[4]);
  if (g.dlse >= 0) gr.dlse = vec(c.in[size_t(g.dlse)]), gr.has_dlse = true;
  gr.dq = static_cast<T*>(c.out[0].raw()), gr.dk = static_cast<T*>(c.out[1].raw()), gr.dv = static_cast<T*>(c.out[2].raw());
  gr.groups = groups(g);
  const int64_t kt = tiles(g.tk, kBk), per_group = tiles(kt, gr.groups);
  if (gr.groups > 1) gr.partial = static_cast<T*>(c.workspace);
  parallel_for(g.nb * gr.groups, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t b = t / gr.groups, grp = t % gr.groups;
      T* dq = gr.groups > 1 ? gr.partial + t * g.tq * g.d : gr.dq + b * g.tq * g.d;
      std::fill(dq, dq + g.tq * g.d, T(0));
      for (int64_t k = grp * per_group; k < std::min(kt, (grp + 1) * per_group); ++k)
        backward_key_tile(c, in, gr, sl, b, k * kBk, dq);
    }
  });
  if (gr.groups > 1) {
    const int64_t n = g.tq * g.d;
    parallel_for(g.nb * n, kGrain, [&](int64_t lo, int64_t hi) {
      for (int64_t e = lo; e < hi; ++e) {
        const int64_t b = e / n, i = e % n;
        T acc = 0;
        for (int64_t grp = 0; grp < gr.groups; ++grp) acc += gr.partial[(b * gr.groups + grp) * n + i];
        gr.dq[e] = acc;
      }
    });
  }
}

template <bool Backward>
void kernel(const KernelCall& c) {
  dispatch_among(FloatTypes{}, c.out[0].dtype(), [&]<class T>() {
    if constexpr (Backward) backward<T>(c);
    else forward<T>(c);
  });
}

// random_key: {mix(seed, node), run counter}.
void random_key_kernel(const KernelCall& c) {
  int64_t* k = static_cast<int64_t*>(c.out[0].raw());
  k[0] = int64_t(philox::mix_key(c.ctx.seed, c.node_key));
  k[1] = int64_t(c.ctx.run_counter);
}

// attention_keep: element n of the scores is kept when its Philox number is >= dropout (as the kernels above draw).
void keep_kernel(const KernelCall& c) {
  const int64_t* k = static_cast<const int64_t*>(c.in[0].raw());
  const uint64_t key = uint64_t(k[0]), run = uint64_t(k[c.in[0].strides()[0]]);
  const double p = c.attrs.f("dropout");
  dispatch_among(FloatTypes{}, c.out[0].dtype(), [&]<class T>() {
    T* y = static_cast<T*>(c.out[0].raw());
    const T kept = T(1 / (1 - p));
    parallel_for(c.out[0].numel(), 4096, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) y[i] = philox::uniform_f32(key, run, uint64_t(i)) >= float(p) ? kept : T(0);
    });
  });
}

const bool registered = [] {
  const auto f = FloatTypes::dtypes();
  register_kernel("attention_keep", DeviceKind::cpu, f, {.fn = &keep_kernel});
  register_kernel("attention", DeviceKind::cpu, f, {.fn = &kernel<false>, .workspace = &forward_workspace});
  register_kernel("attention_grad", DeviceKind::cpu, f, {.fn = &kernel<true>, .workspace = &backward_workspace});
  register_kernel("random_key", DeviceKind::cpu, {int64}, {.fn = &random_key_kernel});
  return true;
}();

}  // namespace
}  // namespace loom::cpu
