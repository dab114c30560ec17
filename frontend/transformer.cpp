// Attention and Transformer modules (frontend/transformer.hpp).

#include "frontend/transformer.hpp"

#include <cmath>
#include <sstream>

namespace loom::nn {

// ---------------------------------------------------------------- GELU

Tensor gelu(const Tensor& x, bool tanh_approximation) { return loom::gelu(x, tanh_approximation ? "tanh" : "none"); }

Tensor key_padding_mask(const Tensor& padding) {
  LOOM_CHECK(padding.valid(), "key_padding_mask: the padding is an empty Tensor handle");
  const size_t rank = padding.shape().size();
  LOOM_CHECK((rank == 1 || rank == 2) && (padding.dtype() == boolean || is_floating(padding.dtype())),
             "key_padding_mask: '", padding.name(),
             "' must be bool (true = padding) or floating, [B, Tk] or [Tk]; got ", dtype_name(padding.dtype()),
             S(padding.shape()));
  Tensor mask = padding.dtype() == boolean ? logical_not(padding) : padding;  // the op's bool means "attend"
  return rank == 2 ? expand_dims(mask, {1, 2}) : mask;
}

// ---------------------------------------------------------------- MultiheadAttention

namespace {

/// Restores a stashed tensor when a call ends, also when it throws.
struct Stash {
  Tensor& slot;
  Stash(Tensor& s, const Tensor& v) : slot(s) { slot = v; }
  ~Stash() { slot = Tensor(); }
};

/// Checks x is [..., n].
void check_features(const Tensor& x, int64_t n, const std::string& where, const char* what) {
  LOOM_CHECK(x.valid(), where, ": ", what, " is an empty Tensor handle");
  const Shape& s = x.shape();
  LOOM_CHECK(s.size() >= 2 && (s.back() == n || s.back() < 0), where, ": expected ", what, " [..., T, ", n, "], got ",
             S(s));
  LOOM_CHECK(is_floating(x.dtype()), where, ": expected a floating ", what, ", got ", dtype_name(x.dtype()));
}

bool dims_match(int64_t a, int64_t b) { return a == b || a < 0 || b < 0; }

/// Key and value: one length and the query's batch dims, as PyTorch requires.
void check_key_value(const Shape& q, const Shape& k, const Shape& v, const std::string& where) {
  bool ok = k.size() == q.size() && v.size() == q.size();
  for (size_t i = 0; ok && i + 1 < q.size(); ++i)
    ok = dims_match(k[i], v[i]) && (i + 2 == q.size() || (dims_match(q[i], k[i]) && dims_match(q[i], v[i])));
  LOOM_CHECK(ok, where, ": key ", S(k), " and value ", S(v), " must be [..., Tk, d] with the query ", S(q),
             "'s batch dims and one length Tk");
}

int64_t unknown_dims(const Shape& s) {
  return std::count_if(s.begin(), s.end(), [](int64_t d) { return d < 0; });
}

/// s with every unknown dim as reshape's -1 (valid for one unknown dim at most).
Shape for_reshape(Shape s) {
  for (int64_t& d : s) d = d < 0 ? -1 : d;
  return s;
}

}  // namespace

MultiheadAttention::MultiheadAttention(int64_t d_model, int64_t heads, MultiheadAttentionOptions options)
    : d_(d_model),
      heads_(heads),
      kdim_(options.kdim ? options.kdim : d_model),
      vdim_(options.vdim ? options.vdim : d_model),
      options_(options) {
  LOOM_CHECK(d_model > 0 && heads > 0, "MultiheadAttention: d_model and heads must be positive, got ", d_model, " and ",
             heads);
  LOOM_CHECK(options.kdim >= 0 && options.vdim >= 0,
             "MultiheadAttention: kdim and vdim must be >= 0 (0: d_model), got ", options.kdim, " and ", options.vdim);
  LOOM_CHECK(d_model % heads == 0, "MultiheadAttention: heads (", heads, ") must divide d_model (", d_model, ")");
  LOOM_CHECK(options.dropout >= 0 && options.dropout < 1, "MultiheadAttention: dropout must be in [0, 1), got ",
             options.dropout);
  LOOM_CHECK(!options.causal || !(options.add_bias_kv || options.add_zero_attn),
             "MultiheadAttention: causal with add_bias_kv or add_zero_attn: give the causal mask explicitly "
             "(the appended key positions are attended by every query)");
}

std::string MultiheadAttention::describe() const {
  std::ostringstream os;
  os << "MultiheadAttention(" << d_ << ", heads=" << heads_ << ", dropout=" << options_.dropout
     << (options_.causal ? ", causal" : "");
  if (separate_projections()) os << ", kdim=" << kdim_ << ", vdim=" << vdim_;
  if (options_.add_bias_kv) os << ", add_bias_kv";
  if (options_.add_zero_attn) os << ", add_zero_attn";
  os << (options_.bias ? ", bias)" : ", no bias)");
  return os.str();
}

Tensor MultiheadAttention::operator()(const Tensor& query, const Tensor& key, const Tensor& value, const Tensor& mask) {
  // An empty key or value would silently become the query (as in a self-attention call).
  LOOM_CHECK(key.valid() && value.valid(), "MultiheadAttention: key and value must be given (",
             key.valid() ? "" : "key", !key.valid() && !value.valid() ? " and " : "", value.valid() ? "" : "value",
             " is an empty Tensor handle; pass the query itself for self-attention)");
  Stash k(key_, key), v(value_, value), m(mask_, mask);
  return Module::operator()(query);
}

std::pair<Tensor, Tensor> MultiheadAttention::with_weights(const Tensor& query, const Tensor& key, const Tensor& value,
                                                           const Tensor& mask, bool average) {
  weights_average_ = average;
  struct Reset {
    MultiheadAttention& m;
    ~Reset() { m.weights_average_.reset(), m.weights_ = Tensor(); }
  } reset{*this};
  Tensor y = (*this)(query, key, value, mask);
  return {y, weights_};
}

Tensor MultiheadAttention::project(const Tensor& x, const Tensor& w, const Tensor& b) const {
  const Shape& s = x.shape();
  const int64_t in = w.shape()[1], out = w.shape()[0];
  Tensor y;
  if (s.size() > 2 && unknown_dims(s) <= 1) {  // [..., in] as one [rows, in] matrix: one GEMM
    Shape o = s;
    o.back() = out;
    y = reshape(matmul(reshape(x, {-1, in}), transpose(w)), for_reshape(o));
  } else {
    y = matmul(x, transpose(w));
  }
  return b.valid() ? y + b : y;
}

Tensor MultiheadAttention::split_heads(const Tensor& x) const {
  Shape s = x.shape();
  s.back() = heads_;
  s.push_back(d_ / heads_);
  const int64_t r = int64_t(s.size());  // [..., T, H, hd] -> [..., H, T, hd]
  std::vector<int64_t> perm;
  for (int64_t i = 0; i < r - 3; ++i) perm.push_back(i);
  perm.insert(perm.end(), {r - 2, r - 3, r - 1});
  if (unknown_dims(s) <= 1) return permute(reshape(x, for_reshape(s)), perm);
  // Several unknown dims (batch and length): the shape comes from a view of x
  // [..., T, H] broadcast to [..., T, H, hd], which reshape_like only reads.
  std::vector<Slice> first_h(size_t(x.ndim()));
  first_h.back() = Slice::range(0, heads_);
  Shape to(size_t(r), -1);
  to.back() = d_ / heads_;
  return permute(reshape_like(x, broadcast_to(expand_dims(slice(x, first_h), {-1}), to)), perm);
}

Tensor MultiheadAttention::forward(const Tensor& x) {
  const std::string here = where(x);
  const Tensor key = key_.valid() ? key_ : x, value = value_.valid() ? value_ : x;
  check_features(x, d_, here, "query");
  check_features(key, kdim_, here, "key");
  check_features(value, vdim_, here, "value");
  check_key_value(x.shape(), key.shape(), value.shape(), here);
  LOOM_CHECK(key.dtype() == x.dtype() && value.dtype() == x.dtype(), here, ": query, key and value dtypes differ");
  const DType dt = x.dtype();
  const double bound = 1.0 / std::sqrt(double(d_));
  // PyTorch's variables, in its order: one in_proj_weight, or for kdim/vdim three, each initialized on its own.
  Tensor w_in, w_q, w_k, w_v;
  if (separate_projections()) {
    w_q = parameter(x, "q_proj_weight", {d_, d_}, init::xavier_uniform(), dt);
    w_k = parameter(x, "k_proj_weight", {d_, kdim_}, init::xavier_uniform(), dt);
    w_v = parameter(x, "v_proj_weight", {d_, vdim_}, init::xavier_uniform(), dt);
  } else {
    w_in = parameter(x, "in_proj_weight", {3 * d_, d_}, init::xavier_uniform(), dt);
  }
  Tensor b_in = options_.bias ? parameter(x, "in_proj_bias", {3 * d_}, init::zeros(), dt) : Tensor();
  Tensor bias_k, bias_v;
  if (options_.add_bias_kv)
    bias_k = parameter(x, "bias_k", {1, 1, d_}, init::xavier_normal(), dt),
    bias_v = parameter(x, "bias_v", {1, 1, d_}, init::xavier_normal(), dt);
  Tensor w_out = parameter(x, "out_proj/weight", {d_, d_}, init::uniform(-bound, bound), dt);
  Tensor b_out = options_.bias ? parameter(x, "out_proj/bias", {d_}, init::zeros(), dt) : Tensor();

  auto part = [&](const Tensor& t, int64_t i) {
    return t.valid() ? slice(t, {Slice::range(i * d_, (i + 1) * d_)}) : Tensor();
  };
  Tensor q, k, v;
  if (w_in.valid() && key.is(x) && value.is(x)) {  // self-attention: one [..., T, 3d] projection, split as views
    std::vector<Tensor> parts = split(project(x, w_in, b_in), 3, -1);
    q = parts[0], k = parts[1], v = parts[2];
  } else {
    q = project(x, w_in.valid() ? part(w_in, 0) : w_q, part(b_in, 0));
    k = project(key, w_in.valid() ? part(w_in, 1) : w_k, part(b_in, 1));
    v = project(value, w_in.valid() ? part(w_in, 2) : w_v, part(b_in, 2));
  }
  // add_bias_kv, add_zero_attn: one more key/value position each, [..., 1, d] broadcast over the batch.
  Tensor mask = mask_;
  auto append = [&](const Tensor& t, const Tensor& row) {  // row [1, 1, d] or [d] -> [..., 1, d], concatenated
    std::vector<Slice> first(size_t(t.ndim()), Slice::all());
    first[first.size() - 2] = Slice::range(0, 1);
    return concat({t, broadcast_like(reshape(row, {d_}), slice(t, first))}, -2);
  };
  auto attend_one_more = [&] {  // the mask's key axis gets an attending column (true, or 0 added)
    if (!mask.valid() || mask.shape().back() == 1) return;
    std::vector<std::pair<int64_t, int64_t>> pads(size_t(mask.ndim()), {0, 0});
    pads.back() = {0, 1};
    mask = loom::pad(mask, pads, mask.dtype() == boolean ? 1.0 : 0.0);
  };
  if (options_.add_bias_kv) k = append(k, bias_k), v = append(v, bias_v), attend_one_more();
  if (options_.add_zero_attn) {
    const Tensor zero = x.graph().constant(NDArray::zeros({d_}, dt));
    k = append(k, zero), v = append(v, zero), attend_one_more();
  }
  q = split_heads(q), k = split_heads(k), v = split_heads(v);
  if (mask.valid()) {
    const Shape &ms = mask.shape(), &qs = q.shape(), &ks = k.shape();
    Shape scores(qs.begin(), qs.end() - 1);
    scores.push_back(ks[ks.size() - 2]);
    bool ok = ms.size() <= scores.size();
    for (size_t i = 0; ok && i < ms.size(); ++i) {
      const int64_t a = ms[i], b = scores[scores.size() - ms.size() + i];
      ok = a == 1 || a == b || a < 0 || b < 0;
    }
    LOOM_CHECK(ok, here, ": mask ", S(ms), " does not broadcast to the attention scores ", S(scores),
               " ([batch, heads, query length, key length])");
  }
  Tensor y = scaled_dot_product_attention(
      q, k, v, {.causal = options_.causal, .mask = mask, .dropout = training() ? options_.dropout : 0.0});
  if (weights_average_) {
    weights_ = attention_weights(q, k, {.causal = options_.causal, .mask = mask});
    if (training() && options_.dropout > 0) {  // after dropout, as PyTorch's: the factors the attention drew
      const Edge key = y.node().inputs.back();
      weights_ = weights_ * y.graph().add1("attention_keep", {Tensor(&y.graph(), key.node, key.index), weights_},
                                           {{"dropout", options_.dropout}});
    }
    if (*weights_average_) weights_ = mean(weights_, {-3});
  }
  // [..., H, T, hd] -> [..., T, H, hd] -> [..., T, d]
  const int64_t r = y.ndim();
  std::vector<int64_t> perm;
  for (int64_t i = 0; i < r - 3; ++i) perm.push_back(i);
  perm.insert(perm.end(), {r - 2, r - 3, r - 1});
  Shape merged = x.shape();
  merged.back() = d_;
  Tensor heads = permute(y, perm);
  return project(unknown_dims(merged) <= 1 ? reshape(heads, for_reshape(merged)) : reshape_like(heads, x), w_out,
                 b_out);
}

// ---------------------------------------------------------------- TransformerLayer

namespace {

/// The feed-forward block both layers share: linear1 -> activation -> dropout -> linear2 -> dropout.
Tensor feed_forward(Linear& linear1, Linear& linear2, const TransformerOptions& o, bool training, const Tensor& x) {
  Tensor h = dropout(activate(o.activation, linear1(x)), o.dropout, training);
  return dropout(linear2(h), o.dropout, training);
}

std::string describe_layer(const char* type, int64_t d_model, int64_t heads, const TransformerOptions& o) {
  std::ostringstream os;
  os << type << "(" << d_model << ", heads=" << heads << ", ffn=" << o.ffn << ", dropout=" << o.dropout << ", "
     << activation_name(o.activation) << (o.norm_first ? ", pre-norm" : ", post-norm")
     << (o.causal ? ", causal)" : ")");
  return os.str();
}

void check_layer(int64_t d_model, int64_t heads, const TransformerOptions& o) {
  LOOM_CHECK(d_model > 0 && heads > 0 && o.ffn > 0, "TransformerLayer: d_model, heads and ffn must be positive, got ",
             d_model, ", ", heads, ", ", o.ffn);
  LOOM_CHECK(d_model % heads == 0, "TransformerLayer: heads (", heads, ") must divide d_model (", d_model, ")");
  LOOM_CHECK(o.dropout >= 0 && o.dropout < 1, "TransformerLayer: dropout must be in [0, 1), got ", o.dropout);
}


}  // namespace

TransformerLayer::TransformerLayer(int64_t d_model, int64_t heads, TransformerOptions o)
    : d_((check_layer(d_model, heads, o), d_model)),
      options_(o),
      attn_(register_module(
          "self_attn", MultiheadAttention(d_model, heads, {.dropout = o.dropout, .causal = o.causal, .bias = o.bias}))),
      linear1_(register_module("linear1", Linear(d_model, o.ffn, {.bias = o.bias, .dtype = o.dtype}))),
      linear2_(register_module("linear2", Linear(o.ffn, d_model, {.bias = o.bias, .dtype = o.dtype}))),
      norm1_(register_module("norm1", LayerNorm(d_model, {.eps = o.eps, .bias = o.bias}))),
      norm2_(register_module("norm2", LayerNorm(d_model, {.eps = o.eps, .bias = o.bias}))) {}

std::string TransformerLayer::describe() const {
  return describe_layer("TransformerLayer", d_, attn_.heads(), options_);
}

Tensor TransformerLayer::operator()(const Tensor& x, const Tensor& mask) {
  Stash m(mask_, mask);
  return Module::operator()(x);
}

Tensor TransformerLayer::forward(const Tensor& x) {
  check_features(x, d_, where(x), "input");
  auto attend = [&](const Tensor& h) { return dropout(attn_(h, h, h, mask_), options_.dropout, training()); };
  if (options_.norm_first) {
    Tensor y = x + attend(norm1_(x));
    return y + feed_forward(linear1_, linear2_, options_, training(), norm2_(y));
  }
  Tensor y = norm1_(x + attend(x));
  return norm2_(y + feed_forward(linear1_, linear2_, options_, training(), y));
}

// ---------------------------------------------------------------- Transformer

Transformer::Transformer(int64_t layers, int64_t d_model, int64_t heads, TransformerOptions o)
    : layers_(register_module("layers", Sequential())) {
  LOOM_CHECK(layers >= 1, "Transformer: needs at least one layer, got ", layers);
  for (int64_t i = 0; i < layers; ++i) layers_.push_back(TransformerLayer(d_model, heads, o));
  if (o.final_norm.value_or(o.norm_first))
    norm_ = &register_module("norm", LayerNorm(d_model, {.eps = o.eps, .bias = o.bias}));
}

Tensor Transformer::operator()(const Tensor& x, const Tensor& mask) {
  Stash m(mask_, mask);
  return Module::operator()(x);
}

Tensor Transformer::forward(const Tensor& x) {
  Tensor y = x;
  {
    auto scope = x.graph().scope("layers");  // the children of layers_, called with the mask
    for (const auto& [name, layer] : layers_.children()) y = static_cast<TransformerLayer&>(*layer)(y, mask_);
  }
  return norm_ ? (*norm_)(y) : y;
}

// ---------------------------------------------------------------- TransformerDecoderLayer, TransformerDecoder

TransformerDecoderLayer::TransformerDecoderLayer(int64_t d_model, int64_t heads, TransformerOptions o)
    : d_((check_layer(d_model, heads, o), d_model)),
      options_(o),
      self_attn_(register_module(
          "self_attn", MultiheadAttention(d_model, heads, {.dropout = o.dropout, .causal = o.causal, .bias = o.bias}))),
      cross_attn_(register_module("multihead_attn",
                                  MultiheadAttention(d_model, heads, {.dropout = o.dropout, .bias = o.bias}))),
      linear1_(register_module("linear1", Linear(d_model, o.ffn, {.bias = o.bias, .dtype = o.dtype}))),
      linear2_(register_module("linear2", Linear(o.ffn, d_model, {.bias = o.bias, .dtype = o.dtype}))),
      norm1_(register_module("norm1", LayerNorm(d_model, {.eps = o.eps, .bias = o.bias}))),
      norm2_(register_module("norm2", LayerNorm(d_model, {.eps = o.eps, .bias = o.bias}))),
      norm3_(register_module("norm3", LayerNorm(d_model, {.eps = o.eps, .bias = o.bias}))) {}

std::string TransformerDecoderLayer::describe() const {
  return describe_layer("TransformerDecoderLayer", d_, self_attn_.heads(), options_);
}

Tensor TransformerDecoderLayer::operator()(const Tensor& tgt, const Tensor& memory, const Tensor& tgt_mask,
                                           const Tensor& memory_mask) {
  Stash m(memory_, memory), tm(tgt_mask_, tgt_mask), mm(memory_mask_, memory_mask);
  return Module::operator()(tgt);
}

Tensor TransformerDecoderLayer::forward(const Tensor& x) {
  const std::string here = where(x);
  LOOM_CHECK(memory_.valid(), here, ": a decoder layer attends the encoder's output: call it as layer(tgt, memory)");
  check_features(x, d_, here, "target");
  check_features(memory_, d_, here, "memory");
  const bool train = training();
  auto self_block = [&](const Tensor& h) { return dropout(self_attn_(h, h, h, tgt_mask_), options_.dropout, train); };
  auto cross_block = [&](const Tensor& h) {
    return dropout(cross_attn_(h, memory_, memory_, memory_mask_), options_.dropout, train);
  };
  auto ff_block = [&](const Tensor& h) { return feed_forward(linear1_, linear2_, options_, train, h); };
  if (options_.norm_first) {
    Tensor y = x + self_block(norm1_(x));
    y = y + cross_block(norm2_(y));
    return y + ff_block(norm3_(y));
  }
  Tensor y = norm1_(x + self_block(x));
  y = norm2_(y + cross_block(y));
  return norm3_(y + ff_block(y));
}

TransformerDecoder::TransformerDecoder(int64_t layers, int64_t d_model, int64_t heads, TransformerOptions o)
    : layers_(register_module("layers", Sequential())) {
  LOOM_CHECK(layers >= 1, "TransformerDecoder: needs at least one layer, got ", layers);
  for (int64_t i = 0; i < layers; ++i) layers_.push_back(TransformerDecoderLayer(d_model, heads, o));
  if (o.final_norm.value_or(o.norm_first))
    norm_ = &register_module("norm", LayerNorm(d_model, {.eps = o.eps, .bias = o.bias}));
}

Tensor TransformerDecoder::operator()(const Tensor& tgt, const Tensor& memory, const Tensor& tgt_mask,
                                      const Tensor& memory_mask) {
  Stash m(memory_, memory), tm(tgt_mask_, tgt_mask), mm(memory_mask_, memory_mask);
  return Module::operator()(tgt);
}

Tensor TransformerDecoder::forward(const Tensor& x) {
  LOOM_CHECK(memory_.valid(), where(x), ": a decoder attends the encoder's output: call it as decoder(tgt, memory)");
  Tensor y = x;
  {
    auto scope = x.graph().scope("layers");  // the children of layers_, called with the memory and masks
    for (const auto& [name, layer] : layers_.children())
      y = static_cast<TransformerDecoderLayer&>(*layer)(y, memory_, tgt_mask_, memory_mask_);
  }
  return norm_ ? (*norm_)(y) : y;
}

// ---------------------------------------------------------------- PositionalEmbedding

PositionalEmbedding::PositionalEmbedding(int64_t max_len, int64_t d_model) : max_len_(max_len), d_(d_model) {
  LOOM_CHECK(max_len > 0 && d_model > 0, "PositionalEmbedding: max_len and d_model must be positive, got ", max_len,
             " and ", d_model);
}

std::string PositionalEmbedding::describe() const {
  return "PositionalEmbedding(" + std::to_string(max_len_) + ", " + std::to_string(d_) + ")";
}

Tensor PositionalEmbedding::forward(const Tensor& x) {
  const Shape& s = x.shape();
  LOOM_CHECK(s.size() >= 2 && (s.back() == d_ || s.back() < 0), where(x), ": expected [..., T, ", d_, "], got ", S(s));
  const int64_t t = s[s.size() - 2];
  LOOM_CHECK(t >= 0, where(x), ": the sequence length of ", S(s), " must be known");
  LOOM_CHECK(t <= max_len_, where(x), ": sequence length ", t, " exceeds the table's ", max_len_,
             " positions (input ", S(s), ")");
  Tensor w = parameter(x, "weight", {max_len_, d_}, init::normal(0.0, 1.0), x.dtype());
  return x + (t == max_len_ ? w : slice(w, {Slice::range(0, t)}));
}

}  // namespace loom::nn
