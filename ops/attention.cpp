// Scaled dot-product attention as one fused op, its backward op, random_key
// (the Philox stream its dropout replays), and the composite attention that
// stays as the reference.
//
// attention(q, k, v, [mask], [rng]) -> (out, lse)
//   q [..., Tq, D], k [..., Tk, D], v [..., Tk, Dv] with equal leading dims;
//   out [..., Tq, Dv]; lse [..., Tq] is the log of each row's softmax
//   denominator, log sum_j exp(s_ij) with s = q k^T * scale + mask (-inf where
//   masked), which the backward uses to recompute the weights tile by tile.
//   Attributes: scale (double), causal (bool: j <= i), dropout (double),
//   mask (bool: a mask input follows v). With dropout > 0 the last input is
//   an int64 [2] Philox key (random_key): weight (i, j) of batch b is kept
//   when philox::uniform_f32(key, run, (b * Tq + i) * Tk + j) >= dropout, on
//   every device. A row whose keys are all masked gives out = 0, lse = -inf.
// attention_grad(q, k, v, out, lse, dout, [dlse], [mask], [rng]) -> (dq, dk, dv)
//   the same attributes plus dlse (bool: the gradient of lse is an input).
//   With P = exp(s - lse), P' = P * keep / (1 - dropout) and
//   D_i = dout_i . out_i - dlse_i:  dv = P'^T dout, dS = P' * (dout v^T) - P * D,
//   dq = scale dS k, dk = scale dS^T q. A float mask's gradient is dS, from
//   the composite form (with dropout, attention_keep gives it keep / (1 - p)).
// attention_keep(rng, scores) -> keep / (1 - dropout) shaped as scores
//   [..., Tq, Tk] (read for its shape): the dropout factors attention drew.

#include <cmath>
#include <limits>

#include "core/philox.hpp"
#include "ops/common.hpp"
#include "ops/ops.hpp"

