#pragma once
// How a BLAS (OpenBLAS on the CPU, cuBLAS on the GPU) can address a strided
// 2-D view directly, shared by both matmul kernels so they agree on when an
// operand must be copied first.

#include <algorithm>
#include <cstdint>

namespace loom::blas {

/// A rows x cols row-major operand: element (r, c) at r * ld + c, or at
/// c * ld + r when `trans`; `ok` is false when BLAS cannot read it as is.
struct Mat {
  bool trans = false;
  int64_t ld = 0;
  bool ok = false;
};

inline Mat classify(int64_t rows, int64_t cols, int64_t srow, int64_t scol) {
  if ((cols == 1 || scol == 1) && (rows == 1 || srow >= std::max<int64_t>(1, cols)))
    return {false, rows == 1 ? std::max<int64_t>(1, cols) : srow, true};
  if ((rows == 1 || srow == 1) && (cols == 1 || scol >= std::max<int64_t>(1, rows)))
    return {true, cols == 1 ? std::max<int64_t>(1, rows) : scol, true};
  return {};
}

}  // namespace loom::blas
