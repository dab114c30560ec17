// lower (resolve shapes)
//   reads:       the needed graph nodes (prune), the feeds' shapes, variables
//   establishes: one plan node per needed graph node, in graph order (a
//                topological order; inserted copies come before their user):
//                concrete output types (inference rerun on the fed shapes),
//                its kind (kernel, view, feed, source, no-op), its kernel for
//                the plan's device (or the host fallback), output layouts and
//                storages (views alias their input, constants and variables
//                have their own, feeds of CPU plans a feed storage read in
//                place, everything else a fresh arena storage), and
//                the kernel's workspace; Plan::fetch_values and the targets.

#include <algorithm>
#include <unordered_map>

#include "core/parallel.hpp"
#include "core/passes/passes.hpp"

namespace loom {

namespace {

struct Lowering {
  Compilation& c;
  Plan& p;
  std::vector<int> value_of;  // graph node -> its first output's value id
  std::vector<int> node_of;   // graph node -> plan node
  std::unordered_map<uint64_t, const KernelInfo*> kernels;  // (op, dtype) -> the device's kernel (a cache)

  const PValue& value(int v) const { return p.values[size_t(v)]; }
  const KernelInfo* kernel_for(const OpDef& op, DType t) {
    auto [it, fresh] = kernels.try_emplace(reinterpret_cast<uintptr_t>(&op) * 8 + uint64_t(t), nullptr);
    if (fresh) it->second = find_kernel(op.name, p.device.kind, t);
    return it->second;
  }

