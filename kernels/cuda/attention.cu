// Fused scaled dot-product attention on CUDA, flash-attention style (the op:
// ops/attention.cpp; the CPU kernel, same algorithm: kernels/cpu/attention.cpp).
//
// Forward: a block per (batch, query tile of B rows). The query tile stays
// in shared memory; for each key tile the block loads K and V, computes the
// scores, folds them into the running maximum, denominator and output
// accumulator (online softmax), and never writes the [Tq, Tk] matrix.
// Backward, two kernels recomputing P = exp(S - lse) from the saved
// logsumexp: a block per (batch, key tile) accumulates dK and dV over the
// query tiles, and a block per (batch, query tile) accumulates dQ over the
// key tiles; neither needs atomics, so results are deterministic.
// Dropout draws the same Philox numbers as the CPU (core/philox.hpp).
//
// Plain FMA loops over shared memory (no tensor cores): correct and simple;
// B shrinks with the head dims to fit the tiles in 48 KiB of shared memory.
// Tiles that a warp reads down a column (K and V for scores, V for dP) are
// stored with an odd row stride (ld, ldv), so that the warp's rows fall in
// different banks: with the head dim's stride all rows share one bank.
// Every loop over tiles is grid-stride (the emulator shrinks grids).

#include "core/philox.hpp"
#include "kernels/cuda/common.cuh"

