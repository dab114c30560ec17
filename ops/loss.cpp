// Softmax cross-entropy against integer labels as one primitive. Written with
// logsumexp, log_softmax and a one-hot product it took about ten passes over
// the logits per training step (a one-hot matrix as large as the logits
// included); for a language model's [tokens, vocabulary] logits that was half
// of the step. The primitive reads the logits for each row's maximum and sum
// of exponentials and writes one number per row; the gradient recomputes the
// softmax from the logits and that number:
//
//   sparse_softmax_cross_entropy(logits [N, C], labels [N]) -> loss [N], lse [N]
//     lse = log(sum_j exp(logits[i, j])), loss = lse - logits[i, labels[i]]
//   sparse_softmax_cross_entropy_grad(logits, labels, lse, dloss) -> dlogits
//     dlogits = (exp(logits - lse) - one_hot(labels)) * dloss
//
// check_range(x) -> x, failing the run (naming the element) when a value
// lies outside [low, high] or is NaN (unless allow_nan): the input checks of
// the losses, PyTorch's (binary_cross_entropy's probabilities in [0, 1],
// gaussian_nll_loss's variances >= 0). Its gradient passes dy through.
//
// Keeping the logits for the backward instead of a softmax costs the same
// bytes, but the forward writes no [N, C] array (a third of the memory
// traffic, and no second [N, C] buffer live beside the logits) and dlogits
// may overwrite the logits. A row without a finite lse (a +inf, a NaN, or
// only -inf) has a NaN softmax, as PyTorch's.
// A label outside [0, C) raises loom::Error naming the node and the label.
// The gradient op is differentiable too, through its composite form.

#include <cmath>

#include "kernels/range_check.hpp"
#include "ops/common.hpp"
#include "ops/ops.hpp"

