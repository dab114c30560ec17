// 2-D pooling over [N, C, H, W]: max_pool2d, avg_pool2d and
// adaptive_avg_pool2d, each with gradient ops of its own.
//
// Max pooling's gradient scatters dy to the position of each window's
// maximum (the first one on ties; a NaN wins, the last of several, as
// PyTorch's CPU kernel): max_pool2d_grad(x, dy).
// It is linear in dy; its gradient gathers from those same positions,
// max_pool2d_pick(x, g), whose gradient is max_pool2d_grad again, so the
// family is closed under differentiation. Average pooling is linear: its
// gradient op's gradient is the pooling itself.
//
// Attributes: kernel [kh, kw], stride [sh, sw], padding [top, bottom, left,
// right] (at most half the kernel on each side, as PyTorch, so every window
// holds an input element), ceil_mode (PyTorch's: output sizes rounded up,
// the last window then partly outside the padded input; it must start inside
// the input or the leading padding), and for avg_pool2d count_include_pad
// (PyTorch's default true: padded positions count in the divisor, the part
// of a ceil_mode window past the padding never does);
// max_pool2d_indices and adaptive_max_pool2d_indices give PyTorch's
// return_indices: the maximum's position h * W + w in its plane (int64).
// adaptive_max_pool2d and adaptive_avg_pool2d: output_size [oh, ow], windows
// [floor(i*H/oh), ceil((i+1)*H/oh)) (overlapping; oh may exceed H, as
// PyTorch). The adaptive max family shares the windowed one's kernels and rules.

#include <cmath>
#include <limits>

#include "ops/common.hpp"
#include "ops/ops.hpp"
#include "ops/window.hpp"

