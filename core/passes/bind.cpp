// bind (kernel binding)
//   reads:       the schedule, values and their storages' offsets, kernels
//   establishes: the plan's arena (allocated once), one Step per position
//                with its inputs and outputs bound to memory, its workspace,
//                and the state its kernel's prepare() returns; the step count;
//                the step inputs that read feeds in place (feed_bindings;
//                their feed steps copy nothing).

#include <algorithm>

#include "core/parallel.hpp"
#include "core/passes/passes.hpp"

namespace loom {

namespace {

uint64_t node_key(const PNode& n, int id) { return uint64_t(n.graph_node >= 0 ? n.graph_node : 0x7fffffff - id); }

/// The node's epilogue with its operands as indices into the step's arrays,
/// each step prepared once on the whole arrays (run_epilogue passes blocks of rows).
std::shared_ptr<const Epilogue> bind_epilogue(const PNode& n, const Step& step, const KernelContext& kc) {
  auto e = std::make_shared<Epilogue>();
  auto ref = [&](int v) {
    auto o = std::find(n.out.begin(), n.out.end(), v);
    if (o != n.out.end()) return -int(o - n.out.begin()) - 1;
    return int(std::find(n.in.begin(), n.in.end(), v) - n.in.begin());
  };
  auto array = [&](int r) -> const NDArray& { return r >= 0 ? step.in[size_t(r)] : step.out[size_t(-r - 1)]; };
  for (const PEpilogueStep& s : n.epilogue) {
    EpilogueStep b{s.kernel->fn, s.attrs.get(), s.op->name, s.name, uint64_t(std::max(s.graph_node, 0)), {}, {}, {}};
    for (int v : s.in) b.in.push_back(ref(v));
    for (int v : s.out) b.out.push_back(ref(v));
    if (s.kernel->prepare) {
      std::vector<NDArray> in, out;
      for (int r : b.in) in.push_back(array(r));
      for (int r : b.out) out.push_back(array(r));
      b.state = s.kernel->prepare(KernelCall{kc, in, out, *b.attrs, b.op, b.node, b.key});
    }
    e->steps.push_back(std::move(b));
  }
  return e;
}

Step bind_step(const Plan& p, const PNode& n, int id) {
  Step s;
  s.fn = n.kind == NodeKind::kernel ? n.kernel->fn : nullptr;
  s.in.reserve(n.in.size());
  s.out.reserve(n.out.size());
  for (int v : n.in) s.in.push_back(p.bind(v));
  for (int v : n.out) s.out.push_back(p.bind(v));
  s.attrs = n.attrs.get();
  s.name = &n.name;
  s.op = n.op ? &n.op->name : nullptr;
  s.key = node_key(n, id);
  const bool in_place = n.kind == NodeKind::feed && p.storages[size_t(p.values[size_t(n.out[0])].storage)].kind ==
                                                        StorageKind::feed;
  s.feed = in_place ? -1 : n.feed;
  if (n.workspace >= 0) {
    const PStorage& w = p.storages[size_t(n.workspace)];
    s.workspace = static_cast<char*>(p.arena->data()) + w.offset;
    s.workspace_bytes = w.bytes;
  }
  for (int v : n.out) s.check |= is_floating(p.values[size_t(v)].type.dtype);
  s.writes_variable = n.writes_var;
  KernelContext kc{p.device};
  if (!n.epilogue.empty()) s.epilogue = bind_epilogue(n, s, kc);
  if (n.kind == NodeKind::kernel && n.kernel->prepare) {
    KernelCall call{kc, s.in, s.out, *s.attrs, *s.op, *s.name, s.key, nullptr, s.workspace, s.workspace_bytes,
                    s.epilogue.get()};
    s.state = n.kernel->prepare(call);
  }
  return s;
}

/// Which step inputs read each feed storage (directly or through views).
void bind_feed_readers(Plan& p) {
  p.feed_bindings.clear();
  std::vector<int> binding(p.storages.size(), -1);
  for (const PNode& n : p.nodes) {
    if (n.kind != NodeKind::feed) continue;
    const int st = p.values[size_t(n.out[0])].storage;
    if (p.storages[size_t(st)].kind != StorageKind::feed) continue;
    binding[size_t(st)] = int(p.feed_bindings.size());
    p.feed_bindings.push_back({n.feed, st, {}});
  }
  if (p.feed_bindings.empty()) return;
  for (size_t pos = 0; pos < p.order.size(); ++pos) {
    const PNode& n = p.nodes[size_t(p.order[pos])];
    for (size_t k = 0; k < n.in.size(); ++k) {
      const int b = binding[size_t(p.values[size_t(n.in[k])].storage)];
      if (b >= 0) p.feed_bindings[size_t(b)].readers.push_back({int(pos), int(k), n.in[k]});
    }
  }
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
  p.steps.resize(p.order.size());
  // Steps are independent (each reads the plan and writes its own): in
  // parallel, with the hazards pass that runs beside this one.
  parallel_for(int64_t(p.order.size()), 256, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const int id = p.order[size_t(i)];
      p.steps[size_t(i)] = bind_step(p, p.nodes[size_t(id)], id);
    }
  });
  p.stats.steps = 0;
  for (const Step& s : p.steps) p.stats.steps += s.fn != nullptr;
  bind_feed_readers(p);
}

}  // namespace loom
