// Element-wise ops: unary math, binary arithmetic with broadcasting,
// comparisons, where, cast, identity/stop_gradient and fills.

#include <cmath>
#include <iomanip>
#include <numbers>
#include <sstream>

#include "core/kernel.hpp"
#include "core/fused_program.hpp"
#include "ops/common.hpp"
#include "ops/ops.hpp"

namespace loom {

using detail::like_input;
using detail::rand_array;
using detail::rand_away_from_zero;
using detail::ref_elementwise;

namespace {

Graph& G(const Tensor& t) { return t.graph(); }

const std::initializer_list<DType> kFloat = {float32, float64};
const std::initializer_list<DType> kSigned = {float32, float64, int32, int64};
const std::initializer_list<DType> kNumeric = {float32, float64, int32, int64, uint8};

InferFn unary_infer(std::initializer_list<DType> allowed) {
  std::vector<DType> ok(allowed);
  return [ok](const InferContext& c) {
    bool found = std::find(ok.begin(), ok.end(), c.in[0].dtype) != ok.end();
    if (!found) {
      std::string s;
      for (DType a : ok) s += (s.empty() ? "" : ", ") + std::string(dtype_name(a));
      c.fail("dtype ", dtype_name(c.in[0].dtype), " not supported (expected ", s, ")");
    }
    return like_input(c);
  };
}

/// A fused program (ops/args/bools/outs, see kernels/cpu/fused.cpp) the kernels
/// can run: what the planner's fusion guarantees, checked again because users
/// may build or invoke "fused" themselves. Each instruction's operands must
/// satisfy the op's own inference, in the value dtype or bool.
void check_fused_program(const InferContext& c, DType value) {
  constexpr int64_t kNoArg = -1000000;
  std::vector<std::string> ops;
  std::stringstream ss(c.attrs.get<std::string>("ops"));
  for (std::string op; std::getline(ss, op, ';');) ops.push_back(op);
  const auto& args = c.attrs.ints("args");
  const auto& bools = c.attrs.ints("bools");
  c.check(!ops.empty() && args.size() == 3 * ops.size() && bools.size() == ops.size(), "malformed program: ",
          ops.size(), " ops, ", args.size(), " args, ", bools.size(), " bools");
  std::vector<DType> result(ops.size());
  for (size_t k = 0; k < ops.size(); ++k) {
    const OpDef* op = try_find_op(ops[k]);
    c.check(op && op->elementwise && op->name != "fused" && !op->stateful, "instruction ", k, ": '", ops[k],
            "' is not a fusable element-wise op");
    std::vector<TensorType> operands;
    for (size_t j = 0; j < 3; ++j) {
      const int64_t a = args[3 * k + j];
      if (a == kNoArg) continue;
      c.check(operands.size() == j, "instruction ", k, ": operands must come first");
      c.check(a >= 0 ? a < int64_t(c.in.size()) : a >= -int64_t(k), "instruction ", k, ": operand ", a,
              " refers to no input or earlier instruction");
      // Operands compute in the value dtype; where's condition is bool.
      const DType t = a >= 0 ? c.in[size_t(a)].dtype : result[size_t(-a - 1)];
      const DType want = ops[k] == "where" && j == 0 ? boolean : value;
      c.check(t == want, "instruction ", k, ": operand ", j, " is ", dtype_name(t), ", expected ", dtype_name(want));
      operands.push_back({t, {}});
    }
    c.check(int64_t(operands.size()) >= op->min_inputs && int64_t(operands.size()) <= op->max_inputs &&
                (bools[k] == 0 || bools[k] == 1),
            "instruction ", k, ": ", operands.size(), " operands for ", ops[k]);
    const DType out = bools[k] ? boolean : value;
    const KernelInfo* fused = find_kernel("fused", DeviceKind::cpu, value);
    c.check(fused && fused->fusion && fused->fusion->supports(op->name), "instruction ", k, ": ", ops[k],
            " cannot run inside a fused kernel");
    c.check(op->infer(InferContext{op->name, c.node, operands, Attrs{}})[0].dtype == out, "instruction ", k, ": ",
            ops[k], " does not give ", dtype_name(out));
    result[k] = out;
  }
  for (int64_t k : c.attrs.get_or<std::vector<int64_t>>("outs", {}))
    c.check(k >= 0 && k < int64_t(ops.size()), "output of instruction ", k, ": no such instruction");
}

Shape broadcast_checked(const InferContext& c, const Shape& a, const Shape& b) {
  try {
    return broadcast_shapes(a, b, "broadcast");
  } catch (const Error&) {
    c.fail("cannot broadcast ", S(a), " with ", S(b));
  }
}

InferFn binary_infer(std::initializer_list<DType> allowed, bool to_bool) {
  std::vector<DType> ok(allowed);
  return [ok, to_bool](const InferContext& c) {
    if (c.in[0].dtype != c.in[1].dtype)
      c.fail("dtypes differ: ", dtype_name(c.in[0].dtype), " vs ", dtype_name(c.in[1].dtype),
             " (cast one explicitly)");
    if (std::find(ok.begin(), ok.end(), c.in[0].dtype) == ok.end()) {
      std::string s;
      for (DType a : ok) s += (s.empty() ? "" : ", ") + std::string(dtype_name(a));
      c.fail("dtype ", dtype_name(c.in[0].dtype), " not supported (expected ", s, ")");
    }
    return std::vector<TensorType>{{to_bool ? boolean : c.in[0].dtype, broadcast_checked(c, c.in[0].shape, c.in[1].shape)}};
  };
}

ReferenceFn unary_ref(double (*f)(double)) {
  return [f](std::span<const NDArray> in, const Attrs&) {
    return std::vector<NDArray>{ref_elementwise(in, in[0].dtype(), [f](const std::vector<double>& v) { return f(v[0]); })};
  };
}

ReferenceFn binary_ref(double (*f)(double, double), bool to_bool = false) {
  return [f, to_bool](std::span<const NDArray> in, const Attrs&) {
    return std::vector<NDArray>{ref_elementwise(in, to_bool ? boolean : in[0].dtype(),
                                                [f](const std::vector<double>& v) { return f(v[0], v[1]); })};
  };
}

/// Unary examples over [lo, hi) (or away from zero when `kink`).
ExamplesFn unary_examples(double lo, double hi, bool kink = false) {
  return [=](uint64_t seed) {
    std::vector<OpExample> ex;
    for (Shape s : {Shape{3, 4}, Shape{2, 3, 5}, Shape{}}) {
      NDArray x = kink ? rand_away_from_zero(s, 0.1, hi, seed) : rand_array(s, lo, hi, seed);
      ex.push_back({"shape " + shape_str(s), {x}, {}});
      ++seed;
    }
    return ex;
  };
}

/// Binary examples: same shape, broadcasting both ways, scalar operand.
ExamplesFn binary_examples(double lo, double hi, double lo_b, double hi_b, bool grad = true) {
  return [=](uint64_t seed) {
    std::vector<OpExample> ex;
    std::vector<std::pair<Shape, Shape>> shapes = {
        {{3, 4}, {3, 4}}, {{3, 1}, {1, 4}}, {{2, 3, 4}, {4}}, {{3, 4}, {}}, {{}, {2, 2}}};
    for (auto& [a, b] : shapes) {
      OpExample e{shape_str(a) + " with " + shape_str(b), {rand_array(a, lo, hi, seed), rand_array(b, lo_b, hi_b, seed + 7)}, {}};
      e.check_grad = grad;
      ex.push_back(e);
      seed += 13;
    }
    return ex;
  };
}

void def_unary(const char* name, std::initializer_list<DType> dtypes, double (*ref)(double), GradFn grad,
               ExamplesFn examples, bool elementwise_inplace = true) {
  OpDef d;
  d.name = name;
  d.min_inputs = d.max_inputs = 1;
  d.attrs = AttrSchema::none();
  d.infer = unary_infer(dtypes);
  d.grad = std::move(grad);
  d.elementwise = true;
  d.inplace = elementwise_inplace;
  d.reference = unary_ref(ref);
  d.examples = std::move(examples);
  register_op(std::move(d));
}

/// maximum's and minimum's gradient, PyTorch's: dy to the input that wins, half of it to each at a tie (and
/// all of it to both where a NaN makes every comparison false).
std::vector<Tensor> tie_split(const Tensor& a, const Tensor& b, const Tensor& dy, const Tensor& a_loses,
                              const Tensor& b_loses) {
  const Tensor share = where(a == b, dy * 0.5, dy);
  return {where(a_loses, 0.0, share), where(b_loses, 0.0, share)};
}

void def_binary(const char* name, std::initializer_list<DType> dtypes, double (*ref)(double, double), GradFn grad,
                ExamplesFn examples, bool to_bool = false) {
  OpDef d;
  d.name = name;
  d.min_inputs = d.max_inputs = 2;
  d.attrs = AttrSchema::none();
  d.infer = binary_infer(dtypes, to_bool);
  d.grad = std::move(grad);
  d.elementwise = true;
  d.inplace = !to_bool;
  d.reference = binary_ref(ref, to_bool);
  d.examples = std::move(examples);
  register_op(std::move(d));
}

double sigmoid_ref(double x) { return 1.0 / (1.0 + std::exp(-x)); }
double sign_ref(double x) { return double((0.0 < x) - (x < 0.0)); }

const bool registered = [] {
  def_unary("neg", kSigned, [](double x) { return -x; },
            [](const GradContext& c) { return std::vector<Tensor>{-c.dout(0)}; }, unary_examples(-2, 2));
  def_unary("exp", kFloat, [](double x) { return std::exp(x); },
            [](const GradContext& c) { return std::vector<Tensor>{c.dout(0) * c.outputs[0]}; },
            unary_examples(-2, 2));
  def_unary("log", kFloat, [](double x) { return std::log(x); },
            [](const GradContext& c) { return std::vector<Tensor>{c.dout(0) / c.inputs[0]}; },
            unary_examples(0.2, 3));
  def_unary("sqrt", kFloat, [](double x) { return std::sqrt(x); },
            [](const GradContext& c) { return std::vector<Tensor>{c.dout(0) * 0.5 / c.outputs[0]}; },
            unary_examples(0.2, 3));
  def_unary("abs", kSigned, [](double x) { return std::fabs(x); },
            [](const GradContext& c) { return std::vector<Tensor>{c.dout(0) * sign(c.inputs[0])}; },
            unary_examples(-2, 2, true));
  def_unary("sign", kSigned, sign_ref, nullptr, unary_examples(-2, 2, true));
  def_unary("tanh", kFloat, [](double x) { return std::tanh(x); },
            [](const GradContext& c) {
              const Tensor& y = c.outputs[0];
              return std::vector<Tensor>{c.dout(0) * (1.0 - y * y)};
            },
            unary_examples(-2, 2));
  def_unary("sigmoid", kFloat, sigmoid_ref,
            [](const GradContext& c) {
              const Tensor& y = c.outputs[0];
              return std::vector<Tensor>{c.dout(0) * y * (1.0 - y)};
            },
            unary_examples(-3, 3));
  def_unary("relu", kSigned, [](double x) { return x <= 0 ? 0.0 : x; },
            [](const GradContext& c) {
              // y <= 0 exactly where x <= 0 (-0 included; NaN passes dy, as PyTorch's
              // threshold_backward): reading the output lets the pre-activation die at relu
              // (and a GEMM run bias and relu as one epilogue). A scalar zero, not a tensor
              // of zeros: nothing to fill and keep (1 MB of a Transformer's backward).
              const Tensor& dy = c.dout(0);
              return std::vector<Tensor>{where(c.outputs[0] <= 0.0, 0.0, dy)};
            },
            unary_examples(-2, 2, true));

  // erf, softplus and GELU (both of PyTorch's forms); their kernels come from
  // kernels/elementwise_ops.hpp.
  def_unary("erf", kFloat, [](double x) { return std::erf(x); },
            [](const GradContext& c) {
              const Tensor& x = c.inputs[0];
              return std::vector<Tensor>{c.dout(0) * (2.0 / std::sqrt(std::numbers::pi)) * exp(-(x * x))};
            },
            unary_examples(-2, 2));
  def_unary("softplus", kFloat, [](double x) { return x > 20 ? x : std::log1p(std::exp(x)); },
            [](const GradContext& c) { return std::vector<Tensor>{c.dout(0) * sigmoid(c.inputs[0])}; },
            [](uint64_t seed) {
              auto ex = unary_examples(-3, 3)(seed);
              ex.push_back({"large and small", {NDArray::from<double>({-40, -5, 0.25, 18, 25, 80})}, {}});
              return ex;
            });
  def_unary("gelu", kFloat, [](double x) { return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0))); },
            [](const GradContext& c) {
              const Tensor& x = c.inputs[0];  // Phi(x) + x phi(x)
              Tensor cdf = 0.5 * (1.0 + erf(x * (1 / std::sqrt(2.0))));
              return std::vector<Tensor>{c.dout(0) * (cdf + x * exp(-0.5 * (x * x)) * (1 / std::sqrt(2 * std::numbers::pi)))};
            },
            unary_examples(-3, 3));
  def_unary("gelu_tanh", kFloat,
            [](double x) { return 0.5 * x * (1 + std::tanh(std::sqrt(2 / std::numbers::pi) * (x + 0.044715 * x * x * x))); },
            [](const GradContext& c) {
              const Tensor& x = c.inputs[0];
              const double k = std::sqrt(2 / std::numbers::pi);
              Tensor t = tanh(k * (x + 0.044715 * (x * x * x)));
              Tensor du = k * (1.0 + (3 * 0.044715) * (x * x));
              return std::vector<Tensor>{c.dout(0) * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du)};
            },
            unary_examples(-3, 3));

  def_binary("add", kNumeric, [](double a, double b) { return a + b; },
             [](const GradContext& c) { return std::vector<Tensor>{c.dout(0), c.dout(0)}; },
             binary_examples(-2, 2, -2, 2));
  def_binary("sub", kNumeric, [](double a, double b) { return a - b; },
             [](const GradContext& c) { return std::vector<Tensor>{c.dout(0), -c.dout(0)}; },
             binary_examples(-2, 2, -2, 2));
  def_binary("mul", kNumeric, [](double a, double b) { return a * b; },
             [](const GradContext& c) {
               return std::vector<Tensor>{c.dout(0) * c.inputs[1], c.dout(0) * c.inputs[0]};
             },
             binary_examples(-2, 2, -2, 2));
  def_binary("div", kNumeric, [](double a, double b) { return a / b; },
             [](const GradContext& c) {
               const Tensor &a = c.inputs[0], &b = c.inputs[1];
               Tensor dy = c.dout(0);
               return std::vector<Tensor>{dy / b, -(dy * a) / (b * b)};
             },
             binary_examples(-2, 2, 0.5, 2));
  def_binary("pow", kFloat, [](double a, double b) { return std::pow(a, b); },
             [](const GradContext& c) {
               const Tensor &a = c.inputs[0], &b = c.inputs[1], &y = c.outputs[0];
               Tensor dy = c.dout(0);
               // PyTorch's pow_backward: 0 for the base where the exponent is 0 (not 0 * a^-1, NaN at a = 0),
               // and 0 for the exponent where the base is 0 and the exponent >= 0 (not y * log 0).
               return std::vector<Tensor>{dy * where(b == 0.0, 0.0, b * pow(a, b - 1.0)),
                                          dy * where(a == 0.0, where(b >= 0.0, 0.0, y * log(a)), y * log(a))};
             },
             binary_examples(0.5, 2, -2, 2));
  // NaN wins, as in PyTorch's maximum/minimum (and the kernels).
  def_binary("maximum", kNumeric, [](double a, double b) { return a != a || b != b ? NAN : std::max(a, b); },
             [](const GradContext& c) {
               const Tensor &a = c.inputs[0], &b = c.inputs[1];
               Tensor dy = c.dout(0);
               return tie_split(a, b, dy, a<b, a> b);
             },
             binary_examples(-2, 2, -2, 2));
  def_binary("minimum", kNumeric, [](double a, double b) { return a != a || b != b ? NAN : std::min(a, b); },
             [](const GradContext& c) {
               const Tensor &a = c.inputs[0], &b = c.inputs[1];
               Tensor dy = c.dout(0);
               return tie_split(a, b, dy, a > b, a < b);
             },
             binary_examples(-2, 2, -2, 2));

  const std::initializer_list<DType> kComparable = {float32, float64, int32, int64, uint8, boolean};
  auto cmp_examples = binary_examples(-1, 1, -1, 1, false);
  def_binary("eq", kComparable, [](double a, double b) { return double(a == b); }, nullptr, [](uint64_t seed) {
    // Include exact ties so equality is exercised.
    NDArray a = NDArray::from<double>({1, 2, 3, 4, 5, 6}, {2, 3});
    NDArray b = NDArray::from<double>({1, 0, 3, 4, 0, 0}, {2, 3});
    return std::vector<OpExample>{{"ties", {a, b}, {}, {}, false}, {"row", {a, NDArray::from<double>({1, 2, 0})}, {}, {}, false}};
  }, true);
  def_binary("ne", kComparable, [](double a, double b) { return double(a != b); }, nullptr, cmp_examples, true);
  def_binary("lt", kComparable, [](double a, double b) { return double(a < b); }, nullptr, cmp_examples, true);
  def_binary("le", kComparable, [](double a, double b) { return double(a <= b); }, nullptr, cmp_examples, true);
  def_binary("gt", kComparable, [](double a, double b) { return double(a > b); }, nullptr, cmp_examples, true);
  def_binary("ge", kComparable, [](double a, double b) { return double(a >= b); }, nullptr, cmp_examples, true);

  {
    OpDef d;
    d.name = "where";
    d.min_inputs = d.max_inputs = 3;
    d.attrs = AttrSchema::none();
    d.elementwise = true;
    d.infer = [](const InferContext& c) {
      c.check(c.in[0].dtype == boolean, "condition must be bool, got ", dtype_name(c.in[0].dtype));
      c.check(c.in[1].dtype == c.in[2].dtype, "dtypes differ: ", dtype_name(c.in[1].dtype), " vs ",
              dtype_name(c.in[2].dtype));
      Shape s = broadcast_checked(c, broadcast_checked(c, c.in[0].shape, c.in[1].shape), c.in[2].shape);
      return std::vector<TensorType>{{c.in[1].dtype, s}};
    };
    d.grad = [](const GradContext& c) {
      const Tensor& cond = c.inputs[0];
      Tensor dy = c.dout(0);
      Tensor zero = scalar_like(dy, 0.0);
      return std::vector<Tensor>{Tensor(), where(cond, dy, zero), where(cond, zero, dy)};
    };
    d.reference = [](std::span<const NDArray> in, const Attrs&) {
      return std::vector<NDArray>{ref_elementwise(in, in[1].dtype(), [](const std::vector<double>& v) {
        return v[0] != 0 ? v[1] : v[2];
      })};
    };
    d.examples = [](uint64_t seed) {
      NDArray cond = NDArray::from<bool>({true, false, false, true, true, false}, {2, 3});
      return std::vector<OpExample>{
          {"same shape", {cond, rand_array({2, 3}, -1, 1, seed), rand_array({2, 3}, -1, 1, seed + 1)}, {}, {1, 2}},
          {"broadcast", {cond, rand_array({3}, -1, 1, seed + 2), rand_array({2, 1}, -1, 1, seed + 3)}, {}, {1, 2}}};
    };
    register_op(std::move(d));
  }
  {
    OpDef d;
    d.name = "cast";
    d.min_inputs = d.max_inputs = 1;
    d.attrs = {attr::required("dtype", AttrKind::dtype)};
    d.elementwise = true;
    d.infer = [](const InferContext& c) {
      return std::vector<TensorType>{{c.attrs.get<DType>("dtype"), c.in[0].shape}};
    };
    d.grad = [](const GradContext& c) {
      if (!is_floating(c.inputs[0].dtype()) || !is_floating(c.outputs[0].dtype())) return std::vector<Tensor>{Tensor()};
      return std::vector<Tensor>{cast(c.dout(0), c.inputs[0].dtype())};
    };
    d.reference = [](std::span<const NDArray> in, const Attrs& a) {
      DType t = a.get<DType>("dtype");
      return std::vector<NDArray>{ref_elementwise(in, t, [t](const std::vector<double>& v) {
        double x = v[0];
        if (t == boolean) return double(x != 0);
        if (is_integral(t)) return std::trunc(x);
        return x;
      })};
    };
    d.examples = [](uint64_t seed) {
      return std::vector<OpExample>{
          // Differences through float32 rounding need a coarse step.
          {"to float32", {rand_array({3, 4}, -3, 3, seed)}, {{"dtype", float32}}, {}, true, 1e-2, 1e-4},
          {"to int32", {rand_array({5}, -3, 3, seed)}, {{"dtype", int32}}, {}, false},
          {"to bool", {NDArray::from<double>({0, 1, -2, 0})}, {{"dtype", boolean}}, {}, false},
          {"from int64", {NDArray::from<int64_t>({1, -2, 3})}, {{"dtype", float64}}, {}, false}};
    };
    register_op(std::move(d));
  }
  {
    // copy: a compact copy of its input (the planner inserts these before
    // kernels that need compact inputs, and for reshapes of strided views).
    OpDef d;
    d.name = "copy";
    d.min_inputs = d.max_inputs = 1;
    d.attrs = AttrSchema::none();
    d.elementwise = true;
    d.infer = [](const InferContext& c) { return like_input(c); };
    d.grad = [](const GradContext& c) { return std::vector<Tensor>{c.dout(0)}; };
    d.reference = [](std::span<const NDArray> in, const Attrs&) { return std::vector<NDArray>{in[0].clone()}; };
    d.examples = [](uint64_t seed) {
      return std::vector<OpExample>{{"matrix", {rand_array({2, 3}, -1, 1, seed)}, {}},
                                    {"transposed", {rand_array({3, 4}, -1, 1, seed + 1).transpose()}, {}}};
    };
    register_op(std::move(d));
  }
  for (const char* name : {"identity", "stop_gradient"}) {
    OpDef d;
    d.name = name;
    d.min_inputs = d.max_inputs = 1;
    d.attrs = AttrSchema::none();
    d.infer = [](const InferContext& c) { return like_input(c); };
    d.view = [](const Layout& in, const Attrs&, size_t, std::span<const Shape>) { return std::optional<Layout>(in); };
    if (std::string(name) == "identity") d.grad = [](const GradContext& c) { return std::vector<Tensor>{c.dout(0)}; };
    d.reference = [](std::span<const NDArray> in, const Attrs&) { return std::vector<NDArray>{in[0].clone()}; };
    d.examples = [](uint64_t seed) { return std::vector<OpExample>{{"matrix", {rand_array({2, 3}, -1, 1, seed)}, {}}}; };
    register_op(std::move(d));
  }
  {
    // fused: a program of element-wise ops made by the planner's fusion pass
    // (kernels/cpu/fused.cpp documents the attributes). Users never build it.
    OpDef d;
    d.name = "fused";
    d.min_inputs = 1;
    d.max_inputs = -1;
    d.attrs = {attr::required("ops", AttrKind::string), attr::required("args", AttrKind::integers),
               attr::required("bools", AttrKind::integers), attr::optional("outs", AttrKind::integers)};
    d.elementwise = true;
    d.inplace = true;
    d.infer = [](const InferContext& c) {
      Shape s;
      DType value = boolean;
      for (const TensorType& t : c.in) {
        s = broadcast_checked(c, s, t.shape);
        if (value == boolean && is_floating(t.dtype)) value = t.dtype;
      }
      c.check(value != boolean, "needs a floating input");
      check_fused_program(c, value);
      const auto& bools = c.attrs.ints("bools");
      std::vector<TensorType> out{{bools.back() ? boolean : value, s}};
      for (int64_t k : c.attrs.get_or<std::vector<int64_t>>("outs", {})) out.push_back({bools[size_t(k)] ? boolean : value, s});
      return out;
    };
    d.reference = [](std::span<const NDArray> in, const Attrs& a) {
      const fused::Program p = fused::decode(a, in.size());
      std::vector<NDArray> results;
      for (const fused::Instr& ins : p.instrs) {
        std::vector<NDArray> operands;
        for (int j = 0; j < ins.arity(); ++j)
          operands.push_back(ins.arg[j] >= 0 ? in[size_t(ins.arg[j])] : results[size_t(fused::instr_of(ins.arg[j]))]);
        results.push_back(find_op(ins.op).reference(operands, {})[0]);
      }
      Shape shape;
      for (const NDArray& x : in) shape = broadcast_shapes(shape, x.shape());
      std::vector<NDArray> out{results.back().broadcast_to(shape).clone()};
      for (int64_t k : p.outs) out.push_back(results[size_t(k)].broadcast_to(shape).clone());
      return out;
    };
    d.examples = [](uint64_t seed) {
      using fused::Instr;
      const int64_t none = fused::kNoArg, r0 = fused::result_of(0), r1 = fused::result_of(1);
      // relu(x * w + b) with a broadcast leaf.
      fused::Program relu_affine{{Instr{"mul", false, {0, 1, none}}, Instr{"add", false, {r0, 2, none}},
                                  Instr{"relu", false, {r1, none, none}}}, {}};
      // where(x > 0, exp(x), y) with a bool instruction.
      fused::Program select{{Instr{"gt", true, {0, 1, none}}, Instr{"exp", false, {0, none, none}},
                             Instr{"where", false, {r0, r1, 1}}}, {}};
      // Several outputs: m = x * x + y; mask = m > z; out = z - m (Adam-like), m and the mask as extra outputs.
      fused::Program outputs{{Instr{"mul", false, {0, 0, none}}, Instr{"add", false, {r0, 1, none}},
                              Instr{"gt", true, {r1, 2, none}}, Instr{"sub", false, {2, r1, none}}}, {1, 2}};
      return std::vector<OpExample>{
          {"relu(x*w+b)", {rand_array({3, 4}, -1, 1, seed), rand_array({3, 4}, -1, 1, seed + 1), rand_array({4}, -1, 1, seed + 2)},
           fused::encode(relu_affine), {}, false},
          {"where(x>0, exp(x), y)", {rand_array({2, 5}, -1, 1, seed + 3), rand_array({2, 1}, -1, 1, seed + 4)},
           fused::encode(select), {}, false},
          {"outputs m, mask and p", {rand_array({3, 4}, -1, 1, seed + 5), rand_array({3, 4}, -1, 1, seed + 6), rand_array({3, 4}, -1, 1, seed + 7)},
           fused::encode(outputs), {}, false}};
    };
    register_op(std::move(d));
  }
  {
    // full: no inputs (static "shape" attribute) or one shape-only input.
    OpDef d;
    d.name = "full";
    d.min_inputs = 0;
    d.max_inputs = 1;
    d.attrs = {attr::optional("shape", AttrKind::integers), attr::required("value", AttrKind::real),
               attr::optional("dtype", AttrKind::dtype)};
    d.shape_only_inputs = {0};
    d.infer = [](const InferContext& c) {
      DType t = c.attrs.get_or<DType>("dtype", c.in.empty() ? float32 : c.in[0].dtype);
      if (c.in.empty()) {
        const Shape& s = c.attrs.ints("shape");
        c.check(is_static(s), "shape ", S(s), " must be fully known (use full_like for dynamic shapes)");
        return std::vector<TensorType>{{t, s}};
      }
      return std::vector<TensorType>{{t, c.in[0].shape}};
    };
    d.reference = [](std::span<const NDArray> in, const Attrs& a) {
      DType t = a.get_or<DType>("dtype", in.empty() ? float32 : in[0].dtype());
      Shape s = in.empty() ? a.ints("shape") : in[0].shape();
      NDArray r = NDArray::empty(s, t);
      detail::for_each_index(s, [&](const std::vector<int64_t>& i) { detail::set_at(r, i, a.f("value")); });
      return std::vector<NDArray>{r};
    };
    d.examples = [](uint64_t seed) {
      return std::vector<OpExample>{
          {"static", {}, {{"shape", Shape{2, 3}}, {"value", 1.5}, {"dtype", float32}}, {}, false},
          {"like", {rand_array({4}, 0, 1, seed)}, {{"value", -2.0}}, {}, false},
          {"like, int", {rand_array({2, 2}, 0, 1, seed)}, {{"value", 7.0}, {"dtype", int32}}, {}, false}};
    };
    register_op(std::move(d));
  }
  return true;
}();

}  // namespace

