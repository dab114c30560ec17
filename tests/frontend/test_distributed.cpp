// Collective ops and DataParallel inside one process: the default group of one,
// and a "twin" group of two whose other rank holds the same data (so the
// results are known without MPI). Across real ranks: tests/mpi/.

#include <cstring>

#include "core/autodiff.hpp"
#include "core/comm.hpp"
#include "frontend/data.hpp"
#include "frontend/distributed.hpp"
#include "frontend/init.hpp"
#include "frontend/optim.hpp"
#include "tests/util.hpp"

using namespace loom;

namespace {

/// Rank 0 of two ranks that hold identical data.
class TwinCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 2; }
  std::string name() const override { return "twin"; }
  void allreduce_sum(void* data, size_t count, DType dtype) override {
    dispatch(dtype, [&]<class T>() {
      if constexpr (!std::is_same_v<T, bool>)
        for (size_t i = 0; i < count; ++i) static_cast<T*>(data)[i] *= T(2);
    });
  }
  void broadcast(void*, size_t, int) override {}
  void allgather(const void* in, void* out, size_t bytes) override {
    std::memcpy(out, in, bytes);
    std::memcpy(static_cast<char*>(out) + bytes, in, bytes);
  }
  void barrier() override {}
};

struct Twin {
  Twin() { set_communicator(std::make_shared<TwinCommunicator>()); }
  ~Twin() { set_communicator(nullptr); }
};

std::vector<float> values(const NDArray& a) { return a.astype(float32).to_vector<float>(); }

}  // namespace

// Suites named *parallel* also run under ThreadSanitizer (./build.sh test-tsan).
TEST_SUITE("collectives/parallel") {
  TEST_CASE("collectives: identities in a group of one, parallel executor") {
    REQUIRE(communicator()->size() == 1);
    Graph g;
    Tensor x = g.placeholder("x", {2, 3});
    Tensor outs[] = {allreduce(x),     allreduce(x, Reduction::mean), broadcast(x), reduce_to_root(x), allgather(x),
                     reduce_scatter(x)};
    Session s(g, {.executor = Executor::parallel});
    NDArray v = test::rand({2, 3}, 1);
    for (const NDArray& o : s.run(std::vector<Tensor>(std::begin(outs), std::end(outs)), {{x, v}}))
      CHECK(test::max_abs_diff(o, v) == 0);
  }

  TEST_CASE("collectives: kernels agree with the references in a group of two, parallel executor") {
    Twin twin;
    Graph g;
    Tensor x = g.placeholder("x", {4, 3});
    Tensor y = g.placeholder("y", {2}, int64);
    std::vector<Tensor> fetches = {allreduce(x),    allreduce(x, Reduction::mean),
                                   broadcast(x, 1), reduce_to_root(x, 0),
                                   allgather(x),    reduce_scatter(x),
                                   allreduce(y)};
    CHECK(fetches[4].shape() == Shape{8, 3});
    CHECK(fetches[5].shape() == Shape{2, 3});
    Session s(g, {.threads = 2, .executor = Executor::parallel});
    NDArray xv = test::rand({4, 3}, 2), yv = NDArray::from<int64_t>({3, -4});
    std::vector<NDArray> out = s.run(fetches, {{x, xv}, {y, yv}});
    for (size_t i = 0; i + 1 < fetches.size(); ++i) {
      const Node& n = fetches[i].node();
      std::vector<NDArray> ref = n.op->reference(std::vector<NDArray>{xv}, n.attrs);
      CHECK_MESSAGE(test::max_abs_diff(out[i], ref[0]) < 1e-6, n.op->name);
    }
    CHECK(out[6].to_vector<int64_t>() == std::vector<int64_t>{6, -8});
  }

}  // TEST_SUITE("collectives/parallel")

TEST_CASE("collectives: bad uses are errors naming the op") {
  Graph g;
  Tensor s = g.placeholder("s", {});
  Tensor i = g.placeholder("i", {3}, int32);
  Tensor odd = g.placeholder("odd", {3, 2});
  CHECK_THROWS_WITH_AS(allgather(s), doctest::Contains("allgather"), Error);
  CHECK_THROWS_WITH_AS(allreduce(i, Reduction::mean), doctest::Contains("cannot mean-reduce int32"), Error);
  CHECK_THROWS_WITH_AS(broadcast(s, 3), doctest::Contains("root 3 is not a rank"), Error);
  CHECK_THROWS_WITH_AS(allreduce({s, i}), doctest::Contains("share a dtype"), Error);
  Twin twin;
  CHECK_THROWS_WITH_AS(reduce_scatter(odd), doctest::Contains("does not split into 2 ranks"), Error);
}

