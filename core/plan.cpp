// Plan compilation, part 1: prune, validate feeds, build nodes with concrete
// shapes and layouts, common-subexpression elimination, constant folding, the
// ordering constraints of variable updates, and binding steps to memory.
// Scheduling and the memory plan are in schedule.cpp.

#include "core/plan.hpp"

#include <chrono>
#include <cstring>
#include <functional>
#include <sstream>
#include <unordered_map>

#include "core/invoke.hpp"
#include "core/parallel.hpp"

namespace loom {

namespace {

std::string type_str(const TensorType& t) { return std::string(dtype_name(t.dtype)) + shape_str(t.shape); }

bool shape_fits(const Shape& declared, const Shape& actual) {
  if (declared.size() != actual.size()) return false;
  for (size_t i = 0; i < declared.size(); ++i)
    if (declared[i] >= 0 && declared[i] != actual[i]) return false;
  return true;
}

size_t align(size_t n) { return (std::max<size_t>(n, 1) + kAlignment - 1) / kAlignment * kAlignment; }

struct Builder {
  const CompileRequest& req;
  const SessionOptions& opt;
  Graph& g;
  Plan& p;
  std::vector<int> value_of;  // graph node -> first output value id (-1: none)
  std::vector<int> node_of;   // graph node -> plan node id (-1: merged or folded)
  std::unordered_multimap<size_t, int> cse;  // hash -> node id
  std::unordered_map<int, int> var_storage;  // graph node -> storage
  size_t pending_cse = 0;                    // hash to record once the node has its index
  bool has_pending_cse = false;
  const int nodes = g.size();  // one snapshot: the graph may grow (another thread) while this plan compiles

  int new_value(const TensorType& t, int producer) {
    p.values.push_back({t, producer, -1, {}});
    return int(p.values.size()) - 1;
  }
  int new_storage(StorageKind k, size_t bytes) {
    p.storages.push_back({});
    p.storages.back().kind = k;
    p.storages.back().bytes = k == StorageKind::arena ? align(bytes) : bytes;
    return int(p.storages.size()) - 1;
  }
  /// A fresh compact arena value for output `i` of node `n`.
  void arena_output(int n, int v) {
    PValue& val = p.values[size_t(v)];
    val.storage = new_storage(StorageKind::arena, size_t(numel(val.type.shape)) * dtype_size(val.type.dtype));
    val.layout = Layout::compact(val.type.shape);
    (void)n;
  }
  /// Scratch memory the node's kernel asks for: an arena storage of its own.
  void add_workspace(PNode& node) {
    std::vector<Shape> in, out;
    for (int v : node.in) in.push_back(p.values[size_t(v)].type.shape);
    for (int v : node.out) out.push_back(p.values[size_t(v)].type.shape);
    size_t bytes = workspace_bytes(*node.kernel, in, out, p.values[size_t(node.out[0])].type.dtype, *node.attrs,
                                   p.device, current_threads());
    if (bytes) node.workspace = new_storage(StorageKind::arena, bytes);
  }
  int add_node(PNode node) {
    p.nodes.push_back(std::move(node));
    return int(p.nodes.size()) - 1;
  }
  /// Inserts a node copying value v into a compact arena value; returns it.
  int compact_copy(int v, const std::string& for_node) {
    PNode c;
    c.op = &find_op("identity");
    c.name = for_node + "/compact";
    c.attrs = std::make_shared<Attrs>();
    c.kind = NodeKind::kernel;
    c.kernel = find_kernel("copy", p.device.kind, p.values[size_t(v)].type.dtype);
    LOOM_ASSERT(c.kernel, "no copy kernel");
    c.in = {v};
    int id = int(p.nodes.size());
    int out = new_value(p.values[size_t(v)].type, id);
    c.out = {out};
    add_node(std::move(c));
    arena_output(id, out);
    return out;
  }