// ---------------------------------------------------------------- builders

Tensor neg(const Tensor& x) { return G(x).add1("neg", {x}); }
Tensor exp(const Tensor& x) { return G(x).add1("exp", {x}); }
Tensor log(const Tensor& x) { return G(x).add1("log", {x}); }
Tensor sqrt(const Tensor& x) { return G(x).add1("sqrt", {x}); }
Tensor abs(const Tensor& x) { return G(x).add1("abs", {x}); }
Tensor sign(const Tensor& x) { return G(x).add1("sign", {x}); }
Tensor tanh(const Tensor& x) { return G(x).add1("tanh", {x}); }
Tensor sigmoid(const Tensor& x) { return G(x).add1("sigmoid", {x}); }
Tensor relu(const Tensor& x) { return G(x).add1("relu", {x}); }
Tensor erf(const Tensor& x) { return G(x).add1("erf", {x}); }
Tensor softplus(const Tensor& x) { return G(x).add1("softplus", {x}); }
Tensor gelu(const Tensor& x, std::string_view approximate) {
  LOOM_CHECK(approximate == "none" || approximate == "tanh", "gelu: approximate must be 'none' or 'tanh', got '",
             approximate, "'");
  return G(x).add1(approximate == "tanh" ? "gelu_tanh" : "gelu", {x});
}
Tensor add(const Tensor& a, const Tensor& b) { return G(a).add1("add", {a, b}); }
Tensor sub(const Tensor& a, const Tensor& b) { return G(a).add1("sub", {a, b}); }
Tensor mul(const Tensor& a, const Tensor& b) { return G(a).add1("mul", {a, b}); }
Tensor div(const Tensor& a, const Tensor& b) {
  // True division, as PyTorch's: integers divide as float32 (the op itself truncates them, as ONNX's Div).
  if (a.dtype() == b.dtype() && !is_floating(a.dtype())) return G(a).add1("div", {cast(a, float32), cast(b, float32)});
  return G(a).add1("div", {a, b});
}
Tensor trunc_divide(const Tensor& a, const Tensor& b) {
  LOOM_CHECK(!is_floating(a.dtype()) && a.dtype() != boolean, "trunc_divide: expected integer operands, got ",
             dtype_name(a.dtype()), " (div divides floats)");
  return G(a).add1("div", {a, b});
}
Tensor pow(const Tensor& a, const Tensor& b) { return G(a).add1("pow", {a, b}); }
Tensor pow(const Tensor& a, double e) { return pow(a, scalar_like(a, e)); }
Tensor maximum(const Tensor& a, const Tensor& b) { return G(a).add1("maximum", {a, b}); }
Tensor minimum(const Tensor& a, const Tensor& b) { return G(a).add1("minimum", {a, b}); }
Tensor eq(const Tensor& a, const Tensor& b) { return G(a).add1("eq", {a, b}); }
Tensor ne(const Tensor& a, const Tensor& b) { return G(a).add1("ne", {a, b}); }
Tensor lt(const Tensor& a, const Tensor& b) { return G(a).add1("lt", {a, b}); }
Tensor le(const Tensor& a, const Tensor& b) { return G(a).add1("le", {a, b}); }
Tensor gt(const Tensor& a, const Tensor& b) { return G(a).add1("gt", {a, b}); }
Tensor ge(const Tensor& a, const Tensor& b) { return G(a).add1("ge", {a, b}); }
Tensor where(const Tensor& c, const Tensor& a, const Tensor& b) { return G(c).add1("where", {c, a, b}); }
Tensor cast(const Tensor& x, DType t) { return x.dtype() == t ? x : G(x).add1("cast", {x}, {{"dtype", t}}); }
Tensor identity(const Tensor& x) { return G(x).add1("identity", {x}); }
Tensor stop_gradient(const Tensor& x) { return G(x).add1("stop_gradient", {x}); }
Tensor full(Graph& g, const Shape& shape, double value, DType dtype) {
  return g.add1("full", {}, {{"shape", shape}, {"value", value}, {"dtype", dtype}});
}
Tensor full_like(const Tensor& x, double value) { return G(x).add1("full", {x}, {{"value", value}}); }
Tensor full_like(const Tensor& x, double value, DType dtype) {
  return G(x).add1("full", {x}, {{"value", value}, {"dtype", dtype}});
}
Tensor zeros_like(const Tensor& x) { return full_like(x, 0.0); }
Tensor ones_like(const Tensor& x) { return full_like(x, 1.0); }
Tensor scalar_like(const Tensor& x, double v) { return G(x).scalar(v, x.dtype()); }

