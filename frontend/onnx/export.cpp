// The ONNX export driver: walks the inference graph, turns inputs into graph
// inputs, variables and constants into initializers and every other node into
// ONNX nodes through its op's exporter, then checks the model with ONNX's own
// checker and strict shape inference before writing it.

#include <onnx/checker.h>
#include <onnx/defs/attr_proto_util.h>
#include <onnx/defs/schema.h>
#include <onnx/shape_inference/implementation.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <set>

#include <loom/version.hpp>

#include "core/session.hpp"
#include "frontend/checkpoint.hpp"
#include "frontend/io.hpp"
#include "frontend/onnx.hpp"
#include "frontend/onnx/exporter.hpp"

namespace loom::onnx {

namespace {

struct Registry {
  std::map<std::string, Exporter> exporters;
  std::map<std::string, std::string> unexportable;
};

Registry& registry() {
  static Registry r;
  return r;
}

}  // namespace

void register_exporter(const std::string& op, Exporter exporter) {
  LOOM_ASSERT(!registry().exporters.count(op) && !registry().unexportable.count(op), "ONNX exporter of '", op,
              "' registered twice");
  registry().exporters.emplace(op, std::move(exporter));
}

void register_unexportable(const std::string& op, const std::string& reason) {
  LOOM_ASSERT(!registry().exporters.count(op) && !registry().unexportable.count(op), "ONNX exporter of '", op,
              "' registered twice");
  registry().unexportable.emplace(op, reason);
}

std::vector<std::string> exportable_ops() {
  std::vector<std::string> out;
  for (const auto& [op, fn] : registry().exporters) out.push_back(op);
  return out;
}

std::vector<std::pair<std::string, std::string>> unexportable_ops() {
  return {registry().unexportable.begin(), registry().unexportable.end()};
}

// ---------------------------------------------------------------- helpers

int32_t onnx_type(DType dtype) {
  switch (dtype) {
    case DType::float32:
      return ::onnx::TensorProto::FLOAT;
    case DType::float64:
      return ::onnx::TensorProto::DOUBLE;
    case DType::int32:
      return ::onnx::TensorProto::INT32;
    case DType::int64:
      return ::onnx::TensorProto::INT64;
    case DType::uint8:
      return ::onnx::TensorProto::UINT8;
    case DType::boolean:
      return ::onnx::TensorProto::BOOL;
  }
  return ::onnx::TensorProto::UNDEFINED;
}

::onnx::TensorProto tensor_proto(const NDArray& value, const std::string& name) {
  NDArray h = value.to(Device::cpu()).compact();
  ::onnx::TensorProto t;
  t.set_name(name);
  t.set_data_type(onnx_type(h.dtype()));
  for (int64_t d : h.shape()) t.add_dims(d);
  t.set_raw_data(std::string(static_cast<const char*>(h.raw()), h.nbytes()));  // little-endian, as ONNX's
  return t;
}

void attr(::onnx::NodeProto& node, const std::string& name, int64_t value) {
  *node.add_attribute() = ::onnx::MakeAttribute(name, value);
}
void attr(::onnx::NodeProto& node, const std::string& name, double value) {
  *node.add_attribute() = ::onnx::MakeAttribute(name, float(value));
}
void attr(::onnx::NodeProto& node, const std::string& name, const std::vector<int64_t>& values) {
  *node.add_attribute() = ::onnx::MakeAttribute(name, values);
}
void attr(::onnx::NodeProto& node, const std::string& name, const std::string& value) {
  *node.add_attribute() = ::onnx::MakeAttribute(name, value);
}
void attr(::onnx::NodeProto& node, const std::string& name, const ::onnx::TensorProto& value) {
  *node.add_attribute() = ::onnx::MakeAttribute(name, value);
}

Exporter same_as(const std::string& onnx_op) {
  return [onnx_op](ExportContext& c) {
    std::vector<std::string> in;
    for (size_t i = 0; i < c.num_inputs(); ++i) in.push_back(c.input(i));
    c.add(onnx_op, in, {c.output(0)});
  };
}

// ---------------------------------------------------------------- ExportContext

ExportContext::ExportContext(::onnx::GraphProto& graph, const Graph& loom_graph, const Node& node,
                             std::vector<std::string> inputs, std::vector<std::string> outputs,
                             std::set<std::string>& used, std::function<std::string(const Edge&)> value_of)
    : graph_(graph),
      loom_graph_(loom_graph),
      node_(node),
      inputs_(std::move(inputs)),
      outputs_(std::move(outputs)),
      used_(used),
      value_of_(std::move(value_of)) {}

const Node& ExportContext::input_node(size_t i) const { return loom_graph_.node(node_.inputs.at(i).node); }

const TensorType& ExportContext::input_type(size_t i) const {
  return input_node(i).outputs.at(size_t(node_.inputs.at(i).index));
}

std::string fresh_name(std::set<std::string>& used, const std::string& base) {
  std::string name = base;
  for (int k = 1; !used.insert(name).second; ++k) name = base + "_" + std::to_string(k);
  return name;
}

std::string ExportContext::unique(const std::string& base) { return fresh_name(used_, base); }

::onnx::NodeProto& ExportContext::add(const std::string& op_type, const std::vector<std::string>& inputs,
                                      const std::vector<std::string>& outputs) {
  ::onnx::NodeProto& n = *graph_.add_node();
  n.set_op_type(op_type);
  n.set_name(unique(node_.name + "#" + op_type));
  for (const std::string& i : inputs) n.add_input(i);
  for (const std::string& o : outputs) n.add_output(o);
  return n;
}

std::string ExportContext::temp(const std::string& hint) { return unique(node_.name + "/" + hint); }

std::string ExportContext::constant(const NDArray& value, const std::string& hint) {
  std::string name = temp(hint);
  *graph_.add_initializer() = tensor_proto(value, name);
  return name;
}

std::string ExportContext::ints(const std::vector<int64_t>& values, const std::string& hint) {
  return constant(NDArray::from<int64_t>(values, {int64_t(values.size())}), hint);
}

std::string ExportContext::scalar(double value, DType dtype, const std::string& hint) {
  return constant(NDArray::scalar(value, dtype), hint);
}

// ---------------------------------------------------------------- the driver

namespace {

/// Declares a graph input or output: its name, element type and shape; dynamic dims get `symbol(d)` or stay unknown.
void add_value_info(::google::protobuf::RepeatedPtrField<::onnx::ValueInfoProto>& list, const std::string& name,
                    const TensorType& t, const std::function<std::string(size_t)>& symbol) {
  ::onnx::ValueInfoProto& v = *list.Add();
  v.set_name(name);
  auto* tt = v.mutable_type()->mutable_tensor_type();
  tt->set_elem_type(onnx_type(t.dtype));
  auto* shape = tt->mutable_shape();
  for (size_t d = 0; d < t.shape.size(); ++d) {
    auto* dim = shape->add_dim();
    if (t.shape[d] >= 0)
      dim->set_dim_value(t.shape[d]);
    else if (symbol)
      dim->set_dim_param(symbol(d));
  }
}

/// Removes nodes none of whose outputs is used (an exporter may leave some,
/// e.g. a transpose folded into Gemm) and initializers no node reads.
void prune(::onnx::GraphProto& g) {
  std::set<std::string> used;
  for (const auto& o : g.output()) used.insert(o.name());
  std::vector<bool> keep(size_t(g.node_size()), false);
  for (int i = g.node_size() - 1; i >= 0; --i) {
    const auto& n = g.node(i);
    for (const auto& o : n.output()) keep[size_t(i)] = keep[size_t(i)] || used.count(o);
    if (keep[size_t(i)])
      for (const auto& in : n.input()) used.insert(in);
  }
  ::onnx::GraphProto pruned;
  for (int i = 0; i < g.node_size(); ++i)
    if (keep[size_t(i)]) *pruned.add_node() = g.node(i);
  for (const auto& t : g.initializer())
    if (used.count(t.name())) *pruned.add_initializer() = t;
  g.mutable_node()->Swap(pruned.mutable_node());
  g.mutable_initializer()->Swap(pruned.mutable_initializer());
}

/// The nodes `outputs` need, stopping at the inputs.
std::vector<int> needed_nodes(const Graph& graph, const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs) {
  std::vector<char> seen(size_t(graph.size()), 0), is_input(size_t(graph.size()), 0);
  for (const Tensor& t : inputs) is_input[size_t(t.node_id())] = 1;
  std::vector<int> stack;
  for (const Tensor& t : outputs) stack.push_back(t.node_id());
  while (!stack.empty()) {
    int id = stack.back();
    stack.pop_back();
    if (seen[size_t(id)]) continue;
    seen[size_t(id)] = 1;
    const Node& n = graph.node(id);
    if (is_input[size_t(id)]) continue;
    if (n.op->name == "placeholder")
      fail("ONNX export: the outputs depend on placeholder '", n.name, "', which is not among the inputs");
    for (const Edge& e : n.inputs) stack.push_back(e.node);
  }
  std::vector<int> order;
  for (int id = 0; id < graph.size(); ++id)
    if (seen[size_t(id)]) order.push_back(id);
  return order;  // node ids are a topological order
}

void check_arguments(const Graph& graph, const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                     const ExportOptions& o) {
  LOOM_CHECK(!outputs.empty(), "ONNX export: no outputs");
  for (const Tensor& t : inputs)
    LOOM_CHECK(t.valid() && &t.graph() == &graph && t.op() == "placeholder", "ONNX export: input '",
               t.valid() ? t.name() : "?", "' is not a placeholder of the graph");
  for (const Tensor& t : outputs)
    LOOM_CHECK(t.valid() && &t.graph() == &graph, "ONNX export: output '", t.valid() ? t.name() : "?",
               "' is not a tensor of the graph");
  LOOM_CHECK(o.input_names.empty() || o.input_names.size() == inputs.size(), "ONNX export: ", o.input_names.size(),
             " input names for ", inputs.size(), " inputs");
  LOOM_CHECK(o.output_names.empty() || o.output_names.size() == outputs.size(), "ONNX export: ",
             o.output_names.size(), " output names for ", outputs.size(), " outputs");
  LOOM_CHECK(!o.session || &o.session->graph() == &graph, "ONNX export: the session runs another graph");
  // Names given are used as they are (a renamed one would not be found by the caller's feeds and fetches).
  std::set<std::string> given;
  for (const auto* names : {&o.input_names, &o.output_names})
    for (const std::string& n : *names) {
      LOOM_CHECK(!n.empty(), "ONNX export: an empty input or output name");
      LOOM_CHECK(given.insert(n).second, "ONNX export: the name '", n,
                 "' is given twice (input_names and output_names must all differ)");
    }
}

/// ONNX's checker, then shape inference in strict mode (which also checks the
/// types every node sees). A failure here is an exporter's bug.
void validate(const ::onnx::ModelProto& model) {
  try {
    ::onnx::checker::check_model(model);
    ::onnx::ModelProto copy = model;
    ::onnx::ShapeInferenceOptions options{/*check_type=*/true, /*error_mode=*/1, /*enable_data_propagation=*/false};
    ::onnx::shape_inference::InferShapes(copy, ::onnx::OpSchemaRegistry::Instance(), options);
  } catch (const std::exception& e) {
    fail("ONNX export: the ONNX checker rejects the model loom wrote (a bug in an exporter): ", e.what());
  }
}

}  // namespace

namespace {

/// One export: the ONNX graph being built and the names given so far.
class Export {
 public:
  Export(const Graph& graph, const ExportOptions& options, ::onnx::GraphProto& g)
      : graph_(graph), options_(options), g_(g) {}

