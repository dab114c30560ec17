// tour: the README's frontend example as a program. Trains an MLP on
// Fashion-MNIST for 5 epochs, prints the test accuracy, saves the model's
// state_dict (which PyTorch loads as is) and exports it to ONNX.

#include <cstdio>

#include "frontend/loom.hpp"
#include "frontend/onnx.hpp"

using namespace loom;

int main(int argc, char**) try {
  if (argc > 1) {  // no options: it writes model.safetensors and model.onnx into the working directory
    std::fprintf(stderr,
                 "usage: tour (trains an MLP on Fashion-MNIST, then writes model.safetensors and model.onnx "
                 "here)\n");
    return 2;
  }
  Graph g;
  Tensor x = g.placeholder("x", {-1, 28, 28});
  Tensor y = g.placeholder("y", {-1}, int64);

  nn::Sequential model{nn::Flatten(), nn::Linear(784, 512), nn::ReLU(), nn::Linear(512, 10)};
  model.train();
  Tensor loss = nn::cross_entropy(model(x), y);
  model.eval();
  Tensor logits = model(x);                           // same weights, eval mode
  Tensor right = nn::correct(logits, y);

  optim::Adam opt(model, {.lr = 1e-3, .schedule = optim::schedule::cosine(5 * 469)});
  Tensor step = opt.minimize(loss);                   // backward + update, in the graph

  auto train = data::load_mnist(data::kFashionMnistDir, data::Split::train);
  data::DataLoader loader(train, {.batch_size = 128, .shuffle = true, .seed = 1});
  loader.transform(0, data::transforms::normalize(0.2860, 0.3530));

  Session s(g, {.seed = 1});
  for (int epoch = 0; epoch < 5; ++epoch)
    for (const data::Batch& b : loader.epoch(epoch))
      s.run({loss}, {{x, b[0]}, {y, b[1]}}, {step});  // forward, backward, update

  auto test = data::load_mnist(data::kFashionMnistDir, data::Split::test);
  data::DataLoader test_loader(test, {.batch_size = 1000});
  test_loader.transform(0, data::transforms::normalize(0.2860, 0.3530));
  double hits = 0;
  for (const data::Batch& b : test_loader.epoch(0)) hits += s.run({right}, {{x, b[0]}, {y, b[1]}})[0].item();
  std::printf("test accuracy %.4f\n", hits / double(test->size()));

  checkpoint::save(s, model, "model.safetensors");    // "1.weight", ...: a PyTorch state_dict
  onnx::export_graph(g, {x}, {logits}, "model.onnx", {.session = &s, .output_names = {"logits"}});
  std::printf("wrote model.safetensors and model.onnx\n");
  return 0;
} catch (const std::exception& e) {  // a loom::Error names what went wrong (a missing data set, say)
  std::fprintf(stderr, "tour: %s\n", e.what());
  return 1;
}
