// A loom user's program, outside the loom tree: only <loom/...> headers and
// the installed libraries. Trains a small model, saves and reloads its
// state_dict, exports it to ONNX when libloom_onnx is there, and checks that
// a linked libloom_cuda registered the CUDA backend. Exits non-zero on failure.

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>

#include <loom/loom.hpp>
#ifdef CONSUMER_ONNX
#include <loom/frontend/onnx.hpp>
#endif

using namespace loom;

#define EXPECT(cond)                                                   \
  do {                                                                 \
    if (!(cond)) {                                                     \
      std::fprintf(stderr, "consumer: %s failed (line %d)\n", #cond, __LINE__); \
      return 1;                                                        \
    }                                                                  \
  } while (0)

int main() {
  std::printf("consumer: headers %s, library %s\n", LOOM_VERSION_STRING, loom::version());
  EXPECT(std::strcmp(LOOM_VERSION_STRING, loom::version()) == 0);
  EXPECT(LOOM_VERSION >= 200);

  // y = relu(x W1^T + b1) W2^T + b2 learns the sum of the inputs' signs.
  Graph g;
  Tensor x = g.placeholder("x", {-1, 4});
  Tensor y = g.placeholder("y", {-1}, int64);
  nn::Sequential model{nn::Linear(4, 16), nn::ReLU(), nn::Linear(16, 2)};
  Tensor loss = nn::cross_entropy(model(x), y);
  optim::Adam opt(model, {.lr = 0.05});
  Tensor step = opt.minimize(loss);
  model.eval();
  Tensor logits = model(x);

  const int64_t n = 64;
  NDArray xs = NDArray::empty({n, 4}), ys = NDArray::empty({n}, int64);
  for (int64_t i = 0; i < n; ++i) {
    float s = 0;
    for (int64_t j = 0; j < 4; ++j) s += xs.data<float>()[4 * i + j] = float((i * 7 + j * 3) % 11) / 5 - 1;
    ys.data<int64_t>()[i] = s > 0;
  }
  Session s(g, {.threads = 2, .seed = 1});
  double first = 0, last = 0;
  for (int i = 0; i < 200; ++i) {
    last = s.run({loss}, {{x, xs}, {y, ys}}, {step})[0].item();
    if (i == 0) first = last;
  }
  std::printf("consumer: loss %.4f -> %.4f\n", first, last);
  EXPECT(last < first / 4);

  const std::filesystem::path dir = std::filesystem::temp_directory_path() / "loom_consumer";
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "model.safetensors").string();
  checkpoint::save(s, model, path);
  EXPECT(checkpoint::read(path).count("0.weight") == 1);
  Session fresh(g, {.seed = 2});
  checkpoint::load(fresh, model, path);
  NDArray a = s.run({logits}, {{x, xs}})[0], b = fresh.run({logits}, {{x, xs}})[0];
  EXPECT(a.to_vector<float>() == b.to_vector<float>());

#ifdef CONSUMER_ONNX
  onnx::export_graph(g, {x}, {logits}, (dir / "model.onnx").string(), {.session = &s});
  EXPECT(std::filesystem::file_size(dir / "model.onnx") > 16 * 4 * 4);
  std::printf("consumer: exported %s\n", (dir / "model.onnx").c_str());
#endif
#ifdef CONSUMER_CUDA
  // The backend registered itself when libloom_cuda was loaded: without a GPU
  // the error is "no CUDA device", not "built without CUDA".
  try {
    Session gpu(g, {.device = Device::cuda()});
    std::printf("consumer: CUDA device present\n");
  } catch (const Error& e) {
    std::printf("consumer: CUDA backend linked (%s)\n", e.what());
    EXPECT(std::string(e.what()).find("built without CUDA") == std::string::npos);
  }
#endif
  std::printf("consumer: ok\n");
  return 0;
}
