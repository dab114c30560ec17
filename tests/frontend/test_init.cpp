// Initializers: gains and fans against PyTorch's formulas, sample statistics
// against the distributions they promise, and seeding through the Session.

#include <cmath>

// util.hpp (and core/philox.hpp in it) before ops/ops.hpp: philox must see the C math functions.
#include "tests/util.hpp"

#include "frontend/init.hpp"

using namespace loom;
using loom::test::contains;
using loom::test::error_of;

namespace {

struct Stats {
  double mean = 0, var = 0, min = INFINITY, max = -INFINITY;
};

Stats stats_of(const NDArray& a) {
  NDArray d = a.astype(float64);
  const double* p = d.data<double>();
  const int64_t n = d.numel();
  Stats s;
  for (int64_t i = 0; i < n; ++i) s.mean += p[i], s.min = std::min(s.min, p[i]), s.max = std::max(s.max, p[i]);
  s.mean /= double(n);
  for (int64_t i = 0; i < n; ++i) s.var += (p[i] - s.mean) * (p[i] - s.mean);
  s.var /= double(n - 1);
  return s;
}

NDArray filled(const Initializer& init, const Shape& shape, uint64_t seed, DType dtype = float32) {
  NDArray a = NDArray::empty(shape, dtype);
  init(a, seed);
  return a;
}

/// Checks mean ~ 0 and variance ~ expected for n samples (mean within 5 standard errors, variance within 4%).
void check_moments(const NDArray& a, double expected_var) {
  Stats s = stats_of(a);
  const double n = double(a.numel());
  CHECK(std::fabs(s.mean) < 5 * std::sqrt(expected_var / n));
  CHECK(s.var == doctest::Approx(expected_var).epsilon(0.04));
}

}  // namespace

