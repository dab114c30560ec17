// inplace (in-place reuse)
//   reads:       the schedule, storage lifetimes and access lists, OpDef::inplace
//   establishes: output 0 of an in-place-capable kernel takes over the
//                storage of an input that dies at its node and covers that
//                whole storage with the same layout (the output's storage is
//                merged into it: PStorage::merged); the readers of the input
//                run before the node (hazard edges in Plan::deps); likewise
//                an element-wise epilogue step's output takes over a value
//                its node computed that nothing else reads. Off with the
//                naive memory strategy.

#include <algorithm>

#include "core/passes/passes.hpp"

namespace loom {

namespace {

/// Flat state (no list per storage: this pass visits every value and read).
struct Reuse {
  Plan& p;
  std::vector<int> merged_into;  // per storage: the storage it was merged into, or itself
  // Per storage, the nodes that read its current contents so far: a linked
  // list through `reads` (head -1: none).
  std::vector<int> head;
  std::vector<std::pair<int, int>> reads;  // (node, next entry)

  int storage_of(int v) {  // the storage value v lives in after the merges so far
    int s = p.values[size_t(v)].storage;
    while (merged_into[size_t(s)] != s) s = merged_into[size_t(s)] = merged_into[size_t(merged_into[size_t(s)])];
    return s;
  }
  void read(int storage, int node) {
    const int h = head[size_t(storage)];
    if (h >= 0 && reads[size_t(h)].first == node) return;
    reads.push_back({node, h});
    head[size_t(storage)] = int(reads.size()) - 1;
  }
  bool can_take(const PNode& n, size_t k, int out_storage, const PValue& out);
  bool can_overwrite(const PNode& n, size_t step, int v, const PValue& out);
  void merge(int id, int keep, int old);
  void epilogue_in_place(int id);
};

/// Input k of n dies at n, is in the arena, and has out's shape, element size and whole storage.
bool Reuse::can_take(const PNode& n, size_t k, int out_storage, const PValue& out) {
  const PValue& in = p.values[size_t(n.in[k])];
  const int in_storage = storage_of(n.in[k]);
  const PStorage& is = p.storages[size_t(in_storage)];
  if (is.kind != StorageKind::arena || is.pinned || is.merged || is.last != n.pos ||
      is.bytes != p.storages[size_t(out_storage)].bytes || in.type.shape != out.type.shape ||
      dtype_size(in.type.dtype) != dtype_size(out.type.dtype) || in.layout.offset != 0 || !in.layout.is_compact())
    return false;
  for (size_t j = 0; j < n.in.size(); ++j) {  // another input viewing the same storage differently
    const PValue& w = p.values[size_t(n.in[j])];
    if (j != k && storage_of(n.in[j]) == in_storage &&
        !(w.layout.strides == in.layout.strides && w.layout.offset == 0 && w.type.shape == in.type.shape))
      return false;
  }
  return true;
}

/// Epilogue step `step` of n may write `out` over value v: v is computed by n
/// itself (its kernel's result or an earlier step's), no later step reads it,
/// and nothing outside n does (its storage dies at n), with out's size and
/// layout.
bool Reuse::can_overwrite(const PNode& n, size_t step, int v, const PValue& out) {
  if (std::find(n.out.begin(), n.out.end(), v) == n.out.end()) return false;
  for (size_t later = step + 1; later < n.epilogue.size(); ++later)
    if (std::ranges::find(n.epilogue[later].in, v) != n.epilogue[later].in.end()) return false;
  const PValue& in = p.values[size_t(v)];
  const PStorage& is = p.storages[size_t(storage_of(v))];
  return is.kind == StorageKind::arena && !is.pinned && !is.merged && is.last == n.pos && is.readers.empty() &&
         in.type.shape == out.type.shape && dtype_size(in.type.dtype) == dtype_size(out.type.dtype) &&
         in.layout.offset == 0 && in.layout.is_compact() && out.layout.is_compact();
}

/// The epilogue's element-wise steps of node id write over values the node
/// computed and no one else reads (a GEMM's result under its bias and ReLU):
/// each step reads a block of rows before it writes the same rows.
void Reuse::epilogue_in_place(int id) {
  const PNode& n = p.nodes[size_t(id)];
  for (size_t k = 0; k < n.epilogue.size(); ++k) {
    const PEpilogueStep& s = n.epilogue[k];
    if (!s.op->inplace || s.out.size() != 1) continue;
    const PValue& out = p.values[size_t(s.out[0])];
    const int out_storage = storage_of(s.out[0]);
    const PStorage& os = p.storages[size_t(out_storage)];
    if (os.kind != StorageKind::arena || os.pinned) continue;
    for (int v : s.in)
      if (storage_of(v) != out_storage && os.bytes == p.storages[size_t(storage_of(v))].bytes &&
          can_overwrite(n, k, v, out)) {
        merge(id, storage_of(v), out_storage);
        break;
      }
  }
}

/// Node id writes its output (storage old) over storage keep.
void Reuse::merge(int id, int keep, int old) {
  const int pos = p.nodes[size_t(id)].pos;
  for (int e = head[size_t(keep)]; e >= 0; e = reads[size_t(e)].second)  // readers of the old contents finish first
    if (reads[size_t(e)].first != id) p.deps[size_t(pos)].push_back(p.nodes[size_t(reads[size_t(e)].first)].pos);
  head[size_t(keep)] = -1;
  merged_into[size_t(old)] = keep;
  PStorage &k = p.storages[size_t(keep)], &m = p.storages[size_t(old)];
  k.last = std::max(k.last, m.last);
  k.writers.insert(k.writers.end(), m.writers.begin(), m.writers.end());
  k.readers.insert(k.readers.end(), m.readers.begin(), m.readers.end());
  m.merged = true;
  m.writers.clear();
  m.readers.clear();
}

}  // namespace

void inplace(Compilation& c) {
  if (c.opt.memory == MemoryStrategy::naive) return;
  Plan& p = c.plan;
  Reuse r{p, std::vector<int>(p.storages.size()), std::vector<int>(p.storages.size(), -1), {}};
  for (size_t s = 0; s < p.storages.size(); ++s) r.merged_into[s] = int(s);
  for (int id : p.order) {
    const PNode& n = p.nodes[size_t(id)];
    for (size_t k = 0; k < n.in.size(); ++k)
      if (!is_shape_only(n, k)) r.read(r.storage_of(n.in[k]), id);
    if (n.kind == NodeKind::kernel && !n.epilogue.empty()) r.epilogue_in_place(id);
    if (n.kind != NodeKind::kernel || !n.op || !n.op->inplace) continue;
    const PValue& out = p.values[size_t(n.out[0])];
    const int out_storage = r.storage_of(n.out[0]);
    const PStorage& os = p.storages[size_t(out_storage)];
    if (os.kind != StorageKind::arena || os.pinned) continue;
    for (size_t k = 0; k < n.in.size(); ++k)
      if (r.can_take(n, k, out_storage, out)) {
        r.merge(id, r.storage_of(n.in[k]), out_storage);
        break;
      }
  }
  for (size_t v = 0; v < p.values.size(); ++v)
    if (p.values[v].storage >= 0) p.values[v].storage = r.storage_of(int(v));
}

}  // namespace loom
