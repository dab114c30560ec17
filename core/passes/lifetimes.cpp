// lifetimes
//   reads:       the schedule (PNode::pos), storage writers and readers
//   establishes: PStorage::first and last (schedule positions of the first
//                write and the last read; fetched storages live to the end),
//                and the plan's statistics that do not depend on memory:
//                nodes after the graph passes, and the naive total (every
//                tensor a kernel or feed produces in its own buffer).

#include <algorithm>

#include "core/passes/passes.hpp"

namespace loom {

void lifetimes(Compilation& c) {
  Plan& p = c.plan;
  const int end = int(p.order.size());
  for (PStorage& s : p.storages) {
    if (s.kind != StorageKind::arena || s.writers.empty()) continue;
    s.first = INT_MAX, s.last = -1;
    for (int w : s.writers) s.first = std::min(s.first, p.nodes[size_t(w)].pos), s.last = std::max(s.last, p.nodes[size_t(w)].pos);
    for (int r : s.readers) s.last = std::max(s.last, p.nodes[size_t(r)].pos);
    if (s.pinned) s.last = end;
  }
  PlanStats& st = p.stats;
  st.nodes_after_passes = st.naive_bytes = 0;
  for (const PNode& n : p.nodes) {
    if (!n.alive || !n.op) continue;  // the update barrier is no graph node
    st.nodes_after_passes += n.kind != NodeKind::source;
    if ((n.kind != NodeKind::kernel && n.kind != NodeKind::feed) || n.op->writes_input >= 0) continue;
    for (int v : n.out) {
      const PValue& val = p.values[size_t(v)];
      const size_t bytes = std::max<size_t>(size_t(numel(val.type.shape)) * dtype_size(val.type.dtype), 1);
      st.naive_bytes += (bytes + kAlignment - 1) / kAlignment * kAlignment;
    }
  }
}

}  // namespace loom
