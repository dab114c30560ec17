// train_cnn: trains a convolutional network (the course's ResNet9, or a
// small two-block CNN) on Fashion-MNIST or CIFAR-10 with loom's frontend and
// prints the test accuracy after every epoch.
//
//   train_cnn                           # resnet9 on Fashion-MNIST: SGD (Nesterov, lr 0.2,
//                                       # cosine), batch 128, 5 epochs
//   train_cnn --model cnn
//   train_cnn --dataset cifar10 --data ~/cifar-10-batches-bin --augment
//   train_cnn --json                    # one JSON object per epoch
//   train_cnn --save m.safetensors      # checkpoint after every epoch
//   train_cnn --load m.safetensors --epochs 0   # evaluate a checkpoint
//
//   mpirun -np 2 train_cnn --distributed --batch 64   # data parallel (BatchNorm: per-rank batch statistics)
//
// One Session::run per step does forward, backward, the optimizer update and
// the batch norms' running statistics; the DataLoader assembles (and
// augments) the next batch on a background thread meanwhile.

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

namespace po = boost::program_options;
using namespace loom;
using samples::fmt;

namespace {

// Defaults, measured on Fashion-MNIST over 5 epochs (README, "Convolutional
// networks"): SGD with Nesterov momentum 0.9, lr 0.2 after 200 warmup steps,
// cosine decay, weight decay 5e-4, batch 128 beat Adam (lr 1e-3, cosine) by
// 1.3 points on resnet9 and 0.4 on cnn.
struct Args {
  std::string model = "resnet9", dataset = "fashion-mnist", data, opt = "sgd", save, load, load_weights, schedule = "cosine",
              device = "cpu";
  int64_t epochs = 5, batch = 128, eval_batch = 500, warmup = 200;
  double lr = 0, wd = 0, momentum = 0.9, clip = 0;
  int threads = 0;
  uint64_t seed = 0;
  bool json = false, profile = false, nesterov = true, augment = false, distributed = false;
  double bucket_mb = 4;
};

/// A data set with its geometry and training-set statistics (pixels on [0, 1]).
struct DataSpec {
  std::shared_ptr<data::TensorDataset> train, test;
  int64_t channels, size;
  std::vector<double> mean, stddev;
};

DataSpec load_data(const Args& a) {
  if (a.dataset == "fashion-mnist")
    return {data::load_mnist(a.data, data::Split::train),
            data::load_mnist(a.data, data::Split::test),
            1,
            28,
            {0.2860},
            {0.3530}};
  if (a.dataset == "cifar10")
    return {data::load_cifar10(a.data, data::Split::train),
            data::load_cifar10(a.data, data::Split::test),
            3,
            32,
            {0.4914, 0.4822, 0.4465},
            {0.2470, 0.2435, 0.2616}};
  fail("unknown --dataset '", a.dataset, "' (fashion-mnist, cifar10)");
}

/// The model train_cnn's --model names, from the table loom_export shares (samples/models.hpp).
std::unique_ptr<nn::Module> make_model(const Args& a) {
  LOOM_CHECK(a.model == "cnn" || a.model == "resnet9", "unknown --model '", a.model, "' (cnn, resnet9)");
  return samples::make_sample_model({{"model", a.model}, {"dataset", a.dataset}}).module;
}


/// Feeds images as [B, C, H, W] floats: Fashion-MNIST's [B, 28, 28] bytes gain a channel dim.
void add_transforms(data::DataLoader& loader, const DataSpec& d, bool augment) {
  if (d.channels == 1 && loader.dataset().fields()[0].shape.size() == 2)
    loader.transform(0, data::transforms::reshape({1, d.size, d.size}));
  if (augment) {
    loader.transform(0, data::transforms::random_crop(d.size / 8));
    loader.transform(0, data::transforms::random_flip_horizontal());
  }
  loader.transform(0, data::transforms::normalize_channels(d.mean, d.stddev));
}


/// One rank's training run: the data (with R ranks, rank r reads part r of every global batch of R * batch rows), the
/// graph and its session. Rank 0 prints and saves.
class Trainer {
 public:
  Trainer(const Args& a, samples::Distributed& dist)
      : a_(a),
        dist_(dist),
        d_(load_data(a)),
        train_(d_.train, {.batch_size = a.batch * dist.size(),
                          .shuffle = true,
                          .seed = a.seed,
                          .shard = dist.rank(),
                          .shards = dist.size()}),
        test_(d_.test, {.batch_size = a.eval_batch * dist.size(), .shard = dist.rank(), .shards = dist.size()}),
        info_(!dist.root() ? dist.out() : a.json ? std::cerr : std::cout),
        tty_(!a.json && dist.root() && ::isatty(STDOUT_FILENO)) {
    add_transforms(train_, d_, a.augment);
    add_transforms(test_, d_, false);
    build_graph();
    const SessionOptions options{
        .device = Device::parse(a.device), .threads = a.threads, .seed = a.seed, .profile = a.profile};
    s_ = std::make_unique<Session>(g_, options);
  }

