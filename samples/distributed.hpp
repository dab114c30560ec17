#pragma once
// --distributed for the sample trainers: MPI when they are built with
// libloom_mpi (LOOM_SAMPLES_MPI), rank 0 as the one that prints and saves, and
// an error on any rank ending the whole job at once instead of leaving the
// other ranks waiting in a collective.

#include <cstdio>
#include <iostream>
#include <memory>
#include <ostream>
#include <streambuf>
#include <string>

#include "frontend/distributed.hpp"
#include "frontend/nn.hpp"
#include "frontend/optim.hpp"
#ifdef LOOM_SAMPLES_MPI
#include "frontend/mpi.hpp"
#endif

namespace loom::samples {

/// A trainer's step and what it reports, on one process or data-parallel.
/// Distributed: gradients all-reduced in buckets, the loss and the counts
/// reported over all ranks, and `sync_state` sending rank 0's variables to
/// every rank (a no-op tensor otherwise).
struct TrainingGraph {
  dist::DataParallel dp;
  Tensor step, loss, correct, eval_correct, sync_state;
  TrainingGraph(optim::Optimizer& opt, bool distributed, double bucket_mb, nn::Module& model, const Tensor& x,
                const Tensor& local_loss, const Tensor& local_correct, const Tensor& local_eval_correct)
      : dp(opt, {.bucket_bytes = size_t(bucket_mb * double(1 << 20))}) {
    step = distributed ? dp.minimize(local_loss, x) : opt.minimize(local_loss);
    loss = distributed ? dp.global_mean(local_loss, x) : local_loss;
    correct = distributed ? dist::global_sum(local_correct) : local_correct;
    eval_correct = distributed ? dist::global_sum(local_eval_correct) : local_eval_correct;
    if (distributed) sync_state = dp.broadcast_target(&model);
  }
};

class Distributed {
 public:
  /// Starts MPI when `on` (the group is then whatever mpirun started, 1 without it).
  Distributed(bool on, int& argc, char**& argv) {
    if (!on) return;
#ifdef LOOM_SAMPLES_MPI
    env_ = std::make_unique<loom::mpi::Environment>(argc, argv);
#else
    loom::fail(
        "--distributed: this program was built without MPI (apt-get install libopenmpi-dev openmpi-bin, "
        "then reconfigure)");
#endif
  }
  int rank() const { return loom::dist::rank(); }
  int size() const { return loom::dist::size(); }
  bool root() const { return rank() == 0; }
  /// std::cout on rank 0; a stream that drops everything elsewhere.
  std::ostream& out() { return root() ? std::cout : null_; }

  /// Reports an error of this rank and ends the job (every rank) when it has several.
  int fail(const std::string& program, const std::string& what) {
    std::cout.flush();
    if (size() > 1) {
      std::cerr << program << ": error on rank " << rank() << " of " << size() << ": " << what << std::endl;
#ifdef LOOM_SAMPLES_MPI
      if (env_) env_->abort(1);
#endif
    }
    std::cerr << program << ": error: " << what << "\n";
    return 1;
  }

 private:
  struct NullBuf : std::streambuf {
    int overflow(int c) override { return c; }
  } null_buf_;
  std::ostream null_{&null_buf_};
#ifdef LOOM_SAMPLES_MPI
  std::unique_ptr<loom::mpi::Environment> env_;
#endif
};

}  // namespace loom::samples
