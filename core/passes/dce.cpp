// dce (dead code)
//   reads:       fetch values, target nodes, node inputs and control edges
//   establishes: PNode::alive exactly for the nodes the fetches and targets
//                reach (after CSE merged nodes and folding cut the inputs of
//                folded nodes).

#include "core/passes/passes.hpp"

namespace loom {

void dce(Compilation& c) {
  Plan& p = c.plan;
  for (PNode& n : p.nodes) n.alive = false;
  std::vector<int> stack(c.targets);
  for (int v : p.fetch_values) stack.push_back(p.values[size_t(v)].producer);
  while (!stack.empty()) {
    PNode& n = p.nodes[size_t(stack.back())];
    stack.pop_back();
    if (n.alive) continue;
    n.alive = true;
    for (int v : n.in) stack.push_back(p.values[size_t(v)].producer);
    for (int a : n.after) stack.push_back(a);
  }
}

}  // namespace loom
