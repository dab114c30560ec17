// Collectives and DataParallel across real MPI ranks (tests/mpi/main.cpp).

#include <doctest/doctest.h>

#include <cmath>

#include "core/autodiff.hpp"
#include "core/comm.hpp"
#include "core/session.hpp"
#include "frontend/data.hpp"
#include "frontend/distributed.hpp"
#include "frontend/init.hpp"
#include "frontend/optim.hpp"
#include "ops/ops.hpp"

using namespace loom;

namespace {

int me() { return communicator()->rank(); }

std::vector<float> values(const NDArray& a) { return a.astype(float32).to_vector<float>(); }

/// Runs `f` with the single-process group installed (reference computations), then restores MPI's.
template <class F>
void single_process(F f) {
  std::shared_ptr<Communicator> mpi = communicator();
  set_communicator(nullptr);
  try {
    f();
  } catch (...) {
    set_communicator(mpi);
    throw;
  }
  set_communicator(mpi);
}

}  // namespace

TEST_CASE("mpi: the group is the job's ranks") {
  const int R = communicator()->size();
  CHECK(R >= 2);
  CHECK(me() >= 0);
  CHECK(me() < R);
  CHECK(communicator()->name() == "mpi");
}

TEST_CASE("mpi: allreduce sum and mean, one tensor and a bucket") {
  const int R = communicator()->size();
  for (Executor ex : {Executor::serial, Executor::parallel}) {
    Graph g;
    Tensor a = g.placeholder("a", {3}), b = g.placeholder("b", {2, 2}), n = g.placeholder("n", {2}, int64);
    Tensor sum = allreduce(a);
    std::vector<Tensor> mean = allreduce({a, b}, Reduction::mean);
    Tensor count = allreduce(n);
    Session s(g, {.threads = 2, .executor = ex});
    const double r = me() + 1;  // rank r holds r + 1
    auto out =
        s.run({sum, mean[0], mean[1], count},
              {{a, NDArray::full({3}, r)}, {b, NDArray::full({2, 2}, 10 * r)}, {n, NDArray::full({2}, r, int64)}});
    const double total = R * (R + 1) / 2.0;
    for (float v : values(out[0])) CHECK(v == doctest::Approx(total));
    for (float v : values(out[1])) CHECK(v == doctest::Approx(total / R));
    for (float v : values(out[2])) CHECK(v == doctest::Approx(10 * total / R));
    CHECK(out[3].to_vector<int64_t>() == std::vector<int64_t>{int64_t(total), int64_t(total)});
  }
}

TEST_CASE("mpi: broadcast, reduce_to_root, allgather, reduce_scatter") {
  const int R = communicator()->size();
  Graph g;
  Tensor x = g.placeholder("x", {2, 2});
  Tensor from_last = broadcast(x, R - 1), at_root = reduce_to_root(x, 0), all = allgather(x);
  Tensor rows = g.placeholder("rows", {2 * R, 1});
  Tensor mine = reduce_scatter(rows);
  CHECK(all.shape() == Shape{2 * R, 2});
  CHECK(mine.shape() == Shape{2, 1});
  Session s(g, {.threads = 2, .executor = Executor::parallel});
  NDArray xr = NDArray::full({2, 2}, me() + 1);
  NDArray rr = NDArray::arange(2 * R).reshape({2 * R, 1});  // every rank the same: the sum is R * value
  auto out = s.run({from_last, at_root, all, mine}, {{x, xr}, {rows, rr}});
  for (float v : values(out[0])) CHECK(v == R);
  for (float v : values(out[1])) CHECK(v == (me() == 0 ? R * (R + 1) / 2.0f : 0.0f));
  std::vector<float> gathered = values(out[2]);
  for (int k = 0; k < R; ++k)
    for (int i = 0; i < 4; ++i) CHECK(gathered[size_t(4 * k + i)] == k + 1);
  CHECK(values(out[3]) == std::vector<float>{float(R * 2 * me()), float(R * (2 * me() + 1))});
}

TEST_CASE("mpi: gradients of collectives are collectives") {
  const int R = communicator()->size();
  Graph g;
  Tensor x = g.placeholder("x", {3});
  Tensor c = g.placeholder("c", {3});
  // d/dx sum(allreduce(x) * c_r) summed over ranks' losses = allreduce(c) on every rank.
  Tensor dx = gradients(sum(allreduce(x) * c), {x})[0];
  // d/dx sum(allgather(x) * w) with w the same on every rank: every rank's block of w, summed = R * w_block(rank).
  Tensor w = g.placeholder("w", {3 * R});
  Tensor dg = gradients(sum(allgather(x) * w), {x})[0];
  // broadcast from the root: only the root's x receives the gradient, the sum over ranks.
  Tensor db = gradients(sum(broadcast(x, 0) * c), {x})[0];
  Session s(g);
  const float cr = float(me() + 1);
  auto out =
      s.run({dx, dg, db}, {{x, NDArray::full({3}, 1.0)}, {c, NDArray::full({3}, cr)}, {w, NDArray::arange(3 * R)}});
  const float total = float(R * (R + 1)) / 2;
  for (float v : values(out[0])) CHECK(v == total);
  std::vector<float> got = values(out[1]);
  for (int i = 0; i < 3; ++i) CHECK(got[size_t(i)] == float(R * (3 * me() + i)));
  for (float v : values(out[2])) CHECK(v == (me() == 0 ? total : 0.0f));
}

