// ONNX exporters of the convolution family (ops/conv.cpp, ops/pool.cpp,
// ops/batch_norm.cpp). loom's padding is [top, bottom, left, right]; ONNX's
// pads are [top, left, bottom, right] (begins, then ends).

#include <algorithm>

#include "frontend/onnx/exporter.hpp"

namespace loom::onnx {
namespace {

std::vector<int64_t> onnx_pads(const std::vector<int64_t>& p) { return {p[0], p[2], p[1], p[3]}; }

void conv2d(ExportContext& c) {
  const Attrs& a = c.attrs();
  std::vector<std::string> in{c.input(0), c.input(1)};
  if (c.num_inputs() > 2) in.push_back(c.input(2));  // the bias
  const bool relu = a.get_or<bool>("relu", false);
  const std::string conv_out = relu ? c.temp("conv") : c.output(0);
  auto& n = c.add("Conv", in, {conv_out});
  const Shape& w = c.input_type(1).shape;
  attr(n, "kernel_shape", std::vector<int64_t>{w[2], w[3]});
  attr(n, "strides", a.ints("stride"));
  attr(n, "pads", onnx_pads(a.ints("padding")));
  attr(n, "dilations", a.ints("dilation"));
  attr(n, "group", a.i("groups"));
  if (relu) c.add("Relu", {conv_out}, {c.output(0)});
}

/// conv2d's input gradient is ONNX's ConvTranspose (what nn::ConvTranspose2d
/// builds); the output size, x_like's, becomes output_padding.
void conv2d_backward_data(ExportContext& c) {
  const Attrs& a = c.attrs();
  const Shape &dy = c.input_type(0).shape, &w = c.input_type(1).shape, &x = c.input_type(2).shape;
  if (dy[2] < 0 || dy[3] < 0 || x[2] < 0 || x[3] < 0)
    c.fail("a transposed convolution needs known heights and widths, got ", shape_str(dy), " to ", shape_str(x));
  const std::vector<int64_t>&s = a.ints("stride"), &p = a.ints("padding"), &d = a.ints("dilation");
  std::vector<int64_t> extra(2);
  for (size_t i = 0; i < 2; ++i)
    extra[i] = x[2 + i] - ((dy[2 + i] - 1) * s[i] - p[2 * i] - p[2 * i + 1] + d[i] * (w[2 + i] - 1) + 1);
  auto& n = c.add("ConvTranspose", {c.input(0), c.input(1)}, {c.output(0)});
  attr(n, "kernel_shape", std::vector<int64_t>{w[2], w[3]});
  attr(n, "strides", s);
  attr(n, "pads", onnx_pads(p));
  attr(n, "dilations", d);
  attr(n, "group", a.i("groups"));
  attr(n, "output_padding", extra);
}

void window_pool(ExportContext& c, const char* onnx_op, const std::vector<std::string>& outputs) {
  const Attrs& a = c.attrs();
  auto& n = c.add(onnx_op, {c.input(0)}, outputs);
  attr(n, "kernel_shape", a.ints("kernel"));
  attr(n, "strides", a.ints("stride"));
  attr(n, "pads", onnx_pads(a.ints("padding")));
  if (a.get_or("ceil_mode", false)) attr(n, "ceil_mode", int64_t(1));
  if (std::string(onnx_op) == "AveragePool") attr(n, "count_include_pad", int64_t(a.get_or<bool>("count_include_pad", true)));
}

/// MaxPool's Indices (flat over N * C * H * W) modulo the plane's size: the index in the plane.
void max_pool2d_indices(ExportContext& c) {
  const Shape& x = c.input_type(0).shape;
  if (x[2] < 0 || x[3] < 0) c.fail("the indices need a known input size, got ", shape_str(x));
  const std::string values = c.temp("values"), flat = c.temp("flat_indices");
  window_pool(c, "MaxPool", {values, flat});
  c.add("Mod", {flat, c.constant(NDArray::scalar(double(x[2] * x[3]), int64), "plane")}, {c.output(0)});
}

/// max_unpool2d: ScatterElements of y into zeros [N, C, H * W] along the planes, reshaped to
/// [N, C, H, W] (ONNX's MaxUnpool indexes the whole tensor; ONNX leaves the order of repeated
/// indices open, where loom keeps the last value).
void max_unpool2d(ExportContext& c) {
  const std::vector<int64_t>& o = c.attrs().ints("output_size");
  const std::string shape = c.temp("shape"), planes = c.temp("batch_channels"), flat = c.temp("flat_shape"),
                    zeros = c.temp("zeros"), ix = c.temp("flat_indices"), vals = c.temp("flat_values"),
                    scattered = c.temp("scattered"), out = c.temp("out_shape");
  c.add("Shape", {c.input(0)}, {shape});
  c.add("Slice", {shape, c.ints({0}, "starts"), c.ints({2}, "ends")}, {planes});
  attr(c.add("Concat", {planes, c.ints({o[0] * o[1]}, "plane")}, {flat}), "axis", int64_t(0));
  attr(c.add("ConstantOfShape", {flat}, {zeros}), "value",
       tensor_proto(NDArray::zeros({1}, c.input_type(0).dtype), "value"));
  const std::string rows = c.ints({0, 0, -1}, "rows");
  c.add("Reshape", {c.input(1), rows}, {ix});
  c.add("Reshape", {c.input(0), rows}, {vals});
  attr(c.add("ScatterElements", {zeros, ix, vals}, {scattered}), "axis", int64_t(2));
  attr(c.add("Concat", {planes, c.ints(o, "size")}, {out}), "axis", int64_t(0));
  c.add("Reshape", {scattered, out}, {c.output(0)});
}

/// Adaptive pooling's window i of `out` over `in`: [floor(i in / out), ceil((i + 1) in / out)).
std::pair<int64_t, int64_t> adaptive_span(int64_t i, int64_t in, int64_t out) {
  return {i * in / out, ((i + 1) * in + out - 1) / out};
}

/// The averaging matrix [out, in] of adaptive pooling along one axis: row i
/// averages the window [floor(i*in/out), ceil((i+1)*in/out)).
NDArray averaging(int64_t out, int64_t in, DType dt) {
  NDArray m = NDArray::zeros({out, in}, float64);
  for (int64_t i = 0; i < out; ++i) {
    const auto [lo, hi] = adaptive_span(i, in, out);
    for (int64_t j = lo; j < hi; ++j) m.data<double>()[i * in + j] = 1.0 / double(hi - lo);
  }
  return m.astype(dt);
}

/// Global pooling for 1x1; otherwise exactly, for any sizes, as two MatMuls
/// with averaging matrices: y = A_h x A_w^T (ONNX has no adaptive pooling).
void adaptive_avg_pool2d(ExportContext& c) {
  const std::vector<int64_t>& o = c.attrs().ints("output_size");
  const TensorType& x = c.input_type(0);
  if (o[0] == 1 && o[1] == 1) {
    c.add("GlobalAveragePool", {c.input(0)}, {c.output(0)});
    return;
  }
  if (x.shape[2] < 0 || x.shape[3] < 0)
    c.fail("output_size [", o[0], ", ", o[1], "] other than [1, 1] needs a known input size, got ", shape_str(x.shape));
  const std::string rows = c.temp("pooled_columns");
  c.add("MatMul", {c.input(0), c.constant(averaging(o[1], x.shape[3], x.dtype).transpose().compact(), "avg_w")}, {rows});
  c.add("MatMul", {c.constant(averaging(o[0], x.shape[2], x.dtype), "avg_h"), rows}, {c.output(0)});
}

/// The input rows of each adaptive window along one axis, [out, longest
/// window]: a shorter window repeats its last row (a maximum ignores repeats).
NDArray window_rows(int64_t out, int64_t in) {
  int64_t longest = 0;
  for (int64_t i = 0; i < out; ++i) {
    const auto [lo, hi] = adaptive_span(i, in, out);
    longest = std::max(longest, hi - lo);
  }
  NDArray m = NDArray::empty({out, longest}, int64);
  for (int64_t i = 0; i < out; ++i) {
    const auto [lo, hi] = adaptive_span(i, in, out);
    for (int64_t j = 0; j < longest; ++j) m.data<int64_t>()[i * longest + j] = std::min(lo + j, hi - 1);
  }
  return m;
}

/// GlobalMaxPool for 1x1; otherwise exactly, for any sizes (ONNX has no
/// adaptive pooling): per axis, Gather the rows of every window and ReduceMax
/// over them, as a maximum over a rectangle is one over rows of maxima over columns.
void adaptive_max_pool2d(ExportContext& c) {
  const std::vector<int64_t>& o = c.attrs().ints("output_size");
  const Shape& x = c.input_type(0).shape;
  if (o[0] == 1 && o[1] == 1) {
    c.add("GlobalMaxPool", {c.input(0)}, {c.output(0)});
    return;
  }
  if (x[2] < 0 || x[3] < 0)
    c.fail("output_size [", o[0], ", ", o[1], "] other than [1, 1] needs a known input size, got ", shape_str(x));
  std::string in = c.input(0);
  for (int64_t axis : {2, 3}) {
    const std::string rows = c.temp("window_rows"), out = axis == 3 ? c.output(0) : c.temp("pooled_rows");
    attr(c.add("Gather", {in, c.constant(window_rows(o[size_t(axis - 2)], x[size_t(axis)]), "windows")}, {rows}),
         "axis", axis);
    auto& m = c.add("ReduceMax", {rows}, {out});
    attr(m, "axes", std::vector<int64_t>{axis + 1});
    attr(m, "keepdims", int64_t(0));
    in = out;
  }
}

const bool registered = [] {
  register_exporter("conv2d", conv2d);
  register_exporter("conv2d_backward_data", conv2d_backward_data);
  register_exporter("max_pool2d", [](ExportContext& c) { window_pool(c, "MaxPool", {c.output(0)}); });
  register_exporter("avg_pool2d", [](ExportContext& c) { window_pool(c, "AveragePool", {c.output(0)}); });
  register_exporter("max_pool2d_indices", max_pool2d_indices);
  register_unexportable("adaptive_max_pool2d_indices", "ONNX has no adaptive max pooling with indices");
  register_exporter("max_unpool2d", max_unpool2d);
  register_unexportable("max_unpool2d_grad", "it exists only in gradient graphs");
  register_exporter("adaptive_avg_pool2d", adaptive_avg_pool2d);
  register_exporter("adaptive_max_pool2d", adaptive_max_pool2d);
  register_unexportable("batch_norm",
                        "it normalizes with the batch's statistics (training mode: export the graph the model builds "
                        "in eval mode, which uses the running statistics)");
  const char* gradient = "it exists only in gradient graphs";
  for (const char* op : {"conv2d_backward_filter", "max_pool2d_grad", "max_pool2d_pick", "adaptive_max_pool2d_grad",
                         "adaptive_max_pool2d_pick", "avg_pool2d_grad", "adaptive_avg_pool2d_grad", "batch_norm_grad"})
    register_unexportable(op, gradient);
  return true;
}();

}  // namespace
}  // namespace loom::onnx
