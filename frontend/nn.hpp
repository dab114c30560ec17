#pragma once
/// Neural-network modules, composed in plain C++:
///
///     nn::Sequential model{nn::Flatten(), nn::Linear(784, 256), nn::ReLU(), nn::Linear(256, 10)};
///     Tensor x = g.placeholder("x", {-1, 28, 28});
///     Tensor logits = model(x);                      // builds graph nodes, computes nothing
///     auto params = model.parameters();              // variables "1/weight", "1/bias", "3/weight", "3/bias"
///     auto state = model.state_dict();               // "1.weight", ...: PyTorch's names, for checkpoints
///
/// How modules meet the static graph:
/// - A module is built *lazily*: calling it on a tensor adds its nodes to that
///   tensor's graph and, on the first call, creates its variables there. Later
///   calls (in the same graph) reuse the same variables, so one model can be
///   built twice, e.g. in training mode for the training step and in eval mode
///   for evaluation, sharing its weights:
///
///       model.train(); Tensor train_logits = model(x);
///       model.eval();  Tensor eval_logits = model(x);
///
///   parameters() is empty until the first call.
/// - train()/eval() choose what the *next* call builds (dropout active or not,
///   batch statistics or running statistics); they recurse into children.
/// - Variable names follow the module path: a container names its children
///   "0", "1", ... (Sequential) or by role ("fn" in Residual), each child's
///   call opens a graph scope with its name, so the first Linear of the model
///   above owns "1/weight" and "1/bias". The names key checkpoints, so they
///   stay stable as long as the model's structure does. A root module adds no
///   scope: call it inside `g.scope("encoder")` to prefix everything (and to
///   put two models in one graph).
/// - Modules hold their children by shared_ptr: pass them by value (temporaries
///   or std::move) to containers, or as std::shared_ptr to share one module
///   between several places (weight tying).
/// - In-graph state updates (BatchNorm's running statistics) built by a
///   training-mode call are collected in updates(); an Optimizer built from the
///   module runs them with every step.
///
/// A module of your own registers its children and creates its variables in forward():
///
///     class Gated : public nn::Module {
///      public:
///       Gated() : fc_(register_module("fc", nn::Linear(64, 64))) {}
///       std::string type_name() const override { return "Gated"; }
///      protected:
///       Tensor forward(const Tensor& x) override {
///         Tensor gate = parameter(x, "gate", {64}, init::zeros());  // "gate", "fc/weight", "fc/bias"
///         return x + sigmoid(gate) * relu(fc_(x));
///       }
///      private:
///       nn::Linear& fc_;  // owned by the module (held by shared_ptr: stable across moves)
///     };

#include <concepts>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "core/graph.hpp"
#include "frontend/init.hpp"
#include "ops/ops.hpp"

namespace loom::nn {

class Module;

/// A module passed by value: a temporary or std::move'd Module subclass.
template <class M>
concept ModuleValue = std::derived_from<M, Module> && !std::is_reference_v<M>;
/// What containers accept: a module by value, or a std::shared_ptr to one (to share it).
template <class M>
concept ModuleArg = ModuleValue<M> || std::convertible_to<M, std::shared_ptr<Module>>;

class Module {
 public:
  Module() = default;
  Module(Module&&) = default;
  Module& operator=(Module&&) = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;
  virtual ~Module() = default;

  /// Adds this module's computation on x to x's graph (creating its variables
  /// on the first call) and returns the output. A registered child opens the
  /// graph scope of its name first.
  Tensor operator()(const Tensor& x);

  /// Trainable variables, this module's first, then each child's, in
  /// registration order; shared modules appear once.
  std::vector<Tensor> parameters() const;
  /// Parameters with their module path ("1/weight"), as used for their variable names;
  /// a tied weight appears once, under its owner's name.
  std::vector<std::pair<std::string, Tensor>> named_parameters() const;
  /// Non-trainable state (BatchNorm running statistics), with module paths.
  std::vector<std::pair<std::string, Tensor>> named_buffers() const;
  /// Every variable (parameters and buffers).
  std::vector<Tensor> variables() const;
  /// Parameters and buffers named as in PyTorch's state_dict ("1.weight",
  /// "2.running_mean"): module by module, each one's parameters then buffers,
  /// children in registration order. Checkpoints of a model use these names.
  /// A tied weight is listed under each name it has, as PyTorch's.
  std::vector<std::pair<std::string, Tensor>> state_dict() const;
  /// In-graph state updates built by training-mode calls (assign nodes); run
  /// them as targets with each training step (Optimizer(module) does).
  std::vector<Tensor> updates() const;
  /// Number of scalar parameters (known once built).
  int64_t num_parameters() const;

