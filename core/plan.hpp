#pragma once
// The plan IR (internal to core: the Session compiles and runs plans).
//
// compile_plan (core/plan.cpp) builds a Plan with the passes of core/passes/,
// each a small function over this IR. Nodes refer to values (node outputs)
// by id; a value has a concrete type and a layout inside a storage: an arena
// slot, a variable's buffer or a constant. View nodes only compute layouts;
// sources (constants, variables) have no step; kernel, feed and no-op nodes
// are executable and get a schedule position.

#include <climits>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/graph.hpp"
#include "core/huge_pages.hpp"
#include "core/kernel.hpp"
#include "core/session.hpp"

namespace loom {

struct PValue {
  TensorType type;
  int producer = -1;  // node id
  int storage = -1;
  Layout layout;      // element offsets relative to the storage's start
};

/// feed: a fed placeholder that CPU plans read in place from the caller's
/// array (no copy, no arena bytes); Plan::bind_feeds points it at each run's.
/// streamed: an output its node's kernel keeps only block by block in its
/// workspace (the stream pass): no memory of its own; bound with none.
enum class StorageKind : uint8_t { arena, variable, constant, feed, streamed };

/// The arrays behind a constant, variable or feed storage.
struct SourceArrays {
  NDArray array;  // constants: the value on the plan's device; variables: bound at build; feeds: this run's
  NDArray host;   // constants: the value on the host (constant folding reads it)
};

struct PStorage {
  StorageKind kind = StorageKind::arena;
  size_t bytes = 0;           // arena: rounded up to kAlignment
  size_t offset = 0;          // arena byte offset (placement)
  int first = INT_MAX;        // schedule position of the first write (lifetimes)
  int last = -1;              // schedule position of the last read (lifetimes)
  bool pinned = false;        // fetched: lives to the end of the run
  bool merged = false;        // folded into another storage by in-place reuse
  int var_node = -1;          // variables: graph node id
  std::shared_ptr<SourceArrays> source;  // constants, variables, feeds (kept apart: arena storages are most)
  std::vector<int> writers;   // executable nodes writing it, in schedule order (access)
  std::vector<int> readers;   // executable nodes reading it (access)
};

enum class NodeKind : uint8_t { kernel, view, feed, source, noop };

/// An element-wise node the epilogue pass moved inside its producer's kernel.
struct PEpilogueStep {
  const OpDef* op = nullptr;
  std::string name;
  std::shared_ptr<const Attrs> attrs;
  const KernelInfo* kernel = nullptr;
  int graph_node = -1;
  std::vector<int> in, out;  // value ids (the producer's inputs and outputs hold them too)
};

struct PNode {
  int graph_node = -1;  // -1: inserted by the planner (copies, the update barrier)
  const OpDef* op = nullptr;
  std::string name;
  std::shared_ptr<const Attrs> attrs;
  std::vector<int> in, out;  // value ids
  std::vector<int> after;    // nodes that must run first besides data producers
  NodeKind kind = NodeKind::kernel;
  const KernelInfo* kernel = nullptr;
  bool post_commit = false;  // an assign or a descendant of one
  bool writes_var = false;   // overwrites a variable: an assign, or the producer an assign was folded into
  bool alive = true;
  int pos = -1;              // schedule position (executable nodes)
  int feed = -1;             // feed nodes: index into the run's feeds
  int workspace = -1;        // arena storage of the kernel's scratch memory (-1: none)
  std::vector<PEpilogueStep> epilogue;  // run by this node's kernel on output 0's rows (epilogue pass)
};

/// The op that computes value v of node n: an epilogue step's, or n's own.
const OpDef* computing_op(const PNode& n, int v);

/// One executable step, bound to memory.
struct Step {
  KernelFn fn = nullptr;  // null: feed copy or no-op
  std::vector<NDArray> in, out;
  const Attrs* attrs = nullptr;
  const std::string* name = nullptr;
  const std::string* op = nullptr;
  uint64_t key = 0;
  int feed = -1;
  bool check = false;  // check_numerics applies to its float outputs
  bool writes_variable = false;       // deferred device checks are verified before it runs
  std::shared_ptr<const void> state;  // the kernel's prepare() result
  void* workspace = nullptr;          // the kernel's scratch memory in the arena
  size_t workspace_bytes = 0;
  std::shared_ptr<void> staging;      // feeds to a device: pinned host memory the copy starts from
  size_t staging_bytes = 0;
  std::shared_ptr<const Epilogue> epilogue;  // the node's epilogue, bound to this step's arrays
};

/// A feed read in place: its storage and the step inputs bound to it.
struct FeedBinding {
  int feed = -1;  // index into the run's feeds
  int storage = -1;
  struct Reader {
    int step, slot, value;
  };
  std::vector<Reader> readers;
};

class Plan {
 public:
  HugeVector<PNode> nodes;
  HugeVector<PValue> values;
  HugeVector<PStorage> storages;
  std::vector<int> order;                 // executable node ids by position
  std::vector<int> wave_end;              // parallel executor: per position, the last position of its wave
  HugeVector<std::vector<int>> deps;      // per position: positions that must finish first
  HugeVector<std::vector<int>> succ;      // per position: positions waiting on it
  std::vector<int> fetch_values;
  HugeVector<Step> steps;
  std::vector<FeedBinding> feed_bindings;  // bind
  std::shared_ptr<Buffer> arena;
  std::shared_ptr<DeferredChecks> checks;  // a device plan's, made by its first run (a plan runs one run at a time)
  PlanStats stats;
  Device device;

  int add_value(const TensorType& type, int producer);
  /// A storage of `bytes` (arena storages are rounded up to kAlignment).
  int add_storage(StorageKind kind, size_t bytes);
  int add_node(PNode node);

  /// NDArray of a value bound to its storage.
  NDArray bind(int value) const;
  /// Points the feeds read in place at this run's arrays (through a compact
  /// copy where one is not compact or not on the plan's device).
  void bind_feeds(const Feeds& feeds);
  PlanInfo info() const;
  /// Graphviz DOT of the plan (core/plan_dot.cpp).
  std::string dot() const;
};

/// Kernel, feed and no-op nodes that are alive run as steps.
inline bool executable(const PNode& n) {
  return n.alive && (n.kind == NodeKind::kernel || n.kind == NodeKind::feed || n.kind == NodeKind::noop);
}
/// Whether input i of n is read for its shape only (it does not extend liveness).
bool is_shape_only(const PNode& n, size_t i);

struct CompileRequest {
  Graph* graph;
  const SessionOptions* options;
  const std::vector<Tensor>* fetches;
  const Feeds* feeds;
  const std::vector<Tensor>* targets;
  /// Returns the session's (initialized) value of a variable node.
  std::function<NDArray&(int node)> variable;
};

/// Runs the pipeline of core/passes/ (their list and order: core/passes/passes.hpp).
std::unique_ptr<Plan> compile_plan(const CompileRequest& req);

}  // namespace loom
