// nn modules: lazily built, variables named by module path, composed in C++.

#include "frontend/nn.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

namespace loom::nn {

// ---------------------------------------------------------------- Module

Tensor Module::operator()(const Tensor& x) {
  LOOM_CHECK(x.valid(), type_name(), ": called on an empty Tensor handle");
  if (name_.empty()) return forward(x);
  auto scope = x.graph().scope(name_);
  return forward(x);
}

Module& Module::register_module(const std::string& name, std::shared_ptr<Module> module) {
  LOOM_CHECK(module != nullptr, type_name(), ": register_module('", name, "'): null module");
  LOOM_CHECK(!name.empty() && name.find('/') == std::string::npos, type_name(), ": child name '", name,
             "' must be non-empty and contain no '/'");
  for (const auto& [n, m] : children_)
    LOOM_CHECK(n != name, type_name(), ": a child named '", name, "' already exists");
  LOOM_CHECK(module.get() != this, type_name(), ": a module cannot contain itself");
  if (module->name_.empty()) module->name_ = name;
  children_.emplace_back(name, std::move(module));
  return *children_.back().second;
}

std::string Module::where(const Tensor& x) const {
  std::string p = x.graph().prefix();
  if (!p.empty()) p.pop_back();
  return p.empty() ? type_name() : type_name() + " '" + p + "'";
}

Tensor Module::shared_parameter(const std::string& name, const Tensor& variable) {
  LOOM_CHECK(variable.valid() && variable.node().op->name == "variable", type_name(), ": '", name,
             "' can only be tied to a variable");
  for (Var& v : vars_)
    if (v.name == name) {
      LOOM_CHECK(v.shared, type_name(), ": '", name,
                 "' is a variable of its own; it cannot be tied after its first call");
      v.tensor = variable;
      return variable;
    }
  graph_ = &variable.graph();
  graph_id_ = graph_->id();
  vars_.push_back({name, variable, true, true});
  return variable;
}

Tensor Module::variable(const Tensor& x, const std::string& name, const Shape& shape, const Initializer& init,
                        DType dtype, bool trainable) {
  Graph& g = x.graph();
  if (graph_ && graph_id_ != g.id())
    fail(where(x),
         ": this module was built in another graph; a module's variables live in the graph of its first "
         "input (build a new module for another graph)");
  graph_ = &g;
  graph_id_ = g.id();
  for (const Var& v : vars_)
    if (v.name == name) {
      LOOM_CHECK(v.tensor.shape() == shape && v.tensor.dtype() == dtype, where(x), ": variable '", name, "' exists as ",
                 dtype_name(v.tensor.dtype()), S(v.tensor.shape()), ", requested ", dtype_name(dtype), S(shape));
      return v.tensor;
    }
  const std::string full = g.prefix() + name;
  if (g.find(full).valid())
    fail(where(x), ": variable '", full,
         "' already exists in the graph; is another module built at the same path? "
         "Build one of them inside a scope (auto s = g.scope(\"name\")) or as a child of a container");
  Tensor t = g.variable(name, shape, init, dtype);
  vars_.push_back({name, t, trainable});
  return t;
}

Tensor Module::parameter(const Tensor& x, const std::string& name, const Shape& shape, const Initializer& init,
                         DType dtype) {
  return variable(x, name, shape, init, dtype, true);
}

Tensor Module::buffer(const Tensor& x, const std::string& name, const Shape& shape, const Initializer& init,
                      DType dtype) {
  return variable(x, name, shape, init, dtype, false);
}

void Module::add_update(const Tensor& update, const Tensor& replaces) {
  LOOM_CHECK(update.valid(), type_name(), ": add_update of an empty Tensor handle");
  auto earlier = std::find_if(updates_.begin(), updates_.end(), [&](const Tensor& u) { return u.is(replaces); });
  if (replaces.valid() && earlier != updates_.end())
    *earlier = update;
  else
    updates_.push_back(update);
}

void Module::collect(const std::string& prefix, bool trainable, std::vector<std::pair<std::string, Tensor>>& out,
                     std::vector<const Module*>& seen) const {
  if (std::find(seen.begin(), seen.end(), this) != seen.end()) return;
  seen.push_back(this);
  for (const Var& v : vars_)
    if (v.trainable == trainable && !v.shared) out.emplace_back(prefix + v.name, v.tensor);
  for (const auto& [name, child] : children_) child->collect(prefix + name + "/", trainable, out, seen);
}

std::vector<std::pair<std::string, Tensor>> Module::named_parameters() const {
  std::vector<std::pair<std::string, Tensor>> out;
  std::vector<const Module*> seen;
  collect("", true, out, seen);
  return out;
}

std::vector<std::pair<std::string, Tensor>> Module::named_buffers() const {
  std::vector<std::pair<std::string, Tensor>> out;
  std::vector<const Module*> seen;
  collect("", false, out, seen);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [n, t] : named_parameters()) out.push_back(t);
  return out;
}

std::vector<Tensor> Module::variables() const {
  std::vector<Tensor> out = parameters();
  for (auto& [n, t] : named_buffers()) out.push_back(t);
  return out;
}

void Module::collect_state(const std::string& prefix, std::vector<std::pair<std::string, Tensor>>& out,
                           std::vector<const Module*>& seen) const {
  if (std::find(seen.begin(), seen.end(), this) != seen.end()) return;
  seen.push_back(this);
  for (bool trainable : {true, false})
    for (const Var& v : vars_)
      if (v.trainable == trainable) {
        // PyTorch's key: a name with a module path of its own ("out_proj/weight") uses '.' too.
        std::string key = prefix + v.name;
        std::replace(key.begin(), key.end(), '/', '.');
        out.emplace_back(std::move(key), v.tensor);
      }
  for (const auto& [name, child] : children_) child->collect_state(prefix + name + ".", out, seen);
}

