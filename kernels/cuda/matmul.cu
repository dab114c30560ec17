// Batched, broadcasting matmul through cuBLAS.
//
// loom arrays are row-major, cuBLAS is column-major; the translation lives in
// one place, gemm_row_major(). Transposed views are passed as cuBLAS op flags
// with their leading dimension; operands cuBLAS cannot address (e.g. negative
// or non-unit inner strides) are compacted into a stream-ordered temporary.
// A regular batch (each operand's matrices a fixed stride apart, 0 for a
// broadcast one) runs as one strided-batched GEMM; an irregular broadcast
// batch as one pointer-array batched GEMM; a weight shared by a stack of
// matrices as one tall GEMM, as on the CPU.

#include <climits>
#include <map>
#include <memory>
#include <mutex>

#include "kernels/blas.hpp"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/streams.hpp"

namespace loom::cuda {
namespace {

// ---------------------------------------------------------------- handles

// One cuBLAS handle per (device, stream), created lazily and kept until the
// stream is destroyed (release_blas_handles): a handle bound to one stream
// never shares its workspace with another stream, and its mutex serializes
// callers (the parallel executor may launch from several threads onto one
// stream).
struct BlasHandle {
  cublasHandle_t h = nullptr;
  std::mutex mu;
};

struct BlasHandles {
  std::mutex mu;
  std::map<std::pair<int, cudaStream_t>, std::unique_ptr<BlasHandle>> map;
};
BlasHandles& handles() {
  static BlasHandles* h = new BlasHandles;  // never destroyed: no cuBLAS call during process exit
  return *h;
}

BlasHandle& blas_handle(int device, cudaStream_t s) {
  BlasHandles& all = handles();
  std::lock_guard lock(all.mu);
  auto& slot = all.map[{device, s}];
  if (!slot) {
    auto h = std::make_unique<BlasHandle>();
    LOOM_CUDA_CHECK(cublasCreate(&h->h));  // on the current device (set by the caller)
    LOOM_CUDA_CHECK(cublasSetStream(h->h, s));
    slot = std::move(h);
  }
  return *slot;
}

// ---------------------------------------------------------------- the wrapper

using blas::Mat;
using blas::classify;

/// Batch layout of one GEMM call: either `count` matrices a fixed stride apart
/// or explicit device pointer arrays.
struct Batch {
  int64_t count = 1;
  int64_t stride_a = 0, stride_b = 0, stride_c = 0;  // elements
  const void* const* ptr_a = nullptr;                // pointer arrays (device) when set
  const void* const* ptr_b = nullptr;
  void* const* ptr_c = nullptr;
};

template <class T>
struct Blas;
template <>
struct Blas<float> {
  static constexpr auto gemm = cublasSgemm;
  static constexpr auto strided = cublasSgemmStridedBatched;
  static constexpr auto batched = cublasSgemmBatched;
};
template <>
struct Blas<double> {
  static constexpr auto gemm = cublasDgemm;
  static constexpr auto strided = cublasDgemmStridedBatched;
  static constexpr auto batched = cublasDgemmBatched;
};

int to_int(int64_t v, const KernelCall& c, const char* what) {
  if (v > INT_MAX) fail("matmul '", c.node, "': ", what, " ", v, " exceeds cuBLAS's 32-bit limit");
  return int(v);
}

/// Row-major C[M,N] (compact, ldc = N) = A[M,K] * B[K,N] for every matrix of
/// the batch. cuBLAS sees the same memory as column-major C^T = B^T * A^T, so
/// the operands swap places and a row-major operand stored transposed becomes
/// a column-major one that needs no transpose (and vice versa).
template <class T>
void gemm_row_major(const KernelCall& c, cublasHandle_t h, int64_t M, int64_t N, int64_t K, const T* a, Mat ma,
                    const T* b, Mat mb, T* out, const Batch& batch) {
  const int m = to_int(N, c, "dimension"), n = to_int(M, c, "dimension"), k = to_int(K, c, "dimension");
  const int lda = to_int(mb.ld, c, "leading dimension"), ldb = to_int(ma.ld, c, "leading dimension");
  const cublasOperation_t op_a = mb.trans ? CUBLAS_OP_T : CUBLAS_OP_N, op_b = ma.trans ? CUBLAS_OP_T : CUBLAS_OP_N;
  const T one = 1, zero = 0;
  if (batch.ptr_a) {
    LOOM_CUDA_CHECK(Blas<T>::batched(h, op_a, op_b, m, n, k, &one, reinterpret_cast<const T* const*>(batch.ptr_b), lda,
                                     reinterpret_cast<const T* const*>(batch.ptr_a), ldb, &zero,
                                     reinterpret_cast<T* const*>(batch.ptr_c), m, to_int(batch.count, c, "batch")));
  } else if (batch.count == 1) {
    LOOM_CUDA_CHECK(Blas<T>::gemm(h, op_a, op_b, m, n, k, &one, b, lda, a, ldb, &zero, out, m));
  } else {
    LOOM_CUDA_CHECK(Blas<T>::strided(h, op_a, op_b, m, n, k, &one, b, lda, batch.stride_b, a, ldb, batch.stride_a,
                                     &zero, out, m, batch.stride_c, to_int(batch.count, c, "batch")));
  }
}

// ---------------------------------------------------------------- the kernel

template <class T>
void matmul_typed(const KernelCall& call) {
  cudaStream_t s = stream_of(call);
  View a = view_of(call.in[0]), b = view_of(call.in[1]);
  const NDArray& c = call.out[0];
  const size_t na = a.layout.shape.size(), nb = b.layout.shape.size();
  const int64_t M = a.layout.shape[na - 2], K = a.layout.shape[na - 1], N = b.layout.shape[nb - 1];
  if (c.numel() == 0) return;
  if (K == 0) return zero_array(c, s);

  auto mat_of = [](const View& x, int64_t r, int64_t q) {
    const size_t n = x.layout.shape.size();
    return classify(r, q, x.layout.strides[n - 2], x.layout.strides[n - 1]);
  };
  Mat ma = mat_of(a, M, K), mb = mat_of(b, K, N);
  CompactView ca, cb;  // temporaries for operands cuBLAS cannot address
  if (!ma.ok) ca = compact_on(a, s), a = ca.view, ma = mat_of(a, M, K);
  if (!mb.ok) cb = compact_on(b, s), b = cb.view, mb = mat_of(b, K, N);

  // Batch offsets (broadcast) of a and b for every output matrix.
  const Shape batch(c.shape().begin(), c.shape().end() - 2);
  const int64_t nbatch = numel(batch);
  auto batch_strides = [&](const View& x) {
    const size_t n = x.layout.shape.size(), off = batch.size() - (n - 2);
    std::vector<int64_t> st(batch.size(), 0);
    for (size_t i = 0; i + 2 < n; ++i)
      if (x.layout.shape[i] != 1) st[off + i] = x.layout.strides[i];
    return st;
  };
  const std::vector<int64_t> sa = batch_strides(a), sb = batch_strides(b);
  std::vector<int64_t> offa(static_cast<size_t>(nbatch)), offb(static_cast<size_t>(nbatch));
  {
    std::vector<int64_t> idx(batch.size(), 0);
    for (int64_t i = 0; i < nbatch; ++i) {
      int64_t oa = 0, ob = 0;
      for (size_t d = 0; d < batch.size(); ++d) {
        oa += idx[d] * sa[d];
        ob += idx[d] * sb[d];
      }
      offa[size_t(i)] = oa;
      offb[size_t(i)] = ob;
      for (size_t d = batch.size(); d-- > 0;) {
        if (++idx[d] < batch[d]) break;
        idx[d] = 0;
      }
    }
  }
  const T* pa = static_cast<const T*>(a.data);
  const T* pb = static_cast<const T*>(b.data);
  T* pc = static_cast<T*>(c.raw());

  use_device(call.ctx.device);
  BlasHandle& bh = blas_handle(call.ctx.device.index, s);
  std::lock_guard lock(bh.mu);
  LOOM_CUDA_CHECK(cublasSetStream(bh.h, s));

  auto affine = [&](const std::vector<int64_t>& off) {
    const int64_t st = nbatch > 1 ? off[1] - off[0] : 0;
    for (int64_t i = 0; i < nbatch; ++i)
      if (off[size_t(i)] != i * st) return std::pair<bool, int64_t>{false, 0};
    return std::pair<bool, int64_t>{st >= 0, st};
  };
  auto [a_reg, st_a] = affine(offa);
  auto [b_reg, st_b] = affine(offb);

  // A weight shared by every batch and a's matrices stacked evenly: one tall GEMM.
  if (nbatch > 1 && b_reg && st_b == 0 && a_reg && !ma.trans && st_a == M * ma.ld && M * nbatch <= INT_MAX) {
    gemm_row_major<T>(call, bh.h, M * nbatch, N, K, pa, ma, pb, mb, pc, Batch{});
  } else if (a_reg && b_reg) {
    gemm_row_major<T>(call, bh.h, M, N, K, pa, ma, pb, mb, pc, Batch{nbatch, st_a, st_b, M * N});
  } else {
    // Irregular broadcast: explicit pointers, uploaded in stream order.
    std::vector<const void*> ptrs(size_t(3 * nbatch));
    for (int64_t i = 0; i < nbatch; ++i) {
      ptrs[size_t(i)] = pa + offa[size_t(i)];
      ptrs[size_t(nbatch + i)] = pb + offb[size_t(i)];
      ptrs[size_t(2 * nbatch + i)] = pc + i * M * N;
    }
    Temp dev(ptrs.size() * sizeof(void*), s);
    // Pageable source: the call returns once the pointers are staged, so `ptrs` may go.
    LOOM_CUDA_CHECK(cudaMemcpyAsync(dev.get(), ptrs.data(), ptrs.size() * sizeof(void*), cudaMemcpyHostToDevice, s));
    const void* const* p = dev.get<const void*>();
    Batch bt;
    bt.count = nbatch;
    bt.ptr_a = p;
    bt.ptr_b = p + nbatch;
    bt.ptr_c = const_cast<void* const*>(p + 2 * nbatch);
    gemm_row_major<T>(call, bh.h, M, N, K, pa, ma, pb, mb, pc, bt);
  }
}

void matmul_kernel(const KernelCall& c) {
  use_device(c.ctx.device);
  dispatch_among(FloatTypes{}, c.out[0].dtype(), [&]<class T>() { matmul_typed<T>(c); });
}

const bool registered = [] {
  register_kernel("matmul", DeviceKind::cuda, FloatTypes::dtypes(), {&matmul_kernel});
  return true;
}();

}  // namespace

void release_blas_handles(cudaStream_t s) noexcept {
  BlasHandles& all = handles();
  std::lock_guard lock(all.mu);
  for (auto it = all.map.begin(); it != all.map.end();) {
    if (it->first.second == s) {
      std::lock_guard use(it->second->mu);  // no call in flight on it
      cublasDestroy(it->second->h);
      it = all.map.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace loom::cuda
