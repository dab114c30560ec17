// sparse_softmax_cross_entropy beyond the registry sweep: wide rows against a
// float64 host computation, the gradient of nn::cross_entropy, infinities and
// NaN, labels out of range, and second derivatives.

#include <cmath>

#include "tests/util.hpp"

#include "frontend/nn.hpp"
#include "ops/check.hpp"

using namespace loom;
using loom::test::contains;
using loom::test::error_of;
using loom::test::rand;

namespace {

/// Host mean cross-entropy and its gradient for logits [N, C] (float64).
std::pair<double, std::vector<double>> host_ce(const NDArray& logits, const std::vector<int64_t>& labels) {
  NDArray x = logits.astype(float64);
  const int64_t N = x.shape()[0], C = x.shape()[1];
  const double* p = x.data<double>();
  double loss = 0;
  std::vector<double> grad(size_t(N * C));
  for (int64_t i = 0; i < N; ++i) {
    double m = -INFINITY, s = 0;
    for (int64_t j = 0; j < C; ++j) m = std::max(m, p[i * C + j]);
    for (int64_t j = 0; j < C; ++j) s += std::exp(p[i * C + j] - m);
    const double lse = m + std::log(s);
    loss += (lse - p[i * C + labels[size_t(i)]]) / double(N);
    for (int64_t j = 0; j < C; ++j)
      grad[size_t(i * C + j)] = (std::exp(p[i * C + j] - lse) - (j == labels[size_t(i)] ? 1.0 : 0.0)) / double(N);
  }
  return {loss, grad};
}

}  // namespace

