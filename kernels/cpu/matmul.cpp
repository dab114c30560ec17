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
// same bits with the epilogue pass on and off.
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
};
Split split_of(int64_t m, int64_t n, int64_t k, int64_t batches, int threads) {
  const bool parallel = threads > 1 && 2.0 * double(m) * double(n) * double(k) * double(batches) > 2e6;
  if (!parallel || batches >= threads) return {true, 1, parallel};
  // Rows as soon as each task gets a fair share of them: an epilogue then follows each task's rows while they
  // are in cache, where column blocks make it wait for the whole GEMM and pass over the output again (an MLP's
  // weight gradient, [512, 784] with Adam after it: 8% faster steps in 12 of 12 alternating runs). Not only
  // with an epilogue: row and column blocks can differ in the last bit, and a plan must give the same bits
  // with the epilogue pass on and off.
  const bool rows = m >= n || m >= 128 * threads;
  return {rows, std::min<int64_t>(threads, std::max<int64_t>(1, (rows ? m : n) / 16)), true};
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
  T* pc = static_cast<T*>(c.raw());
  if (c.numel() == 0) return;
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

  const Split split = split_of(m_all, N, K, n_batches, current_threads());
  const bool split_rows = split.rows;  // named copies, not structured bindings: clang 14's lambdas cannot capture those
  const int64_t blocks = split.blocks;
  const int64_t dim = split_rows ? m_all : N;
  const int64_t step = (dim + blocks - 1) / blocks;
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
  register_kernel("matmul", DeviceKind::cpu, FloatTypes::dtypes(), k);
  return true;
}();

}  // namespace
}  // namespace loom::cpu
