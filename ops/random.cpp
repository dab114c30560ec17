// Random ops on Philox streams: element i of a node's output depends only on
// (session seed, node id, run counter, i), so results are the same whatever
// the thread count and on every device. Each run draws new numbers.

#include <cmath>

#include "ops/common.hpp"
#include "ops/ops.hpp"

namespace loom {

namespace {

const bool registered = [] {
  for (const char* name : {"random_uniform", "random_normal"}) {
    OpDef d;
    d.name = name;
    d.min_inputs = 0;
    d.max_inputs = 1;
    d.attrs = {attr::optional("shape", AttrKind::integers), attr::required("a", AttrKind::real),
               attr::required("b", AttrKind::real), attr::optional("dtype", AttrKind::dtype)};
    d.shape_only_inputs = {0};
    d.stateful = true;
    d.infer = [](const InferContext& c) {
      DType t = c.attrs.get_or<DType>("dtype", c.in.empty() ? float32 : c.in[0].dtype);
      c.check(is_floating(t), "dtype ", dtype_name(t), " not supported (float32, float64)");
      const double a = c.attrs.f("a"), b = c.attrs.f("b");
      if (c.op == "random_uniform")
        c.check(std::isfinite(a) && std::isfinite(b) && a <= b, "needs finite bounds with low <= high, got low ", a,
                ", high ", b);
      else
        c.check(std::isfinite(a) && std::isfinite(b) && b >= 0, "needs a finite mean and stddev >= 0, got mean ", a,
                ", stddev ", b);
      if (!c.in.empty()) return std::vector<TensorType>{{t, c.in[0].shape}};
      const Shape& s = c.attrs.ints("shape");
      c.check(is_static(s), "shape ", S(s), " must be fully known (use the _like form for dynamic shapes)");
      return std::vector<TensorType>{{t, s}};
    };
    // No reference: values are checked statistically and for reproducibility in tests/ops.
    d.examples = [](uint64_t) {
      return std::vector<OpExample>{
          {"static", {}, {{"shape", Shape{64, 32}}, {"a", 0.0}, {"b", 1.0}, {"dtype", float32}}, {}, false},
          {"like", {NDArray::zeros({100}, float64)}, {{"a", -1.0}, {"b", 2.0}}, {}, false}};
    };
    register_op(std::move(d));
  }
  return true;
}();

}  // namespace

Tensor random_uniform(Graph& g, const Shape& shape, double low, double high, DType dtype) {
  return g.add1("random_uniform", {}, {{"shape", shape}, {"a", low}, {"b", high}, {"dtype", dtype}});
}
Tensor random_normal(Graph& g, const Shape& shape, double mean, double stddev, DType dtype) {
  return g.add1("random_normal", {}, {{"shape", shape}, {"a", mean}, {"b", stddev}, {"dtype", dtype}});
}
Tensor random_uniform_like(const Tensor& x, double low, double high) {
  DType t = is_floating(x.dtype()) ? x.dtype() : float32;
  return x.graph().add1("random_uniform", {x}, {{"a", low}, {"b", high}, {"dtype", t}});
}
Tensor random_normal_like(const Tensor& x, double mean, double stddev) {
  DType t = is_floating(x.dtype()) ? x.dtype() : float32;
  return x.graph().add1("random_normal", {x}, {{"a", mean}, {"b", stddev}, {"dtype", t}});
}
Tensor bernoulli_like(const Tensor& x, double p) {
  LOOM_CHECK(p >= 0 && p <= 1, "bernoulli: p must be in [0, 1], got ", p);
  return cast(random_uniform_like(x) < p, x.dtype());
}

}  // namespace loom