TEST_CASE("DataParallel: buckets in reverse parameter order, by size and dtype") {
  Graph g;
  Tensor a = g.variable("a", {4}, init::zeros()), b = g.variable("b", {4}, init::zeros()),
         c = g.variable("c", {8}, init::zeros());
  optim::SGD sgd(std::vector<Tensor>{a, b, c});
  dist::DataParallel dp(sgd, {.bucket_bytes = 32});
  Tensor x = g.placeholder("x", {-1, 4});
  Tensor loss = mean(sum(x * a, {1})) + sum(b) + sum(c);
  dp.minimize(loss, x);
  REQUIRE(dp.buckets().size() == 2);
  CHECK(dp.buckets()[0] == std::vector<size_t>{2});     // c: 32 bytes
  CHECK(dp.buckets()[1] == std::vector<size_t>{1, 0});  // b and a
}

TEST_CASE("DataParallel: in a group of one it is the optimizer's own step") {
  auto train = [](bool dp_on) {
    Graph g;
    Tensor x = g.placeholder("x", {-1, 3}), y = g.placeholder("y", {-1});
    Tensor w = g.variable("w", {3}, init::normal(0, 1));
    Tensor d = sum(x * w, {1}) - y;
    Tensor loss = mean(d * d);
    optim::Adam adam(std::vector<Tensor>{w}, {.lr = 0.1});
    dist::DataParallel dp(adam, {.bucket_bytes = 4});
    Tensor step = dp_on ? dp.minimize(loss, x) : adam.minimize(loss);
    Session s(g, {.seed = 5});
    for (int i = 0; i < 4; ++i) s.run({}, {{x, test::rand({6, 3}, uint64_t(i))}, {y, test::rand({6}, 9)}}, {step});
    return s.run({w})[0];
  };
  CHECK(test::max_abs_diff(train(true), train(false)) < 1e-6);
}

TEST_CASE("DataParallel: twin ranks with the same data give the single-process gradient") {
  // Rank 0 of a twin group sees 2x the rows in total: the averaged gradient equals its own.
  NDArray xv = test::rand({5, 3}, 3), yv = test::rand({5}, 4);
  auto train = [&](bool twin) {
    std::unique_ptr<Twin> t;
    if (twin) t = std::make_unique<Twin>();
    Graph g;
    Tensor x = g.placeholder("x", {-1, 3}), y = g.placeholder("y", {-1});
    Tensor w = g.variable("w", {3}, init::normal(0, 1));
    Tensor d = sum(x * w, {1}) - y;
    Tensor loss = mean(d * d);
    optim::SGD sgd(std::vector<Tensor>{w}, {.lr = 0.1, .momentum = 0.9});
    dist::DataParallel dp(sgd);
    Tensor step = dp.minimize(loss, x);
    Tensor global = dp.global_mean(loss, x);
    Session s(g, {.seed = 5});
    double l = 0;
    for (int i = 0; i < 3; ++i) l = s.run({global}, {{x, xv}, {y, yv}}, {step})[0].item();
    return std::make_pair(l, s.run({w})[0]);
  };
  auto [l2, w2] = train(true);
  auto [l1, w1] = train(false);
  CHECK(l2 == doctest::Approx(l1).epsilon(1e-6));
  CHECK(test::max_abs_diff(w2, w1) < 1e-6);
}

TEST_CASE("DataLoader: shards partition every batch into contiguous parts") {
  auto set = std::make_shared<data::TensorDataset>(std::vector<NDArray>{NDArray::arange(29).reshape({29, 1})});
  data::DataLoader whole(set, {.batch_size = 10, .shuffle = true, .seed = 7});
  std::vector<data::DataLoader> parts;
  for (int k = 0; k < 3; ++k)
    parts.emplace_back(set, data::LoaderOptions{.batch_size = 10, .shuffle = true, .seed = 7, .shard = k, .shards = 3});
  for (int64_t b = 0; b < whole.size(); ++b) {
    std::vector<float> joined;
    for (auto& p : parts) {
      std::vector<float> v = values(p.batch(2, b)[0]);
      joined.insert(joined.end(), v.begin(), v.end());
    }
    CHECK(joined == values(whole.batch(2, b)[0]));
  }
  // The prefetching iterator yields the same parts.
  int64_t rows = 0;
  for (const data::Batch& batch : parts[1].epoch(2)) rows += batch[0].shape()[0];
  CHECK(rows == 3 + 3 + 3);  // batches of 10, 10, 9 rows: part 1 holds rows [n/3, 2n/3)
  CHECK_THROWS_WITH_AS(data::DataLoader(set, {.shard = 2, .shards = 2}), doctest::Contains("shard 2 of 2"), Error);
}
