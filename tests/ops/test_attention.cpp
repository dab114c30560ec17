// Fused scaled dot-product attention: equal to the composite (matmul -> mask
// -> softmax -> matmul) in values and gradients over lengths, heads, masks and
// tiles; numeric gradient checks in float64; dropout reproducible and with the
// right statistics; memory linear in T; results independent of the thread
// count and of the inputs' layouts; errors naming the node and the sizes.

#include <cmath>

#include "ops/check.hpp"
#include "tests/util.hpp"

using namespace loom;
using loom::test::allclose;
using loom::test::contains;
using loom::test::error_of;
using loom::test::identical;

namespace {

struct Case {
  Shape q, k, v;
  bool causal = false;
  int mask = 0;  // 0 none, 1 bool [Tq, Tk] with a fully masked row, 2 key padding [B, 1, 1, Tk] bool, 3 float [Tq, Tk],
                // 4 float [Tk] (fewer dims than the scores)
};

NDArray make_mask(const Case& c, uint64_t seed) {
  const int64_t tq = c.q[c.q.size() - 2], tk = c.k[c.k.size() - 2];
  if (c.mask == 3) return test::rand({tq, tk}, seed, float64, -2, 2);
  if (c.mask == 4) return test::rand({tk}, seed, float64, -2, 2);
  Shape s = c.mask == 1 ? Shape{tq, tk} : Shape{c.q[0], 1, 1, tk};
  NDArray m = NDArray::empty(s, boolean);
  NDArray r = test::rand(s, seed, float64, 0, 1);
  for (int64_t i = 0; i < m.numel(); ++i) m.data<bool>()[i] = r.data<double>()[i] > 0.25;
  if (c.mask == 1)
    for (int64_t j = 0; j < tk; ++j) m.data<bool>()[std::min<int64_t>(1, tq - 1) * tk + j] = false;  // row 1: no key
  return m;
}

/// fused and composite attention with their gradients w.r.t. q, k, v in one session.
std::vector<NDArray> both(const Case& c, DType t, SessionOptions opt = {}) {
  Graph g;
  Tensor q = g.placeholder("q", c.q, t), k = g.placeholder("k", c.k, t), v = g.placeholder("v", c.v, t);
  AttentionOptions o{.causal = c.causal};
  if (c.mask) {
    NDArray m = make_mask(c, 3);
    o.mask = g.constant(m.dtype() == boolean ? m : m.astype(t));
  }
  Tensor f = scaled_dot_product_attention(q, k, v, o), r = composite::scaled_dot_product_attention(q, k, v, o);
  Tensor w = g.constant(test::rand(f.shape(), 7, t));
  auto gf = gradients(sum(f * w), {q, k, v}), gr = gradients(sum(r * w), {q, k, v});
  Session s(g, opt);
  return s.run({f, r, gf[0], gr[0], gf[1], gr[1], gf[2], gr[2]},
               {{q, test::rand(c.q, 1, t)}, {k, test::rand(c.k, 2, t)}, {v, test::rand(c.v, 3, t)}});
}

bool finite(const NDArray& a) {
  NDArray x = a.astype(float64);
  for (int64_t i = 0; i < x.numel(); ++i)
    if (!std::isfinite(x.data<double>()[i])) return false;
  return true;
}

}  // namespace

