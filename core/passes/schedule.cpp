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
#include <climits>
#include <span>
#include <tuple>
#include <utility>
#include <vector>

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

/// A plan's arena storages, flat (writers, then readers, per storage), so that
/// the many orders hoist_groups tries are measured without walking the plan
/// or allocating.
struct ArenaStorages {
  struct Storage {
    int64_t bytes;
    int begin, readers, end;  // nodes[begin, readers): writers; [readers, end): readers
    bool pinned;
  };
  std::vector<Storage> list;
  std::vector<int> nodes;

  explicit ArenaStorages(const Plan& p) {
    for (const PStorage& s : p.storages) {
      if (s.kind != StorageKind::arena || s.writers.empty()) continue;
      const int begin = int(nodes.size());
      nodes.insert(nodes.end(), s.writers.begin(), s.writers.end());
      const int readers = int(nodes.size());
      nodes.insert(nodes.end(), s.readers.begin(), s.readers.end());
      list.push_back({int64_t(s.bytes), begin, readers, int(nodes.size()), s.pinned});
    }
  }
  /// The positions where storage s is first written and last used (`end` if pinned);
  /// position(node) gives each node's.
  template <class Position>
  std::pair<int, int> span(const Storage& s, int end, Position&& position) const {
    int f = INT_MAX, l = -1;
    for (int k = s.begin; k < s.readers; ++k) f = std::min(f, position(nodes[size_t(k)]));
    for (int k = s.begin; k < s.end; ++k) l = std::max(l, position(nodes[size_t(k)]));
    return {f, s.pinned ? end : l};
  }
};

/// Peak and sum over positions of live arena bytes (no in-place reuse) of an
/// order of a plan's executable nodes, kept up to date as hoist_groups moves
/// groups of nodes up. A move changes positions only between its anchor and
/// its last node, so a try measures that window and the storages its nodes
/// touch, not the whole order (live bytes elsewhere stay as they are).
class OrderProfile {
 public:
  using Measure = std::pair<int64_t, int64_t>;  // (peak, sum over positions)

  OrderProfile(const Plan& p, const std::vector<int>& order)
      : st_(p), pos_(p.nodes.size(), -1), new_pos_(p.nodes.size(), -1), seen_(st_.list.size(), 0) {
    std::vector<int> count(p.nodes.size() + 1, 0);  // per node, the storages it writes or reads
    for (size_t i = 0; i < st_.list.size(); ++i)
      for (int k = st_.list[i].begin; k < st_.list[i].end; ++k) ++count[size_t(st_.nodes[size_t(k)]) + 1];
    for (size_t n = 1; n < count.size(); ++n) count[n] += count[n - 1];
    touch_start_ = count;
    touch_.resize(size_t(count.back()));
    for (size_t i = 0; i < st_.list.size(); ++i)
      for (int k = st_.list[i].begin; k < st_.list[i].end; ++k)
        touch_[size_t(count[size_t(st_.nodes[size_t(k)])]++)] = int(i);
    reset(order);
  }

  Measure current() const { return {peak_, prefix_sum_.back()}; }

  /// Takes `order` as the current order.
  void reset(const std::vector<int>& order) {
    order_ = order;
    const int end = int(order.size());
    for (int i = 0; i < end; ++i) pos_[size_t(order[size_t(i)])] = i;
    delta_.assign(size_t(end) + 2, 0);
    ends_at_.assign(size_t(end) + 1, 0);
    for (const ArenaStorages::Storage& s : st_.list) {
      const auto [f, l] = st_.span(s, end, [&](int n) { return pos_[size_t(n)]; });
      delta_[size_t(f)] += s.bytes, delta_[size_t(l) + 1] -= s.bytes, ends_at_[size_t(l)] += s.bytes;
    }
    live_.assign(size_t(end) + 1, 0), prefix_max_ = live_, suffix_max_ = live_;
    prefix_sum_.assign(size_t(end) + 2, 0);
    int64_t cur = 0;
    for (int i = 0; i <= end; ++i) {
      live_[size_t(i)] = cur += delta_[size_t(i)];
      prefix_max_[size_t(i)] = std::max(i ? prefix_max_[size_t(i) - 1] : 0, cur);
      prefix_sum_[size_t(i) + 1] = prefix_sum_[size_t(i)] + cur;
    }
    for (int i = end; i >= 0; --i)
      suffix_max_[size_t(i)] = std::max(i < end ? suffix_max_[size_t(i) + 1] : 0, live_[size_t(i)]);
    peak_ = prefix_max_.back();
  }

