// Robustness of the core: sizes that overflow, nonsense arguments, values the
// graph must own, initializer errors, the bounded plan cache. Every case here
// once crashed or answered wrong (issue 14); each asserts the loom::Error that
// names what is wrong, or the right answer.

#include <cmath>
#include <limits>

#include "core/autodiff.hpp"
#include "tests/core/graphs.hpp"

using namespace loom;
using test::contains;
using test::error_of;

namespace {

constexpr int64_t k40 = int64_t(1) << 40;

/// No message may blame loom itself: user mistakes are user errors.
void check_user_error(const std::string& e, const std::string& part) {
  INFO(e);
  CHECK(contains(e, part));
  CHECK(!contains(e, "internal error"));
}

}  // namespace

TEST_SUITE("core/robust") {
  TEST_CASE("device names parse as PyTorch spells them, and nothing else") {
    CHECK(Device::parse("cpu") == Device::cpu());
    CHECK(Device::parse("cuda") == Device::cuda(0));
    CHECK(Device::parse("cuda:0") == Device::cuda(0));
    CHECK(Device::parse("cuda:12") == Device::cuda(12));
    CHECK(Device::parse(Device::cuda(3).str()) == Device::cuda(3));
    for (const char* bad : {"gpu", "cuda:", "cuda:+1", "cuda: 1", "cuda:-1", "cuda:1x", "cuda:99999999999", "CPU", ""})
      check_user_error(error_of([&] { Device::parse(bad); }), "unknown device '" + std::string(bad) + "'");
  }

  TEST_CASE("element and byte counts are checked for overflow") {
    check_user_error(error_of([] { NDArray::empty({int64_t(1) << 62}); }), "2^48 bytes");
    check_user_error(error_of([] { NDArray::empty({k40, k40}); }), "more than 2^63 elements");
    check_user_error(error_of([] { NDArray::zeros({3, -2}); }), "dynamic or negative");
    check_user_error(error_of([] { NDArray::from<float>({1, 2}).reshape({k40, k40, 0, -1}); }), "reshape");
    // An empty array may not hide an overflowing shape (its strides would overflow).
    check_user_error(error_of([] { NDArray::empty({0, k40, k40}); }), "more than 2^63 elements");

    Graph g;
    check_user_error(error_of([&] { g.variable("v", {k40, k40}, [](const NDArray&, uint64_t) {}); }),
                     "variable 'v': output 0: shape [1099511627776,1099511627776] has more than 2^63 elements");
    check_user_error(error_of([&] { full(g, {k40, k40}, 1.0); }), "full");
    check_user_error(error_of([&] { g.placeholder("p", {k40, -1, k40}); }), "more than 2^63 elements");
    Tensor a = g.placeholder("a", {int64_t(1) << 45});  // 2^47 bytes: allowed
    check_user_error(error_of([&] { concat({a, a, a}, 0); }), "concat 'concat': output 0: shape [105553116266496]");
    check_user_error(error_of([&] { pad(a, {{INT64_MAX, 1}}); }), "overflows");
  }

  TEST_CASE("a broadcast whose size overflows only once dims resolve fails when the plan is compiled") {
    Graph g;
    Tensor x = g.placeholder("x", {-1, 1, 1}), y = g.placeholder("y", {1, -1, 1}), z = g.placeholder("z", {1, 1, -1});
    Tensor w = where(x > 0.0, y, z);
    Session s(g);
    const int64_t n = int64_t(1) << 21;
    Feeds f{{x, NDArray::zeros({n, 1, 1})}, {y, NDArray::zeros({1, n, 1})}, {z, NDArray::zeros({1, 1, n})}};
    check_user_error(error_of([&] { s.run({w}, f); }), "where 'where': output 0: shape [2097152,2097152,2097152]");
    // The session stays usable.
    Feeds small{{x, NDArray::full({2, 1, 1}, 1)}, {y, NDArray::full({1, 3, 1}, 7)}, {z, NDArray::zeros({1, 1, 4})}};
    CHECK(s.run1(w, small).shape() == Shape{2, 3, 4});
  }

  TEST_CASE("nonsense arguments are refused when the node is built") {
    Graph g;
    check_user_error(error_of([&] { g.placeholder("p", {2, -2}); }), "has dim -2");
    check_user_error(error_of([&] { random_uniform(g, {2}, 1.0, 0.0); }), "low <= high, got low 1, high 0");
    check_user_error(error_of([&] { random_uniform(g, {2}, 0.0, INFINITY); }), "finite bounds");
    check_user_error(error_of([&] { random_normal(g, {2}, 0.0, -1.0); }), "stddev >= 0, got mean 0, stddev -1");
    check_user_error(error_of([&] { random_normal(g, {2}, NAN, 1.0); }), "finite mean");
    Tensor x = g.placeholder("x", {4, 3});
    check_user_error(error_of([&] { split(x, {5, -1}, 0); }), "must be >= 0");
    check_user_error(error_of([&] { split(x, {INT64_MAX, INT64_MAX, 2}, 0); }), "overflow");
    // gradients(): a dy of the wrong shape is named, not an internal node.
    Tensor y = x * 2.0;
    check_user_error(error_of([&] { gradients(y, {x}, g.placeholder("dy", {3, 4})); }),
                     "gradients: dy 'dy' has shape [3,4], y 'mul' has shape [4,3]");
    CHECK(gradients(y, {x}, g.placeholder("dy2", {-1, 3}))[0].shape() == Shape{4, 3});
  }

  TEST_CASE("a graph owns its constants: changing the caller's array later changes nothing") {
    NDArray value = NDArray::from<float>({1, 2, 3});
    Graph g;
    Tensor c = g.constant(value);
    Tensor direct = g.add1("constant", {}, {{"value", value}});  // the attribute path too
    Session before(g);
    CHECK(before.run1(c).to_vector<float>() == std::vector<float>{1, 2, 3});
    value.fill(9);
    Session after(g);
    CHECK(after.run1(c).to_vector<float>() == std::vector<float>{1, 2, 3});
    CHECK(after.run1(direct).to_vector<float>() == std::vector<float>{1, 2, 3});
    CHECK(before.run1(c * 1.0).to_vector<float>() == std::vector<float>{1, 2, 3});
    check_user_error(error_of([&] { g.add1("constant", {}, {{"value", NDArray()}}); }), "undefined NDArray");
  }

  TEST_CASE("an initializer's own error names the variable; nothing is half-initialized") {
    Graph g;
    Tensor ok = g.variable("ok", {2}, [](const NDArray& a, uint64_t) { a.fill(1); });
    Tensor bad = g.variable("layer/w", {2}, [](const NDArray&, uint64_t) { throw std::runtime_error("disk on fire"); });
    Session s(g);
    check_user_error(error_of([&] { s.run1(bad + 1.0); }), "variable 'layer/w': its initializer failed: disk on fire");
    check_user_error(error_of([&] { s.initialize(); }), "variable 'layer/w'");
    CHECK(!s.initialized(ok));  // initialize() validated every value before setting any
    CHECK(s.run1(ok * 2.0).to_vector<float>() == std::vector<float>{2, 2});
  }

  TEST_CASE("the plan cache is bounded: least recently used plans go first") {
    Graph g;
    Tensor x = g.placeholder("x", {-1, 4});
    Tensor y = sum(relu(x) * 2.0, {1});
    Session s(g, {.max_cached_plans = 4});
    for (int64_t batch = 1; batch <= 40; ++batch) {
      NDArray out = s.run1(y, {{x, NDArray::full({batch, 4}, 1)}});
      REQUIRE(out.shape() == Shape{batch});
      CHECK(out.to_vector<float>()[0] == 8);
    }
    SessionStats st = s.stats();
    CHECK(st.plans_compiled == 40);
    CHECK(st.plans_cached == 4);
    CHECK(st.plans_evicted == 36);
    // The last four are cached; using batch 37 keeps it, so batch 38 goes next.
    s.run1(y, {{x, NDArray::zeros({37, 4})}});
    CHECK(s.stats().plan_cache_hits == 1);
    s.run1(y, {{x, NDArray::zeros({41, 4})}});
    s.run1(y, {{x, NDArray::zeros({37, 4})}});
    CHECK(s.stats().plan_cache_hits == 2);
    s.run1(y, {{x, NDArray::zeros({38, 4})}});
    CHECK(s.stats().plans_compiled == 42);
    Session unbounded(g, {.max_cached_plans = 0});
    for (int64_t batch = 1; batch <= 40; ++batch) unbounded.run1(y, {{x, NDArray::zeros({batch, 4})}});
    CHECK(unbounded.stats().plans_cached == 40);
    CHECK(unbounded.stats().plans_evicted == 0);
  }
}