  /// Training mode (the default) or evaluation mode for the next call, here and in every child.
  Module& train(bool on = true);
  Module& eval() { return train(false); }
  bool training() const { return training_; }

  /// Children with their names, in registration order.
  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& children() const { return children_; }
  /// "Linear", "Sequential", ...
  virtual std::string type_name() const = 0;
  /// A one-line description of this module alone ("Linear(784, 256, bias)").
  virtual std::string describe() const { return type_name(); }
  /// The module tree, one line per module, indented.
  std::string str() const;
  /// The graph this module was built in, or null before its first call.
  Graph* graph() const { return graph_; }

 protected:
  virtual Tensor forward(const Tensor& x) = 0;

  /// Registers a child module under `name` (a graph scope name: no '/').
  /// Calling the child opens the scope `name`, so its variables are "name/...".
  Module& register_module(const std::string& name, std::shared_ptr<Module> module);
  template <ModuleValue M>
  M& register_module(const std::string& name, M&& module) {
    return static_cast<M&>(register_module(name, std::shared_ptr<Module>(std::make_shared<M>(std::move(module)))));
  }
  /// This module's trainable variable `name` in x's graph: created on the first
  /// call, the same variable afterwards.
  Tensor parameter(const Tensor& x, const std::string& name, const Shape& shape, const Initializer& init,
                   DType dtype = float32);
  /// Another module's trainable variable used here as this module's `name`
  /// (tied weights): in the state_dict under both names, a parameter once.
  Tensor shared_parameter(const std::string& name, const Tensor& variable);
  /// A non-trainable variable (running statistics), like parameter().
  Tensor buffer(const Tensor& x, const std::string& name, const Shape& shape, const Initializer& init,
                DType dtype = float32);
  /// Records an in-graph update (an assign) to run with each training step;
  /// with `replaces`, in the place of that earlier one.
  void add_update(const Tensor& update, const Tensor& replaces = {});
  /// "<ModuleType> '<scope path>'" for error messages, e.g. "Linear '1'".
  std::string where(const Tensor& x) const;
  /// Runs f() inside this module's graph scope, as operator() runs forward():
  /// for modules whose calls take more than one tensor (nn::LSTM(x, state)).
  template <class F>
  auto in_scope(const Tensor& x, F&& f) {
    LOOM_CHECK(x.valid(), type_name(), ": called on an empty Tensor handle");
    if (name_.empty()) return f();
    auto scope = x.graph().scope(name_);
    return f();
  }

