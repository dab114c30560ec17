// The fused softmax, log_softmax and logsumexp: against their composites
// (values and gradients, every axis, float32 and float64), PyTorch's results
// for infinities and empty axes, and errors. (The registry sweep adds the
// reference checks and the numeric gradient checks of the ops and of their
// backward ops.)

#include <cmath>
#include <functional>

#include "ops/check.hpp"
#include "tests/util.hpp"

using namespace loom;
using loom::test::allclose;
using loom::test::contains;
using loom::test::error_of;

namespace {

const double kInf = INFINITY;

using Fn = std::function<Tensor(const Tensor&)>;

/// f and g on x, and the gradients of sum(f(x) * w), in one session.
void check_same(const Fn& fused, const Fn& composite, const NDArray& x, double rtol) {
  Graph g;
  Tensor xt = g.placeholder("x", x.shape(), x.dtype());
  Tensor a = fused(xt), b = composite(xt);
  REQUIRE(a.shape() == b.shape());
  Tensor w = g.constant(test::rand(a.shape(), 5, x.dtype()));
  Tensor ga = gradients(sum(a * w), {xt})[0], gb = gradients(sum(b * w), {xt})[0];
  Session s(g);
  auto r = s.run({a, b, ga, gb}, {{xt, x}});
  CHECK(allclose(r[0], r[1], rtol, rtol));
  CHECK(allclose(r[2], r[3], rtol, rtol));
}

/// Values and the gradient of sum(f(x) * dy) for a float64 row vector.
std::pair<std::vector<double>, std::vector<double>> value_and_grad(const Fn& f, std::vector<double> x,
                                                                   std::vector<double> dy) {
  Graph g;
  Tensor xt = g.placeholder("x", {int64_t(x.size())}, float64);
  Tensor y = f(xt);
  Tensor d = g.constant(NDArray::from<double>(dy, y.shape()));
  Tensor gx = gradients(sum(y * d), {xt})[0];
  Session s(g);
  auto r = s.run({y, gx}, {{xt, NDArray::from<double>(x)}});
  return {r[0].to_vector<double>(), r[1].to_vector<double>()};
}

/// Equal, with NaN equal to NaN and infinities compared exactly.
bool same(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) || std::isnan(b[i])) {
      if (std::isnan(a[i]) != std::isnan(b[i])) return false;
      continue;
    }
    if (std::isinf(a[i]) || std::isinf(b[i])) {
      if (a[i] != b[i]) return false;
      continue;
    }
    if (std::fabs(a[i] - b[i]) > 1e-12 * std::max(1.0, std::fabs(b[i]))) return false;
  }
  return true;
}

}  // namespace

