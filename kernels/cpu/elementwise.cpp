// Element-wise CPU kernels: copy/cast, fill, and the ops of the shared list
// (kernels/elementwise_ops.hpp: unary, binary with broadcasting, comparisons,
// where), registered from that list. Compact operands take a flat
// vectorizable loop; anything else goes through the strided loop in loops.hpp.

#include "kernels/cpu/elementwise.hpp"

#include <cstring>
#include <limits>

#include "core/kernel.hpp"
#include "kernels/cpu/loops.hpp"

namespace loom::cpu {
namespace {

template <class T>
const T* cptr(const NDArray& a) { return static_cast<const T*>(a.raw()); }
template <class T>
T* mptr(const NDArray& a) { return static_cast<T*>(a.raw()); }

// ---------------------------------------------------------------- copy / cast

template <class R, class T>
R convert(T x) {
  if constexpr (std::is_same_v<R, bool>) return x != T(0);
  else if constexpr (std::is_floating_point_v<T> && std::is_integral_v<R>) {
    // Saturate instead of the undefined behaviour of an out-of-range cast.
    if (!(x == x)) return R(0);
    if (x <= T(std::numeric_limits<R>::lowest())) return std::numeric_limits<R>::lowest();
    if (x >= T(std::numeric_limits<R>::max())) return std::numeric_limits<R>::max();
    return R(x);
  } else return R(x);
}

template <class R, class T>
void copy_typed(const NDArray& dst, const NDArray& src) {
  int64_t n = dst.numel();
  if constexpr (std::is_same_v<R, T>) {
    if (dst.is_compact() && src.is_compact()) {
      char* d = static_cast<char*>(dst.raw());
      const char* s = static_cast<const char*>(src.raw());
      if (d == s) return;
      parallel_for(n, kGrain * 4, [&](int64_t lo, int64_t hi) {
        std::memmove(d + lo * int64_t(sizeof(T)), s + lo * int64_t(sizeof(T)), size_t(hi - lo) * sizeof(T));
      });
      return;
    }
  }
  if (dst.is_compact() && src.is_compact()) {
    R* d = mptr<R>(dst);
    const T* s = cptr<T>(src);
    parallel_for(n, kGrain, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) d[i] = convert<R>(s[i]);
    });
    return;
  }
  auto L = make_loop<2>({&dst.layout(), &src.layout()});
  run_loop<2>(L, {static_cast<char*>(dst.raw()), static_cast<char*>(src.raw())}, {sizeof(R), sizeof(T)},
              [](const std::array<char*, 2>& p, const std::array<int64_t, 2>& s, int64_t m) {
                R* d = reinterpret_cast<R*>(p[0]);
                const T* x = reinterpret_cast<const T*>(p[1]);
                if (s[0] == 1 && s[1] == 1)
                  for (int64_t i = 0; i < m; ++i) d[i] = convert<R>(x[i]);
                else
                  for (int64_t i = 0; i < m; ++i) d[i * s[0]] = convert<R>(x[i * s[1]]);
              });
}

// Copies in[0] into out[0]; the dtypes may differ (this is also "cast").
void copy_kernel(const KernelCall& c) { copy_array(c.out[0], c.in[0]); }

// ---------------------------------------------------------------- unary

template <class Op, class T>
void unary_typed(const KernelCall& c) {
  const NDArray& x = c.in[0];
  const NDArray& o = c.out[0];
  T* po = mptr<T>(o);
  if (x.is_compact()) {
    const T* px = cptr<T>(x);
    parallel_for(o.numel(), kGrain, [&](int64_t lo, int64_t hi) { map1<Op>(po + lo, px + lo, 1, hi - lo); });
    return;
  }
  auto L = make_loop<2>({&o.layout(), &x.layout()});
  run_loop<2>(L, {static_cast<char*>(o.raw()), static_cast<char*>(x.raw())}, {sizeof(T), sizeof(T)},
              [](const std::array<char*, 2>& p, const std::array<int64_t, 2>& s, int64_t m) {
                map1<Op>(reinterpret_cast<T*>(p[0]), reinterpret_cast<const T*>(p[1]), s[1], m);
              });
}

template <class Op>
void unary_kernel(const KernelCall& c) {
  dispatch_among(typename Op::types{}, c.out[0].dtype(), [&]<class T>() { unary_typed<Op, T>(c); });
}

// ---------------------------------------------------------------- binary

