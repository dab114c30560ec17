// hello: the smallest complete loom program (the README's first program).
// Builds a graph for a linear model, derives its gradient symbolically, and
// trains it with plain SGD updates that run inside the graph.
//
//   hello            # on the CPU
//   hello cuda       # on the first GPU (any device Device::parse takes)

#include <loom/loom.hpp>

#include <cstdio>

using namespace loom;

int main(int argc, char** argv) try {
  // Training data: y = 3 x0 - 2 x1 + 0.5 at the 256 points of a 16 x 16 grid.
  NDArray xs = NDArray::empty({256, 2}), ys = NDArray::empty({256, 1});
  for (int64_t i = 0; i < 256; ++i) {
    float a = float(i % 16) / 8 - 1, b = float(i / 16) / 8 - 1;
    xs.data<float>()[2 * i] = a, xs.data<float>()[2 * i + 1] = b;
    ys.data<float>()[i] = 3 * a - 2 * b + 0.5f;
  }

  Graph g;                                 // building computes nothing
  Tensor x = g.placeholder("x", {-1, 2});  // -1: the batch size, from the feed
  Tensor y = g.placeholder("y", {-1, 1});
  Tensor w = g.variable("w", {2, 1}, init::zeros());
  Tensor b = g.variable("b", {1}, init::zeros());
  Tensor loss = mean(pow(matmul(x, w) + b - y, 2.0));
  auto grads = gradients(loss, {w, b});  // graph to graph
  Tensor step = group({assign_sub(w, grads[0] * 0.3), assign_sub(b, grads[1] * 0.3)});

  Session s(g, {.device = Device::parse(argc > 1 ? argv[1] : "cpu")});
  for (int i = 0; i <= 100; ++i) {
    double l = s.run({loss}, {{x, xs}, {y, ys}}, {step})[0].item();  // forward, backward, update
    if (i % 20 == 0) std::printf("step %3d  loss %.6f\n", i, l);
  }
  auto wv = s.get(w).to_vector<float>();
  std::printf("learned w = [%.3f, %.3f], b = %.3f (true: [3, -2], 0.5)\n", wv[0], wv[1], s.get(b).item());
  return 0;
} catch (const std::exception& e) {  // a loom::Error says what went wrong (no GPU, say)
  std::fprintf(stderr, "hello: %s\n", e.what());
  return 1;
}
