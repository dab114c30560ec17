// The README's attention example (section "Attention and Transformers"),
// verbatim: the fused attention op, and a small causal Transformer trained
// for a few steps to predict the running mean of its input sequence.
#include <cstdio>

#include "frontend/loom.hpp"
using namespace loom;

int main() {
  Graph g;
  // The op: q, k, v [batch, heads, T, head dim]; one fused node, memory linear in T.
  Tensor q = g.placeholder("q", {2, 4, 128, 32});
  Tensor a = scaled_dot_product_attention(q, q, q, {.causal = true});

  // The modules: x [batch, T, d_model] -> [batch, T, d_model].
  Tensor x = g.placeholder("x", {-1, 16, 64});
  nn::Sequential model{nn::PositionalEmbedding(16, 64),
                       nn::Transformer(2, 64, 4, {.ffn = 128, .dropout = 0.0, .causal = true, .norm_first = true}),
                       nn::Linear(64, 64)};
  Tensor y = model(x);
  NDArray running_mean = NDArray::zeros({16, 16});  // row t averages positions 0..t
  for (int t = 0; t < 16; ++t)
    for (int j = 0; j <= t; ++j) running_mean.data<float>()[t * 16 + j] = 1.0f / float(t + 1);
  Tensor target = matmul(g.constant(running_mean), x);
  Tensor loss = mean(pow(y - target, 2.0));
  optim::Adam opt(model, {.lr = 2e-3});
  Tensor step = opt.minimize(loss);

  Session s(g, {.seed = 1});
  NDArray batch = NDArray::empty({8, 16, 64});
  for (int64_t i = 0; i < batch.numel(); ++i) batch.data<float>()[i] = float((i * 7919) % 1000) / 500.0f - 1.0f;
  std::printf("attention output %s\n", shape_str(s.run1(a, {{q, NDArray::zeros({2, 4, 128, 32})}}).shape()).c_str());
  for (int it = 0; it <= 200; ++it) {
    double l = s.run({loss}, {{x, batch}}, {step})[0].item();
    if (it % 50 == 0) std::printf("step %3d  loss %.4f\n", it, l);
  }
  std::printf("%s", model.str().c_str());
}
