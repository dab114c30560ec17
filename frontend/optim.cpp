// Optimizers built into the graph: gradients, clipping, updates as assigns.

#include "frontend/optim.hpp"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "core/session.hpp"
#include "frontend/init.hpp"
#include "frontend/nn.hpp"
#include "ops/ops.hpp"

namespace loom::optim {

namespace {

/// x in the dtype of `like` (the step's scalars are float64, as PyTorch's Python floats).
Tensor as(const Tensor& x, const Tensor& like) { return x.dtype() == like.dtype() ? x : cast(x, like.dtype()); }

void check_finite_nonneg(const std::string& who, const char* what, double v) {
  LOOM_CHECK(std::isfinite(v) && v >= 0, who, ": ", what, " must be finite and >= 0, got ", v);
}

}  // namespace

// ---------------------------------------------------------------- schedules

namespace schedule {

Schedule constant() {
  return [](const Tensor& step) { return scalar_like(step, 1.0); };
}

Schedule step(int64_t step_size, double gamma) {
  LOOM_CHECK(step_size > 0, "schedule::step: step_size must be positive, got ", step_size);
  LOOM_CHECK(std::isfinite(gamma) && gamma > 0, "schedule::step: gamma must be positive, got ", gamma);
  return [step_size, gamma](const Tensor& step) {
    // floor(step / step_size) in integers: exact for any step count.
    Tensor i = cast(step, int64);
    Tensor k = trunc_divide(maximum(i, scalar_like(i, 0.0)), scalar_like(i, double(step_size)));
    return pow(scalar_like(step, gamma), cast(k, step.dtype()));
  };
}

Schedule function(std::function<double(int64_t)> factor, int64_t steps) {
  LOOM_CHECK(bool(factor), "schedule::function: empty function");
  LOOM_CHECK(steps > 0 && steps <= kMaxScheduleSteps, "schedule::function: steps must be in [1, ", kMaxScheduleSteps,
             "] (a value per step in the graph), got ", steps);
  std::vector<double> table(size_t(steps), 0.0);
  for (int64_t i = 0; i < steps; ++i) {
    double f = factor(i);
    LOOM_CHECK(std::isfinite(f), "schedule::function: factor(", i, ") = ", f, " is not finite");
    table[size_t(i)] = f;
  }
  NDArray values = NDArray::from(table);
  return [values, steps](const Tensor& step) {
    Tensor i = cast(step, int64);
    i = minimum(maximum(i, scalar_like(i, 0.0)), scalar_like(i, double(steps - 1)));
    Tensor f = gather(step.graph().constant(values), i);
    return as(f, step);
  };
}

Schedule cosine(int64_t total_steps, double min_factor) {
  LOOM_CHECK(total_steps > 0 && total_steps < kMaxScheduleSteps, "schedule::cosine: total_steps must be in [1, ",
             kMaxScheduleSteps - 1, "] (it is tabulated), got ", total_steps);
  LOOM_CHECK(std::isfinite(min_factor) && min_factor >= 0, "schedule::cosine: min_factor must be >= 0, got ",
             min_factor);
  return function(
      [total_steps, min_factor](int64_t s) {
        double p = double(std::min(s, total_steps)) / double(total_steps);
        return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + std::cos(std::numbers::pi * p));
      },
      total_steps + 1);
}

Schedule warmup(int64_t steps, Schedule after) {
  LOOM_CHECK(steps > 0, "schedule::warmup: steps must be positive, got ", steps);
  if (!after) after = constant();
  return [steps, after](const Tensor& step) {
    Tensor ramp = (step + 1.0) / double(steps) * after(scalar_like(step, 0.0));
    Tensor later = after(maximum(step - double(steps), scalar_like(step, 0.0)));
    return where(step < double(steps), ramp, later);
  };
}

double evaluate(const Schedule& schedule, int64_t step) {
  LOOM_CHECK(bool(schedule), "schedule::evaluate: empty schedule");
  Graph g;
  Tensor s = g.scalar(double(step), float64);
  Tensor f = schedule(s);
  LOOM_CHECK(f.valid() && f.shape().empty() && is_floating(f.dtype()),
             "schedule::evaluate: a schedule must return a floating scalar");
  Session session(g, {.threads = 1});
  return session.run1(f).item();
}

}  // namespace schedule

// ---------------------------------------------------------------- clipping

