// Kernels of the shape ops that move data: concat, pad, dilate, slice_grad,
// gather/gather_grad and one_hot. Views (reshape, permute, slice, ...) need
// none: the planner maps them onto their input's memory.

#include <cstring>
#include <numeric>

#include "core/kernel.hpp"
#include "kernels/cpu/elementwise.hpp"
#include "kernels/cpu/loops.hpp"

namespace loom::cpu {
namespace {

void zero(const NDArray& a) {
  char* p = static_cast<char*>(a.raw());
  parallel_for(int64_t(a.nbytes()), kGrain * 8, [&](int64_t lo, int64_t hi) { std::memset(p + lo, 0, size_t(hi - lo)); });
}

std::vector<Slice> slices_of(const Attrs& a) {
  const auto &st = a.ints("starts"), &sp = a.ints("stops"), &sk = a.ints("steps");
  std::vector<Slice> r;
  for (size_t i = 0; i < st.size(); ++i) r.push_back({st[i], sp[i], sk[i]});
  return r;
}

void slice_grad_kernel(const KernelCall& c) {
  zero(c.out[0]);
  copy_array(c.out[0].slice(slices_of(c.attrs)), c.in[0]);
}

void concat_kernel(const KernelCall& c) {
  const NDArray& o = c.out[0];
  int64_t ax = c.attrs.i("axis");
  if (ax < 0) ax += o.ndim();
  int64_t off = 0;
  for (const NDArray& x : c.in) {
    std::vector<Slice> s(size_t(ax) + 1);
    int64_t n = x.shape()[size_t(ax)];
    s[size_t(ax)] = {off, off + n, 1};
    copy_array(o.slice(s), x);
    off += n;
  }
}

void pad_kernel(const KernelCall& c) {
  const NDArray& o = c.out[0];
  const auto& p = c.attrs.ints("pads");
  copy_array(o, NDArray::scalar(c.attrs.f("value"), o.dtype()).broadcast_to(o.shape()));
  std::vector<Slice> s;
  for (size_t i = 0; i < p.size() / 2; ++i) s.push_back({p[2 * i], o.shape()[i] - p[2 * i + 1], 1});
  copy_array(o.slice(s), c.in[0]);
}

void dilate_kernel(const KernelCall& c) {
  const NDArray& o = c.out[0];
  zero(o);
  std::vector<Slice> s(size_t(o.ndim()));
  for (int64_t a : c.attrs.ints("axes")) s[size_t(a < 0 ? a + o.ndim() : a)].step = c.attrs.i("dilation") + 1;
  copy_array(o.slice(s), c.in[0]);
}

template <class I>
int64_t checked_index(const KernelCall& c, I v, int64_t n) {
  if (v < 0 || int64_t(v) >= n) fail(c.op, " '", c.node, "': index ", int64_t(v), " out of range [0, ", n, ")");
  return int64_t(v);
}

void gather_kernel(const KernelCall& c) {
  const NDArray &t = c.in[0], &idx = c.in[1], &o = c.out[0];
  const int64_t rows = t.shape()[0], width = rows ? t.numel() / rows : 0, n = idx.numel();
  const size_t bytes = size_t(width) * t.itemsize();
  const char* src = static_cast<const char*>(t.raw());
  char* dst = static_cast<char*>(o.raw());
  dispatch_among(TypeList<int32_t, int64_t>{}, idx.dtype(), [&]<class I>() {
    const I* ix = static_cast<const I*>(idx.raw());
    for (int64_t i = 0; i < n; ++i) checked_index(c, ix[i], rows);
    parallel_for(n, std::max<int64_t>(1, kGrain / std::max<int64_t>(width, 1)), [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) std::memcpy(dst + i * int64_t(bytes), src + int64_t(ix[i]) * int64_t(bytes), bytes);
    });
  });
}

void gather_grad_kernel(const KernelCall& c) {
  const NDArray &dy = c.in[0], &idx = c.in[1], &o = c.out[0];
  const int64_t rows = o.shape()[0], width = rows ? o.numel() / rows : 0, n = idx.numel();
  zero(o);
  dispatch_among(FloatTypes{}, o.dtype(), [&]<class T>() {
    dispatch_among(TypeList<int32_t, int64_t>{}, idx.dtype(), [&]<class I>() {
      const I* ix = static_cast<const I*>(idx.raw());
      for (int64_t i = 0; i < n; ++i) checked_index(c, ix[i], rows);
      const T* g = static_cast<const T*>(dy.raw());
      T* out = static_cast<T*>(o.raw());
      // Parallel over columns: every task adds rows in index order, so the result is deterministic.
      parallel_for(width, std::max<int64_t>(1, kGrain / std::max<int64_t>(n, 1)), [&](int64_t lo, int64_t hi) {
        for (int64_t i = 0; i < n; ++i) {
          T* row = out + int64_t(ix[i]) * width;
          const T* gr = g + i * width;
          for (int64_t j = lo; j < hi; ++j) row[j] += gr[j];
        }
      });
    });
  });
}

void one_hot_kernel(const KernelCall& c) {
  const NDArray &idx = c.in[0], &o = c.out[0];
  const int64_t depth = o.shape().back(), n = idx.numel();
  zero(o);
  dispatch(o.dtype(), [&]<class T>() {
    T* out = static_cast<T*>(o.raw());
    dispatch_among(TypeList<int32_t, int64_t, uint8_t>{}, idx.dtype(), [&]<class I>() {
      const I* ix = static_cast<const I*>(idx.raw());
      for (int64_t i = 0; i < n; ++i) out[i * depth + checked_index(c, ix[i], depth)] = T(1);
    });
  });
}

void arange_like_kernel(const KernelCall& c) {
  int64_t* out = static_cast<int64_t*>(c.out[0].raw());
  std::iota(out, out + c.out[0].numel(), int64_t(0));
}

const bool registered = [] {
  const auto all = AllTypes::dtypes();
  register_kernel("arange_like", DeviceKind::cpu, {int64}, {&arange_like_kernel, true});
  register_kernel("slice_grad", DeviceKind::cpu, all, {&slice_grad_kernel});
  register_kernel("concat", DeviceKind::cpu, all, {&concat_kernel});
  register_kernel("pad", DeviceKind::cpu, all, {&pad_kernel});
  register_kernel("dilate", DeviceKind::cpu, all, {&dilate_kernel});
  register_kernel("gather", DeviceKind::cpu, all, {&gather_kernel, true});
  register_kernel("gather_grad", DeviceKind::cpu, FloatTypes::dtypes(), {&gather_grad_kernel, true});
  register_kernel("one_hot", DeviceKind::cpu, all, {&one_hot_kernel, true});
  return true;
}();

}  // namespace
}  // namespace loom::cpu
