// IDX files, datasets, transforms and the prefetching DataLoader.

#include "frontend/data.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/philox.hpp"
#include "frontend/io.hpp"

namespace loom::data {

// ---------------------------------------------------------------- IDX

namespace {

struct IdxType {
  uint8_t code;
  const char* name;
  size_t size;  // bytes per element in the file
  DType dtype;  // dtype in memory
};

constexpr IdxType kIdxTypes[] = {
    {0x08, "ubyte", 1, uint8}, {0x09, "sbyte", 1, int32},   {0x0B, "short", 2, int32},
    {0x0C, "int", 4, int32},   {0x0D, "float", 4, float32}, {0x0E, "double", 8, float64},
};

const IdxType* idx_type(uint8_t code) {
  for (const IdxType& t : kIdxTypes)
    if (t.code == code) return &t;
  return nullptr;
}

uint32_t be32(const uint8_t* p) { return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3]; }

/// Total bytes (header + data) an IDX file with this prefix must have, or
/// nothing yet when the prefix is too short to tell. Throws on a bad header.
struct IdxHeader {
  const IdxType* type = nullptr;
  Shape shape;
  size_t header = 0;
  size_t total = 0;
};

bool parse_idx_header(const std::vector<uint8_t>& b, const std::string& path, IdxHeader& h) {
  if (b.size() < 4) return false;
  if (b[0] != 0 || b[1] != 0)
    fail("'", path, "': not an IDX file: expected the magic 00 00 <type> <ndim>, got bytes ", int(b[0]), " ", int(b[1]),
         " ", int(b[2]), " ", int(b[3]));
  h.type = idx_type(b[2]);
  LOOM_CHECK(h.type, "'", path, "': unknown IDX element type 0x", std::hex, int(b[2]),
             " (expected 0x08 ubyte, 0x09 sbyte, 0x0B short, 0x0C int, 0x0D float or 0x0E double)");
  const int ndim = b[3];
  LOOM_CHECK(ndim >= 1, "'", path, "': IDX header declares 0 dimensions");
  h.header = 4 + 4 * size_t(ndim);
  if (b.size() < h.header) return false;
  h.shape.clear();
  for (int i = 0; i < ndim; ++i) {
    uint32_t d = be32(&b[4 + 4 * size_t(i)]);
    LOOM_CHECK(d <= uint32_t(std::numeric_limits<int32_t>::max()), "'", path, "': IDX dimension ", i, " is ", d,
               " (corrupt header)");
    h.shape.push_back(int64_t(d));
  }
  // Sizes are checked before anything is allocated (a corrupt header must not make us allocate absurdly).
  check_shape(h.shape, std::max(h.type->size, dtype_size(h.type->dtype)), "'" + path + "': IDX header");
  h.total = h.header + size_t(numel(h.shape)) * h.type->size;
  return true;
}

/// The most bytes a gzip stream of `compressed` bytes can expand to (deflate
/// encodes at most 258 bytes in a 2-bit code: a ratio of 1032:1).
size_t max_gunzipped(size_t compressed) { return compressed * 1032 + 4096; }

std::string describe_idx(const IdxHeader& h) { return std::string(h.type->name) + shape_str(h.shape); }

NDArray read_idx_bytes(const std::string& path);

}  // namespace

NDArray read_idx(const std::string& path) {
  return io::guard_memory(path, [&] { return read_idx_bytes(path); });
}

