// inplace (in-place reuse)
//   reads:       the schedule, storage lifetimes and access lists, OpDef::inplace
//   establishes: the output of an in-place-capable kernel takes over the
//                storage of an input that dies at its node and covers that
//                whole storage with the same layout (the output's storage is
//                merged into it: PStorage::merged); the readers of the input
//                run before the node (hazard edges in Plan::deps). Off with
//                the naive memory strategy.

#include "core/passes/passes.hpp"

namespace loom {

namespace {

struct Reuse {
  Plan& p;
  std::vector<std::vector<int>> cur_readers;  // per storage: nodes that read its current contents so far
  std::vector<std::vector<int>> values_in;    // per storage: the values it holds

  bool can_take(const PNode& n, size_t k, const PValue& out) const;
  void merge(int id, int keep, int old);
};

/// Input k of n dies at n, is in the arena, and has out's shape, element size and whole storage.
bool Reuse::can_take(const PNode& n, size_t k, const PValue& out) const {
  const PValue& in = p.values[size_t(n.in[k])];
  const PStorage& is = p.storages[size_t(in.storage)];
  if (is.kind != StorageKind::arena || is.pinned || is.merged || is.last != n.pos ||
      is.bytes != p.storages[size_t(out.storage)].bytes || in.type.shape != out.type.shape ||
      dtype_size(in.type.dtype) != dtype_size(out.type.dtype) || in.layout.offset != 0 || !in.layout.is_compact())
    return false;
  for (size_t j = 0; j < n.in.size(); ++j) {  // another input viewing the same storage differently
    const PValue& w = p.values[size_t(n.in[j])];
    if (j != k && w.storage == in.storage &&
        !(w.layout.strides == in.layout.strides && w.layout.offset == 0 && w.type.shape == in.type.shape))
      return false;
  }
  return true;
}

/// Node id writes its output (storage old) over storage keep.
void Reuse::merge(int id, int keep, int old) {
  const int pos = p.nodes[size_t(id)].pos;
  for (int r : cur_readers[size_t(keep)])  // readers of the old contents finish first
    if (r != id) p.deps[size_t(pos)].push_back(p.nodes[size_t(r)].pos);
  cur_readers[size_t(keep)].clear();
  for (int v : values_in[size_t(old)]) p.values[size_t(v)].storage = keep;
  values_in[size_t(keep)].insert(values_in[size_t(keep)].end(), values_in[size_t(old)].begin(), values_in[size_t(old)].end());
  values_in[size_t(old)].clear();
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
  Reuse r{p, std::vector<std::vector<int>>(p.storages.size()), std::vector<std::vector<int>>(p.storages.size())};
  for (size_t v = 0; v < p.values.size(); ++v)
    if (p.values[v].storage >= 0) r.values_in[size_t(p.values[v].storage)].push_back(int(v));
  for (int id : p.order) {
    const PNode& n = p.nodes[size_t(id)];
    for (size_t k = 0; k < n.in.size(); ++k) {
      if (is_shape_only(n, k)) continue;
      auto& cur = r.cur_readers[size_t(p.values[size_t(n.in[k])].storage)];
      if (cur.empty() || cur.back() != id) cur.push_back(id);
    }
    if (n.kind != NodeKind::kernel || !n.op || !n.op->inplace || n.out.size() != 1) continue;
    const PValue& out = p.values[size_t(n.out[0])];
    const PStorage& os = p.storages[size_t(out.storage)];
    if (os.kind != StorageKind::arena || os.pinned) continue;
    for (size_t k = 0; k < n.in.size(); ++k)
      if (r.can_take(n, k, out)) {
        r.merge(id, p.values[size_t(n.in[k])].storage, out.storage);
        break;
      }
  }
}

}  // namespace loom
