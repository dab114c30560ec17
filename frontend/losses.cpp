// Element-wise, distance and margin losses and the distances they use, as
// PyTorch's torch.nn.functional: each a composite of ops, so gradients,
// every device and ONNX export come with them. (cross_entropy and nll_loss,
// which share label handling, are in nn.cpp.)

#include <cmath>
#include <numbers>

#include "frontend/nn.hpp"

namespace loom::nn {

namespace {

/// Input and target of an element-wise loss: same floating dtype, same shape (no silent broadcast).
void check_pair(const char* what, const Tensor& input, const Tensor& target, Reduction r, bool batchmean = false) {
  check_reduction(what, r, batchmean);
  LOOM_CHECK(input.valid() && target.valid(), what, ": empty Tensor handle");
  LOOM_CHECK(is_floating(input.dtype()) && input.dtype() == target.dtype(), what, ": input '", input.name(),
             "' and target '", target.name(), "' must share a floating dtype, got ", dtype_name(input.dtype()), " and ",
             dtype_name(target.dtype()));
  const Shape &a = input.shape(), &b = target.shape();
  bool same = a.size() == b.size();
  for (size_t i = 0; same && i < a.size(); ++i) same = a[i] == b[i] || a[i] < 0 || b[i] < 0;
  LOOM_CHECK(same, what, ": input '", input.name(), "' ", S(a), " and target '", target.name(), "' ", S(b),
             " differ in shape (broadcast one explicitly if that is meant)");
}

Tensor reduce_elements(const Tensor& loss, Reduction r) {
  if (r == Reduction::none) return loss;
  return r == Reduction::sum ? sum(loss) : mean(loss);
}

/// PyTorch's clamped log, max(log x, -100): finite at x = 0, its gradient too (log never sees the 0).
Tensor clamped_log(const Tensor& x) {
  const Tensor positive = x > 0.0, floor = scalar_like(x, -100.0);
  return maximum(where(positive, log(where(positive, x, scalar_like(x, 1.0))), floor), floor);
}

/// `w` (may be invalid: 1) as a factor of the element-wise loss, of its dtype.
Tensor weighted(const char* what, const Tensor& loss, const Tensor& w, const char* name) {
  if (!w.valid()) return loss;
  LOOM_CHECK(w.dtype() == loss.dtype(), what, ": ", name, " '", w.name(), "' must be ", dtype_name(loss.dtype()),
             ", got ", dtype_name(w.dtype()));
  return loss * w;  // broadcast as PyTorch's (the op names the shapes if they do not)
}

/// The p-norm of x over `axis` (p > 0 or infinity); its gradient at a zero vector is 0, as PyTorch's, not NaN.
Tensor p_norm(const char* what, const Tensor& x, double p, int64_t axis, bool keepdims) {
  LOOM_CHECK(p > 0, what, ": p must be positive, got ", p);
  const Tensor a = abs(x);
  if (std::isinf(p)) return max(a, {axis}, keepdims);
  if (p == 1) return sum(a, {axis}, keepdims);
  const Tensor s = p == 2 ? sum(x * x, {axis}, keepdims) : sum(pow(a, p), {axis}, keepdims);
  const Tensor live = s > 0.0, safe = where(live, s, 1.0);
  return where(live, p == 2 ? sqrt(safe) : pow(safe, 1.0 / p), 0.0);
}

/// max(x, floor) with x's own gradient everywhere (PyTorch clamps these under no_grad).
Tensor floored_keeping_gradient(const Tensor& x, double floor) { return x + stop_gradient(clamp(x, floor) - x); }

/// Checks a floating tensor handle.
void check_floating(const char* what, const char* name, const Tensor& t) {
  LOOM_CHECK(t.valid(), what, ": ", name, " is an empty Tensor handle");
  LOOM_CHECK(is_floating(t.dtype()), what, ": ", name, " '", t.name(), "' must be floating, got ",
             dtype_name(t.dtype()));
}

}  // namespace

Tensor mse_loss(const Tensor& input, const Tensor& target, Reduction reduction) {
  check_pair("mse_loss", input, target, reduction);
  const Tensor d = input - target;
  return reduce_elements(d * d, reduction);
}

Tensor l1_loss(const Tensor& input, const Tensor& target, Reduction reduction) {
  check_pair("l1_loss", input, target, reduction);
  return reduce_elements(abs(input - target), reduction);
}

Tensor smooth_l1_loss(const Tensor& input, const Tensor& target, double beta, Reduction reduction) {
  check_pair("smooth_l1_loss", input, target, reduction);
  LOOM_CHECK(beta >= 0 && std::isfinite(beta), "smooth_l1_loss: beta must be finite and >= 0, got ", beta);
  if (beta == 0) return l1_loss(input, target, reduction);  // (0.5 d^2 / 0 would put NaN into the gradient)
  const Tensor d = abs(input - target);
  return reduce_elements(where(d < beta, (0.5 / beta) * (d * d), d - 0.5 * beta), reduction);
}

Tensor huber_loss(const Tensor& input, const Tensor& target, double delta, Reduction reduction) {
  check_pair("huber_loss", input, target, reduction);
  LOOM_CHECK(delta > 0 && std::isfinite(delta), "huber_loss: delta must be finite and > 0, got ", delta);
  const Tensor d = abs(input - target);
  return reduce_elements(where(d < delta, 0.5 * (d * d), delta * (d - 0.5 * delta)), reduction);
}

Tensor binary_cross_entropy(const Tensor& probs, const Tensor& target, const BCEOptions& o) {
  check_pair("binary_cross_entropy", probs, target, o.reduction);
  LOOM_CHECK(!o.pos_weight.valid(), "binary_cross_entropy: pos_weight is binary_cross_entropy_with_logits' option");
  // A value outside [0, 1] (or NaN) is an error when run, as PyTorch's. PyTorch clamps each log
  // at -100, so that a probability of exactly 0 or 1 gives a finite loss.
  const Tensor p = check_range(probs, 0, 1, "probabilities");
  const Tensor loss = -(target * clamped_log(p) + (1.0 - target) * clamped_log(1.0 - p));
  return reduce_elements(weighted("binary_cross_entropy", loss, o.weight, "weight"), o.reduction);
}

/// PyTorch's stable form: (1 - y) x + (1 + (pos_weight - 1) y) softplus(-x).
Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& target, const BCEOptions& o) {
  const char* what = "binary_cross_entropy_with_logits";
  check_pair(what, logits, target, o.reduction);
  const Tensor log_weight =
      o.pos_weight.valid() ? 1.0 + weighted(what, target, o.pos_weight - 1.0, "pos_weight") : Tensor();
  const Tensor soft = softplus(-logits);
  const Tensor loss = (1.0 - target) * logits + (log_weight.valid() ? log_weight * soft : soft);
  return reduce_elements(weighted(what, loss, o.weight, "weight"), o.reduction);
}