  void validate_and_prune(std::vector<char>& needed, std::vector<int>& feed_of);
  void build(const std::vector<char>& needed, const std::vector<int>& feed_of);
  bool try_cse(const Node& gn, const std::vector<int>& ins);
  bool try_fold(PNode& node);
  void order_updates();
  void mark_alive();
  void fuse();
  void assign_in_place();
  void bind_steps();
};

void Builder::validate_and_prune(std::vector<char>& needed, std::vector<int>& feed_of) {
  auto check_tensor = [&](const Tensor& t, const char* what) {
    LOOM_CHECK(t.valid(), "run: ", what, " is an empty Tensor handle");
    LOOM_CHECK(&t.graph() == &g, "run: ", what, " '", t.name(), "' belongs to another graph than this session's");
    LOOM_CHECK(t.node_id() >= 0 && t.node_id() < nodes, "run: ", what, " refers to unknown node ", t.node_id());
  };
  for (const Tensor& t : *req.fetches) {
    check_tensor(t, "fetch");
    LOOM_CHECK(t.index() >= 0 && size_t(t.index()) < t.node().outputs.size(), "run: fetch '", t.node().name,
               "' has no output ", t.index(), " (use it as a target)");
  }
  for (const Tensor& t : *req.targets) check_tensor(t, "target");
  feed_of.assign(size_t(nodes), -1);
  for (size_t i = 0; i < req.feeds->size(); ++i) {
    const auto& [t, a] = (*req.feeds)[i];
    check_tensor(t, "feed");
    const Node& n = t.node();
    LOOM_CHECK(n.op->name == "placeholder", "feed '", n.name, "': only placeholders can be fed (it is a ", n.op->name,
               ")");
    LOOM_CHECK(feed_of[size_t(n.id)] < 0, "feed '", n.name, "': fed twice");
    LOOM_CHECK(a.defined(), "feed '", n.name, "': undefined NDArray");
    const TensorType& want = n.outputs[0];
    LOOM_CHECK(a.dtype() == want.dtype, "feed '", n.name, "': expected dtype ", dtype_name(want.dtype), ", got ",
               dtype_name(a.dtype()));
    LOOM_CHECK(shape_fits(want.shape, a.shape()), "feed '", n.name, "': expected shape ", shape_str(want.shape),
               ", got ", shape_str(a.shape()));
    feed_of[size_t(n.id)] = int(i);
  }
  needed.assign(size_t(nodes), 0);
  std::vector<int> stack;
  for (const Tensor& t : *req.fetches) stack.push_back(t.node_id());
  for (const Tensor& t : *req.targets) stack.push_back(t.node_id());
  while (!stack.empty()) {
    int id = stack.back();
    stack.pop_back();
    if (needed[size_t(id)]) continue;
    needed[size_t(id)] = 1;
    const Node& n = g.node(id);
    if (n.op->name == "placeholder") {
      LOOM_CHECK(feed_of[size_t(id)] >= 0, "placeholder '", n.name, "' (", type_str(n.outputs[0]),
                 ") must be fed for this run");
      continue;
    }
    for (const Edge& e : n.inputs) stack.push_back(e.node);
    for (int c : n.control) stack.push_back(c);
  }
}

bool Builder::try_cse(const Node& gn, const std::vector<int>& ins) {
  if (!opt.cse || gn.op->stateful || gn.op->no_kernel || gn.op->writes_input >= 0 || !gn.control.empty()) return false;
  size_t h = std::hash<std::string>{}(gn.op->name) ^ gn.attrs.hash();
  for (int v : ins) h = h * 1000003u + size_t(v);
  auto range = cse.equal_range(h);
  for (auto it = range.first; it != range.second; ++it) {
    const PNode& o = p.nodes[size_t(it->second)];
    if (o.op == gn.op && o.graph_node >= 0 && g.node(o.graph_node).inputs.size() == gn.inputs.size() &&
        *o.attrs == gn.attrs) {
      // Inputs compare by value id: the node's inputs were already remapped.
      std::vector<int> oin = o.in;
      if (oin != ins) continue;
      value_of[size_t(gn.id)] = o.out.empty() ? -1 : o.out[0];
      node_of[size_t(gn.id)] = it->second;
      ++p.stats.cse_merged;
      return true;
    }
  }
  pending_cse = h;
  has_pending_cse = true;
  return false;
}

bool Builder::try_fold(PNode& node) {
  if (!opt.constant_folding || node.kind != NodeKind::kernel || node.op->stateful || node.graph_node < 0) return false;
  const OpDef& op = *node.op;
  int64_t out_elems = 0;
  for (int v : node.out) out_elems += numel(p.values[size_t(v)].type.shape);
  if (out_elems > 65536) return false;  // folding must not bloat the plan's constants
  std::vector<NDArray> ins;
  for (size_t i = 0; i < node.in.size(); ++i) {
    const PValue& v = p.values[size_t(node.in[i])];
    bool shape_only = std::find(op.shape_only_inputs.begin(), op.shape_only_inputs.end(), int(i)) != op.shape_only_inputs.end();
    const PStorage& s = p.storages[size_t(v.storage)];
    if (s.kind == StorageKind::constant) ins.emplace_back(s.array.buffer(), v.layout, v.type.dtype);
    else if (shape_only) ins.push_back(NDArray::empty(v.type.shape, v.type.dtype));
    else return false;
  }
  const KernelInfo* k = find_kernel(op.name, DeviceKind::cpu, p.values[size_t(node.out[0])].type.dtype);
  if (!k) return false;
  if (k->compact_inputs)
    for (auto& a : ins) a = a.compact();
  std::vector<NDArray> outs;
  for (int v : node.out) outs.push_back(NDArray::empty(p.values[size_t(v)].type.shape, p.values[size_t(v)].type.dtype));
  KernelContext kc{Device::cpu(), nullptr, opt.seed, 0};
  KernelCall call{kc, ins, outs, *node.attrs, op.name, node.name, uint64_t(node.graph_node)};
  std::shared_ptr<const void> state;
  if (k->prepare) call.state = (state = k->prepare(call)).get();
  std::shared_ptr<Buffer> workspace = allocate_workspace(*k, call);
  if (workspace) call.workspace = workspace->data(), call.workspace_bytes = workspace->bytes();
  k->fn(call);
  node.kind = NodeKind::source;
  node.kernel = nullptr;
  node.in.clear();
  node.workspace = -1;
  for (size_t i = 0; i < node.out.size(); ++i) {
    PValue& v = p.values[size_t(node.out[i])];
    NDArray a = outs[i].to(p.device);
    v.storage = new_storage(StorageKind::constant, a.nbytes());
    p.storages[size_t(v.storage)].array = a;
    v.layout = a.layout();
  }
  ++p.stats.folded;
  return true;
}

void Builder::build(const std::vector<char>& needed, const std::vector<int>& feed_of) {
  value_of.assign(size_t(nodes), -1);
  node_of.assign(size_t(nodes), -1);
  std::unordered_map<std::string, int> const_cse;  // small constants by content
  for (int id = 0; id < nodes; ++id) {
    if (!needed[size_t(id)]) continue;
    const Node& gn = g.node(id);
    const OpDef& op = *gn.op;
    ++p.stats.graph_nodes;
    std::vector<int> ins;
    std::vector<TensorType> in_types;
    for (const Edge& e : gn.inputs) {
      int v = value_of[size_t(e.node)];
      LOOM_ASSERT(v >= 0, "input of ", gn.name, " has no value");
      ins.push_back(v + e.index);
      in_types.push_back(p.values[size_t(v + e.index)].type);
    }
    has_pending_cse = false;
    if (try_cse(gn, ins)) continue;

    PNode node;
    node.graph_node = id;
    node.op = &op;
    node.name = gn.name;
    node.attrs = std::shared_ptr<const Attrs>(std::shared_ptr<const Attrs>(), &gn.attrs);  // the graph outlives plans
    node.in = ins;
    for (int c : gn.control)
      if (node_of[size_t(c)] >= 0) node.after.push_back(node_of[size_t(c)]);

    // Concrete output types.
    std::vector<TensorType> outs;
    if (op.name == "placeholder") {
      const NDArray& a = (*req.feeds)[size_t(feed_of[size_t(id)])].second;
      outs = {{a.dtype(), a.shape()}};
      node.kind = NodeKind::feed;
      node.feed = feed_of[size_t(id)];
    } else if (op.name == "constant") {
      const NDArray& a = gn.attrs.get<NDArray>("value");
      outs = {{a.dtype(), a.shape()}};
      node.kind = NodeKind::source;
    } else if (op.name == "variable") {
      outs = gn.outputs;
      node.kind = NodeKind::source;
    } else {
      InferContext ctx{op.name, gn.name, in_types, gn.attrs};
      outs = op.infer(ctx);
      for (size_t i = 0; i < outs.size(); ++i)
        LOOM_CHECK(shape_fits(gn.outputs[i].shape, outs[i].shape), op.name, " '", gn.name, "': output ", i,
                   " resolves to ", shape_str(outs[i].shape), " but was declared ", shape_str(gn.outputs[i].shape));
      node.kind = op.no_kernel ? NodeKind::noop : op.view ? NodeKind::view : NodeKind::kernel;
    }

    // Constants with equal small contents share one value (every `x * 2.0` makes one).
    std::string ckey;
    if (op.name == "constant" && opt.cse) {
      const NDArray& a = gn.attrs.get<NDArray>("value");
      if (a.numel() <= 64) {
        ckey = std::string(dtype_name(a.dtype())) + shape_str(a.shape()) +
               std::string(static_cast<const char*>(a.raw()), a.nbytes());
        auto it = const_cse.find(ckey);
        if (it != const_cse.end()) {
          value_of[size_t(id)] = it->second;
          node_of[size_t(id)] = p.values[size_t(it->second)].producer;
          ++p.stats.cse_merged;
          continue;
        }
      }
    }

    // Inputs that must be compact for this node (views that failed, kernels that ask).
    int nid = int(p.nodes.size());
    if (node.kind == NodeKind::view) {
      // A view when the input's layout allows; else the op's kernel if it has
      // one (sum_to), else a view of a compact copy (reshape).
      int v0 = node.in[0];
      std::vector<Shape> shapes;
      for (auto& t : outs) shapes.push_back(t.shape);
      if (!op.view(p.values[size_t(v0)].layout, gn.attrs, 0, shapes)) {
        if (find_kernel(op.name, p.device.kind, outs[0].dtype)) node.kind = NodeKind::kernel;
        else node.in[0] = compact_copy(v0, gn.name);
      }
      nid = int(p.nodes.size());
    }
    if (node.kind == NodeKind::kernel) {
      LOOM_CHECK(!outs.empty(), op.name, " '", gn.name, "': has no outputs");
      node.kernel = find_kernel(op.name, p.device.kind, outs[0].dtype);
      if (!node.kernel && !p.device.is_cpu() && find_kernel(op.name, DeviceKind::cpu, outs[0].dtype)) {
        node.kernel = &host_fallback_kernel();  // runs on the host between two copies
        ++p.stats.host_copies;
      }
      LOOM_CHECK(node.kernel, op.name, " '", gn.name, "': no ", p.device.str(), " kernel for dtype ",
                 dtype_name(outs[0].dtype));
      if (node.kernel->compact_inputs)
        for (size_t i = 0; i < node.in.size(); ++i)
          if (!p.values[size_t(node.in[i])].layout.is_compact()) node.in[i] = compact_copy(node.in[i], gn.name);
      nid = int(p.nodes.size());
    }

    for (auto& t : outs) node.out.push_back(new_value(t, nid));
    value_of[size_t(id)] = node.out.empty() ? -1 : node.out[0];
    node_of[size_t(id)] = nid;

    // Layouts and storages of the outputs.
    if (op.name == "constant") {
      PValue& v = p.values[size_t(node.out[0])];
      NDArray a = gn.attrs.get<NDArray>("value").to(p.device);
      v.storage = new_storage(StorageKind::constant, a.nbytes());
      p.storages[size_t(v.storage)].array = a;
      v.layout = a.layout();
      if (!ckey.empty()) const_cse[ckey] = node.out[0];
    } else if (op.name == "variable") {
      PValue& v = p.values[size_t(node.out[0])];
      auto it = var_storage.find(id);
      if (it == var_storage.end()) {
        NDArray& a = req.variable(id);
        int s = new_storage(StorageKind::variable, a.nbytes());
        p.storages[size_t(s)].var_node = id;
        p.storages[size_t(s)].array = a;
        it = var_storage.emplace(id, s).first;
      }
      v.storage = it->second;
      v.layout = Layout::compact(v.type.shape);
    } else if (node.kind == NodeKind::view) {
      const PValue& src = p.values[size_t(node.in[0])];
      std::vector<Shape> shapes;
      for (int o : node.out) shapes.push_back(p.values[size_t(o)].type.shape);
      for (size_t i = 0; i < node.out.size(); ++i) {
        auto l = op.view(src.layout, gn.attrs, i, shapes);
        LOOM_ASSERT(l, op.name, " '", gn.name, "': view of a compact input failed");
        p.values[size_t(node.out[i])].storage = src.storage;
        p.values[size_t(node.out[i])].layout = *l;
      }
    } else if (op.writes_input >= 0) {
      const PValue& target = p.values[size_t(node.in[size_t(op.writes_input)])];
      LOOM_CHECK(p.storages[size_t(target.storage)].kind == StorageKind::variable, op.name, " '", gn.name,
                 "': input ", op.writes_input, " must be a variable");
      p.values[size_t(node.out[0])].storage = target.storage;
      p.values[size_t(node.out[0])].layout = target.layout;
      node.writes_var = true;
    } else if (node.kind == NodeKind::kernel || node.kind == NodeKind::feed) {
      for (int o : node.out) arena_output(nid, o);
    }
    if (node.kind == NodeKind::kernel) add_workspace(node);
    add_node(std::move(node));
    if (has_pending_cse) cse.emplace(pending_cse, nid);
    try_fold(p.nodes[size_t(nid)]);
  }
  for (const Tensor& t : *req.fetches) p.fetch_values.push_back(value_of[size_t(t.node_id())] + t.index());
}

namespace fusion {
constexpr int64_t kNoArg = -1000000;
struct Instr {
  std::string op;
  bool to_bool;
  int64_t arg[3];  // >= 0: leaf; < 0: instruction -a-1; kNoArg: unused
};
/// A group of element-wise nodes computed by one fused kernel.
struct Program {
  std::vector<int> leaves;                        // input value ids
  std::vector<Instr> instrs;                      // in dependency order; the last is the root
  std::vector<std::pair<int, int64_t>> computed;  // values computed inside: (value id, instruction)
  std::vector<int> members;                       // absorbed nodes (not the root)

