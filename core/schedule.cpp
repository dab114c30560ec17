// Plan compilation, part 2: the schedule (a topological order chosen to keep
// the peak of live memory low, or by level for the parallel executor), the
// static memory plan (lifetimes over the schedule, in-place reuse, arena
// offsets by several strategies), and the hazard edges that buffer sharing
// adds for the parallel executor.

#include <algorithm>
#include <map>
#include <queue>
#include <set>

#include "core/plan.hpp"

namespace loom {

std::string_view strategy_name(MemoryStrategy s) {
  switch (s) {
    case MemoryStrategy::best: return "best";
    case MemoryStrategy::greedy_by_size: return "greedy_by_size";
    case MemoryStrategy::greedy_by_time: return "greedy_by_time";
    case MemoryStrategy::naive: return "naive";
  }
  return "?";
}

namespace {

bool executable(const PNode& n) {
  return n.alive && (n.kind == NodeKind::kernel || n.kind == NodeKind::feed || n.kind == NodeKind::noop);
}

bool is_shape_only(const PNode& n, size_t i) {
  return n.op && std::find(n.op->shape_only_inputs.begin(), n.op->shape_only_inputs.end(), int(i)) !=
                     n.op->shape_only_inputs.end();
}

/// Executable nodes each node waits for (views and sources resolved through).
struct DepResolver {
  Plan& p;
  std::vector<std::vector<int>> memo;
  std::vector<char> done;
  explicit DepResolver(Plan& plan) : p(plan), memo(plan.nodes.size()), done(plan.nodes.size(), 0) {}

