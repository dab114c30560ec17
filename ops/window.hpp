#pragma once
// Helpers shared by the convolution and pooling ops (not a public header):
// the frontend functions take 1 or 2 values per spatial attribute and 1, 2 or
// 4 padding values; nodes always carry the normalized forms.

#include <vector>

#include "core/attrs.hpp"
#include "core/error.hpp"
#include "core/ndarray.hpp"
#include "core/shape.hpp"

namespace loom::detail {

/// 1 value -> both axes (h, w); 2 -> as given.
inline std::vector<int64_t> pair_attr(const std::vector<int64_t>& v, const char* what, const char* name) {
  LOOM_CHECK(v.size() == 1 || v.size() == 2, what, ": ", name, " needs 1 or 2 values (h, w), got ", attr_str(v));
  return v.size() == 1 ? std::vector<int64_t>{v[0], v[0]} : v;
}

/// 1 value -> every side; 2 (h, w) -> top = bottom = h, left = right = w; 4 -> (top, bottom, left, right).
inline std::vector<int64_t> padding4(const std::vector<int64_t>& p, const char* what) {
  if (p.size() == 1) return {p[0], p[0], p[0], p[0]};
  if (p.size() == 2) return {p[0], p[0], p[1], p[1]};
  LOOM_CHECK(p.size() == 4, what, ": padding needs 1, 2 (h, w) or 4 (top, bottom, left, right) values, got ",
             attr_str(p));
  return p;
}

/// The positions start, start + step, ... (count of them) of one axis, as a slice.
inline Slice strided(int64_t start, int64_t count, int64_t step) {
  return Slice::range(start, start + step * (count - 1) + 1, step);
}

/// Kernel taps that read the input rather than padding, summed over the
/// output positions of one axis (out positions, in elements, kernel k).
inline double taps_on_input(int64_t out, int64_t in, int64_t k, int64_t stride, int64_t pad, int64_t dilation) {
  double taps = 0;
  for (int64_t o = 0; o < out; ++o)
    for (int64_t r = 0; r < k; ++r) {
      const int64_t i = o * stride - pad + r * dilation;
      taps += i >= 0 && i < in;
    }
  return taps;
}

/// FLOPs of a convolution x [N, C, H, W] * w [K, C/groups, R, S] -> y [N, K, OH, OW]
/// (normalized attributes), 2 per multiply-add of an input element: taps over
/// padding multiply zeros. The kernels skip the taps that only ever read
/// padding (a 3x3 kernel on a 1x1 map does a ninth of the work of one on a
/// large map); im2col's few border products with padding are not counted.
inline double conv_flops(const Shape& x, const Shape& w, const Shape& y, const Attrs& a) {
  const std::vector<int64_t>&st = a.ints("stride"), &pd = a.ints("padding"), &dl = a.ints("dilation");
  const double rows = taps_on_input(y[2], x[2], w[2], st[0], pd[0], dl[0]);
  const double cols = taps_on_input(y[3], x[3], w[3], st[1], pd[2], dl[1]);
  return 2.0 * double(y[0]) * double(w[0]) * double(w[1]) * rows * cols;
}

}  // namespace loom::detail
