#pragma once
/// Sequence models: Embedding, the recurrent cells (RNNCell, LSTMCell,
/// GRUCell), the multi-layer RNN, LSTM and GRU over whole sequences, and a
/// word-level LanguageModel built from them.
///
///     nn::LSTM lstm(200, 200, {.num_layers = 2, .dropout = 0.2});
///     Tensor x = g.placeholder("x", {35, -1, 200});          // [T, N, D]: T must be known
///     auto [y, state] = lstm(x, {h0, c0});                   // y [T, N, H]; state.h, state.c [L, N, H]
///     Tensor y2 = lstm(x);                                   // zero initial state, output only
///
/// Conventions are PyTorch's, so a PyTorch state_dict maps onto the
/// variables name for name (with '.' -> '/' for the module path):
/// - sequence-first input [T, N, D] (`.batch_first` for [N, T, D]); unbatched
///   [T, D] with states [L, H] (a cell's [D] and [H]) run as a batch of one;
/// - gates in PyTorch's order: LSTM i, f, g, o; GRU r, z, n;
/// - parameters weight_ih_l{k} [G*H, D_k], weight_hh_l{k} [G*H, H],
///   bias_ih_l{k} and bias_hh_l{k} [G*H] (G = 1, 4, 3 for RNN, LSTM, GRU; the
///   cells drop the "_l{k}"), all initialized U(-1/sqrt(H), 1/sqrt(H));
/// - GRU: n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), h' = (1 - z) n + z h;
/// - dropout on the outputs of every layer but the last, in training mode.
///
/// The static graph unrolls the sequence: its length T is part of the graph
/// (build the model again on another placeholder for another length; the
/// variables are shared). Per layer, the input projections of all T steps
/// are one GEMM (both biases folded in where the cell allows), each step
/// adds one GEMM with weight_hh and one fused kernel for the gate work (the
/// lstm_cell op for LSTMs, element-wise fusion for RNN and GRU).
///
/// Truncated back-propagation through time: keep the state between batches in
/// variables and pass them as the initial state; assign the final state to
/// them with the training step. Reading a variable passes no gradient back,
/// so no gradient flows into the previous batch (the course's detach), and
/// the state never leaves the device. samples/train_lm.cpp does exactly this.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "frontend/nn.hpp"

namespace loom::nn {

// ---------------------------------------------------------------- Embedding

struct EmbeddingOptions {
  /// A row whose gradient is always zero and which starts as zeros
  /// (PyTorch's padding_idx); negative counts from the end.
  std::optional<int64_t> padding_idx = {};
  /// Default: N(0, 1), as PyTorch.
  Initializer init = {};
  DType dtype = float32;
};

/// A lookup table: ids [...] (int32 or int64) -> rows of weight [..., dim].
/// Its gradient scatter-adds into the rows that were looked up (gather_grad),
/// never a dense one-hot product. An id outside [0, num) raises loom::Error
/// naming the gather node and the id when the graph runs.
class Embedding : public Module {
 public:
  Embedding(int64_t num_embeddings, int64_t embedding_dim, EmbeddingOptions options = {});
  std::string type_name() const override { return "Embedding"; }
  std::string describe() const override;
  int64_t num_embeddings() const { return num_; }
  int64_t embedding_dim() const { return dim_; }
  /// The table [num, dim] (invalid before the first call).
  Tensor weight() const { return weight_; }

 protected:
  Tensor forward(const Tensor& ids) override;

 private:
  int64_t num_, dim_;
  EmbeddingOptions options_;
  Tensor weight_;
};

/// How EmbeddingBag combines a bag's rows.
enum class BagMode { sum, mean, max };

struct EmbeddingBagOptions {
  /// PyTorch's default is mean. An empty bag gives zeros in every mode.
  BagMode mode = BagMode::mean;
  /// Ids equal to it are left out of their bag (not counted in a mean, never
  /// a max, no gradient); its row starts as zeros. Negative counts from the end.
  std::optional<int64_t> padding_idx = {};
  /// offsets hold B + 1 values, the last the number of ids (PyTorch's include_last_offset).
  bool include_last_offset = false;
  /// Default: N(0, 1), as PyTorch.
  Initializer init = {};
  DType dtype = float32;
};

/// PyTorch's EmbeddingBag: bags of ids, each the sum, mean or max of its rows
/// of weight [num, dim] -> [B, dim]. Either ids [B, L] (each row a bag), or
/// flat ids [M] with offsets [B] (int32 or int64, each bag's start, the first
/// 0, non-decreasing; bag b holds ids[offsets[b], offsets[b + 1])), as PyTorch's
/// input/offsets. per_sample_weights (ids' shape, mode sum only) scale the rows.
/// Sum and mean add the rows into their bags (gather_grad, a segment sum);
/// max over flat ids compares every id with every bag ([B, M, dim] at once).
class EmbeddingBag : public Module {
 public:
  EmbeddingBag(int64_t num_embeddings, int64_t embedding_dim, EmbeddingBagOptions options = {});
  std::string type_name() const override { return "EmbeddingBag"; }
  std::string describe() const override;
  using Module::operator();
  /// Flat ids [M] and offsets [B] (or [B + 1] with include_last_offset) -> [B, dim].
  Tensor operator()(const Tensor& ids, const Tensor& offsets, const Tensor& per_sample_weights = {});
  /// The table [num, dim] (invalid before the first call).
  Tensor weight() const { return weight_; }

