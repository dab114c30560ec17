// Collective ops: allreduce (sum | mean, one or several tensors as one
// message), broadcast and its adjoint reduce_to_root, allgather and its adjoint
// reduce_scatter. Nodes record the group size they were built for ("ranks");
// kernels check it against the process group they run in (core/comm.hpp).
// References compute what every rank gets when every rank holds the same inputs.

#include "core/comm.hpp"
#include "ops/common.hpp"
#include "ops/ops.hpp"

namespace loom {

namespace {

using detail::rand_array;

AttrSpec ranks_attr() { return attr::required("ranks", AttrKind::integer); }

int64_t ranks_of(const InferContext& c) {
  const int64_t r = c.attrs.i("ranks");
  c.check(r >= 1 && r <= (int64_t(1) << 24), "ranks ", r, " is not a group size");
  return r;
}

void check_root(const InferContext& c, int64_t ranks) {
  const int64_t root = c.attrs.i("root");
  c.check(root >= 0 && root < ranks, "root ", root, " is not a rank of a group of ", ranks);
}

Attrs group_attrs() { return {{"ranks", int64_t(communicator()->size())}}; }

OpDef collective(const char* name, AttrSchema attrs) {
  OpDef d;
  d.name = name;
  d.min_inputs = d.max_inputs = 1;
  d.attrs = std::move(attrs);
  d.collective = true;
  d.stateful = true;  // never merged with an equal node nor folded at compile time
  return d;
}

std::vector<OpExample> one_input_examples(uint64_t seed, Attrs attrs) {
  return {{"matrix", {rand_array({3, 4}, -1, 1, seed)}, attrs}, {"vector", {rand_array({5}, -1, 1, seed + 1)}, attrs}};
}

void def_allreduce() {
  OpDef d = collective("allreduce", {attr::defaulted("reduction", std::string("sum")), ranks_attr()});
  d.max_inputs = -1;
  d.infer = [](const InferContext& c) {
    ranks_of(c);
    const std::string& r = c.attrs.get<std::string>("reduction");
    c.check(r == "sum" || r == "mean", "reduction '", r, "' is not sum or mean");
    std::vector<TensorType> out;
    for (const TensorType& t : c.in) {
      c.check(t.dtype == c.in[0].dtype, "inputs of one allreduce share a dtype: ", dtype_name(t.dtype), " and ",
              dtype_name(c.in[0].dtype));
      out.push_back(t);
    }
    const DType t = c.in[0].dtype;
    c.check(t == float32 || t == float64 || ((t == int32 || t == int64) && r == "sum"), "cannot ", r, "-reduce ",
            dtype_name(t), " (float32/64; int32/64 for sum)");
    return out;
  };
  d.grad = [](const GradContext& c) {
    std::vector<Tensor> dys;
    for (size_t i = 0; i < c.outputs.size(); ++i) dys.push_back(c.dout(i));
    return allreduce(dys, c.attrs.get<std::string>("reduction") == "mean" ? Reduction::mean : Reduction::sum);
  };
  d.reference = [](std::span<const NDArray> in, const Attrs& a) {
    const double f = a.get<std::string>("reduction") == "mean" ? 1.0 : double(a.i("ranks"));
    std::vector<NDArray> out;
    for (const NDArray& x : in)
      out.push_back(
          detail::ref_elementwise(std::span(&x, 1), x.dtype(), [f](const std::vector<double>& v) { return v[0] * f; }));
    return out;
  };
  d.examples = [](uint64_t seed) {
    auto ex = one_input_examples(seed, {{"reduction", std::string("sum")}, {"ranks", int64_t(1)}});
    ex.push_back({"mean of two",
                  {rand_array({2, 3}, -1, 1, seed + 2), rand_array({4}, -1, 1, seed + 3)},
                  {{"reduction", std::string("mean")}, {"ranks", int64_t(1)}}});
    return ex;
  };
  d.doc = "sum or mean over the ranks of the group, on every rank";
  register_op(std::move(d));
}

void def_rooted(const char* name, bool sum) {
  OpDef d = collective(name, {attr::defaulted("root", int64_t(0)), ranks_attr()});
  d.infer = [](const InferContext& c) {
    check_root(c, ranks_of(c));
    return detail::like_input(c);
  };
  d.grad = [sum](const GradContext& c) {
    const int root = int(c.attrs.i("root"));
    return std::vector<Tensor>{sum ? broadcast(c.dout(0), root) : reduce_to_root(c.dout(0), root)};
  };
  // Every rank holding x: broadcast gives x; the root of a reduction gets ranks * x.
  d.reference = [sum](std::span<const NDArray> in, const Attrs& a) {
    const double f = sum ? double(a.i("ranks")) : 1.0;
    return std::vector<NDArray>{
        detail::ref_elementwise(in, in[0].dtype(), [f](const std::vector<double>& v) { return v[0] * f; })};
  };
  d.examples = [](uint64_t seed) { return one_input_examples(seed, {{"root", int64_t(0)}, {"ranks", int64_t(1)}}); };
  d.doc = sum ? "the sum over ranks on the root rank, zeros elsewhere" : "the root rank's tensor on every rank";
  register_op(std::move(d));
}

void def_gather(const char* name, bool gather) {
  OpDef d = collective(name, {ranks_attr()});
  d.infer = [gather](const InferContext& c) {
    const int64_t r = ranks_of(c);
    const TensorType& x = c.in[0];
    c.check(!x.shape.empty(), "needs a tensor of rank >= 1 (it ", gather ? "concatenates" : "splits", " axis 0)");
    TensorType out = x;
    int64_t& n = out.shape[0];
    if (gather && n >= 0) n = c.mul(n, r);
    if (!gather && n >= 0) {
      c.check(n % r == 0, "axis 0 of ", S(x.shape), " does not split into ", r, " ranks");
      n /= r;
    }
    if (!gather)
      c.check(x.dtype == float32 || x.dtype == float64 || x.dtype == int32 || x.dtype == int64, "cannot sum ",
              dtype_name(x.dtype));
    return std::vector<TensorType>{out};
  };
  d.grad = [gather](const GradContext& c) {
    return std::vector<Tensor>{gather ? reduce_scatter(c.dout(0)) : allgather(c.dout(0))};
  };
  // Every rank holding x: allgather repeats x ranks times; reduce_scatter gives ranks * rows of this rank (rank 0).
  d.reference = [gather](std::span<const NDArray> in, const Attrs& a) {
    const int64_t r = a.i("ranks");
    if (gather) {
      Shape s = in[0].shape();
      const int64_t n = s[0];
      s[0] *= r;
      NDArray out = NDArray::empty(s, in[0].dtype());
      for (int64_t k = 0; k < r; ++k) out.slice({{k * n, (k + 1) * n, 1}}).assign(in[0]);
      return std::vector<NDArray>{out};
    }
    const NDArray x = in[0].slice({{0, in[0].shape()[0] / r, 1}}).clone();
    return std::vector<NDArray>{detail::ref_elementwise(
        std::span(&x, 1), x.dtype(), [r](const std::vector<double>& v) { return v[0] * double(r); })};
  };
  d.examples = [](uint64_t seed) { return one_input_examples(seed, {{"ranks", int64_t(1)}}); };
  d.doc = gather ? "every rank's tensor concatenated along axis 0 in rank order"
                 : "this rank's block of axis 0 of the sum over ranks";
  register_op(std::move(d));
}

const bool registered = [] {
  def_allreduce();
  def_rooted("broadcast", false);
  def_rooted("reduce_to_root", true);
  def_gather("allgather", true);
  def_gather("reduce_scatter", false);
  return true;
}();

Graph& graph_of(const std::vector<Tensor>& xs, const char* op) {
  LOOM_CHECK(!xs.empty() && xs[0].valid(), op, ": no input tensor");
  return xs[0].graph();
}

}  // namespace

std::vector<Tensor> allreduce(const std::vector<Tensor>& xs, Reduction reduction) {
  Attrs a = group_attrs();
  a.set("reduction", std::string(reduction == Reduction::mean ? "mean" : "sum"));
  return graph_of(xs, "allreduce").add("allreduce", xs, a);
}
Tensor allreduce(const Tensor& x, Reduction reduction) { return allreduce(std::vector<Tensor>{x}, reduction)[0]; }

Tensor broadcast(const Tensor& x, int root) {
  return graph_of({x}, "broadcast").add1("broadcast", {x}, group_attrs().set("root", int64_t(root)));
}
Tensor reduce_to_root(const Tensor& x, int root) {
  return graph_of({x}, "reduce_to_root").add1("reduce_to_root", {x}, group_attrs().set("root", int64_t(root)));
}
Tensor allgather(const Tensor& x) { return graph_of({x}, "allgather").add1("allgather", {x}, group_attrs()); }
Tensor reduce_scatter(const Tensor& x) {
  return graph_of({x}, "reduce_scatter").add1("reduce_scatter", {x}, group_attrs());
}

}  // namespace loom
