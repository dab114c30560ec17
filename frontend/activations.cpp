// PyTorch's activations as composites of the op library.

#include "frontend/activations.hpp"

#include <cmath>
#include <sstream>

#include "ops/ops.hpp"

namespace loom::nn {

namespace {

void check_floating(const char* who, const Tensor& x) {
  LOOM_CHECK(x.valid(), who, ": the input is an empty Tensor handle");
  LOOM_CHECK(is_floating(x.dtype()), who, ": expected a floating input, got '", x.name(), "' ", dtype_name(x.dtype()));
}

void check_finite(const char* who, const char* what, double v) {
  LOOM_CHECK(std::isfinite(v), who, ": ", what, " must be finite, got ", v);
}

template <class... Args>
std::string text(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

}  // namespace

Tensor leaky_relu(const Tensor& x, double negative_slope) {
  check_floating("leaky_relu", x);
  check_finite("leaky_relu", "negative_slope", negative_slope);
  return where(x > 0.0, x, x * negative_slope);
}

Tensor elu(const Tensor& x, double alpha) {
  check_floating("elu", x);
  check_finite("elu", "alpha", alpha);
  // exp of the non-positive part only: exp(x) of a large x would give inf * 0 = NaN in the unused branch's
  // gradient. A where, not minimum: at 0 the gradient is alpha, as PyTorch's (minimum splits a tie).
  const Tensor negative = where(x > 0.0, zeros_like(x), x);
  return where(x > 0.0, x, (exp(negative) - 1.0) * alpha);
}

Tensor selu(const Tensor& x) {
  constexpr double alpha = 1.6732632423543772848170429916717, scale = 1.0507009873554804934193349852946;
  return elu(x, alpha) * scale;
}

Tensor silu(const Tensor& x) {
  check_floating("silu", x);
  return x * sigmoid(x);
}

Tensor mish(const Tensor& x) {
  check_floating("mish", x);
  return x * tanh(loom::softplus(x));
}

Tensor softplus(const Tensor& x, double beta, double threshold) {
  check_floating("softplus", x);
  LOOM_CHECK(std::isfinite(beta) && beta > 0, "softplus: beta must be positive, got ", beta);
  check_finite("softplus", "threshold", threshold);
  Tensor bx = x * beta;
  // The op's own threshold is 20 (on beta x); where() applies the caller's.
  return where(bx > threshold, x, loom::softplus(minimum(bx, scalar_like(bx, threshold))) / beta);
}

Tensor hardtanh(const Tensor& x, double min_val, double max_val) {
  check_floating("hardtanh", x);
  check_finite("hardtanh", "min_val", min_val);
  check_finite("hardtanh", "max_val", max_val);
  LOOM_CHECK(min_val <= max_val, "hardtanh: min_val (", min_val, ") must not exceed max_val (", max_val, ")");
  // PyTorch's gradient is 1 strictly inside only (clamp's is 1 on the bounds too).
  return where(logical_and(x > min_val, x < max_val), x, stop_gradient(clamp(x, min_val, max_val)));
}

Tensor relu6(const Tensor& x) { return hardtanh(x, 0.0, 6.0); }

Tensor hardsigmoid(const Tensor& x) { return relu6(x + 3.0) / 6.0; }

Tensor hardswish(const Tensor& x) {
  check_floating("hardswish", x);
  // PyTorch's gradient: 0 up to -3, x / 3 + 0.5 strictly between, 1 from 3 on.
  return where(x <= -3.0, zeros_like(x), where(x >= 3.0, x, x * (x + 3.0) / 6.0));
}

Tensor celu(const Tensor& x, double alpha) {
  check_floating("celu", x);
  LOOM_CHECK(std::isfinite(alpha) && alpha != 0, "celu: alpha must be finite and nonzero, got ", alpha);
  const Tensor negative = where(x > 0.0, zeros_like(x), x);  // as elu: no exp of a large x
  return where(x > 0.0, x, (exp(negative / alpha) - 1.0) * alpha);
}

Tensor logsigmoid(const Tensor& x) {
  check_floating("logsigmoid", x);
  return -loom::softplus(-x);
}

Tensor softsign(const Tensor& x) {
  check_floating("softsign", x);
  return x / (abs(x) + 1.0);
}

Tensor softshrink(const Tensor& x, double lambd) {
  check_floating("softshrink", x);
  LOOM_CHECK(std::isfinite(lambd) && lambd >= 0, "softshrink: lambd must be finite and >= 0, got ", lambd);
  return where(x > lambd, x - lambd, where(x < -lambd, x + lambd, zeros_like(x)));
}

Tensor hardshrink(const Tensor& x, double lambd) {
  check_floating("hardshrink", x);
  check_finite("hardshrink", "lambd", lambd);
  return where(logical_or(x > lambd, x < -lambd), x, zeros_like(x));
}

Tensor tanhshrink(const Tensor& x) {
  check_floating("tanhshrink", x);
  return x - tanh(x);
}

Tensor threshold(const Tensor& x, double threshold, double value) {
  check_floating("threshold", x);
  return where(x > threshold, x, scalar_like(x, value) + zeros_like(x));
}

Tensor rrelu(const Tensor& x, double lower, double upper, bool training) {
  check_floating("rrelu", x);
  check_finite("rrelu", "lower", lower);
  check_finite("rrelu", "upper", upper);
  LOOM_CHECK(lower <= upper, "rrelu: lower ", lower, " must be at most upper ", upper);
  if (!training) return leaky_relu(x, (lower + upper) / 2);
  return where(x >= 0.0, x, x * random_uniform_like(x, lower, upper));
}

Tensor glu(const Tensor& x, int64_t dim) {
  check_floating("glu", x);
  LOOM_CHECK(x.ndim() > 0, "glu: expected at least one dim, got a scalar");
  const int64_t axis = dim < 0 ? dim + x.ndim() : dim;
  LOOM_CHECK(axis >= 0 && axis < x.ndim(), "glu: dim ", dim, " out of range for input ", S(x.shape()));
  const int64_t n = x.shape()[size_t(axis)];
  LOOM_CHECK(n >= 0 && n % 2 == 0, "glu: dim ", dim, " of input ", S(x.shape()), " must have an even, known size");
  const std::vector<Tensor> halves = split(x, 2, axis);
  return halves[0] * sigmoid(halves[1]);
}

Tensor prelu(const Tensor& x, const Tensor& weight) {
  check_floating("prelu", x);
  LOOM_CHECK(weight.valid() && weight.dtype() == x.dtype() && weight.ndim() == 1, "prelu: weight must be ",
             dtype_name(x.dtype()), " [1] or [channels]");
  const int64_t c = weight.shape()[0];
  Tensor w = weight;
  if (c != 1) {  // one slope per channel: x's dim 1 (its dim 0 for a 1-D input), broadcast over the rest
    const int64_t channel_dim = x.ndim() >= 2 ? 1 : 0;
    LOOM_CHECK(x.ndim() >= 1 && (x.shape()[size_t(channel_dim)] == c || x.shape()[size_t(channel_dim)] < 0),
               "prelu: weight [", c, "] must match the channels (dim ", channel_dim, ") of input ", S(x.shape()));
    Shape s(size_t(x.ndim() - channel_dim), 1);
    s[0] = c;
    w = reshape(weight, s);
  }
  return where(x > 0.0, x, x * w);
}

Elementwise::Elementwise(std::string type, std::string description, std::function<Tensor(const Tensor&)> fn)
    : type_(std::move(type)), description_(std::move(description)), fn_(std::move(fn)) {}

LeakyReLU::LeakyReLU(double s)
    : Elementwise("LeakyReLU", text("LeakyReLU(negative_slope=", s, ")"),
                  [s](const Tensor& x) { return leaky_relu(x, s); }) {
  check_finite("LeakyReLU", "negative_slope", s);
}
ELU::ELU(double a) : Elementwise("ELU", text("ELU(alpha=", a, ")"), [a](const Tensor& x) { return elu(x, a); }) {
  check_finite("ELU", "alpha", a);
}
SELU::SELU() : Elementwise("SELU", "SELU", selu) {}
SiLU::SiLU() : Elementwise("SiLU", "SiLU", silu) {}
Mish::Mish() : Elementwise("Mish", "Mish", mish) {}
Softplus::Softplus(double b, double t)
    : Elementwise("Softplus", text("Softplus(beta=", b, ", threshold=", t, ")"),
                  [b, t](const Tensor& x) { return softplus(x, b, t); }) {
  LOOM_CHECK(std::isfinite(b) && b > 0, "Softplus: beta must be positive, got ", b);
  check_finite("Softplus", "threshold", t);
}
Hardtanh::Hardtanh(double lo, double hi)
    : Elementwise("Hardtanh", text("Hardtanh(min_val=", lo, ", max_val=", hi, ")"),
                  [lo, hi](const Tensor& x) { return hardtanh(x, lo, hi); }) {
  LOOM_CHECK(std::isfinite(lo) && std::isfinite(hi) && lo <= hi, "Hardtanh: min_val (", lo,
             ") must not exceed max_val (", hi, "), both finite");
}
ReLU6::ReLU6() : Elementwise("ReLU6", "ReLU6", relu6) {}
Hardsigmoid::Hardsigmoid() : Elementwise("Hardsigmoid", "Hardsigmoid", hardsigmoid) {}
Hardswish::Hardswish() : Elementwise("Hardswish", "Hardswish", hardswish) {}
CELU::CELU(double a) : Elementwise("CELU", text("CELU(alpha=", a, ")"), [a](const Tensor& x) { return celu(x, a); }) {
  LOOM_CHECK(std::isfinite(a) && a != 0, "CELU: alpha must be finite and nonzero, got ", a);
}
LogSigmoid::LogSigmoid() : Elementwise("LogSigmoid", "LogSigmoid", logsigmoid) {}
Softsign::Softsign() : Elementwise("Softsign", "Softsign", softsign) {}
Softshrink::Softshrink(double l)
    : Elementwise("Softshrink", text("Softshrink(lambd=", l, ")"), [l](const Tensor& x) { return softshrink(x, l); }) {
  LOOM_CHECK(std::isfinite(l) && l >= 0, "Softshrink: lambd must be finite and >= 0, got ", l);
}
Hardshrink::Hardshrink(double l)
    : Elementwise("Hardshrink", text("Hardshrink(lambd=", l, ")"), [l](const Tensor& x) { return hardshrink(x, l); }) {
  check_finite("Hardshrink", "lambd", l);
}
Tanhshrink::Tanhshrink() : Elementwise("Tanhshrink", "Tanhshrink", tanhshrink) {}
Threshold::Threshold(double t, double v)
    : Elementwise("Threshold", text("Threshold(threshold=", t, ", value=", v, ")"),
                  [t, v](const Tensor& x) { return threshold(x, t, v); }) {}
GLU::GLU(int64_t dim)
    : Elementwise("GLU", text("GLU(dim=", dim, ")"), [dim](const Tensor& x) { return glu(x, dim); }) {}
Softmin::Softmin(int64_t dim)
    : Elementwise("Softmin", text("Softmin(dim=", dim, ")"),
                  [dim](const Tensor& x) { return loom::softmax(-x, dim); }) {}

PReLU::PReLU(int64_t num_parameters, double init, DType dtype) : num_(num_parameters), init_(init), dtype_(dtype) {
  LOOM_CHECK(num_parameters > 0, "PReLU: num_parameters must be positive, got ", num_parameters);
  check_finite("PReLU", "init", init);
  LOOM_CHECK(is_floating(dtype), "PReLU: dtype must be floating, got ", dtype_name(dtype));
}

std::string PReLU::describe() const { return text("PReLU(num_parameters=", num_, ")"); }

Tensor PReLU::forward(const Tensor& x) {
  LOOM_CHECK(x.dtype() == dtype_, where(x), ": expected ", dtype_name(dtype_), " input, got ", dtype_name(x.dtype()));
  return prelu(x, parameter(x, "weight", {num_}, init::constant(init_), dtype_));
}

RReLU::RReLU(double lower, double upper) : lower_(lower), upper_(upper) {
  check_finite("RReLU", "lower", lower);
  check_finite("RReLU", "upper", upper);
  LOOM_CHECK(lower <= upper, "RReLU: lower ", lower, " must be at most upper ", upper);
}

std::string RReLU::describe() const { return text("RReLU(lower=", lower_, ", upper=", upper_, ")"); }

Softmax2d::Softmax2d()
    : Elementwise("Softmax2d", "Softmax2d()", [](const Tensor& x) {
        LOOM_CHECK(x.ndim() == 3 || x.ndim() == 4, "Softmax2d: expected [N, C, H, W] or [C, H, W], got ", S(x.shape()));
        return loom::softmax(x, -3);
      }) {}

Softmax::Softmax(int64_t dim)
    : Elementwise("Softmax", text("Softmax(dim=", dim, ")"), [dim](const Tensor& x) { return loom::softmax(x, dim); }) {
}
LogSoftmax::LogSoftmax(int64_t dim)
    : Elementwise("LogSoftmax", text("LogSoftmax(dim=", dim, ")"),
                  [dim](const Tensor& x) { return loom::log_softmax(x, dim); }) {}

}  // namespace loom::nn
