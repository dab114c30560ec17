// The fused LSTM cell. As composite element-wise ops, one LSTM step is about
// 12 forward nodes (two fused groups: c and h) and twice as many in the
// backward; unrolled over 35 steps and 2 layers that is the largest part of a
// language model's graph and of its element-wise passes. lstm_cell does a
// step's gate work in one pass, lstm_cell_grad its backward in another.
//
//   lstm_cell(c_prev [..., H], gates [..., 4H], gates2 [..., 4H]?) -> h, c, act
//     pre = gates (+ gates2), in PyTorch's gate order i, f, g, o;
//     i, f, o = sigmoid(pre_i, pre_f, pre_o), g = tanh(pre_g),
//     c = f * c_prev + i * g, h = o * tanh(c);
//     act [..., 4H] = (i, f, g, o), kept for the gradient.
//   lstm_cell_grad(act, c_prev, c, dh, dc) -> dgates [..., 4H], dc_prev [..., H]
//
// Two gate inputs let the input projection (computed for all steps in one
// GEMM) and the step's hidden projection enter without an add node.
// lstm_cell_grad is differentiable too: its gradient is that of the same
// backward written with element-wise ops (lstm_backward_composite).

#include <cmath>

#include "ops/common.hpp"
#include "ops/ops.hpp"

namespace loom {

using detail::rand_array;

namespace {

double ref_sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

/// Checks that input k is [..., gate_mult[k] * H] with input 0's leading dims,
/// H being the last dim of input `h_input`, and that all share one floating dtype.
void check_cell_shapes(const InferContext& c, const std::vector<int64_t>& gate_mult, size_t h_input) {
  const Shape& base = c.in[0].shape;
  c.check(!base.empty() && !c.in[h_input].shape.empty(), "inputs must be [..., H], got ", S(base));
  const int64_t H = c.in[h_input].shape.back();
  for (size_t k = 0; k < c.in.size(); ++k) {
    const TensorType& t = c.in[k];
    c.check(t.dtype == c.in[0].dtype, "input ", k, " has dtype ", dtype_name(t.dtype), ", expected ",
            dtype_name(c.in[0].dtype));
    c.check(t.shape.size() == base.size(), "input ", k, " ", S(t.shape), " and input 0 ", S(base),
            " differ in rank");
    for (size_t d = 0; d + 1 < base.size(); ++d)
      c.check(t.shape[d] == base[d] || t.shape[d] < 0 || base[d] < 0, "input ", k, " ", S(t.shape), " and input 0 ",
              S(base), " differ in leading dims");
    const int64_t want = gate_mult[k] * H;
    c.check(H < 0 || t.shape.back() < 0 || t.shape.back() == want, "input ", k, " must be [..., ", want, "] (",
            gate_mult[k], " x H = ", H, "), got ", S(t.shape));
  }
  c.check(is_floating(c.in[0].dtype), "dtype ", dtype_name(c.in[0].dtype), " not supported (float32, float64)");
}

Shape with_last(Shape s, int64_t last) {
  s.back() = last < 0 ? -1 : last;
  return s;
}

/// Host forward of one cell (float64 math), rows x H.
std::vector<NDArray> ref_cell(std::span<const NDArray> in) {
  const NDArray& cp = in[0];
  const int64_t H = cp.shape().back(), rows = H ? cp.numel() / H : 0;
  NDArray C = cp.astype(float64).compact(), G1 = in[1].astype(float64).compact();
  NDArray G2 = in.size() > 2 ? in[2].astype(float64).compact() : NDArray();
  NDArray h = NDArray::empty(cp.shape(), float64), c = NDArray::empty(cp.shape(), float64);
  NDArray act = NDArray::empty(in[1].shape(), float64);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < H; ++j) {
      double pre[4];
      for (int q = 0; q < 4; ++q) {
        int64_t at = r * 4 * H + q * H + j;
        pre[q] = G1.data<double>()[at] + (G2.defined() ? G2.data<double>()[at] : 0.0);
      }
      double i = ref_sigmoid(pre[0]), f = ref_sigmoid(pre[1]), g = std::tanh(pre[2]), o = ref_sigmoid(pre[3]);
      double cv = f * C.data<double>()[r * H + j] + i * g;
      c.data<double>()[r * H + j] = cv;
      h.data<double>()[r * H + j] = o * std::tanh(cv);
      double a[4] = {i, f, g, o};
      for (int q = 0; q < 4; ++q) act.data<double>()[r * 4 * H + q * H + j] = a[q];
    }
  DType t = cp.dtype();
  return {h.astype(t), c.astype(t), act.astype(t)};
}

/// Host backward of one cell (float64 math).
std::vector<NDArray> ref_cell_grad(std::span<const NDArray> in) {
  NDArray A = in[0].astype(float64).compact(), CP = in[1].astype(float64).compact();
  NDArray C = in[2].astype(float64).compact(), DH = in[3].astype(float64).compact();
  NDArray DC = in[4].astype(float64).compact();
  const int64_t H = CP.shape().back(), rows = H ? CP.numel() / H : 0;
  NDArray dg = NDArray::empty(A.shape(), float64), dcp = NDArray::empty(CP.shape(), float64);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < H; ++j) {
      const double* a = A.data<double>() + r * 4 * H + j;
      double i = a[0], f = a[H], g = a[2 * H], o = a[3 * H];
      int64_t at = r * H + j;
      double tc = std::tanh(C.data<double>()[at]), dh = DH.data<double>()[at];
      double dct = DC.data<double>()[at] + dh * o * (1 - tc * tc);
      double* d = dg.data<double>() + r * 4 * H + j;
      d[0] = dct * g * i * (1 - i);
      d[H] = dct * CP.data<double>()[at] * f * (1 - f);
      d[2 * H] = dct * i * (1 - g * g);
      d[3 * H] = dh * tc * o * (1 - o);
      dcp.data<double>()[at] = dct * f;
    }
  DType t = in[0].dtype();
  return {dg.astype(t), dcp.astype(t)};
}

