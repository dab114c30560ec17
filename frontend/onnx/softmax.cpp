// ONNX exporters of softmax, log_softmax and logsumexp (ops/softmax.cpp).

#include <cmath>

#include "frontend/onnx/exporter.hpp"

namespace loom::onnx {
namespace {

/// logsumexp with PyTorch's inf semantics, as loom's: the max is subtracted
/// first unless it is infinite (all -inf gives -inf, a +inf gives +inf).
/// ONNX's ReduceLogSumExp gives NaN for those, so it is written out.
void logsumexp(ExportContext& c) {
  const DType dt = c.input_type(0).dtype;
  std::vector<int64_t> axes = c.attrs().ints("axes");
  const bool keep = c.attrs().get_or<bool>("keepdims", false);
  auto reduce = [&](const char* op, const std::string& x, bool keepdims, const std::string& out) {
    std::vector<std::string> in{x};
    if (std::string(op) == "ReduceSum" && !axes.empty()) in.push_back(c.ints(axes, "axes"));
    auto& n = c.add(op, in, {out});
    if (std::string(op) != "ReduceSum" && !axes.empty()) attr(n, "axes", axes);
    attr(n, "keepdims", int64_t(keepdims));
  };
  std::string m = c.temp("max"), inf = c.temp("inf"), shift = c.temp("shift"), e = c.temp("exp"), s = c.temp("sum"),
              l = c.temp("log");
  reduce("ReduceMax", c.input(0), true, m);
  c.add("IsInf", {m}, {inf});
  c.add("Where", {inf, c.scalar(0, dt, "zero"), m}, {shift});
  std::string centered = c.temp("centered");
  c.add("Sub", {c.input(0), shift}, {centered});
  c.add("Exp", {centered}, {e});
  reduce("ReduceSum", e, keep, s);
  c.add("Log", {s}, {l});
  std::string add_shift = shift;
  if (!keep) {
    add_shift = c.temp("shift_reduced");
    if (axes.empty())
      c.add("Reshape", {shift, c.ints({}, "scalar")}, {add_shift});
    else
      c.add("Squeeze", {shift, c.ints(axes, "axes")}, {add_shift});
  }
  c.add("Add", {l, add_shift}, {c.output(0)});
}

const bool registered = [] {
  register_exporter("softmax", [](ExportContext& c) {
    attr(c.add("Softmax", {c.input(0)}, {c.output(0)}), "axis", c.attrs().i("axis"));
  });
  register_exporter("log_softmax", [](ExportContext& c) {
    attr(c.add("LogSoftmax", {c.input(0)}, {c.output(0)}), "axis", c.attrs().i("axis"));
  });
  register_exporter("logsumexp", logsumexp);
  register_unexportable("softmax_grad", "it exists only in gradient graphs");
  register_unexportable("log_softmax_grad", "it exists only in gradient graphs");
  return true;
}();

}  // namespace
}  // namespace loom::onnx