namespace loom {

using detail::rand_array;
using V = std::vector<int64_t>;

namespace {

struct PoolAttrs {
  int64_t kh, kw, sh, sw, pt, pb, pl, pr;
};

PoolAttrs pool_attrs(const Attrs& a) {
  const V &k = a.ints("kernel"), &s = a.ints("stride"), &p = a.ints("padding");
  return {k[0], k[1], s[0], s[1], p[0], p[1], p[2], p[3]};
}

/// Outputs along an axis of `in` elements (padded by lo and hi, at most half
/// the kernel, so in + lo + hi >= k), PyTorch's rule: with ceil_mode rounded
/// up, less a last window that would start past the input and leading padding.
int64_t pooled_size(int64_t in, int64_t k, int64_t s, int64_t lo, int64_t hi, bool ceil_mode) {
  const int64_t span = in + lo + hi - k;
  if (!ceil_mode) return span / s + 1;
  const int64_t out = span / s + (span % s != 0) + 1;
  return (out - 1) * s >= in + lo ? out - 1 : out;
}

void check_input(const InferContext& c, const TensorType& x) {
  c.check(is_floating(x.dtype), "dtype ", dtype_name(x.dtype), " not supported (float32, float64)");
  c.check(x.shape.size() == 4, "expected a 4-D input [N, C, H, W], got ", S(x.shape),
          x.shape.size() == 3 ? " (add a batch dim: a 3-D input to a 2-D pooling)" : "");
}

/// Output type of a windowed pooling of x (max or average).
TensorType pool_output(const InferContext& c, const TensorType& x) {
  check_input(c, x);
  const V &k = c.attrs.ints("kernel"), &s = c.attrs.ints("stride"), &p = c.attrs.ints("padding");
  c.check(k.size() == 2 && k[0] > 0 && k[1] > 0, "kernel must be 2 positive values, got ", attr_str(k));
  c.check(s.size() == 2 && s[0] > 0 && s[1] > 0, "stride must be 2 positive values, got ", attr_str(s));
  c.check(p.size() == 4, "padding must be 4 values (top, bottom, left, right), got ", attr_str(p));
  const PoolAttrs a = pool_attrs(c.attrs);
  // Written so that no attribute value overflows: each pad is at most k / 2, so k - pad_lo - pad_hi >= 0.
  c.check(a.pt >= 0 && a.pb >= 0 && a.pl >= 0 && a.pr >= 0 && std::max(a.pt, a.pb) <= a.kh / 2 &&
              std::max(a.pl, a.pr) <= a.kw / 2,
          "padding ", attr_str(p), " must be >= 0 and at most half the kernel ", attr_str(k));
  // The window's area (an average's divisor) must not overflow; PyTorch refuses empty images.
  c.check(a.kh <= (int64_t(1) << 31) && a.kw <= (int64_t(1) << 31), "kernel ", attr_str(k), " is larger than 2^31");
  const int64_t H = x.shape[2], W = x.shape[3], unpadded_h = a.kh - a.pt - a.pb, unpadded_w = a.kw - a.pl - a.pr;
  c.check(H != 0 && W != 0, "expected a non-empty image, got input ", S(x.shape));
  c.check((H < 0 || H >= unpadded_h) && (W < 0 || W >= unpadded_w), "kernel ", attr_str(k),
          " is larger than the padded input ", S(x.shape), " (padding ", attr_str(p), ")");
  const bool ceil = c.attrs.get_or("ceil_mode", false);
  auto out = [&](int64_t in, int64_t k, int64_t s, int64_t lo, int64_t hi) {
    return in < 0 ? -1 : pooled_size(in, k, s, lo, hi, ceil);
  };
  return {x.dtype, {x.shape[0], x.shape[1], out(H, a.kh, a.sh, a.pt, a.pb), out(W, a.kw, a.sw, a.pl, a.pr)}};
}

TensorType adaptive_output(const InferContext& c, const TensorType& x) {
  check_input(c, x);
  const V& o = c.attrs.ints("output_size");
  c.check(o.size() == 2 && o[0] > 0 && o[1] > 0, "output_size must be 2 positive values, got ", attr_str(o));
  // An output larger than the input is allowed (PyTorch: windows overlap); an empty image has no windows.
  c.check(x.shape[2] != 0 && x.shape[3] != 0, "expected a non-empty image, got input ", S(x.shape));
  return {x.dtype, {x.shape[0], x.shape[1], o[0], o[1]}};
}

/// Checks that `g` has the shape the pooling of `x` produces.
void check_pooled(const InferContext& c, const TensorType& x, const TensorType& g, bool adaptive) {
  const TensorType y = adaptive ? adaptive_output(c, x) : pool_output(c, x);
  bool ok = g.dtype == x.dtype && g.shape.size() == 4;
  for (size_t i = 0; ok && i < 4; ++i) ok = g.shape[i] == y.shape[i] || g.shape[i] < 0 || y.shape[i] < 0;
  c.check(ok, "gradient ", dtype_name(g.dtype), S(g.shape), " does not match the pooled output ", dtype_name(y.dtype),
          S(y.shape), " of input ", S(x.shape));
}

// ---------------------------------------------------------------- reference

/// One output's window along an axis: [lo, hi) clipped to the input, and the
/// divisor length an average uses.
struct Span {
  int64_t lo, hi, count;
};

Span window(int64_t o, int64_t in, int64_t k, int64_t s, int64_t pad_lo, int64_t pad_hi, bool include_pad) {
  int64_t lo = o * s - pad_lo, hi = std::min(lo + k, in + pad_hi);
  const int64_t padded = hi - lo;
  lo = std::max<int64_t>(lo, 0);
  hi = std::min(hi, in);
  return {lo, hi, include_pad ? padded : hi - lo};
}

Span adaptive_window(int64_t o, int64_t in, int64_t out) {
  const int64_t lo = o * in / out, hi = ((o + 1) * in + out - 1) / out;
  return {lo, hi, hi - lo};
}

/// Calls f(n, c, oh, ow, hspan, wspan) for every output position.
template <class F>
void for_each_window(const Shape& x, const Shape& y, const Attrs& at, bool adaptive, F&& f) {
  const bool inc = at.get_or("count_include_pad", true);
  for (int64_t n = 0; n < y[0]; ++n)
    for (int64_t c = 0; c < y[1]; ++c)
      for (int64_t oh = 0; oh < y[2]; ++oh)
        for (int64_t ow = 0; ow < y[3]; ++ow) {
          Span hs, ws;
          if (adaptive) {
            hs = adaptive_window(oh, x[2], y[2]);
            ws = adaptive_window(ow, x[3], y[3]);
          } else {
            const PoolAttrs a = pool_attrs(at);
            hs = window(oh, x[2], a.kh, a.sh, a.pt, a.pb, inc);
            ws = window(ow, x[3], a.kw, a.sw, a.pl, a.pr, inc);
          }
          f(n, c, oh, ow, hs, ws);
        }
}

Shape pooled_shape(const Shape& x, const Attrs& at, bool adaptive) {
  if (adaptive) return {x[0], x[1], at.ints("output_size")[0], at.ints("output_size")[1]};
  const PoolAttrs a = pool_attrs(at);
  const bool ceil = at.get_or("ceil_mode", false);
  return {x[0], x[1], pooled_size(x[2], a.kh, a.sh, a.pt, a.pb, ceil), pooled_size(x[3], a.kw, a.sw, a.pl, a.pr, ceil)};
}

/// Flat index (into x) of the window's maximum, by PyTorch's rule: the first
/// largest value, unless a NaN comes (the last NaN then).
int64_t argmax_in(const NDArray& x, int64_t n, int64_t c, Span hs, Span ws) {
  const Shape& s = x.shape();
  int64_t best = -1;
  double bv = 0;
  for (int64_t h = hs.lo; h < hs.hi; ++h)
    for (int64_t w = ws.lo; w < ws.hi; ++w) {
      const double v = x.at({n, c, h, w});
      if (best < 0 || v > bv || std::isnan(v)) best = ((n * s[1] + c) * s[2] + h) * s[3] + w, bv = v;
    }
  return best;
}

std::vector<NDArray> ref_avg(std::span<const NDArray> in, const Attrs& at, bool adaptive) {
  const NDArray& x = in[0];
  NDArray y = NDArray::empty(pooled_shape(x.shape(), at, adaptive), x.dtype());
  for_each_window(x.shape(), y.shape(), at, adaptive,
                  [&](int64_t n, int64_t c, int64_t oh, int64_t ow, Span hs, Span ws) {
                    double acc = 0;
                    for (int64_t h = hs.lo; h < hs.hi; ++h)
                      for (int64_t w = ws.lo; w < ws.hi; ++w) acc += x.at({n, c, h, w});
                    detail::set_at(y, {n, c, oh, ow}, acc / double(hs.count * ws.count));
                  });
  return {y};
}

std::vector<NDArray> ref_avg_grad(std::span<const NDArray> in, const Attrs& at, bool adaptive) {
  const NDArray &dy = in[0], &x = in[1];
  NDArray dx = NDArray::zeros(x.shape(), float64);
  for_each_window(x.shape(), dy.shape(), at, adaptive,
                  [&](int64_t n, int64_t c, int64_t oh, int64_t ow, Span hs, Span ws) {
                    const double g = dy.at({n, c, oh, ow}) / double(hs.count * ws.count);
                    for (int64_t h = hs.lo; h < hs.hi; ++h)
                      for (int64_t w = ws.lo; w < ws.hi; ++w) detail::set_at(dx, {n, c, h, w}, dx.at({n, c, h, w}) + g);
                  });
  return {dx.astype(dy.dtype())};
}

NDArray distinct_values(const Shape& s, uint64_t seed) {
  // A random permutation of well-separated values: no ties, so maxima are
  // unambiguous and numeric gradients stable.
  NDArray a = rand_array(s, 0, 1, seed);
  std::vector<std::pair<double, int64_t>> order;
  for (int64_t i = 0; i < a.numel(); ++i) order.push_back({a.data<double>()[i], i});
  std::sort(order.begin(), order.end());
  for (size_t r = 0; r < order.size(); ++r) a.data<double>()[order[r].second] = -1.0 + 0.05 * double(r);
  return a;
}

Attrs pool_example(V kernel, V stride, V padding) {
  return {{"kernel", kernel}, {"stride", stride}, {"padding", padding}};
}

/// The attributes of a windowed pooling (avg: with count_include_pad) or an adaptive one.
AttrSchema pool_schema(bool adaptive, bool avg) {
  if (adaptive) return {attr::required("output_size", AttrKind::integers)};
  const AttrSpec kernel = attr::required("kernel", AttrKind::integers),
                 stride = attr::required("stride", AttrKind::integers),
                 padding = attr::required("padding", AttrKind::integers), ceil = attr::defaulted("ceil_mode", false);
  if (avg) return {kernel, stride, padding, ceil, attr::defaulted("count_include_pad", true)};
  return {kernel, stride, padding, ceil};
}

TensorType pooled_type(const InferContext& c, const TensorType& x, bool adaptive) {
  return adaptive ? adaptive_output(c, x) : pool_output(c, x);
}

/// Example inputs (x, and the pooled shape) with their attributes.
struct PoolCase {
  std::string label;
  Shape x;
  Attrs attrs;
};
std::vector<PoolCase> pool_cases(bool adaptive) {
  if (adaptive)
    return {{"global", {2, 3, 5, 4}, {{"output_size", V{1, 1}}}},
            {"overlapping 5x7 to 3x4", {1, 2, 5, 7}, {{"output_size", V{3, 4}}}},
            {"identity", {1, 1, 3, 2}, {{"output_size", V{3, 2}}}},
            {"upsampling 2x3 to 5x4", {1, 2, 2, 3}, {{"output_size", V{5, 4}}}}};
  Attrs ceil = pool_example({3, 2}, {2, 2}, {1, 1, 0, 1});
  ceil.set("ceil_mode", true);
  return {{"2x2 stride 2", {2, 3, 4, 6}, pool_example({2, 2}, {2, 2}, {0, 0, 0, 0})},
          {"3x3 stride 2 pad 1, odd size", {1, 2, 7, 5}, pool_example({3, 3}, {2, 2}, {1, 1, 1, 1})},
          {"overlapping 3x2 stride 1, batch 1", {1, 1, 5, 5}, pool_example({3, 2}, {1, 1}, {0, 0, 0, 0})},
          {"asymmetric padding", {2, 1, 5, 6}, pool_example({2, 4}, {2, 3}, {1, 0, 2, 1})},
          {"ceil_mode, partial last windows", {1, 2, 6, 5}, ceil}};
}

std::string max_op(bool adaptive) { return adaptive ? "adaptive_max_pool2d" : "max_pool2d"; }

/// One example per pool case, x of distinct values (no ties: each maximum unambiguous).
std::vector<OpExample> distinct_examples(bool adaptive, uint64_t seed) {
  std::vector<OpExample> ex;
  for (const PoolCase& e : pool_cases(adaptive)) ex.push_back({e.label, {distinct_values(e.x, seed++)}, e.attrs});
  return ex;
}

/// max_pool2d or adaptive_max_pool2d.
void register_max(bool adaptive) {
  const std::string pre = max_op(adaptive);
  OpDef d;
  d.name = pre;
  d.attrs = pool_schema(adaptive, false);
  d.min_inputs = d.max_inputs = 1;
  d.doc = adaptive ? "maximum over output_size windows covering [N, C, H, W]" : "maximum over windows of [N, C, H, W]";
  d.infer = [adaptive](const InferContext& c) { return std::vector<TensorType>{pooled_type(c, c.in[0], adaptive)}; };
  d.grad = [pre](const GradContext& c) {
    return std::vector<Tensor>{c.inputs[0].graph().add1(pre + "_grad", {c.inputs[0], c.dout(0)}, c.attrs)};
  };
  d.reference = [adaptive](std::span<const NDArray> in, const Attrs& at) {
    const NDArray& x = in[0];
    NDArray xc = x.compact(), y = NDArray::empty(pooled_shape(x.shape(), at, adaptive), x.dtype());
    NDArray flat = xc.reshape({x.numel()});
    for_each_window(x.shape(), y.shape(), at, adaptive,
                    [&](int64_t n, int64_t c, int64_t oh, int64_t ow, Span hs, Span ws) {
                      detail::set_at(y, {n, c, oh, ow}, flat.at({argmax_in(x, n, c, hs, ws)}));
                    });
    return std::vector<NDArray>{y};
  };
  d.examples = [adaptive](uint64_t seed) { return distinct_examples(adaptive, seed); };
  register_op(std::move(d));
}

/// Their gradient: dy added at each window's maximum.
void register_max_grad(bool adaptive) {
  const std::string pre = max_op(adaptive);
  OpDef d;
  d.name = pre + "_grad";
  d.attrs = pool_schema(adaptive, false);
  d.min_inputs = d.max_inputs = 2;  // x, dy
  d.doc = "gradient of " + pre + ": dy added at each window's maximum of x";
  d.infer = [adaptive](const InferContext& c) {
    check_pooled(c, c.in[0], c.in[1], adaptive);
    return std::vector<TensorType>{c.in[0]};
  };
  d.grad = [pre](const GradContext& c) {
    return std::vector<Tensor>{Tensor(), c.inputs[0].graph().add1(pre + "_pick", {c.inputs[0], c.dout(0)}, c.attrs)};
  };
  d.reference = [adaptive](std::span<const NDArray> in, const Attrs& at) {
    const NDArray &x = in[0], &dy = in[1];
    NDArray dx = NDArray::zeros({x.numel()}, float64);
    for_each_window(x.shape(), dy.shape(), at, adaptive,
                    [&](int64_t n, int64_t c, int64_t oh, int64_t ow, Span hs, Span ws) {
                      const int64_t i = argmax_in(x, n, c, hs, ws);
                      dx.data<double>()[i] += dy.at({n, c, oh, ow});
                    });
    return std::vector<NDArray>{dx.reshape(x.shape()).astype(dy.dtype())};
  };
  d.examples = [adaptive](uint64_t seed) {
    std::vector<OpExample> ex;
    for (const PoolCase& e : pool_cases(adaptive)) {
      ex.push_back({e.label,
                    {distinct_values(e.x, seed), rand_array(pooled_shape(e.x, e.attrs, adaptive), -1, 1, seed + 1)},
                    e.attrs,
                    {1}});
      seed += 2;
    }
    return ex;
  };
  register_op(std::move(d));
}

/// The gradient's gradient: g read at each window's maximum.
void register_max_pick(bool adaptive) {
  const std::string pre = max_op(adaptive);
  OpDef d;
  d.name = pre + "_pick";
  d.attrs = pool_schema(adaptive, false);
  d.min_inputs = d.max_inputs = 2;  // x, g
  d.doc = "g (shaped like x) read at each window's maximum of x: the gradient of " + pre + "_grad";
  d.infer = [adaptive](const InferContext& c) {
    c.check(c.in[1].dtype == c.in[0].dtype && c.in[1].shape == c.in[0].shape, "g ", S(c.in[1].shape),
            " must be shaped like x ", S(c.in[0].shape));
    return std::vector<TensorType>{pooled_type(c, c.in[0], adaptive)};
  };
  d.grad = [pre](const GradContext& c) {
    return std::vector<Tensor>{Tensor(), c.inputs[0].graph().add1(pre + "_grad", {c.inputs[0], c.dout(0)}, c.attrs)};
  };
  d.reference = [adaptive](std::span<const NDArray> in, const Attrs& at) {
    const NDArray &x = in[0], g = in[1].compact().reshape({in[1].numel()});
    NDArray y = NDArray::empty(pooled_shape(x.shape(), at, adaptive), x.dtype());
    for_each_window(x.shape(), y.shape(), at, adaptive,
                    [&](int64_t n, int64_t c, int64_t oh, int64_t ow, Span hs, Span ws) {
                      detail::set_at(y, {n, c, oh, ow}, g.at({argmax_in(x, n, c, hs, ws)}));
                    });
    return std::vector<NDArray>{y};
  };
  d.examples = [adaptive](uint64_t seed) {
    std::vector<OpExample> ex;
    for (const PoolCase& e : pool_cases(adaptive)) {
      ex.push_back({e.label, {distinct_values(e.x, seed), rand_array(e.x, -1, 1, seed + 1)}, e.attrs, {1}});
      seed += 2;
    }
    return ex;
  };
  register_op(std::move(d));
}

/// PyTorch's return_indices: each window's maximum as its index h * W + w in the plane (int64).
void register_max_indices(bool adaptive) {
  const std::string pre = max_op(adaptive);
  OpDef d;
  d.name = pre + "_indices";
  d.attrs = pool_schema(adaptive, false);
  d.min_inputs = d.max_inputs = 1;
  d.doc = "index h * W + w in its plane of each window's maximum of x (int64): " + pre + "'s return_indices";
  d.infer = [adaptive](const InferContext& c) {
    return std::vector<TensorType>{{int64, pooled_type(c, c.in[0], adaptive).shape}};
  };
  d.reference = [adaptive](std::span<const NDArray> in, const Attrs& at) {
    const NDArray& x = in[0];
    const Shape& s = x.shape();
    NDArray y = NDArray::empty(pooled_shape(s, at, adaptive), int64);
    for_each_window(s, y.shape(), at, adaptive, [&](int64_t n, int64_t c, int64_t oh, int64_t ow, Span hs, Span ws) {
      detail::set_at(y, {n, c, oh, ow}, double(argmax_in(x, n, c, hs, ws) - (n * s[1] + c) * s[2] * s[3]));
    });
    return std::vector<NDArray>{y};
  };
  d.examples = [adaptive](uint64_t seed) { return distinct_examples(adaptive, seed); };
  register_op(std::move(d));
}

const bool registered = [] {
  for (bool adaptive : {false, true}) {
    register_max(adaptive);
    register_max_grad(adaptive);
    register_max_pick(adaptive);
    register_max_indices(adaptive);
  }
  for (bool adaptive : {false, true}) {
    OpDef d;
    d.name = adaptive ? "adaptive_avg_pool2d" : "avg_pool2d";
    d.attrs = pool_schema(adaptive, true);
    d.min_inputs = d.max_inputs = 1;
    d.doc =
        adaptive ? "average over output_size windows covering [N, C, H, W]" : "average over windows of [N, C, H, W]";
    d.infer = [adaptive](const InferContext& c) { return std::vector<TensorType>{pooled_type(c, c.in[0], adaptive)}; };
    d.grad = [adaptive](const GradContext& c) {
      const char* op = adaptive ? "adaptive_avg_pool2d_grad" : "avg_pool2d_grad";
      return std::vector<Tensor>{c.inputs[0].graph().add1(op, {c.dout(0), c.inputs[0]}, c.attrs)};
    };
    d.reference = [adaptive](std::span<const NDArray> in, const Attrs& at) { return ref_avg(in, at, adaptive); };
    d.examples = [adaptive](uint64_t seed) {
      std::vector<OpExample> ex;
      for (const PoolCase& e : pool_cases(adaptive)) {
        ex.push_back({e.label, {rand_array(e.x, -1, 1, seed++)}, e.attrs});
        if (adaptive) continue;
        Attrs excl = e.attrs;
        excl.set("count_include_pad", false);
        ex.push_back({std::string(e.label) + ", padding not counted", {rand_array(e.x, -1, 1, seed++)}, excl});
      }
      return ex;
    };
    register_op(std::move(d));
  }
  for (bool adaptive : {false, true}) {
    OpDef d;
    d.name = adaptive ? "adaptive_avg_pool2d_grad" : "avg_pool2d_grad";
    d.attrs = pool_schema(adaptive, true);
    d.min_inputs = d.max_inputs = 2;  // dy, x (for its shape only)
    d.shape_only_inputs = {1};
    d.doc = "gradient of average pooling: each dy spread evenly over its window";
    d.infer = [adaptive](const InferContext& c) {
      check_pooled(c, c.in[1], c.in[0], adaptive);
      return std::vector<TensorType>{{c.in[0].dtype, c.in[1].shape}};
    };
    d.grad = [adaptive](const GradContext& c) {
      const char* op = adaptive ? "adaptive_avg_pool2d" : "avg_pool2d";
      return std::vector<Tensor>{c.inputs[0].graph().add1(op, {c.dout(0)}, c.attrs), Tensor()};
    };
    d.reference = [adaptive](std::span<const NDArray> in, const Attrs& at) { return ref_avg_grad(in, at, adaptive); };
    d.examples = [adaptive](uint64_t seed) {
      std::vector<OpExample> ex;
      auto add = [&](const std::string& label, const Shape& x, const Attrs& at) {
        ex.push_back(
            {label, {rand_array(pooled_shape(x, at, adaptive), -1, 1, seed), rand_array(x, -1, 1, seed + 1)}, at, {0}});
        seed += 2;
      };
      for (const PoolCase& e : pool_cases(adaptive)) {
        add(e.label, e.x, e.attrs);
        if (adaptive) continue;
        Attrs excl = e.attrs;
        excl.set("count_include_pad", false);
        add(std::string(e.label) + ", padding not counted", e.x, excl);
      }
      return ex;
    };
    register_op(std::move(d));
  }
  return true;
}();

Attrs pool_attrs_of(const Pool2dOptions& o, const char* what) {
  V stride = o.stride.empty() ? o.kernel : o.stride;
  Attrs a{{"kernel", detail::pair_attr(o.kernel, what, "kernel")},
          {"stride", detail::pair_attr(stride, what, "stride")},
          {"padding", detail::padding4(o.padding, what)}};
  if (o.ceil_mode) a.set("ceil_mode", true);  // left out otherwise: graphs without it keep their attributes
  return a;
}

}  // namespace

Tensor max_pool2d(const Tensor& x, const Pool2dOptions& options) {
  return x.graph().add1("max_pool2d", {x}, pool_attrs_of(options, "max_pool2d"));
}

Tensor avg_pool2d(const Tensor& x, const Pool2dOptions& options) {
  Attrs a = pool_attrs_of(options, "avg_pool2d");
  a.set("count_include_pad", options.count_include_pad);
  return x.graph().add1("avg_pool2d", {x}, std::move(a));
}

Tensor adaptive_avg_pool2d(const Tensor& x, const std::vector<int64_t>& output_size) {
  return x.graph().add1("adaptive_avg_pool2d", {x},
                        {{"output_size", detail::pair_attr(output_size, "adaptive_avg_pool2d", "output_size")}});
}

Tensor adaptive_max_pool2d(const Tensor& x, const std::vector<int64_t>& output_size) {
  return x.graph().add1("adaptive_max_pool2d", {x},
                        {{"output_size", detail::pair_attr(output_size, "adaptive_max_pool2d", "output_size")}});
}

Tensor max_pool2d_indices(const Tensor& x, const Pool2dOptions& options) {
  return x.graph().add1("max_pool2d_indices", {x}, pool_attrs_of(options, "max_pool2d"));
}

Tensor adaptive_max_pool2d_indices(const Tensor& x, const std::vector<int64_t>& output_size) {
  return x.graph().add1("adaptive_max_pool2d_indices", {x},
                        {{"output_size", detail::pair_attr(output_size, "adaptive_max_pool2d", "output_size")}});
}

}  // namespace loom
