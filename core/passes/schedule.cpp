// schedule
//   reads:       executable nodes, data edges (resolved through views and
//                sources to the executable nodes behind them), PNode::after,
//                post_commit, storage readers (access)
//   establishes: Plan::order (a topological order of the executable nodes),
//                PNode::pos, Plan::deps (data and control edges by position)
//                and, for the parallel executor, Plan::wave_end. Post-commit
//                nodes come last. Serial plans take the order with the lower
//                peak of live bytes of two: graph order, and a memory-greedy
//                order (the ready node that frees the most bytes net of what
//                it allocates); parallel plans order by waves (longest path
//                from the inputs), so that independent nodes run together.
//                reorder_for_memory (for remat's rewritten serial plans)
//                moves nodes that free bytes up, with the producers only
//                they read, where that lowers the peak of live bytes.

#include <algorithm>
#include <span>
#include <tuple>

#include "core/passes/passes.hpp"

namespace loom {

namespace {

using Key = std::tuple<int, int64_t, int>;  // (post-commit, score, node id): smallest first

/// Executable nodes each node waits for (views and sources resolved through).
struct DepResolver {
  const Plan& p;
  std::vector<char> exec;              // per node: executable (flat copies: the node and value records are large)
  std::vector<int> producer;           // per value: its producer node
  std::vector<std::vector<int>> memo;  // per non-executable node: the executable nodes behind it
  std::vector<char> done;
  explicit DepResolver(const Plan& plan)
      : p(plan),
        exec(plan.nodes.size()),
        producer(plan.values.size()),
        memo(plan.nodes.size()),
        done(plan.nodes.size(), 0) {
    for (size_t i = 0; i < p.nodes.size(); ++i) exec[i] = executable(p.nodes[i]);
    for (size_t v = 0; v < p.values.size(); ++v) producer[v] = p.values[v].producer;
  }

  /// The executable nodes that must finish before non-executable node `id`'s outputs are usable.
  const std::vector<int>& ready_after(int id) {
    if (!done[size_t(id)]) {
      std::vector<int> r;
      append_deps(id, r);
      memo[size_t(id)] = std::move(r), done[size_t(id)] = 1;
    }
    return memo[size_t(id)];
  }
  /// Appends node id's executable predecessors to r (sorted, each once).
  void append_deps(int id, std::vector<int>& r) {
    const size_t from = r.size();
    const PNode& n = p.nodes[size_t(id)];
    for (size_t k = 0; k < n.in.size(); ++k)  // a read for the shape only waits for nothing
      if (!is_shape_only(n, k)) add(r, producer[size_t(n.in[k])]);
    for (int a : n.after) add(r, a);
    std::sort(r.begin() + int64_t(from), r.end());
    r.erase(std::unique(r.begin() + int64_t(from), r.end()), r.end());
  }
  /// Every node's executable predecessors (executable nodes only; the others' lists are empty).
  Adjacency preds(std::vector<int>* exec_nodes = nullptr) {
    Adjacency a;
    for (size_t i = 0; i < p.nodes.size(); ++i, a.close()) {
      if (!exec[i]) continue;
      if (exec_nodes) exec_nodes->push_back(int(i));
      append_deps(int(i), a.items);
    }
    return a;
  }
  void add(std::vector<int>& r, int x) {
    if (exec[size_t(x)]) r.push_back(x);
    else for (int d : ready_after(x)) r.push_back(d);
  }
};

/// Peak and sum over positions of live arena bytes if nodes ran in a given
/// order (no in-place reuse). Built once per plan: the arena storages flat
/// (writers, then readers, per storage), so that the many orders hoist_groups
/// tries are measured without walking the plan or allocating. The orders one
/// profile measures hold the same nodes (positions of others are never reset).
class MemoryProfile {
 public:
  explicit MemoryProfile(const Plan& p) : pos_(p.nodes.size(), -1) {
    for (const PStorage& s : p.storages) {
      if (s.kind != StorageKind::arena || s.writers.empty()) continue;
      const int begin = int(nodes_.size());
      nodes_.insert(nodes_.end(), s.writers.begin(), s.writers.end());
      const int readers = int(nodes_.size());
      nodes_.insert(nodes_.end(), s.readers.begin(), s.readers.end());
      storages_.push_back({int64_t(s.bytes), begin, readers, int(nodes_.size()), s.pinned});
    }
  }
  std::pair<size_t, double> operator()(const std::vector<int>& order) {
    for (size_t i = 0; i < order.size(); ++i) pos_[size_t(order[i])] = int(i);
    delta_.assign(order.size() + 2, 0);
    for (const Storage& s : storages_) {
      int f = INT_MAX, l = -1;
      for (int k = s.begin; k < s.readers; ++k) f = std::min(f, pos_[size_t(nodes_[size_t(k)])]);
      for (int k = s.begin; k < s.end; ++k) l = std::max(l, pos_[size_t(nodes_[size_t(k)])]);
      if (s.pinned) l = int(order.size());
      delta_[size_t(f)] += s.bytes;
      delta_[size_t(l) + 1] -= s.bytes;
    }
    int64_t cur = 0, peak = 0;
    double sum = 0;
    for (int64_t d : delta_) peak = std::max(peak, cur += d), sum += double(cur);
    return {size_t(peak), sum};
  }

