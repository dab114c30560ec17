// PyTorch's activations: values against their formulas, gradients against
// central differences (float64) and, at the kinks, against PyTorch 2's.

#include <cmath>
#include <functional>
#include <set>

#include "tests/util.hpp"

#include "frontend/activations.hpp"
#include "ops/check.hpp"

using namespace loom;
using loom::test::contains;
using loom::test::error_of;

namespace {

using Fn = std::function<Tensor(const Tensor&)>;
using Ref = std::function<double(double)>;

double sigmoid_of(double v) { return 1 / (1 + std::exp(-v)); }
double softplus_of(double v) { return v > 20 ? v : std::log1p(std::exp(v)); }

struct Case {
  const char* name;
  Fn f;
  Ref value;
  std::vector<std::pair<double, double>> kinks;  // PyTorch 2's gradient at these points (float64)
};

std::vector<Case> cases() {
  const double selu_a = 1.6732632423543772848170429916717, selu_s = 1.0507009873554804934193349852946;
  return {
      {"leaky_relu",
       [](const Tensor& x) { return nn::leaky_relu(x, 0.2); },
       [](double v) { return v > 0 ? v : 0.2 * v; },
       {{0.0, 0.2}}},
      {"elu",
       [](const Tensor& x) { return nn::elu(x, 1.5); },
       [](double v) { return v > 0 ? v : 1.5 * std::expm1(v); },
       {{0.0, 1.5}}},
      {"selu",
       nn::selu,
       [=](double v) { return selu_s * (v > 0 ? v : selu_a * std::expm1(v)); },
       {{0.0, selu_s * selu_a}}},
      {"silu", nn::silu, [](double v) { return v * sigmoid_of(v); }, {}},
      {"mish", nn::mish, [](double v) { return v * std::tanh(softplus_of(v)); }, {}},
      {"softplus",
       [](const Tensor& x) { return nn::softplus(x, 2.0, 10.0); },
       [](double v) { return 2 * v > 10 ? v : std::log1p(std::exp(2 * v)) / 2; },
       {}},
      {"hardtanh",
       [](const Tensor& x) { return nn::hardtanh(x, -1, 1); },
       [](double v) { return std::clamp(v, -1.0, 1.0); },
       {{-1.0, 0.0}, {1.0, 0.0}}},
      {"relu6", nn::relu6, [](double v) { return std::clamp(v, 0.0, 6.0); }, {{0.0, 0.0}, {6.0, 0.0}}},
      {"hardsigmoid",
       nn::hardsigmoid,
       [](double v) { return std::clamp(v + 3, 0.0, 6.0) / 6; },
       {{-3.0, 0.0}, {3.0, 0.0}}},
      {"hardswish",
       nn::hardswish,
       [](double v) { return v * std::clamp(v + 3, 0.0, 6.0) / 6; },
       {{-3.0, 0.0}, {3.0, 1.0}}},
      {"celu",
       [](const Tensor& x) { return nn::celu(x, 1.5); },
       [](double v) { return v > 0 ? v : 1.5 * std::expm1(v / 1.5); },
       {{0.0, 1.0}}},
      {"logsigmoid", nn::logsigmoid, [](double v) { return -softplus_of(-v); }, {}},
      {"softsign", nn::softsign, [](double v) { return v / (1 + std::fabs(v)); }, {{0.0, 1.0}}},
      {"softshrink",
       [](const Tensor& x) { return nn::softshrink(x, 0.6); },
       [](double v) { return v > 0.6    ? v - 0.6
                             : v < -0.6 ? v + 0.6
                                        : 0.0; },
       {{0.6, 0.0}, {-0.6, 0.0}}},
      {"hardshrink",
       [](const Tensor& x) { return nn::hardshrink(x, 0.6); },
       [](double v) { return std::fabs(v) > 0.6 ? v : 0.0; },
       {{0.6, 0.0}, {-0.6, 0.0}}},
      {"tanhshrink", nn::tanhshrink, [](double v) { return v - std::tanh(v); }, {}},
      {"threshold",
       [](const Tensor& x) { return nn::threshold(x, 0.4, -2.0); },
       [](double v) { return v > 0.4 ? v : -2.0; },
       {{0.4, 0.0}}},
      {"prelu",
       [](const Tensor& x) { return nn::prelu(x, x.graph().constant(NDArray::from<double>({0.25}, {1}))); },
       [](double v) { return v > 0 ? v : 0.25 * v; },
       {{0.0, 0.25}}},
  };
}

}  // namespace