 private:
  struct Var {
    std::string name;
    Tensor tensor;
    bool trainable = true;
    bool shared = false;  // another module's variable (tied weights)
  };
  Tensor variable(const Tensor& x, const std::string& name, const Shape& shape, const Initializer& init, DType dtype,
                  bool trainable);
  void collect(const std::string& prefix, bool trainable, std::vector<std::pair<std::string, Tensor>>& out,
               std::vector<const Module*>& seen) const;
  void collect_updates(std::vector<Tensor>& out, std::vector<const Module*>& seen) const;
  void collect_state(const std::string& prefix, std::vector<std::pair<std::string, Tensor>>& out,
                     std::vector<const Module*>& seen) const;
  void print(std::string& out, const std::string& name, int depth) const;

  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  std::vector<Var> vars_;
  std::vector<Tensor> updates_;
  std::string name_;  // set when registered as a child: the scope its calls open
  Graph* graph_ = nullptr;
  uint64_t graph_id_ = 0;
  bool training_ = true;
};

/// Wraps a module value into a shared_ptr (a shared_ptr passes through).
template <ModuleValue M>
std::shared_ptr<Module> share(M&& m) {
  return std::make_shared<M>(std::move(m));
}
inline std::shared_ptr<Module> share(std::shared_ptr<Module> m) { return m; }

// ---------------------------------------------------------------- layers

/// The element-wise activations modules take as an option (RNN's nonlinearity:
/// tanh or relu, as PyTorch's; TransformerLayer's: relu, gelu or gelu_tanh).
enum class Activation { relu, tanh, gelu, gelu_tanh };
Tensor activate(Activation a, const Tensor& x);
/// PyTorch's name of the activation ("relu", "tanh", "gelu", "gelu_tanh").
const char* activation_name(Activation a);

struct LinearOptions {
  bool bias = true;
  /// Default: PyTorch's, U(-1/sqrt(in), 1/sqrt(in)) for weight and bias.
  Initializer weight_init = {};
  Initializer bias_init = {};
  DType dtype = float32;
};

/// y = x @ weight^T + bias; weight [out, in] (PyTorch's layout), bias [out].
/// x may have any number of leading dims ([..., in] -> [..., out]).
class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, LinearOptions options = {});
  std::string type_name() const override { return "Linear"; }
  std::string describe() const override;
  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }
  /// The variables (invalid before the first call; bias also without a bias).
  Tensor weight() const { return weight_; }
  Tensor bias() const { return bias_; }
  /// Uses `variable` ([out, in], e.g. an Embedding's table) as the weight
  /// from the next call on: tied weights, as PyTorch's `decoder.weight =
  /// encoder.weight`.
  Linear& tie_weight(const Tensor& variable);

 protected:
  Tensor forward(const Tensor& x) override;

 private:
  int64_t in_, out_;
  LinearOptions options_;
  Tensor weight_, bias_, tied_;
};

/// PyTorch's Bilinear: y[o] = x1^T A[o] x2 + b[o] for x1 [..., in1], x2
/// [..., in2] -> [..., out]; weight [out, in1, in2], bias [out], both
/// U(-1/sqrt(in1), 1/sqrt(in1)) by default. One GEMM (x1 with the weight as
/// [in1, out * in2]), then a product with x2 summed over in2.
class Bilinear : public Module {
 public:
  Bilinear(int64_t in1_features, int64_t in2_features, int64_t out_features, LinearOptions options = {});
  std::string type_name() const override { return "Bilinear"; }
  std::string describe() const override;
  Tensor weight() const { return weight_; }
  Tensor bias() const { return bias_; }
  using Module::operator();
  Tensor operator()(const Tensor& x1, const Tensor& x2);

 protected:
  Tensor forward(const Tensor& x) override { return (*this)(x, x); }

 private:
  Tensor run(const Tensor& x1, const Tensor& x2);
  int64_t in1_, in2_, out_;
  LinearOptions options_;
  Tensor weight_, bias_;
};

class ReLU : public Module {
 public:
  std::string type_name() const override { return "ReLU"; }

 protected:
  Tensor forward(const Tensor& x) override { return relu(x); }
};

class Tanh : public Module {
 public:
  std::string type_name() const override { return "Tanh"; }

 protected:
  Tensor forward(const Tensor& x) override { return tanh(x); }
};

class Sigmoid : public Module {
 public:
  std::string type_name() const override { return "Sigmoid"; }

 protected:
  Tensor forward(const Tensor& x) override { return sigmoid(x); }
};

class Identity : public Module {
 public:
  std::string type_name() const override { return "Identity"; }

 protected:
  Tensor forward(const Tensor& x) override { return x; }
};

/// A module from a function (no variables): `nn::Lambda([](const Tensor& x) { return x * 2.0; })`.
class Lambda : public Module {
 public:
  explicit Lambda(std::function<Tensor(const Tensor&)> fn, std::string name = "Lambda");
  std::string type_name() const override { return name_; }

 protected:
  Tensor forward(const Tensor& x) override { return fn_(x); }

 private:
  std::function<Tensor(const Tensor&)> fn_;
  std::string name_;
};

/// PyTorch's Flatten: dims start_dim..end_dim merged into one ([N, d1, d2, ...]
/// -> [N, d1 * d2 * ...] by default; a view); the merged dims must be known.
class Flatten : public Module {
 public:
  explicit Flatten(int64_t start_dim = 1, int64_t end_dim = -1) : start_(start_dim), end_(end_dim) {}
  std::string type_name() const override { return "Flatten"; }
  std::string describe() const override;

 protected:
  Tensor forward(const Tensor& x) override;

 private:
  int64_t start_, end_;
};