 private:
  struct Storage {
    int64_t bytes;
    int begin, readers, end;  // nodes_[begin, readers): writers; [readers, end): readers
    bool pinned;
  };
  std::vector<Storage> storages_;
  std::vector<int> nodes_, pos_;
  std::vector<int64_t> delta_;
};

/// Moves a node, with the producers only it reads, to right after their other
/// predecessors, where that lowers the live bytes of `order` (the peak, or at
/// an equal peak their sum over positions). The memory greedy looks one node
/// ahead: it runs a weight gradient (which allocates) late, and so the update
/// that frees it, holding the activation the gradient reads all along.
void hoist_groups(const Plan& p, std::vector<int>& order, const Adjacency& preds, const Adjacency& succs) {
  // Each try measures the whole order: their number is bounded so that the
  // rewrites a budgeted compile measures stay near-linear.
  const size_t max_tries = std::max<size_t>(16, 400000 / (p.nodes.size() + p.storages.size() + 1));
  std::vector<int> pos(p.nodes.size(), -1), in_group(p.nodes.size(), 0);
  auto index = [&] {
    for (size_t i = 0; i < order.size(); ++i) pos[size_t(order[i])] = int(i);
  };
  index();
  MemoryProfile profile(p);
  auto best = profile(order);
  size_t tries = 0;
  for (int u : std::vector<int>(order)) {
    if (tries >= max_tries) break;
    // u and the producers whose every consumer is in the group (or a no-op
    // anchor: moving a node up never breaks an edge to a later node).
    std::vector<int> group{u};
    in_group[size_t(u)] = 1;
    for (size_t k = 0; k < group.size(); ++k)
      for (int d : preds[size_t(group[k])]) {
        if (in_group[size_t(d)]) continue;
        const std::span<const int> s = succs[size_t(d)];
        if (std::all_of(s.begin(), s.end(),
                        [&](int x) { return in_group[size_t(x)] || p.nodes[size_t(x)].kind == NodeKind::noop; }))
          in_group[size_t(d)] = 1, group.push_back(d);
      }
    int anchor = -1, first = INT_MAX;  // the last outside predecessor; the group's first position
    for (int g : group) {
      first = std::min(first, pos[size_t(g)]);
      for (int d : preds[size_t(g)])
        if (!in_group[size_t(d)] && (anchor < 0 || pos[size_t(d)] > pos[size_t(anchor)])) anchor = d;
    }
    if ((anchor < 0 ? -1 : pos[size_t(anchor)]) + 1 < first) {
      std::sort(group.begin(), group.end(), [&](int a, int b) { return pos[size_t(a)] < pos[size_t(b)]; });
      std::vector<int> moved;
      moved.reserve(order.size());
      if (anchor < 0) moved.insert(moved.end(), group.begin(), group.end());
      for (int x : order) {
        if (in_group[size_t(x)]) continue;
        moved.push_back(x);
        if (x == anchor) moved.insert(moved.end(), group.begin(), group.end());
      }
      ++tries;
      const auto now = profile(moved);
      if (now.first < best.first || (now.first == best.first && now.second < best.second)) {
        order = std::move(moved), best = now;
        for (int g : group) in_group[size_t(g)] = 0;
        index();
        continue;
      }
    }
    for (int g : group) in_group[size_t(g)] = 0;
  }
}

/// Per executable node, what running it does to live arena bytes: what it
/// allocates, and the distinct freeable storages it reads (flat lists).
struct NodeMemory {
  std::vector<int64_t> alloc;
  std::vector<int> start, reads;
  std::span<const int> reads_of(int i) const {
    return {reads.data() + start[size_t(i)], reads.data() + start[size_t(i) + 1]};
  }
};

NodeMemory node_memory(const Plan& p) {
  NodeMemory m;
  m.alloc.assign(p.nodes.size(), 0);
  m.start.assign(p.nodes.size() + 1, 0);
  for (size_t i = 0; i < p.nodes.size(); ++i) {
    const PNode& n = p.nodes[i];
    m.start[i] = int(m.reads.size());
    if (!executable(n)) continue;
    for (int v : n.out) {
      const PStorage& st = p.storages[size_t(p.values[size_t(v)].storage)];
      if (st.kind == StorageKind::arena) m.alloc[i] += int64_t(st.bytes);
    }
    const size_t first = m.reads.size();
    for (size_t k = 0; k < n.in.size(); ++k) {
      const int s = p.values[size_t(n.in[k])].storage;
      const PStorage& st = p.storages[size_t(s)];
      if (is_shape_only(n, k) || st.kind != StorageKind::arena || st.pinned) continue;
      if (std::find(m.reads.begin() + int64_t(first), m.reads.end(), s) == m.reads.end()) m.reads.push_back(s);
    }
  }
  m.start.back() = int(m.reads.size());
  return m;
}

/// Memory-greedy: the ready node with the smallest bytes allocated minus bytes freed.
std::vector<int> memory_greedy(const Plan& p, const std::vector<int>& exec, const Adjacency& preds,
                               const Adjacency& succs) {
  const NodeMemory m = node_memory(p);
  std::vector<int> pending(p.storages.size(), 0);
  for (size_t s = 0; s < p.storages.size(); ++s) pending[s] = int(p.storages[s].readers.size());
  auto score = [&](int i) {
    int64_t d = m.alloc[size_t(i)];
    for (int s : m.reads_of(i))
      if (pending[size_t(s)] == 1) d -= int64_t(p.storages[size_t(s)].bytes);
    return Key{int(p.nodes[size_t(i)].post_commit), d, i};
  };
  auto emitted = [&](int i) {
    for (int s : m.reads_of(i)) --pending[size_t(s)];
  };
  return kahn_order<Key>(exec, preds, succs, score, emitted);
}

/// Plan::order, PNode::pos and Plan::deps from an order and each node's
/// executable predecessors.
void set_order_from(Plan& p, std::vector<int> order, const Adjacency& preds) {
  p.order = std::move(order);
  for (PNode& n : p.nodes) n.pos = -1;
  for (size_t i = 0; i < p.order.size(); ++i) p.nodes[size_t(p.order[i])].pos = int(i);
  p.deps.assign(p.order.size(), {});
  for (size_t i = 0; i < p.order.size(); ++i) {
    const std::span<const int> d = preds[size_t(p.order[i])];
    p.deps[i].reserve(d.size());
    for (int x : d) p.deps[i].push_back(p.nodes[size_t(x)].pos);
  }
}

}  // namespace

void schedule(Compilation& c) {
  Plan& p = c.plan;
  const size_t N = p.nodes.size();
  DepResolver res(p);
  std::vector<int> exec;
  const Adjacency preds = res.preds(&exec), succs = preds.transpose();
  auto post = [&](int i) { return int(p.nodes[size_t(i)].post_commit); };
  std::vector<int> program = kahn_order<Key>(exec, preds, succs, [&](int i) { return Key{post(i), 0, i}; });
  std::vector<int> level(N, 0);  // longest path from the inputs
  const bool parallel = c.opt.executor == Executor::parallel;
  if (parallel) {
    for (int i : program)
      for (int d : preds[size_t(i)]) level[size_t(i)] = std::max(level[size_t(i)], level[size_t(d)] + 1);
    p.order = kahn_order<Key>(exec, preds, succs, [&](int i) { return Key{post(i), level[size_t(i)], i}; });
  } else {
    std::vector<int> greedy = memory_greedy(p, exec, preds, succs);
    MemoryProfile profile(p);
    p.order = profile(greedy).first < profile(program).first ? std::move(greedy) : std::move(program);
  }
  set_order_from(p, std::move(p.order), preds);
  // Waves: runs of positions with the same (post, level); the parallel executor runs each together.
  p.wave_end.clear();
  if (parallel) {
    p.wave_end.resize(p.order.size());
    for (size_t i = p.order.size(); i-- > 0;) {
      const int a = p.order[i];
      const bool same = i + 1 < p.order.size() && level[size_t(a)] == level[size_t(p.order[i + 1])] &&
                        post(a) == post(p.order[i + 1]);
      p.wave_end[i] = same ? p.wave_end[i + 1] : int(i);
    }
  }
}

void set_order(Plan& p, std::vector<int> order) {
  DepResolver res(p);
  set_order_from(p, std::move(order), res.preds());
}

void reorder_for_memory(Plan& p) {
  DepResolver res(p);
  const Adjacency preds = res.preds(), succs = preds.transpose();
  std::vector<int> order = p.order;
  hoist_groups(p, order, preds, succs);
  set_order_from(p, std::move(order), preds);
}

}  // namespace loom
