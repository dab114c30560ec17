// One Session used from several threads, and a graph that grows while a
// session runs it. The suite name contains "parallel", so `./build.sh
// test-tsan` runs it under ThreadSanitizer.

#include <atomic>
#include <thread>

#include "tests/core/graphs.hpp"

using namespace loom;
using test::identical;
using test::MlpStep;

namespace {

template <class F>
void in_threads(int n, F&& f) {
  std::vector<std::thread> ts;
  for (int t = 0; t < n; ++t) ts.emplace_back([&f, t] { f(t); });
  for (auto& t : ts) t.join();
}

}  // namespace

TEST_SUITE("core/session/parallel-runs") {
  TEST_CASE("runs that write no variable run concurrently with the results of serial runs") {
    for (Executor ex : {Executor::serial, Executor::parallel}) {
      Graph g;
      MlpStep m = test::mlp_step(g, {12, 16, 10});
      Session shared(g, {.threads = 2, .executor = ex, .seed = 4});
      Session reference(g, {.threads = 1, .seed = 4});
      const int kThreads = 4, kRuns = 12;
      std::vector<Feeds> feeds;
      std::vector<NDArray> want;
      for (int i = 0; i < kThreads * kRuns; ++i) {
        feeds.push_back(test::mlp_feeds(m, 3 + i % 3, 12, uint64_t(i)));  // three batch sizes: three plans
        want.push_back(reference.run({m.loss}, feeds.back())[0]);
      }
      std::atomic<int> wrong{0};
      in_threads(kThreads, [&](int t) {
        for (int r = 0; r < kRuns; ++r) {
          const int i = t * kRuns + r;
          if (!identical(shared.run({m.loss}, feeds[size_t(i)])[0], want[size_t(i)])) ++wrong;
        }
      });
      CHECK(wrong == 0);
      CHECK(shared.stats().runs == kThreads * kRuns);
    }
  }

  TEST_CASE("training steps are serialized with concurrent reads; the result equals serial training") {
    Graph g;
    MlpStep m = test::mlp_step(g, {10, 8, 10}, 0.2);
    Session shared(g, {.threads = 2, .seed = 9});
    Session serial(g, {.threads = 1, .seed = 9});
    const int kSteps = 20;
    std::vector<Feeds> steps;
    for (int i = 0; i < kSteps; ++i) steps.push_back(test::mlp_feeds(m, 4, 10, uint64_t(100 + i)));
    for (const Feeds& f : steps) serial.run({}, f, {m.train});
    std::atomic<bool> done{false};
    std::atomic<int> bad{0};
    in_threads(4, [&](int t) {
      if (t == 0) {
        for (const Feeds& f : steps) shared.run({}, f, {m.train});
        done = true;
        return;
      }
      // Readers: losses and variable reads during training are never torn (always finite).
      Feeds f = test::mlp_feeds(m, 2, 10, uint64_t(t));
      while (!done) {
        if (!std::isfinite(shared.run({m.loss}, f)[0].item())) ++bad;
        if (!std::isfinite(shared.get(m.params[0]).to_vector<float>()[0])) ++bad;
      }
    });
    CHECK(bad == 0);
    for (const Tensor& p : m.params) CHECK(identical(shared.get(p), serial.get(p)));
  }

  TEST_CASE("set() and get() from several threads: every value read is one that was written, whole") {
    Graph g;
    Tensor v = g.variable("v", {64}, [](const NDArray& a, uint64_t) { a.fill(0); });
    Tensor twice = v * 2.0;
    Session s(g);
    std::atomic<int> torn{0};
    in_threads(3, [&](int t) {
      for (int i = 1; i <= 30; ++i) {
        if (t == 0) {
          s.set(v, NDArray::full({64}, double(i)));
        } else {
          auto got = (t == 1 ? s.get(v) : s.run1(twice)).to_vector<float>();
          for (float x : got) torn += x != got[0];
        }
      }
    });
    CHECK(torn == 0);
    CHECK(s.get(v).to_vector<float>()[63] == 30);
  }

  TEST_CASE("a graph may grow while sessions run it") {
    Graph g;
    Tensor x = g.placeholder("x", {8});
    Tensor y = sum(exp(x) * 3.0);
    Session s(g, {.threads = 1});
    const Feeds f{{x, test::rand({8}, 2)}};
    const NDArray want = s.run1(y, f);
    std::atomic<bool> building{true};
    std::atomic<int> wrong{0};
    std::vector<Tensor> added;
    in_threads(3, [&](int t) {
      if (t == 0) {
        Tensor z = x;
        for (int i = 0; i < 300; ++i) added.push_back(z = tanh(z) + double(i % 7));
        building = false;
        return;
      }
      // One thread reruns a cached plan, the other compiles new ones over the growing graph.
      for (int i = 0; building || i < 5; ++i) {
        if (t == 1 && !identical(s.run1(y, f), want)) ++wrong;
        if (t == 2) {
          const int n = g.size();
          Tensor some(&g, n - 1, 0);
          if (some.op() != "placeholder" && !some.node().outputs.empty()) Session(g).run({some}, f);
        }
      }
    });
    CHECK(wrong == 0);
    CHECK(s.run1(added.back(), f).shape() == Shape{8});
  }

  TEST_CASE("plans evicted while another thread runs them stay valid for that run") {
    Graph g;
    Tensor x = g.placeholder("x", {-1, 3});
    Tensor y = sum(x * 2.0, {1});
    Session s(g, {.threads = 1, .max_cached_plans = 1});
    std::atomic<int> wrong{0};
    in_threads(4, [&](int t) {
      for (int i = 0; i < 25; ++i) {
        const int64_t batch = 1 + (t + i) % 5;
        NDArray out = s.run1(y, {{x, NDArray::full({batch, 3}, double(t + 1))}});
        for (float v : out.to_vector<float>()) wrong += v != float(6 * (t + 1));
        wrong += out.shape() != Shape{batch};
      }
    });
    CHECK(wrong == 0);
    CHECK(s.stats().plans_cached == 1);
    CHECK(s.stats().plans_evicted > 0);
  }
}

