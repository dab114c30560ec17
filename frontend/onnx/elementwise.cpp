// ONNX exporters of the element-wise ops (ops/elementwise.cpp).

#include "frontend/onnx/exporter.hpp"

namespace loom::onnx {
namespace {

const bool registered = [] {
  const std::pair<const char*, const char*> same[] = {
      {"neg", "Neg"},     {"exp", "Exp"},         {"log", "Log"},           {"sqrt", "Sqrt"},
      {"abs", "Abs"},     {"sign", "Sign"},       {"tanh", "Tanh"},         {"sigmoid", "Sigmoid"},
      {"relu", "Relu"},   {"identity", "Identity"}, {"stop_gradient", "Identity"},
      {"add", "Add"},     {"sub", "Sub"},         {"mul", "Mul"},           {"div", "Div"},
      {"pow", "Pow"},     {"maximum", "Max"},     {"minimum", "Min"},       {"eq", "Equal"},
      {"lt", "Less"},     {"le", "LessOrEqual"},  {"gt", "Greater"},        {"ge", "GreaterOrEqual"},
      {"where", "Where"}};
  for (auto [op, onnx_op] : same) register_exporter(op, same_as(onnx_op));

  register_exporter("ne", [](ExportContext& c) {
    std::string eq = c.temp("eq");
    c.add("Equal", {c.input(0), c.input(1)}, {eq});
    c.add("Not", {eq}, {c.output(0)});
  });
  register_exporter("cast", [](ExportContext& c) {
    attr(c.add("Cast", {c.input(0)}, {c.output(0)}), "to", int64_t(onnx_type(c.output_type(0).dtype)));
  });
  // full: a constant (static shape) or ConstantOfShape of the shape-only input's shape.
  register_exporter("full", [](ExportContext& c) {
    const TensorType& t = c.output_type(0);
    NDArray value = NDArray::full({1}, c.attrs().f("value"), t.dtype);
    if (c.num_inputs() == 0) {
      c.add("Expand", {c.constant(value.reshape({}), "value"), c.ints(t.shape, "shape")}, {c.output(0)});
      return;
    }
    std::string shape = c.temp("shape");
    c.add("Shape", {c.input(0)}, {shape});
    attr(c.add("ConstantOfShape", {shape}, {c.output(0)}), "value", tensor_proto(value, "value"));
  });
  register_unexportable("fused", "it exists only in compiled plans (export the graph the user built)");
  return true;
}();

}  // namespace
}  // namespace loom::onnx
