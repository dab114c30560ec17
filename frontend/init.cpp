// Initializers: fill host arrays from Philox streams keyed by the seed the
// Session derives for each variable.

#include "frontend/init.hpp"

#include <cmath>

#include "core/ndarray.hpp"
#include "core/philox.hpp"

namespace loom::init {

namespace {

/// Writes f(i) (a double) into every element of a compact host array, cast to its dtype.
template <class F>
void fill_with(const NDArray& value, const char* what, F&& f) {
  LOOM_CHECK(value.defined() && value.device().kind == DeviceKind::cpu && value.is_compact(), what,
             ": expected a compact host array");
  dispatch(value.dtype(), [&]<class T>() {
    T* p = value.data<T>();
    const int64_t n = value.numel();
    for (int64_t i = 0; i < n; ++i) {
      double x = f(i);
      if constexpr (std::is_same_v<T, bool>)
        p[i] = x != 0;
      else
        p[i] = T(x);
    }
  });
}

void require_float(const NDArray& value, const char* what) {
  LOOM_CHECK(is_floating(value.dtype()), what, ": random initializers need a floating dtype, got ",
             dtype_name(value.dtype()));
}

Fans resolve(const Shape& shape, int64_t fan_in, int64_t fan_out, const char* what) {
  LOOM_CHECK(fan_in >= 0 && fan_out >= 0, what, ": fans must be positive, got fan_in ", fan_in, ", fan_out ", fan_out);
  if (fan_in > 0 && fan_out > 0) return {fan_in, fan_out};
  Fans f = fans(shape, what);
  if (fan_in > 0) f.fan_in = fan_in;
  if (fan_out > 0) f.fan_out = fan_out;
  return f;
}

}  // namespace

double gain(Nonlinearity nl, double a) {
  switch (nl) {
    case Nonlinearity::linear:
    case Nonlinearity::identity:
    case Nonlinearity::sigmoid:
      return 1.0;
    case Nonlinearity::tanh:
      return 5.0 / 3.0;
    case Nonlinearity::relu:
      return std::sqrt(2.0);
    case Nonlinearity::leaky_relu:
      return std::sqrt(2.0 / (1.0 + a * a));
    case Nonlinearity::selu:
      return 0.75;
  }
  return 1.0;
}

Nonlinearity parse_nonlinearity(const std::string& name) {
  if (name == "linear") return Nonlinearity::linear;
  if (name == "identity") return Nonlinearity::identity;
  if (name == "sigmoid") return Nonlinearity::sigmoid;
  if (name == "tanh") return Nonlinearity::tanh;
  if (name == "relu") return Nonlinearity::relu;
  if (name == "leaky_relu") return Nonlinearity::leaky_relu;
  if (name == "selu") return Nonlinearity::selu;
  fail("unknown nonlinearity '", name, "' (linear, identity, sigmoid, tanh, relu, leaky_relu, selu)");
}

Fans fans(const Shape& shape, const char* what) {
  LOOM_CHECK(shape.size() >= 2, what, ": fan_in and fan_out need a weight of at least 2 dims ([out, in, ...]), got ",
             S(shape), "; pass .fan_in and .fan_out");
  LOOM_CHECK(is_static(shape), what, ": shape ", S(shape), " must be fully known");
  int64_t receptive = 1;
  for (size_t i = 2; i < shape.size(); ++i) receptive *= shape[i];
  Fans f{shape[1] * receptive, shape[0] * receptive};
  LOOM_CHECK(f.fan_in > 0 && f.fan_out > 0, what, ": shape ", S(shape), " has a zero fan");
  return f;
}

Initializer constant(double value) {
  return [value](const NDArray& v, uint64_t) { fill_with(v, "init::constant", [&](int64_t) { return value; }); };
}
Initializer zeros() { return constant(0.0); }
Initializer ones() { return constant(1.0); }

Initializer uniform(double low, double high) {
  LOOM_CHECK(std::isfinite(low) && std::isfinite(high) && low <= high, "init::uniform: need finite low <= high, got [",
             low, ", ", high, ")");
  return [low, high](const NDArray& v, uint64_t seed) {
    require_float(v, "init::uniform");
    fill_with(v, "init::uniform",
              [&](int64_t i) { return low + (high - low) * philox::uniform_f64(seed, 0, uint64_t(i)); });
  };
}

Initializer normal(double mean, double stddev) {
  LOOM_CHECK(std::isfinite(mean) && std::isfinite(stddev) && stddev >= 0,
             "init::normal: need a finite mean and stddev >= 0, got mean ", mean, ", stddev ", stddev);
  return [mean, stddev](const NDArray& v, uint64_t seed) {
    require_float(v, "init::normal");
    fill_with(v, "init::normal", [&](int64_t i) { return mean + stddev * philox::normal(seed, 0, uint64_t(i)); });
  };
}

Initializer xavier_uniform(XavierOptions o) {
  return [o](const NDArray& v, uint64_t seed) {
    Fans f = resolve(v.shape(), o.fan_in, o.fan_out, "init::xavier_uniform");
    double b = o.gain * std::sqrt(6.0 / double(f.fan_in + f.fan_out));
    uniform(-b, b)(v, seed);
  };
}

Initializer xavier_normal(XavierOptions o) {
  return [o](const NDArray& v, uint64_t seed) {
    Fans f = resolve(v.shape(), o.fan_in, o.fan_out, "init::xavier_normal");
    normal(0.0, o.gain * std::sqrt(2.0 / double(f.fan_in + f.fan_out)))(v, seed);
  };
}

Initializer kaiming_uniform(KaimingOptions o) {
  return [o](const NDArray& v, uint64_t seed) {
    Fans f = resolve(v.shape(), o.fan_in, o.fan_out, "init::kaiming_uniform");
    double fan = double(o.mode == FanMode::fan_in ? f.fan_in : f.fan_out);
    double b = gain(o.nonlinearity, o.a) * std::sqrt(3.0 / fan);
    uniform(-b, b)(v, seed);
  };
}

Initializer kaiming_normal(KaimingOptions o) {
  return [o](const NDArray& v, uint64_t seed) {
    Fans f = resolve(v.shape(), o.fan_in, o.fan_out, "init::kaiming_normal");
    double fan = double(o.mode == FanMode::fan_in ? f.fan_in : f.fan_out);
    normal(0.0, gain(o.nonlinearity, o.a) / std::sqrt(fan))(v, seed);
  };
}

}  // namespace loom::init
