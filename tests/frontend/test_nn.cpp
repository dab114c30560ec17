// nn modules: lazy variables named by module path, forward values against
// host computations, training/eval behaviour (dropout, BatchNorm running
// statistics), losses, and the errors users see.

#include <cmath>

// util.hpp (and core/philox.hpp in it) before ops/ops.hpp: philox must see the C math functions.
#include "tests/util.hpp"

#include "frontend/conv.hpp"
#include "frontend/nn.hpp"
#include "frontend/optim.hpp"
#include "ops/check.hpp"

using namespace loom;
using loom::test::contains;
using loom::test::error_of;
using loom::test::rand;

namespace {

std::vector<std::string> names_of(const std::vector<std::pair<std::string, Tensor>>& named) {
  std::vector<std::string> out;
  for (auto& [n, t] : named) out.push_back(n);
  return out;
}

/// Host x @ w + b for x [R, in] (float64 math).
/// x @ w^T + b with w in PyTorch's [out, in] layout, in float64.
NDArray affine(const NDArray& x, const NDArray& w, const NDArray& b) {
  const int64_t R = x.shape()[0], I = x.shape()[1], O = w.shape()[0];
  NDArray X = x.astype(float64), W = w.astype(float64), B = b.defined() ? b.astype(float64) : NDArray();
  NDArray y = NDArray::zeros({R, O}, float64);
  double* py = y.data<double>();
  for (int64_t r = 0; r < R; ++r)
    for (int64_t o = 0; o < O; ++o) {
      double acc = B.defined() ? B.data<double>()[o] : 0.0;
      for (int64_t i = 0; i < I; ++i) acc += X.data<double>()[r * I + i] * W.data<double>()[o * I + i];
      py[r * O + o] = acc;
    }
  return y;
}

/// The custom module of nn.hpp's documentation.
class Gated : public nn::Module {
 public:
  Gated() : fc_(register_module("fc", nn::Linear(4, 4))) {}
  std::string type_name() const override { return "Gated"; }
  nn::Linear& fc() { return fc_; }

 protected:
  Tensor forward(const Tensor& x) override {
    Tensor gate = parameter(x, "gate", {4}, init::zeros());
    return x + sigmoid(gate) * relu(fc_(x));
  }

 private:
  nn::Linear& fc_;
};

}  // namespace

