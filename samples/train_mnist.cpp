// train_mnist: trains a classifier on (Fashion-)MNIST with loom's frontend and
// prints the test accuracy after every epoch.
//
//   train_mnist                                   # mlp 784-512-10, Adam 1e-3 (cosine decay), batch 128, 5 epochs
//   train_mnist --model mlpresnet --batch 100 --wd 1e-3
//   train_mnist --model softmax --json            # one JSON object per epoch
//   train_mnist --save m.safetensors              # checkpoint after every epoch (PyTorch state_dict)
//   train_mnist --load m.safetensors --epochs 0   # evaluate a checkpoint
//   train_mnist --load-weights torch.safetensors  # start from weights PyTorch saved
//   train_mnist --trace trace.json                # Chrome trace of a few steps
//   mpirun -np 2 train_mnist --distributed --batch 64   # data parallel: 2 ranks x 64 = the run of --batch 128
//
// One Session::run per step does forward, backward and the optimizer update;
// the DataLoader assembles the next batch on a background thread meanwhile.

#include <unistd.h>

#include <boost/program_options.hpp>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "frontend/loom.hpp"
#include "samples/distributed.hpp"
#include "samples/models.hpp"
#include "samples/profile.hpp"
#include "samples/progress.hpp"
#include "samples/trace.hpp"

namespace po = boost::program_options;
using namespace loom;
using Clock = std::chrono::steady_clock;
using samples::fmt;
using samples::Progress;

