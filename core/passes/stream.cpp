// stream
//   reads:       nodes with an epilogue, their kernels' streamed_workspace,
//                storages after assign_in_place, fetch values, the threads
//   establishes: output 0 of such a node is kept only block by block when
//                nothing but its epilogue reads it and the epilogue writes
//                variables, or values only later steps read that it can
//                write over the block in place (a weight gradient, decayed,
//                under Adam's update): those storages become
//                StorageKind::streamed (no bytes) and the node gets a
//                workspace of the blocks its kernel has in flight. The
//                kernel computes the same blocks either way: the same bits.
//                Off with the naive memory strategy.

#include <algorithm>

#include "core/parallel.hpp"
#include "core/passes/passes.hpp"

namespace loom {

namespace {

/// Per storage: how many executable nodes read or write it.
std::vector<int> users(const Plan& p) {
  std::vector<int> u(p.storages.size(), 0);
  for (const PNode& n : p.nodes) {
    if (!n.alive || n.kind == NodeKind::source) continue;
    std::vector<int> seen;
    for (const std::vector<int>* vs : {&n.in, &n.out})
      for (int v : *vs) {
        const int s = p.values[size_t(v)].storage;
        if (std::find(seen.begin(), seen.end(), s) == seen.end()) seen.push_back(s), ++u[size_t(s)];
      }
  }
  return u;
}

bool reads(const PEpilogueStep& s, int v) { return std::find(s.in.begin(), s.in.end(), v) != s.in.end(); }

/// The values of n kept block by block: output 0 (only n touches its storage,
/// no fetch reads it) and each epilogue output that is no variable, which an
/// in-place step writes over the block (the value before it read by no later
/// step). Empty where some output fits neither.
std::vector<int> block_values(const Plan& p, const PNode& n, const std::vector<int>& users,
                              const std::vector<char>& fetched) {
  if (!n.alive || n.kind != NodeKind::kernel || n.epilogue.empty() || !n.kernel || !n.kernel->streamed_workspace ||
      n.workspace >= 0)
    return {};
  const PValue& head = p.values[size_t(n.out[0])];
  auto own = [&](int v) {
    const PValue& val = p.values[size_t(v)];
    return !fetched[size_t(v)] && p.storages[size_t(val.storage)].kind == StorageKind::arena &&
           users[size_t(val.storage)] == 1 && val.type == head.type && val.layout.is_compact() &&
           val.layout.offset == 0;
  };
  if (!own(n.out[0])) return {};
  std::vector<int> block{n.out[0]};
  for (size_t k = 0; k < n.epilogue.size(); ++k) {
    const PEpilogueStep& s = n.epilogue[k];
    for (int v : s.out) {
      if (p.storages[size_t(p.values[size_t(v)].storage)].kind == StorageKind::variable) continue;
      const int over = block.back();
      const bool read_later = std::any_of(n.epilogue.begin() + int64_t(k) + 1, n.epilogue.end(),
                                          [&](const PEpilogueStep& later) { return reads(later, over); });
      if (!own(v) || !s.op->inplace || s.out.size() != 1 || !reads(s, over) || read_later) return {};
      block.push_back(v);
    }
  }
  return block;
}

}  // namespace

void stream(Compilation& c) {
  if (c.opt.memory == MemoryStrategy::naive) return;
  Plan& p = c.plan;
  const std::vector<int> use = users(p);
  std::vector<char> fetched(p.values.size(), 0);
  for (int v : p.fetch_values) fetched[size_t(v)] = 1;
  for (PNode& n : p.nodes) {
    const std::vector<int> block = block_values(p, n, use, fetched);
    if (block.empty()) continue;
    std::vector<Shape> in, out;
    for (int v : n.in) in.push_back(p.values[size_t(v)].type.shape);
    for (int v : n.out) out.push_back(p.values[size_t(v)].type.shape);
    const PValue& head = p.values[size_t(n.out[0])];
    const size_t bytes = n.kernel->streamed_workspace(
        WorkspaceQuery{in, out, head.type.dtype, *n.attrs, p.device, current_threads()});
    if (bytes == 0 || bytes >= p.storages[size_t(head.storage)].bytes) continue;
    for (int v : block) {
      PStorage& s = p.storages[size_t(p.values[size_t(v)].storage)];
      s.kind = StorageKind::streamed;
      s.bytes = 0;
    }
    n.workspace = p.add_storage(StorageKind::arena, bytes);
    ++p.stats.streamed;
  }
}

}  // namespace loom
