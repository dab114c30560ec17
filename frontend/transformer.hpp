#pragma once
/// Attention and Transformer modules, on the fused attention op
/// (scaled_dot_product_attention in ops/ops.hpp):
///
///     nn::Sequential lm{nn::PositionalEmbedding(128, 256),
///                       nn::Transformer(4, 256, 4, {.ffn = 1024, .dropout = 0.1, .causal = true, .norm_first = true})};
///     Tensor h = lm(x);                      // x [B, T, 256] -> [B, T, 256]
///
/// Layouts and names follow PyTorch, so a state_dict maps one to one (module
/// paths use '/' where PyTorch uses '.'):
/// - MultiheadAttention: in_proj_weight [3d, d] (q, k, v stacked), in_proj_bias
///   [3d], out_proj/weight [d, d] ([out, in]) and out_proj/bias [d];
/// - TransformerLayer: self_attn/..., linear1, linear2, norm1, norm2, as
///   nn.TransformerEncoderLayer;
/// - Transformer: layers/0/..., layers/1/..., and norm when it has a final
///   LayerNorm, as nn.TransformerEncoder.
/// Inputs are batch-first, [B, T, d] (PyTorch's batch_first=True), or
/// unbatched [T, d]. Masks are the attention op's: bool with true = attend
/// (PyTorch's scaled_dot_product_attention; nn.MultiheadAttention's
/// attn_mask means the opposite), or float added to the scores, broadcast to
/// [B, heads, Tq, Tk].

#include <cstdint>
#include <optional>
#include <string>

#include "frontend/nn.hpp"

namespace loom::nn {

/// GELU, exactly x * Phi(x), or with PyTorch's tanh approximation.
Tensor gelu(const Tensor& x, bool tanh_approximation = false);

class GELU : public Module {
 public:
  explicit GELU(bool tanh_approximation = false) : tanh_(tanh_approximation) {}
  std::string type_name() const override { return "GELU"; }
  std::string describe() const override { return tanh_ ? "GELU(approximate=tanh)" : "GELU"; }

 protected:
  Tensor forward(const Tensor& x) override { return gelu(x, tanh_); }

 private:
  bool tanh_;
};

/// The attention mask of PyTorch's key_padding_mask: `padding` [B, Tk] bool
/// with true at the keys to ignore (a batch's padding), or float added to the
/// scores, becomes [B, 1, 1, Tk] in the attention op's convention (true =
/// attend), for any head count and query length: `mha(x, x, x, key_padding_mask(pad))`,
/// `layer(x, key_padding_mask(pad))`. An unbatched [Tk] stays one dim.
Tensor key_padding_mask(const Tensor& padding);

struct MultiheadAttentionOptions {
  /// Dropout on the attention weights (training mode only).
  double dropout = 0.0;
  /// Each position attends itself and earlier positions only.
  bool causal = false;
  /// in_proj_bias and out_proj/bias.
  bool bias = true;
  /// The key's and value's feature sizes (0: d_model), as PyTorch's kdim and
  /// vdim: when either differs, the projections are separate variables
  /// q_proj_weight [d, d], k_proj_weight [d, kdim], v_proj_weight [d, vdim].
  int64_t kdim = 0, vdim = 0;
  /// PyTorch's add_bias_kv: learned "bias_k" and "bias_v" [1, 1, d] (N(0,
  /// 1/d)-ish Xavier normal, as PyTorch) appended as one more key and value
  /// position that every query may attend (a mask gets an attending column).
  bool add_bias_kv = false;
  /// PyTorch's add_zero_attn: a key and value position of zeros appended last.
  bool add_zero_attn = false;
};

/// Multi-head attention: q, k, v = x W_in^T + b_in split in heads,
/// attention per head, heads concatenated, then out_proj. Calling it on x is
/// self-attention; the four-argument call takes separate query, key and
/// value inputs ([B, Tq, d], [B, Tk, d], [B, Tk, d]) and an optional mask.
class MultiheadAttention : public Module {
 public:
  MultiheadAttention(int64_t d_model, int64_t heads, MultiheadAttentionOptions options = {});
  std::string type_name() const override { return "MultiheadAttention"; }
  std::string describe() const override;
  int64_t d_model() const { return d_; }
  int64_t heads() const { return heads_; }

  using Module::operator();
  /// Attention of `query` over `key`/`value` (pass the same tensor for self-attention) with an extra mask.
  Tensor operator()(const Tensor& query, const Tensor& key, const Tensor& value, const Tensor& mask = {});
  /// The same and the attention weights (PyTorch's need_weights=True):
  /// [..., Tq, Tk] averaged over the heads, or [..., heads, Tq, Tk] with
  /// average false; in training mode after dropout (the weights the output used), as PyTorch's.
  std::pair<Tensor, Tensor> with_weights(const Tensor& query, const Tensor& key, const Tensor& value,
                                         const Tensor& mask = {}, bool average = true);

 protected:
  Tensor forward(const Tensor& x) override;

 private:
  /// [..., T, d] -> [..., heads, T, d / heads] (a view).
  Tensor split_heads(const Tensor& x) const;
  Tensor project(const Tensor& x, const Tensor& w, const Tensor& b) const;

  bool separate_projections() const { return kdim_ != d_ || vdim_ != d_; }

