// Sequence models: parameter names and shapes (PyTorch's), outputs against a
// plain host recurrence, float64 numeric gradients through unrolled steps
// (inputs, initial states and every weight), truncated BPTT with the state
// in variables, Embedding (scatter-add gradient, padding_idx, bad ids), the
// language model, and the errors users see.

#include <cmath>
#include <functional>
#include <map>

// util.hpp (and core/philox.hpp in it) before ops/ops.hpp: philox must see the C math functions.
#include "tests/util.hpp"

#include "frontend/checkpoint.hpp"
#include "frontend/data.hpp"
#include "frontend/optim.hpp"
#include "frontend/rnn.hpp"
#include "ops/check.hpp"

using namespace loom;
using loom::test::contains;
using loom::test::error_of;
using loom::test::rand;

namespace {

// ---------------------------------------------------------------- host reference recurrence

double sigm(double x) { return 1.0 / (1.0 + std::exp(-x)); }

struct HostLayer {
  std::vector<double> wih, whh, bih, bhh;  // PyTorch layout, row-major
  int64_t G = 1, H = 0, D = 0;
};

std::vector<double> values(const NDArray& a) { return a.astype(float64).compact().to_vector<double>(); }

/// W v for W [rows, cols] row-major.
std::vector<double> matvec(const std::vector<double>& w, const double* v, int64_t rows, int64_t cols) {
  std::vector<double> out(size_t(rows), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) out[size_t(r)] += w[size_t(r * cols + c)] * v[c];
  return out;
}

/// One step for one batch row: h, c updated in place.
void host_step(nn::CellKind kind, nn::Activation act, const HostLayer& L, const double* x, std::vector<double>& h,
               std::vector<double>& c) {
  const int64_t H = L.H, GH = L.G * H;
  std::vector<double> gi = matvec(L.wih, x, GH, L.D), gh = matvec(L.whh, h.data(), GH, H);
  for (int64_t k = 0; k < GH; ++k) {
    gi[size_t(k)] += L.bih.empty() ? 0.0 : L.bih[size_t(k)];
    gh[size_t(k)] += L.bhh.empty() ? 0.0 : L.bhh[size_t(k)];
  }
  for (int64_t j = 0; j < H; ++j) {
    auto J = size_t(j), uH = size_t(H);
    if (kind == nn::CellKind::rnn) {
      double p = gi[J] + gh[J];
      h[J] = act == nn::Activation::relu ? std::max(0.0, p) : std::tanh(p);
    } else if (kind == nn::CellKind::lstm) {
      double i = sigm(gi[J] + gh[J]), f = sigm(gi[uH + J] + gh[uH + J]);
      double g = std::tanh(gi[2 * uH + J] + gh[2 * uH + J]), o = sigm(gi[3 * uH + J] + gh[3 * uH + J]);
      c[J] = f * c[J] + i * g;
      h[J] = o * std::tanh(c[J]);
    }
  }
  if (kind == nn::CellKind::gru) {
    std::vector<double> hn(h.size());
    for (int64_t j = 0; j < H; ++j) {
      auto J = size_t(j), uH = size_t(H);
      double r = sigm(gi[J] + gh[J]), z = sigm(gi[uH + J] + gh[uH + J]);
      double n = std::tanh(gi[2 * uH + J] + r * gh[2 * uH + J]);
      hn[J] = (1 - z) * n + z * h[J];
    }
    h = hn;
  }
}

struct HostResult {
  std::vector<double> out;  // [T, N, H]
  std::vector<double> hn, cn;  // [L, N, H]
};

/// The multi-layer recurrence on the host: x [T, N, D], h0/c0 [L, N, H] (empty: zeros).
HostResult host_rnn(nn::CellKind kind, nn::Activation act, const std::vector<HostLayer>& layers,
                    const std::vector<double>& x, int64_t T, int64_t N, const std::vector<double>& h0,
                    const std::vector<double>& c0) {
  const int64_t H = layers[0].H;
  std::vector<double> in = x;
  HostResult r;
  for (size_t l = 0; l < layers.size(); ++l) {
    const int64_t D = layers[l].D;
    std::vector<double> out(size_t(T * N * H));
    for (int64_t n = 0; n < N; ++n) {
      std::vector<double> h(size_t(H), 0.0), c(size_t(H), 0.0);
      for (int64_t j = 0; j < H; ++j) {
        size_t at = size_t((int64_t(l) * N + n) * H + j);
        if (!h0.empty()) h[size_t(j)] = h0[at];
        if (!c0.empty()) c[size_t(j)] = c0[at];
      }
      for (int64_t t = 0; t < T; ++t) {
        host_step(kind, act, layers[l], &in[size_t((t * N + n) * D)], h, c);
        std::copy(h.begin(), h.end(), out.begin() + (t * N + n) * H);
      }
      r.hn.insert(r.hn.end(), h.begin(), h.end());
      r.cn.insert(r.cn.end(), c.begin(), c.end());
    }
    in = out;
  }
  // hn/cn were appended layer by layer, row by row: [L, N, H].
  r.out = in;
  return r;
}

/// Layer `suffix` ("_l0", ...; "" for a cell) of module m, read from the session.
HostLayer host_layer(Session& s, const nn::Module& m, const std::string& suffix, int64_t G, int64_t H, int64_t D) {
  std::map<std::string, Tensor> p;
  for (auto& [n, t] : m.named_parameters()) p[n] = t;
  HostLayer h;
  h.G = G, h.H = H, h.D = D;
  h.wih = values(s.get(p.at("weight_ih" + suffix)));
  h.whh = values(s.get(p.at("weight_hh" + suffix)));
  if (p.count("bias_ih" + suffix))
    h.bih = values(s.get(p.at("bias_ih" + suffix))), h.bhh = values(s.get(p.at("bias_hh" + suffix)));
  return h;
}

std::vector<HostLayer> host_layers(Session& s, const nn::Module& m, int64_t L, int64_t G, int64_t H, int64_t D) {
  std::vector<HostLayer> out;
  for (int64_t l = 0; l < L; ++l) out.push_back(host_layer(s, m, "_l" + std::to_string(l), G, H, l == 0 ? D : H));
  return out;
}

double max_diff(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

int64_t gates(nn::CellKind k) { return k == nn::CellKind::lstm ? 4 : k == nn::CellKind::gru ? 3 : 1; }

std::unique_ptr<nn::RNNBase> make_rnn(nn::CellKind kind, int64_t D, int64_t H, nn::RNNOptions o) {
  if (kind == nn::CellKind::lstm) return std::make_unique<nn::LSTM>(D, H, o);
  if (kind == nn::CellKind::gru) return std::make_unique<nn::GRU>(D, H, o);
  return std::make_unique<nn::RNN>(D, H, o);
}

// ---------------------------------------------------------------- numeric gradients

/// Compares gradients() of `loss` with central differences (float64) for
/// every element of every variable in `vars` and every placeholder in `feeds`.
void check_numeric_gradients(Graph& g, const Tensor& loss, const std::vector<Tensor>& vars, Feeds feeds,
                             double tol = 1e-6) {
  std::vector<Tensor> wrt = vars;
  for (auto& [t, v] : feeds) wrt.push_back(t);
  std::vector<Tensor> grads = gradients(loss, wrt);
  Session s(g, {.threads = 1, .seed = 5});
  std::vector<NDArray> sym = s.run(grads, feeds);
  auto eval = [&] { return s.run({loss}, feeds)[0].item(); };
  const double h = 1e-6;
  for (size_t k = 0; k < wrt.size(); ++k) {
    CAPTURE(wrt[k].name());
    const bool is_var = k < vars.size();
    NDArray v = is_var ? s.get(wrt[k]) : feeds[k - vars.size()].second;
    REQUIRE(v.dtype() == float64);
    double* p = v.data<double>();
    double worst = 0;
    for (int64_t i = 0; i < v.numel(); ++i) {
      const double old = p[i];
      auto at = [&](double value) {
        p[i] = value;
        if (is_var) s.set(wrt[k], v);
        return eval();
      };
      const double numeric = (at(old + h) - at(old - h)) / (2 * h);
      at(old);
      const double symbolic = sym[k].data<double>()[i];
      worst = std::max(worst, std::fabs(numeric - symbolic) / std::max(1.0, std::fabs(numeric)));
    }
    CHECK(worst < tol);
  }
}

/// sum(y * w) with fixed weights, so every output element matters differently.
Tensor weighted_sum(const Tensor& y, uint64_t seed) {
  NDArray w = rand(y.shape(), seed, y.dtype(), 0.5, 1.5);
  return sum(y * y.graph().constant(w));
}

}  // namespace

TEST_SUITE("frontend/rnn") {
  TEST_CASE("parameter names and shapes follow PyTorch's state_dict") {
    Graph g;
    nn::LSTM lstm(10, 20, {.num_layers = 2});
    Tensor x = g.placeholder("x", {5, -1, 10});
    Tensor y = lstm(x);
    CHECK(y.shape() == Shape{5, -1, 20});
    std::vector<std::pair<std::string, Shape>> want = {
        {"weight_ih_l0", {80, 10}}, {"weight_hh_l0", {80, 20}}, {"bias_ih_l0", {80}}, {"bias_hh_l0", {80}},
        {"weight_ih_l1", {80, 20}}, {"weight_hh_l1", {80, 20}}, {"bias_ih_l1", {80}}, {"bias_hh_l1", {80}}};
    auto named = lstm.named_parameters();
    REQUIRE(named.size() == want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      CHECK(named[i].first == want[i].first);
      CHECK(named[i].second.shape() == want[i].second);
    }
    nn::GRU gru(4, 6, {.bias = false});
    Tensor x4 = g.placeholder("x4", {3, 2, 4});
    {
      auto s = g.scope("gru");
      gru(x4);
    }
    CHECK(gru.named_parameters().size() == 2);
    CHECK(gru.named_parameters()[0].second.name() == "gru/weight_ih_l0");
    CHECK(gru.named_parameters()[0].second.shape() == Shape{18, 4});
    nn::LSTMCell cell(4, 3);
    Tensor x2 = g.placeholder("x2", {2, 4});
    {
      auto s = g.scope("cell");
      cell(x2);
    }
    CHECK(cell.named_parameters()[0].first == "weight_ih");
    CHECK(cell.named_parameters()[1].second.shape() == Shape{12, 3});
    // PyTorch's initialization: U(-1/sqrt(H), 1/sqrt(H)) everywhere.
    Session s(g, {.threads = 1});
    double bound = 1.0 / std::sqrt(20.0), largest = 0;
    for (const Tensor& p : lstm.parameters())
      for (double v : values(s.get(p))) largest = std::max(largest, std::fabs(v));
    CHECK(largest <= bound);
    CHECK(largest > 0.9 * bound);
  }

  TEST_CASE("outputs and final states match a plain recurrence (every kind, layers, initial states)") {
    struct Case {
      nn::CellKind kind;
      nn::Activation act;
      bool fused, bias, with_state;
    };
    for (Case c : {Case{nn::CellKind::rnn, nn::Activation::tanh, true, true, true},
                   Case{nn::CellKind::rnn, nn::Activation::relu, true, false, false},
                   Case{nn::CellKind::lstm, nn::Activation::tanh, true, true, true},
                   Case{nn::CellKind::lstm, nn::Activation::tanh, false, true, true},
                   Case{nn::CellKind::lstm, nn::Activation::tanh, true, false, false},
                   Case{nn::CellKind::gru, nn::Activation::tanh, true, true, true},
                   Case{nn::CellKind::gru, nn::Activation::tanh, true, true, false},
                   Case{nn::CellKind::gru, nn::Activation::tanh, true, false, false}}) {
      CAPTURE(nn::cell_kind_name(c.kind));
      CAPTURE(c.fused);
      CAPTURE(c.bias);
      CAPTURE(c.with_state);
      const int64_t T = 4, N = 3, D = 5, H = 6, L = 2;
      Graph g;
      auto rnn = make_rnn(c.kind, D, H, {.num_layers = L, .nonlinearity = c.act, .bias = c.bias, .fused = c.fused});
      Tensor x = g.placeholder("x", {T, -1, D});
      Tensor h0 = g.placeholder("h0", {L, -1, H}), c0 = g.placeholder("c0", {L, -1, H});
      nn::RNNState init;
      if (c.with_state) init = {h0, c.kind == nn::CellKind::lstm ? c0 : Tensor()};
      auto [y, st] = (*rnn)(x, init);
      Session s(g, {.threads = 2, .seed = 11});
      NDArray xv = rand({T, N, D}, 1), hv = rand({L, N, H}, 2), cv = rand({L, N, H}, 3);
      Feeds feeds{{x, xv}};
      if (c.with_state) feeds.push_back({h0, hv});
      if (c.with_state && c.kind == nn::CellKind::lstm) feeds.push_back({c0, cv});
      std::vector<Tensor> fetch{y, st.h};
      if (st.c.valid()) fetch.push_back(st.c);
      auto out = s.run(fetch, feeds);
      auto layers = host_layers(s, *rnn, L, gates(c.kind), H, D);
      HostResult want = host_rnn(c.kind, c.act, layers, values(xv), T, N, c.with_state ? values(hv) : std::vector<double>{},
                                 c.with_state && c.kind == nn::CellKind::lstm ? values(cv) : std::vector<double>{});
      CHECK(max_diff(values(out[0]), want.out) < 2e-5);
      CHECK(max_diff(values(out[1]), want.hn) < 2e-5);
      if (c.kind == nn::CellKind::lstm) CHECK(max_diff(values(out[2]), want.cn) < 2e-5);
      CHECK_FALSE(st.c.valid() != (c.kind == nn::CellKind::lstm));
    }
  }

  TEST_CASE("batch_first transposes input and output, not the states") {
    Graph g;
    nn::GRU a(3, 4, {.num_layers = 1}), b(3, 4, {.batch_first = true});
    Tensor x = g.placeholder("x", {5, 2, 3}), xb = g.placeholder("xb", {2, 5, 3});
    {
      auto s = g.scope("a");
      a(x);
    }
    nn::RNNResult rb;
    {
      auto s = g.scope("b");
      rb = b(xb, {});
    }
    auto ra = a(x, {});
    CHECK(rb.output.shape() == Shape{2, 5, 4});
    CHECK(rb.state.h.shape() == Shape{1, 2, 4});
    Session s(g, {.threads = 1});
    for (size_t i = 0; i < a.parameters().size(); ++i) s.set(b.parameters()[i], s.get(a.parameters()[i]));
    NDArray xv = rand({5, 2, 3}, 4);
    auto out = s.run({ra.output, rb.output, ra.state.h, rb.state.h}, {{x, xv}, {xb, xv.permute({1, 0, 2}).compact()}});
    CHECK(test::allclose(out[1], out[0].permute({1, 0, 2}).compact(), 1e-6, 1e-6));
    CHECK(test::allclose(out[3], out[2], 1e-6, 1e-6));
  }

  TEST_CASE("cells: one step from a given state or from zeros matches the host step") {
    Graph g;
    nn::LSTMCell lc(3, 4);
    nn::GRUCell gc(3, 4);
    nn::RNNCell rc(3, 4, {.nonlinearity = nn::Activation::relu});
    Tensor x = g.placeholder("x", {2, 3}), h = g.placeholder("h", {2, 4}), c = g.placeholder("c", {2, 4});
    nn::RNNState ls;
    Tensor gh, rh, lh0;
    {
      auto s = g.scope("l");
      ls = lc(x, {h, c});
      lh0 = lc(x);  // from zeros
    }
    {
      auto s = g.scope("g");
      gh = gc(x, h);
    }
    {
      auto s = g.scope("r");
      rh = rc(x, h);
    }
    Session s(g, {.threads = 1, .seed = 2});
    NDArray xv = rand({2, 3}, 5), hv = rand({2, 4}, 6), cv = rand({2, 4}, 7);
    auto out = s.run({ls.h, ls.c, gh, rh, lh0}, {{x, xv}, {h, hv}, {c, cv}});
    // want(cell, kind, from zeros?, c instead of h?) on the host.
    auto want = [&](const nn::Module& m, nn::CellKind k, nn::Activation a, bool zero, bool cell_state) {
      HostLayer W = host_layer(s, m, "", gates(k), 4, 3);
      std::vector<double> r, xs = values(xv), hs = values(hv), cs = values(cv);
      for (int64_t n = 0; n < 2; ++n) {
        std::vector<double> hh(4, 0.0), cc(4, 0.0);
        if (!zero) hh.assign(hs.begin() + n * 4, hs.begin() + n * 4 + 4), cc.assign(cs.begin() + n * 4, cs.begin() + n * 4 + 4);
        host_step(k, a, W, &xs[size_t(n * 3)], hh, cc);
        const std::vector<double>& v = cell_state ? cc : hh;
        r.insert(r.end(), v.begin(), v.end());
      }
      return r;
    };
    const auto tanh_ = nn::Activation::tanh;
    CHECK(max_diff(values(out[0]), want(lc, nn::CellKind::lstm, tanh_, false, false)) < 2e-6);
    CHECK(max_diff(values(out[1]), want(lc, nn::CellKind::lstm, tanh_, false, true)) < 2e-6);
    CHECK(max_diff(values(out[2]), want(gc, nn::CellKind::gru, tanh_, false, false)) < 2e-6);
    CHECK(max_diff(values(out[3]), want(rc, nn::CellKind::rnn, nn::Activation::relu, false, false)) < 2e-6);
    CHECK(max_diff(values(out[4]), want(lc, nn::CellKind::lstm, tanh_, true, false)) < 2e-6);
  }

  TEST_CASE("float64 numeric gradients through unrolled steps: inputs, states, every weight") {
    struct Case {
      nn::CellKind kind;
      nn::Activation act;
      bool fused;
    };
    for (Case c : {Case{nn::CellKind::rnn, nn::Activation::tanh, true}, Case{nn::CellKind::rnn, nn::Activation::relu, true},
                   Case{nn::CellKind::lstm, nn::Activation::tanh, true}, Case{nn::CellKind::lstm, nn::Activation::tanh, false},
                   Case{nn::CellKind::gru, nn::Activation::tanh, true}}) {
      CAPTURE(nn::cell_kind_name(c.kind));
      CAPTURE(c.fused);
      const int64_t T = 3, N = 2, D = 3, H = 2, L = 2;
      Graph g;
      auto rnn = make_rnn(c.kind, D, H, {.num_layers = L, .nonlinearity = c.act, .fused = c.fused, .dtype = float64});
      Tensor x = g.placeholder("x", {T, N, D}, float64);
      Tensor h0 = g.placeholder("h0", {L, N, H}, float64), c0 = g.placeholder("c0", {L, N, H}, float64);
      const bool lstm = c.kind == nn::CellKind::lstm;
      auto [y, st] = (*rnn)(x, {h0, lstm ? c0 : Tensor()});
      Tensor loss = weighted_sum(y, 1) + weighted_sum(st.h, 2);
      if (lstm) loss = loss + weighted_sum(st.c, 3);
      // relu's kink: inputs away from where pre-activations cross zero are not guaranteed, so a wider step is fine.
      Feeds feeds{{x, rand({T, N, D}, 4, float64)}, {h0, rand({L, N, H}, 5, float64)}};
      if (lstm) feeds.push_back({c0, rand({L, N, H}, 6, float64)});
      check_numeric_gradients(g, loss, rnn->parameters(), feeds);
    }
  }

  TEST_CASE("cells: numeric gradients of one step (LSTMCell fused and not, GRUCell, RNNCell)") {
    for (int which = 0; which < 4; ++which) {
      CAPTURE(which);
      Graph g;
      Tensor x = g.placeholder("x", {2, 3}, float64), h = g.placeholder("h", {2, 4}, float64),
             c = g.placeholder("c", {2, 4}, float64);
      Tensor loss;
      std::vector<Tensor> params;
      Feeds feeds{{x, rand({2, 3}, 1, float64)}, {h, rand({2, 4}, 2, float64)}};
      if (which < 2) {
        nn::LSTMCell cell(3, 4, {.fused = which == 0, .dtype = float64});
        // Two steps: the second starts from the first's state.
        nn::RNNState s1 = cell(x, {h, c});
        nn::RNNState s2 = cell(x, s1);
        loss = weighted_sum(s2.h, 1) + weighted_sum(s2.c, 2);
        params = cell.parameters();
        feeds.push_back({c, rand({2, 4}, 3, float64)});
      } else if (which == 2) {
        nn::GRUCell cell(3, 4, {.dtype = float64});
        loss = weighted_sum(cell(x, cell(x, h)), 1);
        params = cell.parameters();
      } else {
        nn::RNNCell cell(3, 4, {.dtype = float64});
        loss = weighted_sum(cell(x, cell(x, h)), 1);
        params = cell.parameters();
      }
      check_numeric_gradients(g, loss, params, feeds);
    }
  }

  TEST_CASE("second derivatives through two fused LSTM steps") {
    // The gradient of the second step's output with respect to the first
    // step's inputs, squared, differentiated again (lstm_cell_grad's gradient).
    NDArray c0 = rand({2, 3}, 1, float64), g1 = rand({2, 12}, 2, float64, -2, 2), g2 = rand({2, 12}, 3, float64, -2, 2);
    CheckResult r = check_gradient_fn(
        [](const std::vector<Tensor>& in) {
          std::vector<Tensor> a = lstm_cell(in[0], in[1]);
          Tensor w = in[0].graph().constant(rand({3, 12}, 4, float64));  // h feeds the next step's gates
          std::vector<Tensor> b = lstm_cell(a[1], in[2], matmul(a[0], w));
          Tensor y = sum(b[0] * b[0]) + sum(b[1]);
          std::vector<Tensor> d = gradients(y, {in[0], in[1]});
          return std::vector<Tensor>{d[0] * d[0], d[1] * d[1]};
        },
        {c0, g1, g2}, {0, 1, 2});
    CHECK_MESSAGE(r.ok, r.detail);
  }

  TEST_CASE("the fused LSTM cell and the element-wise one agree, values and gradients") {
    Graph g;
    nn::LSTM a(4, 5, {.num_layers = 2, .fused = true}), b(4, 5, {.num_layers = 2, .fused = false});
    Tensor x = g.placeholder("x", {6, 3, 4});
    nn::RNNResult ra, rb;
    {
      auto s = g.scope("a");
      ra = a(x, {});
    }
    {
      auto s = g.scope("b");
      rb = b(x, {});
    }
    Tensor la = weighted_sum(ra.output, 1) + weighted_sum(ra.state.c, 2);
    Tensor lb = weighted_sum(rb.output, 1) + weighted_sum(rb.state.c, 2);
    auto ga = gradients(la, a.parameters()), gb = gradients(lb, b.parameters());
    Session s(g, {.threads = 2});
    for (size_t i = 0; i < a.parameters().size(); ++i) s.set(b.parameters()[i], s.get(a.parameters()[i]));
    NDArray xv = rand({6, 3, 4}, 9);
    std::vector<Tensor> fetch{ra.output, rb.output};
    fetch.insert(fetch.end(), ga.begin(), ga.end());
    fetch.insert(fetch.end(), gb.begin(), gb.end());
    auto out = s.run(fetch, {{x, xv}});
    CHECK(test::allclose(out[0], out[1], 1e-5, 1e-6));
    for (size_t i = 0; i < ga.size(); ++i) CHECK(test::allclose(out[2 + i], out[2 + ga.size() + i], 1e-4, 1e-6));
  }

  TEST_CASE("truncated BPTT: the state lives in variables, assigned each step; no gradient reaches the last batch") {
    const int64_t T = 3, N = 2, D = 3, H = 4, L = 2;
    Graph g;
    nn::LSTM lstm(D, H, {.num_layers = L});
    Tensor x = g.placeholder("x", {T, N, D});
    Tensor hv = g.variable("state/h", {L, N, H}, init::zeros()), cv = g.variable("state/c", {L, N, H}, init::zeros());
    auto [y, st] = lstm(x, {hv, cv});
    Tensor loss = weighted_sum(y, 1);
    Tensor carry = group({assign(hv, st.h), assign(cv, st.c)});
    // The reference: the same model fed the state through placeholders.
    Tensor hp = g.placeholder("hp", {L, N, H}), cp = g.placeholder("cp", {L, N, H});
    auto ref = lstm(x, {hp, cp});
    Tensor ref_loss = weighted_sum(ref.output, 1);
    auto grad_var = gradients(loss, lstm.parameters());
    auto grad_ref = gradients(ref_loss, lstm.parameters());
    Session s(g, {.threads = 2});
    NDArray x1 = rand({T, N, D}, 1), x2 = rand({T, N, D}, 2);
    auto first = s.run({st.h, st.c}, {{x, x1}}, {carry});
    CHECK(test::identical(s.get(hv), first[0]));
    CHECK(test::identical(s.get(cv), first[1]));
    // Batch 2 from the carried state equals the placeholder model fed that state.
    std::vector<Tensor> fetch{y};
    fetch.insert(fetch.end(), grad_var.begin(), grad_var.end());
    auto second = s.run(fetch, {{x, x2}}, {carry});
    std::vector<Tensor> rfetch{ref.output};
    rfetch.insert(rfetch.end(), grad_ref.begin(), grad_ref.end());
    auto want = s.run(rfetch, {{x, x2}, {hp, first[0]}, {cp, first[1]}});
    // Same values, and the same gradients as with the state fed as a constant:
    // nothing flows back into the batch that produced the state.
    for (size_t i = 0; i < second.size(); ++i) CHECK(test::allclose(second[i], want[i], 1e-6, 1e-7));
  }

  TEST_CASE("dropout between layers only in training; eval is deterministic") {
    Graph g;
    nn::GRU gru(3, 3, {.num_layers = 3, .dropout = 0.5});
    Tensor x = g.placeholder("x", {4, 2, 3});
    gru.train();
    Tensor yt = gru(x);
    gru.eval();
    Tensor ye = gru(x);
    nn::GRU plain(3, 3, {.num_layers = 3});
    Tensor yp;
    {
      auto sc = g.scope("plain");
      yp = plain(x);
    }
    Session s(g, {.threads = 1, .seed = 3});
    for (size_t i = 0; i < gru.parameters().size(); ++i) s.set(plain.parameters()[i], s.get(gru.parameters()[i]));
    NDArray xv = rand({4, 2, 3}, 1);
    auto out = s.run({yt, ye, yp}, {{x, xv}});
    CHECK(test::identical(out[1], out[2]));
    CHECK_FALSE(test::allclose(out[0], out[1]));
    int drops = 0;
    for (int i = 0; i < g.size(); ++i) drops += g.node(i).op->name == "random_uniform";
    CHECK(drops == 2);  // after layers 0 and 1, in the training build only
  }

  TEST_CASE("the graph stays lean: one input GEMM per layer, one GEMM and one cell op per step") {
    Graph g;
    nn::LSTM lstm(8, 8, {.num_layers = 2});
    Tensor x = g.placeholder("x", {7, 4, 8});
    const int before = g.size();
    lstm(x);
    std::map<std::string, int> ops;
    for (int i = before; i < g.size(); ++i) ++ops[g.node(i).op->name];
    CHECK(ops["lstm_cell"] == 14);
    CHECK(ops["matmul"] == 2 + 2 * 6);  // the first step starts from zeros: no hidden GEMM
    CHECK(ops["split"] == 2);
  }

  TEST_CASE("a weight used by many matmuls gets its gradient from one GEMM") {
    // The hidden weight of an unrolled layer: the T - 1 per-step terms are merged.
    Graph g;
    nn::RNN rnn(3, 4);
    Tensor x = g.placeholder("x", {6, 2, 3}, float32);
    Tensor loss = weighted_sum(rnn(x), 1);
    const int before = g.size();
    Tensor dw = gradients(loss, {rnn.parameters()[1]})[0];  // weight_hh_l0
    int matmuls = 0;
    for (int i = before; i < g.size(); ++i) matmuls += g.node(i).op->name == "matmul";
    Session s(g, {.threads = 1});
    auto pi = s.plan_info({dw}, {{x, rand({6, 2, 3}, 1)}});
    int planned = 0;
    for (const auto& st : pi.steps) planned += st.op == "matmul";
    CHECK(matmuls > 5);  // the per-step terms exist in the graph...
    CHECK(planned == 5 + 5 + 1);  // ...but the plan runs 5 forward steps, 5 dh products and one merged dW
    // The merged gradient against central differences: a weight in five products.
    CheckResult r = check_gradient_fn(
        [](const std::vector<Tensor>& in) {
          Tensor y = matmul(in[0], in[1]);
          for (int k = 0; k < 4; ++k) y = tanh(matmul(y, in[1]));
          return std::vector<Tensor>{y};
        },
        {rand({3, 2}, 2, float64), rand({2, 2}, 3, float64)}, {0, 1});
    CHECK_MESSAGE(r.ok, r.detail);
  }

  TEST_CASE("errors name the module and what was expected") {
    // Sizes whose weights overflow (4 H wrapped to 0) are refused by name.
    CHECK(contains(error_of([] { nn::LSTM(4, int64_t(1) << 62); }), "LSTM: input_size 4 and hidden_size"));
    Graph g;
    nn::LSTM lstm(4, 3, {.num_layers = 2});
    Tensor dyn = g.placeholder("dyn", {-1, 2, 4});
    CHECK(contains(error_of([&] { lstm(dyn); }), "the sequence length must be known"));
    Tensor bad = g.placeholder("bad", {5, 2, 6});
    CHECK(contains(error_of([&] { lstm(bad); }), "expected input size 4"));
    Tensor four = g.placeholder("four", {5, 2, 4, 1});
    CHECK(contains(error_of([&] { lstm(four); }), "expected input [T, N, D] or unbatched [T, D], got [5,2,4,1]"));
    Tensor x = g.placeholder("x", {5, 2, 4}), h = g.placeholder("h", {1, 2, 3});
    std::string e = error_of([&] { lstm(x, {h, {}}); });
    CHECK(contains(e, "LSTM"));
    CHECK(contains(e, "the initial h must be float32[2,2,3], got 'h' float32[1,2,3]"));
    nn::GRU gru(4, 3);
    CHECK(contains(error_of([&] { gru(x, {{}, h}); }), "only an LSTM has a cell state"));
    CHECK(contains(error_of([] { nn::LSTM(0, 3); }), "must be positive"));
    CHECK(contains(error_of([] { nn::RNN(3, 3, {.dropout = 1.0}); }), "dropout must be in [0, 1)"));
    CHECK(contains(error_of([] { nn::parse_cell_kind("transformer"); }), "unknown recurrent cell 'transformer'"));
  }

  TEST_CASE("unbatched input ([T, D], states [L, H]; a cell's [D] and [H]) runs as a batch of one (PyTorch's)") {
    Graph g;
    nn::LSTM lstm(4, 3, {.num_layers = 2});
    nn::GRU gru(4, 3, {.batch_first = true});
    nn::LSTMCell cell(4, 3);
    Tensor x = g.placeholder("x", {5, 4}), h = g.placeholder("h", {2, 3}), c = g.placeholder("c", {2, 3});
    Tensor xb = g.placeholder("xb", {5, 1, 4}), hb = g.placeholder("hb", {2, 1, 3}),
           cb = g.placeholder("cb", {2, 1, 3});
    Tensor x1 = g.placeholder("x1", {4}), h1 = g.placeholder("h1", {3}), c1 = g.placeholder("c1", {3});
    const nn::RNNResult u = lstm(x, {h, c}), b = lstm(xb, {hb, cb});  // at the root; the others in scopes
    CHECK(u.output.shape() == Shape{5, 3});
    CHECK(u.state.h.shape() == Shape{2, 3});
    CHECK(u.state.c.shape() == Shape{2, 3});
    auto scope = g.scope("other");
    Tensor gu = gru(x), gb = gru(reshape(xb, {1, 5, 4}));  // batch_first: the batch of one leads
    CHECK(gu.shape() == Shape{5, 3});
    auto cell_scope = g.scope("cell");
    const nn::RNNState cu = cell(x1, {h1, c1}),
                       cbat = cell(reshape(x1, {1, 4}), {reshape(h1, {1, 3}), reshape(c1, {1, 3})});
    CHECK(cu.h.shape() == Shape{3});
    Tensor dx = gradients(sum(u.output) + sum(u.state.c), {x})[0];
    Tensor dxb = gradients(sum(b.output) + sum(b.state.c), {xb})[0];
    CHECK(dx.shape() == Shape{5, 4});

    Session s(g, {.seed = 4});
    const NDArray xv = rand({5, 4}, 1), hv = rand({2, 3}, 2), cv = rand({2, 3}, 3);
    const auto r = s.run(
        {u.output, b.output, u.state.h, b.state.h, u.state.c, b.state.c, gu, gb, cu.h, cbat.h, cu.c, cbat.c, dx, dxb},
        {{x, xv},
         {h, hv},
         {c, cv},
         {xb, xv.reshape({5, 1, 4})},
         {hb, hv.reshape({2, 1, 3})},
         {cb, cv.reshape({2, 1, 3})},
         {x1, xv.select(0, 2).clone()},
         {h1, hv.select(0, 0).clone()},
         {c1, cv.select(0, 0).clone()}});
    for (size_t i = 0; i < r.size(); i += 2) {
      CAPTURE(i);
      CHECK(r[i].numel() == r[i + 1].numel());
      CHECK(r[i].to_vector<float>() == r[i + 1].to_vector<float>());
    }
    // A batched state with an unbatched input is refused, as PyTorch's "hx should also be 2-D".
    CHECK(contains(error_of([&] {
                     lstm(x, {hb, {}});
                   }),
                   "an unbatched input takes an unbatched state h (2 dims), got 'hb' [2,1,3]"));
    CHECK(contains(error_of([&] { cell(x1, {hb, {}}); }), "an unbatched input takes an unbatched state h (1 dims)"));
  }

  TEST_CASE("a state or input of the wrong size fed at run time is an error, not a broadcast (PyTorch)") {
    Graph g;
    nn::GRU gru(4, 3, {.num_layers = 2});
    nn::LSTM lstm(4, 3);
    nn::RNNCell cell(4, 3);
    Tensor x = g.placeholder("x", {5, -1, 4}), h = g.placeholder("h0", {2, -1, 3}),
           h1 = g.placeholder("h1", {1, -1, 3});
    Tensor xc = g.placeholder("xc", {-1, 4}), hc = g.placeholder("hc", {-1, 3});
    Tensor xd = g.placeholder("xd", {5, 2, -1});  // a feature size known only when run
    auto in = [&](const char* scope, auto build) {
      auto sc = g.scope(scope);
      return build();
    };
    const auto gr = gru(x, {h, {}});  // the GRU at the root, called twice (shared variables)
    Tensor yd = gru(xd);
    const auto lr = in("lstm", [&] { return lstm(x, {h1, h1}); });
    Tensor yc = in("cell", [&] { return cell(xc, hc); });
    Session s(g, {.threads = 1});
    auto feed = [](const Shape& shape) { return rand(shape, 1); };
    // Right sizes run; the dynamic feature size too (it used to fail for any size).
    CHECK(s.run({gr.output, gr.state.h}, {{x, feed({5, 3, 4})}, {h, feed({2, 3, 3})}})[1].shape() == Shape{2, 3, 3});
    CHECK(s.run({yd}, {{xd, feed({5, 2, 4})}})[0].shape() == Shape{5, 2, 3});
    CHECK(s.run({yc}, {{xc, feed({2, 4})}, {hc, feed({2, 3})}})[0].shape() == Shape{2, 3});
    // A state of batch 1 for a batch of 3 was broadcast silently.
    std::string e = error_of([&] { s.run({gr.output}, {{x, feed({5, 3, 4})}, {h, feed({2, 1, 3})}}); });
    CHECK(contains(e, "GRU_initial_h_must_be_[L,N,H]"));
    CHECK(contains(e, "[2,1,3] to [2,3,3]"));
    CHECK(contains(error_of([&] {
                     s.run({lr.output}, {{x, feed({5, 3, 4})}, {h1, feed({1, 2, 3})}});
                   }),
                   "lstm/LSTM_initial_h_must_be_[L,N,H]"));
    CHECK(contains(error_of([&] {
                     s.run({yc}, {{xc, feed({2, 4})}, {hc, feed({1, 3})}});
                   }),
                   "cell/RNNCell_h_must_be_[N,H]"));
    CHECK(contains(error_of([&] { s.run({yd}, {{xd, feed({5, 2, 6})}}); }), "input_must_be_[T,N,4]"));
    // The session stays usable.
    CHECK(s.run({yc}, {{xc, feed({1, 4})}, {hc, feed({1, 3})}})[0].shape() == Shape{1, 3});
    // Layers and hidden size must be known in a state (else a [N, L, H] state would pass as [L, N, H]).
    CHECK(contains(error_of([&] { gru(x, {g.placeholder("hl", {-1, -1, 3}), {}}); }), "only its batch may be unknown"));
  }

  TEST_CASE("bidirectional layers and sequence lengths match PyTorch (packed sequences)") {
    // Literal outputs of PyTorch 2.15 (float64): pack_padded_sequence(x, lengths, enforce_sorted=False), the
    // bidirectional module, pad_packed_sequence(total_length=T); every parameter k (in state_dict order)
    // element j is 0.5 sin(0.7 j + 1.3 k + 0.1), x[i] = cos(0.37 i), h0[i] = 0.3 sin(0.11 i + 0.5),
    // c0[i] = 0.2 cos(0.23 i). T = 4, N = 3, D = 2, H = 3.
    // clang-format off
#include "tests/frontend/rnn_bidirectional_tables.inc"
    // clang-format on
    struct Case {
      nn::CellKind kind;
      int64_t layers;
      std::vector<int64_t> lengths;  // empty: the whole sequence, no lengths given
      bool with_state;
      const std::vector<double>*y, *h, *c;
    };
    const int64_t T = 4, N = 3, D = 2, H = 3;
    auto arr = [](const Shape& s, auto f) {
      std::vector<double> v(size_t(numel(s)));
      for (size_t i = 0; i < v.size(); ++i) v[i] = f(double(i));
      return NDArray::from<double>(v, s);
    };
    for (const Case& c : {Case{nn::CellKind::lstm, 2, {3, 1, 4}, true, &kLstmY, &kLstmH, &kLstmC},
                          Case{nn::CellKind::gru, 1, {2, 4, 1}, true, &kGruY, &kGruH, nullptr},
                          Case{nn::CellKind::rnn, 2, {}, false, &kRnnY, &kRnnH, nullptr}}) {
      CAPTURE(nn::cell_kind_name(c.kind));
      Graph g;
      auto rnn = make_rnn(c.kind, D, H,
                          {.num_layers = c.layers,
                           .nonlinearity = c.kind == nn::CellKind::rnn ? nn::Activation::relu : nn::Activation::tanh,
                           .bidirectional = true,
                           .dtype = float64});
      Tensor x = g.placeholder("x", {T, -1, D}, float64), len = g.placeholder("lengths", {-1}, int64);
      Tensor h0 = g.placeholder("h0", {2 * c.layers, -1, H}, float64);
      Tensor c0 = g.placeholder("c0", {2 * c.layers, -1, H}, float64);
      nn::RNNState init;
      if (c.with_state) init = {h0, c.kind == nn::CellKind::lstm ? c0 : Tensor()};
      const nn::RNNResult r = c.lengths.empty() ? (*rnn)(x, init) : (*rnn)(x, init, len);
      CHECK(r.output.shape() == Shape{T, -1, 2 * H});
      Session s(g, {.threads = 2});
      std::vector<std::string> names;
      int64_t k = 0;
      for (auto& [name, p] : rnn->named_parameters()) {
        names.push_back(name);
        s.set(p, arr(p.shape(), [&](double j) { return 0.5 * std::sin(0.7 * j + 1.3 * double(k) + 0.1); }));
        ++k;
      }
      CHECK(names[4] == "weight_ih_l0_reverse");
      CHECK(names[7] == "bias_hh_l0_reverse");
      Feeds feeds{{x, arr({T, N, D}, [](double i) { return std::cos(0.37 * i); })}};
      if (!c.lengths.empty()) feeds.push_back({len, NDArray::from<int64_t>(c.lengths, {N})});
      const Shape states{2 * c.layers, N, H};
      if (c.with_state) feeds.push_back({h0, arr(states, [](double i) { return 0.3 * std::sin(0.11 * i + 0.5); })});
      if (c.with_state && c.c) feeds.push_back({c0, arr(states, [](double i) { return 0.2 * std::cos(0.23 * i); })});
      std::vector<Tensor> fetch{r.output, r.state.h};
      if (c.c) fetch.push_back(r.state.c);
      const std::vector<NDArray> out = s.run(fetch, feeds);
      CHECK(out[1].shape() == states);
      CHECK(max_diff(values(out[0]), *c.y) < 1e-13);
      CHECK(max_diff(values(out[1]), *c.h) < 1e-13);
      if (c.c) CHECK(max_diff(values(out[2]), *c.c) < 1e-13);
    }
  }

  TEST_CASE("LSTM with projections (proj_size) matches PyTorch: bidirectional, two layers, lengths, given states") {
    // Literal PyTorch 2.15 outputs (float64), inputs and parameters as in the test case above; lengths {3, 1, 4}.
    // clang-format off
#include "tests/frontend/rnn_projection_tables.inc"
    // clang-format on
    const int64_t T = 4, N = 3, D = 2, H = 4, P = 2;
    Graph g;
    nn::LSTM lstm(D, H, {.num_layers = 2, .bidirectional = true, .proj_size = P, .dtype = float64});
    Tensor x = g.placeholder("x", {T, -1, D}, float64), len = g.placeholder("lengths", {-1}, int64);
    Tensor h0 = g.placeholder("h0", {4, -1, P}, float64), c0 = g.placeholder("c0", {4, -1, H}, float64);
    const nn::RNNResult r = lstm(x, {h0, c0}, len);
    CHECK(r.output.shape() == Shape{T, -1, 2 * P});
    CHECK(lstm.describe() == "LSTM(2, 4, num_layers=2, bidirectional, proj_size=2)");
    Session s(g);
    auto arr = [](const Shape& shape, auto f) {
      std::vector<double> v(size_t(numel(shape)));
      for (size_t i = 0; i < v.size(); ++i) v[i] = f(double(i));
      return NDArray::from<double>(v, shape);
    };
    std::vector<std::string> names;
    int64_t k = 0;
    for (auto& [name, p] : lstm.named_parameters()) {
      names.push_back(name);
      s.set(p, arr(p.shape(), [&](double j) { return 0.5 * std::sin(0.7 * j + 1.3 * double(k) + 0.1); }));
      ++k;
    }
    REQUIRE(names.size() == 20);
    CHECK(names[4] == "weight_hr_l0");
    CHECK(names[9] == "weight_hr_l0_reverse");
    CHECK(lstm.named_parameters()[11].second.shape() == Shape{16, 2});  // weight_hh_l1 [4H, P]
    const std::vector<NDArray> out =
        s.run({r.output, r.state.h, r.state.c},
              {{x, arr({T, N, D}, [](double i) { return std::cos(0.37 * i); })},
               {len, NDArray::from<int64_t>({3, 1, 4}, {3})},
               {h0, arr({4, N, P}, [](double i) { return 0.3 * std::sin(0.11 * i + 0.5); })},
               {c0, arr({4, N, H}, [](double i) { return 0.2 * std::cos(0.23 * i); })}});
    CHECK(max_diff(values(out[0]), kProjY) < 1e-13);
    CHECK(max_diff(values(out[1]), kProjH) < 1e-13);
    CHECK(max_diff(values(out[2]), kProjC) < 1e-13);
    CHECK(contains(error_of([] { nn::GRU(2, 4, {.proj_size = 2}); }), "proj_size is an LSTM's only"));
    CHECK(contains(error_of([] { nn::LSTM(2, 4, {.proj_size = 4}); }), "proj_size must be in [0, hidden_size 4)"));
  }

  TEST_CASE("pad_sequences: a padded batch and its lengths; each sequence's result equals running it alone") {
    const NDArray a = rand({3, 2}, 1, float64), b = rand({1, 2}, 2, float64), c = rand({4, 2}, 3, float64);
    const data::PaddedBatch p = data::pad_sequences({a, b, c}, {.padding_value = -7});
    REQUIRE(p.padded.shape() == Shape{4, 3, 2});
    CHECK(p.lengths.to_vector<int64_t>() == std::vector<int64_t>{3, 1, 4});
    for (int64_t t = 0; t < 4; ++t)
      for (int64_t j = 0; j < 2; ++j) {
        CHECK(p.padded.at({t, 0, j}) == (t < 3 ? a.at({t, j}) : -7.0));
        CHECK(p.padded.at({t, 1, j}) == (t < 1 ? b.at({t, j}) : -7.0));
        CHECK(p.padded.at({t, 2, j}) == c.at({t, j}));
      }
    const data::PaddedBatch bf = data::pad_sequences({a, b}, {.batch_first = true, .total_length = 5});
    CHECK(bf.padded.shape() == Shape{2, 5, 2});
    CHECK(bf.padded.at({0, 2, 1}) == a.at({2, 1}));
    CHECK(bf.padded.at({1, 4, 0}) == 0.0);
    // The point of lengths: a bidirectional LSTM on the padded batch gives each sequence what it gives alone.
    Graph g;
    nn::LSTM lstm(2, 3, {.bidirectional = true, .dtype = float64});
    Tensor x = g.placeholder("x", {4, -1, 2}, float64), len = g.placeholder("len", {-1}, int64);
    const nn::RNNResult batched = lstm(x, {}, len);
    std::vector<nn::RNNResult> alone;
    std::vector<Tensor> xs;
    for (int64_t T : {3, 1, 4}) {
      const char* names[] = {"", "x1", "", "x3", "x4"};
      xs.push_back(g.placeholder(names[T], {T, 1, 2}, float64));
      alone.push_back(lstm(xs.back(), {}));
    }
    Session s(g);
    const std::vector<NDArray> got = s.run({batched.output, batched.state.h}, {{x, p.padded}, {len, p.lengths}});
    const std::vector<NDArray> seqs{a, b, c};
    for (size_t i = 0; i < 3; ++i) {
      CAPTURE(i);
      const int64_t T = seqs[i].shape()[0];
      const std::vector<NDArray> own =
          s.run({alone[i].output, alone[i].state.h}, {{xs[i], seqs[i].reshape({T, 1, 2})}});
      const int64_t n = int64_t(i);
      CHECK(test::allclose(got[0].slice({Slice::range(0, T), Slice::range(n, n + 1)}).compact(), own[0], 1e-14, 1e-14));
      CHECK(test::allclose(got[1].slice({Slice::all(), Slice::range(n, n + 1)}).compact(), own[1], 1e-14, 1e-14));
    }
    CHECK(contains(error_of([] { data::pad_sequences({}); }), "no sequences"));
    CHECK(contains(error_of([&] {
                     data::pad_sequences({a, rand({2, 3}, 4, float64)});
                   }),
                   "sequence 1 is float64[2,3]"));
    CHECK(contains(error_of([&] { data::pad_sequences({a, rand({0, 2}, 4, float64)}); }), "sequence 1 is empty"));
    CHECK(contains(error_of([&] { data::pad_sequences({a, c}, {.total_length = 3}); }), "shorter than the longest"));
  }

  TEST_CASE("bidirectional with lengths: float64 numeric gradients (inputs, states, every weight)") {
    for (nn::CellKind kind : {nn::CellKind::lstm, nn::CellKind::gru}) {
      CAPTURE(nn::cell_kind_name(kind));
      Graph g;
      auto rnn = make_rnn(kind, 2, 3, {.num_layers = 2, .bidirectional = true, .dtype = float64});
      Tensor x = g.placeholder("x", {3, 2, 2}, float64), h0 = g.placeholder("h0", {4, 2, 3}, float64);
      Tensor len = g.constant(NDArray::from<int64_t>({2, 3}, {2}));
      nn::RNNResult r = (*rnn)(x, {h0, {}}, len);
      Tensor loss = weighted_sum(r.output, 3) + weighted_sum(r.state.h, 4);
      if (r.state.c.valid()) loss = loss + weighted_sum(r.state.c, 5);
      check_numeric_gradients(g, loss, rnn->parameters(),
                              {{x, rand({3, 2, 2}, 6, float64)}, {h0, rand({4, 2, 3}, 7, float64)}});
    }
  }

  TEST_CASE("sequence lengths: the outputs past each end are zeros; errors name the module and the lengths") {
    Graph g;
    nn::LSTM lstm(2, 3, {.bidirectional = true});
    Tensor x = g.placeholder("x", {4, -1, 2}), len = g.placeholder("lengths", {-1}, int64);
    nn::RNNResult r = lstm(x, {}, len);
    Session s(g, {.threads = 1});
    const NDArray xv = rand({4, 2, 2}, 1);
    NDArray y = s.run({r.output}, {{x, xv}, {len, NDArray::from<int64_t>({2, 4}, {2})}})[0];
    const std::vector<double> v = values(y);  // [4, 2, 6]
    for (int64_t t = 0; t < 4; ++t)
      for (int64_t j = 0; j < 6; ++j) {
        CAPTURE(t);
        CHECK((v[size_t((t * 2 + 0) * 6 + j)] == 0) == (t >= 2));  // sequence 0 ends after 2 steps
        CHECK(v[size_t((t * 2 + 1) * 6 + j)] != 0);
      }
    auto run_with = [&](std::vector<int64_t> l) {
      return error_of([&] { s.run({r.output}, {{x, xv}, {len, NDArray::from<int64_t>(l, {int64_t(l.size())})}}); });
    };
    CHECK(contains(run_with({0, 4}), "LSTM_lengths_must_be_in_[1,4]"));
    CHECK(contains(run_with({2, 5}), "sequence lengths in [1,4]"));
    CHECK(contains(run_with({2, 3, 4}), "LSTM_lengths_must_be_[N]"));
    CHECK(s.run({r.output}, {{x, xv}, {len, NDArray::from<int64_t>({4, 1}, {2})}})[0].shape() == Shape{4, 2, 6});
    // Build-time errors.
    CHECK(contains(error_of([&] { lstm(x, {}, g.placeholder("lf", {-1})); }), "must be int32 or int64"));
    CHECK(contains(error_of([&] { lstm(x, {}, g.placeholder("l2", {2, 2}, int64)); }), "lengths must be [N]"));
    CHECK(contains(error_of([&] { lstm(g.placeholder("u", {4, 2}), {}, len); }), "lengths need a batch"));
    CHECK(contains(error_of([&] { lstm(x, {g.placeholder("h1", {1, -1, 3}), {}}); }), "must be float32[2,?,3]"));
  }

  TEST_CASE("Embedding: rows by id, scatter-add gradient, padding_idx, bad ids") {
    Graph g;
    nn::Embedding emb(5, 3, {.padding_idx = 1});
    Tensor ids = g.placeholder("ids", {2, 3}, int64);
    Tensor y = emb(ids);
    CHECK(y.shape() == Shape{2, 3, 3});
    Tensor loss = weighted_sum(y, 1);
    Tensor dw = gradients(loss, {emb.weight()})[0];
    bool scatter = false, dense = false;
    for (int i = 0; i < g.size(); ++i) {
      scatter |= g.node(i).op->name == "gather_grad";
      dense |= g.node(i).op->name == "one_hot";
    }
    CHECK(scatter);
    CHECK_FALSE(dense);
    Session s(g, {.threads = 2, .seed = 4});
    NDArray w = s.get(emb.weight());
    for (double v : values(w.slice({{1, 2, 1}}))) CHECK(v == 0.0);  // the padding row starts as zeros
    w = rand({5, 3}, 8);
    s.set(emb.weight(), w);
    NDArray idv = NDArray::from<int64_t>({4, 1, 4, 0, 1, 2}, {2, 3});
    auto out = s.run({y, dw}, {{ids, idv}});
    std::vector<double> wv = values(w), yv = values(out[0]), gv = values(out[1]);
    NDArray weights = rand({2, 3, 3}, 1, float64, 0.5, 1.5);
    std::vector<double> dy = values(weights), want(15, 0.0);
    const int64_t id[6] = {4, 1, 4, 0, 1, 2};
    for (int k = 0; k < 6; ++k)
      for (int j = 0; j < 3; ++j) {
        CHECK(yv[size_t(k * 3 + j)] == doctest::Approx(wv[size_t(id[k] * 3 + j)]));  // padding rows pass through
        if (id[k] != 1) want[size_t(id[k] * 3 + j)] += dy[size_t(k * 3 + j)];
      }
    CHECK(max_diff(gv, want) < 1e-5);
    // An id out of range: loom::Error naming the op and the id; the session stays usable.
    std::string e = error_of([&] { s.run({y}, {{ids, NDArray::from<int64_t>({0, 1, 7, 0, 1, 2}, {2, 3})}}); });
    CHECK(contains(e, "gather"));
    CHECK(contains(e, "index 7 out of range [0, 5)"));
    CHECK(contains(error_of([&] { s.run({y}, {{ids, NDArray::from<int64_t>({0, -2, 1, 0, 1, 2}, {2, 3})}}); }),
                   "index -2 out of range"));
    CHECK(test::allclose(s.run1(y, {{ids, idv}}), out[0]));
    Tensor fl = g.placeholder("fl", {2});
    CHECK(contains(error_of([&] { emb(fl); }), "must be int32 or int64, got float32"));
    CHECK(contains(error_of([] { nn::Embedding(5, 3, {.padding_idx = 5}); }), "padding_idx 5 out of range"));
  }

  TEST_CASE("EmbeddingBag equals PyTorch's (sum, mean, max; offsets, include_last_offset, weights, padding)") {
    // Literal F.embedding_bag outputs of PyTorch 2.15 (float64): weight [6, 3] element i is
    // ((5 i) mod 13) / 4 - 1.5, ids {1, 4, 0, 0, 5, 2, 3, 1}, offsets {0, 3, 3, 5} (bag 1 is empty),
    // per_sample_weights 0.5 + i / 4.
    // clang-format off
#include "tests/frontend/embedding_bag_tables.inc"
    // clang-format on
    std::vector<double> table(18);
    for (size_t i = 0; i < table.size(); ++i) table[i] = std::fmod(double(i) * 5, 13) / 4 - 1.5;
    const NDArray idv = NDArray::from<int64_t>({1, 4, 0, 0, 5, 2, 3, 1}, {8});
    struct Case {
      nn::BagMode mode;
      std::optional<int64_t> padding_idx;
      bool include_last_offset;
      std::vector<int64_t> offsets;  // empty: ids as [2, 4]
      bool weighted;
      const std::vector<double>* want;
    };
    using M = nn::BagMode;
    for (const Case& c :
         {Case{M::sum, {}, false, {0, 3, 3, 5}, false, &kBagSum},
          Case{M::mean, {}, false, {0, 3, 3, 5}, false, &kBagMean},
          Case{M::max, {}, false, {0, 3, 3, 5}, false, &kBagMax}, Case{M::sum, {}, false, {0, 3, 3, 5}, true, &kBagPsw},
          Case{M::mean, {}, true, {0, 3, 3, 5, 8}, false, &kBagLast},
          Case{M::mean, 0, false, {0, 3, 3, 5}, false, &kBagPad},
          Case{M::max, 0, false, {0, 3, 3, 5}, false, &kBagPadMax}, Case{M::max, {}, false, {}, false, &kBag2d}}) {
      nn::EmbeddingBag bag(6, 3,
                           {.mode = c.mode,
                            .padding_idx = c.padding_idx,
                            .include_last_offset = c.include_last_offset,
                            .dtype = float64});
      CAPTURE(bag.describe());
      Graph g;
      Tensor ids = g.placeholder("ids", {-1}, int64), offsets = g.placeholder("offsets", {-1}, int64);
      Tensor psw = g.placeholder("psw", {-1}, float64), ids2 = g.placeholder("ids2", {-1, 4}, int64);
      Tensor y = c.offsets.empty() ? bag(ids2) : bag(ids, offsets, c.weighted ? psw : Tensor());
      Session s(g, {.threads = 2});
      s.set(bag.weight(), NDArray::from<double>(table, {6, 3}));
      Feeds feeds{{ids, idv}, {ids2, idv.reshape({2, 4})}};
      if (!c.offsets.empty())
        feeds.push_back({offsets, NDArray::from<int64_t>(c.offsets, {int64_t(c.offsets.size())})});
      std::vector<double> weights(8);
      for (size_t i = 0; i < 8; ++i) weights[i] = 0.5 + double(i) / 4;
      if (c.weighted) feeds.push_back({psw, NDArray::from<double>(weights, {8})});
      CHECK(max_diff(values(s.run1(y, feeds)), *c.want) < 1e-14);
    }
  }

  TEST_CASE("EmbeddingBag: gradients by central differences; the padding row gets none; errors") {
    for (nn::BagMode mode : {nn::BagMode::sum, nn::BagMode::mean, nn::BagMode::max}) {
      Graph g;
      nn::EmbeddingBag bag(5, 3, {.mode = mode, .padding_idx = 2, .dtype = float64});
      Tensor y = bag(g.constant(NDArray::from<int64_t>({1, 2, 4, 4, 0, 3, 1}, {7})),
                     g.constant(NDArray::from<int64_t>({0, 2, 2, 5}, {4})));
      Tensor y2 = bag(g.constant(NDArray::from<int64_t>({1, 2, 4, 3, 0, 2}, {2, 3})));
      Tensor loss = weighted_sum(y, 2) + weighted_sum(y2, 3);
      check_numeric_gradients(g, loss, {bag.weight()}, {});
      Session s(g);
      NDArray dw = s.run1(gradients(loss, {bag.weight()})[0], {});
      for (double v : values(dw.slice({{2, 3, 1}}))) CHECK(v == 0.0);
    }
    Graph g;
    nn::EmbeddingBag bag(5, 3);
    Tensor flat = g.placeholder("flat", {-1}, int64), offsets = g.placeholder("offsets", {-1}, int64);
    CHECK(contains(error_of([&] { bag(g.placeholder("f", {4}, int64)); }), "expected ids [B, L]"));
    CHECK(contains(error_of([&] { bag(flat, g.placeholder("fo", {2})); }), "offsets must be int32 or int64 [B]"));
    CHECK(
        contains(error_of([&] { bag(flat, offsets, g.placeholder("w", {-1})); }), "per_sample_weights need mode sum"));
    CHECK(contains(error_of([] { nn::EmbeddingBag(5, 3, {.padding_idx = -6}); }), "padding_idx -6 out of range"));
    // An offset past the ids gives an empty bag; a first offset past 0 puts ids in no bag: an error when run.
    Tensor y = bag(flat, offsets);
    Session s(g);
    const NDArray ids = NDArray::from<int64_t>({1, 2, 3}, {3});
    const NDArray past = s.run1(y, {{flat, ids}, {offsets, NDArray::from<int64_t>({0, 9}, {2})}});
    for (double v : values(past.slice({{1, 2, 1}}))) CHECK(v == 0.0);
    CHECK(contains(error_of([&] {
                     s.run1(y, {{flat, ids}, {offsets, NDArray::from<int64_t>({1, 2}, {2})}});
                   }),
                   "index -1 out of range"));
  }

  TEST_CASE("LanguageModel: logits [T, N, vocab]; a few SGD steps fit a repeating text") {
    const int64_t V = 7, T = 5, N = 2;
    Graph g;
    nn::LanguageModel lm(V, {.embed = 8, .hidden = 16, .layers = 2, .dropout = 0.0});
    Tensor ids = g.placeholder("ids", {T, N}, int64), target = g.placeholder("target", {T * N}, int64);
    auto [logits, st] = lm(ids, {});
    CHECK(logits.shape() == Shape{T, N, V});
    CHECK(st.h.shape() == Shape{2, N, 16});
    std::vector<std::string> names;
    for (auto& [n, t] : lm.named_parameters()) names.push_back(n);
    CHECK(names.front() == "encoder/weight");
    CHECK(names[1] == "rnn/weight_ih_l0");
    CHECK(names.back() == "decoder/bias");
    Tensor loss = nn::cross_entropy(reshape(logits, {T * N, V}), target);
    optim::Adam opt(lm, {.lr = 0.01});
    Tensor step = opt.minimize(loss);
    Session s(g, {.threads = 2, .seed = 1});
    // The sequence 0 1 2 3 4 5 6 0 1 ... in two columns.
    std::vector<int64_t> seq;
    for (int i = 0; i < 60; ++i) seq.push_back(i % V);
    NDArray data = NDArray::from<int64_t>(std::vector<int64_t>(seq.begin(), seq.begin() + T * N), {T, N});
    NDArray next = NDArray::from<int64_t>(std::vector<int64_t>(seq.begin() + N, seq.begin() + N + T * N), {T * N});
    double first = 0, last = 0;
    for (int it = 0; it < 150; ++it) {
      double l = s.run({loss}, {{ids, data}, {target, next}}, {step})[0].item();
      if (it == 0) first = l;
      last = l;
    }
    CHECK(first > 1.5);
    CHECK(last < 0.1);
  }

  TEST_CASE("LanguageModel with tied weights: the decoder reads the encoder's table; PyTorch's state_dict") {
    const int64_t V = 7, T = 5, N = 2;
    Graph g;
    nn::LanguageModel lm(
        V, {.cell = nn::CellKind::gru, .embed = 8, .hidden = 8, .layers = 1, .dropout = 0.0, .tie_weights = true});
    CHECK(lm.describe() == "LanguageModel(vocab=7, gru, dropout=0, tied)");
    Tensor ids = g.placeholder("ids", {T, N}, int64), target = g.placeholder("target", {T * N}, int64);
    auto [logits, st] = lm(ids, {});
    CHECK(logits.shape() == Shape{T, N, V});
    // A parameter once (so an optimizer updates it once), under both names in the state_dict, as PyTorch's.
    std::vector<std::string> names;
    for (auto& [n, t] : lm.named_parameters()) names.push_back(n);
    CHECK(std::count(names.begin(), names.end(), "decoder/weight") == 0);
    CHECK(names.back() == "decoder/bias");
    CHECK(lm.num_parameters() == V * 8 + 2 * (3 * 8 * 8 + 3 * 8) + V);
    const auto sd = lm.state_dict();
    auto key = [&](const std::string& k) {
      for (auto& [n, t] : sd)
        if (n == k) return t;
      return Tensor();
    };
    REQUIRE(key("decoder.weight").valid());
    CHECK(key("decoder.weight").is(key("encoder.weight")));
    CHECK(sd[sd.size() - 2].first == "decoder.weight");
    // The logits use the table: h E^T + b.
    Session s(g, {.seed = 2});
    NDArray idv = NDArray::from<int64_t>({0, 1, 2, 3, 4, 5, 6, 0, 1, 2}, {T, N});
    const NDArray table = s.get(key("encoder.weight"));
    const auto r = s.run({logits, st.h}, {{ids, idv}});
    const NDArray b = s.get(key("decoder.bias"));
    // The last step's logits of column 1 from the final hidden state.
    for (int64_t v = 0; v < V; ++v) {
      double want = b.at({v});
      for (int64_t j = 0; j < 8; ++j) want += double(r[1].at({0, 1, j})) * double(table.at({v, j}));
      CHECK(r[0].at({T - 1, 1, v}) == doctest::Approx(want).epsilon(1e-5));
    }
    // It trains (both uses of the table get gradient), and its checkpoint round-trips.
    Tensor loss = nn::cross_entropy(reshape(logits, {T * N, V}), target);
    optim::Adam opt(lm, {.lr = 0.02});
    Tensor step = opt.minimize(loss);
    NDArray next = NDArray::from<int64_t>({2, 3, 4, 5, 6, 0, 1, 2, 3, 4}, {T * N});
    double first = 0, last = 0;
    for (int it = 0; it < 150; ++it) {
      last = s.run({loss}, {{ids, idv}, {target, next}}, {step})[0].item();
      if (it == 0) first = last;
    }
    CHECK(last < first / 4);
    test::TempDir dir;
    const std::string path = dir.path / "tied.safetensors";
    checkpoint::save(s, lm, path);
    Session fresh(g, {.seed = 9});
    checkpoint::load(fresh, lm, path);
    CHECK(fresh.get(key("encoder.weight")).to_vector<float>() == s.get(key("encoder.weight")).to_vector<float>());
    // A file whose two copies of the tied table differ is refused, the variables unchanged.
    auto tensors = checkpoint::read(path);
    NDArray other = tensors.at("decoder.weight").clone();
    other.data<float>()[3] += 1.0f;
    tensors["decoder.weight"] = other;
    const std::string differing = dir.path / "differing.safetensors";
    checkpoint::write(differing, {tensors.begin(), tensors.end()});
    Session third(g, {.seed = 9});
    const NDArray before = third.get(key("encoder.weight"));
    CHECK(contains(
        error_of([&] { checkpoint::load(third, lm, differing); }),
        "'encoder.weight' and 'decoder.weight' are one tied variable 'encoder/weight' but differ in the file"));
    CHECK(third.get(key("encoder.weight")).to_vector<float>() == before.to_vector<float>());
    CHECK(contains(error_of([] { nn::LanguageModel(5, {.embed = 4, .hidden = 6, .tie_weights = true}); }),
                   "tied weights need embed == hidden, got 4 and 6"));
  }
}