namespace {
NDArray read_idx_bytes(const std::string& path) {
  std::vector<uint8_t> bytes = io::read_file(path);
  if (io::is_gzip(bytes)) {
    const size_t most = max_gunzipped(bytes.size());
    bytes = io::gunzip(bytes, path, [&](const std::vector<uint8_t>& out) -> size_t {
      IdxHeader h;
      if (!parse_idx_header(out, path, h)) return std::numeric_limits<size_t>::max();
      LOOM_CHECK(h.total <= most, "'", path, "': truncated or corrupt IDX file: the header declares ", describe_idx(h),
                 " (", h.total, " bytes), more than ", bytes.size(), " bytes of gzip data can hold");
      return h.total;
    });
  }
  IdxHeader h;
  if (!parse_idx_header(bytes, path, h))
    fail("'", path, "': truncated IDX file: ", bytes.size(), " bytes, shorter than its header",
         bytes.size() >= 4 ? " (" + std::to_string(4 + 4 * size_t(bytes[3])) + " bytes)" : std::string(" (4+ bytes)"));
  LOOM_CHECK(bytes.size() >= h.total, "'", path, "': truncated IDX file: the header declares ", describe_idx(h), " (",
             h.total, " bytes), the file has ", bytes.size(), " bytes");
  LOOM_CHECK(bytes.size() == h.total, "'", path, "': IDX file has ", bytes.size() - h.total,
             " bytes after the data its header declares (", describe_idx(h), ")");
  NDArray out = io::new_array(h.shape, h.type->dtype, path);
  const uint8_t* src = bytes.data() + h.header;
  const int64_t n = out.numel();
  switch (h.type->code) {
    case 0x08:
      std::memcpy(out.raw(), src, size_t(n));
      break;
    case 0x09: {
      int32_t* d = out.data<int32_t>();
      for (int64_t i = 0; i < n; ++i) d[i] = int32_t(int8_t(src[i]));
      break;
    }
    case 0x0B: {
      int32_t* d = out.data<int32_t>();
      for (int64_t i = 0; i < n; ++i) d[i] = int32_t(int16_t(uint16_t(src[2 * i] << 8 | src[2 * i + 1])));
      break;
    }
    case 0x0C: {
      int32_t* d = out.data<int32_t>();
      for (int64_t i = 0; i < n; ++i) d[i] = int32_t(be32(src + 4 * i));
      break;
    }
    case 0x0D: {
      float* d = out.data<float>();
      for (int64_t i = 0; i < n; ++i) {
        uint32_t u = be32(src + 4 * i);
        std::memcpy(&d[i], &u, 4);
      }
      break;
    }
    case 0x0E: {
      double* d = out.data<double>();
      for (int64_t i = 0; i < n; ++i) {
        uint64_t u = uint64_t(be32(src + 8 * i)) << 32 | be32(src + 8 * i + 4);
        std::memcpy(&d[i], &u, 8);
      }
      break;
    }
  }
  return out;
}
}  // namespace

void write_idx(const std::string& path, const NDArray& array, bool gzip) {
  LOOM_CHECK(array.defined(), "write_idx '", path, "': undefined array");
  LOOM_CHECK(array.ndim() >= 1 && array.ndim() <= 255, "write_idx '", path, "': need 1 to 255 dims, got ",
             S(array.shape()));
  uint8_t code = 0;
  switch (array.dtype()) {
    case DType::uint8:
      code = 0x08;
      break;
    case DType::int32:
      code = 0x0C;
      break;
    case DType::float32:
      code = 0x0D;
      break;
    case DType::float64:
      code = 0x0E;
      break;
    default:
      fail("write_idx '", path, "': dtype ", dtype_name(array.dtype()), " has no IDX type");
  }
  NDArray a = array.to(Device::cpu()).compact();
  std::string out;
  out.push_back(0), out.push_back(0), out.push_back(char(code)), out.push_back(char(a.ndim()));
  auto put32 = [&](uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) out.push_back(char((v >> s) & 0xff));
  };
  for (int64_t d : a.shape()) {
    LOOM_CHECK(d <= std::numeric_limits<int32_t>::max(), "write_idx '", path, "': dim ", d, " too large");
    put32(uint32_t(d));
  }
  const size_t item = a.itemsize();
  const auto* p = static_cast<const uint8_t*>(a.raw());
  for (int64_t i = 0; i < a.numel(); ++i)
    for (size_t k = 0; k < item; ++k) out.push_back(char(p[size_t(i) * item + (item - 1 - k)]));  // big-endian
  if (gzip) {
    std::vector<uint8_t> z = io::gzip(out);
    io::write_file_atomically(path, std::string_view(reinterpret_cast<const char*>(z.data()), z.size()));
  } else {
    io::write_file_atomically(path, out);
  }
}

