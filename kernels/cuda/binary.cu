// Binary element-wise CUDA kernels with numpy broadcasting over strided
// views, one per op of the shared list (kernels/elementwise_ops.hpp) with
// arity 2: arithmetic (registered under the operands' dtype) and comparisons
// (registered under bool, for operands of any dtype). As in unary.cu one
// device kernel per dtype evaluates the op picked by its index in the list.
//
// Integer division by zero is the user's error: like the CPU kernel, the
// divisor is scanned first and the call throws naming the node.

#include "kernels/cuda/common.cuh"
#include "kernels/elementwise_ops.hpp"

namespace loom::cuda {
namespace {

template <class T, class R>
struct BinaryF {
  R* out;
  const T* a;
  const T* b;
  int op;  // index in ew::ElementwiseOps
  __device__ void operator()(const int64_t (&off)[3]) const {
    const T x[2] = {a[off[1]], b[off[2]]};
    out[off[0]] = R(ew::apply<T>(op, x));
  }
};

// Reports the position of a zero element (any one: only its existence matters).
template <class T>
struct FindZeroF {
  const T* x;
  unsigned long long* slot;
  __device__ void operator()(const int64_t (&off)[1]) const {
    if (x[off[0]] == T(0)) atomicMin(slot, 0ull);
  }
};

template <class T>
void check_no_zero(const KernelCall& c, const NDArray& b) {
  DeviceCheck check(c, /*now=*/true);  // the division must not run with a zero divisor
  const Layout lb = b.layout();
  Loop<1> L = make_loop<1>(b.shape(), {&lb});
  launch_loop<1>(L, stream_of(c), "div (zero check)", [&](const std::array<int64_t, 1>& base) {
    return FindZeroF<T>{static_cast<const T*>(b.raw()) + base[0], check.pos()};
  });
  check.finish([&](const BadElement&) { fail("div '", c.node, "': integer division by zero"); });
}

/// Arithmetic (R = T) and comparisons (R = bool, dispatched on the operands' dtype).
template <class Op>
void binary_kernel(const KernelCall& c) {
  use_device(c.ctx.device);
  const NDArray &a = c.in[0], &b = c.in[1], &o = c.out[0];
  const Layout lo = o.layout(), la = a.layout(), lb = b.layout();
  Loop<3> L = make_loop<3>(o.shape(), {&lo, &la, &lb});
  const int op = ew::op_index(Op::name);
  dispatch_among(typename Op::types{}, a.dtype(), [&]<class T>() {
    using R = std::conditional_t<Op::to_bool, bool, T>;
    if constexpr (requires { Op::checks_divisor; } && std::is_integral_v<T>) check_no_zero<T>(c, b);
    launch_loop<3>(L, stream_of(c), c.op, [&](const std::array<int64_t, 3>& base) {
      return BinaryF<T, R>{static_cast<R*>(o.raw()) + base[0], static_cast<const T*>(a.raw()) + base[1],
                           static_cast<const T*>(b.raw()) + base[2], op};
    });
  });
}

const bool registered = [] {
  ew::for_each_op(ew::ElementwiseOps{}, [&]<class Op>() {  // [&]: nvcc rejects a captureless template lambda
    if constexpr (Op::arity == 2) {
      const std::vector<DType> dtypes = Op::to_bool ? std::vector<DType>{boolean} : Op::types::dtypes();
      register_kernel(Op::name, DeviceKind::cuda, dtypes, {&binary_kernel<Op>});
    }
  });
  return true;
}();

}  // namespace
}  // namespace loom::cuda
