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
//    the consumer group: a search on the graph of groups, which only visits
//    groups before the consumer (ids are topological) and gives up, assuming
//    a path, after kSearchBudget groups.

#include <algorithm>
#include <functional>

#include "core/fused_program.hpp"
#include "core/passes/passes.hpp"

namespace loom {

namespace {

constexpr int kSearchBudget = 256;

/// A fused program under construction, rooted at its last node.
struct Group {
  std::vector<int> leaves;                       // input value ids
  std::vector<fused::Instr> instrs;              // dependency order; the last is the root
  std::vector<std::pair<int, int64_t>> computed;  // values computed inside: (value id, instruction)
  std::vector<int> members;                      // absorbed nodes (not the root)

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
    for (fused::Instr in : q.instrs) {
      for (int j = 0; j < in.arity(); ++j)
        in.arg[j] = in.arg[j] < 0 ? in.arg[j] - base : ref(q.leaves[size_t(in.arg[j])]);
      instrs.push_back(in);
    }
    for (auto [cv, ci] : q.computed) computed.push_back({cv, ci + base});
    members.insert(members.end(), q.members.begin(), q.members.end());
    return int64_t(instrs.size()) - 1;
  }
  void internalize_leaves();
  void sort_with_root_last(size_t root);
};

/// Leaves now computed inside become references to their instruction.
void Group::internalize_leaves() {
  for (size_t r = 0; r < leaves.size();) {
    const int64_t ci = computed_at(leaves[r]);
    if (ci < 0) {
      ++r;
      continue;
    }
    for (fused::Instr& in : instrs)
      for (int j = 0; j < in.arity(); ++j) {
        if (in.arg[j] < 0) continue;
        if (in.arg[j] == int64_t(r)) in.arg[j] = fused::result_of(ci);
        else if (in.arg[j] > int64_t(r)) --in.arg[j];
      }
    leaves.erase(leaves.begin() + int64_t(r));
  }
}

/// Puts the instructions back in dependency order with `root` last.
void Group::sort_with_root_last(size_t root) {
  const size_t n = instrs.size();
  std::vector<int64_t> pos(n, -1);
  std::vector<size_t> order;
  std::function<void(size_t)> visit = [&](size_t i) {
    if (pos[i] >= 0) return;
    pos[i] = -2;  // in progress
    for (int j = 0; j < instrs[i].arity(); ++j)
      if (instrs[i].arg[j] < 0) {
        const size_t d = size_t(fused::instr_of(instrs[i].arg[j]));
        LOOM_ASSERT(pos[d] != -2, "cycle in a fused program");
        visit(d);
      }
    pos[i] = int64_t(order.size());
    if (i != root) order.push_back(i);
  };
  for (size_t i = 0; i < n; ++i)
    if (i != root) visit(i);
  visit(root);
  order.push_back(root);
  std::vector<int64_t> final_pos(n);
  for (size_t k = 0; k < n; ++k) final_pos[order[k]] = int64_t(k);
  std::vector<fused::Instr> sorted;
  for (size_t i : order) sorted.push_back(instrs[i]);
  for (fused::Instr& in : sorted)
    for (int j = 0; j < in.arity(); ++j)
      if (in.arg[j] < 0) in.arg[j] = fused::result_of(final_pos[size_t(fused::instr_of(in.arg[j]))]);
  instrs = std::move(sorted);
  for (auto& cv : computed) cv.second = final_pos[size_t(cv.second)];
}

struct Fuser {
  Plan& p;
  const FusionCaps& caps;
  std::vector<std::vector<int>> consumers;  // per value: the nodes reading it
  std::vector<std::vector<int>> after_of;   // per node: nodes that must run after it
  std::vector<char> ordered, fetched;
  std::vector<std::unique_ptr<Group>> group;  // per root node
  std::vector<int> rep;                       // node -> the root of its group (path-halving union-find)
  std::vector<int> mark;                      // visited / member marks, by epoch
  int epoch = 0;

