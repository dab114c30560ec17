#pragma once
/// Data-parallel training: R processes (ranks) run the same graph, each on its
/// own part of every global batch, and average their gradients with
/// collective ops (ops/collective.cpp) before one identical update, so that the
/// parameters stay equal on every rank. The group is core/comm.hpp's
/// communicator: MPI through libloom_mpi (frontend/mpi.hpp), a single process
/// otherwise (then everything below is an identity and costs nothing).
///
///     mpi::Environment env(argc, argv);                  // first: graphs record the group size
///     data::DataLoader train(set, {.batch_size = R * B, .shuffle = true,
///                                  .shard = dist::rank(), .shards = dist::size()});
///     Tensor loss = nn::cross_entropy(model(x), y);      // the mean over this rank's rows
///     optim::Adam adam(model);
///     dist::DataParallel dp(adam, {.bucket_bytes = 1 << 20});
///     Tensor step = dp.minimize(loss, x);                // x: dim 0 is this rank's batch
///     Tensor global_loss = dp.global_mean(loss, x);      // the loss over the global batch
///     Session s(g);
///     s.run({}, {}, {dp.broadcast_target(model)});       // rank 0's initial state everywhere
///
/// Gradients are all-reduced in buckets (one allreduce node per bucket of about
/// bucket_bytes, parameters taken in reverse order as the backward pass produces
/// their gradients), so the parallel executor starts a bucket's exchange as soon
/// as its gradients exist and overlaps it with the rest of the backward pass.
/// A rank's gradient is weighted by its share of the global batch, so that a last
/// batch cut into unequal parts still gives the gradient of the global mean.

#include <cstddef>
#include <vector>

#include "core/graph.hpp"

namespace loom::nn {
class Module;
}
namespace loom::optim {
class Optimizer;
}

namespace loom::dist {

/// This process's rank in the group and the group's size.
int rank();
int size();
/// Rank 0, the one that prints and writes files.
inline bool is_root() { return rank() == 0; }

/// The mean over the global batch of a per-rank mean over `batch`'s rows
/// (dim 0 of `batch` is this rank's row count; a rank with no rows counts 0).
Tensor global_mean(const Tensor& local_mean, const Tensor& batch);
/// The sum over ranks (counts, such as correct predictions).
Tensor global_sum(const Tensor& x);
/// A target that sets `variables` to rank 0's values on every rank.
Tensor broadcast_target(const std::vector<Tensor>& variables);
/// A target that sets `variables` (float) to their mean over the ranks
/// (BatchNorm's running statistics, before evaluating or saving).
Tensor average_target(const std::vector<Tensor>& variables);

struct Options {
  /// Bytes of gradients per allreduce (PyTorch DDP's default: 25 MiB). Smaller
  /// buckets start communication earlier in the backward pass; larger ones
  /// send fewer messages. A parameter larger than this is a bucket of its own.
  size_t bucket_bytes = size_t(25) << 20;
};

class DataParallel {
 public:
  explicit DataParallel(optim::Optimizer& optimizer, Options options = {});

  /// Gradients of `loss` (this rank's mean over `batch`'s rows), all-reduced in
  /// buckets to the gradient of the mean over the global batch, then the
  /// optimizer's update (identical on every rank). Returns the step target.
  Tensor minimize(const Tensor& loss, const Tensor& batch);
  /// Averages per-rank gradients (one per parameter) over the ranks, in buckets.
  std::vector<Tensor> allreduce_gradients(const std::vector<Tensor>& grads);
  /// The global mean of a per-rank mean over `batch`'s rows (sharing the row count's exchange with minimize).
  Tensor global_mean(const Tensor& local_mean, const Tensor& batch);
  /// A target that sets the optimizer's parameters and state, and `module`'s
  /// buffers when given, to rank 0's values: run it once before training (and
  /// after loading a checkpoint on rank 0 only, or on all ranks).
  Tensor broadcast_target(const nn::Module* module = nullptr);
  /// The buckets of the last allreduce_gradients: parameter indices, in the order they are reduced.
  const std::vector<std::vector<size_t>>& buckets() const { return buckets_; }

 private:
  optim::Optimizer& opt_;
  /// This rank's row count of `batch` and its sum over ranks (one exchange per batch tensor).
  std::pair<Tensor, Tensor> rows(const Tensor& batch);
  Options options_;
  std::vector<std::vector<size_t>> buckets_;
  Tensor batch_, rows_, total_rows_;
};

}  // namespace loom::dist