TEST_SUITE("ops/softmax") {
  TEST_CASE("fused softmax, log_softmax and logsumexp equal their composites, values and gradients") {
    for (DType t : {float32, float64}) {
      const double tol = t == float32 ? 2e-5 : 1e-12;
      for (const Shape& shape : {Shape{5, 37}, Shape{3, 70, 9}, Shape{2, 3, 130}, Shape{1}, Shape{4, 1, 3}}) {
        NDArray x = test::rand(shape, 3, t, -4, 4);
        for (int64_t axis = -int64_t(shape.size()); axis < int64_t(shape.size()); ++axis) {
          CAPTURE(dtype_name(t));
          CAPTURE(shape_str(shape));
          CAPTURE(axis);
          check_same([&](const Tensor& v) { return softmax(v, axis); },
                     [&](const Tensor& v) { return composite::softmax(v, axis); }, x, tol);
          check_same([&](const Tensor& v) { return log_softmax(v, axis); },
                     [&](const Tensor& v) { return composite::log_softmax(v, axis); }, x, tol);
          for (bool keep : {false, true})
            check_same([&](const Tensor& v) { return logsumexp(v, {axis}, keep); },
                       [&](const Tensor& v) { return composite::logsumexp(v, {axis}, keep); }, x, tol);
        }
      }
      // Several axes, adjacent or not (the op function permutes them together), and all.
      NDArray x = test::rand({3, 4, 5, 6}, 4, t, -4, 4);
      for (std::vector<int64_t> axes : {std::vector<int64_t>{1, 2}, {0, 2}, {0, 3}, {-1, 1}, {}}) {
        for (bool keep : {false, true}) {
          CAPTURE(keep);
          check_same([&](const Tensor& v) { return logsumexp(v, axes, keep); },
                     [&](const Tensor& v) { return composite::logsumexp(v, axes, keep); }, x, tol);
        }
      }
    }
  }

  TEST_CASE("infinities follow PyTorch, values and gradients") {
    const double nan = NAN;
    auto lse = [](const Tensor& x) { return logsumexp(x, {0}); };
    auto sm = [](const Tensor& x) { return softmax(x, 0); };
    auto lsm = [](const Tensor& x) { return log_softmax(x, 0); };
    struct Row {
      std::vector<double> x, lse, dlse, sm, dsm, lsm, dlsm;
    };
    // torch.logsumexp / torch.softmax / torch.log_softmax (2.x) on these rows,
    // with dy = 1 (logsumexp) and dy = [1, 2] (softmax, log_softmax).
    const std::vector<Row> rows = {
        {{kInf, 0}, {kInf}, {nan, 0}, {nan, nan}, {nan, nan}, {nan, nan}, {nan, nan}},
        {{-kInf, 0}, {0}, {0, 1}, {0, 1}, {0, 0}, {-kInf, 0}, {1, -1}},
        {{-kInf, -kInf}, {-kInf}, {nan, nan}, {nan, nan}, {nan, nan}, {nan, nan}, {nan, nan}},
        {{kInf, kInf}, {kInf}, {nan, nan}, {nan, nan}, {nan, nan}, {nan, nan}, {nan, nan}},
        {{kInf, -kInf}, {kInf}, {nan, 0}, {nan, nan}, {nan, nan}, {nan, nan}, {nan, nan}},
        {{nan, 0}, {nan}, {nan, nan}, {nan, nan}, {nan, nan}, {nan, nan}, {nan, nan}},
    };
    for (const Row& r : rows) {
      CAPTURE(r.x[0]);
      CAPTURE(r.x[1]);
      auto [v1, g1] = value_and_grad(lse, r.x, {1});
      CHECK(same(v1, r.lse));
      CHECK(same(g1, r.dlse));
      auto [v2, g2] = value_and_grad(sm, r.x, {1, 2});
      CHECK(same(v2, r.sm));
      CHECK(same(g2, r.dsm));
      auto [v3, g3] = value_and_grad(lsm, r.x, {1, 2});
      CHECK(same(v3, r.lsm));
      CHECK(same(g3, r.dlsm));
    }
    // The same along a non-last axis (the column kernel), and in float32.
    Graph g;
    NDArray cols = NDArray::from<float>({float(kInf), float(-kInf), 0, 0, 1, float(-kInf)}, {3, 2});
    Tensor x = g.constant(cols);
    Session s(g);
    auto r = s.run({logsumexp(x, {0}), softmax(x, 0)});
    CHECK(r[0].to_vector<float>() == std::vector<float>{float(kInf), 0.0f});
    auto p = r[1].to_vector<float>();
    CHECK(std::isnan(p[0]));
    CHECK(p[1] == 0.0f);
    CHECK(p[3] == 1.0f);
    CHECK(p[5] == 0.0f);
  }

  TEST_CASE("empty axes: logsumexp is -inf, softmax is empty") {
    Graph g;
    Tensor e = g.constant(NDArray::zeros({2, 0}, float32));
    Tensor e3 = g.constant(NDArray::zeros({2, 0, 3}, float64));
    Session s(g);
    auto r = s.run({logsumexp(e, {1}), softmax(e, 1), log_softmax(e, -1), logsumexp(e3, {1}), softmax(e3, 1),
                    logsumexp(e, {0})});
    CHECK(r[0].to_vector<float>() == std::vector<float>{-float(kInf), -float(kInf)});
    CHECK(r[1].shape() == Shape{2, 0});
    CHECK(r[2].shape() == Shape{2, 0});
    CHECK(r[3].shape() == Shape{2, 3});
    for (double v : r[3].to_vector<double>()) CHECK(v == -kInf);
    CHECK(r[4].shape() == Shape{2, 0, 3});
    CHECK(r[5].shape() == Shape{0});
    // An empty axis between two huge ones holds no element and takes no memory:
    // the kernels return at once (they looped over the 2^44 elements of the other dims; found by fuzzing).
    Tensor wide = g.constant(NDArray::zeros({int64_t(1) << 22, 0, int64_t(1) << 22}, float32));
    auto w = s.run({softmax(wide, 1), log_softmax(wide, 1), softmax(wide, 2)});
    for (const NDArray& a : w) CHECK(a.shape() == Shape{int64_t(1) << 22, 0, int64_t(1) << 22});
  }

  TEST_CASE("large rows and odd lengths stay stable in float32") {
    // Rows longer than the vector lanes, with a tail, and values far apart.
    Graph g;
    NDArray x = test::rand({3, 1000 + 13}, 9, float32, -50, 50);
    x.data<float>()[5] = 1e30f;
    Tensor xt = g.constant(x);
    Session s(g);
    auto r = s.run({softmax(xt, 1), logsumexp(xt, {1}), log_softmax(xt, 1)});
    auto p = r[0].to_vector<float>();
    double row0 = 0, row1 = 0;
    for (int i = 0; i < 1013; ++i) row0 += p[size_t(i)], row1 += p[size_t(1013 + i)];
    CHECK(row0 == doctest::Approx(1.0).epsilon(1e-5));
    CHECK(row1 == doctest::Approx(1.0).epsilon(1e-5));
    CHECK(p[5] == 1.0f);
    CHECK(r[1].to_vector<float>()[0] == 1e30f);
    CHECK(r[2].to_vector<float>()[5] == 0.0f);
  }

  TEST_CASE("log_softmax of large logits keeps float32's precision (x - max first, as PyTorch)") {
    // x - (max + log s) rounds at the magnitude of the max (ulp(1002) = 6e-5).
    Graph g;
    const std::vector<float> row{1000, 1001, 1002, -1000};
    for (int64_t axis : {1, 0}) {  // contiguous rows, and strided columns
      NDArray x = NDArray::from<float>(row).reshape(axis == 1 ? Shape{1, 4} : Shape{4, 1});
      auto got = Session(g).run1(log_softmax(g.constant(x), axis)).to_vector<float>();
      const double lse = 1002 + std::log(std::exp(-2.0) + std::exp(-1.0) + 1.0);
      for (size_t j = 0; j < row.size(); ++j) CHECK(std::fabs(got[j] - (row[j] - lse)) <= 1e-6 * std::max(1.0, std::fabs(row[j] - lse)));
    }
  }

  TEST_CASE("the vectorized exp is exact to float32 up to its overflow") {
    // log_softmax_grad(y, g) = g - exp(y) sum(g): exp of a large y, in float32 rows long enough to vectorize.
    NDArray y = NDArray::full({1, 40}, 0.0f), g = NDArray::full({1, 40}, 0.0f);
    const float big[3] = {88.5f, 88.7f, 89.0f};
    for (int i = 0; i < 3; ++i) y.data<float>()[i] = big[i];
    g.data<float>()[39] = 1.0f;
    NDArray out = invoke("log_softmax_grad", {y, g}, {{"axis", int64_t(1)}})[0];
    for (int i = 0; i < 2; ++i) CHECK(-out.data<float>()[i] == doctest::Approx(std::exp(double(big[i]))).epsilon(1e-6));
    CHECK(std::isinf(out.data<float>()[2]));
    CHECK(out.data<float>()[39] == 0.0f);  // 1 - exp(0) * 1
  }

  TEST_CASE("second derivatives through the backward ops") {
    for (bool log : {false, true}) {
      CAPTURE(log);
      auto f = [log](const std::vector<Tensor>& x) {
        Tensor y = log ? log_softmax(x[0], 1) : softmax(x[0], 1);
        Tensor w = x[0].graph().constant(test::rand(y.shape(), 11, float64));
        return std::vector<Tensor>{gradients(sum(y * y * w), {x[0]})[0]};
      };
      CheckResult r = check_gradient_fn(f, {test::rand({3, 6}, 12, float64, -2, 2)}, {0});
      CHECK_MESSAGE(r.ok, r.detail);
    }
  }

  TEST_CASE("bad axes raise loom::Error naming the op") {
    Graph g;
    Tensor x = g.placeholder("x", {2, 3});
    CHECK(contains(error_of([&] { softmax(x, 2); }), "softmax"));
    CHECK(contains(error_of([&] { softmax(x, 2); }), "out of range"));
    CHECK(contains(error_of([&] { log_softmax(x, -3); }), "log_softmax"));
    CHECK(contains(error_of([&] { logsumexp(x, {5}); }), "logsumexp"));
    CHECK(contains(error_of([&] { logsumexp(x, {1, -1}); }), "repeated"));
    CHECK(contains(error_of([&] { g.add1("logsumexp", {g.placeholder("y", {2, 3, 4})}, {{"axes", std::vector<int64_t>{0, 2}}}); }),
                   "adjacent"));
    Tensor i = g.placeholder("i", {2, 3}, int32);
    CHECK(contains(error_of([&] { softmax(i); }), "int32"));
  }
}
