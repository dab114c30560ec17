// Unary element-wise CUDA kernels: neg, abs, sign, relu (float and signed
// integer) and exp, log, sqrt, tanh, sigmoid (float). One kernel per dtype
// with the function picked by a uniform runtime switch, which keeps the
// number of instantiations (and nvcc time) small; the kernels are bound by
// memory bandwidth, not by that branch.

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/math.cuh"

namespace loom::cuda {
namespace {

template <class T>
struct UnaryF {
  T* out;
  const T* x;
  Fn fn;
  __device__ void operator()(const int64_t (&off)[2]) const { out[off[0]] = apply_unary(fn, x[off[1]]); }
};

template <Fn F>
void unary_kernel(const KernelCall& c) {
  use_device(c.ctx.device);
  const NDArray &x = c.in[0], &o = c.out[0];
  const Layout lo = o.layout(), lx = x.layout();
  Loop<2> L = make_loop<2>(o.shape(), {&lo, &lx});
  dispatch_among(TypeList<float, double, int32_t, int64_t>{}, o.dtype(), [&]<class T>() {
    launch_loop<2>(L, stream_of(c), c.op, [&](const std::array<int64_t, 2>& b) {
      return UnaryF<T>{static_cast<T*>(o.raw()) + b[0], static_cast<const T*>(x.raw()) + b[1], F};
    });
  });
}

const bool registered = [] {
  const std::vector<DType> sig = {float32, float64, int32, int64}, flt = FloatTypes::dtypes();
  register_kernel("neg", DeviceKind::cuda, sig, {&unary_kernel<Fn::neg>});
  register_kernel("abs", DeviceKind::cuda, sig, {&unary_kernel<Fn::abs>});
  register_kernel("sign", DeviceKind::cuda, sig, {&unary_kernel<Fn::sign>});
  register_kernel("relu", DeviceKind::cuda, sig, {&unary_kernel<Fn::relu>});
  register_kernel("exp", DeviceKind::cuda, flt, {&unary_kernel<Fn::exp>});
  register_kernel("log", DeviceKind::cuda, flt, {&unary_kernel<Fn::log>});
  register_kernel("sqrt", DeviceKind::cuda, flt, {&unary_kernel<Fn::sqrt>});
  register_kernel("tanh", DeviceKind::cuda, flt, {&unary_kernel<Fn::tanh>});
  register_kernel("sigmoid", DeviceKind::cuda, flt, {&unary_kernel<Fn::sigmoid>});
  return true;
}();

}  // namespace
}  // namespace loom::cuda
