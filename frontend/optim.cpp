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

void check_betas(const std::string& who, double beta1, double beta2) {
  LOOM_CHECK(beta1 >= 0 && beta1 < 1, who, ": beta1 must be in [0, 1), got ", beta1);
  LOOM_CHECK(beta2 >= 0 && beta2 < 1, who, ": beta2 must be in [0, 1), got ", beta2);
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

Schedule exponential(double gamma) {
  LOOM_CHECK(std::isfinite(gamma) && gamma > 0, "schedule::exponential: gamma must be positive, got ", gamma);
  return [gamma](const Tensor& step) { return pow(scalar_like(step, gamma), maximum(step, scalar_like(step, 0.0))); };
}

Schedule multi_step(std::vector<int64_t> milestones, double gamma) {
  LOOM_CHECK(std::isfinite(gamma) && gamma > 0, "schedule::multi_step: gamma must be positive, got ", gamma);
  for (size_t i = 0; i < milestones.size(); ++i)
    LOOM_CHECK(milestones[i] >= 0 && (i == 0 || milestones[i] > milestones[i - 1]),
               "schedule::multi_step: milestones must be increasing and >= 0, got ", milestones[i], " at ", i);
  return [milestones, gamma](const Tensor& step) {
    Tensor passed = scalar_like(step, 0.0);
    for (int64_t m : milestones) passed = passed + cast(step >= double(m), step.dtype());
    return pow(scalar_like(step, gamma), passed);
  };
}

Schedule linear(double start_factor, double end_factor, int64_t total_steps) {
  LOOM_CHECK(std::isfinite(start_factor) && start_factor > 0 && start_factor <= 1,
             "schedule::linear: start_factor must be in (0, 1], got ", start_factor);
  LOOM_CHECK(std::isfinite(end_factor) && end_factor >= 0 && end_factor <= 1,
             "schedule::linear: end_factor must be in [0, 1], got ", end_factor);
  LOOM_CHECK(total_steps > 0, "schedule::linear: total_steps must be positive, got ", total_steps);
  return [=](const Tensor& step) {
    Tensor done = minimum(maximum(step, scalar_like(step, 0.0)), scalar_like(step, double(total_steps)));
    return start_factor + (end_factor - start_factor) / double(total_steps) * done;
  };
}

Schedule polynomial(int64_t total_steps, double power) {
  LOOM_CHECK(total_steps > 0, "schedule::polynomial: total_steps must be positive, got ", total_steps);
  LOOM_CHECK(std::isfinite(power) && power >= 0, "schedule::polynomial: power must be >= 0, got ", power);
  return [=](const Tensor& step) {
    Tensor done = minimum(maximum(step, scalar_like(step, 0.0)), scalar_like(step, double(total_steps)));
    return pow(1.0 - done / double(total_steps), scalar_like(step, power));
  };
}

Schedule one_cycle(int64_t total_steps, double pct_start, double div_factor, double final_div_factor) {
  LOOM_CHECK(total_steps > 1 && total_steps <= kMaxScheduleSteps, "schedule::one_cycle: total_steps must be in [2, ",
             kMaxScheduleSteps, "], got ", total_steps);
  LOOM_CHECK(pct_start > 0 && pct_start < 1, "schedule::one_cycle: pct_start must be in (0, 1), got ", pct_start);
  LOOM_CHECK(std::isfinite(div_factor) && div_factor > 0, "schedule::one_cycle: div_factor must be positive, got ",
             div_factor);
  LOOM_CHECK(std::isfinite(final_div_factor) && final_div_factor > 0,
             "schedule::one_cycle: final_div_factor must be positive, got ", final_div_factor);
  // PyTorch's phases: up until step pct_start * total - 1, down until total - 1; cosine in each.
  const double up_end = pct_start * double(total_steps) - 1, down_end = double(total_steps - 1);
  const double initial = 1.0 / div_factor, last = initial / final_div_factor;
  auto anneal = [](double from, double to, double pct) {
    return to + (from - to) / 2 * (std::cos(std::numbers::pi * pct) + 1);
  };
  return function(
      [=](int64_t s) {
        const double t = double(s);
        if (t <= up_end) return anneal(initial, 1.0, up_end > 0 ? t / up_end : 1.0);
        return anneal(1.0, last, (t - up_end) / (down_end - up_end));
      },
      total_steps);
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

// ---------------------------------------------------------------- ReduceLROnPlateau

ReduceLROnPlateau::ReduceLROnPlateau(Graph& graph, PlateauOptions o) : o_(std::move(o)), graph_(&graph) {
  const std::string& n = o_.name;
  LOOM_CHECK(o_.factor >= 0 && o_.factor < 1, n, ": factor must be in [0, 1), got ", o_.factor);
  LOOM_CHECK(o_.patience >= 0, n, ": patience must be >= 0, got ", o_.patience);
  LOOM_CHECK(o_.cooldown >= 0, n, ": cooldown must be >= 0, got ", o_.cooldown);
  check_finite_nonneg(n, "threshold", o_.threshold);
  check_finite_nonneg(n, "min_factor", o_.min_factor);
  check_finite_nonneg(n, "eps", o_.eps);
  auto scalar = [&](const char* what, double initial) {
    return graph.variable(n + "/" + what, {}, init::constant(initial), float64);
  };
  factor_ = scalar("factor", 1.0);
  best_ = scalar("best", o_.maximize ? -INFINITY : INFINITY);
  bad_epochs_ = scalar("bad_epochs", 0.0);
  cooldown_ = scalar("cooldown", 0.0);
}

Schedule ReduceLROnPlateau::schedule() const {
  return [graph = graph_, factor = factor_, name = o_.name](const Tensor& step) {
    LOOM_CHECK(&step.graph() == graph, name, ": its schedule is for an optimizer of the graph it was built in");
    return factor;
  };
}

bool ReduceLROnPlateau::step(Session& session, double metric) {
  LOOM_CHECK(&session.graph() == graph_, o_.name, ".step: the session runs another graph");
  double best = session.get(best_).item(), bad = session.get(bad_epochs_).item();
  double cooldown = session.get(cooldown_).item(), factor = session.get(factor_).item();
  // PyTorch's _is_better, a negative best included (its relative bound then moves the other way).
  const double sign = o_.maximize ? 1 : -1;
  const double bound = o_.relative ? best * (1 + sign * o_.threshold) : best + sign * o_.threshold;
  const bool better = o_.maximize ? metric > bound : metric < bound;
  if (better) {
    best = metric;
    bad = 0;
  } else {
    ++bad;
  }
  if (cooldown > 0) {
    --cooldown;
    bad = 0;
  }
  bool reduced = false;
  if (bad > double(o_.patience)) {
    const double next = std::max(factor * o_.factor, o_.min_factor);
    reduced = factor - next > o_.eps;
    if (reduced) factor = next;
    cooldown = double(o_.cooldown);
    bad = 0;
  }
  session.set(best_, NDArray::scalar(best, float64));
  session.set(bad_epochs_, NDArray::scalar(bad, float64));
  session.set(cooldown_, NDArray::scalar(cooldown, float64));
  session.set(factor_, NDArray::scalar(factor, float64));
  return reduced;
}

double ReduceLROnPlateau::factor(Session& session) const { return session.get(factor_).item(); }

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
  LOOM_CHECK(std::isfinite(max_norm) && max_norm >= 0, "clip_by_global_norm: max_norm must be finite and >= 0, got ",
             max_norm);
  Tensor n = global_norm(grads);
  if (norm) *norm = n;
  Tensor coef = minimum(max_norm / (n + 1e-6), scalar_like(n, 1.0));
  std::vector<Tensor> out;
  for (const Tensor& g : grads) out.push_back(g.valid() ? g * as(coef, g) : g);
  return out;
}

std::vector<Tensor> clip_by_value(const std::vector<Tensor>& grads, double clip_value) {
  LOOM_CHECK(std::isfinite(clip_value) && clip_value >= 0, "clip_by_value: clip_value must be finite and >= 0, got ",
             clip_value);
  std::vector<Tensor> out;
  for (const Tensor& g : grads) out.push_back(g.valid() ? clamp(g, -clip_value, clip_value) : g);
  return out;
}

// ---------------------------------------------------------------- Optimizer

Optimizer::~Optimizer() = default;

Parameters::Parameters(const nn::Module& module) : params(module.parameters()), updates(module.updates()) {
  if (params.empty())
    empty_message = module.type_name() +
                    " has no parameters yet: modules create their variables when first called, so build the model "
                    "(model(x)) before its optimizer";
}

Optimizer::Optimizer(Parameters p, Common common)
    : common_(std::move(common)), params_(std::move(p.params)), extra_updates_(std::move(p.updates)) {
  const std::string& who = common_.name;
  LOOM_CHECK(!who.empty() && who.find('/') == std::string::npos, "optimizer name '", who,
             "' must be non-empty and contain no '/'");
  LOOM_CHECK(!params_.empty(), who, ": ", p.empty_message.empty() ? "no parameters to optimize" : p.empty_message);
  check_finite_nonneg(who, "lr", common_.lr);
  check_finite_nonneg(who, "weight_decay", common_.weight_decay);
  check_finite_nonneg(who, "clip_norm", common_.clip_norm);
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& t = params_[i];
    LOOM_CHECK(t.valid(), who, ": parameter ", i, " is an empty Tensor handle");
    LOOM_CHECK(t.op() == "variable", who, ": parameter '", t.name(), "' is not a variable (", t.op(), ")");
    LOOM_CHECK(is_floating(t.dtype()), who, ": parameter '", t.name(), "' has dtype ", dtype_name(t.dtype()),
               "; only floating variables can be trained");
    if (!graph_) graph_ = &t.graph();
    LOOM_CHECK(&t.graph() == graph_, who, ": parameter '", t.name(), "' belongs to another graph");
    for (size_t j = 0; j < i; ++j) LOOM_CHECK(!params_[j].is(t), who, ": parameter '", t.name(), "' is listed twice");
  }
  for (const Tensor& u : extra_updates_)
    LOOM_CHECK(u.valid() && &u.graph() == graph_, who, ": a state update belongs to another graph");
  slots_.resize(params_.size());
  init_groups();
}

