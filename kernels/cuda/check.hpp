#pragma once
// Checks for CUDA, cuBLAS and cuDNN calls: a failure becomes loom::Error
// naming the call and the error string (no abort on a user-visible failure).

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include "core/error.hpp"

namespace loom::cuda {

inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail("CUDA: ", what, ": ", cudaGetErrorString(e));
}
inline void check(cublasStatus_t e, const char* what) {
  if (e != CUBLAS_STATUS_SUCCESS) fail("cuBLAS: ", what, ": ", cublasGetStatusString(e));
}
inline void check(cudnnStatus_t e, const char* what) {
  if (e != CUDNN_STATUS_SUCCESS) fail("cuDNN: ", what, ": ", cudnnGetErrorString(e));
}

}  // namespace loom::cuda

#define LOOM_CUDA_CHECK(call) ::loom::cuda::check((call), #call)
