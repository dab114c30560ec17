// bind (kernel binding)
//   reads:       the schedule, values and their storages' offsets, kernels
//   establishes: the plan's arena (allocated once), one Step per position
//                with its inputs and outputs bound to memory, its workspace,
//                and the state its kernel's prepare() returns; the step count.

#include "core/passes/passes.hpp"

namespace loom {

namespace {

Step bind_step(const Plan& p, const PNode& n, int id) {
  Step s;
  s.fn = n.kind == NodeKind::kernel ? n.kernel->fn : nullptr;
  for (int v : n.in) s.in.push_back(p.bind(v));
  for (int v : n.out) s.out.push_back(p.bind(v));
  s.attrs = n.attrs.get();
  s.name = &n.name;
  s.op = n.op ? &n.op->name : nullptr;
  s.key = uint64_t(n.graph_node >= 0 ? n.graph_node : 0x7fffffff - id);
  s.feed = n.feed;
  if (n.workspace >= 0) {
    const PStorage& w = p.storages[size_t(n.workspace)];
    s.workspace = static_cast<char*>(p.arena->data()) + w.offset;
    s.workspace_bytes = w.bytes;
  }
  for (int v : n.out) s.check |= is_floating(p.values[size_t(v)].type.dtype);
  if (n.kind == NodeKind::kernel && n.kernel->prepare) {
    KernelContext kc{p.device};
    KernelCall call{kc, s.in, s.out, *s.attrs, *s.op, *s.name, s.key, nullptr, s.workspace, s.workspace_bytes};
    s.state = n.kernel->prepare(call);
  }
  return s;
}

}  // namespace

void bind(Compilation& c) {
  Plan& p = c.plan;
  try {
    p.arena = Buffer::allocate(p.device, p.stats.arena_bytes);
  } catch (const Error& e) {  // say what the memory was for
    fail("allocating the plan's arena of ", p.stats.arena_bytes, " bytes on ", p.device.str(), ": ", e.what());
  }
  p.steps.clear();
  p.stats.steps = 0;
  for (int id : p.order) {
    p.steps.push_back(bind_step(p, p.nodes[size_t(id)], id));
    p.stats.steps += p.steps.back().fn != nullptr;
  }
}

}  // namespace loom