std::vector<std::pair<std::string, Tensor>> Module::state_dict() const {
  std::vector<std::pair<std::string, Tensor>> out;
  std::vector<const Module*> seen;
  collect_state("", out, seen);
  return out;
}

void Module::collect_updates(std::vector<Tensor>& out, std::vector<const Module*>& seen) const {
  if (std::find(seen.begin(), seen.end(), this) != seen.end()) return;
  seen.push_back(this);
  out.insert(out.end(), updates_.begin(), updates_.end());
  for (const auto& [name, child] : children_) child->collect_updates(out, seen);
}

std::vector<Tensor> Module::updates() const {
  std::vector<Tensor> out;
  std::vector<const Module*> seen;
  collect_updates(out, seen);
  return out;
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (const Tensor& p : parameters()) n += numel(p.shape());
  return n;
}

Module& Module::train(bool on) {
  training_ = on;
  for (auto& [name, child] : children_) child->train(on);
  return *this;
}

void Module::print(std::string& out, const std::string& name, int depth) const {
  out += std::string(size_t(depth) * 2, ' ');
  if (!name.empty()) out += "(" + name + "): ";
  out += describe();
  out += "\n";
  for (const auto& [n, child] : children_) child->print(out, n, depth + 1);
}

std::string Module::str() const {
  std::string out;
  print(out, "", 0);
  return out;
}

// ---------------------------------------------------------------- containers

Sequential& Sequential::push_back(std::shared_ptr<Module> m) {
  register_module(std::to_string(children().size()), std::move(m));
  return *this;
}

Module& Sequential::operator[](size_t i) const {
  LOOM_CHECK(i < children().size(), "Sequential: index ", i, " out of range (", children().size(), " modules)");
  return *children()[i].second;
}

Tensor Sequential::forward(const Tensor& x) {
  Tensor y = x;
  for (const auto& [name, child] : children()) y = (*child)(y);
  return y;
}

Tensor Residual::forward(const Tensor& x) {
  Tensor y = (*children()[0].second)(x);
  LOOM_CHECK(y.shape().size() == x.shape().size(), where(x), ": fn maps ", S(x.shape()), " to ", S(y.shape()),
             "; a residual needs the same shape");
  for (size_t i = 0; i < y.shape().size(); ++i)
    LOOM_CHECK(y.shape()[i] == x.shape()[i] || y.shape()[i] < 0 || x.shape()[i] < 0, where(x), ": fn maps ",
               S(x.shape()), " to ", S(y.shape()), "; a residual needs the same shape");
  return y + x;
}

Lambda::Lambda(std::function<Tensor(const Tensor&)> fn, std::string name) : fn_(std::move(fn)), name_(std::move(name)) {
  LOOM_CHECK(bool(fn_), "Lambda: empty function");
}

// ---------------------------------------------------------------- activations

Tensor activate(Activation a, const Tensor& x) {
  switch (a) {
    case Activation::relu:
      return relu(x);
    case Activation::tanh:
      return tanh(x);
    case Activation::gelu:
      return gelu(x);
    case Activation::gelu_tanh:
      return gelu(x, "tanh");
  }
  return x;
}

const char* activation_name(Activation a) {
  constexpr const char* kNames[] = {"relu", "tanh", "gelu", "gelu_tanh"};
  return kNames[static_cast<int>(a)];
}

// ---------------------------------------------------------------- layers

Linear::Linear(int64_t in_features, int64_t out_features, LinearOptions options)
    : in_(in_features), out_(out_features), options_(std::move(options)) {
  LOOM_CHECK(in_ > 0 && out_ > 0, "Linear: features must be positive, got (", in_, ", ", out_, ")");
  LOOM_CHECK(is_floating(options_.dtype), "Linear: dtype must be floating, got ", dtype_name(options_.dtype));
  // PyTorch's default: kaiming_uniform(a = sqrt(5)) for the weight, U(+-1/sqrt(in)) for the bias.
  const double bound = 1.0 / std::sqrt(double(in_));
  if (!options_.weight_init) options_.weight_init = init::uniform(-bound, bound);
  if (!options_.bias_init) options_.bias_init = init::uniform(-bound, bound);
}

std::string Linear::describe() const {
  return "Linear(" + std::to_string(in_) + ", " + std::to_string(out_) + (options_.bias ? ", bias)" : ", no bias)");
}

Linear& Linear::tie_weight(const Tensor& variable) {
  LOOM_CHECK(variable.valid(), "Linear: tie_weight needs a variable, got an empty Tensor handle");
  tied_ = variable;
  return *this;
}