  /// The measure if `group` (in order, all at positions in (a, m]) ran right
  /// after position a (-1: first), the other nodes of (a, m] after it.
  Measure try_move(const std::vector<int>& group, const std::vector<int>& in_group, int a, int m) {
    int next = a + 1;
    for (int g : group) new_pos_[size_t(g)] = next++;
    for (int k = a + 1; k <= m; ++k)
      if (!in_group[size_t(order_[size_t(k)])]) new_pos_[size_t(order_[size_t(k)])] = next++;
    ++stamp_;
    const int end = int(order_.size());
    auto position = [&](int n) {
      return pos_[size_t(n)] > a && pos_[size_t(n)] <= m ? new_pos_[size_t(n)] : pos_[size_t(n)];
    };
    // Live bytes in the window: those of storages alive across it, plus what
    // the storages its nodes touch (with their new first and last positions) add.
    int64_t base = a >= 0 ? live_[size_t(a)] - ends_at_[size_t(a)] : 0;
    window_.assign(size_t(m - a) + 1, 0);
    for (int k = a + 1; k <= m; ++k)
      for (int t = touch_start_[size_t(order_[size_t(k)])]; t < touch_start_[size_t(order_[size_t(k)]) + 1]; ++t) {
        const int i = touch_[size_t(t)];
        if (seen_[size_t(i)] == stamp_) continue;
        seen_[size_t(i)] = stamp_;
        const ArenaStorages::Storage& s = st_.list[size_t(i)];
        const auto [f, l] = st_.span(s, end, position);
        if (f <= a) base -= s.bytes;  // alive at a: counted in live_[a]
        const int lo = std::max(f, a + 1), hi = std::min(l, m);
        if (lo <= hi) window_[size_t(lo - a - 1)] += s.bytes, window_[size_t(hi - a)] -= s.bytes;
      }
    int64_t cur = base, peak = std::max(a >= 0 ? prefix_max_[size_t(a)] : 0, suffix_max_[size_t(m) + 1]), sum = 0;
    for (int j = 0; j < m - a; ++j) peak = std::max(peak, cur += window_[size_t(j)]), sum += cur;
    return {peak, prefix_sum_.back() - (prefix_sum_[size_t(m) + 1] - prefix_sum_[size_t(a) + 1]) + sum};
  }

 private:
  ArenaStorages st_;
  std::vector<int> touch_start_, touch_;  // per node: the storages it writes or reads
  std::vector<int> order_, pos_, new_pos_, seen_;
  int stamp_ = 0;
  std::vector<int64_t> delta_, live_, ends_at_, prefix_max_, suffix_max_, prefix_sum_, window_;
  int64_t peak_ = 0;
};

/// Moves a node, with the producers only it reads, to right after their other
/// predecessors, where that lowers the live bytes of `order` (the peak, or at
/// an equal peak their sum over positions). The memory greedy looks one node
/// ahead: it runs a weight gradient (which allocates) late, and so the update
/// that frees it, holding the activation the gradient read all along. Nodes
/// are tried in schedule order, or last first (`backwards`); returns the
/// measure of the order reached.
OrderProfile::Measure hoist_groups(const Plan& p, std::vector<int>& order, const Adjacency& preds,
                                   const Adjacency& succs, bool backwards) {
  // The number of tries is bounded so that the rewrites a budgeted compile
  // measures stay near-linear (each try once measured the whole order).
  const size_t max_tries = std::max<size_t>(16, 400000 / (p.nodes.size() + p.storages.size() + 1));
  std::vector<int> pos(p.nodes.size(), -1), in_group(p.nodes.size(), 0);
  auto index = [&] {
    for (size_t i = 0; i < order.size(); ++i) pos[size_t(order[i])] = int(i);
  };
  index();
  OrderProfile profile(p, order);
  auto best = profile.current();
  size_t tries = 0;
  std::vector<int> visit(order);
  if (backwards) std::reverse(visit.begin(), visit.end());
  for (int u : visit) {
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
    int anchor = -1, first = INT_MAX, last = -1;  // the last outside predecessor; the group's positions
    for (int g : group) {
      first = std::min(first, pos[size_t(g)]), last = std::max(last, pos[size_t(g)]);
      for (int d : preds[size_t(g)])
        if (!in_group[size_t(d)] && (anchor < 0 || pos[size_t(d)] > pos[size_t(anchor)])) anchor = d;
    }
    const int a = anchor < 0 ? -1 : pos[size_t(anchor)];
    if (a + 1 < first) {
      std::sort(group.begin(), group.end(), [&](int x, int y) { return pos[size_t(x)] < pos[size_t(y)]; });
      ++tries;
      const auto now = profile.try_move(group, in_group, a, last);
      if (now < best) {
        std::vector<int> moved(order.begin(), order.begin() + (a + 1));
        moved.insert(moved.end(), group.begin(), group.end());
        for (size_t k = size_t(a + 1); k < order.size(); ++k)
          if (!in_group[size_t(order[k])]) moved.push_back(order[k]);
        order = std::move(moved), best = now;
        for (int g : group) in_group[size_t(g)] = 0;
        profile.reset(order);
        index();
        continue;
      }
    }
    for (int g : group) in_group[size_t(g)] = 0;
  }
  return best;
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
    OrderProfile profile(p, greedy);  // the lower peak of live bytes (no in-place reuse) of the two
    const int64_t greedy_peak = profile.current().first;
    profile.reset(program);
    p.order = greedy_peak < profile.current().first ? std::move(greedy) : std::move(program);
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

void reorder_for_memory(Plan& p, bool both_ways) {
  DepResolver res(p);
  const Adjacency preds = res.preds(), succs = preds.transpose();
  std::vector<int> order = p.order;
  const auto measure = hoist_groups(p, order, preds, succs, false);
  if (both_ways) {
    std::vector<int> backward = p.order;
    if (hoist_groups(p, backward, preds, succs, true) < measure) order = std::move(backward);
  }
  set_order_from(p, std::move(order), preds);
}

}  // namespace loom
