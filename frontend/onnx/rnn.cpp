// ONNX exporters of the sequence-model primitives (ops/rnn.cpp, ops/loss.cpp):
// lstm_cell written out in ONNX's element-wise ops, and the sparse
// cross-entropy as SoftmaxCrossEntropyLoss (reduction "none") beside Softmax.

#include "frontend/onnx/exporter.hpp"

namespace loom::onnx {
namespace {

/// One LSTM step in PyTorch's gate order (i, f, g, o): outputs h, c and the activated gates.
void lstm_cell(ExportContext& c) {
  const Shape& cs = c.input_type(0).shape;
  const int64_t H = cs.back();
  if (H < 0) c.fail("the hidden size (last dim of c_prev ", shape_str(cs), ") must be known");
  std::string pre = c.input(1);
  if (c.num_inputs() > 2) {
    pre = c.temp("gates_sum");
    c.add("Add", {c.input(1), c.input(2)}, {pre});
  }
  const std::string gi = c.temp("i"), gf = c.temp("f"), gg = c.temp("g"), go = c.temp("o");
  attr(c.add("Split", {pre, c.ints({H, H, H, H}, "gate_sizes")}, {gi, gf, gg, go}), "axis", int64_t(-1));
  const std::string si = c.temp("sig_i"), sf = c.temp("sig_f"), tg = c.temp("tanh_g"), so = c.temp("sig_o");
  c.add("Sigmoid", {gi}, {si});
  c.add("Sigmoid", {gf}, {sf});
  c.add("Tanh", {gg}, {tg});
  c.add("Sigmoid", {go}, {so});
  const std::string keep = c.temp("f_c"), write = c.temp("i_g"), tc = c.temp("tanh_c");
  c.add("Mul", {sf, c.input(0)}, {keep});
  c.add("Mul", {si, tg}, {write});
  c.add("Add", {keep, write}, {c.output(1)});
  c.add("Tanh", {c.output(1)}, {tc});
  c.add("Mul", {so, tc}, {c.output(0)});
  attr(c.add("Concat", {si, sf, tg, so}, {c.output(2)}), "axis", int64_t(-1));
}

/// Outputs the per-row loss and the log of each row's sum of exponentials.
void sparse_softmax_cross_entropy(ExportContext& c) {
  attr(c.add("SoftmaxCrossEntropyLoss", {c.input(0), c.input(1)}, {c.output(0)}), "reduction", std::string("none"));
  auto& lse = c.add("ReduceLogSumExp", {c.input(0)}, {c.output(1)});
  attr(lse, "axes", std::vector<int64_t>{1});
  attr(lse, "keepdims", int64_t(0));
}

const bool registered = [] {
  register_exporter("lstm_cell", lstm_cell);
  register_exporter("sparse_softmax_cross_entropy", sparse_softmax_cross_entropy);
  // A run-time check of binary_cross_entropy's input: in ONNX the value itself.
  register_exporter("check_range", [](ExportContext& c) { c.add("Identity", {c.input(0)}, {c.output(0)}); });
  register_unexportable("lstm_cell_grad", "it exists only in gradient graphs");
  register_unexportable("sparse_softmax_cross_entropy_grad", "it exists only in gradient graphs");
  return true;
}();

}  // namespace
}  // namespace loom::onnx
