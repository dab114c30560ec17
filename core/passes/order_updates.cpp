// order_updates
//   reads:       alive nodes in topological order (node ids), which of them
//                write variables (writes_var), the variables' readers
//   establishes: ordering edges (PNode::after): a reader of a variable runs
//                before each update of it that it does not depend on; updates
//                of one variable run in the order their dependencies give (two
//                independent ones are a loom::Error). PNode::post_commit marks
//                the updates and everything depending on one; with atomic
//                updates a barrier node makes every update wait for all other
//                work, so a failed run leaves variables unchanged. After this
//                pass node ids are no longer a topological order (the barrier
//                comes last).
//
// Which updates a node depends on is a bit set per node over the updates,
// propagated in topological order; only nodes downstream of an update carry
// one, so the cost is linear in the nodes plus (descendants x updates / 64).

#include <unordered_map>

#include "core/passes/passes.hpp"

namespace loom {

namespace {

using Bits = std::vector<uint64_t>;

bool has_bit(const Bits& b, size_t i) { return i / 64 < b.size() && (b[i / 64] >> (i % 64)) & 1; }

/// For each node, the updates (indices into `updates`) it depends on, itself excluded.
std::vector<Bits> updates_upstream(const Plan& p, const std::vector<int>& updates) {
  const size_t words = (updates.size() + 63) / 64;
  std::vector<int> index(p.nodes.size(), -1);
  for (size_t k = 0; k < updates.size(); ++k) index[size_t(updates[k])] = int(k);
  std::vector<Bits> up(p.nodes.size());
  auto take = [&](Bits& into, int from) {
    const Bits& src = up[size_t(from)];
    const int k = index[size_t(from)];
    if (src.empty() && k < 0) return;
    if (into.empty()) into.assign(words, 0);
    for (size_t w = 0; w < src.size(); ++w) into[w] |= src[w];
    if (k >= 0) into[size_t(k) / 64] |= 1ull << (size_t(k) % 64);
  };
  for (int i : topological_order(p)) {
    const PNode& n = p.nodes[size_t(i)];
    for (size_t k = 0; k < n.in.size(); ++k)
      if (!is_shape_only(n, k)) take(up[size_t(i)], p.values[size_t(n.in[k])].producer);
    for (int a : n.after) take(up[size_t(i)], a);
  }
  return up;
}

/// With atomic updates every update waits for all work that is not post-commit.
void add_barrier(Plan& p) {
  bool any = false;
  for (const PNode& n : p.nodes) any |= executable(n) && n.post_commit;
  if (!any) return;
  PNode barrier;
  barrier.name = "barrier/updates";
  barrier.kind = NodeKind::noop;
  const int id = int(p.nodes.size());
  for (size_t i = 0; i < p.nodes.size(); ++i)
    if (executable(p.nodes[i]) && !p.nodes[i].post_commit) barrier.after.push_back(int(i));
  for (PNode& n : p.nodes)
    if (executable(n) && n.post_commit && n.writes_var) n.after.push_back(id);
  p.add_node(std::move(barrier));
}

}  // namespace

void order_updates(Compilation& c) {
  Plan& p = c.plan;
  std::vector<int> updates;
  std::vector<std::vector<int>> readers(p.storages.size());
  for (size_t i = 0; i < p.nodes.size(); ++i) {
    const PNode& n = p.nodes[i];
    if (!n.alive || n.kind == NodeKind::view) continue;
    if (n.writes_var) updates.push_back(int(i));
    for (int v : n.in) {
      const int s = p.values[size_t(v)].storage;
      if (p.storages[size_t(s)].kind == StorageKind::variable) readers[size_t(s)].push_back(int(i));
    }
  }
  if (updates.empty()) return;
  const std::vector<Bits> up = updates_upstream(p, updates);
  if (c.opt.atomic_updates)
    for (size_t i = 0; i < p.nodes.size(); ++i) p.nodes[i].post_commit = p.nodes[i].alive && (!up[i].empty() || p.nodes[i].writes_var);
  std::unordered_map<int, size_t> last_update;  // storage -> its previous update (index into updates)
  for (size_t k = 0; k < updates.size(); ++k) {
    const int a = updates[k];
    PNode& an = p.nodes[size_t(a)];
    for (int v : an.out) {  // the variables it writes (an epilogue's output need not be the first)
      const int s = p.values[size_t(v)].storage;
      if (p.storages[size_t(s)].kind != StorageKind::variable) continue;
      for (int r : readers[size_t(s)])
        if (r != a && !has_bit(up[size_t(r)], k)) an.after.push_back(r);
      // After the previous update of this variable, unless that one depends on this
      // one (an assign anchoring a value this node computes): then it follows anyway.
      auto it = last_update.find(s);
      if (it != last_update.end() && updates[it->second] != a) {
        const int b = updates[it->second];
        // Two updates of which neither depends on the other have no order: each would have to read the
        // variable before the other writes it.
        LOOM_CHECK(has_bit(up[size_t(b)], k) || has_bit(up[size_t(a)], it->second), "run: variable '",
                   c.graph.node(p.storages[size_t(s)].var_node).name, "' is updated twice (nodes '",
                   p.nodes[size_t(b)].name, "' and '", an.name,
                   "'), neither update depending on the other; combine "
                   "them into one update, order them (with_dependencies), or run them separately");
        if (!has_bit(up[size_t(b)], k)) an.after.push_back(b);
      }
      last_update[s] = k;
    }
  }
  if (c.opt.atomic_updates) add_barrier(p);
}

}  // namespace loom
