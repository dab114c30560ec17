// placement
//   reads:       the lifetimes of the arena storages (not merged, written)
//   establishes: PStorage::offset, the arena's size and its lower bound (the
//                most bytes live at once), the strategy chosen. place() is a
//                pure function from lifetimes to offsets; `best` tries
//                greedy_by_time, greedy_by_size and greedy_by_area and keeps
//                the smallest arena, and where that misses memory_budget
//                while the live bytes meet it, four more orders (place_best).
//                For the parallel executor a buffer stays reserved to the end
//                of its last reader's wave: reusing it within the wave would
//                add a hazard edge between two nodes that could otherwise run
//                at the same time.
//
// greedy_by_time is O(n log n). greedy_by_size and greedy_by_area look at
// every placed buffer live at the same time as the one they place: O(pairs of
// overlapping lifetimes), quadratic when many buffers live long (a DAG
// reading far back). `best` counts those pairs first (O(n log n)) and skips
// them above kSizePairBudget, so compile time stays near-linear on any graph.
// Size first is TFLite's greedy by size; area (bytes times steps live) first
// puts the long-lived large buffers low, where the short ones would fragment
// them: a recomputing ResNet9 plan whose live bytes peak at 1,290,944 took
// 1,393,088 by size and 1,352,256 by area.

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <utility>

#include "core/passes/passes.hpp"

namespace loom {

namespace {

constexpr int64_t kSizePairBudget = 4'000'000;

/// Pairs of items whose lifetimes overlap (a Fenwick tree over last positions).
int64_t overlapping_pairs(std::span<const Lifetime> items) {
  int end = 1;
  for (const Lifetime& it : items) end = std::max(end, it.last + 1);
  std::vector<size_t> idx(items.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return items[a].first < items[b].first; });
  std::vector<int64_t> tree(size_t(end) + 1, 0);  // count of seen items by last position
  int64_t seen = 0, pairs = 0;
  for (size_t i : idx) {
    int64_t ended = 0;  // seen items with last < first
    for (int x = items[i].first; x > 0; x -= x & -x) ended += tree[size_t(x)];
    pairs += seen - ended;
    for (int x = items[i].last + 1; x <= end; x += x & -x) ++tree[size_t(x)];
    ++seen;
  }
  return pairs;
}

size_t place_naive(std::span<const Lifetime> items, std::vector<size_t>& off) {
  size_t top = 0;
  for (size_t i = 0; i < items.size(); ++i) off[i] = top, top += items[i].bytes;
  return top;
}

/// Placed items by first position, with the latest `last` of each subtree,
/// so the items live during [f, l] are found in time proportional to their number.
class LiveIndex {
 public:
  explicit LiveIndex(int positions) : size_(1) {
    while (size_ < positions) size_ *= 2;
    max_last_.assign(size_t(2 * size_), -1);
    bucket_.resize(size_t(size_));
  }
  void insert(int item, int first, int last) {
    bucket_[size_t(first)].push_back({item, last});
    for (int x = first + size_; x >= 1; x /= 2) max_last_[size_t(x)] = std::max(max_last_[size_t(x)], last);
  }
  /// Calls f(item) for each placed item whose lifetime meets [first, last].
  template <class F>
  void live_during(int first, int last, F&& f) const {
    visit(1, 0, size_ - 1, first, last, f);
  }

 private:
  template <class F>
  void visit(int x, int lo, int hi, int first, int last, F& f) const {
    if (lo > last || max_last_[size_t(x)] < first) return;
    if (lo == hi) {
      for (auto [item, l] : bucket_[size_t(lo)])
        if (l >= first) f(item);
      return;
    }
    const int mid = (lo + hi) / 2;
    visit(2 * x, lo, mid, first, last, f);
    visit(2 * x + 1, mid + 1, hi, first, last, f);
  }
  int size_;
  std::vector<int> max_last_;
  std::vector<std::vector<std::pair<int, int>>> bucket_;  // per first position: (item, last)
};

/// In the order of `key` (largest first, then earliest), each item goes into
/// the smallest gap between the placed items live at the same time (or on
/// top of them).
template <class Key>
size_t place_by(std::span<const Lifetime> items, std::vector<size_t>& off, Key key) {
  std::vector<size_t> idx(items.size());
  int positions = 1;
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = i, positions = std::max(positions, items[i].last + 1);
  std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) {
    const auto ka = key(items[a]), kb = key(items[b]);
    return ka != kb ? ka > kb : items[a].first < items[b].first;
  });
  LiveIndex live(positions);
  size_t top = 0;
  std::vector<std::pair<size_t, size_t>> busy;
  for (size_t i : idx) {
    const Lifetime& it = items[i];
    busy.clear();
    live.live_during(it.first, it.last, [&](int j) { busy.push_back({off[size_t(j)], off[size_t(j)] + items[size_t(j)].bytes}); });
    std::sort(busy.begin(), busy.end());
    size_t prev = 0, best = SIZE_MAX, best_gap = SIZE_MAX;
    for (auto [a, b] : busy) {
      if (a > prev && a - prev >= it.bytes && a - prev < best_gap) best = prev, best_gap = a - prev;
      prev = std::max(prev, b);
    }
    off[i] = best != SIZE_MAX ? best : prev;
    top = std::max(top, off[i] + it.bytes);
    live.insert(int(i), it.first, it.last);
  }
  return top;
}

