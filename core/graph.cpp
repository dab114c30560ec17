#include "core/graph.hpp"

#include <atomic>
#include <bit>

namespace loom {

Graph& Tensor::graph() const {
  LOOM_CHECK(graph_, "use of an empty Tensor handle");
  return *graph_;
}
const Node& Tensor::node() const { return graph().node(node_); }
const TensorType& Tensor::type() const {
  const Node& n = node();
  LOOM_CHECK(index_ >= 0 && size_t(index_) < n.outputs.size(), "tensor '", n.name, "' has no output ", index_);
  return n.outputs[size_t(index_)];
}
std::string Tensor::name() const {
  const Node& n = node();
  return index_ == 0 ? n.name : n.name + ":" + std::to_string(index_);
}
const std::string& Tensor::op() const { return node().op->name; }

static std::atomic<uint64_t> next_graph_id{1};

Graph::Graph() : id_(next_graph_id++) {}

Graph::~Graph() {
  for (int i = 0; i < size(); ++i) delete slot(i);
  for (auto& seg : segments_) delete[] seg.load();
}

namespace {
/// Segment and index within it of node `id` (segment k holds 32 << k nodes).
std::pair<int, int> segment_of(int id) {
  const int k = int(std::bit_width(unsigned(id >> 5) + 1u)) - 1;
  return {k, id - 32 * ((1 << k) - 1)};
}
}  // namespace

Node* Graph::slot(int id) const {
  auto [k, i] = segment_of(id);
  return segments_[size_t(k)].load(std::memory_order_acquire)[i];
}

const Node& Graph::node(int id) const {
  LOOM_CHECK(id >= 0 && id < size(), "no node ", id, " in this graph");
  return *slot(id);
}

std::string Graph::prefix() const {
  std::lock_guard lock(mu_);
  return prefix_locked();
}

std::string Graph::prefix_locked() const {
  std::string p;
  for (const auto& s : scopes_) p += s + "/";
  return p;
}

Graph::Scope Graph::scope(const std::string& name) {
  LOOM_CHECK(!name.empty() && name.find('/') == std::string::npos, "scope name '", name,
             "' must be non-empty and contain no '/'");
  std::lock_guard lock(mu_);
  scopes_.push_back(name);
  return Scope(this);
}
Graph::Scope::~Scope() {
  if (!g_) return;
  std::lock_guard lock(g_->mu_);
  g_->scopes_.pop_back();
}

std::string Graph::unique_name(const std::string& base) {
  if (!by_name_.count(base)) return base;
  int& n = name_counts_[base];
  std::string candidate;
  do candidate = base + "_" + std::to_string(++n);
  while (by_name_.count(candidate));
  return candidate;
}

namespace {
/// The graph owns its attribute values: arrays are copied (host, compact), so
/// changing the caller's array later changes no graph and no session.
Attrs owned(Attrs attrs, const std::string& op, const std::string& node) {
  bool any = false;
  for (const auto& [k, v] : attrs) any |= std::holds_alternative<NDArray>(v);
  if (!any) return attrs;
  Attrs out;
  for (const auto& [k, v] : attrs) {
    const NDArray* a = std::get_if<NDArray>(&v);
    if (!a) {
      out.set(k, v);
      continue;
    }
    LOOM_CHECK(a->defined(), op, " '", node, "': attribute '", k, "' is an undefined NDArray");
    out.set(k, a->to(Device::cpu()).clone());
  }
  return out;
}
}  // namespace

std::vector<Tensor> Graph::add(std::string_view op_name, const std::vector<Tensor>& inputs, Attrs attrs,
                               std::string name, const std::vector<Tensor>& control) {
  return add_impl(op_name, inputs, std::move(attrs), std::move(name), control, {});
}

std::vector<Tensor> Graph::add_impl(std::string_view op_name, const std::vector<Tensor>& inputs, Attrs attrs,
                                    std::string name, const std::vector<Tensor>& control, Initializer init) {
  const OpDef& op = find_op(op_name);
  std::string full = prefix() + (name.empty() ? op.name : name);
  int nin = int(inputs.size());
  if (nin < op.min_inputs || (op.max_inputs >= 0 && nin > op.max_inputs))
    fail(op.name, " '", full, "': expected ",
         op.min_inputs == op.max_inputs ? std::to_string(op.min_inputs)
                                        : std::to_string(op.min_inputs) + (op.max_inputs < 0 ? " or more" : " to " + std::to_string(op.max_inputs)),
         " inputs, got ", nin);
  std::vector<TensorType> in_types;
  auto node = std::make_unique<Node>();
  for (const Tensor& t : inputs) {
    LOOM_CHECK(t.valid(), op.name, " '", full, "': input ", node->inputs.size(), " is an empty Tensor handle");
    LOOM_CHECK(&t.graph() == this, op.name, " '", full, "': input '", t.name(), "' belongs to another graph");
    in_types.push_back(t.type());
    node->inputs.push_back(t.edge());
  }
  for (const Tensor& t : control) {
    LOOM_CHECK(t.valid(), op.name, " '", full, "': a control input is an empty Tensor handle");
    LOOM_CHECK(&t.graph() == this, op.name, " '", full, "': control input '", t.name(), "' belongs to another graph");
    node->control.push_back(t.node_id());
  }
  std::vector<size_t> ranks;
  for (const TensorType& t : in_types) ranks.push_back(t.shape.size());
  attrs = check_attrs(op.attrs, op.name, full, ranks, owned(std::move(attrs), op.name, full));
  InferContext ctx{op.name, full, in_types, attrs};
  node->outputs = op.infer(ctx);
  node->op = &op;
  node->attrs = std::move(attrs);
  node->init = std::move(init);
  return publish(std::move(node), full);
}

std::vector<Tensor> Graph::publish(std::unique_ptr<Node> node, const std::string& full) {
  std::lock_guard lock(mu_);
  const int id = size_.load(std::memory_order_relaxed);
  auto [k, i] = segment_of(id);
  LOOM_CHECK(k < kSegments, "graph: too many nodes");
  if (i == 0) segments_[size_t(k)].store(new Node*[size_t(32) << k], std::memory_order_release);
  node->id = id;
  node->name = unique_name(full);
  by_name_[node->name] = id;
  const Node& n = *node;
  segments_[size_t(k)].load(std::memory_order_relaxed)[i] = node.release();
  size_.store(id + 1, std::memory_order_release);  // publishes the node to lock-free readers
  std::vector<Tensor> outs;
  for (size_t o = 0; o < n.outputs.size(); ++o) outs.emplace_back(this, n.id, int(o));
  return outs;
}

Tensor Graph::add1(std::string_view op, const std::vector<Tensor>& inputs, Attrs attrs, std::string name,
                   const std::vector<Tensor>& control) {
  auto outs = add(op, inputs, std::move(attrs), std::move(name), control);
  if (outs.empty()) return Tensor(this, size() - 1, 0);  // a node without outputs (control only)
  LOOM_ASSERT(outs.size() == 1, op, " has ", outs.size(), " outputs");
  return outs[0];
}

Tensor Graph::placeholder(const std::string& name, const Shape& shape, DType dtype) {
  LOOM_CHECK(!name.empty(), "placeholder: a name is required");
  LOOM_CHECK(!find(prefix() + name).valid(), "placeholder '", prefix() + name, "': name already used");
  return add1(core_op::placeholder.name(), {}, {{"shape", shape}, {"dtype", dtype}}, name);
}

Tensor Graph::constant(const NDArray& value, const std::string& name) {
  LOOM_CHECK(value.defined(), "constant: undefined NDArray");
  return add1(core_op::constant.name(), {}, {{"value", value}}, name);  // add() copies the array
}

Tensor Graph::scalar(double value, DType dtype) { return constant(NDArray::scalar(value, dtype)); }

Tensor Graph::variable(const std::string& name, const Shape& shape, Initializer init, DType dtype) {
  LOOM_CHECK(!name.empty(), "variable: a name is required");
  std::string full = prefix() + name;
  LOOM_CHECK(!find(full).valid(), "variable '", full, "': name already used");
  LOOM_CHECK(is_static(shape), "variable '", full, "': shape ", shape_str(shape), " must be fully known");
  LOOM_CHECK(bool(init), "variable '", full, "': an initializer is required");
  return add_impl(core_op::variable.name(), {}, {{"shape", shape}, {"dtype", dtype}}, name, {}, std::move(init))[0];
}

Tensor Graph::find(const std::string& name) const {
  std::lock_guard lock(mu_);
  auto it = by_name_.find(name);
  return it == by_name_.end() ? Tensor() : Tensor(const_cast<Graph*>(this), it->second, 0);
}

std::vector<Tensor> Graph::variables() const {
  std::vector<Tensor> out;
  for (int id = 0, n = size(); id < n; ++id)
    if (slot(id)->op == core_op::variable) out.emplace_back(const_cast<Graph*>(this), id, 0);
  return out;
}

}  // namespace loom