void check_reduction(const char* what, Reduction r, bool batchmean_allowed) {
  LOOM_CHECK(
      r == Reduction::mean || r == Reduction::sum || r == Reduction::none ||
          (r == Reduction::batchmean && batchmean_allowed),
      what, ": ",
      r == Reduction::batchmean ? "batchmean is kl_div's reduction" : "unknown reduction " + std::to_string(int(r)),
      " (mean, sum or none)");
}

// ---------------------------------------------------------------- distances

Tensor normalize(const Tensor& x, double p, int64_t axis, double eps) {
  check_floating("normalize", "input", x);
  return x / clamp(p_norm("normalize", x, p, axis, true), eps);
}

Tensor cosine_similarity(const Tensor& x1, const Tensor& x2, int64_t axis, double eps) {
  check_floating("cosine_similarity", "x1", x1);
  check_floating("cosine_similarity", "x2", x2);
  const Tensor n1 = floored_keeping_gradient(p_norm("cosine_similarity", x1, 2, axis, true), eps);
  const Tensor n2 = floored_keeping_gradient(p_norm("cosine_similarity", x2, 2, axis, true), eps);
  return sum((x1 / n1) * (x2 / n2), {axis});
}

Tensor pairwise_distance(const Tensor& x1, const Tensor& x2, double p, double eps, bool keepdim) {
  check_floating("pairwise_distance", "x1", x1);
  check_floating("pairwise_distance", "x2", x2);
  return p_norm("pairwise_distance", x1 - x2 + eps, p, -1, keepdim);
}