namespace loom::cuda {
namespace {

constexpr int kMaxBatchDims = 8;
constexpr int kBlock = 128;
constexpr size_t kSharedBytes = 48 * 1024;

__device__ __forceinline__ float ex(float x) { return expf(x); }
__device__ __forceinline__ double ex(double x) { return exp(x); }
__device__ __forceinline__ float lg(float x) { return logf(x); }
__device__ __forceinline__ double lg(double x) { return log(x); }
__host__ __device__ __forceinline__ int64_t lmin(int64_t a, int64_t b) { return a < b ? a : b; }

/// A [batch..., rows, cols] operand: element (b, r, c) at p + offset(b) + r rs + c cs.
struct Operand {
  const void* p = nullptr;
  int64_t bs[kMaxBatchDims] = {};
  int64_t rs = 0, cs = 0;
};

struct Geo {
  int nbd = 0;
  int64_t bshape[kMaxBatchDims] = {};
  int64_t nb = 1, tq = 0, tk = 0, d = 0, dv = 0, B = 32;
  int64_t ld = 1, ldv = 1;  // row strides of the shared Q, K (ld) and V, dO (ldv) tiles: d and dv made odd
  double scale = 1, p = 0;
  bool causal = false;
  int mask = 0;  // 0: none, 1: bool, 2: additive
  const int64_t* rng = nullptr;  // the dropout key on the device; kernels read it into key and run
  int64_t rng_stride = 1;
  uint64_t key = 0, run = 0;
  __host__ __device__ int64_t offset(int64_t b, const int64_t* bs) const {
    int64_t off = 0;
    for (int i = nbd - 1; i >= 0; --i) {
      off += (b % bshape[i]) * bs[i];
      b /= bshape[i];
    }
    return off;
  }
  __host__ __device__ int64_t q_tiles() const { return (tq + B - 1) / B; }
  __host__ __device__ int64_t k_tiles() const { return (tk + B - 1) / B; }
};

/// All the inputs of a call: q, k, v, mask, and (backward) out, lse, dout, dlse.
struct Args {
  Geo g;
  Operand q, k, v, m, out, lse, dout, dlse;
  bool has_dlse = false;
};

template <class T>
__device__ __forceinline__ T at(const Operand& o, const Geo& g, int64_t b, int64_t r, int64_t c) {
  return static_cast<const T*>(o.p)[g.offset(b, o.bs) + r * o.rs + c * o.cs];
}

/// Loads rows [r0, r0 + n) x cols of operand o (batch b) into s (row-major, row stride ld).
template <class T>
__device__ void load(T* s, const Operand& o, const Geo& g, int64_t b, int64_t r0, int64_t n, int64_t cols, int64_t ld) {
  for (int64_t e = threadIdx.x; e < n * cols; e += blockDim.x) {
    const int64_t r = e / cols, c = e - r * cols;
    s[r * ld + c] = at<T>(o, g, b, r0 + r, c);
  }
}

/// Score (i, j) of batch b from Q and K rows in shared memory, masked.
template <class T>
__device__ T score(const Args& a, const T* qs, const T* ks, int64_t b, int64_t qi, int64_t kj, int64_t i, int64_t j) {
  const Geo& g = a.g;
  T s = 0;
  for (int64_t d = 0; d < g.d; ++d) s += qs[i * g.ld + d] * ks[j * g.ld + d];
  s *= T(g.scale);
  if (g.mask == 2) s += at<T>(a.m, g, b, qi, kj);
  if ((g.mask == 1 && !at<bool>(a.m, g, b, qi, kj)) || (g.causal && kj > qi)) s = -T(INFINITY);
  return s;
}

/// keep / (1 - p) for weight (qi, kj) of batch b (1 without dropout).
template <class T>
__device__ T keep(const Geo& g, int64_t b, int64_t qi, int64_t kj) {
  if (g.p <= 0) return T(1);
  const uint64_t idx = uint64_t((b * g.tq + qi) * g.tk + kj);
  return philox::uniform_f32(g.key, g.run, idx) >= float(g.p) ? T(1 / (1 - g.p)) : T(0);
}

/// The dropout key from the device (a kernel's parameters are its own copy).
__device__ __forceinline__ void read_key(Geo& g) {
  if (g.rng) g.key = uint64_t(g.rng[0]), g.run = uint64_t(g.rng[g.rng_stride]);
}

// ---------------------------------------------------------------- forward

/// Shared memory of the forward for tile size B (elements of T).
int64_t forward_elems(int64_t B, const Geo& g) { return 2 * B * g.ld + B * g.ldv + B * g.dv + B * B + 3 * B; }

template <class T>
__global__ void forward_kernel(Args a, T* out, T* lse) {
  read_key(a.g);
  const Geo& g = a.g;
  const int64_t B = g.B;
  T* qs = dynamic_shared<T>();
  T *ks = qs + B * g.ld, *vs = ks + B * g.ld, *os = vs + B * g.ldv, *ss = os + B * g.dv;
  T *m = ss + B * B, *l = m + B, *corr = l + B;
  for (int64_t tile = blockIdx.x; tile < g.nb * g.q_tiles(); tile += gridDim.x) {
    const int64_t b = tile / g.q_tiles(), q0 = (tile % g.q_tiles()) * B, nq = lmin(B, g.tq - q0);
    load(qs, a.q, g, b, q0, nq, g.d, g.ld);
    for (int64_t e = threadIdx.x; e < nq * g.dv; e += blockDim.x) os[e] = 0;
    for (int64_t i = threadIdx.x; i < nq; i += blockDim.x) m[i] = -T(INFINITY), l[i] = 0;
    const int64_t n_kt = g.causal ? (lmin(g.tk, q0 + nq) + B - 1) / B : g.k_tiles();
    for (int64_t kt = 0; kt < n_kt; ++kt) {
      const int64_t k0 = kt * B, nk = lmin(B, g.tk - k0);
      __syncthreads();  // the previous tile's K, V and P are consumed
      load(ks, a.k, g, b, k0, nk, g.d, g.ld);
      load(vs, a.v, g, b, k0, nk, g.dv, g.ldv);
      __syncthreads();
      for (int64_t e = threadIdx.x; e < nq * nk; e += blockDim.x) {
        const int64_t i = e / nk, j = e % nk;
        ss[i * B + j] = score<T>(a, qs, ks, b, q0 + i, k0 + j, i, j);
      }
      __syncthreads();
      for (int64_t i = threadIdx.x; i < nq; i += blockDim.x) {  // online softmax, one thread per row
        T* row = ss + i * B;
        T mt = -T(INFINITY);
        for (int64_t j = 0; j < nk; ++j) mt = row[j] > mt ? row[j] : mt;
        const T mn = m[i] > mt ? m[i] : mt;
        if (mn == -T(INFINITY)) {  // every key so far masked
          for (int64_t j = 0; j < nk; ++j) row[j] = 0;
          corr[i] = 1;
          continue;
        }
        T s = 0;
        for (int64_t j = 0; j < nk; ++j) {
          const T e = ex(row[j] - mn);
          s += e;
          row[j] = e * keep<T>(g, b, q0 + i, k0 + j);
        }
        corr[i] = ex(m[i] - mn);
        l[i] = l[i] * corr[i] + s;
        m[i] = mn;
      }
      __syncthreads();
      for (int64_t e = threadIdx.x; e < nq * g.dv; e += blockDim.x) {
        const int64_t i = e / g.dv, d = e % g.dv;
        T acc = os[e] * corr[i];
        for (int64_t j = 0; j < nk; ++j) acc += ss[i * B + j] * vs[j * g.ldv + d];
        os[e] = acc;
      }
    }
    __syncthreads();
    for (int64_t e = threadIdx.x; e < nq * g.dv; e += blockDim.x) {
      const int64_t i = e / g.dv;
      out[(b * g.tq + q0) * g.dv + e] = l[i] == T(0) ? T(0) : os[e] / l[i];
    }
    for (int64_t i = threadIdx.x; i < nq; i += blockDim.x)
      lse[b * g.tq + q0 + i] = l[i] == T(0) ? -T(INFINITY) : m[i] + lg(l[i]);
    __syncthreads();
  }
}

// ---------------------------------------------------------------- backward

/// Shared memory of either backward kernel (elements of T).
int64_t backward_elems(int64_t B, const Geo& g) {
  return 2 * B * g.ld + 2 * B * g.ldv + B * g.d + B * g.dv + 3 * B * B + 2 * B;
}

/// Loads lse and D = dO . O - dlse of query rows [q0, q0 + nq).
template <class T>
__device__ void load_rows(const Args& a, int64_t b, int64_t q0, int64_t nq, T* lse, T* D) {
  const Geo& g = a.g;
  for (int64_t i = threadIdx.x; i < nq; i += blockDim.x) {
    T acc = 0;
    for (int64_t d = 0; d < g.dv; ++d) acc += at<T>(a.dout, g, b, q0 + i, d) * at<T>(a.out, g, b, q0 + i, d);
    lse[i] = at<T>(a.lse, g, b, q0 + i, 0);
    D[i] = acc - (a.has_dlse ? at<T>(a.dlse, g, b, q0 + i, 0) : T(0));
  }
}

/// P (pd: after dropout) and dS = pd * (dO V^T) - P * D of a (query tile, key tile) pair.
template <class T>
__device__ void tile_ds(const Args& a, int64_t b, int64_t q0, int64_t nq, int64_t k0, int64_t nk, const T* qs,
                        const T* ks, const T* vs, const T* dos, const T* lse, const T* D, T* p, T* pd, T* ds) {
  const Geo& g = a.g;
  const int64_t B = g.B;
  for (int64_t e = threadIdx.x; e < nq * nk; e += blockDim.x) {
    const int64_t i = e / nk, j = e % nk;
    const T pr = lse[i] == -T(INFINITY) ? T(0) : ex(score<T>(a, qs, ks, b, q0 + i, k0 + j, i, j) - lse[i]);
    const T pk = pr * keep<T>(g, b, q0 + i, k0 + j);
    T dp = 0;
    for (int64_t d = 0; d < g.dv; ++d) dp += dos[i * g.ldv + d] * vs[j * g.ldv + d];
    p[i * B + j] = pr;
    pd[i * B + j] = pk;
    ds[i * B + j] = pk * dp - pr * D[i];
  }
}

// A block per (batch, key tile): dK and dV.
template <class T>
__global__ void dkdv_kernel(Args a, T* dk, T* dv) {
  read_key(a.g);
  const Geo& g = a.g;
  const int64_t B = g.B;
  T* ks = dynamic_shared<T>();
  T *vs = ks + B * g.ld, *dks = vs + B * g.ldv, *dvs = dks + B * g.d, *qs = dvs + B * g.dv, *dos = qs + B * g.ld;
  T *p = dos + B * g.ldv, *pd = p + B * B, *ds = pd + B * B, *lse = ds + B * B, *D = lse + B;
  for (int64_t tile = blockIdx.x; tile < g.nb * g.k_tiles(); tile += gridDim.x) {
    const int64_t b = tile / g.k_tiles(), k0 = (tile % g.k_tiles()) * B, nk = lmin(B, g.tk - k0);
    load(ks, a.k, g, b, k0, nk, g.d, g.ld);
    load(vs, a.v, g, b, k0, nk, g.dv, g.ldv);
    for (int64_t e = threadIdx.x; e < nk * g.d; e += blockDim.x) dks[e] = 0;
    for (int64_t e = threadIdx.x; e < nk * g.dv; e += blockDim.x) dvs[e] = 0;
    const int64_t first = g.causal ? lmin(k0, g.tq) / B * B : 0;  // causal: earlier rows see none of these keys
    for (int64_t q0 = first; q0 < g.tq; q0 += B) {
      const int64_t nq = lmin(B, g.tq - q0);
      __syncthreads();
      load(qs, a.q, g, b, q0, nq, g.d, g.ld);
      load(dos, a.dout, g, b, q0, nq, g.dv, g.ldv);
      load_rows(a, b, q0, nq, lse, D);
      __syncthreads();
      tile_ds(a, b, q0, nq, k0, nk, qs, ks, vs, dos, lse, D, p, pd, ds);
      __syncthreads();
      for (int64_t e = threadIdx.x; e < nk * g.dv; e += blockDim.x) {
        const int64_t j = e / g.dv, d = e % g.dv;
        T acc = 0;
        for (int64_t i = 0; i < nq; ++i) acc += pd[i * B + j] * dos[i * g.ldv + d];
        dvs[e] += acc;
      }
      for (int64_t e = threadIdx.x; e < nk * g.d; e += blockDim.x) {
        const int64_t j = e / g.d, d = e % g.d;
        T acc = 0;
        for (int64_t i = 0; i < nq; ++i) acc += ds[i * B + j] * qs[i * g.ld + d];
        dks[e] += T(g.scale) * acc;
      }
    }
    __syncthreads();
    for (int64_t e = threadIdx.x; e < nk * g.d; e += blockDim.x) dk[(b * g.tk + k0) * g.d + e] = dks[e];
    for (int64_t e = threadIdx.x; e < nk * g.dv; e += blockDim.x) dv[(b * g.tk + k0) * g.dv + e] = dvs[e];
    __syncthreads();
  }
}

// A block per (batch, query tile): dQ.
template <class T>
__global__ void dq_kernel(Args a, T* dq) {
  read_key(a.g);
  const Geo& g = a.g;
  const int64_t B = g.B;
  T* ks = dynamic_shared<T>();
  T *vs = ks + B * g.ld, *dqs = vs + B * g.ldv, *qs = dqs + B * g.d, *dos = qs + B * g.ld;
  T *p = dos + B * g.ldv, *pd = p + B * B, *ds = pd + B * B, *lse = ds + B * B, *D = lse + B;
  for (int64_t tile = blockIdx.x; tile < g.nb * g.q_tiles(); tile += gridDim.x) {
    const int64_t b = tile / g.q_tiles(), q0 = (tile % g.q_tiles()) * B, nq = lmin(B, g.tq - q0);
    load(qs, a.q, g, b, q0, nq, g.d, g.ld);
    load(dos, a.dout, g, b, q0, nq, g.dv, g.ldv);
    load_rows(a, b, q0, nq, lse, D);
    for (int64_t e = threadIdx.x; e < nq * g.d; e += blockDim.x) dqs[e] = 0;
    const int64_t n_kt = g.causal ? (lmin(g.tk, q0 + nq) + B - 1) / B : g.k_tiles();
    for (int64_t kt = 0; kt < n_kt; ++kt) {
      const int64_t k0 = kt * B, nk = lmin(B, g.tk - k0);
      __syncthreads();
      load(ks, a.k, g, b, k0, nk, g.d, g.ld);
      load(vs, a.v, g, b, k0, nk, g.dv, g.ldv);
      __syncthreads();
      tile_ds(a, b, q0, nq, k0, nk, qs, ks, vs, dos, lse, D, p, pd, ds);
      __syncthreads();
      for (int64_t e = threadIdx.x; e < nq * g.d; e += blockDim.x) {
        const int64_t i = e / g.d, d = e % g.d;
        T acc = 0;
        for (int64_t j = 0; j < nk; ++j) acc += ds[i * B + j] * ks[j * g.ld + d];
        dqs[e] += T(g.scale) * acc;
      }
    }
    __syncthreads();
    for (int64_t e = threadIdx.x; e < nq * g.d; e += blockDim.x) dq[(b * g.tq + q0) * g.d + e] = dqs[e];
    __syncthreads();
  }
}

// ---------------------------------------------------------------- host side

/// x as [batch..., rows, cols] (a mask broadcasts: stride 0), or, for a
/// `vector` (lse, dlse: [batch..., rows]), as [batch..., rows, 1].
Operand operand_of(const NDArray& x, const Geo& g, bool vector) {
  Operand o;
  o.p = x.raw();
  const size_t dims = size_t(g.nbd) + (vector ? 1 : 2);
  std::vector<int64_t> st(dims, 0);
  const size_t off = dims - x.shape().size();
  for (size_t i = 0; i < x.shape().size(); ++i)
    if (x.shape()[i] != 1) st[off + i] = x.strides()[i];
  for (int i = 0; i < g.nbd; ++i) o.bs[i] = st[size_t(i)];
  o.rs = st[size_t(g.nbd)];
  o.cs = vector ? 0 : st.back();
  return o;
}

Args args_of(const KernelCall& c, bool backward) {
  Args a;
  Geo& g = a.g;
  const Shape& q = c.in[0].shape();
  const size_t nd = q.size();
  if (nd - 2 > size_t(kMaxBatchDims))
    fail(c.op, " '", c.node, "': q ", shape_str(q), " has more than ", kMaxBatchDims, " leading dims");
  g.nbd = int(nd - 2);
  for (int i = 0; i < g.nbd; ++i) g.bshape[i] = q[size_t(i)], g.nb *= q[size_t(i)];
  g.tq = q[nd - 2], g.d = q[nd - 1], g.tk = c.in[1].shape()[nd - 2], g.dv = c.in[2].shape()[nd - 1];
  g.ld = g.d | 1, g.ldv = g.dv | 1;
  g.scale = c.attrs.f("scale"), g.causal = c.attrs.get_or<bool>("causal", false);
  g.p = c.attrs.get_or<double>("dropout", 0.0);
  int slot = backward ? 6 : 3;
  int dlse = -1, mask = -1, rng = -1;
  if (backward && c.attrs.get_or<bool>("dlse", false)) dlse = slot++;
  if (c.attrs.get_or<bool>("mask", false)) mask = slot++;
  if (g.p > 0) rng = slot++;
  a.q = operand_of(c.in[0], g, false), a.k = operand_of(c.in[1], g, false), a.v = operand_of(c.in[2], g, false);
  if (mask >= 0) {
    const NDArray& m = c.in[size_t(mask)];
    g.mask = m.dtype() == DType::boolean ? 1 : 2;
    a.m = operand_of(m, g, false);
  }
  if (rng >= 0) {  // any layout (a view may be reversed)
    g.rng = static_cast<const int64_t*>(c.in[size_t(rng)].raw());
    g.rng_stride = c.in[size_t(rng)].strides()[0];
  }
  if (backward) {
    a.out = operand_of(c.in[3], g, false), a.lse = operand_of(c.in[4], g, true);
    a.dout = operand_of(c.in[5], g, false);
    if (dlse >= 0) a.dlse = operand_of(c.in[size_t(dlse)], g, true), a.has_dlse = true;
  }
  return a;
}

/// The largest tile size whose shared memory fits.
int64_t tile_for(const KernelCall& c, int64_t (*elems)(int64_t, const Geo&), const Geo& g, size_t size) {
  for (int64_t B = 32; B >= 4; B /= 2)
    if (size_t(elems(B, g)) * size <= kSharedBytes) return B;
  fail(c.op, " '", c.node, "': head dims ", g.d, " and ", g.dv, " are too large for the CUDA attention kernel");
}

template <class T>
void forward(const KernelCall& c) {
  Args a = args_of(c, false);
  a.g.B = tile_for(c, forward_elems, a.g, sizeof(T));
  const int64_t tiles = a.g.nb * a.g.q_tiles();
  if (tiles == 0) return;
  const size_t smem = size_t(forward_elems(a.g.B, a.g)) * sizeof(T);
  launch(forward_kernel<T>, unsigned(lmin(tiles, 1 << 20)), kBlock, smem, stream_of(c), c.op, a,
         static_cast<T*>(c.out[0].raw()), static_cast<T*>(c.out[1].raw()));
}

template <class T>
void backward(const KernelCall& c) {
  Args a = args_of(c, true);
  a.g.B = tile_for(c, backward_elems, a.g, sizeof(T));
  const size_t smem = size_t(backward_elems(a.g.B, a.g)) * sizeof(T);
  if (a.g.nb * a.g.k_tiles() > 0)
    launch(dkdv_kernel<T>, unsigned(lmin(a.g.nb * a.g.k_tiles(), 1 << 20)), kBlock, smem, stream_of(c), c.op, a,
           static_cast<T*>(c.out[1].raw()), static_cast<T*>(c.out[2].raw()));
  if (a.g.nb * a.g.q_tiles() > 0)
    launch(dq_kernel<T>, unsigned(lmin(a.g.nb * a.g.q_tiles(), 1 << 20)), kBlock, smem, stream_of(c), c.op, a,
           static_cast<T*>(c.out[0].raw()));
}

template <bool Backward>
void kernel(const KernelCall& c) {
  use_device(c.ctx.device);
  dispatch_among(FloatTypes{}, c.out[0].dtype(), [&]<class T>() {
    if constexpr (Backward) backward<T>(c);
    else forward<T>(c);
  });
}

__global__ void random_key_kernel(int64_t* out, uint64_t key, uint64_t run) {
  if (blockIdx.x == 0 && threadIdx.x == 0) out[0] = int64_t(key), out[1] = int64_t(run);
}

void random_key(const KernelCall& c) {
  use_device(c.ctx.device);
  launch(random_key_kernel, 1, 32, 0, stream_of(c), c.op, static_cast<int64_t*>(c.out[0].raw()),
         philox::mix_key(c.ctx.seed, c.node_key), c.ctx.run_counter);
}

/// attention_keep: the dropout factors the kernels above draw, one thread per element.
template <class T>
__global__ void keep_kernel(const int64_t* rng, int64_t run_stride, double p, T* y, int64_t n) {
  const uint64_t key = uint64_t(rng[0]), run = uint64_t(rng[run_stride]);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = philox::uniform_f32(key, run, uint64_t(i)) >= float(p) ? T(1 / (1 - p)) : T(0);
}

void attention_keep(const KernelCall& c) {
  use_device(c.ctx.device);
  const int64_t n = c.out[0].numel();
  if (n == 0) return;
  dispatch_among(FloatTypes{}, c.out[0].dtype(), [&]<class T>() {
    launch(keep_kernel<T>, grid_for(n), kThreads, 0, stream_of(c), c.op, static_cast<const int64_t*>(c.in[0].raw()),
           c.in[0].strides()[0], c.attrs.f("dropout"), static_cast<T*>(c.out[0].raw()), n);
  });
}

const bool registered = [] {
  const auto f = FloatTypes::dtypes();
  register_kernel("attention_keep", DeviceKind::cuda, f, {.fn = &attention_keep});
  register_kernel("attention", DeviceKind::cuda, f, {.fn = &kernel<false>});
  register_kernel("attention_grad", DeviceKind::cuda, f, {.fn = &kernel<true>});
  register_kernel("random_key", DeviceKind::cuda, {int64}, {.fn = &random_key});
  return true;
}();

}  // namespace
}  // namespace loom::cuda
