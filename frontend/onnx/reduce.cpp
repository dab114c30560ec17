// ONNX exporters of the reductions (ops/reduce.cpp). Opset 17: ReduceSum takes
// its axes as an input, the other reductions as an attribute.

#include <algorithm>

#include "frontend/onnx/exporter.hpp"

namespace loom::onnx {
namespace {

/// Axes in [0, rank), sorted.
std::vector<int64_t> normalized(std::vector<int64_t> axes, size_t rank) {
  for (int64_t& a : axes) a = a < 0 ? a + int64_t(rank) : a;
  std::sort(axes.begin(), axes.end());
  return axes;
}

/// ReduceSum of `x` over `axes` (all when empty) into `out`. ONNX has no
/// uint8 ReduceSum: those sum in int32 and wrap back, as loom's do.
void reduce_sum(ExportContext& c, const std::string& x, DType dtype, const std::vector<int64_t>& axes, bool keepdims,
                const std::string& out) {
  std::string in = x, result = out;
  if (dtype == uint8) {
    in = c.temp("wide");
    attr(c.add("Cast", {x}, {in}), "to", int64_t(onnx_type(int32)));
    result = c.temp("sum");
  }
  std::vector<std::string> inputs{in};
  if (!axes.empty()) inputs.push_back(c.ints(axes, "axes"));
  attr(c.add("ReduceSum", inputs, {result}), "keepdims", int64_t(keepdims));
  if (dtype == uint8) attr(c.add("Cast", {result}, {out}), "to", int64_t(onnx_type(uint8)));
}

/// `onnx_op` over the node's axes; max and min with NumPy's `initial` take
/// one more element, `combine` (Max, Min) of the result and that value (an
/// empty axis then gives `initial`: ONNX reduces nothing to the identity).
Exporter reduce_with_attribute(const char* onnx_op, const char* combine = nullptr) {
  return [onnx_op, combine](ExportContext& c) {
    const bool initial = combine && c.attrs().has("initial");
    const std::string reduced = initial ? c.temp("reduced") : c.output(0);
    auto& n = c.add(onnx_op, {c.input(0)}, {reduced});
    if (!c.attrs().ints("axes").empty()) attr(n, "axes", c.attrs().ints("axes"));
    attr(n, "keepdims", int64_t(c.attrs().get_or<bool>("keepdims", false)));
    if (initial)
      c.add(combine, {reduced, c.scalar(c.attrs().f("initial"), c.input_type(0).dtype, "initial")}, {c.output(0)});
  };
}

Exporter arg(const char* onnx_op) {
  return [onnx_op](ExportContext& c) {
    std::string x = c.input(0);
    int64_t axis = 0;
    if (c.attrs().has("axis")) {
      axis = c.attrs().i("axis");
    } else {  // over all elements: of the flattened tensor
      x = c.temp("flat");
      c.add("Reshape", {c.input(0), c.ints({-1}, "shape")}, {x});
    }
    auto& n = c.add(onnx_op, {x}, {c.output(0)});
    attr(n, "axis", axis);
    attr(n, "keepdims", int64_t(0));
    attr(n, "select_last_index", int64_t(0));  // the first of equal values, as loom
  };
}

const bool registered = [] {
  register_exporter("sum", [](ExportContext& c) {
    reduce_sum(c, c.input(0), c.input_type(0).dtype, c.attrs().ints("axes"), c.attrs().get_or<bool>("keepdims", false),
               c.output(0));
  });
  register_exporter("mean", reduce_with_attribute("ReduceMean"));
  register_exporter("max", reduce_with_attribute("ReduceMax", "Max"));
  register_exporter("min", reduce_with_attribute("ReduceMin", "Min"));
  register_exporter("argmax", arg("ArgMax"));
  register_exporter("argmin", arg("ArgMin"));

  // sum_to(g, like): sums the leading dims g has beyond like's and the dims
  // like has as 1, then takes like's shape.
  register_exporter("sum_to", [](ExportContext& c) {
    const Shape &g = c.input_type(0).shape, &to = c.input_type(1).shape;
    const size_t lead = g.size() - to.size();
    std::vector<int64_t> axes;
    for (size_t d = 0; d < g.size(); ++d)
      if (d < lead || (to[d - lead] == 1 && g[d] != 1)) axes.push_back(int64_t(d));
    if (axes.empty()) {
      c.add("Identity", {c.input(0)}, {c.output(0)});
      return;
    }
    std::string summed = c.temp("sum"), shape = c.temp("shape");
    reduce_sum(c, c.input(0), c.input_type(0).dtype, axes, true, summed);
    c.add("Shape", {c.input(1)}, {shape});
    c.add("Reshape", {summed, shape}, {c.output(0)});
  });

  // size(x, axes): the product of those dims of x, as a scalar of `dtype`.
  register_exporter("size", [](ExportContext& c) {
    const Shape& s = c.input_type(0).shape;
    std::vector<int64_t> axes = normalized(c.attrs().ints("axes"), s.size());
    if (axes.empty())
      for (size_t d = 0; d < s.size(); ++d) axes.push_back(int64_t(d));
    const DType dtype = c.output_type(0).dtype;
    double n = 1;
    bool known = true;
    for (int64_t a : axes) known = known && s[size_t(a)] >= 0, n *= double(s[size_t(a)]);
    if (known) {
      c.add("Identity", {c.scalar(n, dtype, "size")}, {c.output(0)});
      return;
    }
    std::string shape = c.temp("shape"), dims = c.temp("dims"), prod = c.temp("prod");
    c.add("Shape", {c.input(0)}, {shape});
    c.add("Gather", {shape, c.ints(axes, "axes")}, {dims});
    attr(c.add("ReduceProd", {dims}, {prod}), "keepdims", int64_t(0));
    attr(c.add("Cast", {prod}, {c.output(0)}), "to", int64_t(onnx_type(dtype)));
  });
  return true;
}();

}  // namespace
}  // namespace loom::onnx
