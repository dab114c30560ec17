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
#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>

#include "frontend/loom.hpp"
#include "samples/distributed.hpp"
#include "samples/models.hpp"
#include "samples/profile.hpp"
#include "samples/training.hpp"
#include "samples/trace.hpp"

namespace po = boost::program_options;
using namespace loom;
using samples::fmt;

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



/// One rank's training run: the data (with R ranks, rank r reads part r of every global batch of R * batch rows), the
/// graph and its session. Rank 0 prints and saves.
class Trainer {
 public:
  Trainer(const Args& a, samples::Distributed& dist)
      : a_(a),
        dist_(dist),
        train_set_(data::load_mnist(a.data, data::Split::train)),
        test_set_(data::load_mnist(a.data, data::Split::test)),
        train_(train_set_, {.batch_size = a.batch * dist.size(),
                            .shuffle = true,
                            .seed = a.seed,
                            .shard = dist.rank(),
                            .shards = dist.size()}),
        test_(test_set_, {.batch_size = a.eval_batch * dist.size(), .shard = dist.rank(), .shards = dist.size()}),
        trace_(dist.root() ? a.trace : ""),
        info_(!dist.root() ? dist.out() : a.json ? std::cerr : std::cout),
        tty_(!a.json && dist.root() && ::isatty(STDOUT_FILENO)) {
    train_.transform(0, data::transforms::normalize(kMean, kStd));
    if (a.augment) {
      train_.transform(0, data::transforms::random_flip_horizontal());
      train_.transform(0, data::transforms::random_crop(2));
    }
    test_.transform(0, data::transforms::normalize(kMean, kStd));
    build_graph();
    s_ = std::make_unique<Session>(
        g_, SessionOptions{.device = Device::parse(a.device),
                           .threads = a.threads,
                           .executor = a.executor == "parallel" ? Executor::parallel : Executor::serial,
                           .seed = a.seed,
                           .profile = a.profile || trace_.enabled()});
  }

  /// The first epoch to train, after --load or --load-weights on every rank.
  int64_t restore() {
    return samples::restore_on_every_rank(a_, dist_, *s_, *train_graph_, [&] { return load_checkpoint(); });
  }

  /// The line that says what is trained, how and where.
  void print_setup() {
    const int R = dist_.size();
    if (a_.distributed) info_ << R << (R == 1 ? " rank (" : " ranks (") << communicator()->name() << "), ";
    info_ << "model " << a_.model << " (" << model_->num_parameters() << " parameters), " << a_.opt << " lr " << a_.lr
          << (a_.schedule != "none" ? " (" + a_.schedule + ")" : "") << (a_.wd ? " wd " + fmt("%g", a_.wd) : "")
          << ", batch " << a_.batch << (R > 1 ? " per rank" : "") << ", "
          << (a_.device == "cpu" ? std::to_string(s_->options().threads) + " threads" : s_->options().device.str())
          << ", data " << a_.data << "\n";
  }

  /// One epoch of training steps (epoch e of those up to `last`), with a progress bar on a terminal.
  samples::EpochResult train_epoch(int64_t e, int64_t last) { return samples::train_epoch(loop(), e, last); }
  /// Accuracy on the test set (all ranks' parts).
  double evaluate() { return samples::evaluate(loop()); }

  /// The model's state_dict and the optimizer state after epoch `e`.
  void save(int64_t e) {
    checkpoint::Metadata meta = model_params(a_);
    meta["epoch"] = std::to_string(e);
    checkpoint::save_training(*s_, *model_, a_.save, meta);
  }

  /// After the last epoch: what was saved, the trace and the profile.
  void finish() {
    if (!a_.save.empty() && !a_.json && dist_.root())
      info_ << "saved " << a_.save << " (the model's state_dict) and " << checkpoint::optimizer_path(a_.save)
            << " (optimizer state)\n";
    if (trace_.enabled()) {
      trace_.write();
      if (trace_.done())
        info_ << "wrote a trace of training steps 2-6 to " << a_.trace << " (open in ui.perfetto.dev)\n";
      else
        info_ << "--trace: fewer than 2 training steps ran; no trace written\n";
    }
    if (a_.profile && dist_.root()) samples::print_profile(*s_, info_);
  }

 private:
  samples::ImageLoop loop() {
    return {*s_, *train_graph_, x_, y_, train_, test_, a_.batch * dist_.size(), tty_, &trace_, plateau_.get()};
  }

  /// The model built twice over shared variables: training mode for the step, eval mode for testing.
  void build_graph() {
    x_ = g_.placeholder("x", {-1, 28, 28});
    y_ = g_.placeholder("y", {-1}, int64);
    model_ = samples::make_sample_model(model_params(a_)).module;
    model_->train();
    Tensor logits = (*model_)(x_);
    Tensor loss = nn::cross_entropy(logits, y_);
    Tensor correct = nn::correct(logits, y_);
    model_->eval();
    Tensor eval_correct = nn::correct((*model_)(x_), y_);
    opt_ = samples::make_optimizer(a_, *model_, train_.size(), samples::epochs_before(a_, dist_), &plateau_);
    train_graph_ = std::make_unique<samples::TrainingGraph>(*opt_, a_.distributed, a_.bucket_mb, *model_, x_, loss,
                                                            correct, eval_correct);
  }

