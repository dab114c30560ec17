// fusion (element-wise)
//   reads:       alive plan nodes in topological order, fetch values, the
//                OpDef flags (elementwise, stateful, ...) and the device's
//                fused kernel: which ops it runs and how many instructions,
//                leaves and outputs (KernelInfo::fusion)
//   establishes: groups of element-wise nodes of one output shape run as one
//                "fused" node (core/fused_program.hpp) at the group's last
//                node; the other members are dead. Node ids stay a
//                topological order. Off with check_numerics (it names single
//                nodes).
//
// Two phases, both linear in the nodes (programs are bounded by the device's
// limits, path searches by a budget):
// 1. A fusable node absorbs fusable producers of its output shape that only
//    it reads: every path out of such a producer goes through the node, so
//    the graph of groups stays acyclic.
// 2. A group absorbs a producing group whose value others read too; that
//    value becomes an extra output (Adam-like updates become one pass over
//    memory). Allowed only when no other path leads from the producer group to
//    the consumer group. That holds at once when every other reader of the
//    producer group comes after the consumer (ids are topological); else a
//    search on the graph of groups decides, which only visits groups before
//    the consumer and gives up, assuming a path, after kSearchBudget groups
//    (or at once when the producer is more than kSearchWindow nodes back).
//    A producer group is tried once per consumer group.

#include <algorithm>
#include <memory_resource>
#include <span>
#include <unordered_map>

#include "core/fused_program.hpp"
#include "core/passes/passes.hpp"

namespace loom {

namespace {

constexpr int kSearchBudget = 32;
constexpr int kSearchWindow = 128;

struct ShapeHash {
  size_t operator()(const Shape& s) const {
    uint64_t h = 1469598103934665603ull;
    for (int64_t d : s) h = (h ^ uint64_t(d)) * 1099511628211ull;
    return size_t(h);
  }
};

/// An instruction under construction (fused::Instr without its op's name).
struct Instr {
  const OpDef* op;
  bool to_bool;
  int64_t arg[3] = {fused::kNoArg, fused::kNoArg, fused::kNoArg};
  int arity() const { return arg[0] == fused::kNoArg ? 0 : arg[1] == fused::kNoArg ? 1 : arg[2] == fused::kNoArg ? 2 : 3; }
};

/// A fused program under construction, rooted at its last node. Its lists
/// come from the pass's monotonic memory (one per fusable node: allocating
/// and freeing each was a fifth of the pass), given at construction.
struct Group {
  std::pmr::vector<int> leaves;                       // input value ids
  std::pmr::vector<Instr> instrs;                     // dependency order; the last is the root
  std::pmr::vector<std::pair<int, int64_t>> computed;  // values computed inside: (value id, instruction)
  std::pmr::vector<int> members;                      // absorbed nodes (not the root)

  explicit Group(std::pmr::memory_resource* m) : leaves(m), instrs(m), computed(m), members(m) {}
  Group(const Group& g, std::pmr::memory_resource* m)
      : leaves(g.leaves, m), instrs(g.instrs, m), computed(g.computed, m), members(g.members, m) {}
  Group(const Group&) = delete;  // a copy would take the default memory: say which
  Group(Group&&) = default;
  Group& operator=(Group&&) = default;