TEST_SUITE("frontend/nn") {
  TEST_CASE("a custom module registers children and creates variables") {
    Graph g;
    nn::Sequential model{Gated(), nn::Linear(4, 2)};
    Tensor x = g.placeholder("x", {-1, 4});
    Tensor y = model(x);
    CHECK(names_of(model.named_parameters()) ==
          std::vector<std::string>{"0/gate", "0/fc/weight", "0/fc/bias", "1/weight", "1/bias"});
    Gated& gated = static_cast<Gated&>(model[0]);
    Session s(g, {.threads = 1});
    NDArray a = rand({3, 4}, 6);
    NDArray h = affine(a, s.get(gated.fc().weight()), s.get(gated.fc().bias()));
    NDArray ad = a.astype(float64);
    for (int64_t i = 0; i < h.numel(); ++i)
      h.data<double>()[i] = ad.data<double>()[i] + 0.5 * std::max(0.0, h.data<double>()[i]);  // sigmoid(0) = 0.5
    auto& head = static_cast<nn::Linear&>(model[1]);
    NDArray expect = affine(h, s.get(head.weight()), s.get(head.bias()));
    CHECK(test::allclose(s.run1(y, {{x, a}}), expect, 1e-5, 1e-5));
  }

  TEST_CASE("Sequential names variables by module path, lazily, once") {
    Graph g;
    nn::Sequential model{nn::Flatten(), nn::Linear(12, 8), nn::ReLU(), nn::Linear(8, 3, {.bias = false})};
    CHECK(model.parameters().empty());
    CHECK(model.size() == 4);
    Tensor x = g.placeholder("x", {-1, 3, 4});
    Tensor y = model(x);
    CHECK(y.shape() == Shape{-1, 3});
    CHECK(names_of(model.named_parameters()) == std::vector<std::string>{"1/weight", "1/bias", "3/weight"});
    for (auto& [n, t] : model.named_parameters()) CHECK(t.name() == n);
    CHECK(model.num_parameters() == 12 * 8 + 8 + 8 * 3);
    const size_t vars = g.variables().size();
    Tensor y2 = model(x);  // a second build shares the variables
    CHECK(g.variables().size() == vars);
    CHECK_FALSE(y2.is(y));
    CHECK(model.str() ==
          "Sequential\n  (0): Flatten\n  (1): Linear(12, 8, bias)\n  (2): ReLU\n"
          "  (3): Linear(8, 3, no bias)\n");
    // Inside a user scope the prefix applies to everything.
    nn::Linear other(3, 2);
    {
      auto s = g.scope("head");
      other(y);
    }
    CHECK(other.named_parameters()[0].second.name() == "head/weight");
    CHECK(other.named_parameters()[0].first == "weight");
  }

  TEST_CASE("Linear computes x @ W^T + b with W [out, in] (PyTorch's layout), also for N-D inputs") {
    Graph g;
    nn::Linear lin(4, 5);
    Tensor x2 = g.placeholder("x2", {-1, 4});
    Tensor x3 = g.placeholder("x3", {2, 3, 4});
    Tensor y2 = lin(x2), y3 = lin(x3);
    CHECK(y3.shape() == Shape{2, 3, 5});
    Session s(g, {.threads = 1, .seed = 3});
    NDArray a = rand({6, 4}, 1);
    NDArray w = s.get(lin.weight()), b = s.get(lin.bias());
    CHECK(w.shape() == Shape{5, 4});
    // PyTorch's default init: |w|, |b| <= 1/sqrt(in).
    for (float v : w.to_vector<float>()) CHECK(std::fabs(v) <= 0.5f);
    auto out = s.run({y2, y3}, {{x2, a}, {x3, a.reshape({2, 3, 4})}});
    NDArray expect = affine(a, w, b);
    CHECK(test::allclose(out[0], expect, 1e-5, 1e-5));
    CHECK(test::allclose(out[1].reshape({6, 5}), expect, 1e-5, 1e-5));
  }

  TEST_CASE("module errors name the module and what was expected") {
    Graph g;
    nn::Sequential model{nn::Linear(4, 5), nn::Linear(6, 2)};
    Tensor x = g.placeholder("x", {-1, 4});
    std::string e = error_of([&] { model(x); });
    CHECK(contains(e, "Linear '1'"));
    CHECK(contains(e, "expected input [..., 6], got [?,5]"));
    nn::Linear lin(4, 2);
    lin(x);
    Graph other;
    Tensor z = other.placeholder("z", {-1, 4});
    CHECK(contains(error_of([&] { lin(z); }), "built in another graph"));
    CHECK(contains(error_of([] { nn::Linear(0, 3); }), "features must be positive"));
    CHECK(contains(error_of([] { nn::Dropout(1.01); }), "p must be in [0, 1], got 1.01"));
    Tensor xi = g.placeholder("xi", {-1, 4}, int32);
    CHECK(contains(error_of([&] { nn::Linear(4, 2)(xi); }), "expected float32 input, got int32"));
    nn::Flatten flat;
    Tensor dyn = g.placeholder("dyn", {2, -1, 3});
    CHECK(contains(error_of([&] { flat(dyn); }), "trailing dims of [2,?,3] must be known"));
    CHECK(
        contains(error_of([&] { flat(g.placeholder("v", {5})); }), "expected [N, d1, ...] (at least 2 dims), got [5]"));
  }

  TEST_CASE("Flatten(start_dim, end_dim) and Unflatten as PyTorch's") {
    Graph g;
    Tensor x = g.placeholder("x", {-1, 2, 3, 4, 5});
    CHECK(nn::Flatten()(x).shape() == Shape{-1, 120});
    CHECK(nn::Flatten(2, 3)(x).shape() == Shape{-1, 2, 12, 5});
    CHECK(nn::Flatten(-3, -2)(x).shape() == Shape{-1, 2, 12, 5});
    CHECK(nn::Flatten(0, -1)(g.placeholder("k", {2, 3})).shape() == Shape{6});
    CHECK(nn::Flatten(2, 3).describe() == "Flatten(start_dim=2, end_dim=3)");
    Tensor flat = g.placeholder("flat", {-1, 512});
    nn::Unflatten unflatten(1, {32, 4, -1});
    Tensor img = unflatten(flat);
    CHECK(img.shape() == Shape{-1, 32, 4, 4});
    CHECK(unflatten.describe() == "Unflatten(dim=1, sizes=[32,4,-1])");
    // Round trip, values in place.
    Session s(g, {.threads = 1});
    const NDArray v = test::rand({2, 512}, 3);
    CHECK(test::allclose(s.run1(nn::Flatten()(img), {{flat, v}}), v, 0, 0));
    CHECK(contains(error_of([&] { nn::Unflatten(1, {3, 5})(flat); }), "dim 1 of [?,512] cannot be split into [3,5]"));
    CHECK(contains(error_of([&] { nn::Unflatten(1, {-1, -1}); }), "at most one -1"));
    CHECK(contains(error_of([&] { nn::Flatten(3, 1)(x); }), "dims 3 to 1 do not fit input"));
  }

  TEST_CASE("Residual adds its input; shared modules are listed once") {
    Graph g;
    auto shared = std::make_shared<nn::Linear>(3, 3);
    nn::Sequential model{nn::Residual(nn::Sequential{nn::Linear(3, 3), nn::Tanh()}), shared, shared};
    Tensor x = g.placeholder("x", {-1, 3});
    Tensor y = model(x);
    auto names = names_of(model.named_parameters());
    CHECK(names == std::vector<std::string>{"0/fn/0/weight", "0/fn/0/bias", "1/weight", "1/bias"});
    Session s(g, {.threads = 1});
    NDArray a = rand({2, 3}, 2);
    // Recompute on the host: r = tanh(a W0 + b0) + a; y = (r W1 + b1) W1 + b1.
    auto& inner = static_cast<nn::Sequential&>(*model.children()[0].second->children()[0].second);
    auto& l0 = static_cast<nn::Linear&>(inner[0]);
    NDArray h = affine(a, s.get(l0.weight()), s.get(l0.bias()));
    double* ph = h.data<double>();
    NDArray ad = a.astype(float64);
    for (int64_t i = 0; i < h.numel(); ++i) ph[i] = std::tanh(ph[i]) + ad.data<double>()[i];
    NDArray w1 = s.get(shared->weight()), b1 = s.get(shared->bias());
    NDArray expect = affine(affine(h, w1, b1), w1, b1);
    CHECK(test::allclose(s.run1(y, {{x, a}}), expect, 1e-5, 1e-5));
    nn::Residual bad(nn::Linear(3, 4));
    CHECK(contains(error_of([&] { bad(x); }), "a residual needs the same shape"));
  }

  TEST_CASE("train() and eval() recurse; Dropout drops only in training") {
    Graph g;
    nn::Sequential model{nn::Dropout(0.25), nn::Sequential{nn::Dropout(0.25)}};
    model.eval();
    auto& inner = static_cast<nn::Sequential&>(model[1]);
    CHECK_FALSE(inner[0].training());
    model.train();
    CHECK(inner[0].training());
    nn::Dropout drop(0.25);
    Tensor x = g.placeholder("x", {-1, 100});
    Tensor yt = drop(x);
    drop.eval();
    Tensor ye = drop(x);
    Session s(g, {.threads = 1, .seed = 9});
    NDArray ones = NDArray::full({200, 100}, 1.0);
    auto out = s.run({yt, ye}, {{x, ones}});
    int64_t zeros = 0;
    for (float v : out[0].to_vector<float>()) {
      CHECK((v == 0.0f || std::fabs(v - 1.0f / 0.75f) < 1e-6));
      zeros += v == 0.0f;
    }
    CHECK(double(zeros) / 20000.0 == doctest::Approx(0.25).epsilon(0.08));
    CHECK(test::identical(out[1], ones));
  }

  TEST_CASE("BatchNorm1d: batch statistics in training, running statistics in eval") {
    Graph g;
    nn::BatchNorm1d bn(3, {.momentum = 0.1});
    Tensor x = g.placeholder("x", {-1, 3});
    bn.train();
    Tensor yt = bn(x);
    CHECK(bn.updates().size() == 1);  // one group: running mean, variance, batch count
    bn.eval();
    Tensor ye = bn(x);
    CHECK(bn.updates().size() == 1);  // eval builds record no updates
    CHECK(names_of(bn.named_parameters()) == std::vector<std::string>{"weight", "bias"});
    CHECK(names_of(bn.named_buffers()) ==
          std::vector<std::string>{"running_mean", "running_var", "num_batches_tracked"});
    // PyTorch's state_dict: parameters, then buffers.
    CHECK(names_of(bn.state_dict()) ==
          std::vector<std::string>{"weight", "bias", "running_mean", "running_var", "num_batches_tracked"});
    Session s(g, {.threads = 1});
    NDArray a = rand({8, 3}, 4, float32, -2, 3);
    NDArray ad = a.astype(float64);
    // Host statistics per feature.
    std::vector<double> mu(3, 0), var(3, 0);
    for (int c = 0; c < 3; ++c) {
      for (int r = 0; r < 8; ++r) mu[size_t(c)] += ad.at({r, c}) / 8;
      for (int r = 0; r < 8; ++r) var[size_t(c)] += std::pow(ad.at({r, c}) - mu[size_t(c)], 2) / 8;
    }
    // Training output: normalized by batch statistics; running stats untouched without the updates.
    NDArray out = s.run1(yt, {{x, a}});
    for (int c = 0; c < 3; ++c)
      for (int r = 0; r < 8; ++r)
        CHECK(out.at({r, c}) ==
              doctest::Approx((ad.at({r, c}) - mu[size_t(c)]) / std::sqrt(var[size_t(c)] + 1e-5)).epsilon(1e-4));
    CHECK(s.get(bn.running_mean()).at({0}) == 0.0);
    // Running the updates: running = 0.9 running + 0.1 batch (unbiased variance).
    s.run({}, {{x, a}}, bn.updates());
    NDArray rm = s.get(bn.running_mean()), rv = s.get(bn.running_var());
    for (int c = 0; c < 3; ++c) {
      CHECK(rm.at({c}) == doctest::Approx(0.1 * mu[size_t(c)]).epsilon(1e-5));
      CHECK(rv.at({c}) == doctest::Approx(0.9 + 0.1 * var[size_t(c)] * 8.0 / 7.0).epsilon(1e-5));
    }
    NDArray batches = s.get(bn.state_dict().back().second);
    CHECK(batches.dtype() == int64);
    CHECK(batches.item() == 1);
    // Eval output uses the running statistics.
    NDArray oe = s.run1(ye, {{x, a}});
    for (int c = 0; c < 3; ++c)
      CHECK(oe.at({1, c}) ==
            doctest::Approx((ad.at({1, c}) - rm.at({c})) / std::sqrt(rv.at({c}) + 1e-5)).epsilon(1e-4));
    // An empty batch (a shard's last batch, say): an empty output, the running statistics as they were and the
    // batch counted, as PyTorch.
    auto out0 = s.run({yt}, {{x, NDArray::zeros({0, 3})}}, bn.updates());
    CHECK(out0[0].shape() == Shape{0, 3});
    CHECK(s.get(bn.running_mean()).to_vector<float>() == rm.to_vector<float>());
    CHECK(s.get(bn.running_var()).to_vector<float>() == rv.to_vector<float>());
    CHECK(s.get(bn.state_dict().back().second).item() == 2);
    // One value per feature on the fed shape (the batch dim is dynamic): refused, naming the node, and nothing
    // changes; PyTorch: "Expected more than 1 value per channel when training".
    const std::string e = error_of([&] { s.run({yt}, {{x, NDArray::full({1, 3}, 1.0)}}, bn.updates()); });
    CHECK(contains(e, "batch_norm '"));
    CHECK(contains(e, "expected more than one value per channel (batch statistics), got input [1,3]"));
    CHECK(s.get(bn.running_var()).to_vector<float>() == rv.to_vector<float>());
    CHECK(s.get(bn.state_dict().back().second).item() == 2);
  }

  TEST_CASE("BatchNorm called twice in training (a GAN's real and fake batches): both updates, in order, as PyTorch") {
    Graph g;
    nn::BatchNorm1d bn(1);
    Tensor a = g.placeholder("a", {2, 1}), b = g.placeholder("b", {2, 1});
    Tensor ya = bn(a), yb = bn(b);  // in this order (the operands of + have none)
    Tensor loss = sum(ya) + sum(yb);
    optim::SGD opt(bn, {.lr = 0.0});
    Tensor step = opt.minimize(loss);
    CHECK(bn.updates().size() == 1);  // the second call's update replaces the first's
    Session s(g, {.threads = 1});
    s.run({}, {{a, NDArray::from<float>({1, 3}, {2, 1})}, {b, NDArray::from<float>({10, 14}, {2, 1})}}, {step});
    // torch: bn(x1); bn(x2) -> running_mean 1.38, running_var 1.79, num_batches_tracked 2
    CHECK(s.get(bn.running_mean()).item() == doctest::Approx(1.38).epsilon(1e-6));
    CHECK(s.get(bn.running_var()).item() == doctest::Approx(1.79).epsilon(1e-6));
    CHECK(s.get(bn.named_buffers()[2].second).item() == 2);
  }

  TEST_CASE("BatchNorm momentum=None averages every batch's statistics; track_running_stats=false keeps none") {
    Graph g;
    nn::BatchNorm1d bn(1, {.momentum = std::nullopt});
    Tensor x = g.placeholder("x", {-1, 1});
    Tensor y = bn(x);
    CHECK(bn.describe() == "BatchNorm1d(1, eps=1e-05, momentum=None, affine)");
    Session s(g, {.threads = 1});
    // Batch means 2, 12, 5 and unbiased variances 2, 8, 18: the running ones are their plain averages (PyTorch's
    // cumulative moving average; the first batch replaces the initial 0 and 1).
    const std::vector<std::vector<float>> batches{{1, 3}, {10, 14}, {2, 8}};
    for (const auto& b : batches) s.run({y}, {{x, NDArray::from(b).reshape({2, 1})}}, bn.updates());
    CHECK(s.get(bn.running_mean()).item() == doctest::Approx((2.0 + 12.0 + 5.0) / 3).epsilon(1e-6));
    CHECK(s.get(bn.running_var()).item() == doctest::Approx((2.0 + 8.0 + 18.0) / 3).epsilon(1e-6));

    for (bool two_d : {false, true}) {
      CAPTURE(two_d);
      Graph h;
      Tensor u = h.placeholder("u", two_d ? Shape{2, 2, 1, 1} : Shape{2, 2});
      std::unique_ptr<nn::Module> m;
      if (two_d)
        m = std::make_unique<nn::BatchNorm2d>(2, nn::NormOptions{.track_running_stats = false});
      else
        m = std::make_unique<nn::BatchNorm1d>(2, nn::NormOptions{.track_running_stats = false});
      m->eval();  // eval mode normalizes with the batch's statistics too
      Tensor ye = (*m)(u);
      CHECK(m->named_buffers().empty());
      CHECK(m->updates().empty());
      CHECK(names_of(m->state_dict()) == std::vector<std::string>{"weight", "bias"});
      CHECK(contains(m->describe(), "track_running_stats=False"));
      Session t(h, {.threads = 1});
      const NDArray out = t.run1(ye, {{u, NDArray::from<float>({1, 10, 3, 30}).reshape(u.shape())}});
      // Each feature's two values are its mean -+ its (biased) deviation, 1 and 10.
      const double z0 = 1 / std::sqrt(1 + 1e-5), z1 = 10 / std::sqrt(100 + 1e-5);
      const std::vector<double> want{-z0, -z1, z0, z1};
      for (size_t i = 0; i < 4; ++i) CHECK(out.to_vector<float>()[i] == doctest::Approx(want[i]).epsilon(1e-6));
    }
  }

  TEST_CASE("BatchNorm1d without affine: no parameters, the batch statistics in training, the running ones in eval") {
    Graph g;
    nn::BatchNorm1d bn(2, {.affine = false});
    Tensor x = g.placeholder("x", {4, 2});
    Tensor yt = bn(x);
    bn.eval();
    Tensor ye = bn(x);
    CHECK(bn.named_parameters().empty());
    CHECK(bn.updates().size() == 1);
    Session s(g, {.threads = 1});
    const NDArray a = NDArray::from<float>({1, 10, 2, 20, 3, 30, 6, 60}, {4, 2});
    const NDArray out = s.run1(yt, {{x, a}});
    // Column 0: mean 3, biased variance 3.5; column 1 is ten times column 0, so normalizes the same.
    for (int r = 0; r < 4; ++r)
      for (int c = 0; c < 2; ++c)
        CHECK(out.at({r, c}) == doctest::Approx((a.at({r, 0}) - 3) / std::sqrt(3.5 + 1e-5)).epsilon(1e-5));
    CHECK(s.run1(ye, {{x, a}}).at({3, 1}) == doctest::Approx(60 / std::sqrt(1 + 1e-5)).epsilon(1e-6));
  }

  TEST_CASE("BatchNorm1d on [N, C, L] and its gradient against central differences") {
    Graph g;
    nn::BatchNorm1d bn(2);
    Tensor x = g.placeholder("x", {3, 2, 4}, float64);
    Tensor y = bn(x);
    NDArray a = rand({3, 2, 4}, 8, float64);
    Tensor wsum = sum(y * g.constant(rand({3, 2, 4}, 9, float64)));
    Tensor dx = gradients(wsum, {x})[0];
    Session s(g, {.threads = 1});
    NDArray out = s.run1(y, {{x, a}});
    for (int c = 0; c < 2; ++c) {  // per-channel mean 0 over N and L
      double m = 0;
      for (int n = 0; n < 3; ++n)
        for (int l = 0; l < 4; ++l) m += out.at({n, c, l});
      CHECK(std::fabs(m) < 1e-9);
    }
    NDArray grad = s.run1(dx, {{x, a}});
    const double h = 1e-6;
    for (int64_t i : {0, 5, 13, 23}) {
      NDArray p = a.clone(), m = a.clone();
      p.data<double>()[i] += h;
      m.data<double>()[i] -= h;
      double num = (s.run1(wsum, {{x, p}}).item() - s.run1(wsum, {{x, m}}).item()) / (2 * h);
      CHECK(grad.data<double>()[i] == doctest::Approx(num).epsilon(1e-5));
    }
    CHECK(contains(error_of([&] { nn::BatchNorm1d(3)(x); }), "expected [N, 3] or [N, 3, L], got [3,2,4]"));
    Tensor one = g.placeholder("one", {1, 2}, float64);
    CHECK(contains(error_of([&] { nn::BatchNorm1d(2)(one); }),
                   "BatchNorm1d: training needs more than one value per feature"));
  }

  TEST_CASE("RMSNorm and rms_norm: PyTorch's values, its default eps, gradients") {
    // clang-format off
    const std::vector<double> xs{-1.5, 0.8333333333333335, -0.5, 1.8333333333333335, 0.5, -0.8333333333333334, 1.5, 0.16666666666666674, -1.1666666666666667, 1.1666666666666665, -0.16666666666666674, -1.5, -1.0, 0.25, 1.5, -0.5, 0.75, 2.0, 0.0, 1.25, -0.75, 0.5, 1.75, -0.25};
    // PyTorch 2.15: nn.RMSNorm([3, 4]) with weight 0.5 + 0.1 i, and nn.RMSNorm(4, eps=0.1, elementwise_affine=False).
    const std::vector<double> want_a{-0.6758453353343743, 0.45056355688958294, -0.315394489822708, 1.3216531002094434, 0.4055072012006246, -0.7509392614826381, 1.4868597377356236, 0.18022542275583328, -1.3667094558984016, 1.4718409525059706, -0.22528177844479155, -2.162705073069998, -0.46923713220346497, 0.1407711396610395, 0.9853979776272763, -0.375389705762772, 0.6334701284746778, 1.8769485288138599, 0.0, 1.407711396610395, -0.9150124077967567, 0.656931985084851, 2.4634949440681915, -0.375389705762772};
    const std::vector<double> want_b{-1.1375103131225068, 0.6319501739569484, -0.379170104374169, 1.3902903827052864, 0.5254270830780441, -0.8757118051300735, 1.5762812492341323, 0.17514236102601477, -1.0041067934611823, 1.004106793461182, -0.14344382763731178, -1.2909944487358056, -1.0047207186066567, 0.25118017965166417, 1.507081077909985, -0.5023603593033283, 0.5872202195147035, 1.5659205853725426, 0.0, 0.9787003658578391, -0.7202305106510154, 0.48015367376734364, 1.6805378581857027, -0.24007683688367182};
    // clang-format on
    Graph g;
    Tensor x = g.placeholder("x", {2, 3, 4}, float64);
    nn::RMSNorm a(Shape{3, 4}), b(4, {.eps = 0.1, .affine = false});
    Tensor ya = a(x), yb = b(x);
    CHECK(a.describe() == "RMSNorm([3,4], eps=None, elementwise_affine)");
    CHECK(b.describe() == "RMSNorm(4, eps=0.1)");
    REQUIRE(a.state_dict().size() == 1);
    CHECK(b.state_dict().empty());
    Session s(g);
    std::vector<double> w;
    for (int i = 0; i < 12; ++i) w.push_back(0.5 + 0.1 * i);
    s.set(a.state_dict()[0].second, NDArray::from(w, {3, 4}));
    const NDArray xv = NDArray::from(xs, {2, 3, 4});
    const auto r = s.run({ya, yb}, {{x, xv}});
    for (size_t i = 0; i < xs.size(); ++i) {
      CHECK(r[0].to_vector<double>()[i] == doctest::Approx(want_a[i]).epsilon(1e-14));
      CHECK(r[1].to_vector<double>()[i] == doctest::Approx(want_b[i]).epsilon(1e-14));
    }
    // The default eps is the dtype's: float32's 1.19e-7 dominates a mean square of ~1e-8 (PyTorch: -0.40735).
    Tensor x32 = g.placeholder("x32", {4});
    const NDArray y32 =
        s.run1(nn::rms_norm(x32, 1), {{x32, NDArray::from<float>({-1.5e-4f, 0.8333333e-4f, -0.5e-4f, 1.8333333e-4f})}});
    CHECK(y32.to_vector<float>()[0] == doctest::Approx(-0.4073467552661896).epsilon(1e-5));
    CheckResult gr = check_gradient_fn(
        [](const std::vector<Tensor>& in) { return std::vector<Tensor>{nn::rms_norm(in[0], 2, in[1], 1e-3)}; },
        {xv, NDArray::from(w, {3, 4})}, {0, 1});
    CHECK_MESSAGE(gr.ok, gr.detail);
    CHECK(contains(error_of([&] { a(g.placeholder("bad", {2, 4, 3}, float64)); }), "expected [..., 3,4], got [2,4,3]"));
    CHECK(contains(error_of([&] { nn::rms_norm(x, 4); }), "rms_norm: normalizes 1 to 3 trailing dims"));
  }

  TEST_CASE("LayerNorm1d normalizes the last dim") {
    Graph g;
    nn::LayerNorm1d ln(6);
    Tensor x = g.placeholder("x", {-1, 2, 6});
    Tensor y = ln(x);
    Session s(g, {.threads = 1});
    NDArray out = s.run1(y, {{x, rand({3, 2, 6}, 5, float32, -4, 9)}});
    for (int r = 0; r < 3; ++r)
      for (int k = 0; k < 2; ++k) {
        double m = 0, v = 0;
        for (int j = 0; j < 6; ++j) m += out.at({r, k, j}) / 6;
        for (int j = 0; j < 6; ++j) v += std::pow(out.at({r, k, j}) - m, 2) / 6;
        CHECK(std::fabs(m) < 1e-5);
        CHECK(v == doctest::Approx(1.0).epsilon(1e-3));
      }
    CHECK(names_of(ln.named_parameters()) == std::vector<std::string>{"weight", "bias"});
  }

  TEST_CASE("MLPResNet has the course's structure") {
    Graph g;
    nn::MLPResNet net(784);
    Tensor x = g.placeholder("x", {-1, 784});
    Tensor y = net(x);
    CHECK(y.shape() == Shape{-1, 10});
    // Linear(784,100) + 3 x [Linear(100,50) + BN(50) + Linear(50,100) + BN(100)] + Linear(100,10).
    CHECK(net.num_parameters() == 78500 + 3 * (5050 + 100 + 5100 + 200) + 1010);
    CHECK(net.updates().size() == 6);  // 6 BatchNorm1d, each one group of its three assigns
    CHECK(net.named_buffers().front().first == "2/0/fn/1/running_mean");
    const std::string tree = net.str();
    CHECK(contains(tree,
                   "MLPResNet\n  (0): Linear(784, 100, bias)\n  (1): ReLU\n  (2): Sequential\n    (0): Residual\n"
                   "      (fn): Sequential\n        (0): Linear(100, 50, bias)\n        (1): BatchNorm1d(50"));
    CHECK(contains(tree, "(3): Dropout(p=0.1)"));
    nn::MLPResNet ln(20, {.hidden = 8, .blocks = 1, .classes = 4, .norm = nn::Norm::layer, .dropout = 0.0});
    Tensor x2 = g.placeholder("x2", {-1, 20});
    // Two root modules in one graph collide on their paths; a scope separates them.
    std::string e = error_of([&] { ln(x2); });
    CHECK(contains(e, "Linear '0': variable '0/weight' already exists in the graph"));
    {
      auto scope = g.scope("small");
      CHECK(ln(x2).shape() == Shape{-1, 4});
    }
    CHECK(ln.named_parameters()[0].second.name() == "small/0/weight");
    CHECK(ln.updates().empty());
    Session s(g, {.threads = 1});
    CHECK(s.run1(y, {{x, rand({5, 784}, 1)}}).shape() == Shape{5, 10});
  }

  TEST_CASE("cross_entropy and accuracy against host values") {
    Graph g;
    Tensor logits = g.placeholder("logits", {-1, 4});
    Tensor labels = g.placeholder("labels", {-1}, int64);
    Tensor loss = nn::SoftmaxLoss()(logits, labels);
    Tensor acc = nn::accuracy(logits, labels), right = nn::correct(logits, labels);
    NDArray l = rand({5, 4}, 3, float32, -3, 3);
    NDArray y = NDArray::from<int64_t>({0, 3, 2, 1, 1});
    Session s(g, {.threads = 1});
    auto out = s.run({loss, acc, right}, {{logits, l}, {labels, y}});
    double expect = 0;
    int hits = 0;
    for (int r = 0; r < 5; ++r) {
      double m = -INFINITY, z = 0;
      int arg = 0;
      for (int c = 0; c < 4; ++c)
        if (l.at({r, c}) > m) m = l.at({r, c}), arg = c;
      for (int c = 0; c < 4; ++c) z += std::exp(l.at({r, c}) - m);
      int t = int(y.at({r}));
      expect += -(l.at({r, t}) - m - std::log(z)) / 5;
      hits += arg == t;
    }
    CHECK(out[0].item() == doctest::Approx(expect).epsilon(1e-5));
    CHECK(out[1].item() == doctest::Approx(hits / 5.0));
    CHECK(out[2].item() == hits);
    // N-D logits: rows of [..., C] with labels [...] give the same mean.
    Tensor l3 = g.placeholder("l3", {-1, 1, 4});
    Tensor y2 = g.placeholder("y2", {-1, 1}, uint8);
    NDArray y8 = y.astype(uint8).reshape({5, 1});
    CHECK(s.run1(nn::cross_entropy(l3, y2), {{l3, l.reshape({5, 1, 4})}, {y2, y8}}).item() ==
          doctest::Approx(expect).epsilon(1e-5));
    Tensor yf = g.placeholder("yf", {-1});
    CHECK(contains(error_of([&] { nn::cross_entropy(logits, yf); }),
                   "probability targets 'yf' must be float32[?,4] like the logits, got float32[?]"));
    CHECK(contains(error_of([&] { nn::nll_loss(logits, yf); }), "labels 'yf' must be integers, got float32"));
    Tensor ybad = g.placeholder("ybad", {-1, 2}, int64);
    CHECK(contains(error_of([&] { nn::cross_entropy(logits, ybad); }), "need labels of shape [?]"));
  }

  TEST_CASE("cross_entropy in PyTorch's layouts: classes at dim 1 ([N, C, H, W]) and class probabilities") {
    // clang-format off
    const std::vector<double> xs{-1.5, 0.8333333333333335, -0.5, 1.8333333333333335, 0.5, -0.8333333333333334, 1.5, 0.16666666666666674, -1.1666666666666667, 1.1666666666666665, -0.16666666666666674, -1.5, 0.8333333333333335, -0.5, 1.8333333333333335, 0.5, -0.8333333333333334, 1.5, 0.16666666666666674, -1.1666666666666667, 1.1666666666666665, -0.16666666666666674, -1.5, 0.8333333333333335};
    const std::vector<double> ps{0.03005888756957402, 0.506480391055654, 0.506480391055654, 0.07252144568074774, 0.6037488961486258, 0.3071958857184984, 0.3071958857184984, 0.04398648029205784, 0.3661922162818002, 0.1863237232258476, 0.1863237232258476, 0.8834920740271943, 0.506480391055654, 0.506480391055654, 0.03005888756957402, 0.506480391055654, 0.3071958857184984, 0.3071958857184984, 0.6037488961486258, 0.3071958857184984, 0.1863237232258476, 0.1863237232258476, 0.3661922162818002, 0.1863237232258476};
    // PyTorch 2.15, F.cross_entropy of x [2, 3, 2, 2] against labels [2, 2, 2] (one ignored) with weight
    // [0.5, 1, 2]: reduction none, mean, mean with label_smoothing 0.2; nll_loss of log_softmax(x, 1), sum.
    const std::vector<double> kdim_none{1.1404083621716992, 1.2323882000994966, 0.2808167243433982, 0.0, 1.2323882000994966, 3.8949667820201297, 0.10128654990162855, 2.616194100049748};
    // Against the probabilities p (softmax over dim 1): none; mean with weight and label_smoothing 0.1; sum.
    const std::vector<double> soft_none{0.9512548599522133, 1.399412668505296, 1.6043170451644524, 3.2208574803806678, 1.399412668505296, 1.6043170451644524, 2.429461980990301, 1.3994126685052963};
    // clang-format on
    Graph g;
    Tensor x = g.placeholder("x", {-1, 3, 2, 2}, float64), y = g.placeholder("y", {-1, 2, 2}, int64);
    Tensor p = g.placeholder("p", {-1, 3, 2, 2}, float64);
    Tensor w = g.constant(NDArray::from<double>({0.5, 1.0, 2.0}));
    using R = nn::Reduction;
    const std::vector<Tensor> fetches{nn::cross_entropy(x, y, {.weight = w, .reduction = R::none}),
                                      nn::cross_entropy(x, y, {.weight = w}),
                                      nn::cross_entropy(x, y, {.weight = w, .label_smoothing = 0.2}),
                                      nn::nll_loss(log_softmax(x, 1), y, {.reduction = R::sum}),
                                      nn::cross_entropy(x, p, {.reduction = R::none}),
                                      nn::cross_entropy(x, p, {.weight = w, .label_smoothing = 0.1}),
                                      nn::cross_entropy(x, p, {.reduction = R::sum}),
                                      nn::accuracy(x, y)};
    CHECK(fetches[0].shape() == Shape{-1, 2, 2});
    CHECK(fetches[4].shape() == Shape{-1, 2, 2});
    Session s(g);
    const NDArray yv = NDArray::from<int64_t>({0, 2, 1, -100, 2, 2, 0, 1}, {2, 2, 2});
    const auto r =
        s.run(fetches, {{x, NDArray::from(xs, {2, 3, 2, 2})}, {y, yv}, {p, NDArray::from(ps, {2, 3, 2, 2})}});
    for (size_t i = 0; i < 8; ++i) {
      CHECK(r[0].to_vector<double>()[i] == doctest::Approx(kdim_none[i]).epsilon(1e-14));
      CHECK(r[4].to_vector<double>()[i] == doctest::Approx(soft_none[i]).epsilon(1e-14));
    }
    CHECK(r[1].item() == doctest::Approx(1.1664943242983996).epsilon(1e-14));
    CHECK(r[2].item() == doctest::Approx(1.2143877026888883).epsilon(1e-14));
    CHECK(r[3].item() == doctest::Approx(8.560272239649363).epsilon(1e-14));
    CHECK(r[5].item() == doctest::Approx(2.253392394169965).epsilon(1e-14));
    CHECK(r[6].item() == doctest::Approx(14.008446417167974).epsilon(1e-14));
    // Accuracy counts every label (the ignored one as a miss): argmax over dim 1.
    int hits = 0;
    for (int64_t n = 0; n < 2; ++n)
      for (int64_t i = 0; i < 4; ++i) {
        int best = 0;
        for (int c = 1; c < 3; ++c)
          if (xs[size_t(n * 12 + c * 4 + i)] > xs[size_t(n * 12 + best * 4 + i)]) best = c;
        hits += best == yv.to_vector<int64_t>()[size_t(n * 4 + i)];
      }
    CHECK(r[7].item() == doctest::Approx(hits / 8.0));
    // Shapes that fit both layouts are refused; the classes-last form stays for [T, N, V].
    Tensor cube = g.placeholder("cube", {4, 3, 3, 3}), labels3 = g.placeholder("labels3", {4, 3, 3}, int64);
    CHECK(contains(error_of([&] { nn::cross_entropy(cube, labels3); }), "fit both classes at dim 1"));
    Tensor lm = g.placeholder("lm", {5, -1, 7}), next = g.placeholder("next", {5, -1}, int64);
    CHECK(nn::cross_entropy(lm, next, {.reduction = R::none}).shape() == Shape{5, -1});
    CHECK(contains(error_of([&] {
                     nn::cross_entropy(x, g.placeholder("bad", {2, 4, 2}, int64));
                   }),
                   "need labels of shape [?,3,2] (classes last) or [?,2,2] (classes at dim 1)"));
    // Gradients of both forms against central differences.
    CheckResult gr = check_gradient_fn(
        [](const std::vector<Tensor>& in) {
          const Tensor labels = in[0].graph().constant(NDArray::from<int64_t>({0, 2, 1, -100, 2, 2, 0, 1}, {2, 2, 2}));
          return std::vector<Tensor>{nn::cross_entropy(in[0], labels, {.label_smoothing = 0.1}),
                                     nn::cross_entropy(in[0], in[1])};
        },
        {NDArray::from(xs, {2, 3, 2, 2}), NDArray::from(ps, {2, 3, 2, 2})}, {0, 1});
    CHECK_MESSAGE(gr.ok, gr.detail);
  }

  TEST_CASE("mse, l1, smooth_l1, huber, binary cross-entropy and nll losses against PyTorch's values") {
    Graph g;
    Tensor x = g.constant(NDArray::from<double>({0.3, -1.2, 2.5, 1.7, 0.0, -0.4}, {2, 3}));
    Tensor t = g.constant(NDArray::from<double>({0.0, -1.0, 1.0, 2.0, 0.5, -0.2}, {2, 3}));
    Tensor p =
        g.constant(NDArray::from<double>({0.1, 0.9, 0.5, 0.0, 1.0, 0.25}, {2, 3}));  // exact 0 and 1: clamped logs
    Tensor b = g.constant(NDArray::from<double>({0, 1, 1, 1, 1, 0}, {2, 3}));
    Tensor w = g.constant(NDArray::from<double>({0.5, 2.0, 1.0})),
           pw = g.constant(NDArray::from<double>({3.0, 0.5, 1.0}));
    using nn::Reduction;
    // Expected values: PyTorch 2's torch.nn.functional on the same float64 inputs.
    const std::vector<std::pair<Tensor, double>> cases{
        {nn::mse_loss(x, t), 0.45999999999999996},
        {nn::mse_loss(x, t, Reduction::sum), 2.76},
        {nn::l1_loss(x, t), 0.5},
        {nn::smooth_l1_loss(x, t, 0.0), 0.5},
        {nn::huber_loss(x, t, 1.5), 0.22999999999999998},
        {nn::binary_cross_entropy(p, b), 16.86525838072123},
        {nn::binary_cross_entropy(p, b, {.weight = w, .reduction = Reduction::sum}), 51.244230542156295},
        {nn::binary_cross_entropy_with_logits(x, b), 0.6284126514075453},
        {nn::binary_cross_entropy_with_logits(x, b, {.weight = w, .pos_weight = pw}), 0.5711985501506902},
        {nn::nll_loss(log_softmax(x, 1), g.constant(NDArray::from<int64_t>({2, -100}))), 0.12709658280048583},
        {nn::nll_loss(log_softmax(x, 1), g.constant(NDArray::from<int64_t>({2, 1})), {.weight = w}),
         1.3532390463806048}};
    Session s(g);
    for (size_t i = 0; i < cases.size(); ++i) {
      CAPTURE(i);
      CHECK(s.run1(cases[i].first).item() == doctest::Approx(cases[i].second).epsilon(1e-12));
    }
    const NDArray none = s.run1(nn::smooth_l1_loss(x, t, 0.8, Reduction::none));
    CHECK(none.shape() == Shape{2, 3});
    const std::vector<double> want{0.05625, 0.025, 1.1, 0.05625, 0.15625, 0.025};
    for (size_t i = 0; i < want.size(); ++i)
      CHECK(none.to_vector<double>()[i] == doctest::Approx(want[i]).epsilon(1e-12));
    // Mistakes name the loss and what it expected.
    CHECK(contains(error_of([&] { nn::mse_loss(x, reshape(t, {3, 2})); }), "mse_loss: input 'constant"));
    CHECK(contains(error_of([&] { nn::mse_loss(x, reshape(t, {3, 2})); }), "[2,3] and target"));
    CHECK(contains(error_of([&] { nn::l1_loss(x, cast(t, float32)); }),
                   "must share a floating dtype, got float64 and float32"));
    CHECK(contains(error_of([&] { nn::huber_loss(x, t, 0.0); }), "delta must be finite and > 0"));
    CHECK(contains(error_of([&] { nn::binary_cross_entropy(p, b, {.pos_weight = pw}); }), "pos_weight"));
    CHECK(contains(error_of([&] {
                     nn::nll_loss(x, g.constant(NDArray::from<int64_t>({0, 1})), {.label_smoothing = 0.1});
                   }),
                   "label_smoothing is cross_entropy's option"));
    CHECK(contains(error_of([&] { s.run1(nn::nll_loss(x, g.constant(NDArray::from<int64_t>({0, 3})))); }), "3"));
    CHECK(contains(error_of([&] { nn::mse_loss(x, t, Reduction(7)); }), "mse_loss: unknown reduction 7"));
    // Probabilities of exactly 0 and 1: a finite loss (the clamped logs) and a finite gradient.
    const NDArray dp = s.run1(gradients(nn::binary_cross_entropy(p, b), {p})[0]);
    for (double v : dp.to_vector<double>()) CHECK(std::isfinite(v));
    // A value outside [0, 1] (or NaN) is an error when run, naming the element, as PyTorch's;
    // the session runs on afterwards.
    Tensor q = g.placeholder("q", {2, 2}, float64);
    Tensor bce = nn::binary_cross_entropy(q, g.constant(NDArray::from<double>({1, 0, 1, 0}, {2, 2})));
    const std::string bad = error_of([&] { s.run1(bce, {{q, NDArray::from<double>({0.5, 0.2, 1.5, 0.3}, {2, 2})}}); });
    CHECK(contains(bad, "check_range"));
    CHECK(contains(bad, "element 2 is outside [0, 1] or NaN (expected probabilities)"));
    CHECK(contains(error_of([&] {
                     s.run1(bce, {{q, NDArray::from<double>({0.5, NAN, 0.5, -0.1}, {2, 2})}});
                   }),
                   "element 1 is outside [0, 1]"));
    CHECK(s.run1(bce, {{q, NDArray::from<double>({0.5, 0.5, 0.5, 0.5}, {2, 2})}}).item() ==
          doctest::Approx(std::log(2.0)).epsilon(1e-15));
    // An ignored row whose log-probability is -inf adds 0, not NaN.
    Tensor lp = g.constant(NDArray::from<double>({-INFINITY, 0.0, -0.5, -1.0}, {2, 2}));
    CHECK(s.run1(nn::nll_loss(lp, g.constant(NDArray::from<int64_t>({-100, 1})))).item() == 1.0);
    CHECK(s.run1(nn::cross_entropy(lp, g.constant(NDArray::from<int64_t>({-100, 1})))).item() ==
          doctest::Approx(std::log(std::exp(-0.5) + std::exp(-1.0)) + 1.0));
  }

  TEST_CASE("the element-wise losses' gradients against central differences") {
    const NDArray x = rand({3, 4}, 11, float64, -2, 2), t = rand({3, 4}, 12, float64, -2, 2);
    const NDArray p = rand({3, 4}, 13, float64, 0.05, 0.95), b = rand({3, 4}, 14, float64, 0, 1);
    const NDArray w = rand({4}, 15, float64, 0.5, 2);
    using Fn = std::function<Tensor(const std::vector<Tensor>&)>;
    const std::vector<std::pair<const char*, Fn>> losses{
        {"mse", [](const std::vector<Tensor>& in) { return nn::mse_loss(in[0], in[1]); }},
        {"l1", [](const std::vector<Tensor>& in) { return nn::l1_loss(in[0], in[1], nn::Reduction::sum); }},
        {"smooth_l1", [](const std::vector<Tensor>& in) { return nn::smooth_l1_loss(in[0], in[1], 0.7); }},
        {"huber", [](const std::vector<Tensor>& in) { return nn::huber_loss(in[0], in[1], 0.6); }},
        {"bce with logits",
         [](const std::vector<Tensor>& in) {
           return nn::binary_cross_entropy_with_logits(in[0], in[3], {.weight = in[4], .pos_weight = in[4]});
         }},
        {"bce",
         [](const std::vector<Tensor>& in) { return nn::binary_cross_entropy(in[2], in[3], {.weight = in[4]}); }}};
    for (const auto& named : losses) {
      const char* name = named.first;  // not a structured binding: clang 14's lambdas cannot capture one
      const Fn& f = named.second;
      CAPTURE(name);
      CheckResult r = check_gradient_fn([&](const std::vector<Tensor>& in) { return std::vector<Tensor>{f(in)}; },
                                        {x, t, p, b, w}, {0, 1, 2, 3, 4});
      CHECK_MESSAGE(r.ok, r.detail);
    }
  }

  TEST_CASE("cross_entropy's options as PyTorch's: weight, ignore_index, label_smoothing, reduction") {
    Graph g;
    Tensor z =
        g.constant(NDArray::from<double>({1.0, 2.0, 0.5, 0.1, -1.0, 3.0, 2.0, 2.0, -2.0, 0.0, 0.3, 0.7}, {4, 3}));
    Tensor y = g.constant(NDArray::from<int64_t>({1, -100, 0, 2}));  // -100: PyTorch's default ignore_index
    Tensor w = g.constant(NDArray::from<double>({0.5, 2.0, 1.5}));
    using nn::Reduction;
    // Expected values: PyTorch 2's F.cross_entropy on the same float64 inputs.
    const std::vector<std::pair<nn::CrossEntropyOptions, double>> cases{
        {{}, 0.646644049723944},
        {{.weight = w}, 0.6099548235931563},
        {{.label_smoothing = 0.1}, 0.7310884941683884},
        {{.weight = w, .label_smoothing = 0.2}, 0.7822926688193139},
        {{.weight = w, .reduction = Reduction::sum, .label_smoothing = 0.2}, 3.1291706752772557}};
    Session s(g);
    for (const auto& [options, want] : cases)
      CHECK(s.run1(nn::cross_entropy(z, y, options)).item() == doctest::Approx(want).epsilon(1e-12));
    const NDArray none =
        s.run1(nn::cross_entropy(z, y, {.weight = w, .reduction = Reduction::none, .label_smoothing = 0.2}));
    CHECK(none.shape() == Shape{4});
    const std::vector<double> want_none{1.0501550636681638, 0.0, 0.8681755476260635, 1.2108400639830283};
    for (size_t i = 0; i < 4; ++i) CHECK(none.to_vector<double>()[i] == doctest::Approx(want_none[i]).epsilon(1e-12));
    // Every row ignored: 0 / 0, as PyTorch; another ignore_index with smoothing.
    CHECK(std::isnan(s.run1(nn::cross_entropy(z, g.constant(NDArray::full({4}, -100, int64)))).item()));
    Tensor y0 = g.constant(NDArray::from<int64_t>({1, 2, 0, 0}));
    CHECK(s.run1(nn::cross_entropy(z, y0, {.ignore_index = 0, .label_smoothing = 0.3})).item() ==
          doctest::Approx(0.737571501534218).epsilon(1e-12));
    // `none` keeps the labels' shape; a label out of range that is not ignored still fails, naming it.
    Tensor z3 = reshape(z, {2, 2, 3}), y3 = reshape(y, {2, 2});
    CHECK(s.run1(nn::cross_entropy(z3, y3, {.reduction = Reduction::none})).shape() == Shape{2, 2});
    CHECK(contains(error_of([&] { s.run1(nn::cross_entropy(z, y, {.ignore_index = -1})); }),
                   "label -100 out of range [0, 3)"));
    CHECK(contains(error_of([&] { nn::cross_entropy(z, y, {.label_smoothing = 1.5}); }),
                   "label_smoothing must be in [0, 1]"));
    CHECK(contains(error_of([&] {
                     nn::cross_entropy(z, y, {.weight = g.constant(NDArray::from<double>({1, 2}))});
                   }),
                   "weight 'constant"));
    CHECK(contains(error_of([&] {
                     nn::cross_entropy(z, y, {.weight = g.constant(NDArray::from<double>({1, 2}))});
                   }),
                   "must be float64[3] (one per class), got float64[2]"));
    // Gradients with respect to the logits and the weights, against central differences.
    CheckResult r = check_gradient_fn(
        [&](const std::vector<Tensor>& in) {
          Tensor labels = in[0].graph().constant(NDArray::from<int64_t>({1, -100, 0, 2}));
          return std::vector<Tensor>{nn::cross_entropy(in[0], labels, {.weight = in[1], .label_smoothing = 0.25})};
        },
        {rand({4, 3}, 5, float64, -2, 2), rand({3}, 6, float64, 0.5, 2)}, {0, 1});
    CHECK_MESSAGE(r.ok, r.detail);
  }
}

