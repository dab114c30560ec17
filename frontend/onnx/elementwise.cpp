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
      {"where", "Where"}, {"erf", "Erf"},   {"softplus", "Softplus"}, {"copy", "Identity"}};
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
  // Opset 17 has no Gelu (opset 20 does): written out as PyTorch defines both forms.
  register_exporter("gelu", [](ExportContext& c) {  // x (1 + erf(x / sqrt 2)) / 2
    const DType dt = c.input_type(0).dtype;
    std::string z = c.temp("z"), e = c.temp("erf"), one = c.temp("one_plus"), h = c.temp("half_x");
    c.add("Mul", {c.input(0), c.scalar(0.7071067811865476, dt, "rsqrt2")}, {z});
    c.add("Erf", {z}, {e});
    c.add("Add", {e, c.scalar(1, dt, "one")}, {one});
    c.add("Mul", {c.input(0), c.scalar(0.5, dt, "half")}, {h});
    c.add("Mul", {h, one}, {c.output(0)});
  });
  register_exporter("gelu_tanh", [](ExportContext& c) {  // x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2
    const DType dt = c.input_type(0).dtype;
    std::string x3 = c.temp("x3"), a = c.temp("inner"), s = c.temp("sum"), u = c.temp("u"), t = c.temp("tanh"),
                one = c.temp("one_plus"), h = c.temp("half_x");
    c.add("Pow", {c.input(0), c.scalar(3, dt, "three")}, {x3});
    c.add("Mul", {x3, c.scalar(0.044715, dt, "k")}, {a});
    c.add("Add", {c.input(0), a}, {s});
    c.add("Mul", {s, c.scalar(0.7978845608028654, dt, "sqrt_2_over_pi")}, {u});
    c.add("Tanh", {u}, {t});
    c.add("Add", {t, c.scalar(1, dt, "one")}, {one});
    c.add("Mul", {c.input(0), c.scalar(0.5, dt, "half")}, {h});
    c.add("Mul", {h, one}, {c.output(0)});
  });
  register_unexportable("fused", "it exists only in compiled plans (export the graph the user built)");
  return true;
}();

}  // namespace
}  // namespace loom::onnx
