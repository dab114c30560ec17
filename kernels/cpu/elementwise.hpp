#pragma once
// CPU helpers around the element-wise functors (kernels/elementwise_ops.hpp,
// shared with CUDA): the vectorizable select of where(), and the copy every
// shape kernel builds on. The functors are visible here as loom::cpu::Exp etc.

#include <bit>
#include <cstdint>
#include <type_traits>

#include "kernels/cpu/simd.hpp"
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

/// The inner loops of element-wise op Op: o[i] = f(a[i * sa]) and
/// o[i] = f(a[i * sa], b[i * sb]), with strides 0 (broadcast) and 1 as
/// vectorizable special cases. Every CPU path of an element-wise op, fused or
/// not, runs these, compiled for each instruction set (kernels/cpu/simd.hpp):
/// fused and unfused results are bitwise the same on a given CPU.
template <class Op, class T>
LOOM_CPU_CLONES void map1(T* o, const T* a, int64_t sa, int64_t n) {
  if (sa == 1)
    for (int64_t i = 0; i < n; ++i) o[i] = Op::f(a[i]);
  else
    for (int64_t i = 0; i < n; ++i) o[i] = Op::f(a[i * sa]);
}
template <class Op, class T, class R>
LOOM_CPU_CLONES void map2(R* o, const T* a, int64_t sa, const T* b, int64_t sb, int64_t n) {
  if (sa == 1 && sb == 1) {
    for (int64_t i = 0; i < n; ++i) o[i] = Op::f(a[i], b[i]);
  } else if (sa == 1 && sb == 0) {
    const T y = *b;
    for (int64_t i = 0; i < n; ++i) o[i] = Op::f(a[i], y);
  } else if (sa == 0 && sb == 1) {
    const T x = *a;
    for (int64_t i = 0; i < n; ++i) o[i] = Op::f(x, b[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) o[i] = Op::f(a[i * sa], b[i * sb]);
  }
}

/// The inner loop of element-wise op Op over n contiguous elements (operand
/// and result arrays), as the fused kernel calls it. `in` is the operands'
/// dtype (where: of its value operands), float32 or float64.
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
      map2<Op, T, R>(static_cast<R*>(out), a, 1, static_cast<const T*>(args[1]), 1, n);
    } else {
      map1<Op, T>(static_cast<T*>(out), a, 1, n);
    }
  });
}

}  // namespace loom::cpu