/// PyTorch's Unflatten: dim `dim` split into `sizes` (one may be -1), e.g.
/// [N, 512] -> [N, 32, 4, 4] with Unflatten(1, {32, 4, 4}) (a view).
class Unflatten : public Module {
 public:
  Unflatten(int64_t dim, std::vector<int64_t> sizes);
  std::string type_name() const override { return "Unflatten"; }
  std::string describe() const override;

 protected:
  Tensor forward(const Tensor& x) override;

 private:
  int64_t dim_;
  std::vector<int64_t> sizes_;
};

/// PyTorch's feature dropout (F.dropout1d/2d/3d): whole channels of
/// [N, C, ...] zeroed with probability p, the others scaled by 1/(1-p); x
/// when !training.
Tensor feature_dropout(const Tensor& x, double p, bool training = true);

/// PyTorch's F.alpha_dropout (per_channel: F.feature_alpha_dropout, whole
/// channels of [N, C, ...]), for SELU networks: a dropped value becomes SELU's
/// negative saturation, and a x + b with a = ((1 - p)(1 + p alpha'^2))^-1/2
/// keeps zero mean and unit variance (alpha' = 1.7581, SELU's scale times
/// alpha; dropped: a alpha' (p - 1), kept: a x + a alpha' p); x when !training.
Tensor alpha_dropout(const Tensor& x, double p, bool training = true, bool per_channel = false);

/// How a dropout module draws: per element or per channel of [N, C, ...],
/// plain or alpha, and the input rank it takes (0: any).
struct DropoutKind {
  bool per_channel = false;
  bool alpha = false;
  int64_t rank = 0;
};

/// Zeroes each element with probability p in training mode and scales the
/// others by 1/(1-p); the identity in eval mode. Its relatives below.
class Dropout : public Module {
 public:
  explicit Dropout(double p = 0.5) : Dropout("Dropout", p, {}) {}
  std::string type_name() const override { return type_; }
  std::string describe() const override;

 protected:
  Dropout(std::string type, double p, DropoutKind kind);
  Tensor forward(const Tensor& x) override;

 private:
  std::string type_;
  double p_;
  DropoutKind kind_;
};

/// Whole channels of [N, C, L] (Dropout1d), [N, C, H, W] (Dropout2d) or
/// [N, C, D, H, W] (Dropout3d) zeroed with probability p (feature_dropout).
struct Dropout1d : Dropout {
  explicit Dropout1d(double p = 0.5) : Dropout("Dropout1d", p, {.per_channel = true, .rank = 3}) {}
};
struct Dropout2d : Dropout {
  explicit Dropout2d(double p = 0.5) : Dropout("Dropout2d", p, {.per_channel = true, .rank = 4}) {}
};
struct Dropout3d : Dropout {
  explicit Dropout3d(double p = 0.5) : Dropout("Dropout3d", p, {.per_channel = true, .rank = 5}) {}
};
/// PyTorch's AlphaDropout and FeatureAlphaDropout (alpha_dropout).
struct AlphaDropout : Dropout {
  explicit AlphaDropout(double p = 0.5) : Dropout("AlphaDropout", p, {.alpha = true}) {}
};
struct FeatureAlphaDropout : Dropout {
  explicit FeatureAlphaDropout(double p = 0.5)
      : Dropout("FeatureAlphaDropout", p, {.per_channel = true, .alpha = true}) {}
};

struct NormOptions {
  double eps = 1e-5;
  /// BatchNorm: running = (1 - momentum) * running + momentum * batch statistic;
  /// std::nullopt: the cumulative average of every batch's (PyTorch's momentum=None).
  std::optional<double> momentum = 0.1;
  /// Learnable per-feature scale ("weight", ones) and shift ("bias", zeros).
  bool affine = true;
  /// LayerNorm with affine: false leaves out the shift (PyTorch's LayerNorm(bias=False)).
  /// BatchNorm has no such option (PyTorch's neither).
  bool bias = true;
  /// BatchNorm: false keeps no running statistics (no buffers) and normalizes
  /// with the batch's statistics in eval mode too (PyTorch's track_running_stats=False).
  bool track_running_stats = true;
};

