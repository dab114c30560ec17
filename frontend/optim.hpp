#pragma once
/// Optimizers whose update is part of the graph: minimize(loss) adds the
/// backward pass, optional clipping, the update of every parameter (assigns)
/// and the step counter, and returns one target. One Session::run per step
/// then does forward, backward and update:
///
///     optim::Adam opt(model, {.lr = 1e-3});
///     Tensor step = opt.minimize(loss);
///     for (auto& batch : loader) s.run({loss}, {{x, batch[0]}, {y, batch[1]}}, {step});
///
/// State (the step count "<name>/step", moments "<name>/<param>/m", ...) lives
/// in variables, so checkpoints save and restore it with the parameters.
/// Updates follow PyTorch's torch.optim formulas (see each class). Learning
/// rates may follow a schedule computed in the graph from the step count.

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#include "core/graph.hpp"

namespace loom {
class Session;
}
namespace loom::nn {
class Module;
}

namespace loom::optim {

/// A learning-rate factor as a function of the step: given the 0-based index
/// of the update being made (a float64 scalar tensor), returns the factor
/// (a floating scalar) that multiplies the optimizer's base lr. Built into the graph.
using Schedule = std::function<Tensor(const Tensor& step)>;

namespace schedule {
/// Always 1.
Schedule constant();
/// gamma ^ floor(step / step_size) (PyTorch's StepLR).
Schedule step(int64_t step_size, double gamma = 0.1);
/// Cosine annealing from 1 down to min_factor over total_steps, then min_factor
/// (PyTorch's CosineAnnealingLR for one half period, eta_min = min_factor * lr).
Schedule cosine(int64_t total_steps, double min_factor = 0.0);
/// Linear warmup: (step + 1) / steps for the first `steps` updates, times
/// after(0); then after(step - steps).
Schedule warmup(int64_t steps, Schedule after = constant());
/// gamma ^ step (PyTorch's ExponentialLR stepped every update).
Schedule exponential(double gamma);
/// gamma ^ (the number of milestones <= step) (PyTorch's MultiStepLR); milestones increasing.
Schedule multi_step(std::vector<int64_t> milestones, double gamma = 0.1);
/// From start_factor to end_factor linearly over total_steps, then end_factor (PyTorch's LinearLR).
Schedule linear(double start_factor, double end_factor, int64_t total_steps);
/// (1 - min(step, total_steps) / total_steps) ^ power (PyTorch's PolynomialLR).
Schedule polynomial(int64_t total_steps, double power = 1.0);
/// PyTorch's OneCycleLR (cosine annealing, two phases) with max_lr the
/// optimizer's lr: from max_lr / div_factor up to max_lr over pct_start of
/// total_steps, then down to max_lr / (div_factor * final_div_factor); later
/// steps keep the last rate (PyTorch raises). Tabulated, as `function`.
Schedule one_cycle(int64_t total_steps, double pct_start = 0.3, double div_factor = 25.0,
                   double final_div_factor = 1e4);
/// Any host function of the step, tabulated for steps [0, steps); later steps
/// use the last value. The table is a float per step, held by the graph:
/// at most kMaxScheduleSteps steps (1 GiB).
Schedule function(std::function<double(int64_t)> factor, int64_t steps);
inline constexpr int64_t kMaxScheduleSteps = int64_t(1) << 28;
/// Evaluates a schedule at one step on the host (for printing and tests).
double evaluate(const Schedule& schedule, int64_t step);
}  // namespace schedule

struct PlateauOptions {
  /// The metric should rise (PyTorch's mode "max": an accuracy), else fall ("min": a loss).
  bool maximize = false;
  double factor = 0.1;      // the lr factor is multiplied by this on a plateau
  int64_t patience = 10;    // epochs without improvement tolerated
  double threshold = 1e-4;  // what counts as an improvement
  bool relative = true;     // threshold_mode "rel" (best * (1 -+ threshold)), else "abs" (best -+ threshold)
  int64_t cooldown = 0;     // epochs after a reduction before bad epochs count again
  double min_factor = 0.0;  // PyTorch's min_lr as a factor of the optimizer's lr
  double eps = 1e-8;        // a reduction of the factor smaller than this is skipped
  std::string name = "plateau";
};

/// PyTorch's ReduceLROnPlateau: the lr factor falls by `factor` when the
/// metric given after each epoch has not improved for `patience` epochs.
/// Its state is in float64 scalar variables of the graph ("<name>/factor",
/// "<name>/best", "<name>/bad_epochs", "<name>/cooldown"), so checkpoints
/// keep it; schedule() reads the factor, for an optimizer of the same graph:
///
///     optim::ReduceLROnPlateau plateau(g, {.patience = 2});
///     optim::Adam opt(model, {.lr = 1e-3, .schedule = plateau.schedule()});
///     ... each epoch: plateau.step(session, validation_loss);
class ReduceLROnPlateau {
 public:
  explicit ReduceLROnPlateau(Graph& graph, PlateauOptions options = {});
  Schedule schedule() const;
  /// Feeds an epoch's metric (a NaN counts as no improvement, as PyTorch's);
  /// returns whether the factor was reduced.
  bool step(Session& session, double metric);
  /// The current lr factor.
  double factor(Session& session) const;