void Optimizer::init_groups() {
  const std::string& who = common_.name;
  group_of_.assign(params_.size(), 0);
  for (size_t g = 0; g < common_.groups.size(); ++g) {
    const ParamGroup& group = common_.groups[g];
    LOOM_CHECK(!group.params.empty(), who, ": parameter group ", g, " is empty");
    if (group.lr) check_finite_nonneg(who + " group " + std::to_string(g), "lr", *group.lr);
    if (group.weight_decay)
      check_finite_nonneg(who + " group " + std::to_string(g), "weight_decay", *group.weight_decay);
    for (const Tensor& t : group.params) {
      LOOM_CHECK(t.valid(), who, ": parameter group ", g, " holds an empty Tensor handle");
      auto it = std::find_if(params_.begin(), params_.end(), [&](const Tensor& q) { return q.is(t); });
      LOOM_CHECK(it != params_.end(), who, ": parameter group ", g, " lists '", t.name(),
                 "', which is not among the parameters it trains");
      size_t i = size_t(it - params_.begin());
      LOOM_CHECK(group_of_[i] == 0, who, ": parameter '", t.name(), "' is in groups ", group_of_[i] - 1, " and ", g);
      group_of_[i] = g + 1;
    }
  }
}

std::vector<Tensor> Optimizer::state() const {
  std::vector<Tensor> out;
  if (step_.valid()) out.push_back(step_);
  for (const auto& s : slots_)
    for (const auto& [n, t] : s) out.push_back(t);
  return out;
}