/// What BatchNorm1d and BatchNorm2d share: the parameters "weight" and "bias"
/// (with affine), the buffers "running_mean", "running_var" and
/// "num_batches_tracked" (int64, as PyTorch's), and the training-mode pass:
/// the fused batch_norm op over every dim but the channels (dim 1), with the
/// batch's mean and biased variance, and updates of the running statistics
/// (momentum-weighted, the unbiased variance) recorded in updates().
class BatchNorm : public Module {
 public:
  Tensor running_mean() const { return running_mean_; }
  Tensor running_var() const { return running_var_; }

 protected:
  BatchNorm(const char* type, int64_t features, NormOptions options);
  /// Creates the variables on first use; returns {weight, bias} (constants 1 and 0 without affine).
  std::pair<Tensor, Tensor> scale_and_shift(const Tensor& x);
  /// Whether this call normalizes with the batch's statistics: in training, or always without running ones.
  bool batch_statistics() const { return training() || !options_.track_running_stats; }
  /// The normalized x with the batch's statistics (ReLU'd inside the op when asked); in training the
  /// running statistics' updates are recorded.
  Tensor batch_normalize(const Tensor& x, bool relu = false);
  /// Checks shared by both (each checks its own rank and dim 1): a floating input, and with batch
  /// statistics more than one value per feature.
  void check_input(const Tensor& x) const;
  std::string describe_as(const char* type, const char* extra = "") const;

  int64_t features_;
  NormOptions options_;
  Tensor running_mean_, running_var_, batches_;
  // After a training-mode call: the statistics it assigns and its update.
  // A second call (a GAN's discriminator on real, then fake data) updates
  // from these, as PyTorch's second call does, in one update.
  Tensor next_mean_, next_var_, next_count_, update_;
};

/// Batch normalization over the batch (and length) dims of [N, C] or [N, C, L]
/// inputs, as PyTorch's BatchNorm1d (see BatchNorm); eval mode normalizes
/// with the running statistics.
class BatchNorm1d : public BatchNorm {
 public:
  explicit BatchNorm1d(int64_t features, NormOptions options = {});
  std::string type_name() const override { return "BatchNorm1d"; }
  std::string describe() const override;

 protected:
  Tensor forward(const Tensor& x) override;
};

/// Layer normalization over the last dims, as PyTorch's LayerNorm(normalized_shape):
/// (x - mean) / sqrt(var + eps) * weight + bias, with the mean and the biased
/// variance over the trailing dims equal to `normalized_shape` (one dim of
/// size `features` for the int form); weight (ones) and bias (zeros) have
/// that shape. Input [..., *normalized_shape], any number of leading dims.
/// One fused layer_norm node (ops/layer_norm.cpp).
class LayerNorm : public Module {
 public:
  explicit LayerNorm(int64_t features, NormOptions options = {});
  explicit LayerNorm(Shape normalized_shape, NormOptions options = {});
  std::string type_name() const override { return "LayerNorm"; }
  std::string describe() const override;
  const Shape& normalized_shape() const { return shape_; }

 protected:
  Tensor forward(const Tensor& x) override;

 private:
  Shape shape_;
  NormOptions options_;
};

/// F.rms_norm: x / sqrt(mean(x^2 over the last `dims` dims) + eps), times
/// weight (the normalized shape; none when invalid); eps std::nullopt is the
/// machine epsilon of x's dtype, PyTorch's default.
Tensor rms_norm(const Tensor& x, int64_t dims, const Tensor& weight = {}, std::optional<double> eps = std::nullopt);

struct RMSNormOptions {
  std::optional<double> eps = std::nullopt;  // the dtype's machine epsilon (PyTorch's eps=None)
  bool affine = true;                        // a learnable "weight" (ones): PyTorch's elementwise_affine
};

/// PyTorch's nn.RMSNorm(normalized_shape): rms_norm over the trailing dims
/// equal to `normalized_shape`. Input [..., *normalized_shape].
class RMSNorm : public Module {
 public:
  explicit RMSNorm(int64_t features, RMSNormOptions options = {});
  explicit RMSNorm(Shape normalized_shape, RMSNormOptions options = {});
  std::string type_name() const override { return "RMSNorm"; }
  std::string describe() const override;

 protected:
  Tensor forward(const Tensor& x) override;

 private:
  Shape shape_;
  RMSNormOptions options_;
};