// ---------------------------------------------------------------- datasets

TensorDataset::TensorDataset(std::vector<NDArray> arrays) {
  LOOM_CHECK(!arrays.empty(), "TensorDataset: no arrays");
  for (size_t i = 0; i < arrays.size(); ++i) {
    NDArray& a = arrays[i];
    LOOM_CHECK(a.defined() && a.ndim() >= 1, "TensorDataset: array ", i, " must have a first (example) dim");
    a = a.to(Device::cpu()).compact();
    if (i == 0) n_ = a.shape()[0];
    LOOM_CHECK(a.shape()[0] == n_, "TensorDataset: array ", i, " has ", a.shape()[0], " examples, array 0 has ", n_);
  }
  arrays_ = std::move(arrays);
}

std::vector<TensorType> TensorDataset::fields() const {
  std::vector<TensorType> out;
  for (const NDArray& a : arrays_) out.push_back({a.dtype(), Shape(a.shape().begin() + 1, a.shape().end())});
  return out;
}

void TensorDataset::fill(int64_t index, const std::vector<NDArray>& batch, int64_t row) const {
  LOOM_CHECK(index >= 0 && index < n_, "TensorDataset: index ", index, " out of range [0, ", n_, ")");
  LOOM_ASSERT(batch.size() == arrays_.size());
  for (size_t f = 0; f < arrays_.size(); ++f) {
    const NDArray& a = arrays_[f];
    const size_t bytes = a.nbytes() / size_t(std::max<int64_t>(n_, 1));
    std::memcpy(static_cast<char*>(batch[f].raw()) + size_t(row) * bytes,
                static_cast<const char*>(a.raw()) + size_t(index) * bytes, bytes);
  }
}

std::shared_ptr<TensorDataset> load_mnist(const std::string& dir, Split split) {
  const std::string prefix = split == Split::train ? "train" : "t10k";
  auto find = [&](const std::string& base) {
    for (const std::string& name : {base + ".gz", base}) {
      std::string p = dir + "/" + name;
      struct stat st {};
      if (::stat(p.c_str(), &st) == 0) return p;
    }
    fail("MNIST: no '", base, "' or '", base, ".gz' in '", dir,
         "' (Fashion-MNIST: apt install dataset-fashion-mnist, files in ", kFashionMnistDir, ")");
  };
  const std::string ipath = find(prefix + "-images-idx3-ubyte"), lpath = find(prefix + "-labels-idx1-ubyte");
  NDArray images = read_idx(ipath), labels = read_idx(lpath);
  LOOM_CHECK(images.dtype() == uint8 && images.ndim() == 3, "'", ipath,
             "': expected ubyte images [N, rows, cols], got ", dtype_name(images.dtype()), S(images.shape()));
  LOOM_CHECK(labels.dtype() == uint8 && labels.ndim() == 1, "'", lpath, "': expected ubyte labels [N], got ",
             dtype_name(labels.dtype()), S(labels.shape()));
  LOOM_CHECK(images.shape()[0] == labels.shape()[0], "MNIST: '", ipath, "' has ", images.shape()[0], " images but '",
             lpath, "' has ", labels.shape()[0], " labels");
  NDArray y = NDArray::empty(labels.shape(), int64);
  const uint8_t* src = labels.data<uint8_t>();
  int64_t* dst = y.data<int64_t>();
  for (int64_t i = 0; i < labels.numel(); ++i) {
    LOOM_CHECK(src[i] < 10, "'", lpath, "': label ", int(src[i]), " at index ", i, " is not a class in [0, 10)");
    dst[i] = src[i];
  }
  return std::make_shared<TensorDataset>(std::vector<NDArray>{images, y});
}