TEST_SUITE("ops/loss") {
  TEST_CASE("cross-entropy over a wide vocabulary matches float64, value and gradient") {
    const int64_t N = 7, C = 5003;  // C not a multiple of the kernel's 8 lanes
    Graph g;
    Tensor x = g.placeholder("x", {N, C});
    Tensor y = g.placeholder("y", {N}, int64);
    Tensor loss = nn::cross_entropy(x, y);
    Tensor dx = gradients(loss, {x})[0];
    Session s(g, {.threads = 2});
    NDArray xv = rand({N, C}, 3, float32, -12, 12);
    std::vector<int64_t> labels{0, 5002, 17, 4096, 1, 2500, 5001};
    auto out = s.run({loss, dx}, {{x, xv}, {y, NDArray::from<int64_t>(labels)}});
    auto [want, want_grad] = host_ce(xv, labels);
    CHECK(out[0].item() == doctest::Approx(want).epsilon(1e-5));
    std::vector<double> got = out[1].astype(float64).to_vector<double>();
    double worst = 0;
    for (size_t k = 0; k < got.size(); ++k) worst = std::max(worst, std::fabs(got[k] - want_grad[k]));
    CHECK(worst < 1e-6);
  }

  TEST_CASE("labels out of range raise loom::Error naming the op and the label; the session stays usable") {
    Graph g;
    Tensor x = g.placeholder("x", {3, 4});
    Tensor y = g.placeholder("y", {3}, int32);
    Tensor loss = nn::cross_entropy(x, y);
    Tensor dx = gradients(loss, {x})[0];
    Session s(g, {.threads = 1});
    NDArray xv = rand({3, 4}, 1);
    std::string e = error_of([&] { s.run({loss}, {{x, xv}, {y, NDArray::from<int32_t>({0, 4, 1})}}); });
    CHECK(contains(e, "sparse_softmax_cross_entropy"));
    CHECK(contains(e, "label 4 out of range [0, 4)"));
    CHECK(contains(error_of([&] { s.run({dx}, {{x, xv}, {y, NDArray::from<int32_t>({0, -1, 1})}}); }),
                   "label -1 out of range"));
    CHECK(std::isfinite(s.run({loss}, {{x, xv}, {y, NDArray::from<int32_t>({0, 3, 1})}})[0].item()));
    Tensor fy = g.placeholder("fy", {3});
    CHECK(contains(error_of([&] { sparse_softmax_cross_entropy(x, fy); }), "labels must be int32, int64 or uint8"));
    Tensor y2 = g.placeholder("y2", {2}, int64);
    CHECK(contains(error_of([&] { sparse_softmax_cross_entropy(x, y2); }), "[3,4] logits for [2] labels"));
  }

  TEST_CASE("infinities and NaN: -inf logits are impossible classes, +inf and NaN propagate") {
    Graph g;
    Tensor x = g.placeholder("x", {4, 3});
    Tensor y = g.placeholder("y", {4}, int64);
    auto r = sparse_softmax_cross_entropy(x, y);
    Tensor dx = gradients(sum(r[0]), {x})[0];
    Session s(g, {.threads = 1});
    const float inf = INFINITY, nan = NAN;
    NDArray xv = NDArray::from<float>({0, -inf, 0, 1, 2, -inf, inf, 0, 0, nan, 0, 0}, {4, 3});
    auto out = s.run({r[0], r[1], dx}, {{x, xv}, {y, NDArray::from<int64_t>({0, 1, 1, 1})}});
    std::vector<float> loss = out[0].to_vector<float>(), lse = out[1].to_vector<float>(), d = out[2].to_vector<float>();
    CHECK(loss[0] == doctest::Approx(std::log(2.0)));  // softmax [1/2, 0, 1/2]
    CHECK(lse[0] == doctest::Approx(std::log(2.0)));
    CHECK(d[0] == doctest::Approx(-0.5));
    CHECK(d[1] == 0.0f);
    CHECK(d[2] == doctest::Approx(0.5));
    CHECK(loss[1] == doctest::Approx(std::log(std::exp(1.0) + std::exp(2.0)) - 2.0));
    CHECK(lse[1] == doctest::Approx(std::log(std::exp(1.0) + std::exp(2.0))));
    CHECK(std::isinf(loss[2]));  // the label's logit is finite, another is +inf
    CHECK((std::isinf(lse[2]) && lse[2] > 0));
    CHECK(std::isnan(d[6]));  // no finite lse, no softmax (as PyTorch)
    CHECK(std::isnan(loss[3]));
    CHECK(std::isnan(lse[3]));
    CHECK(std::isnan(d[10]));
  }

  TEST_CASE("the training step keeps no softmax: one [N, C] buffer, the gradient written over the logits") {
    // A language model's output layer: logits [N, C] from a GEMM, the loss,
    // and the weight's gradient. The forward writes only [N] arrays and the
    // backward overwrites the logits, so the arena holds one [N, C] array
    // (a kept softmax would make two).
    const int64_t N = 64, K = 8, C = 1000;
    Graph g;
    Tensor h = g.placeholder("h", {N, K});
    Tensor y = g.placeholder("y", {N}, int64);
    Tensor w = g.variable("w", {K, C}, init::normal(0, 0.1));
    Tensor loss = nn::cross_entropy(matmul(h, w), y);
    Tensor dw = gradients(loss, {w})[0];
    Session s(g, {.threads = 1});
    s.initialize();
    std::vector<int64_t> labels(static_cast<size_t>(N));
    for (int64_t i = 0; i < N; ++i) labels[size_t(i)] = (i * 37) % C;
    const Feeds feeds{{h, rand({N, K}, 5)}, {y, NDArray::from<int64_t>(labels)}};
    auto out = s.run({loss, dw}, feeds);
    CHECK(std::isfinite(out[0].item()));
    const size_t logits_bytes = size_t(N * C) * sizeof(float);
    const PlanInfo info = s.plan_info({loss, dw}, feeds);
    CHECK(info.arena_bytes >= logits_bytes);
    CHECK(info.arena_bytes < logits_bytes + logits_bytes / 2);
  }

  TEST_CASE("second derivatives: the gradient op is differentiable") {
    // d/dx of sum((dCE/dx)^2) through the gradient op's composite gradient.
    NDArray x = rand({3, 5}, 4, float64, -2, 2);
    CheckResult r = check_gradient_fn(
        [](const std::vector<Tensor>& in) {
          Tensor labels = in[0].graph().constant(NDArray::from<int64_t>({4, 0, 2}));
          Tensor loss = mean(sparse_softmax_cross_entropy(in[0], labels)[0]);
          Tensor d = gradients(loss, {in[0]})[0];
          return std::vector<Tensor>{d * d};
        },
        {x}, {0});
    CHECK_MESSAGE(r.ok, r.detail);
  }
}
