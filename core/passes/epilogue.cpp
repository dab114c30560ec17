// epilogue
//   reads:       alive nodes after fusion, OpDef::epilogue and elementwise, the
//                device kernels' KernelInfo::runs_epilogue, fetch values
//   establishes: a node whose op accepts an epilogue (matmul) takes over the
//                element-wise node that alone reads its output 0, and then the
//                one that alone reads that node's single output, and so on:
//                PNode::epilogue lists them, their inputs and outputs join the
//                node's, and its kernel runs them on each block of rows of
//                output 0 right after computing it (a GEMM's bias and
//                activation, or Adam reading the weight gradient while it is
//                in cache). The absorbed nodes are dead. Off with
//                check_numerics (it names single nodes).
//
// An absorbed node must compute values of output 0's shape (its rows are the
// producer's rows), have a kernel on the device without scratch memory, no
// ordering edges, and no other reader of the value it takes. Views that keep
// the value's layout (gradients' sum_to where a dynamic shape resolved to the
// value's own) are looked through: their reader reads the value itself.

#include <algorithm>

#include "core/passes/passes.hpp"

namespace loom {

namespace {

struct Readers {
  std::vector<int> count, reader;  // per value: how many nodes read it, and one of them
};

Readers readers(const Plan& p) {
  Readers r{std::vector<int>(p.values.size(), 0), std::vector<int>(p.values.size(), -1)};
  for (size_t i = 0; i < p.nodes.size(); ++i) {
    const PNode& n = p.nodes[i];
    if (!n.alive) continue;
    for (size_t k = 0; k < n.in.size(); ++k) {
      const int v = n.in[k];
      if (is_shape_only(n, k) || std::find(n.in.begin(), n.in.begin() + int64_t(k), v) != n.in.begin() + int64_t(k))
        continue;  // a read for the shape only needs no data
      ++r.count[size_t(v)];
      r.reader[size_t(v)] = int(i);
    }
  }
  return r;
}

bool same_place(const PValue& a, const PValue& b) {
  return a.storage == b.storage && a.type == b.type && a.layout.shape == b.layout.shape &&
         a.layout.strides == b.layout.strides && a.layout.offset == b.layout.offset;
}

/// The one node reading value v's data, looking through views that keep v's
/// layout (those views, now dead, go into `views`); -1 when there is none or more.
int single_reader(Plan& p, const Readers& r, const std::vector<char>& fetched, int v, std::vector<int>& views) {
  views.clear();
  for (int u = v;;) {
    if (r.count[size_t(u)] != 1 || fetched[size_t(u)]) return -1;
    const int id = r.reader[size_t(u)];
    const PNode& n = p.nodes[size_t(id)];
    if (n.kind != NodeKind::view || n.out.size() != 1 || !same_place(p.values[size_t(v)], p.values[size_t(n.out[0])]))
      return id;
    views.push_back(id);
    u = n.out[0];
  }
}

bool can_absorb(const Plan& p, const PNode& c, const Shape& rows_shape, const std::vector<char>& ordered, int id) {
  const OpDef* op = c.op;
  const KernelInfo* k = c.kernel;
  if (!c.alive || c.kind != NodeKind::kernel || !op || !op->elementwise || op->stateful || op->writes_input >= 0 ||
      !op->shape_only_inputs.empty() || !c.after.empty() || ordered[size_t(id)] || !k || k == &host_fallback_kernel() ||
      k->workspace || k->runs_epilogue || c.workspace >= 0 || !c.epilogue.empty())
    return false;
  return std::all_of(c.out.begin(), c.out.end(), [&](int v) { return p.values[size_t(v)].type.shape == rows_shape; });
}

/// Moves node `id` into node `host`'s epilogue; it reads `value` where it
/// read the outputs of `views` (which die).
void absorb(Plan& p, int host, int id, int value, const std::vector<int>& views) {
  PNode& h = p.nodes[size_t(host)];
  PNode& c = p.nodes[size_t(id)];
  for (int view : views) {
    std::replace(c.in.begin(), c.in.end(), p.nodes[size_t(view)].out[0], value);
    p.nodes[size_t(view)].alive = false;
  }
  for (int v : c.in)
    if (std::find(h.in.begin(), h.in.end(), v) == h.in.end() && std::find(h.out.begin(), h.out.end(), v) == h.out.end())
      h.in.push_back(v);
  for (int v : c.out) {
    h.out.push_back(v);
    p.values[size_t(v)].producer = host;
  }
  h.epilogue.push_back({c.op, c.name, c.attrs, c.kernel, c.graph_node, c.in, c.out});
  c.alive = false;
  ++p.stats.epilogues;
}

}  // namespace

void epilogue(Compilation& c) {
  if (c.opt.check_numerics) return;
  Plan& p = c.plan;
  const Readers r = readers(p);  // counts stay valid: absorbing only moves readers into the host
  std::vector<char> ordered(p.nodes.size(), 0), fetched(p.values.size(), 0);
  for (const PNode& n : p.nodes)
    if (n.alive)
      for (int a : n.after) ordered[size_t(a)] = 1;
  for (int v : p.fetch_values) fetched[size_t(v)] = 1;
  for (size_t id = 0; id < p.nodes.size(); ++id) {
    PNode& n = p.nodes[id];
    if (!n.alive || n.kind != NodeKind::kernel || !n.op || !n.op->epilogue || !n.kernel || !n.kernel->runs_epilogue ||
        n.out.size() != 1 || ordered[id] || !is_floating(p.values[size_t(n.out[0])].type.dtype))
      continue;
    const Shape rows = p.values[size_t(n.out[0])].type.shape;
    // Follow the chain of single readers: each takes the previous one's only output.
    std::vector<int> views;
    for (int tail = n.out[0]; tail >= 0;) {
      const int next = single_reader(p, r, fetched, tail, views);
      if (next < 0 || !can_absorb(p, p.nodes[size_t(next)], rows, ordered, next)) break;
      absorb(p, int(id), next, tail, views);
      tail = p.nodes[size_t(next)].out.size() == 1 ? p.nodes[size_t(next)].out[0] : -1;
    }
  }
}

}  // namespace loom