Tensor Linear::forward(const Tensor& x) {
  const Shape& s = x.shape();
  LOOM_CHECK(!s.empty() && (s.back() == in_ || s.back() < 0), where(x), ": expected input [..., ", in_, "], got ",
             S(s));
  LOOM_CHECK(x.dtype() == options_.dtype, where(x), ": expected ", dtype_name(options_.dtype), " input, got ",
             dtype_name(x.dtype()));
  // PyTorch's layout, [out, in]: checkpoints move between loom and PyTorch as they
  // are. The transpose is a view; BLAS reads it through its transpose flag.
  if (tied_.valid()) {
    LOOM_CHECK(tied_.shape() == Shape({out_, in_}) && tied_.dtype() == options_.dtype, where(x),
               ": a tied weight must be ", dtype_name(options_.dtype), "[", out_, ", ", in_, "], got ",
               dtype_name(tied_.dtype()), S(tied_.shape()));
    LOOM_CHECK(&tied_.graph() == &x.graph(), where(x), ": the tied weight is in another graph");
    weight_ = shared_parameter("weight", tied_);
  } else {
    weight_ = parameter(x, "weight", {out_, in_}, options_.weight_init, options_.dtype);
  }
  if (options_.bias) bias_ = parameter(x, "bias", {out_}, options_.bias_init, options_.dtype);
  const Tensor w = transpose(weight_);
  Tensor y;
  int dynamic = int(std::count_if(s.begin(), s.end() - 1, [](int64_t d) { return d < 0; }));
  if (s.size() > 2 && dynamic <= 1) {
    // [..., in] as one [rows, in] matrix: one GEMM, and a plain 2-D weight gradient.
    // The bias is added before the reshape, so that it reads the GEMM's output
    // itself and the plan's epilogue pass runs it on the GEMM's blocks.
    Shape out = s;
    out.back() = out_;
    for (int64_t& d : out) d = d < 0 ? -1 : d;
    y = matmul(reshape(x, {-1, in_}), w);
    if (options_.bias) y = y + bias_;
    return reshape(y, out);
  }
  y = matmul(x, w);
  if (options_.bias) y = y + bias_;
  return y;
}

Bilinear::Bilinear(int64_t in1, int64_t in2, int64_t out, LinearOptions options)
    : in1_(in1), in2_(in2), out_(out), options_(std::move(options)) {
  LOOM_CHECK(in1_ > 0 && in2_ > 0 && out_ > 0, "Bilinear: features must be positive, got (", in1_, ", ", in2_, ", ",
             out_, ")");
  LOOM_CHECK(valid_shape({out_, in1_, in2_}, 8), "Bilinear: a weight [", out_, ", ", in1_, ", ", in2_,
             "] is too large");
  LOOM_CHECK(is_floating(options_.dtype), "Bilinear: dtype must be floating, got ", dtype_name(options_.dtype));
  const double bound = 1.0 / std::sqrt(double(in1_));
  if (!options_.weight_init) options_.weight_init = init::uniform(-bound, bound);
  if (!options_.bias_init) options_.bias_init = init::uniform(-bound, bound);
}

std::string Bilinear::describe() const {
  return "Bilinear(" + std::to_string(in1_) + ", " + std::to_string(in2_) + ", " + std::to_string(out_) +
         (options_.bias ? ", bias)" : ", no bias)");
}

Tensor Bilinear::operator()(const Tensor& x1, const Tensor& x2) {
  LOOM_CHECK(x1.valid() && x2.valid(), "Bilinear: an input is an empty Tensor handle");
  return in_scope(x1, [&] { return run(x1, x2); });
}

Tensor Bilinear::run(const Tensor& x1, const Tensor& x2) {
  const Shape &s1 = x1.shape(), &s2 = x2.shape();
  LOOM_CHECK(!s1.empty() && s1.size() == s2.size() && (s1.back() == in1_ || s1.back() < 0) &&
                 (s2.back() == in2_ || s2.back() < 0),
             where(x1), ": expected inputs [..., ", in1_, "] and [..., ", in2_, "] with the same leading dims, got ",
             S(s1), " and ", S(s2));
  LOOM_CHECK(x1.dtype() == options_.dtype && x2.dtype() == options_.dtype, where(x1), ": expected ",
             dtype_name(options_.dtype), " inputs, got ", dtype_name(x1.dtype()), " and ", dtype_name(x2.dtype()));
  weight_ = parameter(x1, "weight", {out_, in1_, in2_}, options_.weight_init, options_.dtype);
  if (options_.bias) bias_ = parameter(x1, "bias", {out_}, options_.bias_init, options_.dtype);
  // x1 A: [rows, in1] x [in1, out * in2], then each output's row times x2, summed over in2.
  const Tensor a = reshape(permute(weight_, {1, 0, 2}), {in1_, out_ * in2_});
  const Tensor left = reshape(matmul(reshape(x1, {-1, in1_}), a), {-1, out_, in2_});
  Tensor y = sum(left * expand_dims(reshape(x2, {-1, in2_}), {1}), {2});  // [rows, out]
  if (bias_.valid()) y = y + bias_;
  Shape out_shape(s1.begin(), s1.end() - 1);
  out_shape.push_back(out_);
  return s1.size() == 2 ? y : reshape(y, out_shape);
}

std::string Flatten::describe() const {
  if (start_ == 1 && end_ == -1) return "Flatten";
  std::ostringstream os;
  os << "Flatten(start_dim=" << start_ << ", end_dim=" << end_ << ")";
  return os.str();
}

Tensor Flatten::forward(const Tensor& x) {
  const Shape& s = x.shape();
  const int64_t n = int64_t(s.size()), lo = start_ < 0 ? start_ + n : start_, hi = end_ < 0 ? end_ + n : end_;
  // PyTorch's Flatten (start_dim 1) refuses a 1-D input too: it has no dim 1.
  const bool standard = start_ == 1 && end_ == -1;
  if (standard) LOOM_CHECK(n >= 2, where(x), ": expected [N, d1, ...] (at least 2 dims), got ", S(s));
  LOOM_CHECK(lo >= 0 && hi < n && lo <= hi, where(x), ": dims ", start_, " to ", end_, " do not fit input ", S(s));
  Shape out(s.begin(), s.begin() + lo);
  int64_t merged = 1;
  for (int64_t i = lo; i <= hi; ++i) {
    LOOM_CHECK(s[size_t(i)] >= 0 || lo == hi, where(x), standard ? ": trailing dims of " : ": the flattened dims of ",
               S(s), " must be known");
    merged *= s[size_t(i)];
  }
  if (lo == hi) return x;
  out.push_back(merged);
  out.insert(out.end(), s.begin() + hi + 1, s.end());
  LOOM_CHECK(std::count_if(out.begin(), out.end(), [](int64_t d) { return d < 0; }) <= 1, where(x), ": ", S(s),
             " flattened leaves more than one dim unknown");
  for (int64_t& d : out) d = d < 0 ? -1 : d;
  return reshape(x, out);
}

