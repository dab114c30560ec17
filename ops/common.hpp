#pragma once
// Helpers shared by the op definitions in ops/ (not a public header):
// inference shortcuts, index iteration for the reference implementations,
// and random example inputs.

#include <functional>
#include <limits>
#include <vector>

#include "core/graph.hpp"
#include "core/philox.hpp"

namespace loom::detail {

/// Output type equal to input i's.
inline std::vector<TensorType> like_input(const InferContext& c, size_t i = 0) { return {c.in[i]}; }

/// Same rank and equal dims where both are known.
inline bool fits(const Shape& a, const Shape& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i] >= 0 && b[i] >= 0 && a[i] != b[i]) return false;
  return true;
}

/// Calls f(index) for every multi-index of `shape` in row-major order.
inline void for_each_index(const Shape& shape, const std::function<void(const std::vector<int64_t>&)>& f) {
  for (int64_t d : shape)
    if (d == 0) return;
  std::vector<int64_t> idx(shape.size(), 0);
  while (true) {
    f(idx);
    size_t d = shape.size();
    while (d > 0) {
      if (++idx[d - 1] < shape[d - 1]) break;
      idx[d - 1] = 0;
      --d;
    }
    if (d == 0) return;
  }
}

/// Writes v (converted as casts convert: to integers saturating, NaN to 0) at a full index of a host array.
inline void set_at(const NDArray& a, const std::vector<int64_t>& idx, double v) {
  int64_t off = 0;
  for (size_t i = 0; i < idx.size(); ++i) off += idx[i] * a.strides()[i];
  dispatch(a.dtype(), [&]<class T>() {
    T* p = static_cast<T*>(a.raw()) + off;
    if constexpr (std::is_same_v<T, bool>) *p = v != 0;
    else if constexpr (std::is_integral_v<T>)
      *p = v != v ? T(0)
           : v <= double(std::numeric_limits<T>::lowest()) ? std::numeric_limits<T>::lowest()
           : v >= double(std::numeric_limits<T>::max())    ? std::numeric_limits<T>::max()
                                                           : T(v);
    else *p = T(v);
  });
}

/// Index into an input broadcast to `out` rank (numpy rules).
inline std::vector<int64_t> broadcast_index(const std::vector<int64_t>& out_idx, const Shape& in_shape) {
  std::vector<int64_t> r(in_shape.size());
  size_t off = out_idx.size() - in_shape.size();
  for (size_t i = 0; i < in_shape.size(); ++i) r[i] = in_shape[i] == 1 ? 0 : out_idx[off + i];
  return r;
}

/// Host array of uniform values in [lo, hi) from a Philox stream.
inline NDArray rand_array(const Shape& shape, double lo, double hi, uint64_t seed, DType dtype = float64) {
  NDArray a = NDArray::empty(shape, float64);
  double* p = a.data<double>();
  for (int64_t i = 0; i < a.numel(); ++i) p[i] = lo + (hi - lo) * philox::uniform_f64(seed, 0, uint64_t(i));
  return dtype == float64 ? a : a.astype(dtype);
}

/// Values away from zero by at least `gap` (for ops with a kink at 0).
inline NDArray rand_away_from_zero(const Shape& shape, double gap, double hi, uint64_t seed) {
  NDArray a = rand_array(shape, gap, hi, seed);
  double* p = a.data<double>();
  for (int64_t i = 0; i < a.numel(); ++i)
    if (philox::uniform_f64(seed + 1, 0, uint64_t(i)) < 0.5) p[i] = -p[i];
  return a;
}

/// Reference for element-wise ops: out[idx] = f(inputs broadcast at idx).
inline NDArray ref_elementwise(std::span<const NDArray> in, DType out_dtype,
                               const std::function<double(const std::vector<double>&)>& f) {
  Shape s;
  for (const NDArray& a : in) s = broadcast_shapes(s, a.shape());
  NDArray out = NDArray::empty(s, out_dtype);
  std::vector<double> v(in.size());
  for_each_index(s, [&](const std::vector<int64_t>& idx) {
    for (size_t k = 0; k < in.size(); ++k) v[k] = in[k].at(broadcast_index(idx, in[k].shape()));
    set_at(out, idx, f(v));
  });
  return out;
}

/// max over `axes` (keepdims) as a constant shift for exp: -inf over an empty
/// axis, no gradient (ops/reduce.cpp; used by logsumexp and log_softmax).
Tensor stable_max(const Tensor& x, const std::vector<int64_t>& axes);

/// The gradient of a fused gradient op (batch_norm_grad, layer_norm_grad) for second-order
/// derivatives, through its definition in ordinary ops: `composite` builds the op's outputs
/// from its inputs; returns the gradients of sum_i <output_i, dout_i> for every input. The
/// inputs are fresh identity nodes there, so that a partial derivative does not follow the
/// forward graph that computed one input from another (mean and var from x, say).
std::vector<Tensor> grad_through_composite(
    const GradContext& c, const std::function<std::vector<Tensor>(const std::vector<Tensor>&)>& composite);

/// Normalized, sorted, unique axes from an "axes" attribute; empty = all axes.
std::vector<int64_t> normalize_axes(const std::vector<int64_t>& axes, int64_t ndim, const InferContext& c);

}  // namespace loom::detail