 private:
  PlateauOptions o_;
  Graph* graph_;
  Tensor factor_, best_, bad_epochs_, cooldown_;
};

/// Scales grads by min(1, max_norm / (norm + 1e-6)) where norm is their
/// global L2 norm (PyTorch's clip_grad_norm_). Returns the clipped gradients;
/// `norm`, when given, receives the norm before clipping (a float scalar).
/// Empty Tensors (parameters without a gradient) are left out and stay empty.
/// max_norm 0 zeroes the gradients, as PyTorch's.
std::vector<Tensor> clip_by_global_norm(const std::vector<Tensor>& grads, double max_norm, Tensor* norm = nullptr);
/// Clamps every gradient element to [-clip_value, clip_value] (PyTorch's
/// clip_grad_value_); empty Tensors stay empty.
std::vector<Tensor> clip_by_value(const std::vector<Tensor>& grads, double clip_value);
/// The global L2 norm of grads (a scalar of their dtype), empty Tensors left out.
Tensor global_norm(const std::vector<Tensor>& grads);

/// The parameters an optimizer trains: a list of variables, or a module's
/// (whose state updates, as BatchNorm's running statistics, then run with
/// every step).
struct Parameters {
  Parameters(std::vector<Tensor> params) : params(std::move(params)) {}
  Parameters(std::initializer_list<Tensor> params) : params(params) {}
  Parameters(const nn::Module& module);
  std::vector<Tensor> params, updates;
  std::string empty_message;  // why there are no parameters, for the error
};

/// Parameters with their own learning rate or weight decay (PyTorch's
/// param_groups): a field left unset takes the optimizer's option. The
/// schedule scales every group's rate alike. Each listed parameter must be
/// one the optimizer trains, in at most one group. E.g. no decay for biases:
///
///     optim::AdamW opt(model, {.groups = {{.params = biases, .weight_decay = 0.0}}});
struct ParamGroup {
  std::vector<Tensor> params = {};
  std::optional<double> lr = std::nullopt;
  std::optional<double> weight_decay = std::nullopt;
};

/// Settings every optimizer has.
struct Common {
  double lr = 0.0;
  double weight_decay = 0.0;
  /// Gradients are clipped to this global norm first (0: no clipping).
  double clip_norm = 0.0;
  /// Learning-rate factor by step (empty: constant).
  Schedule schedule = {};
  /// Ascends the objective instead (PyTorch's maximize: the gradient is negated).
  bool maximize = false;
  std::vector<ParamGroup> groups = {};
  std::string name;
  template <class Options>
  static Common of(const Options& o) {
    return {o.lr, o.weight_decay, o.clip_norm, o.schedule, o.maximize, o.groups, o.name};
  }
};

class Optimizer {
 public:
  virtual ~Optimizer();
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  /// Adds gradients of loss with respect to the parameters, the update and the
  /// step increment, plus the module's state updates; returns the target to run.
  /// A parameter the loss does not depend on has no gradient (PyTorch's None):
  /// it is not updated, weight decay and momentum included.
  Tensor minimize(const Tensor& loss);
  /// Adds the update from given gradients (one per parameter, same shapes; an
  /// empty Tensor for a parameter without a gradient, which stays as it is).
  Tensor apply_gradients(const std::vector<Tensor>& grads);

  const std::vector<Tensor>& parameters() const { return params_; }
  /// Updates applied so far (an int64 scalar variable "<name>/step").
  Tensor step_count() const { return step_; }
  /// The learning rate of the last built update (fetchable, float64 scalar):
  /// the options' lr times the schedule; a group's is its lr times the same factor.
  Tensor learning_rate() const { return lr_; }
  /// The global gradient norm of the last built update, before clipping (fetchable).
  Tensor grad_norm() const { return norm_; }
  /// Every state variable (the step count and the per-parameter slots).
  std::vector<Tensor> state() const;
  const std::string& name() const { return common_.name; }
  double base_lr() const { return common_.lr; }

 protected:
  Optimizer(Parameters params, Common common);