std::vector<Tensor> lstm_cell_grad_rule(const GradContext& c) {
  const bool any = c.douts[0].valid() || c.douts[1].valid();
  Tensor dgates, dc_prev;
  if (any) {
    auto r = c.inputs[0].graph().add("lstm_cell_grad", {c.outputs[2], c.inputs[0], c.outputs[1], c.dout(0), c.dout(1)});
    dgates = r[0], dc_prev = r[1];
  }
  if (c.douts[2].valid()) {
    // Someone used the activated gates themselves: d act / d pre, gate by gate.
    std::vector<Tensor> a = split(c.outputs[2], 4, -1), d = split(c.douts[2], 4, -1);
    auto dsig = [](const Tensor& s, const Tensor& g) { return g * s * (1.0 - s); };
    Tensor extra = concat({dsig(a[0], d[0]), dsig(a[1], d[1]), d[2] * (1.0 - a[2] * a[2]), dsig(a[3], d[3])}, -1);
    dgates = dgates.valid() ? dgates + extra : extra;
  }
  std::vector<Tensor> out{dc_prev, dgates};
  if (c.inputs.size() > 2) out.push_back(dgates);
  return out;
}

/// The gradient of lstm_cell_grad: the vector-Jacobian product of its
/// composite form, built by gradients() over that form. The inputs enter as
/// stop_gradient leaves: in the graph they depend on each other (dh on c_prev,
/// through the forward), and only the composite's own dependence counts.
std::vector<Tensor> lstm_cell_grad_grad(const GradContext& c) {
  std::vector<Tensor> ins;
  for (const Tensor& t : c.inputs) ins.push_back(stop_gradient(t));
  std::vector<Tensor> outs = lstm_backward_composite(ins[0], ins[1], ins[2], ins[3], ins[4]);
  Tensor s;
  for (size_t k = 0; k < outs.size(); ++k) {
    if (!c.douts[k].valid()) continue;
    Tensor term = sum(outs[k] * stop_gradient(c.douts[k]));
    s = s.valid() ? s + term : term;
  }
  if (!s.valid()) return std::vector<Tensor>(ins.size());
  return gradients(s, ins);
}

