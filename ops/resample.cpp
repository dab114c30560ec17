// Resampling along one axis: each output position is a weighted sum of a
// few input positions (taps), y[.., o, ..] = sum_k weights[o, k] * x[..,
// sources[o, k], ..]. Interpolation (nn::interpolate: nearest, linear,
// cubic) is one resample per image axis, with tables the frontend computes
// once from the sizes; a kernel of its own reads the input in place (no
// permute to bring the axis in front, as gather would need).
//
// Inputs: x, sources (int32 or int64 [out, K], each in [0, x.shape[axis])),
// weights (x's dtype, [out, K]). Attribute: axis.
// resample_grad(dy, sources, weights, x) is the transpose: dy[.., o, ..]
// times weights[o, k] added at x's position sources[o, k] (x for its shape).
// Both are linear in their first input and each other's gradient; the
// weights' gradient is a gather, a product and a sum.

#include "ops/common.hpp"
#include "ops/ops.hpp"

namespace loom {

using detail::fits;
using detail::for_each_index;
using detail::rand_array;
using detail::set_at;
using V = std::vector<int64_t>;

namespace {

/// Checks sources and weights against each other and x's dtype.
void check_tables(const InferContext& c, const TensorType& x) {
  const TensorType &src = c.in[1], &w = c.in[2];
  c.check(is_floating(x.dtype), "dtype ", dtype_name(x.dtype), " not supported (float32, float64)");
  c.check(!x.shape.empty(), "expected an input of rank >= 1, got a scalar");
  c.check(src.dtype == int32 || src.dtype == int64, "sources must be int32 or int64, got ", dtype_name(src.dtype));
  c.check(src.shape.size() == 2 && src.shape[0] >= 0 && src.shape[1] > 0,
          "sources must be a known [out, K] with K >= 1, got ", S(src.shape));
  c.check(w.dtype == x.dtype && w.shape == src.shape, "weights must be ", dtype_name(x.dtype), " ", S(src.shape),
          " like sources, got ", dtype_name(w.dtype), " ", S(w.shape));
}

/// x with the axis moved to the front (the layout the weights' gradient gathers from).
V axis_in_front(int64_t axis, int64_t rank) {
  V order{axis};
  for (int64_t a = 0; a < rank; ++a)
    if (a != axis) order.push_back(a);
  return order;
}

/// dL/dweights[o, k] = sum over the other positions of dy[.., o, ..] * x[.., sources[o, k], ..].
Tensor weights_grad(const Tensor& x, const Tensor& sources, const Tensor& dy, int64_t axis) {
  const V order = axis_in_front(axis, x.ndim());
  const Tensor rows = gather(permute(x, order), sources);  // [out, K, rest...]
  const Tensor d = expand_dims(permute(dy, order), {1});   // [out, 1, rest...]
  V rest;
  for (int64_t a = 2; a < rows.ndim(); ++a) rest.push_back(a);
  return rest.empty() ? rows * d : sum(rows * d, rest);
}

/// The reference: out[.., o, ..] (+)= w * in[.., i, ..] for every tap, forward or transposed.
NDArray ref_resample(const NDArray& in, const NDArray& src, const NDArray& w, int64_t axis, const Shape& out_shape,
                     bool transposed) {
  NDArray out = NDArray::zeros(out_shape, in.dtype());
  const int64_t K = src.shape()[1];
  for_each_index(transposed ? in.shape() : out_shape, [&](const V& at) {
    for (int64_t k = 0; k < K; ++k) {
      const int64_t o = at[size_t(axis)];
      V from = at;
      from[size_t(axis)] = int64_t(src.at({o, k}));
      const V &read = transposed ? at : from, &write = transposed ? from : at;
      set_at(out, write, out.at(write) + w.at({o, k}) * in.at(read));
    }
  });
  return out;
}

/// Linear-interpolation tables from `in` to `out` positions (2 taps) with an
/// edge tap repeated, and a 3-tap table to `out` < `in` (a downsampling).
std::vector<OpExample> examples(uint64_t seed, bool transposed) {
  const NDArray src2 = NDArray::from<int64_t>({0, 1, 0, 1, 1, 2, 2, 2, 2, 2}, {5, 2});
  const NDArray src3 = NDArray::from<int32_t>({0, 1, 2, 3, 4, 0}, {2, 3});
  const NDArray first = rand_array(transposed ? Shape{2, 5, 3} : Shape{2, 3, 3}, -1, 1, seed);
  const NDArray last = rand_array(transposed ? Shape{3, 2} : Shape{3, 5}, -1, 1, seed + 1);
  std::vector<OpExample> r{
      {"middle axis, 2 taps", {first, src2, rand_array({5, 2}, -1, 1, seed + 2)}, {{"axis", int64_t(1)}}},
      {"last axis, 3 taps, int32", {last, src3, rand_array({2, 3}, -1, 1, seed + 3)}, {{"axis", int64_t(1)}}}};
  if (transposed) {
    r[0].inputs.push_back(rand_array({2, 3, 3}, -1, 1, seed + 4));
    r[1].inputs.push_back(rand_array({3, 5}, -1, 1, seed + 5));
    for (OpExample& e : r) e.grad_inputs = {0, 2};  // x gives only its shape
  }
  return r;
}

const bool registered = [] {
  {
    OpDef d;
    d.name = "resample";
    d.min_inputs = d.max_inputs = 3;
    d.attrs = {attr::axis()};
    d.doc =
        "weighted sums of input positions along an axis: y[.., o, ..] = sum_k weights[o, k] * x[.., sources[o, k], ..]";
    d.infer = [](const InferContext& c) {
      check_tables(c, c.in[0]);
      Shape s = c.in[0].shape;
      s[size_t(c.attrs.i("axis"))] = c.in[1].shape[0];
      return std::vector<TensorType>{{c.in[0].dtype, s}};
    };
    d.grad = [](const GradContext& c) {
      const Tensor dy = c.dout(0);
      const Tensor dx = c.inputs[0].graph().add1("resample_grad", {dy, c.inputs[1], c.inputs[2], c.inputs[0]}, c.attrs);
      return std::vector<Tensor>{dx, Tensor(), weights_grad(c.inputs[0], c.inputs[1], dy, c.attrs.i("axis"))};
    };
    d.reference = [](std::span<const NDArray> in, const Attrs& a) {
      const int64_t axis = a.i("axis");
      Shape s = in[0].shape();
      s[size_t(axis)] = in[1].shape()[0];
      return std::vector<NDArray>{ref_resample(in[0], in[1], in[2], axis, s, false)};
    };
    d.examples = [](uint64_t seed) { return examples(seed, false); };
    register_op(std::move(d));
  }
  {
    OpDef d;
    d.name = "resample_grad";
    d.min_inputs = d.max_inputs = 4;  // dy, sources, weights, x (for its shape)
    d.shape_only_inputs = {3};
    d.attrs = {attr::axis("axis", 3)};
    d.doc = "transpose of resample: dy[.., o, ..] * weights[o, k] added at x's position sources[o, k]";
    d.infer = [](const InferContext& c) {
      const TensorType &dy = c.in[0], &x = c.in[3];
      check_tables(c, dy);
      const size_t axis = size_t(c.attrs.i("axis"));
      Shape want = x.shape;
      want[axis] = c.in[1].shape[0];
      c.check(dy.dtype == x.dtype && fits(dy.shape, want), "gradient ", dtype_name(dy.dtype), " ", S(dy.shape),
              " does not match resample's output ", dtype_name(x.dtype), " ", S(want));
      return std::vector<TensorType>{x};
    };
    d.grad = [](const GradContext& c) {
      const Tensor g = c.dout(0);
      const Tensor ddy = c.inputs[0].graph().add1("resample", {g, c.inputs[1], c.inputs[2]}, c.attrs);
      return std::vector<Tensor>{ddy, Tensor(), weights_grad(g, c.inputs[1], c.inputs[0], c.attrs.i("axis")), Tensor()};
    };
    d.reference = [](std::span<const NDArray> in, const Attrs& a) {
      return std::vector<NDArray>{ref_resample(in[0], in[1], in[2], a.i("axis"), in[3].shape(), true)};
    };
    d.examples = [](uint64_t seed) { return examples(seed, true); };
    register_op(std::move(d));
  }
  return true;
}();

}  // namespace

Tensor resample(const Tensor& x, int64_t axis, const Tensor& sources, const Tensor& weights) {
  return x.graph().add1("resample", {x, sources, weights}, {{"axis", axis}});
}

}  // namespace loom