// ---------------------------------------------------------------- transforms

double example_random(const BatchInfo& info, int64_t row, uint64_t k) {
  LOOM_ASSERT(row >= 0 && size_t(row) < info.indices.size());
  uint64_t key = philox::mix_key(info.seed, uint64_t(info.epoch));
  return philox::uniform_f64(key, uint64_t(info.indices[size_t(row)]), k);
}

namespace transforms {

Transform normalize(double mean, double stddev, double scale) {
  LOOM_CHECK(std::isfinite(mean) && std::isfinite(scale) && std::isfinite(stddev) && stddev > 0,
             "transforms::normalize: need finite values and stddev > 0, got mean ", mean, ", stddev ", stddev);
  return [=](const NDArray& batch, const BatchInfo&) {
    NDArray in = batch.compact();
    NDArray out = NDArray::empty(in.shape(), float32);
    float* d = out.data<float>();
    const float a = float(scale / stddev), b = float(-mean / stddev);
    dispatch(in.dtype(), [&]<class T>() {
      const T* s = in.data<T>();
      for (int64_t i = 0, n = in.numel(); i < n; ++i) d[i] = float(s[i]) * a + b;
    });
    return out;
  };
}

Transform cast(DType dtype) {
  return [dtype](const NDArray& batch, const BatchInfo&) { return batch.astype(dtype); };
}

Transform reshape(const Shape& shape) {
  return [shape](const NDArray& batch, const BatchInfo&) {
    Shape s{batch.shape()[0]};
    s.insert(s.end(), shape.begin(), shape.end());
    return batch.reshape(s);
  };
}

Transform random_flip_horizontal(double p) {
  LOOM_CHECK(p >= 0 && p <= 1, "transforms::random_flip_horizontal: p must be in [0, 1], got ", p);
  return [p](const NDArray& batch, const BatchInfo& info) {
    LOOM_CHECK(batch.ndim() >= 2, "random_flip_horizontal: expected [B, ..., W], got ", S(batch.shape()));
    NDArray out = batch.clone();
    for (int64_t r = 0; r < out.shape()[0]; ++r)
      if (example_random(info, r, 0) < p) {
        NDArray row = out.select(0, r);
        row.assign(batch.select(0, r).flip({row.ndim() - 1}));
      }
    return out;
  };
}

Transform random_crop(int64_t padding) {
  // (A shift beyond the image leaves it all zeros; the bound keeps 2 * padding + 1 from overflowing.)
  LOOM_CHECK(padding >= 0 && padding <= (int64_t(1) << 40),
             "transforms::random_crop: padding must be in [0, 2^40], got ", padding);
  return [padding](const NDArray& batch, const BatchInfo& info) {
    LOOM_CHECK(batch.ndim() >= 3, "random_crop: expected [B, ..., H, W], got ", S(batch.shape()));
    const int64_t nd = batch.ndim(), H = batch.shape()[size_t(nd - 2)], W = batch.shape()[size_t(nd - 1)];
    NDArray out = NDArray::zeros(batch.shape(), batch.dtype());
    for (int64_t r = 0; r < batch.shape()[0]; ++r) {
      // Shift (dy, dx) in [-padding, padding]: out[i][j] = in[i + dy][j + dx], zero outside.
      const int64_t span = 2 * padding + 1;
      const int64_t dy = std::min(span - 1, int64_t(example_random(info, r, 1) * double(span))) - padding;
      const int64_t dx = std::min(span - 1, int64_t(example_random(info, r, 2) * double(span))) - padding;
      const int64_t y0 = std::max<int64_t>(0, -dy), y1 = std::min(H, H - dy);
      const int64_t x0 = std::max<int64_t>(0, -dx), x1 = std::min(W, W - dx);
      if (y0 >= y1 || x0 >= x1) continue;
      std::vector<Slice> dst(size_t(nd), Slice::all()), src(size_t(nd), Slice::all());
      dst[0] = src[0] = Slice::range(r, r + 1);
      dst[size_t(nd - 2)] = Slice::range(y0, y1), src[size_t(nd - 2)] = Slice::range(y0 + dy, y1 + dy);
      dst[size_t(nd - 1)] = Slice::range(x0, x1), src[size_t(nd - 1)] = Slice::range(x0 + dx, x1 + dx);
      out.slice(dst).assign(batch.slice(src));
    }
    return out;
  };
}

}  // namespace transforms