/// LayerNorm over the last dim (the course's name; same module, same variables).
class LayerNorm1d : public LayerNorm {
 public:
  using LayerNorm::LayerNorm;
  std::string type_name() const override { return "LayerNorm1d"; }
};

/// Children run in order; they are named "0", "1", ...
class Sequential : public Module {
 public:
  Sequential() = default;
  template <ModuleArg... Ms>
  requires(sizeof...(Ms) > 0) Sequential(Ms&&... modules) {  // NOLINT: brace construction from modules is the point
    (push_back(share(std::forward<Ms>(modules))), ...);
  }
  Sequential(Sequential&&) = default;
  Sequential& operator=(Sequential&&) = default;

  template <ModuleValue M>
  Sequential& push_back(M&& m) {
    return push_back(share(std::move(m)));
  }
  Sequential& push_back(std::shared_ptr<Module> m);
  size_t size() const { return children().size(); }
  Module& operator[](size_t i) const;
  std::string type_name() const override { return "Sequential"; }

 protected:
  Tensor forward(const Tensor& x) override;
};

/// fn(x) + x; fn is named "fn".
class Residual : public Module {
 public:
  template <ModuleArg M>
  explicit Residual(M&& fn) {
    register_module("fn", share(std::forward<M>(fn)));
  }
  std::string type_name() const override { return "Residual"; }

 protected:
  Tensor forward(const Tensor& x) override;
};

enum class Norm { batch, layer, none };

struct MLPResNetOptions {
  int64_t hidden = 100;
  int64_t blocks = 3;
  int64_t classes = 10;
  Norm norm = Norm::batch;
  double dropout = 0.1;
};

/// The course's residual block: Residual(Linear(dim, hidden) -> Norm -> ReLU ->
/// Dropout -> Linear(hidden, dim) -> Norm) -> ReLU.
Sequential residual_block(int64_t dim, int64_t hidden, Norm norm = Norm::batch, double dropout = 0.1);

/// The course's MLPResNet: Linear(dim, hidden) -> ReLU -> `blocks` residual
/// blocks (inner width hidden / 2) -> Linear(hidden, classes). Input [N, dim].
class MLPResNet : public Sequential {
 public:
  explicit MLPResNet(int64_t dim, MLPResNetOptions options = {});
  std::string type_name() const override { return "MLPResNet"; }
};

// ---------------------------------------------------------------- losses and metrics

/// How a loss reduces its values over the rows (PyTorch's `reduction`);
/// batchmean (the sum divided by the batch size) is kl_div's only.
enum class Reduction { mean, sum, none, batchmean };
/// Refuses a reduction a loss does not take, naming the loss (`what`): batchmean unless allowed.
void check_reduction(const char* what, Reduction r, bool batchmean_allowed = false);

/// PyTorch's cross_entropy options, with its defaults.
struct CrossEntropyOptions {
  Tensor weight = {};                     ///< [C] class weights, the logits' dtype; invalid: all 1
  int64_t ignore_index = -100;            ///< rows with this label add nothing and do not count
  Reduction reduction = Reduction::mean;  ///< mean: divided by the summed weights of the rows not ignored
  double label_smoothing = 0.0;           ///< in [0, 1]: the share of the uniform distribution in the target
};

/// Cross-entropy of softmax(logits) against integer class labels, as
/// PyTorch's F.cross_entropy: logits [N, C, d1, ...] with labels [N, d1, ...]
/// (PyTorch's layout: [N, C] and [N], or a segmentation's [N, C, H, W] and
/// [N, H, W]), or logits [..., C] with labels [...] (classes last, as a
/// sequence model's [T, N, V]); shapes that fit both are an error. Labels of
/// any integer dtype; `none` gives one loss per label, shaped as the labels.
/// A label outside [0, C) that is not ignore_index raises loom::Error naming
/// it when the graph runs. Labels of the logits' floating dtype and shape are
/// class probabilities (PyTorch's soft targets, classes at dim 1; `mean`
/// averages over the rows, ignore_index does not apply).
Tensor cross_entropy(const Tensor& logits, const Tensor& labels, const CrossEntropyOptions& options = {});

/// PyTorch's nll_loss: -log_probs[label] along the class dim (log_probs laid
/// out as cross_entropy's logits, e.g. a log_softmax), with cross_entropy's
/// weight, ignore_index and reduction.
Tensor nll_loss(const Tensor& log_probs, const Tensor& labels, const CrossEntropyOptions& options = {});

