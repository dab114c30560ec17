// Batch normalization with batch statistics, as fused primitives: one op
// computes the per-channel statistics and normalizes (optionally with the
// ReLU that follows in a ConvBN block), one computes all three gradients.
// As compositions of mean, variance and element-wise ops the forward and
// backward of a [128, 32, 28, 28] activation took ~8 passes over memory; the
// fused kernels take 2 each.
//
//   batch_norm(x, weight, bias) -> (y, mean, var)
//       x [N, C, ...] normalized per channel over every other axis; mean and
//       var (biased) are [C]; y = relu?((x - mean) / sqrt(var + eps) * w + b).
//   batch_norm_grad(x, dy, weight, bias, mean, var) -> (dx, dweight, dbias)
//
// batch_norm_grad's own gradient (for second-order derivatives) is derived
// from its composite definition in ordinary ops, through gradients().

#include <cmath>

#include "ops/common.hpp"
#include "ops/ops.hpp"

namespace loom {

using detail::rand_array;

namespace {

void check_channels(const InferContext& c, const TensorType& x, size_t i, const char* what) {
  const TensorType& v = c.in[i];
  c.check(v.dtype == x.dtype, what, " has dtype ", dtype_name(v.dtype), ", expected ", dtype_name(x.dtype));
  c.check(v.shape.size() == 1 && (v.shape[0] == x.shape[1] || v.shape[0] < 0 || x.shape[1] < 0), what, " must be [",
          x.shape[1], "] for input ", S(x.shape), ", got ", S(v.shape));
}

void check_input(const InferContext& c, const TensorType& x) {
  c.check(is_floating(x.dtype), "dtype ", dtype_name(x.dtype), " not supported (float32, float64)");
  c.check(x.shape.size() >= 2, "expected an input [N, C, ...], got ", S(x.shape));
  c.check(c.attrs.f("eps") > 0, "eps must be positive, got ", c.attrs.f("eps"));
}

/// Reduction axes (all but the channel axis) of a rank-r input.
std::vector<int64_t> stat_axes(int64_t rank) {
  std::vector<int64_t> axes{0};
  for (int64_t i = 2; i < rank; ++i) axes.push_back(i);
  return axes;
}

/// A [C] vector shaped to broadcast against [N, C, d2, ...].
Tensor per_channel(const Tensor& v, int64_t rank) {
  if (rank == 2) return v;
  Shape s{v.shape()[0]};
  for (int64_t i = 2; i < rank; ++i) s.push_back(1);
  return reshape(v, s);
}

/// batch_norm_grad in ordinary ops: its definition, differentiated for second-order gradients.
std::vector<Tensor> composite_grad(const std::vector<Tensor>& in, double eps, bool relu) {
  const Tensor &x = in[0], &dy = in[1], &w = in[2], &b = in[3], &mean = in[4], &var = in[5];
  const int64_t r = x.ndim();
  const std::vector<int64_t> axes = stat_axes(r);
  const Tensor invstd = pow(var + eps, -0.5);
  const Tensor xhat = (x - per_channel(mean, r)) * per_channel(invstd, r);
  // Clamped pre-activations (<= 0) stop dy; a NaN one lets it through, as the kernels.
  const Tensor g = relu ? where(xhat * per_channel(w, r) + per_channel(b, r) <= 0.0, 0.0, dy) : dy;
  const Tensor db = sum(g, axes), dw = sum(g * xhat, axes);
  const Tensor m = size(x, axes, x.dtype());
  const Tensor dx = per_channel(w * invstd, r) * (g - per_channel(db / m, r) - xhat * per_channel(dw / m, r));
  return {dx, dw, db};
}

// ---------------------------------------------------------------- reference

struct Stats {
  int64_t C, M, inner;  // channels, values per channel, elements per (n, c)
};
Stats stats_of(const Shape& s) {
  int64_t inner = 1;
  for (size_t i = 2; i < s.size(); ++i) inner *= s[i];
  return {s[1], s[0] * inner, inner};
}

NDArray host64(const NDArray& a) { return a.astype(float64).compact(); }

/// Calls f(flat index, channel) over a compact [N, C, ...] array.
template <class F>
void for_each_element(const Shape& s, F&& f) {
  const Stats st = stats_of(s);
  for (int64_t i = 0; i < numel(s); ++i) f(i, (i / st.inner) % st.C);
}

std::vector<NDArray> ref_forward(std::span<const NDArray> in, const Attrs& a) {
  NDArray x = host64(in[0]), w = host64(in[1]), b = host64(in[2]);
  const Stats st = stats_of(x.shape());
  NDArray mean = NDArray::zeros({st.C}, float64), var = NDArray::zeros({st.C}, float64),
          y = NDArray::empty(x.shape(), float64);
  double *px = x.data<double>(), *pm = mean.data<double>(), *pv = var.data<double>(), *py = y.data<double>();
  // No values: NaN statistics, as a mean over nothing (PyTorch's var_mean).
  if (st.M == 0) {
    for (int64_t c = 0; c < st.C; ++c) pm[c] = pv[c] = NAN;
    const DType t = in[0].dtype();
    return {y.astype(t), mean.astype(t), var.astype(t)};
  }
  // The mean as x0 + mean(x - x0): exact enough when the mean is large against the spread.
  // A non-finite x0 shifts by 0 instead: inf - inf would make the mean NaN, PyTorch's is inf.
  auto shift = [&](int64_t c) { return std::isfinite(px[c * st.inner]) ? px[c * st.inner] : 0.0; };
  for_each_element(x.shape(), [&](int64_t i, int64_t c) { pm[c] += (px[i] - shift(c)) / double(st.M); });
  for (int64_t c = 0; c < st.C; ++c) pm[c] += shift(c);
  for_each_element(x.shape(), [&](int64_t i, int64_t c) { pv[c] += (px[i] - pm[c]) * (px[i] - pm[c]) / double(st.M); });
  for_each_element(x.shape(), [&](int64_t i, int64_t c) {
    double v = (px[i] - pm[c]) / std::sqrt(pv[c] + a.f("eps")) * w.data<double>()[c] + b.data<double>()[c];
    py[i] = a.get_or("relu", false) && v < 0 ? 0 : v;
  });
  const DType t = in[0].dtype();
  return {y.astype(t), mean.astype(t), var.astype(t)};
}

std::vector<NDArray> ref_backward(std::span<const NDArray> in, const Attrs& a) {
  NDArray x = host64(in[0]), dy = host64(in[1]), w = host64(in[2]), b = host64(in[3]), mean = host64(in[4]),
          var = host64(in[5]);
  const Stats st = stats_of(x.shape());
  const double eps = a.f("eps");
  const double *px = x.data<double>(), *pdy = dy.data<double>(), *pw = w.data<double>(), *pb = b.data<double>(),
               *pm = mean.data<double>(), *pv = var.data<double>();
  NDArray dx = NDArray::empty(x.shape(), float64), dw = NDArray::zeros({st.C}, float64),
          db = NDArray::zeros({st.C}, float64);
  double *pdx = dx.data<double>(), *pdw = dw.data<double>(), *pdb = db.data<double>();
  auto xhat = [&](int64_t i, int64_t c) { return (px[i] - pm[c]) / std::sqrt(pv[c] + eps); };
  auto g = [&](int64_t i, int64_t c) {
    return a.get_or("relu", false) && xhat(i, c) * pw[c] + pb[c] <= 0 ? 0.0 : pdy[i];
  };
  for_each_element(x.shape(), [&](int64_t i, int64_t c) {
    pdb[c] += g(i, c);
    pdw[c] += g(i, c) * xhat(i, c);
  });
  for_each_element(x.shape(), [&](int64_t i, int64_t c) {
    const double k = pw[c] / std::sqrt(pv[c] + eps), M = double(st.M);
    pdx[i] = k * (g(i, c) - pdb[c] / M - xhat(i, c) * pdw[c] / M);
  });
  const DType t = in[0].dtype();
  return {dx.astype(t), dw.astype(t), db.astype(t)};
}

const bool registered = [] {
  {
    OpDef d;
    d.name = "batch_norm";
    d.attrs = {attr::required("eps", AttrKind::real), attr::defaulted("relu", false)};
    d.min_inputs = d.max_inputs = 3;  // x, weight, bias
    d.doc = "batch normalization per channel (axis 1) with batch statistics; outputs y, mean, biased var";
    d.inplace = true;  // y may overwrite x: the statistics are computed before y's element-wise pass
    d.infer = [](const InferContext& c) {
      const TensorType& x = c.in[0];
      check_input(c, x);
      // Batch statistics of one value normalize everything to the bias: PyTorch refuses that; none is
      // allowed (the statistics are NaN, the output empty). Checked again on the fed shapes.
      if (is_static(x.shape))
        c.check(stats_of(x.shape).M != 1, "expected more than one value per channel (batch statistics), got input ",
                S(x.shape));
      check_channels(c, x, 1, "weight");
      check_channels(c, x, 2, "bias");
      const TensorType v{x.dtype, {x.shape[1]}};
      return std::vector<TensorType>{x, v, v};
    };
    d.grad = [](const GradContext& c) {
      const Tensor &x = c.inputs[0], &w = c.inputs[1], &b = c.inputs[2];
      const Tensor &mean = c.outputs[1], &var = c.outputs[2];
      const int64_t r = x.ndim();
      std::vector<Tensor> g{Tensor(), Tensor(), Tensor()};
      if (c.douts[0].valid()) g = x.graph().add("batch_norm_grad", {x, c.douts[0], w, b, mean, var}, c.attrs);
      // Gradients reaching the statistics themselves (rare: a loss on them, or a second-order term).
      Tensor extra;
      if (c.douts[1].valid() || c.douts[2].valid()) {
        const Tensor m = size(x, stat_axes(r), x.dtype());
        if (c.douts[1].valid()) extra = broadcast_like(per_channel(c.douts[1] / m, r), x);
        if (c.douts[2].valid()) {
          Tensor t = (x - per_channel(mean, r)) * per_channel(c.douts[2] * 2.0 / m, r);
          extra = extra.valid() ? extra + t : t;
        }
      }
      if (extra.valid()) g[0] = g[0].valid() ? g[0] + extra : extra;
      return g;
    };
    d.reference = ref_forward;
    d.examples = [](uint64_t seed) {
      auto ex = [&](const char* label, Shape s, bool relu) {
        const int64_t C = s[1];
        return OpExample{
            label,
            {rand_array(s, -2, 2, seed++), rand_array({C}, 0.5, 1.5, seed++), rand_array({C}, -0.5, 0.5, seed++)},
            {{"eps", 1e-5}, {"relu", relu}}};
      };
      return std::vector<OpExample>{ex("4-D", {3, 2, 3, 4}, false), ex("4-D with relu", {2, 3, 3, 3}, true),
                                    ex("2-D", {6, 4}, false), ex("3-D, batch 1", {1, 3, 5}, false)};
    };
    register_op(std::move(d));
  }
  {
    OpDef d;
    d.name = "batch_norm_grad";
    d.attrs = {attr::required("eps", AttrKind::real), attr::defaulted("relu", false)};
    d.min_inputs = d.max_inputs = 6;  // x, dy, weight, bias, mean, var
    d.doc = "gradients of batch_norm with respect to x, weight and bias";
    d.inplace = true;  // dx may overwrite x or dy: the sums are computed before dx's element-wise pass
    d.infer = [](const InferContext& c) {
      const TensorType& x = c.in[0];
      check_input(c, x);
      c.check(c.in[1] == x, "dy ", dtype_name(c.in[1].dtype), S(c.in[1].shape), " must match x ", dtype_name(x.dtype),
              S(x.shape));
      const char* names[] = {"", "", "weight", "bias", "mean", "var"};
      for (size_t i = 2; i < 6; ++i) check_channels(c, x, i, names[i]);
      const TensorType v{x.dtype, {x.shape[1]}};
      return std::vector<TensorType>{x, v, v};
    };
    d.grad = [](const GradContext& c) {
      const double eps = c.attrs.f("eps");
      const bool relu = c.attrs.get_or("relu", false);
      return detail::grad_through_composite(
          c, [eps, relu](const std::vector<Tensor>& in) { return composite_grad(in, eps, relu); });
    };
    d.reference = ref_backward;
    d.examples = [](uint64_t seed) {
      auto ex = [&](const char* label, Shape s, bool relu) {
        const int64_t C = s[1];
        return OpExample{
            label,
            {rand_array(s, -2, 2, seed++), rand_array(s, -1, 1, seed++), rand_array({C}, 0.5, 1.5, seed++),
             rand_array({C}, -0.5, 0.5, seed++), rand_array({C}, -0.3, 0.3, seed++), rand_array({C}, 0.5, 1.5, seed++)},
            {{"eps", 1e-5}, {"relu", relu}}};
      };
      return std::vector<OpExample>{ex("4-D", {2, 3, 2, 3}, false), ex("4-D with relu", {3, 2, 2, 2}, true),
                                    ex("2-D", {5, 3}, false)};
    };
    register_op(std::move(d));
  }
  return true;
}();

}  // namespace

BatchNormOutputs batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, bool relu) {
  std::vector<Tensor> r = x.graph().add("batch_norm", {x, weight, bias}, {{"eps", eps}, {"relu", relu}});
  return {r[0], r[1], r[2]};
}

}  // namespace loom