Tensor operator-(const Tensor& x) { return neg(x); }
Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
namespace {
/// x and s, both in PyTorch's result dtype of an operation between them (see Scalar).
std::pair<Tensor, Tensor> promoted(const char* name, const Tensor& x, Scalar s) {
  const DType t = is_floating(x.dtype()) ? x.dtype() : !s.integral ? float32 : x.dtype() == boolean ? int64 : x.dtype();
  if (!is_floating(t) && NDArray::scalar(s.value, t).item() != s.value)  // casts saturate: a changed value did not fit
    fail(name, ": the integer ", std::setprecision(19), s.value, " does not fit the tensor's dtype ", dtype_name(t),
         " (cast the tensor)");
  return {cast(x, t), G(x).scalar(s.value, t)};
}

/// x op s (s op x when `scalar_first`), both in PyTorch's result dtype.
Tensor with_scalar(Tensor (*op)(const Tensor&, const Tensor&), const char* name, const Tensor& x, Scalar s,
                   bool scalar_first) {
  const auto [a, b] = promoted(name, x, s);
  return scalar_first ? op(b, a) : op(a, b);
}
}  // namespace

Tensor where(const Tensor& c, const Tensor& a, Scalar b) {
  const auto [x, s] = promoted("where", a, b);
  return where(c, x, s);
}
Tensor where(const Tensor& c, Scalar a, const Tensor& b) {
  const auto [x, s] = promoted("where", b, a);
  return where(c, s, x);
}