 protected:
  /// ids [B, L] -> [B, dim].
  Tensor forward(const Tensor& ids) override { return bags(ids, {}, {}); }

 private:
  Tensor bags(const Tensor& ids, const Tensor& offsets, const Tensor& per_sample_weights);
  int64_t num_, dim_;
  EmbeddingBagOptions options_;
  Tensor weight_;
};

// ---------------------------------------------------------------- recurrent cells


/// A recurrent state: h, and c for LSTMs (invalid handles mean zeros).
struct RNNState {
  Tensor h;
  Tensor c;
};

struct CellOptions {
  bool bias = true;
  /// RNNCell only.
  Activation nonlinearity = Activation::tanh;
  /// LSTMCell only: the gate work as one lstm_cell op (false: element-wise ops).
  bool fused = true;
  DType dtype = float32;
};

enum class CellKind { rnn, lstm, gru };

/// What the three cells share: their variables (weight_ih [G*H, D],
/// weight_hh [G*H, H], bias_ih, bias_hh [G*H]) and one step.
class CellBase : public Module {
 public:
  int64_t input_size() const { return input_; }
  int64_t hidden_size() const { return hidden_; }
  std::string describe() const override;

 protected:
  CellBase(CellKind kind, int64_t input_size, int64_t hidden_size, CellOptions options);
  /// One step from `state` (invalid parts are zeros): x [N, D] -> state'.
  RNNState step(const Tensor& x, const RNNState& state);
  Tensor forward(const Tensor& x) override { return step(x, {}).h; }

 private:
  CellKind kind_;
  int64_t input_, hidden_;
  CellOptions options_;
};

/// h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh) (or relu). cell(x) starts from zeros.
class RNNCell : public CellBase {
 public:
  RNNCell(int64_t input_size, int64_t hidden_size, CellOptions options = {});
  std::string type_name() const override { return "RNNCell"; }
  using Module::operator();
  /// x [N, D], h [N, H] -> h' [N, H].
  Tensor operator()(const Tensor& x, const Tensor& h);
};

/// PyTorch's LSTMCell; cell(x) starts from zeros and returns h'.
class LSTMCell : public CellBase {
 public:
  LSTMCell(int64_t input_size, int64_t hidden_size, CellOptions options = {});
  std::string type_name() const override { return "LSTMCell"; }
  using Module::operator();
  /// x [N, D], state {h [N, H], c [N, H]} -> {h', c'}.
  RNNState operator()(const Tensor& x, const RNNState& state);
};

/// PyTorch's GRUCell; cell(x) starts from zeros.
class GRUCell : public CellBase {
 public:
  GRUCell(int64_t input_size, int64_t hidden_size, CellOptions options = {});
  std::string type_name() const override { return "GRUCell"; }
  using Module::operator();
  /// x [N, D], h [N, H] -> h' [N, H].
  Tensor operator()(const Tensor& x, const Tensor& h);
};

// ---------------------------------------------------------------- multi-layer RNN, LSTM, GRU

struct RNNOptions {
  int64_t num_layers = 1;
  /// RNN only.
  Activation nonlinearity = Activation::tanh;
  bool bias = true;
  /// Input and output [N, T, D] instead of [T, N, D] (the states stay [L, N, H]).
  bool batch_first = false;
  /// A second direction per layer, from the last step to the first (PyTorch's
  /// bidirectional): output [T, N, 2 H] (forward, then reverse features),
  /// states [2 L, N, H] (layer 0 forward, layer 0 reverse, layer 1 ...), the
  /// reverse variables named weight_ih_l{k}_reverse etc.
  bool bidirectional = false;
  /// LSTM only, 0 < proj_size < hidden_size: h = W_hr (o * tanh(c)) with
  /// weight_hr_l{k} [proj_size, hidden_size], so h, the states h and the
  /// output have proj_size features (PyTorch's LSTM with projections; c keeps hidden_size).
  int64_t proj_size = 0;
  /// Dropout on the outputs of every layer but the last (training mode only).
  double dropout = 0.0;
  /// LSTM only: each step's gate work as one lstm_cell op (false: element-wise ops).
  bool fused = true;
  DType dtype = float32;
};

/// The output sequence and the final state (h, and c for an LSTM, [L, N, H]).
struct RNNResult {
  Tensor output;
  RNNState state;
};

class RNNBase : public Module {
 public:
  int64_t input_size() const { return input_; }
  int64_t hidden_size() const { return hidden_; }
  int64_t num_layers() const { return options_.num_layers; }
  CellKind kind() const { return kind_; }
  std::string describe() const override;
  using Module::operator();
  /// x [T, N, D] and an initial state {h0, c0} [L, N, H] (invalid handles:
  /// zeros) -> the output [T, N, H] and the final state.
  RNNResult operator()(const Tensor& x, const RNNState& state);
  /// Padded sequences of different lengths, as PyTorch's
  /// pack_padded_sequence(x, lengths, enforce_sorted=False) -> rnn ->
  /// pad_packed_sequence(total_length=T): lengths [N] (int32 or int64, each
  /// in [1, T], checked when run; a placeholder fed with each batch). Steps
  /// past a sequence's end output zeros and leave its state alone, so the
  /// final state is each sequence's own last step (the reverse direction
  /// starts at it).
  RNNResult operator()(const Tensor& x, const RNNState& state, const Tensor& lengths);

