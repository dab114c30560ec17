// bench_train: loom against PyTorch and JAX, training the same model on the
// same Fashion-MNIST data with the same batch size and optimizer, epochs
// alternating between them so that all see the same machine conditions.
//
//   bench_train                         # mlp and mlpresnet, 3 epochs each
//   bench_train --model mlp --epochs 5 --torch-threads 1,2
//
// PyTorch runs in samples/bench_train_torch.py (current PyTorch, from the venv
// `./build.sh bench-train` sets up), kept
// alive between epochs; it is first timed on a few steps at each thread count
// of --torch-threads and the fastest count is used for the epochs. Reported:
// seconds per epoch (training only, evaluation excluded) for each, and the
// ratio loom / PyTorch of the median epoch times. The JAX peer
// (samples/bench_train_jax.py: the training step as one jax.jit function, as
// XLA compiles it) runs beside them, its thread count (XLA's default, or one)
// picked the same way, with the ratio loom / JAX; loom's executor (serial or
// parallel) is picked the same way too. All three load the images normalized
// once into float32, so a batch is a copy of rows on every side.

#include <algorithm>
#include <boost/program_options.hpp>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "frontend/loom.hpp"
#include "samples/cli.hpp"
#include "samples/peers.hpp"

namespace po = boost::program_options;
using namespace loom;
using Clock = std::chrono::steady_clock;

namespace {

constexpr double kMean = 0.2860, kStd = 0.3530;  // as train_mnist and the PyTorch script

struct Config {
  std::string model;
  int64_t batch = 128, hidden = 512;
  double lr = 1e-3, wd = 0;
};

Config config_for(const std::string& model, int64_t batch_override) {
  Config c{model};
  if (model == "mlpresnet")
    c.batch = 100, c.hidden = 100, c.wd = 1e-3;
  else if (model != "mlp" && model != "softmax" && model != "cnn" && model != "resnet9")
    fail("unknown model '", model, "' (softmax, mlp, mlpresnet, cnn, resnet9)");
  if (batch_override > 0) c.batch = batch_override;
  return c;
}

using samples::median;
using samples::Peer;
double json_number(const std::string& line, const std::string& key) {
  nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  LOOM_CHECK(j.is_object() && j.contains(key) && (j[key].is_number() || j[key].is_null()), "bench_train: no '", key,
             "' in PyTorch's answer: ", line);
  return j[key].is_null() ? NAN : j[key].get<double>();
}

/// loom's side: the same training as train_mnist.
class Loom {
 public:
  Loom(const Config& c, std::shared_ptr<data::TensorDataset> train, std::shared_ptr<data::TensorDataset> test,
       const SessionOptions& options)
      : train_(train, {.batch_size = c.batch, .shuffle = true, .seed = options.seed}),
        test_(test, {.batch_size = 1000}),
        test_size_(test->size()) {
    x_ = g_.placeholder("x", {-1, 1, 28, 28});
    y_ = g_.placeholder("y", {-1}, int64);
    if (c.model == "cnn")
      model_ = std::make_unique<nn::CNN>();
    else if (c.model == "resnet9")
      model_ = std::make_unique<nn::ResNet9>();
    else if (c.model == "softmax")
      model_ = std::make_unique<nn::Sequential>(nn::Flatten(), nn::Linear(784, 10));
    else if (c.model == "mlp")
      model_ = std::make_unique<nn::Sequential>(nn::Flatten(), nn::Linear(784, c.hidden), nn::ReLU(),
                                                nn::Linear(c.hidden, 10));
    else
      model_ = std::make_unique<nn::Sequential>(nn::Flatten(), nn::MLPResNet(784, {.hidden = c.hidden}));
    model_->train();
    Tensor logits = (*model_)(x_);
    loss_ = nn::cross_entropy(logits, y_);
    correct_ = nn::correct(logits, y_);
    model_->eval();
    eval_correct_ = nn::correct((*model_)(x_), y_);
    opt_ = std::make_unique<optim::Adam>(*model_, optim::AdamOptions{.lr = c.lr, .weight_decay = c.wd});
    step_ = opt_->minimize(loss_);
    session_ = std::make_unique<Session>(g_, options);
  }
  /// Trains one epoch; returns (seconds, test accuracy).
  std::pair<double, double> epoch() {
    auto t0 = Clock::now();
    for (const data::Batch& b : train_.epoch(epoch_++))
      session_->run({loss_, correct_}, {{x_, b[0]}, {y_, b[1]}}, {step_});
    double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    double right = 0;
    for (const data::Batch& b : test_.epoch(0))
      right += session_->run({eval_correct_}, {{x_, b[0]}, {y_, b[1]}})[0].item();
    return {seconds, right / double(test_size_)};
  }
  /// Seconds for `n` training steps after 10 of warm-up (the weights change: for calibration).
  double time_steps(int64_t n) {
    int64_t done = 0;
    Clock::time_point t0, t1;
    while (done < n + 10)
      for (const data::Batch& b : train_.epoch(epoch_++)) {
        if (done == 10) t0 = Clock::now();
        session_->run({loss_, correct_}, {{x_, b[0]}, {y_, b[1]}}, {step_});
        if (++done == n + 10) {
          t1 = Clock::now();
          break;
        }
      }
    return std::chrono::duration<double>(t1 - t0).count();
  }
  int threads() const { return session_->options().threads; }
  Executor executor() const { return session_->options().executor; }