Unflatten::Unflatten(int64_t dim, std::vector<int64_t> sizes) : dim_(dim), sizes_(std::move(sizes)) {
  LOOM_CHECK(!sizes_.empty() && std::count(sizes_.begin(), sizes_.end(), -1) <= 1 &&
                 std::all_of(sizes_.begin(), sizes_.end(), [](int64_t d) { return d > 0 || d == -1; }),
             "Unflatten: sizes must be positive, with at most one -1, got ", attr_str(sizes_));
}

std::string Unflatten::describe() const {
  std::ostringstream os;
  os << "Unflatten(dim=" << dim_ << ", sizes=" << attr_str(sizes_) << ")";
  return os.str();
}

Tensor Unflatten::forward(const Tensor& x) {
  const Shape& s = x.shape();
  const int64_t n = int64_t(s.size()), d = dim_ < 0 ? dim_ + n : dim_;
  LOOM_CHECK(d >= 0 && d < n, where(x), ": dim ", dim_, " out of range for input ", S(s));
  int64_t known = 1;
  for (int64_t v : sizes_)
    LOOM_CHECK(!__builtin_mul_overflow(known, v == -1 ? 1 : v, &known), where(x), ": sizes ", attr_str(sizes_),
               " overflow");
  const int64_t here = s[size_t(d)];
  const bool inferred = std::count(sizes_.begin(), sizes_.end(), -1) == 1;
  LOOM_CHECK(here < 0 || (inferred ? here % known == 0 : here == known), where(x), ": dim ", dim_, " of ", S(s),
             " cannot be split into ", attr_str(sizes_));
  Shape out(s.begin(), s.begin() + d);
  for (int64_t v : sizes_) out.push_back(v == -1 && here >= 0 ? here / known : v);
  out.insert(out.end(), s.begin() + d + 1, s.end());
  const auto unknown = std::count_if(out.begin(), out.end(), [](int64_t v) { return v < 0; });
  LOOM_CHECK(unknown <= 1, where(x), ": ", S(s), " split into ", attr_str(sizes_), " leaves more than one dim unknown");
  for (int64_t& v : out) v = v < 0 ? -1 : v;
  return reshape(x, out);
}

namespace {

/// One draw per channel: a view of x's first element along each dim after the channels ([N, C, 1, ...]).
Tensor channel_view(const char* who, const Tensor& x) {
  LOOM_CHECK(x.ndim() >= 2, who, ": expected [N, C, ...], got ", S(x.shape()));
  std::vector<Slice> first(size_t(x.ndim()), Slice::all());
  for (size_t a = 2; a < first.size(); ++a) first[a] = Slice::range(0, 1);
  return slice(x, first);
}

/// Whether x has no elements after its channels (nothing to draw for).
bool empty_channels(const Tensor& x) {
  const Shape& s = x.shape();
  return std::any_of(s.begin() + std::min<ptrdiff_t>(2, ptrdiff_t(s.size())), s.end(),
                     [](int64_t d) { return d == 0; });
}

void check_p(const char* who, double p) { LOOM_CHECK(p >= 0 && p <= 1, who, ": p must be in [0, 1], got ", p); }

}  // namespace

Tensor feature_dropout(const Tensor& x, double p, bool training) {
  check_p("feature_dropout", p);
  const Tensor channels = channel_view("feature_dropout", x);
  if (!training || p == 0 || empty_channels(x)) return x;
  if (p == 1) return x * 0.0;
  return x * (bernoulli_like(channels, 1.0 - p) * (1.0 / (1.0 - p)));
}

Tensor alpha_dropout(const Tensor& x, double p, bool training, bool per_channel) {
  check_p("alpha_dropout", p);
  const Tensor draws = per_channel ? channel_view("feature_alpha_dropout", x) : x;
  if (!training || p == 0 || (per_channel && empty_channels(x))) return x;
  if (p == 1) return x * 0.0;
  constexpr double kAlpha = 1.7580993408473766;  // SELU's scale * alpha
  const double a = 1.0 / std::sqrt((kAlpha * kAlpha * p + 1) * (1 - p));
  const Tensor keep = bernoulli_like(draws, 1.0 - p);
  // PyTorch's arithmetic: b = (keep - 1) alpha' a + alpha' a p; x * (keep a) + b.
  return x * (keep * a) + ((keep - 1.0) * (kAlpha * a) + kAlpha * a * p);
}

Dropout::Dropout(std::string type, double p, DropoutKind kind) : type_(std::move(type)), p_(p), kind_(kind) {
  check_p(type_.c_str(), p);
}

std::string Dropout::describe() const {
  std::ostringstream os;
  os << type_ << "(p=" << p_ << ")";
  return os.str();
}

Tensor Dropout::forward(const Tensor& x) {
  static const char* const kLayouts[] = {"", "", "", "[N, C, L]", "[N, C, H, W]", "[N, C, D, H, W]"};
  LOOM_CHECK(kind_.rank == 0 || x.ndim() == kind_.rank, where(x), ": expected input ", kLayouts[kind_.rank], ", got ",
             S(x.shape()));
  LOOM_CHECK(is_floating(x.dtype()), where(x), ": expected a floating input, got ", dtype_name(x.dtype()));
  if (kind_.alpha) return alpha_dropout(x, p_, training(), kind_.per_channel);
  return kind_.per_channel ? feature_dropout(x, p_, training()) : dropout(x, p_, training());
}