// ---------------------------------------------------------------- divergences and likelihoods

Tensor kl_div(const Tensor& input, const Tensor& target, Reduction reduction, bool log_target) {
  check_pair("kl_div", input, target, reduction, true);
  Tensor loss;
  if (log_target) {
    loss = exp(target) * (target - input);
  } else {  // xlogy(t, t) - t * input: 0 where t is 0
    const Tensor zero = target == 0.0;
    loss = where(zero, 0.0, target * log(where(zero, 1.0, target))) - target * input;
  }
  if (reduction != Reduction::batchmean) return reduce_elements(loss, reduction);
  return input.ndim() == 0 ? sum(loss) : sum(loss) / size(input, {0}, input.dtype());
}

Tensor poisson_nll_loss(const Tensor& input, const Tensor& target, const PoissonNLLOptions& o) {
  check_pair("poisson_nll_loss", input, target, o.reduction);
  Tensor loss = o.log_input ? exp(input) - target * input : input - target * log(input + o.eps);
  if (o.full) {  // Stirling's approximation of log(target!), for targets above 1
    const Tensor big = target > 1.0, t = where(big, target, 1.0);
    loss = loss + where(big, t * log(t) - t + 0.5 * log((2 * std::numbers::pi) * t), 0.0);
  }
  return reduce_elements(loss, o.reduction);
}

Tensor gaussian_nll_loss(const Tensor& input, const Tensor& target, const Tensor& var, const GaussianNLLOptions& o) {
  const char* what = "gaussian_nll_loss";
  check_pair(what, input, target, o.reduction);
  check_floating(what, "var", var);
  LOOM_CHECK(var.dtype() == input.dtype(), what, ": var must be ", dtype_name(input.dtype()), ", got ",
             dtype_name(var.dtype()));
  LOOM_CHECK(o.eps > 0, what, ": eps must be positive, got ", o.eps);
  // PyTorch's shapes: var as input, or without its last dim (one variance per row), or with a last dim of 1.
  const Shape &x = input.shape(), &v = var.shape();
  const bool row = v.size() + 1 == x.size() && std::equal(v.begin(), v.end(), x.begin());
  const bool same_or_column = v.size() == x.size() && std::equal(v.begin(), v.end() - 1, x.begin()) &&
                              (v.empty() || v.back() == x.back() || v.back() == 1);
  LOOM_CHECK(row || same_or_column, what, ": var ", S(v), " must be shaped as input ", S(x),
             ", as it without its last dim, or with a last dim of 1");
  // A negative variance is an error when run, as PyTorch's; a NaN passes (PyTorch checks var < 0).
  const Tensor checked = check_range(var, 0, INFINITY, "variances", true);
  const Tensor variance = floored_keeping_gradient(row ? expand_dims(checked, {-1}) : checked, o.eps);
  const Tensor d = input - target;
  Tensor loss = 0.5 * (log(variance) + d * d / variance);
  if (o.full) loss = loss + 0.5 * std::log(2 * std::numbers::pi);
  return reduce_elements(loss, o.reduction);
}

// ---------------------------------------------------------------- margin losses

Tensor margin_ranking_loss(const Tensor& x1, const Tensor& x2, const Tensor& y, double margin, Reduction reduction) {
  check_pair("margin_ranking_loss", x1, x2, reduction);
  check_pair("margin_ranking_loss", x1, y, reduction);
  return reduce_elements(relu(-y * (x1 - x2) + margin), reduction);
}

Tensor hinge_embedding_loss(const Tensor& x, const Tensor& y, double margin, Reduction reduction) {
  check_pair("hinge_embedding_loss", x, y, reduction);
  // x where y is 1, max(0, margin - x) where y is -1 (PyTorch's: both for any other y).
  return reduce_elements(where(y != 1.0, relu(margin - x), 0.0) + where(y != -1.0, x, 0.0), reduction);
}

Tensor soft_margin_loss(const Tensor& x, const Tensor& y, Reduction reduction) {
  check_pair("soft_margin_loss", x, y, reduction);
  return reduce_elements(softplus(-(x * y)), reduction);  // log(1 + exp(-x y)), without overflow
}

