// Layer normalization over the last `dims` axes, as fused primitives: one op
// computes each row's statistics and normalizes, one computes the gradients.
// As a composition (mean, subtract, square, mean, add, sqrt, divide, scale,
// shift) a Transformer's LayerNorm was ~9 nodes forward and more backward,
// with the row statistics and the weight gradients as separate reductions;
// the fused kernels read x (and dy) once or twice per row while it is in cache.
//
//   layer_norm(x[, weight[, bias]]) -> (y, mean, rstd)
//       x [..., D1..Dk] (k = dims) is seen as rows of D = D1*..*Dk values;
//       mean and rstd = 1 / sqrt(biased var + eps) have x's leading shape;
//       y = (x - mean) * rstd (* weight (+ bias)), weight and bias [D1..Dk].
//   layer_norm_grad(x, dy, mean, rstd[, weight]) -> (dx[, dweight, dbias])
//       (dbias, the column sums of dy, whether or not the forward had a bias)
//
// PyTorch's native_layer_norm has the same outputs. layer_norm_grad's own
// gradient (for second-order derivatives) is derived from its composite
// definition in ordinary ops, through gradients().

#include <cmath>

#include "ops/common.hpp"
#include "ops/ops.hpp"

namespace loom {

using detail::rand_array;

namespace {

int64_t dims_of(const Attrs& a) { return a.i("dims"); }

/// The normalized (trailing) and the leading shape of x.
Shape trailing(const Shape& x, int64_t k) { return Shape(x.end() - k, x.end()); }
Shape leading(const Shape& x, int64_t k) { return Shape(x.begin(), x.end() - k); }

void check_input(const InferContext& c, const TensorType& x) {
  c.check(is_floating(x.dtype), "dtype ", dtype_name(x.dtype), " not supported (float32, float64)");
  const int64_t k = dims_of(c.attrs);
  c.check(k >= 1, "dims must be at least 1, got ", k);
  c.check(int64_t(x.shape.size()) >= k, "expected an input of rank >= ", k, " (dims), got ", S(x.shape));
  c.check(c.attrs.f("eps") > 0, "eps must be positive, got ", c.attrs.f("eps"));
}

bool same_dims(const Shape& a, const Shape& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i] != b[i] && a[i] >= 0 && b[i] >= 0) return false;
  return true;
}

/// Checks input i against x's type and `shape`.
void check_like(const InferContext& c, size_t i, const TensorType& x, const Shape& shape, const char* what) {
  const TensorType& v = c.in[i];
  c.check(v.dtype == x.dtype, what, " has dtype ", dtype_name(v.dtype), ", expected ", dtype_name(x.dtype));
  c.check(same_dims(v.shape, shape), what, " must be ", S(shape), " for input ", S(x.shape), ", got ", S(v.shape));
}

std::vector<int64_t> normalized_axes(int64_t k) {
  std::vector<int64_t> axes;
  for (int64_t i = -k; i < 0; ++i) axes.push_back(i);
  return axes;
}

std::vector<int64_t> leading_axes(int64_t rank, int64_t k) {
  std::vector<int64_t> axes;
  for (int64_t i = 0; i < rank - k; ++i) axes.push_back(i);
  return axes;
}

/// A per-row value (x's leading shape) shaped to broadcast against x.
Tensor per_row(const Tensor& v, int64_t k) {
  Shape s = v.shape();
  for (int64_t i = 0; i < k; ++i) s.push_back(1);
  return reshape(v, s);
}

/// layer_norm_grad in ordinary ops: its definition, differentiated for second-order gradients.
std::vector<Tensor> composite_grad(const std::vector<Tensor>& in, int64_t k) {
  const Tensor &x = in[0], &dy = in[1], &mu = in[2], &rstd = in[3];
  const std::vector<int64_t> axes = normalized_axes(k);
  const Tensor r = per_row(rstd, k);
  const Tensor xhat = (x - per_row(mu, k)) * r;
  const Tensor g = in.size() > 4 ? dy * in[4] : dy;
  const Tensor dx = r * (g - mean(g, axes, true) - xhat * mean(g * xhat, axes, true));
  if (in.size() == 4) return {dx};
  const std::vector<int64_t> rows = leading_axes(x.ndim(), k);
  return {dx, sum(dy * xhat, rows), sum(dy, rows)};
}

// ---------------------------------------------------------------- reference

NDArray host64(const NDArray& a) { return a.astype(float64).compact(); }

struct Rows {
  int64_t R, D;
};
Rows rows_of(const Shape& x, int64_t k) { return {numel(leading(x, k)), numel(trailing(x, k))}; }

