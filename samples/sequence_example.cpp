// The README's example of sequences of different lengths (section "Sequence
// models and language models"), verbatim: a bidirectional LSTM reads a padded
// batch with each sequence's length and learns to name each sequence's last
// token, which only that sequence's own last step sees (with the padding
// read as input, the final state would have forgotten it).
#include <cstdio>
#include <random>

#include "frontend/loom.hpp"
using namespace loom;

int main() {
  Graph g;
  nn::Embedding embed(10, 64);
  nn::LSTM encoder(64, 128, {.num_layers = 2, .bidirectional = true});
  nn::Linear head(2 * 128, 10);
  Tensor ids = g.placeholder("ids", {20, -1}, int64);          // [T, N], padded
  Tensor lengths = g.placeholder("lengths", {-1}, int64);      // [N], each in [1, 20]
  auto [out, state] = encoder(embed(ids), {}, lengths);        // out [20, N, 256]; state.h [4, N, 128]
  std::vector<Tensor> h = split(state.h, 4, 0);                // l0 forward, l0 reverse, l1 ...: [1, N, 128]
  Tensor last = reshape(concat({h[2], h[3]}, -1), {-1, 256});  // the top layer's two directions [N, 256]

  Tensor label = g.placeholder("label", {-1}, int64);
  Tensor logits;
  {
    auto scope = g.scope("head");  // its "weight" apart from the embedding's
    logits = head(last);
  }
  Tensor loss = nn::cross_entropy(logits, label);
  Tensor right = nn::correct(logits, label);
  std::vector<Tensor> params = embed.parameters();
  for (const nn::Module* m : std::initializer_list<const nn::Module*>{&encoder, &head})
    for (const Tensor& p : m->parameters()) params.push_back(p);
  optim::Adam opt(params, {.lr = 3e-3});
  Tensor step = opt.minimize(loss);

  // Random digits, random lengths; the label is the last real digit, the padding 0.
  std::mt19937 rng(1);
  auto batch = [&](int64_t n) {
    NDArray x = NDArray::zeros({20, n}, int64), len = NDArray::zeros({n}, int64), y = NDArray::zeros({n}, int64);
    for (int64_t b = 0; b < n; ++b) {
      const int64_t l = 1 + int64_t(rng() % 20);
      for (int64_t t = 0; t < l; ++t) x.data<int64_t>()[t * n + b] = int64_t(rng() % 10);
      len.data<int64_t>()[b] = l;
      y.data<int64_t>()[b] = x.data<int64_t>()[(l - 1) * n + b];
    }
    return Feeds{{ids, x}, {lengths, len}, {label, y}};
  };
  Session s(g, {.seed = 1});
  for (int i = 1; i <= 150; ++i) {
    const double l = s.run({loss}, batch(32), {step})[0].item();
    if (i % 50 == 0) std::printf("step %3d  loss %.4f\n", i, l);
  }
  const double hits = s.run({right}, batch(1000))[0].item();
  std::printf("accuracy on 1000 new sequences: %.3f\n", hits / 1000);
  return hits > 900 ? 0 : 1;
}