// ---------------------------------------------------------------- DataLoader

DataLoader::DataLoader(std::shared_ptr<const Dataset> dataset, LoaderOptions options)
    : dataset_(std::move(dataset)), options_(options) {
  LOOM_CHECK(dataset_ != nullptr, "DataLoader: null dataset");
  LOOM_CHECK(options_.batch_size > 0, "DataLoader: batch_size must be positive, got ", options_.batch_size);
  LOOM_CHECK(options_.prefetch >= 0, "DataLoader: prefetch must be >= 0, got ", options_.prefetch);
  LOOM_CHECK(options_.shards >= 1 && options_.shard >= 0 && options_.shard < options_.shards, "DataLoader: shard ",
             options_.shard, " of ", options_.shards, " is not a part of the batch");
  fields_ = dataset_->fields();
  LOOM_CHECK(!fields_.empty(), "DataLoader: the dataset has no fields");
  for (const TensorType& t : fields_)
    LOOM_CHECK(is_static(t.shape), "DataLoader: field shape ", S(t.shape), " must be fully known");
  transforms_.resize(fields_.size());
}

DataLoader& DataLoader::transform(size_t field, Transform t) {
  LOOM_CHECK(field < fields_.size(), "DataLoader::transform: field ", field, " out of range (the dataset has ",
             fields_.size(), " fields)");
  LOOM_CHECK(bool(t), "DataLoader::transform: empty transform");
  transforms_[field].push_back(std::move(t));
  return *this;
}

/// The dataset's size(), which a user's Dataset could get wrong.
int64_t DataLoader::examples() const {
  const int64_t n = dataset_->size();
  LOOM_CHECK(n >= 0, "DataLoader: the dataset's size() is ", n, ", expected >= 0");
  return n;
}

int64_t DataLoader::size() const {
  const int64_t n = examples(), b = options_.batch_size;
  return options_.drop_last ? n / b : n / b + (n % b != 0);  // (n + b - 1) / b overflows for a huge b
}

std::vector<int64_t> DataLoader::order(int64_t epoch) const {
  const int64_t n = examples();
  std::vector<int64_t> idx(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) idx[size_t(i)] = i;
  if (!options_.shuffle) return idx;
  // Fisher-Yates driven by a Philox stream keyed by (seed, epoch).
  const uint64_t key = philox::mix_key(philox::mix_key(options_.seed, 0x5eed5eedull), uint64_t(epoch));
  for (int64_t i = n - 1; i > 0; --i) {
    auto j = int64_t(philox::uniform_f64(key, 0, uint64_t(i)) * double(i + 1));
    std::swap(idx[size_t(i)], idx[size_t(std::min(j, i))]);
  }
  return idx;
}

