// softmax, log_softmax and logsumexp as primitives with fused kernels (one
// pass over the input for the maximum, one for the exponentials, one to
// write), and their backward ops softmax_grad and log_softmax_grad. They were
// composites (ops::composite, kept as test oracles); as primitives they read
// the input twice instead of five or six times, and the backward is one pass.
//
// Infinities and NaN follow PyTorch, values and gradients:
//   logsumexp: the maximum m is replaced by 0 when it is infinite, so
//     logsumexp([+inf, 0]) = +inf and logsumexp([-inf, -inf]) = -inf;
//     an empty axis gives -inf; gradient dy * exp(x - y).
//   softmax / log_softmax: x - max(x) as is, so a row holding +inf, or only
//     -inf, is NaN; -inf entries beside finite ones get probability 0
//     (log-probability -inf); an empty axis gives an empty result.

#include <cmath>

#include "ops/common.hpp"
#include "ops/ops.hpp"

namespace loom {

using detail::for_each_index;
using detail::rand_array;
using detail::set_at;

namespace {

Graph& G(const Tensor& t) { return t.graph(); }

/// A compact shape viewed as [outer, n, inner] around dims [a0, a1].
struct Rows {
  int64_t outer = 1, n = 1, inner = 1;
};
Rows rows_of(const Shape& s, int64_t a0, int64_t a1) {
  Rows r;
  for (int64_t d = 0; d < int64_t(s.size()); ++d) (d < a0 ? r.outer : d <= a1 ? r.n : r.inner) *= s[size_t(d)];
  return r;
}

int64_t axis_attr(const InferContext& c) {
  const int64_t nd = int64_t(c.in[0].shape.size()), a = c.attrs.i("axis");
  c.check(a >= -nd && a < nd, "axis ", a, " out of range for a ", nd, "-d tensor ", S(c.in[0].shape));
  return a < 0 ? a + nd : a;
}

int64_t axis_of(const Attrs& a, int64_t ndim) {
  const int64_t ax = a.i("axis");
  return ax < 0 ? ax + ndim : ax;
}

void check_floating(const InferContext& c, size_t i) {
  c.check(is_floating(c.in[i].dtype), "dtype ", dtype_name(c.in[i].dtype), " not supported (float32, float64)");
}

/// The reduced axes of logsumexp: normalized, and one adjacent block.
std::vector<int64_t> lse_axes(const InferContext& c) {
  auto axes = detail::normalize_axes(c.attrs.ints("axes"), int64_t(c.in[0].shape.size()), c);
  for (size_t i = 1; i < axes.size(); ++i)
    c.check(axes[i] == axes[i - 1] + 1, "axes ", attr_str(c.attrs.ints("axes")),
            " must be adjacent (logsumexp() moves other axes together first)");
  return axes;
}

/// Every axis of an "axes" attribute on an `ndim`-d input (empty: all).
std::vector<int64_t> all_axes(const std::vector<int64_t>& axes, int64_t ndim) {
  std::vector<int64_t> r;
  if (axes.empty())
    for (int64_t i = 0; i < ndim; ++i) r.push_back(i);
  for (int64_t a : axes) r.push_back(a < 0 ? a + ndim : a);
  std::sort(r.begin(), r.end());
  return r;
}

// ---------------------------------------------------------------- references (double, plain loops)

/// Calls f(row values, output row indices) for each [n]-row of x.
template <class F>
void for_each_row(const NDArray& x, int64_t a0, int64_t a1, F&& f) {
  const Rows r = rows_of(x.shape(), a0, a1);
  NDArray c = x.astype(float64).compact();
  const double* p = c.data<double>();
  std::vector<double> row(size_t(r.n));
  for (int64_t o = 0; o < r.outer; ++o)
    for (int64_t i = 0; i < r.inner; ++i) {
      for (int64_t j = 0; j < r.n; ++j) row[size_t(j)] = p[(o * r.n + j) * r.inner + i];
      f(row, o, i, r);
    }
}

double ref_max(const std::vector<double>& v) {
  double m = -INFINITY;
  for (double x : v) m = x > m ? x : m;
  return m;
}

NDArray ref_softmax(const NDArray& x, int64_t axis, bool log) {
  NDArray out = NDArray::empty(x.shape(), float64);
  double* y = out.data<double>();
  for_each_row(x, axis, axis, [&](std::vector<double>& v, int64_t o, int64_t i, const Rows& r) {
    const double m = ref_max(v);
    double s = 0;
    for (double e : v) s += std::exp(e - m);
    for (int64_t j = 0; j < r.n; ++j) {
      const double z = v[size_t(j)] - m;
      y[(o * r.n + j) * r.inner + i] = log ? z - std::log(s) : std::exp(z) / s;
    }
  });
  return out.astype(x.dtype());
}

// softmax_grad: y (dy - sum(y dy)); log_softmax_grad: dy - exp(y) sum(dy).
NDArray ref_softmax_grad(const NDArray& y, const NDArray& dy, int64_t axis, bool log) {
  NDArray out = NDArray::empty(y.shape(), float64);
  NDArray g = dy.astype(float64).compact();
  double* o_ = out.data<double>();
  const double* gp = g.data<double>();
  for_each_row(y, axis, axis, [&](std::vector<double>& v, int64_t o, int64_t i, const Rows& r) {
    auto at = [&](int64_t j) { return (o * r.n + j) * r.inner + i; };
    double s = 0;
    for (int64_t j = 0; j < r.n; ++j) s += log ? gp[at(j)] : v[size_t(j)] * gp[at(j)];
    for (int64_t j = 0; j < r.n; ++j)
      o_[at(j)] = log ? gp[at(j)] - std::exp(v[size_t(j)]) * s : v[size_t(j)] * (gp[at(j)] - s);
  });
  return out.astype(y.dtype());
}

NDArray ref_logsumexp(const NDArray& x, const std::vector<int64_t>& axes, const Shape& out_shape) {
  const int64_t a0 = axes.empty() ? 0 : axes.front(), a1 = axes.empty() ? -1 : axes.back();
  NDArray out = NDArray::empty(out_shape, float64);
  double* y = out.data<double>();
  for_each_row(x, a0, a1, [&](std::vector<double>& v, int64_t o, int64_t i, const Rows& r) {
    double m = ref_max(v);
    if (std::isinf(m)) m = 0;
    double s = 0;
    for (double e : v) s += std::exp(e - m);
    y[o * r.inner + i] = m + std::log(s);
  });
  return out.astype(x.dtype());
}

// ---------------------------------------------------------------- examples

const double kInf = INFINITY;

/// Rows with infinities, NaN, huge values and an all -inf row (no gradient check).
NDArray special_rows() {
  const double v[6][4] = {{-kInf, 0, 1, 2},      {-kInf, -kInf, -kInf, -kInf}, {kInf, 0, 1, 2},
                          {NAN, 0, 1, 2},        {1000, 1001, 1002, -1000},    {kInf, -kInf, 3, kInf}};
  NDArray a = NDArray::empty({6, 4}, float64);
  for (int i = 0; i < 24; ++i) a.data<double>()[i] = v[i / 4][i % 4];
  return a;
}

std::vector<OpExample> softmax_examples(uint64_t seed) {
  auto x = [&](Shape s) { return rand_array(s, -3, 3, seed++); };
  auto ax = [](int64_t a) { return Attrs{{"axis", a}}; };
  return {{"last axis", {x({3, 5})}, ax(1)},
          {"middle axis", {x({2, 4, 3})}, ax(1)},
          {"first axis", {x({4, 3})}, ax(0)},
          {"negative axis", {x({2, 3, 4})}, ax(-1)},
          {"long rows", {x({3, 37})}, ax(1)},
          {"infinities and NaN", {special_rows()}, ax(1), {}, false},
          {"empty axis", {NDArray::zeros({2, 0}, float64)}, ax(1), {}, false}};
}

std::vector<OpExample> softmax_grad_examples(uint64_t seed, bool log) {
  auto x = [&](Shape s) { return rand_array(s, -3, 3, seed++); };
  auto ax = [](int64_t a) { return Attrs{{"axis", a}}; };
  // y is a softmax output (or log-softmax output), dy anything.
  auto y = [&](Shape s, int64_t a) { return ref_softmax(x(s), a < 0 ? a + int64_t(s.size()) : a, log); };
  return {{"last axis", {y({3, 5}, 1), x({3, 5})}, ax(1)},
          {"middle axis", {y({2, 4, 3}, 1), x({2, 4, 3})}, ax(1)},
          {"long rows", {y({2, 37}, -1), x({2, 37})}, ax(-1)}};
}

std::vector<OpExample> logsumexp_examples(uint64_t seed) {
  auto x = [&](Shape s) { return rand_array(s, -3, 3, seed++); };
  using V = std::vector<int64_t>;
  auto at = [](V axes, bool keep) { return Attrs{{"axes", axes}, {"keepdims", keep}}; };
  return {{"last", {x({3, 5})}, at({1}, false)},
          {"middle keepdims", {x({2, 4, 3})}, at({1}, true)},
          {"two adjacent", {x({2, 3, 4})}, at({1, 2}, false)},
          {"all", {x({3, 4})}, at({}, false)},
          {"long rows", {x({2, 37})}, at({-1}, false)},
          {"infinities and NaN", {special_rows()}, at({1}, false), {}, false},
          {"empty axis", {NDArray::zeros({2, 0}, float64)}, at({1}, false), {}, false}};
}

// ---------------------------------------------------------------- definitions

Tensor softmax_grad(const Tensor& y, const Tensor& dy, int64_t axis) {
  return G(y).add1("softmax_grad", {y, dy}, {{"axis", axis}});
}
Tensor log_softmax_grad(const Tensor& y, const Tensor& dy, int64_t axis) {
  return G(y).add1("log_softmax_grad", {y, dy}, {{"axis", axis}});
}

void def_softmax(const char* name, bool log) {
  OpDef d;
  d.name = name;
  d.min_inputs = d.max_inputs = 1;
  d.attrs = {attr::axis()};
  d.infer = [](const InferContext& c) {
    check_floating(c, 0);
    axis_attr(c);
    return detail::like_input(c);
  };
  d.grad = [log](const GradContext& c) {
    const int64_t a = axis_of(c.attrs, c.inputs[0].ndim());
    return std::vector<Tensor>{log ? log_softmax_grad(c.outputs[0], c.dout(0), a)
                                   : softmax_grad(c.outputs[0], c.dout(0), a)};
  };
  d.reference = [log](std::span<const NDArray> in, const Attrs& a) {
    return std::vector<NDArray>{ref_softmax(in[0], axis_of(a, in[0].ndim()), log)};
  };
  d.examples = softmax_examples;
  d.doc = log ? "log(softmax(x)) along one axis, fused and stable" : "exp(x - max) / sum(exp(x - max)) along one axis, fused";
  register_op(std::move(d));
}

// Second derivatives. softmax_grad(y, g) = y g - y s with s = sum(y g):
//   d/dg = softmax_grad(y, u);  d/dy = u (g - s) - g sum(u y).
// log_softmax_grad(y, g) = g - e^y t with t = sum(g):
//   d/dg = u - sum(u e^y);      d/dy = -u e^y t.
void def_softmax_grad(const char* name, bool log) {
  OpDef d;
  d.name = name;
  d.min_inputs = d.max_inputs = 2;
  d.attrs = {attr::axis()};
  d.infer = [](const InferContext& c) {
    check_floating(c, 0);
    c.check(c.in[0].dtype == c.in[1].dtype, "dtypes differ: ", dtype_name(c.in[0].dtype), " vs ",
            dtype_name(c.in[1].dtype));
    const Shape &a = c.in[0].shape, &b = c.in[1].shape;
    bool same = a.size() == b.size();
    for (size_t i = 0; same && i < a.size(); ++i) same = a[i] == b[i] || a[i] < 0 || b[i] < 0;
    c.check(same, "y ", S(a), " and dy ", S(b), " must have the same shape");
    axis_attr(c);
    return detail::like_input(c);
  };
  d.grad = [log](const GradContext& c) {
    const Tensor &y = c.inputs[0], &g = c.inputs[1], u = c.dout(0);
    const int64_t a = axis_of(c.attrs, y.ndim());
    if (log) {
      Tensor ey = exp(y);
      return std::vector<Tensor>{-u * ey * sum(g, {a}, true), u - sum(u * ey, {a}, true)};
    }
    Tensor s = sum(y * g, {a}, true);
    return std::vector<Tensor>{u * (g - s) - g * sum(u * y, {a}, true), softmax_grad(y, u, a)};
  };
  d.reference = [log](std::span<const NDArray> in, const Attrs& a) {
    return std::vector<NDArray>{ref_softmax_grad(in[0], in[1], axis_of(a, in[0].ndim()), log)};
  };
  d.examples = [log](uint64_t seed) { return softmax_grad_examples(seed, log); };
  d.doc = "the backward of (log_)softmax given its output y and the output's gradient dy";
  register_op(std::move(d));
}

const bool registered = [] {
  def_softmax("softmax", false);
  def_softmax("log_softmax", true);
  def_softmax_grad("softmax_grad", false);
  def_softmax_grad("log_softmax_grad", true);
  OpDef d;
  d.name = "logsumexp";
  d.min_inputs = d.max_inputs = 1;
  d.attrs = {attr::axes(), attr::defaulted("keepdims", false)};
  d.infer = [](const InferContext& c) {
    check_floating(c, 0);
    const auto axes = lse_axes(c);
    const bool keep = c.attrs.get_or<bool>("keepdims", false);
    Shape out;
    for (int64_t i = 0; i < int64_t(c.in[0].shape.size()); ++i) {
      const bool red = std::find(axes.begin(), axes.end(), i) != axes.end();
      if (!red) out.push_back(c.in[0].shape[size_t(i)]);
      else if (keep) out.push_back(1);
    }
    return std::vector<TensorType>{{c.in[0].dtype, out}};
  };
  d.grad = [](const GradContext& c) {
    const Tensor& x = c.inputs[0];
    Tensor y = c.outputs[0], dy = c.dout(0);
    if (!c.attrs.get_or<bool>("keepdims", false)) {
      const auto axes = all_axes(c.attrs.ints("axes"), x.ndim());
      y = expand_dims(y, axes);
      dy = expand_dims(dy, axes);
    }
    return std::vector<Tensor>{dy * exp(x - y)};
  };
  d.reference = [](std::span<const NDArray> in, const Attrs& a) {
    const auto axes = all_axes(a.ints("axes"), in[0].ndim());
    Shape out;
    for (int64_t i = 0; i < in[0].ndim(); ++i) {
      const bool red = std::find(axes.begin(), axes.end(), i) != axes.end();
      if (!red) out.push_back(in[0].shape()[size_t(i)]);
      else if (a.get_or<bool>("keepdims", false)) out.push_back(1);
    }
    return std::vector<NDArray>{ref_logsumexp(in[0], axes, out)};
  };
  d.examples = logsumexp_examples;
  d.doc = "log(sum(exp(x))) over one block of adjacent axes, fused and stable";
  register_op(std::move(d));
  return true;
}();

}  // namespace

Tensor softmax(const Tensor& x, int64_t axis) {
  if (axis < 0 && axis >= -x.ndim()) axis += x.ndim();
  return G(x).add1("softmax", {x}, {{"axis", axis}});
}

Tensor log_softmax(const Tensor& x, int64_t axis) {
  if (axis < 0 && axis >= -x.ndim()) axis += x.ndim();
  return G(x).add1("log_softmax", {x}, {{"axis", axis}});
}

Tensor logsumexp(const Tensor& x, const std::vector<int64_t>& axes, bool keepdims) {
  const int64_t nd = x.ndim();
  std::vector<int64_t> ax;
  for (int64_t a : axes) {
    LOOM_CHECK(a >= -nd && a < nd, "logsumexp '", x.name(), "': axis ", a, " out of range for a ", nd,
               "-d tensor ", S(x.shape()));
    ax.push_back(a < 0 ? a + nd : a);
  }
  ax = all_axes(ax, nd);
  LOOM_CHECK(std::adjacent_find(ax.begin(), ax.end()) == ax.end(), "logsumexp '", x.name(), "': repeated axis in ",
             attr_str(axes));
  bool adjacent = true;
  for (size_t i = 1; i < ax.size(); ++i) adjacent &= ax[i] == ax[i - 1] + 1;
  if (adjacent) return G(x).add1("logsumexp", {x}, {{"axes", ax}, {"keepdims", keepdims}});
  // Kept axes first (in order), reduced axes last: one adjacent block.
  std::vector<int64_t> perm, last;
  for (int64_t i = 0; i < nd; ++i)
    (std::find(ax.begin(), ax.end(), i) != ax.end() ? last : perm).push_back(i);
  const int64_t kept = int64_t(perm.size());
  perm.insert(perm.end(), last.begin(), last.end());
  std::vector<int64_t> tail;
  for (int64_t i = kept; i < nd; ++i) tail.push_back(i);
  Tensor r = G(x).add1("logsumexp", {permute(x, perm)}, {{"axes", tail}, {"keepdims", false}});
  return keepdims ? expand_dims(r, ax) : r;
}

}  // namespace loom
