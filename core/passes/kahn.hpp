#pragma once
// Kahn's algorithm with a priority: the one topological sort of the planner
// (declared in core/passes/passes.hpp).

#include <queue>
#include <utility>

#include "core/error.hpp"

namespace loom {

template <class Key, class Priority, class OnEmit>
std::vector<int> kahn_order(const std::vector<int>& nodes, const Adjacency& preds, const Adjacency& succs,
                            Priority&& priority, OnEmit&& on_emit) {
  std::vector<int> indeg(preds.size(), 0), out;
  out.reserve(nodes.size());
  using Item = std::pair<Key, int>;
  std::priority_queue<Item, std::vector<Item>, std::greater<>> ready;
  for (int i : nodes) {
    indeg[size_t(i)] = int(preds[size_t(i)].size());
    if (!indeg[size_t(i)]) ready.push({priority(i), i});
  }
  while (!ready.empty()) {
    auto [key, i] = ready.top();
    ready.pop();
    Key now = priority(i);
    if (now != key) {  // stale: requeue with the current priority
      ready.push({now, i});
      continue;
    }
    out.push_back(i);
    on_emit(i);
    for (int s : succs[size_t(i)])
      if (--indeg[size_t(s)] == 0) ready.push({priority(s), s});
  }
  LOOM_ASSERT(out.size() == nodes.size(), "cycle in the plan's dependencies");
  return out;
}

}  // namespace loom