std::vector<NDArray> ref_forward(std::span<const NDArray> in, const Attrs& a) {
  const int64_t k = dims_of(a);
  NDArray x = host64(in[0]);
  const Rows r = rows_of(x.shape(), k);
  const bool affine = in.size() >= 2, shift = in.size() == 3;
  NDArray w = affine ? host64(in[1]) : NDArray(), b = shift ? host64(in[2]) : NDArray();
  NDArray y = NDArray::empty(x.shape(), float64), mean = NDArray::empty(leading(x.shape(), k), float64),
          rstd = NDArray::empty(leading(x.shape(), k), float64);
  const double* px = x.data<double>();
  double *py = y.data<double>(), *pm = mean.data<double>(), *pr = rstd.data<double>();
  for (int64_t i = 0; i < r.R; ++i) {
    const double* row = px + i * r.D;
    double s = 0, sq = 0;
    for (int64_t j = 0; j < r.D; ++j) s += row[j];
    pm[i] = s / double(r.D);  // NaN over no values, as PyTorch
    for (int64_t j = 0; j < r.D; ++j) sq += (row[j] - pm[i]) * (row[j] - pm[i]);
    pr[i] = 1.0 / std::sqrt(sq / double(r.D) + a.f("eps"));
    for (int64_t j = 0; j < r.D; ++j) {
      const double v = (row[j] - pm[i]) * pr[i];
      py[i * r.D + j] = affine ? v * w.data<double>()[j] + (shift ? b.data<double>()[j] : 0.0) : v;
    }
  }
  const DType t = in[0].dtype();
  return {y.astype(t), mean.astype(t), rstd.astype(t)};
}

std::vector<NDArray> ref_backward(std::span<const NDArray> in, const Attrs& a) {
  const int64_t k = dims_of(a);
  NDArray x = host64(in[0]), dy = host64(in[1]), mean = host64(in[2]), rstd = host64(in[3]);
  const bool affine = in.size() == 5;
  NDArray w = affine ? host64(in[4]) : NDArray();
  const Rows r = rows_of(x.shape(), k);
  const Shape norm = trailing(x.shape(), k);
  NDArray dx = NDArray::empty(x.shape(), float64), dw = NDArray::zeros(norm, float64), db = NDArray::zeros(norm, float64);
  const double *px = x.data<double>(), *pdy = dy.data<double>(), *pm = mean.data<double>(), *pr = rstd.data<double>();
  double *pdx = dx.data<double>(), *pdw = dw.data<double>(), *pdb = db.data<double>();
  for (int64_t i = 0; i < r.R; ++i) {
    auto xhat = [&](int64_t j) { return (px[i * r.D + j] - pm[i]) * pr[i]; };
    auto g = [&](int64_t j) { return pdy[i * r.D + j] * (affine ? w.data<double>()[j] : 1.0); };
    double sg = 0, sgx = 0;
    for (int64_t j = 0; j < r.D; ++j) {
      sg += g(j), sgx += g(j) * xhat(j);
      pdw[j] += pdy[i * r.D + j] * xhat(j);
      pdb[j] += pdy[i * r.D + j];
    }
    for (int64_t j = 0; j < r.D; ++j) pdx[i * r.D + j] = pr[i] * (g(j) - sg / double(r.D) - xhat(j) * sgx / double(r.D));
  }
  const DType t = in[0].dtype();
  if (!affine) return {dx.astype(t)};
  return {dx.astype(t), dw.astype(t), db.astype(t)};
}

std::vector<TensorType> infer_forward(const InferContext& c) {
  const TensorType& x = c.in[0];
  check_input(c, x);
  const int64_t k = dims_of(c.attrs);
  if (c.in.size() >= 2) check_like(c, 1, x, trailing(x.shape, k), "weight");
  if (c.in.size() == 3) check_like(c, 2, x, trailing(x.shape, k), "bias");
  const TensorType row{x.dtype, leading(x.shape, k)};
  return {x, row, row};
}

std::vector<TensorType> infer_backward(const InferContext& c) {
  const TensorType& x = c.in[0];
  check_input(c, x);
  const int64_t k = dims_of(c.attrs);
  check_like(c, 1, x, x.shape, "dy");
  check_like(c, 2, x, leading(x.shape, k), "mean");
  check_like(c, 3, x, leading(x.shape, k), "rstd");
  if (c.in.size() == 4) return {x};
  check_like(c, 4, x, trailing(x.shape, k), "weight");
  const TensorType param{x.dtype, trailing(x.shape, k)};
  return {x, param, param};
}

std::vector<Tensor> grad_forward(const GradContext& c) {
  const Tensor& x = c.inputs[0];
  const Tensor &mean = c.outputs[1], &rstd = c.outputs[2];
  const int64_t k = dims_of(c.attrs);
  std::vector<Tensor> g(c.inputs.size());
  if (c.douts[0].valid()) {
    std::vector<Tensor> in{x, c.douts[0], mean, rstd};
    if (c.inputs.size() >= 2) in.push_back(c.inputs[1]);
    std::vector<Tensor> r = x.graph().add("layer_norm_grad", in, c.attrs);
    for (size_t i = 0; i < g.size(); ++i) g[i] = r[i];  // (dx, dweight, dbias: dbias unused without a bias)
  }
  // Gradients reaching the statistics themselves (rare: a loss on them, or a second-order term):
  // d mean / dx = 1/D, d rstd / dx = -rstd^3 (x - mean) / D.
  Tensor extra;
  const Tensor D = size(x, normalized_axes(k), x.dtype());
  if (c.douts[1].valid()) extra = broadcast_like(per_row(c.douts[1] / D, k), x);
  if (c.douts[2].valid()) {
    Tensor t = (x - per_row(mean, k)) * per_row(c.douts[2] * rstd * rstd * rstd / D * -1.0, k);
    extra = extra.valid() ? extra + t : t;
  }
  if (extra.valid()) g[0] = g[0].valid() ? g[0] + extra : extra;
  return g;
}