TEST_SUITE("frontend/init") {
  TEST_CASE("gains follow torch.nn.init.calculate_gain") {
    CHECK(init::gain(init::Nonlinearity::linear) == 1.0);
    CHECK(init::gain(init::Nonlinearity::sigmoid) == 1.0);
    CHECK(init::gain(init::Nonlinearity::tanh) == doctest::Approx(5.0 / 3.0));
    CHECK(init::gain(init::Nonlinearity::relu) == doctest::Approx(std::sqrt(2.0)));
    CHECK(init::gain(init::Nonlinearity::leaky_relu, 0.2) == doctest::Approx(std::sqrt(2.0 / 1.04)));
    CHECK(init::gain(init::Nonlinearity::leaky_relu, std::sqrt(5.0)) == doctest::Approx(std::sqrt(1.0 / 3.0)));
    CHECK(init::gain(init::Nonlinearity::selu) == 0.75);
    CHECK(init::parse_nonlinearity("tanh") == init::Nonlinearity::tanh);
    CHECK(contains(error_of([] { init::parse_nonlinearity("gelu"); }), "unknown nonlinearity 'gelu'"));
  }

  TEST_CASE("fans use PyTorch's [out, in, ...] layout") {
    CHECK(init::fans({512, 784}).fan_in == 784);
    CHECK(init::fans({512, 784}).fan_out == 512);
    init::Fans conv = init::fans({32, 16, 3, 3});  // [out, in, kh, kw]
    CHECK(conv.fan_in == 16 * 3 * 3);
    CHECK(conv.fan_out == 32 * 3 * 3);
    CHECK(contains(error_of([] { init::fans({5}); }), "at least 2 dims"));
    NDArray v = NDArray::empty({7});
    CHECK(contains(error_of([&] { init::kaiming_uniform()(v, 1); }), "init::kaiming_uniform"));
    // Explicit fans make 1-D weights possible.
    init::kaiming_uniform({.fan_in = 4, .fan_out = 4})(v, 1);
    for (float x : v.to_vector<float>()) CHECK(std::fabs(x) <= std::sqrt(2.0) * std::sqrt(3.0 / 4.0) + 1e-6);
  }

  TEST_CASE("constant, zeros and ones fill every dtype") {
    for (DType t : {float32, float64, int32, int64, uint8}) {
      NDArray a = filled(init::constant(3), {4, 5}, 1, t);
      CHECK(stats_of(a).min == 3);
      CHECK(stats_of(a).max == 3);
      CHECK(stats_of(filled(init::zeros(), {3}, 1, t)).max == 0);
      CHECK(stats_of(filled(init::ones(), {3}, 1, t)).min == 1);
    }
    NDArray ints = NDArray::empty({3}, int64);
    CHECK(contains(error_of([&] { init::normal()(ints, 1); }), "floating dtype"));
    CHECK(contains(error_of([] { init::uniform(1, 0); }), "low <= high"));
  }

  TEST_CASE("uniform and normal have the promised moments and bounds") {
    NDArray u = filled(init::uniform(-2, 4), {400, 250}, 11, float64);
    Stats su = stats_of(u);
    CHECK(su.min >= -2);
    CHECK(su.max < 4);
    CHECK(su.min < -1.99);
    CHECK(su.max > 3.99);
    CHECK(su.mean == doctest::Approx(1.0).epsilon(0.01));
    CHECK(su.var == doctest::Approx(36.0 / 12).epsilon(0.03));
    NDArray n = filled(init::normal(0, 0.5), {400, 250}, 12);
    check_moments(n, 0.25);
    NDArray n2 = filled(init::normal(3, 2), {200, 250}, 13, float64);
    CHECK(stats_of(n2).mean == doctest::Approx(3).epsilon(0.01));
  }

  TEST_CASE("xavier and kaiming follow PyTorch's formulas") {
    const Shape s{200, 300};  // [out, in]: fan_in 300, fan_out 200
    const double fi = 300, fo = 200;
    {
      NDArray a = filled(init::xavier_uniform({.gain = 2.0}), s, 1);
      double b = 2.0 * std::sqrt(6.0 / (fi + fo));
      Stats st = stats_of(a);
      CHECK(st.max <= b);
      CHECK(st.min >= -b);
      CHECK(st.max > 0.99 * b);
      check_moments(a, b * b / 3);
    }
    check_moments(filled(init::xavier_normal(), s, 2), 2.0 / (fi + fo));
    {
      NDArray a = filled(init::kaiming_uniform({.nonlinearity = init::Nonlinearity::relu}), s, 3);
      double b = std::sqrt(2.0) * std::sqrt(3.0 / fi);
      CHECK(stats_of(a).max <= b);
      check_moments(a, b * b / 3);
    }
    // PyTorch's nn.Linear weight: kaiming_uniform(a = sqrt(5)) -> bound 1/sqrt(fan_in).
    {
      NDArray a = filled(init::kaiming_uniform({.a = std::sqrt(5.0)}), s, 4);
      double b = 1.0 / std::sqrt(fi);
      CHECK(stats_of(a).max <= b + 1e-7);
      check_moments(a, b * b / 3);
    }
    check_moments(filled(init::kaiming_normal({.mode = init::FanMode::fan_out}), s, 5), 2.0 / fo);
    check_moments(filled(init::kaiming_normal({.nonlinearity = init::Nonlinearity::tanh}), s, 6), (25.0 / 9.0) / fi);
  }

  TEST_CASE("same seed, same values; another seed or name, other values") {
    NDArray a = filled(init::normal(), {64}, 5), b = filled(init::normal(), {64}, 5),
            c = filled(init::normal(), {64}, 6);
    CHECK(test::identical(a, b));
    CHECK_FALSE(test::identical(a, c));

    auto values = [](uint64_t seed) {
      Graph g;
      Tensor v = g.variable("v", {32}, init::uniform());
      Tensor w = g.variable("w", {32}, init::uniform());
      Session s(g, {.threads = 1, .seed = seed});
      return std::pair{s.get(v), s.get(w)};
    };
    auto [v1, w1] = values(1);
    auto [v1b, w1b] = values(1);
    auto [v2, w2] = values(2);
    CHECK(test::identical(v1, v1b));
    CHECK(test::identical(w1, w1b));
    CHECK_FALSE(test::identical(v1, v2));
    CHECK_FALSE(test::identical(v1, w1));  // streams are keyed by the variable's name
  }
}
