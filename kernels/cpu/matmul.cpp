// Batched, broadcasting matmul: float32 through oneDNN's sgemm, float64 through
// OpenBLAS. Both run single-threaded per call (their own thread pools would
// fight TBB's); parallelism comes from TBB tasks over batches or row/column
// blocks, each one GEMM call. The split depends on the shapes and the thread
// count only, so a given session configuration is deterministic.
//
// An attached epilogue (the bias and activation after a GEMM, or Adam after a
// weight gradient: core's epilogue pass) runs on each task's block of output
// rows right after the task's GEMM (still in cache when the block is small,
// as a weight gradient's is; a ~1 MiB sub-block per GEMM call cost more in
// repacked operands than it saved: 1.8x slower at 4096x256x1024). The GEMM
// calls are the same with an epilogue and without: oneDNN's AVX2 sgemm can
// round a row differently in a call with fewer rows, and a plan gives the
// same bits with the epilogue pass on and off. A large output (a weight
// gradient, no smaller than the operand each call reads again) goes by fixed
// blocks of ~64 KiB of rows whatever the thread count; a plan may then keep
// only the blocks in flight, in the workspace, while the epilogue (the
// optimizer's update) consumes them (the stream pass).
//
// Why oneDNN for float32: it picks its kernels from the CPU's instruction
// sets at run time, while OpenBLAS 0.3.21 picks them by CPU model and falls
// back to its slowest (Prescott, SSE3) on models it does not know, like this
// machine's Xeon: 29 against 155 GFLOP/s per thread at the MLP's shapes.

#include <cblas.h>
#include <dlfcn.h>
#include <oneapi/dnnl/dnnl.h>

#include "core/kernel.hpp"
#include "kernels/blas.hpp"
#include "kernels/cpu/loops.hpp"
#include "kernels/cpu/openblas.hpp"

