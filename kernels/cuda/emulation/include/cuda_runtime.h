#pragma once
// Host emulation of the part of the CUDA runtime loom's kernels use (see
// ../README.md). "Device" memory is host memory, every call is synchronous,
// and a kernel launch runs each block's threads as fibers on the calling
// thread, switching at __syncthreads(). Not a GPU: it checks the kernels'
// indexing, reductions, launch arithmetic and host logic, not their speed or
// memory-model subtleties.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string_view>
#include <tuple>
#include <utility>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};

namespace emu {
dim3 thread_idx();
dim3 block_idx();
dim3 block_dim();
dim3 grid_dim();
void sync_threads();
void* shared_memory();
/// Runs body() as every thread of a grid (shrunk to a few blocks: all loom
/// kernels use grid-stride loops, which this also exercises).
void run_grid(unsigned grid, unsigned block, size_t shared_bytes, const std::function<void()>& body);
}  // namespace emu

#define threadIdx (::emu::thread_idx())
#define blockIdx (::emu::block_idx())
#define blockDim (::emu::block_dim())
#define gridDim (::emu::grid_dim())
#define __syncthreads() ::emu::sync_threads()

inline unsigned long long atomicMin(unsigned long long* p, unsigned long long v) {
  unsigned long long old = *p;  // one block runs at a time on one host thread
  if (v < old) *p = v;
  return old;
}
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline long min(long a, long b) { return a < b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }

typedef struct CUstream_st* cudaStream_t;
enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorMemoryAllocation = 2 };
enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4
};
inline constexpr unsigned cudaStreamNonBlocking = 1;

const char* cudaGetErrorString(cudaError_t e);
cudaError_t cudaGetLastError();
cudaError_t cudaGetDeviceCount(int* n);
cudaError_t cudaSetDevice(int d);
cudaError_t cudaMalloc(void** p, size_t bytes);
cudaError_t cudaFree(void* p);
cudaError_t cudaMallocAsync(void** p, size_t bytes, cudaStream_t s);
cudaError_t cudaFreeAsync(void* p, cudaStream_t s);
typedef struct CUmemPoolHandle_st* cudaMemPool_t;
enum cudaMemPoolAttr { cudaMemPoolAttrReleaseThreshold = 4 };
cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t* pool, int device);
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t pool, cudaMemPoolAttr attr, void* value);
cudaError_t cudaMallocHost(void** p, size_t bytes);
cudaError_t cudaFreeHost(void* p);
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s);
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);

namespace loom::cuda {
// The launch helper and shared memory of kernels/cuda/common.cuh, emulated.
template <class... P, class... A>
void launch(void (*kernel)(P...), unsigned grid, unsigned block, size_t smem, cudaStream_t, std::string_view,
            A&&... args) {
  std::tuple<std::decay_t<P>...> params(std::forward<A>(args)...);
  ::emu::run_grid(grid, block, smem, [&] { std::apply(kernel, params); });
}
template <class T>
T* dynamic_shared() {
  return static_cast<T*>(::emu::shared_memory());
}
}  // namespace loom::cuda