namespace loom {

using detail::rand_array;

namespace {

Graph& G(const Tensor& t) { return t.graph(); }

// ---------------------------------------------------------------- inputs and shapes

/// Where the optional inputs sit: after q, k, v (forward) or after q, k, v,
/// out, lse, dout (backward): dlse, then mask, then rng; -1 when absent.
struct Slots {
  int dlse = -1, mask = -1, rng = -1, count = 0;
};
Slots slots_of(const Attrs& a, bool backward) {
  Slots s;
  int i = backward ? 6 : 3;
  if (backward && a.get_or<bool>("dlse", false)) s.dlse = i++;
  if (a.get_or<bool>("mask", false)) s.mask = i++;
  if (a.get_or<double>("dropout", 0.0) > 0) s.rng = i++;
  s.count = i;
  return s;
}

bool dim_eq(int64_t a, int64_t b) { return a == b || a < 0 || b < 0; }

Shape batch_of(const Shape& s) { return Shape(s.begin(), s.end() - 2); }

/// Checks q, k, v, mask and rng; returns the shape of out.
Shape check_attention(const InferContext& c, const Slots& sl) {
  const TensorType &q = c.in[0], &k = c.in[1], &v = c.in[2];
  c.check(is_floating(q.dtype), "q has dtype ", dtype_name(q.dtype), " (float32 or float64 expected)");
  c.check(k.dtype == q.dtype && v.dtype == q.dtype, "q, k, v must have one dtype, got ", dtype_name(q.dtype), ", ",
          dtype_name(k.dtype), ", ", dtype_name(v.dtype));
  const size_t nd = q.shape.size();
  c.check(nd >= 2 && k.shape.size() == nd && v.shape.size() == nd, "q ", S(q.shape), ", k ", S(k.shape), ", v ",
          S(v.shape), " must be [..., T, D] with the same number of dims (at least 2)");
  for (size_t d = 0; d + 2 < nd; ++d)
    c.check(dim_eq(q.shape[d], k.shape[d]) && dim_eq(q.shape[d], v.shape[d]), "q ", S(q.shape), ", k ", S(k.shape),
            ", v ", S(v.shape), " differ in leading dim ", d);
  const int64_t tq = q.shape[nd - 2], tk = k.shape[nd - 2];
  c.check(dim_eq(tk, v.shape[nd - 2]), "k ", S(k.shape), " and v ", S(v.shape), " have different lengths (", tk,
          " vs ", v.shape[nd - 2], ")");
  c.check(dim_eq(q.shape[nd - 1], k.shape[nd - 1]), "q ", S(q.shape), " and k ", S(k.shape),
          " have different head dims (", q.shape[nd - 1], " vs ", k.shape[nd - 1], ")");
  const double p = c.attrs.get_or<double>("dropout", 0.0);
  c.check(p >= 0 && p < 1, "dropout must be in [0, 1), got ", p);
  const double scale = c.attrs.get_or<double>("scale", 1.0);
  c.check(std::isfinite(scale), "scale must be finite, got ", scale);
  if (sl.mask >= 0) {
    const TensorType& m = c.in[size_t(sl.mask)];
    c.check(m.dtype == boolean || m.dtype == q.dtype, "mask has dtype ", dtype_name(m.dtype), " (bool or ",
            dtype_name(q.dtype), " expected)");
    Shape scores = batch_of(q.shape);
    scores.push_back(tq);
    scores.push_back(tk);
    bool ok = m.shape.size() <= scores.size();
    for (size_t i = 0; ok && i < m.shape.size(); ++i) {
      const int64_t a = m.shape[i], b = scores[scores.size() - m.shape.size() + i];
      ok = a == 1 || dim_eq(a, b);
    }
    c.check(ok, "mask ", S(m.shape), " does not broadcast to the scores ", S(scores), " (q ", S(q.shape), ", k ",
            S(k.shape), ")");
  }
  if (sl.rng >= 0) {
    const TensorType& r = c.in[size_t(sl.rng)];
    c.check(r.dtype == int64 && r.shape == Shape{2}, "the dropout key must be int64 [2] (random_key), got ",
            dtype_name(r.dtype), S(r.shape));
  }
  Shape out = batch_of(q.shape);
  out.push_back(tq);
  out.push_back(v.shape[nd - 1]);
  return out;
}

// ---------------------------------------------------------------- reference (double, plain loops)

/// Attention's inputs on the host in double, addressed as [b, i, d].
struct RefIn {
  int64_t batch = 1, tq = 0, tk = 0, dk = 0, dv = 0;
  NDArray q, k, v, mask;  // mask broadcast to [batch..., Tq, Tk] as double: 0 or -inf (bool) / added (float)
  double scale = 1, p = 0;
  bool causal = false, bool_mask = false;
  uint64_t key = 0, run = 0;
  double at(const NDArray& a, int64_t b, int64_t i, int64_t d, int64_t cols, int64_t rows) const {
    return a.data<double>()[(b * rows + i) * cols + d];
  }
  /// Scaled, masked score s_ij of batch b.
  double score(int64_t b, int64_t i, int64_t j) const {
    double s = 0;
    for (int64_t d = 0; d < dk; ++d) s += at(q, b, i, d, dk, tq) * at(k, b, j, d, dk, tk);
    s *= scale;
    if (mask.defined()) {
      const double m = mask.data<double>()[(b * tq + i) * tk + j];
      s = bool_mask && m == -INFINITY ? m : s + m;  // a bool mask selects (as PyTorch's masked_fill): NaN too
    }
    if (causal && j > i) s = -INFINITY;
    return s;
  }
  /// keep / (1 - p) for weight (i, j) of batch b.
  double keep(int64_t b, int64_t i, int64_t j) const {
    if (p == 0) return 1;
    const uint64_t idx = uint64_t((b * tq + i) * tk + j);
    return philox::uniform_f32(key, run, idx) >= float(p) ? 1 / (1 - p) : 0;
  }
};

RefIn ref_inputs(std::span<const NDArray> in, const Attrs& a, const Slots& sl) {
  RefIn r;
  const Shape& qs = in[0].shape();
  const size_t nd = qs.size();
  r.batch = numel(batch_of(qs));
  r.tq = qs[nd - 2], r.dk = qs[nd - 1], r.tk = in[1].shape()[nd - 2], r.dv = in[2].shape()[nd - 1];
  r.q = in[0].astype(float64).compact(), r.k = in[1].astype(float64).compact(), r.v = in[2].astype(float64).compact();
  r.scale = a.f("scale"), r.causal = a.get_or<bool>("causal", false), r.p = a.get_or<double>("dropout", 0.0);
  if (sl.mask >= 0) {
    Shape full = batch_of(qs);
    full.push_back(r.tq);
    full.push_back(r.tk);
    const NDArray& m = in[size_t(sl.mask)];
    NDArray md = m.astype(float64);
    if (m.dtype() == boolean) {
      r.bool_mask = true;
      double* p = md.data<double>();
      for (int64_t i = 0; i < md.numel(); ++i) p[i] = p[i] != 0 ? 0.0 : -INFINITY;
    }
    Shape ms = m.shape();
    while (ms.size() < full.size()) ms.insert(ms.begin(), 1);
    r.mask = md.reshape(ms).broadcast_to(full).compact();
  }
  if (sl.rng >= 0) {
    NDArray k = in[size_t(sl.rng)].compact();
    r.key = uint64_t(k.data<int64_t>()[0]), r.run = uint64_t(k.data<int64_t>()[1]);
  }
  return r;
}

std::vector<NDArray> ref_attention(std::span<const NDArray> in, const Attrs& a) {
  const RefIn r = ref_inputs(in, a, slots_of(a, false));
  Shape os = batch_of(in[0].shape()), ls = os;
  os.push_back(r.tq), os.push_back(r.dv), ls.push_back(r.tq);
  NDArray out = NDArray::zeros(os, float64), lse = NDArray::empty(ls, float64);
  std::vector<double> s(size_t(r.tk));
  for (int64_t b = 0; b < r.batch; ++b)
    for (int64_t i = 0; i < r.tq; ++i) {
      double m = -INFINITY;
      for (int64_t j = 0; j < r.tk; ++j) {
        s[size_t(j)] = r.score(b, i, j);
        m = std::isnan(s[size_t(j)]) || std::isnan(m) ? NAN : std::max(m, s[size_t(j)]);
      }
      double* l = lse.data<double>() + b * r.tq + i;
      if (m == -INFINITY) {  // every key masked: zeros
        *l = -INFINITY;
        continue;
      }
      double sum = 0;
      for (int64_t j = 0; j < r.tk; ++j) sum += std::exp(s[size_t(j)] - m);
      *l = m + std::log(sum);
      double* o = out.data<double>() + (b * r.tq + i) * r.dv;
      for (int64_t j = 0; j < r.tk; ++j) {
        const double w = std::exp(s[size_t(j)] - m) / sum * r.keep(b, i, j);
        for (int64_t d = 0; d < r.dv; ++d) o[d] += w * r.at(r.v, b, j, d, r.dv, r.tk);
      }
    }
  return {out.astype(in[0].dtype()), lse.astype(in[0].dtype())};
}

std::vector<NDArray> ref_attention_grad(std::span<const NDArray> in, const Attrs& a) {
  const Slots sl = slots_of(a, true);
  const RefIn r = ref_inputs(in, a, sl);
  NDArray out = in[3].astype(float64).compact(), lse = in[4].astype(float64).compact();
  NDArray dout = in[5].astype(float64).compact();
  NDArray dlse = sl.dlse >= 0 ? in[size_t(sl.dlse)].astype(float64).compact() : NDArray();
  NDArray dq = NDArray::zeros(in[0].shape(), float64), dk = NDArray::zeros(in[1].shape(), float64),
          dv = NDArray::zeros(in[2].shape(), float64);
  double *pq = dq.data<double>(), *pk = dk.data<double>(), *pv = dv.data<double>();
  for (int64_t b = 0; b < r.batch; ++b)
    for (int64_t i = 0; i < r.tq; ++i) {
      const double l = lse.data<double>()[b * r.tq + i];
      double D = dlse.defined() ? -dlse.data<double>()[b * r.tq + i] : 0.0;
      for (int64_t d = 0; d < r.dv; ++d) D += r.at(dout, b, i, d, r.dv, r.tq) * r.at(out, b, i, d, r.dv, r.tq);
      for (int64_t j = 0; j < r.tk; ++j) {
        const double p = l == -INFINITY ? 0.0 : std::exp(r.score(b, i, j) - l), z = r.keep(b, i, j);
        double dp = 0;
        for (int64_t d = 0; d < r.dv; ++d) {
          const double g = r.at(dout, b, i, d, r.dv, r.tq);
          pv[(b * r.tk + j) * r.dv + d] += p * z * g;
          dp += g * r.at(r.v, b, j, d, r.dv, r.tk);
        }
        const double ds = p * z * dp - p * D;
        for (int64_t d = 0; d < r.dk; ++d) {
          pq[(b * r.tq + i) * r.dk + d] += r.scale * ds * r.at(r.k, b, j, d, r.dk, r.tk);
          pk[(b * r.tk + j) * r.dk + d] += r.scale * ds * r.at(r.q, b, i, d, r.dk, r.tq);
        }
      }
    }
  const DType t = in[0].dtype();
  return {dq.astype(t), dk.astype(t), dv.astype(t)};
}

// ---------------------------------------------------------------- examples

struct ExampleSpec {
  std::string label;
  Shape q, k, v;
  bool causal = false;
  NDArray mask = {};
  double dropout = 0;
  double scale = 0;  // 0: 1/sqrt(D)
  bool check_grad = true;  // false: lse = -inf in the loss makes central differences NaN
};

/// A bool mask [tq, tk] with row `empty` fully masked and a sprinkle of others.
NDArray bool_mask(int64_t tq, int64_t tk, int64_t empty, uint64_t seed) {
  NDArray m = NDArray::empty({tq, tk}, boolean);
  for (int64_t i = 0; i < tq; ++i)
    for (int64_t j = 0; j < tk; ++j)
      m.data<bool>()[i * tk + j] = i != empty && philox::uniform_f64(seed, 0, uint64_t(i * tk + j)) > 0.3;
  return m;
}

/// The dropout key inputs of the examples: fixed, so that the weights kept are the same in every run.
NDArray fixed_key(int64_t key, int64_t run) {
  NDArray k = NDArray::empty({2}, int64);
  k.data<int64_t>()[0] = key, k.data<int64_t>()[1] = run;
  return k;
}

std::vector<ExampleSpec> example_specs(uint64_t seed) {
  return {{"one head, odd lengths", {1, 5, 3}, {1, 7, 3}, {1, 7, 4}},
          {"heads, causal", {2, 3, 6, 4}, {2, 3, 6, 4}, {2, 3, 6, 4}, true},
          {"causal, Tq < Tk", {2, 5, 3}, {2, 9, 3}, {2, 9, 2}, true},
          {"no batch dims, scale", {5, 3}, {4, 3}, {4, 2}, false, {}, 0, 0.7},
          {"bool mask", {2, 2, 6, 3}, {2, 2, 6, 3}, {2, 2, 6, 3}, false, bool_mask(6, 6, -1, seed)},
          {"bool mask, a row fully masked", {1, 2, 5, 3}, {1, 2, 6, 3}, {1, 2, 6, 3}, false, bool_mask(5, 6, 2, seed), 0, 0,
           false},
          {"float mask broadcast over rows", {2, 5, 3}, {2, 7, 3}, {2, 7, 3}, false,
           rand_array({1, 7}, -1, 1, seed + 1)},
          {"dropout", {2, 5, 3}, {2, 8, 3}, {2, 8, 2}, false, {}, 0.3},
          {"several tiles, causal", {1, 150, 2}, {1, 150, 2}, {1, 150, 2}, true}};
}

double default_scale(const ExampleSpec& s) { return s.scale != 0 ? s.scale : 1 / std::sqrt(double(s.q.back())); }

Attrs spec_attrs(const ExampleSpec& s) {
  return {{"scale", default_scale(s)}, {"causal", s.causal}, {"dropout", s.dropout}, {"mask", s.mask.defined()}};
}

std::vector<OpExample> attention_examples(uint64_t seed) {
  std::vector<OpExample> ex;
  for (const ExampleSpec& s : example_specs(seed)) {
    OpExample e{s.label, {rand_array(s.q, -1, 1, seed), rand_array(s.k, -1, 1, seed + 1), rand_array(s.v, -1, 1, seed + 2)},
                spec_attrs(s), {0, 1, 2}, s.check_grad};
    if (s.mask.defined()) e.inputs.push_back(s.mask);
    if (s.dropout > 0) e.inputs.push_back(fixed_key(int64_t(seed) * 7919, 3));
    seed += 3;
    ex.push_back(std::move(e));
  }
  return ex;
}

std::vector<OpExample> attention_grad_examples(uint64_t seed) {
  std::vector<OpExample> ex;
  for (const OpExample& f : attention_examples(seed)) {
    const Slots sl = slots_of(f.attrs, false);
    std::vector<NDArray> fo = ref_attention(f.inputs, f.attrs);
    OpExample e{f.label, {f.inputs[0], f.inputs[1], f.inputs[2], fo[0], fo[1], rand_array(fo[0].shape(), -1, 1, seed),
                          rand_array(fo[1].shape(), -1, 1, seed + 1)},
                f.attrs, {0, 1, 2, 3, 4, 5, 6}};
    e.attrs.set("dlse", true);
    if (sl.mask >= 0) e.inputs.push_back(f.inputs[size_t(sl.mask)]);
    if (sl.rng >= 0) e.inputs.push_back(f.inputs[size_t(sl.rng)]);
    // Second derivatives exist without dropout; the long example is too slow to difference.
    e.check_grad = sl.rng < 0 && f.inputs[0].numel() < 200;
    seed += 2;
    ex.push_back(std::move(e));
  }
  return ex;
}

// ---------------------------------------------------------------- the composite backward (second derivatives)

/// The scores' additive mask from the op's mask input and causal flag ({} when neither).
Tensor score_mask(const Tensor& s, const Tensor& mask, bool causal);

/// attention_grad written with graph ops, [Tq, Tk] materialized: its
/// gradients are attention_grad's second derivatives (no dropout). Returns
/// dq, dk, dv and the scores' gradient ds (a float mask's, before reduction).
std::vector<Tensor> composite_attention_grad(const std::vector<Tensor>& in, const Attrs& a, const Slots& sl) {
  const Tensor &q = in[0], &k = in[1], &v = in[2], &out = in[3], &lse = in[4], &dout = in[5];
  const double scale = a.f("scale");
  Tensor s = matmul(q, transpose(k)) * scale;
  Tensor add = score_mask(s, sl.mask >= 0 ? in[size_t(sl.mask)] : Tensor(), a.get_or<bool>("causal", false));
  if (add.valid()) s = s + add;
  Tensor l = expand_dims(lse, {-1});
  Tensor live = l > -INFINITY;  // false for a row with every key masked
  Tensor p = where(live, exp(s - where(live, l, 0.0)), 0.0);  // the safe branch keeps gradients finite
  Tensor D = sum(dout * out, {-1}, true);
  if (sl.dlse >= 0) D = D - expand_dims(in[size_t(sl.dlse)], {-1});
  // With dropout, P' = P * keep / (1 - p): the factors the forward drew, replayed.
  const double drop = a.get_or<double>("dropout", 0.0);
  Tensor kept = p;
  if (sl.rng >= 0 && drop > 0) kept = p * G(q).add1("attention_keep", {in[size_t(sl.rng)], s}, {{"dropout", drop}});
  Tensor dv = matmul(transpose(kept), dout);
  Tensor ds = kept * matmul(dout, transpose(v)) - p * D;
  return {matmul(ds, k) * scale, matmul(transpose(ds), q) * scale, dv, ds};
}

/// A float mask's gradient: the scores' (a learned attention bias trains).
/// Recomputed with [Tq, Tk] materialized, only when a gradient asks for it
/// (the plan drops it otherwise); `ins` are attention_grad's inputs.
Tensor float_mask_grad(const std::vector<Tensor>& ins, const Attrs& a) {
  return composite_attention_grad(ins, a, slots_of(a, true))[3];
}

std::vector<Tensor> attention_grad_grad(const GradContext& c) {
  const Slots sl = slots_of(c.attrs, true);
  LOOM_CHECK(sl.rng < 0, "attention_grad '", c.node.name,
             "': second derivatives of attention with dropout are not supported");
  // Fresh leaves: out, lse and dout are themselves functions of q, k, v in
  // the graph, and each input's partial derivative must not follow them.
  std::vector<Tensor> in;
  for (const Tensor& t : c.inputs) in.push_back(is_floating(t.dtype()) ? identity(t) : t);
  std::vector<Tensor> f = composite_attention_grad(in, c.attrs, sl);
  Tensor total;
  for (size_t i = 0; i < 3; ++i) {
    if (!c.douts[i].valid()) continue;
    Tensor t = sum(f[i] * c.douts[i]);
    total = total.valid() ? total + t : t;
  }
  std::vector<Tensor> wrt(in.begin(), in.begin() + 6);
  if (sl.dlse >= 0) wrt.push_back(in[size_t(sl.dlse)]);
  std::vector<Tensor> g = gradients(total, wrt);
  g.resize(in.size());  // mask: no gradient
  return g;
}

// ---------------------------------------------------------------- definitions

const bool registered = [] {
  {
    OpDef d;
    d.name = "attention";
    d.min_inputs = 3;
    d.max_inputs = 5;
    d.attrs = {attr::required("scale", AttrKind::real), attr::defaulted("causal", false),
               attr::defaulted("dropout", 0.0), attr::defaulted("mask", false)};
    d.infer = [](const InferContext& c) {
      const Slots sl = slots_of(c.attrs, false);
      c.check(int(c.in.size()) == sl.count, "expected ", sl.count, " inputs (q, k, v", sl.mask >= 0 ? ", mask" : "",
              sl.rng >= 0 ? ", key" : "", "), got ", c.in.size());
      Shape out = check_attention(c, sl);
      Shape lse(out.begin(), out.end() - 1);
      return std::vector<TensorType>{{c.in[0].dtype, out}, {c.in[0].dtype, lse}};
    };
    d.grad = [](const GradContext& c) {
      const Slots sl = slots_of(c.attrs, false);
      std::vector<Tensor> ins{c.inputs[0], c.inputs[1], c.inputs[2], c.outputs[0], c.outputs[1], c.dout(0)};
      Attrs a = c.attrs;
      a.set("dlse", c.douts[1].valid());
      if (c.douts[1].valid()) ins.push_back(c.douts[1]);
      if (sl.mask >= 0) ins.push_back(c.inputs[size_t(sl.mask)]);
      if (sl.rng >= 0) ins.push_back(c.inputs[size_t(sl.rng)]);
      std::vector<Tensor> g = G(c.inputs[0]).add("attention_grad", ins, a);
      g.resize(c.inputs.size());  // a bool mask and the key: no gradient
      if (sl.mask >= 0 && is_floating(c.inputs[size_t(sl.mask)].dtype())) g[size_t(sl.mask)] = float_mask_grad(ins, a);
      return g;
    };
    d.reference = ref_attention;
    d.examples = attention_examples;
    d.doc = "softmax(q k^T scale + mask) v, fused (tiles, online softmax); outputs out and the rows' logsumexp";
    // remat cost: Q K^T and P V, 2 FLOPs per multiply-add each
    d.flops = [](std::span<const TensorType> in, std::span<const TensorType>, const Attrs&) {
      return 4.0 * double(numel(in[0].shape)) * double(in[1].shape[in[1].shape.size() - 2]);
    };
    register_op(std::move(d));
  }
  {
    OpDef d;
    d.name = "attention_grad";
    d.min_inputs = 6;
    d.max_inputs = 9;
    d.attrs = {attr::required("scale", AttrKind::real), attr::defaulted("causal", false),
               attr::defaulted("dropout", 0.0), attr::defaulted("mask", false), attr::defaulted("dlse", false)};
    d.infer = [](const InferContext& c) {
      const Slots sl = slots_of(c.attrs, true);
      c.check(int(c.in.size()) == sl.count, "expected ", sl.count, " inputs, got ", c.in.size());
      std::vector<TensorType> fwd{c.in[0], c.in[1], c.in[2]};
      if (sl.mask >= 0) fwd.push_back(c.in[size_t(sl.mask)]);
      if (sl.rng >= 0) fwd.push_back(c.in[size_t(sl.rng)]);
      Attrs fa = c.attrs;
      fa.set("mask", sl.mask >= 0);
      InferContext fc{c.op, c.node, fwd, fa};
      Slots fs = slots_of(fa, false);
      const Shape out = check_attention(fc, fs);
      const Shape lse(out.begin(), out.end() - 1);
      auto same = [&](size_t i, const Shape& want, const char* what) {
        const Shape& got = c.in[i].shape;
        bool ok = got.size() == want.size() && c.in[i].dtype == c.in[0].dtype;
        for (size_t d = 0; ok && d < got.size(); ++d) ok = dim_eq(got[d], want[d]);
        c.check(ok, what, " must be ", dtype_name(c.in[0].dtype), S(want), ", got ", dtype_name(c.in[i].dtype),
                S(got));
      };
      same(3, out, "out");
      same(4, lse, "lse");
      same(5, out, "dout");
      if (sl.dlse >= 0) same(size_t(sl.dlse), lse, "dlse");
      return std::vector<TensorType>{c.in[0], c.in[1], c.in[2]};
    };
    d.grad = attention_grad_grad;
    d.reference = ref_attention_grad;
    d.examples = attention_grad_examples;
    d.doc = "the backward of attention: dq, dk, dv from the tiles recomputed with the saved logsumexp";
    register_op(std::move(d));
  }
  {
    OpDef d;
    d.name = "attention_keep";
    d.min_inputs = d.max_inputs = 2;  // rng, scores (shape only)
    d.shape_only_inputs = {1};
    d.attrs = {attr::required("dropout", AttrKind::real)};
    d.infer = [](const InferContext& c) {
      const double p = c.attrs.f("dropout");
      c.check(c.in[0].dtype == int64 && c.in[0].shape == Shape{2},
              "the dropout key must be int64 [2] (random_key), got ", dtype_name(c.in[0].dtype), S(c.in[0].shape));
      c.check(is_floating(c.in[1].dtype) && c.in[1].shape.size() >= 2, "expected floating scores [..., Tq, Tk], got ",
              dtype_name(c.in[1].dtype), S(c.in[1].shape));
      c.check(p > 0 && p < 1, "dropout must be in (0, 1), got ", p);
      return std::vector<TensorType>{c.in[1]};
    };
    d.reference = [](std::span<const NDArray> in, const Attrs& a) {
      const NDArray k = in[0].compact();
      const uint64_t key = uint64_t(k.data<int64_t>()[0]), run = uint64_t(k.data<int64_t>()[1]);
      const double p = a.f("dropout");
      NDArray y = NDArray::empty(in[1].shape(), float64);
      for (int64_t i = 0; i < y.numel(); ++i)
        y.data<double>()[i] = philox::uniform_f32(key, run, uint64_t(i)) >= float(p) ? 1 / (1 - p) : 0;
      return std::vector<NDArray>{y.astype(in[1].dtype())};
    };
    d.examples = [](uint64_t seed) {
      NDArray key = NDArray::from<int64_t>({int64_t(seed * 7919 + 3), 5}, {2});
      return std::vector<OpExample>{
          {"[2, 3, 4, 5] at 0.3", {key, rand_array({2, 3, 4, 5}, -1, 1, seed)}, {{"dropout", 0.3}}, {}}};
    };
    d.doc =
        "keep / (1 - dropout) for each attention weight, the Philox draws of attention's dropout (for a float mask's "
        "gradient)";
    register_op(std::move(d));
  }
  {
    OpDef d;
    d.name = "random_key";
    d.min_inputs = d.max_inputs = 0;
    d.attrs = AttrSchema::none();
    d.stateful = true;
    d.infer = [](const InferContext&) { return std::vector<TensorType>{{int64, {2}}}; };
    // No reference: a key is checked for reproducibility and for changing per run in tests/ops.
    d.examples = [](uint64_t) { return std::vector<OpExample>{{"key", {}, {}, {}, false}}; };
    d.doc = "int64 [2]: a Philox key from the session seed and this node, and the run counter";
    register_op(std::move(d));
  }
  return true;
}();

Tensor score_mask(const Tensor& s, const Tensor& mask, bool causal) {
  Graph& g = G(s);
  Tensor add;
  if (mask.valid()) add = mask.dtype() == boolean ? where(mask, zeros_like(s), -INFINITY) : mask;
  if (causal) {
    const int64_t tq = s.shape()[s.shape().size() - 2], tk = s.shape().back();
    LOOM_CHECK(tq >= 0 && tk >= 0, "attention: a causal mask needs known lengths, got scores ", S(s.shape()));
    NDArray m = NDArray::empty({tq, tk}, s.dtype());
    for (int64_t i = 0; i < tq; ++i)
      for (int64_t j = 0; j < tk; ++j) detail::set_at(m, {i, j}, j > i ? -INFINITY : 0.0);
    Tensor c = g.constant(m, "causal_mask");
    add = add.valid() ? add + c : c;
  }
  return add;
}

}  // namespace

Tensor random_key(Graph& g) { return g.add1("random_key", {}); }

namespace {

double resolve_scale(const Tensor& q, const AttentionOptions& o, const char* what) {
  if (o.scale) return *o.scale;
  const int64_t d = q.shape().empty() ? -1 : q.shape().back();
  LOOM_CHECK(d > 0, what, ": the default scale 1/sqrt(D) needs a known head dim D > 0, q '", q.name(), "' is ",
             S(q.shape()));
  return 1.0 / std::sqrt(double(d));
}

void check_handles(const Tensor& q, const Tensor& k, const Tensor& v, const char* what) {
  LOOM_CHECK(q.valid() && k.valid() && v.valid(), what, ": q, k and v must be valid tensors");
  LOOM_CHECK(&q.graph() == &k.graph() && &q.graph() == &v.graph(), what, ": q, k and v are in different graphs");
}

}  // namespace

Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& o) {
  const char* what = "scaled_dot_product_attention";
  check_handles(q, k, v, what);
  LOOM_CHECK(o.dropout >= 0 && o.dropout < 1, what, ": dropout must be in [0, 1), got ", o.dropout);
  std::vector<Tensor> ins{q, k, v};
  if (o.mask.valid()) ins.push_back(o.mask);
  if (o.dropout > 0) ins.push_back(random_key(G(q)));
  Attrs a{{"scale", resolve_scale(q, o, what)}, {"causal", o.causal}, {"dropout", o.dropout}, {"mask", o.mask.valid()}};
  return G(q).add("attention", ins, std::move(a))[0];
}