static void check_norm_options(const char* what, int64_t features, const NormOptions& o) {
  LOOM_CHECK(features > 0, what, ": features must be positive, got ", features);
  LOOM_CHECK(o.eps > 0, what, ": eps must be positive, got ", o.eps);
  if (o.momentum)
    LOOM_CHECK(*o.momentum >= 0 && *o.momentum <= 1, what, ": momentum must be in [0, 1], got ", *o.momentum);
}

static std::string norm_describe(const char* type, int64_t features, const NormOptions& o, bool momentum) {
  std::ostringstream os;
  os << type << "(" << features << ", eps=" << o.eps;
  if (momentum && o.momentum) os << ", momentum=" << *o.momentum;
  if (momentum && !o.momentum) os << ", momentum=None";
  os << (o.affine ? ", affine" : "") << (o.affine && !o.bias ? ", no bias" : "");
  os << (momentum && !o.track_running_stats ? ", track_running_stats=False)" : ")");
  return os.str();
}

BatchNorm::BatchNorm(const char* type, int64_t features, NormOptions options) : features_(features), options_(options) {
  check_norm_options(type, features, options);
  LOOM_CHECK(options.bias, type, ": has no bias option (PyTorch's neither); affine = false leaves out weight and bias");
}

std::string BatchNorm::describe_as(const char* type, const char* extra) const {
  std::string d = norm_describe(type, features_, options_, true);
  return d.insert(d.size() - 1, extra);
}

void BatchNorm::check_input(const Tensor& x) const {
  const Shape& s = x.shape();
  LOOM_CHECK(is_floating(x.dtype()), where(x), ": expected a floating input, got ", dtype_name(x.dtype()));
  if (!batch_statistics() || !is_static(s)) return;
  int64_t per_feature = s[0];
  for (size_t i = 2; i < s.size(); ++i) per_feature *= s[i];
  LOOM_CHECK(per_feature > 1, where(x), ": training needs more than one value per feature, got input ", S(s));
}

std::pair<Tensor, Tensor> BatchNorm::scale_and_shift(const Tensor& x) {
  const DType dt = x.dtype();
  if (options_.track_running_stats) {
    running_mean_ = buffer(x, "running_mean", {features_}, init::zeros(), dt);
    running_var_ = buffer(x, "running_var", {features_}, init::ones(), dt);
    // PyTorch's third buffer, so that state dicts match key for key.
    batches_ = buffer(x, "num_batches_tracked", {}, init::zeros(), int64);
  }
  if (!options_.affine) return {full(x.graph(), {features_}, 1.0, dt), full(x.graph(), {features_}, 0.0, dt)};
  return {parameter(x, "weight", {features_}, init::ones(), dt), parameter(x, "bias", {features_}, init::zeros(), dt)};
}

Tensor BatchNorm::batch_normalize(const Tensor& x, bool relu) {
  auto [w, b] = scale_and_shift(x);
  BatchNormOutputs r = batch_norm(x, w, b, options_.eps, relu);
  if (!options_.track_running_stats || !training()) return r.y;
  std::vector<int64_t> axes{0};
  for (int64_t i = 2; i < int64_t(x.shape().size()); ++i) axes.push_back(i);
  // The running variance is the unbiased one (PyTorch's); batch_norm refuses a batch of one value per
  // feature. An empty batch (NaN statistics) leaves the running statistics as they are, as PyTorch.
  Tensor n = size(x, axes, x.dtype());
  Tensor unbiased = r.var * (n / maximum(n - 1.0, scalar_like(n, 1.0)));
  Tensor some = n > 0.0;
  const bool again = update_.valid();  // an earlier call of this graph: update from its statistics
  const Tensor mean = again ? next_mean_ : running_mean_, var = again ? next_var_ : running_var_;
  next_count_ = (again ? next_count_ : batches_) + 1;
  // momentum=None: the cumulative average, 1 / (batches so far) (PyTorch's).
  auto average = [&](const Tensor& running, const Tensor& batch) {
    if (options_.momentum) return running * (1.0 - *options_.momentum) + batch * *options_.momentum;
    const Tensor m = 1.0 / cast(next_count_, n.dtype());
    return running * (1.0 - m) + batch * m;
  };
  next_mean_ = loom::where(some, average(mean, r.mean), mean);
  next_var_ = loom::where(some, average(var, unbiased), var);
  const Tensor update =
      group({assign(running_mean_, next_mean_), assign(running_var_, next_var_), assign(batches_, next_count_)});
  add_update(update, update_);
  update_ = update;
  return r.y;
}

BatchNorm1d::BatchNorm1d(int64_t features, NormOptions options) : BatchNorm("BatchNorm1d", features, options) {}

std::string BatchNorm1d::describe() const { return describe_as("BatchNorm1d"); }

Tensor BatchNorm1d::forward(const Tensor& x) {
  const Shape& s = x.shape();
  LOOM_CHECK((s.size() == 2 || s.size() == 3) && (s[1] == features_ || s[1] < 0), where(x), ": expected [N, ",
             features_, "] or [N, ", features_, ", L], got ", S(s));
  check_input(x);
  if (batch_statistics()) return batch_normalize(x);
  auto [w, b] = scale_and_shift(x);
  // Per-feature vectors [C] broadcast as [C] against [N, C] and as [C, 1] against [N, C, L].
  auto per_feature = [&](const Tensor& v) { return s.size() == 3 ? reshape(v, {features_, 1}) : v; };
  Tensor y = (x - per_feature(running_mean_)) / sqrt(per_feature(running_var_) + options_.eps);
  return options_.affine ? y * per_feature(w) + per_feature(b) : y;
}

