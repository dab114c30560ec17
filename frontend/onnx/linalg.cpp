// ONNX exporter of matmul (ops/linalg.cpp): MatMul, which has numpy's
// semantics as loom's matmul does; Gemm with transB when the right operand
// is the transpose of a 2-D tensor (nn::Linear's x @ weight^T, as PyTorch
// exports it), so the weight stays [out, in] in the file.

#include "frontend/onnx/exporter.hpp"

namespace loom::onnx {
namespace {

/// Input 0 of a permute node that swaps the two axes of a 2-D tensor.
bool is_2d_transpose(const Node& n) {
  return n.op->name == "permute" && n.attrs.ints("axes") == std::vector<int64_t>{1, 0};
}

const bool registered = [] {
  register_exporter("matmul", [](ExportContext& c) {
    const TensorType &a = c.input_type(0), &b = c.input_type(1);
    const bool floating = a.dtype == float32 || a.dtype == float64;
    if (floating && a.shape.size() == 2 && b.shape.size() == 2 && is_2d_transpose(c.input_node(1))) {
      auto& n = c.add("Gemm", {c.input(0), c.value_of(c.input_node(1).inputs[0])}, {c.output(0)});
      attr(n, "transB", int64_t(1));
      return;
    }
    c.add("MatMul", {c.input(0), c.input(1)}, {c.output(0)});
  });
  return true;
}();

}  // namespace
}  // namespace loom::onnx