Tensor global_norm(const std::vector<Tensor>& grads) {
  Tensor acc;
  for (const Tensor& g : grads) {
    if (!g.valid()) continue;  // no gradient (PyTorch's None), as clip_grad_norm_ skips it
    LOOM_CHECK(is_floating(g.dtype()), "global_norm: gradients must be floating tensors, got ", dtype_name(g.dtype()));
    Tensor s = sum(g * g);
    if (acc.valid()) s = as(s, acc);
    acc = acc.valid() ? acc + s : s;
  }
  LOOM_CHECK(acc.valid(), "global_norm: no gradients");
  return sqrt(acc);
}

std::vector<Tensor> clip_by_global_norm(const std::vector<Tensor>& grads, double max_norm, Tensor* norm) {
  LOOM_CHECK(std::isfinite(max_norm) && max_norm > 0, "clip_by_global_norm: max_norm must be positive, got ", max_norm);
  Tensor n = global_norm(grads);
  if (norm) *norm = n;
  Tensor coef = minimum(max_norm / (n + 1e-6), scalar_like(n, 1.0));
  std::vector<Tensor> out;
  for (const Tensor& g : grads) out.push_back(g.valid() ? g * as(coef, g) : g);
  return out;
}

// ---------------------------------------------------------------- Optimizer

Optimizer::~Optimizer() = default;

Optimizer::Optimizer(std::vector<Tensor> params, std::vector<Tensor> updates, std::string name, double lr,
                     Common common)
    : name_(std::move(name)), lr0_(lr), common_(std::move(common)), extra_updates_(std::move(updates)) {
  init(std::move(params));
}

Optimizer::Optimizer(const nn::Module& module, std::string name, double lr, Common common)
    : name_(std::move(name)), lr0_(lr), common_(std::move(common)), extra_updates_(module.updates()) {
  LOOM_CHECK(!module.parameters().empty(), name_, ": ", module.type_name(),
             " has no parameters yet: modules create their variables when first called, so build the model "
             "(model(x)) before its optimizer");
  init(module.parameters());
}

void Optimizer::init(std::vector<Tensor> params) {
  LOOM_CHECK(!name_.empty() && name_.find('/') == std::string::npos, "optimizer name '", name_,
             "' must be non-empty and contain no '/'");
  LOOM_CHECK(std::isfinite(lr0_) && lr0_ >= 0, name_, ": lr must be finite and >= 0, got ", lr0_);
  LOOM_CHECK(common_.clip_norm >= 0 && std::isfinite(common_.clip_norm), name_, ": clip_norm must be >= 0, got ",
             common_.clip_norm);
  LOOM_CHECK(!params.empty(), name_, ": no parameters to optimize");
  for (size_t i = 0; i < params.size(); ++i) {
    const Tensor& p = params[i];
    LOOM_CHECK(p.valid(), name_, ": parameter ", i, " is an empty Tensor handle");
    LOOM_CHECK(p.op() == "variable", name_, ": parameter '", p.name(), "' is not a variable (", p.op(), ")");
    LOOM_CHECK(is_floating(p.dtype()), name_, ": parameter '", p.name(), "' has dtype ", dtype_name(p.dtype()),
               "; only floating variables can be trained");
    if (!graph_) graph_ = &p.graph();
    LOOM_CHECK(&p.graph() == graph_, name_, ": parameter '", p.name(), "' belongs to another graph");
    for (size_t j = 0; j < i; ++j) LOOM_CHECK(!params[j].is(p), name_, ": parameter '", p.name(), "' is listed twice");
  }
  for (const Tensor& u : extra_updates_)
    LOOM_CHECK(u.valid() && &u.graph() == graph_, name_, ": a state update belongs to another graph");
  params_ = std::move(params);
  slots_.resize(params_.size());
}

std::vector<Tensor> Optimizer::state() const {
  std::vector<Tensor> out;
  if (step_.valid()) out.push_back(step_);
  for (const auto& s : slots_)
    for (const auto& [n, t] : s) out.push_back(t);
  return out;
}

Tensor Optimizer::slot(size_t index, const std::string& slot) {
  LOOM_ASSERT(index < params_.size());
  for (const auto& [n, t] : slots_[index])
    if (n == slot) return t;
  const Tensor& p = params_[index];
  Tensor t = graph_->variable(p.name() + "/" + slot, p.shape(), init::zeros(), p.dtype());
  slots_[index].emplace_back(slot, t);
  return t;
}

