// DeviceCheck (common.cuh): a device check's result slot, reported at the
// session's next synchronization, or at once (eager calls, or on request). A session's
// slots come from a pool per plan (CheckSlots): device memory and its pinned
// copy, allocated in chunks as a run needs them and reused run after run.

#include <mutex>
#include <tuple>
#include <utility>
#include <vector>

#include "kernels/cuda/common.cuh"

namespace loom::cuda {
namespace {

class CheckSlots final : public DeferredChecks::Slots {
 public:
  /// A free slot: its device memory and its pinned host copy.
  std::pair<BadElement*, BadElement*> take() {
    std::lock_guard lock(mu_);
    if (used_ == chunks_.size() * kChunk) {
      Chunk c;
      LOOM_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&c.dev), kChunk * sizeof(BadElement)));
      const cudaError_t e = cudaMallocHost(reinterpret_cast<void**>(&c.host), kChunk * sizeof(BadElement));
      if (e != cudaSuccess) cudaFree(c.dev);
      LOOM_CUDA_CHECK(e);
      chunks_.push_back(c);
    }
    const Chunk& c = chunks_[used_ / kChunk];
    const size_t k = used_++ % kChunk;
    return {c.dev + k, c.host + k};
  }
  void reuse() override {
    std::lock_guard lock(mu_);
    used_ = 0;
  }
  ~CheckSlots() override {
    for (const Chunk& c : chunks_) {  // (both wait for the device: no copy into them is still running)
      cudaFree(c.dev);
      cudaFreeHost(c.host);
    }
  }

 private:
  static constexpr size_t kChunk = 64;
  struct Chunk {
    BadElement* dev = nullptr;
    BadElement* host = nullptr;
  };
  std::mutex mu_;
  std::vector<Chunk> chunks_;
  size_t used_ = 0;
};

}  // namespace

DeviceCheck::DeviceCheck(const KernelCall& c, bool now) : c_(c) {
  if (c.ctx.checks && !now) {
    auto& pool = static_cast<CheckSlots&>(c.ctx.checks->slots([] { return std::make_unique<CheckSlots>(); }));
    std::tie(slot_, host_) = pool.take();
  } else {
    eager_ = Temp(sizeof(BadElement), stream_of(c));
    slot_ = eager_.get<BadElement>();
  }
  LOOM_CUDA_CHECK(cudaMemsetAsync(slot_, 0xFF, sizeof(BadElement), stream_of(c)));
}

void DeviceCheck::finish(std::function<void(const BadElement&)> report) {
  cudaStream_t s = stream_of(c_);
  if (host_) {
    LOOM_CUDA_CHECK(cudaMemcpyAsync(host_, slot_, sizeof(BadElement), cudaMemcpyDeviceToHost, s));
    c_.ctx.checks->add([host = host_, report = std::move(report)] {
      if (host->pos != ~0ull) report(*host);
    });
    return;
  }
  BadElement e{};
  LOOM_CUDA_CHECK(cudaMemcpyAsync(&e, slot_, sizeof e, cudaMemcpyDeviceToHost, s));
  LOOM_CUDA_CHECK(cudaStreamSynchronize(s));
  if (e.pos != ~0ull) report(e);
}

}  // namespace loom::cuda
