// The Adam update kernel (ops/optim.cpp): one pass, every element read before
// it is written, so p, m and v may be updated in their variables' memory.

#include <cmath>
#include <type_traits>

#include "core/kernel.hpp"
#include "kernels/cpu/loops.hpp"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_THREAD__)
#define LOOM_ADAM_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define LOOM_ADAM_CLONES
#endif

namespace loom::cpu {
namespace {

template <class T>
struct AdamArgs {
  T *po, *mo, *vo;
  const T *p, *m, *v, *g;
  T step, eps, decay, b1, c1, b2, c2;
};

// Elements [lo, hi). The outputs may be the inputs themselves (in place): every
// element is read before it is written, so the loop vectorizes (ivdep) even
// though the compiler cannot prove the arrays apart.
template <class T>
inline __attribute__((always_inline)) void adam_range(const AdamArgs<T>& a, int64_t lo, int64_t hi) {
#if !defined(__clang__)  // GCC's hint; clang (the fuzz and sanitizer builds) has no equivalent that cannot fail at -O1
#pragma GCC ivdep
#endif
  for (int64_t i = lo; i < hi; ++i) {
    const T gi = a.g[i];
    const T mi = a.m[i] * a.b1 + gi * a.c1;
    const T vi = a.v[i] * a.b2 + (gi * gi) * a.c2;
    const T pi = a.p[i] * a.decay - a.step * mi / (std::sqrt(vi) + a.eps);
    a.mo[i] = mi;
    a.vo[i] = vi;
    a.po[i] = pi;
  }
}

// float32, compiled for AVX-512, AVX2 and the baseline, picked at load time
// (an ifunc): a portable build still runs 16-lane loops here. Without FMA
// contraction (ISO C++ mode) every clone rounds alike: results are bitwise
// the same on any x86-64.
LOOM_ADAM_CLONES void adam_f32(const AdamArgs<float>& a, int64_t lo, int64_t hi) { adam_range(a, lo, hi); }

void adam_kernel(const KernelCall& c) {
  dispatch_among(FloatTypes{}, c.out[0].dtype(), [&]<class T>() {
    auto in = [&](int k) { return static_cast<const T*>(c.in[size_t(k)].raw()); };
    auto out = [&](int k) { return static_cast<T*>(c.out[size_t(k)].raw()); };
    // The constants as the composite form rounds them (computed in double, cast once).
    const double b1 = c.attrs.f("beta1"), b2 = c.attrs.f("beta2");
    const AdamArgs<T> a{out(0), out(1), out(2), in(0), in(1), in(2), in(3), *in(4), *in(5), *in(6),
                        T(b1), T(1.0 - b1), T(b2), T(1.0 - b2)};
    parallel_for(c.out[0].numel(), kGrain / 4, [&](int64_t lo, int64_t hi) {
      if constexpr (std::is_same_v<T, float>) adam_f32(a, lo, hi);
      else adam_range(a, lo, hi);
    });
  });
}

const bool registered = [] {
  register_kernel("adam_update", DeviceKind::cpu, FloatTypes::dtypes(), {&adam_kernel, true});
  return true;
}();

}  // namespace
}  // namespace loom::cpu
