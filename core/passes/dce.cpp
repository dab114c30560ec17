// dce (dead code)
//   reads:       fetch values, target nodes, node inputs and control edges
//   establishes: PNode::alive exactly for the nodes the fetches and targets
//                reach (after CSE merged nodes and folding cut the inputs of
//                folded nodes).
//
// Node ids are a topological order here (lower, CSE and folding keep it), so
// one sweep from the last node back marks every reached node: a flat byte
// per node instead of a search that jumps between the large node records.

#include "core/passes/passes.hpp"

namespace loom {

void dce(Compilation& c) {
  Plan& p = c.plan;
  std::vector<char> live(p.nodes.size(), 0);
  for (int t : c.targets) live[size_t(t)] = 1;
  for (int v : p.fetch_values) live[size_t(p.values[size_t(v)].producer)] = 1;
  for (size_t i = p.nodes.size(); i-- > 0;) {
    PNode& n = p.nodes[i];
    n.alive = live[i];
    if (!n.alive) continue;
    for (int v : n.in) {
      const int producer = p.values[size_t(v)].producer;
      LOOM_ASSERT(size_t(producer) < i, "dce: node ", n.name, " reads a later node");
      live[size_t(producer)] = 1;
    }
    for (int a : n.after) {
      LOOM_ASSERT(size_t(a) < i, "dce: node ", n.name, " runs after a later node");
      live[size_t(a)] = 1;
    }
  }
}

}  // namespace loom
