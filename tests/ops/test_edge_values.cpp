// Empty axes and infinities: the conventions of NumPy and PyTorch (values
// below are PyTorch 2's), and two registry sweeps that search every op for
// more instances: each example with a dim shrunk to 0, and each example with
// +inf, -inf or NaN planted in an input, run on the kernels and compared with
// the op's reference. A user mistake may raise loom::Error; nothing may crash,
// blame loom ("internal error") or disagree with the reference.

#include <cmath>
#include <set>

#include "core/autodiff.hpp"
#include "ops/check.hpp"
#include "tests/util.hpp"

using namespace loom;
using test::contains;
using test::error_of;

namespace {

constexpr double inf = INFINITY;

/// Values and gradients of f on one float64 row x, with loss sum(f(x) * [1, 2, ...]) as in the PyTorch script.
struct ValueGrad {
  std::vector<double> y, dx;
};
ValueGrad run_row(const std::function<Tensor(const Tensor&)>& f, const std::vector<double>& x) {
  Graph g;
  Tensor in = g.placeholder("x", {int64_t(x.size())}, float64);
  Tensor y = f(in);
  NDArray w = NDArray::arange(numel(y.shape()), float64).reshape(y.shape());
  Tensor loss = sum(y * (g.constant(w) + 1.0));
  Tensor dx = gradients(loss, {in})[0];
  Session s(g);
  auto out = s.run({y, dx}, {{in, NDArray::from<double>(x)}});
  return {out[0].to_vector<double>(), out[1].to_vector<double>()};
}

bool same(const std::vector<double>& got, const std::vector<double>& want) {
  if (got.size() != want.size()) return false;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(got[i]) != std::isnan(want[i])) return false;
    if (!std::isnan(want[i]) && !(std::fabs(got[i] - want[i]) <= 1e-12 + 1e-12 * std::fabs(want[i])) &&
        got[i] != want[i])
      return false;
  }
  return true;
}

// Ops the sweeps cannot run eagerly (tested in tests/core).
const std::set<std::string> kStructural = {"placeholder", "constant", "variable", "no_op", "assign"};

/// Inputs where a non-finite value reaches outputs as the kernel's tiles decide: fused
/// attention multiplies whole tiles of weights by v (0 * NaN = NaN) but skips tiles that
/// are fully masked, as PyTorch's flash kernels do; its backward spreads through GEMMs too.
/// Not listed: the conv family. Its float64 examples run the im2col kernels, which multiply
/// padding as the reference does; float32's oneDNN path skips padding (as PyTorch's float32),
/// which tests/ops/test_conv.cpp checks for what every path guarantees.
bool tile_dependent(const std::string& op, size_t input) {
  return (op == "attention" && input == 2) || op == "attention_grad";
}

/// Runs op eagerly and through a session; returns "" or what went wrong (a crash ends the test anyway).
std::string run_both(const OpDef& op, const std::vector<NDArray>& ins, const Attrs& attrs, std::vector<NDArray>& out) {
  try {
    out = invoke(op.name, ins, attrs, {.seed = 1});
  } catch (const Error& e) {
    out.clear();
    return std::string(e.what()).rfind("internal error", 0) == 0 ? std::string("eager: ") + e.what() : "";
  }
  try {
    Graph g;
    std::vector<Tensor> xs;
    Feeds feeds;
    for (size_t i = 0; i < ins.size(); ++i) {
      xs.push_back(g.placeholder("in" + std::to_string(i), ins[i].shape(), ins[i].dtype()));
      feeds.push_back({xs.back(), ins[i]});
    }
    std::vector<Tensor> ys = g.add(op.name, xs, attrs);
    Session s(g, {.threads = 2});
    std::vector<NDArray> got = s.run(ys, feeds);
    for (size_t i = 0; i < got.size() && i < out.size() && !op.stateful; ++i)
      if (!test::identical(got[i], out[i]) && !(got[i].numel() == 0 && got[i].shape() == out[i].shape()))
        return "a session's result differs from the eager call's in output " + std::to_string(i);
  } catch (const Error& e) {
    return std::string("session: ") + e.what();  // the eager call accepted it, so must the session
  }
  return "";
}

