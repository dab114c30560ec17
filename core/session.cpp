// Session: plan cache, variables, and the two executors.

#include "core/session.hpp"

#include <nlohmann/json.hpp>
#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/task_group.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <cmath>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <span>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "core/file.hpp"
#include "core/philox.hpp"
#include "core/plan.hpp"

namespace loom {

namespace {

using Clock = std::chrono::steady_clock;

/// The plan cache's key of a run. A handle of another graph (its node ids mean other nodes) or an undefined
/// feed gets a key no compiled plan has, so the run compiles and prune's checks refuse it.
std::string signature(const Graph& graph, const std::vector<Tensor>& fetches, const Feeds& feeds,
                      const std::vector<Tensor>& targets) {
  std::ostringstream os;
  auto id = [&](const Tensor& t) { return t.valid() && &t.graph() == &graph ? t.node_id() : -1; };
  for (const Tensor& t : fetches) os << 'f' << id(t) << ':' << t.index();
  for (const Tensor& t : targets) os << 't' << id(t);
  for (const auto& [t, a] : feeds) {
    os << 'p' << id(t);
    if (!a.defined()) {
      os << '?';
      continue;
    }
    os << dtype_name(a.dtype());
    for (int64_t d : a.shape()) os << ',' << d;
  }
  return os.str();
}

uint64_t name_hash(const std::string& s) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

/// Finds the first NaN/Inf in a float array (on the host).
bool all_finite(const NDArray& a) {
  NDArray h = a.to(Device::cpu()).compact();
  bool ok = true;
  dispatch_float(h.dtype(), "check_numerics", [&]<class T>() {
    const T* p = h.data<T>();
    for (int64_t i = 0, n = h.numel(); i < n && ok; ++i) ok = std::isfinite(p[i]);
  });
  return ok;
}

/// The parallel executor: a step runs when all its dependencies (data, control
/// and the hazards of shared buffers) are done; the first error stops the
/// run and is rethrown.
void run_parallel(std::span<const std::vector<int>> deps, std::span<const std::vector<int>> succ, int threads,
                  const std::function<void(size_t)>& exec) {
  const size_t n = deps.size();
  std::vector<std::atomic<int>> pending(n);
  for (size_t i = 0; i < n; ++i) pending[i].store(int(deps[i].size()), std::memory_order_relaxed);
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  std::mutex error_mu;
  auto run_one = [&](size_t i) {
    try {
      exec(i);
      return true;
    } catch (...) {
      std::lock_guard lock(error_mu);
      if (!error) error = std::current_exception();
      failed = true;
      return false;
    }
  };
#if !defined(__SANITIZE_THREAD__)
  (void)threads;
  tbb::task_group tg;
  std::function<void(size_t)> run_step = [&](size_t i) {
    while (!failed.load(std::memory_order_relaxed) && run_one(i)) {
      // Continue inline with one ready successor; spawn the others.
      size_t next = SIZE_MAX;
      for (int s : succ[i])
        if (pending[size_t(s)].fetch_sub(1, std::memory_order_acq_rel) == 1) {
          if (next == SIZE_MAX) next = size_t(s);
          else tg.run([&run_step, s] { run_step(size_t(s)); });
        }
      if (next == SIZE_MAX) return;
      i = next;
    }
  };
  for (size_t i = 0; i < n; ++i)
    if (deps[i].empty()) tg.run([&run_step, i] { run_step(i); });
  tg.wait();
#else
  // ThreadSanitizer build: libtbb is not instrumented, so TSan cannot see the
  // synchronization inside its task queues and reports every task hand-off.
  // The same dependency counting runs here on std::threads and an instrumented
  // queue, so TSan checks what matters: that the plan's edges order every
  // access to shared buffers.
  std::mutex mu;
  std::condition_variable cv;
  std::deque<size_t> ready;
  size_t done = 0;
  for (size_t i = 0; i < n; ++i)
    if (deps[i].empty()) ready.push_back(i);
  auto worker = [&] {
    std::unique_lock lock(mu);
    while (true) {
      cv.wait(lock, [&] { return !ready.empty() || done == n || failed; });
      if (failed || ready.empty()) return;
      size_t i = ready.front();
      ready.pop_front();
      lock.unlock();
      bool ok = run_one(i);
      lock.lock();
      ++done;
      if (ok)
        for (int s : succ[i])
          if (pending[size_t(s)].fetch_sub(1, std::memory_order_acq_rel) == 1) ready.push_back(size_t(s));
      cv.notify_all();
      if (!ok) return;
    }
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < std::max(threads, 2); ++t) pool.emplace_back(worker);
  for (auto& t : pool) t.join();
#endif
  if (error) std::rethrow_exception(error);
}

struct TraceEvent {
  int step;
  double start_us, dur_us;
  int thread;
};

/// Does anything a run needs write a variable (assign and its kind)?
bool writes_variables(const Graph& g, const std::vector<Tensor>& fetches, const std::vector<Tensor>& targets) {
  std::vector<char> seen(size_t(g.size()), 0);
  std::vector<int> stack;
  for (const auto* list : {&fetches, &targets})
    for (const Tensor& t : *list) stack.push_back(t.node_id());
  while (!stack.empty()) {
    const int id = stack.back();
    stack.pop_back();
    if (id < 0 || id >= int(seen.size()) || seen[size_t(id)]) continue;
    seen[size_t(id)] = 1;
    const Node& n = g.node(id);
    if (n.op->writes_input >= 0) return true;
    for (const Edge& e : n.inputs) stack.push_back(e.node);
    for (int c : n.control) stack.push_back(c);
  }
  return false;
}

/// Runs f in the session's TBB arena. Under ThreadSanitizer the caller runs it
/// itself: TSan cannot see libtbb's hand-offs, and kernels run inline there.
template <class F>
void in_arena(tbb::task_arena& arena, F&& f) {
#if defined(__SANITIZE_THREAD__)
  (void)arena;
  f();
#else
  arena.execute(std::forward<F>(f));
#endif
}

}  // namespace

/// Compiled plans of one run signature: copies not in use by a run (a run
/// takes one, or compiles another when all are busy).
struct PlanSlot {
  std::vector<std::shared_ptr<Plan>> idle;
  bool writes_variables = false;
  uint64_t last_use = 0;
};

struct Session::Lease {
  std::shared_ptr<Plan> plan;
  std::string key;
  bool writes_variables = false;
};

struct Session::Impl {
  tbb::task_arena arena;
  // Lock order: state_mu before cache_mu and stats_mu; the last two are never held together.
  std::shared_mutex state_mu;  // variables: shared while runs read them, exclusive to write or create
  std::mutex cache_mu;
  std::unordered_map<std::string, PlanSlot> plans;
  uint64_t clock = 0;
  std::mutex stats_mu;
  std::shared_ptr<Plan> last;
  SessionStats stats;
  std::unordered_map<std::string, NodeTime> times;
  std::shared_ptr<Plan> trace_plan;
  std::vector<TraceEvent> trace;
  std::unordered_map<int, NDArray> vars;
  std::atomic<uint64_t> run_counter{0};
  void* stream = nullptr;
  explicit Impl(int threads) : arena(threads) {}
  /// A profiled run's step times into the per-node totals, and its trace. Holds stats_mu.
  void record_profile(const std::shared_ptr<Plan>& plan, const std::vector<double>& step_us,
                      std::vector<TraceEvent> events) {
    for (size_t i = 0; i < plan->steps.size(); ++i) {
      const Step& s = plan->steps[i];
      if (!s.fn && s.feed < 0) continue;
      NodeTime& t = times[*s.name];
      t.name = *s.name;
      t.op = s.op ? *s.op : "feed";
      ++t.calls;
      t.total_us += step_us[i];
    }
    trace = std::move(events);
    trace_plan = plan;
  }
};

Session::Session(Graph& graph, SessionOptions options) : graph_(graph), options_(std::move(options)) {
  // (TBB's arena crashes on millions of threads.)
  LOOM_CHECK(options_.threads >= 0 && options_.threads <= SessionOptions::kMaxThreads,
             "Session: threads must be in [0, ", SessionOptions::kMaxThreads, "] (0: all hardware threads), got ",
             options_.threads);
  LOOM_CHECK(int(options_.executor) >= 0 && int(options_.executor) <= int(Executor::parallel), "Session: executor ",
             int(options_.executor), " is not an Executor");
  LOOM_CHECK(int(options_.memory) >= 0 && int(options_.memory) <= int(MemoryStrategy::greedy_by_area),
             "Session: memory ", int(options_.memory), " is not a MemoryStrategy");
  LOOM_CHECK(int(options_.remat) >= 0 && int(options_.remat) <= int(Remat::greedy), "Session: remat ",
             int(options_.remat), " is not a Remat");
  if (options_.threads == 0) options_.threads = int(std::max(1u, std::thread::hardware_concurrency()));
  device_backend(options_.device);  // fails early, naming the device, when it is not available
  impl_ = std::make_unique<Impl>(options_.threads);
  impl_->stream = device_backend(options_.device).create_stream();
}

Session::~Session() {
  if (impl_ && impl_->stream) device_backend(options_.device).destroy_stream(impl_->stream);
}

namespace {
/// A variable's initial host value: its initializer's errors name the variable.
NDArray initial_value(const Node& n, uint64_t seed) {
  const TensorType& t = n.outputs[0];
  NDArray host = NDArray::empty(t.shape, t.dtype);
  try {
    n.init(host, philox::mix_key(seed, name_hash(n.name)));
  } catch (const std::exception& e) {
    fail("variable '", n.name, "': its initializer failed: ", e.what());
  } catch (...) {
    fail("variable '", n.name, "': its initializer threw a non-standard exception");
  }
  return host;
}
}  // namespace

NDArray& Session::variable_value(int node) {
  auto it = impl_->vars.find(node);
  if (it != impl_->vars.end()) return it->second;
  NDArray host = initial_value(graph_.node(node), options_.seed);
  return impl_->vars.emplace(node, host.to(options_.device).clone()).first->second;
}

void Session::initialize() { initialize(graph_.variables()); }

void Session::initialize(const std::vector<Tensor>& variables) {
  for (const Tensor& v : variables)
    LOOM_CHECK(v.valid() && &v.graph() == &graph_ && v.op() == "variable", "initialize: '",
               v.valid() ? v.name() : "?", "' is not a variable of this session's graph");
  // Every initial value first: a failing initializer changes no variable.
  std::vector<NDArray> values;
  for (const Tensor& v : variables) values.push_back(initial_value(v.node(), options_.seed));
  std::unique_lock lock(impl_->state_mu);
  for (size_t i = 0; i < variables.size(); ++i) {
    auto it = impl_->vars.find(variables[i].node_id());
    if (it == impl_->vars.end()) impl_->vars.emplace(variables[i].node_id(), values[i].to(options_.device).clone());
    else it->second.assign(values[i]);  // same buffer: compiled plans stay bound to it
  }
}

bool Session::initialized(const Tensor& v) const {
  std::shared_lock lock(impl_->state_mu);
  return v.valid() && impl_->vars.count(v.node_id());
}

NDArray Session::get(const Tensor& v) {
  LOOM_CHECK(v.valid() && &v.graph() == &graph_ && v.op() == "variable", "get: '", v.valid() ? v.name() : "?",
             "' is not a variable of this session's graph");
  {
    std::shared_lock lock(impl_->state_mu);
    auto it = impl_->vars.find(v.node_id());
    if (it != impl_->vars.end()) return it->second.to(Device::cpu()).clone();
  }
  std::unique_lock lock(impl_->state_mu);
  return variable_value(v.node_id()).to(Device::cpu()).clone();
}

void Session::set(const Tensor& v, const NDArray& value) {
  LOOM_CHECK(v.valid() && &v.graph() == &graph_ && v.op() == "variable", "set: '", v.valid() ? v.name() : "?",
             "' is not a variable of this session's graph");
  const TensorType& t = v.type();
  LOOM_CHECK(value.defined() && value.shape() == t.shape && value.dtype() == t.dtype, "set '", v.name(),
             "': expected ", dtype_name(t.dtype), shape_str(t.shape), ", got ",
             value.defined() ? std::string(dtype_name(value.dtype())) + shape_str(value.shape()) : "undefined");
  std::unique_lock lock(impl_->state_mu);
  auto it = impl_->vars.find(v.node_id());
  if (it != impl_->vars.end()) it->second.assign(value);
  else impl_->vars.emplace(v.node_id(), value.to(options_.device).clone());
}

Session::Lease Session::acquire(const std::vector<Tensor>& fetches, const Feeds& feeds,
                                const std::vector<Tensor>& targets) {
  Lease lease;
  lease.key = signature(graph_, fetches, feeds, targets);
  {
    std::lock_guard lock(impl_->cache_mu);
    auto it = impl_->plans.find(lease.key);
    if (it != impl_->plans.end() && !it->second.idle.empty()) {
      it->second.last_use = ++impl_->clock;
      lease.plan = std::move(it->second.idle.back());
      lease.writes_variables = it->second.writes_variables;
      it->second.idle.pop_back();
    }
  }
  if (lease.plan) {
    std::lock_guard lock(impl_->stats_mu);
    ++impl_->stats.plan_cache_hits;
    return lease;
  }
  // A new signature, or every copy of it busy in another thread's run: compile
  // one. Exclusive: compiling creates the variables the plan binds.
  {
    std::unique_lock state(impl_->state_mu);
    CompileRequest req{&graph_, &options_, &fetches, &feeds, &targets, [this](int n) -> NDArray& { return variable_value(n); }};
    std::unique_ptr<Plan> plan;
    in_arena(impl_->arena, [&] { plan = compile_plan(req); });
    lease.plan = std::move(plan);
    lease.writes_variables = writes_variables(graph_, fetches, targets);
  }
  int evicted = 0;
  {
    std::lock_guard lock(impl_->cache_mu);
    PlanSlot& slot = impl_->plans[lease.key];
    slot.writes_variables = lease.writes_variables;
    slot.last_use = ++impl_->clock;
    // Least recently used signatures go first; a plan in use lives on in its lease.
    while (options_.max_cached_plans && impl_->plans.size() > options_.max_cached_plans) {
      auto oldest = impl_->plans.end();
      for (auto it = impl_->plans.begin(); it != impl_->plans.end(); ++it)
        if (it->first != lease.key && (oldest == impl_->plans.end() || it->second.last_use < oldest->second.last_use))
          oldest = it;
      impl_->plans.erase(oldest);
      ++evicted;
    }
  }
  std::lock_guard lock(impl_->stats_mu);
  ++impl_->stats.plans_compiled;
  impl_->stats.plans_evicted += evicted;
  return lease;
}

void Session::release(Lease& lease) {
  std::lock_guard lock(impl_->cache_mu);
  auto it = impl_->plans.find(lease.key);
  if (it != impl_->plans.end()) it->second.idle.push_back(std::move(lease.plan));
}

PlanInfo Session::plan_info(const std::vector<Tensor>& fetches, const Feeds& feeds, const std::vector<Tensor>& targets) {
  Lease lease = acquire(fetches, feeds, targets);
  PlanInfo info = lease.plan->info();
  release(lease);
  return info;
}

namespace {
/// A feed step of a device plan (CPU plans read feeds in place: Plan::bind_feeds):
/// the fed array into the step's buffer. A host feed to a device
/// goes through the step's pinned buffer, ordered on the session's stream
/// (after the kernels still reading the old contents).
void copy_feed(Step& s, const NDArray& src, const Device& device, DeviceBackend& dev, void* stream) {
  if (!device.is_cpu() && src.device().is_cpu() && s.out[0].is_compact()) {
    const NDArray h = src.compact();
    const size_t n = h.nbytes();
    if (s.staging_bytes < n) {
      s.staging = std::shared_ptr<void>(dev.allocate_host(n), [&dev](void* q) { dev.deallocate_host(q); });
      s.staging_bytes = n;
    }
    std::memcpy(s.staging.get(), h.raw(), n);
    dev.copy_from_host(s.out[0].raw(), s.staging.get(), n, stream);
    return;
  }
  if (!device.is_cpu()) dev.synchronize(stream);  // copy_into runs outside the session's stream
  copy_into(s.out[0], src.device() == device ? src : src.to(device));
}

/// check_numerics: a step's floating outputs must be finite.
void check_finite(const Step& s) {
  for (size_t k = 0; k < s.out.size(); ++k)
    if (is_floating(s.out[k].dtype()) && !all_finite(s.out[k]))
      fail("check_numerics: node '", *s.name, "' (", *s.op, ") produced NaN or Inf in output ", k);
}

/// What a profiled run measured: each step's time and the trace events.
struct RunProfile {
  std::vector<double> step_us;
  std::vector<TraceEvent> trace;
  std::mutex mu;
  Clock::time_point origin = Clock::now();
  void record(size_t step, Clock::time_point t0) {
    const double us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
    step_us[step] = us;
    std::lock_guard lock(mu);
    trace.push_back({int(step), std::chrono::duration<double, std::micro>(t0 - origin).count(), us,
                     tbb::this_task_arena::current_thread_index()});
  }
};
}  // namespace

std::vector<NDArray> Session::run(const std::vector<Tensor>& fetches, const Feeds& feeds,
                                  const std::vector<Tensor>& targets) {
  Lease lease = acquire(fetches, feeds, targets);
  struct Return {  // the plan goes back to the cache however the run ends
    Session* s;
    Lease& l;
    ~Return() { s->release(l); }
  } give_back{this, lease};
  Plan& plan = *lease.plan;
  plan.bind_feeds(feeds);
  DeferredChecks* checks = nullptr;
  if (!options_.device.is_cpu()) {
    if (!plan.checks) plan.checks = std::make_shared<DeferredChecks>();
    checks = plan.checks.get();
    checks->clear();  // a new run: a failed run's unverified checks go, and their slots are free
  }
  KernelContext ctx{options_.device, impl_->stream, options_.seed, impl_->run_counter.fetch_add(1), checks};
  const bool profile = options_.profile, check = options_.check_numerics;
  RunProfile prof;
  if (profile) prof.step_us.assign(plan.steps.size(), 0.0);
  DeviceBackend& dev = device_backend(options_.device);

  auto exec = [&](size_t i) {
    Step& s = plan.steps[i];
    Clock::time_point t0;
    if (profile) t0 = Clock::now();
    if (checks && s.writes_variable && !checks->empty()) {  // a failed check must leave the variables as they were
      dev.synchronize(impl_->stream);
      checks->verify();
    }
    if (s.feed >= 0) {
      copy_feed(s, feeds[size_t(s.feed)].second, options_.device, dev, impl_->stream);
    } else if (s.fn) {
      KernelCall call{ctx, s.in, s.out, *s.attrs, *s.op, *s.name, s.key, s.state.get(), s.workspace, s.workspace_bytes,
                      s.epilogue.get()};
      s.fn(call);
    }
    if (check && s.check) {
      if (!options_.device.is_cpu()) dev.synchronize(impl_->stream);  // the check reads the outputs on the host
      check_finite(s);
    }
    if (profile) {
      // A device's kernels run after their launch: wait for this one, so that its time is the node's.
      if (!options_.device.is_cpu()) dev.synchronize(impl_->stream);
      prof.record(i, t0);
    }
  };

  // Runs that write variables run alone; the others share the variables.
  std::shared_lock<std::shared_mutex> reading(impl_->state_mu, std::defer_lock);
  std::unique_lock<std::shared_mutex> writing(impl_->state_mu, std::defer_lock);
  if (lease.writes_variables) writing.lock();
  else reading.lock();
  in_arena(impl_->arena, [&] {
    if (options_.executor == Executor::serial || plan.steps.size() < 2) {
      for (size_t i = 0; i < plan.steps.size(); ++i) exec(i);
      return;
    }
    run_parallel(plan.deps, plan.succ, options_.threads, exec);
  });
  dev.synchronize(impl_->stream);
  if (checks) checks->verify();
  std::vector<NDArray> out;
  for (int v : plan.fetch_values) out.push_back(plan.bind(v).to(Device::cpu()).clone());
  if (reading.owns_lock()) reading.unlock();
  if (writing.owns_lock()) writing.unlock();

  std::lock_guard lock(impl_->stats_mu);
  if (profile) impl_->record_profile(lease.plan, prof.step_us, std::move(prof.trace));
  impl_->last = lease.plan;
  ++impl_->stats.runs;
  return out;
}

NDArray Session::run1(const Tensor& fetch, const Feeds& feeds) { return run({fetch}, feeds)[0]; }

SessionStats Session::stats() const {
  SessionStats s;
  {
    std::lock_guard lock(impl_->stats_mu);
    s = impl_->stats;
    if (impl_->last) s.last_plan = impl_->last->stats;
    for (const auto& [k, v] : impl_->times) s.node_times.push_back(v);
  }
  {
    std::lock_guard lock(impl_->cache_mu);
    s.plans_cached = int(impl_->plans.size());
  }
  std::sort(s.node_times.begin(), s.node_times.end(),
            [](const NodeTime& a, const NodeTime& b) { return a.total_us > b.total_us; });
  return s;
}

std::string Session::trace_json() const {
  LOOM_CHECK(options_.profile, "export_trace: the session was created without profile = true");
  std::shared_ptr<Plan> plan;
  std::vector<TraceEvent> trace;
  {
    std::lock_guard lock(impl_->stats_mu);
    plan = impl_->trace_plan;
    trace = impl_->trace;
  }
  LOOM_CHECK(plan, "export_trace: no run yet");
  // Chrome's trace format: one complete event ("X") per step, named after its
  // node, and metadata events ("M") naming the process and every thread.
  nlohmann::json events = nlohmann::json::array();
  events.push_back({{"name", "process_name"}, {"ph", "M"}, {"pid", 1}, {"args", {{"name", "loom session"}}}});
  std::set<int> threads;
  for (const TraceEvent& e : trace) threads.insert(e.thread);
  for (int t : threads)
    events.push_back({{"name", "thread_name"}, {"ph", "M"}, {"pid", 1}, {"tid", t},
                      {"args", {{"name", t == 0 ? std::string("loom thread 0 (caller)") : "loom thread " + std::to_string(t)}}}});
  for (const TraceEvent& e : trace) {
    const Step& s = plan->steps[size_t(e.step)];
    events.push_back({{"name", *s.name}, {"cat", s.op ? *s.op : "feed"}, {"ph", "X"}, {"ts", e.start_us},
                      {"dur", e.dur_us}, {"pid", 1}, {"tid", e.thread}, {"args", {{"step", e.step}}}});
  }
  // Names are arbitrary bytes: invalid UTF-8 is replaced rather than failing the export.
  return nlohmann::json{{"traceEvents", std::move(events)}, {"displayTimeUnit", "ns"}}.dump(
             -1, ' ', false, nlohmann::json::error_handler_t::replace) +
         "\n";
}

void Session::export_trace(const std::string& path) const { io::write_file_atomically(path, trace_json()); }

void Session::export_dot(const std::string& path) const {
  std::shared_ptr<Plan> plan;
  {
    std::lock_guard lock(impl_->stats_mu);
    plan = impl_->last;
  }
  LOOM_CHECK(plan, "export_dot: no run yet");
  io::write_file_atomically(path, plan->dot());
}

}  // namespace loom