Batch DataLoader::assemble(int64_t epoch, std::span<const int64_t> indices) const {
  const auto B = int64_t(indices.size());
  Batch batch;
  for (const TensorType& t : fields_) {
    Shape s{B};
    s.insert(s.end(), t.shape.begin(), t.shape.end());
    batch.push_back(NDArray::empty(s, t.dtype));
  }
  for (int64_t r = 0; r < B; ++r) dataset_->fill(indices[size_t(r)], batch, r);
  for (size_t f = 0; f < fields_.size(); ++f)
    for (size_t k = 0; k < transforms_[f].size(); ++k) {
      BatchInfo info{epoch, indices, philox::mix_key(options_.seed, (uint64_t(f) << 32) + k + 1)};
      batch[f] = transforms_[f][k](batch[f], info);
      LOOM_CHECK(batch[f].defined() && batch[f].ndim() >= 1 && batch[f].shape()[0] == B, "DataLoader: transform ", k,
                 " of field ", f, " must return a [", B, ", ...] array");
    }
  return batch;
}

std::span<const int64_t> DataLoader::rows(const std::vector<int64_t>& order, int64_t index) const {
  const int64_t lo = index * options_.batch_size,
                hi = std::min<int64_t>(int64_t(order.size()), lo + options_.batch_size);
  const int64_t n = hi - lo, k = options_.shard, parts = options_.shards;  // n * parts < 2^63: both are sizes in memory
  const int64_t first = lo + k * n / parts, last = lo + (k + 1) * n / parts;
  return std::span<const int64_t>(order.data() + first, size_t(last - first));
}

Batch DataLoader::batch(int64_t epoch, int64_t index) const {
  LOOM_CHECK(index >= 0 && index < size(), "DataLoader::batch: index ", index, " out of range [0, ", size(), ")");
  std::vector<int64_t> ord = order(epoch);
  return assemble(epoch, rows(ord, index));
}

DataLoader::Epoch DataLoader::epoch(int64_t e) const { return Epoch(this, e); }

DataLoader::Epoch::Epoch(const DataLoader* loader, int64_t epoch) : shared_(std::make_unique<Shared>()) {
  Shared& s = *shared_;
  s.loader = std::make_unique<const DataLoader>(*loader);
  s.epoch = epoch;
  s.order = loader->order(epoch);
  s.batches = loader->size();
  s.depth = size_t(loader->options_.prefetch);
  batches_ = s.batches;
  if (s.depth > 0 && s.batches > 0) thread_ = std::thread(&Epoch::produce, shared_.get());
}

DataLoader::Epoch::Epoch(Epoch&& o) noexcept
    : shared_(std::move(o.shared_)),
      batches_(o.batches_),
      next_(o.next_),
      current_(std::move(o.current_)),
      started_(o.started_),
      thread_(std::move(o.thread_)) {}

DataLoader::Epoch::~Epoch() { stop(); }

void DataLoader::Epoch::stop() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard lock(shared_->mu);
    shared_->stop = true;
  }
  shared_->cv.notify_all();
  thread_.join();
}

void DataLoader::Epoch::produce(Shared* s) {
  for (int64_t b = 0; b < s->batches; ++b) {
    {
      std::unique_lock lock(s->mu);
      s->cv.wait(lock, [&] { return s->stop || s->ready.size() < s->depth; });
      if (s->stop) return;
    }
    Batch batch;
    try {
      batch = s->loader->assemble(s->epoch, s->loader->rows(s->order, b));
    } catch (...) {
      std::lock_guard lock(s->mu);
      s->error = std::current_exception();
      s->cv.notify_all();
      return;
    }
    {
      std::lock_guard lock(s->mu);
      s->ready.push_back(std::move(batch));
      ++s->produced;
    }
    s->cv.notify_all();
  }
}

DataLoader::Epoch::iterator DataLoader::Epoch::begin() {
  LOOM_CHECK(shared_, "DataLoader::Epoch: moved-from epoch");
  LOOM_CHECK(!started_, "DataLoader::Epoch: an epoch can be iterated once; call loader.epoch(e) again");
  started_ = true;
  return advance() ? iterator(this) : iterator();
}

