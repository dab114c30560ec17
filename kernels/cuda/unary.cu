// Unary element-wise CUDA kernels, one per op of the shared list
// (kernels/elementwise_ops.hpp) with arity 1, registered from that list. One
// device kernel per dtype evaluates the op picked by its index in the list (a
// dispatch generated from the list), which keeps the number of instantiations
// (and nvcc time) small; the kernels are bound by memory bandwidth, not by
// that branch.

#include "kernels/cuda/common.cuh"
#include "kernels/elementwise_ops.hpp"

namespace loom::cuda {
namespace {

template <class T>
struct UnaryF {
  T* out;
  const T* x;
  int op;  // index in ew::ElementwiseOps
  __device__ void operator()(const int64_t (&off)[2]) const {
    const T a[1] = {x[off[1]]};
    out[off[0]] = ew::apply<T>(op, a);
  }
};

template <class Op>
void unary_kernel(const KernelCall& c) {
  use_device(c.ctx.device);
  const NDArray &x = c.in[0], &o = c.out[0];
  const Layout lo = o.layout(), lx = x.layout();
  Loop<2> L = make_loop<2>(o.shape(), {&lo, &lx});
  const int op = ew::op_index(Op::name);
  dispatch_among(typename Op::types{}, o.dtype(), [&]<class T>() {
    launch_loop<2>(L, stream_of(c), c.op, [&](const std::array<int64_t, 2>& b) {
      return UnaryF<T>{static_cast<T*>(o.raw()) + b[0], static_cast<const T*>(x.raw()) + b[1], op};
    });
  });
}

const bool registered = [] {
  ew::for_each_op(ew::ElementwiseOps{}, [&]<class Op>() {  // [&]: nvcc rejects a captureless template lambda
    if constexpr (Op::arity == 1) register_kernel(Op::name, DeviceKind::cuda, Op::types::dtypes(), {&unary_kernel<Op>});
  });
  return true;
}();

}  // namespace
}  // namespace loom::cuda
