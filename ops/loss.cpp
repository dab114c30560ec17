// Softmax cross-entropy against integer labels as one primitive. Written with
// logsumexp, log_softmax and a one-hot product it took about ten passes over
// the logits per training step (a one-hot matrix as large as the logits
// included); for a language model's [tokens, vocabulary] logits that was half
// of the step. The primitive exponentiates each logit once, keeping the
// softmax for the gradient, which is then one multiply per element:
//
//   sparse_softmax_cross_entropy(logits [N, C], labels [N]) -> loss [N], probs [N, C]
//     probs = softmax(logits) by row, loss = log(sum_j exp(logits[i, j])) - logits[i, labels[i]]
//   sparse_softmax_cross_entropy_grad(probs, labels, dloss) -> dlogits
//     dlogits = (probs - one_hot(labels)) * dloss
//
// The backward reads the softmax instead of the logits, which die at the
// forward: keeping the softmax costs no memory.
// A label outside [0, C) raises loom::Error naming the node and the label.
// The gradient op is differentiable too, through its composite form.

#include <cmath>

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

/// Rows: the lse of each row of x (float64 math, NaN and infinities as libm gives them).
std::vector<double> ref_lse(const NDArray& x) {
  const int64_t N = x.shape()[0], C = x.shape()[1];
  std::vector<double> out(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) {
    double m = -INFINITY;
    for (int64_t j = 0; j < C; ++j) m = std::max(m, x.at({i, j}));
    double s = 0;
    for (int64_t j = 0; j < C; ++j) s += std::exp(x.at({i, j}) - m);
    out[size_t(i)] = std::isfinite(m) ? m + std::log(s) : m;
  }
  return out;
}

/// The composite form of the gradient: the source of the gradient op's own gradient.
Tensor grad_composite(const Tensor& probs, const Tensor& labels, const Tensor& dloss) {
  const int64_t C = probs.shape()[1];
  return (probs - one_hot(labels, C, probs.dtype())) * expand_dims(dloss, {1});
}

const bool registered = [] {
  {
    OpDef d;
    d.name = "sparse_softmax_cross_entropy";
    d.attrs = AttrSchema::none();
    d.min_inputs = d.max_inputs = 2;
    d.infer = [](const InferContext& c) {
      check_logits_labels(c);
      return std::vector<TensorType>{{c.in[0].dtype, {c.in[0].shape[0]}}, c.in[0]};
    };
    d.grad = [](const GradContext& c) {
      const Tensor &probs = c.outputs[1], &labels = c.inputs[1];
      Tensor dl;
      if (c.douts[0].valid()) dl = probs.graph().add1("sparse_softmax_cross_entropy_grad", {probs, labels, c.douts[0]});
      if (c.douts[1].valid()) {
        // Someone used the softmax itself: its Jacobian, p * (dp - sum(p * dp)).
        const Tensor& dp = c.douts[1];
        Tensor extra = probs * (dp - sum(probs * dp, {1}, true));
        dl = dl.valid() ? dl + extra : extra;
      }
      return std::vector<Tensor>{dl, Tensor()};
    };
    d.reference = [](std::span<const NDArray> in, const Attrs&) {
      const NDArray& x = in[0];
      const int64_t N = x.shape()[0], C = x.shape()[1];
      std::vector<double> lse = ref_lse(x);
      NDArray loss = NDArray::empty({N}, x.dtype()), p = NDArray::empty(x.shape(), x.dtype());
      for (int64_t i = 0; i < N; ++i) {
        const int64_t y = int64_t(in[1].at({i}));
        LOOM_CHECK(y >= 0 && y < C, "label out of range");
        detail::set_at(loss, {i}, lse[size_t(i)] - x.at({i, y}));
        // As PyTorch: no finite lse (a +inf, NaN, or only -inf in the row), no softmax: NaN.
        for (int64_t j = 0; j < C; ++j)
          detail::set_at(p, {i, j}, std::isfinite(lse[size_t(i)]) ? std::exp(x.at({i, j}) - lse[size_t(i)]) : NAN);
      }
      return std::vector<NDArray>{loss, p};
    };
    d.examples = [](uint64_t seed) {
      return std::vector<OpExample>{
          {"int64 labels", {rand_array({4, 5}, -3, 3, seed), NDArray::from<int64_t>({4, 0, 2, 2})}, {}},
          {"int32 labels, wide rows", {rand_array({2, 37}, -8, 8, seed), NDArray::from<int32_t>({36, 0})}, {}}};
    };
    d.doc = "per-row softmax cross-entropy against integer labels: (logits [N, C], labels [N]) -> (loss [N], softmax [N, C])";
    register_op(std::move(d));
  }
  {
    OpDef d;
    d.name = "sparse_softmax_cross_entropy_grad";
    d.attrs = AttrSchema::none();
    d.min_inputs = d.max_inputs = 3;
    d.infer = [](const InferContext& c) {
      check_logits_labels(c);
      c.check(c.in[2].dtype == c.in[0].dtype && c.in[2].shape.size() == 1, "dloss must be ", dtype_name(c.in[0].dtype),
              "[N], got ", dtype_name(c.in[2].dtype), S(c.in[2].shape));
      return std::vector<TensorType>{c.in[0]};
    };
    d.grad = [](const GradContext& c) {
      // The composite's vector-Jacobian product, over leaves that stop_gradient
      // cuts from the graph: dloss itself depends on the forward (and on probs).
      Tensor p = stop_gradient(c.inputs[0]), g = stop_gradient(c.inputs[2]);
      Tensor y = grad_composite(p, c.inputs[1], g);
      std::vector<Tensor> r = gradients(sum(y * stop_gradient(c.dout(0))), {p, g});
      return std::vector<Tensor>{r[0], Tensor(), r[1]};
    };
    d.reference = [](std::span<const NDArray> in, const Attrs&) {
      const NDArray& p = in[0];
      const int64_t N = p.shape()[0], C = p.shape()[1];
      NDArray out = NDArray::empty(p.shape(), p.dtype());
      for (int64_t i = 0; i < N; ++i) {
        const int64_t y = int64_t(in[1].at({i}));
        const double g = in[2].at({i});
        for (int64_t j = 0; j < C; ++j) detail::set_at(out, {i, j}, (p.at({i, j}) - (j == y ? 1.0 : 0.0)) * g);
      }
      return std::vector<NDArray>{out};
    };
    d.examples = [](uint64_t seed) {
      return std::vector<OpExample>{{"rows 3, classes 6",
                                     {rand_array({3, 6}, 0, 1, seed), NDArray::from<int64_t>({5, 0, 3}),
                                      rand_array({3}, -1, 1, seed + 1)},
                                     {}},
                                    {"wide rows", {rand_array({2, 37}, 0, 1, seed), NDArray::from<int32_t>({36, 0}),
                                                   rand_array({2}, -1, 1, seed + 1)},
                                     {}}};
    };
    d.doc = "the gradient of sparse_softmax_cross_entropy: (softmax - one_hot(labels)) * dloss";
    register_op(std::move(d));
  }
  return true;
}();

}  // namespace

std::vector<Tensor> sparse_softmax_cross_entropy(const Tensor& logits, const Tensor& labels) {
  return logits.graph().add("sparse_softmax_cross_entropy", {logits, labels});
}

}  // namespace loom