  /// Builds the update of parameter i and returns the assigns to run. lr is
  /// the scheduled learning rate of its group and t the 1-based index of this
  /// update (both float64 scalars of this step, cast to the parameter's dtype
  /// where used); grad is negated already under `maximize`.
  struct Context {
    size_t index;
    Tensor param, grad, lr, t;
    double weight_decay;
    /// The gradient with L2 weight decay added (g + wd * p), PyTorch's coupled form.
    Tensor l2_grad() const;
    /// The factor of decoupled weight decay (AdamW's p *= 1 - lr * wd), in p's dtype.
    Tensor decoupled_decay() const;
  };
  virtual std::vector<Tensor> update(const Context& c) = 0;
  /// A state variable of parameter i, "<name>/<param name>/<slot>", filled with `initial`:
  /// shaped like the parameter, or a scalar of its dtype (NAdam's mu_product).
  Tensor slot(size_t index, const std::string& slot, double initial = 0.0, bool scalar = false);

 private:
  void init_groups();
  Common common_;
  std::vector<Tensor> params_, extra_updates_;
  std::vector<size_t> group_of_;  // per parameter: 0 for the options, g + 1 for groups[g]
  std::vector<std::vector<std::pair<std::string, Tensor>>> slots_;
  Tensor step_, lr_, norm_;
  Graph* graph_ = nullptr;
};

struct SGDOptions {
  double lr = 0.001;  // PyTorch 2's default
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;
  double clip_norm = 0.0;
  Schedule schedule = {};
  std::string name = "sgd";
  bool maximize = false;
  std::vector<ParamGroup> groups = {};
};

/// PyTorch's SGD: g += wd * p; with momentum, b = g at the first step and
/// b = momentum * b + (1 - dampening) * g after, then g = g + momentum * b
/// (Nesterov) or g = b; p -= lr * g. State: "<name>/<param>/momentum".
class SGD : public Optimizer {
 public:
  explicit SGD(Parameters params, SGDOptions options = {});

 protected:
  std::vector<Tensor> update(const Context& c) override;

 private:
  SGDOptions o_;
};

struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  double clip_norm = 0.0;
  Schedule schedule = {};
  std::string name = "adam";
  /// Divides by the largest second moment seen (AMSGrad), state ".../v_max".
  bool amsgrad = false;
  bool maximize = false;
  std::vector<ParamGroup> groups = {};
};

/// PyTorch's Adam (L2 weight decay: g += wd * p):
/// m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2,
/// p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
/// State: "<name>/<param>/m" and ".../v".
class Adam : public Optimizer {
 public:
  explicit Adam(Parameters params, AdamOptions options = {});

 protected:
  Adam(Parameters params, AdamOptions options, bool decoupled);
  std::vector<Tensor> update(const Context& c) override;

 private:
  AdamOptions o_;
  bool decoupled_;
};

/// AdamOptions with AdamW's defaults (PyTorch: weight_decay 0.01).
struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;
  double clip_norm = 0.0;
  Schedule schedule = {};
  std::string name = "adamw";
  bool amsgrad = false;
  bool maximize = false;
  std::vector<ParamGroup> groups = {};
  AdamOptions adam() const {
    return {lr, beta1, beta2, eps, weight_decay, clip_norm, schedule, name, amsgrad, maximize, groups};
  }
};

/// PyTorch's AdamW: decoupled weight decay p *= 1 - lr * wd, then the Adam
/// update without L2.
class AdamW : public Adam {
 public:
  explicit AdamW(Parameters params, AdamWOptions options = {});
};

struct RMSpropOptions {
  double lr = 1e-2;
  double alpha = 0.99;
  double eps = 1e-8;
  double weight_decay = 0.0;
  double momentum = 0.0;
  bool centered = false;
  double clip_norm = 0.0;
  Schedule schedule = {};
  std::string name = "rmsprop";
  bool maximize = false;
  std::vector<ParamGroup> groups = {};
};

/// PyTorch's RMSprop: g += wd * p; s = alpha s + (1 - alpha) g^2; centered:
/// a = alpha a + (1 - alpha) g and d = sqrt(s - a^2) + eps, else d = sqrt(s) + eps;
/// with momentum b = momentum b + g / d and p -= lr * b, else p -= lr * g / d.
/// State: "<name>/<param>/square_avg", ".../grad_avg", ".../momentum".
class RMSprop : public Optimizer {
 public:
  explicit RMSprop(Parameters params, RMSpropOptions options = {});

 protected:
  std::vector<Tensor> update(const Context& c) override;

 private:
  RMSpropOptions o_;
};

