#include "core/autodiff.hpp"

#include <algorithm>
#include <map>

namespace loom {

Tensor reduce_to_shape_of(const Tensor& g, const Tensor& like) {
  Graph& G = g.graph();
  Tensor r = g;
  if (!(g.shape() == like.shape() && is_static(g.shape()))) r = G.add1(core_op::sum_to.name(), {g, like});
  if (r.dtype() != like.dtype()) r = G.add1("cast", {r}, {{"dtype", like.dtype()}});
  return r;
}

/// x when t is transpose(x) of a 2-D x (a permute with axes {1, 0}), else invalid.
static Tensor transposed_matrix(const Tensor& t) {
  const Node& n = t.node();
  if (n.op->name != "permute" || n.attrs.ints("axes") != std::vector<int64_t>{1, 0}) return {};
  return Tensor(&t.graph(), n.inputs[0].node, n.inputs[0].index);
}

/// For a term transpose(a) @ b (2-D) sets a and b; for transpose(transpose(a) @ b)
/// (the form matmul's gradient takes for a transposed weight, nn::Linear's and
/// the RNNs' W^T) also sets `outer`. Returns false for any other term.
static bool matmul_term(const Tensor& t, Tensor& a, Tensor& b, bool& outer) {
  Tensor m = t;
  outer = false;
  if (Tensor inner = transposed_matrix(t); inner.valid()) m = inner, outer = true;
  const Node& n = m.node();
  if (n.op->name != "matmul" || m.ndim() != 2) return false;
  a = transposed_matrix(Tensor(&m.graph(), n.inputs[0].node, n.inputs[0].index));
  b = Tensor(&m.graph(), n.inputs[1].node, n.inputs[1].index);
  return a.valid() && a.ndim() == 2 && b.ndim() == 2;
}

/// A weight used by many matmuls (an unrolled RNN's hidden weight, a tied
/// embedding) gets gradient terms transpose(a_i) @ b_i of one shape (or their
/// transposes). Their sum is one GEMM over the stacked rows,
/// transpose(concat(a_i)) @ concat(b_i): one large GEMM instead of k small
/// ones and k - 1 additions. Returns the terms left over, with the merged
/// products appended.
static std::vector<Tensor> merge_matmul_terms(const std::vector<Tensor>& ts) {
  struct Group {
    std::vector<Tensor> terms, as, bs;
  } groups[2];  // plain and transposed terms
  std::vector<Tensor> rest;
  for (const Tensor& t : ts) {
    Tensor a, b;
    bool outer = false;
    const bool term = matmul_term(t, a, b, outer);
    Group& g = groups[outer ? 1 : 0];
    if (term && (g.as.empty() || (a.shape()[1] == g.as[0].shape()[1] && b.shape()[1] == g.bs[0].shape()[1])))
      g.terms.push_back(t), g.as.push_back(a), g.bs.push_back(b);
    else
      rest.push_back(t);
  }
  Graph& graph = ts[0].graph();
  auto transpose2 = [&](const Tensor& x) { return graph.add1("permute", {x}, {{"axes", std::vector<int64_t>{1, 0}}}); };
  for (int outer : {0, 1}) {
    const Group& g = groups[outer];
    if (g.terms.size() < 3) {  // too few to pay for the concats
      rest.insert(rest.end(), g.terms.begin(), g.terms.end());
      continue;
    }
    Tensor at = transpose2(graph.add1("concat", g.as, {{"axis", int64_t(0)}}));
    Tensor m = graph.add1("matmul", {at, graph.add1("concat", g.bs, {{"axis", int64_t(0)}})});
    rest.push_back(outer ? transpose2(m) : m);
  }
  return rest;
}

static Tensor sum_all(const std::vector<Tensor>& terms) {
  std::vector<Tensor> ts = terms.size() >= 3 ? merge_matmul_terms(terms) : terms;
  Tensor acc = ts[0];
  for (size_t i = 1; i < ts.size(); ++i) acc = acc.graph().add1("add", {acc, ts[i]});
  return acc;
}

namespace {
void check_gradient_args(const Tensor& y, const std::vector<Tensor>& xs, const Tensor& dy) {
  LOOM_CHECK(y.valid(), "gradients: y is an empty Tensor handle");
  Graph& g = y.graph();
  LOOM_CHECK(is_floating(y.dtype()), "gradients: y '", y.name(), "' has dtype ", dtype_name(y.dtype()),
             "; only floating tensors can be differentiated");
  for (const Tensor& x : xs)
    LOOM_CHECK(x.valid() && &x.graph() == &g, "gradients: x ", x.valid() ? "'" + x.name() + "' " : "",
               "is not a tensor of y's graph");
  if (!dy.valid()) return;
  LOOM_CHECK(&dy.graph() == &g && dy.dtype() == y.dtype(), "gradients: dy '", dy.name(),
             "' must be in y's graph with y's dtype ", dtype_name(y.dtype()));
  bool fits = dy.ndim() == y.ndim();  // as PyTorch: dy has y's shape (unknown dims match any)
  for (size_t i = 0; fits && i < y.shape().size(); ++i)
    fits = dy.shape()[i] == y.shape()[i] || dy.shape()[i] < 0 || y.shape()[i] < 0;
  LOOM_CHECK(fits, "gradients: dy '", dy.name(), "' has shape ", shape_str(dy.shape()), ", y '", y.name(),
             "' has shape ", shape_str(y.shape()), "; they must be equal");
}

/// The nodes on a path x -> y: reachable from some x (forward) and reaching y (backward).
struct OnPath {
  int lowest, top;
  std::vector<char> from_x, to_y;
  OnPath(const Graph& g, const std::vector<Tensor>& xs, int y) : lowest(y + 1), top(y) {
    from_x.assign(size_t(top + 1), 0);
    to_y.assign(size_t(top + 1), 0);
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
  }
  bool operator()(int id) const { return id >= lowest && id <= top && from_x[size_t(id)] && to_y[size_t(id)]; }
};

using Contributions = std::map<std::pair<int, int>, std::vector<Tensor>>;

/// Node id's op gradient applied to the summed gradients of its outputs; each
/// input's share goes into contrib.
void backprop_node(Graph& g, int id, const OnPath& relevant, Contributions& contrib) {
  const Node& n = g.node(id);
  std::vector<Tensor> douts(n.outputs.size());
  bool any = false;
  for (size_t i = 0; i < n.outputs.size(); ++i) {
    auto it = contrib.find({id, int(i)});
    if (it == contrib.end()) continue;
    douts[i] = sum_all(it->second);
    it->second = {douts[i]};
    any = true;
  }
  if (!any || !n.op->grad) return;
  bool wanted = false;
  for (const Edge& e : n.inputs) wanted |= relevant(e.node);
  if (!wanted) return;
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
}  // namespace

std::vector<Tensor> gradients(const Tensor& y, const std::vector<Tensor>& xs, const Tensor& dy,
                              const GradientOptions& options) {
  check_gradient_args(y, xs, dy);
  Graph& g = y.graph();
  const OnPath relevant(g, xs, y.node_id());
  auto guard = g.scope("gradients");
  Contributions contrib;
  contrib[{y.node_id(), y.index()}].push_back(dy.valid() ? dy : g.add1(core_op::full.name(), {y}, {{"value", 1.0}}));
  for (int id = relevant.top; id >= relevant.lowest; --id)
    if (relevant(id)) backprop_node(g, id, relevant, contrib);

  std::vector<Tensor> result;
  for (const Tensor& x : xs) {
    auto it = contrib.find({x.node_id(), x.index()});
    if (it != contrib.end() && !it->second.empty()) result.push_back(sum_all(it->second));
    else if (options.unreachable_as_zero) result.push_back(g.add1(core_op::full.name(), {x}, {{"value", 0.0}}));
    else result.emplace_back();
  }
  return result;
}

}  // namespace loom
