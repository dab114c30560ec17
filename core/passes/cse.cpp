// cse (common subexpressions)
//   reads:       plan nodes in topological order (lower)
//   establishes: a node computing what an earlier node computes (same op,
//                kind, attributes and inputs, no control inputs, not
//                stateful) is dead and its readers read the earlier node's
//                outputs; graph constants of up to 64 elements with equal
//                dtype, shape and bytes share one value (every `x * 2.0` makes
//                one). Fetches and targets follow the merges, and so do the
//                storages views alias (lower gave a view its input's storage:
//                a view of a merged value must alias the surviving one).

#include <string>
#include <unordered_map>
#include <utility>

#include "core/passes/passes.hpp"

namespace loom {

namespace {

bool mergeable(const PNode& n) {
  return n.alive && (n.kind == NodeKind::kernel || n.kind == NodeKind::view) && n.op && !n.op->stateful &&
         n.op->writes_input < 0 && n.after.empty();
}

size_t node_hash(const PNode& n) {
  size_t h = std::hash<const void*>{}(n.op) ^ (n.attrs->hash() * 31u) ^ size_t(n.kind);
  for (int v : n.in) h = h * 1000003u + size_t(v);
  return h;
}

bool same(const PNode& a, const PNode& b) {
  return a.op == b.op && a.kind == b.kind && a.in == b.in && (a.attrs == b.attrs || *a.attrs == *b.attrs);
}

/// Nodes by hash, open addressing over a power-of-two table (linear probing):
/// a multimap's allocation per entry and prime modulo were most of this pass.
class NodeTable {
 public:
  explicit NodeTable(size_t nodes) {
    size_t cap = 16;
    while (cap < 2 * nodes) cap <<= 1;
    slots_.assign(cap, {0, -1});
  }
  /// The first node recorded with hash h for which same(node) holds; else
  /// records `id` under h and returns -1.
  template <class Same>
  int find_or_insert(size_t h, int id, Same&& same) {
    const size_t mask = slots_.size() - 1;
    for (size_t i = spread(h) & mask;; i = (i + 1) & mask) {
      auto& [sh, sid] = slots_[i];
      if (sid < 0) {
        sh = h, sid = id;
        return -1;
      }
      if (sh == h && same(sid)) return sid;
    }
  }

 private:
  static size_t spread(size_t h) {  // the low bits pick the slot: mix the high ones in
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    return h ^ (h >> 33);
  }
  std::vector<std::pair<size_t, int>> slots_;  // (hash, node id); id -1: empty
};

/// The bytes of a small graph constant, with its dtype and shape, or "" when it is not one.
std::string constant_key(const Plan& p, const PNode& n) {
  if (n.op != core_op::constant || n.kind != NodeKind::source) return {};
  const NDArray& a = p.storages[size_t(p.values[size_t(n.out[0])].storage)].source->host;
  if (a.numel() > 64 || !a.is_compact()) return {};
  return std::string(dtype_name(a.dtype())) + shape_str(a.shape()) +
         std::string(static_cast<const char*>(a.raw()), a.nbytes());
}

}  // namespace

void cse(Compilation& c) {
  Plan& p = c.plan;
  std::vector<int> value_to(p.values.size()), node_to(p.nodes.size());
  for (size_t v = 0; v < value_to.size(); ++v) value_to[v] = int(v);
  for (size_t n = 0; n < node_to.size(); ++n) node_to[n] = int(n);
  NodeTable seen(p.nodes.size());
  std::unordered_map<std::string, int> constants;
  std::vector<int> storage_to(p.storages.size());
  for (size_t k = 0; k < storage_to.size(); ++k) storage_to[k] = int(k);
  auto storage_of = [&](int s) {
    while (storage_to[size_t(s)] != s) s = storage_to[size_t(s)];
    return s;
  };
  auto merge = [&](PNode& n, int into) {
    const PNode& m = p.nodes[size_t(into)];
    for (size_t i = 0; i < n.out.size(); ++i) {
      value_to[size_t(n.out[i])] = m.out[i];
      const int dead = storage_of(p.values[size_t(n.out[i])].storage), kept = storage_of(p.values[size_t(m.out[i])].storage);
      if (dead != kept) storage_to[size_t(dead)] = kept;
    }
    node_to[size_t(&n - p.nodes.data())] = into;
    n.alive = false;
    ++p.stats.cse_merged;
  };
  for (size_t id = 0; id < p.nodes.size(); ++id) {
    PNode& n = p.nodes[id];
    if (!n.alive) continue;
    for (int& v : n.in) v = value_to[size_t(v)];
    for (int& a : n.after) a = node_to[size_t(a)];
    if (std::string key = constant_key(p, n); !key.empty()) {
      auto [it, fresh] = constants.try_emplace(std::move(key), int(id));
      if (!fresh) merge(n, it->second);
      continue;
    }
    if (!mergeable(n)) continue;
    const int earlier = seen.find_or_insert(node_hash(n), int(id), [&](int e) { return same(p.nodes[size_t(e)], n); });
    if (earlier >= 0) merge(n, earlier);
  }
  for (PValue& v : p.values)
    if (v.storage >= 0) v.storage = storage_of(v.storage);
  for (int& v : p.fetch_values) v = value_to[size_t(v)];
  for (int& t : c.targets) t = node_to[size_t(t)];
}

}  // namespace loom
