// The plan compiler's passes (core/passes/): each optional pass switched off
// gives identical results and a plan the independent verifier accepts; each
// pass run alone on a compilation establishes what its header says; the
// placement is a pure function checked on random lifetimes; DOT export
// escapes any name.

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>

#include "core/passes/passes.hpp"
#include "frontend/loom.hpp"
#include "tests/core/graphs.hpp"

using namespace loom;
using test::contains;
using test::error_of;
using test::rand;

namespace {

/// A compilation run pass by pass, outside a Session (variables get zeros).
struct Stepper {
  Graph& g;
  SessionOptions opt;
  std::vector<Tensor> fetches, targets;
  Feeds feeds;
  std::map<int, NDArray> vars;
  Plan plan;
  CompileRequest req;
  Compilation c;
  size_t next = 0;

  Stepper(Graph& graph, SessionOptions o, std::vector<Tensor> f, Feeds fd, std::vector<Tensor> t = {})
      : g(graph), opt(std::move(o)), fetches(std::move(f)), targets(std::move(t)), feeds(std::move(fd)),
        req{&g, &opt, &fetches, &feeds, &targets, [this](int n) -> NDArray& { return var(n); }}, c(req, plan) {
    plan.device = opt.device;
  }
  NDArray& var(int n) {
    auto it = vars.find(n);
    if (it == vars.end()) {
      const TensorType& t = g.node(n).outputs[0];
      it = vars.emplace(n, NDArray::zeros(t.shape, t.dtype)).first;
    }
    return it->second;
  }
  /// Runs the enabled passes up to and including `last`.
  void run_through(std::string_view last) {
    for (; next < plan_passes().size(); ++next) {
      const Pass& p = plan_passes()[next];
      if (pass_enabled(p, opt)) p.run(c);
      if (p.name == last) {
        ++next;
        return;
      }
    }
    FAIL("no pass '", last, "'");
  }
  int alive_with_op(std::string_view op) const {
    int n = 0;
    for (const PNode& x : plan.nodes) n += x.alive && x.op && x.op->name == op;
    return n;
  }
};

std::vector<std::string> optional_passes() {
  std::vector<std::string> r;
  for (const Pass& p : plan_passes())
    if (p.optional) r.emplace_back(p.name);
  return r;
}

/// Overlapping bytes are never live at the same time.
void check_placement(std::span<const Lifetime> items, const Placement& pl) {
  for (size_t i = 0; i < items.size(); ++i) {
    REQUIRE(pl.offsets[i] + items[i].bytes <= pl.arena);
    for (size_t j = 0; j < i; ++j) {
      const bool bytes = pl.offsets[i] < pl.offsets[j] + items[j].bytes && pl.offsets[j] < pl.offsets[i] + items[i].bytes;
      const bool time = items[i].first <= items[j].last && items[j].first <= items[i].last;
      REQUIRE_FALSE((bytes && time));
    }
  }
}

/// Minimal DOT check: quoted strings close, escapes are the documented ones,
/// no raw control character inside them, braces balance outside them.
bool valid_dot(const std::string& d) {
  bool in_str = false;
  int depth = 0;
  for (size_t i = 0; i < d.size(); ++i) {
    const char ch = d[i];
    if (in_str) {
      if (ch == '\\') {
        if (i + 1 >= d.size()) return false;
        ++i;
      } else if (ch == '"') {
        in_str = false;
      } else if (static_cast<unsigned char>(ch) < 0x20) {
        return false;
      }
    } else if (ch == '"') {
      in_str = true;
    } else if (ch == '{') {
      ++depth;
    } else if (ch == '}') {
      if (--depth < 0) return false;
    }
  }
  return !in_str && depth == 0;
}

}  // namespace