/// Free blocks of an arena, by offset and by (size, offset), coalescing on
/// release. Blocks of one size are many in uniform graphs: keyed by (size,
/// offset), each is found in log time; best fit takes the lowest offset among
/// equal sizes.
struct FreeList {
  std::map<size_t, size_t> by_off;              // offset -> size
  std::set<std::pair<size_t, size_t>> by_size;  // (size, offset)
  size_t used_top = 0;

  void erase(std::map<size_t, size_t>::iterator it) {
    by_size.erase({it->second, it->first});
    by_off.erase(it);
  }
  void add(size_t o, size_t n) {
    if (o + n == used_top) {  // back to the top
      used_top = o;
      return;
    }
    by_off[o] = n;
    by_size.emplace(n, o);
  }
  void release(size_t o, size_t n) {
    auto next = by_off.lower_bound(o);
    if (next != by_off.begin() && std::prev(next)->first + std::prev(next)->second == o) {
      auto prev = std::prev(next);
      o = prev->first, n += prev->second;
      erase(prev);
    }
    next = by_off.lower_bound(o);
    if (next != by_off.end() && o + n == next->first) {
      n += next->second;
      erase(next);
    }
    add(o, n);
  }
  /// Best fit, else on top.
  size_t take(size_t bytes) {
    auto fit = by_size.lower_bound({bytes, 0});
    if (fit == by_size.end()) return (used_top += bytes) - bytes;
    const auto [n, o] = *fit;
    by_size.erase(fit);
    by_off.erase(o);
    if (n > bytes) add(o + bytes, n - bytes);
    return o;
  }
};

/// Online allocation in schedule order: best fit among the free blocks.
size_t place_by_time(std::span<const Lifetime> items, std::vector<size_t>& off) {
  std::vector<size_t> by_first(items.size()), by_last(items.size());
  for (size_t i = 0; i < items.size(); ++i) by_first[i] = by_last[i] = i;
  std::sort(by_first.begin(), by_first.end(), [&](size_t a, size_t b) {
    return items[a].first != items[b].first ? items[a].first < items[b].first : items[a].bytes > items[b].bytes;
  });
  std::sort(by_last.begin(), by_last.end(), [&](size_t a, size_t b) { return items[a].last < items[b].last; });
  FreeList free;
  size_t top = 0, li = 0;
  for (size_t i : by_first) {
    for (; li < by_last.size() && items[by_last[li]].last < items[i].first; ++li)
      free.release(off[by_last[li]], items[by_last[li]].bytes);
    off[i] = free.take(items[i].bytes);
    top = std::max(top, free.used_top);
  }
  return top;
}

/// More orders for greedy placement, tried when a memory budget is at stake:
/// the live bytes fit it and the three strategies' arenas do not. Many
/// buffers have equal sizes (a network's layers), and which of them goes
/// first decides the gaps; remat's search measures every candidate plan
/// through this pass, so a near miss that one of these places within the
/// budget is a plan that fits.
using PlaceFn = size_t (*)(std::span<const Lifetime>, std::vector<size_t>&);
const std::pair<std::string, PlaceFn> kCloseCallOrders[] = {
    {"greedy_by_size_longest_first",
     [](std::span<const Lifetime> items, std::vector<size_t>& off) {
       return place_by(items, off, [](const Lifetime& it) { return std::pair{it.bytes, it.last - it.first}; });
     }},
    {"greedy_by_size_shortest_first",
     [](std::span<const Lifetime> items, std::vector<size_t>& off) {
       return place_by(items, off, [](const Lifetime& it) { return std::pair{it.bytes, it.first - it.last}; });
     }},
    {"greedy_by_length",
     [](std::span<const Lifetime> items, std::vector<size_t>& off) {
       return place_by(items, off, [](const Lifetime& it) { return std::pair{it.last - it.first, it.bytes}; });
     }},
    {"greedy_by_first_use",
     [](std::span<const Lifetime> items, std::vector<size_t>& off) {
       return place_by(items, off, [](const Lifetime& it) { return std::pair{-it.first, it.bytes}; });
     }},
};

}  // namespace

