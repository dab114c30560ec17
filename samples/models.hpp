#pragma once
// The sample trainers' models by name, so that a tool (loom_export) can
// rebuild the model a checkpoint holds from the checkpoint's metadata
// ("model", "hidden", ...), as the trainer that wrote it built it. A trainer
// with models of its own adds them to the table in sample_models().

#include <charconv>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "frontend/loom.hpp"

namespace loom::samples {

/// Fashion-MNIST training-set pixel statistics (on [0, 1]): train_mnist's input normalization.
constexpr double kFashionMnistMean = 0.2860, kFashionMnistStd = 0.3530;

/// A checkpoint's metadata, or a trainer's options, as strings.
using ModelParams = std::map<std::string, std::string>;

struct SampleModel {
  std::unique_ptr<nn::Module> module;
  Shape input;  // the input placeholder's shape, -1 for the batch
  DType input_dtype = float32;
  std::string input_name = "x", output_name = "logits";
};

struct ModelFactory {
  std::string help;
  std::function<SampleModel(const ModelParams&)> make;
};

inline int64_t param_int(const ModelParams& p, const std::string& key, int64_t fallback) {
  auto it = p.find(key);
  if (it == p.end() || it->second.empty()) return fallback;
  try {
    return std::stoll(it->second);
  } catch (const std::exception&) {
    fail("model parameter ", key, " = '", it->second, "' is not an integer");
  }
}

/// The epochs a training checkpoint at `path` records as done (0 without the
/// key). Untrusted text: an integer in [0, 2^40], or the file is refused.
inline int64_t epochs_done(const ModelParams& meta, const std::string& path) {
  auto it = meta.find("epoch");
  if (it == meta.end()) return 0;
  int64_t done = -1;
  const char *b = it->second.data(), *e = b + it->second.size();
  const auto r = std::from_chars(b, e, done);
  if (r.ec != std::errc() || r.ptr != e || done < 0 || done > (int64_t(1) << 40))
    fail("'", path, "': its epoch metadata '", it->second, "' is not an epoch count");
  return done;
}

/// The first epoch to train when resuming from the checkpoint at `path`
/// (metadata `meta`), checked so that `epochs` more still count in int64.
inline int64_t first_epoch_after(const ModelParams& meta, const std::string& path, int64_t epochs) {
  const int64_t first = epochs_done(meta, path) + 1;
  if (epochs > (int64_t(1) << 40) - first) fail("--epochs ", epochs, " is too large");
  return first;
}

/// Channels and image side of params["dataset"] (train_cnn's; Fashion-MNIST when absent).
inline std::pair<int64_t, int64_t> image_geometry(const ModelParams& p) {
  auto it = p.find("dataset");
  const std::string dataset = it == p.end() || it->second.empty() ? "fashion-mnist" : it->second;
  if (dataset == "fashion-mnist") return {1, 28};
  if (dataset == "cifar10") return {3, 32};
  fail("unknown dataset '", dataset, "' (fashion-mnist, cifar10)");
}

/// Every sample model, by name.
inline const std::map<std::string, ModelFactory>& sample_models() {
  static const std::map<std::string, ModelFactory> models = {
      // train_mnist: images [N, 28, 28], 10 classes.
      {"softmax",
       {"Flatten, Linear(784, 10) (train_mnist)",
        [](const ModelParams&) {
          return SampleModel{std::make_unique<nn::Sequential>(nn::Flatten(), nn::Linear(784, 10)), {-1, 28, 28}};
        }}},
      {"mlp",
       {"Flatten, Linear(784, hidden = 512), ReLU, Linear(hidden, 10) (train_mnist)",
        [](const ModelParams& p) {
          const int64_t h = param_int(p, "hidden", 512);
          return SampleModel{std::make_unique<nn::Sequential>(nn::Flatten(), nn::Linear(784, h), nn::ReLU(),
                                                              nn::Linear(h, 10)),
                             {-1, 28, 28}};
        }}},
      {"mlpresnet",
       {"Flatten, MLPResNet(784, hidden = 100) (train_mnist)",
        [](const ModelParams& p) {
          return SampleModel{
              std::make_unique<nn::Sequential>(nn::Flatten(), nn::MLPResNet(784, {.hidden = param_int(p, "hidden", 100)})),
              {-1, 28, 28}};
        }}},
      // train_cnn: images [N, C, S, S] (Fashion-MNIST 1 x 28 x 28, CIFAR-10 3 x 32 x 32), 10 classes.
      {"cnn",
       {"CNN: ConvBN(C, 32), MaxPool, ConvBN(32, 64), MaxPool, Linear(64 S^2 / 16, 128), ReLU, Linear(128, 10) "
        "(train_cnn; dataset = fashion-mnist | cifar10)",
        [](const ModelParams& p) {
          const auto [c, size] = image_geometry(p);
          return SampleModel{std::make_unique<nn::CNN>(nn::CNNOptions{.channels = c, .image_size = size}),
                             {-1, c, size, size}};
        }}},
      {"resnet9",
       {"the course's ResNet9 (train_cnn; dataset = fashion-mnist | cifar10)",
        [](const ModelParams& p) {
          const auto [c, size] = image_geometry(p);
          return SampleModel{std::make_unique<nn::ResNet9>(c), {-1, c, size, size}};
        }}},
  };
  return models;
}

/// The model params["model"] names; throws loom::Error listing the known ones.
inline SampleModel make_sample_model(const ModelParams& params) {
  auto name = params.find("model");
  LOOM_CHECK(name != params.end(), "no model name (the checkpoint's metadata has no \"model\"; pass --model)");
  auto it = sample_models().find(name->second);
  if (it == sample_models().end()) {
    std::string known;
    for (const auto& [n, f] : sample_models()) known += (known.empty() ? "" : ", ") + n;
    fail("unknown model '", name->second, "' (", known, ")");
  }
  return it->second.make(params);
}

}  // namespace loom::samples
