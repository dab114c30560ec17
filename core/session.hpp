#pragma once
/// Session: runs a graph. Each distinct run signature (fetches, targets, feed
/// shapes and dtypes) is compiled once into a Plan and cached:
///   prune -> graph passes (CSE, constant folding, element-wise fusion) ->
///   concrete shapes -> layouts (views take no memory) -> schedule ->
///   static memory plan (one arena, offsets, in-place reuse) -> kernels.
/// Variables live in the session across runs.

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/graph.hpp"
#include "core/ndarray.hpp"

namespace loom {

enum class Executor { serial, parallel };

/// How the planner assigns arena offsets. `best` tries the greedy ones and
/// keeps the smallest arena; `naive` gives every tensor its own bytes (a
/// baseline). greedy_by_area places the buffers with the most bytes times
/// steps live first.
enum class MemoryStrategy { best, greedy_by_size, greedy_by_time, naive, greedy_by_area };
std::string_view strategy_name(MemoryStrategy s);

/// Rematerialization (core/passes/remat.cpp): when the plan's arena exceeds
/// SessionOptions::memory_budget, forward nodes are recomputed in the backward
/// pass instead of keeping their outputs live. `automatic` ("auto") tries
/// every strategy and keeps the cheapest plan that fits; `chen` (Chen et al.
/// 2016's sqrt(n) segments) and `greedy` (cost per byte at the peak) run one.
enum class Remat { off, automatic, chen, greedy };
std::string_view remat_name(Remat r);

struct SessionOptions {
  Device device = Device::cpu();
  /// Threads for kernels and the parallel executor; 0 = all hardware threads.
  int threads = 0;
  static constexpr int kMaxThreads = 4096;
  Executor executor = Executor::serial;
  MemoryStrategy memory = MemoryStrategy::best;
  uint64_t seed = 0;
  /// Name the first node producing NaN/Inf (slower: scans every float output;
  /// turns fusion off so that every node is checked on its own).
  bool check_numerics = false;
  /// Record per-node times (stats().node_times) and the trace of the last run.
  bool profile = false;
  /// Graph passes; results are identical with and without.
  bool cse = true;
  bool constant_folding = true;
  bool fusion = true;
  /// Run all variable updates (assign) after everything that does not depend
  /// on them, so a run that fails (e.g. check_numerics) leaves variables as
  /// they were. Off: updates run as early as possible (less memory).
  bool atomic_updates = true;
  /// Compiled plans kept, one per run signature; the least recently used is
  /// dropped beyond this (stats().plans_evicted). 0: keep every plan.
  size_t max_cached_plans = 32;
  /// Optional plan passes to switch off by name (core/passes/passes.hpp):
  /// cse, fold, fusion, epilogue, assign_in_place, inplace. Results stay identical.
  std::vector<std::string> disable_passes = {};
  /// Bytes the plan's arena may take (0: no limit). Over it, a plan is
  /// recomputed under `remat`, or compiling it fails (loom::Error naming the
  /// smallest arena reached, and the floor no recomputation goes below).
  /// Results are bit-identical with and without.
  size_t memory_budget = 0;
  Remat remat = Remat::off;
};

/// Feeds for one run: placeholder and value.
using Feeds = std::vector<std::pair<Tensor, NDArray>>;

struct PlanStats {
  double compile_ms = 0;
  int graph_nodes = 0;          // nodes the fetches need
  int nodes_after_passes = 0;   // after CSE, folding and fusion
  int cse_merged = 0, folded = 0, fused = 0;
  int steps = 0;                // kernels executed per run
  size_t arena_bytes = 0;
  size_t lower_bound_bytes = 0;  // max over the schedule of live bytes
  size_t naive_bytes = 0;        // every tensor its own buffer
  std::string memory_strategy;
  std::vector<std::pair<std::string, size_t>> strategy_arenas;  // each strategy tried
  int host_copies = 0;           // nodes run on the host (no kernel on the device; inputs and outputs copied)
  int epilogues = 0;             // element-wise nodes run inside their producer's kernel (epilogue pass)
  int streamed = 0;              // outputs kept block by block under their epilogue (stream pass)
  std::vector<std::pair<std::string, double>> pass_ms;  // each pass the plan compiler ran, with its time
  // Rematerialization (remat pass, with a memory_budget): the arena without
  // it, the strategy kept ("" when nothing is recomputed), nodes recomputed
  // and their cost in FLOPs over the plan's total, and the floor under any
  // recomputation.
  size_t arena_without_remat = 0;
  std::string remat_strategy;
  int recomputed = 0;
  double recompute_flops = 0, plan_flops = 0;
  size_t remat_floor = 0;       // no recomputation goes below: the most one node needs at once
  std::string remat_floor_at;  // that node ("node 'name' (op)") or "the fetched values"
};

struct NodeTime {
  std::string name, op;
  int64_t calls = 0;
  double total_us = 0;
};

struct SessionStats {
  int plans_compiled = 0;        // includes extra copies compiled for concurrent runs of one signature
  int plan_cache_hits = 0;
  int plans_evicted = 0;         // dropped by the max_cached_plans bound
  int plans_cached = 0;          // signatures in the cache now
  int64_t runs = 0;
  PlanStats last_plan;
  std::vector<NodeTime> node_times;  // when profiling, sorted by total time
};

/// Read-only view of a compiled plan, for verifiers, benchmarks and tools.
struct PlanInfo {
  struct Buffer {
    size_t offset = 0, bytes = 0;
    int first = 0, last = 0;           // schedule positions: first write, last read
    std::vector<int> writers, readers; // step indices
  };
  struct Step {
    std::string name, op;
    std::vector<int> deps;  // steps that must finish before this one (all edges)
  };
  std::vector<Step> steps;      // in schedule order
  std::vector<Buffer> buffers;  // arena buffers
  size_t arena_bytes = 0;
};

class Plan;

/// Threads: run(), get(), set(), initialize(), stats() and the exports may be
/// called from several threads at once. Runs that write no variable run
/// concurrently (each on its own copy of the plan and its arena); runs that
/// write variables (assign), set() and initialize() run alone. The graph may
/// grow meanwhile: a run uses only the nodes it needs.
class Session {
 public:
  explicit Session(Graph& graph, SessionOptions options = {});
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  /// Runs what `fetches` and `targets` need; returns host arrays for the fetches.
  std::vector<NDArray> run(const std::vector<Tensor>& fetches, const Feeds& feeds = {},
                           const std::vector<Tensor>& targets = {});
  NDArray run1(const Tensor& fetch, const Feeds& feeds = {});

