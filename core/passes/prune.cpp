// prune
//   reads:       the graph, the run's fetches, targets and feeds
//   establishes: Compilation::needed (the graph nodes the fetches and targets
//                reach through inputs and control edges) and feed_of; every
//                fetch, target and feed is checked (graph, node, output, dtype,
//                shape), and every needed placeholder is fed.

#include "core/passes/passes.hpp"

namespace loom {

namespace {

bool shape_fits(const Shape& declared, const Shape& actual) {
  if (declared.size() != actual.size()) return false;
  for (size_t i = 0; i < declared.size(); ++i)
    if (declared[i] >= 0 && declared[i] != actual[i]) return false;
  return true;
}

void check_tensor(const Compilation& c, const Tensor& t, const char* what) {
  LOOM_CHECK(t.valid(), "run: ", what, " is an empty Tensor handle");
  LOOM_CHECK(&t.graph() == &c.graph, "run: ", what, " '", t.name(), "' belongs to another graph than this session's");
  LOOM_CHECK(t.node_id() >= 0 && t.node_id() < c.graph_size, "run: ", what, " refers to unknown node ", t.node_id());
}

void check_feeds(Compilation& c) {
  c.feed_of.assign(size_t(c.graph_size), -1);
  for (size_t i = 0; i < c.req.feeds->size(); ++i) {
    const auto& [t, a] = (*c.req.feeds)[i];
    check_tensor(c, t, "feed");
    const Node& n = t.node();
    LOOM_CHECK(n.op == core_op::placeholder, "feed '", n.name, "': only placeholders can be fed (it is a ", n.op->name,
               ")");
    LOOM_CHECK(c.feed_of[size_t(n.id)] < 0, "feed '", n.name, "': fed twice");
    LOOM_CHECK(a.defined(), "feed '", n.name, "': undefined NDArray");
    const TensorType& want = n.outputs[0];
    LOOM_CHECK(a.dtype() == want.dtype, "feed '", n.name, "': expected dtype ", dtype_name(want.dtype), ", got ",
               dtype_name(a.dtype()));
    LOOM_CHECK(shape_fits(want.shape, a.shape()), "feed '", n.name, "': expected shape ", shape_str(want.shape),
               ", got ", shape_str(a.shape()));
    c.feed_of[size_t(n.id)] = int(i);
  }
}

}  // namespace

void prune(Compilation& c) {
  for (const Tensor& t : *c.req.fetches) {
    check_tensor(c, t, "fetch");
    LOOM_CHECK(t.index() >= 0 && size_t(t.index()) < t.node().outputs.size(), "run: fetch '", t.node().name,
               "' has no output ", t.index(), " (use it as a target)");
  }
  for (const Tensor& t : *c.req.targets) check_tensor(c, t, "target");
  check_feeds(c);
  // Graph ids are a topological order (inputs exist before their users): one
  // sweep from the last node back marks what the fetches and targets reach.
  c.needed.assign(size_t(c.graph_size), 0);
  for (const Tensor& t : *c.req.fetches) c.needed[size_t(t.node_id())] = 1;
  for (const Tensor& t : *c.req.targets) c.needed[size_t(t.node_id())] = 1;
  for (int id = c.graph_size - 1; id >= 0; --id) {
    if (!c.needed[size_t(id)]) continue;
    const Node& n = c.graph.node(id);
    if (n.op == core_op::placeholder) {
      const TensorType& t = n.outputs[0];
      LOOM_CHECK(c.feed_of[size_t(id)] >= 0, "placeholder '", n.name, "' (", dtype_name(t.dtype), shape_str(t.shape),
                 ") must be fed for this run");
      continue;
    }
    for (const Edge& e : n.inputs) c.needed[size_t(e.node)] = 1;
    for (int k : n.control) c.needed[size_t(k)] = 1;
  }
}

}  // namespace loom