/// The first flat index where a and b differ by more than 1e-9 (relative above 1), or NaN
/// against not NaN, or different infinities; -1 when none does.
int64_t first_difference(const NDArray& a, const NDArray& b) {
  NDArray x = a.astype(float64).compact(), y = b.astype(float64).compact();
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double p = x.data<double>()[i], q = y.data<double>()[i];
    if (std::isnan(p) || std::isnan(q) || std::isinf(p) || std::isinf(q)) {
      if (!(std::isnan(p) && std::isnan(q)) && p != q) return i;
    } else if (!(std::fabs(p - q) <= 1e-9 * std::max(1.0, std::fabs(q)))) {
      return i;
    }
  }
  return -1;
}

/// "" when `got` matches the reference (NaN where it has NaN, infinities equal), else what differs.
std::string against_reference(const OpDef& op, const std::vector<NDArray>& ins, const Attrs& attrs,
                              const std::vector<NDArray>& got) {
  if (!op.reference || op.stateful) return "";
  std::vector<NDArray> want;
  try {
    want = op.reference(ins, attrs);
  } catch (const std::exception&) {
    return "";  // the oracle itself cannot say
  }
  for (size_t i = 0; i < want.size() && i < got.size(); ++i) {
    if (got[i].shape() != want[i].shape()) return "shape " + shape_str(got[i].shape()) + " vs " + shape_str(want[i].shape());
    if (const int64_t at = first_difference(got[i], want[i]); at >= 0)
      return "output " + std::to_string(i) + " at flat index " + std::to_string(at) + ": " +
             std::to_string(got[i].astype(float64).compact().data<double>()[at]) + " vs reference " +
             std::to_string(want[i].astype(float64).compact().data<double>()[at]) + "; " + got[i].str() +
             " vs reference " + want[i].str();
  }
  return "";
}

}  // namespace