  void inputs(const std::vector<Tensor>& inputs) {
    for (size_t i = 0; i < inputs.size(); ++i) {
      const std::string name = claim(options_.input_names.empty() ? inputs[i].name() : options_.input_names[i]);
      LOOM_CHECK(!value_.count({inputs[i].node_id(), 0}), "ONNX export: input '", inputs[i].name(), "' is listed twice");
      value_[{inputs[i].node_id(), 0}] = name;
      add_value_info(*g_.mutable_input(), name, inputs[i].type(),
                     [&](size_t d) { return d == 0 ? std::string("batch") : name + "_dim" + std::to_string(d); });
    }
  }

  /// Reserves the output names first: the node producing an output names its value so.
  void reserve_outputs(const std::vector<Tensor>& outputs) {
    for (size_t i = 0; i < outputs.size(); ++i) {
      output_names_.push_back(claim(options_.output_names.empty() ? outputs[i].name() : options_.output_names[i]));
      reserved_.emplace(std::make_pair(outputs[i].node_id(), outputs[i].index()), output_names_.back());
    }
  }

  void node(int id) {
    const Node& n = graph_.node(id);
    if (value_.count({id, 0})) return;  // an input
    const std::string& op = n.op->name;
    if (op == "variable" || op == "constant") {
      initializer(n);
      return;
    }
    const Exporter& exporter = exporter_of(n);
    const int first = g_.node_size();
    ExportContext c = context_for(n);
    exporter(c);
    for (size_t o = 0; o < c.num_outputs(); ++o) {
      bool made = false;
      for (int k = first; k < g_.node_size() && !made; ++k)
        for (const auto& x : g_.node(k).output()) made = made || x == c.output(o);
      LOOM_ASSERT(made, "ONNX exporter of '", op, "' did not produce '", c.output(o), "'");
    }
  }