  /// --load (resume: weights, optimizer state and the epoch count) or --load-weights (from loom or PyTorch; the
  /// optimizer starts afresh). Returns the first epoch to train.
  int64_t load_checkpoint() {
    // The model kind first (a clearer message than the variables that differ), then the file(s).
    const std::string& path = a_.load.empty() ? a_.load_weights : a_.load;
    checkpoint::Metadata meta = checkpoint::read_metadata(path);
    auto it = meta.find("model");
    if (it != meta.end() && it->second != a_.model) {
      const bool ours = it->second == "softmax" || it->second == "mlp" || it->second == "mlpresnet";
      fail("'", path, "' holds a '", it->second, "' model, not '", a_.model, "'",
           ours ? " (use --model " + it->second + ")" : std::string(" (saved by another trainer?)"));
    }
    if (a_.load.empty()) {
      checkpoint::load(*s_, *model_, a_.load_weights);
      info_ << "loaded the weights of " << a_.load_weights << "\n";
      return 1;
    }
    checkpoint::load_training(*s_, *model_, a_.load);
    const int64_t first_epoch = samples::first_epoch_after(meta, a_.load, a_.epochs);
    info_ << "loaded " << a_.load << " (after epoch " << first_epoch - 1 << ")\n";
    return first_epoch;
  }

  const Args& a_;
  samples::Distributed& dist_;
  std::shared_ptr<data::TensorDataset> train_set_, test_set_;
  data::DataLoader train_, test_;
  Graph g_;
  Tensor x_, y_;
  std::unique_ptr<nn::Module> model_;
  std::unique_ptr<optim::ReduceLROnPlateau> plateau_;  // --schedule plateau
  std::unique_ptr<optim::Optimizer> opt_;
  std::unique_ptr<samples::TrainingGraph> train_graph_;  // refers to *opt_
  samples::TraceRecorder trace_;
  std::unique_ptr<Session> s_;
  std::ostream& info_;
  const bool tty_;
};

int run(const Args& a, samples::Distributed& dist) {
  Trainer trainer(a, dist);
  return samples::run_training(trainer, a, dist.root());
}

/// The command line's options, read into `a`.
po::options_description describe_options(Args& a) {
  po::options_description desc(
      "train_mnist: train a classifier on Fashion-MNIST with loom\n\n"
      "Usage: train_mnist [options]\n\nOptions");
  // clang-format off
  desc.add_options()
    ("help,h", "show this help")
    ("model", po::value(&a.model)->default_value(a.model), "softmax | mlp | mlpresnet")
    ("epochs", po::value(&a.epochs)->default_value(a.epochs), "epochs to train (0: only evaluate, e.g. with --load)")
    ("batch", po::value(&a.batch)->default_value(a.batch), "batch size")
    ("lr", po::value(&a.lr), "learning rate (default: 0.1 for sgd, PyTorch's for the others: 1e-2 adagrad, 2e-3 adamax and nadam, 1 adadelta, else 1e-3)")
    ("opt", po::value(&a.opt)->default_value(a.opt), samples::kOptimizers)
    ("wd", po::value(&a.wd)->default_value(a.wd), "weight decay (decoupled for adamw, L2 for the others)")
    ("momentum", po::value(&a.momentum)->default_value(a.momentum), "SGD momentum")
    ("nesterov", po::value(&a.nesterov)->default_value(a.nesterov)->implicit_value(true), "SGD with Nesterov momentum (--nesterov, or --nesterov true|false)")
    ("clip", po::value(&a.clip)->default_value(a.clip), "clip gradients to this global norm (0: off)")
    ("schedule", po::value(&a.schedule)->default_value(a.schedule), "learning-rate schedule over the run: cosine (decay to 0), step (halve every 2 epochs), plateau (halve after an epoch whose training loss did not fall) or none (constant)")
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
  return desc;
}

/// The defaults that depend on other options, then the checks (a po::error: a usage error).
void complete_args(const po::variables_map& vm, Args& a) {
  if (!vm.count("lr")) a.lr = samples::default_lr(a.opt, 0.1);
  if (!vm.count("hidden")) a.hidden = a.model == "mlpresnet" ? 100 : 512;
  if (a.epochs < 0 || a.epochs > (int64_t(1) << 30)) throw po::error("--epochs must be in [0, 2^30]");
  if (a.warmup < 0) throw po::error("--warmup must be >= 0");
  if (a.batch <= 0 || a.eval_batch <= 0) throw po::error("--batch and --eval-batch must be positive");
  if (a.hidden <= 1) throw po::error("--hidden must be > 1");
  if (a.threads < 0) throw po::error("--threads must be >= 0");
  if (!a.load.empty() && !a.load_weights.empty()) throw po::error("--load and --load-weights exclude each other");
  if (a.executor != "serial" && a.executor != "parallel") throw po::error("--executor must be serial or parallel");
  if (!(a.bucket_mb > 0 && a.bucket_mb < 1e6)) throw po::error("--bucket-mb must be in (0, 1e6)");
}

}  // namespace

int main(int argc, char** argv) {
  return samples::trainer_main("train_mnist", argc, argv, &describe_options, &complete_args, &run);
}