TEST_SUITE("frontend/bilinear") {
  TEST_CASE("Bilinear equals PyTorch's nn.Bilinear on [B, T, in] inputs; gradients of inputs and parameters") {
    // PyTorch 2.15, float64: weight [2, 3, 4] element i is sin(0.3 i + 0.1), bias {0.5, -0.25},
    // x1 [2, 3, 3] element i cos(0.7 i), x2 [2, 3, 4] element i sin(0.45 i + 1).
    const std::vector<double> want = {4.800741006511931,   -4.949454541418962,   1.6151158442988174,
                                      -0.5834087849952906, -0.10610093133854925, -1.2087732805286933,
                                      3.812275369492051,   -3.570575164907681,   -2.238562301821525,
                                      2.0308487136360576,  0.4141532469346311,   -1.880264878649951};
    auto arr = [](const Shape& s, double (*f)(double)) {
      std::vector<double> v(size_t(numel(s)));
      for (size_t i = 0; i < v.size(); ++i) v[i] = f(double(i));
      return NDArray::from<double>(v, s);
    };
    Graph g;
    nn::Bilinear bil(3, 4, 2, {.dtype = float64});
    Tensor x1 = g.placeholder("x1", {-1, 3, 3}, float64), x2 = g.placeholder("x2", {-1, 3, 4}, float64);
    Tensor y = bil(x1, x2);
    CHECK(y.shape() == Shape{-1, 3, 2});
    CHECK(bil.describe() == "Bilinear(3, 4, 2, bias)");
    Session s(g);
    s.set(bil.weight(), arr({2, 3, 4}, [](double i) { return std::sin(0.3 * i + 0.1); }));
    s.set(bil.bias(), NDArray::from<double>({0.5, -0.25}, {2}));
    const std::vector<double> got = s.run1(y, {{x1, arr({2, 3, 3}, [](double i) { return std::cos(0.7 * i); })},
                                               {x2, arr({2, 3, 4}, [](double i) { return std::sin(0.45 * i + 1); })}})
                                        .to_vector<double>();
    REQUIRE(got.size() == want.size());
    for (size_t i = 0; i < got.size(); ++i) CHECK(got[i] == doctest::Approx(want[i]).epsilon(1e-14));
    nn::Bilinear small(2, 4, 3, {.dtype = float64});
    const CheckResult r =
        check_gradient_fn([&](const std::vector<Tensor>& in) { return std::vector<Tensor>{small(in[0], in[1])}; },
                          {test::rand({5, 2}, 1, float64), test::rand({5, 4}, 2, float64)}, {0, 1});
    CHECK_MESSAGE(r.ok, r.detail);
    CHECK(test::contains(test::error_of([&] {
                           bil(x1, g.placeholder("bad", {-1, 3, 5}, float64));
                         }),
                         "expected inputs [..., 3] and [..., 4]"));
  }
}