Placement place(std::span<const Lifetime> items, MemoryStrategy strategy) {
  Placement r;
  r.offsets.assign(items.size(), 0);
  switch (strategy) {
    case MemoryStrategy::naive: r.arena = place_naive(items, r.offsets); break;
    case MemoryStrategy::greedy_by_size:
      r.arena = place_by(items, r.offsets, [](const Lifetime& it) { return it.bytes; });
      break;
    case MemoryStrategy::greedy_by_area:  // bytes x steps, then bytes
      r.arena = place_by(items, r.offsets, [](const Lifetime& it) {
        return std::pair{double(it.bytes) * double(it.last - it.first + 1), it.bytes};
      });
      break;
    case MemoryStrategy::greedy_by_time: r.arena = place_by_time(items, r.offsets); break;
    case MemoryStrategy::best: LOOM_ASSERT(false, "place: pick a strategy");
  }
  return r;
}

size_t lower_bound(std::span<const Lifetime> items) {
  int end = 0;
  for (const Lifetime& it : items) end = std::max(end, it.last + 1);
  std::vector<int64_t> delta(size_t(end) + 1, 0);
  for (const Lifetime& it : items) delta[size_t(it.first)] += int64_t(it.bytes), delta[size_t(it.last) + 1] -= int64_t(it.bytes);
  int64_t cur = 0, peak = 0;
  for (int64_t d : delta) peak = std::max(peak, cur += d);
  return size_t(peak);
}

BestPlacement place_best(std::span<const Lifetime> items, size_t budget) {
  BestPlacement best;
  best.placement.arena = SIZE_MAX;
  auto consider = [&](std::string name, Placement r) {
    best.tried.emplace_back(name, r.arena);
    if (r.arena < best.placement.arena) best.placement = std::move(r), best.strategy = std::move(name);
  };
  const bool pairs_allow = overlapping_pairs(items) <= kSizePairBudget;
  std::vector<MemoryStrategy> tries{MemoryStrategy::greedy_by_time};
  if (pairs_allow) tries.insert(tries.end(), {MemoryStrategy::greedy_by_size, MemoryStrategy::greedy_by_area});
  for (MemoryStrategy s : tries) consider(std::string(strategy_name(s)), place(items, s));
  if (budget && best.placement.arena > budget && pairs_allow && lower_bound(items) <= budget)
    for (const auto& [name, place_with] : kCloseCallOrders) {
      Placement r;
      r.offsets.assign(items.size(), 0);
      r.arena = place_with(items, r.offsets);
      consider(name, std::move(r));
    }
  return best;
}

void placement(Compilation& c) {
  Plan& p = c.plan;
  const int end = int(p.order.size());
  auto reserved_until = [&](int last) { return p.wave_end.empty() || last >= end ? last : p.wave_end[size_t(last)]; };
  std::vector<int> storage_of;
  std::vector<Lifetime> items;
  for (size_t i = 0; i < p.storages.size(); ++i) {
    const PStorage& s = p.storages[i];
    if (s.kind != StorageKind::arena || s.merged || s.writers.empty()) continue;
    storage_of.push_back(int(i));
    items.push_back({s.bytes, s.first, reserved_until(s.last)});
  }
  p.stats.lower_bound_bytes = lower_bound(items);
  BestPlacement best;
  if (c.opt.memory == MemoryStrategy::best) {
    best = place_best(items, c.opt.memory_budget);
  } else {
    best.placement = place(items, c.opt.memory);
    best.strategy = strategy_name(c.opt.memory);
    best.tried = {{best.strategy, best.placement.arena}};
  }
  p.stats.memory_strategy = best.strategy;
  p.stats.strategy_arenas = std::move(best.tried);
  p.stats.arena_bytes = best.placement.arena;
  if (!p.stats.arena_without_remat) p.stats.arena_without_remat = best.placement.arena;  // the remat pass sets it first
  for (size_t i = 0; i < items.size(); ++i) p.storages[size_t(storage_of[i])].offset = best.placement.offsets[i];
}

}  // namespace loom