namespace {

constexpr double kMean = samples::kFashionMnistMean, kStd = samples::kFashionMnistStd;

struct Args {
  std::string model = "mlp", opt = "adam", data = data::kFashionMnistDir, save, load, load_weights, trace,
              schedule = "cosine", device = "cpu", executor = "serial";
  int64_t epochs = 5, batch = 128, hidden = 0, eval_batch = 1000, warmup = 0;
  double lr = 0, wd = 0, momentum = 0, clip = 0;
  int threads = 0;
  uint64_t seed = 0;
  bool json = false, profile = false, nesterov = false, augment = false, distributed = false;
  double bucket_mb = 1;
};

/// What the checkpoints' metadata records about the model (loom_export rebuilds it from this).
samples::ModelParams model_params(const Args& a) {
  return {{"model", a.model}, {"hidden", a.model == "softmax" ? "" : std::to_string(a.hidden)}};
}

std::unique_ptr<optim::Optimizer> make_optimizer(const Args& a, const nn::Module& model, int64_t steps_per_epoch) {
  optim::Schedule sched;
  const int64_t total = std::max<int64_t>(1, (a.epochs) * steps_per_epoch);
  if (a.schedule == "cosine")
    sched = optim::schedule::cosine(total);
  else if (a.schedule == "step")
    sched = optim::schedule::step(std::max<int64_t>(1, steps_per_epoch * 2), 0.5);
  else if (a.schedule != "none")
    fail("unknown --schedule '", a.schedule, "' (none, cosine, step)");
  if (a.warmup > 0) sched = optim::schedule::warmup(a.warmup, sched ? sched : optim::schedule::constant());
  if (a.opt == "sgd")
    return std::make_unique<optim::SGD>(model, optim::SGDOptions{.lr = a.lr,
                                                                 .momentum = a.momentum,
                                                                 .weight_decay = a.wd,
                                                                 .nesterov = a.nesterov,
                                                                 .clip_norm = a.clip,
                                                                 .schedule = sched});
  if (a.opt == "adam")
    return std::make_unique<optim::Adam>(
        model, optim::AdamOptions{.lr = a.lr, .weight_decay = a.wd, .clip_norm = a.clip, .schedule = sched});
  if (a.opt == "adamw")
    return std::make_unique<optim::AdamW>(
        model, optim::AdamWOptions{.lr = a.lr, .weight_decay = a.wd, .clip_norm = a.clip, .schedule = sched});
  fail("unknown --opt '", a.opt, "' (sgd, adam, adamw)");
}

int run(const Args& a, samples::Distributed& dist) {
  // ---- data: with R ranks, rank r reads part r of every global batch of R * batch rows
  const int R = dist.size();
  auto train_set = data::load_mnist(a.data, data::Split::train);
  auto test_set = data::load_mnist(a.data, data::Split::test);
  data::DataLoader train(
      train_set, {.batch_size = a.batch * R, .shuffle = true, .seed = a.seed, .shard = dist.rank(), .shards = R});
  train.transform(0, data::transforms::normalize(kMean, kStd));
  if (a.augment) {
    train.transform(0, data::transforms::random_flip_horizontal());
    train.transform(0, data::transforms::random_crop(2));
  }
  data::DataLoader test(test_set, {.batch_size = a.eval_batch * R, .shard = dist.rank(), .shards = R});
  test.transform(0, data::transforms::normalize(kMean, kStd));

  // ---- graph: the model built twice (training and evaluation) over shared variables
  Graph g;
  Tensor x = g.placeholder("x", {-1, 28, 28});
  Tensor y = g.placeholder("y", {-1}, int64);
  std::unique_ptr<nn::Module> model = samples::make_sample_model(model_params(a)).module;
  model->train();
  Tensor logits = (*model)(x);
  Tensor loss = nn::cross_entropy(logits, y);
  Tensor correct = nn::correct(logits, y);
  model->eval();
  Tensor eval_correct = nn::correct((*model)(x), y);
  std::unique_ptr<optim::Optimizer> opt = make_optimizer(a, *model, train.size());
  samples::TrainingGraph train_graph(*opt, a.distributed, a.bucket_mb, *model, x, loss, correct, eval_correct);

  samples::TraceRecorder trace(dist.root() ? a.trace : "");
  Session s(g, {.device = Device::parse(a.device),
                .threads = a.threads,
                .executor = a.executor == "parallel" ? Executor::parallel : Executor::serial,
                .seed = a.seed,
                .profile = a.profile || trace.enabled()});
  std::ostream& info = !dist.root() ? dist.out() : a.json ? std::cerr : std::cout;
  int64_t first_epoch = 1;
  // Rank 0 reads a checkpoint (the others need not see the file), then sends its state to every rank.
  if (dist.root() && (!a.load.empty() || !a.load_weights.empty())) {
    // The model kind first (a clearer message than the variables that differ), then the file(s).
    const std::string& path = a.load.empty() ? a.load_weights : a.load;
    checkpoint::Metadata meta = checkpoint::read_metadata(path);
    auto it = meta.find("model");
    if (it != meta.end() && it->second != a.model)
      fail("'", path, "' holds a '", it->second, "' model, not '", a.model, "' (use --model ", it->second, ")");
    if (!a.load.empty()) {  // resume: weights, optimizer state and the epoch count
      checkpoint::load_training(s, *model, a.load);
      first_epoch = samples::epochs_done(meta, a.load) + 1;
      if (a.epochs > (int64_t(1) << 40) - first_epoch) fail("--epochs ", a.epochs, " is too large");
      info << "loaded " << a.load << " (after epoch " << first_epoch - 1 << ")\n";
    } else {  // weights only (from loom or PyTorch); the optimizer starts afresh
      checkpoint::load(s, *model, a.load_weights);
      info << "loaded the weights of " << a.load_weights << "\n";
    }
  }
  if (a.distributed) {
    communicator()->broadcast(&first_epoch, sizeof first_epoch, 0);
    s.run({}, {}, {train_graph.sync_state});
  }
  if (!a.json) {
    if (a.distributed) info << R << (R == 1 ? " rank (" : " ranks (") << communicator()->name() << "), ";
    info << "model " << a.model << " (" << model->num_parameters() << " parameters), " << a.opt << " lr " << a.lr
         << (a.schedule != "none" ? " (" + a.schedule + ")" : "") << (a.wd ? " wd " + fmt("%g", a.wd) : "")
         << ", batch " << a.batch << (R > 1 ? " per rank" : "") << ", "
         << (a.device == "cpu" ? std::to_string(s.options().threads) + " threads" : s.options().device.str())
         << ", data " << a.data << "\n";
  }

  auto evaluate = [&] {
    double right = 0;
    for (const data::Batch& b : test.epoch(0)) right += s.run({train_graph.eval_correct}, {{x, b[0]}, {y, b[1]}})[0].item();
    return right / double(test_set->size());
  };

  const bool tty = !a.json && dist.root() && ::isatty(STDOUT_FILENO);
  double test_acc = NAN;
  const int64_t last = first_epoch + a.epochs - 1;
  for (int64_t e = first_epoch; e <= last; ++e) {
    Progress bar(tty, e, last, train.size());
    double total_loss = 0, total_right = 0;
    int64_t images = 0, done = 0;
    auto t0 = Clock::now();
    for (const data::Batch& b : train.epoch(e - 1)) {
      const bool traced = trace.before_run();
      std::vector<NDArray> out = s.run({train_graph.loss, train_graph.correct}, {{x, b[0]}, {y, b[1]}}, {train_graph.step});
      if (traced) trace.after_run(s);
      // Rows of the global batch (this rank holds part of them).
      const int64_t n = std::min(a.batch * R, train_set->size() - images);
      total_loss += out[0].item() * double(n);
      total_right += out[1].item();
      images += n;
      bar.update(++done, images, total_loss / double(images), total_right / double(images));
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    bar.clear();
    if (images == 0) fail("epoch ", e, " had no batches (is --batch larger than the training set?)");
    if (!std::isfinite(total_loss))
      fail("the training loss became ", total_loss, " in epoch ", e, "; try a smaller --lr");
    test_acc = evaluate();
    const double train_loss = total_loss / double(images), train_acc = total_right / double(images);
    if (!dist.root()) {
    } else if (a.json) {  // one object per line; a non-finite number is null
      nlohmann::json line = {{"epoch", e},           {"train_loss", train_loss}, {"train_acc", train_acc},
                             {"test_acc", test_acc}, {"seconds", seconds},       {"images_per_s", double(images) / seconds}};
      std::printf("%s\n", line.dump().c_str());
      std::fflush(stdout);
    } else {
      std::printf("epoch %lld/%lld  train loss %.4f  train acc %.4f  test acc %.4f  %.2f s  %.0f img/s\n", (long long)e,
                  (long long)last, train_loss, train_acc, test_acc, seconds, double(images) / seconds);
      std::fflush(stdout);
    }
    if (!a.save.empty() && dist.root()) {
      checkpoint::Metadata meta = model_params(a);
      meta["epoch"] = std::to_string(e);
      checkpoint::save_training(s, *model, a.save, meta);
    }
  }
  if (a.epochs == 0) {
    test_acc = evaluate();
    if (a.json && dist.root()) std::printf("%s\n", nlohmann::json{{"test_acc", test_acc}}.dump().c_str());
  }
  if (!a.json && dist.root()) std::printf("test accuracy %.4f\n", test_acc);
  if (!a.save.empty() && !a.json && dist.root())
    info << "saved " << a.save << " (the model's state_dict) and " << checkpoint::optimizer_path(a.save)
         << " (optimizer state)\n";
  if (trace.enabled()) {
    trace.write();
    if (trace.done())
      info << "wrote a trace of training steps 2-6 to " << a.trace << " (open in ui.perfetto.dev)\n";
    else
      info << "--trace: fewer than 2 training steps ran; no trace written\n";
  }

  if (a.profile && dist.root()) samples::print_profile(s, info);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  po::options_description desc(
      "train_mnist: train a classifier on Fashion-MNIST with loom\n\n"
      "Usage: train_mnist [options]\n\nOptions");
  // clang-format off
  desc.add_options()
    ("help,h", "show this help")
    ("model", po::value(&a.model)->default_value(a.model), "softmax | mlp | mlpresnet")
    ("epochs", po::value(&a.epochs)->default_value(a.epochs), "epochs to train (0: only evaluate, e.g. with --load)")
    ("batch", po::value(&a.batch)->default_value(a.batch), "batch size")
    ("lr", po::value(&a.lr), "learning rate (default: 1e-3 for adam/adamw, 0.1 for sgd)")
    ("opt", po::value(&a.opt)->default_value(a.opt), "sgd | adam | adamw")
    ("wd", po::value(&a.wd)->default_value(a.wd), "weight decay (L2 for sgd/adam, decoupled for adamw)")
    ("momentum", po::value(&a.momentum)->default_value(a.momentum), "SGD momentum")
    ("nesterov", po::bool_switch(&a.nesterov), "SGD with Nesterov momentum")
    ("clip", po::value(&a.clip)->default_value(a.clip), "clip gradients to this global norm (0: off)")
    ("schedule", po::value(&a.schedule)->default_value(a.schedule), "learning-rate schedule over the run: cosine (decay to 0), step (halve every 2 epochs) or none (constant)")
    ("warmup", po::value(&a.warmup)->default_value(a.warmup), "linear warmup steps")
    ("hidden", po::value(&a.hidden), "hidden width (default: 512 for mlp, 100 for mlpresnet)")
    ("augment", po::bool_switch(&a.augment), "random horizontal flips and crops (padding 2)")
    ("data", po::value(&a.data)->default_value(a.data), "directory with the IDX files (gzip or raw)")
    ("threads", po::value(&a.threads)->default_value(a.threads), "threads (0: all cores)")
    ("device", po::value(&a.device)->default_value(a.device), "cpu, cuda or cuda:i (the whole graph runs there)")
    ("save", po::value(&a.save), "after every epoch, save the model's state_dict to this file (safetensors, as "
                                 "PyTorch names it) and the optimizer state beside it (NAME.optim.safetensors)")
    ("load", po::value(&a.load), "resume from a checkpoint of --save (weights, optimizer state, epoch count)")
    ("load-weights", po::value(&a.load_weights), "start from the weights in this file (a state_dict saved by loom "
                                                 "or PyTorch); the optimizer starts afresh")
    ("trace", po::value(&a.trace), "write a Chrome trace of training steps 2-6 to this file (ui.perfetto.dev)")
    ("seed", po::value(&a.seed)->default_value(a.seed), "seed for initialization, shuffling and dropout")
    ("eval-batch", po::value(&a.eval_batch)->default_value(a.eval_batch), "batch size for evaluation")
    ("json", po::bool_switch(&a.json), "print one JSON object per epoch (epoch, train_loss, train_acc, test_acc, "
                                       "seconds, images_per_s)")
    ("profile", po::bool_switch(&a.profile), "print the most expensive graph nodes at the end")
    ("distributed", po::bool_switch(&a.distributed), "data parallel over MPI (start with mpirun -np R): each rank "
                                                     "trains on its --batch rows of every global batch of R x --batch; "
                                                     "rank 0 prints and saves")
    ("executor", po::value(&a.executor)->default_value(a.executor), "serial | parallel (independent nodes at once: "
                                                                  "gradient allreduces overlap the backward pass)")
    ("bucket-mb", po::value(&a.bucket_mb)->default_value(a.bucket_mb), "--distributed: MiB of gradients per allreduce");
  // clang-format on
  try {
    po::variables_map vm;
    po::store(po::command_line_parser(argc, argv).options(desc).run(), vm);
    if (vm.count("help")) {
      std::cout << desc << "\n";
      return 0;
    }
    po::notify(vm);
    if (!vm.count("lr")) a.lr = a.opt == "sgd" ? 0.1 : 1e-3;
    if (!vm.count("hidden")) a.hidden = a.model == "mlpresnet" ? 100 : 512;
    if (a.epochs < 0) throw po::error("--epochs must be >= 0");
    if (a.batch <= 0 || a.eval_batch <= 0) throw po::error("--batch and --eval-batch must be positive");
    if (a.hidden <= 1) throw po::error("--hidden must be > 1");
    if (a.threads < 0) throw po::error("--threads must be >= 0");
    if (!a.load.empty() && !a.load_weights.empty()) throw po::error("--load and --load-weights exclude each other");
    if (a.executor != "serial" && a.executor != "parallel") throw po::error("--executor must be serial or parallel");
    if (!(a.bucket_mb > 0 && a.bucket_mb < 1e6)) throw po::error("--bucket-mb must be in (0, 1e6)");
  } catch (const po::error& e) {
    std::cerr << "train_mnist: " << e.what() << "\n(see train_mnist --help)\n";
    return 2;
  }
  std::unique_ptr<samples::Distributed> dist;
  try {
    dist = std::make_unique<samples::Distributed>(a.distributed, argc, argv);
    if (a.batch > (int64_t(1) << 40) / dist->size()) throw po::error("--batch is too large");
    return run(a, *dist);
  } catch (const std::exception& e) {
    if (dist) return dist->fail("train_mnist", e.what());
    std::cout.flush();
    std::cerr << "train_mnist: error: " << e.what() << "\n";
    return 1;
  }
}