  std::optional<int64_t> instr_of(int v) const {
    for (auto [cv, ci] : computed)
      if (cv == v) return ci;
    return std::nullopt;
  }
  int64_t leaf_ref(int v) {
    if (auto ci = instr_of(v)) return -(*ci + 1);
    auto it = std::find(leaves.begin(), leaves.end(), v);
    if (it == leaves.end()) {
      leaves.push_back(v);
      return int64_t(leaves.size()) - 1;
    }
    return it - leaves.begin();
  }
  /// Appends q's instructions (q computes values this program reads, or vice
  /// versa); returns the new index of q's root.
  int64_t inline_program(const Program& q) {
    const int64_t base = int64_t(instrs.size());
    for (Instr ins : q.instrs) {
      for (int64_t& a : ins.arg) {
        if (a == kNoArg) continue;
        a = a < 0 ? a - base : leaf_ref(q.leaves[size_t(a)]);
      }
      instrs.push_back(ins);
    }
    for (auto [cv, ci] : q.computed) computed.push_back({cv, ci + base});
    members.insert(members.end(), q.members.begin(), q.members.end());
    return int64_t(instrs.size()) - 1;
  }
  /// Leaves now computed inside become instruction references; then the
  /// instructions are put back in dependency order with instruction `root`
  /// last (returns old -> new index).
  std::vector<int64_t> internalize_and_sort(size_t root) {
    for (size_t r = 0; r < leaves.size();) {
      auto ci = instr_of(leaves[r]);
      if (!ci) {
        ++r;
        continue;
      }
      for (Instr& ins : instrs)
        for (int64_t& a : ins.arg) {
          if (a == kNoArg || a < 0) continue;
          if (a == int64_t(r)) a = -(*ci + 1);
          else if (a > int64_t(r)) --a;
        }
      leaves.erase(leaves.begin() + int64_t(r));
    }
    const size_t n = instrs.size();
    std::vector<int64_t> pos(n, -1);
    std::vector<size_t> order;
    std::vector<char> state(n, 0);
    std::function<void(size_t)> visit = [&](size_t i) {
      if (state[i] == 2) return;
      LOOM_ASSERT(state[i] == 0, "cycle in a fused program");
      state[i] = 1;
      for (int64_t a : instrs[i].arg)
        if (a != kNoArg && a < 0) visit(size_t(-a - 1));
      state[i] = 2;
      pos[i] = int64_t(order.size());
      order.push_back(i);
    };
    visit(root);
    for (size_t i = 0; i < n; ++i) visit(i);
    // The root goes last (nothing in the group reads it).
    std::vector<Instr> sorted;
    for (size_t i : order)
      if (i != root) sorted.push_back(instrs[i]);
    sorted.push_back(instrs[root]);
    std::vector<int64_t> final_pos(n);
    {
      int64_t k = 0;
      for (size_t i : order)
        if (i != root) final_pos[i] = k++;
      final_pos[root] = k;
    }
    for (Instr& ins : sorted)
      for (int64_t& a : ins.arg)
        if (a != kNoArg && a < 0) a = -(final_pos[size_t(-a - 1)] + 1);
    instrs = std::move(sorted);
    for (auto& c : computed) c.second = final_pos[size_t(c.second)];
    return final_pos;
  }
};
}  // namespace fusion

// Element-wise fusion, in two phases.
// 1. A fusable node absorbs fusable producers of the same output shape that
//    only it reads: every path out of such a producer goes through the node,
//    so the graph of groups stays acyclic.
// 2. A group absorbs a producing group whose value others read too; that value
//    becomes an extra output (so Adam's moments and update are one pass over
//    memory). Allowed only when no other path leads from the producer group to
//    the consumer group (checked on the graph of groups, bounded).
// Each group becomes one "fused" node running a small program (kernels/cpu/fused.cpp).
void Builder::fuse() {
  if (!opt.fusion || opt.check_numerics) return;  // check_numerics names single nodes
  if (!find_kernel("fused", p.device.kind, float32)) return;  // this device has no fused kernel
  const size_t N = p.nodes.size();
  std::vector<std::vector<int>> consumers(p.values.size()), after_of(N);
  std::vector<char> ordered(N, 0);
  for (size_t i = 0; i < N; ++i) {
    const PNode& n = p.nodes[i];
    if (!n.alive) continue;
    for (int v : n.in)
      if (consumers[size_t(v)].empty() || consumers[size_t(v)].back() != int(i)) consumers[size_t(v)].push_back(int(i));
    for (int a : n.after) ordered[size_t(a)] = 1, after_of[size_t(a)].push_back(int(i));
  }
  auto fetched = [&](int v) { return std::find(p.fetch_values.begin(), p.fetch_values.end(), v) != p.fetch_values.end(); };
  auto fusable = [&](const PNode& n) {
    if (!(n.alive && n.kind == NodeKind::kernel && n.op && n.op->elementwise && !n.op->stateful && n.kernel &&
          n.kernel->chunk && n.out.size() == 1 && n.op->writes_input < 0 && n.op->shape_only_inputs.empty() &&
          n.after.empty() && !ordered[size_t(&n - p.nodes.data())]))
      return false;
    // The dtype an element-wise op computes in: its output's, or (comparisons) its inputs'.
    DType out = p.values[size_t(n.out[0])].type.dtype;
    DType in = p.values[size_t(n.in.back())].type.dtype;
    return out == boolean ? is_floating(in) : is_floating(out);
  };
  auto shape_of = [&](int id) -> const Shape& { return p.values[size_t(p.nodes[size_t(id)].out[0])].type.shape; };
  auto is_bool = [&](int id) { return p.values[size_t(p.nodes[size_t(id)].out[0])].type.dtype == boolean; };

  // Phase 1.
  std::vector<std::unique_ptr<fusion::Program>> prog(N);
  std::vector<int> rep(N);
  for (size_t i = 0; i < N; ++i) rep[i] = int(i);
  for (size_t id = 0; id < N; ++id) {
    PNode& n = p.nodes[id];
    if (!fusable(n)) continue;
    auto pr = std::make_unique<fusion::Program>();
    fusion::Instr self{n.op->name, is_bool(int(id)), {fusion::kNoArg, fusion::kNoArg, fusion::kNoArg}};
    for (size_t k = 0; k < n.in.size(); ++k) {
      int v = n.in[k];
      int pid = p.values[size_t(v)].producer;
      fusion::Program* q = prog[size_t(pid)].get();
      // A bool root has no fused kernel, so it absorbs nothing.
      if (q && !is_bool(int(id)) && consumers[size_t(v)].size() == 1 && !fetched(v) && shape_of(pid) == shape_of(int(id))) {
        int64_t root = pr->inline_program(*q);
        pr->computed.push_back({v, root});
        pr->members.push_back(pid);
        for (int m : q->members) rep[size_t(m)] = int(id);
        rep[size_t(pid)] = int(id);
        p.nodes[size_t(pid)].alive = false;
        prog[size_t(pid)].reset();
        self.arg[k] = -(root + 1);
      } else {
        self.arg[k] = pr->leaf_ref(v);
      }
    }
    pr->instrs.push_back(self);
    prog[id] = std::move(pr);
  }

  // Phase 2.
  auto find = [&](int x) {
    while (rep[size_t(x)] != x) x = rep[size_t(x)] = rep[size_t(rep[size_t(x)])];
    return x;
  };
  // Values a group outputs: its root's and the shared ones it computes.
  auto group_outputs = [&](int g) {
    std::vector<int> out = p.nodes[size_t(g)].out;
    if (prog[size_t(g)])
      for (auto [cv, ci] : prog[size_t(g)]->computed) out.push_back(cv);
    return out;
  };
  // Is there a path from group a to group b other than a's direct edges to b?
  auto other_path = [&](int a, int b) {
    std::vector<int> stack, seen;
    auto push_successors = [&](int g) {
      std::vector<int> nodes{g};
      if (prog[size_t(g)]) nodes.insert(nodes.end(), prog[size_t(g)]->members.begin(), prog[size_t(g)]->members.end());
      for (int v : group_outputs(g))
        for (int c : consumers[size_t(v)]) stack.push_back(find(c));
      for (int x : nodes)
        for (int c : after_of[size_t(x)]) stack.push_back(find(c));
    };
    push_successors(a);
    stack.erase(std::remove(stack.begin(), stack.end(), b), stack.end());
    stack.erase(std::remove(stack.begin(), stack.end(), a), stack.end());
    while (!stack.empty()) {
      int g = stack.back();
      stack.pop_back();
      if (g == b) return true;
      if (g == a || std::find(seen.begin(), seen.end(), g) != seen.end()) continue;
      seen.push_back(g);
      if (seen.size() > 2000) return true;  // too far to tell: assume the worst
      push_successors(g);
    }
    return false;
  };
  for (size_t id = 0; id < N; ++id) {
    fusion::Program* pr = prog[id].get();
    if (!pr || is_bool(int(id)) || !p.nodes[id].alive) continue;
    for (size_t r = 0; r < pr->leaves.size(); ++r) {
      int v = pr->leaves[r];
      int a = find(p.values[size_t(v)].producer);
      fusion::Program* q = prog[size_t(a)].get();
      if (!q || a == int(id) || shape_of(a) != shape_of(int(id)) || other_path(a, int(id))) continue;
      const size_t root = pr->instrs.size() - 1;
      pr->inline_program(*q);
      pr->computed.push_back({p.nodes[size_t(a)].out[0], int64_t(pr->instrs.size()) - 1});
      pr->members.push_back(a);
      for (int m : q->members) rep[size_t(m)] = int(id);
      rep[size_t(a)] = int(id);
      p.nodes[size_t(a)].alive = false;
      prog[size_t(a)].reset();
      pr->internalize_and_sort(root);
      r = size_t(-1);  // leaves changed: scan again
    }
  }

  // Emit: each group with two or more instructions becomes a fused node whose
  // extra outputs are the computed values someone outside reads (or a fetch).
  for (size_t id = 0; id < N; ++id) {
    fusion::Program* pr = prog[id].get();
    if (!pr || pr->instrs.size() < 2 || !p.nodes[id].alive) continue;
    PNode& n = p.nodes[id];
    const KernelInfo* k = find_kernel("fused", p.device.kind, p.values[size_t(n.out[0])].type.dtype);
    LOOM_ASSERT(k, "fused root without a fused kernel");
    std::string ops;
    std::vector<int64_t> args, bools, outs;
    for (const fusion::Instr& ins : pr->instrs) {
      ops += (ops.empty() ? "" : ";") + ins.op;
      args.insert(args.end(), ins.arg, ins.arg + 3);
      bools.push_back(ins.to_bool);
    }
    std::vector<char> member(N, 0);
    member[id] = 1;
    for (int m : pr->members) member[size_t(m)] = 1;
    for (auto [v, instr] : pr->computed) {
      bool outside = fetched(v);
      for (int c : consumers[size_t(v)]) outside |= !member[size_t(c)];
      if (!outside) continue;
      outs.push_back(instr);
      n.out.push_back(v);
      p.values[size_t(v)].producer = int(id);
    }
    auto attrs = std::make_shared<Attrs>();
    attrs->set("ops", ops).set("args", args).set("bools", bools).set("outs", outs);
    n.op = &find_op("fused");
    n.attrs = attrs;
    n.kernel = k;
    n.in = pr->leaves;
    p.stats.fused += int(pr->instrs.size()) - 1;
  }
}

// An assign whose value comes from an element-wise kernel lets that kernel
// write straight into the variable (saving a copy and a buffer); the assign
// stays as a no-op anchor for ordering. The kernel then counts as the update:
// readers of the old value run before it.
void Builder::assign_in_place() {
  if (opt.check_numerics) return;  // a NaN must be caught before it reaches a variable
  std::vector<char> taken(p.values.size(), 0);
  for (size_t a = 0; a < p.nodes.size(); ++a) {
    PNode& an = p.nodes[a];
    if (!an.alive || !an.writes_var || an.kind != NodeKind::kernel) continue;
    const int var_value = an.in[0], v = an.in[1];
    PValue& val = p.values[size_t(v)];
    const PValue& var = p.values[size_t(var_value)];
    const int pid = val.producer;
    PNode& pn = p.nodes[size_t(pid)];
    if (taken[size_t(v)] || pn.kind != NodeKind::kernel || !pn.op || !pn.op->inplace ||
        (pn.out.size() != 1 && !pn.op->elementwise) || val.type.shape != var.type.shape || val.type.dtype != var.type.dtype ||
        p.storages[size_t(val.storage)].kind != StorageKind::arena || !var.layout.is_compact() ||
        var.layout.offset != 0 || std::find(p.fetch_values.begin(), p.fetch_values.end(), v) != p.fetch_values.end())
      continue;
    // No input may view the variable with another layout (element i must be read before it is written).
    bool clash = false;
    for (int in : pn.in) {
      const PValue& w = p.values[size_t(in)];
      clash |= w.storage == var.storage && !(w.layout.strides == var.layout.strides && w.layout.offset == 0 &&
                                             w.type.shape == var.type.shape);
    }
    if (clash) continue;
    taken[size_t(v)] = 1;
    val.storage = var.storage;
    val.layout = var.layout;
    pn.writes_var = true;
    an.kind = NodeKind::noop;
    an.kernel = nullptr;
  }
}

// Keeps the nodes the fetches and targets need after CSE and folding.
void Builder::mark_alive() {
  for (auto& n : p.nodes) n.alive = false;
  std::vector<int> stack;
  for (int v : p.fetch_values) stack.push_back(p.values[size_t(v)].producer);
  for (const Tensor& t : *req.targets) {
    int n = node_of[size_t(t.node_id())];
    if (n >= 0) stack.push_back(n);
  }
  while (!stack.empty()) {
    int id = stack.back();
    stack.pop_back();
    PNode& n = p.nodes[size_t(id)];
    if (n.alive) continue;
    n.alive = true;
    for (int v : n.in) stack.push_back(p.values[size_t(v)].producer);
    for (int a : n.after) stack.push_back(a);
  }
}

// Readers of a variable run before the assign that overwrites it, unless they
// depend on that assign; assigns to one variable run in graph order; with
// atomic updates, assigns and everything after them run last.
void Builder::order_updates() {
  std::vector<std::vector<int>> consumers(p.nodes.size());
  for (size_t i = 0; i < p.nodes.size(); ++i) {
    const PNode& n = p.nodes[i];
    if (!n.alive) continue;
    for (int v : n.in) consumers[size_t(p.values[size_t(v)].producer)].push_back(int(i));
    for (int a : n.after) consumers[size_t(a)].push_back(int(i));
  }
  std::vector<std::vector<int>> readers_of(p.storages.size());
  std::vector<int> assigns;
  for (size_t i = 0; i < p.nodes.size(); ++i) {
    const PNode& n = p.nodes[i];
    if (!n.alive || n.kind == NodeKind::view) continue;
    if (n.writes_var) assigns.push_back(int(i));
    for (int v : n.in) {
      int s = p.values[size_t(v)].storage;
      if (s >= 0 && p.storages[size_t(s)].kind == StorageKind::variable) readers_of[size_t(s)].push_back(int(i));
    }
  }
  std::vector<int> mark(p.nodes.size(), -1);
  std::unordered_map<int, int> last_assign;  // storage -> previous assign
  for (int a : assigns) {
    // Descendants of a: they see the new value.
    std::vector<int> stack{a};
    while (!stack.empty()) {
      int id = stack.back();
      stack.pop_back();
      if (mark[size_t(id)] == a) continue;
      mark[size_t(id)] = a;
      if (opt.atomic_updates) p.nodes[size_t(id)].post_commit = true;
      for (int c : consumers[size_t(id)]) stack.push_back(c);
    }
    PNode& an = p.nodes[size_t(a)];
    int s = p.values[size_t(an.out[0])].storage;
    for (int r : readers_of[size_t(s)])
      if (r != a && mark[size_t(r)] != a) an.after.push_back(r);
    auto it = last_assign.find(s);
    if (it != last_assign.end() && mark[size_t(a)] == a) an.after.push_back(it->second);
    last_assign[s] = a;
  }
}

}  // namespace

NDArray Plan::bind(int value) const {
  const PValue& v = values[size_t(value)];
  const PStorage& s = storages[size_t(v.storage)];
  if (s.kind == StorageKind::arena) {
    Layout l = v.layout;
    l.offset += int64_t(s.offset / dtype_size(v.type.dtype));
    return NDArray(arena, l, v.type.dtype);
  }
  return NDArray(s.array.buffer(), v.layout, v.type.dtype);
}

void Builder::bind_steps() {
  try {
    p.arena = Buffer::allocate(p.device, p.stats.arena_bytes);
  } catch (const Error& e) {  // say what the memory was for
    fail("allocating the plan's arena of ", p.stats.arena_bytes, " bytes on ", p.device.str(), ": ", e.what());
  }
  p.steps.clear();
  for (int id : p.order) {
    const PNode& n = p.nodes[size_t(id)];
    Step s;
    s.fn = n.kind == NodeKind::kernel ? n.kernel->fn : nullptr;
    for (int v : n.in) s.in.push_back(p.bind(v));
    for (int v : n.out) s.out.push_back(p.bind(v));
    s.attrs = n.attrs.get();
    s.name = &n.name;
    s.op = n.op ? &n.op->name : nullptr;
    s.key = uint64_t(n.graph_node >= 0 ? n.graph_node : 0x7fffffff - id);
    s.feed = n.feed;
    if (n.workspace >= 0) {
      const PStorage& w = p.storages[size_t(n.workspace)];
      s.workspace = static_cast<char*>(p.arena->data()) + w.offset;
      s.workspace_bytes = w.bytes;
    }
    for (int v : n.out) s.check |= is_floating(p.values[size_t(v)].type.dtype);
    if (n.kernel && n.kernel->prepare) {
      KernelContext kc{p.device};
      KernelCall call{kc, s.in, s.out, *s.attrs, *s.op, *s.name, s.key, nullptr, s.workspace, s.workspace_bytes};
      s.state = n.kernel->prepare(call);
    }
    p.steps.push_back(std::move(s));
  }
}

std::unique_ptr<Plan> compile_plan(const CompileRequest& req) {
  auto t0 = std::chrono::steady_clock::now();
  auto plan = std::make_unique<Plan>();
  plan->device = req.options->device;
  Builder b{req, *req.options, *req.graph, *plan, {}, {}, {}, {}};
  std::vector<char> needed;
  std::vector<int> feed_of;
  b.validate_and_prune(needed, feed_of);
  b.build(needed, feed_of);
  b.mark_alive();
  b.fuse();
  // The naive baseline: every tensor a kernel or feed produces gets its own
  // buffer (measured before assign_in_place and the memory plan save any).
  for (const PNode& n : plan->nodes)
    if (n.alive && (n.kind == NodeKind::kernel || n.kind == NodeKind::feed))
      for (int v : n.out)
        if (plan->storages[size_t(plan->values[size_t(v)].storage)].kind == StorageKind::arena)
          plan->stats.naive_bytes += plan->storages[size_t(plan->values[size_t(v)].storage)].bytes;
  b.assign_in_place();
  for (const PNode& n : plan->nodes) plan->stats.nodes_after_passes += n.alive && n.kind != NodeKind::source;
  b.order_updates();
  for (int v : plan->fetch_values) plan->storages[size_t(plan->values[size_t(v)].storage)].pinned = true;
  schedule_plan(*plan, *req.options);
  plan_memory(*plan, *req.options);
  b.bind_steps();
  plan->stats.steps = 0;
  for (const Step& s : plan->steps) plan->stats.steps += s.fn != nullptr;
  plan->stats.compile_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return plan;
}

PlanInfo Plan::info() const {
  PlanInfo r;
  r.arena_bytes = stats.arena_bytes;
  for (size_t i = 0; i < order.size(); ++i) {
    const PNode& n = nodes[size_t(order[i])];
    r.steps.push_back({n.name, n.op ? n.op->name : "barrier", deps[i]});
  }
  for (const PStorage& s : storages) {
    if (s.kind != StorageKind::arena || s.merged || s.writers.empty()) continue;
    PlanInfo::Buffer b{s.offset, s.bytes, s.first, s.last, {}, {}};
    for (int w : s.writers) b.writers.push_back(nodes[size_t(w)].pos);
    for (int rd : s.readers) b.readers.push_back(nodes[size_t(rd)].pos);
    r.buffers.push_back(std::move(b));
  }
  return r;
}

std::string Plan::dot() const {
  std::ostringstream os;
  os << "digraph plan {\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\", fontsize=10];\n";
  auto label = [&](int v) {
    const PValue& val = values[size_t(v)];
    const PStorage& s = storages[size_t(val.storage)];
    std::ostringstream l;
    l << dtype_name(val.type.dtype) << shape_str(val.type.shape);
    if (s.kind == StorageKind::arena) l << " @" << s.offset + size_t(val.layout.offset) * dtype_size(val.type.dtype);
    else l << (s.kind == StorageKind::variable ? " var" : " const");
    return l.str();
  };
  for (size_t i = 0; i < nodes.size(); ++i) {
    const PNode& n = nodes[i];
    if (!n.alive) continue;
    const char* style = n.kind == NodeKind::view ? ", style=dashed" : n.kind == NodeKind::source ? ", style=rounded" : "";
    os << "  n" << i << " [label=\"" << n.name << "\\n" << (n.op ? n.op->name : "barrier");
    if (n.pos >= 0) os << " #" << n.pos;
    os << " (" << device.str() << ")";
    for (int v : n.out) os << "\\n" << label(v);
    os << "\"" << style << "];\n";
    for (int v : n.in) os << "  n" << values[size_t(v)].producer << " -> n" << i << ";\n";
    for (int a : n.after) os << "  n" << a << " -> n" << i << " [style=dotted];\n";
  }
  os << "}\n";
  return os.str();
}

}  // namespace loom