  /// Declares the outputs; those not produced under their own name (an input,
  /// an initializer, a tensor listed twice) come out through an Identity.
  void outputs(const std::vector<Tensor>& outputs) {
    for (size_t i = 0; i < outputs.size(); ++i) {
      const std::string& src = value_.at({outputs[i].node_id(), outputs[i].index()});
      if (src != output_names_[i]) {
        auto& n = *g_.add_node();
        n.set_op_type("Identity");
        n.set_name(claim(output_names_[i] + "#Identity"));
        n.add_input(src);
        n.add_output(output_names_[i]);
      }
      add_value_info(*g_.mutable_output(), output_names_[i], outputs[i].type(), nullptr);
    }
  }

 private:
  std::string claim(const std::string& base) { return fresh_name(used_, base); }
  Tensor tensor(int id, int index) const { return Tensor(const_cast<Graph*>(&graph_), id, index); }

  /// Variables (named like their checkpoint tensors) and constants.
  void initializer(const Node& n) {
    const bool variable = n.op->name == "variable";
    LOOM_CHECK(!variable || options_.session, "ONNX export: the outputs read variable '", n.name,
               "': pass ExportOptions::session to give its value");
    NDArray v = variable ? options_.session->get(tensor(n.id, 0)) : n.attrs.get<NDArray>("value");
    std::string name = claim(variable ? checkpoint::state_dict_name(n.name) : n.name);
    *g_.add_initializer() = tensor_proto(v, name);
    value_[{n.id, 0}] = name;
  }