Tensor Optimizer::Context::l2_grad() const { return weight_decay != 0 ? grad + param * weight_decay : grad; }

Tensor Optimizer::Context::decoupled_decay() const {
  return weight_decay != 0 ? as(1.0 - lr * weight_decay, param) : scalar_like(param, 1.0);
}

Tensor Optimizer::slot(size_t index, const std::string& slot, double initial, bool scalar) {
  LOOM_ASSERT(index < params_.size());
  for (const auto& [n, t] : slots_[index])
    if (n == slot) return t;
  const Tensor& p = params_[index];
  Tensor t = graph_->variable(p.name() + "/" + slot, scalar ? Shape{} : p.shape(), init::constant(initial), p.dtype());
  slots_[index].emplace_back(slot, t);
  return t;
}

Tensor Optimizer::minimize(const Tensor& loss) {
  LOOM_CHECK(loss.valid(), name(), ".minimize: the loss is an empty Tensor handle");
  LOOM_CHECK(&loss.graph() == graph_, name(), ".minimize: the loss '", loss.name(),
             "' belongs to another graph than the parameters");
  LOOM_CHECK(is_floating(loss.dtype()), name(), ".minimize: the loss '", loss.name(), "' must be floating, got ",
             dtype_name(loss.dtype()));
  LOOM_CHECK(loss.shape().empty() || (is_static(loss.shape()) && numel(loss.shape()) == 1), name(),
             ".minimize: the loss '", loss.name(), "' must be a scalar, got ", S(loss.shape()),
             " (reduce it with mean or sum)");
  std::vector<Tensor> grads;
  {
    auto scope = graph_->scope(common_.name);
    grads = gradients(loss, params_, {}, {.unreachable_as_zero = false});
  }
  return apply_gradients(grads);
}