TEST_SUITE("frontend/activations") {
  TEST_CASE("activations: PyTorch's values, gradients by central differences, PyTorch's gradient at the kinks") {
    const std::vector<double> xs{-30, -6, -2.5, -1.2, -0.5, 0.3, 0.8, 2.9, 5.5, 7, 25};
    for (const Case& c : cases()) {
      CAPTURE(std::string(c.name));
      Graph g;
      Tensor x = g.placeholder("x", {-1}, float64);
      Tensor y = c.f(x);
      Tensor dy = gradients(sum(y), {x})[0];
      Session s(g, {.threads = 1});
      const auto v = s.run1(y, {{x, NDArray::from(xs)}}).to_vector<double>();
      for (size_t i = 0; i < xs.size(); ++i) CHECK(v[i] == doctest::Approx(c.value(xs[i])).epsilon(1e-14));
      // Away from the kinks: central differences (no point within 1e-3 of one).
      CheckResult r = check_gradient_fn([&](const std::vector<Tensor>& in) { return std::vector<Tensor>{c.f(in[0])}; },
                                        {NDArray::from(xs)}, {0});
      CHECK_MESSAGE(r.ok, r.detail);
      for (const auto& kink : c.kinks) {
        const double at = kink.first, want = kink.second;  // not a structured binding: clang 14's CAPTURE
        CAPTURE(at);
        CHECK(s.run1(dy, {{x, NDArray::from<double>({at})}}).item() == doctest::Approx(want).epsilon(1e-14));
      }
      // No NaN from an unused branch at large inputs (elu's exp, softplus's).
      const auto d = s.run1(dy, {{x, NDArray::from<double>({-800, 800})}}).to_vector<double>();
      CHECK(std::isfinite(d[0]));
      CHECK(std::isfinite(d[1]));
    }
  }

  TEST_CASE("activation modules: PyTorch's names and descriptions; mistakes are errors") {
    Graph g;
    Tensor x = g.placeholder("x", {2, 3});
    nn::Sequential net{nn::LeakyReLU(0.1), nn::Hardtanh(-2, 2), nn::Softmax(1)};
    CHECK(net.str().find("LeakyReLU(negative_slope=0.1)") != std::string::npos);
    CHECK(net.str().find("Hardtanh(min_val=-2, max_val=2)") != std::string::npos);
    Tensor y = net(x);
    Session s(g, {.threads = 1});
    const NDArray out = s.run1(y, {{x, NDArray::from<float>({-10, 1, 3, 0, 0, 0}).reshape({2, 3})}});
    // Row 0: leaky -1, 1, 3 -> hardtanh -1, 1, 2 -> softmax.
    const double z = std::exp(-1.0) + std::exp(1.0) + std::exp(2.0);
    CHECK(out.at({0, 2}) == doctest::Approx(std::exp(2.0) / z).epsilon(1e-6));
    CHECK(out.at({1, 0}) == doctest::Approx(1.0 / 3).epsilon(1e-6));
    CHECK(nn::ELU(0.5).describe() == "ELU(alpha=0.5)");
    CHECK(nn::LogSoftmax(-1).describe() == "LogSoftmax(dim=-1)");
    Tensor ints = g.placeholder("ids", {3}, int64);
    CHECK(contains(error_of([&] { nn::silu(ints); }), "silu: expected a floating input, got 'ids' int64"));
    CHECK(contains(error_of([] { nn::Hardtanh(1, -1); }), "Hardtanh: min_val (1) must not exceed max_val (-1)"));
    CHECK(contains(error_of([] { nn::Softplus(0.0); }), "Softplus: beta must be positive"));
  }

  TEST_CASE("RReLU: random slopes in [lower, upper] in training, their mean in eval; Softmax2d over the channels") {
    Graph g;
    Tensor x = g.placeholder("x", {2, 3, 4, 5}, float64);
    nn::RReLU r(0.1, 0.3);
    Tensor y_train = r(x);
    r.eval();
    Tensor y_eval = r(x);
    Tensor dx = gradients(sum(y_train), {x})[0];
    Tensor sm = nn::Softmax2d()(x), sm3 = nn::Softmax2d()(g.placeholder("x3", {3, 4, 5}, float64));
    CHECK(r.describe() == "RReLU(lower=0.1, upper=0.3)");
    Session s(g, {.seed = 3});
    std::vector<double> xs;
    for (int i = 0; i < 120; ++i) xs.push_back(double(i % 7) - 3.5);
    const NDArray xv = NDArray::from(xs, {2, 3, 4, 5});
    const auto out = s.run({y_train, y_eval, dx, sm, loom::softmax(x, 1)}, {{x, xv}});
    const auto yt = out[0].to_vector<double>(), ye = out[1].to_vector<double>(), d = out[2].to_vector<double>();
    std::set<double> slopes;
    for (size_t i = 0; i < xs.size(); ++i) {
      CAPTURE(i);
      if (xs[i] >= 0) {
        CHECK(yt[i] == xs[i]);
        CHECK(ye[i] == xs[i]);
        CHECK(d[i] == 1.0);
        continue;
      }
      const double slope = yt[i] / xs[i];
      CHECK(slope >= 0.1);
      CHECK(slope <= 0.3);
      CHECK(d[i] == doctest::Approx(slope).epsilon(1e-12));  // the gradient uses the forward's draw
      CHECK(ye[i] == doctest::Approx(0.2 * xs[i]).epsilon(1e-15));
      slopes.insert(slope);
    }
    CHECK(slopes.size() > 30);  // one draw per element
    CHECK(out[3].to_vector<double>() == out[4].to_vector<double>());
    CHECK(sm3.shape() == Shape{3, 4, 5});
    CHECK(contains(error_of([] { nn::RReLU(0.5, 0.2); }), "RReLU: lower 0.5 must be at most upper 0.2"));
    CHECK(contains(error_of([&] {
                     nn::Softmax2d()(g.placeholder("flat", {2, 3}, float64));
                   }),
                   "Softmax2d: expected [N, C, H, W] or [C, H, W], got [2,3]"));
  }

  TEST_CASE("GLU, Softmin and PReLU as PyTorch's; PReLU learns one slope per channel") {
    Graph g;
    Tensor x = g.placeholder("x", {2, 4, 3}, float64);
    Tensor glu = nn::GLU(1)(x), softmin = nn::Softmin(-1)(x);
    CHECK(glu.shape() == Shape{2, 2, 3});
    nn::PReLU prelu(4, 0.1, float64);
    Tensor p = prelu(x);
    CHECK(prelu.describe() == "PReLU(num_parameters=4)");
    CHECK(prelu.state_dict()[0].first == "weight");
    Session s(g, {.threads = 1});
    const NDArray w = NDArray::from<double>({0.1, -0.5, 2.0, 0.3}, {4});
    s.set(prelu.parameters()[0], w);
    const NDArray xv = test::rand({2, 4, 3}, 5, float64, -2, 2);
    const auto r = s.run({glu, softmin, p}, {{x, xv}});
    for (int64_t n = 0; n < 2; ++n)
      for (int64_t c = 0; c < 4; ++c)
        for (int64_t t = 0; t < 3; ++t) {
          const double v = xv.at({n, c, t});
          CHECK(r[2].at({n, c, t}) == doctest::Approx(v > 0 ? v : w.at({c}) * v).epsilon(1e-15));
          if (c < 2)  // a * sigmoid(b), the halves of dim 1
            CHECK(r[0].at({n, c, t}) == doctest::Approx(v / (1 + std::exp(-xv.at({n, c + 2, t})))).epsilon(1e-14));
          double z = 0;
          for (int64_t u = 0; u < 3; ++u) z += std::exp(-xv.at({n, c, u}));
          CHECK(r[1].at({n, c, t}) == doctest::Approx(std::exp(-v) / z).epsilon(1e-14));
        }
    CheckResult gr = check_gradient_fn(
        [](const std::vector<Tensor>& in) {
          return std::vector<Tensor>{nn::glu(in[0], 1), nn::prelu(in[0], in[1])};
        },
        {xv, w}, {0, 1});
    CHECK_MESSAGE(gr.ok, gr.detail);
    CHECK(contains(error_of([&] { nn::glu(x, 2); }), "glu: dim 2 of input [2,4,3] must have an even, known size"));
    CHECK(contains(error_of([&] { nn::prelu(x, g.placeholder("w3", {3}, float64)); }),
                   "prelu: weight [3] must match the channels (dim 1)"));
    CHECK(contains(error_of([] { nn::PReLU(0); }), "PReLU: num_parameters must be positive"));
  }
}
