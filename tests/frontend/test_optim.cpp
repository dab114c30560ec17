// Optimizers against hand-computed updates (PyTorch's formulas, in double on
// the host) for a few steps; clipping; schedules; state variables; errors.

#include <cmath>
#include <functional>

// util.hpp (and core/philox.hpp in it) before ops/ops.hpp: philox must see the C math functions.
#include "tests/util.hpp"

#include "frontend/checkpoint.hpp"
#include "frontend/nn.hpp"
#include "frontend/optim.hpp"

using namespace loom;
using loom::optim::Parameters;
using loom::test::contains;
using loom::test::error_of;

namespace {

const std::vector<double> kP0{0.5, -1.5, 2.0, 0.25}, kA{1.0, 0.5, 2.0, 3.0}, kC{0.3, -0.2, 0.1, -1.0};

Initializer values(std::vector<double> v) {
  return [v](const NDArray& a, uint64_t) {
    for (size_t i = 0; i < v.size(); ++i) a.select(0, int64_t(i)).fill(v[i]);
  };
}

/// A problem with a parameter-dependent gradient: loss = sum(0.5 a p^2 + c p), grad = a p + c.
struct Problem {
  Graph g;
  Tensor p, loss;
  explicit Problem(DType dt) {
    p = g.variable("p", {4}, values(kP0), dt);
    Tensor a = g.constant(NDArray::from(kA).astype(dt)), c = g.constant(NDArray::from(kC).astype(dt));
    loss = sum(p * p * a * 0.5 + c * p);
  }
};

/// Runs `steps` updates and returns p after each.
std::vector<std::vector<double>> run(Problem& pr, optim::Optimizer& opt, int steps) {
  Tensor step = opt.minimize(pr.loss);
  Session s(pr.g, {.threads = 1});
  std::vector<std::vector<double>> out;
  for (int i = 0; i < steps; ++i) {
    s.run({}, {}, {step});
    out.push_back(s.get(pr.p).to_vector<double>());
  }
  return out;
}

using Update = std::function<void(std::vector<double>& p, const std::vector<double>& g, int t)>;

std::vector<std::vector<double>> reference(int steps, const Update& update) {
  std::vector<double> p = kP0;
  std::vector<std::vector<double>> out;
  for (int t = 1; t <= steps; ++t) {
    std::vector<double> g(4);
    for (size_t i = 0; i < 4; ++i) g[i] = kA[i] * p[i] + kC[i];
    update(p, g, t);
    out.push_back(p);
  }
  return out;
}

void check_close(const std::vector<std::vector<double>>& got, const std::vector<std::vector<double>>& want,
                 double tol) {
  REQUIRE(got.size() == want.size());
  for (size_t t = 0; t < got.size(); ++t)
    for (size_t i = 0; i < 4; ++i) {
      INFO("step ", t + 1, " element ", i);
      CHECK(got[t][i] == doctest::Approx(want[t][i]).epsilon(tol));
    }
}

Update sgd_ref(double lr, double momentum, double dampening, double wd, bool nesterov) {
  auto buf = std::make_shared<std::vector<double>>(4, 0.0);
  return [=](std::vector<double>& p, const std::vector<double>& g0, int t) {
    for (size_t i = 0; i < 4; ++i) {
      double g = g0[i] + wd * p[i];
      if (momentum != 0) {
        (*buf)[i] = t == 1 ? g : momentum * (*buf)[i] + (1 - dampening) * g;
        g = nesterov ? g + momentum * (*buf)[i] : (*buf)[i];
      }
      p[i] -= lr * g;
    }
  };
}

Update adam_ref(double lr, double b1, double b2, double eps, double wd, bool decoupled) {
  auto m = std::make_shared<std::vector<double>>(4, 0.0), v = std::make_shared<std::vector<double>>(4, 0.0);
  return [=](std::vector<double>& p, const std::vector<double>& g0, int t) {
    for (size_t i = 0; i < 4; ++i) {
      double g = g0[i];
      if (decoupled)
        p[i] *= 1 - lr * wd;
      else
        g += wd * p[i];
      (*m)[i] = b1 * (*m)[i] + (1 - b1) * g;
      (*v)[i] = b2 * (*v)[i] + (1 - b2) * g * g;
      double mhat = (*m)[i] / (1 - std::pow(b1, t)), vhat = (*v)[i] / (1 - std::pow(b2, t));
      p[i] -= lr * mhat / (std::sqrt(vhat) + eps);
    }
  };
}

Update rmsprop_ref(double lr, double alpha, double eps, double wd, double momentum, bool centered) {
  auto sq = std::make_shared<std::vector<double>>(4, 0.0), ga = std::make_shared<std::vector<double>>(4, 0.0),
       buf = std::make_shared<std::vector<double>>(4, 0.0);
  return [=](std::vector<double>& p, const std::vector<double>& g0, int) {
    for (size_t i = 0; i < 4; ++i) {
      double g = g0[i] + wd * p[i];
      (*sq)[i] = alpha * (*sq)[i] + (1 - alpha) * g * g;
      double var = (*sq)[i];
      if (centered) {
        (*ga)[i] = alpha * (*ga)[i] + (1 - alpha) * g;
        var -= (*ga)[i] * (*ga)[i];
      }
      double step = g / (std::sqrt(var) + eps);
      if (momentum > 0) step = (*buf)[i] = momentum * (*buf)[i] + step;
      p[i] -= lr * step;
    }
  };
}

Update adagrad_ref(double lr, double lr_decay, double wd, double initial, double eps) {
  auto sum = std::make_shared<std::vector<double>>(4, initial);
  return [=](std::vector<double>& p, const std::vector<double>& g0, int t) {
    for (size_t i = 0; i < 4; ++i) {
      double g = g0[i] + wd * p[i];
      (*sum)[i] += g * g;
      p[i] -= lr / (1 + (t - 1) * lr_decay) * g / (std::sqrt((*sum)[i]) + eps);
    }
  };
}

Update amsgrad_ref(double lr, double b1, double b2, double eps) {
  auto m = std::make_shared<std::vector<double>>(4, 0.0), v = std::make_shared<std::vector<double>>(4, 0.0),
       vmax = std::make_shared<std::vector<double>>(4, 0.0);
  return [=](std::vector<double>& p, const std::vector<double>& g, int t) {
    for (size_t i = 0; i < 4; ++i) {
      (*m)[i] = b1 * (*m)[i] + (1 - b1) * g[i];
      (*v)[i] = b2 * (*v)[i] + (1 - b2) * g[i] * g[i];
      (*vmax)[i] = std::max((*vmax)[i], (*v)[i]);
      p[i] -= lr / (1 - std::pow(b1, t)) * (*m)[i] / (std::sqrt((*vmax)[i] / (1 - std::pow(b2, t))) + eps);
    }
  };
}

}  // namespace