  /// The first epoch to train, after --load or --load-weights on every rank.
  int64_t restore() {
    return samples::restore_on_every_rank(a_, dist_, *s_, *train_graph_, [&] { return load_checkpoint(); });
  }

  /// The line that says what is trained, how and where.
  void print_setup() {
    const int R = dist_.size();
    info_ << (a_.distributed ? std::to_string(R) + (R == 1 ? " rank (" : " ranks (") + communicator()->name() + "), "
                             : "")
          << "model " << a_.model << " (" << model_->num_parameters() << " parameters), " << a_.dataset << ", "
          << a_.opt << " lr " << a_.lr << (a_.schedule != "none" ? " (" + a_.schedule + ")" : "")
          << (a_.wd ? " wd " + fmt("%g", a_.wd) : "") << ", batch " << a_.batch << (R > 1 ? " per rank" : "")
          << (a_.augment ? ", augmented" : "") << ", "
          << (a_.device == "cpu" ? std::to_string(s_->options().threads) + " threads" : s_->options().device.str())
          << ", data " << a_.data << "\n";
  }

  /// One epoch of training steps (epoch e of those up to `last`), with a progress bar on a terminal.
  samples::EpochResult train_epoch(int64_t e, int64_t last) { return samples::train_epoch(loop(), e, last); }

  /// Accuracy on the test set (all ranks' parts), with the running statistics averaged over the ranks first.
  double evaluate() {
    if (average_buffers_.valid()) s_->run({}, {}, {average_buffers_});
    return samples::evaluate(loop());
  }

  /// The model's state_dict and the optimizer state after epoch `e`.
  void save(int64_t e) {
    checkpoint::save_training(*s_, *model_, a_.save,
                              {{"model", a_.model}, {"dataset", a_.dataset}, {"epoch", std::to_string(e)}});
  }

  /// After the last epoch: what was saved, and the profile.
  void finish() {
    if (!a_.save.empty() && !a_.json && dist_.root())
      info_ << "saved " << a_.save << " (the model's state_dict) and " << checkpoint::optimizer_path(a_.save) << "\n";
    if (a_.profile && dist_.root()) samples::print_profile(*s_, info_);
  }

 private:
  samples::ImageLoop loop() {
    return {*s_, *train_graph_, x_, y_, train_, test_, a_.batch * dist_.size(), tty_, nullptr, plateau_.get()};
  }

