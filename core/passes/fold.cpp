// fold (constant folding)
//   reads:       plan nodes in topological order; constant storages' host values
//   establishes: a kernel node that is not stateful, whose inputs are all
//                constants (or read for their shape only) and whose outputs
//                hold at most 65536 elements, ran once on the host: it is now
//                a source of constant values (on the plan's device, with a
//                host copy), so later nodes fold in turn. Its storages become
//                constant storages in place: views of its outputs, lowered
//                before this pass, see the constant values.

#include "core/passes/passes.hpp"

namespace loom {

namespace {

constexpr int64_t kMaxFoldedElements = 65536;  // folding must not bloat the plan's constants

bool foldable(const Plan& p, const PNode& n) {
  if (!n.alive || n.kind != NodeKind::kernel || n.op->stateful) return false;
  int64_t elems = 0;
  for (int v : n.out) elems += numel(p.values[size_t(v)].type.shape);
  return elems <= kMaxFoldedElements;
}

/// The node's inputs as host arrays, or false when one is not constant.
bool constant_inputs(const Plan& p, const PNode& n, std::vector<NDArray>& ins) {
  for (size_t i = 0; i < n.in.size(); ++i) {
    const PValue& v = p.values[size_t(n.in[i])];
    const PStorage& s = p.storages[size_t(v.storage)];
    if (s.kind == StorageKind::constant) ins.emplace_back(s.source->host.buffer(), v.layout, v.type.dtype);
    else if (is_shape_only(n, i)) ins.push_back(NDArray::empty(v.type.shape, v.type.dtype));
    else return false;
  }
  return true;
}

bool try_fold(Compilation& c, PNode& n) {
  Plan& p = c.plan;
  std::vector<NDArray> ins;
  if (!foldable(p, n) || !constant_inputs(p, n, ins)) return false;
  const KernelInfo* k = find_kernel(n.op->name, DeviceKind::cpu, p.values[size_t(n.out[0])].type.dtype);
  if (!k) return false;
  if (k->compact_inputs)
    for (NDArray& a : ins) a = a.compact();
  std::vector<NDArray> outs;
  for (int v : n.out) outs.push_back(NDArray::empty(p.values[size_t(v)].type.shape, p.values[size_t(v)].type.dtype));
  KernelContext kc{Device::cpu(), nullptr, c.opt.seed, 0};
  KernelCall call{kc, ins, outs, *n.attrs, n.op->name, n.name, uint64_t(std::max(n.graph_node, 0))};
  std::shared_ptr<const void> state;
  if (k->prepare) call.state = (state = k->prepare(call)).get();
  std::shared_ptr<Buffer> workspace = allocate_workspace(*k, call);
  if (workspace) call.workspace = workspace->data(), call.workspace_bytes = workspace->bytes();
  k->fn(call);
  n.kind = NodeKind::source;
  n.kernel = nullptr;
  n.in.clear();
  n.workspace = -1;
  for (size_t i = 0; i < n.out.size(); ++i) {
    const PValue& v = p.values[size_t(n.out[i])];
    LOOM_ASSERT(v.layout.is_compact() && v.layout.offset == 0, "folded output without a compact layout");
    PStorage& s = p.storages[size_t(v.storage)];
    s.kind = StorageKind::constant;
    s.bytes = outs[i].nbytes();
    s.source = std::make_shared<SourceArrays>(SourceArrays{outs[i].to(p.device), outs[i]});
  }
  return true;
}

}  // namespace

void fold(Compilation& c) {
  for (PNode& n : c.plan.nodes)
    if (try_fold(c, n)) ++c.plan.stats.folded;
}

}  // namespace loom
