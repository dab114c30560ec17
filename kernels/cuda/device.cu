// The CUDA device backend: memory, copies and streams for Device::cuda(i).
// Registered at load time, so core never includes a CUDA header.

#include <cstdint>
#include <mutex>
#include <vector>

#include "core/device.hpp"
#include "kernels/cuda/check.hpp"
#include "kernels/cuda/streams.hpp"

namespace loom::cuda {
namespace {

class CudaBackend final : public DeviceBackend {
 public:
  explicit CudaBackend(int index) : index_(index) { keep_pool_memory(); }
  void* allocate(size_t bytes) override {
    select();
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, bytes);
    if (e != cudaSuccess) {
      cudaGetLastError();  // clear the sticky error
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      fail("cuda:", index_, ": out of memory allocating ", bytes, " bytes (", free_b, " of ", total_b, " free)");
    }
    return p;
  }
  void deallocate(void* p, size_t) noexcept override {
    select();
    cudaFree(p);
  }
  void copy_from_host(void* d, const void* s, size_t n, void* stream) override {
    select();
    LOOM_CUDA_CHECK(cudaMemcpyAsync(d, s, n, cudaMemcpyHostToDevice, static_cast<cudaStream_t>(stream)));
  }
  void copy_to_host(void* d, const void* s, size_t n, void* stream) override {
    select();
    LOOM_CUDA_CHECK(cudaMemcpyAsync(d, s, n, cudaMemcpyDeviceToHost, static_cast<cudaStream_t>(stream)));
  }
  void copy_within(void* d, const void* s, size_t n, void* stream) override {
    select();
    LOOM_CUDA_CHECK(cudaMemcpyAsync(d, s, n, cudaMemcpyDeviceToDevice, static_cast<cudaStream_t>(stream)));
  }
  void synchronize(void* stream) override {
    select();
    LOOM_CUDA_CHECK(stream ? cudaStreamSynchronize(static_cast<cudaStream_t>(stream)) : cudaDeviceSynchronize());
  }
  void* create_stream() override {
    select();
    cudaStream_t s = nullptr;
    LOOM_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    return s;
  }
  void destroy_stream(void* s) noexcept override {
    select();
    release_blas_handles(static_cast<cudaStream_t>(s));
    release_dnn_handles(static_cast<cudaStream_t>(s));
    cudaStreamDestroy(static_cast<cudaStream_t>(s));
  }
  void* allocate_host(size_t bytes) override {
    void* p = nullptr;
    LOOM_CUDA_CHECK(cudaMallocHost(&p, bytes));
    return p;
  }
  void deallocate_host(void* p) noexcept override { cudaFreeHost(p); }

 private:
  void select() const { cudaSetDevice(index_); }
  /// Kernels' stream-ordered temporaries (Temp) come from the device's default memory pool, which by
  /// default gives its memory back to the driver at every synchronization, so that each run would map
  /// it anew: keep it (as PyTorch's caching allocator does). Best effort.
  void keep_pool_memory() const {
    cudaMemPool_t pool = nullptr;
    uint64_t keep = UINT64_MAX;
    if (cudaDeviceGetDefaultMemPool(&pool, index_) != cudaSuccess ||
        cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep) != cudaSuccess)
      cudaGetLastError();  // (clear it: pools are an optimization)
  }
  int index_;
};

int count_devices() {
  static int n = [] {
    int c = 0;
    if (cudaGetDeviceCount(&c) != cudaSuccess) {
      cudaGetLastError();
      return 0;
    }
    return c;
  }();
  return n;
}

const bool registered = [] {
  register_device_kind(DeviceKind::cuda, &count_devices, [](int i) -> DeviceBackend& {
    static std::mutex mu;
    static std::vector<std::unique_ptr<CudaBackend>> backends;
    std::lock_guard lock(mu);
    if (backends.empty())
      for (int k = 0; k < count_devices(); ++k) backends.push_back(std::make_unique<CudaBackend>(k));
    return *backends[size_t(i)];
  });
  return true;
}();

}  // namespace
}  // namespace loom::cuda