bool DataLoader::Epoch::advance() {
  Shared& s = *shared_;
  if (next_ >= batches_) {
    current_.clear();
    return false;
  }
  if (s.depth == 0) {
    current_ = s.loader->assemble(s.epoch, s.loader->rows(s.order, next_));
  } else {
    std::unique_lock lock(s.mu);
    s.cv.wait(lock, [&] { return !s.ready.empty() || s.error; });
    if (s.ready.empty()) {
      std::exception_ptr e = s.error;
      lock.unlock();
      std::rethrow_exception(e);
    }
    current_ = std::move(s.ready.front());
    s.ready.pop_front();
    lock.unlock();
    s.cv.notify_all();
  }
  ++next_;
  return true;
}


// ---------------------------------------------------------------- CIFAR-10

namespace {
constexpr int64_t kCifarPixels = 3 * 32 * 32, kCifarRecord = 1 + kCifarPixels;
}  // namespace

std::pair<NDArray, NDArray> read_cifar10_batch(const std::string& path) {
  struct stat st {};
  LOOM_CHECK(::stat(path.c_str(), &st) == 0, "CIFAR-10: cannot open '", path,
             "' (expected the binary version: data_batch_1.bin .. data_batch_5.bin and test_batch.bin)");
  std::vector<uint8_t> bytes = io::read_file(path);
  LOOM_CHECK(!bytes.empty(), "CIFAR-10: '", path, "' is empty (no records)");
  LOOM_CHECK(bytes.size() % size_t(kCifarRecord) == 0, "CIFAR-10: '", path, "' has ", bytes.size(),
             " bytes, not a whole number of ", kCifarRecord, "-byte records (1 label byte + 3072 pixel bytes)",
             io::is_gzip(bytes) ? "; it is gzip-compressed: unpack the .tar.gz first" : "");
  const int64_t n = int64_t(bytes.size()) / kCifarRecord;
  NDArray images = NDArray::empty({n, 3, 32, 32}, uint8), labels = NDArray::empty({n}, int64);
  uint8_t* img = images.data<uint8_t>();
  int64_t* lab = labels.data<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* rec = bytes.data() + size_t(i * kCifarRecord);
    LOOM_CHECK(rec[0] < 10, "CIFAR-10: '", path, "': record ", i, " has label ", int(rec[0]),
               ", not a class in [0, 10) (is this the CIFAR-100 or the Python version?)");
    lab[i] = rec[0];
    std::memcpy(img + i * kCifarPixels, rec + 1, size_t(kCifarPixels));
  }
  return {images, labels};
}

std::shared_ptr<TensorDataset> load_cifar10(const std::string& dir, Split split) {
  std::vector<std::string> files;
  if (split == Split::train)
    for (int i = 1; i <= 5; ++i) files.push_back(dir + "/data_batch_" + std::to_string(i) + ".bin");
  else
    files.push_back(dir + "/test_batch.bin");
  std::vector<std::pair<NDArray, NDArray>> parts;
  int64_t total = 0;
  for (const std::string& f : files) {
    parts.push_back(read_cifar10_batch(f));
    total += parts.back().first.shape()[0];
  }
  NDArray images = NDArray::empty({total, 3, 32, 32}, uint8), labels = NDArray::empty({total}, int64);
  int64_t at = 0;
  for (const auto& [x, y] : parts) {
    const int64_t n = x.shape()[0];
    std::memcpy(images.data<uint8_t>() + at * kCifarPixels, x.raw(), x.nbytes());
    std::memcpy(labels.data<int64_t>() + at, y.raw(), y.nbytes());
    at += n;
  }
  return std::make_shared<TensorDataset>(std::vector<NDArray>{images, labels});
}

