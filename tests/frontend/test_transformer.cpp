// Attention and Transformer modules: PyTorch's parameter layout and names,
// the formulas (MultiheadAttention against attention written out with ops,
// pre- and post-norm layers), causality, training, and errors naming the
// module and the sizes.

#include <cmath>
#include <limits>

#include "frontend/loom.hpp"
#include "tests/util.hpp"

using namespace loom;
using loom::test::allclose;
using loom::test::contains;
using loom::test::error_of;

namespace {

std::vector<std::string> names_of(const std::vector<std::pair<std::string, Tensor>>& v) {
  std::vector<std::string> r;
  for (const auto& [n, t] : v) r.push_back(n);
  return r;
}

/// Multi-head attention written out with ops: x W^T + b, per-head softmax(q k^T / sqrt(hd) + mask) v, out_proj.
/// Attention of projected q [B, Tq, d] over k, v [B, Tk, d] per head, then the output projection.
Tensor reference_heads(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& wo, const Tensor& bo,
                       int64_t heads, bool causal) {
  const int64_t hd = q.shape().back() / heads;
  std::vector<Tensor> outs;
  for (int64_t h = 0; h < heads; ++h) {
    auto cols = [&](const Tensor& t) { return slice(t, {Slice::all(), Slice::all(), Slice::range(h * hd, (h + 1) * hd)}); };
    Tensor s = matmul(cols(q), transpose(cols(k))) / std::sqrt(double(hd));
    if (causal) {
      const int64_t t = s.shape()[1];
      NDArray mask = NDArray::zeros({t, t});
      for (int64_t i = 0; i < t; ++i)
        for (int64_t j = i + 1; j < t; ++j) mask.data<float>()[i * t + j] = -INFINITY;
      s = s + q.graph().constant(mask);
    }
    outs.push_back(matmul(composite::softmax(s, -1), cols(v)));
  }
  return matmul(concat(outs, -1), transpose(wo)) + bo;
}

Tensor reference_mha(const Tensor& x, const Tensor& kv, const nn::MultiheadAttention& m, int64_t heads, bool causal) {
  auto p = m.named_parameters();
  Tensor w = p[0].second, b = p[1].second, wo = p[2].second, bo = p[3].second;
  const int64_t d = x.shape().back();
  Tensor q = matmul(x, transpose(slice(w, {Slice::range(0, d)}))) + slice(b, {Slice::range(0, d)});
  Tensor k = matmul(kv, transpose(slice(w, {Slice::range(d, 2 * d)}))) + slice(b, {Slice::range(d, 2 * d)});
  Tensor v = matmul(kv, transpose(slice(w, {Slice::range(2 * d, 3 * d)}))) + slice(b, {Slice::range(2 * d, 3 * d)});
  return reference_heads(q, k, v, wo, bo, heads, causal);
}

/// reference_mha's per-head softmax, stacked: [B, heads, Tq, Tk].
Tensor reference_weights(const Tensor& x, const Tensor& kv, const nn::MultiheadAttention& m, int64_t heads) {
  auto p = m.named_parameters();
  Tensor w = p[0].second, b = p[1].second;
  const int64_t d = x.shape().back(), hd = d / heads;
  Tensor q = matmul(x, transpose(slice(w, {Slice::range(0, d)}))) + slice(b, {Slice::range(0, d)});
  Tensor k = matmul(kv, transpose(slice(w, {Slice::range(d, 2 * d)}))) + slice(b, {Slice::range(d, 2 * d)});
  std::vector<Tensor> per_head;
  for (int64_t h = 0; h < heads; ++h) {
    auto cols = [&](const Tensor& t) {
      return slice(t, {Slice::all(), Slice::all(), Slice::range(h * hd, (h + 1) * hd)});
    };
    per_head.push_back(composite::softmax(matmul(cols(q), transpose(cols(k))) / std::sqrt(double(hd)), -1));
  }
  return stack(per_head, 1);
}

}  // namespace