namespace {
void check_bool(const char* op, const Tensor& a) {
  LOOM_CHECK(a.dtype() == boolean, op, ": expected bool operands, got ", dtype_name(a.dtype()), " '", a.name(),
             "' (compare it, e.g. x != 0)");
}
}  // namespace

Tensor logical_and(const Tensor& a, const Tensor& b) {
  check_bool("logical_and", a), check_bool("logical_and", b);
  return where(a, b, full_like(b, 0.0));  // b broadcast where a holds
}
Tensor logical_or(const Tensor& a, const Tensor& b) {
  check_bool("logical_or", a), check_bool("logical_or", b);
  return where(a, full_like(b, 1.0), b);
}
Tensor logical_not(const Tensor& a) {
  check_bool("logical_not", a);
  return eq(a, full_like(a, 0.0));
}
Tensor operator&(const Tensor& a, const Tensor& b) { return logical_and(a, b); }
Tensor operator|(const Tensor& a, const Tensor& b) { return logical_or(a, b); }
Tensor operator~(const Tensor& a) { return logical_not(a); }

Tensor clamp(const Tensor& x, std::optional<Scalar> lo, std::optional<Scalar> hi) {
  Tensor y = x;
  if (lo) y = where(y < lo->value, *lo, y);
  if (hi) y = where(y > hi->value, *hi, y);  // after lo: lo > hi gives hi, as torch.clamp
  return y;
}

