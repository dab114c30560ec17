// Session: plans (cache, passes, memory goals, verifier), variables and
// assign semantics, run-time errors, check_numerics, stats and exports, and
// the parallel executor against the serial one.

#include <filesystem>
#include <fstream>
#include <map>
#include <random>

#include "tests/core/graphs.hpp"

using namespace loom;
using test::contains;
using test::error_of;
using test::rand;
using test::MlpStep;

namespace {
std::string read_file(const std::string& path) {
  std::ifstream f(path);
  return std::string(std::istreambuf_iterator<char>(f), {});
}
}  // namespace

TEST_SUITE("core/session") {
  TEST_CASE("running twice gives the same results; variables persist and update") {
    Graph g;
    Tensor x = g.placeholder("x", {2});
    Tensor v = g.variable("v", {2}, [](const NDArray& a, uint64_t) { a.assign(NDArray::from<float>({1, 2})); });
    Tensor y = x * v;
    Tensor inc = assign_add(v, x);
    Session s(g);
    NDArray xv = NDArray::from<float>({10, 20});
    CHECK(test::identical(s.run1(y, {{x, xv}}), s.run1(y, {{x, xv}})));
    // Readers of v in the same run see the old value; the assign's output is the new one.
    auto r = s.run({y, inc}, {{x, xv}});
    CHECK(r[0].to_vector<float>() == std::vector<float>{10, 40});
    CHECK(r[1].to_vector<float>() == std::vector<float>{11, 22});
    CHECK(s.get(v).to_vector<float>() == std::vector<float>{11, 22});
    s.run({}, {{x, xv}}, {inc});
    CHECK(s.get(v).to_vector<float>() == std::vector<float>{21, 42});
    // Re-initialization restores the initializer's value in the same buffer (plans stay valid).
    s.initialize();
    CHECK(s.run1(y, {{x, xv}}).to_vector<float>() == std::vector<float>{10, 40});
    s.set(v, NDArray::from<float>({-1, -1}));
    CHECK(s.run1(y, {{x, xv}}).to_vector<float>() == std::vector<float>{-10, -20});
    CHECK(contains(error_of([&] { s.set(v, NDArray::zeros({3})); }), "set 'v': expected float32[2], got float32[3]"));
  }

  TEST_CASE("two updates of one variable in one run: ordered by a dependency, or refused naming both") {
    for (bool atomic : {true, false})
      for (int threads : {1, 2}) {
        CAPTURE(atomic);
        CAPTURE(threads);
        Graph g;
        Tensor v = g.variable("v", {2}, [](const NDArray& a, uint64_t) { a.assign(NDArray::from<float>({1, 2})); });
        Tensor a1 = assign_add(v, ones_like(v)), a2 = assign_add(v, full_like(v, 10.0));
        Tensor chained = assign_add(v, with_dependencies({a1}, full_like(v, 100.0)));
        Tensor read = v * 1.0;
        Session s(g, {.threads = threads, .atomic_updates = atomic});
        const std::string e = error_of([&] { s.run({read}, {}, {a1, a2}); });
        CHECK(contains(e, "run: variable 'v' is updated twice (nodes '"));
        CHECK(contains(e,
                       "neither update depending on the other; combine them into one update, order them "
                       "(with_dependencies), or run them separately"));
        CHECK(s.get(v).to_vector<float>() == std::vector<float>{1, 2});  // nothing ran; the session is usable
        auto r = s.run({read}, {}, {a1, chained});
        CHECK(r[0].to_vector<float>() == std::vector<float>{1, 2});  // readers see the value before the updates
        CHECK(s.get(v).to_vector<float>() == std::vector<float>{102, 103});
      }
  }

  TEST_CASE("variables are initialized from the session seed and the name") {
    Graph g;
    Tensor a = g.variable("a", {4}, test::init_normal(1));
    Tensor b = g.variable("b", {4}, test::init_normal(1));
    Session s1(g, {.seed = 1}), s2(g, {.seed = 1}), s3(g, {.seed = 2});
    CHECK(test::identical(s1.get(a), s2.get(a)));
    CHECK_FALSE(test::identical(s1.get(a), s1.get(b)));
    CHECK_FALSE(test::identical(s1.get(a), s3.get(a)));
  }

  TEST_CASE("updates written in place by their producers match plain assigns bit for bit") {
    Graph g;
    MlpStep m = test::mlp_step(g, {30, 24, 10}, 0.3);
    Session fast(g, {.seed = 2});
    Session plain(g, {.seed = 2, .cse = false, .constant_folding = false, .fusion = false, .atomic_updates = false});
    for (int step = 0; step < 4; ++step) {
      Feeds f = test::mlp_feeds(m, 16, 30, uint64_t(step));
      CHECK(test::identical(fast.run({m.loss}, f, {m.train})[0], plain.run({m.loss}, f, {m.train})[0]));
    }
    for (const Tensor& p : m.params) CHECK(test::identical(fast.get(p), plain.get(p)));
    // A reader of the variable that does not depend on the update still sees the old value.
    Graph h;
    Tensor v = h.variable("v", {3}, [](const NDArray& a, uint64_t) { a.assign(NDArray::from<float>({1, 2, 3})); });
    Tensor old = v * 10.0;
    Tensor upd = assign(v, v * 2.0 + 1.0);
    Session s(h);
    auto r = s.run({old, upd});
    CHECK(r[0].to_vector<float>() == std::vector<float>{10, 20, 30});
    CHECK(r[1].to_vector<float>() == std::vector<float>{3, 5, 7});
    CHECK(s.get(v).to_vector<float>() == std::vector<float>{3, 5, 7});
    test::verify_plan(s.plan_info({old, upd}));
  }

  TEST_CASE("the plan is cached per signature; a new batch size compiles a new plan") {
    Graph g;
    MlpStep m = test::mlp_step(g, {20, 16, 10});
    Session s(g);
    s.run({m.loss}, test::mlp_feeds(m, 8, 20, 1));
    s.run({m.loss}, test::mlp_feeds(m, 8, 20, 2));
    CHECK(s.stats().plans_compiled == 1);
    CHECK(s.stats().plan_cache_hits == 1);
    s.run({m.loss}, test::mlp_feeds(m, 5, 20, 3));
    CHECK(s.stats().plans_compiled == 2);
    s.run({m.loss}, test::mlp_feeds(m, 8, 20, 1), {m.train});
    CHECK(s.stats().plans_compiled == 3);
  }

  TEST_CASE("training steps reduce the loss") {
    Graph g;
    MlpStep m = test::mlp_step(g, {20, 32, 10}, 0.5);
    Session s(g);
    Feeds f = test::mlp_feeds(m, 32, 20, 4);
    double first = s.run({m.loss}, f)[0].item();
    for (int i = 0; i < 30; ++i) s.run({}, f, {m.train});
    double last = s.run({m.loss}, f)[0].item();
    CHECK(last < first * 0.5);
  }

  TEST_CASE("memory plans: verifier, arena vs lower bound and naive") {
    Graph g;
    MlpStep m = test::mlp_step(g, {784, 256, 128, 10});
    Session s(g);
    Feeds f = test::mlp_feeds(m, 64, 784, 5);
    PlanInfo info = s.plan_info({m.loss}, f, {m.train});
    test::verify_plan(info);
    s.run({m.loss}, f, {m.train});
    PlanStats st = s.stats().last_plan;
    INFO("arena ", st.arena_bytes, " lower bound ", st.lower_bound_bytes, " naive ", st.naive_bytes);
    CHECK(st.arena_bytes <= st.lower_bound_bytes * 1.10);
    CHECK(st.arena_bytes <= st.naive_bytes * 0.5);
    CHECK(st.steps > 10);
    for (MemoryStrategy ms : {MemoryStrategy::greedy_by_size, MemoryStrategy::greedy_by_area,
                              MemoryStrategy::greedy_by_time, MemoryStrategy::naive}) {
      Session t(g, {.memory = ms});
      test::verify_plan(t.plan_info({m.loss}, f, {m.train}));
      t.run({m.loss}, f, {m.train});
      CHECK(t.stats().last_plan.memory_strategy == strategy_name(ms));
    }
  }

  TEST_CASE("random DAG plans pass the verifier") {
    for (uint64_t seed = 1; seed <= 6; ++seed) {
      CAPTURE(seed);
      Graph g;
      auto d = test::random_dag(g, seed, 60);
      for (Executor e : {Executor::serial, Executor::parallel}) {
        Session s(g, {.executor = e});
        test::verify_plan(s.plan_info(d.outputs, d.feeds));
      }
    }
  }

  TEST_CASE("graph passes on or off give identical results") {
    for (uint64_t seed = 11; seed <= 14; ++seed) {
      Graph g;
      auto d = test::random_dag(g, seed, 50);
      Session on(g), off(g, {.cse = false, .constant_folding = false, .fusion = false});
      auto a = on.run(d.outputs, d.feeds), b = off.run(d.outputs, d.feeds);
      for (size_t i = 0; i < a.size(); ++i) CHECK(test::identical(a[i], b[i]));
      CHECK(on.stats().last_plan.nodes_after_passes <= off.stats().last_plan.nodes_after_passes);
    }
    // CSE merges repeated subexpressions; folding evaluates constant subgraphs.
    Graph g;
    Tensor x = g.placeholder("x", {3});
    Tensor c = g.constant(NDArray::from<float>({1, 2, 3}));
    Tensor y = exp(x) + exp(x) + (c * 2.0 + 1.0);
    Session s(g);
    CHECK(s.run1(y, {{x, NDArray::zeros({3})}}).to_vector<float>() == std::vector<float>{5, 7, 9});
    CHECK(s.stats().last_plan.cse_merged >= 1);
    CHECK(s.stats().last_plan.folded >= 2);
  }

  TEST_CASE("element-wise fusion: fewer steps, bitwise identical results, strided and broadcast leaves") {
    Graph g;
    Tensor x = g.placeholder("x", {64, 33});
    Tensor b = g.placeholder("b", {33});
    Tensor y = relu(x * 2.0 + b);                                    // one fused step
    Tensor z = where(y > 0.5, exp(-y), y * 0.25);                   // comparison and where inside a group
    Tensor w = tanh(transpose(x)) * 3.0 - transpose(sum(x, {0}, true));  // strided and broadcast leaves
    Feeds f{{x, rand({64, 33}, 1)}, {b, rand({33}, 2)}};
    Session fused(g), plain(g, {.fusion = false});
    auto a = fused.run({y, w, z}, f), c = plain.run({y, w, z}, f);
    for (size_t i = 0; i < 3; ++i) CHECK(test::identical(a[i], c[i]));
    CHECK(fused.stats().last_plan.fused >= 3);
    CHECK(fused.stats().last_plan.steps < plain.stats().last_plan.steps);
    test::verify_plan(fused.plan_info({y, w, z}, f));
  }

  TEST_CASE("fusion of random element-wise DAGs with shared values matches unfused runs bit for bit") {
    for (uint64_t seed = 1; seed <= 25; ++seed) {
      CAPTURE(seed);
      Graph g;
      std::mt19937_64 rng(seed);
      std::vector<Tensor> pool{g.placeholder("a", {5, 7}), g.placeholder("b", {5, 7}), g.placeholder("c", {7})};
      for (int i = 0; i < 40; ++i) {
        Tensor x = pool[rng() % pool.size()], y = pool[rng() % pool.size()];
        switch (rng() % 6) {
          case 0: pool.push_back(x + y); break;
          case 1: pool.push_back(x * y); break;
          case 2: pool.push_back(tanh(x) - y); break;
          case 3: pool.push_back(where(x > y, x, y * 0.5)); break;
          case 4: pool.push_back(sigmoid(x) * 2.0); break;
          default: pool.push_back(maximum(x, y) + 1.0); break;
        }
      }
      std::vector<Tensor> fetches;
      for (size_t i = pool.size() - 1; i >= 3 && fetches.size() < 4; i -= 3) fetches.push_back(pool[i]);
      Feeds f{{pool[0], rand({5, 7}, seed)}, {pool[1], rand({5, 7}, seed + 100)}, {pool[2], rand({7}, seed + 200)}};
      Session fused(g), plain(g, {.fusion = false});
      auto a = fused.run(fetches, f), b = plain.run(fetches, f);
      for (size_t i = 0; i < a.size(); ++i) CHECK(test::identical(a[i], b[i]));
      test::verify_plan(fused.plan_info(fetches, f));
    }
  }

  TEST_CASE("CPU plans read feeds in place: no arena copy, the caller's array never written, any layout") {
    Graph g;
    Tensor x = g.placeholder("x", {64, 32});
    Tensor y = relu(x) * 2.0 + 1.0;                 // x dies here: an arena input would be written over
    Tensor r = reshape(x, {32, 64});                // a view of the feed, fetched
    Tensor t = matmul(transpose(x), x) + sum(x);    // x read through a view, and again
    // Each output from the fed values alone (a plain loop over a compact copy).
    auto check_outputs = [&](const std::vector<NDArray>& out, const NDArray& fed) {
      const std::vector<float> a = fed.compact().to_vector<float>();
      double total = 0;
      for (float v : a) total += v;
      const std::vector<float> yv = out[0].to_vector<float>(), rv = out[1].to_vector<float>();
      for (size_t i = 0; i < a.size(); ++i) {
        CHECK(yv[i] == std::max(a[i], 0.0f) * 2.0f + 1.0f);
        CHECK(rv[i] == a[i]);
      }
      for (int64_t i = 0; i < 32; ++i)
        for (int64_t j = 0; j < 32; ++j) {
          double dot = 0;
          for (int64_t k = 0; k < 64; ++k) dot += double(a[size_t(k * 32 + i)]) * a[size_t(k * 32 + j)];
          CHECK(out[2].at({i, j}) == doctest::Approx(dot + total).epsilon(1e-4));
        }
    };
    const NDArray wide = rand({64, 40}, 3), tall = rand({65, 32}, 4), flipped = rand({32, 64}, 5);
    const std::vector<NDArray> arrays{rand({64, 32}, 1), rand({64, 32}, 2),
                                      wide.slice({Slice::all(), Slice::range(4, 36)}),  // strided rows: copied
                                      tall.slice({Slice::range(1, 65)}),                // compact at an offset
                                      flipped.transpose()};                              // not compact
    for (bool fusion : {true, false})
      for (Executor ex : {Executor::serial, Executor::parallel}) {
        CAPTURE(fusion);
        Session s(g, {.threads = 2, .executor = ex, .fusion = fusion});
        for (const NDArray& a : arrays) {  // one plan, bound to each run's array
          const NDArray before = a.clone();
          check_outputs(s.run({y, r, t}, {{x, a}}), a);
          CHECK(test::identical(a.compact(), before));
        }
        CHECK(s.stats().plans_compiled == 1);
        const PlanInfo info = s.plan_info({y, r, t}, {{x, arrays[0]}});
        for (const PlanInfo::Buffer& b : info.buffers)  // no arena buffer holds a copy of x
          for (int w : b.writers) CHECK(info.steps[size_t(w)].op != "placeholder");
      }
  }

  TEST_CASE("run-time errors name the placeholder or node; the session stays usable") {
    Graph g;
    Tensor x = g.placeholder("x", {-1, 3});
    Tensor i = g.placeholder("i", {2}, int64);
    Tensor y = sum(x * 2.0);
    Session s(g);
    CHECK(error_of([&] { s.run({y}); }) == "placeholder 'x' (float32[?,3]) must be fed for this run");
    CHECK(error_of([&] { s.run({y}, {{x, NDArray::zeros({2, 4})}}); }) == "feed 'x': expected shape [?,3], got [2,4]");
    CHECK(error_of([&] { s.run({y}, {{x, NDArray::zeros({2, 3}, float64)}}); }) ==
          "feed 'x': expected dtype float32, got float64");
    CHECK(contains(error_of([&] { s.run({y}, {{y, NDArray::zeros({})}}); }), "only placeholders can be fed"));
    CHECK(contains(error_of([&] { s.run({y}, {{x, NDArray::zeros({1, 3})}, {x, NDArray::zeros({1, 3})}}); }), "fed twice"));
    Graph other;
    Tensor o = other.placeholder("o", {1});
    CHECK(contains(error_of([&] { s.run({o}); }), "fetch 'o' belongs to another graph"));
    CHECK(contains(error_of([&] { s.run({Tensor()}); }), "empty Tensor handle"));
    CHECK(contains(error_of([&] { s.run({Tensor(&g, 12345, 0)}); }), "unknown node 12345"));
    (void)i;
    CHECK(s.run1(y, {{x, NDArray::full({2, 3}, 1)}}).item() == 12);  // still usable
    // Also once a plan of the same node ids is cached: another graph's handles (node ids that mean other
    // nodes there) and an undefined feed are refused, never run with the cached plan.
    Graph third;  // built like g: the same node ids
    Tensor x2 = third.placeholder("x2", {-1, 3});
    third.placeholder("i2", {2}, int64);
    Tensor y2 = sum(x2 * 5.0);
    REQUIRE(x2.node_id() == x.node_id());
    REQUIRE(y2.node_id() == y.node_id());
    CHECK(contains(error_of([&] {
                     s.run({y2}, {{x, NDArray::full({2, 3}, 1)}});
                   }),
                   "fetch 'sum' belongs to another graph"));
    CHECK(contains(error_of([&] {
                     s.run({y}, {{x2, NDArray::full({2, 3}, 1)}});
                   }),
                   "feed 'x2' belongs to another graph"));
    CHECK(error_of([&] { s.run({y}, {{x, NDArray()}}); }) == "feed 'x': undefined NDArray");
    CHECK(s.run1(y, {{x, NDArray::full({2, 3}, 1)}}).item() == 12);
    // Options out of range (TBB's arena crashed on millions of threads).
    CHECK(contains(error_of([&] { Session bad(g, {.threads = 1 << 24}); }), "threads must be in [0, 4096]"));
    CHECK(contains(error_of([&] { Session bad(g, {.threads = -1}); }), "threads must be in [0, 4096]"));
    CHECK(contains(error_of([&] { Session bad(g, {.memory = MemoryStrategy(42)}); }),
                   "memory 42 is not a MemoryStrategy"));
    CHECK(contains(error_of([&] { Session bad(g, {.remat = Remat(9)}); }), "remat 9 is not a Remat"));
    CHECK(contains(error_of([&] { Session bad(g, {.device = Device{DeviceKind(9), 0}}); }), "device kind 9"));
  }

  TEST_CASE("check_numerics names the first node producing NaN; a failed run changes no variable") {
    Graph g;
    Tensor x = g.placeholder("x", {2});
    Tensor v = g.variable("v", {2}, [](const NDArray& a, uint64_t) { a.fill(1); });
    Tensor l = log(x);  // NaN for negative x
    Tensor y = sqrt(l) * v;
    Tensor step = assign(v, y);
    Session s(g, {.check_numerics = true});
    CHECK(error_of([&] { s.run({y}, {{x, NDArray::from<float>({-1, 1})}}, {step}); }) ==
          "check_numerics: node 'log' (log) produced NaN or Inf in output 0");
    CHECK(s.get(v).to_vector<float>() == std::vector<float>{1, 1});
    s.run({}, {{x, NDArray::from<float>({std::exp(4.0f), std::exp(9.0f)})}}, {step});
    auto after = s.get(v).to_vector<float>();
    CHECK(after[0] == doctest::Approx(2));
    CHECK(after[1] == doctest::Approx(3));
    // Errors raised by kernels (bad indices) also leave variables unchanged.
    Graph h;
    Tensor idx = h.placeholder("idx", {1}, int64);
    Tensor w = h.variable("w", {3}, [](const NDArray& a, uint64_t) { a.fill(5); });
    Tensor picked = gather(w, idx);
    Tensor upd = assign_sub(w, ones_like(w));
    Session t(h);
    CHECK(contains(error_of([&] { t.run({picked}, {{idx, NDArray::from<int64_t>({7})}}, {upd}); }), "out of range"));
    CHECK(t.get(w).to_vector<float>() == std::vector<float>{5, 5, 5});
  }

  TEST_CASE("stats, per-node times, trace and DOT exports") {
    Graph g;
    MlpStep m = test::mlp_step(g, {20, 16, 10});
    Session s(g, {.profile = true});
    Feeds f = test::mlp_feeds(m, 8, 20, 1);
    s.run({m.loss}, f, {m.train});
    SessionStats st = s.stats();
    CHECK(st.runs == 1);
    CHECK(st.last_plan.compile_ms > 0);
    CHECK(st.last_plan.graph_nodes > st.last_plan.steps);
    CHECK(!st.node_times.empty());
    CHECK(st.node_times.front().calls == 1);
    test::TempDir dir;
    std::string trace = dir / "trace.json", dot = dir / "plan.dot";
    s.export_trace(trace);
    s.export_dot(dot);
    std::string t = read_file(trace), d = read_file(dot);
    CHECK(contains(t, "\"traceEvents\""));
    CHECK(contains(t, "layer0/matmul"));
    CHECK(contains(d, "digraph plan"));
    CHECK(contains(d, "float32[8,16] @"));  // shapes and arena offsets
    Session quiet(g);
    quiet.run({m.loss}, f);
    CHECK(contains(error_of([&] { quiet.export_trace(trace); }), "profile = true"));
  }
}

