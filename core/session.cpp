// Session: plan cache, variables, and the two executors.

#include "core/session.hpp"

#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/task_group.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <cmath>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "core/philox.hpp"
#include "core/plan.hpp"

namespace loom {

namespace {

using Clock = std::chrono::steady_clock;

std::string signature(const std::vector<Tensor>& fetches, const Feeds& feeds, const std::vector<Tensor>& targets) {
  std::ostringstream os;
  for (const Tensor& t : fetches) os << 'f' << (t.valid() ? t.node_id() : -1) << ':' << t.index();
  for (const Tensor& t : targets) os << 't' << (t.valid() ? t.node_id() : -1);
  for (const auto& [t, a] : feeds) {
    os << 'p' << (t.valid() ? t.node_id() : -1) << dtype_name(a.dtype());
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
void run_parallel(const std::vector<std::vector<int>>& deps, const std::vector<std::vector<int>>& succ, int threads,
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

}  // namespace

struct Session::Impl {
  tbb::task_arena arena;
  std::unordered_map<std::string, std::unique_ptr<Plan>> plans;
  Plan* last = nullptr;
  std::unordered_map<int, NDArray> vars;
  SessionStats stats;
  std::unordered_map<std::string, NodeTime> times;
  std::vector<TraceEvent> trace;
  std::mutex trace_mu;
  Clock::time_point trace_origin;
  uint64_t run_counter = 0;
  void* stream = nullptr;
  explicit Impl(int threads) : arena(threads) {}
};

Session::Session(Graph& graph, SessionOptions options) : graph_(graph), options_(std::move(options)) {
  if (options_.threads <= 0) options_.threads = int(std::max(1u, std::thread::hardware_concurrency()));
  device_backend(options_.device);  // fails early, naming the device, when it is not available
  impl_ = std::make_unique<Impl>(options_.threads);
  impl_->stream = device_backend(options_.device).create_stream();
}

Session::~Session() {
  if (impl_ && impl_->stream) device_backend(options_.device).destroy_stream(impl_->stream);
}

NDArray& Session::variable_value(int node) {
  auto it = impl_->vars.find(node);
  if (it != impl_->vars.end()) return it->second;
  const Node& n = graph_.node(node);
  const TensorType& t = n.outputs[0];
  NDArray host = NDArray::empty(t.shape, t.dtype);
  n.init(host, philox::mix_key(options_.seed, name_hash(n.name)));
  return impl_->vars.emplace(node, host.to(options_.device).clone()).first->second;
}

void Session::initialize() { initialize(graph_.variables()); }

void Session::initialize(const std::vector<Tensor>& variables) {
  for (const Tensor& v : variables) {
    LOOM_CHECK(v.valid() && &v.graph() == &graph_ && v.op() == "variable", "initialize: '",
               v.valid() ? v.name() : "?", "' is not a variable of this session's graph");
    const Node& n = v.node();
    auto it = impl_->vars.find(n.id);
    if (it == impl_->vars.end()) {
      variable_value(n.id);
      continue;
    }
    NDArray host = NDArray::empty(n.outputs[0].shape, n.outputs[0].dtype);
    n.init(host, philox::mix_key(options_.seed, name_hash(n.name)));
    it->second.assign(host);  // same buffer: compiled plans stay bound to it
  }
}

bool Session::initialized(const Tensor& v) const { return v.valid() && impl_->vars.count(v.node_id()); }

NDArray Session::get(const Tensor& v) {
  LOOM_CHECK(v.valid() && &v.graph() == &graph_ && v.op() == "variable", "get: '", v.valid() ? v.name() : "?",
             "' is not a variable of this session's graph");
  return variable_value(v.node_id()).to(Device::cpu()).clone();
}

void Session::set(const Tensor& v, const NDArray& value) {
  LOOM_CHECK(v.valid() && &v.graph() == &graph_ && v.op() == "variable", "set: '", v.valid() ? v.name() : "?",
             "' is not a variable of this session's graph");
  const TensorType& t = v.type();
  LOOM_CHECK(value.defined() && value.shape() == t.shape && value.dtype() == t.dtype, "set '", v.name(),
             "': expected ", dtype_name(t.dtype), shape_str(t.shape), ", got ",
             value.defined() ? std::string(dtype_name(value.dtype())) + shape_str(value.shape()) : "undefined");
  NDArray& dst = variable_value(v.node_id());
  dst.assign(value);
}

Plan& Session::plan_for(const std::vector<Tensor>& fetches, const Feeds& feeds, const std::vector<Tensor>& targets) {
  std::string key = signature(fetches, feeds, targets);
  auto it = impl_->plans.find(key);
  if (it != impl_->plans.end()) {
    ++impl_->stats.plan_cache_hits;
    return *it->second;
  }
  CompileRequest req{&graph_, &options_, &fetches, &feeds, &targets, [this](int n) -> NDArray& { return variable_value(n); }};
  std::unique_ptr<Plan> plan;
  impl_->arena.execute([&] { plan = compile_plan(req); });
  ++impl_->stats.plans_compiled;
  Plan& ref = *plan;
  impl_->plans.emplace(std::move(key), std::move(plan));
  return ref;
}

PlanInfo Session::plan_info(const std::vector<Tensor>& fetches, const Feeds& feeds, const std::vector<Tensor>& targets) {
  return plan_for(fetches, feeds, targets).info();
}

std::vector<NDArray> Session::run(const std::vector<Tensor>& fetches, const Feeds& feeds,
                                  const std::vector<Tensor>& targets) {
  Plan& plan = plan_for(fetches, feeds, targets);
  impl_->last = &plan;
  KernelContext ctx{options_.device, impl_->stream, options_.seed, impl_->run_counter++};
  const bool profile = options_.profile, check = options_.check_numerics;
  std::vector<double> step_us(profile ? plan.steps.size() : 0, 0.0);
  if (profile) {
    impl_->trace.clear();
    impl_->trace_origin = Clock::now();
  }
  DeviceBackend& dev = device_backend(options_.device);

  const bool on_device = !options_.device.is_cpu();
  auto exec = [&](size_t i) {
    Step& s = plan.steps[i];
    Clock::time_point t0;
    if (profile) t0 = Clock::now();
    if (s.feed >= 0) {
      const NDArray& src = feeds[size_t(s.feed)].second;
      if (on_device && src.device().is_cpu() && s.out[0].is_compact()) {
        // Host feed to the device: through this step's pinned buffer, ordered on
        // the session's stream (after the kernels still reading the old contents).
        const NDArray h = src.compact();
        const size_t n = h.nbytes();
        if (s.staging_bytes < n) {
          s.staging = std::shared_ptr<void>(dev.allocate_host(n), [&dev](void* q) { dev.deallocate_host(q); });
          s.staging_bytes = n;
        }
        std::memcpy(s.staging.get(), h.raw(), n);
        dev.copy_from_host(s.out[0].raw(), s.staging.get(), n, impl_->stream);
      } else {
        if (on_device) dev.synchronize(impl_->stream);  // copy_into runs outside the session's stream
        copy_into(s.out[0], src.device() == options_.device ? src : src.to(options_.device));
      }
    } else if (s.fn) {
      KernelCall call{ctx, s.in, s.out, *s.attrs, *s.op, *s.name, s.key, s.state.get(), s.workspace, s.workspace_bytes,
                      s.epilogue.get()};
      s.fn(call);
    }
    if (check && s.check && on_device) dev.synchronize(impl_->stream);  // the check reads the outputs on the host
    if (check && s.check)
      for (size_t k = 0; k < s.out.size(); ++k)
        if (is_floating(s.out[k].dtype()) && !all_finite(s.out[k]))
          fail("check_numerics: node '", *s.name, "' (", *s.op, ") produced NaN or Inf in output ", k);
    if (profile) {
      auto t1 = Clock::now();
      double us = std::chrono::duration<double, std::micro>(t1 - t0).count();
      step_us[i] = us;
      std::lock_guard lock(impl_->trace_mu);
      impl_->trace.push_back({int(i),
                              std::chrono::duration<double, std::micro>(t0 - impl_->trace_origin).count(), us,
                              tbb::this_task_arena::current_thread_index()});
    }
  };

  impl_->arena.execute([&] {
    if (options_.executor == Executor::serial || plan.steps.size() < 2) {
      for (size_t i = 0; i < plan.steps.size(); ++i) exec(i);
      return;
    }
    run_parallel(plan.deps, plan.succ, options_.threads, exec);
  });
  dev.synchronize(impl_->stream);

  if (profile)
    for (size_t i = 0; i < plan.steps.size(); ++i) {
      const Step& s = plan.steps[i];
      if (!s.fn && s.feed < 0) continue;
      NodeTime& t = impl_->times[*s.name];
      t.name = *s.name;
      t.op = s.op ? *s.op : "feed";
      ++t.calls;
      t.total_us += step_us[i];
    }
  ++impl_->stats.runs;

  std::vector<NDArray> out;
  for (int v : plan.fetch_values) out.push_back(plan.bind(v).to(Device::cpu()).clone());
  return out;
}

NDArray Session::run1(const Tensor& fetch, const Feeds& feeds) { return run({fetch}, feeds)[0]; }

SessionStats Session::stats() const {
  SessionStats s = impl_->stats;
  if (impl_->last) s.last_plan = impl_->last->stats;
  for (const auto& [k, v] : impl_->times) s.node_times.push_back(v);
  std::sort(s.node_times.begin(), s.node_times.end(),
            [](const NodeTime& a, const NodeTime& b) { return a.total_us > b.total_us; });
  return s;
}

static void write_atomically(const std::string& path, const std::string& text) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    LOOM_CHECK(f, "cannot write '", tmp, "'");
    f << text;
    f.flush();
    LOOM_CHECK(f, "error writing '", tmp, "'");
  }
  LOOM_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, "cannot rename '", tmp, "' to '", path, "'");
}

void Session::export_trace(const std::string& path) const {
  LOOM_CHECK(impl_->last, "export_trace: no run yet");
  LOOM_CHECK(options_.profile, "export_trace: the session was created without profile = true");
  std::ostringstream os;
  os << "{\"traceEvents\":[\n";
  bool first = true;
  for (const TraceEvent& e : impl_->trace) {
    const Step& s = impl_->last->steps[size_t(e.step)];
    std::string name = *s.name, op = s.op ? *s.op : "feed";
    for (auto* str : {&name, &op})
      for (char& c : *str)
        if (c == '"' || c == '\\') c = '_';
    os << (first ? "" : ",\n") << "{\"name\":\"" << name << "\",\"cat\":\"" << op << "\",\"ph\":\"X\",\"ts\":" << e.start_us
       << ",\"dur\":" << e.dur_us << ",\"pid\":1,\"tid\":" << e.thread << ",\"args\":{\"step\":" << e.step << "}}";
    first = false;
  }
  os << "\n],\"displayTimeUnit\":\"ns\"}\n";
  write_atomically(path, os.str());
}

void Session::export_dot(const std::string& path) const {
  LOOM_CHECK(impl_->last, "export_dot: no run yet");
  write_atomically(path, impl_->last->dot());
}

}  // namespace loom
