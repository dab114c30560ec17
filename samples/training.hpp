#pragma once
// What the image trainers (train_mnist, train_cnn) share: main's outline, the
// optimizer their options name, the checkpoint they resume from, the epoch
// of training steps and the evaluation, the line each epoch reports, and the
// run's outline.

#include <boost/program_options.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "core/error.hpp"
#include "core/file.hpp"
#include "frontend/checkpoint.hpp"
#include "frontend/data.hpp"
#include "frontend/nn.hpp"
#include "frontend/optim.hpp"
#include "samples/cli.hpp"
#include "samples/distributed.hpp"
#include "samples/models.hpp"
#include "samples/progress.hpp"
#include "samples/trace.hpp"

namespace loom::samples {

/// The trainers' --opt values.
inline constexpr const char* kOptimizers = "sgd, adam, adamw, rmsprop, adagrad, adamax, nadam, radam, adadelta";

/// The optimizer of a trainer's options (opt, lr, momentum, nesterov, wd,
/// clip, schedule, warmup, epochs) for `steps_per_epoch` steps an epoch. The
/// schedule spans the whole run: the `epochs_before` a resumed checkpoint
/// trained (its optimizer state counts their steps) and --epochs more.
/// --schedule plateau sets `plateau`: ReduceLROnPlateau on each epoch's training loss (halving after
/// an epoch without improvement), which the trainer's epochs step (ImageLoop::plateau).
template <class Args>
std::unique_ptr<optim::Optimizer> make_optimizer(const Args& a, const nn::Module& model, int64_t steps_per_epoch,
                                                 int64_t epochs_before,
                                                 std::unique_ptr<optim::ReduceLROnPlateau>* plateau = nullptr) {
  optim::Schedule sched;
  const int64_t total = std::max<int64_t>(1, (epochs_before + a.epochs) * steps_per_epoch);
  if (a.schedule == "cosine") {
    sched = optim::schedule::cosine(total);
  } else if (a.schedule == "step") {
    sched = optim::schedule::step(std::max<int64_t>(1, steps_per_epoch * 2), 0.5);
  } else if (a.schedule == "plateau" && plateau) {
    Graph& g = model.state_dict().front().second.graph();
    *plateau = std::make_unique<optim::ReduceLROnPlateau>(g, optim::PlateauOptions{.factor = 0.5, .patience = 0});
    sched = (*plateau)->schedule();
  } else if (a.schedule != "none") {
    fail("unknown --schedule '", a.schedule, "' (none, cosine, step", plateau ? ", plateau)" : ")");
  }
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
  if (a.opt == "rmsprop")
    return std::make_unique<optim::RMSprop>(
        model, optim::RMSpropOptions{.lr = a.lr, .weight_decay = a.wd, .clip_norm = a.clip, .schedule = sched});
  if (a.opt == "adagrad")
    return std::make_unique<optim::Adagrad>(
        model, optim::AdagradOptions{.lr = a.lr, .weight_decay = a.wd, .clip_norm = a.clip, .schedule = sched});
  if (a.opt == "adamax")
    return std::make_unique<optim::Adamax>(
        model, optim::AdamaxOptions{.lr = a.lr, .weight_decay = a.wd, .clip_norm = a.clip, .schedule = sched});
  if (a.opt == "nadam")
    return std::make_unique<optim::NAdam>(
        model, optim::NAdamOptions{.lr = a.lr, .weight_decay = a.wd, .clip_norm = a.clip, .schedule = sched});
  if (a.opt == "radam")
    return std::make_unique<optim::RAdam>(
        model, optim::RAdamOptions{.lr = a.lr, .weight_decay = a.wd, .clip_norm = a.clip, .schedule = sched});
  if (a.opt == "adadelta")
    return std::make_unique<optim::Adadelta>(
        model, optim::AdadeltaOptions{.lr = a.lr, .weight_decay = a.wd, .clip_norm = a.clip, .schedule = sched});
  fail("unknown --opt '", a.opt, "' (", kOptimizers, ")");
}

/// The trainers' --lr when not given: `sgd_lr` for SGD, PyTorch's default for the others.
inline double default_lr(const std::string& opt, double sgd_lr) {
  if (opt == "sgd") return sgd_lr;
  if (opt == "adagrad") return 1e-2;
  if (opt == "adamax" || opt == "nadam") return 2e-3;
  if (opt == "adadelta") return 1.0;
  return 1e-3;
}

/// The epochs the --load checkpoint trained (0 without --load), on every rank:
/// rank 0 reads them from the file's metadata (the others need not see it).
template <class Args>
int64_t epochs_before(const Args& a, const Distributed& dist) {
  int64_t done = 0;
  if (dist.root() && !a.load.empty()) done = epochs_done(checkpoint::read_metadata(a.load), a.load);
  if (a.distributed) communicator()->broadcast(&done, sizeof done, 0);
  return done;
}

/// Rank 0 reads the checkpoint the options name (the others need not see the
/// file; `load_checkpoint` returns the first epoch to train), then sends that
/// epoch and its state to every rank. Returns the first epoch to train.
template <class Args, class LoadCheckpoint>
int64_t restore_on_every_rank(const Args& a, const Distributed& dist, Session& s, const TrainingGraph& tg,
                              LoadCheckpoint&& load_checkpoint) {
  int64_t first_epoch = 1;
  if (dist.root() && (!a.load.empty() || !a.load_weights.empty())) first_epoch = load_checkpoint();
  if (a.distributed) {
    communicator()->broadcast(&first_epoch, sizeof first_epoch, 0);
    s.run({}, {}, {tg.sync_state});
  }
  return first_epoch;
}

/// The mean loss and accuracy over an epoch's global batches, and how long it took.
struct EpochResult {
  double loss, accuracy, seconds;
  int64_t images;
};

/// What an epoch of training steps and an evaluation run on. With R ranks,
/// the loaders yield this rank's part of every global batch.
struct ImageLoop {
  Session& session;
  const TrainingGraph& graph;
  Tensor x, y;                 // the images' and labels' placeholders
  data::DataLoader& train;
  data::DataLoader& test;
  int64_t global_batch;        // rows of a global batch (all ranks')
  bool tty;                    // a progress bar on the terminal
  TraceRecorder* trace = nullptr;  // --trace: records a few training steps
  optim::ReduceLROnPlateau* plateau = nullptr;  // --schedule plateau: stepped with each epoch's loss
};

/// One epoch of training steps (epoch e of those up to `last`); the mean loss
/// and accuracy are over the global batches.
inline EpochResult train_epoch(const ImageLoop& l, int64_t e, int64_t last) {
  Progress bar(l.tty, e, last, l.train.size());
  const int64_t train_size = l.train.dataset().size();
  double total_loss = 0, total_right = 0;
  int64_t images = 0, done = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (const data::Batch& b : l.train.epoch(e - 1)) {
    const bool traced = l.trace && l.trace->before_run();
    std::vector<NDArray> out = l.session.run({l.graph.loss, l.graph.correct}, {{l.x, b[0]}, {l.y, b[1]}}, {l.graph.step});
    if (traced) l.trace->after_run(l.session);
    const int64_t n = std::min(l.global_batch, train_size - images);  // rows of the global batch
    total_loss += out[0].item() * double(n);
    total_right += out[1].item();
    images += n;
    bar.update(++done, images, total_loss / double(images), total_right / double(images));
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  bar.clear();
  if (images == 0) fail("epoch ", e, " had no batches (is the training set empty?)");
  if (!std::isfinite(total_loss)) fail("the training loss became ", total_loss, " in epoch ", e, "; try a smaller --lr");
  if (l.plateau) l.plateau->step(l.session, total_loss / double(images));
  return {total_loss / double(images), total_right / double(images), seconds, images};
}

/// Accuracy on the test set (all ranks' parts).
inline double evaluate(const ImageLoop& l) {
  double right = 0;
  for (const data::Batch& b : l.test.epoch(0))
    right += l.session.run({l.graph.eval_correct}, {{l.x, b[0]}, {l.y, b[1]}})[0].item();
  return right / double(l.test.dataset().size());
}

/// One epoch's line: a JSON object (epoch, train_loss, train_acc, test_acc, seconds, images_per_s) or text.
inline void print_epoch(bool json, int64_t e, int64_t last, const EpochResult& r, double test_acc) {
  const double images_per_s = double(r.images) / r.seconds;
  if (json) {
    nlohmann::json line = {{"epoch", e},           {"train_loss", r.loss}, {"train_acc", r.accuracy},
                           {"test_acc", test_acc}, {"seconds", r.seconds}, {"images_per_s", images_per_s}};
    std::printf("%s\n", line.dump().c_str());
  } else {
    std::printf("epoch %lld/%lld  train loss %.4f  train acc %.4f  test acc %.4f  %.2f s  %.0f img/s\n", (long long)e,
                (long long)last, r.loss, r.accuracy, test_acc, r.seconds, images_per_s);
  }
  std::fflush(stdout);
}

/// A trainer's run: restore, then each epoch trained, evaluated, reported
/// and saved (rank 0 reports and saves); --epochs 0 only evaluates (and saves). Trainer
/// has restore() (the first epoch), print_setup(), train_epoch(e, last),
/// evaluate(), save(e) and finish().
template <class Trainer, class Args>
int run_training(Trainer& trainer, const Args& a, bool root) {
  if (!a.save.empty() && root) {  // refuse an unwritable --save before the first epoch, not after it
    io::check_writable(a.save);
    io::check_writable(checkpoint::optimizer_path(a.save));
  }
  const int64_t first_epoch = trainer.restore();
  if (!a.json) trainer.print_setup();
  double test_acc = NAN;
  const int64_t last = first_epoch + a.epochs - 1;
  for (int64_t e = first_epoch; e <= last; ++e) {
    const EpochResult r = trainer.train_epoch(e, last);
    test_acc = trainer.evaluate();
    if (root) print_epoch(a.json, e, last, r, test_acc);
    if (!a.save.empty() && root) trainer.save(e);
  }
  if (a.epochs == 0) {
    test_acc = trainer.evaluate();
    if (a.json && root) std::printf("%s\n", nlohmann::json{{"test_acc", test_acc}}.dump().c_str());
    if (!a.save.empty() && root) trainer.save(first_epoch - 1);  // what was loaded (or initialized) and evaluated
  }
  if (!a.json && root) std::printf("test accuracy %.4f\n", test_acc);
  trainer.finish();
  return 0;
}

/// A trainer's main: the command line read into Args (`describe` declares the
/// options; `complete` sets the defaults that depend on others and checks
/// them: a usage error exits with 2), then `run` on this process's rank (an
/// error exits with 1; distributed runs stop every rank).
template <class Args>
int trainer_main(const char* name, int argc, char** argv,
                 boost::program_options::options_description (*describe)(Args&),
                 void (*complete)(const boost::program_options::variables_map&, Args&),
                 int (*run)(const Args&, Distributed&)) {
  Args a;
  const boost::program_options::options_description desc = describe(a);
  auto complete_a = [&](const boost::program_options::variables_map& vm) { complete(vm, a); };
  if (auto stop = parse_command_line(name, argc, argv, desc, complete_a)) return *stop;
  return run_reporting_errors(name, [&] {
    Distributed dist(a.distributed, argc, argv);  // an error here has no group to stop yet
    try {
      if (a.batch > (int64_t(1) << 40) / dist.size()) fail("--batch is too large");
      return run(a, dist);
    } catch (const std::exception& e) {
      return dist.fail(name, e.what());
    }
  });
}

}  // namespace loom::samples
