// hazards
//   reads:       arena offsets and lifetimes, storage writers and readers,
//                the schedule, Plan::deps (data, control, in-place edges)
//   establishes: a buffer written over bytes an earlier buffer used waits for
//                that buffer's last writer and the readers of its last
//                contents (earlier accesses already happen-before its last
//                write), so the parallel executor never races on shared
//                memory; collective nodes run one after another in schedule
//                order (every rank issues them in one order, whatever thread
//                runs them); then Plan::deps sorted and unique, and Plan::succ.

#include <algorithm>
#include <map>

#include "core/passes/passes.hpp"

namespace loom {

namespace {

/// Storages whose bytes [lo, hi) were last painted before (into prev), repainted as `storage`.
void repaint(std::map<size_t, std::pair<size_t, int>>& paint, size_t lo, size_t hi, int storage, std::vector<int>& prev) {
  prev.clear();
  auto it = paint.upper_bound(lo);
  if (it != paint.begin()) --it;
  while (it != paint.end() && it->first < hi) {
    auto [start, seg] = *it;
    if (seg.first <= lo) {
      ++it;
      continue;
    }
    if (std::find(prev.begin(), prev.end(), seg.second) == prev.end()) prev.push_back(seg.second);
    it = paint.erase(it);
    if (start < lo) paint[start] = {lo, seg.second};
    if (seg.first > hi) paint[hi] = {seg.first, seg.second};
  }
  paint[lo] = {hi, storage};
}

}  // namespace

void hazards(Compilation& c) {
  Plan& p = c.plan;
  // Storages by first write (ties: by id), and positions by node: small
  // arrays, where reading the large PStorage and PNode records misses cache.
  std::vector<std::pair<int, int>> by_first;
  for (size_t i = 0; i < p.storages.size(); ++i) {
    const PStorage& s = p.storages[i];
    if (s.kind == StorageKind::arena && !s.merged && !s.writers.empty()) by_first.push_back({s.first, int(i)});
  }
  std::sort(by_first.begin(), by_first.end());
  std::vector<int> pos_of(p.nodes.size());
  for (size_t i = 0; i < p.nodes.size(); ++i) pos_of[i] = p.nodes[i].pos;
  auto pos = [&](int node) { return pos_of[size_t(node)]; };
  std::map<size_t, std::pair<size_t, int>> paint;  // start -> (end, storage)
  std::vector<int> prev;
  for (auto [first, s] : by_first) {
    const PStorage& s2 = p.storages[size_t(s)];
    const int w = pos(s2.writers.front());
    repaint(paint, s2.offset, s2.offset + s2.bytes, s, prev);
    for (int s1 : prev) {
      const PStorage& a = p.storages[size_t(s1)];
      int last_write = -1;
      for (int x : a.writers) last_write = std::max(last_write, pos(x));
      p.deps[size_t(w)].push_back(last_write);
      for (int r : a.readers)
        if (pos(r) > last_write) p.deps[size_t(w)].push_back(pos(r));
    }
  }
  int last_collective = -1;
  for (size_t i = 0; i < p.order.size(); ++i) {
    if (!p.nodes[size_t(p.order[i])].op || !p.nodes[size_t(p.order[i])].op->collective) continue;
    if (last_collective >= 0) p.deps[i].push_back(last_collective);
    last_collective = int(i);
  }
  p.succ.assign(p.order.size(), {});
  for (size_t i = 0; i < p.deps.size(); ++i) {
    auto& d = p.deps[i];
    std::erase(d, int(i));
    std::sort(d.begin(), d.end());
    d.erase(std::unique(d.begin(), d.end()), d.end());
    LOOM_ASSERT(d.empty() || d.back() < int(i), "hazard edge against the schedule");
    for (int x : d) p.succ[size_t(x)].push_back(int(i));
  }
}

}  // namespace loom
