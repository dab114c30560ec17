// Host emulation of the CUDA runtime, cuBLAS GEMMs and the grid scheduler
// (see README.md). Each block's threads are fibers (ucontext) run round-robin
// on the launching host thread; __syncthreads() switches to the next fiber,
// so after each round every live thread of the block waits at the same barrier.

#include <ucontext.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "cublas_v2.h"
#include "cuda_runtime.h"

namespace emu {
namespace {

// A GPU thread's stack is 1 KiB by default; 64 KiB leaves room for ASan's
// redzones. Not more: ASan clears the shadow of the whole stack at every
// switch (256 KiB stacks made the emulated tests 2-10x slower).
constexpr size_t kStack = 64 * 1024;
constexpr unsigned kMaxBlocks = 3;  // grids shrink to this: grid-stride loops then iterate

struct Fiber {
  ucontext_t ctx;
  std::unique_ptr<char[]> stack{new char[kStack]};
  unsigned tid = 0;
  bool done = false;
};

struct Grid {
  dim3 block_idx, block_dim, grid_dim;
  std::vector<unsigned char> shared;
  std::vector<std::unique_ptr<Fiber>> fibers;
  Fiber* current = nullptr;
  ucontext_t scheduler;
  const std::function<void()>* body = nullptr;

  /// The first fiber from index i on that has not finished (null if none).
  Fiber* live_from(size_t i) const {
    for (; i < fibers.size(); ++i)
      if (!fibers[i]->done) return fibers[i].get();
    return nullptr;
  }
};

thread_local Grid* grid = nullptr;  // the launch running on this host thread

void fiber_main() {
  (*grid->body)();
  grid->current->done = true;  // returning resumes uc_link: the scheduler
}

}  // namespace

dim3 thread_idx() { return {grid->current->tid, 0, 0}; }
dim3 block_idx() { return grid->block_idx; }
dim3 block_dim() { return grid->block_dim; }
dim3 grid_dim() { return grid->grid_dim; }
void* shared_memory() { return grid->shared.data(); }
// A barrier passes control straight to the block's next live thread (one
// switch, not two through the scheduler); the round's last returns to it.
void sync_threads() {
  Fiber* self = grid->current;
  Fiber* next = grid->live_from(self->tid + 1);
  if (!next) {
    swapcontext(&self->ctx, &grid->scheduler);
    return;
  }
  grid->current = next;
  swapcontext(&self->ctx, &next->ctx);
}

void run_grid(unsigned g, unsigned b, size_t shared_bytes, const std::function<void()>& body) {
  if (g == 0 || b == 0 || b > 1024) std::abort();  // a real launch would fail: the tests must see it
  Grid state;
  Grid* outer = grid;
  grid = &state;
  state.grid_dim = {std::min(g, kMaxBlocks), 1, 1};
  state.block_dim = {b, 1, 1};
  state.body = &body;
  for (unsigned i = 0; i < b; ++i) state.fibers.push_back(std::make_unique<Fiber>());
  for (unsigned blk = 0; blk < state.grid_dim.x; ++blk) {
    state.block_idx = {blk, 1, 1};
    state.shared.assign(shared_bytes + 1, 0xCD);  // uninitialized on a GPU: poison it
    for (unsigned t = 0; t < b; ++t) {
      Fiber& f = *state.fibers[t];
      f.tid = t;
      f.done = false;
      getcontext(&f.ctx);
      f.ctx.uc_stack.ss_sp = f.stack.get();
      f.ctx.uc_stack.ss_size = kStack;
      f.ctx.uc_link = &state.scheduler;
      makecontext(&f.ctx, fiber_main, 0);
    }
    // Rounds in thread order until all are done. Back here: the round ended
    // at a barrier (a new round starts), or a thread finished (the round goes on).
    for (size_t from = 0;;) {
      Fiber* f = state.live_from(from);
      if (!f && !(f = state.live_from(0))) break;
      state.current = f;
      swapcontext(&state.scheduler, &f->ctx);
      from = state.current->done ? state.current->tid + 1 : state.fibers.size();
    }
  }
  grid = outer;
}

}  // namespace emu

// ---------------------------------------------------------------- runtime

