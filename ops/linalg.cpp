// matmul: batched, with broadcast batch dims (numpy semantics).

#include <climits>

#include "ops/common.hpp"
#include "ops/ops.hpp"

namespace loom {

using detail::rand_array;

namespace {

const bool registered = [] {
  OpDef d;
  d.name = "matmul";
  d.min_inputs = d.max_inputs = 2;
  d.attrs = AttrSchema::none();
  d.epilogue = true;  // its CPU kernel runs element-wise readers of its output on each block of rows
  d.infer = [](const InferContext& c) {
    const Shape &a = c.in[0].shape, &b = c.in[1].shape;
    c.check(c.in[0].dtype == c.in[1].dtype, "dtypes differ: ", dtype_name(c.in[0].dtype), " vs ",
            dtype_name(c.in[1].dtype));
    c.check(is_floating(c.in[0].dtype), "dtype ", dtype_name(c.in[0].dtype), " not supported (float32, float64)");
    c.check(a.size() >= 2 && b.size() >= 2, "operands need at least 2 dims: ", S(a), " x ", S(b));
    int64_t k1 = a[a.size() - 1], k2 = b[b.size() - 2];
    c.check(k1 == k2 || k1 < 0 || k2 < 0, "inner dimensions differ: ", S(a), " x ", S(b));
    for (int64_t d : {a[a.size() - 2], k1, b[b.size() - 1]})  // BLAS takes 32-bit dims and strides
      c.check(d <= INT32_MAX / 2, "matrix dims above 2^30 are not supported: ", S(a), " x ", S(b));
    Shape ba(a.begin(), a.end() - 2), bb(b.begin(), b.end() - 2);
    Shape batch;
    try {
      batch = broadcast_shapes(ba, bb, "matmul");
    } catch (const Error&) {
      c.fail("batch dimensions do not broadcast: ", S(a), " x ", S(b));
    }
    batch.push_back(a[a.size() - 2]);
    batch.push_back(b[b.size() - 1]);
    return std::vector<TensorType>{{c.in[0].dtype, batch}};
  };
  d.grad = [](const GradContext& c) {
    const Tensor &a = c.inputs[0], &b = c.inputs[1];
    Tensor dy = c.dout(0);
    Tensor da = matmul(dy, transpose(b));
    Tensor db;
    if (b.ndim() == 2 && b.op() == "permute") {
      // b is the transpose of a matrix W (nn::Linear's x @ W^T): compute dW = dy^T a
      // in W's layout, so that W's gradient (the transpose of this) needs no copy.
      int64_t k = a.shape().back(), n = b.shape().back();
      db = transpose(matmul(transpose(reshape(dy, {-1, n})), reshape(a, {-1, k})));
    } else if (b.ndim() == 2 && a.ndim() > 2) {
      // Shared weight: fold the batch into rows for one GEMM instead of a batched one plus a sum.
      int64_t k = a.shape().back(), n = b.shape().back();
      db = matmul(transpose(reshape(a, {-1, k})), reshape(dy, {-1, n}));
    } else {
      db = matmul(transpose(a), dy);
    }
    return std::vector<Tensor>{da, db};
  };
  d.reference = [](std::span<const NDArray> in, const Attrs&) {
    const NDArray &a = in[0], &b = in[1];
    Shape ba(a.shape().begin(), a.shape().end() - 2), bb(b.shape().begin(), b.shape().end() - 2);
    Shape s = broadcast_shapes(ba, bb);
    int64_t M = a.shape()[size_t(a.ndim() - 2)], K = a.shape().back(), N = b.shape().back();
    s.push_back(M);
    s.push_back(N);
    NDArray out = NDArray::empty(s, a.dtype());
    detail::for_each_index(s, [&](const std::vector<int64_t>& o) {
      std::vector<int64_t> batch(o.begin(), o.end() - 2);
      auto ia = detail::broadcast_index(batch, ba), ib = detail::broadcast_index(batch, bb);
      ia.push_back(o[o.size() - 2]);
      ia.push_back(0);
      ib.push_back(0);
      ib.push_back(o.back());
      double acc = 0;
      for (int64_t k = 0; k < K; ++k) {
        ia.back() = k;
        ib[ib.size() - 2] = k;
        acc += a.at(ia) * b.at(ib);
      }
      detail::set_at(out, o, acc);
    });
    return std::vector<NDArray>{out};
  };
  d.examples = [](uint64_t seed) {
    auto x = [&](Shape s) { return rand_array(s, -1, 1, seed++); };
    return std::vector<OpExample>{{"3x4 @ 4x5", {x({3, 4}), x({4, 5})}, {}},
                                  {"batched", {x({2, 3, 4}), x({2, 4, 2})}, {}},
                                  {"broadcast weight", {x({2, 2, 3, 4}), x({4, 3})}, {}},
                                  {"broadcast batch", {x({3, 4}), x({2, 4, 2})}, {}}};
  };
  // remat cost: 2 FLOPs per multiply-add, K of them per output element
  d.flops = [](std::span<const TensorType> in, std::span<const TensorType> out, const Attrs&) {
    return 2.0 * double(numel(out[0].shape)) * double(in[0].shape.back());
  };
  register_op(std::move(d));
  return true;
}();

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  LOOM_CHECK(a.ndim() >= 1 && b.ndim() >= 1, "matmul: operands need at least 1 dim, got ", S(a.shape()), " x ",
             S(b.shape()));
  Tensor x = a.ndim() == 1 ? expand_dims(a, {0}) : a;
  Tensor y = b.ndim() == 1 ? expand_dims(b, {1}) : b;
  Tensor r = a.graph().add1("matmul", {x, y});
  if (a.ndim() == 1) r = squeeze(r, {-2});
  if (b.ndim() == 1) r = squeeze(r, {-1});
  return r;
}

}  // namespace loom
