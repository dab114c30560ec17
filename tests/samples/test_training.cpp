// What the image trainers share (samples/training.hpp): a resumed run's
// learning-rate schedule spans the epochs the checkpoint trained and the new
// ones (it once ended with the checkpoint's epochs, so a resumed run trained
// at a cosine schedule's final rate, 0); an unwritable --save stops the run
// before its first epoch.

#include <cmath>
#include <numbers>

#include "samples/training.hpp"
#include "tests/util.hpp"

using namespace loom;

namespace {

struct Args {
  std::string opt = "sgd", schedule = "cosine", save;
  bool json = true;
  double lr = 0.1, momentum = 0, wd = 0, clip = 0;
  bool nesterov = false;
  int64_t epochs = 1, warmup = 0;
};

/// The rate of each of `steps` updates of make_optimizer(a, ..., steps_per_epoch, epochs_before).
std::vector<double> rates(const Args& a, int64_t steps_per_epoch, int64_t epochs_before, int steps) {
  Graph g;
  nn::Linear lin(2, 1);
  Tensor x = g.placeholder("x", {1, 2});
  Tensor loss = sum(lin(x));
  auto opt = samples::make_optimizer(a, lin, steps_per_epoch, epochs_before);
  Tensor step = opt->minimize(loss);
  Session s(g, {.threads = 1});
  s.initialize();
  std::vector<double> r;
  for (int i = 0; i < steps; ++i)
    r.push_back(s.run({opt->learning_rate()}, {{x, NDArray::full({1, 2}, 1.0)}}, {step})[0].item());
  return r;
}

/// A trainer that only counts what run_training asks of it.
struct CountingTrainer {
  int trained = 0, saved = 0;
  int64_t saved_epoch = -1;
  int64_t restore() { return 1; }
  void print_setup() {}
  samples::EpochResult train_epoch(int64_t, int64_t) {
    ++trained;
    return {.loss = 1, .accuracy = 0.5, .seconds = 1, .images = 1};
  }
  double evaluate() { return 0.5; }
  void save(int64_t e) { ++saved, saved_epoch = e; }
  void finish() {}
};

}  // namespace

TEST_SUITE("samples/training") {
  TEST_CASE("a resumed run's cosine schedule spans the checkpoint's epochs and --epochs more") {
    Args a;
    // 3 epochs trained before, 1 more, 10 steps each: the schedule runs over 40 steps.
    const std::vector<double> r = rates(a, 10, 3, 35);
    for (int k : {0, 10, 30, 34})
      CHECK(r[size_t(k)] == doctest::Approx(0.1 * 0.5 * (1 + std::cos(std::numbers::pi * k / 40.0))));
    CHECK(r[30] > 0.01);  // a schedule over the new epoch alone would be 0 from step 10 on
    // A fresh run: over its own --epochs.
    CHECK(rates(a, 10, 0, 6)[5] == doctest::Approx(0.1 * 0.5 * (1 + std::cos(std::numbers::pi * 5 / 10.0))));
  }

  TEST_CASE("--schedule plateau: the rate halves after an epoch whose training loss did not fall") {
    Args a;
    a.schedule = "plateau";
    Graph g;
    nn::Linear lin(2, 1);
    Tensor x = g.placeholder("x", {1, 2});
    Tensor loss = sum(lin(x));
    std::unique_ptr<optim::ReduceLROnPlateau> plateau;
    auto opt = samples::make_optimizer(a, lin, 10, 0, &plateau);
    REQUIRE(plateau);
    Tensor step = opt->minimize(loss);
    Session s(g, {.threads = 1});
    auto rate = [&] { return s.run({opt->learning_rate()}, {{x, NDArray::full({1, 2}, 1.0)}}, {step})[0].item(); };
    CHECK(rate() == doctest::Approx(0.1));
    plateau->step(s, 1.0);
    CHECK(rate() == doctest::Approx(0.1));
    plateau->step(s, 1.0);  // no better: halved
    CHECK(rate() == doctest::Approx(0.05));
    plateau->step(s, 0.5);
    CHECK(rate() == doctest::Approx(0.05));
    // A caller that cannot step it (no place for it) is told the schedule is unknown.
    CHECK(test::contains(test::error_of([&] { samples::make_optimizer(a, lin, 10, 0); }),
                         "unknown --schedule 'plateau' (none, cosine, step)"));
  }

  TEST_CASE("--save: refused before the first epoch when unwritable; after every epoch, or once with --epochs 0") {
    test::TempDir dir;
    auto run = [&](int64_t epochs, const std::string& save, std::string* err = nullptr) {
      Args a;
      a.epochs = epochs;
      a.save = save;
      CountingTrainer t;
      const std::string e = test::error_of([&] { samples::run_training(t, a, true); });
      if (err)
        *err = e;
      else
        CHECK(e.empty());
      return t;
    };
    std::string err;
    CountingTrainer t = run(2, dir / "no/such/dir/model.safetensors", &err);
    CHECK(test::contains(err, "no/such/dir/model.safetensors"));
    CHECK(t.trained + t.saved == 0);
    t = run(2, dir / "model.safetensors");
    CHECK(t.trained == 2);
    CHECK(t.saved == 2);
    t = run(0, dir / "model.safetensors");  // saves what it evaluated
    CHECK(t.trained == 0);
    CHECK(t.saved == 1);
    CHECK(t.saved_epoch == 0);  // no epoch trained: a resumed run starts at epoch 1
  }
}
