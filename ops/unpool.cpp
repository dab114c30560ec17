// Max unpooling, PyTorch's max_unpool2d: the partial inverse of max pooling.
//
//   max_unpool2d(y [N, C, h, w], indices [N, C, h, w] int64), attribute
//   output_size [H, W] -> zeros [N, C, H, W] with y[n, c, o] written at position indices[n, c, o]
//        (h * W + w in the plane, as max_pool2d_indices gives it); an index
//        written twice keeps the last value, as PyTorch's CPU kernel.
//   max_unpool2d_grad(dz [N, C, H, W], indices) -> dz read at the indices
//     (PyTorch's backward: a gather, also for an index written twice).
//
// Each is the other's gradient. An index outside [0, H * W) is an error
// naming it when run.

#include "ops/common.hpp"
#include "ops/ops.hpp"

namespace loom {

using detail::fits;
using detail::for_each_index;
using detail::rand_array;
using detail::set_at;
using V = std::vector<int64_t>;

namespace {

/// Checks values (or a gradient) `v` [N, C, ., .] and int64 indices [N, C, h, w].
void check_indices(const InferContext& c, const TensorType& v, const TensorType& indices) {
  c.check(is_floating(v.dtype), "dtype ", dtype_name(v.dtype), " not supported (float32, float64)");
  c.check(indices.dtype == int64, "indices must be int64 (max_pool2d_indices'), got ", dtype_name(indices.dtype));
  c.check(v.shape.size() == 4 && indices.shape.size() == 4, "expected 4-D [N, C, ., .] values and indices, got ",
          S(v.shape), " and ", S(indices.shape));
  c.check(fits({v.shape[0], v.shape[1]}, {indices.shape[0], indices.shape[1]}), "indices ", S(indices.shape),
          " must have the batch and channels of ", S(v.shape));
}

/// The flat plane position of index i of `indices` (named in the error when outside the plane).
int64_t position(const NDArray& indices, const V& at, int64_t plane) {
  const int64_t p = int64_t(indices.at(at));
  LOOM_CHECK(p >= 0 && p < plane, "max_unpool2d: index ", p, " out of range [0, ", plane, ")");
  return p;
}

/// Indices of distinct positions in a 4x5 plane for each of [2, 3] planes of 2x2 values.
NDArray example_indices() {
  V v;
  for (int64_t plane = 0; plane < 6; ++plane)
    for (int64_t o = 0; o < 4; ++o) v.push_back((plane * 7 + o * 5) % 20);
  return NDArray::from<int64_t>(v, {2, 3, 2, 2});
}

const bool registered = [] {
  {
    OpDef d;
    d.name = "max_unpool2d";
    d.min_inputs = d.max_inputs = 2;  // y, indices
    d.attrs = {attr::required("output_size", AttrKind::integers)};
    d.doc = "zeros [N, C, H, W] with y written at the indices of its planes (PyTorch's max_unpool2d)";
    d.infer = [](const InferContext& c) {
      check_indices(c, c.in[0], c.in[1]);
      c.check(c.in[1].shape == c.in[0].shape, "indices ", S(c.in[1].shape), " must be shaped as y ", S(c.in[0].shape));
      const V& o = c.attrs.ints("output_size");
      c.check(o.size() == 2 && o[0] > 0 && o[1] > 0 && o[0] <= (int64_t(1) << 31) && o[1] <= (int64_t(1) << 31),
              "output_size must be 2 positive values (H, W) up to 2^31, got ", attr_str(o));
      return std::vector<TensorType>{{c.in[0].dtype, {c.in[0].shape[0], c.in[0].shape[1], o[0], o[1]}}};
    };
    d.grad = [](const GradContext& c) {
      const Tensor dy = c.inputs[0].graph().add1("max_unpool2d_grad", {c.dout(0), c.inputs[1]});
      return std::vector<Tensor>{dy, Tensor()};
    };
    d.reference = [](std::span<const NDArray> in, const Attrs& a) {
      const NDArray &y = in[0], &ix = in[1];
      const int64_t H = a.ints("output_size")[0], W = a.ints("output_size")[1];
      NDArray out = NDArray::zeros({y.shape()[0], y.shape()[1], H, W}, y.dtype());
      for_each_index(y.shape(), [&](const V& at) {
        const int64_t p = position(ix, at, H * W);
        set_at(out, {at[0], at[1], p / W, p % W}, y.at(at));
      });
      return std::vector<NDArray>{out};
    };
    d.examples = [](uint64_t seed) {
      // Overlapping windows repeat indices: the last value is kept (and the gradient, PyTorch's gather, is
      // not the transpose there: no gradient check).
      const NDArray repeated = NDArray::from<int64_t>({4, 4, 1, 4, 0, 1, 2, 2, 2, 0, 2, 3}, {1, 2, 2, 3});
      return std::vector<OpExample>{{"2x2 values into 4x5 planes",
                                     {rand_array({2, 3, 2, 2}, -1, 1, seed), example_indices()},
                                     {{"output_size", V{4, 5}}}},
                                    {"repeated indices",
                                     {rand_array({1, 2, 2, 3}, -1, 1, seed + 1), repeated},
                                     {{"output_size", V{2, 3}}},
                                     {},
                                     false}};
    };
    register_op(std::move(d));
  }
  {
    OpDef d;
    d.name = "max_unpool2d_grad";
    d.min_inputs = d.max_inputs = 2;  // dz, indices
    d.attrs = AttrSchema::none();
    d.doc = "dz read at the indices of its planes: the gradient of max_unpool2d";
    d.infer = [](const InferContext& c) {
      check_indices(c, c.in[0], c.in[1]);
      c.check(c.in[0].shape[2] > 0 && c.in[0].shape[3] > 0, "dz's H and W must be known and positive, got ",
              S(c.in[0].shape));
      return std::vector<TensorType>{{c.in[0].dtype, c.in[1].shape}};
    };
    d.grad = [](const GradContext& c) {
      const Shape& s = c.inputs[0].shape();
      const Tensor ddz =
          c.inputs[0].graph().add1("max_unpool2d", {c.dout(0), c.inputs[1]}, {{"output_size", V{s[2], s[3]}}});
      return std::vector<Tensor>{ddz, Tensor()};
    };
    d.reference = [](std::span<const NDArray> in, const Attrs&) {
      const NDArray &dz = in[0], &ix = in[1];
      const Shape& s = dz.shape();
      NDArray out = NDArray::empty(ix.shape(), dz.dtype());
      for_each_index(ix.shape(), [&](const V& at) {
        const int64_t p = position(ix, at, s[2] * s[3]);
        set_at(out, at, dz.at({at[0], at[1], p / s[3], p % s[3]}));
      });
      return std::vector<NDArray>{out};
    };
    d.examples = [](uint64_t seed) {
      return std::vector<OpExample>{
          {"4x5 planes read at 2x2 indices", {rand_array({2, 3, 4, 5}, -1, 1, seed), example_indices()}, {}}};
    };
    register_op(std::move(d));
  }
  return true;
}();

}  // namespace

Tensor max_unpool2d(const Tensor& y, const Tensor& indices, const std::vector<int64_t>& output_size) {
  return y.graph().add1("max_unpool2d", {y, indices}, {{"output_size", output_size}});
}

}  // namespace loom
