#pragma once
// The plan compiler's passes, in the order compile_plan runs them. Each is one
// file in this folder that opens with what it reads and what it establishes;
// each can be run alone on a Compilation (the tests do), and the optional ones
// can be switched off (SessionOptions::disable_passes) with identical results.
//
//   prune            graph, fetches, targets, feeds -> the nodes the run needs; feeds checked
//   lower            needed nodes -> plan nodes with concrete types, layouts, storages, kernels
//   cse*             equal nodes (op, attributes, inputs) and equal small constants merged
//   fold*            kernel nodes whose inputs are all constants evaluated at compile time
//   dce              nodes the fetches and targets no longer need marked dead
//   fusion*          element-wise groups into fused nodes
//   epilogue*        element-wise readers of an output that accepts an epilogue run inside its kernel
//   assign_in_place* producers of assigned values write the variable directly
//   stream*          an output only its epilogue reads, which writes variables, kept block by block
//   order_updates    variable reads before their updates; updates last (atomic updates)
//   access           which steps write and read each storage
//   schedule         a topological order (memory-greedy, or by waves for the parallel executor)
//   remat*           over SessionOptions::memory_budget: forward nodes recomputed before their late readers
//   lifetimes        first write and last read of each storage; the plan's statistics
//   inplace*         element-wise outputs take over inputs that die at their node
//   placement        arena offsets: a pure function of the lifetimes; the lower bound
//   hazards          write-after-read edges between buffers sharing bytes; successor lists
//   bind             the arena and one bound step per executable node
//
// (* optional)

#include <span>
#include <string_view>

#include "core/plan.hpp"

namespace loom {

/// The state of one compilation, shared by the passes.
struct Compilation {
  const CompileRequest& req;
  const SessionOptions& opt;
  Graph& graph;
  Plan& plan;
  const int graph_size;      // nodes of the graph when compiling started (it may grow meanwhile)
  std::vector<char> needed;  // prune: graph nodes the run needs
  std::vector<int> feed_of;  // prune: graph node -> index into the run's feeds, or -1
  std::vector<int> targets;  // lower: plan nodes of the run's targets