TEST_SUITE("core/passes") {
  TEST_CASE("the pipeline lists every pass once, required ones cannot be disabled") {
    std::vector<std::string> names;
    for (const Pass& p : plan_passes()) names.emplace_back(p.name);
    CHECK(names.front() == "prune");
    CHECK(names.back() == "bind");
    CHECK(optional_passes() == std::vector<std::string>{"cse", "fold", "fusion", "epilogue", "assign_in_place",
                                                       "stream", "remat", "inplace"});
    Graph g;
    Tensor x = g.placeholder("x", {3});
    Session bad(g, {.disable_passes = {"schedule"}});
    CHECK(contains(error_of([&] { bad.run({exp(x)}, {{x, rand({3}, 1)}}); }),
                   "disable_passes: pass 'schedule' is required (optional passes: cse, fold, fusion, epilogue, "
                   "assign_in_place, stream, remat, inplace)"));
    Session unknown(g, {.disable_passes = {"fusoin"}});
    CHECK(contains(error_of([&] { unknown.run({exp(x)}, {{x, rand({3}, 1)}}); }), "unknown pass 'fusoin'"));
    Session s(g, {.disable_passes = {"fusion"}});
    s.run({exp(x) * 2.0}, {{x, rand({3}, 1)}});
    const auto& ran = s.stats().last_plan.pass_ms;
    CHECK(std::none_of(ran.begin(), ran.end(), [](const auto& p) { return p.first == "fusion"; }));
    CHECK(std::any_of(ran.begin(), ran.end(), [](const auto& p) { return p.first == "placement"; }));
  }

  TEST_CASE("every optional pass off, alone and all together: identical results, verified plans") {
    std::vector<std::vector<std::string>> configs{{}};
    for (const std::string& p : optional_passes()) configs.push_back({p});
    configs.push_back(optional_passes());
    Graph g;
    test::MlpStep m = test::mlp_step(g, {20, 16, 16, 10}, 0.2);
    Graph wide;  // its first weight gradient, [784, 100], is large enough to stream
    test::MlpStep mw = test::mlp_step(wide, {784, 100, 10}, 0.2);
    Graph h;
    auto d = test::random_dag(h, 7, 70);
    for (Executor e : {Executor::serial, Executor::parallel}) {
      std::vector<std::vector<NDArray>> dag_results, mlp_losses;
      for (const auto& off : configs) {
        CAPTURE(off.size() == 1 ? off[0] : std::to_string(off.size()) + " passes");
        SessionOptions o{.threads = 2, .executor = e, .seed = 5, .disable_passes = off};
        Session s(h, o);
        test::verify_plan(s.plan_info(d.outputs, d.feeds));
        dag_results.push_back(s.run(d.outputs, d.feeds));
        Session t(g, o);
        std::vector<NDArray> losses;
        for (int step = 0; step < 3; ++step) {
          Feeds f = test::mlp_feeds(m, 8, 20, uint64_t(step));
          test::verify_plan(t.plan_info({m.loss}, f, {m.train}));
          losses.push_back(t.run({m.loss}, f, {m.train})[0]);
        }
        for (const Tensor& p : m.params) losses.push_back(t.get(p));
        Session tw(wide, o);
        for (int step = 0; step < 2; ++step) {
          Feeds f = test::mlp_feeds(mw, 8, 784, uint64_t(step));
          test::verify_plan(tw.plan_info({mw.loss}, f, {mw.train}));
          losses.push_back(tw.run({mw.loss}, f, {mw.train})[0]);
        }
        if (off.empty()) CHECK(tw.stats().last_plan.streamed == 1);
        for (const Tensor& p : mw.params) losses.push_back(tw.get(p));
        mlp_losses.push_back(losses);
      }
      for (size_t k = 1; k < configs.size(); ++k) {
        for (size_t i = 0; i < dag_results[0].size(); ++i) CHECK(test::identical(dag_results[0][i], dag_results[k][i]));
        for (size_t i = 0; i < mlp_losses[0].size(); ++i) CHECK(test::identical(mlp_losses[0][i], mlp_losses[k][i]));
      }
    }
  }

  TEST_CASE("passes that overlap (hazards, bind): the same plan on 1 and 2 threads, times in pipeline order") {
    Graph h;
    auto d = test::random_dag(h, 11, 300);
    std::vector<PlanInfo> infos;
    std::vector<std::vector<NDArray>> results;
    for (int threads : {1, 2}) {
      Session s(h, {.threads = threads, .executor = Executor::parallel});
      infos.push_back(s.plan_info(d.outputs, d.feeds));
      test::verify_plan(infos.back());
      results.push_back(s.run(d.outputs, d.feeds));
      std::vector<std::string> ran, listed;
      for (const auto& [name, ms] : s.stats().last_plan.pass_ms) {
        ran.push_back(name);
        CHECK(ms >= 0);
      }
      for (const Pass& p : plan_passes()) listed.emplace_back(p.name);
      CHECK(ran == listed);
    }
    REQUIRE(infos[0].steps.size() == infos[1].steps.size());
    CHECK(infos[0].arena_bytes == infos[1].arena_bytes);
    for (size_t i = 0; i < infos[0].steps.size(); ++i) {
      CHECK(infos[0].steps[i].name == infos[1].steps[i].name);
      CHECK(infos[0].steps[i].deps == infos[1].steps[i].deps);
    }
    for (size_t i = 0; i < results[0].size(); ++i) CHECK(test::identical(results[0][i], results[1][i]));
  }

  TEST_CASE("prune and lower: needed nodes only, concrete shapes, views alias their input") {
    Graph g;
    Tensor x = g.placeholder("x", {-1, 4});
    Tensor unused = exp(x) * 3.0;
    Tensor y = transpose(x * 2.0);
    Stepper s(g, {}, {y}, {{x, rand({5, 4}, 1)}});
    s.run_through("lower");
    CHECK_FALSE(s.c.needed[size_t(unused.node_id())]);
    CHECK(s.c.needed[size_t(y.node_id())]);
    const PValue& out = s.plan.values[size_t(s.plan.fetch_values[0])];
    CHECK(out.type.shape == Shape{4, 5});
    const PNode& t = s.plan.nodes[size_t(out.producer)];
    CHECK(t.kind == NodeKind::view);
    CHECK(out.storage == s.plan.values[size_t(t.in[0])].storage);  // no memory of its own
    for (const PNode& n : s.plan.nodes)
      for (int v : n.in) CHECK(s.plan.values[size_t(v)].producer < int(&n - s.plan.nodes.data()));  // topological
  }

  TEST_CASE("cse merges equal nodes and small constants; fold evaluates constant subgraphs; dce drops the rest") {
    Graph g;
    Tensor x = g.placeholder("x", {3});
    Tensor c = g.constant(NDArray::from<float>({1, 2, 3}));
    Tensor y = exp(x) + exp(x) + (c * 2.0 + 1.0) + x * 2.0;
    Stepper s(g, {}, {y}, {{x, rand({3}, 2)}});
    s.run_through("lower");
    CHECK(s.alive_with_op("exp") == 2);
    s.run_through("cse");
    CHECK(s.plan.stats.cse_merged >= 2);  // exp(x), and the constant 2.0 made twice
    s.run_through("fold");
    CHECK(s.plan.stats.folded == 2);  // c * 2, then + 1
    s.run_through("dce");
    CHECK(s.alive_with_op("exp") == 1);
    CHECK(s.alive_with_op("mul") == 1);  // x * 2 only
  }

  TEST_CASE("cse: a view of a merged node aliases the surviving node's storage") {
    // Two equal matmuls, each read through different views; the second
    // matmul is merged away, so its views must read the first one's buffer
    // (an unrolled RNN built twice, for training and for eval, shares its
    // input projection this way).
    Graph g;
    Tensor x = g.placeholder("x", {4, 6});
    Tensor w = g.placeholder("w", {6, 6});
    Tensor first = split(reshape(matmul(x, w), {2, 2, 6}), 2, 0)[1];
    Tensor second = split(reshape(matmul(x, w), {2, 12}), 2, 1)[1];  // other views: they stay
    Tensor y1 = tanh(first) * 2.0, y2 = sigmoid(second) + 1.0;
    const Feeds feeds{{x, rand({4, 6}, 5)}, {w, rand({6, 6}, 6)}};
    Session merged(g), unmerged(g, {.disable_passes = {"cse"}});
    std::vector<NDArray> a = merged.run({y1, y2}, feeds), b = unmerged.run({y1, y2}, feeds);
    CHECK(merged.stats().last_plan.cse_merged > 0);
    CHECK(test::identical(a[0], b[0]));
    CHECK(test::identical(a[1], b[1]));
    test::verify_plan(merged.plan_info({y1, y2}, feeds));
    // The invariant itself: after cse, every view aliases the storage of the value it reads.
    Stepper st(g, {}, {y1, y2}, feeds);
    st.run_through("cse");
    int views = 0;
    for (const PNode& n : st.plan.nodes)
      if (n.alive && n.kind == NodeKind::view) {
        ++views;
        CHECK(st.plan.values[size_t(n.out[0])].storage == st.plan.values[size_t(n.in[0])].storage);
      }
    CHECK(views >= 2);
  }

  TEST_CASE("fusion forms groups within the device's limits; a CPU and a CUDA plan fuse alike") {
    Graph g;
    Tensor x = g.placeholder("x", {8, 16});
    Tensor b = g.placeholder("b", {16});
    Tensor h = x;
    for (int i = 0; i < 40; ++i) h = tanh(h * 0.5 + b);  // 120 element-wise ops in a chain
    Feeds f{{x, rand({8, 16}, 3)}, {b, rand({16}, 4)}};
    Stepper s(g, {}, {h}, f);
    s.run_through("fusion");
    const KernelInfo* k = find_kernel("fused", DeviceKind::cpu, float32);
    REQUIRE(k);
    REQUIRE(k->fusion);
    int groups = 0;
    for (const PNode& n : s.plan.nodes) {
      if (!n.alive || n.op != core_op::fused) continue;
      ++groups;
      CHECK(int(n.in.size()) <= k->fusion->max_leaves);
      CHECK(int(n.out.size()) <= k->fusion->max_outputs);
      CHECK(int(n.attrs->ints("bools").size()) <= k->fusion->max_instrs);
    }
    CHECK(groups >= 4);  // 120 instructions need several groups of at most max_instrs
    CHECK(s.plan.stats.fused == 120 - groups);
    Session fused(g), plain(g, {.fusion = false});
    CHECK(test::identical(fused.run1(h, f), plain.run1(h, f)));
  }

  TEST_CASE("epilogue: a GEMM runs its bias and activation, and the update after a weight gradient") {
    Graph g;
    Tensor x = g.placeholder("x", {96, 40});
    Tensor w = g.variable("w", {40, 300}, test::init_normal(0.2));
    Tensor b = g.variable("b", {300}, test::init_normal(0.1));
    Tensor h = relu(matmul(x, w) + b);  // matmul + fused(add, relu)
    Tensor loss = mean(h * h);
    Tensor dw = gradients(loss, {w})[0];
    Tensor step = assign_sub(w, dw * 0.01);  // dw's GEMM + mul + sub, written into w
    Feeds f{{x, rand({96, 40}, 8)}};
    for (Executor e : {Executor::serial, Executor::parallel}) {
      Session on(g, {.threads = 2, .executor = e}), off(g, {.threads = 2, .executor = e, .disable_passes = {"epilogue"}});
      for (int k = 0; k < 3; ++k) {
        auto a = on.run({loss, h}, f, {step}), c = off.run({loss, h}, f, {step});
        for (size_t i = 0; i < a.size(); ++i) CHECK(test::identical(a[i], c[i]));
      }
      CHECK(test::identical(on.get(w), off.get(w)));
      CHECK(on.stats().last_plan.epilogues >= 2);  // fused bias+relu after x w; fused mul+sub after dw
      CHECK(off.stats().last_plan.epilogues == 0);
      CHECK(on.stats().last_plan.steps < off.stats().last_plan.steps);
      test::verify_plan(on.plan_info({loss, h}, f, {step}));
    }
    // A fetched GEMM output, or one read twice, keeps its reader outside.
    Graph k;
    Tensor a = k.placeholder("a", {8, 8});
    Tensor m = matmul(a, a);
    Tensor twice = exp(m) + sigmoid(m);
    Session s(k);
    s.run({m, twice}, {{a, rand({8, 8}, 9)}});
    CHECK(s.stats().last_plan.epilogues == 0);
    Stepper st(k, {}, {exp(matmul(a, transpose(a))) * 2.0}, {{a, rand({8, 8}, 9)}});
    st.run_through("epilogue");
    int with = 0;
    for (const PNode& n : st.plan.nodes)
      if (n.alive && !n.epilogue.empty()) {
        ++with;
        CHECK(n.op->name == "matmul");
        CHECK(n.epilogue[0].op->name == "fused");
        CHECK(n.out.size() == 2);  // the GEMM's result and the epilogue's
      }
    CHECK(with == 1);
  }

  TEST_CASE("epilogue: blocks of rows share the state prepared once for the whole output") {
    // 4000 x 300 floats: a block of rows per task, with a broadcast row (b) and
    // a broadcast column (c) among the leaves; bit for bit as without the epilogue
    // (on AVX2, oneDNN's sgemm rounds a row differently in a GEMM of fewer rows:
    // the kernel must not split its GEMM calls differently for an epilogue).
    Graph g;
    Tensor x = g.placeholder("x", {4000, 40});
    Tensor c = g.placeholder("c", {4000, 1});
    Tensor w = g.variable("w", {40, 300}, test::init_normal(0.2));
    Tensor b = g.variable("b", {300}, test::init_normal(0.1));
    Tensor h = relu(matmul(x, w) + b) * c;
    Feeds f{{x, rand({4000, 40}, 3)}, {c, rand({4000, 1}, 4)}};
    for (int threads : {1, 2}) {
      Session on(g, {.threads = threads}), off(g, {.threads = threads, .disable_passes = {"epilogue"}});
      CHECK(test::identical(on.run1(h, f), off.run1(h, f)));
      CHECK(on.stats().last_plan.epilogues == 1);
    }
    // Fewer rows than columns (a weight gradient's shape), enough for a block per task.
    Graph wide;
    Tensor a = wide.placeholder("a", {300, 64});
    Tensor v = wide.variable("v", {64, 1200}, test::init_normal(0.2));
    Tensor r = relu(matmul(a, v) - 0.1);
    Feeds fa{{a, rand({300, 64}, 5)}};
    for (int threads : {1, 2}) {
      Session on(wide, {.threads = threads}), off(wide, {.threads = threads, .disable_passes = {"epilogue"}});
      CHECK(test::identical(on.run1(r, fa), off.run1(r, fa)));
      CHECK(on.stats().last_plan.epilogues == 1);
    }
  }

  TEST_CASE("stream: a weight gradient under its update is kept block by block, with the same bits") {
    // dw = x^T g is [784, 100] (313,600 bytes), larger than g [64, 100]: the
    // GEMM goes by 5 blocks of 157 rows on any thread count; only its update
    // reads dw, so the plan keeps a block per thread instead of dw.
    Graph g;
    Tensor x = g.placeholder("x", {64, 784});
    Tensor w = g.variable("w", {784, 100}, test::init_normal(0.05));
    Tensor h = relu(matmul(x, w));
    Tensor loss = mean(h * h);
    Tensor dw = gradients(loss, {w})[0];
    Tensor step = assign_sub(w, dw * 0.01);
    Feeds f{{x, rand({64, 784}, 21)}};
    for (int threads : {1, 2})
      for (Executor e : {Executor::serial, Executor::parallel}) {
        CAPTURE(threads);
        SessionOptions o{.threads = threads, .executor = e, .atomic_updates = false};
        Session on(g, o);
        o.disable_passes = {"stream"};
        Session off(g, o);
        for (int k = 0; k < 3; ++k) CHECK(test::identical(on.run1(loss, f), off.run1(loss, f)));
        on.run({}, f, {step}), off.run({}, f, {step});
        CHECK(test::identical(on.get(w), off.get(w)));
        on.run({loss}, f, {step});
        CHECK(on.stats().last_plan.streamed == 1);
        off.run({loss}, f, {step});
        CHECK(off.stats().last_plan.streamed == 0);
        const PlanInfo a = on.plan_info({loss}, f, {step}), b = off.plan_info({loss}, f, {step});
        test::verify_plan(a);
        const size_t scratch = size_t(threads) * 157 * 100 * 4;
        CHECK(a.arena_bytes + (784 * 100 * 4 - scratch) <= b.arena_bytes + 64);
      }
    // nn::Linear's weight [100, 784] under Adam with weight decay: the decayed
    // gradient is written over the block, Adam reads it there.
    Graph la;
    Tensor xl = la.placeholder("x", {100, 784}), yl = la.placeholder("y", {100}, int64);
    nn::Linear lin(784, 100);
    Tensor loss_l = nn::cross_entropy(lin(xl), yl);
    optim::Adam adam(lin, {.lr = 1e-3, .weight_decay = 1e-3});
    Tensor train = adam.minimize(loss_l);
    NDArray labels = NDArray::empty({100}, int64);
    for (int64_t i = 0; i < 100; ++i) labels.data<int64_t>()[i] = i % 7;
    Feeds fl{{xl, rand({100, 784}, 25)}, {yl, labels}};
    std::vector<std::vector<NDArray>> weights;
    for (const std::vector<std::string>& off : {std::vector<std::string>{}, {"stream"}}) {
      Session sl(la, {.seed = 3, .atomic_updates = false, .disable_passes = off});
      for (int k = 0; k < 3; ++k) sl.run({}, fl, {train});
      CHECK(sl.stats().last_plan.streamed == (off.empty() ? 1 : 0));
      weights.push_back({sl.get(lin.weight()), sl.get(lin.bias())});
    }
    for (size_t i = 0; i < weights[0].size(); ++i) CHECK(test::identical(weights[0][i], weights[1][i]));
    // float64 (OpenBLAS's dgemm), the same way.
    Graph gd;
    Tensor xd = gd.placeholder("x", {64, 392}, float64);
    Tensor wd = gd.variable("w", {392, 100}, test::init_normal(0.05), float64);
    Tensor hd = relu(matmul(xd, wd));
    Tensor loss_d = mean(hd * hd);
    Tensor step_d = assign_sub(wd, gradients(loss_d, {wd})[0] * 0.01);
    Feeds fd{{xd, rand({64, 392}, 26, float64)}};
    std::vector<NDArray> ws;
    for (const std::vector<std::string>& off : {std::vector<std::string>{}, {"stream"}}) {
      Session sd(gd, {.threads = 2, .atomic_updates = false, .disable_passes = off});
      for (int k = 0; k < 3; ++k) sd.run({loss_d}, fd, {step_d});
      CHECK(sd.stats().last_plan.streamed == (off.empty() ? 1 : 0));
      ws.push_back(sd.get(wd));
    }
    CHECK(test::identical(ws[0], ws[1]));
    // Fetched, the gradient is no update's alone: kept whole.
    Session s(g, {.atomic_updates = false});
    s.run({loss, dw}, f, {step});
    CHECK(s.stats().last_plan.streamed == 0);
    // A tall GEMM under bias and ReLU: its epilogue writes an activation, not a variable.
    Graph k;
    Tensor a = k.placeholder("a", {3000, 40});
    Tensor v = k.variable("v", {40, 300}, test::init_normal(0.2));
    Tensor r = relu(matmul(a, v) - 0.1);
    Session t(k);
    t.run1(r, {{a, rand({3000, 40}, 22)}});
    CHECK(t.stats().last_plan.epilogues == 1);
    CHECK(t.stats().last_plan.streamed == 0);
  }

  TEST_CASE("matmul: a large output by blocks of rows matches a reference product on any thread count") {
    Graph g;
    Tensor a = g.placeholder("a", {64, 784}), b = g.placeholder("b", {64, 100});
    Tensor c = matmul(transpose(a), b);  // [784, 100]: 5 blocks of 157 rows
    NDArray av = rand({64, 784}, 23), bv = rand({64, 100}, 24);
    std::vector<NDArray> outs;
    for (int threads : {1, 2}) {
      Session s(g, {.threads = threads});
      NDArray out = s.run1(c, {{a, av}, {b, bv}});
      outs.push_back(out);
      double worst = 0;
      for (int64_t i = 0; i < 784; ++i)
        for (int64_t j = 0; j < 100; ++j) {
          double ref = 0;
          for (int64_t k = 0; k < 64; ++k) ref += double(av.data<float>()[k * 784 + i]) * bv.data<float>()[k * 100 + j];
          worst = std::max(worst, std::abs(ref - out.data<float>()[i * 100 + j]));
        }
      CHECK(worst < 1e-4);
    }
    CHECK(test::identical(outs[0], outs[1]));  // the shapes alone split it, not the threads
  }

  TEST_CASE("order_updates: readers of a variable run before its update; updates run last") {
    Graph g;
    Tensor v = g.variable("v", {4}, [](const NDArray& a, uint64_t) { a.fill(1); });
    Tensor x = g.placeholder("x", {4});
    Tensor read = v * x;
    Tensor upd = assign(v, v + x);
    Tensor after = upd * 2.0;
    Stepper s(g, {}, {read, after}, {{x, rand({4}, 5)}});
    s.run_through("order_updates");
    int barrier = -1;
    for (size_t i = 0; i < s.plan.nodes.size(); ++i)
      if (s.plan.nodes[i].name == "barrier/updates") barrier = int(i);
    REQUIRE(barrier >= 0);
    for (const PNode& n : s.plan.nodes) {
      if (!n.alive || !n.writes_var) continue;
      CHECK(n.post_commit);
      CHECK(std::count(n.after.begin(), n.after.end(), barrier) == 1);
    }
    s.run_through("schedule");
    const PNode& r = s.plan.nodes[size_t(s.plan.values[size_t(s.plan.fetch_values[0])].producer)];
    for (const PNode& n : s.plan.nodes)
      if (n.alive && n.writes_var && n.pos >= 0) CHECK(r.pos < n.pos);
    Session sess(g);
    auto out = sess.run({read, after}, {{x, NDArray::from<float>({1, 2, 3, 4})}});
    CHECK(out[0].to_vector<float>() == std::vector<float>{1, 2, 3, 4});
    CHECK(out[1].to_vector<float>() == std::vector<float>{4, 6, 8, 10});
  }

  TEST_CASE("schedule: a topological order; the parallel one by waves") {
    Graph g;
    auto d = test::random_dag(g, 11, 60);
    for (Executor e : {Executor::serial, Executor::parallel}) {
      Stepper s(g, {.executor = e}, d.outputs, d.feeds);
      s.run_through("schedule");
      std::vector<int> pos_of(s.plan.nodes.size(), -1);
      for (size_t i = 0; i < s.plan.order.size(); ++i) pos_of[size_t(s.plan.order[i])] = int(i);
      for (size_t i = 0; i < s.plan.order.size(); ++i)
        for (int dpos : s.plan.deps[i]) CHECK(dpos < int(i));
      if (e == Executor::parallel) {
        REQUIRE(s.plan.wave_end.size() == s.plan.order.size());
        for (size_t i = 0; i < s.plan.order.size(); ++i)  // no dependency inside a wave
          for (int dpos : s.plan.deps[i]) CHECK(s.plan.wave_end[size_t(dpos)] < int(i));
      }
    }
  }

  TEST_CASE("lifetimes and inplace: an element-wise output takes over a dying input") {
    Graph g;
    Tensor x = g.placeholder("x", {64});
    Tensor y = exp(x * 3.0) + 1.0;  // with fusion off: mul, exp, add, each can reuse its input's buffer
    Stepper s(g, {.fusion = false}, {sum(y)}, {{x, rand({64}, 6)}});
    s.run_through("lifetimes");
    for (const PStorage& st : s.plan.storages)
      if (st.kind == StorageKind::arena && !st.writers.empty()) CHECK(st.first <= st.last);
    s.run_through("inplace");
    int merged = 0;
    for (const PStorage& st : s.plan.storages) merged += st.merged;
    CHECK(merged == 2);  // exp over mul's buffer, add over exp's; never over the fed x, read in place
    CHECK(s.plan.storages[size_t(s.plan.values[0].storage)].kind == StorageKind::feed);
  }

  TEST_CASE("inplace: a fused node writing over its dying input, chunk after chunk, matches the unfused plan") {
    Graph g;
    Tensor m = g.placeholder("m", {3, 4099});  // several chunks of the fused kernel, the last one partial
    Tensor x = sum(m, {0});                    // an arena input (a fed one is read in place, never written)
    Tensor y = tanh(x * 2.0 + 1.0) * x;        // the root instruction reads x too
    Feeds f{{m, rand({3, 4099}, 11)}};
    Stepper s(g, {}, {sum(y)}, f);
    s.run_through("inplace");
    int fused_over_input = 0;  // fused nodes whose output shares its storage with an input
    for (const PNode& n : s.plan.nodes)
      if (n.alive && n.op == &core_op::fused.def())
        for (int v : n.in) fused_over_input += s.plan.values[size_t(v)].storage == s.plan.values[size_t(n.out[0])].storage;
    CHECK(fused_over_input == 1);
    for (int threads : {1, 2}) {
      Session fused(g, {.threads = threads}), plain(g, {.threads = threads, .fusion = false});
      CHECK(test::identical(fused.run1(sum(y), f), plain.run1(sum(y), f)));
    }
  }

  TEST_CASE("inplace: an epilogue writes over the GEMM result only it reads, in blocks of rows") {
    // 3000 x 300 floats: several blocks of rows per task on 2 threads.
    Graph g;
    Tensor x = g.placeholder("x", {3000, 40});
    Tensor w = g.variable("w", {40, 300}, test::init_normal(0.2));
    Tensor b = g.variable("b", {300}, test::init_normal(0.1));
    Tensor h = relu(matmul(x, w) + b);
    Tensor y = sum(h * h);
    Feeds f{{x, rand({3000, 40}, 12)}};
    Stepper s(g, {}, {y}, f);
    s.run_through("inplace");
    int shared = 0;
    for (const PNode& n : s.plan.nodes)
      if (n.alive && !n.epilogue.empty()) {
        REQUIRE(n.out.size() == 2);
        shared += s.plan.values[size_t(n.out[0])].storage == s.plan.values[size_t(n.out[1])].storage;
      }
    CHECK(shared == 1);
    for (int threads : {1, 2}) {
      Session on(g, {.threads = threads}), off(g, {.threads = threads, .disable_passes = {"inplace"}});
      CHECK(test::identical(on.run1(y, f), off.run1(y, f)));
      const PlanInfo a = on.plan_info({y}, f), c = off.plan_info({y}, f);
      test::verify_plan(a);
      REQUIRE(a.arena_bytes < c.arena_bytes);
      CHECK(double(c.arena_bytes - a.arena_bytes) >= 0.99 * 3000 * 300 * 4);  // one [3000, 300] buffer fewer
    }
  }

  TEST_CASE("inplace: batch norm and its gradient write over an input that dies there, with the same bits") {
    for (DType dt : {float32, float64}) {
      CAPTURE(dtype_name(dt));
      Graph g;
      Tensor x = g.placeholder("x", {8, 3, 17, 19}, dt);
      Tensor w = g.variable("w", {3}, test::init_normal(0.5), dt), b = g.variable("b", {3}, test::init_normal(0.2), dt);
      Tensor h = x * 2.0;  // an arena value (a fed one is read in place, never written)
      Tensor y = batch_norm(h, w, b, 1e-5, true).y;
      Tensor loss = sum(y * y * 0.5);
      std::vector<Tensor> grads = gradients(loss, {x, w, b});
      Feeds f{{x, rand({8, 3, 17, 19}, 21).astype(dt)}};
      // Forward only: y over h. With gradients: h lives on for the gradient, whose dx goes over h or dy.
      const std::pair<std::vector<Tensor>, std::string> cases[] = {
          {{loss}, "batch_norm"}, {{loss, grads[0], grads[1], grads[2]}, "batch_norm_grad"}};
      for (const auto& c : cases) {
        const std::vector<Tensor>& fetches = c.first;
        const std::string& op = c.second;
        CAPTURE(op);
        Stepper s(g, {}, fetches, f);
        s.run_through("inplace");
        int over_input = 0;
        for (const PNode& n : s.plan.nodes)
          if (n.alive && n.op && n.op->name == op)
            for (int v : n.in) over_input += s.plan.values[size_t(v)].storage == s.plan.values[size_t(n.out[0])].storage;
        CHECK(over_input == 1);
        for (int threads : {1, 2}) {
          Session on(g, {.threads = threads}), off(g, {.threads = threads, .disable_passes = {"inplace"}});
          const std::vector<NDArray> a = on.run(fetches, f), c = off.run(fetches, f);
          for (size_t i = 0; i < a.size(); ++i) CHECK(test::identical(a[i], c[i]));
          test::verify_plan(on.plan_info(fetches, f));
        }
      }
    }
  }

  TEST_CASE("reorder_for_memory: a topological order whose peak of live bytes is no higher") {
    auto peak_of = [](Plan p, const CompileRequest& req) {  // live arena bytes at the busiest position
      Compilation c(req, p);
      lifetimes(c);
      std::vector<size_t> live(p.order.size() + 1, 0);
      for (const PStorage& st : p.storages)
        if (st.kind == StorageKind::arena && !st.writers.empty())
          for (int i = st.first; i <= std::min<int>(st.last, int(p.order.size())); ++i) live[size_t(i)] += st.bytes;
      return *std::max_element(live.begin(), live.end());
    };
    int lowered = 0, lowered_more = 0;
    for (uint64_t seed = 1; seed <= 12; ++seed) {
      CAPTURE(seed);
      Graph g;
      auto d = test::random_dag(g, seed, 80);
      Stepper s(g, {}, d.outputs, d.feeds);
      s.run_through("schedule");
      // The reverse of a graph-order schedule is no schedule; a poor one is: every node as late as it can run.
      std::vector<int> late(s.plan.order.rbegin(), s.plan.order.rend()), order;
      std::vector<char> placed(s.plan.nodes.size(), 0);
      while (order.size() < late.size())  // repeatedly the last-listed node whose predecessors are placed
        for (int id : late)
          if (!placed[size_t(id)] && std::ranges::all_of(s.plan.deps[size_t(s.plan.nodes[size_t(id)].pos)], [&](int dp) {
                return placed[size_t(s.plan.order[size_t(dp)])];
              })) {
            placed[size_t(id)] = 1, order.push_back(id);
            break;
          }
      Plan p = s.plan;
      set_order(p, order);
      const size_t before = peak_of(p, s.req);
      Plan q = p, r = p;
      reorder_for_memory(q);
      reorder_for_memory(r, true);  // also nodes tried last to first; the order with fewer live bytes kept
      const size_t after = peak_of(q, s.req), both = peak_of(r, s.req);
      CHECK(after <= before);
      CHECK(both <= after);
      lowered += after < before;
      lowered_more += both < after;
      std::ranges::sort(order);
      for (const Plan* o : {&q, &r}) {
        std::vector<int> sorted = o->order;
        std::ranges::sort(sorted);
        CHECK(sorted == order);
        for (size_t i = 0; i < o->order.size(); ++i)
          for (int dpos : o->deps[i]) CHECK(dpos < int(i));
      }
    }
    MESSAGE("peak lowered for ", lowered, " of 12 graphs; both ways lower still for ", lowered_more);
    CHECK(lowered > 0);
  }

  TEST_CASE("placement is a pure function of lifetimes: no live overlap, never below the lower bound") {
    std::mt19937_64 rng(3);
    for (int trial = 0; trial < 30; ++trial) {
      std::vector<Lifetime> items(size_t(1 + rng() % 200));
      for (Lifetime& it : items) {
        it.first = int(rng() % 100);
        it.last = it.first + int(rng() % (rng() % 4 ? 5 : 60));
        it.bytes = 64 * (1 + rng() % 32);
      }
      const size_t low = lower_bound(items);
      for (MemoryStrategy st : {MemoryStrategy::greedy_by_size, MemoryStrategy::greedy_by_area,
                                MemoryStrategy::greedy_by_time, MemoryStrategy::naive}) {
        CAPTURE(strategy_name(st));
        Placement p = place(items, st);
        check_placement(items, p);
        CHECK(p.arena >= low);
        CHECK(place(items, st).offsets == p.offsets);  // a function of its input only
      }
      const BestPlacement within = place_best(items, low);  // under a budget: more orders, never a larger arena
      check_placement(items, within.placement);
      CHECK(within.placement.arena <= place_best(items, 0).placement.arena);
    }
    CHECK(place({}, MemoryStrategy::greedy_by_size).arena == 0);
  }

  TEST_CASE("greedy_by_area: long-lived buffers placed first, where size first fragments the arena") {
    // Size first puts the two 256-byte buffers at 0; the 192-byte ones, live
    // across both, then go on top (640). By bytes times steps the long-lived
    // 256-byte buffer and the 192-byte ones go first, and the short 256-byte
    // one fits beside them: the lower bound.
    const std::vector<Lifetime> items{{192, 0, 3}, {192, 1, 5}, {256, 0, 0}, {256, 5, 10}};
    CHECK(lower_bound(items) == 448);
    CHECK(place(items, MemoryStrategy::greedy_by_size).arena == 640);
    const Placement area = place(items, MemoryStrategy::greedy_by_area);
    check_placement(items, area);
    CHECK(area.arena == 448);
  }

  TEST_CASE("under a budget its live bytes meet, best placement tries more orders: one fits where size first misses") {
    // Size first puts both 256-byte buffers at 0 and the 192-byte one on top
    // of the later; the 64-byte one, live beside each in turn, ends above both
    // (512). Longest-lived first places the 64-byte one at 0 and the early
    // 256-byte one on it, beside the others: the lower bound, 448.
    const std::vector<Lifetime> items{{256, 5, 8}, {192, 3, 5}, {64, 0, 4}, {256, 1, 2}};
    CHECK(lower_bound(items) == 448);
    const BestPlacement plain = place_best(items, 0);
    CHECK(plain.placement.arena == 512);
    CHECK(plain.tried.size() == 3);
    for (size_t budget : {448, 500}) {
      CAPTURE(budget);
      const BestPlacement within = place_best(items, budget);
      check_placement(items, within.placement);
      CHECK(within.placement.arena == 448);
      CHECK(within.strategy == "greedy_by_length");
      CHECK(within.tried.size() == 7);
    }
    CHECK(place_best(items, 512).tried.size() == 3);  // met already
    CHECK(place_best(items, 400).tried.size() == 3);  // under the lower bound: no order meets it
  }

  TEST_CASE("DOT export escapes quotes, backslashes, tabs, newlines and bytes that are not UTF-8") {
    Graph g;
    Tensor x = g.placeholder("in \"x\"\t\\", {2});
    Tensor y = g.add1("exp", {x}, {}, "a\nb\x01 \xff\xfe é");
    Session s(g);
    s.run({y}, {{x, rand({2}, 7)}});
    test::TempDir dir;
    std::string path = dir / "escape.dot";
    s.export_dot(path);
    std::ifstream f(path);
    std::string d((std::istreambuf_iterator<char>(f)), {});
    CHECK(valid_dot(d));
    CHECK(contains(d, "in \\\"x\\\"\\\\x09\\\\"));
    CHECK(contains(d, "a\\\\x0ab\\\\x01 \\\\xff\\\\xfe é"));
  }
}