// Element-wise losses, as PyTorch's: input and target of one floating dtype and one shape.
Tensor mse_loss(const Tensor& input, const Tensor& target, Reduction reduction = Reduction::mean);
Tensor l1_loss(const Tensor& input, const Tensor& target, Reduction reduction = Reduction::mean);
/// 0.5 d^2 / beta where |d| < beta, else |d| - 0.5 beta (beta 0: l1_loss).
Tensor smooth_l1_loss(const Tensor& input, const Tensor& target, double beta = 1.0,
                      Reduction reduction = Reduction::mean);
/// 0.5 d^2 where |d| < delta, else delta (|d| - 0.5 delta).
Tensor huber_loss(const Tensor& input, const Tensor& target, double delta = 1.0, Reduction reduction = Reduction::mean);

struct BCEOptions {
  Tensor weight = {};      ///< a factor of each element's loss, broadcast to it; invalid: 1
  Tensor pos_weight = {};  ///< with_logits only: the positive term's weight, broadcast along the last dim
  Reduction reduction = Reduction::mean;
};
/// -(y log p + (1 - y) log(1 - p)) of probabilities p, each log clamped at -100 as PyTorch's.
Tensor binary_cross_entropy(const Tensor& probs, const Tensor& target, const BCEOptions& options = {});
/// binary_cross_entropy of sigmoid(logits), in PyTorch's stable form (no log of 0 for any logit).
Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& target, const BCEOptions& options = {});

// Distances and the other losses of torch.nn.functional (frontend/losses.cpp), PyTorch's defaults.

/// x / max(||x||_p, eps) along `axis` (F.normalize).
Tensor normalize(const Tensor& x, double p = 2, int64_t axis = 1, double eps = 1e-12);
/// The cosine of the angle between x1 and x2 along `axis` (broadcast), each norm at least eps.
Tensor cosine_similarity(const Tensor& x1, const Tensor& x2, int64_t axis = 1, double eps = 1e-8);
/// ||x1 - x2 + eps||_p over the last axis.
Tensor pairwise_distance(const Tensor& x1, const Tensor& x2, double p = 2, double eps = 1e-6, bool keepdim = false);

/// The KL divergence of `target` from `input` (log-probabilities; target
/// probabilities, or log-probabilities with log_target), element-wise
/// target (log target - input). Reduction::batchmean is the true divergence
/// per sample; mean (PyTorch's default) divides by every element.
Tensor kl_div(const Tensor& input, const Tensor& target, Reduction reduction = Reduction::mean,
              bool log_target = false);

struct PoissonNLLOptions {
  bool log_input = true;  ///< input is log(rate): exp(input) - target input; else input - target log(input + eps)
  bool full = false;      ///< adds Stirling's log(target!) for targets above 1
  double eps = 1e-8;
  Reduction reduction = Reduction::mean;
};
Tensor poisson_nll_loss(const Tensor& input, const Tensor& target, const PoissonNLLOptions& options = {});

struct GaussianNLLOptions {
  bool full = false;  ///< adds log(2 pi) / 2
  double eps = 1e-6;  ///< var's floor (the gradient passes as if unclamped, as PyTorch's)
  Reduction reduction = Reduction::mean;
};
/// (log var + (input - target)^2 / var) / 2; var shaped as input, as it
/// without the last dim, or with a last dim of 1 (one variance per row).
Tensor gaussian_nll_loss(const Tensor& input, const Tensor& target, const Tensor& var,
                         const GaussianNLLOptions& options = {});

/// max(0, -y (x1 - x2) + margin), y of 1 or -1.
Tensor margin_ranking_loss(const Tensor& x1, const Tensor& x2, const Tensor& y, double margin = 0,
                           Reduction reduction = Reduction::mean);
