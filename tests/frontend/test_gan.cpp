// A GAN: two optimizers in one graph, each stepping its own module, the
// discriminator's loss cut off from the generator by stop_gradient. The
// course's 2-D Gaussian GAN (samples/gan_example.cpp) must learn the data's mean.

#include <cmath>
#include <random>

#include "frontend/nn.hpp"
#include "frontend/optim.hpp"
#include "tests/util.hpp"

using namespace loom;
using test::contains;
using test::error_of;

TEST_SUITE("frontend/gan") {
  TEST_CASE("two optimizers of one graph need distinct names; the message says so") {
    Graph g;
    Tensor x = g.placeholder("x", {4, 2});
    nn::Linear a(2, 2), b(2, 2);
    Tensor la = sum(a(x)), lb;
    {
      auto scope = g.scope("b");
      lb = sum(b(x));
    }
    optim::Adam first(a), second(b);
    first.minimize(la);
    CHECK(contains(error_of([&] { second.minimize(lb); }),
                   "another optimizer of this graph already keeps its state under the name 'adam'"));
    optim::Adam named(b, {.name = "adam_b"});
    CHECK(named.minimize(lb).valid());
  }

  TEST_CASE("the course's 2-D Gaussian GAN: the generator learns the data's mean, the discriminator is left guessing") {
    const int64_t batch = 256;
    Graph g;
    Tensor z = g.placeholder("z", {batch, 2}), real = g.placeholder("real", {batch, 2});
    nn::Linear generator(2, 2);
    nn::Sequential discriminator{nn::Linear(2, 20), nn::ReLU(), nn::Linear(20, 10), nn::ReLU(), nn::Linear(10, 2)};
    Tensor fake = generator(z);
    Tensor ones = g.constant(NDArray::full({batch}, 1, int64)), zeros = g.constant(NDArray::full({batch}, 0, int64));
    Tensor d_loss =
        nn::cross_entropy(discriminator(real), ones) + nn::cross_entropy(discriminator(stop_gradient(fake)), zeros);
    Tensor g_loss = nn::cross_entropy(discriminator(fake), ones);
    optim::Adam d_opt(discriminator, {.lr = 3e-3, .name = "d"}), g_opt(generator, {.lr = 3e-3, .name = "g"});
    Tensor d_step = d_opt.minimize(d_loss), g_step = g_opt.minimize(g_loss);
    Tensor fake_mean = mean(fake, {0});

    const float A[2][2] = {{1, 2}, {-0.2f, 0.5f}}, mu[2] = {2, 1};
    std::mt19937 rng(0);
    std::normal_distribution<float> normal;
    auto noise = [&] {
      NDArray a = NDArray::empty({batch, 2});
      for (int64_t i = 0; i < a.numel(); ++i) a.data<float>()[i] = normal(rng);
      return a;
    };
    auto data = [&] {
      NDArray e = noise(), d = NDArray::empty({batch, 2});
      for (int64_t i = 0; i < batch; ++i)
        for (int j = 0; j < 2; ++j)
          d.data<float>()[i * 2 + j] = e.data<float>()[i * 2] * A[0][j] + e.data<float>()[i * 2 + 1] * A[1][j] + mu[j];
      return d;
    };
    Session s(g, {.seed = 1});
    const NDArray g0 = s.get(generator.parameters()[0]);
    double dl = 0;
    for (int step = 0; step < 3000; ++step) {
      dl = s.run({d_loss}, {{z, noise()}, {real, data()}}, {d_step})[0].item();
      if (step > 0) {
        s.run({g_loss}, {{z, noise()}}, {g_step});
        continue;
      }
      CHECK(test::identical(s.get(generator.parameters()[0]), g0));  // D's step leaves G alone
      const NDArray d_now = s.get(discriminator.parameters()[0]);
      s.run({g_loss}, {{z, noise()}}, {g_step});
      CHECK(!test::identical(s.get(generator.parameters()[0]), g0));        // G's step moves G
      CHECK(test::identical(s.get(discriminator.parameters()[0]), d_now));  // and leaves D alone
    }
    const NDArray m = s.run1(fake_mean, {{z, noise()}});
    CHECK(std::abs(m.data<float>()[0] - mu[0]) < 0.3);
    CHECK(std::abs(m.data<float>()[1] - mu[1]) < 0.3);
    CHECK(std::abs(dl - 2 * std::log(2.0)) < 0.1);  // the equilibrium: D's loss log 2 on each half
  }
}
