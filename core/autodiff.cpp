#include "core/autodiff.hpp"

#include <algorithm>
#include <map>

namespace loom {

Tensor reduce_to_shape_of(const Tensor& g, const Tensor& like) {
  Graph& G = g.graph();
  Tensor r = g;
  if (!(g.shape() == like.shape() && is_static(g.shape()))) r = G.add1("sum_to", {g, like});
  if (r.dtype() != like.dtype()) r = G.add1("cast", {r}, {{"dtype", like.dtype()}});
  return r;
}

/// x when t is transpose(x) of a 2-D x (a permute with axes {1, 0}), else invalid.
static Tensor transposed_matrix(const Tensor& t) {
  const Node& n = t.node();
  if (n.op->name != "permute" || n.attrs.ints("axes") != std::vector<int64_t>{1, 0}) return {};
  return Tensor(&t.graph(), n.inputs[0].node, n.inputs[0].index);
}

/// A weight used by many matmuls (an unrolled RNN's hidden weight, a tied
/// embedding) gets gradient terms transpose(a_i) @ b_i of one shape. Their
/// sum is one GEMM over the stacked rows, transpose(concat(a_i)) @ concat(b_i):
/// one large GEMM instead of k small ones and k - 1 additions. Returns the
/// terms left over, with the merged product appended.
static std::vector<Tensor> merge_matmul_terms(const std::vector<Tensor>& ts) {
  std::vector<Tensor> as, bs, rest;
  for (const Tensor& t : ts) {
    const Node& n = t.node();
    Tensor a, b;
    if (n.op->name == "matmul" && t.ndim() == 2) {
      a = transposed_matrix(Tensor(&t.graph(), n.inputs[0].node, n.inputs[0].index));
      b = Tensor(&t.graph(), n.inputs[1].node, n.inputs[1].index);
    }
    const bool fits = a.valid() && a.ndim() == 2 && b.ndim() == 2 &&
                      (as.empty() || (a.shape()[1] == as[0].shape()[1] && b.shape()[1] == bs[0].shape()[1]));
    if (fits) as.push_back(a), bs.push_back(b);
    else rest.push_back(t);
  }
  if (as.size() < 3) return ts;
  Graph& g = ts[0].graph();
  Tensor at = g.add1("permute", {g.add1("concat", as, {{"axis", int64_t(0)}})}, {{"axes", std::vector<int64_t>{1, 0}}});
  rest.push_back(g.add1("matmul", {at, g.add1("concat", bs, {{"axis", int64_t(0)}})}));
  return rest;
}

static Tensor sum_all(const std::vector<Tensor>& terms) {
  std::vector<Tensor> ts = terms.size() >= 3 ? merge_matmul_terms(terms) : terms;
  Tensor acc = ts[0];
  for (size_t i = 1; i < ts.size(); ++i) acc = acc.graph().add1("add", {acc, ts[i]});
  return acc;
}

std::vector<Tensor> gradients(const Tensor& y, const std::vector<Tensor>& xs, const Tensor& dy,
                              const GradientOptions& options) {
  LOOM_CHECK(y.valid(), "gradients: y is an empty Tensor handle");
  Graph& g = y.graph();
  LOOM_CHECK(is_floating(y.dtype()), "gradients: y '", y.name(), "' has dtype ", dtype_name(y.dtype()),
             "; only floating tensors can be differentiated");
  for (const Tensor& x : xs)
    LOOM_CHECK(x.valid() && &x.graph() == &g, "gradients: x ", x.valid() ? "'" + x.name() + "' " : "",
               "is not a tensor of y's graph");
  if (dy.valid())
    LOOM_CHECK(&dy.graph() == &g && dy.dtype() == y.dtype(), "gradients: dy '", dy.name(),
               "' must be in y's graph with y's dtype ", dtype_name(y.dtype()));

  // Nodes on a path x -> y: reachable from some x (forward) and reaching y (backward).
  const int top = y.node_id();
  std::vector<char> from_x(size_t(top + 1), 0), to_y(size_t(top + 1), 0);
  int lowest = top + 1;
  for (const Tensor& x : xs)
    if (x.node_id() <= top) from_x[size_t(x.node_id())] = 1, lowest = std::min(lowest, x.node_id());
  for (int id = lowest; id <= top; ++id) {
    if (from_x[size_t(id)]) continue;
    for (const Edge& e : g.node(id).inputs)
      if (e.node >= lowest && from_x[size_t(e.node)]) {
        from_x[size_t(id)] = 1;
        break;
      }
  }
  to_y[size_t(top)] = 1;
  for (int id = top; id >= lowest; --id) {
    if (!to_y[size_t(id)]) continue;
    for (const Edge& e : g.node(id).inputs) to_y[size_t(e.node)] = 1;
  }
  auto relevant = [&](int id) { return id >= lowest && id <= top && from_x[size_t(id)] && to_y[size_t(id)]; };

  auto guard = g.scope("gradients");
  std::map<std::pair<int, int>, std::vector<Tensor>> contrib;
  contrib[{y.node_id(), y.index()}].push_back(dy.valid() ? dy : g.add1("full", {y}, {{"value", 1.0}}));

  for (int id = top; id >= lowest; --id) {
    if (!relevant(id)) continue;
    const Node& n = g.node(id);
    std::vector<Tensor> douts(n.outputs.size());
    bool any = false;
    for (size_t i = 0; i < n.outputs.size(); ++i) {
      auto it = contrib.find({id, int(i)});
      if (it != contrib.end()) {
        douts[i] = sum_all(it->second);
        it->second = {douts[i]};
        any = true;
      }
    }
    if (!any || !n.op->grad) continue;
    bool wanted = false;
    for (const Edge& e : n.inputs) wanted |= relevant(e.node);
    if (!wanted) continue;
    std::vector<Tensor> ins, outs;
    for (const Edge& e : n.inputs) ins.emplace_back(&g, e.node, e.index);
    for (size_t i = 0; i < n.outputs.size(); ++i) outs.emplace_back(&g, id, int(i));
    GradContext ctx{n, ins, outs, douts, n.attrs};
    std::vector<Tensor> gin = n.op->grad(ctx);
    LOOM_ASSERT(gin.size() == ins.size(), "gradient of ", n.op->name, " returned ", gin.size(), " values for ",
                ins.size(), " inputs");
    for (size_t i = 0; i < ins.size(); ++i) {
      if (!gin[i].valid() || !relevant(ins[i].node_id()) || !is_floating(ins[i].dtype())) continue;
      contrib[{ins[i].node_id(), ins[i].index()}].push_back(reduce_to_shape_of(gin[i], ins[i]));
    }
  }

  std::vector<Tensor> result;
  for (const Tensor& x : xs) {
    auto it = contrib.find({x.node_id(), x.index()});
    if (it != contrib.end() && !it->second.empty()) result.push_back(sum_all(it->second));
    else if (options.unreachable_as_zero) result.push_back(g.add1("full", {x}, {{"value", 0.0}}));
    else result.emplace_back();
  }
  return result;
}

}  // namespace loom
