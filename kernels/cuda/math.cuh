#pragma once
// Scalar functions of the element-wise kernels, with the CPU's semantics
// (kernels/cpu/elementwise.hpp): signed integers wrap, NaN wins in
// maximum/minimum, sigmoid never exponentiates a positive number.

#include <cuda_runtime.h>

#include <cstdint>
#include <string_view>
#include <type_traits>

namespace loom::cuda {

template <class T>
__device__ __forceinline__ T wrap_add(T a, T b) {
  if constexpr (std::is_integral_v<T> && std::is_signed_v<T>) return T(std::make_unsigned_t<T>(a) + std::make_unsigned_t<T>(b));
  else return T(a + b);
}
template <class T>
__device__ __forceinline__ T wrap_sub(T a, T b) {
  if constexpr (std::is_integral_v<T> && std::is_signed_v<T>) return T(std::make_unsigned_t<T>(a) - std::make_unsigned_t<T>(b));
  else return T(a - b);
}
template <class T>
__device__ __forceinline__ T wrap_mul(T a, T b) {
  if constexpr (std::is_integral_v<T> && std::is_signed_v<T>) return T(std::make_unsigned_t<T>(a) * std::make_unsigned_t<T>(b));
  else return T(a * b);
}

// Overloads picking the float or double CUDA math function.
__device__ __forceinline__ float d_exp(float x) { return expf(x); }
__device__ __forceinline__ double d_exp(double x) { return exp(x); }
__device__ __forceinline__ float d_log(float x) { return logf(x); }
__device__ __forceinline__ double d_log(double x) { return log(x); }
__device__ __forceinline__ float d_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double d_sqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float d_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double d_tanh(double x) { return tanh(x); }
__device__ __forceinline__ float d_pow(float a, float b) { return powf(a, b); }
__device__ __forceinline__ double d_pow(double a, double b) { return pow(a, b); }

template <class T>
__device__ __forceinline__ T d_sigmoid(T x) {
  if (x >= T(0)) return T(1) / (T(1) + d_exp(-x));
  T e = d_exp(x);
  return e / (T(1) + e);
}

/// The element-wise functions, shared by the unfused kernels and the fused
/// interpreter so that both give bitwise the same results.
enum class Fn : uint8_t {
  neg, abs, sign, relu, exp, log, sqrt, tanh, sigmoid,  // unary
  add, sub, mul, div, maximum, minimum, pow,            // binary
  eq, ne, lt, le, gt, ge,                               // comparisons (bool)
  where,
};

/// The Fn named `op`; false for ops without one.
inline bool fn_of(std::string_view op, Fn* fn) {
  static constexpr std::string_view names[] = {"neg", "abs", "sign", "relu", "exp", "log", "sqrt", "tanh",
                                                "sigmoid", "add", "sub", "mul", "div", "maximum", "minimum", "pow",
                                                "eq", "ne", "lt", "le", "gt", "ge", "where"};
  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); ++i)
    if (names[i] == op) {
      *fn = Fn(i);
      return true;
    }
  return false;
}

template <class T>
__device__ __forceinline__ T apply_unary(Fn fn, T v) {
  switch (fn) {
    case Fn::neg: return wrap_sub(T(0), v);
    case Fn::abs: return v < T(0) ? wrap_sub(T(0), v) : v;
    case Fn::sign: return T((T(0) < v) - (v < T(0)));
    case Fn::relu: return v > T(0) ? v : T(0);
    default: break;
  }
  if constexpr (std::is_floating_point_v<T>) {
    switch (fn) {
      case Fn::exp: return d_exp(v);
      case Fn::log: return d_log(v);
      case Fn::sqrt: return d_sqrt(v);
      case Fn::tanh: return d_tanh(v);
      default: return d_sigmoid(v);
    }
  }
  return v;  // the float functions are not registered for integers
}

template <class T>
__device__ __forceinline__ T apply_binary(Fn fn, T x, T y) {
  switch (fn) {
    case Fn::add: return wrap_add(x, y);
    case Fn::sub: return wrap_sub(x, y);
    case Fn::mul: return wrap_mul(x, y);
    case Fn::div:
      // Integers: the divisor was checked for zero; INT_MIN / -1 wraps.
      if constexpr (std::is_integral_v<T> && std::is_signed_v<T>) return y == T(-1) ? wrap_sub(T(0), x) : T(x / y);
      else return T(x / y);
    case Fn::maximum: return (x > y || x != x) ? x : y;  // NaN wins
    case Fn::minimum: return (x < y || x != x) ? x : y;
    default: break;
  }
  if constexpr (std::is_floating_point_v<T>) return d_pow(x, y);
  return x;  // pow is not registered for integers
}

template <class T>
__device__ __forceinline__ bool apply_compare(Fn fn, T x, T y) {
  switch (fn) {
    case Fn::eq: return x == y;
    case Fn::ne: return x != y;
    case Fn::lt: return x < y;
    case Fn::le: return x <= y;
    case Fn::gt: return x > y;
    default: return x >= y;
  }
}

}  // namespace loom::cuda
