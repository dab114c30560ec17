// Fused optimizer updates. Adam's update was the largest node of a training
// step as a chain of 13 element-wise ops (even fused, an interpreted chain
// costs several passes over L1 per element), so it is one primitive with a
// tight kernel: one read of p, m, v, g and one write of p, m, v per element.

#include "ops/common.hpp"
#include "ops/ops.hpp"

namespace loom {

using detail::rand_array;

namespace {

const bool registered = [] {
  OpDef d;
  d.name = "adam_update";
  d.attrs = {attr::required("beta1", AttrKind::real), attr::required("beta2", AttrKind::real)};
  d.min_inputs = d.max_inputs = 7;  // p, m, v, g, step_size, eps_hat, decay
  d.elementwise = true;             // element i of each output reads element i of p, m, v, g
  d.inplace = true;                 // outputs may overwrite p, m, v (their variables)
  d.infer = [](const InferContext& c) {
    const TensorType& p = c.in[0];
    c.check(is_floating(p.dtype), "dtype ", dtype_name(p.dtype), " not supported (float32, float64)");
    const char* names[] = {"p", "m", "v", "g", "step_size", "eps_hat", "decay"};
    for (size_t i = 1; i < 7; ++i) {
      c.check(c.in[i].dtype == p.dtype, names[i], " has dtype ", dtype_name(c.in[i].dtype), ", expected ",
              dtype_name(p.dtype));
      if (i < 4) c.check(c.in[i].shape == p.shape, names[i], " has shape ", S(c.in[i].shape), ", expected ", S(p.shape));
      else c.check(c.in[i].shape.empty(), names[i], " must be a scalar, got ", S(c.in[i].shape));
    }
    return std::vector<TensorType>{p, p, p};
  };
  d.reference = [](std::span<const NDArray> in, const Attrs& a) {
    const double b1 = a.f("beta1"), b2 = a.f("beta2");
    const double step = in[4].item(), eps = in[5].item(), decay = in[6].item();
    std::vector<NDArray> out;
    for (int k = 0; k < 3; ++k) out.push_back(NDArray::empty(in[0].shape(), in[0].dtype()));
    detail::for_each_index(in[0].shape(), [&](const std::vector<int64_t>& i) {
      double g = in[3].at(i);
      double m = in[1].at(i) * b1 + g * (1 - b1);
      double v = in[2].at(i) * b2 + g * g * (1 - b2);
      detail::set_at(out[0], i, in[0].at(i) * decay - step * m / (std::sqrt(v) + eps));
      detail::set_at(out[1], i, m);
      detail::set_at(out[2], i, v);
    });
    return out;
  };
  d.examples = [](uint64_t seed) {
    return std::vector<OpExample>{
        {"adam step", {rand_array({5, 7}, -1, 1, seed), rand_array({5, 7}, -0.1, 0.1, seed + 1),
                       rand_array({5, 7}, 0, 0.01, seed + 2), rand_array({5, 7}, -1, 1, seed + 3),
                       NDArray::scalar(0.01, float64), NDArray::scalar(1e-8, float64), NDArray::scalar(0.999, float64)},
         {{"beta1", 0.9}, {"beta2", 0.999}}, {}, false}};
  };
  register_op(std::move(d));
  return true;
}();

}  // namespace

std::vector<Tensor> adam_update(const Tensor& p, const Tensor& m, const Tensor& v, const Tensor& g,
                                const Tensor& step_size, const Tensor& eps_hat, const Tensor& decay, double beta1,
                                double beta2) {
  return p.graph().add("adam_update", {p, m, v, g, step_size, eps_hat, decay}, {{"beta1", beta1}, {"beta2", beta2}});
}

}  // namespace loom