  // The executable nodes that must finish before `id`'s outputs are usable.
  const std::vector<int>& ready_after(int id) {
    if (done[size_t(id)]) return memo[size_t(id)];
    std::vector<int> r;
    const PNode& n = p.nodes[size_t(id)];
    if (executable(n)) {
      r.push_back(id);
    } else {
      for (int v : n.in) append(r, ready_after(p.values[size_t(v)].producer));
      for (int a : n.after) append(r, ready_after(a));
      unique(r);
    }
    done[size_t(id)] = 1;
    memo[size_t(id)] = std::move(r);
    return memo[size_t(id)];
  }
  std::vector<int> deps_of(int id) {
    std::vector<int> r;
    const PNode& n = p.nodes[size_t(id)];
    for (int v : n.in) append(r, ready_after(p.values[size_t(v)].producer));
    for (int a : n.after) append(r, ready_after(a));
    unique(r);
    return r;
  }
  static void append(std::vector<int>& r, const std::vector<int>& xs) { r.insert(r.end(), xs.begin(), xs.end()); }
  static void unique(std::vector<int>& r) {
    std::sort(r.begin(), r.end());
    r.erase(std::unique(r.begin(), r.end()), r.end());
  }
};

/// Which executable nodes write and read each storage (independent of order).
void collect_access(Plan& p) {
  for (auto& s : p.storages) s.writers.clear(), s.readers.clear();
  for (size_t i = 0; i < p.nodes.size(); ++i) {
    const PNode& n = p.nodes[i];
    if (!executable(n)) continue;
    for (int v : n.out) p.storages[size_t(p.values[size_t(v)].storage)].writers.push_back(int(i));
    if (n.workspace >= 0) {  // written and read by its node alone: live for that step
      p.storages[size_t(n.workspace)].writers.push_back(int(i));
      p.storages[size_t(n.workspace)].readers.push_back(int(i));
    }
    for (size_t k = 0; k < n.in.size(); ++k) {
      if (is_shape_only(n, k)) continue;
      auto& rd = p.storages[size_t(p.values[size_t(n.in[k])].storage)].readers;
      if (rd.empty() || rd.back() != int(i)) rd.push_back(int(i));
    }
  }
}

/// Peak of live arena bytes if nodes ran in `order` (no in-place reuse).
size_t peak_for(const Plan& p, const std::vector<int>& order) {
  std::vector<int> pos(p.nodes.size(), -1);
  for (size_t i = 0; i < order.size(); ++i) pos[size_t(order[i])] = int(i);
  std::vector<int64_t> delta(order.size() + 2, 0);
  for (const PStorage& s : p.storages) {
    if (s.kind != StorageKind::arena || s.writers.empty()) continue;
    int f = INT_MAX, l = -1;
    for (int w : s.writers) f = std::min(f, pos[size_t(w)]), l = std::max(l, pos[size_t(w)]);
    for (int r : s.readers) l = std::max(l, pos[size_t(r)]);
    if (s.pinned) l = int(order.size());
    delta[size_t(f)] += int64_t(s.bytes);
    delta[size_t(l) + 1] -= int64_t(s.bytes);
  }
  int64_t cur = 0, peak = 0;
  for (int64_t d : delta) peak = std::max(peak, cur += d);
  return size_t(peak);
}

}  // namespace

void schedule_plan(Plan& p, const SessionOptions& o) {
  collect_access(p);
  // The barrier: with atomic updates every assign waits for all other work.
  bool any_post = false;
  for (const PNode& n : p.nodes) any_post |= executable(n) && n.post_commit;
  if (any_post) {
    PNode barrier;
    barrier.name = "barrier/updates";
    barrier.kind = NodeKind::noop;
    int bid = int(p.nodes.size());
    for (size_t i = 0; i < p.nodes.size(); ++i)
      if (executable(p.nodes[i]) && !p.nodes[i].post_commit) barrier.after.push_back(int(i));
    for (auto& n : p.nodes)
      if (executable(n) && n.post_commit && n.writes_var) n.after.push_back(bid);
    p.nodes.push_back(std::move(barrier));
  }

  DepResolver res(p);
  const size_t N = p.nodes.size();
  std::vector<std::vector<int>> preds(N), succs(N);
  std::vector<int> exec;
  for (size_t i = 0; i < N; ++i) {
    if (!executable(p.nodes[i])) continue;
    exec.push_back(int(i));
    preds[i] = res.deps_of(int(i));
    for (int d : preds[i]) succs[size_t(d)].push_back(int(i));
  }
  // Longest-path level (for the parallel executor's wavefront order).
  std::vector<int> level(N, 0);
  for (int i : exec)
    for (int d : preds[size_t(i)]) level[size_t(i)] = std::max(level[size_t(i)], level[size_t(d)] + 1);

  // Kahn's algorithm with a priority; post-commit nodes always come last.
  auto kahn = [&](auto&& priority) {
    std::vector<int> indeg(N, 0), out;
    using Item = std::pair<std::tuple<int, int64_t, int>, int>;
    std::priority_queue<Item, std::vector<Item>, std::greater<>> ready;
    for (int i : exec) {
      indeg[size_t(i)] = int(preds[size_t(i)].size());
      if (!indeg[size_t(i)]) ready.push({priority(i), i});
    }
    while (!ready.empty()) {
      auto [key, i] = ready.top();
      ready.pop();
      auto now = priority(i);
      if (now != key) {  // lazily refreshed score (it only improves as other nodes run)
        ready.push({now, i});
        continue;
      }
      out.push_back(i);
      for (int s : succs[size_t(i)])
        if (--indeg[size_t(s)] == 0) ready.push({priority(s), s});
    }
    LOOM_ASSERT(out.size() == exec.size(), "cycle in the plan's dependencies");
    return out;
  };
  auto post = [&](int i) { return int(p.nodes[size_t(i)].post_commit); };

  std::vector<int> order;
  if (o.executor == Executor::parallel) {
    order = kahn([&](int i) { return std::tuple<int, int64_t, int>{post(i), level[size_t(i)], i}; });
  } else {
    std::vector<int> program = kahn([&](int i) { return std::tuple<int, int64_t, int>{post(i), 0, i}; });
    // Memory-greedy: prefer the node that frees the most bytes net of what it allocates.
    std::vector<int> pending(p.storages.size(), 0);
    for (size_t s = 0; s < p.storages.size(); ++s) pending[s] = int(p.storages[s].readers.size());
    std::vector<char> scheduled(N, 0);
    auto score = [&](int i) {
      const PNode& n = p.nodes[size_t(i)];
      int64_t d = 0;
      for (int v : n.out) {
        const PStorage& s = p.storages[size_t(p.values[size_t(v)].storage)];
        if (s.kind == StorageKind::arena) d += int64_t(s.bytes);
      }
      std::vector<int> seen;
      for (size_t k = 0; k < n.in.size(); ++k) {
        if (is_shape_only(n, k)) continue;
        int s = p.values[size_t(n.in[k])].storage;
        const PStorage& st = p.storages[size_t(s)];
        if (st.kind != StorageKind::arena || st.pinned || std::count(seen.begin(), seen.end(), s)) continue;
        seen.push_back(s);
        if (pending[size_t(s)] == 1) d -= int64_t(st.bytes);
      }
      return std::tuple<int, int64_t, int>{post(i), d, i};
    };
    std::vector<int> greedy;
    {
      std::vector<int> indeg(N, 0);
      using Item = std::pair<std::tuple<int, int64_t, int>, int>;
      std::priority_queue<Item, std::vector<Item>, std::greater<>> ready;
      for (int i : exec) {
        indeg[size_t(i)] = int(preds[size_t(i)].size());
        if (!indeg[size_t(i)]) ready.push({score(i), i});
      }
      while (!ready.empty()) {
        auto [key, i] = ready.top();
        ready.pop();
        auto now = score(i);
        if (now != key) {
          ready.push({now, i});
          continue;
        }
        greedy.push_back(i);
        const PNode& n = p.nodes[size_t(i)];
        std::vector<int> seen;
        for (size_t k = 0; k < n.in.size(); ++k) {
          if (is_shape_only(n, k)) continue;
          int s = p.values[size_t(n.in[k])].storage;
          if (std::count(seen.begin(), seen.end(), s)) continue;
          seen.push_back(s);
          --pending[size_t(s)];
        }
        for (int s : succs[size_t(i)])
          if (--indeg[size_t(s)] == 0) ready.push({score(s), s});
      }
    }
    order = peak_for(p, greedy) < peak_for(p, program) ? greedy : program;
  }

  p.order = order;
  for (auto& n : p.nodes) n.pos = -1;
  for (size_t i = 0; i < order.size(); ++i) p.nodes[size_t(order[i])].pos = int(i);
  // Waves: runs of positions with the same (post, level); independent nodes the parallel executor runs together.
  p.wave_end.clear();
  if (o.executor == Executor::parallel) {
    p.wave_end.resize(order.size());
    for (size_t i = order.size(); i-- > 0;) {
      const bool same = i + 1 < order.size() && level[size_t(order[i])] == level[size_t(order[i + 1])] &&
                        post(order[i]) == post(order[i + 1]);
      p.wave_end[i] = same ? p.wave_end[i + 1] : int(i);
    }
  }
  p.deps.assign(order.size(), {});
  for (size_t i = 0; i < order.size(); ++i)
    for (int d : preds[size_t(order[i])]) p.deps[i].push_back(p.nodes[size_t(d)].pos);
}

namespace {

struct Item {
  int storage;
  size_t bytes;
  int first, last;
};

size_t place_naive(std::vector<Item>& items, std::vector<size_t>& off) {
  size_t top = 0;
  for (size_t i = 0; i < items.size(); ++i) off[i] = top, top += items[i].bytes;
  return top;
}

// Largest first; each goes into the smallest gap between time-overlapping placed items.
size_t place_by_size(std::vector<Item>& items, std::vector<size_t>& off) {
  std::vector<size_t> idx(items.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) {
    return items[a].bytes != items[b].bytes ? items[a].bytes > items[b].bytes : items[a].first < items[b].first;
  });
  std::vector<size_t> placed;  // sorted by offset
  size_t top = 0;
  std::vector<std::pair<size_t, size_t>> busy;
  for (size_t i : idx) {
    const Item& it = items[i];
    busy.clear();
    for (size_t j : placed)
      if (items[j].first <= it.last && it.first <= items[j].last) busy.push_back({off[j], off[j] + items[j].bytes});
    std::sort(busy.begin(), busy.end());
    size_t prev = 0, best = SIZE_MAX, best_gap = SIZE_MAX;
    for (auto [a, b] : busy) {
      if (a > prev && a - prev >= it.bytes && a - prev < best_gap) best = prev, best_gap = a - prev;
      prev = std::max(prev, b);
    }
    off[i] = best != SIZE_MAX ? best : prev;
    top = std::max(top, off[i] + it.bytes);
    placed.push_back(i);
  }
  return top;
}

// Online allocation in schedule order with best fit and coalescing free blocks.
size_t place_by_time(std::vector<Item>& items, std::vector<size_t>& off) {
  std::vector<size_t> by_first(items.size()), by_last(items.size());
  for (size_t i = 0; i < items.size(); ++i) by_first[i] = by_last[i] = i;
  std::sort(by_first.begin(), by_first.end(), [&](size_t a, size_t b) {
    return items[a].first != items[b].first ? items[a].first < items[b].first : items[a].bytes > items[b].bytes;
  });
  std::sort(by_last.begin(), by_last.end(), [&](size_t a, size_t b) { return items[a].last < items[b].last; });
  std::map<size_t, size_t> free_by_off;                  // offset -> size
  std::multimap<size_t, size_t> free_by_size;            // size -> offset
  size_t top = 0, used_top = 0;
  auto erase_free = [&](std::map<size_t, size_t>::iterator it) {
    auto range = free_by_size.equal_range(it->second);
    for (auto s = range.first; s != range.second; ++s)
      if (s->second == it->first) {
        free_by_size.erase(s);
        break;
      }
    return free_by_off.erase(it);
  };
  auto release = [&](size_t o, size_t n) {
    auto next = free_by_off.lower_bound(o);
    if (next != free_by_off.begin()) {
      auto prev = std::prev(next);
      if (prev->first + prev->second == o) {
        o = prev->first, n += prev->second;
        erase_free(prev);
      }
    }
    next = free_by_off.lower_bound(o);
    if (next != free_by_off.end() && o + n == next->first) {
      n += next->second;
      erase_free(next);
    }
    if (o + n == used_top) {  // give it back to the top
      used_top = o;
      return;
    }
    free_by_off[o] = n;
    free_by_size.emplace(n, o);
  };
  size_t li = 0;
  for (size_t i : by_first) {
    const Item& it = items[i];
    while (li < by_last.size() && items[by_last[li]].last < it.first) {
      size_t j = by_last[li++];
      release(off[j], items[j].bytes);
    }
    auto fit = free_by_size.lower_bound(it.bytes);
    if (fit != free_by_size.end()) {
      size_t o = fit->second, n = fit->first;
      free_by_size.erase(fit);
      free_by_off.erase(o);
      off[i] = o;
      if (n > it.bytes) {
        free_by_off[o + it.bytes] = n - it.bytes;
        free_by_size.emplace(n - it.bytes, o + it.bytes);
      }
    } else {
      off[i] = used_top;
      used_top += it.bytes;
    }
    top = std::max(top, used_top);
  }
  return top;
}

void add_edge(Plan& p, int from_node, int to_node) {
  int a = p.nodes[size_t(from_node)].pos, b = p.nodes[size_t(to_node)].pos;
  if (a < 0 || b < 0 || a == b) return;
  LOOM_ASSERT(a < b, "hazard edge against the schedule");
  p.deps[size_t(b)].push_back(a);
}

}  // namespace

