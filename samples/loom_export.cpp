// loom_export: a trained model to ONNX. Rebuilds the model a checkpoint holds
// (from its metadata, which the trainers write, or --model/--hidden) in eval
// mode, loads the weights and writes the inference graph, input "x" to output
// "logits", with a dynamic batch dim.
//
//   loom_export m.safetensors -o model.onnx
//   loom_export torch.safetensors --model mlp --hidden 256 -o model.onnx
//   loom_export m.safetensors --test-data DIR  # also loom's logits on the test set (for samples/interop.py)
//   loom_export --op-examples DIR     # every op example as a model, with loom's outputs (for tests)

#include <boost/program_options.hpp>
#include <filesystem>
#include <iostream>
#include <string>

#include "core/op.hpp"
#include "frontend/loom.hpp"
#include "frontend/onnx.hpp"
#include "samples/models.hpp"

namespace po = boost::program_options;
namespace fs = std::filesystem;
using namespace loom;

namespace {

struct Args {
  std::string checkpoint, output = "model.onnx", model, examples_dir, test_data;
  int64_t hidden = 0;
};

/// The test set as loom feeds it (normalized as train_mnist does), its labels
/// and loom's logits, into <output>.test.safetensors ("x", "y", "logits"): what
/// samples/interop.py compares onnxruntime's and PyTorch's outputs against.
void write_test_logits(const Args& a, Session& s, const Tensor& x, const Tensor& logits) {
  const Shape& in = x.shape();  // [-1, 28, 28] (train_mnist) or [-1, 1, 28, 28] (train_cnn)
  LOOM_CHECK(numel(Shape(in.begin() + 1, in.end())) == 28 * 28, "loom_export: --test-data is Fashion-MNIST, 28 x 28 "
             "images; this model takes ", S(in));
  auto test = data::load_mnist(a.test_data, data::Split::test);
  data::DataLoader loader(test, {.batch_size = 1000});
  loader.transform(0, data::transforms::normalize(samples::kFashionMnistMean, samples::kFashionMnistStd));
  std::vector<NDArray> xs, ys, outs;
  for (const data::Batch& b : loader.epoch(0)) {
    Shape shape = in;
    shape[0] = b[0].shape()[0];
    xs.push_back(b[0].reshape(shape));
    ys.push_back(b[1]);
    outs.push_back(s.run({logits}, {{x, xs.back()}})[0]);
  }
  auto join = [](const std::vector<NDArray>& parts) {
    Shape shape = parts[0].shape();
    shape[0] = 0;
    for (const NDArray& p : parts) shape[0] += p.shape()[0];
    NDArray all = NDArray::empty(shape, parts[0].dtype());
    int64_t row = 0;
    for (const NDArray& p : parts) {
      all.slice({Slice::range(row, row + p.shape()[0])}).assign(p);
      row += p.shape()[0];
    }
    return all;
  };
  const std::string path = a.output + ".test.safetensors";
  checkpoint::write(path, {{"x", join(xs)}, {"y", join(ys)}, {"logits", join(outs)}});
  std::cout << "wrote " << path << ": loom's logits on the " << test->size() << " test images\n";
}

int export_model(const Args& a) {
  samples::ModelParams params = checkpoint::read_metadata(a.checkpoint);
  LOOM_CHECK(!a.model.empty() || params.count("trainer") == 0 || params["trainer"] != "train_lm", "'", a.checkpoint,
             "' is a train_lm checkpoint (model '", params["model"],
             "'): loom_export rebuilds the image classifiers only; export a language model's graph from C++ with "
             "onnx::export_graph (README, PyTorch and ONNX)");
  if (!a.model.empty()) params["model"] = a.model;
  if (a.hidden > 0) params["hidden"] = std::to_string(a.hidden);
  samples::SampleModel m = samples::make_sample_model(params);
  Graph g;
  Tensor x = g.placeholder(m.input_name, m.input, m.input_dtype);
  m.module->eval();
  Tensor logits = (*m.module)(x);
  Session s(g, {.threads = 1});
  checkpoint::load(s, *m.module, a.checkpoint);
  onnx::export_graph(g, {x}, {logits}, a.output,
                     {.session = &s,
                      .output_names = {m.output_name},
                      .graph_name = params["model"],
                      .doc = "loom " + std::string(loom::version()) + ": " + params["model"] + " from " + a.checkpoint});
  std::cout << "wrote " << a.output << ": " << params["model"] << " (" << m.module->num_parameters()
            << " parameters), input '" << m.input_name << "' " << S(m.input) << ", output '" << m.output_name << "' "
            << S(logits.shape()) << ", ONNX opset " << onnx::kOpset << "\n";
  if (!a.test_data.empty()) write_test_logits(a, s, x, logits);
  return 0;
}

/// Float inputs of the examples (given in float64) as float32, the dtype onnxruntime covers for every op.
NDArray as_float32(const NDArray& a) { return a.dtype() == float64 ? a.astype(float32) : a; }

/// Every example of every exportable op as DIR/<op>.<k>.onnx, with its inputs
/// and loom's outputs in DIR/<op>.<k>.safetensors ("input.i", "output.i"), so
/// that a runtime can check each exporter numerically (samples/interop.py).
int export_op_examples(const std::string& dir) {
  fs::create_directories(dir);
  int written = 0, refused = 0, failed = 0;
  for (const OpDef* op : registered_ops()) {
    if (!op->examples) continue;
    const std::vector<std::string> ops = onnx::exportable_ops();
    if (!std::binary_search(ops.begin(), ops.end(), op->name)) continue;
    std::vector<OpExample> examples = op->examples(1);
    for (size_t k = 0; k < examples.size(); ++k) {
      const OpExample& ex = examples[k];
      Graph g;
      std::vector<Tensor> inputs;
      Feeds feeds;
      std::vector<std::pair<std::string, NDArray>> tensors;
      for (size_t i = 0; i < ex.inputs.size(); ++i) {
        NDArray v = as_float32(ex.inputs[i]);
        inputs.push_back(g.placeholder("input." + std::to_string(i), v.shape(), v.dtype()));
        feeds.push_back({inputs.back(), v});
        tensors.emplace_back("input." + std::to_string(i), v);
      }
      const std::string name = op->name + "." + std::to_string(k);
      try {
        std::vector<Tensor> outputs = g.add(op->name, inputs, ex.attrs);
        Session s(g, {.threads = 1});
        std::vector<NDArray> values = s.run(outputs, feeds);
        for (size_t i = 0; i < values.size(); ++i) tensors.emplace_back("output." + std::to_string(i), values[i]);
        onnx::export_graph(g, inputs, outputs, (fs::path(dir) / (name + ".onnx")).string(),
                           {.doc = op->name + ": " + ex.label});
        checkpoint::write((fs::path(dir) / (name + ".safetensors")).string(), tensors, {{"label", ex.label}});
        ++written;
      } catch (const Error& e) {  // training-time forms (dropout) are refused by design; others are failures
        const bool by_design = std::string(e.what()).find("export the graph the model builds in eval mode") !=
                               std::string::npos;
        std::cerr << "loom_export: " << name << " (" << ex.label << "): " << e.what() << "\n";
        ++(by_design ? refused : failed);
      }
    }
  }
  std::cout << "wrote " << written << " op examples to " << dir << " (" << refused
            << " training-time examples refused as designed, " << failed << " failed)\n";
  return failed ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  po::options_description desc(
      "loom_export: export a trained model to ONNX (opset 17)\n\n"
      "Usage: loom_export CHECKPOINT [-o model.onnx] [--model NAME] [--hidden N]\n"
      "       loom_export --op-examples DIR\n\n"
      "The model is the one the checkpoint's metadata names (train_mnist writes it), built in\n"
      "eval mode; --model and --hidden override it (for a file PyTorch wrote, say).\n\nOptions");
  std::string models;
  for (const auto& [name, f] : samples::sample_models()) models += "\n  " + name + ": " + f.help;
  // clang-format off
  desc.add_options()
    ("help,h", "show this help")
    ("checkpoint", po::value(&a.checkpoint), "the weights (safetensors; also the first argument)")
    ("output,o", po::value(&a.output)->default_value(a.output), "the ONNX file to write")
    ("model", po::value(&a.model), ("the model, when the checkpoint does not name it:" + models).c_str())
    ("hidden", po::value(&a.hidden), "its hidden width, when the checkpoint does not give it")
    ("test-data", po::value(&a.test_data), "also write loom's logits on the (Fashion-)MNIST test set in this directory "
                                           "to OUTPUT.test.safetensors (x, y, logits), for samples/interop.py")
    ("op-examples", po::value(&a.examples_dir), "write every op example as a model with its inputs and loom's "
                                                "outputs into this directory (checked by samples/interop.py)");
  // clang-format on
  po::positional_options_description pos;
  pos.add("checkpoint", 1);
  try {
    po::variables_map vm;
    po::store(po::command_line_parser(argc, argv).options(desc).positional(pos).run(), vm);
    if (vm.count("help")) {
      std::cout << desc << "\n";
      return 0;
    }
    po::notify(vm);
    if (a.checkpoint.empty() == a.examples_dir.empty())
      throw po::error("give a checkpoint, or --op-examples DIR");
  } catch (const po::error& e) {
    std::cerr << "loom_export: " << e.what() << "\n(see loom_export --help)\n";
    return 2;
  }
  try {
    return a.examples_dir.empty() ? export_model(a) : export_op_examples(a.examples_dir);
  } catch (const std::exception& e) {
    std::cerr << "loom_export: error: " << e.what() << "\n";
    return 1;
  }
}