Tensor multilabel_soft_margin_loss(const Tensor& x, const Tensor& y, const Tensor& weight, Reduction reduction) {
  const char* what = "multilabel_soft_margin_loss";
  check_pair(what, x, y, reduction);
  LOOM_CHECK(x.ndim() >= 1 && x.shape().back() >= 0, what, ": expected input [..., C] with C known, got ",
             S(x.shape()));
  // -(y log sigmoid(x) + (1 - y) log sigmoid(-x)), with log sigmoid(z) = -softplus(-z); the mean over the classes.
  const Tensor loss = weighted(what, y * softplus(-x) + (1.0 - y) * softplus(x), weight, "weight");
  return reduce_elements(sum(loss, {-1}) / double(x.shape().back()), reduction);
}

Tensor multilabel_margin_loss(const Tensor& x, const Tensor& y, Reduction reduction) {
  const char* what = "multilabel_margin_loss";
  check_reduction(what, reduction);
  check_floating(what, "input", x);
  LOOM_CHECK((x.ndim() == 1 || x.ndim() == 2) && x.shape().back() > 0, what,
             ": expected input [N, C] or [C] with C known, got ", S(x.shape()));
  LOOM_CHECK(y.valid() && is_integral(y.dtype()) && y.dtype() != boolean && y.ndim() == x.ndim(), what,
             ": targets must be integers shaped as the input ", S(x.shape()), ", got ",
             y.valid() ? dtype_name(y.dtype()) : "none");
  const int64_t C = x.shape().back();
  const DType dt = x.dtype();
  // Position j holds a target while no negative entry came at or before it: a count by a triangular product.
  std::vector<double> upper(size_t(C * C), 0.0);
  for (int64_t k = 0; k < C; ++k)
    for (int64_t j = k; j < C; ++j) upper[size_t(k * C + j)] = 1;
  const Tensor ended = matmul(cast(y < 0.0, dt), x.graph().constant(NDArray::from<double>(upper, {C, C}).astype(dt)));
  const Tensor valid = ended == 0.0;  // [.., C]: target slot j
  const Tensor slot = where(valid, cast(y, int64), int64_t(0));
  const Tensor picks = where(expand_dims(valid, {-1}), one_hot(slot, C, dt), 0.0);         // [.., j, class]
  const Tensor is_target = sum(picks, {-2}) > 0.0;                                         // [.., class]
  const Tensor at_target = sum(picks * expand_dims(x, {-2}), {-1});                        // [.., j]: x[y_j]
  const Tensor margins = relu(1.0 - expand_dims(at_target, {-1}) + expand_dims(x, {-2}));  // [.., j, i]
  const Tensor counted = logical_and(expand_dims(valid, {-1}), expand_dims(logical_not(is_target), {-2}));
  return reduce_elements(sum(where(counted, margins, 0.0), {-2, -1}) / double(C), reduction);
}

Tensor cosine_embedding_loss(const Tensor& x1, const Tensor& x2, const Tensor& y, double margin, Reduction reduction) {
  const char* what = "cosine_embedding_loss";
  check_pair(what, x1, x2, reduction);
  LOOM_CHECK(x1.ndim() == 1 || x1.ndim() == 2, what, ": expected inputs [N, D] or [D], got ", S(x1.shape()));
  check_floating(what, "y", y);
  LOOM_CHECK(y.ndim() == x1.ndim() - 1, what, ": y must be ", x1.ndim() == 2 ? "[N]" : "a scalar", " for inputs ",
             S(x1.shape()), ", got ", S(y.shape()));
  // PyTorch's form: x1.x2 / sqrt((|x1|^2 + 1e-12)(|x2|^2 + 1e-12)).
  const int64_t d = x1.ndim() - 1;
  const Tensor cos = sum(x1 * x2, {d}) / sqrt((sum(x1 * x1, {d}) + 1e-12) * (sum(x2 * x2, {d}) + 1e-12));
  return reduce_elements(where(y == 1.0, 1.0 - cos, 0.0) + where(y == -1.0, relu(cos - margin), 0.0), reduction);
}

