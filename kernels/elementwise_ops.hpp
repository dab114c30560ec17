#pragma once
// The element-wise ops' scalar functions, defined once and shared by the CPU
// kernels (kernels/cpu/elementwise.cpp and fused.cpp) and the CUDA kernels
// (kernels/cuda/unary.cu, binary.cu and fused.cu): one __host__ __device__
// functor per op, and one list of them (ElementwiseOps) from which both
// devices register their kernels, the fused kernels evaluate instructions and
// the fusion pass learns what it may fuse. No switch over ops anywhere.
//
// A new element-wise op is its OpDef (ops/elementwise.cpp, with examples the
// registry sweep and the CUDA parity tests pick up), its builder in
// ops/ops.hpp, and a functor here added to ElementwiseOps.
//
// Semantics are the CPU's: signed integers wrap, NaN wins in maximum and
// minimum, integer division by -1 wraps (a zero divisor is checked by the
// kernels), float to bool is x != 0. On the host, float32 exp, log, tanh and
// sigmoid are branch-free Cephes polynomials (within 2 ulp of libm) so loops
// over them vectorize; device code uses CUDA's math functions.

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string_view>
#include <type_traits>

#include "core/kernel.hpp"

#if defined(__CUDACC__)
#define LOOM_HD __host__ __device__ __forceinline__
#else
#define LOOM_HD inline
#endif

namespace loom::ew {

// ---------------------------------------------------------------- integer arithmetic that wraps

template <class T>
LOOM_HD T wrap_add(T a, T b) {
  if constexpr (std::is_integral_v<T> && std::is_signed_v<T>) return T(std::make_unsigned_t<T>(a) + std::make_unsigned_t<T>(b));
  else return T(a + b);
}
template <class T>
LOOM_HD T wrap_sub(T a, T b) {
  if constexpr (std::is_integral_v<T> && std::is_signed_v<T>) return T(std::make_unsigned_t<T>(a) - std::make_unsigned_t<T>(b));
  else return T(a - b);
}
template <class T>
LOOM_HD T wrap_mul(T a, T b) {
  if constexpr (std::is_integral_v<T> && std::is_signed_v<T>) return T(std::make_unsigned_t<T>(a) * std::make_unsigned_t<T>(b));
  else return T(a * b);
}

// ---------------------------------------------------------------- host float32 math (vectorizable)

/// Host float32 math, forced inline: it must compile into each instruction-set
/// clone of the loops that call it (kernels/cpu/simd.hpp) to vectorize there.
#define LOOM_HOST_MATH inline __attribute__((always_inline))

/// exp(x), branch-free so that loops over it vectorize at any width: Cephes'
/// polynomial, within 2 ulp of libm up to FLT_MAX; exp(-inf) = 0,
/// exp(+inf) = inf, NaN stays NaN.
LOOM_HOST_MATH float fast_exp(float x) {
  constexpr float kHi = 88.72283f, kLo = -87.33654f;  // log(FLT_MAX), log(FLT_MIN)
  float xc = x > kLo ? x : kLo;  // NaN compares false: clamped to kLo, so the int conversion below stays defined
  xc = xc < kHi ? xc : kHi;
  const float fn = (xc * 1.44269504088896341f + 12582912.f) - 12582912.f;  // round to nearest
  float r = xc - fn * 0.693359375f;
  r = r - fn * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t n = int32_t(fn), a = n >> 1, b = n - a;  // 2^n in two normal factors: n reaches 128
  float y = p * std::bit_cast<float>((a + 127) << 23) * std::bit_cast<float>((b + 127) << 23);
  y = x > kHi ? std::numeric_limits<float>::infinity() : y;
  y = x < kLo ? 0.0f : y;
  return x != x ? x : y;
}

LOOM_HOST_MATH float fast_log(float x) {
  // Denormals are scaled into the normal range first.
  bool tiny = x < std::numeric_limits<float>::min();
  float xs = tiny ? x * 8388608.0f : x;  // 2^23
  int32_t bits = std::bit_cast<int32_t>(xs);
  int32_t e = ((bits >> 23) & 0xff) - 126 - (tiny ? 23 : 0);
  float m = std::bit_cast<float>((bits & 0x007fffff) | 0x3f000000);  // [0.5, 1)
  bool low = m < 0.707106781186547524f;
  e -= low ? 1 : 0;
  m = low ? m + m - 1.0f : m - 1.0f;
  float z = m * m;
  float y = 7.0376836292e-2f;
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  float fe = float(e);
  y += fe * -2.12194440e-4f;
  y += -0.5f * z;
  float r = m + y + fe * 0.693359375f;
  r = x == std::numeric_limits<float>::infinity() ? x : r;
  r = x == 0.0f ? -std::numeric_limits<float>::infinity() : r;
  return (x < 0.0f || x != x) ? std::numeric_limits<float>::quiet_NaN() : r;
}

LOOM_HOST_MATH float fast_tanh(float x) {
  float a = x < 0 ? -x : x;
  // Small |x|: odd polynomial (no cancellation); large: 1 - 2 / (e^{2|x|} + 1).
  float z = x * x;
  float small = ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z +
                  1.33314422036e-1f) * z - 3.33332819422e-1f) * z * x + x;
  float big = 1.0f - 2.0f / (fast_exp(2.0f * a) + 1.0f);
  big = x < 0 ? -big : big;
  return a < 0.625f ? small : big;
}