template <class Op, class T, class R>
void binary_typed(const KernelCall& c) {
  const NDArray& a = c.in[0];
  const NDArray& b = c.in[1];
  const NDArray& o = c.out[0];
  const int64_t n = o.numel();
  R* po = mptr<R>(o);
  const T* pa = cptr<T>(a);
  const T* pb = cptr<T>(b);
  const bool ca = a.is_compact() && a.numel() == n, cb = b.is_compact() && b.numel() == n;
  if ((ca || a.numel() == 1) && (cb || b.numel() == 1)) {  // contiguous or scalar operands
    const int64_t sa = ca ? 1 : 0, sb = cb ? 1 : 0;
    parallel_for(n, kGrain, [&](int64_t lo, int64_t hi) {
      map2<Op, T, R>(po + lo, pa + lo * sa, sa, pb + lo * sb, sb, hi - lo);
    });
    return;
  }
  auto L = make_loop<3>({&o.layout(), &a.layout(), &b.layout()});
  run_loop<3>(L, {static_cast<char*>(o.raw()), static_cast<char*>(a.raw()), static_cast<char*>(b.raw())},
              {sizeof(R), sizeof(T), sizeof(T)},
              [](const std::array<char*, 3>& p, const std::array<int64_t, 3>& s, int64_t m) {
                map2<Op, T, R>(reinterpret_cast<R*>(p[0]), reinterpret_cast<const T*>(p[1]), s[1],
                               reinterpret_cast<const T*>(p[2]), s[2], m);
              });
}

template <class T>
void check_no_zero(const KernelCall& c, const NDArray& b) {
  NDArray h = b.compact();
  const T* p = cptr<T>(h);
  for (int64_t i = 0, n = h.numel(); i < n; ++i)
    if (p[i] == T(0)) fail("div '", c.node, "': integer division by zero");
}

// An integer zero divisor is the user's error (Op::checks_divisor).
template <class Op>
void binary_kernel(const KernelCall& c) {
  dispatch_among(typename Op::types{}, c.out[0].dtype(), [&]<class T>() {
    if constexpr (requires { Op::checks_divisor; } && std::is_integral_v<T>) check_no_zero<T>(c, c.in[1]);
    binary_typed<Op, T, T>(c);
  });
}

// Comparisons: registered under the output dtype (bool), dispatched on the inputs'.
template <class Op>
void compare_kernel(const KernelCall& c) {
  dispatch(c.in[0].dtype(), [&]<class T>() { binary_typed<Op, T, bool>(c); });
}

// ---------------------------------------------------------------- where / fill

template <class T>
void where_typed(const KernelCall& c) {
  const NDArray& o = c.out[0];
  auto L = make_loop<4>({&o.layout(), &c.in[0].layout(), &c.in[1].layout(), &c.in[2].layout()});
  run_loop<4>(L,
              {static_cast<char*>(o.raw()), static_cast<char*>(c.in[0].raw()), static_cast<char*>(c.in[1].raw()),
               static_cast<char*>(c.in[2].raw())},
              {sizeof(T), 1, sizeof(T), sizeof(T)},
              [](const std::array<char*, 4>& p, const std::array<int64_t, 4>& s, int64_t m) {
                where_row(reinterpret_cast<T*>(p[0]), reinterpret_cast<const uint8_t*>(p[1]), s[1],
                          reinterpret_cast<const T*>(p[2]), s[2], reinterpret_cast<const T*>(p[3]), s[3], m);
              });
}

void where_kernel(const KernelCall& c) {
  dispatch(c.out[0].dtype(), [&]<class T>() { where_typed<T>(c); });
}

// Fills out[0] with attribute "value" (inputs, if any, only give the shape).
void fill_kernel(const KernelCall& c) {
  const NDArray& o = c.out[0];
  double v = c.attrs.f("value");
  dispatch(o.dtype(), [&]<class T>() {
    T x = convert<T>(v);
    T* p = mptr<T>(o);
    parallel_for(o.numel(), kGrain, [&](int64_t lo, int64_t hi) { std::fill(p + lo, p + hi, x); });
  });
}

// Writes in[1] (broadcast) into the variable's storage, out[0].
void assign_kernel(const KernelCall& c) {
  if (c.out[0].raw() == c.in[1].raw() && c.in[1].layout().strides == c.out[0].strides()) return;
  copy_array(c.out[0], c.in[1].broadcast_to(c.out[0].shape()));
}

const bool registered = [] {
  const auto all = AllTypes::dtypes();
  register_kernel("copy", DeviceKind::cpu, all, {&copy_kernel});
  register_kernel("cast", DeviceKind::cpu, all, {&copy_kernel});
  register_kernel("where", DeviceKind::cpu, all, {&where_kernel});
  register_kernel("assign", DeviceKind::cpu, all, {&assign_kernel});
  register_kernel("full", DeviceKind::cpu, all, {&fill_kernel});

  for_each_op(ElementwiseOps{}, []<class Op>() {
    if constexpr (Op::arity == 3) return;  // where: above
    else if constexpr (Op::to_bool) register_kernel(Op::name, DeviceKind::cpu, {boolean}, {&compare_kernel<Op>});
    else if constexpr (Op::arity == 2) register_kernel(Op::name, DeviceKind::cpu, Op::types::dtypes(), {&binary_kernel<Op>});
    else register_kernel(Op::name, DeviceKind::cpu, Op::types::dtypes(), {&unary_kernel<Op>});
  });
  return true;
}();

}  // namespace

void copy_array(const NDArray& dst, const NDArray& src) {
  dispatch(dst.dtype(), [&]<class R>() { dispatch(src.dtype(), [&]<class T>() { copy_typed<R, T>(dst, src); }); });
}

}  // namespace loom::cpu