/// x where y = 1, max(0, margin - x) where y = -1.
Tensor hinge_embedding_loss(const Tensor& x, const Tensor& y, double margin = 1, Reduction reduction = Reduction::mean);
/// log(1 + exp(-y x)) per element.
Tensor soft_margin_loss(const Tensor& x, const Tensor& y, Reduction reduction = Reduction::mean);
/// Binary cross-entropy with logits x [..., C] against 0/1 targets, weighted per class, the mean over C per sample.
/// PyTorch's multilabel_margin_loss: x [N, C] or [C], y integers of x's shape holding each sample's
/// target classes up to the first negative entry; sum over targets j and non-target classes i of
/// max(0, 1 - (x[y_j] - x[i])), over C.
Tensor multilabel_margin_loss(const Tensor& x, const Tensor& y, Reduction reduction = Reduction::mean);
Tensor multilabel_soft_margin_loss(const Tensor& x, const Tensor& y, const Tensor& weight = {},
                                   Reduction reduction = Reduction::mean);
/// 1 - cos(x1, x2) where y = 1, max(0, cos - margin) where y = -1; x [N, D] or [D], y [N] or scalar.
Tensor cosine_embedding_loss(const Tensor& x1, const Tensor& x2, const Tensor& y, double margin = 0,
                             Reduction reduction = Reduction::mean);

struct TripletMarginOptions {
  double margin = 1;
  double p = 2;
  double eps = 1e-6;
  bool swap = false;  ///< the negative's distance is the smaller of anchor's and positive's
  Reduction reduction = Reduction::mean;
};
/// max(0, margin + d(anchor, positive) - d(anchor, negative)), d = pairwise_distance; inputs [N, D] or [D].
Tensor triplet_margin_loss(const Tensor& anchor, const Tensor& positive, const Tensor& negative,
                           const TripletMarginOptions& options = {});

struct MultiMarginOptions {
  int p = 1;  ///< 1 or 2
  double margin = 1;
  Tensor weight = {};  ///< [C]: the label class's weight scales its sample's terms
  Reduction reduction = Reduction::mean;
};
/// The multi-class hinge loss: sum over j != label of max(0, margin - x[label] + x[j])^p / C; x [N, C], labels [N].
Tensor multi_margin_loss(const Tensor& x, const Tensor& labels, const MultiMarginOptions& options = {});

struct CTCLossOptions {
  int64_t blank = 0;
  /// mean: each sample's loss divided by its target length (at least 1), then the batch mean (PyTorch's).
  Reduction reduction = Reduction::mean;
  /// An impossible alignment (target longer than its input allows) gives 0 instead of inf.
  bool zero_infinity = false;
};
/// PyTorch's F.ctc_loss (connectionist temporal classification, Graves et
/// al. 2006): -log of the summed probability of every alignment of each
/// target with its input. log_probs [T, N, C] (log_softmax'd), targets [N, S]
/// (integers, padded past each target length), input_lengths and
/// target_lengths [N] (integers, in [0, T] and [0, S], checked when run, as
/// are the labels). The forward recursion over the 2S + 1 blank-interleaved
/// labels is unrolled over the T steps in log space (T and S known; an
/// unreachable state holds -1e30, not -inf, so that no gradient is NaN).
Tensor ctc_loss(const Tensor& log_probs, const Tensor& targets, const Tensor& input_lengths,
                const Tensor& target_lengths, const CTCLossOptions& options = {});

/// PyTorch's nn.CTCLoss: `nn::CTCLoss ctc({.blank = 0}); Tensor loss = ctc(log_probs, targets, in_lens, target_lens);`.
class CTCLoss {
 public:
  explicit CTCLoss(CTCLossOptions options = {}) : options_(options) {}
  Tensor operator()(const Tensor& log_probs, const Tensor& targets, const Tensor& input_lengths,
                    const Tensor& target_lengths) const {
    return ctc_loss(log_probs, targets, input_lengths, target_lengths, options_);
  }

 private:
  CTCLossOptions options_;
};

/// The loss as an object: `nn::SoftmaxLoss loss_fn; Tensor loss = loss_fn(logits, y);`.
class SoftmaxLoss {
 public:
  explicit SoftmaxLoss(CrossEntropyOptions options = {}) : options_(std::move(options)) {}
  Tensor operator()(const Tensor& logits, const Tensor& labels) const {
    return cross_entropy(logits, labels, options_);
  }

 private:
  CrossEntropyOptions options_;
};

/// Number of labels equal to the argmax over the class dim (cross_entropy's layouts; float32 scalar).
Tensor correct(const Tensor& logits, const Tensor& labels);
/// Fraction of rows whose argmax equals the label (float32 scalar).
Tensor accuracy(const Tensor& logits, const Tensor& labels);

}  // namespace loom::nn