namespace loom {

using detail::rand_array;

namespace {

void check_logits_labels(const InferContext& c) {
  const TensorType &l = c.in[0], &y = c.in[1];
  c.check(l.shape.size() == 2, "logits must be [N, C], got ", S(l.shape));
  c.check(is_floating(l.dtype), "logits must be floating, got ", dtype_name(l.dtype));
  c.check(y.shape.size() == 1, "labels must be [N], got ", S(y.shape));
  c.check(y.dtype == int32 || y.dtype == int64 || y.dtype == uint8, "labels must be int32, int64 or uint8, got ",
          dtype_name(y.dtype));
  c.check(l.shape[0] < 0 || y.shape[0] < 0 || l.shape[0] == y.shape[0], S(l.shape), " logits for ", S(y.shape),
          " labels");
}

/// The lse of each row of x (float64 math): NaN where the row has a NaN, the
/// maximum where that is infinite, as the kernels give them.
std::vector<double> ref_lse(const NDArray& x) {
  const int64_t N = x.shape()[0], C = x.shape()[1];
  std::vector<double> out(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) {
    double m = -INFINITY;
    bool nan = false;
    for (int64_t j = 0; j < C; ++j) m = std::max(m, x.at({i, j})), nan |= std::isnan(x.at({i, j}));
    double s = 0;
    for (int64_t j = 0; j < C; ++j) s += std::exp(x.at({i, j}) - m);
    out[size_t(i)] = nan ? NAN : std::isfinite(m) ? m + std::log(s) : m;
  }
  return out;
}

/// The composite form of the gradient: the source of the gradient op's own gradient.
Tensor grad_composite(const Tensor& logits, const Tensor& labels, const Tensor& lse, const Tensor& dloss) {
  const int64_t C = logits.shape()[1];
  return (exp(logits - expand_dims(lse, {1})) - one_hot(labels, C, logits.dtype())) * expand_dims(dloss, {1});
}

/// Checks a per-row input (lse, dloss) of the gradient op.
void check_row_input(const InferContext& c, size_t k, const char* name) {
  c.check(c.in[k].dtype == c.in[0].dtype && c.in[k].shape.size() == 1, name, " must be ", dtype_name(c.in[0].dtype),
          "[N], got ", dtype_name(c.in[k].dtype), S(c.in[k].shape));
  c.check(c.in[0].shape[0] < 0 || c.in[k].shape[0] < 0 || c.in[k].shape[0] == c.in[0].shape[0], name, " ",
          S(c.in[k].shape), " for ", S(c.in[0].shape), " logits");
}

const bool registered = [] {
  {
    OpDef d;
    d.name = "check_range";
    d.attrs = {attr::required("low", AttrKind::real), attr::required("high", AttrKind::real),
               attr::defaulted("allow_nan", false), attr::required("expected", AttrKind::string)};
    d.min_inputs = d.max_inputs = 1;
    d.infer = [](const InferContext& c) {
      c.check(is_floating(c.in[0].dtype), "expected a floating input, got ", dtype_name(c.in[0].dtype));
      c.check(c.attrs.f("low") <= c.attrs.f("high"), "low ", c.attrs.f("low"), " must be at most high ",
              c.attrs.f("high"));
      return std::vector<TensorType>{c.in[0]};
    };
    d.grad = [](const GradContext& c) { return std::vector<Tensor>{c.dout(0)}; };
    d.reference = [](std::span<const NDArray> in, const Attrs& a) {
      const NDArray x = in[0].astype(float64).compact();
      const RangeCheck r = range_check(a);
      for (int64_t i = 0; i < x.numel(); ++i)
        LOOM_CHECK(r.admits(x.data<double>()[i]), "check_range: element ", i, " is ", r.outside());
      return std::vector<NDArray>{in[0].compact()};
    };
    d.examples = [](uint64_t seed) {
      // Inside the range, so that the gradient sweep's perturbations stay there.
      const Attrs probabilities{{"low", 0.0}, {"high", 1.0}, {"expected", std::string("probabilities")}};
      const Attrs variances{
          {"low", 0.0}, {"high", INFINITY}, {"allow_nan", true}, {"expected", std::string("variances")}};
      return std::vector<OpExample>{{"[3, 4] in (0, 1)", {rand_array({3, 4}, 0.05, 0.95, seed)}, probabilities},
                                    {"[5] >= 0, NaN allowed", {rand_array({5}, 0.1, 3, seed)}, variances}};
    };
    d.doc =
        "x, after checking every element lies in [low, high] (and is not NaN unless allow_nan): losses' input checks";
    register_op(std::move(d));
  }
  {
    OpDef d;
    d.name = "sparse_softmax_cross_entropy";
    d.attrs = AttrSchema::none();
    d.min_inputs = d.max_inputs = 2;
    d.infer = [](const InferContext& c) {
      check_logits_labels(c);
      const TensorType row{c.in[0].dtype, {c.in[0].shape[0]}};
      return std::vector<TensorType>{row, row};
    };
    d.grad = [](const GradContext& c) {
      const Tensor &logits = c.inputs[0], &labels = c.inputs[1], &lse = c.outputs[1];
      Tensor dl;
      if (c.douts[0].valid())
        dl = logits.graph().add1("sparse_softmax_cross_entropy_grad", {logits, labels, lse, c.douts[0]});
      if (c.douts[1].valid()) {
        // Someone used lse itself: its gradient is the softmax.
        Tensor extra = exp(logits - expand_dims(lse, {1})) * expand_dims(c.douts[1], {1});
        dl = dl.valid() ? dl + extra : extra;
      }
      return std::vector<Tensor>{dl, Tensor()};
    };
    d.reference = [](std::span<const NDArray> in, const Attrs&) {
      const NDArray& x = in[0];
      const int64_t N = x.shape()[0], C = x.shape()[1];
      std::vector<double> lse = ref_lse(x);
      NDArray loss = NDArray::empty({N}, x.dtype()), l = NDArray::empty({N}, x.dtype());
      for (int64_t i = 0; i < N; ++i) {
        const int64_t y = int64_t(in[1].at({i}));
        LOOM_CHECK(y >= 0 && y < C, "label out of range");
        detail::set_at(loss, {i}, lse[size_t(i)] - x.at({i, y}));
        detail::set_at(l, {i}, lse[size_t(i)]);
      }
      return std::vector<NDArray>{loss, l};
    };
    d.examples = [](uint64_t seed) {
      return std::vector<OpExample>{
          {"int64 labels", {rand_array({4, 5}, -3, 3, seed), NDArray::from<int64_t>({4, 0, 2, 2})}, {}},
          {"int32 labels, wide rows", {rand_array({2, 37}, -8, 8, seed), NDArray::from<int32_t>({36, 0})}, {}}};
    };
    d.doc = "per-row softmax cross-entropy against integer labels: (logits [N, C], labels [N]) -> (loss [N], lse [N])";
    register_op(std::move(d));
  }
  {
    OpDef d;
    d.name = "sparse_softmax_cross_entropy_grad";
    d.attrs = AttrSchema::none();
    d.min_inputs = d.max_inputs = 4;
    d.inplace = true;  // dlogits may overwrite the logits: each element is read before it is written
    d.infer = [](const InferContext& c) {
      check_logits_labels(c);
      check_row_input(c, 2, "lse");
      check_row_input(c, 3, "dloss");
      return std::vector<TensorType>{c.in[0]};
    };
    d.grad = [](const GradContext& c) {
      // The composite's vector-Jacobian product, over leaves that stop_gradient
      // cuts from the graph: lse and dloss themselves depend on the logits.
      Tensor x = stop_gradient(c.inputs[0]), lse = stop_gradient(c.inputs[2]), g = stop_gradient(c.inputs[3]);
      Tensor y = grad_composite(x, c.inputs[1], lse, g);
      std::vector<Tensor> r = gradients(sum(y * stop_gradient(c.dout(0))), {x, lse, g});
      return std::vector<Tensor>{r[0], Tensor(), r[1], r[2]};
    };
    d.reference = [](std::span<const NDArray> in, const Attrs&) {
      const NDArray& x = in[0];
      const int64_t N = x.shape()[0], C = x.shape()[1];
      NDArray out = NDArray::empty(x.shape(), x.dtype());
      for (int64_t i = 0; i < N; ++i) {
        const int64_t y = int64_t(in[1].at({i}));
        const double lse = in[2].at({i}), g = in[3].at({i});
        for (int64_t j = 0; j < C; ++j) {
          const double p = std::isfinite(lse) ? std::exp(x.at({i, j}) - lse) : NAN;
          detail::set_at(out, {i, j}, (p - (j == y ? 1.0 : 0.0)) * g);
        }
      }
      return std::vector<NDArray>{out};
    };
    d.examples = [](uint64_t seed) {
      // lse need not be the logits' own: the op is a function of all four.
      return std::vector<OpExample>{{"rows 3, classes 6",
                                     {rand_array({3, 6}, -2, 2, seed), NDArray::from<int64_t>({5, 0, 3}),
                                      rand_array({3}, 1, 3, seed + 2), rand_array({3}, -1, 1, seed + 1)},
                                     {}},
                                    {"wide rows",
                                     {rand_array({2, 37}, -2, 2, seed), NDArray::from<int32_t>({36, 0}),
                                      rand_array({2}, 2, 4, seed + 2), rand_array({2}, -1, 1, seed + 1)},
                                     {}}};
    };
    d.doc = "the gradient of sparse_softmax_cross_entropy: (exp(logits - lse) - one_hot(labels)) * dloss";
    register_op(std::move(d));
  }
  return true;
}();

}  // namespace

std::vector<Tensor> sparse_softmax_cross_entropy(const Tensor& logits, const Tensor& labels) {
  return logits.graph().add("sparse_softmax_cross_entropy", {logits, labels});
}

Tensor check_range(const Tensor& x, double low, double high, const std::string& expected, bool allow_nan) {
  return x.graph().add1("check_range", {x},
                        {{"low", low}, {"high", high}, {"allow_nan", allow_nan}, {"expected", expected}});
}

}  // namespace loom