void plan_memory(Plan& p, const SessionOptions& o) {
  collect_access(p);
  const int end = int(p.order.size());
  for (PStorage& s : p.storages) {
    if (s.kind != StorageKind::arena || s.writers.empty()) continue;
    s.first = INT_MAX, s.last = -1;
    for (int w : s.writers) s.first = std::min(s.first, p.nodes[size_t(w)].pos), s.last = std::max(s.last, p.nodes[size_t(w)].pos);
    for (int r : s.readers) s.last = std::max(s.last, p.nodes[size_t(r)].pos);
    if (s.pinned) s.last = end;
  }

  // In-place: an element-wise output takes over an input's buffer when that
  // input dies at this node and covers its whole buffer with the same layout.
  // cur_readers[s]: the nodes that read storage s's current contents so far.
  std::vector<std::vector<int>> cur_readers(p.storages.size());
  std::vector<std::vector<int>> values_in(p.storages.size());
  for (size_t v = 0; v < p.values.size(); ++v)
    if (p.values[v].storage >= 0) values_in[size_t(p.values[v].storage)].push_back(int(v));
  for (int id : p.order) {
    PNode& n = p.nodes[size_t(id)];
    for (size_t k = 0; k < n.in.size(); ++k) {
      if (is_shape_only(n, k)) continue;
      auto& cur = cur_readers[size_t(p.values[size_t(n.in[k])].storage)];
      if (cur.empty() || cur.back() != id) cur.push_back(id);
    }
    if (o.memory == MemoryStrategy::naive || n.kind != NodeKind::kernel || !n.op || !n.op->inplace || n.out.size() != 1)
      continue;
    PValue& out = p.values[size_t(n.out[0])];
    PStorage& os = p.storages[size_t(out.storage)];
    if (os.kind != StorageKind::arena || os.pinned) continue;
    for (size_t k = 0; k < n.in.size(); ++k) {
      const PValue& in = p.values[size_t(n.in[k])];
      PStorage& is = p.storages[size_t(in.storage)];
      if (is.kind != StorageKind::arena || is.pinned || is.merged || is.last != n.pos || is.bytes != os.bytes ||
          in.type.shape != out.type.shape || dtype_size(in.type.dtype) != dtype_size(out.type.dtype) ||
          in.layout.offset != 0 || !in.layout.is_compact())
        continue;
      bool clash = false;  // another input viewing the same buffer differently
      for (size_t j = 0; j < n.in.size(); ++j) {
        const PValue& w = p.values[size_t(n.in[j])];
        clash |= j != k && w.storage == in.storage &&
                 !(w.layout.strides == in.layout.strides && w.layout.offset == 0 && w.type.shape == in.type.shape);
      }
      if (clash) continue;
      // Readers of the old contents must finish before this node overwrites them.
      const int keep = in.storage, old = out.storage;
      for (int r : cur_readers[size_t(keep)])
        if (r != id) add_edge(p, r, id);
      cur_readers[size_t(keep)].clear();
      for (int v : values_in[size_t(old)]) p.values[size_t(v)].storage = keep;
      values_in[size_t(keep)].insert(values_in[size_t(keep)].end(), values_in[size_t(old)].begin(),
                                     values_in[size_t(old)].end());
      values_in[size_t(old)].clear();
      PStorage& merged = p.storages[size_t(old)];
      is.last = std::max(is.last, merged.last);
      is.writers.insert(is.writers.end(), merged.writers.begin(), merged.writers.end());
      is.readers.insert(is.readers.end(), merged.readers.begin(), merged.readers.end());
      merged.merged = true;
      merged.writers.clear();
      merged.readers.clear();
      break;
    }
  }

  // For the parallel executor a buffer stays reserved to the end of its last
  // reader's wave: reusing it within the wave would add a hazard edge between
  // two nodes that could otherwise run at the same time (siblings serialized).
  auto reserved_until = [&](int last) { return p.wave_end.empty() || last >= end ? last : p.wave_end[size_t(last)]; };
  std::vector<Item> items;
  for (size_t i = 0; i < p.storages.size(); ++i) {
    const PStorage& s = p.storages[i];
    if (s.kind == StorageKind::arena && !s.merged && !s.writers.empty())
      items.push_back({int(i), s.bytes, s.first, reserved_until(s.last)});
  }
  // Lower bound: the most bytes live at once over this schedule.
  {
    std::vector<int64_t> delta(size_t(end) + 2, 0);
    for (const Item& it : items) delta[size_t(it.first)] += int64_t(it.bytes), delta[size_t(it.last) + 1] -= int64_t(it.bytes);
    int64_t cur = 0, peak = 0;
    for (int64_t d : delta) peak = std::max(peak, cur += d);
    p.stats.lower_bound_bytes = size_t(peak);
  }

  std::vector<size_t> off(items.size()), best_off;
  size_t best = SIZE_MAX;
  auto attempt = [&](MemoryStrategy s) {
    size_t bytes = s == MemoryStrategy::naive          ? place_naive(items, off)
                   : s == MemoryStrategy::greedy_by_size ? place_by_size(items, off)
                                                         : place_by_time(items, off);
    p.stats.strategy_arenas.emplace_back(std::string(strategy_name(s)), bytes);
    if (bytes < best) best = bytes, best_off = off, p.stats.memory_strategy = std::string(strategy_name(s));
  };
  if (o.memory == MemoryStrategy::best) {
    attempt(MemoryStrategy::greedy_by_time);
    if (items.size() <= 4000) attempt(MemoryStrategy::greedy_by_size);  // quadratic: small plans only
  } else {
    attempt(o.memory);
  }
  p.stats.arena_bytes = best;
  for (size_t i = 0; i < items.size(); ++i) p.storages[size_t(items[i].storage)].offset = best_off[i];

  // Hazards: a buffer written over bytes an earlier buffer used waits for that
  // buffer's readers and writers (needed by the parallel executor).
  std::vector<size_t> by_first(items.size());
  for (size_t i = 0; i < items.size(); ++i) by_first[i] = i;
  std::sort(by_first.begin(), by_first.end(), [&](size_t a, size_t b) { return items[a].first < items[b].first; });
  std::map<size_t, std::pair<size_t, int>> paint;  // start -> (end, storage)
  for (size_t i : by_first) {
    const PStorage& s2 = p.storages[size_t(items[i].storage)];
    size_t lo = s2.offset, hi = s2.offset + s2.bytes;
    auto it = paint.upper_bound(lo);
    if (it != paint.begin()) --it;
    std::vector<int> prev;
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
    paint[lo] = {hi, items[i].storage};
    // The last writer and the readers of the last contents suffice: earlier
    // accesses of that buffer already happen-before its last write.
    int w = s2.writers.front();
    for (int s1 : prev) {
      const PStorage& a = p.storages[size_t(s1)];
      for (int r : cur_readers[size_t(s1)]) add_edge(p, r, w);
      add_edge(p, a.writers.back(), w);
    }
  }
  p.succ.assign(p.order.size(), {});
  for (size_t i = 0; i < p.deps.size(); ++i) {
    auto& d = p.deps[i];
    std::sort(d.begin(), d.end());
    d.erase(std::unique(d.begin(), d.end()), d.end());
    for (int x : d) p.succ[size_t(x)].push_back(int(i));
  }
}

}  // namespace loom