// ---------------------------------------------------------------- math for both devices

namespace math {
#if defined(__CUDA_ARCH__)
#define LOOM_MATH_PAIR(name, f32, f64)                                   \
  __device__ __forceinline__ float name(float x) { return ::f32(x); }   \
  __device__ __forceinline__ double name(double x) { return ::f64(x); }
LOOM_MATH_PAIR(exp, expf, exp)
LOOM_MATH_PAIR(log, logf, log)
LOOM_MATH_PAIR(tanh, tanhf, tanh)
LOOM_MATH_PAIR(sqrt, sqrtf, sqrt)
LOOM_MATH_PAIR(erf, erff, erf)
LOOM_MATH_PAIR(log1p, log1pf, log1p)
#undef LOOM_MATH_PAIR
__device__ __forceinline__ float pow(float a, float b) { return ::powf(a, b); }
__device__ __forceinline__ double pow(double a, double b) { return ::pow(a, b); }
#else
LOOM_HOST_MATH float exp(float x) { return fast_exp(x); }
inline double exp(double x) { return std::exp(x); }
LOOM_HOST_MATH float log(float x) { return fast_log(x); }
inline double log(double x) { return std::log(x); }
LOOM_HOST_MATH float tanh(float x) { return fast_tanh(x); }
inline double tanh(double x) { return std::tanh(x); }
template <class T> inline T sqrt(T x) { return std::sqrt(x); }
template <class T> inline T erf(T x) { return std::erf(x); }
template <class T> inline T log1p(T x) { return std::log1p(x); }
template <class T> inline T pow(T a, T b) { return std::pow(a, b); }
#endif
/// 1 / (1 + e^-x), never exponentiating a positive number in double (float:
/// exp(-x) -> inf gives 0, also stable).
template <class T>
LOOM_HD T sigmoid(T x) {
  if constexpr (std::is_same_v<T, float>) return 1.0f / (1.0f + exp(-x));
  if (x >= T(0)) return T(1) / (T(1) + exp(-x));
  const T e = exp(x);
  return e / (T(1) + e);
}
}  // namespace math

// ---------------------------------------------------------------- the functors

/// Kinds: arity 1 or 2 with a result of the operands' type, comparisons
/// (arity 2, bool result), and where (arity 3: cond ? a : b).
struct Unary {
  static constexpr int arity = 1;
  static constexpr bool to_bool = false;
};
struct Binary {
  static constexpr int arity = 2;
  static constexpr bool to_bool = false;
};
struct Compare {
  static constexpr int arity = 2;
  static constexpr bool to_bool = true;
  using types = AllTypes;  // registered under bool, dispatched on the operands' dtype
};

using SignedTypes = TypeList<float, double, int32_t, int64_t>;

