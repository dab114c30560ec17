// Short real training runs through the whole frontend: DataLoader feeds,
// modules, optimizer steps in one Session::run each; the loss must fall, the
// runs must be reproducible, and the serial and parallel executors must agree.

#include <cmath>

// util.hpp (and core/philox.hpp in it) before ops/ops.hpp: philox must see the C math functions.
#include "tests/util.hpp"

#include "frontend/loom.hpp"

using namespace loom;

namespace {

/// Three Gaussian blobs in 2-D, 80 points each: an easy, non-linear-free task.
std::shared_ptr<data::TensorDataset> blobs() {
  const int64_t per = 80, n = 3 * per;
  NDArray x = NDArray::empty({n, 2}), y = NDArray::empty({n}, int64);
  const double cx[3] = {-2, 2, 0}, cy[3] = {-1, -1, 2};
  for (int64_t i = 0; i < n; ++i) {
    int64_t c = i % 3;
    x.data<float>()[2 * i] = float(cx[c] + 0.7 * philox::normal(11, 0, uint64_t(2 * i)));
    x.data<float>()[2 * i + 1] = float(cy[c] + 0.7 * philox::normal(11, 0, uint64_t(2 * i + 1)));
    y.data<int64_t>()[i] = c;
  }
  return std::make_shared<data::TensorDataset>(std::vector<NDArray>{x, y});
}

struct Run {
  std::vector<double> losses;
  double eval_acc = 0;
  std::vector<NDArray> final_vars;
  std::vector<std::pair<std::string, NDArray>> final;  // by variable name
};

Run train(nn::Module& model, const std::string& opt_name, SessionOptions so, int epochs) {
  Graph g;
  Tensor x = g.placeholder("x", {-1, 2});
  Tensor y = g.placeholder("y", {-1}, int64);
  model.train();
  Tensor loss = nn::cross_entropy(model(x), y);
  model.eval();
  Tensor acc = nn::accuracy(model(x), y);
  std::unique_ptr<optim::Optimizer> opt;
  if (opt_name == "adam")
    opt = std::make_unique<optim::Adam>(model, optim::AdamOptions{.lr = 0.02});
  else
    opt = std::make_unique<optim::SGD>(model, optim::SGDOptions{.lr = 0.1, .momentum = 0.9, .nesterov = true});
  Tensor step = opt->minimize(loss);
  Session s(g, so);
  auto ds = blobs();
  data::DataLoader loader(ds, {.batch_size = 24, .shuffle = true, .seed = 5});
  Run r;
  for (int e = 0; e < epochs; ++e) {
    double total = 0;
    for (const data::Batch& b : loader.epoch(e)) total += s.run({loss}, {{x, b[0]}, {y, b[1]}}, {step})[0].item();
    r.losses.push_back(total / double(loader.size()));
  }
  data::DataLoader all(ds, {.batch_size = ds->size()});
  data::Batch b = all.batch(0, 0);
  r.eval_acc = s.run1(acc, {{x, b[0]}, {y, b[1]}}).item();
  for (const Tensor& v : g.variables()) {
    r.final_vars.push_back(s.get(v));
    r.final.emplace_back(v.name(), r.final_vars.back());
  }
  return r;
}

}  // namespace

TEST_SUITE("frontend/train") {
  TEST_CASE("an MLP learns the blobs; runs are reproducible") {
    auto make = [] { return nn::Sequential{nn::Linear(2, 16), nn::ReLU(), nn::Linear(16, 3)}; };
    for (const char* opt : {"adam", "sgd"}) {
      INFO(opt);
      auto m1 = make();
      Run a = train(m1, opt, {.threads = 1, .seed = 3}, 6);
      CHECK(a.losses.back() < 0.5 * a.losses.front());
      CHECK(a.losses.back() < 0.3);
      CHECK(a.eval_acc > 0.9);
      auto m2 = make();
      Run b = train(m2, opt, {.threads = 1, .seed = 3}, 6);
      CHECK(a.losses == b.losses);
    }
  }

  TEST_CASE("MLPResNet with BatchNorm and dropout trains; its running statistics move") {
    nn::MLPResNet net(2, {.hidden = 16, .blocks = 2, .classes = 3, .dropout = 0.1});
    Run r = train(net, "adam", {.threads = 2, .seed = 4}, 5);
    CHECK(r.losses.back() < 0.6 * r.losses.front());
    CHECK(r.eval_acc > 0.85);
    // Every running mean left zero and every running variance left one.
    int buffers = 0, moved = 0;
    for (auto& [name, val] : r.final) {
      bool var = test::contains(name, "running_var");
      if (!var && !test::contains(name, "running_mean")) continue;
      ++buffers;
      moved += std::fabs(val.at({0}) - (var ? 1.0 : 0.0)) > 1e-4;
    }
    CHECK(buffers == 2 * 2 * 2);
    CHECK(moved == buffers);
  }

  TEST_CASE("serial and parallel executors give identical training") {
    auto make = [] { return nn::Sequential{nn::Linear(2, 32), nn::LayerNorm1d(32), nn::Tanh(), nn::Linear(32, 3)}; };
    auto m1 = make(), m2 = make();
    Run a = train(m1, "adam", {.threads = 2, .executor = Executor::serial, .seed = 8}, 2);
    Run b = train(m2, "adam", {.threads = 2, .executor = Executor::parallel, .seed = 8}, 2);
    CHECK(a.losses == b.losses);
    REQUIRE(a.final_vars.size() == b.final_vars.size());
    for (size_t i = 0; i < a.final_vars.size(); ++i) CHECK(test::identical(a.final_vars[i], b.final_vars[i]));
  }
}