Tensor triplet_margin_loss(const Tensor& anchor, const Tensor& positive, const Tensor& negative,
                           const TripletMarginOptions& o) {
  const char* what = "triplet_margin_loss";
  check_pair(what, anchor, positive, o.reduction);
  check_pair(what, anchor, negative, o.reduction);
  LOOM_CHECK(anchor.ndim() == 1 || anchor.ndim() == 2, what, ": expected inputs [N, D] or [D], got ",
             S(anchor.shape()));
  const Tensor to_positive = pairwise_distance(anchor, positive, o.p, o.eps);
  Tensor to_negative = pairwise_distance(anchor, negative, o.p, o.eps);
  if (o.swap) to_negative = minimum(to_negative, pairwise_distance(positive, negative, o.p, o.eps));
  return reduce_elements(relu(o.margin + to_positive - to_negative), o.reduction);
}

Tensor multi_margin_loss(const Tensor& x, const Tensor& labels, const MultiMarginOptions& o) {
  const char* what = "multi_margin_loss";
  check_reduction(what, o.reduction);
  check_floating(what, "input", x);
  LOOM_CHECK(o.p == 1 || o.p == 2, what, ": p must be 1 or 2, got ", o.p);
  LOOM_CHECK((x.ndim() == 2 || x.ndim() == 1) && x.shape().back() >= 0, what,
             ": expected input [N, C] or [C] with C known, got ", S(x.shape()));
  LOOM_CHECK(labels.valid(), what, ": labels is an empty Tensor handle");
  LOOM_CHECK(is_integral(labels.dtype()) && labels.dtype() != boolean && labels.ndim() == x.ndim() - 1, what,
             ": labels must be integers shaped ", x.ndim() == 2 ? "[N]" : "[] (a scalar)", ", got ",
             dtype_name(labels.dtype()), S(labels.shape()));
  const int64_t C = x.shape().back();
  // One-hot of the labels (a label outside [0, C) raises an error naming it when run).
  const Tensor is_label = one_hot(labels, C, boolean);
  const Tensor at_label = sum(where(is_label, x, 0.0), {-1}, true);
  Tensor z = relu(o.margin - at_label + x);
  if (o.p == 2) z = z * z;
  z = where(is_label, 0.0, z);
  if (o.weight.valid()) {
    LOOM_CHECK(o.weight.dtype() == x.dtype() && o.weight.shape() == Shape{C}, what, ": weight must be ",
               dtype_name(x.dtype()), "[", C, "], got ", dtype_name(o.weight.dtype()), S(o.weight.shape()));
    z = z * sum(where(is_label, o.weight, 0.0), {-1}, true);  // the label's weight
  }
  return reduce_elements(sum(z, {-1}) / double(C), o.reduction);
}

// ---------------------------------------------------------------- CTC

namespace {

/// An integer tensor [N] checked when run to lie in [0, high] (as float64), named for the error.
Tensor checked_lengths(const char* what, const char* name, const Tensor& t, const Tensor& like_n, int64_t high) {
  LOOM_CHECK(t.valid(), what, ": ", name, " is an empty Tensor handle");
  LOOM_CHECK(is_integral(t.dtype()) && t.dtype() != boolean && t.ndim() == 1, what, ": ", name,
             " must be integers [N], got ", dtype_name(t.dtype()), S(t.shape()));
  LOOM_CHECK(t.shape()[0] < 0 || like_n.shape()[0] < 0 || t.shape()[0] == like_n.shape()[0], what, ": ", name, " ",
             S(t.shape()), " for a batch of ", like_n.shape()[0]);
  const Tensor checked =
      check_range(cast(t, float64), 0, double(high), std::string(name) + " in [0, " + std::to_string(high) + "]");
  return reshape(cast(checked, int64), {-1, 1});  // [N, 1]
}

/// A constant row [1, n] of 0, 1, ..., n - 1.
Tensor positions(Graph& g, int64_t n) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = i;
  return g.constant(NDArray::from<int64_t>(v, {1, n}));
}

}  // namespace