struct Neg : Unary {
  static constexpr std::string_view name = "neg";
  using types = SignedTypes;
  template <class T> LOOM_HD static T f(T x) { return wrap_sub(T(0), x); }
};
struct Abs : Unary {
  static constexpr std::string_view name = "abs";
  using types = SignedTypes;
  template <class T> LOOM_HD static T f(T x) { return x < T(0) ? wrap_sub(T(0), x) : x; }
};
struct Sign : Unary {
  static constexpr std::string_view name = "sign";
  using types = SignedTypes;
  template <class T> LOOM_HD static T f(T x) { return T((T(0) < x) - (x < T(0))); }
};
struct Relu : Unary {
  static constexpr std::string_view name = "relu";
  using types = SignedTypes;
  // NaN stays NaN, as PyTorch's. The NaN test is explicit: with -fno-trapping-math GCC may
  // lower a plain select to maxsd, which returns 0 for NaN (seen at -O1, the sanitizer builds).
  template <class T> LOOM_HD static T f(T x) { return x > T(0) || x != x ? x : T(0); }
};
struct Exp : Unary {
  static constexpr std::string_view name = "exp";
  using types = FloatTypes;
  template <class T> LOOM_HD static T f(T x) { return math::exp(x); }
};
struct Log : Unary {
  static constexpr std::string_view name = "log";
  using types = FloatTypes;
  template <class T> LOOM_HD static T f(T x) { return math::log(x); }
};
struct Sqrt : Unary {
  static constexpr std::string_view name = "sqrt";
  using types = FloatTypes;
  template <class T> LOOM_HD static T f(T x) { return math::sqrt(x); }
};
struct Tanh : Unary {
  static constexpr std::string_view name = "tanh";
  using types = FloatTypes;
  template <class T> LOOM_HD static T f(T x) { return math::tanh(x); }
};
struct Sigmoid : Unary {
  static constexpr std::string_view name = "sigmoid";
  using types = FloatTypes;
  template <class T> LOOM_HD static T f(T x) { return math::sigmoid(x); }
};
struct Erf : Unary {
  static constexpr std::string_view name = "erf";
  using types = FloatTypes;
  template <class T> LOOM_HD static T f(T x) { return math::erf(x); }
};
/// PyTorch's softplus (beta 1, threshold 20): log(1 + e^x), x itself above 20.
struct Softplus : Unary {
  static constexpr std::string_view name = "softplus";
  using types = FloatTypes;
  template <class T> LOOM_HD static T f(T x) { return x > T(20) ? x : math::log1p(math::exp(x)); }
};
/// x * Phi(x) with the normal CDF by erf (PyTorch's gelu, approximate='none').
struct Gelu : Unary {
  static constexpr std::string_view name = "gelu";
  using types = FloatTypes;
  template <class T> LOOM_HD static T f(T x) { return T(0.5) * x * (T(1) + math::erf(x * T(0.70710678118654752440))); }
};
/// PyTorch's gelu(approximate='tanh'): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
struct GeluTanh : Unary {
  static constexpr std::string_view name = "gelu_tanh";
  using types = FloatTypes;
  template <class T> LOOM_HD static T f(T x) {
    return T(0.5) * x * (T(1) + math::tanh(T(0.79788456080286535588) * (x + T(0.044715) * x * x * x)));
  }
};

struct Add : Binary {
  static constexpr std::string_view name = "add";
  using types = NumericTypes;
  template <class T> LOOM_HD static T f(T a, T b) { return wrap_add(a, b); }
};
struct Sub : Binary {
  static constexpr std::string_view name = "sub";
  using types = NumericTypes;
  template <class T> LOOM_HD static T f(T a, T b) { return wrap_sub(a, b); }
};
struct Mul : Binary {
  static constexpr std::string_view name = "mul";
  using types = NumericTypes;
  template <class T> LOOM_HD static T f(T a, T b) { return wrap_mul(a, b); }
};
struct Div : Binary {
  static constexpr std::string_view name = "div";
  using types = NumericTypes;
  static constexpr bool checks_divisor = true;  // integer division by zero is the user's error
  template <class T> LOOM_HD static T f(T a, T b) {
    if constexpr (std::is_integral_v<T> && std::is_signed_v<T>) return b == T(-1) ? wrap_sub(T(0), a) : T(a / b);
    else return T(a / b);
  }
};
struct Maximum : Binary {
  static constexpr std::string_view name = "maximum";
  using types = NumericTypes;
  template <class T> LOOM_HD static T f(T a, T b) { return (a > b || a != a) ? a : b; }
};
struct Minimum : Binary {
  static constexpr std::string_view name = "minimum";
  using types = NumericTypes;
  template <class T> LOOM_HD static T f(T a, T b) { return (a < b || a != a) ? a : b; }
};
struct Pow : Binary {
  static constexpr std::string_view name = "pow";
  using types = FloatTypes;
  template <class T> LOOM_HD static T f(T a, T b) { return math::pow(a, b); }
};