Tensor Optimizer::apply_gradients(const std::vector<Tensor>& grads_in) {
  LOOM_CHECK(grads_in.size() == params_.size(), name(), ".apply_gradients: ", grads_in.size(), " gradients for ",
             params_.size(), " parameters");
  bool any = false;
  for (size_t i = 0; i < grads_in.size(); ++i) {
    const Tensor& g = grads_in[i];
    if (!g.valid()) continue;  // no gradient: the parameter and its state stay as they are
    any = true;
    LOOM_CHECK(&g.graph() == graph_, name(), ".apply_gradients: the gradient of '", params_[i].name(),
               "' is in another graph");
    LOOM_CHECK(g.shape() == params_[i].shape() && g.dtype() == params_[i].dtype(), name(),
               ".apply_gradients: the gradient of '", params_[i].name(), "' is ", dtype_name(g.dtype()), S(g.shape()),
               ", expected ", dtype_name(params_[i].dtype()), S(params_[i].shape()));
  }
  auto scope = graph_->scope(common_.name);
  LOOM_CHECK(step_.valid() || !graph_->find(graph_->prefix() + "step").valid(), name(),
             ": another optimizer of this graph already keeps its state under the name '", name(),
             "' (two optimizers, as a GAN's): give each its own, e.g. {.name = \"", common_.name, "_2\"}");
  if (!step_.valid()) step_ = graph_->variable("step", {}, init::zeros(), int64);

  std::vector<Tensor> grads = grads_in;
  norm_ = any ? global_norm(grads) : graph_->scalar(0.0, float32);
  if (common_.clip_norm > 0 && any) grads = clip_by_global_norm(grads, common_.clip_norm);

  // The step's scalars: the index of this update and the scheduled rate, in
  // float64 as PyTorch's (Adam's 1 - 0.999^t lost 7e-6 of the step in float32).
  Tensor next = step_ + 1;
  Tensor t = cast(next, float64);
  Tensor factor;
  if (common_.schedule) {
    factor = common_.schedule(cast(step_, float64));
    LOOM_CHECK(factor.valid() && factor.shape().empty() && is_floating(factor.dtype()), name(),
               ": the schedule must return a floating scalar, got ", factor.valid() ? S(factor.shape()) : S({}));
    factor = as(factor, t);
  }
  auto scheduled = [&](double lr) { return factor.valid() ? factor * lr : graph_->scalar(lr, float64); };
  lr_ = scheduled(common_.lr);
  std::vector<Tensor> group_lr{lr_};
  for (const ParamGroup& group : common_.groups) group_lr.push_back(group.lr ? scheduled(*group.lr) : lr_);

  std::vector<Tensor> ops;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!grads[i].valid()) continue;
    size_t k = group_of_[i];
    const auto& wd = k ? common_.groups[k - 1].weight_decay : std::nullopt;
    Tensor g = common_.maximize ? -grads[i] : grads[i];
    std::vector<Tensor> u = update({i, params_[i], g, group_lr[k], t, wd.value_or(common_.weight_decay)});
    ops.insert(ops.end(), u.begin(), u.end());
  }
  ops.push_back(assign(step_, next));
  ops.insert(ops.end(), extra_updates_.begin(), extra_updates_.end());
  return group(ops, "update");
}

