#include "ops/check.hpp"

#include <cmath>
#include <sstream>

#include "core/autodiff.hpp"
#include "core/invoke.hpp"
#include "core/philox.hpp"
#include "ops/ops.hpp"

namespace loom {

namespace {

// |a - b| scaled: absolute below 1, relative above.
double scaled_error(double a, double b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b) ? 0 : INFINITY;
  if (std::isinf(a) || std::isinf(b)) return a == b ? 0 : INFINITY;
  return std::fabs(a - b) / std::max(1.0, std::fabs(b));
}

double max_scaled_error(const NDArray& got, const NDArray& want) {
  NDArray x = got.to(Device::cpu()).astype(float64), y = want.astype(float64);
  const double *p = x.data<double>(), *q = y.data<double>();
  double m = 0;
  for (int64_t i = 0; i < x.numel(); ++i) m = std::max(m, scaled_error(p[i], q[i]));
  return m;
}

}  // namespace

CheckResult check_forward(const OpDef& op, const OpExample& ex, DType dtype) {
  CheckResult r;
  std::vector<NDArray> ins;
  for (const NDArray& a : ex.inputs) ins.push_back(is_floating(a.dtype()) ? a.astype(dtype) : a);
  std::vector<NDArray> outs = invoke(op.name, ins, ex.attrs, {.seed = 1234});
  if (!op.reference) {
    // Random ops: only shapes are checked here (statistics are tested separately).
    std::vector<TensorType> types;
    for (const NDArray& a : ins) types.push_back({a.dtype(), a.shape()});
    InferContext c{op.name, op.name, types, ex.attrs};
    auto want = op.infer(c);
    r.ok = want.size() == outs.size();
    for (size_t i = 0; r.ok && i < outs.size(); ++i) r.ok = outs[i].shape() == want[i].shape && outs[i].dtype() == want[i].dtype;
    r.detail = r.ok ? "shapes only (no reference)" : "output shape or dtype differs from inference";
    return r;
  }
  std::vector<NDArray> ref = op.reference(ex.inputs, ex.attrs);
  if (ref.size() != outs.size()) {
    r.ok = false;
    r.detail = "reference has " + std::to_string(ref.size()) + " outputs, kernel " + std::to_string(outs.size());
    return r;
  }
  const double tol = dtype == float64 ? 1e-10 : 2e-5;
  for (size_t i = 0; i < outs.size(); ++i) {
    if (outs[i].shape() != ref[i].shape()) {
      r.ok = false;
      r.detail = "output " + std::to_string(i) + " shape " + shape_str(outs[i].shape()) + ", reference " +
                 shape_str(ref[i].shape());
      return r;
    }
    double e = max_scaled_error(outs[i], ref[i]);
    r.max_error = std::max(r.max_error, e);
    if (!(e <= tol)) {
      r.ok = false;
      r.detail = "output " + std::to_string(i) + " differs from the reference by " + std::to_string(e);
    }
  }
  return r;
}

CheckResult check_gradient_fn(const std::function<std::vector<Tensor>(const std::vector<Tensor>&)>& f,
                              const std::vector<NDArray>& inputs, const std::vector<int>& wrt, double h,
                              double tolerance) {
  CheckResult r;
  Graph g;
  std::vector<Tensor> xs;
  std::vector<NDArray> vals;
  for (size_t i = 0; i < inputs.size(); ++i) {
    bool diff = std::find(wrt.begin(), wrt.end(), int(i)) != wrt.end();
    if (diff) {
      NDArray v = inputs[i].astype(float64);
      xs.push_back(g.placeholder("x" + std::to_string(i), v.shape(), float64));
      vals.push_back(v);
    } else {
      xs.push_back(g.constant(inputs[i]));
      vals.emplace_back();
    }
  }
  std::vector<Tensor> ys = f(xs);
  Tensor loss;
  uint64_t seed = 99;
  for (const Tensor& y : ys) {
    if (!y.valid() || !is_floating(y.dtype())) continue;
    NDArray w = NDArray::empty(y.shape(), float64);
    for (int64_t i = 0; i < w.numel(); ++i) w.data<double>()[i] = 0.5 + philox::uniform_f64(seed, 0, uint64_t(i));
    ++seed;
    Tensor term = sum(cast(y, float64) * g.constant(w));
    loss = loss.valid() ? loss + term : term;
  }
  if (!loss.valid()) {
    r.ok = false;
    r.detail = "no floating output to differentiate";
    return r;
  }
  std::vector<Tensor> targets;
  for (int i : wrt) targets.push_back(xs[size_t(i)]);
  std::vector<Tensor> grads = gradients(loss, targets);
  Session s(g, {.threads = 1, .seed = 7});
  Feeds feeds;
  for (int i : wrt) feeds.push_back({xs[size_t(i)], vals[size_t(i)]});
  std::vector<NDArray> symbolic = s.run(grads, feeds);
  auto eval = [&] { return s.run({loss}, feeds)[0].item(); };
  for (size_t k = 0; k < wrt.size(); ++k) {
    NDArray v = feeds[k].second;
    double* p = v.data<double>();
    const NDArray& sg = symbolic[k];
    for (int64_t i = 0; i < v.numel(); ++i) {
      double old = p[i];
      p[i] = old + h;
      double up = eval();
      p[i] = old - h;
      double down = eval();
      p[i] = old;
      double numeric = (up - down) / (2 * h);
      double e = scaled_error(sg.data<double>()[i], numeric);
      r.max_error = std::max(r.max_error, e);
      if (!(e <= tolerance) && r.ok) {
        r.ok = false;
        std::ostringstream os;
        os << "d/d input " << wrt[k] << " element " << i << ": symbolic " << sg.data<double>()[i] << ", numeric "
           << numeric;
        r.detail = os.str();
      }
    }
  }
  return r;
}

CheckResult check_gradient(const OpDef& op, const OpExample& ex) {
  std::vector<int> wrt = ex.grad_inputs;
  if (wrt.empty())
    for (size_t i = 0; i < ex.inputs.size(); ++i)
      if (is_floating(ex.inputs[i].dtype())) wrt.push_back(int(i));
  std::string name = op.name;
  Attrs attrs = ex.attrs;
  return check_gradient_fn([&](const std::vector<Tensor>& xs) { return xs[0].graph().add(name, xs, attrs); },
                           ex.inputs, wrt, ex.grad_step, ex.grad_tolerance);
}

}  // namespace loom
