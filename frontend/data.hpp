#pragma once
/// Data: IDX files (the MNIST format), datasets, transforms and a DataLoader
/// that assembles host batches (NDArrays) to feed through Session::run:
///
///     auto train = data::load_mnist("/usr/share/datasets/fashion-mnist", data::Split::train);
///     data::DataLoader loader(train, {.batch_size = 128, .shuffle = true, .seed = 1});
///     loader.transform(0, data::transforms::normalize(0.2860, 0.3530));
///     for (const data::Batch& b : loader.epoch(e)) s.run({loss}, {{x, b[0]}, {y, b[1]}}, {step});
///
/// Shuffling and random transforms draw from Philox streams keyed by the
/// loader's seed, the epoch and the example index, so an epoch's batches are
/// the same whatever the threads or prefetching, and an interrupted run can
/// be resumed at epoch e exactly.

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "core/ndarray.hpp"
#include "core/op.hpp"

namespace loom::data {

// ---------------------------------------------------------------- IDX files

/// Reads an IDX file (MNIST's format: magic 00 00 <type> <ndim>, big-endian
/// dims, big-endian data), gzip-compressed or raw (detected by content).
/// Types: ubyte -> uint8, sbyte/short -> int32, int -> int32, float -> float32,
/// double -> float64. A wrong magic, an unknown type, a truncated file or
/// extra bytes throw loom::Error naming the file and what was expected.
NDArray read_idx(const std::string& path);

/// Writes an IDX file (uint8, int32, float32 or float64), gzip-compressed
/// when `gzip` is true; atomically (temporary file + rename).
void write_idx(const std::string& path, const NDArray& array, bool gzip = false);

// ---------------------------------------------------------------- datasets

/// A sequence of examples; each example has the same fields (e.g. image,
/// label) with fixed shapes and dtypes. Implementations must allow concurrent
/// const calls (the loader reads on a background thread).
class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual int64_t size() const = 0;
  /// Dtype and shape of each field of one example.
  virtual std::vector<TensorType> fields() const = 0;
  /// Copies example `index` into row `row` of each batch array (batch[f] is a
  /// compact host array [B, ...field shape] of the field's dtype).
  virtual void fill(int64_t index, const std::vector<NDArray>& batch, int64_t row) const = 0;
};

/// Examples are the rows of arrays sharing their first dim.
class TensorDataset : public Dataset {
 public:
  explicit TensorDataset(std::vector<NDArray> arrays);
  int64_t size() const override { return n_; }
  std::vector<TensorType> fields() const override;
  void fill(int64_t index, const std::vector<NDArray>& batch, int64_t row) const override;
  const NDArray& array(size_t field) const { return arrays_.at(field); }

 private:
  std::vector<NDArray> arrays_;
  int64_t n_ = 0;
};

enum class Split { train, test };

/// MNIST or Fashion-MNIST from `dir` (train-images-idx3-ubyte[.gz], ...):
/// images [N, 28, 28] uint8, labels [N] int64 in [0, 10).
std::shared_ptr<TensorDataset> load_mnist(const std::string& dir, Split split);

/// Debian's dataset-fashion-mnist location.
inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

// ---------------------------------------------------------------- transforms

/// What a transform knows about its batch: per-example randomness should be
/// drawn with example_random(info, row, k) so it depends on (seed, epoch,
/// example index, k) only.
struct BatchInfo {
  int64_t epoch = 0;
  std::span<const int64_t> indices;  // dataset index of each row
  uint64_t seed = 0;                 // distinct per loader, field and transform
};

/// Uniform [0, 1) number k of the example in `row`.
double example_random(const BatchInfo& info, int64_t row, uint64_t k);

/// Maps one field of a batch (host array [B, ...]) to a new array. Must be a
/// pure function of its arguments (it runs on the loader's thread).
using Transform = std::function<NDArray(const NDArray& batch, const BatchInfo& info)>;

namespace transforms {
/// To float32: (x * scale - mean) / stddev (scale 1/255 maps bytes to [0, 1]).
Transform normalize(double mean = 0.0, double stddev = 1.0, double scale = 1.0 / 255.0);
/// Casts to `dtype`.
Transform cast(DType dtype);
/// Reshapes each example to `shape` (the batch dim is kept).
Transform reshape(const Shape& shape);
/// Flips each example along its last axis (width of [B, H, W] or [B, C, H, W]) with probability p.
Transform random_flip_horizontal(double p = 0.5);
/// Pads each example's last two axes (H, W) by `padding` zeros on each side
/// and crops back to H x W at a random offset: a shift by up to +-padding.
Transform random_crop(int64_t padding);
}  // namespace transforms

// ---------------------------------------------------------------- loader

/// One batch: an array per field, [B, ...].
using Batch = std::vector<NDArray>;

struct LoaderOptions {
  int64_t batch_size = 1;
  /// A new permutation every epoch, from (seed, epoch).
  bool shuffle = false;
  /// Skip the last batch when it is smaller than batch_size.
  bool drop_last = false;
  uint64_t seed = 0;
  /// Assemble the next batches on a background thread while the current one
  /// is used (this many batches ahead; 0: assemble on demand).
  int prefetch = 2;
  /// Data parallelism: every batch of batch_size rows (drawn as above) is cut
  /// into `shards` contiguous parts, rows [k*n/shards, (k+1)*n/shards) of a
  /// batch of n, and this loader yields part `shard`. Rank r of R with
  /// {.batch_size = R*B, .shard = r, .shards = R} reads its B rows of the
  /// global batches a single process with batch R*B reads.
  int shard = 0;
  int shards = 1;
};

