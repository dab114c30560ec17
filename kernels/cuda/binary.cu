// Binary element-wise CUDA kernels with numpy broadcasting over strided views:
// add, sub, mul, div, maximum, minimum (numeric), pow (float) and the
// comparisons eq, ne, lt, le, gt, ge (any dtype, bool output). As in unary.cu
// the function is a uniform runtime switch: one kernel per dtype.
//
// Integer division by zero is the user's error: like the CPU kernel, the
// divisor is scanned first and the call throws naming the node.

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/math.cuh"

namespace loom::cuda {
namespace {

template <class T>
struct BinaryF {
  T* out;
  const T* a;
  const T* b;
  Fn fn;
  __device__ void operator()(const int64_t (&off)[3]) const { out[off[0]] = apply_binary(fn, a[off[1]], b[off[2]]); }
};

template <class T>
struct CompareF {
  bool* out;
  const T* a;
  const T* b;
  Fn fn;
  __device__ void operator()(const int64_t (&off)[3]) const { out[off[0]] = apply_compare(fn, a[off[1]], b[off[2]]); }
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
  cudaStream_t s = stream_of(c);
  ErrorSlot slot(s);
  const Layout lb = b.layout();
  Loop<1> L = make_loop<1>(b.shape(), {&lb});
  launch_loop<1>(L, s, "div (zero check)", [&](const std::array<int64_t, 1>& base) {
    return FindZeroF<T>{static_cast<const T*>(b.raw()) + base[0], slot.ptr()};
  });
  if (slot.read() >= 0) fail("div '", c.node, "': integer division by zero");
}

template <Fn F>
void binary_kernel(const KernelCall& c) {
  use_device(c.ctx.device);
  const NDArray &a = c.in[0], &b = c.in[1], &o = c.out[0];
  const Layout lo = o.layout(), la = a.layout(), lb = b.layout();
  Loop<3> L = make_loop<3>(o.shape(), {&lo, &la, &lb});
  dispatch_among(NumericTypes{}, o.dtype(), [&]<class T>() {
    if constexpr (F == Fn::div && std::is_integral_v<T>) check_no_zero<T>(c, b);
    launch_loop<3>(L, stream_of(c), c.op, [&](const std::array<int64_t, 3>& base) {
      return BinaryF<T>{static_cast<T*>(o.raw()) + base[0], static_cast<const T*>(a.raw()) + base[1],
                        static_cast<const T*>(b.raw()) + base[2], F};
    });
  });
}

// Registered under the output dtype (bool), dispatched on the inputs'.
template <Fn F>
void compare_kernel(const KernelCall& c) {
  use_device(c.ctx.device);
  const NDArray &a = c.in[0], &b = c.in[1], &o = c.out[0];
  const Layout lo = o.layout(), la = a.layout(), lb = b.layout();
  Loop<3> L = make_loop<3>(o.shape(), {&lo, &la, &lb});
  dispatch(a.dtype(), [&]<class T>() {
    launch_loop<3>(L, stream_of(c), c.op, [&](const std::array<int64_t, 3>& base) {
      return CompareF<T>{static_cast<bool*>(o.raw()) + base[0], static_cast<const T*>(a.raw()) + base[1],
                         static_cast<const T*>(b.raw()) + base[2], F};
    });
  });
}

const bool registered = [] {
  const auto num = NumericTypes::dtypes();
  register_kernel("add", DeviceKind::cuda, num, {&binary_kernel<Fn::add>});
  register_kernel("sub", DeviceKind::cuda, num, {&binary_kernel<Fn::sub>});
  register_kernel("mul", DeviceKind::cuda, num, {&binary_kernel<Fn::mul>});
  register_kernel("div", DeviceKind::cuda, num, {&binary_kernel<Fn::div>});
  register_kernel("maximum", DeviceKind::cuda, num, {&binary_kernel<Fn::maximum>});
  register_kernel("minimum", DeviceKind::cuda, num, {&binary_kernel<Fn::minimum>});
  register_kernel("pow", DeviceKind::cuda, FloatTypes::dtypes(), {&binary_kernel<Fn::pow>});
  register_kernel("eq", DeviceKind::cuda, {boolean}, {&compare_kernel<Fn::eq>});
  register_kernel("ne", DeviceKind::cuda, {boolean}, {&compare_kernel<Fn::ne>});
  register_kernel("lt", DeviceKind::cuda, {boolean}, {&compare_kernel<Fn::lt>});
  register_kernel("le", DeviceKind::cuda, {boolean}, {&compare_kernel<Fn::le>});
  register_kernel("gt", DeviceKind::cuda, {boolean}, {&compare_kernel<Fn::gt>});
  register_kernel("ge", DeviceKind::cuda, {boolean}, {&compare_kernel<Fn::ge>});
  return true;
}();

}  // namespace
}  // namespace loom::cuda
