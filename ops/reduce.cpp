// Reductions: sum, mean, max, min over any axes (with keepdims), argmax and
// argmin, sum_to (the broadcast-gradient reduction) and size; the composite
// logsumexp (the oracle of the fused op in ops/softmax.cpp).

#include <cmath>
#include <limits>

#include "ops/common.hpp"
#include "ops/ops.hpp"

namespace loom {

using detail::for_each_index;
using detail::normalize_axes;
using detail::rand_array;
using detail::set_at;

namespace {

Shape reduced_shape(const Shape& s, const std::vector<int64_t>& axes, bool keepdims) {
  Shape r;
  for (size_t d = 0; d < s.size(); ++d) {
    bool red = std::find(axes.begin(), axes.end(), int64_t(d)) != axes.end();
    if (!red) r.push_back(s[d]);
    else if (keepdims) r.push_back(1);
  }
  return r;
}

/// dy expanded back to keepdims form (size-1 dims at the reduced axes).
Tensor keep(const Tensor& dy, const Tensor& x, const Attrs& a) {
  if (a.get_or<bool>("keepdims", false)) return dy;
  const auto& ax = a.ints("axes");
  std::vector<int64_t> axes;
  if (ax.empty())
    for (int64_t i = 0; i < x.ndim(); ++i) axes.push_back(i);
  else
    for (int64_t v : ax) axes.push_back(v < 0 ? v + x.ndim() : v);
  return axes.empty() ? dy : expand_dims(dy, axes);
}

/// Reference reduction in double: f folds values of one output cell.
NDArray ref_reduce(const NDArray& x, const Attrs& a, DType out_dtype,
                   const std::function<double(const std::vector<double>&)>& f) {
  const auto& ax = a.ints("axes");
  std::vector<int64_t> axes;
  for (int64_t i = 0; i < x.ndim(); ++i)
    if (ax.empty() || std::find(ax.begin(), ax.end(), i) != ax.end() ||
        std::find(ax.begin(), ax.end(), i - x.ndim()) != ax.end())
      axes.push_back(i);
  Shape ks = reduced_shape(x.shape(), axes, true);
  NDArray out = NDArray::empty(ks, out_dtype);
  for_each_index(ks, [&](const std::vector<int64_t>& o) {
    std::vector<double> vals;
    Shape sub = x.shape();
    for (size_t d = 0; d < sub.size(); ++d)
      if (ks[d] != 1 || std::find(axes.begin(), axes.end(), int64_t(d)) == axes.end()) sub[d] = 1;
    for_each_index(sub, [&](const std::vector<int64_t>& r) {
      std::vector<int64_t> idx(o);
      for (size_t d = 0; d < idx.size(); ++d) idx[d] += r[d];
      vals.push_back(x.at(idx));
    });
    set_at(out, o, f(vals));
  });
  return out.reshape(reduced_shape(x.shape(), axes, a.get_or<bool>("keepdims", false)));
}

std::vector<OpExample> reduce_examples(uint64_t seed, bool grad = true) {
  auto x = [&](Shape s) { return rand_array(s, -2, 2, seed++); };
  using V = std::vector<int64_t>;
  return {{"axis 1", {x({2, 3, 4})}, {{"axes", V{1}}, {"keepdims", false}}, {}, grad},
          {"axes 0,2 keepdims", {x({2, 3, 4})}, {{"axes", V{0, 2}}, {"keepdims", true}}, {}, grad},
          {"all", {x({3, 5})}, {{"axes", V{}}, {"keepdims", false}}, {}, grad},
          {"last, negative", {x({4, 6})}, {{"axes", V{-1}}, {"keepdims", false}}, {}, grad}};
}

/// Reductions without an identity (max, min, argmax, argmin) reject an empty
/// reduced axis, as NumPy and PyTorch do, naming the node: at build time for
/// known dims, when the plan resolves dynamic ones. max and min accept an
/// "initial" value (NumPy's `initial=`) that makes empty axes valid.
void check_not_empty(const InferContext& c, const std::vector<int64_t>& axes) {
  const Shape& s = c.in[0].shape;
  for (int64_t a : axes)
    c.check(s[size_t(a)] != 0, "reduction over axis ", a, " of ", S(s), ", which is empty",
            c.op == "max" || c.op == "min" ? " (pass an initial value to allow it)" : "");
}

void def_reduce(const char* name, std::initializer_list<DType> dtypes, GradFn grad,
                std::function<double(const std::vector<double>&)> fold, bool needs_elements = false) {
  OpDef d;
  d.name = name;
  d.min_inputs = d.max_inputs = 1;
  d.attrs = needs_elements ? AttrSchema{attr::axes(), attr::defaulted("keepdims", false),
                                        attr::optional("initial", AttrKind::real)}
                           : AttrSchema{attr::axes(), attr::defaulted("keepdims", false)};
  std::vector<DType> ok(dtypes);
  d.infer = [ok, needs_elements](const InferContext& c) {
    c.check(std::find(ok.begin(), ok.end(), c.in[0].dtype) != ok.end(), "dtype ", dtype_name(c.in[0].dtype),
            " not supported");
    auto axes = normalize_axes(c.attrs.ints("axes"), int64_t(c.in[0].shape.size()), c);
    if (needs_elements && !c.attrs.has("initial")) check_not_empty(c, axes);
    return std::vector<TensorType>{
        {c.in[0].dtype, reduced_shape(c.in[0].shape, axes, c.attrs.get_or<bool>("keepdims", false))}};
  };
  d.grad = std::move(grad);
  d.reference = [fold](std::span<const NDArray> in, const Attrs& a) {
    std::function<double(const std::vector<double>&)> f = fold;
    if (a.has("initial"))  // NumPy's initial: one more element of every reduction
      f = [fold, init = a.f("initial")](std::vector<double> v) {
        v.push_back(init);
        return fold(v);
      };
    return std::vector<NDArray>{ref_reduce(in[0], a, in[0].dtype(), f)};
  };
  d.examples = [needs_elements](uint64_t seed) {
    std::vector<OpExample> ex = reduce_examples(seed);
    if (needs_elements) {
      using V = std::vector<int64_t>;
      ex.push_back({"initial, empty axis", {NDArray::zeros({3, 0})}, {{"axes", V{1}}, {"initial", -INFINITY}}, {}, false});
      ex.push_back({"initial inside the range", {rand_array({4, 5}, -2, 2, seed)}, {{"axes", V{1}}, {"initial", 0.5}}});
    }
    return ex;
  };
  register_op(std::move(d));
}

Tensor extreme_grad(const GradContext& c) {
  const Tensor& x = c.inputs[0];
  Tensor yk = keep(c.outputs[0], x, c.attrs), dyk = keep(c.dout(0), x, c.attrs);
  Tensor mask = cast(x == yk, x.dtype());
  Tensor count = sum(mask, c.attrs.ints("axes"), true);
  // Ties share the gradient; none of it when the initial value won (count 0);
  // a NaN maximum (no element equals it) gives NaN, as PyTorch.
  return where(yk != yk, yk, mask * dyk / where(count > 0.0, count, 1.0));
}

const bool registered = [] {
  const std::initializer_list<DType> num = {float32, float64, int32, int64, uint8};
  def_reduce("sum", num,
             [](const GradContext& c) {
               return std::vector<Tensor>{broadcast_like(keep(c.dout(0), c.inputs[0], c.attrs), c.inputs[0])};
             },
             [](const std::vector<double>& v) {
               double s = 0;
               for (double x : v) s += x;
               return s;
             });
  def_reduce("mean", {float32, float64},
             [](const GradContext& c) {
               const Tensor& x = c.inputs[0];
               Tensor n = size(x, c.attrs.ints("axes"), x.dtype());
               return std::vector<Tensor>{broadcast_like(keep(c.dout(0), x, c.attrs), x) / n};
             },
             [](const std::vector<double>& v) {
               double s = 0;
               for (double x : v) s += x;
               return v.empty() ? std::nan("") : s / double(v.size());
             });
  // NaN wins, as in the kernels.
  auto extreme = [](bool is_max) {
    return [is_max](const std::vector<double>& v) {
      double r = v[0];
      for (double x : v) r = std::isnan(r) || std::isnan(x) ? NAN : is_max ? std::max(r, x) : std::min(r, x);
      return r;
    };
  };
  def_reduce("max", num, [](const GradContext& c) { return std::vector<Tensor>{extreme_grad(c)}; }, extreme(true),
             true);
  def_reduce("min", num, [](const GradContext& c) { return std::vector<Tensor>{extreme_grad(c)}; }, extreme(false),
             true);

  for (bool is_max : {true, false}) {
    OpDef d;
    d.name = is_max ? "argmax" : "argmin";
    d.min_inputs = d.max_inputs = 1;
    d.attrs = {attr::optional("axis", AttrKind::axis)};  // absent: over all elements
    d.infer = [](const InferContext& c) {
      c.check(c.in[0].dtype != boolean, "dtype bool not supported");
      int64_t nd = int64_t(c.in[0].shape.size());
      if (!c.attrs.has("axis")) {
        std::vector<int64_t> all(static_cast<size_t>(nd));
        for (int64_t i = 0; i < nd; ++i) all[size_t(i)] = i;
        check_not_empty(c, all);
        return std::vector<TensorType>{{int64, {}}};
      }
      int64_t ax = c.attrs.i("axis");
      c.check(ax >= -nd && ax < nd, "axis ", ax, " out of range for a ", nd, "-d tensor");
      check_not_empty(c, {ax < 0 ? ax + nd : ax});
      return std::vector<TensorType>{{int64, reduced_shape(c.in[0].shape, {ax < 0 ? ax + nd : ax}, false)}};
    };
    d.reference = [is_max](std::span<const NDArray> in, const Attrs& a) {
      NDArray x = in[0];
      if (!a.has("axis")) x = x.reshape({-1});
      int64_t ax = a.has("axis") ? a.i("axis") : 0;
      if (ax < 0) ax += x.ndim();
      Shape os = reduced_shape(x.shape(), {ax}, false);
      NDArray out = NDArray::empty(os, int64);
      for_each_index(os, [&](const std::vector<int64_t>& o) {
        std::vector<int64_t> idx(o);
        idx.insert(idx.begin() + ax, 0);
        int64_t best = 0;
        double bv = x.at(idx);
        for (int64_t i = 1; i < x.shape()[size_t(ax)] && bv == bv; ++i) {  // the first NaN wins, as in PyTorch
          idx[size_t(ax)] = i;
          double v = x.at(idx);
          if (v != v || (is_max ? v > bv : v < bv)) bv = v, best = i;
        }
        set_at(out, o, double(best));
      });
      return std::vector<NDArray>{out};
    };
    d.examples = [](uint64_t seed) {
      return std::vector<OpExample>{{"axis 1", {rand_array({3, 5}, -1, 1, seed)}, {{"axis", int64_t(1)}}, {}, false},
                                    {"axis 0", {rand_array({4, 2, 3}, -1, 1, seed + 1)}, {{"axis", int64_t(0)}}, {}, false},
                                    {"all", {rand_array({3, 4}, -1, 1, seed + 2)}, {}, {}, false}};
    };
    register_op(std::move(d));
  }
  {
    OpDef d;
    d.name = "sum_to";
    d.min_inputs = d.max_inputs = 2;
    d.attrs = AttrSchema::none();
    d.shape_only_inputs = {1};
    d.infer = [](const InferContext& c) {
      const Shape &g = c.in[0].shape, &to = c.in[1].shape;
      c.check(c.in[0].dtype != boolean, "dtype bool not supported");  // sums of bools: cast first
      bool ok = to.size() <= g.size();
      for (size_t i = 0; ok && i < to.size(); ++i) {
        int64_t a = to[i], b = g[g.size() - to.size() + i];
        ok = a == b || a == 1 || a < 0 || b < 0;
      }
      c.check(ok, "cannot reduce ", S(g), " to ", S(to));
      return std::vector<TensorType>{{c.in[0].dtype, to}};
    };
    d.view = [](const Layout& in, const Attrs&, size_t, std::span<const Shape> outs) {
      return in.shape == outs[0] ? std::optional<Layout>(in) : std::nullopt;
    };
    d.grad = [](const GradContext& c) {
      return std::vector<Tensor>{broadcast_like(c.dout(0), c.inputs[0]), Tensor()};
    };
    d.reference = [](std::span<const NDArray> in, const Attrs&) {
      const Shape &g = in[0].shape(), &to = in[1].shape();
      NDArray out = NDArray::zeros(to, in[0].dtype());
      for_each_index(g, [&](const std::vector<int64_t>& i) {
        auto o = detail::broadcast_index(i, to);
        set_at(out, o, out.at(o) + in[0].at(i));
      });
      return std::vector<NDArray>{out};
    };
    d.examples = [](uint64_t seed) {
      auto x = [&](Shape s) { return rand_array(s, -1, 1, seed++); };
      return std::vector<OpExample>{{"rows", {x({4, 3}), x({3})}, {}, {0}},
                                    {"keep 1", {x({2, 3, 4}), x({2, 1, 4})}, {}, {0}},
                                    {"same", {x({2, 2}), x({2, 2})}, {}, {0}}};
    };
    register_op(std::move(d));
  }
  {
    OpDef d;
    d.name = "size";
    d.min_inputs = d.max_inputs = 1;
    d.attrs = {attr::axes(), attr::defaulted("dtype", float32)};
    d.shape_only_inputs = {0};
    d.infer = [](const InferContext& c) {
      normalize_axes(c.attrs.ints("axes"), int64_t(c.in[0].shape.size()), c);
      return std::vector<TensorType>{{c.attrs.get_or<DType>("dtype", float32), {}}};
    };
    d.reference = [](std::span<const NDArray> in, const Attrs& a) {
      double n = 1;
      const auto& ax = a.ints("axes");
      for (int64_t d = 0; d < in[0].ndim(); ++d)
        if (ax.empty() || std::find(ax.begin(), ax.end(), d) != ax.end() ||
            std::find(ax.begin(), ax.end(), d - in[0].ndim()) != ax.end())
          n *= double(in[0].shape()[size_t(d)]);
      return std::vector<NDArray>{NDArray::scalar(n, a.get_or<DType>("dtype", float32))};
    };
    d.examples = [](uint64_t seed) {
      return std::vector<OpExample>{
          {"axes 0,2", {rand_array({2, 3, 4}, 0, 1, seed)}, {{"axes", std::vector<int64_t>{0, 2}}}, {}, false},
          {"all", {rand_array({5, 3}, 0, 1, seed)}, {{"axes", std::vector<int64_t>{}}, {"dtype", int64}}, {}, false}};
    };
    register_op(std::move(d));
  }
  return true;
}();

Graph& G(const Tensor& t) { return t.graph(); }

Tensor reduce(const char* op, const Tensor& x, const std::vector<int64_t>& axes, bool keepdims) {
  return G(x).add1(op, {x}, {{"axes", axes}, {"keepdims", keepdims}});
}

}  // namespace

Tensor sum(const Tensor& x, const std::vector<int64_t>& axes, bool keepdims) {
  // PyTorch sums integers and bools as int64: a uint8 mask counts past 255.
  return reduce("sum", is_floating(x.dtype()) ? x : cast(x, int64), axes, keepdims);
}
Tensor mean(const Tensor& x, const std::vector<int64_t>& axes, bool keepdims) { return reduce("mean", x, axes, keepdims); }
Tensor max(const Tensor& x, const std::vector<int64_t>& axes, bool keepdims) { return reduce("max", x, axes, keepdims); }
Tensor min(const Tensor& x, const std::vector<int64_t>& axes, bool keepdims) { return reduce("min", x, axes, keepdims); }
Tensor argmax(const Tensor& x, int64_t axis) { return G(x).add1("argmax", {x}, {{"axis", axis}}); }
Tensor argmax(const Tensor& x) { return G(x).add1("argmax", {x}); }
Tensor argmin(const Tensor& x, int64_t axis) { return G(x).add1("argmin", {x}, {{"axis", axis}}); }
Tensor argmin(const Tensor& x) { return G(x).add1("argmin", {x}); }
Tensor sum_to(const Tensor& g, const Tensor& like) { return G(g).add1("sum_to", {g, like}); }
Tensor var(const Tensor& x, const std::vector<int64_t>& axes, double correction, bool keepdims) {
  LOOM_CHECK(is_floating(x.dtype()), "var: expected a floating tensor, got ", dtype_name(x.dtype()));
  LOOM_CHECK(std::isfinite(correction) && correction >= 0, "var: correction must be finite and >= 0, got ", correction);
  const Tensor d = x - mean(x, axes, true);
  const Tensor dof = maximum(size(x, axes, x.dtype()) - correction, scalar_like(x, 0.0));
  return sum(d * d, axes, keepdims) / dof;
}
Tensor stddev(const Tensor& x, const std::vector<int64_t>& axes, double correction, bool keepdims) {
  return sqrt(var(x, axes, correction, keepdims));
}
Tensor size(const Tensor& x, const std::vector<int64_t>& axes, DType dtype) {
  return G(x).add1("size", {x}, {{"axes", axes}, {"dtype", dtype}});
}

Tensor detail::stable_max(const Tensor& x, const std::vector<int64_t>& axes) {
  // The shift that keeps exp from overflowing: -inf over an empty axis (no
  // error), and it carries no gradient (the true gradient, softmax, comes
  // through the sum).
  return stop_gradient(G(x).add1("max", {x}, {{"axes", axes}, {"keepdims", true}, {"initial", -INFINITY}}));
}

Tensor composite::logsumexp(const Tensor& x, const std::vector<int64_t>& axes, bool keepdims) {
  // As PyTorch: an infinite max shifts by 0, so a +inf gives +inf and an
  // all -inf (or empty) axis gives -inf instead of inf - inf = NaN.
  Tensor m = detail::stable_max(x, axes);
  m = where(abs(m) != INFINITY, m, 0.0);
  Tensor r = log(sum(exp(x - m), axes, true)) + m;
  if (keepdims) return r;
  std::vector<int64_t> ax = axes;
  if (ax.empty())
    for (int64_t i = 0; i < x.ndim(); ++i) ax.push_back(i);
  for (auto& a : ax) a = a < 0 ? a + x.ndim() : a;
  return squeeze(r, ax);
}

}  // namespace loom