  /// The model built twice over shared variables: training mode for the step, eval mode for testing.
  void build_graph() {
    x_ = g_.placeholder("x", {-1, d_.channels, d_.size, d_.size});
    y_ = g_.placeholder("y", {-1}, int64);
    model_ = make_model(a_);
    model_->train();
    Tensor logits = (*model_)(x_);
    Tensor loss = nn::cross_entropy(logits, y_);
    Tensor correct = nn::correct(logits, y_);
    model_->eval();
    Tensor eval_correct = nn::correct((*model_)(x_), y_);
    opt_ = samples::make_optimizer(a_, *model_, train_.size(), samples::epochs_before(a_, dist_), &plateau_);
    // Distributed: BatchNorm normalizes with each rank's own batch statistics (as PyTorch's DDP without
    // SyncBatchNorm); the running statistics are averaged over the ranks before every evaluation and checkpoint.
    train_graph_ = std::make_unique<samples::TrainingGraph>(*opt_, a_.distributed, a_.bucket_mb, *model_, x_, loss,
                                                            correct, eval_correct);
    std::vector<Tensor> buffers;
    for (const auto& [name, b] : model_->named_buffers()) buffers.push_back(b);
    if (a_.distributed && !buffers.empty()) average_buffers_ = dist::average_target(buffers);
  }