struct AdagradOptions {
  double lr = 1e-2;
  double lr_decay = 0.0;
  double weight_decay = 0.0;
  double initial_accumulator_value = 0.0;
  double eps = 1e-10;
  double clip_norm = 0.0;
  Schedule schedule = {};
  std::string name = "adagrad";
  bool maximize = false;
  std::vector<ParamGroup> groups = {};
};

/// PyTorch's Adagrad: g += wd * p; s += g^2;
/// p -= lr / (1 + (t - 1) lr_decay) * g / (sqrt(s) + eps). State: "<name>/<param>/sum".
class Adagrad : public Optimizer {
 public:
  explicit Adagrad(Parameters params, AdagradOptions options = {});

 protected:
  std::vector<Tensor> update(const Context& c) override;

 private:
  AdagradOptions o_;
};

struct AdamaxOptions {
  double lr = 2e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  double clip_norm = 0.0;
  Schedule schedule = {};
  std::string name = "adamax";
  bool maximize = false;
  std::vector<ParamGroup> groups = {};
};

/// PyTorch's Adamax: g += wd * p; m = b1 m + (1 - b1) g;
/// u = max(b2 u, |g| + eps); p -= lr / (1 - b1^t) * m / u.
/// State: "<name>/<param>/exp_avg", ".../exp_inf".
class Adamax : public Optimizer {
 public:
  explicit Adamax(Parameters params, AdamaxOptions options = {});

 protected:
  std::vector<Tensor> update(const Context& c) override;

 private:
  AdamaxOptions o_;
};

struct NAdamOptions {
  double lr = 2e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  double momentum_decay = 4e-3;
  /// AdamW's decoupled decay (p *= 1 - lr * wd) instead of L2 (PyTorch's NAdamW).
  bool decoupled_weight_decay = false;
  double clip_norm = 0.0;
  Schedule schedule = {};
  std::string name = "nadam";
  bool maximize = false;
  std::vector<ParamGroup> groups = {};
};

/// PyTorch's NAdam (Nesterov momentum in Adam, Dozat 2016): with
/// mu_t = b1 (1 - 0.5 * 0.96^(t momentum_decay)) and P = mu_1 ... mu_t,
/// m and v as Adam's, d = sqrt(v / (1 - b2^t)) + eps,
/// p -= lr (1 - mu_t) / (1 - P) g / d + lr mu_{t+1} / (1 - P mu_{t+1}) m / d.
/// State: "<name>/<param>/exp_avg", ".../exp_avg_sq", ".../mu_product" (a scalar).
class NAdam : public Optimizer {
 public:
  explicit NAdam(Parameters params, NAdamOptions options = {});

 protected:
  std::vector<Tensor> update(const Context& c) override;

 private:
  NAdamOptions o_;
};

struct RAdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  bool decoupled_weight_decay = false;
  double clip_norm = 0.0;
  Schedule schedule = {};
  std::string name = "radam";
  bool maximize = false;
  std::vector<ParamGroup> groups = {};
};

/// PyTorch's RAdam (rectified Adam, Liu et al. 2019): m and v as Adam's;
/// with rho_inf = 2 / (1 - b2) - 1 and rho_t = rho_inf - 2 t b2^t / (1 - b2^t),
/// while rho_t <= 5 p -= lr m / (1 - b1^t) (momentum SGD), after
/// p -= lr m / (1 - b1^t) * r_t sqrt(1 - b2^t) / (sqrt(v) + eps), r_t the
/// variance rectification. State: "<name>/<param>/exp_avg", ".../exp_avg_sq".
class RAdam : public Optimizer {
 public:
  explicit RAdam(Parameters params, RAdamOptions options = {});

 protected:
  std::vector<Tensor> update(const Context& c) override;

 private:
  RAdamOptions o_;
};

struct AdadeltaOptions {
  double lr = 1.0;
  double rho = 0.9;
  double eps = 1e-6;
  double weight_decay = 0.0;
  double clip_norm = 0.0;
  Schedule schedule = {};
  std::string name = "adadelta";
  bool maximize = false;
  std::vector<ParamGroup> groups = {};
};

/// PyTorch's Adadelta: g += wd * p; s = rho s + (1 - rho) g^2;
/// d = sqrt(a + eps) / sqrt(s + eps) * g; a = rho a + (1 - rho) d^2; p -= lr d.
/// State: "<name>/<param>/square_avg", ".../acc_delta".
class Adadelta : public Optimizer {
 public:
  explicit Adadelta(Parameters params, AdadeltaOptions options = {});

 protected:
  std::vector<Tensor> update(const Context& c) override;

 private:
  AdadeltaOptions o_;
};

}  // namespace loom::optim
