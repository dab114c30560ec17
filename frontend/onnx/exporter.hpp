#pragma once
// Writing an op's ONNX exporter (internal to libloom_onnx; includes ONNX's
// protobuf headers). Each op family has a file here mirroring ops/
// (frontend/onnx/<family>.cpp) that registers, at load time, one exporter per
// op, keyed by the op's name:
//
//     const bool registered = [] {
//       register_exporter("relu", [](ExportContext& c) { c.add("Relu", {c.input(0)}, {c.output(0)}); });
//       register_unexportable("adam_update", "an optimizer update (export the eval-mode graph)");
//       return true;
//     }();
//
// An exporter turns one loom node into ONNX nodes: it reads the node's
// attributes and input types, adds nodes with c.add() (attributes with
// attr()), constants with c.constant()/c.ints(), intermediate values with
// c.temp(), and must produce every output c.output(i). It throws through
// c.fail() what it cannot express. Every registered op needs an exporter or
// a reason in register_unexportable (tests/onnx/test_onnx.cpp checks it) and
// its examples are exported and checked by that test and numerically by
// `./build.sh interop` (onnxruntime against loom's reference).

#include <onnx/onnx_pb.h>

#include <functional>
#include <set>
#include <string>
#include <vector>

#include "core/graph.hpp"

namespace loom::onnx {

class ExportContext {
 public:
  /// `value_of` gives the ONNX name of an already exported loom tensor.
  ExportContext(::onnx::GraphProto& graph, const Graph& loom_graph, const Node& node, std::vector<std::string> inputs,
                std::vector<std::string> outputs, std::set<std::string>& used,
                std::function<std::string(const Edge&)> value_of);

  const Node& node() const { return node_; }
  const Attrs& attrs() const { return node_.attrs; }
  /// ONNX value names of the node's inputs and outputs.
  const std::string& input(size_t i) const { return inputs_.at(i); }
  const std::string& output(size_t i) const { return outputs_.at(i); }
  size_t num_inputs() const { return inputs_.size(); }
  size_t num_outputs() const { return outputs_.size(); }
  const TensorType& input_type(size_t i) const;
  const TensorType& output_type(size_t i) const { return node_.outputs.at(i); }
  /// The loom node producing input i (to export a pattern, e.g. matmul of a transpose as Gemm).
  const Node& input_node(size_t i) const;
  /// The ONNX name of an exported loom tensor (an input of input_node(i), say).
  std::string value_of(const Edge& e) const { return value_of_(e); }

  /// Appends an ONNX node; its name derives from the loom node's.
  ::onnx::NodeProto& add(const std::string& op_type, const std::vector<std::string>& inputs,
                         const std::vector<std::string>& outputs);
  /// A new value name for an intermediate result ("<node>/<hint>").
  std::string temp(const std::string& hint);
  /// An initializer holding `value`; returns its name.
  std::string constant(const NDArray& value, const std::string& hint);
  /// An int64 vector initializer (shapes, axes, pads).
  std::string ints(const std::vector<int64_t>& values, const std::string& hint);
  /// A scalar initializer of `dtype`.
  std::string scalar(double value, DType dtype, const std::string& hint);

  /// Throws loom::Error "ONNX export: <op> '<node>': <message>".
  template <class... A>
  [[noreturn]] void fail(A&&... a) const {
    loom::fail("ONNX export: ", node_.op->name, " '", node_.name, "': ", std::forward<A>(a)...);
  }

 private:
  std::string unique(const std::string& base);
  ::onnx::GraphProto& graph_;
  const Graph& loom_graph_;
  const Node& node_;
  std::vector<std::string> inputs_, outputs_;
  std::set<std::string>& used_;
  std::function<std::string(const Edge&)> value_of_;
};

using Exporter = std::function<void(ExportContext&)>;

/// Registers the exporter of loom op `op` (once per op).
void register_exporter(const std::string& op, Exporter exporter);
/// Declares that `op` has no ONNX form, and why (shown in the export error).
void register_unexportable(const std::string& op, const std::string& reason);

/// ONNX's element type for a loom dtype.
int32_t onnx_type(DType dtype);
/// A TensorProto holding `value` (host or device, any layout).
::onnx::TensorProto tensor_proto(const NDArray& value, const std::string& name);

/// Attribute helpers: attr(node, "axis", 1), attr(node, "perm", axes), ...
void attr(::onnx::NodeProto& node, const std::string& name, int64_t value);
inline void attr(::onnx::NodeProto& node, const std::string& name, int value) { attr(node, name, int64_t(value)); }
void attr(::onnx::NodeProto& node, const std::string& name, double value);
void attr(::onnx::NodeProto& node, const std::string& name, const std::vector<int64_t>& values);
void attr(::onnx::NodeProto& node, const std::string& name, const std::string& value);
void attr(::onnx::NodeProto& node, const std::string& name, const ::onnx::TensorProto& value);

/// A name not in `used` (base, base_1, base_2, ...), now taken.
std::string fresh_name(std::set<std::string>& used, const std::string& base);

/// Shared by exporters: an element-wise op that maps to one ONNX op of the same inputs.
Exporter same_as(const std::string& onnx_op);

}  // namespace loom::onnx
