#pragma once
// The geometry of a conv2d or pooling node as its kernels see it, read from
// the node's resolved shapes and normalized attributes (ops/conv.cpp and
// ops/pool.cpp validated both when the node was built). Shared by the CPU
// and CUDA kernels.

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/attrs.hpp"
#include "core/shape.hpp"

namespace loom::conv {

struct Geometry {
  int64_t N = 0, C = 0, H = 0, W = 0;  // input
  int64_t K = 0, R = 0, S = 0;         // output channels, kernel rows and columns
  int64_t OH = 0, OW = 0;              // output
  int64_t sh = 1, sw = 1, pt = 0, pb = 0, pl = 0, pr = 0, dh = 1, dw = 1, groups = 1;

  // constexpr: the CUDA kernels call these on the device too (--expt-relaxed-constexpr).
  constexpr int64_t Cg() const { return C / groups; }  // input channels per group
  constexpr int64_t Kg() const { return K / groups; }  // output channels per group
  constexpr int64_t P() const { return OH * OW; }      // output positions per image
  constexpr int64_t HW() const { return H * W; }
  /// Input row of output row oh and kernel row r (may be outside [0, H)).
  constexpr int64_t in_row(int64_t oh, int64_t r) const { return oh * sh - pt + r * dh; }
  constexpr int64_t in_col(int64_t ow, int64_t s) const { return ow * sw - pl + s * dw; }
};

/// x [N, C, H, W], w [K, C/groups, R, S], y [N, K, OH, OW].
inline Geometry geometry(const Shape& x, const Shape& w, const Shape& y, const Attrs& a) {
  const std::vector<int64_t>&st = a.ints("stride"), &pd = a.ints("padding"), &dl = a.ints("dilation");
  Geometry g;
  g.N = x[0], g.C = x[1], g.H = x[2], g.W = x[3];
  g.K = w[0], g.R = w[2], g.S = w[3];
  g.OH = y[2], g.OW = y[3];
  g.sh = st[0], g.sw = st[1], g.pt = pd[0], g.pb = pd[1], g.pl = pd[2], g.pr = pd[3], g.dh = dl[0], g.dw = dl[1];
  g.groups = a.i("groups");
  return g;
}

/// Kernel rows (or columns) that read the input for at least one output
/// position. Taps that only ever see padding (a 3x3 kernel over a 1x1 input
/// with padding 1 uses only its centre) are skipped: their products are zero.
inline std::vector<int64_t> live_taps(int64_t k, int64_t out, int64_t in, int64_t stride, int64_t pad, int64_t dil) {
  std::vector<int64_t> live;
  for (int64_t r = 0; r < k; ++r) {
    // Some o in [0, out) with 0 <= o*stride - pad + r*dil < in.
    const int64_t off = r * dil - pad;  // input index at o = 0
    const int64_t first = off >= 0 ? 0 : (-off + stride - 1) / stride;
    if (first < out && first * stride + off < in) live.push_back(r);
  }
  return live;
}

// ---------------------------------------------------------------- pooling

/// One output's window along an axis: input [lo, hi) and the divisor length.
struct Window {
  int64_t lo, hi, count;
};

/// Window o of kernel k, stride s and padding (before, after) along an axis of
/// `in` elements; `count` is the window clipped to the padded input
/// (count_include_pad) or to the input. constexpr: CUDA kernels use it too.
constexpr Window pool_window(int64_t o, int64_t in, int64_t k, int64_t s, int64_t pad_lo, int64_t pad_hi,
                             bool include_pad) {
  int64_t lo = o * s - pad_lo, hi = lo + k < in + pad_hi ? lo + k : in + pad_hi;
  const int64_t padded = hi - lo;
  lo = lo > 0 ? lo : 0;
  hi = hi < in ? hi : in;
  return {lo, hi, include_pad ? padded : hi - lo};
}

/// PyTorch's adaptive window o of `out` over `in`: [floor(o*in/out), ceil((o+1)*in/out)).
constexpr Window adaptive_window(int64_t o, int64_t in, int64_t out) {
  const int64_t lo = o * in / out, hi = ((o + 1) * in + out - 1) / out;
  return {lo, hi, hi - lo};
}

inline std::vector<Window> pool_windows(int64_t in, int64_t out, int64_t k, int64_t s, int64_t pad_lo, int64_t pad_hi,
                                        bool include_pad) {
  std::vector<Window> w;
  for (int64_t o = 0; o < out; ++o) w.push_back(pool_window(o, in, k, s, pad_lo, pad_hi, include_pad));
  return w;
}

inline std::vector<Window> adaptive_windows(int64_t in, int64_t out) {
  std::vector<Window> w;
  for (int64_t o = 0; o < out; ++o) w.push_back(adaptive_window(o, in, out));
  return w;
}

/// The row and column windows of a pooling node with input x and output y:
/// adaptive windows when it has "output_size", else kernel/stride/padding (and
/// ceil_mode, which only changes y's size).
struct PoolWindows {
  std::vector<Window> rows, cols;
};
inline PoolWindows pool_windows(const Shape& x, const Shape& y, const Attrs& a) {
  if (a.has("output_size")) return {adaptive_windows(x[2], y[2]), adaptive_windows(x[3], y[3])};
  const std::vector<int64_t>&k = a.ints("kernel"), &s = a.ints("stride"), &p = a.ints("padding");
  const bool inc = a.get_or("count_include_pad", true);
  return {pool_windows(x[2], y[2], k[0], s[0], p[0], p[1], inc), pool_windows(x[3], y[3], k[1], s[1], p[2], p[3], inc)};
}

}  // namespace loom::conv
