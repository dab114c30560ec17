#pragma once
// Element-wise functors shared by the element-wise kernels and the fused
// element-wise kernel: one definition of each scalar function.

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
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

// float32 exp/log/tanh written branch-free (selects only) so that loops over
// them vectorize; Cephes polynomials, within 2 ulp of libm. float64 uses libm.

/// y * 2^n for n in [-252, 254], scaling in two normal steps (no overflow of the scale itself).
inline float scale_pow2(float y, int32_t n) {
  int32_t a = n >> 1, b = n - a;
  return y * std::bit_cast<float>((a + 127) << 23) * std::bit_cast<float>((b + 127) << 23);
}

inline float fast_exp(float x) {
  constexpr float kHi = 88.72283f, kLo = -87.33654f;
  float xc = x < kLo ? kLo : (x > kHi ? kHi : x);
  xc = x != x ? 0.0f : xc;  // NaN: the result is x; converting NaN to int below would be undefined
  float t = xc * 1.44269504088896341f;
  int32_t n = int32_t(t + (t >= 0 ? 0.5f : -0.5f));
  float fn = float(n);
  float r = xc - fn * 0.693359375f;
  r = r - fn * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  float y = scale_pow2(p, n);
  y = x > kHi ? std::numeric_limits<float>::infinity() : y;
  y = x < kLo ? 0.0f : y;
  return x != x ? x : y;
}

inline float fast_log(float x) {
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

inline float fast_tanh(float x) {
  float a = x < 0 ? -x : x;
  // Small |x|: odd polynomial (no cancellation); large: 1 - 2 / (e^{2|x|} + 1).
  float z = x * x;
  float small = ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z +
                  1.33314422036e-1f) * z - 3.33332819422e-1f) * z * x + x;
  float big = 1.0f - 2.0f / (fast_exp(2.0f * a) + 1.0f);
  big = x < 0 ? -big : big;
  return a < 0.625f ? small : big;
}

inline float fast_sigmoid(float x) { return 1.0f / (1.0f + fast_exp(-x)); }

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

// Unary functors: static T f(T).
struct Neg { template <class T> static T f(T x) { return wrap_sub(T(0), x); } };
struct Abs { template <class T> static T f(T x) { if constexpr (std::is_unsigned_v<T>) return x; else return x < 0 ? wrap_sub(T(0), x) : x; } };
struct Sign { template <class T> static T f(T x) { return T((T(0) < x) - (x < T(0))); } };
struct Relu { template <class T> static T f(T x) { return x > T(0) ? x : T(0); } };
struct Exp {
  template <class T> static T f(T x) {
    if constexpr (std::is_same_v<T, float>) return fast_exp(x);
    else return std::exp(x);
  }
};
struct Log {
  template <class T> static T f(T x) {
    if constexpr (std::is_same_v<T, float>) return fast_log(x);
    else return std::log(x);
  }
};
struct Sqrt { template <class T> static T f(T x) { return std::sqrt(x); } };
struct Tanh {
  template <class T> static T f(T x) {
    if constexpr (std::is_same_v<T, float>) return fast_tanh(x);
    else return std::tanh(x);
  }
};
struct Sigmoid {
  template <class T> static T f(T x) {
    if constexpr (std::is_same_v<T, float>) return fast_sigmoid(x);  // exp(-x) -> inf gives 0: stable
    else if (x >= T(0)) return T(1) / (T(1) + std::exp(-x));
    else {
      T e = std::exp(x);
      return e / (T(1) + e);
    }
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