Tensor attention_weights(const Tensor& q, const Tensor& k, const AttentionOptions& o) {
  return composite::attention_probabilities(q, k, o, "attention_weights");
}

Tensor composite::scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                               const AttentionOptions& o) {
  const char* what = "composite::scaled_dot_product_attention";
  check_handles(q, k, v, what);
  Tensor p = attention_probabilities(q, k, o, what);
  if (o.dropout > 0) p = dropout(p, o.dropout);
  return matmul(p, v);
}

Tensor composite::attention_probabilities(const Tensor& q, const Tensor& k, const AttentionOptions& o,
                                          const char* what) {
  check_handles(q, k, k, what);
  Tensor s = matmul(q, transpose(k)) * resolve_scale(q, o, what);
  Tensor add = score_mask(s, o.mask, o.causal);
  if (add.valid()) s = s + add;
  // A row with every key masked gives zeros, as the fused op (and PyTorch's
  // attention): it is softmaxed as zeros, then dropped.
  // (max() of a row of -inf is the dtype's lowest value.)
  const double lowest = s.dtype() == float32 ? double(std::numeric_limits<float>::lowest())
                                             : std::numeric_limits<double>::lowest();
  Tensor live = stop_gradient(max(s, {-1}, true)) > lowest;
  return where(live, composite::softmax(where(live, s, 0.0), -1), 0.0);
}

}  // namespace loom