const char* cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "emulated CUDA error"; }
cudaError_t cudaGetLastError() { return cudaSuccess; }
cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : cudaErrorInvalidValue; }
cudaError_t cudaMalloc(void** p, size_t bytes) {
  *p = std::malloc(std::max<size_t>(bytes, 1));
  return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaFree(void* p) {
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaMallocAsync(void** p, size_t bytes, cudaStream_t) { return cudaMalloc(p, bytes); }
cudaError_t cudaFreeAsync(void* p, cudaStream_t) { return cudaFree(p); }
cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t* pool, int) {
  *pool = nullptr;  // malloc and free: nothing to keep
  return cudaSuccess;
}
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t, cudaMemPoolAttr, void*) { return cudaSuccess; }
cudaError_t cudaMallocHost(void** p, size_t bytes) { return cudaMalloc(p, bytes); }
cudaError_t cudaFreeHost(void* p) { return cudaFree(p); }
cudaError_t cudaMemGetInfo(size_t* f, size_t* t) {
  *f = *t = size_t(1) << 34;
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind, cudaStream_t) {
  if (bytes) std::memmove(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t) {
  if (bytes) std::memset(p, value, bytes);
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) {
  *s = reinterpret_cast<cudaStream_t>(new char[1]);
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  delete[] reinterpret_cast<char*>(s);
  return cudaSuccess;
}

// ---------------------------------------------------------------- cuBLAS

struct cublasContext {};

const char* cublasGetStatusString(cublasStatus_t s) {
  return s == CUBLAS_STATUS_SUCCESS ? "CUBLAS_STATUS_SUCCESS" : "CUBLAS_STATUS_INVALID_VALUE";
}
cublasStatus_t cublasCreate(cublasHandle_t* h) {
  *h = new cublasContext;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t h) {
  delete h;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t, cudaStream_t) { return CUBLAS_STATUS_SUCCESS; }

namespace {

// C = alpha op(A) op(B) + beta C, column-major, as the cuBLAS documentation defines it.
template <class T>
cublasStatus_t gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const T* alpha, const T* A,
                    int lda, const T* B, int ldb, const T* beta, T* C, int ldc) {
  const bool na = ta == CUBLAS_OP_N, nb = tb == CUBLAS_OP_N;
  if (m < 0 || n < 0 || k < 0 || lda < std::max(1, na ? m : k) || ldb < std::max(1, nb ? k : n) ||
      ldc < std::max(1, m))
    return CUBLAS_STATUS_INVALID_VALUE;
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < m; ++i) {
      double acc = 0;
      for (int l = 0; l < k; ++l) {
        const T a = na ? A[i + size_t(l) * size_t(lda)] : A[l + size_t(i) * size_t(lda)];
        const T b = nb ? B[l + size_t(j) * size_t(ldb)] : B[j + size_t(l) * size_t(ldb)];
        acc += double(a) * double(b);
      }
      T& c = C[i + size_t(j) * size_t(ldc)];
      c = *beta == T(0) ? T(*alpha * T(acc)) : T(*alpha * T(acc) + *beta * c);
    }
  return CUBLAS_STATUS_SUCCESS;
}

template <class T>
cublasStatus_t strided(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const T* alpha, const T* A,
                       int lda, long long sa, const T* B, int ldb, long long sb, const T* beta, T* C, int ldc,
                       long long sc, int batch) {
  if (batch < 0) return CUBLAS_STATUS_INVALID_VALUE;
  for (int i = 0; i < batch; ++i) {
    cublasStatus_t s = gemm(ta, tb, m, n, k, alpha, A + i * sa, lda, B + i * sb, ldb, beta, C + i * sc, ldc);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
  }
  return CUBLAS_STATUS_SUCCESS;
}

template <class T>
cublasStatus_t batched(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const T* alpha,
                       const T* const A[], int lda, const T* const B[], int ldb, const T* beta, T* const C[], int ldc,
                       int batch) {
  if (batch < 0) return CUBLAS_STATUS_INVALID_VALUE;
  for (int i = 0; i < batch; ++i) {
    cublasStatus_t s = gemm(ta, tb, m, n, k, alpha, A[i], lda, B[i], ldb, beta, C[i], ldc);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
  }
  return CUBLAS_STATUS_SUCCESS;
}

}  // namespace

cublasStatus_t cublasSgemm(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                           const float* alpha, const float* A, int lda, const float* B, int ldb, const float* beta,
                           float* C, int ldc) {
  return gemm(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}
cublasStatus_t cublasDgemm(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                           const double* alpha, const double* A, int lda, const double* B, int ldb,
                           const double* beta, double* C, int ldc) {
  return gemm(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}
cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                         int k, const float* alpha, const float* A, int lda, long long sa,
                                         const float* B, int ldb, long long sb, const float* beta, float* C, int ldc,
                                         long long sc, int batch) {
  return strided(ta, tb, m, n, k, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc, batch);
}
cublasStatus_t cublasDgemmStridedBatched(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                         int k, const double* alpha, const double* A, int lda, long long sa,
                                         const double* B, int ldb, long long sb, const double* beta, double* C,
                                         int ldc, long long sc, int batch) {
  return strided(ta, tb, m, n, k, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc, batch);
}
cublasStatus_t cublasSgemmBatched(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                  const float* alpha, const float* const A[], int lda, const float* const B[], int ldb,
                                  const float* beta, float* const C[], int ldc, int batch) {
  return batched(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc, batch);
}
cublasStatus_t cublasDgemmBatched(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                  const double* alpha, const double* const A[], int lda, const double* const B[],
                                  int ldb, const double* beta, double* const C[], int ldc, int batch) {
  return batched(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc, batch);
}