  /// --load (resume: weights, running statistics, optimizer state and the epoch count) or --load-weights (a
  /// state_dict, loom's or PyTorch's; the optimizer starts afresh). Returns the first epoch to train.
  int64_t load_checkpoint() {
    // The model and data set first (clearer than the tensors that differ), then the file(s).
    const std::string& path = a_.load.empty() ? a_.load_weights : a_.load;
    checkpoint::Metadata meta = checkpoint::read_metadata(path);
    for (const char* key : {"model", "dataset"}) {
      auto it = meta.find(key);
      const std::string& want = std::string(key) == "model" ? a_.model : a_.dataset;
      if (it == meta.end() || it->second == want) continue;
      const bool ours =
          it->second == "cnn" || it->second == "resnet9" || it->second == "fashion-mnist" || it->second == "cifar10";
      fail("'", path, "' holds a ", key, " '", it->second, "', not '", want, "'",
           ours ? " (use --" + std::string(key) + " " + it->second + ")" : std::string(" (saved by another trainer?)"));
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
  const DataSpec d_;
  data::DataLoader train_, test_;
  Graph g_;
  Tensor x_, y_;
  std::unique_ptr<nn::Module> model_;
  std::unique_ptr<optim::ReduceLROnPlateau> plateau_;  // --schedule plateau
  std::unique_ptr<optim::Optimizer> opt_;
  std::unique_ptr<samples::TrainingGraph> train_graph_;  // refers to *opt_
  Tensor average_buffers_;                               // valid when distributed and the model has buffers
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
      "train_cnn: train a convolutional network on Fashion-MNIST or CIFAR-10 with loom\n\n"
      "Usage: train_cnn [options]\n\nOptions");
  // clang-format off
  desc.add_options()
    ("help,h", "show this help")
    ("model", po::value(&a.model)->default_value(a.model), "resnet9 (the course's ResNet9) | cnn (two conv blocks and an MLP)")
    ("dataset", po::value(&a.dataset)->default_value(a.dataset), "fashion-mnist | cifar10")
    ("data", po::value(&a.data), "directory with the data set's files (default: /usr/share/datasets/fashion-mnist; "
                                 "for cifar10 the unpacked binary version, cifar-10-batches-bin)")
    ("epochs", po::value(&a.epochs)->default_value(a.epochs), "epochs to train (0: only evaluate, e.g. with --load)")
    ("batch", po::value(&a.batch)->default_value(a.batch), "batch size")
    ("lr", po::value(&a.lr), "learning rate (default: 0.2 for sgd, PyTorch's for the others: 1e-2 adagrad, 2e-3 adamax and nadam, 1 adadelta, else 1e-3)")
    ("opt", po::value(&a.opt)->default_value(a.opt), samples::kOptimizers)
    ("wd", po::value(&a.wd), "weight decay, decoupled for adamw, L2 for the others (default: 5e-4 for sgd, 0 otherwise)")
    ("momentum", po::value(&a.momentum)->default_value(a.momentum), "SGD momentum")
    ("nesterov", po::value(&a.nesterov)->default_value(a.nesterov)->implicit_value(true), "SGD with Nesterov momentum (--nesterov, or --nesterov true|false)")
    ("clip", po::value(&a.clip)->default_value(a.clip), "clip gradients to this global norm (0: off)")
    ("schedule", po::value(&a.schedule)->default_value(a.schedule), "learning-rate schedule over the run: cosine (decay to 0), step (halve every 2 epochs), plateau (halve after an epoch whose training loss did not fall) or none")
    ("warmup", po::value(&a.warmup)->default_value(a.warmup), "linear warmup steps (0: none)")
    ("augment", po::bool_switch(&a.augment), "random crops (padding size/8) and horizontal flips")
    ("threads", po::value(&a.threads)->default_value(a.threads), "threads (0: all cores)")
    ("device", po::value(&a.device)->default_value(a.device), "cpu, cuda or cuda:i (the whole graph runs there)")
    ("save", po::value(&a.save), "save a checkpoint (safetensors) after every epoch")
    ("load", po::value(&a.load), "resume from a checkpoint of --save (weights, running statistics, optimizer state, epoch)")
    ("load-weights", po::value(&a.load_weights), "start from the weights in this file (a state_dict saved by loom "
     "or by PyTorch's safetensors for samples/torch_models.py's model); the optimizer starts afresh")
    ("seed", po::value(&a.seed)->default_value(a.seed), "seed for initialization, shuffling and augmentation")
    ("eval-batch", po::value(&a.eval_batch)->default_value(a.eval_batch), "batch size for evaluation")
    ("json", po::bool_switch(&a.json), "print one JSON object per epoch (epoch, train_loss, train_acc, test_acc, "
                                       "seconds, images_per_s)")
    ("profile", po::bool_switch(&a.profile), "print the most expensive graph nodes at the end")
    ("distributed", po::bool_switch(&a.distributed), "data parallel over MPI (start with mpirun -np R): each rank "
                                                     "trains on its --batch rows of every global batch of R x --batch "
                                                     "(BatchNorm: per-rank batch statistics, running statistics "
                                                     "averaged over ranks); rank 0 prints and saves")
    ("bucket-mb", po::value(&a.bucket_mb)->default_value(a.bucket_mb), "--distributed: MiB of gradients per allreduce");
  // clang-format on
  return desc;
}

/// The defaults that depend on other options, then the checks (a po::error: a usage error).
void complete_args(const po::variables_map& vm, Args& a) {
  if (!vm.count("lr")) a.lr = samples::default_lr(a.opt, 0.2);
  if (!vm.count("wd")) a.wd = a.opt == "sgd" ? 5e-4 : 0.0;
  if (!vm.count("data")) {
    if (a.dataset != "fashion-mnist")
      throw po::error("--dataset " + a.dataset + " needs --data DIR (CIFAR-10 cannot be downloaded here; see README)");
    a.data = data::kFashionMnistDir;
  }
  if (!a.load.empty() && !a.load_weights.empty()) throw po::error("--load and --load-weights exclude each other");
  if (a.epochs < 0 || a.epochs > (int64_t(1) << 30)) throw po::error("--epochs must be in [0, 2^30]");
  if (a.warmup < 0) throw po::error("--warmup must be >= 0");
  if (a.batch <= 0 || a.eval_batch <= 0) throw po::error("--batch and --eval-batch must be positive");
  if (a.threads < 0) throw po::error("--threads must be >= 0");
  if (!(a.bucket_mb > 0 && a.bucket_mb < 1e6)) throw po::error("--bucket-mb must be in (0, 1e6)");
}

}  // namespace

int main(int argc, char** argv) {
  return samples::trainer_main("train_cnn", argc, argv, &describe_options, &complete_args, &run);
}