  int64_t d_, heads_, kdim_, vdim_;
  MultiheadAttentionOptions options_;
  // The extra inputs of a four-argument call, while it runs; with_weights' request and result.
  Tensor key_, value_, mask_;
  std::optional<bool> weights_average_;
  Tensor weights_;
};

struct TransformerOptions {
  /// Width of the feed-forward block (PyTorch's dim_feedforward).
  int64_t ffn = 2048;
  double dropout = 0.1;
  Activation activation = Activation::relu;
  bool causal = false;
  /// Pre-norm: x + attn(norm1(x)), then x + ffn(norm2(x)). Post-norm (false,
  /// PyTorch's default): norm1(x + attn(x)), then norm2(x + ffn(x)).
  bool norm_first = false;
  /// Biases of the projections, the feed-forward and the LayerNorms (PyTorch's bias).
  bool bias = true;
  double eps = 1e-5;
  /// The feed-forward Linears' dtype (attention and LayerNorm take the input's).
  DType dtype = float32;
  /// Transformer (the stack) only: a LayerNorm after the last layer ("norm");
  /// default: with pre-norm layers only, as is usual.
  std::optional<bool> final_norm = {};
};
using TransformerLayerOptions = TransformerOptions;

/// One Transformer encoder layer (PyTorch's nn.TransformerEncoderLayer with
/// batch_first=True): self-attention and a feed-forward block
/// linear1 -> activation -> dropout -> linear2, each with dropout on its
/// output, a residual and a LayerNorm.
class TransformerLayer : public Module {
 public:
  TransformerLayer(int64_t d_model, int64_t heads, TransformerLayerOptions options = {});
  std::string type_name() const override { return "TransformerLayer"; }
  std::string describe() const override;

  using Module::operator();
  /// With an attention mask for this call (in addition to the causal option).
  Tensor operator()(const Tensor& x, const Tensor& mask);

 protected:
  Tensor forward(const Tensor& x) override;

 private:
  int64_t d_;
  TransformerLayerOptions options_;
  MultiheadAttention& attn_;
  Linear &linear1_, &linear2_;
  LayerNorm &norm1_, &norm2_;
  Tensor mask_;
};

/// A stack of TransformerLayers (PyTorch's nn.TransformerEncoder), children
/// "layers/0", "layers/1", ... and "norm".
class Transformer : public Module {
 public:
  Transformer(int64_t layers, int64_t d_model, int64_t heads, TransformerOptions options = {});
  std::string type_name() const override { return "Transformer"; }

  using Module::operator();
  Tensor operator()(const Tensor& x, const Tensor& mask);
  size_t size() const { return layers_.size(); }

 protected:
  Tensor forward(const Tensor& x) override;

 private:
  Sequential& layers_;
  Module* norm_ = nullptr;
  Tensor mask_;
};

/// One Transformer decoder layer (PyTorch's nn.TransformerDecoderLayer with
/// batch_first=True): self-attention over the target ("self_attn", causal
/// with `.causal`), attention over the encoder's output ("multihead_attn",
/// never causal) and the feed-forward block, each with dropout on its output,
/// a residual and a LayerNorm (norm1, norm2, norm3; pre- or post-norm).
class TransformerDecoderLayer : public Module {
 public:
  TransformerDecoderLayer(int64_t d_model, int64_t heads, TransformerLayerOptions options = {});
  std::string type_name() const override { return "TransformerDecoderLayer"; }
  std::string describe() const override;

  using Module::operator();
  /// tgt [B, T, d] over memory [B, S, d] (the encoder's output) -> [B, T, d];
  /// masks as MultiheadAttention's (tgt_mask on the self-attention, memory_mask on the other).
  Tensor operator()(const Tensor& tgt, const Tensor& memory, const Tensor& tgt_mask = {},
                    const Tensor& memory_mask = {});

 protected:
  /// Refused: a decoder layer needs the memory (the four-argument call).
  Tensor forward(const Tensor& x) override;

 private:
  int64_t d_;
  TransformerLayerOptions options_;
  MultiheadAttention &self_attn_, &cross_attn_;
  Linear &linear1_, &linear2_;
  LayerNorm &norm1_, &norm2_, &norm3_;
  Tensor memory_, tgt_mask_, memory_mask_;
};

/// A stack of TransformerDecoderLayers (PyTorch's nn.TransformerDecoder),
/// children "layers/0", ... and "norm" (by default with pre-norm layers).
class TransformerDecoder : public Module {
 public:
  TransformerDecoder(int64_t layers, int64_t d_model, int64_t heads, TransformerOptions options = {});
  std::string type_name() const override { return "TransformerDecoder"; }

  using Module::operator();
  Tensor operator()(const Tensor& tgt, const Tensor& memory, const Tensor& tgt_mask = {},
                    const Tensor& memory_mask = {});
  size_t size() const { return layers_.size(); }

 protected:
  Tensor forward(const Tensor& x) override;

 private:
  Sequential& layers_;
  Module* norm_ = nullptr;
  Tensor memory_, tgt_mask_, memory_mask_;
};

/// Learned positional embeddings: x [B, T, d] (or [T, d]) + weight[:T], with
/// weight [max_len, d] ~ N(0, 1) (PyTorch's nn.Embedding default). T must be
/// known and at most max_len.
class PositionalEmbedding : public Module {
 public:
  PositionalEmbedding(int64_t max_len, int64_t d_model);
  std::string type_name() const override { return "PositionalEmbedding"; }
  std::string describe() const override;
  int64_t max_len() const { return max_len_; }

 protected:
  Tensor forward(const Tensor& x) override;

 private:
  int64_t max_len_, d_;
};

}  // namespace loom::nn