namespace transforms {

Transform normalize_channels(std::vector<double> mean, std::vector<double> stddev, double scale) {
  LOOM_CHECK(!mean.empty() && mean.size() == stddev.size(), "transforms::normalize_channels: ", mean.size(),
             " means for ", stddev.size(), " standard deviations");
  for (size_t c = 0; c < mean.size(); ++c)
    LOOM_CHECK(std::isfinite(mean[c]) && std::isfinite(stddev[c]) && stddev[c] > 0 && std::isfinite(scale),
               "transforms::normalize_channels: need finite values and stddev > 0, got mean ", mean[c], ", stddev ",
               stddev[c], " for channel ", c);
  return [mean, stddev, scale](const NDArray& batch, const BatchInfo&) {
    const int64_t C = int64_t(mean.size());
    LOOM_CHECK(batch.ndim() >= 2 && batch.shape()[1] == C, "normalize_channels: expected [B, ", C,
               ", ...] for ", C, " channel statistics, got ", S(batch.shape()));
    NDArray in = batch.compact();
    NDArray out = NDArray::empty(in.shape(), float32);
    int64_t inner = 1;
    for (int64_t d = 2; d < in.ndim(); ++d) inner *= in.shape()[size_t(d)];
    float* o = out.data<float>();
    dispatch(in.dtype(), [&]<class T>() {
      const T* s = in.data<T>();
      for (int64_t b = 0; b < in.shape()[0]; ++b)
        for (int64_t c = 0; c < C; ++c) {
          const float a = float(scale / stddev[size_t(c)]), k = float(-mean[size_t(c)] / stddev[size_t(c)]);
          const int64_t off = (b * C + c) * inner;
          for (int64_t i = 0; i < inner; ++i) o[off + i] = float(s[off + i]) * a + k;
        }
    });
    return out;
  };
}

}  // namespace transforms

// ---------------------------------------------------------------- variable-length sequences

PaddedBatch pad_sequences(const std::vector<NDArray>& sequences, const PadOptions& o) {
  LOOM_CHECK(!sequences.empty(), "pad_sequences: no sequences");
  const NDArray& first = sequences[0];
  LOOM_CHECK(first.ndim() >= 1, "pad_sequences: sequence 0 must have a length axis, got a scalar");
  const Shape rest(first.shape().begin() + 1, first.shape().end());
  int64_t longest = 0;
  std::vector<int64_t> lengths;
  for (size_t i = 0; i < sequences.size(); ++i) {
    const NDArray& q = sequences[i];
    const Shape qrest = q.ndim() >= 1 ? Shape(q.shape().begin() + 1, q.shape().end()) : Shape{};
    LOOM_CHECK(q.ndim() >= 1 && qrest == rest && q.dtype() == first.dtype(), "pad_sequences: sequence ", i, " is ",
               dtype_name(q.dtype()), S(q.shape()), ", expected ", dtype_name(first.dtype()), " [L", S(rest),
               " after L]");
    LOOM_CHECK(q.shape()[0] >= 1, "pad_sequences: sequence ", i, " is empty (lengths must be at least 1)");
    lengths.push_back(q.shape()[0]);
    longest = std::max(longest, q.shape()[0]);
  }
  LOOM_CHECK(o.total_length == 0 || o.total_length >= longest, "pad_sequences: total_length ", o.total_length,
             " is shorter than the longest sequence, ", longest);
  const int64_t T = o.total_length ? o.total_length : longest, N = int64_t(sequences.size());
  Shape shape = o.batch_first ? Shape{N, T} : Shape{T, N};
  shape.insert(shape.end(), rest.begin(), rest.end());
  LOOM_CHECK(valid_shape(shape, dtype_size(first.dtype())), "pad_sequences: a batch ", S(shape), " is too large");
  NDArray padded = NDArray::full(shape, o.padding_value, first.dtype());
  for (int64_t i = 0; i < N; ++i) {
    const Slice rows = Slice::range(0, lengths[size_t(i)]), one = Slice::range(i, i + 1);
    NDArray dst = o.batch_first ? padded.slice({one, rows}) : padded.slice({rows, one});
    Shape view = dst.shape();
    dst.assign(sequences[size_t(i)].reshape(view));
  }
  return {padded, NDArray::from<int64_t>(lengths, {N})};
}

}  // namespace loom::data