Tensor ctc_loss(const Tensor& log_probs, const Tensor& targets, const Tensor& input_lengths,
                const Tensor& target_lengths, const CTCLossOptions& o) {
  const char* what = "ctc_loss";
  check_reduction(what, o.reduction);
  check_floating(what, "log_probs", log_probs);
  const Shape& ls = log_probs.shape();
  LOOM_CHECK(ls.size() == 3 && ls[0] > 0 && ls[2] > 0, what, ": expected log_probs [T, N, C] with T and C known, got ",
             S(ls));
  LOOM_CHECK(targets.valid(), what, ": targets is an empty Tensor handle");
  LOOM_CHECK(
      is_integral(targets.dtype()) && targets.dtype() != boolean && targets.ndim() == 2 && targets.shape()[1] >= 0,
      what, ": targets must be integers [N, S] with S known, got ", dtype_name(targets.dtype()), S(targets.shape()));
  const int64_t T = ls[0], C = ls[2], L = targets.shape()[1], E = 2 * L + 1;
  LOOM_CHECK(L > 0, what, ": targets need at least one column (pad empty targets to [N, 1]), got ", S(targets.shape()));
  LOOM_CHECK(o.blank >= 0 && o.blank < C, what, ": blank ", o.blank, " out of range for ", C, " classes");
  Graph& g = log_probs.graph();
  const DType dt = log_probs.dtype();
  const Tensor batch = slice(targets, {Slice::all(), Slice::range(0, 0)});  // [N, 0]: the batch size
  const Tensor in_len = checked_lengths(what, "input_lengths", input_lengths, batch, T);
  const Tensor tgt_len = checked_lengths(what, "target_lengths", target_lengths, batch, L);
  // The labels interleaved with blanks, [N, 2S + 1]: blank, y1, blank, y2, ..., blank; padding read as blank.
  const Tensor labels = where(positions(g, L) < tgt_len, cast(targets, int64), o.blank);
  const Tensor blanks = full_like(labels, double(o.blank), int64);
  const Tensor ext =
      concat({reshape(stack({blanks, labels}, 2), {-1, 2 * L}), slice(blanks, {Slice::all(), Slice::range(0, 1)})}, 1);
  // Each step's log-probability of every extended label: [N, T, E] by one batched product with the one-hot labels.
  const Tensor emit = matmul(permute(log_probs, {1, 0, 2}), transpose(one_hot(ext, C, dt), 1, 2));
  const std::vector<Tensor> steps = split(emit, T, 1);
  auto at = [&](int64_t t) { return reshape(steps[size_t(t)], {-1, E}); };
  // A label may follow the one two back (skipping the blank between) unless it is a blank or repeats it.
  const Tensor two_back = concat(
      {slice(blanks, {Slice::all(), Slice::range(0, 2)}), slice(ext, {Slice::all(), Slice::range(0, E - 2)})}, 1);
  const Tensor skip = logical_and(ext != double(o.blank), ext != two_back);
  constexpr double kUnreachable = -1e30;
  const Tensor none = full_like(at(0), kUnreachable, dt);
  const Tensor s = positions(g, E);
  // t = 0: the first blank or the first label; an empty input is the empty alignment (log 1 at s = 0).
  Tensor alpha = where(s < 2, at(0), none);
  alpha = where(in_len > 0, alpha, where(s == 0, zeros_like(alpha), none));
  auto shifted = [&](const Tensor& a, int64_t k) {
    if (E <= k) return none;
    return concat({slice(none, {Slice::all(), Slice::range(0, k)}), slice(a, {Slice::all(), Slice::range(0, E - k)})},
                  1);
  };
  for (int64_t t = 1; t < T; ++t) {
    const Tensor from = stack({alpha, shifted(alpha, 1), where(skip, shifted(alpha, 2), none)}, 2);
    alpha = where(in_len > t, logsumexp(from, {2}) + at(t), alpha);  // past its input a sample keeps its alpha
  }
  // The alignments end on the last label or the blank after it.
  const Tensor end = logical_or(s == tgt_len * int64_t(2), s == tgt_len * int64_t(2) - int64_t(1));
  Tensor loss = -logsumexp(where(end, alpha, none), {1});  // [N]
  const Tensor impossible = loss > 1e29;
  loss = where(impossible, full_like(loss, o.zero_infinity ? 0.0 : INFINITY, dt), loss);
  if (o.reduction == Reduction::mean)
    return mean(loss / maximum(cast(reshape(tgt_len, {-1}), dt), scalar_like(loss, 1.0)));
  return reduce_elements(loss, o.reduction);
}

}  // namespace loom::nn