 private:
  data::DataLoader train_, test_;
  int64_t test_size_;
  Graph g_;
  Tensor x_, y_, loss_, correct_, eval_correct_, step_;
  std::unique_ptr<nn::Module> model_;
  std::unique_ptr<optim::Optimizer> opt_;
  std::unique_ptr<Session> session_;
  int64_t epoch_ = 0;
};

std::string find_script(const std::string& given, const std::string& name = "bench_train_torch.py",
                        const char* option = "--script") {
  if (!given.empty()) return given;
  namespace fs = std::filesystem;
  std::vector<fs::path> candidates{"samples/" + name, fs::path(LOOM_SAMPLES_DIR) / name};
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) candidates.push_back(exe.parent_path() / ("../../../samples/" + name));
  for (const fs::path& p : candidates)
    if (fs::exists(p)) return fs::weakly_canonical(p).string();
  fail("bench_train: cannot find samples/", name, " (run from the repository root or pass ", option, ")");
}

struct Options {
  std::string models = "mlp,mlpresnet", torch_threads = "1,2", python = samples::peer_python(), script,
              data = data::kFashionMnistDir, device = "cpu", executors = "serial,parallel";
  int64_t epochs = 3, batch = 0, calibrate = 60;
  int threads = 0;
  uint64_t seed = 0;
  bool json = false;
  // The JAX peer (samples/bench_train_jax.py); thread count 0 is XLA's default (all cores).
  std::string jax_threads = "0,1", jax_script;
  bool no_jax = false;
};