  const Exporter& exporter_of(const Node& n) const {
    const std::string& op = n.op->name;
    auto it = registry().exporters.find(op);
    if (it != registry().exporters.end()) return it->second;
    auto why = registry().unexportable.find(op);
    if (why != registry().unexportable.end())
      fail("ONNX export: node '", n.name, "' (", op, ") has no ONNX form: ", why->second);
    fail("ONNX export: node '", n.name, "': op '", op,
         "' has no ONNX exporter yet (frontend/onnx/exporter.hpp says how to add one)");
  }

  /// Names the node's output values and makes the exporter's context.
  ExportContext context_for(const Node& n) {
    std::vector<std::string> ins, outs;
    for (const Edge& e : n.inputs) ins.push_back(value_.at({e.node, e.index}));
    for (size_t k = 0; k < n.outputs.size(); ++k) {
      auto reserved = reserved_.find({n.id, int(k)});
      std::string name = reserved != reserved_.end() ? reserved->second : claim(tensor(n.id, int(k)).name());
      if (reserved != reserved_.end()) reserved_.erase(reserved);
      outs.push_back(name);
      value_[{n.id, int(k)}] = name;
    }
    auto value_of = [this](const Edge& e) {
      auto v = value_.find({e.node, e.index});
      LOOM_ASSERT(v != value_.end(), "ONNX export: '", graph_.node(e.node).name, "' is not exported yet");
      return v->second;
    };
    return ExportContext(g_, graph_, n, ins, outs, used_, value_of);
  }

  const Graph& graph_;
  const ExportOptions& options_;
  ::onnx::GraphProto& g_;
  std::set<std::string> used_;                              // ONNX value and node names taken
  std::map<std::pair<int, int>, std::string> value_;        // (node, output) -> ONNX value name
  std::map<std::pair<int, int>, std::string> reserved_;     // graph outputs not produced yet
  std::vector<std::string> output_names_;
};

}  // namespace

std::string export_bytes(const Graph& graph, const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                         const ExportOptions& options) {
  check_arguments(graph, inputs, outputs, options);
  ::onnx::ModelProto model;
  model.set_ir_version(::onnx::IR_VERSION);
  model.set_producer_name("loom");
  model.set_producer_version(LOOM_VERSION_STRING);
  auto* opset = model.add_opset_import();
  opset->set_domain("");
  opset->set_version(kOpset);
  ::onnx::GraphProto& g = *model.mutable_graph();
  g.set_name(options.graph_name);
  if (!options.doc.empty()) g.set_doc_string(options.doc);

  Export e(graph, options, g);
  e.inputs(inputs);
  e.reserve_outputs(outputs);
  for (int id : needed_nodes(graph, inputs, outputs)) e.node(id);
  e.outputs(outputs);
  prune(g);
  validate(model);
  std::string bytes;
  LOOM_CHECK(model.SerializeToString(&bytes), "ONNX export: the model could not be serialized (over 2 GB?)");
  return bytes;
}

void export_graph(const Graph& graph, const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                  const std::string& path, const ExportOptions& options) {
  io::write_file_atomically(path, export_bytes(graph, inputs, outputs, options));
}

}  // namespace loom::onnx