TEST_SUITE("frontend/optim") {
  TEST_CASE("SGD: plain, momentum, dampening, Nesterov and weight decay match PyTorch's update") {
    struct Case {
      optim::SGDOptions o;
    };
    std::vector<optim::SGDOptions> cases = {
        {.lr = 0.1},
        {.lr = 0.05, .momentum = 0.9},
        {.lr = 0.05, .momentum = 0.9, .dampening = 0.3, .weight_decay = 0.01},
        {.lr = 0.05, .momentum = 0.8, .weight_decay = 0.1, .nesterov = true},
    };
    for (const auto& o : cases) {
      for (DType dt : {float64, float32}) {
        Problem pr(dt);
        optim::SGD opt({pr.p}, o);
        check_close(run(pr, opt, 4), reference(4, sgd_ref(o.lr, o.momentum, o.dampening, o.weight_decay, o.nesterov)),
                    dt == float64 ? 1e-13 : 1e-4);  // float64: the lr is not rounded to float32
      }
    }
  }

  TEST_CASE("Adam and AdamW: bias correction and both weight decays match PyTorch's update") {
    for (double wd : {0.0, 0.1}) {
      for (DType dt : {float64, float32}) {
        {
          Problem pr(dt);
          optim::Adam opt({pr.p}, {.lr = 0.01, .beta1 = 0.8, .beta2 = 0.95, .eps = 1e-6, .weight_decay = wd});
          check_close(run(pr, opt, 5), reference(5, adam_ref(0.01, 0.8, 0.95, 1e-6, wd, false)),
                      dt == float64 ? 1e-13 : 1e-4);
        }
        {
          Problem pr(dt);
          optim::AdamW opt({pr.p}, {.lr = 0.02, .weight_decay = wd});
          check_close(run(pr, opt, 5), reference(5, adam_ref(0.02, 0.9, 0.999, 1e-8, wd, true)),
                      dt == float64 ? 1e-13 : 1e-4);
        }
        {  // beta2 near 1: 1 - beta2^t in float32 was 0.07% off, and every step with it
          Problem pr(dt);
          optim::Adam opt({pr.p}, {.lr = 0.01, .beta2 = 0.99999, .weight_decay = wd});
          check_close(run(pr, opt, 5), reference(5, adam_ref(0.01, 0.9, 0.99999, 1e-8, wd, false)),
                      dt == float64 ? 1e-13 : 1e-5);
        }
      }
    }
  }

  TEST_CASE("optimizer state lives in named variables") {
    Problem pr(float32);
    optim::Adam opt({pr.p});
    Tensor step = opt.minimize(pr.loss);
    std::vector<std::string> names;
    for (const Tensor& t : opt.state()) names.push_back(t.name());
    CHECK(names == std::vector<std::string>{"adam/step", "adam/p/m", "adam/p/v"});
    CHECK(opt.step_count().dtype() == int64);
    Session s(pr.g, {.threads = 1});
    for (int i = 0; i < 3; ++i) s.run({}, {}, {step});
    CHECK(s.get(opt.step_count()).item() == 3);
    // m after 3 steps is nonzero; the first moment follows the gradients' sign.
    CHECK(s.get(opt.state()[1]).at({3}) < 0);

    Problem pr2(float32);
    optim::SGD sgd({pr2.p}, {.momentum = 0.5, .name = "opt1"});
    sgd.minimize(pr2.loss);
    CHECK(sgd.state()[1].name() == "opt1/p/momentum");
  }

  TEST_CASE("clip by global norm") {
    Graph g;
    Tensor a = g.variable("a", {2}, values({0, 0})), b = g.variable("b", {2}, values({0, 0}));
    // Gradients (3, 4) and (0, 12): global norm 13.
    Tensor loss =
        sum(a * g.constant(NDArray::from<float>({3, 4}))) + sum(b * g.constant(NDArray::from<float>({0, 12})));
    auto grads = gradients(loss, {a, b});
    Tensor norm;
    auto clipped = optim::clip_by_global_norm(grads, 6.5, &norm);
    auto unclipped = optim::clip_by_global_norm(grads, 100.0);
    Session s(g, {.threads = 1});
    auto out = s.run({norm, clipped[0], clipped[1], unclipped[1]});
    CHECK(out[0].item() == doctest::Approx(13.0));
    const double k = 6.5 / (13.0 + 1e-6);
    CHECK(out[1].at({0}) == doctest::Approx(3 * k));
    CHECK(out[1].at({1}) == doctest::Approx(4 * k));
    CHECK(out[2].at({1}) == doctest::Approx(12 * k));
    CHECK(out[3].at({1}) == doctest::Approx(12.0));
    // Through an optimizer: SGD lr 1 moves by exactly the clipped gradient.
    optim::SGD opt({a, b}, {.lr = 1.0, .clip_norm = 1.3});
    Tensor step = opt.minimize(loss);
    Session s2(g, {.threads = 1});
    auto r = s2.run({opt.grad_norm()}, {}, {step});
    CHECK(r[0].item() == doctest::Approx(13.0));
    CHECK(s2.get(b).at({1}) == doctest::Approx(-12 * 1.3 / (13.0 + 1e-6)));
    // clip_by_value clamps each element (PyTorch's clip_grad_value_).
    auto by_value = optim::clip_by_value(grads, 3.5);
    const auto v = Session(g, {.threads = 1}).run({by_value[0], by_value[1]});
    CHECK(v[0].to_vector<float>() == std::vector<float>{3, 3.5});
    CHECK(v[1].to_vector<float>() == std::vector<float>{0, 3.5});
    CHECK(contains(error_of([&] { optim::clip_by_value(grads, -1.0); }), "clip_value must be finite and >= 0"));
    // max_norm 0 zeroes the gradients, as PyTorch's clip_grad_norm_; a negative one is refused.
    Tensor zeroed = optim::clip_by_global_norm(grads, 0.0)[1];
    CHECK(Session(g, {.threads = 1}).run({zeroed})[0].to_vector<float>() == std::vector<float>{0, 0});
    CHECK(contains(error_of([&] { optim::clip_by_global_norm(grads, -1.0); }), "max_norm must be finite and >= 0"));
  }

  TEST_CASE("a parameter the loss does not depend on is not updated, decay and momentum included (PyTorch)") {
    // PyTorch skips a parameter whose .grad is None; a zero gradient would still move it by weight decay.
    for (int kind = 0; kind < 3; ++kind) {
      CAPTURE(kind);
      Problem pr(float32);
      Tensor unused = pr.g.variable("unused", {3}, values({1.0, -2.0, 3.0}));
      Tensor frozen = pr.g.variable("frozen", {4}, values({1.0, 1.0, 1.0, 1.0}));
      Tensor loss = pr.loss + sum(stop_gradient(frozen) * pr.p);  // frozen reaches the loss, not its gradient
      std::unique_ptr<optim::Optimizer> opt;
      const std::vector<Tensor> params{pr.p, unused, frozen};
      if (kind == 0)
        opt = std::make_unique<optim::SGD>(
            params, optim::SGDOptions{.lr = 0.1, .momentum = 0.9, .weight_decay = 0.5, .clip_norm = 1.0});
      if (kind == 1) opt = std::make_unique<optim::AdamW>(params, optim::AdamWOptions{.lr = 0.1, .weight_decay = 0.5});
      if (kind == 2) opt = std::make_unique<optim::Adam>(params, optim::AdamOptions{.lr = 0.1, .weight_decay = 0.5});
      Tensor step = opt->minimize(loss);
      for (const Tensor& t : opt->state())  // no state for parameters that are never updated
        CHECK((t.name().find("unused") == std::string::npos && t.name().find("frozen") == std::string::npos));
      Session s(pr.g, {.threads = 1});
      for (int i = 0; i < 3; ++i) s.run({}, {}, {step});
      CHECK(s.get(unused).to_vector<float>() == std::vector<float>{1, -2, 3});
      CHECK(s.get(frozen).to_vector<float>() == std::vector<float>{1, 1, 1, 1});
      CHECK(s.get(pr.p).to_vector<float>() != std::vector<float>{0.5f, -1.5f, 2.0f, 0.25f});
      CHECK(s.get(opt->step_count()).item() == 3);
    }
    // Given gradients: an empty Tensor is "no gradient"; with none at all only the step count moves.
    Problem pr(float32);
    optim::SGD sgd({pr.p}, {.lr = 0.1, .weight_decay = 0.5, .clip_norm = 1.0});
    Tensor step = sgd.apply_gradients({Tensor()});
    Session s(pr.g, {.threads = 1});
    auto r = s.run({sgd.grad_norm()}, {}, {step});
    CHECK(r[0].item() == 0.0);
    CHECK(s.get(pr.p).to_vector<float>() == std::vector<float>{0.5f, -1.5f, 2.0f, 0.25f});
    CHECK(s.get(sgd.step_count()).item() == 1);
  }

  TEST_CASE("learning-rate schedules") {
    using optim::schedule::evaluate;
    auto st = optim::schedule::step(10, 0.5);
    CHECK(evaluate(st, 0) == 1.0);
    CHECK(evaluate(st, 9) == 1.0);
    CHECK(evaluate(st, 10) == 0.5);
    CHECK(evaluate(st, 25) == 0.25);
    auto cos = optim::schedule::cosine(100);
    CHECK(evaluate(cos, 0) == doctest::Approx(1.0));
    CHECK(evaluate(cos, 25) == doctest::Approx(0.5 * (1 + std::cos(M_PI / 4))));
    CHECK(evaluate(cos, 50) == doctest::Approx(0.5));
    CHECK(evaluate(cos, 100) == doctest::Approx(0.0));
    CHECK(evaluate(cos, 1000) == doctest::Approx(0.0));
    CHECK(evaluate(optim::schedule::cosine(100, 0.1), 50) == doctest::Approx(0.55));
    auto wu = optim::schedule::warmup(10);
    CHECK(evaluate(wu, 0) == doctest::Approx(0.1));
    CHECK(evaluate(wu, 4) == doctest::Approx(0.5));
    CHECK(evaluate(wu, 9) == doctest::Approx(1.0));
    CHECK(evaluate(wu, 50) == doctest::Approx(1.0));
    auto wc = optim::schedule::warmup(10, optim::schedule::cosine(100));
    CHECK(evaluate(wc, 4) == doctest::Approx(0.5));
    CHECK(evaluate(wc, 10) == doctest::Approx(1.0));
    CHECK(evaluate(wc, 60) == doctest::Approx(0.5));
    auto fn = optim::schedule::function([](int64_t s) { return 1.0 / double(s + 1); }, 4);
    CHECK(evaluate(fn, 2) == doctest::Approx(1.0 / 3));
    CHECK(evaluate(fn, 10) == doctest::Approx(0.25));
    CHECK(contains(error_of([] { optim::schedule::step(0); }), "step_size must be positive"));
    // Tabulated schedules refuse tables no run needs (a trainer's --epochs of 2^30 asked for 2 TB).
    CHECK(contains(error_of([] { optim::schedule::cosine(int64_t(1) << 40); }),
                   "schedule::cosine: total_steps must be in [1, 268435455] (it is tabulated), got 1099511627776"));
    CHECK(contains(error_of([] { optim::schedule::function([](int64_t) { return 1.0; }, int64_t(1) << 29); }),
                   "schedule::function: steps must be in [1, 268435456]"));

    // PyTorch's ExponentialLR, MultiStepLR, LinearLR, PolynomialLR and OneCycleLR stepped every update.
    for (int64_t k = 0; k < 14; ++k) {
      CAPTURE(k);
      const double t = double(k);
      CHECK(evaluate(optim::schedule::exponential(0.9), k) == doctest::Approx(std::pow(0.9, t)).epsilon(1e-14));
      CHECK(evaluate(optim::schedule::multi_step({3, 7, 8}, 0.5), k) == std::pow(0.5, (k >= 3) + (k >= 7) + (k >= 8)));
      CHECK(evaluate(optim::schedule::linear(0.25, 1.0, 6), k) ==
            doctest::Approx(0.25 + 0.75 * std::min(t, 6.0) / 6).epsilon(1e-14));
      CHECK(evaluate(optim::schedule::polynomial(6, 2.0), k) ==
            doctest::Approx(std::pow(1 - std::min(t, 6.0) / 6, 2.0)).epsilon(1e-14));
    }
    // torch.optim.lr_scheduler.OneCycleLR(max_lr=1, total_steps=13, pct_start=0.25, div_factor=10,
    // final_div_factor=100, cycle_momentum=False): lr at steps 0, 1, 2, 3, 8, 12.
    auto oc = optim::schedule::one_cycle(13, 0.25, 10, 100);
    const std::vector<std::pair<int64_t, double>> torch_one_cycle{
        {0, 0.1},   {1, 0.47185832004988126}, {2, 0.9728616793536587}, {3, 0.985485437804313}, {8, 0.3615303767737319},
        {12, 0.001}};
    for (const auto& [k, lr] : torch_one_cycle) CHECK(evaluate(oc, k) == doctest::Approx(lr).epsilon(1e-13));
    CHECK(evaluate(oc, 100) == doctest::Approx(0.001));  // past the end: the last rate (PyTorch raises)
    CHECK(contains(error_of([] { optim::schedule::multi_step({5, 5}); }), "milestones must be increasing"));
    CHECK(contains(error_of([] { optim::schedule::one_cycle(10, 1.0); }), "pct_start must be in (0, 1)"));

    // In an optimizer the rate of update k uses the factor at k (0-based).
    Problem pr(float32);
    optim::SGD opt({pr.p}, {.lr = 0.1, .schedule = optim::schedule::step(2, 0.5)});
    Tensor step = opt.minimize(pr.loss);
    Session s(pr.g, {.threads = 1});
    std::vector<double> lrs;
    for (int i = 0; i < 5; ++i) lrs.push_back(s.run({opt.learning_rate()}, {}, {step})[0].item());
    const std::vector<double> want{0.1, 0.1, 0.05, 0.05, 0.025};
    for (size_t i = 0; i < 5; ++i) CHECK(lrs[i] == doctest::Approx(want[i]));
  }

  TEST_CASE("RMSprop, Adagrad and AMSGrad match PyTorch's update") {
    const double tol64 = 1e-13, tol32 = 1e-4;
    for (DType dt : {float64, float32}) {
      const double tol = dt == float64 ? tol64 : tol32;
      for (auto o : std::vector<optim::RMSpropOptions>{
               {.lr = 0.01},
               {.lr = 0.01, .alpha = 0.9, .eps = 1e-6, .weight_decay = 0.1, .momentum = 0.5},
               {.lr = 0.005, .weight_decay = 0.01, .momentum = 0.9, .centered = true},
           }) {
        Problem pr(dt);
        optim::RMSprop opt({pr.p}, o);
        check_close(run(pr, opt, 5),
                    reference(5, rmsprop_ref(o.lr, o.alpha, o.eps, o.weight_decay, o.momentum, o.centered)), tol);
      }
      for (auto o : std::vector<optim::AdagradOptions>{
               {.lr = 0.1},
               {.lr = 0.1, .lr_decay = 0.5, .weight_decay = 0.1, .initial_accumulator_value = 0.2, .eps = 1e-6},
           }) {
        Problem pr(dt);
        optim::Adagrad opt({pr.p}, o);
        check_close(run(pr, opt, 5),
                    reference(5, adagrad_ref(o.lr, o.lr_decay, o.weight_decay, o.initial_accumulator_value, o.eps)),
                    tol);
      }
      {  // beta2 small so v falls and v_max holds the largest
        Problem pr(dt);
        optim::Adam opt({pr.p}, {.lr = 0.1, .beta2 = 0.5, .amsgrad = true});
        check_close(run(pr, opt, 6), reference(6, amsgrad_ref(0.1, 0.9, 0.5, 1e-8)), tol);
        std::vector<std::string> names;
        for (const Tensor& t : opt.state()) names.push_back(t.name());
        CHECK(names == std::vector<std::string>{"adam/step", "adam/p/m", "adam/p/v", "adam/p/v_max"});
      }
    }
  }

  TEST_CASE("Adamax, NAdam, RAdam and Adadelta give PyTorch's trajectories") {
    using Opt = std::unique_ptr<optim::Optimizer>;
    struct Case {
      const char* label;
      std::function<Opt(Problem&)> make;
      std::vector<double> want;  // p after each of 6 steps, PyTorch 2.15 in float64
    };
    // clang-format off
    const std::vector<Case> cases{
      {"adamax {.lr = 0.1}", [](Problem& pr) -> Opt { return std::make_unique<optim::Adamax>(Parameters{pr.p}, optim::AdamaxOptions{.lr = 0.1}); }, {0.40000000125, -1.4000000010526317, 1.9000000002439024, 0.3499999960000002, 0.3064854351378352, -1.3026727579062924, 1.802469864434465, 0.3868789813010906, 0.21938856961496642, -1.2080638890466562, 1.7074555251937722, 0.38641503794063115, 0.13862072192659347, -1.1162141166480317, 1.6149986520308581, 0.3675077362591305, 0.06407254252473901, -1.027159015657433, 1.5251364128441516, 0.3431487955946963, -0.004385506598260661, -0.9409287932291215, 1.4379012611862074, 0.32144297857622356}},
      {"adamax {.lr = 0.05, .beta1 = 0.8, .beta2 = 0.5, .eps = 1e-3, .weight_decay = 0.1}", [](Problem& pr) -> Opt { return std::make_unique<optim::Adamax>(Parameters{pr.p}, optim::AdamaxOptions{.lr = 0.05, .beta1 = 0.8, .beta2 = 0.5, .eps = 1e-3, .weight_decay = 0.1}); }, {0.4500587544065805, -1.4500454132606722, 1.950011625203441, 0.2997787610619469, 0.3985880371312515, -1.3994702073938747, 1.8994675886108972, 0.3614026157099225, 0.34542195054143704, -1.3482801080177211, 1.8483773854784638, 0.37494591848711467, 0.2903339941947303, -1.2964805415427376, 1.7967506389328325, 0.36476542976212434, 0.23300334335233217, -1.2440761046029791, 1.744596690064777, 0.34113950639027546, 0.1729550291843981, -1.1910699762800645, 1.6919241607102442, 0.2948611569964254}},
      {"nadam {.lr = 0.1}", [](Problem& pr) -> Opt { return std::make_unique<optim::NAdam>(Parameters{pr.p}, optim::NAdamOptions{.lr = 0.1}); }, {0.3943548234850259, -1.3943548232765157, 1.8943548224221323, 0.3556451736097319, 0.3210766216892318, -1.3180025583560835, 1.8178490146605406, 0.33469828183549305, 0.25552908405486746, -1.2477710793446288, 1.7473872682496543, 0.33738332390169207, 0.1928731331726544, -1.1786646782385193, 1.6779691244819057, 0.3359800727312124, 0.1319676232954115, -1.1092138107062142, 1.6081118280206763, 0.33578971997099777, 0.07281862210055645, -1.0390650600604205, 1.5374471617501466, 0.3351934659052271}},
      {"nadam {.lr = 0.05, .beta1 = 0.8, .beta2 = 0.9, .eps = 1e-4, .weight_decay = 0.1, .momentum_decay = 0.1}", [](Problem& pr) -> Opt { return std::make_unique<optim::NAdam>(Parameters{pr.p}, optim::NAdamOptions{.lr = 0.05, .beta1 = 0.8, .beta2 = 0.9, .eps = 1e-4, .weight_decay = 0.1, .momentum_decay = 0.1}); }, {0.44519460633625135, -1.4451931410845988, 1.9451894333072208, 0.3047874913609604, 0.40308483862382366, -1.4023184710601466, 1.9022557562160263, 0.3234247436019945, 0.3630713858833273, -1.3610972339982759, 1.8609443304387179, 0.3288618042505188, 0.3232083725090541, -1.3195397420492712, 1.8192633511636545, 0.32828837933967714, 0.28315442722702255, -1.2772248234772332, 1.7767872959159494, 0.32639684171141436, 0.24301847610100002, -1.2341764124949492, 1.733535750202948, 0.3249866399309167}},
      {"nadam {.lr = 0.1, .weight_decay = 0.2, .decoupled_weight_decay = true}", [](Problem& pr) -> Opt { return std::make_unique<optim::NAdam>(Parameters{pr.p}, optim::NAdamOptions{.lr = 0.1, .weight_decay = 0.2, .decoupled_weight_decay = true}); }, {0.38435482348502586, -1.3643548232765157, 1.8543548224221322, 0.3506451736097319, 0.30392778400370946, -1.261320674126917, 1.741507258834597, 0.32854236388841085, 0.23318736821502958, -1.1669156899766664, 1.6375275088436807, 0.3332764459536981, 0.16707165199366397, -1.075970247112978, 1.5372459545416737, 0.3321921225278191, 0.10432764415896989, -0.986965484235945, 1.4391412699438695, 0.33284608861240134, 0.044861865900135814, -0.8995304182516228, 1.3428404149002533, 0.33254680017529076}},
      {"radam {.lr = 0.1}", [](Problem& pr) -> Opt { return std::make_unique<optim::RAdam>(Parameters{pr.p}, optim::RAdamOptions{.lr = 0.1}); }, {0.42, -1.405, 1.59, 0.275, 0.34421052631578947, -1.3125, 1.2231578947368422, 0.2960526315789474, 0.2726160419498932, -1.2225369003690036, 0.8977218877451933, 0.3134637793746359, 0.20518930407161162, -1.1351432263304895, 0.6118007482855625, 0.3275453890464281, 0.14189135608151848, -1.0503469278681492, 0.3633783243157899, 0.33861236503754816, 0.13944814029986088, -1.0478174420228774, 0.36124840168581124, 0.34021136929703355}},
      {"radam {.lr = 0.1, .beta2 = 0.6, .weight_decay = 0.1}", [](Problem& pr) -> Opt { return std::make_unique<optim::RAdam>(Parameters{pr.p}, optim::RAdamOptions{.lr = 0.1, .beta2 = 0.6, .weight_decay = 0.1}); }, {0.415, -1.3900000000000001, 1.57, 0.2725, 0.3349210526315789, -1.2834736842105263, 1.1875263157894738, 0.2913289473684211, 0.2597268401631384, -1.18045950670033, 0.8504744610604, 0.30678486113808506, 0.1893666666741964, -1.080988977665905, 0.556589869462001, 0.31917034143218337, 0.12377556845930886, -0.9850864177590886, 0.30348589836404843, 0.3287895190381727, 0.06287454890780492, -0.8927687585459461, 0.08866353800060373, 0.33594498801668443}},
      {"radam {.lr = 0.1, .beta2 = 0.6, .weight_decay = 0.2, .decoupled_weight_decay = true}", [](Problem& pr) -> Opt { return std::make_unique<optim::RAdam>(Parameters{pr.p}, optim::RAdamOptions{.lr = 0.1, .beta2 = 0.6, .weight_decay = 0.2, .decoupled_weight_decay = true}); }, {0.41, -1.375, 1.55, 0.27, 0.3265368421052631, -1.2557894736842103, 1.1563684210526315, 0.2864421052631579, 0.2493958896873179, -1.1422550592348026, 0.8153909846572148, 0.29968646183724995, 0.17835449566263073, -1.0342788794582107, 0.5233301807474621, 0.31008403618520175, 0.11318266744050948, -0.9317386108181106, 0.27644710437279574, 0.31797420007321286, 0.05364382052849079, -0.8345075975026928, 0.07102367541964205, 0.3236824602748324}},
      {"adadelta {}", [](Problem& pr) -> Opt { return std::make_unique<optim::Adadelta>(Parameters{pr.p}, optim::AdadeltaOptions{}); }, {0.49683774704483635, -1.4968377398592299, 1.9968377232804253, 0.2531620247083094, 0.49359943846523036, -1.4935958910766813, 1.9935956694188055, 0.2563460888632769, 0.49031326111157536, -1.4903012396779622, 1.9903005505061533, 0.2595021279199216, 0.48699318622699245, -1.4869669749990142, 1.9869655143943799, 0.2626048048663107, 0.4836475488409662, -1.483600921307815, 1.9835983580326888, 0.2656393976851841, 0.4802818795505196, -1.4802082441048492, 1.9802042271866511, 0.26859681764785576}},
      {"adadelta {.lr = 0.5, .rho = 0.5, .eps = 1e-3, .weight_decay = 0.1}", [](Problem& pr) -> Opt { return std::make_unique<optim::Adadelta>(Parameters{pr.p}, optim::AdadeltaOptions{.lr = 0.5, .rho = 0.5, .eps = 1e-3, .weight_decay = 0.1}); }, {0.47767020515655884, -1.4776577772481843, 1.9776405294659933, 0.2719316580472861, 0.45214849237314925, -1.4519690568446475, 1.9519172943474221, 0.2935046327286991, 0.4244302379073958, -1.4238281380251963, 1.9237180451423026, 0.31020990717322056, 0.3950215601891519, -1.3936631871822904, 1.893465585574073, 0.31932802866781634, 0.3642496874467777, -1.3617349516437725, 1.861416017001194, 0.3221960285469804, 0.33236023648706703, -1.328227903993984, 1.827749549525538, 0.3225877242453172}},
    };
    // clang-format on
    for (const Case& c : cases)
      for (DType dt : {float64, float32}) {
        CAPTURE(std::string(c.label));
        CAPTURE(dtype_name(dt));
        Problem pr(dt);
        Opt opt = c.make(pr);
        const auto got = run(pr, *opt, 6);
        for (size_t t = 0; t < 6; ++t)
          for (size_t i = 0; i < 4; ++i)
            CHECK(got[t][i] == doctest::Approx(c.want[t * 4 + i]).epsilon(dt == float64 ? 1e-13 : 1e-5));
      }
    Problem pr(float64);
    optim::NAdam nadam({pr.p});
    run(pr, nadam, 1);
    std::vector<std::string> names;
    for (const Tensor& t : nadam.state()) names.push_back(t.name() + " " + shape_str(t.shape()));
    CHECK(names == std::vector<std::string>{"nadam/step []", "nadam/p/exp_avg [4]", "nadam/p/exp_avg_sq [4]",
                                            "nadam/p/mu_product []"});
  }

  TEST_CASE("ReduceLROnPlateau: PyTorch's factors epoch by epoch; the optimizer's lr follows; checkpoints keep it") {
    // clang-format off
    const std::vector<double> metrics{1.0, 0.9, 0.95, 0.9, 0.91, 0.89995, 0.92, 0.5, 0.6, 0.7, NAN, 0.8, 0.4, 0.45, 0.45, 0.45, 0.45, -1.0, -0.99995, -1.2, -1.1, -1.1, -1.1};
    const std::vector<optim::PlateauOptions> options{
      {},
      {.patience = 1},
      {.maximize = true, .factor = 0.5, .patience = 1},
      {.factor = 0.5, .patience = 0, .threshold = 0.05, .relative = false, .cooldown = 2, .min_factor = 0.2},
      {.factor = 0.4, .patience = 2, .eps = 0.5},
    };
    // torch.optim.lr_scheduler.ReduceLROnPlateau over SGD(lr=1), PyTorch 2.15: the lr after each step(metric).
    const std::vector<std::vector<double>> want{
      {1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0},
      {1.0, 1.0, 1.0, 0.1, 0.1, 0.010000000000000002, 0.010000000000000002, 0.010000000000000002, 0.010000000000000002, 0.0010000000000000002, 0.0010000000000000002, 0.00010000000000000003, 0.00010000000000000003, 0.00010000000000000003, 1.0000000000000004e-05, 1.0000000000000004e-05, 1.0000000000000004e-06, 1.0000000000000004e-06, 1.0000000000000004e-06, 1.0000000000000004e-06, 1.0000000000000004e-06, 1.0000000000000005e-07, 1.0000000000000005e-07},
      {1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125, 0.0625, 0.0625, 0.03125, 0.03125, 0.015625, 0.015625, 0.0078125, 0.0078125, 0.00390625, 0.00390625, 0.001953125, 0.001953125, 0.0009765625, 0.0009765625, 0.00048828125},
      {1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2},
      {1.0, 1.0, 1.0, 1.0, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4},
    };
    // clang-format on
    for (size_t c = 0; c < options.size(); ++c) {
      CAPTURE(c);
      Problem pr(float64);
      optim::ReduceLROnPlateau plateau(pr.g, options[c]);
      optim::SGD opt({pr.p}, {.lr = 0.5, .schedule = plateau.schedule()});
      Tensor step = opt.minimize(pr.loss);
      Session s(pr.g);
      for (size_t e = 0; e < metrics.size(); ++e) {
        CAPTURE(e);
        const double before = plateau.factor(s);
        const bool reduced = plateau.step(s, metrics[e]);
        CHECK(reduced == (plateau.factor(s) < before));
        CHECK(plateau.factor(s) == doctest::Approx(want[c][e]).epsilon(1e-15));
        // The next update's lr is the base lr times the factor.
        CHECK(s.run({opt.learning_rate()}, {}, {step})[0].item() == doctest::Approx(0.5 * want[c][e]).epsilon(1e-15));
      }
    }
    // Its state is variables: a checkpoint of the session carries it to another.
    Problem pr(float64);
    optim::ReduceLROnPlateau plateau(pr.g, {.patience = 0});
    optim::Adam opt({pr.p}, {.schedule = plateau.schedule()});
    opt.minimize(pr.loss);
    Session s(pr.g);
    plateau.step(s, 1.0);
    CHECK(plateau.step(s, 2.0));
    test::TempDir dir;
    checkpoint::save(s, dir.path / "plateau.safetensors");
    Session resumed(pr.g);
    checkpoint::load(resumed, dir.path / "plateau.safetensors");
    CHECK(plateau.factor(resumed) == doctest::Approx(0.1));
    CHECK_FALSE(plateau.step(resumed, 0.5));  // better than the saved best 1.0
    CHECK(plateau.step(resumed, 0.6));
    CHECK(plateau.factor(resumed) == doctest::Approx(0.01));
    Problem other(float64);
    CHECK(contains(error_of([&] {
                     optim::SGD bad({other.p}, {.schedule = plateau.schedule()});
                     bad.minimize(other.loss);
                   }),
                   "plateau: its schedule is for an optimizer of the graph it was built in"));
    CHECK(contains(error_of([&] { optim::ReduceLROnPlateau p(pr.g, {.factor = 1.0, .name = "p2"}); }),
                   "p2: factor must be in [0, 1), got 1"));
  }

  TEST_CASE("maximize ascends: every optimizer takes the negated gradient (PyTorch's maximize)") {
    // Maximizing -loss from the same start is minimizing loss: the same trajectory.
    auto negated = [](DType dt) {
      auto pr = std::make_unique<Problem>(dt);
      pr->loss = -pr->loss;
      return pr;
    };
    for (int kind = 0; kind < 9; ++kind) {
      CAPTURE(kind);
      auto make = [kind](Problem& pr, bool maximize) -> std::unique_ptr<optim::Optimizer> {
        if (kind == 0)
          return std::make_unique<optim::SGD>(
              Parameters{pr.p},
              optim::SGDOptions{.lr = 0.1, .momentum = 0.9, .weight_decay = 0.1, .maximize = maximize});
        if (kind == 1)
          return std::make_unique<optim::Adam>(
              Parameters{pr.p}, optim::AdamOptions{.lr = 0.1, .weight_decay = 0.1, .maximize = maximize});
        if (kind == 2)
          return std::make_unique<optim::AdamW>(Parameters{pr.p}, optim::AdamWOptions{.lr = 0.1, .maximize = maximize});
        if (kind == 3)
          return std::make_unique<optim::RMSprop>(
              Parameters{pr.p},
              optim::RMSpropOptions{.lr = 0.1, .weight_decay = 0.1, .centered = true, .maximize = maximize});
        if (kind == 4)
          return std::make_unique<optim::Adagrad>(
              Parameters{pr.p}, optim::AdagradOptions{.lr = 0.1, .weight_decay = 0.1, .maximize = maximize});
        if (kind == 5)
          return std::make_unique<optim::Adamax>(
              Parameters{pr.p}, optim::AdamaxOptions{.lr = 0.1, .weight_decay = 0.1, .maximize = maximize});
        if (kind == 6)
          return std::make_unique<optim::NAdam>(
              Parameters{pr.p}, optim::NAdamOptions{.lr = 0.1, .weight_decay = 0.1, .maximize = maximize});
        if (kind == 7)
          return std::make_unique<optim::RAdam>(
              Parameters{pr.p}, optim::RAdamOptions{.lr = 0.1, .weight_decay = 0.1, .maximize = maximize});
        return std::make_unique<optim::Adadelta>(Parameters{pr.p},
                                                 optim::AdadeltaOptions{.weight_decay = 0.1, .maximize = maximize});
      };
      Problem down(float64);
      auto neg = negated(float64);
      auto a = make(down, false), b = make(*neg, true);
      check_close(run(*neg, *b, 4), run(down, *a, 4), 1e-15);
    }
  }

  TEST_CASE("parameter groups: their own lr and weight decay, the schedule scaling all") {
    Graph g;
    Tensor w = g.variable("w", {4}, values(kP0), float64), b = g.variable("b", {4}, values(kP0), float64);
    Tensor a = g.constant(NDArray::from(kA)), c = g.constant(NDArray::from(kC));
    Tensor loss = sum(w * w * a * 0.5 + c * w) + sum(b * b * a * 0.5 + c * b);
    auto sched = optim::schedule::step(2, 0.5);
    optim::SGD opt({w, b}, {.lr = 0.1,
                            .weight_decay = 0.2,
                            .schedule = sched,
                            .groups = {{.params = {b}, .lr = 0.05, .weight_decay = 0.0}}});
    Tensor step = opt.minimize(loss);
    Session s(g, {.threads = 1});
    std::vector<double> pw = kP0, pb = kP0;
    for (int t = 0; t < 4; ++t) {
      s.run({}, {}, {step});
      double f = t < 2 ? 1.0 : 0.5;
      for (size_t i = 0; i < 4; ++i) {
        pw[i] -= 0.1 * f * (kA[i] * pw[i] + kC[i] + 0.2 * pw[i]);
        pb[i] -= 0.05 * f * (kA[i] * pb[i] + kC[i]);
      }
      auto gw = s.get(w).to_vector<double>(), gb = s.get(b).to_vector<double>();
      for (size_t i = 0; i < 4; ++i) {
        CHECK(gw[i] == doctest::Approx(pw[i]).epsilon(1e-14));
        CHECK(gb[i] == doctest::Approx(pb[i]).epsilon(1e-14));
      }
    }
    // A group that sets only the decay keeps the options' lr (AdamW: decay 0 is plain Adam).
    Graph g2;
    Tensor p = g2.variable("p", {4}, values(kP0), float64);
    Tensor l2 = sum(p * p * g2.constant(NDArray::from(kA)) * 0.5 + g2.constant(NDArray::from(kC)) * p);
    optim::AdamW adamw({p}, {.lr = 0.02, .groups = {{.params = {p}, .weight_decay = 0.0}}});
    Tensor st2 = adamw.minimize(l2);
    Session s2(g2, {.threads = 1});
    std::vector<std::vector<double>> got;
    for (int t = 0; t < 3; ++t) {
      s2.run({}, {}, {st2});
      got.push_back(s2.get(p).to_vector<double>());
    }
    check_close(got, reference(3, adam_ref(0.02, 0.9, 0.999, 1e-8, 0.0, true)), 1e-13);

    Tensor other = g.variable("other", {2}, values({1.0, 2.0}));
    CHECK(contains(error_of([&] { optim::SGD bad({w}, {.groups = {{.params = {other}}}}); }),
                   "sgd: parameter group 0 lists 'other', which is not among the parameters it trains"));
    CHECK(contains(error_of([&] {
                     optim::SGD bad({w, b}, {.groups = {{.params = {w}}, {.params = {w, b}}}});
                   }),
                   "parameter 'w' is in groups 0 and 1"));
    CHECK(contains(error_of([&] { optim::SGD bad({w}, {.groups = {{.params = {w}, .lr = -1.0}}}); }),
                   "sgd group 0: lr must be finite and >= 0, got -1"));
    CHECK(contains(error_of([&] { optim::SGD bad({w}, {.groups = {{}}}); }), "parameter group 0 is empty"));
  }

  TEST_CASE("optimizer errors say what is wrong") {
    Graph g;
    Tensor x = g.placeholder("x", {-1, 3});
    nn::Linear lin(3, 2);
    CHECK(contains(error_of([&] { optim::Adam opt(lin); }), "has no parameters yet"));
    Tensor y = lin(x);
    CHECK(contains(error_of([&] { optim::SGD opt({y}); }), "is not a variable"));
    CHECK(contains(error_of([&] { optim::SGD opt(std::vector<Tensor>{}); }), "no parameters to optimize"));
    CHECK(contains(error_of([&] { optim::SGD opt({lin.weight(), lin.weight()}); }), "listed twice"));
    CHECK(contains(error_of([&] { optim::SGD opt(lin, {.nesterov = true}); }), "Nesterov momentum requires"));
    CHECK(contains(error_of([&] { optim::Adam opt(lin, {.beta1 = 1.0}); }), "beta1 must be in [0, 1)"));
    CHECK(contains(error_of([&] { optim::NAdam opt(lin, {.beta2 = -0.5}); }), "nadam: beta2 must be in [0, 1)"));
    CHECK(contains(error_of([&] { optim::RAdam opt(lin, {.eps = -1}); }), "radam: eps must be finite and >= 0"));
    CHECK(contains(error_of([&] { optim::Adadelta opt(lin, {.rho = 1.5}); }), "adadelta: rho must be in [0, 1]"));
    CHECK(contains(error_of([&] { optim::Adamax opt(lin, {.beta1 = NAN}); }), "adamax: beta1 must be in [0, 1)"));
    CHECK(contains(error_of([&] { optim::SGD opt(lin, {.lr = -1}); }), "lr must be finite and >= 0"));
    optim::Adam opt(lin);
    CHECK(contains(error_of([&] { opt.minimize(y); }), "must be a scalar, got [?,2]"));
    CHECK(contains(error_of([&] { opt.apply_gradients({y}); }), "1 gradients for 2 parameters"));
    Graph other;
    Tensor z = other.scalar(1.0);
    CHECK(contains(error_of([&] { opt.minimize(z); }), "belongs to another graph"));
  }
}