class DataLoader {
 public:
  DataLoader(std::shared_ptr<const Dataset> dataset, LoaderOptions options = {});

  /// Appends a transform for field `field` (applied in order).
  DataLoader& transform(size_t field, Transform t);

  /// Batches per epoch.
  int64_t size() const;
  const Dataset& dataset() const { return *dataset_; }
  const LoaderOptions& options() const { return options_; }
  /// The example order of epoch `epoch`: a permutation when shuffling; a pure
  /// function of (seed, epoch).
  std::vector<int64_t> order(int64_t epoch) const;
  /// Batch `index` of epoch `epoch`, assembled now.
  Batch batch(int64_t epoch, int64_t index) const;

  class Epoch;
  /// The batches of epoch `epoch`, for a range-for; prefetching starts now.
  /// The epoch keeps its own copy of the loader (the dataset shared).
  Epoch epoch(int64_t epoch) const;

 private:
  int64_t examples() const;
  Batch assemble(int64_t epoch, std::span<const int64_t> indices) const;
  /// The dataset indices of this loader's rows of batch `index` (its shard).
  std::span<const int64_t> rows(const std::vector<int64_t>& order, int64_t index) const;
  std::shared_ptr<const Dataset> dataset_;
  LoaderOptions options_;
  std::vector<TensorType> fields_;
  std::vector<std::vector<Transform>> transforms_;
};

/// An epoch's batches. Move-only; stops its background thread when destroyed
/// (also when a loop breaks early). Errors on the background thread are
/// rethrown by the iteration that would have returned the batch.
class DataLoader::Epoch {
 public:
  Epoch(const DataLoader* loader, int64_t epoch);
  Epoch(Epoch&&) noexcept;
  Epoch& operator=(Epoch&&) = delete;
  ~Epoch();

  class iterator {
   public:
    using value_type = Batch;
    using difference_type = std::ptrdiff_t;
    iterator() = default;
    const Batch& operator*() const { return e_->current_; }
    const Batch* operator->() const { return &e_->current_; }
    iterator& operator++() {
      if (!e_->advance()) e_ = nullptr;
      return *this;
    }
    bool operator==(const iterator& o) const { return e_ == o.e_; }

   private:
    friend class Epoch;
    explicit iterator(Epoch* e) : e_(e) {}
    Epoch* e_ = nullptr;
  };
  /// Starts the iteration (call once).
  iterator begin();
  iterator end() { return iterator(); }
  int64_t size() const { return batches_; }
  /// The batch index the iterator is at.
  int64_t index() const { return next_ - 1; }

 private:
  struct Shared {
    // A copy (the dataset shared): the epoch outlives a temporary loader, as in
    // `for (auto& b : DataLoader(ds).epoch(0))`, and later transform() calls leave it as it started.
    std::unique_ptr<const DataLoader> loader;
    int64_t epoch;
    std::vector<int64_t> order;
    int64_t batches = 0;
    size_t depth = 0;
    std::mutex mu;
    std::condition_variable cv;
    std::deque<Batch> ready;  // produced, not yet taken, in order
    int64_t produced = 0;
    bool stop = false;
    std::exception_ptr error;
  };
  bool advance();
  static void produce(Shared* s);
  void stop();

  std::unique_ptr<Shared> shared_;  // stable across moves: the thread uses it
  int64_t batches_ = 0;
  int64_t next_ = 0;  // batches taken by the consumer
  Batch current_;
  bool started_ = false;
  std::thread thread_;
};

// ---------------------------------------------------------------- variable-length sequences

struct PadOptions {
  /// [N, T, ...] instead of [T, N, ...].
  bool batch_first = false;
  double padding_value = 0;
  /// T; 0: the longest sequence's length.
  int64_t total_length = 0;
};

/// A padded batch and each sequence's length (int64 [N]): what
/// `rnn(x, state, lengths)` takes.
struct PaddedBatch {
  NDArray padded, lengths;
};

/// PyTorch's pad_sequence, with the lengths: sequences [L_i, ...] (one dtype,
/// one trailing shape, L_i >= 1) -> [T, N, ...] (or [N, T, ...]) filled with
/// padding_value past each sequence's end.
PaddedBatch pad_sequences(const std::vector<NDArray>& sequences, const PadOptions& options = {});

// ---------------------------------------------------------------- CIFAR-10

/// CIFAR-10, binary version (https://www.cs.toronto.edu/~kriz/cifar.html,
/// "cifar-10-binary.tar.gz", unpacked): `dir` holds data_batch_1.bin ..
/// data_batch_5.bin (train, 50,000 images) and test_batch.bin (test, 10,000),
/// each a sequence of records of 1 label byte and 3,072 pixel bytes (red,
/// green, blue planes of 32 x 32, row-major). Returns images [N, 3, 32, 32]
/// uint8 and labels [N] int64 in [0, 10). A missing file, a size that is not
/// a whole number of records, or a label outside [0, 10) throws loom::Error
/// naming the file (and the record).
std::shared_ptr<TensorDataset> load_cifar10(const std::string& dir, Split split);

/// Reads one CIFAR-10 binary file: images [N, 3, 32, 32] uint8, labels [N] int64.
std::pair<NDArray, NDArray> read_cifar10_batch(const std::string& path);

namespace transforms {
/// To float32, per channel c of [B, C, ...]: (x * scale - mean[c]) / stddev[c].
Transform normalize_channels(std::vector<double> mean, std::vector<double> stddev, double scale = 1.0 / 255.0);
}  // namespace transforms

}  // namespace loom::data
