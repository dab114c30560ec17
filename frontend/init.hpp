#pragma once
/// Initializers for variables (`Graph::variable(name, shape, init)`).
///
/// Each returns a loom::Initializer: a function filling a host array from a
/// seed that the Session derives from its own seed and the variable's name, so
/// a model initializes identically on every run with the same session seed
/// (and differently with another seed), whatever the thread count.
///
/// Fans follow PyTorch's weight layout, which loom's modules use: a weight is
/// [out, in, ...] with any trailing receptive-field dims (a Linear weight is
/// [out, in]; a convolution kernel [out, in / groups, kh, kw]), so
///   fan_in  = shape[1] * receptive,   fan_out = shape[0] * receptive,
/// where receptive is the product of the dims after the first two: PyTorch's
/// fan rules, and its calculate_gain for the gains. Pass `.fan_in` /
/// `.fan_out` to override them (e.g. for a weight in another layout).

#include <cstdint>
#include <string>
#include <utility>

#include "core/graph.hpp"

namespace loom::init {

enum class Nonlinearity { linear, identity, sigmoid, tanh, relu, leaky_relu, selu };
enum class FanMode { fan_in, fan_out };

/// PyTorch's torch.nn.init.calculate_gain: 1 for linear/identity/sigmoid, 5/3
/// for tanh, sqrt(2) for relu, sqrt(2 / (1 + a^2)) for leaky_relu (slope a), 3/4 for selu.
double gain(Nonlinearity nonlinearity, double a = 0.01);

struct Fans {
  int64_t fan_in = 0;
  int64_t fan_out = 0;
};
/// Fans of a weight of `shape` in PyTorch's [out, in, ...] layout; throws
/// loom::Error for fewer than 2 dims (`what` names the caller).
Fans fans(const Shape& shape, const char* what = "init");

struct XavierOptions {
  double gain = 1.0;
  int64_t fan_in = 0;   // 0: from the shape
  int64_t fan_out = 0;  // 0: from the shape
};

struct KaimingOptions {
  /// Negative slope of leaky_relu (the gain's parameter). PyTorch's Linear uses
  /// a = sqrt(5) with leaky_relu, which makes the bound 1/sqrt(fan_in).
  double a = 0.0;
  FanMode mode = FanMode::fan_in;
  Nonlinearity nonlinearity = Nonlinearity::leaky_relu;
  int64_t fan_in = 0;   // 0: from the shape
  int64_t fan_out = 0;  // 0: from the shape
};

/// Every element = value (any dtype).
Initializer constant(double value);
Initializer zeros();
Initializer ones();
/// Uniform on [low, high).
Initializer uniform(double low = 0.0, double high = 1.0);
/// Normal with the given mean and standard deviation.
Initializer normal(double mean = 0.0, double stddev = 1.0);
/// U(-b, b) with b = gain * sqrt(6 / (fan_in + fan_out)).
Initializer xavier_uniform(XavierOptions options = {});
/// N(0, s^2) with s = gain * sqrt(2 / (fan_in + fan_out)).
Initializer xavier_normal(XavierOptions options = {});
/// U(-b, b) with b = gain * sqrt(3 / fan), fan by `mode`.
Initializer kaiming_uniform(KaimingOptions options = {});
/// N(0, s^2) with s = gain / sqrt(fan).
Initializer kaiming_normal(KaimingOptions options = {});

/// Parses "relu", "tanh", ... (for command lines); throws loom::Error otherwise.
Nonlinearity parse_nonlinearity(const std::string& name);

}  // namespace loom::init
