// bench_sched: what a static graph buys — per-node overhead of the executors,
// parallel speedup, memory plans (arena vs lower bound vs naive, for each
// planner strategy) and plan compile time — on graph families:
//   chain      deep chain of tiny element-wise ops (fusion off: one step per op)
//   wide       k independent branches of matmul + activation, joined at the end
//   random     seeded random DAGs (element-wise, matmul, reductions, views)
//   mlp        MLP training step (784-512-10, Adam), built with the frontend
//   mlpresnet  MLPResNet training step (784, hidden 100, 3 blocks, Adam)
//   transformer  one nn::TransformerLayer (pre-norm), forward + backward
//   resnet9    the course's ResNet9 training step (1x28x28 images, batch 128, Adam)
//   lstm       word-level LSTM language-model training step (2 layers, embed and
//              hidden 200, bptt 35, batch 20, vocabulary 10000, SGD, clipping):
//              the unrolled graph train_lm runs; layer 2's step t and layer 1's
//              step t + 1 are independent (the wavefront the parallel executor can use)
// Side by side, samples/bench_sched_torch.py runs the chain and the MLP step
// in PyTorch eager in the same invocation, and the table shows loom/PyTorch.
//
// --memory-sweep: arena and step time of mlpresnet, transformer and resnet9 under
// memory budgets (rematerialization), next to PyTorch with torch.utils.checkpoint.

#include <algorithm>
#include <boost/program_options.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "core/file.hpp"
#include "core/philox.hpp"
#include "frontend/loom.hpp"
#include "samples/peers.hpp"

namespace po = boost::program_options;
namespace fs = std::filesystem;
using namespace loom;