TEST_SUITE("frontend/transformer") {
  TEST_CASE("LayerNorm normalizes over the last dims; LayerNorm1d is the one-dim form") {
    Graph g;
    nn::LayerNorm ln(Shape{4, 6});
    Tensor x = g.placeholder("x", {-1, 4, 6});
    Tensor y = ln(x);
    Session s(g, {.threads = 1});
    NDArray out = s.run1(y, {{x, test::rand({3, 4, 6}, 5, float32, -4, 9)}});
    for (int r = 0; r < 3; ++r) {
      double m = 0, v = 0;
      for (int i = 0; i < 24; ++i) m += out.data<float>()[r * 24 + i] / 24;
      for (int i = 0; i < 24; ++i) v += std::pow(out.data<float>()[r * 24 + i] - m, 2) / 24;
      CHECK(std::fabs(m) < 1e-5);
      CHECK(v == doctest::Approx(1.0).epsilon(1e-3));
    }
    CHECK(ln.named_parameters()[0].second.shape() == Shape{4, 6});
    CHECK(contains(error_of([&] { nn::LayerNorm(Shape{4, 5})(x); }), "LayerNorm: expected [..., 4,5], got [?,4,6]"));
    nn::LayerNorm1d l1(6);
    CHECK(l1.type_name() == "LayerNorm1d");
    CHECK(l1.normalized_shape() == Shape{6});
    CHECK(contains(error_of([] { nn::LayerNorm(Shape{}); }), "at least one dim"));
    CHECK(nn::LayerNorm(6, {.bias = false}).describe() == "LayerNorm(6, eps=1e-05, affine, no bias)");
    CHECK(contains(error_of([] { nn::BatchNorm1d(6, {.bias = false}); }), "BatchNorm1d: has no bias option"));
  }

  TEST_CASE("LayerNorm is one layer_norm step forward and one layer_norm_grad step backward") {
    for (nn::NormOptions o : {nn::NormOptions{}, nn::NormOptions{.bias = false}, nn::NormOptions{.affine = false}}) {
      const bool affine = o.affine;
      CAPTURE(affine);
      CAPTURE(o.bias);
      Graph g;
      nn::LayerNorm ln(Shape{3, 10}, o);
      Tensor x = g.placeholder("x", {-1, 3, 10}, float64);
      Tensor y = ln(x);
      CHECK(ln.parameters().size() == size_t(affine) * (o.bias ? 2 : 1));
      NDArray w = test::rand({4, 3, 10}, 7, float64, -1, 1);
      Tensor loss = sum(y * g.constant(w));
      std::vector<Tensor> wrt{x};
      for (const Tensor& p : ln.parameters()) wrt.push_back(p);
      std::vector<Tensor> grads = gradients(loss, wrt);
      // The same formula in ordinary ops, with the module's variables.
      Tensor c = x - mean(x, {-2, -1}, true);
      Tensor ref = c / sqrt(mean(c * c, {-2, -1}, true) + 1e-5);
      if (affine) ref = ref * ln.parameters()[0];
      if (affine && o.bias) ref = ref + ln.parameters()[1];
      std::vector<Tensor> ref_grads = gradients(sum(ref * g.constant(w)), wrt);
      Session s(g, {.threads = 2});
      s.initialize();
      if (affine) s.set(ln.parameters()[0], test::rand({3, 10}, 8, float64, 0.5, 1.5));
      const Feeds feeds{{x, test::rand({4, 3, 10}, 9, float64, -3, 5)}};
      std::vector<Tensor> fetch{y, ref};
      for (size_t i = 0; i < grads.size(); ++i) fetch.insert(fetch.end(), {grads[i], ref_grads[i]});
      std::vector<NDArray> out = s.run(fetch, feeds);
      for (size_t i = 0; i < out.size(); i += 2) CHECK(test::allclose(out[i], out[i + 1], 1e-12, 1e-12));
      int forward = 0, backward = 0;
      for (const PlanInfo::Step& st : s.plan_info({y, grads[0]}, feeds).steps) {
        forward += st.op == "layer_norm";
        backward += st.op == "layer_norm_grad";
        CHECK(st.op != "mean");
      }
      CHECK(forward == 1);
      CHECK(backward == 1);
    }
  }

  TEST_CASE("layer_norm: an infinite value makes its row NaN; no values give NaN statistics (PyTorch's)") {
    const Attrs a{{"dims", int64_t(1)}, {"eps", 1e-5}};
    NDArray x = NDArray::from<float>({1, 2, INFINITY, 4, 1, 2, 3, 4}, {2, 4});
    std::vector<NDArray> out = invoke("layer_norm", {x}, a);
    CHECK(std::isinf(out[1].to_vector<double>()[0]));
    for (int j = 0; j < 4; ++j) CHECK(std::isnan(out[0].to_vector<double>()[size_t(j)]));
    for (int j = 4; j < 8; ++j) CHECK(std::isfinite(out[0].to_vector<double>()[size_t(j)]));  // the other row
    std::vector<NDArray> empty = invoke("layer_norm", {NDArray::zeros({3, 0})}, a);
    CHECK(empty[1].shape() == Shape{3});
    for (double v : empty[1].to_vector<double>()) CHECK(std::isnan(v));
    for (double v : empty[2].to_vector<double>()) CHECK(std::isnan(v));
  }

  TEST_CASE("layer_norm: mistakes name the node and what was expected") {
    Graph g;
    Tensor x = g.placeholder("x", {2, 3, 4});
    Tensor w = g.placeholder("w", {4}), b = g.placeholder("b", {4});
    CHECK(contains(error_of([&] { layer_norm(x, w, b, 2); }), "weight must be [3,4] for input [2,3,4], got [4]"));
    CHECK(contains(error_of([&] { layer_norm(x, {}, {}, 4); }), "expected an input of rank >= 4 (dims), got [2,3,4]"));
    CHECK(contains(error_of([&] { layer_norm(x, {}, {}, 0); }), "dims must be at least 1"));
    CHECK(contains(error_of([&] { layer_norm(x, {}, b, 1); }), "a bias needs a weight"));
    CHECK(contains(error_of([&] { layer_norm(x, {}, {}, 1, 0.0); }), "eps must be positive"));
    Tensor xi = g.placeholder("xi", {2, 4}, int32);
    CHECK(contains(error_of([&] { layer_norm(xi); }), "layer_norm 'layer_norm"));
    CHECK(contains(error_of([&] { layer_norm(xi); }), "dtype int32 not supported"));
    Tensor w64 = g.placeholder("w64", {4}, float64);
    CHECK(contains(error_of([&] { layer_norm(x, w64, b); }), "weight has dtype float64, expected float32"));
  }

  TEST_CASE("MultiheadAttention: PyTorch's parameters, and the formula") {
    for (bool causal : {false, true}) {
      CAPTURE(causal);
      Graph g;
      nn::MultiheadAttention mha(16, 4, {.causal = causal});
      Tensor x = g.placeholder("x", {2, 7, 16});
      Tensor y = mha(x);
      CHECK(y.shape() == Shape{2, 7, 16});
      CHECK(names_of(mha.named_parameters()) ==
            std::vector<std::string>{"in_proj_weight", "in_proj_bias", "out_proj/weight", "out_proj/bias"});
      // The state_dict has PyTorch's keys, '.' throughout (they had "out_proj/weight": no file matched).
      CHECK(names_of(mha.state_dict()) ==
            std::vector<std::string>{"in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"});
      CHECK(mha.named_parameters()[0].second.shape() == Shape{48, 16});
      CHECK(mha.named_parameters()[2].second.shape() == Shape{16, 16});
      Tensor want = reference_mha(x, x, mha, 4, causal);
      Session s(g, {.seed = 3});
      // Nonzero biases, so that the bias layout is checked too.
      s.set(mha.named_parameters()[1].second, test::rand({48}, 9));
      s.set(mha.named_parameters()[3].second, test::rand({16}, 10));
      auto r = s.run({y, want}, {{x, test::rand({2, 7, 16}, 4)}});
      CHECK(allclose(r[0], r[1], 1e-4, 1e-5));
    }
    // Cross-attention: queries from x, keys and values from another sequence.
    Graph g;
    nn::MultiheadAttention mha(8, 2);
    Tensor x = g.placeholder("x", {3, 5, 8}), mem = g.placeholder("mem", {3, 9, 8});
    Tensor y = mha(x, mem, mem);
    Tensor want = reference_mha(x, mem, mha, 2, false);
    Session s(g);
    auto r = s.run({y, want}, {{x, test::rand({3, 5, 8}, 1)}, {mem, test::rand({3, 9, 8}, 2)}});
    CHECK(allclose(r[0], r[1], 1e-4, 1e-5));
    // An empty key or value is an error, not the query in its place.
    CHECK(contains(error_of([&] { mha(x, mem, Tensor()); }), "key and value must be given (value is an empty"));
    CHECK(contains(error_of([&] { mha(x, Tensor(), Tensor()); }), "(key and value is an empty"));
  }

  TEST_CASE("MultiheadAttention with kdim and vdim: PyTorch's separate projections, and the formula") {
    Graph g;
    nn::MultiheadAttention mha(8, 2, {.kdim = 5, .vdim = 3});
    Tensor x = g.placeholder("x", {3, 4, 8}), key = g.placeholder("key", {3, 6, 5}),
           value = g.placeholder("value", {3, 6, 3});
    Tensor y = mha(x, key, value);
    CHECK(y.shape() == Shape{3, 4, 8});
    CHECK(names_of(mha.state_dict()) == std::vector<std::string>{"q_proj_weight", "k_proj_weight", "v_proj_weight",
                                                                 "in_proj_bias", "out_proj.weight", "out_proj.bias"});
    auto p = mha.named_parameters();
    CHECK(p[0].second.shape() == Shape{8, 8});
    CHECK(p[1].second.shape() == Shape{8, 5});
    CHECK(p[2].second.shape() == Shape{8, 3});
    CHECK(mha.describe() == "MultiheadAttention(8, heads=2, dropout=0, kdim=5, vdim=3, bias)");
    Tensor b = p[3].second;
    auto part = [&](int64_t i) { return slice(b, {Slice::range(8 * i, 8 * (i + 1))}); };
    Tensor want =
        reference_heads(matmul(x, transpose(p[0].second)) + part(0), matmul(key, transpose(p[1].second)) + part(1),
                        matmul(value, transpose(p[2].second)) + part(2), p[4].second, p[5].second, 2, false);
    Session s(g, {.seed = 5});
    s.set(b, test::rand({24}, 11));
    auto r = s.run({y, want},
                   {{x, test::rand({3, 4, 8}, 1)}, {key, test::rand({3, 6, 5}, 2)}, {value, test::rand({3, 6, 3}, 3)}});
    CHECK(allclose(r[0], r[1], 1e-4, 1e-5));
    CHECK(contains(error_of([&] { mha(x, x, value); }), "expected key [..., T, 5], got [3,4,8]"));
    CHECK(contains(error_of([&] { nn::MultiheadAttention(8, 2, {.kdim = -1}); }), "kdim and vdim must be >= 0"));
  }

  TEST_CASE("MultiheadAttention::with_weights: PyTorch's need_weights, averaged over heads or per head") {
    Graph g;
    nn::MultiheadAttention mha(8, 2);
    Tensor x = g.placeholder("x", {3, 5, 8}), mem = g.placeholder("mem", {3, 6, 8});
    Tensor pad = g.placeholder("pad", {3, 6}, boolean);
    auto [y, w] = mha.with_weights(x, mem, mem);
    auto [ym, wm] = mha.with_weights(x, mem, mem, nn::key_padding_mask(pad), false);
    Tensor plain = mha(x, mem, mem);
    CHECK(w.shape() == Shape{3, 5, 6});
    CHECK(wm.shape() == Shape{3, 2, 5, 6});
    Tensor want = reference_weights(x, mem, mha, 2);
    Session s(g, {.seed = 3});
    s.set(mha.named_parameters()[1].second, test::rand({24}, 9));
    NDArray pv = NDArray::zeros({3, 6}, boolean);
    for (int64_t b = 0; b < 3; ++b) pv.data<bool>()[b * 6 + 5] = true;  // the last key of each is padding
    auto r = s.run({y, w, plain, want, wm, mean(want, {1})},
                   {{x, test::rand({3, 5, 8}, 1)}, {mem, test::rand({3, 6, 8}, 2)}, {pad, pv}});
    CHECK(allclose(r[0], r[2], 0, 0));                                   // the output is the plain call's
    CHECK(allclose(r[1], r[5], 1e-5, 1e-6));                             // the average of the heads' softmax
    CHECK(!allclose(r[3].select(1, 0), r[3].select(1, 1), 1e-3, 1e-3));  // the heads differ
    for (int64_t i = 0; i < 3 * 2 * 5; ++i) {
      const float* row = r[4].data<float>() + i * 6;
      CHECK(row[5] == 0.0f);  // the padded key gets no weight
      double total = 0;
      for (int j = 0; j < 6; ++j) total += row[j];
      CHECK(total == doctest::Approx(1.0).epsilon(1e-6));
    }
    // A causal module's weights are zero above the diagonal.
    auto scope = g.scope("causal");
    nn::MultiheadAttention causal(8, 2, {.causal = true});
    Tensor wc = causal.with_weights(x, x, x).second;
    Session s2(g, {.seed = 4});
    const NDArray c = s2.run1(wc, {{x, test::rand({3, 5, 8}, 1)}});
    for (int64_t i = 0; i < 5; ++i)
      for (int64_t j = i + 1; j < 5; ++j) CHECK(c.at({1, i, j}) == 0.0);
  }

  TEST_CASE("MultiheadAttention::with_weights in training mode: the weights after dropout, those the output used") {
    Graph g;
    nn::MultiheadAttention mha(8, 2, {.dropout = 0.5});
    Tensor x = g.placeholder("x", {3, 5, 8}), mem = g.placeholder("mem", {3, 6, 8});
    auto [y, w] = mha.with_weights(x, mem, mem, {}, false);
    // The output from these weights: per head w_h (mem W_v^T + b_v)_h, heads merged, then out_proj.
    auto p = mha.named_parameters();
    Tensor v =
        matmul(mem, transpose(slice(p[0].second, {Slice::range(16, 24)}))) + slice(p[1].second, {Slice::range(16, 24)});
    Tensor heads = matmul(w, permute(reshape(v, {3, 6, 2, 4}), {0, 2, 1, 3}));
    Tensor want = matmul(reshape(permute(heads, {0, 2, 1, 3}), {3, 5, 8}), transpose(p[2].second)) + p[3].second;
    Session s(g, {.seed = 3});
    s.set(p[1].second, test::rand({24}, 9));
    auto r = s.run({y, w, want}, {{x, test::rand({3, 5, 8}, 1)}, {mem, test::rand({3, 6, 8}, 2)}});
    CHECK(allclose(r[0], r[2], 1e-5, 1e-6));
    int dropped = 0;
    for (float e : r[1].to_vector<float>()) dropped += e == 0.0f;
    CHECK(dropped > 20);  // of 180 weights, about half
    CHECK(dropped < 160);
  }

  TEST_CASE("PyTorch's initialization: xavier in_proj, zero biases, U(+-1/sqrt(d)) out_proj") {
    Graph g;
    nn::MultiheadAttention mha(64, 4);
    mha(g.placeholder("x", {1, 3, 64}));
    Session s(g, {.seed = 1});
    auto p = mha.named_parameters();
    NDArray w = s.get(p[0].second), b = s.get(p[1].second), wo = s.get(p[2].second);
    const double xavier = std::sqrt(6.0 / (64 + 192)), lin = 1.0 / 8;
    double wmax = 0, womax = 0;
    for (float f : w.to_vector<float>()) wmax = std::max(wmax, double(std::fabs(f)));
    for (float f : wo.to_vector<float>()) womax = std::max(womax, double(std::fabs(f)));
    CHECK(wmax <= xavier);
    CHECK(wmax > 0.9 * xavier);
    CHECK(womax <= lin);
    CHECK(womax > 0.9 * lin);
    for (float f : b.to_vector<float>()) CHECK(f == 0.0f);
  }

  TEST_CASE("TransformerLayer: PyTorch's names; pre-norm and post-norm formulas") {
    for (bool pre : {false, true})
      for (nn::Activation act : {nn::Activation::relu, nn::Activation::gelu}) {
        CAPTURE(pre);
        Graph g;
        nn::TransformerLayer layer(16, 2, {.ffn = 32, .dropout = 0.1, .activation = act, .norm_first = pre});
        layer.eval();
        Tensor x = g.placeholder("x", {2, 5, 16});
        Tensor y = layer(x);
        CHECK(names_of(layer.named_parameters()) ==
              std::vector<std::string>{"self_attn/in_proj_weight", "self_attn/in_proj_bias", "self_attn/out_proj/weight",
                                       "self_attn/out_proj/bias", "linear1/weight", "linear1/bias", "linear2/weight",
                                       "linear2/bias", "norm1/weight", "norm1/bias", "norm2/weight", "norm2/bias"});
        CHECK(names_of(layer.state_dict())[3] == "self_attn.out_proj.bias");  // nn.TransformerEncoderLayer's key
        // The same layer written out with its own children (eval mode: no dropout).
        auto& attn = static_cast<nn::MultiheadAttention&>(*layer.children()[0].second);
        auto& l1 = *layer.children()[1].second;
        auto& l2 = *layer.children()[2].second;
        auto& n1 = *layer.children()[3].second;
        auto& n2 = *layer.children()[4].second;
        auto ff = [&](const Tensor& h) {
          Tensor a = l1(h);
          return l2(act == nn::Activation::relu ? relu(a) : nn::gelu(a));
        };
        Tensor want;
        if (pre) {
          Tensor h = x + attn(n1(x));
          want = h + ff(n2(h));
        } else {
          Tensor h = n1(x + attn(x));
          want = n2(h + ff(h));
        }
        Session s(g, {.seed = 2});
        auto r = s.run({y, want}, {{x, test::rand({2, 5, 16}, 3)}});
        CHECK(allclose(r[0], r[1], 1e-5, 1e-6));
      }
  }

  TEST_CASE("TransformerLayer without bias: no bias in the projections, the feed-forward or the norms (PyTorch's)") {
    Graph g;
    nn::TransformerLayer layer(16, 2, {.ffn = 32, .bias = false});
    layer(g.placeholder("x", {2, 5, 16}));
    CHECK(names_of(layer.named_parameters()) ==
          std::vector<std::string>{"self_attn/in_proj_weight", "self_attn/out_proj/weight", "linear1/weight",
                                   "linear2/weight", "norm1/weight", "norm2/weight"});
  }

  TEST_CASE("GELU matches x Phi(x) and the tanh form") {
    Graph g;
    NDArray xs = NDArray::from<double>({-6, -3, -1, -0.5, 0, 0.3, 1, 2.5, 6});
    Tensor x = g.constant(xs);
    Session s(g);
    auto r = s.run({nn::gelu(x), nn::gelu(x, true)});
    for (int64_t i = 0; i < xs.numel(); ++i) {
      const double v = xs.data<double>()[i];
      const double exact = 0.5 * v * (1 + std::erf(v / std::sqrt(2.0)));
      const double approx = 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
      CHECK(r[0].data<double>()[i] == doctest::Approx(exact).epsilon(1e-6));
      CHECK(std::fabs(r[0].data<double>()[i] - exact) < 1e-6);
      CHECK(std::fabs(r[1].data<double>()[i] - approx) < 1e-12);
    }
  }

  TEST_CASE("causal layers: an output never depends on later positions") {
    Graph g;
    nn::Transformer tf(2, 16, 4, {.ffn = 32, .dropout = 0.0, .causal = true, .norm_first = true});
    Tensor x = g.placeholder("x", {1, 9, 16});
    Tensor y = tf(x);
    Session s(g);
    NDArray a = test::rand({1, 9, 16}, 1), b = a.clone();
    NDArray delta = test::rand({1, 9, 16}, 2);  // not a constant shift: LayerNorm would cancel it
    for (int64_t j = 16 * 6; j < b.numel(); ++j) b.data<float>()[j] += delta.data<float>()[j];  // positions 6..8
    NDArray ya = s.run1(y, {{x, a}}), yb = s.run1(y, {{x, b}});
    for (int64_t i = 0; i < 9 * 16; ++i) {
      if (i < 6 * 16) CHECK(ya.data<float>()[i] == yb.data<float>()[i]);
    }
    CHECK(ya.data<float>()[8 * 16] != yb.data<float>()[8 * 16]);
  }

  TEST_CASE("TransformerDecoderLayer and TransformerDecoder: PyTorch's names and formula, causal, memory masks") {
    for (bool pre : {false, true}) {
      CAPTURE(pre);
      Graph g;
      nn::TransformerDecoder dec(2, 8, 2, {.ffn = 16, .dropout = 0.0, .causal = true, .norm_first = pre});
      Tensor t = g.placeholder("t", {2, 5, 8}), m = g.placeholder("m", {2, 7, 8});
      Tensor pad = g.placeholder("pad", {2, 7}, boolean);
      Tensor y = dec(t, m), ym = dec(t, m, {}, nn::key_padding_mask(pad));
      CHECK(y.shape() == Shape{2, 5, 8});
      const auto names = names_of(dec.state_dict());
      CHECK(names.size() == 2 * 18 + (pre ? 2 : 0));  // nn.TransformerDecoder's keys, the final norm's with pre-norm
      CHECK(names[4] == "layers.0.multihead_attn.in_proj_weight");
      CHECK(names[17] == "layers.0.norm3.bias");
      // Layer 0 written out with its children (eval has no dropout to differ): post- or pre-norm.
      auto& layer = static_cast<nn::TransformerDecoderLayer&>(*dec.children()[0].second->children()[0].second);
      auto child = [&](size_t i) -> nn::Module& { return *layer.children()[i].second; };
      auto& sa = static_cast<nn::MultiheadAttention&>(child(0));
      auto& ca = static_cast<nn::MultiheadAttention&>(child(1));
      auto ff = [&](const Tensor& h) { return child(3)(relu(child(2)(h))); };
      Tensor want;
      {
        auto scope = g.scope("layers");
        auto scope0 = g.scope("0");
        if (pre) {
          Tensor h = t;
          {
            auto s1 = g.scope("self_attn");
            Tensor n1 = child(4)(h);
            h = h + sa(n1, n1, n1);
          }
          {
            auto s2 = g.scope("multihead_attn");
            h = h + ca(child(5)(h), m, m);
          }
          want = h + ff(child(6)(h));
        } else {
          Tensor h;
          {
            auto s1 = g.scope("self_attn");
            h = child(4)(t + sa(t, t, t));
          }
          {
            auto s2 = g.scope("multihead_attn");
            h = child(5)(h + ca(h, m, m));
          }
          want = child(6)(h + ff(h));
        }
      }
      Tensor got = layer(t, m);
      Tensor dm = gradients(sum(y * y), {m})[0];
      Session s(g, {.seed = 5});
      const NDArray tv = test::rand({2, 5, 8}, 1), mv = test::rand({2, 7, 8}, 2);
      NDArray pv = NDArray::zeros({2, 7}, boolean);
      auto r = s.run({want, got, y, dm}, {{t, tv}, {m, mv}});
      CHECK(allclose(r[0], r[1], 1e-5, 1e-6));
      CHECK(r[3].shape() == Shape{2, 7, 8});  // the memory gets a gradient
      // No padding in the memory mask is no mask.
      CHECK(allclose(s.run1(ym, {{t, tv}, {m, mv}, {pad, pv}}), r[2], 1e-6, 1e-6));
      // Causal self-attention: the output at position 1 ignores later targets; the memory is seen whole.
      NDArray tb = tv.clone();
      for (int64_t j = 3 * 8; j < 5 * 8; ++j) tb.data<float>()[j] += 1.0f + float(j % 3);
      const NDArray yb = s.run1(y, {{t, tb}, {m, mv}});
      for (int64_t j = 0; j < 2 * 8; ++j) CHECK(yb.data<float>()[j] == r[2].data<float>()[j]);
    }
    Graph g;
    nn::TransformerDecoderLayer layer(8, 2, {.ffn = 8});
    Tensor t = g.placeholder("t", {2, 5, 8});
    CHECK(contains(error_of([&] { layer(t); }), "call it as layer(tgt, memory)"));
    CHECK(contains(error_of([&] {
                     layer(t, g.placeholder("m", {2, 7, 6}));
                   }),
                   "expected memory [..., T, 8], got [2,7,6]"));
  }

  TEST_CASE("Transformer: names as nn.TransformerEncoder, masks per call, and it trains") {
    Graph g;
    nn::Transformer tf(2, 16, 2, {.ffn = 32, .dropout = 0.0, .norm_first = true});
    Tensor x = g.placeholder("x", {4, 6, 16});
    Tensor y = tf(x);
    auto names = names_of(tf.named_parameters());
    CHECK(names.size() == 2 * 12 + 2);
    CHECK(names.front() == "layers/0/self_attn/in_proj_weight");
    CHECK(names[12] == "layers/1/self_attn/in_proj_weight");
    CHECK(names.back() == "norm/bias");
    CHECK(contains(tf.str(), "(layers): Sequential\n    (0): TransformerLayer(16, heads=2, ffn=32"));
    // A key-padding mask per call: the last two keys of every sequence ignored.
    NDArray pad = NDArray::empty({4, 1, 1, 6}, boolean);
    for (int64_t i = 0; i < 24; ++i) pad.data<bool>()[i] = i % 6 < 4;
    Tensor masked = tf(x, g.constant(pad));
    // Training: predict the sum over the sequence of the inputs (needs attention).
    Tensor target = broadcast_to(sum(x, {1}, true), {4, 6, 16});
    Tensor loss = mean(pow(y - target * 0.1, 2.0));
    optim::Adam opt(tf, {.lr = 3e-3});
    Tensor step = opt.minimize(loss);
    Session s(g, {.seed = 1});
    NDArray data = test::rand({4, 6, 16}, 2);
    const double first = s.run1(loss, {{x, data}}).item();
    for (int i = 0; i < 60; ++i) s.run({}, {{x, data}}, {step});
    const double last = s.run1(loss, {{x, data}}).item();
    CHECK(last < 0.5 * first);
    // Changing the masked positions changes nothing in the masked model's output... of unmasked
    // queries' dependence on those keys: compare with the inputs' last two positions altered.
    NDArray d2 = data.clone();
    for (int64_t b = 0; b < 4; ++b)
      for (int64_t j = 4 * 16; j < 6 * 16; ++j) d2.data<float>()[b * 96 + j] += 3.0f * float(j % 7);
    NDArray m1 = s.run1(masked, {{x, data}}), m2 = s.run1(masked, {{x, d2}});
    for (int64_t b = 0; b < 4; ++b)
      for (int64_t j = 0; j < 4 * 16; ++j) CHECK(m1.data<float>()[b * 96 + j] == doctest::Approx(m2.data<float>()[b * 96 + j]));
  }

  TEST_CASE("positional embeddings add a learned row per position") {
    Graph g;
    nn::PositionalEmbedding pos(10, 8);
    Tensor x = g.placeholder("x", {-1, 7, 8});
    Tensor y = pos(x);
    Session s(g, {.seed = 4});
    NDArray in = test::rand({2, 7, 8}, 1);
    NDArray out = s.run1(y, {{x, in}});
    NDArray w = s.get(pos.named_parameters()[0].second);
    CHECK(pos.named_parameters()[0].first == "weight");
    CHECK(w.shape() == Shape{10, 8});
    for (int64_t b = 0; b < 2; ++b)
      for (int64_t i = 0; i < 56; ++i)
        CHECK(out.data<float>()[b * 56 + i] == doctest::Approx(in.data<float>()[b * 56 + i] + w.data<float>()[i]));
  }

  TEST_CASE("bad configurations and inputs raise loom::Error naming the module and the sizes") {
    CHECK(contains(error_of([] { nn::MultiheadAttention(250, 4); }), "heads (4) must divide d_model (250)"));
    CHECK(contains(error_of([] { nn::TransformerLayer(30, 4); }), "heads (4) must divide d_model (30)"));
    CHECK(contains(error_of([] { nn::Transformer(0, 16, 2); }), "at least one layer"));
    Graph g;
    Tensor x = g.placeholder("x", {2, 300, 16});
    {
      auto sc = g.scope("pos");
      CHECK(contains(error_of([&] { nn::PositionalEmbedding(256, 16)(x); }),
                     "PositionalEmbedding 'pos': sequence length 300 exceeds the table's 256 positions"));
    }
    nn::Sequential model{nn::MultiheadAttention(16, 2)};
    Tensor bad_mask = g.placeholder("m", {300, 299}, boolean);
    auto& mha = static_cast<nn::MultiheadAttention&>(model[0]);
    {
      auto sc = g.scope("enc");
      std::string e = error_of([&] { mha(x, x, x, bad_mask); });
      CHECK(contains(e, "MultiheadAttention 'enc/0'"));
      CHECK(contains(e, "mask [300,299] does not broadcast to the attention scores [2,2,300,300]"));
    }
    CHECK(contains(error_of([&] { nn::MultiheadAttention(16, 2)(g.placeholder("y", {2, 5, 12})); }),
                   "expected query [..., T, 16], got [2,5,12]"));
    // Key and value in the user's shapes, not the heads' (PyTorch: "key shape ... does not match value shape").
    Tensor q = g.placeholder("q", {2, 5, 16}), k3 = g.placeholder("k3", {3, 6, 16});
    Tensor k4 = g.placeholder("k4", {2, 4, 16}), v6 = g.placeholder("v6", {2, 6, 16});
    CHECK(contains(error_of([&] { mha(q, k3, k3); }),
                   "key [3,6,16] and value [3,6,16] must be [..., Tk, d] with the "
                   "query [2,5,16]'s batch dims and one length Tk"));
    CHECK(contains(error_of([&] { mha(q, k4, v6); }), "key [2,4,16] and value [2,6,16] must be"));
  }

  TEST_CASE("attention and Transformer layers take a batch and a length both unknown until run") {
    Graph g;
    Tensor x = g.placeholder("x", {-1, -1, 8});
    nn::TransformerLayer layer(8, 2, {.ffn = 12, .dropout = 0.0});
    nn::MultiheadAttention mha(8, 2);
    Tensor y = layer(x), a = mha(x);
    CHECK(y.shape() == Shape{-1, -1, 8});
    Tensor dx = gradients(sum(y * y) + sum(a), {x})[0];
    // The same modules (the same variables) on known shapes are the reference.
    Tensor xs = g.placeholder("xs", {2, 5, 8}), xt = g.placeholder("xt", {3, 2, 8});
    Tensor ys = layer(xs), yt = layer(xt), as = mha(xs);
    Session s(g, {.seed = 1});
    const NDArray v = test::rand({2, 5, 8}, 5), w = test::rand({3, 2, 8}, 6);
    const auto r = s.run({y, a, dx, ys, as}, {{x, v}, {xs, v}});
    CHECK(r[2].shape() == Shape{2, 5, 8});
    CHECK(allclose(r[0], r[3], 1e-6, 1e-6));
    CHECK(allclose(r[1], r[4], 1e-6, 1e-6));
    const auto r2 = s.run({y, yt}, {{x, w}, {xt, w}});
    CHECK(allclose(r2[0], r2[1], 1e-6, 1e-6));
  }

  TEST_CASE("key_padding_mask: padded keys are as if absent, for attention and layers (PyTorch's key_padding_mask)") {
    // Batch 0 is whole (6 tokens), batch 1 has 4 tokens and 2 of padding.
    Graph g;
    nn::MultiheadAttention mha(8, 2);
    nn::TransformerLayer layer(8, 2, {.ffn = 12, .dropout = 0.0});
    Tensor x = g.placeholder("x", {2, 6, 8}), pad = g.placeholder("pad", {2, 6}, boolean);
    Tensor fpad = g.placeholder("fpad", {-1, 6});
    Tensor y = mha(x, x, x, nn::key_padding_mask(pad)), yf = mha(x, x, x, nn::key_padding_mask(fpad));
    Tensor z = layer(x, nn::key_padding_mask(pad));
    CHECK(nn::key_padding_mask(pad).shape() == Shape{2, 1, 1, 6});
    // The references: batch 0 unmasked; batch 1's queries over its 4 tokens only.
    Tensor x0 = g.placeholder("x0", {1, 6, 8}), x1 = g.placeholder("x1", {1, 6, 8}),
           k1 = g.placeholder("k1", {1, 4, 8});
    Tensor y0 = mha(x0), y1 = mha(x1, k1, k1), z1 = layer(k1);
    Session s(g, {.seed = 2});
    const NDArray v = test::rand({2, 6, 8}, 7);
    const NDArray p =
        NDArray::from<bool>({false, false, false, false, false, false, false, false, false, false, true, true})
            .reshape({2, 6});
    const double inf = std::numeric_limits<double>::infinity();
    const NDArray fp = NDArray::from<float>({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, float(-inf), float(-inf)}).reshape({2, 6});
    const NDArray b1 = v.select(0, 1).reshape({1, 6, 8}).clone();
    const auto r = s.run({y, yf, z, y0, y1, z1}, {{x, v},
                                                  {pad, p},
                                                  {fpad, fp},
                                                  {x0, v.select(0, 0).reshape({1, 6, 8}).clone()},
                                                  {x1, b1},
                                                  {k1, b1.slice({Slice::all(), Slice::range(0, 4)}).clone()}});
    CHECK(allclose(r[0].select(0, 0), r[3].select(0, 0), 1e-5, 1e-6));
    CHECK(allclose(r[0].select(0, 1), r[4].select(0, 0), 1e-5, 1e-6));
    CHECK(allclose(r[1], r[0], 1e-5, 1e-6));  // a float mask of -inf is the same
    // The layer's outputs at batch 1's 4 tokens are those of the layer on the 4 tokens alone.
    CHECK(allclose(r[2].select(0, 1).slice({Slice::range(0, 4)}).clone(), r[5].select(0, 0), 1e-5, 1e-6));
    CHECK(
        contains(error_of([&] { nn::key_padding_mask(g.placeholder("lens", {2}, int64)); }),
                 "key_padding_mask: 'lens' must be bool (true = padding) or floating, [B, Tk] or [Tk]; got int64[2]"));
  }

  TEST_CASE("a float64 TransformerLayer: .dtype for its feed-forward, attention and norms follow the input") {
    Graph g;
    Tensor x = g.placeholder("x", {2, 5, 8}, float64);
    nn::Transformer model(2, 8, 2, {.ffn = 12, .dropout = 0.0, .dtype = float64});
    Tensor y = model(x);
    CHECK(y.dtype() == float64);
    for (const auto& p : model.named_parameters()) {
      CAPTURE(p.first);
      CHECK(p.second.dtype() == float64);
    }
    CHECK(contains(error_of([&] { nn::TransformerLayer(8, 2)(x); }), "expected float32 input, got float64"));
  }
}