// DeferredChecks (core/kernel.hpp): what device kernels leave for the session
// to verify; the parallel executor's steps add to it concurrently.
TEST_SUITE("core/deferred-checks/parallel") {
  TEST_CASE("checks added from threads are each verified once; the first failure is thrown; slots reset per run") {
    DeferredChecks checks;
    std::atomic<int> ran{0};
    in_threads(4, [&](int) {
      for (int i = 0; i < 100; ++i) checks.add([&ran] { ++ran; });
    });
    CHECK(!checks.empty());
    checks.verify();
    CHECK(ran == 400);
    CHECK(checks.empty());
    checks.verify();
    CHECK(ran == 400);

    // Every check runs; the first added is the one thrown.
    checks.add([&] { ++ran, fail("first"); });
    checks.add([&] { ++ran, fail("second"); });
    CHECK(test::error_of([&] { checks.verify(); }) == "first");
    CHECK(ran == 402);
    CHECK(checks.empty());

    // Adds while another thread verifies: none lost, none run twice.
    std::atomic<bool> done{false};
    std::thread verifier([&] {
      while (!done) checks.verify();
    });
    in_threads(3, [&](int) {
      for (int i = 0; i < 200; ++i) checks.add([&ran] { ++ran; });
    });
    done = true;
    verifier.join();
    checks.verify();
    CHECK(ran == 1002);

    // clear (a run starts) drops unverified checks and frees the backend's slots; verify leaves them.
    struct CountingSlots : DeferredChecks::Slots {
      int* reused = nullptr;
      void reuse() override { ++*reused; }
    };
    int reused = 0;
    checks.slots([&] {
      auto s = std::make_unique<CountingSlots>();
      s->reused = &reused;
      return s;
    });
    checks.add([&] { ++ran; });
    checks.verify();
    CHECK(reused == 0);
    checks.add([&] { ++ran; });
    checks.clear();
    CHECK(checks.empty());
    CHECK(reused == 1);
    checks.verify();
    CHECK(ran == 1003);
  }
}