Tensor Optimizer::minimize(const Tensor& loss) {
  LOOM_CHECK(loss.valid(), name_, ".minimize: the loss is an empty Tensor handle");
  LOOM_CHECK(&loss.graph() == graph_, name_, ".minimize: the loss '", loss.name(),
             "' belongs to another graph than the parameters");
  LOOM_CHECK(is_floating(loss.dtype()), name_, ".minimize: the loss '", loss.name(), "' must be floating, got ",
             dtype_name(loss.dtype()));
  LOOM_CHECK(loss.shape().empty() || (is_static(loss.shape()) && numel(loss.shape()) == 1), name_,
             ".minimize: the loss '", loss.name(), "' must be a scalar, got ", S(loss.shape()),
             " (reduce it with mean or sum)");
  std::vector<Tensor> grads;
  {
    auto scope = graph_->scope(name_);
    grads = gradients(loss, params_, {}, {.unreachable_as_zero = false});
  }
  return apply_gradients(grads);
}

Tensor Optimizer::apply_gradients(const std::vector<Tensor>& grads_in) {
  LOOM_CHECK(grads_in.size() == params_.size(), name_, ".apply_gradients: ", grads_in.size(), " gradients for ",
             params_.size(), " parameters");
  bool any = false;
  for (size_t i = 0; i < grads_in.size(); ++i) {
    const Tensor& g = grads_in[i];
    if (!g.valid()) continue;  // no gradient: the parameter and its state stay as they are
    any = true;
    LOOM_CHECK(&g.graph() == graph_, name_, ".apply_gradients: the gradient of '", params_[i].name(),
               "' is in another graph");
    LOOM_CHECK(g.shape() == params_[i].shape() && g.dtype() == params_[i].dtype(), name_,
               ".apply_gradients: the gradient of '", params_[i].name(), "' is ", dtype_name(g.dtype()), S(g.shape()),
               ", expected ", dtype_name(params_[i].dtype()), S(params_[i].shape()));
  }
  auto scope = graph_->scope(name_);
  LOOM_CHECK(step_.valid() || !graph_->find(graph_->prefix() + "step").valid(), name_,
             ": another optimizer of this graph already keeps its state under the name '", name_,
             "' (two optimizers, as a GAN's): give each its own, e.g. {.name = \"", name_, "_2\"}");
  if (!step_.valid()) step_ = graph_->variable("step", {}, init::zeros(), int64);

  std::vector<Tensor> grads = grads_in;
  norm_ = any ? global_norm(grads) : graph_->scalar(0.0, float32);
  if (common_.clip_norm > 0 && any) grads = clip_by_global_norm(grads, common_.clip_norm);

  // The step's scalars: the index of this update and the scheduled rate, in
  // float64 as PyTorch's (Adam's 1 - 0.999^t lost 7e-6 of the step in float32).
  Tensor next = step_ + 1;
  Tensor t = cast(next, float64);
  lr_ = graph_->scalar(lr0_, float64);
  if (common_.schedule) {
    Tensor f = common_.schedule(cast(step_, float64));
    LOOM_CHECK(f.valid() && f.shape().empty() && is_floating(f.dtype()), name_,
               ": the schedule must return a floating scalar, got ", f.valid() ? S(f.shape()) : S({}));
    lr_ = lr_ * as(f, lr_);
  }

  std::vector<Tensor> ops;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!grads[i].valid()) continue;
    std::vector<Tensor> u = update({i, params_[i], grads[i], lr_, t});
    ops.insert(ops.end(), u.begin(), u.end());
  }
  ops.push_back(assign(step_, next));
  ops.insert(ops.end(), extra_updates_.begin(), extra_updates_.end());
  return group(ops, "update");
}

// ---------------------------------------------------------------- SGD

SGD::SGD(std::vector<Tensor> params, SGDOptions o)
    : Optimizer(std::move(params), {}, o.name, o.lr, {o.clip_norm, o.schedule}), o_(std::move(o)) {
  check_finite_nonneg(name(), "momentum", o_.momentum);
  check_finite_nonneg(name(), "dampening", o_.dampening);
  check_finite_nonneg(name(), "weight_decay", o_.weight_decay);
  LOOM_CHECK(!o_.nesterov || (o_.momentum > 0 && o_.dampening == 0), name(),
             ": Nesterov momentum requires momentum > 0 and dampening 0");
}