TEST_SUITE("ops/attention") {
  TEST_CASE("fused attention equals the composite: values and gradients") {
    std::vector<Case> cases;
    for (int64_t t : {1, 7, 64, 65, 130, 200})
      for (bool causal : {false, true}) cases.push_back({{2, 3, t, 16}, {2, 3, t, 16}, {2, 3, t, 16}, causal});
    cases.push_back({{1, 1, 33, 8}, {1, 1, 290, 8}, {1, 1, 290, 5}});          // one head, Tq < Tk, Dv != D
    cases.push_back({{2, 300, 4}, {2, 150, 4}, {2, 150, 4}, true});            // Tq > Tk, causal
    cases.push_back({{2, 4, 70, 8}, {2, 4, 70, 8}, {2, 4, 70, 8}, false, 1});  // bool mask with an empty row
    cases.push_back({{2, 4, 70, 8}, {2, 4, 70, 8}, {2, 4, 70, 8}, true, 2});   // key padding and causal
    cases.push_back({{2, 2, 40, 8}, {2, 2, 150, 8}, {2, 2, 150, 8}, false, 3});  // additive float mask
    cases.push_back({{2, 2, 40, 8}, {2, 2, 150, 8}, {2, 2, 150, 8}, true, 4});   // a 1-d mask over the keys
    cases.push_back({{9, 3}, {5, 3}, {5, 6}});                                  // no batch dims
    for (DType t : {float32, float64})
      for (const Case& c : cases) {
        CAPTURE(dtype_name(t));
        CAPTURE(shape_str(c.q));
        CAPTURE(shape_str(c.k));
        CAPTURE(c.causal);
        CAPTURE(c.mask);
        const double tol = t == float32 ? 1e-4 : 1e-10;
        auto r = both(c, t);
        for (size_t i = 0; i < r.size(); i += 2) {
          CAPTURE(i);
          CHECK(finite(r[i]));
          CHECK(allclose(r[i], r[i + 1], tol, tol));
        }
      }
  }

  TEST_CASE("a query whose keys are all masked gives zeros and zero gradients") {
    Case c{{1, 2, 5, 4}, {1, 2, 5, 4}, {1, 2, 5, 4}, false, 1};
    auto r = both(c, float64);
    for (int64_t h = 0; h < 2; ++h)
      for (int64_t d = 0; d < 4; ++d) {
        CHECK(r[0].at({0, h, 1, d}) == 0.0);
        CHECK(r[2].at({0, h, 1, d}) == 0.0);  // dq of the empty row
      }
  }

  TEST_CASE("numeric gradient checks in float64: causal or not, odd lengths, one head and several") {
    struct G {
      Shape q, k, v;
      bool causal;
      double scale;
    };
    for (const G& c : std::vector<G>{{{1, 1, 5, 3}, {1, 1, 7, 3}, {1, 1, 7, 2}, false, 0},
                                     {{2, 3, 5, 3}, {2, 3, 5, 3}, {2, 3, 5, 4}, true, 0},
                                     {{1, 2, 9, 2}, {1, 2, 13, 2}, {1, 2, 13, 3}, true, 0.9},
                                     {{1, 1, 70, 2}, {1, 1, 140, 2}, {1, 1, 140, 1}, true, 0}}) {
      CAPTURE(shape_str(c.q));
      CAPTURE(c.causal);
      auto f = [&](const std::vector<Tensor>& x) {
        AttentionOptions o{.causal = c.causal};
        if (c.scale) o.scale = c.scale;
        return std::vector<Tensor>{scaled_dot_product_attention(x[0], x[1], x[2], o)};
      };
      CheckResult r = check_gradient_fn(
          f, {test::rand(c.q, 1, float64), test::rand(c.k, 2, float64), test::rand(c.v, 3, float64)}, {0, 1, 2});
      CHECK_MESSAGE(r.ok, r.detail);
    }
  }

  TEST_CASE("a float mask gets its gradient (a learned attention bias), as PyTorch's; numeric checks in float64") {
    struct M {
      Shape q, k, mask;
      bool causal;
    };
    for (const M& c : std::vector<M>{{{1, 2, 4, 3}, {1, 2, 6, 3}, {4, 6}, false},  // broadcast over batch and heads
                                     {{2, 5, 3}, {2, 5, 3}, {2, 5, 5}, true},
                                     {{1, 2, 3, 2}, {1, 2, 7, 2}, {7}, false}}) {  // over the keys only
      CAPTURE(shape_str(c.mask));
      auto f = [&](const std::vector<Tensor>& x) {
        return std::vector<Tensor>{scaled_dot_product_attention(x[0], x[1], x[2], {.causal = c.causal, .mask = x[3]})};
      };
      Shape v = c.k;
      v.back() = 2;
      CheckResult r = check_gradient_fn(f,
                                        {test::rand(c.q, 1, float64), test::rand(c.k, 2, float64),
                                         test::rand(v, 3, float64), test::rand(c.mask, 4, float64, -1, 1)},
                                        {0, 1, 2, 3});
      CHECK_MESSAGE(r.ok, r.detail);
    }
    // The fused op's mask gradient equals the composite's (whose is its primitives').
    Graph g;
    Tensor q = g.placeholder("q", {2, 2, 9, 4}, float64), bias = g.placeholder("bias", {9, 9}, float64);
    Tensor f = scaled_dot_product_attention(q, q, q, {.mask = bias});
    Tensor r = composite::scaled_dot_product_attention(q, q, q, {.mask = bias});
    Tensor w = g.constant(test::rand(f.shape(), 7, float64));
    Tensor gf = gradients(sum(f * w), {bias})[0], gr = gradients(sum(r * w), {bias})[0];
    Session s(g);
    const auto out =
        s.run({gf, gr}, {{q, test::rand({2, 2, 9, 4}, 1, float64)}, {bias, test::rand({9, 9}, 2, float64)}});
    CHECK(out[0].shape() == Shape{9, 9});
    CHECK(allclose(out[0], out[1], 1e-10, 1e-10));
    CHECK(test::max_abs_diff(out[0], NDArray::zeros({9, 9}, float64)) > 1e-3);  // not the zeros it was
  }

  TEST_CASE("a float mask gets its gradient under attention dropout too (the same weights replayed)") {
    // A fixed dropout key (a constant input instead of random_key) makes every run draw the same
    // weights, so central differences see one function; dropout 0.4 zeroes some of the weights.
    NDArray key = NDArray::from<int64_t>({987654321, 5}, {2});
    for (bool causal : {false, true}) {
      CAPTURE(causal);
      auto f = [&](const std::vector<Tensor>& x) {
        Graph& g = x[0].graph();
        Attrs a{{"scale", 0.7}, {"causal", causal}, {"dropout", 0.4}, {"mask", true}};
        return std::vector<Tensor>{g.add("attention", {x[0], x[1], x[2], x[3], g.constant(key)}, a)[0]};
      };
      CheckResult r = check_gradient_fn(f,
                                        {test::rand({2, 2, 5, 3}, 1, float64), test::rand({2, 2, 5, 3}, 2, float64),
                                         test::rand({2, 2, 5, 2}, 3, float64), test::rand({5, 5}, 4, float64)},
                                        {0, 1, 2, 3});
      CHECK_MESSAGE(r.ok, r.detail);
    }
    // attention_keep draws what attention draws: its factors over a uniform attention give attention's output.
    const int64_t T = 64;
    NDArray zeros = NDArray::zeros({1, 2, T, 4}), ones = NDArray::full({1, 2, T, 1}, 1.0);
    Attrs a{{"scale", 1.0}, {"causal", false}, {"dropout", 0.3}, {"mask", false}};
    NDArray out = invoke("attention", {zeros, test::rand({1, 2, T, 4}, 5), ones, key}, a)[0];
    NDArray factors = invoke("attention_keep", {key, NDArray::zeros({1, 2, T, T})}, {{"dropout", 0.3}})[0];
    for (int64_t h = 0; h < 2; ++h)
      for (int64_t i = 0; i < T; ++i) {
        double row = 0;
        for (int64_t j = 0; j < T; ++j) row += factors.at({0, h, i, j}) / double(T);
        CHECK(out.at({0, h, i, 0}) == doctest::Approx(row).epsilon(1e-5));
      }
  }

  TEST_CASE("second derivatives of attention (gradients of gradients)") {
    auto f = [](const std::vector<Tensor>& x) {
      Tensor y = scaled_dot_product_attention(x[0], x[1], x[2], {.causal = true});
      Tensor w = x[0].graph().constant(test::rand(y.shape(), 4, float64));
      auto g = gradients(sum(y * y * w), {x[0], x[1], x[2]});
      return std::vector<Tensor>{g[0], g[1], g[2]};
    };
    CheckResult r = check_gradient_fn(
        f, {test::rand({2, 4, 3}, 1, float64), test::rand({2, 5, 3}, 2, float64), test::rand({2, 5, 2}, 3, float64)},
        {0, 1, 2});
    CHECK_MESSAGE(r.ok, r.detail);
  }

  TEST_CASE("results do not depend on the thread count, the executor or the inputs' layouts") {
    // batch 1: the backward splits the key tiles into groups (partial dQ).
    for (const Case& c : {Case{{1, 1, 300, 16}, {1, 1, 300, 16}, {1, 1, 300, 16}, true},
                          Case{{4, 2, 100, 8}, {4, 2, 100, 8}, {4, 2, 100, 8}, false, 2}}) {
      auto one = both(c, float32, {.threads = 1});
      auto two = both(c, float32, {.threads = 2, .executor = Executor::parallel});
      for (size_t i = 0; i < one.size(); i += 2) CHECK(identical(one[i], two[i]));  // the fused op's results
    }
    // q, k, v as strided views of one [B, T, 3, H, D] tensor (how MultiheadAttention makes them).
    Graph g;
    Tensor qkv = g.placeholder("qkv", {2, 50, 3, 4, 8});
    auto parts = split(qkv, 3, 2);
    auto heads = [](const Tensor& t) { return permute(squeeze(t, {2}), {0, 2, 1, 3}); };
    Tensor a = scaled_dot_product_attention(heads(parts[0]), heads(parts[1]), heads(parts[2]), {.causal = true});
    Tensor qc = g.placeholder("q", {2, 4, 50, 8}), kc = g.placeholder("k", {2, 4, 50, 8}), vc = g.placeholder("v", {2, 4, 50, 8});
    Tensor b = scaled_dot_product_attention(qc, kc, vc, {.causal = true});
    Tensor ga = gradients(sum(a * a), {qkv})[0];
    NDArray x = test::rand({2, 50, 3, 4, 8}, 5);
    auto view = [&](int i) { return x.select(2, i).permute({0, 2, 1, 3}).compact(); };
    Session s(g);
    auto r = s.run({a, b, ga}, {{qkv, x}, {qc, view(0)}, {kc, view(1)}, {vc, view(2)}});
    CHECK(identical(r[0], r[1]));
    CHECK(finite(r[2]));
  }

  TEST_CASE("dropout: reproducible per seed, new every run, kept weights scaled by 1/(1-p)") {
    Graph g;
    // q = 0: uniform weights 1/Tk; v = 1: out = (kept count) / (Tk (1 - p)).
    const int64_t T = 200;
    const double p = 0.25;
    Tensor q = g.constant(NDArray::zeros({2, 3, T, 4})), k = g.constant(test::rand({2, 3, T, 4}, 1));
    Tensor v = g.constant(NDArray::full({2, 3, T, 1}, 1.0));
    Tensor y = scaled_dot_product_attention(q, k, v, {.dropout = p});
    Session s1(g, {.seed = 3}), s2(g, {.seed = 3}), s3(g, {.seed = 4});
    NDArray a = s1.run1(y), b = s2.run1(y), c = s3.run1(y), a2 = s1.run1(y);
    CHECK(identical(a, b));
    CHECK(!identical(a, c));
    CHECK(!identical(a, a2));
    double mean = 0;
    for (float f : a.to_vector<float>()) mean += f;
    mean /= double(a.numel());
    CHECK(mean == doctest::Approx(1.0).epsilon(0.01));  // 120k weights: the kept fraction is 0.75 +- 0.0013
    // Each output is k / (T (1 - p)) for an integer count k of kept weights.
    for (float f : a.to_vector<float>()) {
      const double kept = double(f) * T * (1 - p);
      CHECK(std::fabs(kept - std::round(kept)) < 1e-3);
    }
    // The gradient replays the same weights: finite, and zero where v's gradient has no kept weight.
    Tensor vv = g.placeholder("v", {2, 3, T, 1});
    Tensor y2 = scaled_dot_product_attention(q, k, vv, {.dropout = 0.999});
    NDArray dv = s1.run1(gradients(sum(y2), {vv})[0], {{vv, NDArray::full({2, 3, T, 1}, 1.0)}});
    CHECK(finite(dv));
  }

  TEST_CASE("the dropout key is read through its strides") {
    NDArray q = test::rand({2, 5, 3}, 1), k = test::rand({2, 8, 3}, 2), v = test::rand({2, 8, 2}, 3);
    NDArray key = NDArray::empty({2}, int64), reversed = NDArray::empty({2}, int64);
    key.data<int64_t>()[0] = 987654321, key.data<int64_t>()[1] = 5;
    reversed.data<int64_t>()[0] = 5, reversed.data<int64_t>()[1] = 987654321;
    Attrs a{{"scale", 0.5}, {"causal", false}, {"dropout", 0.4}, {"mask", false}};
    NDArray x = invoke("attention", {q, k, v, key}, a)[0], y = invoke("attention", {q, k, v, reversed.flip({0})}, a)[0];
    CHECK(identical(x, y));
  }

  TEST_CASE("the forward's memory grows linearly in T") {
    auto arena = [](int64_t t) {
      Graph g;
      Tensor q = g.placeholder("q", {1, 4, t, 32}), k = g.placeholder("k", {1, 4, t, 32}), v = g.placeholder("v", {1, 4, t, 32});
      Tensor y = scaled_dot_product_attention(q, k, v, {.causal = true});
      Session s(g, {.threads = 2});
      s.run1(y, {{q, NDArray::zeros({1, 4, t, 32})}, {k, NDArray::zeros({1, 4, t, 32})}, {v, NDArray::zeros({1, 4, t, 32})}});
      return double(s.stats().last_plan.arena_bytes);
    };
    const double a = arena(512), b = arena(2048);
    CHECK(b / a < 4.5);  // linear: about 4; the [T, T] scores would make it 16
  }

  TEST_CASE("random_key: new every run, fixed by the seed") {
    Graph g;
    Tensor k = random_key(g);
    Session a(g, {.seed = 1}), b(g, {.seed = 1});
    NDArray k1 = a.run1(k), k2 = a.run1(k), k3 = b.run1(k);
    CHECK(k1.shape() == Shape{2});
    CHECK(identical(k1, k3));
    CHECK(!identical(k1, k2));
  }

  TEST_CASE("bad input raises loom::Error naming the node and the sizes") {
    Graph g;
    Tensor q = g.placeholder("q", {2, 4, 10, 8}), k = g.placeholder("k", {2, 4, 12, 8});
    Tensor v = g.placeholder("v", {2, 4, 12, 6});
    auto err = [&](auto f) { return error_of(f); };
    std::string e = err([&] { scaled_dot_product_attention(q, g.placeholder("k2", {2, 4, 12, 16}), v); });
    CHECK(contains(e, "attention 'attention"));
    CHECK(contains(e, "head dims (8 vs 16)"));
    e = err([&] { scaled_dot_product_attention(q, k, g.placeholder("v2", {2, 4, 11, 6})); });
    CHECK(contains(e, "different lengths (12 vs 11)"));
    e = err([&] { scaled_dot_product_attention(q, g.placeholder("k3", {2, 3, 12, 8}), g.placeholder("v3", {2, 3, 12, 6})); });
    CHECK(contains(e, "[2,4,10,8]"));
    CHECK(contains(e, "leading dim 1"));
    e = err([&] { scaled_dot_product_attention(q, k, v, {.mask = g.placeholder("m", {10, 11}, boolean)}); });
    CHECK(contains(e, "mask [10,11] does not broadcast to the scores [2,4,10,12]"));
    e = err([&] { scaled_dot_product_attention(q, k, v, {.mask = g.placeholder("m2", {10, 12}, int32)}); });
    CHECK(contains(e, "mask has dtype int32"));
    e = err([&] { scaled_dot_product_attention(q, k, v, {.dropout = 1.0}); });
    CHECK(contains(e, "dropout must be in [0, 1)"));
    e = err([&] { scaled_dot_product_attention(q, k, g.placeholder("v4", {2, 4, 12, 6}, float64)); });
    CHECK(contains(e, "one dtype"));
    e = err([&] { scaled_dot_product_attention(g.placeholder("q1", {8}), k, v); });
    CHECK(contains(e, "at least 2"));
    {
      auto s = g.scope("layer3");
      e = err([&] { scaled_dot_product_attention(q, k, g.placeholder("v5", {2, 4, 13, 6})); });
      CHECK(contains(e, "'layer3/attention'"));
    }
    // The composite names its failing op too.
    CHECK(!err([&] { composite::scaled_dot_product_attention(q, g.placeholder("k6", {2, 4, 12, 16}), v); }).empty());
  }
}