LayerNorm::LayerNorm(int64_t features, NormOptions options) : LayerNorm(Shape{features}, options) {}

LayerNorm::LayerNorm(Shape normalized_shape, NormOptions options) : shape_(std::move(normalized_shape)), options_(options) {
  LOOM_CHECK(!shape_.empty(), "LayerNorm: normalized_shape must have at least one dim");
  for (int64_t d : shape_) check_norm_options("LayerNorm", d, options);
}

std::string LayerNorm::describe() const {
  if (shape_.size() == 1) return norm_describe(type_name().c_str(), shape_[0], options_, false);
  std::ostringstream os;
  os << type_name() << "(" << S(shape_) << ", eps=" << options_.eps << (options_.affine ? ", affine" : "")
     << (options_.affine && !options_.bias ? ", no bias)" : ")");
  return os.str();
}

/// Checks that x is floating and ends with `normalized` (a norm over trailing dims; `who` names the module).
static void check_trailing(const std::string& who, const Tensor& x, const Shape& normalized) {
  const Shape& s = x.shape();
  const size_t k = normalized.size();
  bool ok = s.size() >= k;
  for (size_t i = 0; ok && i < k; ++i) ok = s[s.size() - k + i] == normalized[i] || s[s.size() - k + i] < 0;
  const std::string dims = shape_str(normalized);
  LOOM_CHECK(ok, who, ": expected [..., ", dims.substr(1, dims.size() - 2), "], got ", S(s));
  LOOM_CHECK(is_floating(x.dtype()), who, ": expected a floating input, got ", dtype_name(x.dtype()));
}

Tensor LayerNorm::forward(const Tensor& x) {
  check_trailing(where(x), x, shape_);
  const size_t k = shape_.size();
  Tensor w, b;
  if (options_.affine) {
    w = parameter(x, "weight", shape_, init::ones(), x.dtype());
    if (options_.bias) b = parameter(x, "bias", shape_, init::zeros(), x.dtype());
  }
  return layer_norm(x, w, b, int64_t(k), options_.eps).y;
}

// ---------------------------------------------------------------- RMSNorm

Tensor rms_norm(const Tensor& x, int64_t dims, const Tensor& weight, std::optional<double> eps) {
  LOOM_CHECK(x.valid(), "rms_norm: the input is an empty Tensor handle");
  LOOM_CHECK(is_floating(x.dtype()), "rms_norm: expected a floating input, got ", dtype_name(x.dtype()));
  LOOM_CHECK(dims >= 1 && dims <= x.ndim(), "rms_norm: normalizes 1 to ", x.ndim(), " trailing dims of ", S(x.shape()),
             ", got ", dims);
  const double e = eps                    ? *eps
                   : x.dtype() == float64 ? std::numeric_limits<double>::epsilon()
                                          : double(std::numeric_limits<float>::epsilon());
  LOOM_CHECK(std::isfinite(e) && e >= 0, "rms_norm: eps must be finite and >= 0, got ", e);
  std::vector<int64_t> axes;
  for (int64_t a = x.ndim() - dims; a < x.ndim(); ++a) axes.push_back(a);
  const Tensor y = x / sqrt(mean(x * x, axes, true) + e);
  return weight.valid() ? y * weight : y;
}

RMSNorm::RMSNorm(int64_t features, RMSNormOptions options) : RMSNorm(Shape{features}, options) {}

RMSNorm::RMSNorm(Shape normalized_shape, RMSNormOptions options)
    : shape_(std::move(normalized_shape)), options_(options) {
  LOOM_CHECK(!shape_.empty(), "RMSNorm: normalized_shape must have at least one dim");
  for (int64_t d : shape_) LOOM_CHECK(d > 0, "RMSNorm: normalized_shape must be positive, got ", S(shape_));
  if (options_.eps)
    LOOM_CHECK(std::isfinite(*options_.eps) && *options_.eps >= 0, "RMSNorm: eps must be finite and >= 0, got ",
               *options_.eps);
}

std::string RMSNorm::describe() const {
  std::ostringstream os;
  os << type_name() << "(" << (shape_.size() == 1 ? std::to_string(shape_[0]) : shape_str(shape_)) << ", eps=";
  if (options_.eps)
    os << *options_.eps;
  else
    os << "None";
  os << (options_.affine ? ", elementwise_affine)" : ")");
  return os.str();
}

Tensor RMSNorm::forward(const Tensor& x) {
  check_trailing(where(x), x, shape_);
  const size_t k = shape_.size();
  const Tensor w = options_.affine ? parameter(x, "weight", shape_, init::ones(), x.dtype()) : Tensor();
  return rms_norm(x, int64_t(k), w, options_.eps);
}

// ---------------------------------------------------------------- MLPResNet

static std::shared_ptr<Module> make_norm(Norm norm, int64_t features) {
  switch (norm) {
    case Norm::batch:
      return std::make_shared<BatchNorm1d>(features);
    case Norm::layer:
      return std::make_shared<LayerNorm1d>(features);
    case Norm::none:
      return std::make_shared<Identity>();
  }
  return std::make_shared<Identity>();
}

Sequential residual_block(int64_t dim, int64_t hidden, Norm norm, double drop) {
  Sequential inner{Linear(dim, hidden), make_norm(norm, hidden), ReLU(),
                   Dropout(drop),       Linear(hidden, dim),     make_norm(norm, dim)};
  return Sequential{Residual(std::move(inner)), ReLU()};
}