TEST_SUITE("frontend/mha_extra") {
  TEST_CASE("MultiheadAttention add_bias_kv and add_zero_attn equal PyTorch's (outputs, weights, padding mask)") {
    // Literal PyTorch 2.15 outputs (float64, batch_first): parameter k (state_dict order) element j is
    // 0.5 sin(0.7 j + 1.3 k + 0.1); x [2, 3, 4] element i cos(0.37 i); memory [2, 5, 4] element i sin(0.29 i + 0.4).
    // clang-format off
#include "tests/frontend/mha_extra_tables.inc"
    // clang-format on
    auto arr = [](const Shape& s, const std::function<double(double)>& f) {
      std::vector<double> v(size_t(numel(s)));
      for (size_t i = 0; i < v.size(); ++i) v[i] = f(double(i));
      return NDArray::from<double>(v, s);
    };
    for (bool both : {true, false}) {
      CAPTURE(both);
      Graph g;
      nn::MultiheadAttention mha(4, 2, {.add_bias_kv = both, .add_zero_attn = true});
      Tensor x = g.placeholder("x", {-1, 3, 4}, float64), mem = g.placeholder("mem", {-1, 5, 4}, float64);
      Tensor pad = g.placeholder("pad", {-1, 3}, boolean);
      auto [y, w] = both ? mha.with_weights(x, x, x, nn::key_padding_mask(pad)) : mha.with_weights(x, mem, mem);
      CHECK(mha.describe() == std::string("MultiheadAttention(4, heads=2, dropout=0") + (both ? ", add_bias_kv" : "") +
                                  ", add_zero_attn, bias)");
      Session s(g);
      std::vector<std::string> names;
      int64_t k = 0;
      for (auto& [name, p] : mha.named_parameters()) {
        names.push_back(name);
        s.set(p, arr(p.shape(), [&](double j) { return 0.5 * std::sin(0.7 * j + 1.3 * double(k) + 0.1); }));
        ++k;
      }
      if (both)
        CHECK(names == std::vector<std::string>{"in_proj_weight", "in_proj_bias", "bias_k", "bias_v", "out_proj/weight",
                                                "out_proj/bias"});
      const std::vector<NDArray> out =
          s.run({y, w}, {{x, arr({2, 3, 4}, [](double i) { return std::cos(0.37 * i); })},
                         {mem, arr({2, 5, 4}, [](double i) { return std::sin(0.29 * i + 0.4); })},
                         {pad, NDArray::from<bool>({false, false, true, false, false, false}, {2, 3})}});
      const std::vector<double>& want_y = both ? kMhaBothY : kMhaZeroY;
      const std::vector<double>& want_w = both ? kMhaBothW : kMhaZeroW;
      REQUIRE(out[1].shape() == Shape{2, 3, both ? 5 : 6});
      const std::vector<double> gy = out[0].to_vector<double>(), gw = out[1].to_vector<double>();
      for (size_t i = 0; i < gy.size(); ++i) CHECK(gy[i] == doctest::Approx(want_y[i]).epsilon(1e-13));
      for (size_t i = 0; i < gw.size(); ++i) CHECK(gw[i] == doctest::Approx(want_w[i]).epsilon(1e-13));
    }
    CHECK(contains(error_of([] { nn::MultiheadAttention(4, 2, {.causal = true, .add_zero_attn = true}); }),
                   "give the causal mask explicitly"));
  }
}
