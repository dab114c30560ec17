// hello: the smallest complete loom program. Builds a graph for a linear
// model, derives its gradient symbolically, and trains it with plain SGD
// updates that run inside the graph (one Session::run per step).

#include <cstdio>

#include "core/session.hpp"
#include "ops/ops.hpp"

using namespace loom;

int main() {
  // y = 3 x0 - 2 x1 + 0.5, learned from 256 noisy-free samples.
  const int64_t n = 256;
  NDArray xs = NDArray::empty({n, 2}), ys = NDArray::empty({n, 1});
  for (int64_t i = 0; i < n; ++i) {
    float a = float(i % 16) / 8 - 1, b = float(i / 16) / 8 - 1;
    xs.data<float>()[2 * i] = a;
    xs.data<float>()[2 * i + 1] = b;
    ys.data<float>()[i] = 3 * a - 2 * b + 0.5f;
  }

  Graph g;
  Tensor x = g.placeholder("x", {-1, 2});
  Tensor y = g.placeholder("y", {-1, 1});
  Tensor w = g.variable("w", {2, 1}, [](const NDArray& v, uint64_t) { v.fill(0); });
  Tensor b = g.variable("b", {1}, [](const NDArray& v, uint64_t) { v.fill(0); });
  Tensor loss = mean(pow(matmul(x, w) + b - y, 2.0));
  auto grads = gradients(loss, {w, b});
  Tensor step = group({assign_sub(w, grads[0] * 0.3), assign_sub(b, grads[1] * 0.3)});

  Session s(g);
  for (int i = 0; i <= 100; ++i) {
    double l = s.run({loss}, {{x, xs}, {y, ys}}, {step})[0].item();
    if (i % 20 == 0) std::printf("step %3d  loss %.6f\n", i, l);
  }
  auto wv = s.get(w).to_vector<float>();
  std::printf("learned w = [%.3f, %.3f], b = %.3f (true: [3, -2], 0.5)\n", wv[0], wv[1], s.get(b).item());
  return 0;
}
