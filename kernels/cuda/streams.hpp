#pragma once
// Resources kernels keep per stream (cuBLAS handles), released when the
// stream's session destroys it: sessions come and go, handles must not pile up.

#include <cuda_runtime.h>

namespace loom::cuda {

/// Destroys the cuBLAS handles bound to `s` (matmul.cu). Call before destroying `s`.
void release_blas_handles(cudaStream_t s) noexcept;

}  // namespace loom::cuda