MLPResNet::MLPResNet(int64_t dim, MLPResNetOptions o) {
  LOOM_CHECK(dim > 0 && o.hidden > 1 && o.blocks >= 0 && o.classes > 0,
             "MLPResNet: need dim > 0, hidden > 1, blocks >= 0, classes > 0; got dim ", dim, ", hidden ", o.hidden,
             ", blocks ", o.blocks, ", classes ", o.classes);
  push_back(Linear(dim, o.hidden));
  push_back(ReLU());
  for (int64_t i = 0; i < o.blocks; ++i) push_back(residual_block(o.hidden, o.hidden / 2, o.norm, o.dropout));
  push_back(Linear(o.hidden, o.classes));
}

// ---------------------------------------------------------------- losses and metrics

/// How labels index the logits' classes: along `axis` (the last, loom's
/// [..., C], or 1, PyTorch's [N, C, d1, ...]); `soft` for probability targets.
struct ClassLayout {
  int64_t axis;
  bool soft;
};

/// 2 when `y` equals `want` dim by dim (a dim unknown in both counts as equal), 1 when it
/// could (an unknown dim against a known one), 0 when it cannot.
static int shape_match(const Shape& y, const Shape& want) {
  if (y.size() != want.size()) return 0;
  int r = 2;
  for (size_t i = 0; i < y.size(); ++i) {
    if ((y[i] < 0) != (want[i] < 0))
      r = 1;
    else if (y[i] != want[i])
      return 0;
  }
  return r;
}

static ClassLayout class_layout(const char* what, const Tensor& logits, const Tensor& labels, bool soft_allowed) {
  LOOM_CHECK(logits.valid() && labels.valid(), what, ": empty Tensor handle");
  const Shape &l = logits.shape(), &y = labels.shape();
  LOOM_CHECK(is_floating(logits.dtype()), what, ": logits must be floating, got ", dtype_name(logits.dtype()));
  LOOM_CHECK(!l.empty(), what, ": logits '", logits.name(), "' must have a class dim, got a scalar");
  if (soft_allowed && is_floating(labels.dtype())) {  // PyTorch's class probabilities: the logits' shape, classes at 1
    LOOM_CHECK(labels.dtype() == logits.dtype() && shape_match(y, l), what, ": probability targets '", labels.name(),
               "' must be ", dtype_name(logits.dtype()), S(l), " like the logits, got ", dtype_name(labels.dtype()),
               S(y));
    const int64_t axis = l.size() == 1 ? 0 : 1;
    LOOM_CHECK(l[size_t(axis)] > 0, what, ": the class dim of ", S(l), " must be known");
    return {axis, true};
  }
  LOOM_CHECK(is_integral(labels.dtype()) && labels.dtype() != boolean, what, ": labels '", labels.name(),
             "' must be integers", soft_allowed ? " (or probabilities shaped as the logits)" : "", ", got ",
             dtype_name(labels.dtype()));
  Shape last(l.begin(), l.end() - 1), second = l;
  second.erase(second.begin() + (l.size() > 1 ? 1 : 0));
  const int by_last = shape_match(y, last), by_second = l.size() >= 3 ? shape_match(y, second) : 0;
  LOOM_CHECK(by_last || by_second, what, ": logits '", logits.name(), "' ", S(l), " need labels of shape ", S(last),
             l.size() >= 3 ? (std::string(" (classes last) or ") + shape_str(second) + " (classes at dim 1)") : "",
             ", got '", labels.name(), "' ", S(y));
  LOOM_CHECK(!(by_last == 2 && by_second == 2), what, ": logits ", S(l), " and labels ", S(y),
             " fit both classes at dim 1 (PyTorch's [N, C, d1, ...]) and classes last ([..., C]); reshape the logits "
             "to [rows, C] and the labels to [rows]");
  // Certain beats possible; between two possible matches, classes last.
  const int64_t axis = by_second > by_last ? 1 : int64_t(l.size()) - 1;
  LOOM_CHECK(l[size_t(axis)] > 0, what, ": the class dim of ", S(l), " must be known");
  return {axis, false};
}

/// x with `axis` moved last.
static Tensor classes_last(const Tensor& x, int64_t axis) {
  if (axis == x.ndim() - 1) return x;
  std::vector<int64_t> order;
  for (int64_t a = 0; a < x.ndim(); ++a)
    if (a != axis) order.push_back(a);
  order.push_back(axis);
  return permute(x, order);
}

/// Logits as [rows, C] and labels as [rows] (probabilities as [rows, C]), rows in the labels' order.
static std::pair<Tensor, Tensor> as_rows(const Tensor& logits, const Tensor& labels, const ClassLayout& c) {
  const Tensor l = classes_last(logits, c.axis);
  const Tensor y = c.soft ? classes_last(labels, c.axis) : labels;
  if (l.ndim() == 2) return {l, y};
  const int64_t C = l.shape().back();
  if (l.ndim() == 1) return {reshape(l, {1, C}), c.soft ? reshape(y, {1, C}) : reshape(y, {1})};
  return {reshape(l, {-1, C}), c.soft ? reshape(y, {-1, C}) : reshape(y, {-1})};
}

static void check_cross_entropy_options(const Tensor& logits, const ClassLayout& c, const CrossEntropyOptions& o) {
  const int64_t C = logits.shape()[size_t(c.axis)];
  LOOM_CHECK(o.label_smoothing >= 0 && o.label_smoothing <= 1, "cross_entropy: label_smoothing must be in [0, 1], got ",
             o.label_smoothing);
  check_reduction("cross_entropy", o.reduction);
  if (!o.weight.valid()) return;
  LOOM_CHECK(o.weight.shape() == Shape{C} && o.weight.dtype() == logits.dtype(), "cross_entropy: weight '",
             o.weight.name(), "' must be ", dtype_name(logits.dtype()), "[", C, "] (one per class), got ",
             dtype_name(o.weight.dtype()), S(o.weight.shape()));
}