TEST_SUITE("ops/edge") {
  TEST_CASE("infinities in logsumexp, softmax and log_softmax match PyTorch, values and gradients") {
    auto lse = [](const Tensor& x) { return logsumexp(x, {0}, true); };
    auto sm = [](const Tensor& x) { return softmax(x, 0); };
    auto lsm = [](const Tensor& x) { return log_softmax(x, 0); };
    const double nan = NAN;
    struct Case {
      std::vector<double> x;
      ValueGrad lse, sm, lsm;
    };
    // torch.logsumexp / softmax / log_softmax over dim 0 in float64, loss sum(y * [1, 2, ...]).
    const Case cases[] = {
        {{inf, 0}, {{inf}, {nan, 0}}, {{nan, nan}, {nan, nan}}, {{nan, nan}, {nan, nan}}},
        {{-inf, 0}, {{0}, {0, 1}}, {{0, 1}, {0, 0}}, {{-inf, 0}, {1, -1}}},
        {{-inf, -inf}, {{-inf}, {nan, nan}}, {{nan, nan}, {nan, nan}}, {{nan, nan}, {nan, nan}}},
        {{inf, inf}, {{inf}, {nan, nan}}, {{nan, nan}, {nan, nan}}, {{nan, nan}, {nan, nan}}},
        {{inf, -inf}, {{inf}, {nan, 0}}, {{nan, nan}, {nan, nan}}, {{nan, nan}, {nan, nan}}},
        {{-inf, 0, 1},
         {{1.3132616875182228}, {0, 0.2689414213699951, 0.7310585786300049}},
         {{0, 0.26894142136999516, 0.7310585786300049}, {0, -0.19661193324148196, 0.1966119332414816}},
         {{-inf, -1.3132616875182228, -0.31326168751822286}, {1, 0.3863514717800294, -1.3863514717800294}}},
    };
    for (const Case& c : cases) {
      CAPTURE(c.x);
      ValueGrad a = run_row(lse, c.x), b = run_row(sm, c.x), d = run_row(lsm, c.x);
      CHECK_MESSAGE(same(a.y, c.lse.y), "logsumexp ", a.y);
      CHECK_MESSAGE(same(a.dx, c.lse.dx), "logsumexp grad ", a.dx);
      CHECK_MESSAGE(same(b.y, c.sm.y), "softmax ", b.y);
      CHECK_MESSAGE(same(b.dx, c.sm.dx), "softmax grad ", b.dx);
      CHECK_MESSAGE(same(d.y, c.lsm.y), "log_softmax ", d.y);
      CHECK_MESSAGE(same(d.dx, c.lsm.dx), "log_softmax grad ", d.dx);
    }
  }

  TEST_CASE("cross-entropy with infinite logits matches PyTorch, value and gradient") {
    struct Case {
      std::vector<double> logits;
      int64_t label;
      double loss;
      std::vector<double> grad;
    };
    const double nan = NAN;
    const Case cases[] = {
        {{-inf, 0, 1}, 1, 1.3132616875182228, {0, -0.7310585786300049, 0.7310585786300049}},
        {{-inf, 0, 1}, 0, inf, {-1, 0.2689414213699951, 0.7310585786300049}},
        {{inf, 0, 1}, 0, nan, {nan, nan, nan}},
        {{-inf, -inf, -inf}, 0, nan, {nan, nan, nan}},
    };
    for (const Case& c : cases) {
      CAPTURE(c.logits);
      CAPTURE(c.label);
      Graph g;
      Tensor x = g.placeholder("x", {1, 3}, float64);
      Tensor y = g.placeholder("y", {1}, int64);
      Tensor loss = softmax_cross_entropy(x, y);
      Tensor dx = gradients(loss, {x})[0];
      Session s(g);
      auto out = s.run({loss, dx}, {{x, NDArray::from<double>(c.logits, {1, 3})}, {y, NDArray::from<int64_t>({c.label})}});
      CHECK(same(out[0].to_vector<double>(), {c.loss}));
      CHECK_MESSAGE(same(out[1].to_vector<double>(), c.grad), out[1]);
    }
  }

  TEST_CASE("max and min of infinite values: -inf stays -inf (was lowest())") {
    Graph g;
    Tensor x = g.placeholder("x", {2, 3});
    Session s(g);
    NDArray v = NDArray::from<float>({-INFINITY, -INFINITY, -INFINITY, INFINITY, INFINITY, INFINITY}, {2, 3});
    CHECK(s.run1(max(x, {1}), {{x, v}}).to_vector<float>() == std::vector<float>{-INFINITY, INFINITY});
    CHECK(s.run1(min(x, {1}), {{x, v}}).to_vector<float>() == std::vector<float>{-INFINITY, INFINITY});
    CHECK(s.run1(max(x), {{x, v}}).item() == INFINITY);
  }

  TEST_CASE("pow at a zero base or exponent and maximum/minimum at ties: PyTorch's gradients") {
    // torch: a = [0, 0, 0, -1, 2] (requires_grad), b = [0, 2, 0.5, 0, 3]; (a ** b).sum().backward() gives
    // a.grad [0, 0, inf, 0, 12], b.grad [0, 0, 0, nan, 8 ln 2]; torch.maximum/minimum split a tie's gradient.
    Graph g;
    Tensor a = g.placeholder("a", {5}, float64), b = g.placeholder("b", {5}, float64);
    auto grads = gradients(sum(pow(a, b)), {a, b});
    auto scalar_exponent = gradients(sum(pow(a, 0.0)), {a});
    auto mx = gradients(sum(maximum(a, b)), {a, b}), mn = gradients(sum(minimum(a, b)), {a, b});
    Session s(g);
    const Feeds feeds{{a, NDArray::from<double>({0, 0, 0, -1, 2})}, {b, NDArray::from<double>({0, 2, 0.5, 0, 3})}};
    auto r = s.run({grads[0], grads[1], scalar_exponent[0], mx[0], mx[1], mn[0], mn[1]}, feeds);
    CHECK(r[0].to_vector<double>() == std::vector<double>{0, 0, inf, 0, 12});
    auto db = r[1].to_vector<double>();
    CHECK(std::vector<double>(db.begin(), db.begin() + 3) == std::vector<double>{0, 0, 0});
    CHECK(std::isnan(db[3]));  // 1 * log(-1)
    CHECK(db.back() == doctest::Approx(8 * std::log(2.0)));
    CHECK(r[2].to_vector<double>() == std::vector<double>{0, 0, 0, 0, 0});
    // a vs b: tie, a < b, a < b, a < b, a < b.
    CHECK(r[3].to_vector<double>() == std::vector<double>{0.5, 0, 0, 0, 0});
    CHECK(r[4].to_vector<double>() == std::vector<double>{0.5, 1, 1, 1, 1});
    CHECK(r[5].to_vector<double>() == std::vector<double>{0.5, 1, 1, 1, 1});
    CHECK(r[6].to_vector<double>() == std::vector<double>{0.5, 0, 0, 0, 0});
    // A NaN makes every comparison false: PyTorch passes the whole gradient to both inputs.
    auto n = s.run({mx[0], mx[1]},
                   {{a, NDArray::from<double>({NAN, 1, 0, 0, 0})}, {b, NDArray::from<double>({1, 1, 0, 0, 0})}});
    CHECK(n[0].to_vector<double>()[0] == 1);
    CHECK(n[1].to_vector<double>()[0] == 1);
  }

  TEST_CASE("reductions over an empty axis: sum 0, mean NaN, max/min/argmax a loom::Error naming the node") {
    Graph g;
    Tensor e = g.placeholder("e", {2, 0});
    Tensor z = g.placeholder("z", {0, 3});
    Tensor d = g.placeholder("d", {-1, 3});
    Session s(g);
    Feeds f{{e, NDArray::zeros({2, 0})}, {z, NDArray::zeros({0, 3})}, {d, NDArray::zeros({0, 3})}};
    CHECK(s.run1(sum(z, {0}), f).to_vector<float>() == std::vector<float>{0, 0, 0});
    CHECK(s.run1(sum(e, {1}), f).to_vector<float>() == std::vector<float>{0, 0});
    CHECK(s.run1(sum(e), f).item() == 0);
    for (float m : s.run1(mean(e, {1}), f).to_vector<float>()) CHECK(std::isnan(m));
    CHECK(s.run1(sum(e, {0}), f).shape() == Shape{0});
    CHECK(contains(error_of([&] { max(z, {0}); }), "max 'max': reduction over axis 0 of [0,3], which is empty"));
    CHECK(contains(error_of([&] { min(e, {1}); }), "min 'min': reduction over axis 1 of [2,0]"));
    CHECK(contains(error_of([&] { argmax(e, 1); }), "argmax 'argmax': reduction over axis 1"));
    CHECK(contains(error_of([&] { argmax(z); }), "argmax"));
    CHECK(max(e, {0}).shape() == Shape{0});  // reducing a non-empty axis of an empty tensor is fine
    // A dynamic dim that resolves to 0: the error comes when the plan is compiled, naming the node.
    Tensor md = max(d, {0});
    CHECK(contains(error_of([&] { s.run1(md, f); }), "max 'max_1': reduction over axis 0 of [0,3], which is empty"));
    // As PyTorch: logsumexp over nothing is -inf; softmax and log_softmax of an empty axis are empty.
    CHECK(s.run1(logsumexp(e, {1}), f).to_vector<float>() == std::vector<float>{-INFINITY, -INFINITY});
    CHECK(s.run1(softmax(e), f).shape() == Shape{2, 0});
    CHECK(s.run1(log_softmax(e), f).shape() == Shape{2, 0});
    CHECK(s.run1(sum(z, {0}), f).shape() == Shape{3});  // the session is still usable
  }

  TEST_CASE("gradients through broadcasts with an empty operand are zeros") {
    Graph g;
    Tensor a = g.placeholder("a", {0, 3}), b = g.placeholder("b", {3}), c = g.placeholder("c", {2, 0});
    Tensor loss = sum(a * b) + sum(c + 1.0);
    auto grads = gradients(loss, {a, b, c});
    Session s(g);
    auto out = s.run(grads, {{a, NDArray::zeros({0, 3})}, {b, NDArray::full({3}, 2)}, {c, NDArray::zeros({2, 0})}});
    CHECK(out[0].shape() == Shape{0, 3});
    CHECK(out[1].to_vector<float>() == std::vector<float>{0, 0, 0});
    CHECK(out[2].shape() == Shape{2, 0});
  }

  TEST_CASE("sweep: every op example with one dim shrunk to 0") {
    int runs = 0, accepted = 0;
    for (const OpDef* op : registered_ops()) {
      if (kStructural.count(op->name) || !op->examples) continue;
      for (const OpExample& ex : op->examples(31)) {
        for (size_t i = 0; i < ex.inputs.size(); ++i)
          for (int64_t axis = 0; axis < ex.inputs[i].ndim(); ++axis) {
            // Shrink this dim, and the same broadcast dim of every other input of that size.
            const Shape& si = ex.inputs[i].shape();
            const int64_t from_right = int64_t(si.size()) - axis;
            std::vector<NDArray> ins;
            for (const NDArray& a : ex.inputs) {
              Shape s = a.shape();
              const int64_t k = int64_t(s.size()) - from_right;
              if (k >= 0 && (&a == &ex.inputs[i] || s[size_t(k)] == si[size_t(axis)])) s[size_t(k)] = 0;
              ins.push_back(NDArray::zeros(s, a.dtype()));
            }
            CAPTURE(op->name);
            CAPTURE(ex.label);
            CAPTURE(i);
            CAPTURE(axis);
            std::vector<NDArray> got;
            const std::string problem = run_both(*op, ins, ex.attrs, got);
            CHECK_MESSAGE(problem.empty(), problem);
            ++runs;
            if (got.empty()) continue;
            ++accepted;
            const std::string diff = against_reference(*op, ins, ex.attrs, got);
            CHECK_MESSAGE(diff.empty(), diff);
          }
      }
    }
    CHECK(runs > 200);
    CHECK(accepted > 100);
  }

  TEST_CASE("sweep: every float op example with +inf, -inf or NaN planted agrees with its reference") {
    int compared = 0;
    for (const OpDef* op : registered_ops()) {
      if (kStructural.count(op->name) || !op->examples || !op->reference || op->stateful) continue;
      for (const OpExample& ex : op->examples(37)) {
        for (size_t i = 0; i < ex.inputs.size(); ++i) {
          const NDArray& a = ex.inputs[i];
          if (!is_floating(a.dtype()) || a.numel() == 0 || tile_dependent(op->name, i)) continue;
          for (double v : {inf, -inf, double(NAN)})
            for (int64_t at : {int64_t(0), a.numel() / 2, a.numel() - 1}) {
              std::vector<NDArray> ins;
              for (const NDArray& b : ex.inputs) ins.push_back(b.astype(b.dtype()));
              ins[i].data<double>()[at] = v;
              CAPTURE(op->name);
              CAPTURE(ex.label);
              CAPTURE(i);
              CAPTURE(v);
              CAPTURE(at);
              std::vector<NDArray> got;
              const std::string problem = run_both(*op, ins, ex.attrs, got);
              CHECK_MESSAGE(problem.empty(), problem);
              if (got.empty()) continue;
              const std::string diff = against_reference(*op, ins, ex.attrs, got);
              CHECK_MESSAGE(diff.empty(), diff);
              ++compared;
            }
        }
      }
    }
    CHECK(compared > 300);
  }
}
