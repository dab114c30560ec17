// IDX files (raw and gzip, plus every kind of damage), MNIST loading,
// DataLoader order/batching/determinism/prefetching, and transforms.

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <set>

// util.hpp (and core/philox.hpp in it) before ops/ops.hpp: philox must see the C math functions.
#include "tests/util.hpp"

#include "frontend/data.hpp"
#include "frontend/io.hpp"

using namespace loom;
using loom::test::contains;
using loom::test::error_of;

namespace fs = std::filesystem;

namespace {

using loom::test::TempDir;

void write_bytes(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}

std::vector<uint8_t> gz(const std::vector<uint8_t>& b) {
  return io::gzip(std::string_view(reinterpret_cast<const char*>(b.data()), b.size()));
}

/// IDX ubyte file bytes for a [n, rows, cols] array with pixel (i, r, c) = (i * 7 + r * 3 + c) % 256.
std::vector<uint8_t> idx_images(uint32_t n, uint32_t rows, uint32_t cols) {
  std::vector<uint8_t> b{0, 0, 0x08, 3};
  for (uint32_t d : {n, rows, cols})
    for (int s = 24; s >= 0; s -= 8) b.push_back(uint8_t(d >> s));
  for (uint32_t i = 0; i < n; ++i)
    for (uint32_t r = 0; r < rows; ++r)
      for (uint32_t c = 0; c < cols; ++c) b.push_back(uint8_t((i * 7 + r * 3 + c) % 256));
  return b;
}

std::vector<uint8_t> idx_labels(const std::vector<uint8_t>& labels) {
  std::vector<uint8_t> b{0, 0, 0x08, 1};
  auto n = uint32_t(labels.size());
  for (int s = 24; s >= 0; s -= 8) b.push_back(uint8_t(n >> s));
  b.insert(b.end(), labels.begin(), labels.end());
  return b;
}

/// A dataset of n examples: field 0 = [2] float32 {i, -i}, field 1 = int64 i.
std::shared_ptr<data::TensorDataset> counting(int64_t n) {
  NDArray x = NDArray::empty({n, 2}), y = NDArray::empty({n}, int64);
  for (int64_t i = 0; i < n; ++i) {
    x.data<float>()[2 * i] = float(i);
    x.data<float>()[2 * i + 1] = -float(i);
    y.data<int64_t>()[i] = i;
  }
  return std::make_shared<data::TensorDataset>(std::vector<NDArray>{x, y});
}

std::vector<int64_t> labels_of(data::DataLoader::Epoch epoch) {
  std::vector<int64_t> out;
  for (const data::Batch& b : epoch) {
    auto v = b[1].to_vector<int64_t>();
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

}  // namespace

TEST_SUITE("frontend/data") {
  TEST_CASE("IDX: hand-made files, raw and gzip") {
    TempDir dir;
    const std::vector<uint8_t> img = idx_images(3, 4, 5);
    write_bytes(dir / "raw", img);
    write_bytes(dir / "raw.gz", gz(img));
    for (const char* name : {"raw", "raw.gz"}) {
      NDArray a = data::read_idx(dir / name);
      CHECK(a.dtype() == uint8);
      CHECK(a.shape() == Shape{3, 4, 5});
      CHECK(a.at({2, 3, 4}) == (2 * 7 + 3 * 3 + 4) % 256);
      CHECK(a.at({1, 0, 2}) == 9);
    }
    // Big-endian multi-byte types: int 0x01020304 and float 1.5 (0x3FC00000).
    write_bytes(dir / "int", {0, 0, 0x0C, 1, 0, 0, 0, 2, 1, 2, 3, 4, 0xFF, 0xFF, 0xFF, 0xFE});
    CHECK(data::read_idx(dir / "int").to_vector<int32_t>() == std::vector<int32_t>{0x01020304, -2});
    write_bytes(dir / "float", {0, 0, 0x0D, 1, 0, 0, 0, 1, 0x3F, 0xC0, 0, 0});
    CHECK(data::read_idx(dir / "float").item() == 1.5);
    write_bytes(dir / "short", {0, 0, 0x0B, 1, 0, 0, 0, 1, 0xFF, 0x9C});
    CHECK(data::read_idx(dir / "short").item() == -100);
  }

  TEST_CASE("IDX: write_idx round trips every type, raw and gzip") {
    TempDir dir;
    for (DType t : {uint8, int32, float32, float64})
      for (bool z : {false, true}) {
        NDArray a = test::rand({3, 2, 4}, 5, float64, -100, 100).astype(t);
        std::string name = "a";
        name += dtype_name(t);
        if (z) name += ".gz";
        std::string p = dir / name;
        data::write_idx(p, a, z);
        CHECK(io::is_gzip(io::read_file(p)) == z);
        CHECK(test::identical(data::read_idx(p), a));
      }
    CHECK(contains(error_of([&] { data::write_idx(dir / "b", NDArray::zeros({2}, int64)); }), "has no IDX type"));
  }

  TEST_CASE("IDX: damaged files raise errors naming the file") {
    TempDir dir;
    const std::vector<uint8_t> img = idx_images(2, 3, 3);
    auto err = [&](const std::string& name, const std::vector<uint8_t>& bytes) {
      write_bytes(dir / name, bytes);
      std::string e = error_of([&] { data::read_idx(dir / name); });
      CHECK(contains(e, dir / name));
      return e;
    };
    CHECK(contains(err("magic", {1, 2, 8, 1, 0, 0, 0, 0}), "expected the magic 00 00 <type> <ndim>"));
    // Inside gzip the header is checked while inflating (the zlib stream must still be released).
    CHECK(contains(err("magic.gz", gz({1, 2, 8, 1, 0, 0, 0, 0})), "expected the magic"));
    std::vector<uint8_t> padded = img;
    padded.insert(padded.end(), 100000, 0);
    CHECK(contains(err("long.gz", gz(padded)), "more data than its header declares"));
    CHECK(contains(err("type", {0, 0, 0x07, 1, 0, 0, 0, 0}), "unknown IDX element type 0x7"));
    CHECK(contains(err("empty", {}), "truncated IDX file"));
    CHECK(contains(err("header", {0, 0, 8, 3, 0, 0, 0}), "shorter than its header"));
    std::vector<uint8_t> cut(img.begin(), img.end() - 5);
    CHECK(contains(err("short", cut),
                   "truncated IDX file: the header declares ubyte[2,3,3] (34 bytes), the file has 29"));
    std::vector<uint8_t> longer = img;
    longer.push_back(0);
    CHECK(contains(err("long", longer), "1 bytes after the data"));
    std::vector<uint8_t> z = gz(idx_images(50, 28, 28));
    CHECK(contains(err("cut.gz", std::vector<uint8_t>(z.begin(), z.begin() + long(z.size() / 2))), "truncated gzip"));
    std::vector<uint8_t> bad = z;
    for (size_t i = 20; i < 60; ++i) bad[i] ^= 0x5A;
    std::string e = err("bad.gz", bad);
    CHECK((contains(e, "corrupt gzip") || contains(e, "IDX")));
    CHECK(contains(err("huge", {0, 0, 8, 3, 0x7F, 0, 0, 0, 0x7F, 0, 0, 0, 0x7F, 0, 0, 0}), "more than 2^63 elements"));
    CHECK(contains(error_of([&] { data::read_idx(dir / "missing"); }), "cannot open"));
    CHECK(contains(error_of([&] { data::read_idx(dir.path.string()); }), "not a regular file"));
  }

  TEST_CASE("load_mnist: shapes, labels, and mismatches naming both files") {
    TempDir dir;
    write_bytes(dir / "train-images-idx3-ubyte.gz", gz(idx_images(4, 28, 28)));
    write_bytes(dir / "train-labels-idx1-ubyte", idx_labels({3, 1, 4, 1}));
    auto ds = data::load_mnist(dir.path.string(), data::Split::train);
    CHECK(ds->size() == 4);
    CHECK(ds->fields()[0].shape == Shape{28, 28});
    CHECK(ds->fields()[1].dtype == int64);
    CHECK(ds->array(1).to_vector<int64_t>() == std::vector<int64_t>{3, 1, 4, 1});
    CHECK(contains(error_of([&] { data::load_mnist(dir.path.string(), data::Split::test); }),
                   "no 't10k-images-idx3-ubyte' or 't10k-images-idx3-ubyte.gz'"));
    write_bytes(dir / "train-labels-idx1-ubyte", idx_labels({3, 1, 4}));
    std::string e = error_of([&] { data::load_mnist(dir.path.string(), data::Split::train); });
    CHECK(contains(e, "has 4 images but"));
    CHECK(contains(e, "train-labels-idx1-ubyte' has 3 labels"));
    write_bytes(dir / "train-labels-idx1-ubyte", idx_labels({3, 1, 14, 1}));
    CHECK(contains(error_of([&] { data::load_mnist(dir.path.string(), data::Split::train); }),
                   "label 14 at index 2 is not a class"));
    write_bytes(dir / "train-labels-idx1-ubyte", idx_images(4, 1, 1));
    CHECK(contains(error_of([&] { data::load_mnist(dir.path.string(), data::Split::train); }),
                   "expected ubyte labels [N]"));
  }

  TEST_CASE("load_mnist on the installed Fashion-MNIST") {
    if (!fs::exists(std::string(data::kFashionMnistDir) + "/t10k-labels-idx1-ubyte.gz")) {
      MESSAGE("skipped: Fashion-MNIST is not installed (apt install dataset-fashion-mnist)");
      return;
    }
    auto test = data::load_mnist(data::kFashionMnistDir, data::Split::test);
    CHECK(test->size() == 10000);
    std::vector<int64_t> counts(10, 0);
    for (int64_t y : test->array(1).to_vector<int64_t>()) ++counts[size_t(y)];
    for (int64_t c : counts) CHECK(c == 1000);  // Fashion-MNIST's test set is balanced
  }

  TEST_CASE("DataLoader: order, batch sizes, drop_last") {
    auto ds = counting(10);
    data::DataLoader plain(ds, {.batch_size = 3});
    CHECK(plain.size() == 4);
    std::vector<int64_t> sizes;
    for (const data::Batch& b : plain.epoch(0)) {
      sizes.push_back(b[0].shape()[0]);
      CHECK(b[0].shape()[1] == 2);
      CHECK(b[0].at({0, 1}) == -b[0].at({0, 0}));
      CHECK(b[1].at({0}) == b[0].at({0, 0}));
    }
    CHECK(sizes == std::vector<int64_t>{3, 3, 3, 1});
    CHECK(labels_of(plain.epoch(0)) == std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
    data::DataLoader dropped(ds, {.batch_size = 3, .drop_last = true});
    CHECK(dropped.size() == 3);
    CHECK(labels_of(dropped.epoch(0)).size() == 9);
    data::DataLoader exact(counting(9), {.batch_size = 3, .drop_last = true});
    CHECK(exact.size() == 3);
    CHECK(contains(error_of([&] { data::DataLoader(ds, {.batch_size = 0}); }), "batch_size must be positive"));
  }

  TEST_CASE("DataLoader: a loop over a temporary loader's epoch (the loader dies before the body runs)") {
    // C++20 destroys the temporary DataLoader, its dataset's only owner, before the first batch: the
    // epoch runs on its own copy (under ASan a use after free here fails).
    for (int prefetch : {0, 2}) {
      CAPTURE(prefetch);
      std::vector<int64_t> got;
      for (const data::Batch& b : data::DataLoader(counting(10), {.batch_size = 3, .prefetch = prefetch}).epoch(0))
        for (int64_t v : b[1].to_vector<int64_t>()) got.push_back(v);
      CHECK(got == std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
    }
    // A transform added after the epoch started applies from the next epoch on.
    data::DataLoader l(counting(4), {.batch_size = 4, .prefetch = 0});
    auto e0 = l.epoch(0);
    l.transform(1, [](const NDArray& a, const data::BatchInfo&) {
      NDArray out = a.clone();
      for (int64_t i = 0; i < out.numel(); ++i) out.data<int64_t>()[i] *= 2;
      return out;
    });
    CHECK(labels_of(std::move(e0)) == std::vector<int64_t>{0, 1, 2, 3});
    CHECK(labels_of(l.epoch(1)) == std::vector<int64_t>{0, 2, 4, 6});
  }

  TEST_CASE("DataLoader: shuffling is a permutation, deterministic per (seed, epoch)") {
    auto ds = counting(100);
    data::LoaderOptions o{.batch_size = 16, .shuffle = true, .seed = 7};
    data::DataLoader a(ds, o), b(ds, o);
    std::vector<int64_t> e0 = labels_of(a.epoch(0)), e1 = labels_of(a.epoch(1));
    std::vector<int64_t> sorted = e0;
    std::sort(sorted.begin(), sorted.end());
    for (int64_t i = 0; i < 100; ++i) CHECK(sorted[size_t(i)] == i);
    CHECK(e0 != e1);
    CHECK(labels_of(b.epoch(1)) == e1);  // another loader, same seed
    CHECK(labels_of(a.epoch(0)) == e0);  // replaying an epoch
    CHECK(a.order(1) == e1);
    o.seed = 8;
    CHECK(labels_of(data::DataLoader(ds, o).epoch(0)) != e0);
    // Prefetching or not gives the same batches.
    o.seed = 7;
    o.prefetch = 0;
    CHECK(labels_of(data::DataLoader(ds, o).epoch(1)) == e1);
    o.prefetch = 5;
    CHECK(labels_of(data::DataLoader(ds, o).epoch(1)) == e1);
    // drop_last drops the tail of the permutation.
    o.drop_last = true;
    std::vector<int64_t> d = labels_of(data::DataLoader(ds, o).epoch(1));
    CHECK(d == std::vector<int64_t>(e1.begin(), e1.begin() + 96));
  }

  TEST_CASE("DataLoader: early exit, errors from the background thread, single iteration") {
    auto ds = counting(50);
    data::DataLoader loader(ds, {.batch_size = 2, .prefetch = 3});
    int seen = 0;
    for (const data::Batch& b : loader.epoch(0)) {
      (void)b;
      if (++seen == 2) break;  // the epoch's destructor stops and joins the thread
    }
    CHECK(seen == 2);
    loader.transform(1, [](const NDArray& b, const data::BatchInfo& info) {
      if (info.indices[0] >= 20) fail("boom at ", info.indices[0]);
      return b;
    });
    for (int prefetch : {0, 3}) {
      data::DataLoader l2(ds, {.batch_size = 2, .prefetch = prefetch});
      l2.transform(1, [](const NDArray& b, const data::BatchInfo& info) {
        if (info.indices[0] >= 20) fail("boom at ", info.indices[0]);
        return b;
      });
      int got = 0;
      std::string e = error_of([&] {
        for (const data::Batch& b : l2.epoch(0)) got += int(b[0].shape()[0]);
      });
      CHECK(e == "boom at 20");
      CHECK(got == 20);
    }
    auto ep = loader.epoch(0);
    ep.begin();
    CHECK(contains(error_of([&] { ep.begin(); }), "iterated once"));
    CHECK(contains(error_of([&] { loader.transform(2, data::transforms::cast(float64)); }), "field 2 out of range"));
  }

  TEST_CASE("transforms: normalize, flips and crops per example, deterministically") {
    NDArray px = NDArray::empty({40, 1, 4, 5}, uint8);
    for (int64_t i = 0; i < px.numel(); ++i) px.data<uint8_t>()[i] = uint8_t(1 + i % 200);
    auto ds = std::make_shared<data::TensorDataset>(std::vector<NDArray>{px, NDArray::arange(40, int64)});
    {
      data::DataLoader l(ds, {.batch_size = 40});
      l.transform(0, data::transforms::normalize(0.5, 0.25));
      NDArray b = l.batch(0, 0)[0];
      CHECK(b.dtype() == float32);
      CHECK(b.at({3, 0, 2, 1}) == doctest::Approx((px.at({3, 0, 2, 1}) / 255.0 - 0.5) / 0.25));
    }
    auto flipped = [&](double p, uint64_t seed, int64_t epoch) {
      data::DataLoader l(ds, {.batch_size = 40, .seed = seed});
      l.transform(0, data::transforms::random_flip_horizontal(p));
      NDArray b = l.batch(epoch, 0)[0];
      std::vector<bool> out;
      for (int64_t i = 0; i < 40; ++i) {
        bool same = true, mirror = true;
        for (int64_t r = 0; r < 4; ++r)
          for (int64_t c = 0; c < 5; ++c) {
            same &= b.at({i, 0, r, c}) == px.at({i, 0, r, c});
            mirror &= b.at({i, 0, r, c}) == px.at({i, 0, r, 4 - c});
          }
        CHECK((same || mirror));
        out.push_back(mirror);
      }
      return out;
    };
    auto all = flipped(1.0, 1, 0), none = flipped(0.0, 1, 0), half = flipped(0.5, 1, 0);
    CHECK(std::count(all.begin(), all.end(), true) == 40);
    CHECK(std::count(none.begin(), none.end(), true) == 0);
    auto k = std::count(half.begin(), half.end(), true);
    CHECK((k > 8 && k < 32));
    CHECK(flipped(0.5, 1, 0) == half);
    CHECK(flipped(0.5, 1, 1) != half);
    CHECK(flipped(0.5, 2, 0) != half);

    data::DataLoader l(ds, {.batch_size = 40, .seed = 3});
    l.transform(0, data::transforms::random_crop(2));
    NDArray b = l.batch(0, 0)[0];
    int shifted = 0;
    for (int64_t i = 0; i < 40; ++i) {
      // Find the shift (dy, dx) in [-2, 2]^2 that explains the example.
      bool found = false;
      for (int64_t dy = -2; dy <= 2 && !found; ++dy)
        for (int64_t dx = -2; dx <= 2 && !found; ++dx) {
          bool ok = true;
          for (int64_t r = 0; r < 4 && ok; ++r)
            for (int64_t c = 0; c < 5 && ok; ++c) {
              int64_t sr = r + dy, sc = c + dx;
              double want = (sr >= 0 && sr < 4 && sc >= 0 && sc < 5) ? px.at({i, 0, sr, sc}) : 0.0;
              ok = b.at({i, 0, r, c}) == want;
            }
          if (ok) found = true, shifted += (dy != 0 || dx != 0);
        }
      CHECK(found);
    }
    CHECK(shifted > 20);
    data::DataLoader l0(ds, {.batch_size = 40});
    l0.transform(0, data::transforms::random_crop(0));
    CHECK(test::identical(l0.batch(0, 0)[0], px));
    CHECK(contains(error_of([] { data::transforms::random_crop(INT64_MAX); }), "padding must be in [0, 2^40]"));
  }

  TEST_CASE("DataLoader: a user's Dataset with a negative size() is an error naming it") {
    struct Negative : data::Dataset {
      int64_t size() const override { return -1; }
      std::vector<TensorType> fields() const override { return {{float32, {2}}}; }
      void fill(int64_t, const std::vector<NDArray>&, int64_t) const override {}
    };
    data::DataLoader l(std::make_shared<Negative>(), {.batch_size = 3});
    const std::string e = error_of([&] {
      for (const data::Batch& b : l.epoch(0)) (void)b;
    });
    CHECK(contains(e, "the dataset's size() is -1, expected >= 0"));
    CHECK(contains(error_of([&] { (void)l.size(); }), "size() is -1"));
  }
}