namespace {

// ---------------------------------------------------------------- graphs

struct Family {
  std::string name;        // "chain", ...
  std::string label;       // "chain-10000"
  int64_t size = 0;        // family parameter (nodes, branches, ...)
  std::unique_ptr<Graph> g;
  std::vector<Tensor> fetches, targets;
  Feeds feeds;
  bool fusion = true;
};

Family make_family(std::string name, std::string label, int64_t size) {
  Family f;
  f.name = std::move(name);
  f.label = std::move(label);
  f.size = size;
  f.g = std::make_unique<Graph>();
  return f;
}

NDArray uniform(const Shape& s, uint64_t seed, DType t = float32) {
  NDArray a = NDArray::empty(s, float64);
  for (int64_t i = 0; i < a.numel(); ++i) a.data<double>()[i] = philox::uniform_f64(seed, 3, uint64_t(i)) * 2 - 1;
  return t == float64 ? a : a.astype(t);
}

NDArray labels(int64_t n, uint64_t seed) {
  NDArray y = NDArray::empty({n}, int64);
  for (int64_t i = 0; i < n; ++i) y.data<int64_t>()[i] = int64_t(philox::uniform_f64(seed, 4, uint64_t(i)) * 10);
  return y;
}

Family chain(int64_t n) {
  Family f = make_family("chain", "chain-" + std::to_string(n), n);
  Tensor x = f.g->placeholder("x", {4});
  Tensor y = x;
  for (int64_t i = 0; i < n; ++i) y = i % 2 ? y * 1.0001 : y + 0.5;
  f.fetches = {y};
  f.feeds = {{x, uniform({4}, 1)}};
  f.fusion = false;  // measure one step per op
  return f;
}

Family wide(int64_t k, int64_t n = 128) {
  Family f = make_family("wide", "wide-" + std::to_string(k), k);
  Graph& g = *f.g;
  Tensor x = g.placeholder("x", {n, n});
  Tensor total;
  for (int64_t b = 0; b < k; ++b) {
    auto s = g.scope("branch" + std::to_string(b));
    Tensor w1 = g.variable("w1", {n, n}, init::normal(0, 0.05));
    Tensor w2 = g.variable("w2", {n, n}, init::normal(0, 0.05));
    Tensor h = relu(matmul(tanh(matmul(x, w1)), w2));
    Tensor r = sum(h);
    total = total.valid() ? total + r : r;
  }
  f.fetches = {total};
  f.feeds = {{x, uniform({n, n}, 2)}};
  return f;
}

Family random_dag(int64_t nodes, uint64_t seed) {
  Family f = make_family("random", "random-" + std::to_string(nodes), nodes);
  Graph& g = *f.g;
  std::mt19937_64 rng(seed);
  const int64_t n = 64;
  std::vector<Tensor> pool;
  for (int i = 0; i < 4; ++i) {
    Tensor p = g.placeholder("in" + std::to_string(i), {n, n});
    f.feeds.push_back({p, uniform({n, n}, seed + uint64_t(i))});
    pool.push_back(p);
  }
  std::vector<int> readers;
  auto pick = [&] {
    size_t lo = pool.size() > 8 ? pool.size() - 8 : 0;
    size_t i = rng() % 4 ? lo + rng() % (pool.size() - lo) : rng() % pool.size();
    return pool[i];
  };
  for (int64_t i = 0; i < nodes; ++i) {
    Tensor a = pick(), b = pick(), r;
    switch (rng() % 8) {
      case 0: r = a + b; break;
      case 1: r = a * b; break;
      case 2: r = tanh(a - b); break;
      case 3: r = matmul(a, b) * (1.0 / double(n)); break;
      case 4: r = a - mean(b, {1}, true); break;
      case 5: r = maximum(a, transpose(b)); break;
      case 6: r = sigmoid(a); break;
      default: r = relu(a) * 0.5 + b; break;
    }
    pool.push_back(r);
  }
  // Fetch every value nobody reads (the DAG's sinks) so nothing is pruned away.
  Tensor total;
  std::vector<char> used(size_t(g.size()), 0);
  for (int id = 0; id < g.size(); ++id)
    for (const Edge& e : g.node(id).inputs) used[size_t(e.node)] = 1;
  for (const Tensor& t : pool)
    if (!used[size_t(t.node_id())]) total = total.valid() ? total + sum(t) : sum(t);
  f.fetches = {total};
  return f;
}

Family mlp(int64_t batch = 128) {
  Family f = make_family("mlp", "mlp-784-512-10", 784);
  Graph& g = *f.g;
  Tensor x = g.placeholder("x", {-1, 784}), y = g.placeholder("y", {-1}, int64);
  auto model = std::make_shared<nn::Sequential>(nn::Linear(784, 512), nn::ReLU(), nn::Linear(512, 10));
  Tensor loss = nn::cross_entropy((*model)(x), y);
  optim::Adam opt(*model, {.lr = 1e-3});
  f.targets = {opt.minimize(loss)};
  f.fetches = {loss};
  f.feeds = {{x, uniform({batch, 784}, 5)}, {y, labels(batch, 6)}};
  return f;
}

Family mlpresnet(int64_t batch = 100) {
  Family f = make_family("mlpresnet", "mlpresnet-784-100x3", 784);
  Graph& g = *f.g;
  Tensor x = g.placeholder("x", {-1, 784}), y = g.placeholder("y", {-1}, int64);
  auto model = std::make_shared<nn::MLPResNet>(784);
  Tensor loss = nn::cross_entropy((*model)(x), y);
  optim::Adam opt(*model, {.lr = 1e-3, .weight_decay = 1e-3});
  f.targets = {opt.minimize(loss)};
  f.fetches = {loss};
  f.feeds = {{x, uniform({batch, 784}, 7)}, {y, labels(batch, 8)}};
  return f;
}

Family resnet9(int64_t batch = 128) {
  Family f = make_family("resnet9", "resnet9-1x28x28", 28);
  Graph& g = *f.g;
  Tensor x = g.placeholder("x", {-1, 1, 28, 28}), y = g.placeholder("y", {-1}, int64);
  auto model = std::make_shared<nn::ResNet9>();
  Tensor loss = nn::cross_entropy((*model)(x), y);
  optim::Adam opt(*model, {.lr = 1e-3});
  f.targets = {opt.minimize(loss)};
  f.fetches = {loss};
  f.feeds = {{x, uniform({batch, 1, 28, 28}, 9)}, {y, labels(batch, 10)}};
  return f;
}

// One pre-norm nn::TransformerLayer on [B, T, d]: fused attention with `heads`
// heads, a feed-forward block of width 4d, residuals and LayerNorms; loss =
// mean(y^2); gradients w.r.t. all its parameters.
Family transformer(int64_t B = 8, int64_t T = 64, int64_t d = 128, int64_t heads = 4) {
  Family f = make_family("transformer", "transformer-d" + std::to_string(d), d);
  Graph& g = *f.g;
  Tensor x = g.placeholder("x", {B, T, d});
  nn::TransformerLayer layer(d, heads, {.ffn = 4 * d, .dropout = 0.0, .norm_first = true});
  Tensor y = layer(x);
  Tensor loss = mean(y * y);
  auto grads = gradients(loss, layer.parameters());
  f.fetches = {loss};
  f.fetches.insert(f.fetches.end(), grads.begin(), grads.end());
  f.feeds = {{x, uniform({B, T, d}, 9)}};
  return f;
}

// The training step of samples/train_lm (SGD lr 20, clip 0.25, dropout 0.2,
// the state carried in variables) on random token ids.
Family lstm_lm(int64_t T = 35, int64_t B = 20, int64_t vocab = 10000, int64_t layers = 2, int64_t hidden = 200) {
  Family f = make_family("lstm", "lstm-lm-T" + std::to_string(T), T);
  Graph& g = *f.g;
  Tensor ids = g.placeholder("ids", {T, B}, int64), target = g.placeholder("target", {T * B}, int64);
  auto model = std::make_shared<nn::LanguageModel>(vocab, nn::LanguageModelOptions{.embed = hidden, .hidden = hidden,
                                                                                   .layers = layers, .dropout = 0.2});
  Tensor h = g.variable("state/h", {layers, B, hidden}, init::zeros());
  Tensor c = g.variable("state/c", {layers, B, hidden}, init::zeros());
  auto [logits, st] = (*model)(ids, {h, c});
  Tensor loss = nn::cross_entropy(reshape(logits, {T * B, vocab}), target);
  optim::SGD opt(*model, {.lr = 20.0, .clip_norm = 0.25});
  f.targets = {opt.minimize(loss), assign(h, st.h), assign(c, st.c)};
  f.fetches = {loss};
  NDArray x = NDArray::empty({T, B}, int64), y = NDArray::empty({T * B}, int64);
  for (int64_t i = 0; i < T * B; ++i) {
    x.data<int64_t>()[i] = int64_t(philox::uniform_f64(11, 0, uint64_t(i)) * double(vocab));
    y.data<int64_t>()[i] = int64_t(philox::uniform_f64(12, 0, uint64_t(i)) * double(vocab));
  }
  f.feeds = {{ids, x}, {target, y}};
  return f;
}

// ---------------------------------------------------------------- measurement

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

/// Seconds of one run of s.
double run_seconds(Session& s, const Family& f) {
  auto t0 = std::chrono::steady_clock::now();
  s.run(f.fetches, f.feeds, f.targets);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/// Median seconds per run (after one untimed run), repeating for ~min_seconds.
double time_runs(Session& s, const Family& f, double min_seconds, int min_reps) {
  s.run(f.fetches, f.feeds, f.targets);
  std::vector<double> t;
  auto start = std::chrono::steady_clock::now();
  while (int(t.size()) < min_reps ||
         std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < min_seconds) {
    t.push_back(run_seconds(s, f));
    if (t.size() >= 2000) break;
  }
  return median(t);
}

struct MemoryRow {
  std::string strategy;
  size_t arena = 0, lower = 0, naive = 0;
};

struct Result {
  std::string family, label;
  int64_t size = 0;
  int graph_nodes = 0, steps = 0;
  double compile_ms = 0;
  std::vector<std::pair<std::string, double>> pass_ms;  // the compile's passes (the last of the three)
  double serial_s = 0;                      // serial executor, 1 thread
  std::map<int, double> parallel_s;         // parallel executor by threads
  std::map<int, double> serial_threads_s;   // serial executor by threads (kernels parallel inside)
  std::vector<MemoryRow> memory;            // per strategy
  size_t arena = 0, lower = 0, naive = 0;   // the session's default (best) strategy
  std::string best_strategy;
};

// Where the compile time of each family's largest graph goes, pass by pass.
void print_pass_times(const std::vector<Result>& results) {
  std::map<std::string, const Result*> largest;
  for (const Result& r : results)
    if (!largest.count(r.family) || largest[r.family]->graph_nodes < r.graph_nodes) largest[r.family] = &r;
  std::printf("\nplan compile time by pass (ms), largest graph of each family (hazards and bind run at once)\n");
  for (const auto& [fam, r] : largest) {
    std::printf("  %-22s", r->label.c_str());
    for (const auto& [pass, ms] : r->pass_ms)
      if (ms >= 0.05 * r->compile_ms) std::printf(" %s %.1f;", pass.c_str(), ms);
    std::printf(" (passes under 5%% not shown)\n");
  }
}

Result measure(Family& f, const std::vector<int>& threads, double min_seconds, int min_reps) {
  Result r;
  r.family = f.name;
  r.label = f.label;
  r.size = f.size;
  {
    // Compile time: median over three fresh sessions with the default thread
    // count, as users compile (variables initialized first: initialization is
    // not plan compilation).
    std::vector<double> ms;
    for (int i = 0; i < 3; ++i) {
      Session c(*f.g, {.fusion = f.fusion});
      c.initialize();
      c.run(f.fetches, f.feeds, f.targets);
      ms.push_back(c.stats().last_plan.compile_ms);
      r.pass_ms = c.stats().last_plan.pass_ms;
    }
    Session s(*f.g, {.threads = 1, .fusion = f.fusion});
    s.initialize();
    s.run(f.fetches, f.feeds, f.targets);
    PlanStats p = s.stats().last_plan;
    r.compile_ms = median(ms);
    r.graph_nodes = p.graph_nodes;
    r.steps = p.steps;
    r.arena = p.arena_bytes;
    r.lower = p.lower_bound_bytes;
    r.naive = p.naive_bytes;
    r.best_strategy = p.memory_strategy;
    r.serial_s = time_runs(s, f, min_seconds, min_reps);
  }
  for (MemoryStrategy m : {MemoryStrategy::greedy_by_size, MemoryStrategy::greedy_by_area,
                           MemoryStrategy::greedy_by_time, MemoryStrategy::naive}) {
    // greedy_by_size and _by_area look at every pair of overlapping lifetimes: reported as skipped on
    // the largest plans, like the 'best' strategy skips them (the plan compiler's placement pass).
    if ((m == MemoryStrategy::greedy_by_size || m == MemoryStrategy::greedy_by_area) && r.steps > 20000) continue;
    Session s(*f.g, {.threads = 1, .memory = m, .fusion = f.fusion});
    s.initialize();
    s.plan_info(f.fetches, f.feeds, f.targets);
    s.run(f.fetches, f.feeds, f.targets);
    PlanStats p = s.stats().last_plan;
    if (p.strategy_arenas.empty()) continue;  // the greedy by size and area skip very large plans
    r.memory.push_back({std::string(strategy_name(m)), p.arena_bytes, p.lower_bound_bytes, p.naive_bytes});
  }
  for (int t : threads) {
    Session par(*f.g, {.threads = t, .executor = Executor::parallel, .fusion = f.fusion});
    r.parallel_s[t] = time_runs(par, f, min_seconds, min_reps);
    if (t == threads.back()) {  // the parallel plan keeps buffers per wave: its own memory figures
      PlanStats p = par.stats().last_plan;
      r.memory.push_back({"parallel", p.arena_bytes, p.lower_bound_bytes, p.naive_bytes});
    }
    if (t > 1) {
      Session ser(*f.g, {.threads = t, .executor = Executor::serial, .fusion = f.fusion});
      r.serial_threads_s[t] = time_runs(ser, f, min_seconds, min_reps);
    }
  }
  return r;
}

// ---------------------------------------------------------------- PyTorch peer

/// samples/bench_sched_torch.py: next to the binary, else in the source tree.
fs::path torch_script(const char* argv0) {
  fs::path script = fs::path(argv0).parent_path() / "bench_sched_torch.py";
  if (!fs::exists(script)) script = fs::path(LOOM_SAMPLES_DIR) / "bench_sched_torch.py";
  return script;
}

/// Runs the peer's command line: its "torch.<key> <value>" lines are the figures, its other lines go to stderr.
std::map<std::string, double> read_torch_figures(const std::string& cmd) {
  std::map<std::string, double> out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return out;
  char line[512];
  while (std::fgets(line, sizeof line, p)) {
    std::istringstream is(line);
    std::string key;
    double v;
    if (is >> key >> v && key.rfind("torch.", 0) == 0) out[key] = v;
    else std::fprintf(stderr, "bench_sched_torch: %s", line);
  }
  pclose(p);
  return out;
}

/// One figure of the peer; 0 when it did not report it.
double torch_figure(const std::map<std::string, double>& torch, const std::string& key) {
  auto it = torch.find(key);
  return it == torch.end() ? 0 : it->second;
}

std::string fmt_bytes(size_t b) {
  char buf[32];
  if (b >= (1u << 20)) std::snprintf(buf, sizeof buf, "%.2fM", double(b) / double(1 << 20));
  else if (b >= 1024) std::snprintf(buf, sizeof buf, "%.1fK", double(b) / 1024);
  else std::snprintf(buf, sizeof buf, "%zu", b);
  return buf;
}

double micros(double seconds) { return seconds * 1e6; }

/// a / b, NAN when b is 0.
double ratio(size_t a, size_t b) { return b ? double(a) / double(b) : NAN; }

/// Least-squares slope of log(y) against log(x): the growth exponent.
double fit_exponent(const std::vector<std::pair<double, double>>& pts) {
  double n = double(pts.size()), sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (auto [x, y] : pts) {
    double lx = std::log(x), ly = std::log(y);
    sx += lx, sy += ly, sxx += lx * lx, sxy += lx * ly;
  }
  return (n * sxy - sx * sy) / (n * sxx - sx * sx);
}

void write_atomically(const fs::path& path, const std::string& text) { io::write_file_atomically(path.string(), text); }

/// Runs gnuplot on `script` in `dir`; false when it failed (or is not installed).
bool run_gnuplot(const fs::path& dir, const std::string& script) {
  const std::string cmd = "cd '" + dir.string() + "' && gnuplot " + script;
  return std::system(cmd.c_str()) == 0;
}

// ---------------------------------------------------------------- memory sweep (--memory-sweep)
// Budgets from the arena without recomputation down to the smallest the remat
// pass reaches: arena and step time per budget, next to Chen's rule alone and
// to PyTorch with torch.utils.checkpoint on every block.

struct SweepPoint {
  std::string family;
  double budget_fraction = 0;
  size_t arena = 0;
  double step_us = 0;
  double step_ratio = 1;  // over the plan without recomputation, timed run by run alternately with it
  std::string strategy;  // auto's choice ("none": nothing recomputed), or "chen-sqrt" for Chen's rule alone
  int recomputed = 0;
  double recompute_flops = 0, plan_flops = 0;
  size_t floor = 0;      // no recomputation goes below (plans with a budget): what one node needs at once
  std::string floor_at;  // that node
  std::string peak;      // --show-peak: where the plan's live bytes peak (describe_peak)
};

/// What --memory-sweep measures and reports.
struct SweepOptions {
  std::vector<double> fractions;  // of the full arena
  double min_seconds = 0.3;
  int min_reps = 5;
  bool early_updates = false;  // recomputing plans update variables early (atomic_updates off)
  bool json = false, torch_side = true, show_peak = false;
  std::string plot_dir;
};

/// Where a plan's live bytes peak (--show-peak): the step, and the arena
/// buffers live across it, largest first, each with its first writer and its
/// last reader.
std::string describe_peak(const PlanInfo& pi) {
  const int n = int(pi.steps.size());
  if (n == 0) return {};
  std::vector<size_t> live(size_t(n), 0);
  for (const PlanInfo::Buffer& b : pi.buffers)
    for (int i = std::max(b.first, 0); i <= std::min(b.last, n - 1); ++i) live[size_t(i)] += b.bytes;
  const int at = int(std::max_element(live.begin(), live.end()) - live.begin());
  std::vector<const PlanInfo::Buffer*> there;
  for (const PlanInfo::Buffer& b : pi.buffers)
    if (b.first <= at && at <= b.last) there.push_back(&b);
  std::sort(there.begin(), there.end(), [](auto* a, auto* b) { return a->bytes > b->bytes; });
  auto step = [&](int i) { return pi.steps[size_t(i)].name + " (" + pi.steps[size_t(i)].op + ")"; };
  std::ostringstream os;
  os << "    " << live[size_t(at)] << " bytes live at step " << at << " of " << n << ", " << step(at) << "; arena "
     << pi.arena_bytes << "\n";
  size_t rest = 0, rest_count = 0;
  for (const PlanInfo::Buffer* b : there) {
    if (b->bytes * 100 < live[size_t(at)]) {
      rest += b->bytes, ++rest_count;
      continue;
    }
    os << "    " << std::setw(9) << b->bytes << "  steps " << b->first << "-" << b->last << ", written by "
       << (b->writers.empty() ? std::string("?") : step(*std::min_element(b->writers.begin(), b->writers.end())))
       << (b->readers.empty() ? std::string()
                              : ", last read by " + step(*std::max_element(b->readers.begin(), b->readers.end())))
       << "\n";
  }
  if (rest_count) os << "    " << std::setw(9) << rest << "  in " << rest_count << " smaller buffers\n";
  return os.str();
}

/// The session of one plan under `budget` (0: none), compiled; null when the budget cannot be met.
std::unique_ptr<Session> plan_session(Family& f, size_t budget, Remat remat, const SweepOptions& o) {
  auto s = std::make_unique<Session>(*f.g, SessionOptions{.threads = 1,
                                                          .fusion = f.fusion,
                                                          .atomic_updates = !(o.early_updates && remat != Remat::off),
                                                          .memory_budget = budget,
                                                          .remat = remat});
  s->initialize();
  try {
    s->plan_info(f.fetches, f.feeds, f.targets);
  } catch (const Error& e) {
    if (std::string(e.what()).find("cannot be met") == std::string::npos) throw;
    return nullptr;
  }
  return s;
}

/// Runs of `base` and `s` alternating (after one untimed run each), for ~min_seconds:
/// the median seconds of s's runs and the median of the pairs' ratios s / base, so
/// that both plans see the same load of a shared host.
std::pair<double, double> time_against(Session& base, Session& s, const Family& f, double min_seconds,
                                       int min_reps) {
  run_seconds(base, f), run_seconds(s, f);
  std::vector<double> t, ratio;
  auto start = std::chrono::steady_clock::now();
  while (int(t.size()) < min_reps ||
         std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < 2 * min_seconds) {
    const double b = run_seconds(base, f), x = run_seconds(s, f);
    t.push_back(x), ratio.push_back(x / b);
    if (t.size() >= 2000) break;
  }
  return {median(t), median(ratio)};
}

/// The point of plan `s`, timed against `base` (itself when null).
SweepPoint sweep_point(Family& f, Session& s, Session* base, const SweepOptions& o) {
  SweepPoint pt;
  if (base) std::tie(pt.step_us, pt.step_ratio) = time_against(*base, s, f, o.min_seconds, o.min_reps);
  else pt.step_us = time_runs(s, f, o.min_seconds, o.min_reps);
  pt.step_us *= 1e6;
  const PlanStats p = s.stats().last_plan;
  pt.family = f.name;
  pt.arena = p.arena_bytes;
  pt.strategy = p.remat_strategy.empty() ? "none" : p.remat_strategy;
  pt.recomputed = p.recomputed;
  pt.recompute_flops = p.recompute_flops;
  pt.plan_flops = p.plan_flops;
  pt.floor = p.remat_floor;
  pt.floor_at = p.remat_floor_at;
  return pt;
}

/// The sweep of one family: `fractions` of the full arena, then bisection
/// towards the smallest budget met; Chen's rule alone as the last point.
std::vector<SweepPoint> memory_sweep(Family& f, const SweepOptions& o) {
  std::vector<SweepPoint> pts;
  std::unique_ptr<Session> s0 = plan_session(f, 0, Remat::off, o);
  SweepPoint full = sweep_point(f, *s0, nullptr, o);
  full.budget_fraction = 1;
  pts.push_back(full);
  // A point per budget met, timed against the plan without recomputation.
  auto point = [&](double fraction, size_t budget, Remat remat) {
    std::unique_ptr<Session> s = plan_session(f, budget, remat, o);
    if (!s) return false;
    pts.push_back(sweep_point(f, *s, s0.get(), o));
    pts.back().budget_fraction = fraction;
    if (o.show_peak) pts.back().peak = describe_peak(s->plan_info(f.fetches, f.feeds, f.targets));
    return true;
  };
  double ok = 1, bad = 0;
  for (double fr : o.fractions) {
    if (fr >= 1) continue;
    std::fprintf(stderr, "    %s: budget %.3f of %s\n", f.label.c_str(), fr, fmt_bytes(full.arena).c_str());
    if (!point(fr, size_t(fr * double(full.arena)), Remat::automatic)) {
      bad = fr;
      break;
    }
    ok = fr;
  }
  for (int i = 0; i < 4 && bad > 0; ++i) {  // towards the smallest budget met
    const double mid = (ok + bad) / 2;
    if (point(mid, size_t(mid * double(full.arena)), Remat::automatic)) ok = mid;
    else bad = mid;
  }
  // Chen's rule alone: sqrt(n) segments, whatever the budget. Under the live bytes' peak, which no
  // placement meets (one byte under the arena, placement's more orders may meet it without recomputing).
  if (point(0, s0->stats().last_plan.lower_bound_bytes - 1, Remat::chen)) {
    pts.back().budget_fraction = double(pts.back().arena) / double(full.arena);
    pts.back().strategy = "chen-sqrt";
  }
  return pts;
}

/// The sweeps of the selected families the sweep knows, in a fixed order.
std::vector<SweepPoint> measure_sweeps(const std::set<std::string>& fams, const SweepOptions& o) {
  std::vector<SweepPoint> pts;
  for (std::string name : {"mlpresnet", "transformer", "resnet9"}) {
    if (!fams.count(name)) continue;
    Family f = name == "mlpresnet" ? mlpresnet() : name == "transformer" ? transformer() : resnet9();
    std::fprintf(stderr, "  memory sweep of %s ...\n", f.label.c_str());
    for (SweepPoint& p : memory_sweep(f, o)) pts.push_back(std::move(p));
  }
  return pts;
}

/// PyTorch's step time and peak memory with torch.utils.checkpoint on every block, and without.
std::map<std::string, double> run_torch_checkpoint(const std::set<std::string>& fams, const SweepOptions& o,
                                                   const char* argv0) {
  std::ostringstream cmd;
  cmd << samples::peer_shell(samples::peer_python()) << " '" << torch_script(argv0).string() << "' --min-seconds "
      << o.min_seconds << " --checkpoint";
  for (const std::string& fam : fams) cmd << ' ' << fam;
  cmd << " 2>&1";
  std::fprintf(stderr, "  measuring PyTorch with torch.utils.checkpoint ...\n");
  return read_torch_figures(cmd.str());
}

/// Each family's first point: its plan without recomputation, the one the others are compared with.
std::map<std::string, SweepPoint> points_without_remat(const std::vector<SweepPoint>& pts) {
  std::map<std::string, SweepPoint> full;
  for (const SweepPoint& p : pts)
    if (!full.count(p.family)) full[p.family] = p;
  return full;
}

/// The sweep's fastest point with an arena of at most `bytes` (null if none).
const SweepPoint* fastest_within(const std::vector<SweepPoint>& pts, const std::string& family, double bytes) {
  const SweepPoint* best = nullptr;
  for (const SweepPoint& p : pts)
    if (p.family == family && p.strategy != "chen-sqrt" && double(p.arena) <= bytes &&
        (!best || p.step_ratio < best->step_ratio))
      best = &p;
  return best;
}

void print_sweep_json(const std::vector<SweepPoint>& pts, const std::map<std::string, double>& torch,
                      bool early_updates) {
  nlohmann::json doc = {{"points", nlohmann::json::array()}, {"torch", torch}, {"early_updates", early_updates}};
  for (const SweepPoint& p : pts)
    doc["points"].push_back({{"family", p.family}, {"budget_fraction", p.budget_fraction}, {"arena", p.arena},
                             {"step_us", p.step_us}, {"step_ratio", p.step_ratio}, {"strategy", p.strategy},
                             {"recomputed", p.recomputed}, {"recompute_flops", p.recompute_flops},
                             {"plan_flops", p.plan_flops}, {"floor", p.floor}});
  std::printf("%s\n", doc.dump(2).c_str());
}

void print_sweep_table(const std::vector<SweepPoint>& pts, const std::map<std::string, SweepPoint>& full,
                       bool early_updates) {
  std::printf("\nmemory sweep: serial executor, 1 thread; step times are medians; x step0: the median ratio of\n"
              "runs alternating with the plan without recomputation; remat = auto unless noted%s\n\n",
              early_updates
                  ? ";\nrecomputing plans update variables as soon as their gradients exist (atomic_updates off)"
                  : "");
  std::printf("%-12s %8s %10s %8s %10s %8s %10s %9s %s\n", "family", "budget", "arena", "arena/0", "step us",
              "x step0", "recomputed", "+flops", "strategy");
  for (const SweepPoint& p : pts) {
    const SweepPoint& z = full.at(p.family);
    std::printf("%-12s %8.3f %10s %8.3f %10.1f %8.3f %10d %8.1f%% %s\n", p.family.c_str(), p.budget_fraction,
                fmt_bytes(p.arena).c_str(), double(p.arena) / double(z.arena), p.step_us, p.step_ratio,
                p.recomputed, p.plan_flops > 0 ? 100 * p.recompute_flops / p.plan_flops : 0.0, p.strategy.c_str());
  }
  std::printf("\n  arena/0, x step0: over the plan without recomputation; +flops: FLOPs recomputed over the plan's.\n");
}

void print_sweep_goal(const std::vector<SweepPoint>& pts, const std::map<std::string, SweepPoint>& full) {
  std::printf("\ngoal: at 1/3 of the arena, step <= 1.25x the step without recomputation\n");
  for (const auto& [fam, z] : full) {
    const SweepPoint* p = fastest_within(pts, fam, double(z.arena) / 3);
    if (!p) std::printf("  %-12s 1/3 of the arena not reached\n", fam.c_str());
    else std::printf("  %-12s arena %s (%.3f): %.3fx\n", fam.c_str(), fmt_bytes(p->arena).c_str(),
                     double(p->arena) / double(z.arena), p->step_ratio);
  }
  std::printf("floor: no recomputation goes below what one node needs at once (its arena inputs, outputs and\n"
              "workspace) with these kernels\n");
  for (const auto& [fam, z] : full) {
    const SweepPoint* f = nullptr;
    for (const SweepPoint& p : pts)
      if (p.family == fam && p.floor > 0 && (!f || p.floor > f->floor)) f = &p;
    if (f) std::printf("  %-12s %s (%.3f): %s\n", fam.c_str(), fmt_bytes(f->floor).c_str(),
                       double(f->floor) / double(z.arena), f->floor_at.c_str());
  }
}

/// --show-peak: where each family's smallest recomputing plan (auto's) peaks.
void print_sweep_peaks(const std::vector<SweepPoint>& pts, const std::map<std::string, SweepPoint>& full) {
  for (const auto& [fam, z] : full) {
    const SweepPoint* smallest = nullptr;
    for (const SweepPoint& p : pts)
      if (p.family == fam && !p.peak.empty() && p.strategy != "chen-sqrt" && (!smallest || p.arena < smallest->arena))
        smallest = &p;
    if (!smallest) continue;
    std::printf("\npeak of %s's smallest plan (%.3f of the arena; buffers under 1%% of the live bytes summed):\n%s",
                fam.c_str(), double(smallest->arena) / double(z.arena), smallest->peak.c_str());
  }
}

/// PyTorch's fraction of its own peak memory with checkpointing, next to loom at the same fraction of its arena.
void print_sweep_torch(const std::vector<SweepPoint>& pts, const std::map<std::string, SweepPoint>& full,
                       const std::map<std::string, double>& torch) {
  if (torch.empty()) return;
  std::printf("\nside by side with PyTorch (torch.utils.checkpoint on every block; memory: peak heap bytes of a\n"
              "step, above the bytes in use before it; loom: the arena, at the same fraction of its own)\n");
  for (const auto& [fam, z] : full) {
    const std::string k = "torch." + fam;
    if (!torch.count(k + ".ckpt.ms_per_step")) continue;
    auto figure = [&](const char* what) { return torch_figure(torch, k + what); };
    const double frac = figure(".ckpt.peak_bytes") / std::max(1.0, figure(".peak_bytes"));
    const double tt = figure(".ckpt.ms_per_step") * 1e3;
    const SweepPoint* p = fastest_within(pts, fam, frac * double(z.arena));
    std::printf("  %-12s PyTorch: %.0f us, %.2fx its own, memory %.3f of its own; loom at <= %.3f: %s", fam.c_str(),
                tt, tt / (figure(".ms_per_step") * 1e3), frac, frac, p ? "" : "not reached\n");
    if (p) std::printf("%.0f us, %.2fx its own; loom/PyTorch %.3f\n", p->step_us, p->step_ratio, p->step_us / tt);
  }
}

/// The gnuplot script of memory_sweep.png: step time against arena, each relative to the plan without recomputation.
std::string sweep_plot_script(const std::map<std::string, SweepPoint>& full,
                              const std::map<std::string, double>& torch) {
  std::ostringstream gp;
  gp << "set datafile separator ','\nset terminal pngcairo size 900,560 noenhanced\nset key top right\nset grid\n"
     << "set output 'memory_sweep.png'\nset title 'step time against arena (remat = auto; Chen: sqrt(n) rule alone)'\n"
     << "set xlabel 'arena / arena without recomputation'\nset ylabel 'step time / step without recomputation'\n"
     << "set xrange [0:1.05]\nset yrange [0.8:*]\n"
     << "plot for [f in 'mlpresnet transformer resnet9'] 'memory_sweep.csv' every ::1 using "
     << "(strcol(1) eq f && strcol(7) ne 'chen-sqrt' ? $4 : 1/0):6 with linespoints title f, "
     << "for [f in 'mlpresnet transformer resnet9'] 'memory_sweep.csv' every ::1 using "
     << "(strcol(1) eq f && strcol(7) eq 'chen-sqrt' ? $4 : 1/0):6 with points pointsize 2 title f.' (Chen)'";
  for (const auto& [fam, z] : full) {
    const std::string k = "torch." + fam;
    if (!torch.count(k + ".ckpt.ms_per_step")) continue;
    auto figure = [&](const char* what) { return torch_figure(torch, k + what); };
    gp << ", '+' using (" << figure(".ckpt.peak_bytes") / std::max(1.0, figure(".peak_bytes")) << "):("
       << figure(".ckpt.ms_per_step") / figure(".ms_per_step") << ") every ::0::0 with points pointsize 2 title '"
       << fam << " (PyTorch checkpoint)'";
  }
  gp << "\n";
  return gp.str();
}

/// memory_sweep.csv, memory_sweep.gp and (gnuplot) memory_sweep.png in o.plot_dir.
void write_sweep_plot(const std::vector<SweepPoint>& pts, const std::map<std::string, SweepPoint>& full,
                      const std::map<std::string, double>& torch, const SweepOptions& o) {
  const fs::path dir(o.plot_dir);
  fs::create_directories(dir);
  std::ostringstream csv;
  csv << "family,budget_fraction,arena,arena_fraction,step_us,step_ratio,strategy\n";
  for (const SweepPoint& p : pts)
    csv << p.family << ',' << p.budget_fraction << ',' << p.arena << ','
        << double(p.arena) / double(full.at(p.family).arena) << ',' << p.step_us << ','
        << p.step_ratio << ',' << p.strategy << "\n";
  write_atomically(dir / "memory_sweep.csv", csv.str());
  write_atomically(dir / "memory_sweep.gp", sweep_plot_script(full, torch));
  if (!run_gnuplot(dir, "memory_sweep.gp"))
    std::fprintf(stderr, "bench_sched: gnuplot failed (install gnuplot-nox); memory_sweep.csv is in %s\n", dir.c_str());
  else if (!o.json)
    std::printf("\nplot written to %s/memory_sweep.png\n", dir.c_str());
}

void run_memory_sweep(const std::set<std::string>& fams, const SweepOptions& o, const char* argv0) {
  const std::vector<SweepPoint> pts = measure_sweeps(fams, o);
  const std::map<std::string, double> torch = o.torch_side ? run_torch_checkpoint(fams, o, argv0)
                                                           : std::map<std::string, double>{};
  const std::map<std::string, SweepPoint> full = points_without_remat(pts);
  if (o.json) {
    print_sweep_json(pts, torch, o.early_updates);
  } else {
    print_sweep_table(pts, full, o.early_updates);
    print_sweep_goal(pts, full);
    print_sweep_peaks(pts, full);
    print_sweep_torch(pts, full, torch);
  }
  if (!o.plot_dir.empty()) write_sweep_plot(pts, full, torch, o);
}

// ---------------------------------------------------------------- command line

/// What to measure and how to report it.
struct Options {
  std::string families_arg = "chain,wide,random,mlp,mlpresnet,transformer,resnet9,lstm";
  std::set<std::string> families;  // families_arg split at the commas
  std::vector<int64_t> chain_sizes{1000, 10000, 100000}, wide_sizes{2, 4, 8, 16}, random_sizes{1000, 10000, 100000};
  std::vector<int> threads;  // of the parallel executor; the main table shows the last
  double min_seconds = 0.3;
  int min_reps = 5;
  uint64_t seed = 1;
  bool json = false, torch_side = true;
  std::string csv_dir, plot_dir;
  bool memory_sweep = false, early_updates = false, show_peak = false;
  std::vector<double> fractions{0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 1.0 / 3, 0.3, 0.25, 0.2, 0.15, 0.1};
};

SweepOptions sweep_options(const Options& o) {
  return {o.fractions, o.min_seconds, o.min_reps, o.early_updates, o.json, o.torch_side, o.show_peak, o.plot_dir};
}

int hardware_threads() { return int(std::max(1u, std::thread::hardware_concurrency())); }

/// Each family's graphs, in the order the report shows them: each is handed to MeasureGraph as soon as it is built,
/// so that one graph at a time is alive.
using MeasureGraph = std::function<void(Family)>;
struct FamilyGraphs {
  std::string name;
  std::function<void(const Options&, const MeasureGraph&)> build;
};

const std::vector<FamilyGraphs>& all_families() {
  static const std::vector<FamilyGraphs> families = {
      {"chain", [](const Options& o, const MeasureGraph& m) { for (int64_t n : o.chain_sizes) m(chain(n)); }},
      {"wide", [](const Options& o, const MeasureGraph& m) { for (int64_t k : o.wide_sizes) m(wide(k)); }},
      {"random",
       [](const Options& o, const MeasureGraph& m) { for (int64_t n : o.random_sizes) m(random_dag(n, o.seed)); }},
      {"mlp", [](const Options&, const MeasureGraph& m) { m(mlp()); }},
      {"mlpresnet", [](const Options&, const MeasureGraph& m) { m(mlpresnet()); }},
      {"transformer", [](const Options&, const MeasureGraph& m) { m(transformer()); }},
      {"resnet9", [](const Options&, const MeasureGraph& m) { m(resnet9()); }},
      {"lstm", [](const Options&, const MeasureGraph& m) { m(lstm_lm()); }},
  };
  return families;
}

bool known_family(const std::string& name) {
  const auto& all = all_families();
  return std::any_of(all.begin(), all.end(), [&](const FamilyGraphs& f) { return f.name == name; });
}

/// The options and their help text; the values land in `o`.
po::options_description describe_options(Options& o) {
  po::options_description desc("bench_sched: executors, memory plans and plan compile time on graph families");
  desc.add_options()("help,h", "show this help")("families", po::value(&o.families_arg)->default_value(o.families_arg),
                                                 "comma list of families to run")(
      "chain", po::value(&o.chain_sizes)->multitoken(), "chain lengths (default 1000 10000 100000)")(
      "wide", po::value(&o.wide_sizes)->multitoken(), "branch counts of the wide family (default 2 4 8 16)")(
      "random", po::value(&o.random_sizes)->multitoken(), "op counts of random DAGs (default 1000 10000 100000)")(
      "threads", po::value(&o.threads)->multitoken(), "thread counts for the parallel executor (default 1 2 [all])")(
      "min-seconds", po::value(&o.min_seconds)->default_value(o.min_seconds, "0.3"),
      "time each configuration at least this long")("seed", po::value(&o.seed)->default_value(o.seed),
                                                    "seed of the random DAGs")(
      "json", "print one JSON document instead of the table")("csv", po::value(&o.csv_dir), "write CSV files into DIR")(
      "plot", po::value(&o.plot_dir), "write CSV files and PNG plots (gnuplot) into DIR")(
      "no-torch", "skip the PyTorch side-by-side runs")(
      "memory-sweep",
      "rematerialization: arena and step time for budgets from the full arena down to the smallest "
      "reachable (families mlpresnet, transformer, resnet9)")(
      "fractions", po::value(&o.fractions)->multitoken(), "memory sweep: budget fractions (default 0.9 0.8 ... 0.1)")(
      "early-updates",
      "memory sweep: recomputing plans update each variable as soon as its gradient exists "
      "(SessionOptions::atomic_updates off), so gradients need not all be live at once")(
      "show-peak",
      "memory sweep: where each family's smallest recomputing plan peaks (the step and the buffers live "
      "there)");
  return desc;
}

/// Parses the command line into `o`; the exit code when the program ends here (help, a bad option or family).
std::optional<int> parse_options(int argc, char** argv, Options& o) {
  const po::options_description desc = describe_options(o);
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    po::notify(vm);
  } catch (const std::exception& e) {
    std::cerr << "bench_sched: " << e.what() << "\n" << desc;
    return 2;
  }
  if (vm.count("help")) {
    std::cout << desc;
    return 0;
  }
  if (o.threads.empty()) {
    o.threads = {1, 2};
    if (hardware_threads() > 2) o.threads.push_back(hardware_threads());
  }
  o.json = vm.count("json");
  o.torch_side = !vm.count("no-torch");
  o.memory_sweep = vm.count("memory-sweep");
  o.early_updates = vm.count("early-updates");
  o.show_peak = vm.count("show-peak");
  std::stringstream ss(o.families_arg);
  for (std::string f; std::getline(ss, f, ',');) o.families.insert(f);
  for (const std::string& f : o.families)
    if (!known_family(f)) {
      std::cerr << "bench_sched: unknown family '" << f << "'\n";
      return 2;
    }
  // The sweep's default: the families it knows.
  if (o.memory_sweep && vm["families"].defaulted()) o.families = {"mlpresnet", "transformer", "resnet9"};
  auto in = [](const auto& xs, double lo, double hi) {
    for (auto x : xs)
      if (!(x >= lo && x <= hi)) return false;
    return true;
  };
  const char* usage = nullptr;
  if (!in(o.chain_sizes, 1, 1e7) || !in(o.random_sizes, 1, 1e7)) usage = "--chain and --random must be in [1, 10^7]";
  if (!in(o.wide_sizes, 1, 4096)) usage = "--wide must be in [1, 4096]";
  if (!in(o.threads, 1, SessionOptions::kMaxThreads)) usage = "--threads must be in [1, 4096]";
  if (!in(std::vector{o.min_seconds}, 1e-6, 1e6)) usage = "--min-seconds must be in (0, 10^6]";
  if (o.fractions.empty() || !in(o.fractions, 1e-6, 1.0)) usage = "--fractions must be in (0, 1]";
  if (usage) {
    std::cerr << "bench_sched: " << usage << "\n";
    return 2;
  }
  return std::nullopt;
}

// ---------------------------------------------------------------- measuring

std::vector<Result> run_families(const Options& o) {
  std::vector<Result> results;
  const MeasureGraph measure_graph = [&](Family f) {
    if (!o.json) std::fprintf(stderr, "  measuring %s ...\n", f.label.c_str());
    results.push_back(measure(f, o.threads, o.min_seconds, o.min_reps));
  };
  for (const FamilyGraphs& f : all_families())
    if (o.families.count(f.name)) f.build(o, measure_graph);
  return results;
}

/// PyTorch eager on the chains and training steps samples/bench_sched_torch.py has peers for (none: empty).
std::map<std::string, double> run_torch_eager(const Options& o, const char* argv0) {
  const std::set<std::string>& f = o.families;
  if (!o.torch_side || !(f.count("chain") || f.count("mlp") || f.count("mlpresnet") || f.count("resnet9"))) return {};
  const fs::path script = torch_script(argv0);
  if (!o.json) std::fprintf(stderr, "  measuring PyTorch eager (%s) ...\n", script.c_str());
  std::ostringstream cmd;
  cmd << samples::peer_shell(samples::peer_python()) << " '" << script.string() << "' --min-seconds " << o.min_seconds
      << " --chain";
  if (f.count("chain"))
    for (int64_t n : o.chain_sizes) cmd << ' ' << n;
  cmd << " 2>&1";
  return read_torch_figures(cmd.str());
}

/// How plan compile time grows with the graph.
struct CompileGrowth {
  double chain_exponent = NAN;                                           // over the chain sizes (NAN: under two)
  std::map<std::string, std::vector<std::pair<double, double>>> points;  // per family: (nodes, ms)
  std::map<std::string, double> exponents;                               // families measured at two sizes or more
};

CompileGrowth compile_growth(const std::vector<Result>& results) {
  CompileGrowth g;
  std::vector<std::pair<double, double>> chain_pts;
  for (const Result& r : results)
    if (r.family == "chain") chain_pts.push_back({double(r.graph_nodes), r.compile_ms});
  if (chain_pts.size() >= 2) g.chain_exponent = fit_exponent(chain_pts);
  for (const Result& r : results) g.points[r.family].push_back({double(r.graph_nodes), std::max(r.compile_ms, 1e-3)});
  for (const auto& [fam, pts] : g.points)
    if (pts.size() >= 2 && pts.front().first != pts.back().first) g.exponents[fam] = fit_exponent(pts);
  return g;
}

// ---------------------------------------------------------------- report

nlohmann::json result_json(const Result& r) {
  nlohmann::json par = nlohmann::json::object(), ser = nlohmann::json::object(), strategies = nlohmann::json::array();
  for (auto [t, sec] : r.parallel_s) par[std::to_string(t)] = micros(sec);
  for (auto [t, sec] : r.serial_threads_s) ser[std::to_string(t)] = micros(sec);
  for (const auto& m : r.memory)
    strategies.push_back({{"strategy", m.strategy}, {"arena", m.arena}, {"lower_bound", m.lower}});
  return {{"family", r.family},
          {"label", r.label},
          {"size", r.size},
          {"graph_nodes", r.graph_nodes},
          {"steps", r.steps},
          {"compile_ms", r.compile_ms},
          {"pass_ms", r.pass_ms},
          {"serial_us", micros(r.serial_s)},
          {"serial_us_per_node", micros(r.serial_s) / std::max(r.steps, 1)},
          {"parallel_us", par},
          {"serial_threads_us", ser},
          {"arena", r.arena},
          {"lower_bound", r.lower},
          {"naive", r.naive},
          {"strategy", r.best_strategy},
          {"strategies", strategies}};
}

/// The report as one JSON document, through nlohmann-json: strings escaped, non-finite numbers (one chain size:
/// no exponent) as null.
void print_json(const std::vector<Result>& results, const std::vector<int>& threads, const CompileGrowth& growth,
                const std::map<std::string, double>& torch) {
  nlohmann::json doc = {{"threads", threads}, {"results", nlohmann::json::array()}};
  for (const Result& r : results) doc["results"].push_back(result_json(r));
  doc["compile_exponent"] = growth.chain_exponent;
  doc["compile_exponents"] = growth.exponents;
  doc["torch"] = torch;
  std::printf("%s\n", doc.dump(2).c_str());
}

/// Per-node overhead, speedup at `tmax` threads and memory of the best strategy, one line per graph.
void print_main_table(const std::vector<Result>& results, int tmax) {
  std::printf("\nbench_sched: %d hardware threads; times are medians\n\n", hardware_threads());
  std::printf("%-22s %7s %6s %10s %11s %9s %11s %8s %9s %9s %9s %8s %8s %s\n", "family", "nodes", "steps",
              "compile ms", "serial us", "us/node", "par us", "speedup", "arena", "lower", "naive", "ar/low",
              "ar/naive", "strategy");
  for (const Result& r : results) {
    double par = r.parallel_s.count(tmax) ? r.parallel_s.at(tmax) : NAN;
    std::printf("%-22s %7d %6d %10.2f %11.1f %9.3f %11.1f %8.2f %9s %9s %9s %8.3f %8.3f %s\n", r.label.c_str(),
                r.graph_nodes, r.steps, r.compile_ms, micros(r.serial_s), micros(r.serial_s) / std::max(r.steps, 1),
                micros(par), r.serial_s / par, fmt_bytes(r.arena).c_str(), fmt_bytes(r.lower).c_str(),
                fmt_bytes(r.naive).c_str(), ratio(r.arena, r.lower), ratio(r.arena, r.naive), r.best_strategy.c_str());
  }
  std::printf("\n  serial: serial executor, 1 thread; par: parallel executor, %d threads; speedup = serial / par.\n",
              tmax);
  std::printf("  arena: bytes of the plan's arena; lower: the most bytes live at once in its schedule; naive: every\n"
              "  tensor its own buffer; chain runs with fusion off (one step per op).\n");
}

void print_parallel_table(const std::vector<Result>& results, const std::vector<int>& threads) {
  std::printf("\nparallel executor by threads (us per run; speedup over the serial executor at 1 thread)\n");
  std::printf("%-22s", "family");
  for (int t : threads) std::printf(" %12s", ("par " + std::to_string(t) + "t").c_str());
  for (int t : threads)
    if (t > 1) std::printf(" %14s", ("serial " + std::to_string(t) + "t").c_str());
  std::printf("\n");
  for (const Result& r : results) {
    std::printf("%-22s", r.label.c_str());
    for (int t : threads) std::printf(" %7.1f %4.2fx", micros(r.parallel_s.at(t)), r.serial_s / r.parallel_s.at(t));
    for (int t : threads)
      if (t > 1) std::printf(" %9.1f %4.2fx", micros(r.serial_threads_s.at(t)), r.serial_s / r.serial_threads_s.at(t));
    std::printf("\n");
  }
}

void print_memory_table(const std::vector<Result>& results) {
  const char* const strategies[] = {"greedy_by_size", "greedy_by_area", "greedy_by_time", "naive", "parallel"};
  std::printf("\nmemory strategies (arena / lower bound; parallel: the parallel executor's plan, arena / serial plan's "
              "arena)\n");
  std::printf("%-22s", "family");
  for (const char* s : strategies) std::printf(" %16s", s);
  std::printf("\n");
  for (const Result& r : results) {
    std::printf("%-22s", r.label.c_str());
    for (const char* s : strategies) {
      auto it = std::find_if(r.memory.begin(), r.memory.end(), [&](const MemoryRow& m) { return m.strategy == s; });
      if (it == r.memory.end()) std::printf(" %16s", "(skipped)");
      else if (it->strategy == "parallel")
        std::printf(" %7.3f / %6.2f", ratio(it->arena, it->lower), ratio(it->arena, r.arena));
      else std::printf(" %16.3f", ratio(it->arena, it->lower));
    }
    std::printf("\n");
  }
}

void print_compile_growth(const CompileGrowth& growth) {
  if (!growth.exponents.empty())
    std::printf("\nplan compile time, growth exponent per family (1 = linear, 2 = quadratic)\n");
  for (const auto& [fam, e] : growth.exponents) {
    std::printf("  %-12s", fam.c_str());
    for (auto [n, ms] : growth.points.at(fam)) std::printf(" %.0f nodes %.1f ms;", n, ms);
    std::printf(" exponent %.2f\n", e);
  }
}

/// loom next to PyTorch eager: per-node overhead on the chains, step time (loom's fastest executor) on the steps.
void print_torch_side_by_side(const std::vector<Result>& results, const std::map<std::string, double>& torch) {
  if (torch.empty()) return;
  std::printf("\nside by side with PyTorch eager (%s)\n", "torch.set_num_threads(1)");
  for (const Result& r : results) {
    if (r.family == "chain") {
      std::string key = "torch.chain." + std::to_string(r.size) + ".us_per_op";
      if (!torch.count(key)) continue;
      double l = micros(r.serial_s) / r.steps, t = torch.at(key);
      std::printf("  %-20s loom %8.3f us/node   PyTorch %8.3f us/op   loom/PyTorch %.4f (%.0fx less overhead)\n",
                  r.label.c_str(), l, t, l / t, t / l);
    } else if (r.family == "mlp" || r.family == "mlpresnet" || r.family == "resnet9") {
      std::string key = "torch." + r.family + ".ms_per_step";
      if (!torch.count(key)) continue;
      double best = r.serial_s;
      for (auto [t, s] : r.parallel_s) best = std::min(best, s);
      for (auto [t, s] : r.serial_threads_s) best = std::min(best, s);
      double l = best * 1e3, t = torch.at(key);
      std::printf("  %-20s loom %8.3f ms/step   PyTorch %8.3f ms/step  loom/PyTorch %.3f\n", r.label.c_str(), l, t,
                  l / t);
    }
  }
}

void print_tables(const std::vector<Result>& results, const std::vector<int>& threads, const CompileGrowth& growth,
                  const std::map<std::string, double>& torch) {
  print_main_table(results, threads.back());
  print_parallel_table(results, threads);
  print_memory_table(results);
  print_compile_growth(growth);
  print_pass_times(results);
  print_torch_side_by_side(results, torch);
}

// ---------------------------------------------------------------- CSV files and plots

/// overhead.csv and compile.csv (chains only), speedup.csv, memory.csv and memory_plot.csv in `dir`.
void write_csv_files(const fs::path& dir, const std::vector<Result>& results, const std::vector<int>& threads) {
  std::ostringstream overhead, speedup, memory, memory_plot, compile;
  memory_plot << "label,arena_over_lower,parallel_arena_over_lower\n";
  overhead << "label,nodes,steps,serial_us_per_node";
  for (int t : threads) overhead << ",parallel_" << t << "t_us_per_node";
  overhead << "\n";
  speedup << "label,threads,parallel_speedup,serial_threads_speedup\n";
  memory << "label,strategy,arena,lower_bound,naive,arena_over_lower\n";
  compile << "nodes,compile_ms\n";
  for (const Result& r : results) {
    if (r.family == "chain") {
      overhead << r.label << ',' << r.graph_nodes << ',' << r.steps << ',' << micros(r.serial_s) / r.steps;
      for (int t : threads) overhead << ',' << micros(r.parallel_s.at(t)) / r.steps;
      overhead << "\n";
      compile << r.graph_nodes << ',' << r.compile_ms << "\n";
    }
    for (int t : threads)
      speedup << r.label << ',' << t << ',' << r.serial_s / r.parallel_s.at(t) << ','
              << (t > 1 ? r.serial_s / r.serial_threads_s.at(t) : 1.0) << "\n";
    memory << r.label << ",best," << r.arena << ',' << r.lower << ',' << r.naive << ',' << ratio(r.arena, r.lower)
           << "\n";
    auto par =
        std::find_if(r.memory.begin(), r.memory.end(), [](const MemoryRow& m) { return m.strategy == "parallel"; });
    memory_plot << r.label << ',' << ratio(r.arena, r.lower) << ','
                << (par == r.memory.end() ? NAN : ratio(par->arena, par->lower)) << "\n";
    for (const MemoryRow& m : r.memory)
      memory << r.label << ',' << m.strategy << ',' << m.arena << ',' << m.lower << ',' << m.naive << ','
             << ratio(m.arena, m.lower) << "\n";
  }
  write_atomically(dir / "overhead.csv", overhead.str());
  write_atomically(dir / "speedup.csv", speedup.str());
  write_atomically(dir / "memory.csv", memory.str());
  write_atomically(dir / "memory_plot.csv", memory_plot.str());
  write_atomically(dir / "compile.csv", compile.str());
}

/// The gnuplot script of the plots; overhead.png and compile.png only with `chains` (measured on that family).
std::string plot_script(const std::vector<Result>& results, const std::vector<int>& threads, bool chains) {
  std::ostringstream gp;
  gp << "set datafile separator ','\nset terminal pngcairo size 900,560 noenhanced\nset key top left\nset grid\n";
  if (chains) {
    gp << "set output 'overhead.png'\nset title 'executor overhead per node (chain of tiny ops)'\n"
       << "set logscale x\nset xlabel 'nodes'\nset ylabel 'us per node'\n"
       << "plot 'overhead.csv' every ::1 using 2:4 with linespoints title 'serial'";
    for (size_t i = 0; i < threads.size(); ++i)
      gp << ", '' every ::1 using 2:" << 5 + i << " with linespoints title 'parallel " << threads[i] << "t'";
    gp << "\nunset logscale x\n"
       << "set output 'compile.png'\nset title 'plan compile time'\nset logscale xy\nset xlabel 'nodes'\n"
       << "set ylabel 'ms'\nplot 'compile.csv' every ::1 using 1:2 with linespoints title 'compile'\n"
       << "unset logscale xy\n";
  }
  gp << "set output 'speedup.png'\nset title 'parallel executor speedup over serial (1 thread)'\n"
     << "set xlabel 'threads'\nset ylabel 'speedup'\nset xtics 1\n"
     << "plot for [f in '";
  std::set<std::string> labels;
  for (const Result& r : results) labels.insert(r.label);
  bool first = true;
  for (const auto& l : labels) gp << (first ? "" : " ") << l, first = false;
  gp << "'] 'speedup.csv' every ::1 using (strcol(1) eq f ? $2 : 1/0):3 with linespoints title f\n"
     << "set output 'memory.png'\nset title 'arena / lower bound of its schedule'\nset style data histogram\n"
     << "set style fill solid 0.6\nset boxwidth 0.8\nset xtics rotate by -30\nset yrange [0:*]\nset ylabel 'ratio'\n"
     << "set xlabel ''\nset key below horizontal\n"
     << "plot 'memory_plot.csv' every ::1 using 2:xtic(1) title 'serial plan (best strategy)', "
     << "'' every ::1 using 3 title 'parallel plan'\n";
  return gp.str();
}

/// plots.gp and (gnuplot) the PNG plots in `dir`, next to the CSV files they read.
void write_plots(const fs::path& dir, const std::vector<Result>& results, const std::vector<int>& threads, bool json) {
  const bool chains = std::any_of(results.begin(), results.end(), [](const Result& r) { return r.family == "chain"; });
  write_atomically(dir / "plots.gp", plot_script(results, threads, chains));
  if (!run_gnuplot(dir, "plots.gp"))
    std::fprintf(stderr, "bench_sched: gnuplot failed (install gnuplot-nox); CSV files are in %s\n", dir.c_str());
  else if (!json)
    std::printf("\nplots written to %s (%sspeedup.png, memory.png)\n", dir.c_str(),
                chains ? "overhead.png, compile.png, " : "");
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (std::optional<int> exit_code = parse_options(argc, argv, o)) return *exit_code;
  if (o.memory_sweep) {
    try {
      run_memory_sweep(o.families, sweep_options(o), argv[0]);
      return 0;
    } catch (const Error& e) {
      std::cerr << "bench_sched: " << e.what() << "\n";
      return 1;
    }
  }
  std::vector<Result> results;
  try {
    results = run_families(o);
  } catch (const Error& e) {
    std::cerr << "bench_sched: " << e.what() << "\n";
    return 1;
  }
  const std::map<std::string, double> torch = run_torch_eager(o, argv[0]);
  const CompileGrowth growth = compile_growth(results);
  if (o.json) print_json(results, o.threads, growth, torch);
  else print_tables(results, o.threads, growth, torch);
  if (!o.csv_dir.empty() || !o.plot_dir.empty()) {
    const fs::path dir = o.plot_dir.empty() ? fs::path(o.csv_dir) : fs::path(o.plot_dir);
    fs::create_directories(dir);
    write_csv_files(dir, results, o.threads);
    if (!o.plot_dir.empty()) write_plots(dir, results, o.threads, o.json);
  }
  return 0;
}
