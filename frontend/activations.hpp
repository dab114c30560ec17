#pragma once
/// PyTorch's element-wise activations beyond ReLU, Tanh, Sigmoid and GELU, as
/// functions and as modules (nn::LeakyReLU(0.2) is nn.LeakyReLU(0.2)).
/// Composites of the op library, so they differentiate, fuse and export to
/// ONNX as their parts; values and gradients are PyTorch's, also at the
/// kinks (leaky_relu's slope at 0, hardtanh's 0 on its bounds).

#include <functional>
#include <string>

#include "frontend/nn.hpp"

namespace loom::nn {

/// x for x > 0, negative_slope * x otherwise.
Tensor leaky_relu(const Tensor& x, double negative_slope = 0.01);
/// x for x > 0, alpha * (e^x - 1) otherwise.
Tensor elu(const Tensor& x, double alpha = 1.0);
/// scale * elu(x, alpha) with PyTorch's constants (self-normalizing networks).
Tensor selu(const Tensor& x);
/// x * sigmoid(x) (also called swish).
Tensor silu(const Tensor& x);
/// x * tanh(softplus(x)).
Tensor mish(const Tensor& x);
/// log(1 + e^(beta x)) / beta, and x where beta x > threshold.
Tensor softplus(const Tensor& x, double beta, double threshold = 20.0);
/// x clamped to [min_val, max_val]; the gradient is 1 strictly inside, 0 on the bounds and outside.
Tensor hardtanh(const Tensor& x, double min_val = -1.0, double max_val = 1.0);
/// hardtanh(x, 0, 6).
Tensor relu6(const Tensor& x);
/// relu6(x + 3) / 6.
Tensor hardsigmoid(const Tensor& x);
/// x * relu6(x + 3) / 6.
Tensor hardswish(const Tensor& x);

/// max(0, x) + min(0, alpha (e^(x / alpha) - 1)).
Tensor celu(const Tensor& x, double alpha = 1.0);
/// log sigmoid(x) = -softplus(-x), without overflow.
Tensor logsigmoid(const Tensor& x);
/// x / (1 + |x|).
Tensor softsign(const Tensor& x);
/// x - lambd above lambd, x + lambd below -lambd, 0 between (gradient 0 on the bounds).
Tensor softshrink(const Tensor& x, double lambd = 0.5);
/// x where |x| > lambd, else 0.
Tensor hardshrink(const Tensor& x, double lambd = 0.5);
/// x - tanh(x).
Tensor tanhshrink(const Tensor& x);
/// x where x > threshold, else value (PyTorch's F.threshold).
Tensor threshold(const Tensor& x, double threshold, double value);
/// The gated linear unit: a * sigmoid(b) of the two halves of `dim` (its size must be even).
Tensor glu(const Tensor& x, int64_t dim = -1);
/// x where x > 0, weight * x otherwise; weight [1] or [C], the channels being x's dim 1 (PyTorch's F.prelu).
Tensor prelu(const Tensor& x, const Tensor& weight);
/// PyTorch's F.rrelu: x where x >= 0, a * x otherwise, with a drawn from U(lower, upper) for each
/// element in training (the session's random stream), (lower + upper) / 2 in eval.
Tensor rrelu(const Tensor& x, double lower = 1.0 / 8, double upper = 1.0 / 3, bool training = false);

/// A module applying an element-wise function; the classes below are its PyTorch-named forms.
class Elementwise : public Module {
 public:
  Elementwise(std::string type, std::string description, std::function<Tensor(const Tensor&)> fn);
  std::string type_name() const override { return type_; }
  std::string describe() const override { return description_; }

 protected:
  Tensor forward(const Tensor& x) override { return fn_(x); }

 private:
  std::string type_, description_;
  std::function<Tensor(const Tensor&)> fn_;
};

struct LeakyReLU : Elementwise {
  explicit LeakyReLU(double negative_slope = 0.01);
};
struct ELU : Elementwise {
  explicit ELU(double alpha = 1.0);
};
struct SELU : Elementwise {
  SELU();
};
struct SiLU : Elementwise {
  SiLU();
};
struct Mish : Elementwise {
  Mish();
};
struct Softplus : Elementwise {
  explicit Softplus(double beta = 1.0, double threshold = 20.0);
};
struct Hardtanh : Elementwise {
  explicit Hardtanh(double min_val = -1.0, double max_val = 1.0);
};
struct ReLU6 : Elementwise {
  ReLU6();
};
struct Hardsigmoid : Elementwise {
  Hardsigmoid();
};
struct Hardswish : Elementwise {
  Hardswish();
};
struct CELU : Elementwise {
  explicit CELU(double alpha = 1.0);
};
struct LogSigmoid : Elementwise {
  LogSigmoid();
};
struct Softsign : Elementwise {
  Softsign();
};
struct Softshrink : Elementwise {
  explicit Softshrink(double lambd = 0.5);
};
struct Hardshrink : Elementwise {
  explicit Hardshrink(double lambd = 0.5);
};
struct Tanhshrink : Elementwise {
  Tanhshrink();
};
struct Threshold : Elementwise {
  Threshold(double threshold, double value);
};
struct GLU : Elementwise {
  explicit GLU(int64_t dim = -1);
};
/// softmax(-x) over `dim` (PyTorch's nn.Softmin).
struct Softmin : Elementwise {
  explicit Softmin(int64_t dim);
};

/// PyTorch's PReLU: a learnable negative slope "weight" [num_parameters]
/// (1: shared, or one per channel, x's dim 1), initialized to `init`.
class PReLU : public Module {
 public:
  explicit PReLU(int64_t num_parameters = 1, double init = 0.25, DType dtype = float32);
  std::string type_name() const override { return "PReLU"; }
  std::string describe() const override;

 protected:
  Tensor forward(const Tensor& x) override;

 private:
  int64_t num_;
  double init_;
  DType dtype_;
};

/// PyTorch's RReLU(lower, upper): rrelu, random slopes in training mode.
class RReLU : public Module {
 public:
  explicit RReLU(double lower = 1.0 / 8, double upper = 1.0 / 3);
  std::string type_name() const override { return "RReLU"; }
  std::string describe() const override;

 protected:
  Tensor forward(const Tensor& x) override { return rrelu(x, lower_, upper_, training()); }

 private:
  double lower_, upper_;
};

/// softmax over the channels of [N, C, H, W] or [C, H, W] (PyTorch's nn.Softmax2d).
struct Softmax2d : Elementwise {
  Softmax2d();
};

/// softmax / log_softmax over `dim` (PyTorch's nn.Softmax(dim), nn.LogSoftmax(dim)).
struct Softmax : Elementwise {
  explicit Softmax(int64_t dim);
};
struct LogSoftmax : Elementwise {
  explicit LogSoftmax(int64_t dim);
};

}  // namespace loom::nn
