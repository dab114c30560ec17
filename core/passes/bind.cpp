// bind (kernel binding)
//   reads:       the schedule, values and their storages' offsets, kernels
//   establishes: the plan's arena (allocated once), one Step per position
//                with its inputs and outputs bound to memory, its workspace,
//                and the state its kernel's prepare() returns; the step count.

#include <algorithm>

#include "core/passes/passes.hpp"

namespace loom {

namespace {

uint64_t node_key(const PNode& n, int id) { return uint64_t(n.graph_node >= 0 ? n.graph_node : 0x7fffffff - id); }

/// The node's epilogue with its operands as indices into the step's arrays.
std::shared_ptr<const Epilogue> bind_epilogue(const PNode& n) {
  auto e = std::make_shared<Epilogue>();
  auto ref = [&](int v) {
    auto o = std::find(n.out.begin(), n.out.end(), v);
    if (o != n.out.end()) return -int(o - n.out.begin()) - 1;
    return int(std::find(n.in.begin(), n.in.end(), v) - n.in.begin());
  };
  for (const PEpilogueStep& s : n.epilogue) {
    EpilogueStep b{s.kernel->fn, s.attrs.get(), s.op->name, s.name, uint64_t(std::max(s.graph_node, 0)), {}, {}};
    for (int v : s.in) b.in.push_back(ref(v));
    for (int v : s.out) b.out.push_back(ref(v));
    e->steps.push_back(std::move(b));
  }
  return e;
}

Step bind_step(const Plan& p, const PNode& n, int id) {
  Step s;
  s.fn = n.kind == NodeKind::kernel ? n.kernel->fn : nullptr;
  for (int v : n.in) s.in.push_back(p.bind(v));
  for (int v : n.out) s.out.push_back(p.bind(v));
  s.attrs = n.attrs.get();
  s.name = &n.name;
  s.op = n.op ? &n.op->name : nullptr;
  s.key = node_key(n, id);
  s.feed = n.feed;
  if (n.workspace >= 0) {
    const PStorage& w = p.storages[size_t(n.workspace)];
    s.workspace = static_cast<char*>(p.arena->data()) + w.offset;
    s.workspace_bytes = w.bytes;
  }
  for (int v : n.out) s.check |= is_floating(p.values[size_t(v)].type.dtype);
  if (!n.epilogue.empty()) s.epilogue = bind_epilogue(n);
  if (n.kind == NodeKind::kernel && n.kernel->prepare) {
    KernelContext kc{p.device};
    KernelCall call{kc, s.in, s.out, *s.attrs, *s.op, *s.name, s.key, nullptr, s.workspace, s.workspace_bytes,
                    s.epilogue.get()};
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