// ---------------------------------------------------------------- SGD

SGD::SGD(Parameters params, SGDOptions o) : Optimizer(std::move(params), Common::of(o)), o_(std::move(o)) {
  check_finite_nonneg(name(), "momentum", o_.momentum);
  check_finite_nonneg(name(), "dampening", o_.dampening);
  LOOM_CHECK(!o_.nesterov || (o_.momentum > 0 && o_.dampening == 0), name(),
             ": Nesterov momentum requires momentum > 0 and dampening 0");
}

std::vector<Tensor> SGD::update(const Context& c) {
  std::vector<Tensor> ops;
  Tensor g = c.l2_grad();
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

Adam::Adam(Parameters params, AdamOptions o) : Adam(std::move(params), std::move(o), false) {}

Adam::Adam(Parameters params, AdamOptions o, bool decoupled)
    : Optimizer(std::move(params), Common::of(o)), o_(std::move(o)), decoupled_(decoupled) {
  check_betas(name(), o_.beta1, o_.beta2);
  check_finite_nonneg(name(), "eps", o_.eps);
}

std::vector<Tensor> Adam::update(const Context& c) {
  Tensor g = decoupled_ ? c.grad : c.l2_grad(), p = c.param;
  Tensor m = slot(c.index, "m"), v = slot(c.index, "v");
  // p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps), rearranged so the
  // per-element work is one sqrt, one add, one multiply and one divide:
  // p -= (lr * sqrt(bc2) / bc1) * m / (sqrt(v) + eps * sqrt(bc2)).
  Tensor bc1 = 1.0 - pow(scalar_like(c.t, o_.beta1), c.t);
  Tensor sqrt_bc2 = sqrt(1.0 - pow(scalar_like(c.t, o_.beta2), c.t));
  Tensor step_size = as(c.lr * sqrt_bc2 / bc1, p);
  Tensor eps_hat = as(sqrt_bc2 * o_.eps, p);
  Tensor decay = decoupled_ ? c.decoupled_decay() : scalar_like(p, 1.0);
  if (o_.amsgrad) {  // the denominator from the largest v so far
    Tensor v_max = slot(c.index, "v_max");
    Tensor m1 = m * o_.beta1 + g * (1.0 - o_.beta1);
    Tensor v1 = v * o_.beta2 + g * g * (1.0 - o_.beta2);
    Tensor v_max1 = maximum(v_max, v1);
    Tensor p1 = p * decay - step_size * m1 / (sqrt(v_max1) + eps_hat);
    return {assign(m, m1), assign(v, v1), assign(v_max, v_max1), assign(p, p1)};
  }
  // One fused primitive (ops/optim.cpp) computes m1, v1 and the new p in a single pass.
  auto u = adam_update(p, m, v, g, step_size, eps_hat, decay, o_.beta1, o_.beta2);
  return {assign(m, u[1]), assign(v, u[2]), assign(p, u[0])};
}

AdamW::AdamW(Parameters params, AdamWOptions o) : Adam(std::move(params), o.adam(), true) {}

// ---------------------------------------------------------------- RMSprop

RMSprop::RMSprop(Parameters params, RMSpropOptions o) : Optimizer(std::move(params), Common::of(o)), o_(std::move(o)) {
  LOOM_CHECK(o_.alpha >= 0 && o_.alpha <= 1, name(), ": alpha must be in [0, 1], got ", o_.alpha);
  check_finite_nonneg(name(), "eps", o_.eps);
  check_finite_nonneg(name(), "momentum", o_.momentum);
}

std::vector<Tensor> RMSprop::update(const Context& c) {
  std::vector<Tensor> ops;
  Tensor g = c.l2_grad(), p = c.param;
  Tensor square_avg = slot(c.index, "square_avg");
  Tensor s = square_avg * o_.alpha + g * g * (1.0 - o_.alpha);
  ops.push_back(assign(square_avg, s));
  Tensor variance = s;
  if (o_.centered) {
    Tensor grad_avg = slot(c.index, "grad_avg");
    Tensor a = grad_avg * o_.alpha + g * (1.0 - o_.alpha);
    ops.push_back(assign(grad_avg, a));
    variance = s - a * a;
  }
  Tensor step = g / (sqrt(variance) + o_.eps);
  if (o_.momentum > 0) {
    Tensor buf = slot(c.index, "momentum");
    step = buf * o_.momentum + step;
    ops.push_back(assign(buf, step));
  }
  ops.push_back(assign(p, p - as(c.lr, p) * step));
  return ops;
}

// ---------------------------------------------------------------- Adagrad

Adagrad::Adagrad(Parameters params, AdagradOptions o) : Optimizer(std::move(params), Common::of(o)), o_(std::move(o)) {
  check_finite_nonneg(name(), "lr_decay", o_.lr_decay);
  check_finite_nonneg(name(), "initial_accumulator_value", o_.initial_accumulator_value);
  check_finite_nonneg(name(), "eps", o_.eps);
}

std::vector<Tensor> Adagrad::update(const Context& c) {
  Tensor g = c.l2_grad(), p = c.param;
  Tensor sum_sq = slot(c.index, "sum", o_.initial_accumulator_value);
  Tensor s = sum_sq + g * g;
  Tensor lr = c.lr / ((c.t - 1.0) * o_.lr_decay + 1.0);
  return {assign(sum_sq, s), assign(p, p - as(lr, p) * g / (sqrt(s) + o_.eps))};
}

// ---------------------------------------------------------------- Adamax

namespace {

/// beta^t for the float64 step count t.
Tensor power(double beta, const Tensor& t) { return pow(scalar_like(t, beta), t); }

}  // namespace

Adamax::Adamax(Parameters params, AdamaxOptions o) : Optimizer(std::move(params), Common::of(o)), o_(std::move(o)) {
  check_betas(name(), o_.beta1, o_.beta2);
  check_finite_nonneg(name(), "eps", o_.eps);
}

std::vector<Tensor> Adamax::update(const Context& c) {
  Tensor g = c.l2_grad(), p = c.param;
  Tensor m = slot(c.index, "exp_avg"), u = slot(c.index, "exp_inf");
  Tensor m1 = m * o_.beta1 + g * (1.0 - o_.beta1);
  Tensor u1 = maximum(u * o_.beta2, abs(g) + o_.eps);
  Tensor step_size = as(c.lr / (1.0 - power(o_.beta1, c.t)), p);
  return {assign(m, m1), assign(u, u1), assign(p, p - step_size * m1 / u1)};
}

// ---------------------------------------------------------------- NAdam

NAdam::NAdam(Parameters params, NAdamOptions o) : Optimizer(std::move(params), Common::of(o)), o_(std::move(o)) {
  check_betas(name(), o_.beta1, o_.beta2);
  check_finite_nonneg(name(), "eps", o_.eps);
  check_finite_nonneg(name(), "momentum_decay", o_.momentum_decay);
}

std::vector<Tensor> NAdam::update(const Context& c) {
  Tensor p = c.param, g = o_.decoupled_weight_decay ? c.grad : c.l2_grad();
  Tensor m = slot(c.index, "exp_avg"), v = slot(c.index, "exp_avg_sq"),
         mu_product = slot(c.index, "mu_product", 1.0, true);
  auto mu_at = [&](const Tensor& t) { return o_.beta1 * (1.0 - 0.5 * power(0.96, t * o_.momentum_decay)); };
  const Tensor mu = mu_at(c.t), mu_next = mu_at(c.t + 1.0);
  const Tensor product = as(mu_product, c.t) * mu;  // float64, as the step's other scalars
  Tensor m1 = m * o_.beta1 + g * (1.0 - o_.beta1);
  Tensor v1 = v * o_.beta2 + g * g * (1.0 - o_.beta2);
  Tensor denom = sqrt(v1 / as(1.0 - power(o_.beta2, c.t), p)) + o_.eps;
  Tensor grad_step = as(c.lr * (1.0 - mu) / (1.0 - product), p);
  Tensor momentum_step = as(c.lr * mu_next / (1.0 - product * mu_next), p);
  Tensor decay = o_.decoupled_weight_decay ? c.decoupled_decay() : scalar_like(p, 1.0);
  Tensor p1 = p * decay - grad_step * g / denom - momentum_step * m1 / denom;
  return {assign(m, m1), assign(v, v1), assign(mu_product, as(product, p)), assign(p, p1)};
}

// ---------------------------------------------------------------- RAdam

RAdam::RAdam(Parameters params, RAdamOptions o) : Optimizer(std::move(params), Common::of(o)), o_(std::move(o)) {
  check_betas(name(), o_.beta1, o_.beta2);
  check_finite_nonneg(name(), "eps", o_.eps);
}

std::vector<Tensor> RAdam::update(const Context& c) {
  Tensor p = c.param, g = o_.decoupled_weight_decay ? c.grad : c.l2_grad();
  Tensor m = slot(c.index, "exp_avg"), v = slot(c.index, "exp_avg_sq");
  Tensor m1 = m * o_.beta1 + g * (1.0 - o_.beta1);
  Tensor v1 = v * o_.beta2 + g * g * (1.0 - o_.beta2);
  // The length of the approximated simple moving average, and the variance rectification once it exceeds 5.
  const double rho_inf = 2 / (1 - o_.beta2) - 1;
  const Tensor bc2 = 1.0 - power(o_.beta2, c.t);
  const Tensor rho = rho_inf - 2.0 * c.t * power(o_.beta2, c.t) / bc2;
  const Tensor rectified = rho > 5.0;
  const Tensor safe_rho = where(rectified, rho, scalar_like(rho, 6.0));  // no sqrt of a negative on the other branch
  const Tensor rect = sqrt((safe_rho - 4.0) * (safe_rho - 2.0) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * safe_rho));
  const Tensor step_size = as(c.lr / (1.0 - power(o_.beta1, c.t)), p);
  const Tensor adaptive = as(rect * sqrt(bc2), p) / (sqrt(v1) + o_.eps);
  const Tensor direction = where(rectified, m1 * adaptive, m1);
  Tensor decay = o_.decoupled_weight_decay ? c.decoupled_decay() : scalar_like(p, 1.0);
  return {assign(m, m1), assign(v, v1), assign(p, p * decay - step_size * direction)};
}

// ---------------------------------------------------------------- Adadelta

Adadelta::Adadelta(Parameters params, AdadeltaOptions o)
    : Optimizer(std::move(params), Common::of(o)), o_(std::move(o)) {
  LOOM_CHECK(o_.rho >= 0 && o_.rho <= 1, name(), ": rho must be in [0, 1], got ", o_.rho);
  check_finite_nonneg(name(), "eps", o_.eps);
}

std::vector<Tensor> Adadelta::update(const Context& c) {
  Tensor g = c.l2_grad(), p = c.param;
  Tensor square_avg = slot(c.index, "square_avg"), acc_delta = slot(c.index, "acc_delta");
  Tensor s1 = square_avg * o_.rho + g * g * (1.0 - o_.rho);
  Tensor delta = sqrt(acc_delta + o_.eps) / sqrt(s1 + o_.eps) * g;
  Tensor a1 = acc_delta * o_.rho + delta * delta * (1.0 - o_.rho);
  return {assign(square_avg, s1), assign(acc_delta, a1), assign(p, p - as(c.lr, p) * delta)};
}

}  // namespace loom::optim
