// max_unpool2d and max_unpool2d_grad on the CPU (ops/unpool.cpp): planes
// [n, c] in parallel; within a plane the values are written in order, so an
// index given twice keeps the last value, as PyTorch's CPU kernel.

#include <algorithm>

#include "core/kernel.hpp"
#include "core/parallel.hpp"
#include "kernels/cpu/loops.hpp"

namespace loom::cpu {
namespace {

/// Fails the call on the first index outside [0, plane).
void check_indices(const KernelCall& c, const int64_t* ix, int64_t n, int64_t plane) {
  for (int64_t i = 0; i < n; ++i)
    if (ix[i] < 0 || ix[i] >= plane) fail(c.op, " '", c.node, "': index ", ix[i], " out of range [0, ", plane, ")");
}

/// Runs f(plane) for the N * C planes in parallel.
template <class F>
void for_planes(int64_t planes, int64_t work, F&& f) {
  parallel_for(planes, std::max<int64_t>(1, kGrain / std::max<int64_t>(1, work)), [&](int64_t lo, int64_t hi) {
    for (int64_t p = lo; p < hi; ++p) f(p);
  });
}

template <class T>
void unpool(const KernelCall& c) {
  const NDArray &y = c.in[0], &out = c.out[0];
  const int64_t planes = out.shape()[0] * out.shape()[1], plane = out.shape()[2] * out.shape()[3];
  const int64_t per = planes ? y.numel() / planes : 0;
  const int64_t* ix = static_cast<const int64_t*>(c.in[1].raw());
  check_indices(c, ix, y.numel(), plane);
  const T* v = static_cast<const T*>(y.raw());
  T* o = static_cast<T*>(out.raw());
  for_planes(planes, plane + per, [&](int64_t p) {
    std::fill(o + p * plane, o + (p + 1) * plane, T(0));
    for (int64_t i = p * per; i < (p + 1) * per; ++i) o[p * plane + ix[i]] = v[i];
  });
}

template <class T>
void unpool_grad(const KernelCall& c) {
  const NDArray &dz = c.in[0], &out = c.out[0];
  const int64_t planes = dz.shape()[0] * dz.shape()[1], plane = dz.shape()[2] * dz.shape()[3];
  const int64_t per = planes ? out.numel() / planes : 0;
  const int64_t* ix = static_cast<const int64_t*>(c.in[1].raw());
  check_indices(c, ix, out.numel(), plane);
  const T* g = static_cast<const T*>(dz.raw());
  T* o = static_cast<T*>(out.raw());
  for_planes(planes, per, [&](int64_t p) {
    for (int64_t i = p * per; i < (p + 1) * per; ++i) o[i] = g[p * plane + ix[i]];
  });
}

const bool registered = [] {
  register_kernel(
      "max_unpool2d", DeviceKind::cpu, FloatTypes::dtypes(),
      {[](const KernelCall& c) { dispatch_among(FloatTypes{}, c.out[0].dtype(), [&]<class T>() { unpool<T>(c); }); },
       true});
  register_kernel("max_unpool2d_grad", DeviceKind::cpu, FloatTypes::dtypes(),
                  {[](const KernelCall& c) {
                     dispatch_among(FloatTypes{}, c.out[0].dtype(), [&]<class T>() { unpool_grad<T>(c); });
                   },
                   true});
  return true;
}();

}  // namespace
}  // namespace loom::cpu