namespace loom::cpu {
namespace {

using blas::Mat;
using blas::classify;

/// Pins this thread's OpenMP team size to 1, so oneDNN runs on the calling
/// (TBB) thread. Looked up at run time: libgomp comes with libdnnl.
void single_threaded() {
  using Fn = void (*)(int);
  static const Fn set = reinterpret_cast<Fn>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
  if (set) set(1);
}

void gemm(const float* a, Mat ma, const float* b, Mat mb, float* c, int64_t ldc, int64_t m, int64_t n, int64_t k) {
  single_threaded();
  if (dnnl_sgemm(ma.trans ? 'T' : 'N', mb.trans ? 'T' : 'N', m, n, k, 1.0f, a, ma.ld, b, mb.ld, 0.0f, c, ldc) ==
      dnnl_success)
    return;
  cblas_sgemm(CblasRowMajor, ma.trans ? CblasTrans : CblasNoTrans, mb.trans ? CblasTrans : CblasNoTrans, int(m),
              int(n), int(k), 1.0f, a, int(ma.ld), b, int(mb.ld), 0.0f, c, int(ldc));
}
void gemm(const double* a, Mat ma, const double* b, Mat mb, double* c, int64_t ldc, int64_t m, int64_t n, int64_t k) {
  cblas_dgemm(CblasRowMajor, ma.trans ? CblasTrans : CblasNoTrans, mb.trans ? CblasTrans : CblasNoTrans, int(m),
              int(n), int(k), 1.0, a, int(ma.ld), b, int(mb.ld), 0.0, c, int(ldc));
}

/// Element offsets of a and b (broadcast over the batch dims) for every output matrix.
struct BatchOffsets {
  std::vector<int64_t> a, b;
};
BatchOffsets batch_offsets(const NDArray& a, const NDArray& b, const Shape& batch) {
  auto batch_strides = [&](const NDArray& x) {
    Layout l{Shape(x.shape().begin(), x.shape().end() - 2), Strides(x.strides().begin(), x.strides().end() - 2), 0};
    return broadcast_strides(l, batch);
  };
  const std::vector<int64_t> sa = batch_strides(a), sb = batch_strides(b);
  const int64_t n = numel(batch);
  BatchOffsets off{std::vector<int64_t>(size_t(n)), std::vector<int64_t>(size_t(n))};
  std::vector<int64_t> idx(batch.size(), 0);
  for (int64_t i = 0; i < n; ++i) {
    for (size_t d = 0; d < batch.size(); ++d) off.a[size_t(i)] += idx[d] * sa[d], off.b[size_t(i)] += idx[d] * sb[d];
    for (size_t d = batch.size(); d-- > 0;)
      if (++idx[d] < batch[d]) break;
      else idx[d] = 0;
  }
  return off;
}

/// How the GEMMs of a call split into tasks: whole batches when there are
/// enough, else blocks of rows (or columns) of an [m, n] output; in parallel
/// when there are threads and work enough.
struct Split {
  bool rows = true;
  int64_t blocks = 1;
  bool parallel = false;
  /// Rows (or columns) per block of `dim`; the last block may be shorter.
  int64_t step(int64_t dim) const { return (dim + blocks - 1) / blocks; }
};

/// Rows per block of a large matrix output (a weight gradient) whose operand
/// b, which each GEMM call reads again, stays in a core's L2 cache (at most
/// 512 KiB, and no larger than the output): blocks of ~64 KiB that stay in
/// cache for the epilogue (Adam) and that a plan can keep one at a time (the
/// stream pass); 0 for other shapes. Shapes alone decide, so such a GEMM gives
/// the same bits at any thread count, streamed or not. (oneDNN, one thread:
/// [100, 784] from K = 100 in 7 calls of <= 16 rows took 175 us against 221
/// us in one; [512, 784] from K = 128 in 32 calls as long as in one.)
int64_t block_rows(int64_t m, int64_t n, int64_t k, size_t elem) {
  const int64_t row_bytes = n * int64_t(elem), out_bytes = m * row_bytes, b_bytes = k * row_bytes;
  if (out_bytes < (256 << 10) || b_bytes > std::min<int64_t>(out_bytes, 512 << 10)) return 0;
  const int64_t rows = std::max<int64_t>(16, (64 << 10) / row_bytes / 16 * 16);
  return rows < m ? rows : 0;
}

Split split_of(int64_t m, int64_t n, int64_t k, int64_t batches, bool matrix, size_t elem, int threads) {
  const bool parallel = threads > 1 && 2.0 * double(m) * double(n) * double(k) * double(batches) > 2e6;
  if (const int64_t rows = matrix && batches == 1 ? block_rows(m, n, k, elem) : 0)
    return {true, (m + rows - 1) / rows, parallel};
  if (!parallel || batches >= threads) return {true, 1, parallel};
  // Rows as soon as each task gets a fair share of them: an epilogue then follows each task's rows while they
  // are in cache, where column blocks make it wait for the whole GEMM and pass over the output again (an MLP's
  // weight gradient, [512, 784] with Adam after it: 8% faster steps in 12 of 12 alternating runs). Not only
  // with an epilogue: row and column blocks can differ in the last bit, and a plan must give the same bits
  // with the epilogue pass on and off.
  const bool rows = m >= n || m >= 128 * threads;
  return {rows, std::min<int64_t>(threads, std::max<int64_t>(1, (rows ? m : n) / 16)), true};
}

/// A streamed output's workspace: one block of rows per thread at work.
size_t streamed_workspace(const WorkspaceQuery& q) {
  if (q.out[0].size() != 2 || q.in[0].size() != 2 || q.in[1].size() != 2) return 0;
  const int64_t m = q.out[0][0], n = q.out[0][1], k = q.in[0][1];
  const size_t elem = dtype_size(q.dtype);
  const Split s = split_of(m, n, k, 1, true, elem, q.threads);
  if (s.blocks < 2) return 0;
  const int64_t slots = s.parallel ? std::min<int64_t>(q.threads, s.blocks) : 1;
  return size_t(slots * s.step(m) * n) * elem;
}

/// Output 0 kept block by block (streamed()): each slot of the workspace takes
/// every slots-th block of rows, computed as the unstreamed kernel computes it.
template <class T>
void matmul_streamed(const KernelCall& call, const T* pa, Mat ma, const T* pb, Mat mb, int64_t M, int64_t N,
                     int64_t K) {
  const Split split = split_of(M, N, K, 1, true, sizeof(T), current_threads());
  const int64_t blocks = split.blocks, step = split.step(M);
  const int64_t slots = int64_t(call.workspace_bytes / (size_t(step * N) * sizeof(T)));
  LOOM_ASSERT(split.rows && blocks > 1 && slots >= 1, "matmul '", call.node, "': no workspace for a streamed output");
  // One view of the workspace for the call: each block is an array over its slot.
  const std::shared_ptr<Buffer> ws = Buffer::borrow(call.ctx.device, call.workspace, call.workspace_bytes);
  auto slot_task = [&](int64_t slot) {
    T* C = static_cast<T*>(call.workspace) + slot * step * N;
    for (int64_t blk = slot; blk < blocks; blk += slots) {
      const int64_t lo = blk * step, hi = std::min(M, lo + step);
      if (lo >= hi) continue;
      if (K == 0) std::fill(C, C + (hi - lo) * N, T(0));
      else gemm(pa + lo * (ma.trans ? 1 : ma.ld), ma, pb, mb, C, N, hi - lo, N, K);
      Layout rows = Layout::compact({hi - lo, N});
      rows.offset = slot * step * N;
      run_epilogue(call, lo, hi, NDArray(ws, std::move(rows), call.out[0].dtype()));
    }
  };
  if (slots == 1) {
    slot_task(0);
  } else {
    parallel_for(slots, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t t = lo; t < hi; ++t) slot_task(t);
    });
  }
}

