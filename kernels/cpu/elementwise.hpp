#pragma once
// CPU helpers around the element-wise functors (kernels/elementwise_ops.hpp,
// shared with CUDA): the vectorizable select of where(), and the copy every
// shape kernel builds on. The functors are visible here as loom::cpu::Exp etc.

#include <bit>
#include <cstdint>
#include <type_traits>

#include "kernels/elementwise_ops.hpp"

namespace loom {
class NDArray;
}

namespace loom::cpu {

using namespace loom::ew;  // the functors (Exp::f, Sigmoid::f, ...) and wrap_add/sub/mul

/// dst[...] = src[...] (same shape; dtypes may differ; both may be strided).
void copy_array(const NDArray& dst, const NDArray& src);

/// q ? a : b on bit patterns: with the condition read as a byte (bool is 0/1)
/// and both operands loaded unconditionally, where-loops vectorize.
template <class T>
inline T select(uint8_t q, T a, T b) {
  if constexpr (sizeof(T) == 4 || sizeof(T) == 8) {
    using U = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
    U m = U(0) - U(q);
    return std::bit_cast<T>(U((std::bit_cast<U>(a) & m) | (std::bit_cast<U>(b) & ~m)));
  } else {
    return q ? a : b;
  }
}

/// One row of where(): strides 0 (broadcast) or 1 get vectorizable loops.
template <class T>
void where_row(T* d, const uint8_t* q, int64_t sq, const T* x, int64_t sx, const T* y, int64_t sy, int64_t n) {
  if (sq == 1 && sx == 1 && sy == 1) {
    for (int64_t i = 0; i < n; ++i) d[i] = select(q[i], x[i], y[i]);
  } else if (sq == 1 && sx == 1 && sy == 0) {
    const T yv = *y;
    for (int64_t i = 0; i < n; ++i) d[i] = select(q[i], x[i], yv);
  } else if (sq == 1 && sx == 0 && sy == 1) {
    const T xv = *x;
    for (int64_t i = 0; i < n; ++i) d[i] = select(q[i], xv, y[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) d[i] = select(q[i * sq], x[i * sx], y[i * sy]);
  }
}

/// The inner loop of element-wise op Op over n contiguous elements (operand
/// and result arrays): the unfused kernels' and the fused kernel's, so fused
/// and unfused results are bitwise the same. `in` is the operands' dtype
/// (where: of its value operands), float32 or float64.
using ChunkFn = void (*)(DType in, void* out, const void* const* args, int64_t n);
template <class Op>
void chunk(DType in, void* out, const void* const* args, int64_t n) {
  dispatch_among(FloatTypes{}, in, [&]<class T>() {
    const T* a = static_cast<const T*>(args[0]);
    if constexpr (Op::arity == 3) {
      where_row(static_cast<T*>(out), static_cast<const uint8_t*>(args[0]), 1, static_cast<const T*>(args[1]), 1,
                static_cast<const T*>(args[2]), 1, n);
    } else if constexpr (Op::arity == 2) {
      using R = std::conditional_t<Op::to_bool, bool, T>;
      R* o = static_cast<R*>(out);
      const T* b = static_cast<const T*>(args[1]);
      for (int64_t i = 0; i < n; ++i) o[i] = Op::f(a[i], b[i]);
    } else {
      T* o = static_cast<T*>(out);
      for (int64_t i = 0; i < n; ++i) o[i] = Op::f(a[i]);
    }
  });
}

}  // namespace loom::cpu