  const std::vector<TensorType>& output_types(const Node& gn, PNode& node, std::vector<TensorType>& inferred);
  int compact_copy(int v, const std::string& for_node);
  void choose_kernel(const Node& gn, PNode& node, const std::vector<TensorType>& outs);
  void place_outputs(const Node& gn, PNode& node);
  void add_workspace(PNode& node);
  void lower_node(const Node& gn);
};

bool shape_fits(const Shape& declared, const Shape& actual) {
  if (declared.size() != actual.size()) return false;
  for (size_t i = 0; i < declared.size(); ++i)
    if (declared[i] >= 0 && declared[i] != actual[i]) return false;
  return true;
}

/// Concrete output types and the node's kind: the declared ones when the
/// inputs are as declared (static shapes; no copy), else inferred again from
/// the inputs' types (into `inferred`).
const std::vector<TensorType>& Lowering::output_types(const Node& gn, PNode& node, std::vector<TensorType>& inferred) {
  const OpDef& op = *gn.op;
  if (&op == core_op::placeholder) {
    node.kind = NodeKind::feed;
    node.feed = c.feed_of[size_t(gn.id)];
    const NDArray& a = (*c.req.feeds)[size_t(node.feed)].second;
    inferred = {{a.dtype(), a.shape()}};
    return inferred;
  }
  if (&op == core_op::constant || &op == core_op::variable) {
    node.kind = NodeKind::source;
    return gn.outputs;
  }
  node.kind = op.no_kernel ? NodeKind::noop : op.view ? NodeKind::view : NodeKind::kernel;
  bool as_declared = true;
  for (size_t i = 0; i < gn.inputs.size() && as_declared; ++i)
    as_declared = value(node.in[i]).type == c.graph.node(gn.inputs[i].node).outputs[size_t(gn.inputs[i].index)];
  if (as_declared) return gn.outputs;
  std::vector<TensorType> in_types;
  for (int v : node.in) in_types.push_back(value(v).type);
  InferContext ctx{op.name, gn.name, in_types, gn.attrs};
  inferred = op.infer(ctx);
  for (size_t i = 0; i < inferred.size(); ++i)
    LOOM_CHECK(shape_fits(gn.outputs[i].shape, inferred[i].shape), op.name, " '", gn.name, "': output ", i,
               " resolves to ", shape_str(inferred[i].shape), " but was declared ", shape_str(gn.outputs[i].shape));
  return inferred;
}

/// Inserts a node copying value v into a compact arena value; returns it.
int Lowering::compact_copy(int v, const std::string& for_node) {
  PNode n;
  n.op = &core_op::copy.def();
  n.name = for_node + "/compact";
  n.attrs = std::make_shared<Attrs>();
  n.kernel = find_kernel(core_op::copy.name(), p.device.kind, value(v).type.dtype);
  LOOM_ASSERT(n.kernel, "no copy kernel on ", p.device.str());
  n.in = {v};
  const int id = int(p.nodes.size());
  const int out = p.add_value(value(v).type, id);
  n.out = {out};
  PValue& o = p.values[size_t(out)];
  o.storage = p.add_storage(StorageKind::arena, size_t(numel(o.type.shape)) * dtype_size(o.type.dtype));
  o.layout = Layout::compact(o.type.shape);
  add_workspace(n);
  p.add_node(std::move(n));
  return out;
}

/// Views whose input layout does not allow them run the op's kernel if it has
/// one (sum_to), else view a compact copy (reshape). Kernels get the device's
/// kernel (or the host fallback) and compact inputs when they ask.
void Lowering::choose_kernel(const Node& gn, PNode& node, const std::vector<TensorType>& outs) {
  const OpDef& op = *gn.op;
  if (node.kind == NodeKind::view) {
    std::vector<Shape> shapes;
    for (const TensorType& t : outs) shapes.push_back(t.shape);
    if (op.view(value(node.in[0]).layout, gn.attrs, 0, shapes)) return;
    if (!kernel_for(op, outs[0].dtype)) {
      node.in[0] = compact_copy(node.in[0], gn.name);
      return;
    }
    node.kind = NodeKind::kernel;
  }
  if (node.kind != NodeKind::kernel) return;
  LOOM_CHECK(!outs.empty(), op.name, " '", gn.name, "': has no outputs");
  node.kernel = kernel_for(op, outs[0].dtype);
  if (!node.kernel && !p.device.is_cpu() && find_kernel(op.name, DeviceKind::cpu, outs[0].dtype)) {
    node.kernel = &host_fallback_kernel();  // runs on the host between two copies
    ++p.stats.host_copies;
  }
  LOOM_CHECK(node.kernel, op.name, " '", gn.name, "': no ", p.device.str(), " kernel for dtype ",
             dtype_name(outs[0].dtype));
  if (node.kernel->compact_inputs)
    for (int& v : node.in)
      if (!value(v).layout.is_compact()) v = compact_copy(v, gn.name);
}

/// Layouts and storages of the node's outputs.
void Lowering::place_outputs(const Node& gn, PNode& node) {
  const OpDef& op = *gn.op;
  if (&op == core_op::constant) {
    PValue& v = p.values[size_t(node.out[0])];
    const NDArray& a = gn.attrs.get<NDArray>("value");
    v.storage = p.add_storage(StorageKind::constant, a.nbytes());
    p.storages[size_t(v.storage)].source = std::make_shared<SourceArrays>(SourceArrays{a.to(p.device), a});
    v.layout = a.layout();
  } else if (&op == core_op::variable) {
    PValue& v = p.values[size_t(node.out[0])];
    NDArray& a = c.req.variable(gn.id);
    v.storage = p.add_storage(StorageKind::variable, a.nbytes());
    p.storages[size_t(v.storage)].var_node = gn.id;
    p.storages[size_t(v.storage)].source = std::make_shared<SourceArrays>(SourceArrays{a, NDArray()});
    v.layout = Layout::compact(v.type.shape);
  } else if (node.kind == NodeKind::view) {
    const PValue& src = value(node.in[0]);  // p.values does not grow here
    std::vector<Shape> shapes;
    for (int o : node.out) shapes.push_back(value(o).type.shape);
    for (size_t i = 0; i < node.out.size(); ++i) {
      auto l = op.view(src.layout, gn.attrs, i, shapes);
      LOOM_ASSERT(l, op.name, " '", gn.name, "': view of a compact input failed");
      p.values[size_t(node.out[i])].storage = src.storage;
      p.values[size_t(node.out[i])].layout = *l;
    }
  } else if (op.writes_input >= 0) {
    const PValue target = value(node.in[size_t(op.writes_input)]);
    LOOM_CHECK(p.storages[size_t(target.storage)].kind == StorageKind::variable, op.name, " '", gn.name, "': input ",
               op.writes_input, " must be a variable");
    p.values[size_t(node.out[0])].storage = target.storage;
    p.values[size_t(node.out[0])].layout = target.layout;
    node.writes_var = true;
  } else if (node.kind == NodeKind::feed && p.device.is_cpu()) {  // read in place (Plan::bind_feeds)
    PValue& v = p.values[size_t(node.out[0])];
    const NDArray& a = (*c.req.feeds)[size_t(node.feed)].second;
    v.storage = p.add_storage(StorageKind::feed, a.nbytes());
    p.storages[size_t(v.storage)].source = std::make_shared<SourceArrays>(SourceArrays{a.to(p.device).compact(), {}});
    v.layout = Layout::compact(v.type.shape);
  } else if (node.kind == NodeKind::kernel || node.kind == NodeKind::feed) {
    for (int o : node.out) {
      PValue& v = p.values[size_t(o)];
      v.storage = p.add_storage(StorageKind::arena, size_t(numel(v.type.shape)) * dtype_size(v.type.dtype));
      v.layout = Layout::compact(v.type.shape);
    }
  }
}

/// Scratch memory the node's kernel asks for: an arena storage of its own.
void Lowering::add_workspace(PNode& node) {
  if (!node.kernel || !node.kernel->workspace) return;
  std::vector<Shape> in, out;
  for (int v : node.in) in.push_back(value(v).type.shape);
  for (int v : node.out) out.push_back(value(v).type.shape);
  const size_t bytes = workspace_bytes(*node.kernel, in, out, value(node.out[0]).type.dtype, *node.attrs, p.device,
                                       current_threads());
  if (bytes) node.workspace = p.add_storage(StorageKind::arena, bytes);
}

void Lowering::lower_node(const Node& gn) {
  PNode node;
  node.graph_node = gn.id;
  node.op = gn.op;
  node.name = gn.name;
  node.attrs = std::shared_ptr<const Attrs>(std::shared_ptr<const Attrs>(), &gn.attrs);  // the graph outlives plans
  node.in.reserve(gn.inputs.size());
  for (const Edge& e : gn.inputs) {
    const int v = value_of[size_t(e.node)];
    LOOM_ASSERT(v >= 0, "input of ", gn.name, " has no value");
    node.in.push_back(v + e.index);
  }
  for (int k : gn.control) node.after.push_back(node_of[size_t(k)]);
  std::vector<TensorType> inferred;
  const std::vector<TensorType>& outs = output_types(gn, node, inferred);
  choose_kernel(gn, node, outs);
  const int id = int(p.nodes.size());  // after the copies choose_kernel may insert
  for (const TensorType& t : outs) node.out.push_back(p.add_value(t, id));
  value_of[size_t(gn.id)] = node.out.empty() ? -1 : node.out[0];
  node_of[size_t(gn.id)] = id;
  place_outputs(gn, node);
  if (node.kind == NodeKind::kernel) add_workspace(node);
  p.add_node(std::move(node));
}

}  // namespace

void lower(Compilation& c) {
  Lowering l{c, c.plan, std::vector<int>(size_t(c.graph_size), -1), std::vector<int>(size_t(c.graph_size), -1), {}};
  const size_t needed = size_t(std::count(c.needed.begin(), c.needed.end(), 1));
  c.plan.nodes.reserve(needed + needed / 8);
  c.plan.values.reserve(needed + needed / 8);
  c.plan.storages.reserve(needed + needed / 8);
  for (int id = 0; id < c.graph_size; ++id) {
    if (!c.needed[size_t(id)]) continue;
    ++c.plan.stats.graph_nodes;
    l.lower_node(c.graph.node(id));
  }
  for (const Tensor& t : *c.req.fetches) c.plan.fetch_values.push_back(l.value_of[size_t(t.node_id())] + t.index());
  for (const Tensor& t : *c.req.targets) c.targets.push_back(l.node_of[size_t(t.node_id())]);
}

}  // namespace loom