struct Eq : Compare {
  static constexpr std::string_view name = "eq";
  template <class T> LOOM_HD static bool f(T a, T b) { return a == b; }
};
struct Ne : Compare {
  static constexpr std::string_view name = "ne";
  template <class T> LOOM_HD static bool f(T a, T b) { return a != b; }
};
struct Lt : Compare {
  static constexpr std::string_view name = "lt";
  template <class T> LOOM_HD static bool f(T a, T b) { return a < b; }
};
struct Le : Compare {
  static constexpr std::string_view name = "le";
  template <class T> LOOM_HD static bool f(T a, T b) { return a <= b; }
};
struct Gt : Compare {
  static constexpr std::string_view name = "gt";
  template <class T> LOOM_HD static bool f(T a, T b) { return a > b; }
};
struct Ge : Compare {
  static constexpr std::string_view name = "ge";
  template <class T> LOOM_HD static bool f(T a, T b) { return a >= b; }
};

/// cond ? a : b (cond is bool; in a fused program, a value != 0).
struct Where {
  static constexpr std::string_view name = "where";
  static constexpr int arity = 3;
  static constexpr bool to_bool = false;
  using types = AllTypes;
  template <class T> LOOM_HD static T f(bool cond, T a, T b) { return cond ? a : b; }
};

template <class... Ops>
struct OpList {
  static constexpr int size = int(sizeof...(Ops));
};

/// Every element-wise op; an op's position here is its index.
using ElementwiseOps = OpList<Neg, Abs, Sign, Relu, Exp, Log, Sqrt, Tanh, Sigmoid, Erf, Softplus, Gelu, GeluTanh,  //
                              Add, Sub, Mul, Div, Maximum, Minimum, Pow,                                         //
                              Eq, Ne, Lt, Le, Gt, Ge, Where>;

// ---------------------------------------------------------------- generated from the list

template <class Op, class T, class... Ts>
constexpr bool supports(TypeList<Ts...>) {
  return (std::is_same_v<T, Ts> || ...);
}
/// Whether Op is registered for element type T.
template <class Op, class T>
inline constexpr bool supports_v = supports<Op, T>(typename Op::types{});

/// Calls f.template operator()<Op>() for every op of the list, in order.
template <class F, class... Ops>
void for_each_op(OpList<Ops...>, F&& f) {
  (f.template operator()<Ops>(), ...);
}

/// The index of op `name` in ElementwiseOps, or -1.
template <class... Ops>
int op_index(std::string_view name, OpList<Ops...>) {
  int i = 0, found = -1;
  ((found < 0 && Ops::name == name ? found = i : ++i), ...);
  return found;
}
inline int op_index(std::string_view name) { return op_index(name, ElementwiseOps{}); }

template <class... Ops>
int op_arity(int index, OpList<Ops...>) {
  static constexpr int arity[] = {Ops::arity...};
  return arity[index];
}
inline int op_arity(int index) { return op_arity(index, ElementwiseOps{}); }

template <class Op, class T>
LOOM_HD T apply_one(const T* x) {
  if constexpr (!supports_v<Op, T>) return T(0);  // not registered for T: never called
  else if constexpr (Op::arity == 3) return Op::f(x[0] != T(0), x[1], x[2]);
  else if constexpr (Op::to_bool) return T(Op::f(x[0], x[1]));
  else if constexpr (Op::arity == 2) return Op::f(x[0], x[1]);
  else return Op::f(x[0]);
}

/// Op number `index` applied to operands x, all of type T (comparisons yield
/// T(0) or T(1); where reads x[0] != 0). A chain of comparisons generated from
/// the list: the one dispatch of the fused and the CUDA kernels.
template <class T, class... Ops>
LOOM_HD T apply(int index, const T* x, OpList<Ops...>) {
  T r = T(0);
  int i = 0;
  (void)((i++ == index ? (r = apply_one<Ops, T>(x), true) : false) || ...);
  return r;
}
template <class T>
LOOM_HD T apply(int index, const T* x) {
  return apply<T>(index, x, ElementwiseOps{});
}

/// Whether the fused kernels (CPU and CUDA) can run an instruction of `op`.
inline bool fusable_op(std::string_view op) { return op_index(op) >= 0; }
/// What the fused kernels of both devices run: the fusion pass forms the same
/// programs for CPU and CUDA plans.
inline constexpr int kFusedMaxInstrs = 32, kFusedMaxLeaves = 12, kFusedMaxOutputs = 4;
inline const FusionCaps kFusedCaps{kFusedMaxInstrs, kFusedMaxLeaves, kFusedMaxOutputs, &fusable_op};

}  // namespace loom::ew