TEST_CASE("mpi: many collectives in one plan under the parallel executor, in one order on every rank") {
  const int R = communicator()->size();
  Graph g;
  Tensor x = g.placeholder("x", {64});
  std::vector<Tensor> outs;
  for (int k = 0; k < 12; ++k) outs.push_back(allreduce(x * double(k + 1) + double(k)));
  Tensor total = outs[0];
  for (size_t k = 1; k < outs.size(); ++k) total = total + outs[k];
  Session s(g, {.threads = 2, .executor = Executor::parallel});
  for (int run = 0; run < 20; ++run) {
    auto out = s.run({total}, {{x, NDArray::full({64}, me())}});
    double expect = 0;  // sum over k, ranks of (k+1) * r + k
    for (int k = 0; k < 12; ++k) expect += (k + 1) * (R * (R - 1) / 2.0) + k * R;
    for (float v : values(out[0])) REQUIRE(v == doctest::Approx(expect));
  }
}

TEST_CASE("mpi: DataParallel trains as one process on the global batch (uneven parts)") {
  const int R = communicator()->size();
  // A global batch of 5 rows: rank r holds rows [r*5/R, (r+1)*5/R).
  const int64_t N = 5;
  NDArray X = NDArray::empty({N, 3}, float32), Y = NDArray::empty({N, 2}, float32);
  for (int64_t i = 0; i < N * 3; ++i) X.data<float>()[i] = float(std::sin(double(i)));
  for (int64_t i = 0; i < N * 2; ++i) Y.data<float>()[i] = float(std::cos(double(i)));
  const int64_t lo = me() * N / R, hi = (me() + 1) * N / R;
  auto build = [](Graph& g, Tensor& x, Tensor& y, Tensor& w, Tensor& b) {
    x = g.placeholder("x", {-1, 3});
    y = g.placeholder("y", {-1, 2});
    w = g.variable("w", {3, 2}, init::normal(0, 1));
    b = g.variable("b", {2}, init::normal(0, 1));
    Tensor d = matmul(x, w) + b - y;
    return mean(d * d);
  };
  for (Executor ex : {Executor::serial, Executor::parallel}) {
    Graph g;
    Tensor x, y, w, b;
    Tensor loss = build(g, x, y, w, b);
    optim::Adam adam(std::vector<Tensor>{w, b}, {.lr = 0.05});
    dist::DataParallel dp(adam, {.bucket_bytes = 8});  // one bucket per parameter
    Tensor step = dp.minimize(loss, x);
    Tensor global = dp.global_mean(loss, x);
    CHECK(dp.buckets().size() == 2);
    Session s(g, {.threads = 2, .executor = ex, .seed = uint64_t(100 + me())});  // different initial values per rank
    s.run({}, {}, {dp.broadcast_target()});
    Feeds feeds = {{x, X.slice({{lo, hi, 1}}).clone()}, {y, Y.slice({{lo, hi, 1}}).clone()}};
    std::vector<double> losses;
    for (int i = 0; i < 5; ++i) losses.push_back(s.run({global}, feeds, {step})[0].item());
    std::vector<NDArray> params = s.run({w, b});

    single_process([&] {
      Graph g1;
      Tensor x1, y1, w1, b1;
      Tensor loss1 = build(g1, x1, y1, w1, b1);
      optim::Adam adam1(std::vector<Tensor>{w1, b1}, {.lr = 0.05});
      Tensor step1 = adam1.minimize(loss1);
      Session s1(g1, {.seed = 100});  // rank 0's initial values
      for (int i = 0; i < 5; ++i) {
        double l = s1.run({loss1}, {{x1, X}, {y1, Y}}, {step1})[0].item();
        CHECK(losses[size_t(i)] == doctest::Approx(l).epsilon(1e-5));
      }
      std::vector<NDArray> ref = s1.run({w1, b1});
      for (size_t k = 0; k < 2; ++k) {
        std::vector<float> got = values(params[k]), want = values(ref[k]);
        for (size_t i = 0; i < got.size(); ++i) CHECK(got[i] == doctest::Approx(want[i]).epsilon(1e-5));
      }
    });
  }
}

TEST_CASE("mpi: sharded loaders read the global batches of one process") {
  const int R = communicator()->size();
  NDArray data = NDArray::arange(23).reshape({23, 1});
  auto set = std::make_shared<data::TensorDataset>(std::vector<NDArray>{data});
  data::DataLoader whole(set, {.batch_size = 8, .shuffle = true, .seed = 3});
  data::DataLoader part(set, {.batch_size = 8, .shuffle = true, .seed = 3, .shard = me(), .shards = R});
  REQUIRE(part.size() == whole.size());
  for (int64_t i = 0; i < whole.size(); ++i) {
    NDArray all = whole.batch(1, i)[0], mine = part.batch(1, i)[0];
    const int64_t n = all.shape()[0], lo = me() * n / R, hi = (me() + 1) * n / R;
    REQUIRE(mine.shape()[0] == hi - lo);
    CHECK(values(mine) == values(all.slice({{lo, hi, 1}})));
  }
}

TEST_CASE("mpi: a graph built for another group size is an error naming the node") {
  const int R = communicator()->size();
  Graph g;
  Tensor x = g.placeholder("x", {2});
  Tensor y = allreduce(x);  // ranks = R
  const std::string expect = "built for a group of " + std::to_string(R) + " ranks";
  single_process([&] {
    Session s(g);
    CHECK_THROWS_WITH_AS(s.run({y}, {{x, NDArray::full({2}, 1.0)}}), doctest::Contains(expect.c_str()), Error);
  });
}
