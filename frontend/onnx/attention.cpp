// ONNX exporter of scaled_dot_product_attention (ops/attention.cpp), as its
// parts: softmax(q k^T scale + mask) v, with the rows' logsumexp as the
// second output. A query whose keys are all masked gives zeros and a
// logsumexp of -inf, as loom's fused kernel does (ONNX's Softmax would give NaN).

#include <cmath>

#include "frontend/onnx/exporter.hpp"

namespace loom::onnx {
namespace {

/// The causal mask, [Tq, Tk]: -inf above the diagonal (query i attends keys j <= i).
std::string causal_mask(ExportContext& c, int64_t tq, int64_t tk, DType dt) {
  if (tq < 0 || tk < 0) c.fail("a causal mask needs known lengths, got Tq ", tq, ", Tk ", tk);
  NDArray m = NDArray::zeros({tq, tk}, dt);
  for (int64_t i = 0; i < tq; ++i)
    for (int64_t j = i + 1; j < tk; ++j) m.slice({Slice::range(i, i + 1), Slice::range(j, j + 1)}).fill(-INFINITY);
  return c.constant(m, "causal_mask");
}

void attention(ExportContext& c) {
  const TensorType &q = c.input_type(0), &k = c.input_type(1);
  const DType dt = q.dtype;
  const int64_t nd = int64_t(q.shape.size());
  if (c.attrs().get_or<double>("dropout", 0.0) > 0)
    c.fail("attention dropout draws random numbers (export the graph the model builds in eval mode)");
  std::vector<int64_t> perm(static_cast<size_t>(nd));
  for (int64_t i = 0; i < nd; ++i) perm[size_t(i)] = i;
  std::swap(perm[size_t(nd - 2)], perm[size_t(nd - 1)]);

  std::string kt = c.temp("k_t"), qk = c.temp("qk"), s = c.temp("scores");
  attr(c.add("Transpose", {c.input(1)}, {kt}), "perm", perm);
  c.add("MatMul", {c.input(0), kt}, {qk});
  c.add("Mul", {qk, c.scalar(c.attrs().f("scale"), dt, "scale")}, {s});
  if (c.attrs().get_or<bool>("mask", false)) {
    std::string add = c.input(3), masked = c.temp("masked");
    if (c.input_type(3).dtype == boolean) {
      add = c.temp("mask_add");
      c.add("Where", {c.input(3), c.scalar(0, dt, "zero"), c.scalar(-INFINITY, dt, "minus_inf")}, {add});
    }
    c.add("Add", {s, add}, {masked});
    s = masked;
  }
  if (c.attrs().get_or<bool>("causal", false)) {
    std::string masked = c.temp("causal");
    c.add("Add", {s, causal_mask(c, q.shape[size_t(nd - 2)], k.shape[size_t(nd - 2)], dt)}, {masked});
    s = masked;
  }
  // live: rows with at least one key; their scores only reach the softmax.
  std::string row_max = c.temp("row_max"), live = c.temp("live"), safe = c.temp("safe_scores");
  auto& rm = c.add("ReduceMax", {s}, {row_max});
  attr(rm, "axes", std::vector<int64_t>{-1});
  attr(rm, "keepdims", int64_t(1));
  c.add("Greater", {row_max, c.scalar(-INFINITY, dt, "minus_inf")}, {live});
  c.add("Where", {live, s, c.scalar(0, dt, "zero")}, {safe});
  std::string p = c.temp("softmax"), weights = c.temp("weights");
  attr(c.add("Softmax", {safe}, {p}), "axis", int64_t(-1));
  c.add("Where", {live, p, c.scalar(0, dt, "zero")}, {weights});
  c.add("MatMul", {weights, c.input(2)}, {c.output(0)});

  std::string lse = c.temp("lse"), live_rows = c.temp("live_rows");
  auto& l = c.add("ReduceLogSumExp", {safe}, {lse});
  attr(l, "axes", std::vector<int64_t>{-1});
  attr(l, "keepdims", int64_t(0));
  c.add("Squeeze", {live, c.ints({-1}, "last")}, {live_rows});
  c.add("Where", {live_rows, lse, c.scalar(-INFINITY, dt, "minus_inf")}, {c.output(1)});
}

const bool registered = [] {
  register_exporter("attention", attention);
  register_unexportable("attention_grad", "it exists only in gradient graphs");
  register_unexportable("attention_keep", "it exists only in gradient graphs");
  register_unexportable("random_key", "it draws random numbers (attention dropout: export the graph the model builds in eval mode)");
  return true;
}();

}  // namespace
}  // namespace loom::onnx
