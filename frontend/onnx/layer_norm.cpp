// ONNX exporter of layer_norm (ops/layer_norm.cpp): LayerNormalization
// (opset 17) for float32. ONNX keeps the normalized axes in Mean and
// InvStdDev as 1s; loom's drops them, so those outputs are squeezed. ONNX's
// Scale is not optional: a layer_norm without weight exports a constant of ones.

#include "frontend/onnx/exporter.hpp"

namespace loom::onnx {
namespace {

std::vector<int64_t> normalized_axes(const ExportContext& c) {
  const int64_t k = c.attrs().i("dims"), rank = int64_t(c.input_type(0).shape.size());
  std::vector<int64_t> axes;
  for (int64_t i = rank - k; i < rank; ++i) axes.push_back(i);
  return axes;
}

/// float32: ONNX's LayerNormalization, with keep-dims statistics in mean and rstd.
void fused(ExportContext& c, const std::string& mean, const std::string& rstd) {
  const TensorType& x = c.input_type(0);
  const int64_t k = c.attrs().i("dims");
  std::vector<std::string> in{c.input(0)};
  if (c.num_inputs() >= 2) {
    for (size_t i = 1; i < c.num_inputs(); ++i) in.push_back(c.input(i));
  } else {
    const Shape norm(x.shape.end() - k, x.shape.end());
    for (int64_t d : norm)
      if (d < 0) c.fail("the normalized dims ", S(norm), " must be known to export a layer_norm without weight");
    in.push_back(c.constant(NDArray::full(norm, 1.0, x.dtype), "scale"));
  }
  auto& n = c.add("LayerNormalization", in, {c.output(0), mean, rstd});
  attr(n, "axis", -k);
  attr(n, "epsilon", c.attrs().f("eps"));
}

/// Other dtypes in ordinary ops: LayerNormalization's statistics are float32 (its stash_type)
/// whatever the input, which would round a float64 model's.
void composite(ExportContext& c, const std::string& mean, const std::string& rstd) {
  const DType dt = c.input_type(0).dtype;
  const std::vector<int64_t> axes = normalized_axes(c);
  auto reduce_mean = [&](const std::string& v, const std::string& out) {
    auto& n = c.add("ReduceMean", {v}, {out});
    attr(n, "axes", axes);
    attr(n, "keepdims", int64_t(1));
  };
  const std::string centered = c.temp("centered"), sq = c.temp("square"), var = c.temp("var"), ve = c.temp("var_eps"),
                    sd = c.temp("std"), xhat = c.temp("xhat");
  reduce_mean(c.input(0), mean);
  c.add("Sub", {c.input(0), mean}, {centered});
  c.add("Mul", {centered, centered}, {sq});
  reduce_mean(sq, var);
  c.add("Add", {var, c.scalar(c.attrs().f("eps"), dt, "eps")}, {ve});
  c.add("Sqrt", {ve}, {sd});
  c.add("Reciprocal", {sd}, {rstd});
  if (c.num_inputs() == 1) {
    c.add("Mul", {centered, rstd}, {c.output(0)});
    return;
  }
  c.add("Mul", {centered, rstd}, {xhat});
  if (c.num_inputs() == 2) {
    c.add("Mul", {xhat, c.input(1)}, {c.output(0)});
    return;
  }
  const std::string scaled = c.temp("scaled");
  c.add("Mul", {xhat, c.input(1)}, {scaled});
  c.add("Add", {scaled, c.input(2)}, {c.output(0)});
}

void layer_norm(ExportContext& c) {
  const std::string mean = c.temp("mean"), rstd = c.temp("rstd");
  if (c.input_type(0).dtype == float32)
    fused(c, mean, rstd);
  else
    composite(c, mean, rstd);
  const std::string axes = c.ints(normalized_axes(c), "axes");
  c.add("Squeeze", {mean, axes}, {c.output(1)});
  c.add("Squeeze", {rstd, axes}, {c.output(2)});
}

const bool registered = [] {
  register_exporter("layer_norm", layer_norm);
  register_unexportable("layer_norm_grad", "it exists only in gradient graphs");
  return true;
}();

}  // namespace
}  // namespace loom::onnx