  /// (Re)initializes every variable of the graph (or those given) from its initializer.
  void initialize();
  void initialize(const std::vector<Tensor>& variables);
  bool initialized(const Tensor& variable) const;
  /// A host copy of a variable's value (initializing it first if needed).
  NDArray get(const Tensor& variable);
  /// Overwrites a variable; shape and dtype must match.
  void set(const Tensor& variable, const NDArray& value);

  const SessionOptions& options() const { return options_; }
  Graph& graph() const { return graph_; }
  SessionStats stats() const;
  /// The plan of the last run (compiled if needed for the given signature).
  PlanInfo plan_info(const std::vector<Tensor>& fetches, const Feeds& feeds = {},
                     const std::vector<Tensor>& targets = {});
  /// Chrome trace JSON of the last profiled run (open in Perfetto or chrome://tracing):
  /// one event per step, with the process's and threads' names.
  void export_trace(const std::string& path) const;
  /// The same JSON as a string (to merge several runs, say).
  std::string trace_json() const;
  /// Graphviz DOT of the last run's plan: shapes, devices, buffer offsets.
  void export_dot(const std::string& path) const;

 private:
  friend class Plan;
  struct Lease;
  Lease acquire(const std::vector<Tensor>& fetches, const Feeds& feeds, const std::vector<Tensor>& targets);
  void release(Lease& lease);
  NDArray& variable_value(int node);  // caller holds the state lock exclusively when it may create one

  Graph& graph_;
  SessionOptions options_;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace loom
