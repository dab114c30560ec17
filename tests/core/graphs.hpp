#pragma once
// Graphs the session tests plan and run: seeded random DAGs, an MLP training
// step with SGD updates built from ops, and a plan verifier that is
// independent of the planner.

#include <functional>
#include <random>

#include "tests/util.hpp"

namespace loom::test {

inline Initializer init_normal(double stddev) {
  return [stddev](const NDArray& a, uint64_t seed) {
    NDArray v = rand(a.shape(), seed, a.dtype(), -stddev * 1.7, stddev * 1.7);
    a.assign(v);
  };
}

struct RandomDag {
  std::vector<Tensor> inputs;  // placeholders
  std::vector<Tensor> outputs;
  Feeds feeds;
};

/// A seeded random DAG of element-wise ops, matmuls, reductions with
/// broadcasting and views over [n, n] tensors.
inline RandomDag random_dag(Graph& g, uint64_t seed, int nodes, int64_t n = 16) {
  std::mt19937_64 rng(seed);
  RandomDag d;
  std::vector<Tensor> pool;
  for (int i = 0; i < 3; ++i) {
    Tensor p = g.placeholder("in" + std::to_string(i), {n, n});
    d.inputs.push_back(p);
    d.feeds.push_back({p, rand({n, n}, seed * 10 + uint64_t(i))});
    pool.push_back(p);
  }
  pool.push_back(g.variable("w", {n, n}, init_normal(0.3)));
  auto pick = [&]() -> Tensor {
    // Prefer recent tensors so chains form, sometimes reach back for wide fan-in.
    std::uniform_int_distribution<size_t> far(0, pool.size() - 1);
    std::uniform_int_distribution<size_t> near(pool.size() > 4 ? pool.size() - 4 : 0, pool.size() - 1);
    return rng() % 3 ? pool[near(rng)] : pool[far(rng)];
  };
  for (int i = 0; i < nodes; ++i) {
    Tensor a = pick(), b = pick(), r;
    switch (rng() % 9) {
      case 0: r = a + b; break;
      case 1: r = a * b; break;
      case 2: r = tanh(a - b); break;
      case 3: r = matmul(a, b) * 0.1; break;
      case 4: r = a + sum(b, {1}, true); break;
      case 5: r = maximum(a, transpose(b)); break;
      case 6: r = exp(a * 0.1) - mean(b, {0}, true); break;
      case 7: r = relu(a) + 0.5; break;
      default: r = sigmoid(slice(concat({a, b}, 0), {Slice::range(n / 2, n + n / 2)})); break;
    }
    pool.push_back(r);
  }
  for (size_t i = pool.size() - 3; i < pool.size(); ++i) d.outputs.push_back(pool[i]);
  d.outputs.push_back(sum(pool[pool.size() / 2]));
  return d;
}

struct MlpStep {
  Tensor x, y, loss, train;
  std::vector<Tensor> params;
};

/// One SGD training step of an MLP (784 -> hidden... -> 10) with cross-entropy.
inline MlpStep mlp_step(Graph& g, std::vector<int64_t> widths, double lr = 0.1) {
  MlpStep m;
  m.x = g.placeholder("x", {-1, widths.front()});
  m.y = g.placeholder("y", {-1}, int64);
  Tensor h = m.x;
  for (size_t i = 0; i + 1 < widths.size(); ++i) {
    auto s = g.scope("layer" + std::to_string(i));
    Tensor w = g.variable("w", {widths[i], widths[i + 1]}, init_normal(1.0 / std::sqrt(double(widths[i]))));
    Tensor b = g.variable("b", {widths[i + 1]}, [](const NDArray& a, uint64_t) { a.fill(0); });
    m.params.push_back(w);
    m.params.push_back(b);
    h = matmul(h, w) + b;
    if (i + 2 < widths.size()) h = relu(h);
  }
  m.loss = softmax_cross_entropy(h, m.y);
  auto grads = gradients(m.loss, m.params);
  std::vector<Tensor> updates;
  for (size_t i = 0; i < m.params.size(); ++i) updates.push_back(assign_sub(m.params[i], grads[i] * lr));
  m.train = group(updates);
  return m;
}

inline Feeds mlp_feeds(const MlpStep& m, int64_t batch, int64_t features, uint64_t seed) {
  NDArray labels = NDArray::empty({batch}, int64);
  for (int64_t i = 0; i < batch; ++i) labels.data<int64_t>()[i] = int64_t((seed + uint64_t(i) * 7) % 10);
  return {{m.x, rand({batch, features}, seed)}, {m.y, labels}};
}

/// Checks a plan independently of the planner: buffers whose bytes overlap
/// are never live at the same time in the schedule, and every access to the
/// earlier one happens-before (through the plan's dependency edges) the write
/// of the later one, so the parallel executor cannot race on shared memory.
inline void verify_plan(const PlanInfo& p) {
  const size_t n = p.steps.size();
  REQUIRE_MESSAGE(n <= 6000, "plan too large for the quadratic verifier");
  // Ancestors as bitsets (steps are in schedule order; deps point backwards).
  const size_t words = (n + 63) / 64;
  std::vector<uint64_t> anc(n * words, 0);
  for (size_t i = 0; i < n; ++i)
    for (int d : p.steps[i].deps) {
      REQUIRE_MESSAGE(size_t(d) < i, "dependency against the schedule at step ", i);
      anc[i * words + size_t(d) / 64] |= 1ull << (size_t(d) % 64);
      for (size_t w = 0; w < words; ++w) anc[i * words + w] |= anc[size_t(d) * words + w];
    }
  auto before = [&](int a, int b) { return a == b || (anc[size_t(b) * words + size_t(a) / 64] >> (size_t(a) % 64)) & 1; };
  for (const auto& b : p.buffers) {
    REQUIRE(b.offset + b.bytes <= p.arena_bytes);
    REQUIRE(!b.writers.empty());
    // Within one buffer (in-place reuse): readers scheduled before a later writer happen-before it.
    for (size_t k = 1; k < b.writers.size(); ++k)
      for (int r : b.readers)
        if (r < b.writers[k]) CHECK_MESSAGE(before(r, b.writers[k]), "in-place write races a reader");
  }
  for (size_t i = 0; i < p.buffers.size(); ++i)
    for (size_t j = 0; j < p.buffers.size(); ++j) {
      if (i == j) continue;
      const auto &a = p.buffers[i], &b = p.buffers[j];
      bool overlap = a.offset < b.offset + b.bytes && b.offset < a.offset + a.bytes;
      if (!overlap || a.first > b.first) continue;
      INFO("buffers ", i, " [", a.first, ",", a.last, "] and ", j, " [", b.first, ",", b.last, "] share bytes");
      REQUIRE(a.last < b.first);  // never live at the same time
      int w = b.writers.front();
      for (int r : a.readers) REQUIRE(before(r, w));
      for (int x : a.writers) REQUIRE(before(x, w));
    }
}

}  // namespace loom::test