namespace {

/// The label rows as the class-indexed losses use them (PyTorch's ignore_index and weight).
struct LabelRows {
  Tensor labels;     ///< an ignored row reads class 0
  Tensor kept_mask;  ///< bool per row, false where ignored; invalid when no label can be ignored
  Tensor weight;     ///< per row weight[label], 0 where ignored

  /// loss, 0 on ignored rows (not a product: an ignored row's loss may be infinite).
  Tensor zero_ignored(const Tensor& loss) const {
    return kept_mask.valid() ? where(kept_mask, loss, scalar_like(loss, 0.0)) : loss;
  }
};

LabelRows label_rows(const Tensor& y, const CrossEntropyOptions& o, DType t) {
  LabelRows r;
  // ignore_index matters only where the labels' dtype can hold it (not -100 in uint8).
  if (NDArray::scalar(double(o.ignore_index), y.dtype()).item() == double(o.ignore_index))
    r.kept_mask = y != double(o.ignore_index);
  r.labels = r.kept_mask.valid() ? where(r.kept_mask, y, scalar_like(y, 0.0)) : y;
  r.weight = r.zero_ignored(o.weight.valid() ? gather(o.weight, cast(r.labels, int64)) : full_like(y, 1.0, t));
  return r;
}

/// Per-row losses reduced as asked; `none` shaped as the labels, `mean` over the rows' weights.
Tensor reduce_rows(const Tensor& loss, const LabelRows& rows, Reduction r, const Tensor& labels) {
  if (r == Reduction::none) return reshape_like(loss, labels);
  if (r == Reduction::sum) return sum(loss);
  return sum(loss) / sum(rows.weight);  // all rows ignored: 0 / 0, NaN, as PyTorch
}

}  // namespace

/// PyTorch's formula for class probabilities t (label smoothing mixes in the
/// uniform distribution): -sum_c weight_c t_c log_softmax(z)_c per row; a mean
/// over the rows (not their weights).
static Tensor soft_cross_entropy(const Tensor& l, const Tensor& t, const CrossEntropyOptions& o, const Tensor& logits,
                                 const ClassLayout& c) {
  const double eps = o.label_smoothing, C = double(l.shape().back());
  const Tensor target = eps > 0 ? t * (1 - eps) + eps / C : t;
  const Tensor per_class = o.weight.valid() ? log_softmax(l, 1) * target * o.weight : log_softmax(l, 1) * target;
  const Tensor loss = -sum(per_class, {1});
  if (o.reduction == Reduction::sum) return sum(loss);
  if (o.reduction == Reduction::mean) return mean(loss);
  Shape s = logits.shape();  // none: the logits' shape without the class dim
  s.erase(s.begin() + c.axis);
  return reshape(loss, s);
}

/// PyTorch's formula: with row weights w_i = weight[y_i] (0 where ignored),
/// (1 - eps) sum_i w_i nll_i + eps / C sum_i [y_i kept] sum_c weight_c (lse_i - z_ic),
/// a mean dividing both sums by sum_i w_i.
Tensor cross_entropy(const Tensor& logits, const Tensor& labels, const CrossEntropyOptions& o) {
  const ClassLayout c = class_layout("cross_entropy", logits, labels, true);
  check_cross_entropy_options(logits, c, o);
  auto [l, y] = as_rows(logits, labels, c);
  if (c.soft) return soft_cross_entropy(l, y, o, logits, c);
  const LabelRows rows = label_rows(y, o, l.dtype());
  const std::vector<Tensor> nll_lse = sparse_softmax_cross_entropy(l, rows.labels);
  Tensor loss = rows.weight * nll_lse[0];
  if (o.label_smoothing > 0) {
    const Tensor lse = expand_dims(nll_lse[1], {1});
    const Tensor per_class = o.weight.valid() ? (lse - l) * o.weight : lse - l;
    const double eps = o.label_smoothing, C = double(l.shape().back());
    loss = (1 - eps) * loss + (eps / C) * sum(per_class, {1});
  }
  return reduce_rows(rows.zero_ignored(loss), rows, o.reduction, labels);
}

Tensor nll_loss(const Tensor& log_probs, const Tensor& labels, const CrossEntropyOptions& o) {
  const ClassLayout c = class_layout("nll_loss", log_probs, labels, false);
  check_cross_entropy_options(log_probs, c, o);
  LOOM_CHECK(o.label_smoothing == 0, "nll_loss: label_smoothing is cross_entropy's option, got ", o.label_smoothing);
  auto [l, y] = as_rows(log_probs, labels, c);
  const LabelRows rows = label_rows(y, o, l.dtype());
  // -log_probs[i, y_i] (one_hot refuses a label outside [0, C), naming it).
  // A select, not a product with the one-hot: 0 * -inf (a log-probability of 0) would be NaN.
  const Tensor picked = sum(where(one_hot(rows.labels, l.shape().back(), boolean), l, scalar_like(l, 0.0)), {1});
  return reduce_rows(rows.zero_ignored(-picked * rows.weight), rows, o.reduction, labels);
}

Tensor correct(const Tensor& logits, const Tensor& labels) {
  auto [l, y] = as_rows(logits, labels, class_layout("correct", logits, labels, false));
  Tensor pred = argmax(l, 1);
  Tensor target = y.dtype() == int64 ? y : cast(y, int64);
  return sum(cast(pred == target, float32));
}

Tensor accuracy(const Tensor& logits, const Tensor& labels) {
  return correct(logits, labels) / size(labels, {}, float32);
}

}  // namespace loom::nn