template <class T>
void matmul_typed(const KernelCall& call) {
  NDArray a = call.in[0], b = call.in[1];
  const NDArray& c = call.out[0];
  const int64_t na = a.ndim(), nb = b.ndim();
  const int64_t M = a.shape()[size_t(na - 2)], K = a.shape()[size_t(na - 1)], N = b.shape()[size_t(nb - 1)];
  auto mat_of = [](const NDArray& x, int64_t r, int64_t q) {
    return classify(r, q, x.strides()[size_t(x.ndim() - 2)], x.strides()[size_t(x.ndim() - 1)]);
  };
  Mat ma = mat_of(a, M, K), mb = mat_of(b, K, N);
  if (!ma.ok) a = a.compact(), ma = mat_of(a, M, K);
  if (!mb.ok) b = b.compact(), mb = mat_of(b, K, N);
  if (c.numel() == 0) return;
  if (streamed(call)) {
    matmul_streamed<T>(call, static_cast<const T*>(a.raw()), ma, static_cast<const T*>(b.raw()), mb, M, N, K);
    return;
  }
  T* pc = static_cast<T*>(c.raw());
  const int64_t out_rows = c.shape()[0];
  if (K == 0) {
    std::fill(pc, pc + c.numel(), T(0));
    run_epilogue(call, 0, out_rows);
    return;
  }

  const Shape batch(c.shape().begin(), c.shape().end() - 2);
  const BatchOffsets off = batch_offsets(a, b, batch);
  const int64_t nbatch = numel(batch);
  const T* pa = static_cast<const T*>(a.raw());
  const T* pb = static_cast<const T*>(b.raw());

  // b shared by every batch and a's batch rows stacked evenly: one tall GEMM.
  int64_t m_all = M, n_batches = nbatch;
  if (nbatch > 1 && !ma.trans) {
    bool b_shared = std::all_of(off.b.begin(), off.b.end(), [](int64_t o) { return o == 0; });
    bool a_stacked = true;
    for (int64_t i = 1; i < nbatch && a_stacked; ++i) a_stacked = off.a[size_t(i)] == i * M * ma.ld;
    if (b_shared && a_stacked) m_all = M * nbatch, n_batches = 1;
  }

  const Split split = split_of(m_all, N, K, n_batches, c.ndim() == 2, sizeof(T), current_threads());
  const bool split_rows = split.rows;  // named copies, not structured bindings: clang 14's lambdas cannot capture those
  const int64_t blocks = split.blocks;
  const int64_t dim = split_rows ? m_all : N;
  const int64_t step = split.step(dim);
  // Rows of the GEMM are rows of the output (2-d): the epilogue follows each block of them.
  const bool epilogue_rows = call.epilogue && split_rows && n_batches == 1 && c.ndim() == 2;
  auto task = [&](int64_t t) {
    int64_t bi = t / blocks, blk = t % blocks;
    int64_t lo = blk * step, hi = std::min(dim, lo + step);
    if (lo >= hi) return;
    const T* A = pa + off.a[size_t(bi)];
    const T* B = pb + off.b[size_t(bi)];
    T* C = pc + bi * M * N;
    if (split_rows) {
      gemm(A + lo * (ma.trans ? 1 : ma.ld), ma, B, mb, C + lo * N, N, hi - lo, N, K);
      if (epilogue_rows) run_epilogue(call, lo, hi);
    } else {  // a block of columns, written in place through C's leading dimension
      const T* Bb = B + lo * (mb.trans ? mb.ld : 1);
      gemm(A, ma, Bb, mb, C + lo, N, m_all, hi - lo, K);
    }
  };
  const int64_t tasks = n_batches * blocks;
  if (tasks == 1 || !split.parallel) {
    for (int64_t t = 0; t < tasks; ++t) task(t);
  } else {
    parallel_for(tasks, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t t = lo; t < hi; ++t) task(t);
    });
  }
  if (!epilogue_rows) run_epilogue(call, 0, out_rows);  // blocks that are not rows: after the whole output
}

void matmul_kernel(const KernelCall& c) {
  dispatch_among(FloatTypes{}, c.out[0].dtype(), [&]<class T>() { matmul_typed<T>(c); });
}

const bool registered = [] {
  openblas::select_core();
  openblas_set_num_threads(1);
  KernelInfo k{&matmul_kernel};
  k.runs_epilogue = true;
  k.streamed_workspace = &streamed_workspace;
  register_kernel("matmul", DeviceKind::cpu, FloatTypes::dtypes(), k);
  return true;
}();

}  // namespace
}  // namespace loom::cpu
