// The README's GAN example (section "Generative adversarial networks"),
// verbatim: the course's GAN on 2-D Gaussian data, where a one-layer
// generator learns to map N(0, I) onto the data's distribution.
#include <cstdio>
#include <random>

#include "frontend/loom.hpp"
using namespace loom;

int main() {
  const int64_t batch = 256;
  Graph g;
  Tensor z = g.placeholder("z", {batch, 2}), real = g.placeholder("real", {batch, 2});
  nn::Linear generator(2, 2);
  nn::Sequential discriminator{nn::Linear(2, 20), nn::ReLU(), nn::Linear(20, 10), nn::ReLU(), nn::Linear(10, 2)};
  Tensor fake = generator(z);
  Tensor is_real = g.constant(NDArray::full({batch}, 1, int64)), is_fake = g.constant(NDArray::full({batch}, 0, int64));
  // The discriminator learns to tell real from fake; stop_gradient keeps its step off the generator.
  Tensor d_loss =
      nn::cross_entropy(discriminator(real), is_real) + nn::cross_entropy(discriminator(stop_gradient(fake)), is_fake);
  // The generator learns to have its samples taken for real.
  Tensor g_loss = nn::cross_entropy(discriminator(fake), is_real);
  // Two optimizers in one graph: each keeps its state under its own name.
  optim::Adam d_opt(discriminator, {.lr = 3e-3, .name = "d_adam"}), g_opt(generator, {.lr = 3e-3, .name = "g_adam"});
  Tensor d_step = d_opt.minimize(d_loss), g_step = g_opt.minimize(g_loss);
  Tensor fake_mean = mean(fake, {0});

  // The data: N(0, I) times A, plus mu (mean mu, covariance A^T A).
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
    const float* pe = e.data<float>();
    for (int64_t i = 0; i < batch; ++i)
      for (int j = 0; j < 2; ++j) d.data<float>()[i * 2 + j] = pe[i * 2] * A[0][j] + pe[i * 2 + 1] * A[1][j] + mu[j];
    return d;
  };

  Session s(g, {.seed = 1});
  for (int step = 0; step <= 3000; ++step) {
    double dl = s.run({d_loss}, {{z, noise()}, {real, data()}}, {d_step})[0].item();
    double gl = s.run({g_loss}, {{z, noise()}}, {g_step})[0].item();
    if (step % 500 > 0) continue;
    NDArray m = s.run1(fake_mean, {{z, noise()}});
    std::printf("step %4d  D loss %.3f  G loss %.3f  generated mean (%.2f, %.2f), the data's (2, 1)\n", step, dl, gl,
                m.data<float>()[0], m.data<float>()[1]);
  }
}