  void clear() { leaves.clear(), instrs.clear(), computed.clear(), members.clear(); }
  int64_t computed_at(int v) const {
    for (auto [cv, ci] : computed)
      if (cv == v) return ci;
    return -1;
  }
  /// The operand reference of value v (a leaf, added if new, or a computed result).
  int64_t ref(int v) {
    if (int64_t ci = computed_at(v); ci >= 0) return fused::result_of(ci);
    auto it = std::find(leaves.begin(), leaves.end(), v);
    if (it != leaves.end()) return it - leaves.begin();
    leaves.push_back(v);
    return int64_t(leaves.size()) - 1;
  }
  /// Appends q's instructions; returns the new index of q's root.
  int64_t inline_group(const Group& q) {
    const int64_t base = int64_t(instrs.size());
    for (Instr in : q.instrs) {
      for (int j = 0; j < in.arity(); ++j)
        in.arg[j] = in.arg[j] < 0 ? in.arg[j] - base : ref(q.leaves[size_t(in.arg[j])]);
      instrs.push_back(in);
    }
    for (auto [cv, ci] : q.computed) computed.push_back({cv, ci + base});
    members.insert(members.end(), q.members.begin(), q.members.end());
    return int64_t(instrs.size()) - 1;
  }
};

/// The group `q` (a producer group whose root q_root yields value q_out)
/// merged into consumer group g: q's instructions first, then g's, whose
/// reads of q's values become instruction references.
Group merge_producer(const Group& g, const Group& q, int q_out, int q_root) {
  Group m(q, g.leaves.get_allocator().resource());
  m.computed.push_back({q_out, int64_t(q.instrs.size()) - 1});
  const int64_t shift = int64_t(q.instrs.size());
  std::vector<int64_t> leaf_ref(g.leaves.size());
  for (size_t r = 0; r < g.leaves.size(); ++r) leaf_ref[r] = m.ref(g.leaves[r]);
  for (Instr in : g.instrs) {
    for (int j = 0; j < in.arity(); ++j) in.arg[j] = in.arg[j] < 0 ? in.arg[j] - shift : leaf_ref[size_t(in.arg[j])];
    m.instrs.push_back(in);
  }
  for (auto [v, ci] : g.computed) m.computed.push_back({v, ci + shift});
  m.members = g.members;
  m.members.insert(m.members.end(), q.members.begin(), q.members.end());
  m.members.push_back(q_root);
  return m;
}

/// Leaves of merge_producer(g, q, q_out, ...) without building it.
size_t merged_leaves(const Group& g, const Group& q, int q_out) {
  size_t n = q.leaves.size();
  for (int v : g.leaves)
    n += v != q_out && q.computed_at(v) < 0 && std::find(q.leaves.begin(), q.leaves.end(), v) == q.leaves.end();
  return n;
}

/// The alive nodes reading each value's data (each reader once; reads for the
/// shape only do not count: a value only those read need not be an output).
Adjacency readers_of_values(const Plan& p) {
  Adjacency l;
  l.start.assign(p.values.size() + 1, 0);
  auto each = [&](auto&& f) {
    for (size_t i = 0; i < p.nodes.size(); ++i) {
      const PNode& n = p.nodes[i];
      if (!n.alive) continue;
      for (size_t k = 0; k < n.in.size(); ++k)
        if (!is_shape_only(n, k) && std::find(n.in.begin(), n.in.begin() + int64_t(k), n.in[k]) == n.in.begin() + int64_t(k))
          f(n.in[k], int(i));
    }
  };
  each([&](int v, int) { ++l.start[size_t(v) + 1]; });
  for (size_t v = 0; v < p.values.size(); ++v) l.start[v + 1] += l.start[v];
  l.items.resize(size_t(l.start.back()));
  std::vector<int> fill(l.start.begin(), l.start.end() - 1);
  each([&](int v, int i) { l.items[size_t(fill[size_t(v)]++)] = i; });
  return l;
}

struct Fuser {
  Plan& p;
  const FusionCaps& caps;
  Adjacency consumers;                      // per value: the nodes reading it
  std::vector<std::vector<int>> after_of;   // per node: nodes that must run after it
  std::vector<char> ordered, fetched;
  std::pmr::monotonic_buffer_resource memory;  // the groups and their lists, freed at once with the pass
  std::vector<Group*> group;                    // per root node (null: none)
  std::vector<Group*> spare;                    // groups absorbed, reused for new ones
  std::vector<int> rep;                       // node -> the root of its group (path-halving union-find)
  std::vector<int> mark;                      // visited / member marks, by epoch
  int epoch = 0;
  std::vector<int> shape_class;               // per node: output 0's shape, interned (-1: none)
  std::vector<char> bool_out;                 // per node: output 0 is bool
  // Copies of what hot loops read, small and contiguous (PNode and PValue are large).
  std::vector<int> producer;                  // per value: its producer node
  std::vector<int> out_begin, out_end;        // per node: its outputs (consecutive value ids until emit)
  std::vector<int> stack, tried;              // scratch of other_path and absorb_shared
  const KernelInfo *kernel32 = nullptr, *kernel64 = nullptr;  // the fused kernel by dtype

