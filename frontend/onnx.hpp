#pragma once
/// ONNX export of inference graphs, in libloom_onnx (CMake: loom::onnx;
/// pkg-config: loom-onnx), so that libloom itself has no protobuf dependency.
///
///     model.eval();
///     Tensor logits = model(x);                      // the inference graph
///     onnx::export_graph(g, {x}, {logits}, "model.onnx", {.session = &session});
///
/// The graph between `inputs` (placeholders) and `outputs` becomes an ONNX
/// model (opset 17): each loom node through its op's exporter
/// (frontend/onnx/exporter.hpp), variables and constants as initializers
/// named like their checkpoint tensors ("1.weight"), dynamic dims (-1) as
/// symbolic dims. The model is checked with ONNX's own checker and strict
/// shape inference before it is written (atomically). An op without an ONNX
/// form (optimizer updates, assigns, random numbers of a training-mode graph)
/// is a loom::Error naming the node.

#include <cstdint>
#include <string>
#include <vector>

#include "core/graph.hpp"

namespace loom {
class Session;
}

namespace loom::onnx {

struct ExportOptions {
  /// Where the variables' values come from: a session running `graph`
  /// (needed when the outputs depend on a variable).
  Session* session = nullptr;
  /// Names of the ONNX graph's inputs and outputs; default: the placeholders'
  /// names and the output nodes' names.
  std::vector<std::string> input_names = {};
  std::vector<std::string> output_names = {};
  /// The ONNX graph's name and doc string.
  std::string graph_name = "loom";
  std::string doc = {};
};

/// Writes the ONNX model computing `outputs` from `inputs` to `path`.
void export_graph(const Graph& graph, const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                  const std::string& path, const ExportOptions& options = {});

/// The ONNX model's bytes (a serialized ModelProto), checked as export_graph checks it.
std::string export_bytes(const Graph& graph, const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                         const ExportOptions& options = {});

/// The ops with an exporter, and the ops declared to have no ONNX form (with
/// the reason), both sorted by op name.
std::vector<std::string> exportable_ops();
std::vector<std::pair<std::string, std::string>> unexportable_ops();

/// The opset loom writes.
constexpr int64_t kOpset = 17;

}  // namespace loom::onnx
