// access
//   reads:       executable nodes, their inputs, outputs and workspaces
//   establishes: PStorage::writers and readers: the executable nodes writing
//                and reading each storage (inputs read for their shape only
//                do not count). A workspace is written and read by its node
//                alone, so it is live for that one step.

#include "core/passes/passes.hpp"

namespace loom {

void access(Compilation& c) {
  Plan& p = c.plan;
  for (PStorage& s : p.storages) s.writers.clear(), s.readers.clear();
  for (size_t i = 0; i < p.nodes.size(); ++i) {
    const PNode& n = p.nodes[i];
    if (!executable(n)) continue;
    for (int v : n.out) p.storages[size_t(p.values[size_t(v)].storage)].writers.push_back(int(i));
    if (n.workspace >= 0) {
      p.storages[size_t(n.workspace)].writers.push_back(int(i));
      p.storages[size_t(n.workspace)].readers.push_back(int(i));
    }
    for (size_t k = 0; k < n.in.size(); ++k) {
      if (is_shape_only(n, k)) continue;
      auto& rd = p.storages[size_t(p.values[size_t(n.in[k])].storage)].readers;
      if (rd.empty() || rd.back() != int(i)) rd.push_back(int(i));
    }
  }
  for (int v : p.fetch_values) p.storages[size_t(p.values[size_t(v)].storage)].pinned = true;
}

}  // namespace loom