/// Starts a peer at each thread count, times `calibrate` steps, and returns
/// the fastest one running (the only one when a single count is given).
std::unique_ptr<Peer> fastest_peer(const std::string& what, const std::string& model, const std::vector<int>& counts,
                                   int64_t calibrate, bool quiet,
                                   const std::function<std::vector<std::string>(int)>& args, int* chosen) {
  LOOM_CHECK(!counts.empty(), "bench_train: no thread counts for ", what);
  *chosen = counts[0];
  if (counts.size() > 1) {
    double best = INFINITY;
    for (int t : counts) {
      Peer p(args(t), what);
      p.request("steps 10");  // warm-up
      const double s = json_number(p.request("steps " + std::to_string(calibrate)), "seconds");
      if (!quiet)
        std::printf("%s: %s %d thread%s: %.1f ms/step\n", model.c_str(), what.c_str(), t, t == 1 ? "" : "s",
                    1e3 * s / double(calibrate));
      if (s < best) best = s, *chosen = t;
    }
  }
  return std::make_unique<Peer>(args(*chosen), what);
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

struct Datasets {
  std::shared_ptr<data::TensorDataset> train, test;
};

/// A split with its images normalized once into float32 [N, 1, 28, 28], as the peers' scripts load them (batches
/// are then row copies, on every side).
std::shared_ptr<data::TensorDataset> load_normalized(const std::string& dir, data::Split split) {
  const auto raw = data::load_mnist(dir, split);
  const NDArray x = data::transforms::normalize(kMean, kStd)(raw->array(0), data::BatchInfo{});
  return std::make_shared<data::TensorDataset>(
      std::vector<NDArray>{x.reshape({x.shape()[0], 1, 28, 28}), raw->array(1)});
}

/// The command line of a peer script (PyTorch's or JAX's) for one model at `threads` threads.
std::vector<std::string> peer_args(const Options& o, const Config& c, const std::string& script, int threads) {
  return {o.python,
          script,
          "--serve",
          "--model",
          c.model,
          "--batch",
          std::to_string(c.batch),
          "--lr",
          std::to_string(c.lr),
          "--wd",
          std::to_string(c.wd),
          "--hidden",
          std::to_string(c.hidden),
          "--threads",
          std::to_string(threads),
          "--seed",
          std::to_string(o.seed),
          "--data",
          o.data,
          "--device",
          Device::parse(o.device).kind == DeviceKind::cuda ? "cuda" : "cpu"};
}

struct Peers {
  std::unique_ptr<Peer> torch, jax;  // jax: null without the JAX peer
  int torch_threads = 0, jax_threads = 0;
};

/// PyTorch and JAX, each at its fastest thread count.
Peers start_peers(const Options& o, const Config& c) {
  Peers p;
  const std::string script = find_script(o.script);
  p.torch = fastest_peer(
      "PyTorch", c.model, samples::thread_counts(o.torch_threads, "--torch-threads"), o.calibrate, o.json,
      [&](int t) { return peer_args(o, c, script, t); }, &p.torch_threads);
  if (o.no_jax || !Device::parse(o.device).is_cpu()) return p;  // the JAX peer runs on the CPU only
  // The step as one jax.jit function: the MLPs in bench_train_jax.py, the CNNs in bench_cnn_jax.py.
  const bool conv = c.model == "cnn" || c.model == "resnet9";
  const std::string jax_script =
      find_script(conv ? "" : o.jax_script, conv ? "bench_cnn_jax.py" : "bench_train_jax.py", "--jax-script");
  p.jax = fastest_peer(
      "JAX", c.model, samples::thread_counts(o.jax_threads, "--jax-threads"), o.calibrate, o.json,
      [&](int t) { return peer_args(o, c, jax_script, t); }, &p.jax_threads);
  return p;
}

/// loom's session options with the fastest of --executor's executors, each timed on `calibrate` steps of a fresh
/// model (as the peers' thread counts are chosen).
SessionOptions fastest_loom(const Options& o, const Config& c, const Datasets& d) {
  SessionOptions s{.device = Device::parse(o.device), .threads = o.threads, .seed = o.seed};
  double best = INFINITY;
  for (const std::string& name : split(o.executors)) {
    LOOM_CHECK(name == "serial" || name == "parallel", "bench_train: unknown executor '", name, "' (serial, parallel)");
    SessionOptions trial = s;
    trial.executor = name == "parallel" ? Executor::parallel : Executor::serial;
    const double sec = Loom(c, d.train, d.test, trial).time_steps(o.calibrate);
    if (!o.json)
      std::printf("%s: loom %s executor: %.1f ms/step\n", c.model.c_str(), name.c_str(),
                  1e3 * sec / double(o.calibrate));
    if (sec < best) best = sec, s.executor = trial.executor;
  }
  LOOM_CHECK(best < INFINITY, "bench_train: --executor is empty");
  return s;
}

const char* executor_name(Executor e) { return e == Executor::parallel ? "parallel" : "serial"; }

/// Seconds per epoch of each, side by side.
struct Epochs {
  std::vector<double> loom, torch, jax;
};

/// One epoch of each, alternating; prints the epoch's line(s).
void run_epoch(const Options& o, const std::string& model, int64_t e, Loom& loom, Peers& peers, Epochs& t) {
  auto [lsec, lacc] = loom.epoch();
  const std::string r = peers.torch->request("epoch");
  const double tsec = json_number(r, "seconds"), tacc = json_number(r, "test_acc");
  t.loom.push_back(lsec), t.torch.push_back(tsec);
  if (o.json)
    std::printf("%s\n", nlohmann::json{{"model", model},
                                       {"epoch", e},
                                       {"loom_seconds", lsec},
                                       {"torch_seconds", tsec},
                                       {"ratio", lsec / tsec},
                                       {"loom_test_acc", lacc},
                                       {"torch_test_acc", tacc},
                                       {"loom_threads", loom.threads()},
                                       {"loom_executor", executor_name(loom.executor())},
                                       {"torch_threads", peers.torch_threads}}
                            .dump()
                            .c_str());
  else
    std::printf("  epoch %lld  loom %.2f s (test acc %.4f)  PyTorch %.2f s (test acc %.4f)  ratio %.2f\n", (long long)e,
                lsec, lacc, tsec, tacc, lsec / tsec);
  if (peers.jax) {
    const std::string jr = peers.jax->request("epoch");
    const double jsec = json_number(jr, "seconds"), jacc = json_number(jr, "test_acc");
    t.jax.push_back(jsec);
    if (o.json)
      std::printf(
          "{\"model\": \"%s\", \"epoch\": %lld, \"jax_seconds\": %.4f, \"ratio_jax\": %.4f, "
          "\"jax_test_acc\": %.4f, \"jax_threads\": %d}\n",
          model.c_str(), (long long)e, jsec, lsec / jsec, jacc, peers.jax_threads);
    else
      std::printf("            JAX %.2f s (test acc %.4f)  ratio loom/JAX %.2f\n", jsec, jacc, lsec / jsec);
  }
  std::fflush(stdout);
}

/// The medians and their ratios.
void report_medians(const Options& o, const std::string& model, const Epochs& t, int jax_threads) {
  const double lm = median(t.loom), tm = median(t.torch);
  if (o.json)
    std::printf(
        "%s\n",
        nlohmann::json{{"model", model}, {"loom_median_seconds", lm}, {"torch_median_seconds", tm}, {"ratio", lm / tm}}
            .dump()
            .c_str());
  else
    std::printf("%s: median s/epoch  loom %.2f  PyTorch %.2f  ratio loom/PyTorch %.2f\n%s", model.c_str(), lm, tm,
                lm / tm, t.jax.empty() ? "\n" : "");
  if (!t.jax.empty()) {
    const double jm = median(t.jax);
    if (o.json)
      std::printf("{\"model\": \"%s\", \"jax_median_seconds\": %.4f, \"ratio_jax\": %.4f, \"jax_threads\": %d}\n",
                  model.c_str(), jm, lm / jm, jax_threads);
    else
      std::printf("%s: median s/epoch  loom %.2f  JAX %.2f (%d thread%s)  ratio loom/JAX %.2f\n\n", model.c_str(), lm,
                  jm, jax_threads, jax_threads == 1 ? "" : "s", lm / jm);
  }
  std::fflush(stdout);
}

int run(const Options& o) {
  const Datasets d{load_normalized(o.data, data::Split::train), load_normalized(o.data, data::Split::test)};
  for (const std::string& model : split(o.models)) {
    const Config c = config_for(model, o.batch);
    Peers peers = start_peers(o, c);
    Loom loom(c, d.train, d.test, fastest_loom(o, c, d));
    if (!o.json)
      std::printf("%s: batch %lld, Adam lr %g wd %g; loom %d threads (%s executor), PyTorch %d thread%s\n",
                  model.c_str(), (long long)c.batch, c.lr, c.wd, loom.threads(), executor_name(loom.executor()),
                  peers.torch_threads, peers.torch_threads > 1 ? "s" : "");
    Epochs t;
    for (int64_t e = 1; e <= o.epochs; ++e) run_epoch(o, model, e, loom, peers, t);
    report_medians(o, model, t, peers.jax_threads);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  po::options_description desc(
      "bench_train: loom vs PyTorch training time per epoch on Fashion-MNIST\n\nUsage: bench_train "
      "[options]\n\nOptions");
  // clang-format off
  desc.add_options()
    ("help,h", "show this help")
    ("model", po::value(&o.models)->default_value(o.models), "comma list of softmax, mlp, mlpresnet, cnn, resnet9")
    ("epochs", po::value(&o.epochs)->default_value(o.epochs), "epochs per model (alternating loom and PyTorch)")
    ("batch", po::value(&o.batch)->default_value(o.batch), "batch size (0: 128, 100 for mlpresnet)")
    ("threads", po::value(&o.threads)->default_value(o.threads), "loom threads (0: all cores)")
    ("executor", po::value(&o.executors)->default_value(o.executors),
     "loom executors to try (serial, parallel); the fastest is used")
    ("torch-threads", po::value(&o.torch_threads)->default_value(o.torch_threads),
     "PyTorch thread counts to try; the fastest is used")
    ("calibrate", po::value(&o.calibrate)->default_value(o.calibrate),
     "steps timed per PyTorch or JAX thread count and per loom executor")
    ("python", po::value(&o.python)->default_value(o.python), "Python with torch and numpy")
    ("script", po::value(&o.script), "path of bench_train_torch.py (default: found from the repository)")
    ("data", po::value(&o.data)->default_value(o.data), "directory with the Fashion-MNIST IDX files")
    ("seed", po::value(&o.seed)->default_value(o.seed), "seed for both")
    ("device", po::value(&o.device)->default_value(o.device), "cpu or cuda[:i], for both")
    ("json", po::bool_switch(&o.json), "one JSON object per epoch and per model")
    ("jax-threads", po::value(&o.jax_threads)->default_value(o.jax_threads),
     "JAX thread counts to try (0: XLA's default, all cores); the fastest is used")
    ("jax-script", po::value(&o.jax_script), "path of bench_train_jax.py (default: found from the repository)")
    ("no-jax", po::bool_switch(&o.no_jax), "skip the JAX peer");
  // clang-format on
  auto check = [&](const po::variables_map&) {
    if (o.epochs <= 0 || o.calibrate <= 0 || o.threads < 0 || o.batch < 0)
      throw po::error("--epochs and --calibrate must be positive, --threads and --batch >= 0");
    if (split(o.models).empty()) throw po::error("--model is empty (softmax, mlp, mlpresnet, cnn, resnet9)");
    for (const std::string& m : split(o.models)) config_for(m, 0);  // an unknown model, before the peers start
    samples::thread_counts(o.torch_threads, "--torch-threads");
    samples::thread_counts(o.jax_threads, "--jax-threads");
  };
  if (auto stop = samples::parse_command_line("bench_train", argc, argv, desc, check)) return *stop;
  std::signal(SIGPIPE, SIG_IGN);  // a PyTorch process that dies must not kill us mid-write
  return samples::run_reporting_errors("bench_train", [&] {
    device_backend(Device::parse(o.device));  // an unknown or missing device fails before PyTorch starts
    return run(o);
  });
}