 protected:
  RNNBase(CellKind kind, int64_t input_size, int64_t hidden_size, RNNOptions options);
  Tensor forward(const Tensor& x) override { return run(x, {}, {}).output; }

 private:
  RNNResult run(const Tensor& x, const RNNState& state, const Tensor& lengths);
  CellKind kind_;
  int64_t input_, hidden_;
  RNNOptions options_;
};

/// Elman RNN, tanh or relu (PyTorch's nn.RNN).
class RNN : public RNNBase {
 public:
  RNN(int64_t input_size, int64_t hidden_size, RNNOptions options = {});
  std::string type_name() const override { return "RNN"; }
};

/// PyTorch's nn.LSTM (with projections: RNNOptions::proj_size).
class LSTM : public RNNBase {
 public:
  LSTM(int64_t input_size, int64_t hidden_size, RNNOptions options = {});
  std::string type_name() const override { return "LSTM"; }
};

/// PyTorch's nn.GRU.
class GRU : public RNNBase {
 public:
  GRU(int64_t input_size, int64_t hidden_size, RNNOptions options = {});
  std::string type_name() const override { return "GRU"; }
};

// ---------------------------------------------------------------- language model

struct LanguageModelOptions {
  CellKind cell = CellKind::lstm;
  int64_t embed = 200;
  int64_t hidden = 200;
  int64_t layers = 2;
  /// On the embeddings, between recurrent layers and on the last layer's output.
  double dropout = 0.2;
  /// RNN cells only.
  Activation nonlinearity = Activation::tanh;
  bool fused = true;
  /// The decoder's weight is the encoder's table (PyTorch's word_language_model
  /// --tied, Press and Wolf 2017); needs embed == hidden.
  bool tie_weights = false;
};

/// PyTorch's word_language_model (and the course's LanguageModel): Embedding
/// "encoder" (U(-0.1, 0.1)), dropout, a recurrent "rnn", dropout, Linear
/// "decoder" (hidden -> vocabulary; weight U(-0.1, 0.1), bias zeros, or
/// the encoder's table with tie_weights). ids [T, N] -> logits [T, N, vocab].
class LanguageModel : public Module {
 public:
  LanguageModel(int64_t vocab, LanguageModelOptions options = {});
  std::string type_name() const override { return "LanguageModel"; }
  std::string describe() const override;
  using Module::operator();
  /// ids [T, N] and an initial state -> logits [T, N, vocab] and the final state.
  RNNResult operator()(const Tensor& ids, const RNNState& state);
  int64_t vocab() const { return vocab_; }
  const LanguageModelOptions& options() const { return options_; }

 protected:
  Tensor forward(const Tensor& ids) override { return run(ids, {}).output; }

 private:
  RNNResult run(const Tensor& ids, const RNNState& state);
  int64_t vocab_;
  LanguageModelOptions options_;
  Embedding& encoder_;
  RNNBase& rnn_;
  Linear& decoder_;
};

/// "rnn", "lstm" or "gru"; parse_cell_kind throws loom::Error for anything else.
std::string cell_kind_name(CellKind kind);
CellKind parse_cell_kind(const std::string& name);

}  // namespace loom::nn