  Compilation(const CompileRequest& r, Plan& p)
      : req(r), opt(*r.options), graph(*r.graph), plan(p), graph_size(r.graph->size()) {}
};

struct Pass {
  std::string_view name;
  void (*run)(Compilation&);
  bool optional;  // may be switched off; the results stay identical
  // Reads nothing the next pass writes and writes nothing it reads: the two
  // run at once where the session has a second thread.
  bool overlaps_next = false;
};

/// The pipeline, in order.
std::span<const Pass> plan_passes();
/// Whether `pass` runs under options `o` (optional passes can be disabled by
/// name in disable_passes, or by the older switches cse/constant_folding/fusion).
bool pass_enabled(const Pass& pass, const SessionOptions& o);
/// Throws loom::Error for a name in o.disable_passes that is no optional pass.
void check_disabled_passes(const SessionOptions& o);

void prune(Compilation& c);
void lower(Compilation& c);
void cse(Compilation& c);
void fold(Compilation& c);
void dce(Compilation& c);
void fusion(Compilation& c);
void epilogue(Compilation& c);
void assign_in_place(Compilation& c);
void stream(Compilation& c);
void order_updates(Compilation& c);
void access(Compilation& c);
void schedule(Compilation& c);
void remat(Compilation& c);
void lifetimes(Compilation& c);
void inplace(Compilation& c);
void placement(Compilation& c);
void hazards(Compilation& c);
void bind(Compilation& c);

// ---- placement as a pure function (core/passes/placement.cpp)

/// A buffer to place: `bytes`, live over schedule positions [first, last].
struct Lifetime {
  size_t bytes = 0;
  int first = 0, last = 0;
};
struct Placement {
  std::vector<size_t> offsets;  // one per lifetime
  size_t arena = 0;             // bytes spanned
};
/// Offsets such that buffers live at the same time never share bytes, by
/// `strategy` (greedy_by_size, greedy_by_area, greedy_by_time or naive; not best).
Placement place(std::span<const Lifetime> items, MemoryStrategy strategy);
/// The most bytes live at once: no placement of these lifetimes is smaller.
size_t lower_bound(std::span<const Lifetime> items);
/// MemoryStrategy::best: the smallest of greedy_by_time, greedy_by_size and
/// greedy_by_area (the last two while the overlapping pairs are few enough)
/// and, when that misses `budget` (bytes; 0: none) though the lower bound
/// meets it, of four more greedy orders; each order's name and arena in `tried`.
struct BestPlacement {
  Placement placement;
  std::string strategy;
  std::vector<std::pair<std::string, size_t>> tried;
};
BestPlacement place_best(std::span<const Lifetime> items, size_t budget);

// ---- rematerialization (core/passes/remat.cpp)

/// A set of nodes to recompute and what it gives.
struct RematPlan {
  std::vector<int> nodes;  // plan node ids recomputed
  size_t arena = 0;        // the arena of the plan with them recomputed
  double flops = 0;        // operations added to a run
  std::string strategy;
};
/// The nodes that may be recomputed in the scheduled plan of `c` (after schedule).
std::vector<int> remat_candidates(const Compilation& c);
/// The arena and added cost of recomputing `nodes` in c's scheduled plan.
RematPlan remat_evaluate(const Compilation& c, std::vector<int> nodes);
/// Every subset of the candidates before the peak (at most 20): the cheapest plan within
/// `budget`, else the one with the smallest arena. The tests' oracle.
RematPlan remat_exact(const Compilation& c, size_t budget);
/// One strategy (chen, greedy, or automatic: the cheaper that fits) for `budget`.
RematPlan remat_search(const Compilation& c, size_t budget, Remat strategy);
/// A floor under every arena recomputation can reach with these kernels: the
/// most bytes one node needs at once (its arena inputs, outputs and
/// workspace, less an output it may write over an input), or the fetched
/// values, all live at the end.
struct RematFloor {
  size_t bytes = 0;
  std::string what;  // "node 'name' (op)" or "the fetched values"
};
RematFloor remat_floor(const Plan& p, const SessionOptions& o);

// ---- shared by the passes

/// Sets Plan::order, PNode::pos and Plan::deps (data and control edges) for
/// an order of the executable nodes.
void set_order(Plan& p, std::vector<int> order);
/// Improves a serial plan's order for memory: nodes that free bytes, with the
/// producers only they read, move up to right after their other predecessors.
/// `both_ways`: also tries the nodes last to first (a move changes which later
/// ones pay) and keeps the order with fewer live bytes.
void reorder_for_memory(Plan& p, bool both_ways = false);

/// The alive nodes in a topological order of their data and control edges
/// (ties broken by node id; reads for the shape only are no edges). Fusion
/// leaves node ids out of order.
std::vector<int> topological_order(const Plan& p);

/// Per index (a node or value id), a list of ids, in two flat arrays (no
/// allocation per index: the planner builds these for every node of every plan).
struct Adjacency {
  std::vector<int> start{0}, items;
  /// Ends the list of the next node id (its items were appended).
  void close() { start.push_back(int(items.size())); }
  size_t size() const { return start.size() - 1; }
  std::span<const int> operator[](size_t i) const {
    return {items.data() + start[i], items.data() + start[i + 1]};
  }
  /// The lists the other way round: j in t[i] for each i in (*this)[j] (items
  /// and indices are ids of one kind, as node -> nodes).
  Adjacency transpose() const;
};

/// A topological order of `nodes` by Kahn's algorithm: among ready nodes, the
/// smallest priority(i) (a Key) first. priority may change as nodes are
/// emitted: a popped node whose priority changed is queued again (lazy
/// refresh), so it must only change for the better. on_emit(i) runs when i is
/// emitted. (Callables are template parameters: this runs once per node of
/// every plan, where an indirect call per node shows in compile times.)
struct NoEmit {
  void operator()(int) const {}
};
template <class Key, class Priority, class OnEmit = NoEmit>
std::vector<int> kahn_order(const std::vector<int>& nodes, const Adjacency& preds, const Adjacency& succs,
                            Priority&& priority, OnEmit&& on_emit = {});

}  // namespace loom

#include "core/passes/kahn.hpp"