  Fuser(Plan& plan, const FusionCaps& c);
  int find(int x) {
    while (rep[size_t(x)] != x) x = rep[size_t(x)] = rep[size_t(rep[size_t(x)])];
    return x;
  }
  const Shape& shape(int id) const { return p.values[size_t(p.nodes[size_t(id)].out[0])].type.shape; }
  bool is_bool(int id) const { return p.values[size_t(p.nodes[size_t(id)].out[0])].type.dtype == boolean; }
  bool fusable(int id) const;
  int outputs_needed(int root, const Group& g);
  bool fits(int root, const Group& g, size_t pending_leaves);
  void absorb(int root, int member);
  void start_group(int id);
  bool other_path(int a, int b);
  void absorb_shared(int id);
  void emit(int id);
};

Fuser::Fuser(Plan& plan, const FusionCaps& c)
    : p(plan), caps(c), consumers(plan.values.size()), after_of(plan.nodes.size()), ordered(plan.nodes.size(), 0),
      fetched(plan.values.size(), 0), group(plan.nodes.size()), rep(plan.nodes.size()), mark(plan.nodes.size(), 0) {
  for (size_t i = 0; i < p.nodes.size(); ++i) {
    rep[i] = int(i);
    const PNode& n = p.nodes[i];
    if (!n.alive) continue;
    for (int v : n.in)
      if (consumers[size_t(v)].empty() || consumers[size_t(v)].back() != int(i)) consumers[size_t(v)].push_back(int(i));
    for (int a : n.after) ordered[size_t(a)] = 1, after_of[size_t(a)].push_back(int(i));
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

/// Outputs of the group if emitted now: its root and the computed values
/// fetched or read by a node outside it.
int Fuser::outputs_needed(int root, const Group& g) {
  ++epoch;
  mark[size_t(root)] = epoch;
  for (int m : g.members) mark[size_t(m)] = epoch;
  int outs = 1;
  for (auto [v, ci] : g.computed) {
    bool outside = fetched[size_t(v)];
    for (int c : consumers[size_t(v)]) outside |= mark[size_t(c)] != epoch;
    outs += outside;
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
  group[size_t(member)].reset();
}

/// Phase 1 at node id: a group of id and the producers only it reads.
void Fuser::start_group(int id) {
  const PNode& n = p.nodes[size_t(id)];
  auto g = std::make_unique<Group>();
  fused::Instr self{n.op->name, is_bool(id)};
  for (size_t k = 0; k < n.in.size(); ++k) {
    const int v = n.in[k], pid = p.values[size_t(v)].producer;
    const Group* q = group[size_t(pid)].get();
    // A bool root has no fused kernel, so it absorbs nothing.
    if (q && !is_bool(id) && consumers[size_t(v)].size() == 1 && !fetched[size_t(v)] && shape(pid) == shape(id)) {
      Group trial = *g;
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
  group[size_t(id)] = std::move(g);
}

/// Is there a path from group a to group b other than a's direct edges to b?
bool Fuser::other_path(int a, int b) {
  std::vector<int> stack;
  auto push_successors = [&](int x) {
    const Group* g = group[size_t(x)].get();
    for (int v : p.nodes[size_t(x)].out)
      for (int c : consumers[size_t(v)]) stack.push_back(find(c));
    if (!g) {
      for (int c : after_of[size_t(x)]) stack.push_back(find(c));
      return;
    }
    for (auto [v, ci] : g->computed)
      for (int c : consumers[size_t(v)]) stack.push_back(find(c));
  };
  ++epoch;
  push_successors(a);
  std::erase(stack, b);
  int visited = 0;
  while (!stack.empty()) {
    const int x = stack.back();
    stack.pop_back();
    if (x == b) return true;
    // Group roots after b cannot lead back to b (ids are topological).
    if (x == a || x > b || mark[size_t(x)] == epoch) continue;
    mark[size_t(x)] = epoch;
    if (++visited > kSearchBudget) return true;  // too far to tell: assume the worst
    push_successors(x);
  }
  return false;
}

/// Phase 2 at root id: absorb producing groups whose values others read too.
void Fuser::absorb_shared(int id) {
  Group* g = group[size_t(id)].get();
  if (!g || is_bool(id) || !p.nodes[size_t(id)].alive) return;
  for (size_t r = 0; r < g->leaves.size(); ++r) {
    const int a = find(p.values[size_t(g->leaves[r])].producer);
    const Group* q = group[size_t(a)].get();
    if (!q || a == id || shape(a) != shape(id) || other_path(a, id)) continue;
    Group trial = *g;
    const size_t root = trial.instrs.size() - 1;
    trial.inline_group(*q);
    trial.computed.push_back({p.nodes[size_t(a)].out[0], int64_t(trial.instrs.size()) - 1});
    trial.members.push_back(a);
    trial.internalize_leaves();
    trial.sort_with_root_last(root);
    if (!fits(id, trial, 0)) continue;
    *g = std::move(trial);
    absorb(id, a);
    r = size_t(-1);  // leaves changed: scan again
  }
}

/// A group of two or more instructions becomes a fused node whose extra
/// outputs are the computed values someone outside reads (or a fetch).
void Fuser::emit(int id) {
  const Group* g = group[size_t(id)].get();
  if (!g || g->instrs.size() < 2 || !p.nodes[size_t(id)].alive) return;
  PNode& n = p.nodes[size_t(id)];
  const KernelInfo* k = find_kernel(core_op::fused.name(), p.device.kind, p.values[size_t(n.out[0])].type.dtype);
  LOOM_ASSERT(k, "fused root without a fused kernel");
  fused::Program prog;
  prog.instrs = g->instrs;
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
  n.in = g->leaves;
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
