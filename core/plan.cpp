// The plan compiler's driver: runs the passes of core/passes/ in order (their
// list is in core/passes/passes.hpp), and the Plan's small accessors.

#include "core/plan.hpp"

#include <algorithm>
#include <chrono>

#include "core/parallel.hpp"
#include "core/passes/passes.hpp"

namespace loom {

namespace {

constexpr Pass kPasses[] = {
    {"prune", &prune, false},
    {"lower", &lower, false},
    {"cse", &cse, true},
    {"fold", &fold, true},
    {"dce", &dce, false},
    {"fusion", &fusion, true},
    {"epilogue", &epilogue, true},
    {"assign_in_place", &assign_in_place, true},
    {"stream", &stream, true},
    {"order_updates", &order_updates, false},
    {"access", &access, false},
    {"schedule", &schedule, false},
    {"remat", &remat, true},
    {"lifetimes", &lifetimes, false},
    {"inplace", &inplace, true},
    {"placement", &placement, false},
    {"hazards", &hazards, false, true},  // writes deps and succ; bind writes the arena and steps
    {"bind", &bind, false},
};

}  // namespace

std::span<const Pass> plan_passes() { return kPasses; }

std::string_view strategy_name(MemoryStrategy s) {
  switch (s) {
    case MemoryStrategy::best: return "best";
    case MemoryStrategy::greedy_by_size: return "greedy_by_size";
    case MemoryStrategy::greedy_by_time: return "greedy_by_time";
    case MemoryStrategy::naive: return "naive";
    case MemoryStrategy::greedy_by_area:
      return "greedy_by_area";
  }
  return "?";
}

bool pass_enabled(const Pass& pass, const SessionOptions& o) {
  if (!pass.optional) return true;
  if ((pass.name == "cse" && !o.cse) || (pass.name == "fold" && !o.constant_folding) ||
      (pass.name == "fusion" && !o.fusion))
    return false;
  return std::find(o.disable_passes.begin(), o.disable_passes.end(), pass.name) == o.disable_passes.end();
}

void check_disabled_passes(const SessionOptions& o) {
  for (const std::string& name : o.disable_passes) {
    auto it = std::find_if(std::begin(kPasses), std::end(kPasses), [&](const Pass& p) { return p.name == name; });
    if (it != std::end(kPasses) && it->optional) continue;
    std::string optional;
    for (const Pass& p : kPasses)
      if (p.optional) optional += (optional.empty() ? "" : ", ") + std::string(p.name);
    fail("disable_passes: ", it == std::end(kPasses) ? "unknown pass '" : "pass '", name,
         it == std::end(kPasses) ? "'" : "' is required", " (optional passes: ", optional, ")");
  }
}

namespace {

/// Runs `pass`; returns its name and time (recorded by the caller once the
/// pass is done: a pass may replace the whole plan, its stats included).
std::pair<std::string, double> run_timed(const Pass& pass, Compilation& c) {
  const auto t = std::chrono::steady_clock::now();
  pass.run(c);
  return {std::string(pass.name), std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count()};
}

}  // namespace

std::unique_ptr<Plan> compile_plan(const CompileRequest& req) {
  using Clock = std::chrono::steady_clock;
  check_disabled_passes(*req.options);
  const auto t0 = Clock::now();
  auto plan = std::make_unique<Plan>();
  plan->device = req.options->device;
  Compilation c(req, *plan);
  std::vector<const Pass*> passes;
  for (const Pass& pass : kPasses)
    if (pass_enabled(pass, c.opt)) passes.push_back(&pass);
  for (size_t i = 0; i < passes.size(); ++i) {
    if (passes[i]->overlaps_next && i + 1 < passes.size()) {
      std::pair<std::string, double> first, second;
      run_both([&, i] { first = run_timed(*passes[i], c); }, [&, i] { second = run_timed(*passes[i + 1], c); });
      plan->stats.pass_ms.push_back(std::move(first));
      plan->stats.pass_ms.push_back(std::move(second));
      ++i;
    } else {
      auto record = run_timed(*passes[i], c);
      plan->stats.pass_ms.push_back(std::move(record));
    }
  }
  plan->stats.compile_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  return plan;
}

// ---------------------------------------------------------------- Plan

int Plan::add_value(const TensorType& type, int producer) {
  values.push_back({type, producer, -1, {}});
  return int(values.size()) - 1;
}

int Plan::add_storage(StorageKind kind, size_t bytes) {
  PStorage s;
  s.kind = kind;
  s.bytes = kind == StorageKind::arena ? (std::max<size_t>(bytes, 1) + kAlignment - 1) / kAlignment * kAlignment : bytes;
  storages.push_back(std::move(s));
  return int(storages.size()) - 1;
}

int Plan::add_node(PNode node) {
  nodes.push_back(std::move(node));
  return int(nodes.size()) - 1;
}

Adjacency Adjacency::transpose() const {
  Adjacency t;
  t.start.assign(size() + 1, 0);
  for (int j : items) ++t.start[size_t(j) + 1];
  for (size_t i = 0; i < size(); ++i) t.start[i + 1] += t.start[i];
  t.items.resize(items.size());
  std::vector<int> fill(t.start.begin(), t.start.end() - 1);
  for (size_t i = 0; i < size(); ++i)
    for (int j : (*this)[i]) t.items[size_t(fill[size_t(j)]++)] = int(i);
  return t;
}

std::vector<int> topological_order(const Plan& p) {
  Adjacency preds;
  std::vector<int> alive;
  for (size_t i = 0; i < p.nodes.size(); ++i, preds.close()) {
    const PNode& node = p.nodes[i];
    if (!node.alive) continue;
    alive.push_back(int(i));
    for (size_t k = 0; k < node.in.size(); ++k)  // reads for the shape only wait for nothing
      if (!is_shape_only(node, k)) preds.items.push_back(p.values[size_t(node.in[k])].producer);
    preds.items.insert(preds.items.end(), node.after.begin(), node.after.end());
  }
  return kahn_order<int>(alive, preds, preds.transpose(), [](int i) { return i; });
}

const OpDef* computing_op(const PNode& n, int v) {
  for (const PEpilogueStep& s : n.epilogue)
    if (std::find(s.out.begin(), s.out.end(), v) != s.out.end()) return s.op;
  return n.op;
}

bool is_shape_only(const PNode& n, size_t i) {
  return n.op && std::find(n.op->shape_only_inputs.begin(), n.op->shape_only_inputs.end(), int(i)) !=
                     n.op->shape_only_inputs.end();
}

NDArray Plan::bind(int value) const {
  const PValue& v = values[size_t(value)];
  const PStorage& s = storages[size_t(v.storage)];
  if (s.kind == StorageKind::arena) {
    Layout l = v.layout;
    l.offset += int64_t(s.offset / dtype_size(v.type.dtype));
    return NDArray(arena, std::move(l), v.type.dtype);
  }
  if (s.kind == StorageKind::streamed) return NDArray(nullptr, v.layout, v.type.dtype);
  if (s.kind == StorageKind::feed) {  // the fed array may start anywhere in its buffer
    Layout l = v.layout;
    l.offset += s.source->array.layout().offset;
    return NDArray(s.source->array.buffer(), std::move(l), v.type.dtype);
  }
  return NDArray(s.source->array.buffer(), v.layout, v.type.dtype);
}

void Plan::bind_feeds(const Feeds& feeds) {
  for (const FeedBinding& b : feed_bindings) {
    const NDArray& a = feeds[size_t(b.feed)].second;
    storages[size_t(b.storage)].source->array = a.device() == device ? a.compact() : a.to(device);
    for (const FeedBinding::Reader& r : b.readers) steps[size_t(r.step)].in[size_t(r.slot)] = bind(r.value);
  }
}

PlanInfo Plan::info() const {
  PlanInfo r;
  r.arena_bytes = stats.arena_bytes;
  for (size_t i = 0; i < order.size(); ++i) {
    const PNode& n = nodes[size_t(order[i])];
    r.steps.push_back({n.name, n.op ? n.op->name : "barrier", deps[i]});
  }
  for (const PStorage& s : storages) {
    if (s.kind != StorageKind::arena || s.merged || s.writers.empty()) continue;
    PlanInfo::Buffer b{s.offset, s.bytes, s.first, s.last, {}, {}};
    for (int w : s.writers) b.writers.push_back(nodes[size_t(w)].pos);
    for (int rd : s.readers) b.readers.push_back(nodes[size_t(rd)].pos);
    r.buffers.push_back(std::move(b));
  }
  return r;
}

}  // namespace loom
