#pragma once
// Resources kernels keep per stream (cuBLAS and cuDNN handles), released when the
// stream's session destroys it: sessions come and go, handles must not pile up.

#include <cuda_runtime.h>

namespace loom::cuda {

/// Destroys the cuBLAS handles bound to `s` (matmul.cu). Call before destroying `s`.
void release_blas_handles(cudaStream_t s) noexcept;
/// Destroys the cuDNN handles bound to `s` (conv.cu). Call before destroying `s`.
void release_dnn_handles(cudaStream_t s) noexcept;

}  // namespace loom::cuda
