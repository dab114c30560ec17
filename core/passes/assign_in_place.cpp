// assign_in_place
//   reads:       assign nodes (writes_var kernels), their values' producers
//   establishes: an assign whose value comes from an in-place-capable kernel
//                of the variable's shape and dtype lets that kernel write
//                straight into the variable (saving a copy and a buffer); the
//                assign stays as a no-op anchor for ordering, and the producer
//                now counts as the update (writes_var): readers of the old
//                value run before it (order_updates). Off with check_numerics
//                (a NaN must be caught before it reaches a variable).

#include <algorithm>

#include "core/passes/passes.hpp"

namespace loom {

namespace {

/// No input of the producer may view the variable with another layout
/// (element i must be read before it is written), and when an epilogue step
/// computes the value, only that step's inputs may read the variable at all
/// (the producer's own kernel reads its operands while the steps write).
bool views_clash(const Plan& p, const PNode& producer, int value, const PValue& var) {
  const PEpilogueStep* step = nullptr;
  for (const PEpilogueStep& s : producer.epilogue)
    if (std::find(s.out.begin(), s.out.end(), value) != s.out.end()) step = &s;
  for (int in : producer.in) {
    const PValue& w = p.values[size_t(in)];
    if (w.storage != var.storage) continue;
    if (step && std::find(step->in.begin(), step->in.end(), in) == step->in.end()) return true;
    if (!(w.layout.strides == var.layout.strides && w.layout.offset == 0 && w.type.shape == var.type.shape)) return true;
  }
  return false;
}

bool can_write_variable(const Plan& p, const PNode& pn, int v, const PValue& var, bool fetched) {
  const PValue& val = p.values[size_t(v)];
  const OpDef* op = computing_op(pn, v);
  return pn.kind == NodeKind::kernel && op && op->inplace && (pn.out.size() == 1 || op->elementwise) &&
         val.type.shape == var.type.shape && val.type.dtype == var.type.dtype &&
         p.storages[size_t(val.storage)].kind == StorageKind::arena && var.layout.is_compact() &&
         var.layout.offset == 0 && !fetched && !views_clash(p, pn, v, var);
}

}  // namespace

void assign_in_place(Compilation& c) {
  if (c.opt.check_numerics) return;
  Plan& p = c.plan;
  std::vector<char> taken(p.values.size(), 0), fetched(p.values.size(), 0);
  for (int v : p.fetch_values) fetched[size_t(v)] = 1;
  for (PNode& an : p.nodes) {
    if (!an.alive || !an.writes_var || an.kind != NodeKind::kernel) continue;
    const int v = an.in[1];
    PValue& val = p.values[size_t(v)];
    const PValue& var = p.values[size_t(an.in[0])];
    PNode& pn = p.nodes[size_t(val.producer)];
    if (taken[size_t(v)] || !can_write_variable(p, pn, v, var, fetched[size_t(v)])) continue;
    taken[size_t(v)] = 1;
    val.storage = var.storage;
    val.layout = var.layout;
    pn.writes_var = true;
    an.kind = NodeKind::noop;
    an.kernel = nullptr;
  }
}

}  // namespace loom