TEST_SUITE("core/session/parallel") {
  TEST_CASE("the parallel executor gives bit-identical results on random DAGs") {
    for (uint64_t seed = 21; seed <= 28; ++seed) {
      CAPTURE(seed);
      Graph g;
      auto d = test::random_dag(g, seed, 80);
      Session serial(g, {.threads = 2, .executor = Executor::serial});
      Session parallel(g, {.threads = 2, .executor = Executor::parallel});
      auto a = serial.run(d.outputs, d.feeds);
      for (int rep = 0; rep < 3; ++rep) {
        auto b = parallel.run(d.outputs, d.feeds);
        for (size_t i = 0; i < a.size(); ++i) CHECK(test::identical(a[i], b[i]));
      }
    }
  }

  TEST_CASE("the parallel plan never makes a node wait for a sibling of the same wave") {
    // Four independent branches; buffers may be reused across waves (a node waits
    // for an earlier wave of another branch) but never within one: that would
    // serialize nodes the executor could run at the same time.
    Graph g;
    Tensor x = g.placeholder("x", {32, 32});
    Tensor total;
    for (const char* name : {"b0", "b1", "b2", "b3"}) {
      Tensor r;
      {
        auto s = g.scope(name);
        Tensor w = g.variable("w", {32, 32}, test::init_normal(0.1));
        r = sum(relu(matmul(tanh(matmul(x, w)), w)));
      }
      total = total.valid() ? total + r : r;
    }
    Feeds f{{x, test::rand({32, 32}, 5)}};
    Session s(g, {.threads = 2, .executor = Executor::parallel});
    PlanInfo p = s.plan_info({total}, f);
    test::verify_plan(p);
    // A step's branch ('0'..'3', or 0 outside the branches) and its depth within the branch.
    std::vector<char> branch(p.steps.size(), 0);
    std::vector<int> depth(p.steps.size(), -1);
    std::map<char, int> seen;
    for (size_t i = 0; i < p.steps.size(); ++i) {
      const std::string& n = p.steps[i].name;
      if (n.size() > 3 && n[0] == 'b' && n[2] == '/') branch[i] = n[1], depth[i] = seen[n[1]]++;
    }
    CHECK(seen.size() == 4);
    for (auto [b, count] : seen) CHECK(count == 3);  // matmul+tanh, matmul+relu (epilogues), sum
    for (size_t i = 0; i < p.steps.size(); ++i)
      for (int d : p.steps[i].deps)
        if (branch[i] && branch[size_t(d)] && branch[size_t(d)] != branch[i]) {
          INFO(p.steps[i].name, " waits for ", p.steps[size_t(d)].name);
          CHECK(depth[size_t(d)] < depth[i]);
        }
    Session serial(g);
    CHECK(test::identical(s.run({total}, f)[0], serial.run({total}, f)[0]));
  }

  TEST_CASE("parallel training steps match serial ones, variables included") {
    Graph g;
    MlpStep m = test::mlp_step(g, {30, 24, 24, 10}, 0.3);
    Session serial(g, {.threads = 2, .executor = Executor::serial, .seed = 3});
    Session parallel(g, {.threads = 2, .executor = Executor::parallel, .seed = 3});
    for (int step = 0; step < 5; ++step) {
      Feeds f = test::mlp_feeds(m, 16, 30, uint64_t(step));
      auto a = serial.run({m.loss}, f, {m.train});
      auto b = parallel.run({m.loss}, f, {m.train});
      CHECK(test::identical(a[0], b[0]));
    }
    for (const Tensor& p : m.params) CHECK(test::identical(serial.get(p), parallel.get(p)));
  }

  TEST_CASE("errors in the parallel executor propagate and leave the session usable") {
    Graph g;
    Tensor t = g.placeholder("t", {4});
    Tensor i = g.placeholder("i", {3}, int64);
    std::vector<Tensor> branches;
    for (int k = 0; k < 6; ++k) branches.push_back(sum(exp(t * double(k))));
    Tensor bad = gather(t, i);
    Session s(g, {.threads = 2, .executor = Executor::parallel});
    Feeds f{{t, NDArray::zeros({4})}, {i, NDArray::from<int64_t>({0, 9, 1})}};
    std::vector<Tensor> fetches = branches;
    fetches.push_back(bad);
    CHECK(contains(error_of([&] { s.run(fetches, f); }), "index 9 out of range"));
    f[1].second = NDArray::from<int64_t>({0, 3, 1});
    CHECK(s.run(fetches, f).size() == 7);
  }
}
