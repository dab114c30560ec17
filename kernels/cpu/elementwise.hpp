#pragma once
// Element-wise functors shared by the element-wise kernels and the fused
// element-wise kernel: one definition of each scalar function.

#include <cmath>
#include <cstdint>
#include <type_traits>

namespace loom {
class NDArray;
}

namespace loom::cpu {

/// dst[...] = src[...] (same shape; dtypes may differ; both may be strided).
void copy_array(const NDArray& dst, const NDArray& src);

template <class T>
T wrap_add(T a, T b) {
  if constexpr (std::is_integral_v<T> && std::is_signed_v<T>)
    return T(std::make_unsigned_t<T>(a) + std::make_unsigned_t<T>(b));
  else return T(a + b);
}
template <class T>
T wrap_sub(T a, T b) {
  if constexpr (std::is_integral_v<T> && std::is_signed_v<T>)
    return T(std::make_unsigned_t<T>(a) - std::make_unsigned_t<T>(b));
  else return T(a - b);
}
template <class T>
T wrap_mul(T a, T b) {
  if constexpr (std::is_integral_v<T> && std::is_signed_v<T>)
    return T(std::make_unsigned_t<T>(a) * std::make_unsigned_t<T>(b));
  else return T(a * b);
}

// Unary functors: static T f(T).
struct Neg { template <class T> static T f(T x) { return wrap_sub(T(0), x); } };
struct Abs { template <class T> static T f(T x) { if constexpr (std::is_unsigned_v<T>) return x; else return x < 0 ? wrap_sub(T(0), x) : x; } };
struct Sign { template <class T> static T f(T x) { return T((T(0) < x) - (x < T(0))); } };
struct Relu { template <class T> static T f(T x) { return x > T(0) ? x : T(0); } };
struct Exp { template <class T> static T f(T x) { return std::exp(x); } };
struct Log { template <class T> static T f(T x) { return std::log(x); } };
struct Sqrt { template <class T> static T f(T x) { return std::sqrt(x); } };
struct Tanh { template <class T> static T f(T x) { return std::tanh(x); } };
struct Sigmoid {
  // Stable for large |x|: never exponentiates a positive number.
  template <class T> static T f(T x) {
    if (x >= T(0)) return T(1) / (T(1) + std::exp(-x));
    T e = std::exp(x);
    return e / (T(1) + e);
  }
};

// Binary functors: static T f(T, T).
struct Add { template <class T> static T f(T a, T b) { return wrap_add(a, b); } };
struct Sub { template <class T> static T f(T a, T b) { return wrap_sub(a, b); } };
struct Mul { template <class T> static T f(T a, T b) { return wrap_mul(a, b); } };
struct Div { template <class T> static T f(T a, T b) { return a / b; } };  // integer case checked by the kernel
struct Pow { template <class T> static T f(T a, T b) { return std::pow(a, b); } };
struct Maximum { template <class T> static T f(T a, T b) { return (a > b || a != a) ? a : b; } };  // NaN wins
struct Minimum { template <class T> static T f(T a, T b) { return (a < b || a != a) ? a : b; } };

// Comparisons: static bool f(T, T).
struct Eq { template <class T> static bool f(T a, T b) { return a == b; } };
struct Ne { template <class T> static bool f(T a, T b) { return a != b; } };
struct Lt { template <class T> static bool f(T a, T b) { return a < b; } };
struct Le { template <class T> static bool f(T a, T b) { return a <= b; } };
struct Gt { template <class T> static bool f(T a, T b) { return a > b; } };
struct Ge { template <class T> static bool f(T a, T b) { return a >= b; } };

}  // namespace loom::cpu