std::vector<Tensor> grad_backward(const GradContext& c) {
  const int64_t k = dims_of(c.attrs);
  return detail::grad_through_composite(c, [k](const std::vector<Tensor>& in) { return composite_grad(in, k); });
}

/// With 0 params: x alone; 1: a weight; 2: a weight and a bias.
OpExample forward_example(const char* label, const Shape& s, int64_t k, int params, uint64_t& seed) {
  std::vector<NDArray> in{rand_array(s, -2, 2, seed++)};
  if (params >= 1) in.push_back(rand_array(trailing(s, k), 0.5, 1.5, seed++));
  if (params >= 2) in.push_back(rand_array(trailing(s, k), -0.5, 0.5, seed++));
  return OpExample{label, std::move(in), {{"dims", k}, {"eps", 1e-5}}};
}

OpExample backward_example(const char* label, const Shape& s, int64_t k, bool affine, uint64_t& seed) {
  const Shape rows = leading(s, k);
  std::vector<NDArray> in{rand_array(s, -2, 2, seed++), rand_array(s, -1, 1, seed++),
                          rand_array(rows, -0.3, 0.3, seed++), rand_array(rows, 0.5, 1.5, seed++)};
  if (affine) in.push_back(rand_array(trailing(s, k), 0.5, 1.5, seed++));
  return OpExample{label, std::move(in), {{"dims", k}, {"eps", 1e-5}}};
}

/// A large example: run by the kernel sweeps (several values per GPU thread, several chunks of
/// rows), too large for central differences over every element.
OpExample wide(OpExample ex) {
  ex.check_grad = false;
  return ex;
}

const bool registered = [] {
  {
    OpDef d;
    d.name = "layer_norm";
    d.attrs = {attr::required("dims", AttrKind::integer), attr::required("eps", AttrKind::real)};
    d.min_inputs = 1;  // x[, weight[, bias]]
    d.max_inputs = 3;
    d.doc = "layer normalization over the last `dims` axes; outputs y, mean, rstd (1 / sqrt(var + eps))";
    d.inplace = true;  // y may overwrite x: a row's statistics are computed before its y
    d.infer = infer_forward;
    d.grad = grad_forward;
    d.reference = ref_forward;
    d.examples = [](uint64_t seed) {
      return std::vector<OpExample>{forward_example("3-D, affine", {2, 3, 8}, 1, 2, seed),
                                    forward_example("2-D, no affine", {4, 5}, 1, 0, seed),
                                    forward_example("weight, no bias", {3, 6}, 1, 1, seed),
                                    forward_example("over 2 dims, affine", {3, 2, 3}, 2, 2, seed),
                                    forward_example("one row", {7}, 1, 2, seed),
                                    wide(forward_example("rows wider than a GPU block", {70, 300}, 1, 2, seed))};
    };
    register_op(std::move(d));
  }
  {
    OpDef d;
    d.name = "layer_norm_grad";
    d.attrs = {attr::required("dims", AttrKind::integer), attr::required("eps", AttrKind::real)};
    d.min_inputs = 4;  // x, dy, mean, rstd[, weight]
    d.max_inputs = 5;
    d.doc = "gradients of layer_norm with respect to x (and weight and bias when it has them)";
    d.inplace = true;  // dx may overwrite x or dy: a row's sums are computed before its dx
    d.infer = infer_backward;
    d.grad = grad_backward;
    d.reference = ref_backward;
    d.examples = [](uint64_t seed) {
      return std::vector<OpExample>{backward_example("3-D, affine", {2, 3, 6}, 1, true, seed),
                                    backward_example("2-D, no affine", {3, 5}, 1, false, seed),
                                    backward_example("over 2 dims, affine", {2, 2, 3}, 2, true, seed),
                                    wide(backward_example("rows in many chunks", {130, 260}, 1, true, seed))};
    };
    register_op(std::move(d));
  }
  return true;
}();

}  // namespace

LayerNormOutputs layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t dims, double eps) {
  LOOM_CHECK(weight.valid() || !bias.valid(), "layer_norm: a bias needs a weight (give ones for none)");
  std::vector<Tensor> in{x};
  if (weight.valid()) in.push_back(weight);
  if (bias.valid()) in.push_back(bias);
  std::vector<Tensor> r = x.graph().add("layer_norm", in, {{"dims", dims}, {"eps", eps}});
  return {r[0], r[1], r[2]};
}

}  // namespace loom
