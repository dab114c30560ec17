#pragma once
// A compiled plan (internal to core: the Session builds and runs it).
//
// Nodes are in a topological order. Values are node outputs with concrete
// types and a layout inside a storage: an arena slot, a variable's buffer or
// a constant. View nodes only compute layouts; sources (constants,
// variables) have no step; kernel, feed and no-op nodes are executable and
// get a schedule position.

#include <climits>
#include <memory>
#include <string>
#include <vector>

#include "core/graph.hpp"
#include "core/kernel.hpp"
#include "core/session.hpp"

namespace loom {

struct PValue {
  TensorType type;
  int producer = -1;  // node index
  int storage = -1;
  Layout layout;      // element offsets relative to the storage's start
};

enum class StorageKind : uint8_t { arena, variable, constant };

struct PStorage {
  StorageKind kind = StorageKind::arena;
  size_t bytes = 0;           // arena: rounded up to kAlignment
  size_t offset = 0;          // arena byte offset
  int first = INT_MAX;        // schedule position of the first write
  int last = -1;              // schedule position of the last read
  bool pinned = false;        // fetched: lives to the end of the run
  bool merged = false;        // folded into another storage by in-place reuse
  int var_node = -1;          // variables: graph node id
  NDArray array;              // constants: the value; variables: bound at build
  std::vector<int> writers;   // executable nodes writing it, in schedule order
  std::vector<int> readers;   // executable nodes reading it
};

enum class NodeKind : uint8_t { kernel, view, feed, source, noop };

struct PNode {
  int graph_node = -1;  // -1: inserted by the planner (copies, fused kernels, barrier)
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
};

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
  std::shared_ptr<const void> state;  // the kernel's prepare() result
  void* workspace = nullptr;          // the kernel's scratch memory in the arena
  size_t workspace_bytes = 0;
  std::shared_ptr<void> staging;      // feeds to a device: pinned host memory the copy starts from
  size_t staging_bytes = 0;
};

class Plan {
 public:
  std::vector<PNode> nodes;
  std::vector<PValue> values;
  std::vector<PStorage> storages;
  std::vector<int> order;                 // executable node ids by position
  std::vector<int> wave_end;              // parallel executor: per position, the last position of its wave
  std::vector<std::vector<int>> deps;     // per position: positions that must finish first
  std::vector<std::vector<int>> succ;     // per position: positions waiting on it
  std::vector<int> fetch_values;
  std::vector<Step> steps;
  std::shared_ptr<Buffer> arena;
  PlanStats stats;
  Device device;

  /// NDArray of a value bound to its storage.
  NDArray bind(int value) const;
  PlanInfo info() const;
  std::string dot() const;
};

struct CompileRequest {
  Graph* graph;
  const SessionOptions* options;
  const std::vector<Tensor>* fetches;
  const Feeds* feeds;
  const std::vector<Tensor>* targets;
  /// Returns the session's (initialized) value of a variable node.
  std::function<NDArray&(int node)> variable;
};

std::unique_ptr<Plan> compile_plan(const CompileRequest& req);

// Planning stages (core/schedule.cpp).
void schedule_plan(Plan& p, const SessionOptions& o);
void plan_memory(Plan& p, const SessionOptions& o);

}  // namespace loom