Tensor operator+(const Tensor& a, Scalar b) { return with_scalar(add, "add", a, b, false); }
Tensor operator-(const Tensor& a, Scalar b) { return with_scalar(sub, "sub", a, b, false); }
Tensor operator*(const Tensor& a, Scalar b) { return with_scalar(mul, "mul", a, b, false); }
Tensor operator/(const Tensor& a, Scalar b) { return with_scalar(div, "div", a, b, false); }
Tensor operator+(Scalar a, const Tensor& b) { return with_scalar(add, "add", b, a, true); }
Tensor operator-(Scalar a, const Tensor& b) { return with_scalar(sub, "sub", b, a, true); }
Tensor operator*(Scalar a, const Tensor& b) { return with_scalar(mul, "mul", b, a, true); }
Tensor operator/(Scalar a, const Tensor& b) { return with_scalar(div, "div", b, a, true); }
Tensor operator==(const Tensor& a, const Tensor& b) { return eq(a, b); }
Tensor operator!=(const Tensor& a, const Tensor& b) { return ne(a, b); }
Tensor operator<(const Tensor& a, const Tensor& b) { return lt(a, b); }
Tensor operator<=(const Tensor& a, const Tensor& b) { return le(a, b); }
Tensor operator>(const Tensor& a, const Tensor& b) { return gt(a, b); }
Tensor operator>=(const Tensor& a, const Tensor& b) { return ge(a, b); }
namespace {
/// A comparison of a with the scalar b: in a's dtype when b is one of its values, else in float64 (PyTorch
/// promotes an integer tensor compared with 2.5; cast to the tensor's dtype, 2 == 2.5 would hold).
Tensor compare(Tensor (*op)(const Tensor&, const Tensor&), const Tensor& a, double b) {
  if (is_floating(a.dtype()) || NDArray::scalar(b, a.dtype()).item() == b) return op(a, scalar_like(a, b));
  return op(cast(a, float64), G(a).scalar(b, float64));
}
}  // namespace

Tensor operator==(const Tensor& a, double b) { return compare(eq, a, b); }
Tensor operator!=(const Tensor& a, double b) { return compare(ne, a, b); }
Tensor operator<(const Tensor& a, double b) { return compare(lt, a, b); }
Tensor operator<=(const Tensor& a, double b) { return compare(le, a, b); }
Tensor operator>(const Tensor& a, double b) { return compare(gt, a, b); }
Tensor operator>=(const Tensor& a, double b) { return compare(ge, a, b); }

}  // namespace loom