  Fuser(Plan& plan, const FusionCaps& c);
  int find(int x) {
    while (rep[size_t(x)] != x) x = rep[size_t(x)] = rep[size_t(rep[size_t(x)])];
    return x;
  }
  bool same_shape(int a, int b) const { return shape_class[size_t(a)] == shape_class[size_t(b)]; }
  bool is_bool(int id) const { return bool_out[size_t(id)]; }
  bool fusable(int id) const;
  int outputs_needed(int root, const Group& g, const Group* also = nullptr, int also_root = -1, int also_out = -1);
  bool fits(int root, const Group& g, size_t pending_leaves);
  void absorb(int root, int member);
  void start_group(int id);
  template <class F>
  void for_each_successor(int x, F&& f);
  bool other_path(int a, int b);
  void absorb_shared(int id);
  void emit(int id);
};

Fuser::Fuser(Plan& plan, const FusionCaps& c)
    : p(plan), caps(c), consumers(readers_of_values(plan)), after_of(plan.nodes.size()), ordered(plan.nodes.size(), 0),
      fetched(plan.values.size(), 0), group(plan.nodes.size()), rep(plan.nodes.size()), mark(plan.nodes.size(), 0),
      shape_class(plan.nodes.size(), -1), bool_out(plan.nodes.size(), 0), producer(plan.values.size()),
      out_begin(plan.nodes.size(), 0), out_end(plan.nodes.size(), 0) {
  for (size_t v = 0; v < p.values.size(); ++v) producer[v] = p.values[v].producer;
  kernel32 = find_kernel(core_op::fused.name(), p.device.kind, float32);
  kernel64 = find_kernel(core_op::fused.name(), p.device.kind, float64);
  std::unordered_map<Shape, int, ShapeHash> shapes;  // interned output shapes
  for (size_t i = 0; i < p.nodes.size(); ++i) {
    rep[i] = int(i);
    const PNode& n = p.nodes[i];
    if (!n.alive) continue;
    for (int a : n.after) ordered[size_t(a)] = 1, after_of[size_t(a)].push_back(int(i));
    if (n.out.empty()) continue;
    out_begin[i] = n.out[0];
    out_end[i] = n.out[0] + int(n.out.size());
    LOOM_ASSERT(n.out.back() == out_end[i] - 1, "outputs of a node are not consecutive values");
    const TensorType& t = p.values[size_t(n.out[0])].type;
    shape_class[i] = shapes.try_emplace(t.shape, int(shapes.size())).first->second;
    bool_out[i] = t.dtype == boolean;
  }
  for (int v : p.fetch_values) fetched[size_t(v)] = 1;
}

bool Fuser::fusable(int id) const {
  const PNode& n = p.nodes[size_t(id)];
  if (!(n.alive && n.kind == NodeKind::kernel && n.op && n.op->elementwise && !n.op->stateful && n.kernel &&
        n.out.size() == 1 && n.op->writes_input < 0 && n.op->shape_only_inputs.empty() && n.after.empty() &&
        !ordered[size_t(id)] && caps.supports(n.op->name)))
    return false;
  // The dtype an element-wise op computes in: its output's, or (comparisons) its inputs'.
  const DType out = p.values[size_t(n.out[0])].type.dtype, in = p.values[size_t(n.in.back())].type.dtype;
  return out == boolean ? is_floating(in) : is_floating(out);
}

/// Outputs of the group if emitted now (merged with the producer group `also`,
/// rooted at also_root with value also_out, when given): its root and the
/// computed values fetched or read by a node outside it.
int Fuser::outputs_needed(int root, const Group& g, const Group* also, int also_root, int also_out) {
  ++epoch;
  mark[size_t(root)] = epoch;
  for (int m : g.members) mark[size_t(m)] = epoch;
  if (also) {
    mark[size_t(also_root)] = epoch;
    for (int m : also->members) mark[size_t(m)] = epoch;
  }
  int outs = 1;
  auto count = [&](int v) {
    bool outside = fetched[size_t(v)];
    for (int c : consumers[size_t(v)]) outside |= mark[size_t(c)] != epoch;
    outs += outside;
  };
  for (auto [v, ci] : g.computed) count(v);
  if (also) {
    for (auto [v, ci] : also->computed) count(v);
    count(also_out);
  }
  return outs;
}

bool Fuser::fits(int root, const Group& g, size_t pending_leaves) {
  return int(g.instrs.size()) <= caps.max_instrs && int(g.leaves.size() + pending_leaves) <= caps.max_leaves &&
         outputs_needed(root, g) <= caps.max_outputs;
}

void Fuser::absorb(int root, int member) {
  for (int m : group[size_t(member)]->members) rep[size_t(m)] = root;
  rep[size_t(member)] = root;
  p.nodes[size_t(member)].alive = false;
  spare.push_back(group[size_t(member)]);
  group[size_t(member)] = nullptr;
}

/// Phase 1 at node id: a group of id and the producers only it reads.
void Fuser::start_group(int id) {
  const PNode& n = p.nodes[size_t(id)];
  Group* g;
  if (spare.empty()) {
    g = std::pmr::polymorphic_allocator<Group>(&memory).new_object<Group>(&memory);
  } else {
    g = spare.back();
    spare.pop_back();
    g->clear();
  }
  Instr self{n.op, is_bool(id)};
  for (size_t k = 0; k < n.in.size(); ++k) {
    const int v = n.in[k], pid = producer[size_t(v)];
    const Group* q = group[size_t(pid)];
    // A bool root has no fused kernel, so it absorbs nothing.
    if (q && !is_bool(id) && consumers[size_t(v)].size() == 1 && !fetched[size_t(v)] && same_shape(pid, id)) {
      if (int(g->instrs.size() + q->instrs.size()) + 1 <= caps.max_instrs &&
          int(g->leaves.size() + q->leaves.size() + n.in.size() - k - 1) <= caps.max_leaves) {
        const int64_t root = g->inline_group(*q);  // surely within the limits (no new outputs)
        g->computed.push_back({v, root});
        g->members.push_back(pid);
        absorb(id, pid);
        self.arg[k] = fused::result_of(root);
        continue;
      }
      Group trial(*g, &memory);
      const int64_t root = trial.inline_group(*q);
      trial.computed.push_back({v, root});
      trial.members.push_back(pid);
      trial.instrs.push_back(self);  // counts the node's own instruction
      if (fits(id, trial, n.in.size() - k - 1)) {
        trial.instrs.pop_back();
        *g = std::move(trial);
        absorb(id, pid);
        self.arg[k] = fused::result_of(root);
        continue;
      }
    }
    self.arg[k] = g->ref(v);
  }
  g->instrs.push_back(self);
  group[size_t(id)] = g;
}

/// Calls f(root) for each group reading a value of group x (or ordered after it).
template <class F>
void Fuser::for_each_successor(int x, F&& f) {
  const Group* g = group[size_t(x)];
  for (int v = out_begin[size_t(x)]; v < out_end[size_t(x)]; ++v)
    for (int c : consumers[size_t(v)]) f(find(c));
  if (!g) {
    for (int c : after_of[size_t(x)]) f(find(c));  // members of groups are never ordered
    return;
  }
  for (auto [v, ci] : g->computed)
    for (int c : consumers[size_t(v)]) f(find(c));
}

/// Is there a path from group a to group b other than a's direct edges to b?
bool Fuser::other_path(int a, int b) {
  // Group roots after b cannot lead back to b (ids are topological).
  bool all_after = true;
  for_each_successor(a, [&](int x) { all_after &= x == a || x == b || x > b; });
  if (all_after) return false;
  if (b - a > kSearchWindow) return true;  // far apart: assume a path
  stack.clear();
  for_each_successor(a, [&](int x) {
    if (x != b) stack.push_back(x);
  });
  ++epoch;
  int visited = 0;
  while (!stack.empty()) {
    const int x = stack.back();
    stack.pop_back();
    if (x == b) return true;
    if (x == a || x > b || mark[size_t(x)] == epoch) continue;
    mark[size_t(x)] = epoch;
    if (++visited > kSearchBudget) return true;  // too far to tell: assume the worst
    for_each_successor(x, [&](int y) { stack.push_back(y); });
  }
  return false;
}

/// Phase 2 at root id: absorb producing groups whose values others read too.
void Fuser::absorb_shared(int id) {
  Group* g = group[size_t(id)];
  if (!g || is_bool(id) || !p.nodes[size_t(id)].alive) return;
  tried.clear();
  for (size_t r = 0; r < g->leaves.size(); ++r) {
    const int a = find(producer[size_t(g->leaves[r])]);
    const Group* q = group[size_t(a)];
    if (!q || a == id || !same_shape(a, id) || std::find(tried.begin(), tried.end(), a) != tried.end()) continue;
    tried.push_back(a);
    const int a_out = out_begin[size_t(a)];
    if (int(g->instrs.size() + q->instrs.size()) > caps.max_instrs ||
        int(merged_leaves(*g, *q, a_out)) > caps.max_leaves || other_path(a, id) ||
        outputs_needed(id, *g, q, a, a_out) > caps.max_outputs)
      continue;
    *g = merge_producer(*g, *q, a_out, a);
    absorb(id, a);
    r = size_t(-1);  // leaves changed: scan again
  }
}

/// A group of two or more instructions becomes a fused node whose extra
/// outputs are the computed values someone outside reads (or a fetch).
void Fuser::emit(int id) {
  const Group* g = group[size_t(id)];
  if (!g || g->instrs.size() < 2 || !p.nodes[size_t(id)].alive) return;
  PNode& n = p.nodes[size_t(id)];
  const KernelInfo* k = p.values[size_t(n.out[0])].type.dtype == float64 ? kernel64 : kernel32;
  LOOM_ASSERT(k, "fused root without a fused kernel");
  fused::Program prog;
  for (const Instr& in : g->instrs) prog.instrs.push_back({in.op->name, in.to_bool, {in.arg[0], in.arg[1], in.arg[2]}});
  ++epoch;
  mark[size_t(id)] = epoch;
  for (int m : g->members) mark[size_t(m)] = epoch;
  for (auto [v, ci] : g->computed) {
    bool outside = fetched[size_t(v)];
    for (int c : consumers[size_t(v)]) outside |= mark[size_t(c)] != epoch;
    if (!outside) continue;
    prog.outs.push_back(ci);
    n.out.push_back(v);
    p.values[size_t(v)].producer = id;
  }
  LOOM_ASSERT(int(n.out.size()) <= caps.max_outputs, "fused node with too many outputs");
  n.op = &core_op::fused.def();
  n.attrs = std::make_shared<Attrs>(fused::encode(prog));
  n.kernel = k;
  n.in.assign(g->leaves.begin(), g->leaves.end());
  n.workspace = -1;
  p.stats.fused += int(g->instrs.size()) - 1;
}

}  // namespace

void fusion(Compilation& c) {
  if (c.opt.check_numerics) return;  // check_numerics names single nodes
  Plan& p = c.plan;
  const KernelInfo* k = find_kernel(core_op::fused.name(), p.device.kind, float32);
  if (!k || !k->fusion) return;  // this device has no fused kernel
  Fuser f(p, *k->fusion);
  const int n = int(p.nodes.size());
  for (int id = 0; id < n; ++id)
    if (f.fusable(id)) f.start_group(id);
  for (int id = 0; id < n; ++id) f.absorb_shared(id);
  for (int id = 0; id < n; ++id) f.emit(id);
}

}  // namespace loom