SGD::SGD(const nn::Module& module, SGDOptions o)
    : Optimizer(module, o.name, o.lr, {o.clip_norm, o.schedule}), o_(std::move(o)) {
  check_finite_nonneg(name(), "momentum", o_.momentum);
  check_finite_nonneg(name(), "dampening", o_.dampening);
  check_finite_nonneg(name(), "weight_decay", o_.weight_decay);
  LOOM_CHECK(!o_.nesterov || (o_.momentum > 0 && o_.dampening == 0), name(),
             ": Nesterov momentum requires momentum > 0 and dampening 0");
}

std::vector<Tensor> SGD::update(const Context& c) {
  std::vector<Tensor> ops;
  Tensor g = c.grad;
  if (o_.weight_decay != 0) g = g + c.param * o_.weight_decay;
  if (o_.momentum != 0) {
    Tensor buf = slot(c.index, "momentum");
    Tensor b = buf * o_.momentum + (o_.dampening != 0 ? g * (1.0 - o_.dampening) : g);
    // PyTorch starts the buffer at the first gradient itself (no dampening).
    if (o_.dampening != 0) b = where(c.t == 1.0, g, b);
    ops.push_back(assign(buf, b));
    g = o_.nesterov ? g + b * o_.momentum : b;
  }
  ops.push_back(assign(c.param, c.param - as(c.lr, g) * g));
  return ops;
}

// ---------------------------------------------------------------- Adam, AdamW

static void check_adam(const std::string& who, const AdamOptions& o) {
  LOOM_CHECK(o.beta1 >= 0 && o.beta1 < 1, who, ": beta1 must be in [0, 1), got ", o.beta1);
  LOOM_CHECK(o.beta2 >= 0 && o.beta2 < 1, who, ": beta2 must be in [0, 1), got ", o.beta2);
  LOOM_CHECK(std::isfinite(o.eps) && o.eps >= 0, who, ": eps must be >= 0, got ", o.eps);
  check_finite_nonneg(who, "weight_decay", o.weight_decay);
}

Adam::Adam(std::vector<Tensor> params, AdamOptions o) : Adam(std::move(params), std::move(o), false) {}
Adam::Adam(const nn::Module& module, AdamOptions o) : Adam(module, std::move(o), false) {}

Adam::Adam(std::vector<Tensor> params, AdamOptions o, bool decoupled)
    : Optimizer(std::move(params), {}, o.name, o.lr, {o.clip_norm, o.schedule}),
      o_(std::move(o)),
      decoupled_(decoupled) {
  check_adam(name(), o_);
}
Adam::Adam(const nn::Module& module, AdamOptions o, bool decoupled)
    : Optimizer(module, o.name, o.lr, {o.clip_norm, o.schedule}), o_(std::move(o)), decoupled_(decoupled) {
  check_adam(name(), o_);
}

std::vector<Tensor> Adam::update(const Context& c) {
  Tensor g = c.grad, p = c.param;
  if (!decoupled_ && o_.weight_decay != 0) g = g + p * o_.weight_decay;
  Tensor m = slot(c.index, "m"), v = slot(c.index, "v");
  // p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps), rearranged so the
  // per-element work is one sqrt, one add, one multiply and one divide:
  // p -= (lr * sqrt(bc2) / bc1) * m / (sqrt(v) + eps * sqrt(bc2)).
  Tensor bc1 = 1.0 - pow(scalar_like(c.t, o_.beta1), c.t);
  Tensor sqrt_bc2 = sqrt(1.0 - pow(scalar_like(c.t, o_.beta2), c.t));
  Tensor step_size = as(c.lr * sqrt_bc2 / bc1, p);
  Tensor eps_hat = as(sqrt_bc2 * o_.eps, p);
  Tensor decay = scalar_like(p, 1.0);
  if (decoupled_ && o_.weight_decay != 0) decay = as(1.0 - c.lr * o_.weight_decay, p);
  // One fused primitive (ops/optim.cpp) computes m1, v1 and the new p in a single pass.
  auto u = adam_update(p, m, v, g, step_size, eps_hat, decay, o_.beta1, o_.beta2);
  return {assign(m, u[1]), assign(v, u[2]), assign(p, u[0])};
}

AdamW::AdamW(std::vector<Tensor> params, AdamWOptions o) : Adam(std::move(params), o.adam(), true) {}
AdamW::AdamW(const nn::Module& module, AdamWOptions o) : Adam(module, o.adam(), true) {}

}  // namespace loom::optim