const bool registered = [] {
  {
    OpDef d;
    d.name = "lstm_cell";
    d.attrs = AttrSchema::none();
    d.min_inputs = 2;
    d.max_inputs = 3;
    d.infer = [](const InferContext& c) {
      check_cell_shapes(c, c.in.size() == 2 ? std::vector<int64_t>{1, 4} : std::vector<int64_t>{1, 4, 4}, 0);
      const TensorType& cp = c.in[0];
      return std::vector<TensorType>{cp, cp, {cp.dtype, with_last(cp.shape, cp.shape.back() * 4)}};
    };
    d.grad = lstm_cell_grad_rule;
    d.reference = [](std::span<const NDArray> in, const Attrs&) { return ref_cell(in); };
    d.examples = [](uint64_t seed) {
      return std::vector<OpExample>{
          {"one gate input", {rand_array({3, 2}, -1, 1, seed), rand_array({3, 8}, -2, 2, seed + 1)}, {}},
          {"two gate inputs, 3-d",
           {rand_array({2, 2, 3}, -1, 1, seed), rand_array({2, 2, 12}, -2, 2, seed + 1),
            rand_array({2, 2, 12}, -1, 1, seed + 2)},
           {}}};
    };
    d.doc = "one LSTM step: (c_prev, gates[, gates2]) -> (h, c, activated gates), PyTorch's gate order i, f, g, o";
    register_op(std::move(d));
  }
  {
    OpDef d;
    d.name = "lstm_cell_grad";
    d.attrs = AttrSchema::none();
    d.min_inputs = d.max_inputs = 5;
    d.infer = [](const InferContext& c) {
      check_cell_shapes(c, {4, 1, 1, 1, 1}, 1);
      return std::vector<TensorType>{c.in[0], c.in[1]};
    };
    d.grad = lstm_cell_grad_grad;
    d.reference = [](std::span<const NDArray> in, const Attrs&) { return ref_cell_grad(in); };
    d.examples = [](uint64_t seed) {
      // act holds activated gates: sigmoids in (0, 1), tanh in (-1, 1).
      NDArray act = rand_array({3, 8}, 0.05, 0.95, seed);
      return std::vector<OpExample>{{"rows 3, H 2",
                                     {act, rand_array({3, 2}, -1, 1, seed + 1), rand_array({3, 2}, -1.5, 1.5, seed + 2),
                                      rand_array({3, 2}, -1, 1, seed + 3), rand_array({3, 2}, -1, 1, seed + 4)},
                                     {}}};
    };
    d.doc = "the backward of lstm_cell: (act, c_prev, c, dh, dc) -> (dgates, dc_prev)";
    register_op(std::move(d));
  }
  return true;
}();

}  // namespace

std::vector<Tensor> lstm_cell(const Tensor& c_prev, const Tensor& gates, const Tensor& gates2) {
  std::vector<Tensor> in{c_prev, gates};
  if (gates2.valid()) in.push_back(gates2);
  return c_prev.graph().add("lstm_cell", in);
}

std::vector<Tensor> lstm_backward_composite(const Tensor& act, const Tensor& c_prev, const Tensor& c, const Tensor& dh,
                                            const Tensor& dc) {
  std::vector<Tensor> a = split(act, 4, -1);
  const Tensor &i = a[0], &f = a[1], &g = a[2], &o = a[3];
  Tensor tc = tanh(c);
  Tensor dct = dc + dh * o * (1.0 - tc * tc);
  Tensor dgates = concat({dct * g * i * (1.0 - i), dct * c_prev * f * (1.0 - f), dct * i * (1.0 - g * g),
                          dh * tc * o * (1.0 - o)},
                         -1);
  return {dgates, dct * f};
}

}  // namespace loom
