// Sequence models: Embedding, recurrent cells, multi-layer RNN/LSTM/GRU
// unrolled in the static graph, and the word-level language model.

#include "frontend/rnn.hpp"

#include <cmath>
#include <sstream>

namespace loom::nn {

namespace {

int64_t gate_count(CellKind k) { return k == CellKind::lstm ? 4 : k == CellKind::gru ? 3 : 1; }

/// One layer's (or one cell's) variables in PyTorch's layout.
struct Weights {
  Tensor w_ih, w_hh, b_ih, b_hh;  // biases invalid without bias
  Tensor w_hr;                    // an LSTM's projection [P, H] (proj_size), else invalid
};

/// What a step needs besides its inputs.
struct StepSpec {
  CellKind kind;
  Activation act;
  bool fused;
  int64_t hidden;
};


/// The bias added to the input projection: both biases; for the GRU all but
/// b_hn, which stays on the hidden side (r multiplies W_hn h + b_hn).
Tensor input_bias(CellKind kind, const Weights& w) {
  if (!w.b_ih.valid()) return {};
  if (kind != CellKind::gru) return w.b_ih + w.b_hh;
  std::vector<Tensor> h = split(w.b_hh, 3, 0);
  return w.b_ih + concat({h[0], h[1], zeros_like(h[2])}, 0);
}

/// The GRU's b_hn (invalid for other cells or without bias).
Tensor hidden_bias(CellKind kind, const Weights& w) {
  if (kind != CellKind::gru || !w.b_hh.valid()) return {};
  return split(w.b_hh, 3, 0)[2];
}

/// x [rows, D] -> x W_ih^T + bias [rows, G*H]: one GEMM for all rows.
Tensor input_projection(const StepSpec& s, const Tensor& x, const Weights& w) {
  Tensor y = matmul(x, transpose(w.w_ih));
  Tensor b = input_bias(s.kind, w);
  return b.valid() ? y + b : y;
}

/// Zeros shaped like the first H columns of gi (rows may be dynamic).
Tensor zero_state(const Tensor& gi, int64_t H) { return zeros_like(slice(gi, {{}, {0, H, 1}})); }

RNNState lstm_step(const StepSpec& s, const Tensor& gi, const Tensor& gh, const RNNState& prev) {
  const int64_t H = s.hidden;
  Tensor c_prev = prev.c.valid() ? prev.c : zero_state(gi, H);
  if (s.fused) {
    std::vector<Tensor> r = lstm_cell(c_prev, gi, gh);
    return {r[0], r[1]};
  }
  Tensor pre = gh.valid() ? gi + gh : gi;
  std::vector<Tensor> q = split(pre, 4, -1);
  Tensor c = sigmoid(q[1]) * c_prev + sigmoid(q[0]) * tanh(q[2]);
  return {sigmoid(q[3]) * tanh(c), c};
}

RNNState gru_step(const Tensor& gi, const Tensor& gh, const Tensor& b_hn, const RNNState& prev) {
  std::vector<Tensor> i = split(gi, 3, -1);
  Tensor r, z, hn;  // hn = W_hn h + b_hn (invalid: zero)
  if (gh.valid()) {
    std::vector<Tensor> q = split(gh, 3, -1);
    r = sigmoid(i[0] + q[0]), z = sigmoid(i[1] + q[1]), hn = b_hn.valid() ? q[2] + b_hn : q[2];
  } else {  // from a zero state
    r = sigmoid(i[0]), z = sigmoid(i[1]), hn = b_hn;
  }
  Tensor n = tanh(hn.valid() ? i[2] + r * hn : i[2]);
  // h' = (1 - z) n + z h, in PyTorch's arrangement n + z (h - n) (the same rounding).
  return {prev.h.valid() ? n + z * (prev.h - n) : n - z * n, {}};
}

/// One step: gi is the step's input projection [N, G*H] (biases included as
/// input_bias says), w_hh_t the transposed hidden weight [H, G*H], b_hn the
/// GRU's hidden_bias.
RNNState cell_step(const StepSpec& s, const Tensor& gi, const RNNState& prev, const Tensor& w_hh_t, const Tensor& b_hn) {
  Tensor gh = prev.h.valid() ? matmul(prev.h, w_hh_t) : Tensor();
  switch (s.kind) {
    case CellKind::lstm:
      return lstm_step(s, gi, gh, prev);
    case CellKind::gru:
      return gru_step(gi, gh, b_hn, prev);
    case CellKind::rnn:
      break;
  }
  return {activate(s.act, gh.valid() ? gi + gh : gi), {}};
}

/// Step t's state where the step is valid (valid[t] [N, 1] bool), the
/// previous one elsewhere: a sequence past its end keeps its state.
RNNState keep_where(const Tensor& valid, const RNNState& next, const RNNState& prev, const Tensor& gi) {
  auto pick = [&](const Tensor& a, const Tensor& b) {
    return a.valid() ? where(valid, a, b.valid() ? b : zero_state(gi, a.shape()[1])) : a;
  };
  return {pick(next.h, prev.h), pick(next.c, prev.c)};
}

/// One direction of one layer over the whole sequence x [T, N, D]: the
/// output [T, N, H] and the final state. `reverse` runs from the last step
/// to the first. With `valid` (one [N, 1] bool per step), steps past a
/// sequence's length output zeros and keep the state.
RNNResult run_layer(const StepSpec& s, const Tensor& x, const Weights& w, RNNState state, bool reverse,
                    const std::vector<Tensor>& valid) {
  const int64_t T = x.shape()[0], D = w.w_ih.shape()[1], GH = gate_count(s.kind) * s.hidden;
  Tensor gi_all = input_projection(s, reshape(x, {-1, D}), w);  // [T*N, G*H]
  // Step t's rows are a view of the one projection: split's gradient is one concat.
  std::vector<Tensor> gis = split(reshape(gi_all, {T, -1, GH}), T, 0);
  Tensor w_hh_t = transpose(w.w_hh), b_hn = hidden_bias(s.kind, w);
  const Tensor w_hr_t = w.w_hr.valid() ? transpose(w.w_hr) : Tensor();
  std::vector<Tensor> hs(static_cast<size_t>(T));
  for (int64_t k = 0; k < T; ++k) {
    const size_t t = size_t(reverse ? T - 1 - k : k);
    const Tensor gi = reshape(gis[t], {-1, GH});
    RNNState next = cell_step(s, gi, state, w_hh_t, b_hn);
    if (w_hr_t.valid()) next.h = matmul(next.h, w_hr_t);  // an LSTM's projection: h = W_hr (o * tanh(c))
    // Every length is at least 1: the forward direction's first step is always valid.
    if (valid.empty() || (t == 0 && !reverse)) {
      hs[t] = next.h, state = next;
      continue;
    }
    hs[t] = where(valid[t], next.h, zeros_like(next.h));
    state = keep_where(valid[t], next, state, gi);
  }
  return {stack(hs, 0), state};
}

void check_sizes(const char* what, int64_t input, int64_t hidden) {
  LOOM_CHECK(input > 0 && hidden > 0, what, ": input_size and hidden_size must be positive, got ", input, " and ",
             hidden);
  // The weights [4 H, max(I, H)] (at most: an LSTM's, in float64) must be an array loom can hold.
  LOOM_CHECK(valid_shape({4, hidden, std::max(input, hidden)}, 8), what, ": input_size ", input, " and hidden_size ",
             hidden, " make weights too large");
}

void check_nonlinearity(const char* what, Activation a) {
  LOOM_CHECK(a == Activation::tanh || a == Activation::relu, what, ": nonlinearity must be tanh or relu, got ",
             activation_name(a));
}

/// PyTorch's initialization of every recurrent weight and bias.
Initializer recurrent_init(int64_t hidden) {
  const double b = 1.0 / std::sqrt(double(hidden));
  return init::uniform(-b, b);
}

/// "x [N, D]" checks shared by the cells.
void check_step_input(const std::string& where, const Tensor& x, int64_t D, DType dtype) {
  const Shape& s = x.shape();
  LOOM_CHECK(s.size() == 2 && (s[1] == D || s[1] < 0), where, ": expected input [N, ", D, "] or unbatched [", D,
             "], got ", S(s));
  LOOM_CHECK(x.dtype() == dtype, where, ": expected ", dtype_name(dtype), " input, got ", dtype_name(x.dtype()));
}

/// Checks the state t against want ([L, N, H] or [N, H]): the layers and
/// hidden size exactly, the batch N when both are known (else when run: see
/// checked_shape).
void check_state(const std::string& where, const char* what, const Tensor& t, const Shape& want, DType dtype) {
  if (!t.valid()) return;
  const Shape& s = t.shape();
  bool ok = s.size() == want.size() && t.dtype() == dtype;
  for (size_t i = 0; ok && i < s.size(); ++i) ok = s[i] == want[i] || ((s[i] < 0 || want[i] < 0) && i + 2 == s.size());
  LOOM_CHECK(ok, where, ": ", what, " must be ", dtype_name(dtype), S(want), ", got '", t.name(), "' ",
             dtype_name(t.dtype()), S(s), s.size() == want.size() ? " (only its batch may be unknown)" : "");
}

/// PyTorch's unbatched call: a state without its batch axis gets one (of
/// size 1) at `axis`, or loses it again (`add` false). An unbatched input
/// takes unbatched states only (PyTorch's "hx should also be 2-D").
RNNState batch_axis(const std::string& where, const RNNState& s, size_t unbatched_rank, int64_t axis, bool add) {
  auto one = [&](const Tensor& t, const char* what) {
    if (!t.valid()) return t;
    if (!add) return squeeze(t, {axis});
    LOOM_CHECK(t.shape().size() == unbatched_rank, where, ": an unbatched input takes an unbatched ", what, " (",
               unbatched_rank, " dims), got '", t.name(), "' ", S(t.shape()));
    return expand_dims(t, {axis});
  };
  return {one(s.h, "state h"), one(s.c, "state c")};
}

/// A view of x shaped `want`: x's own dims where want has -1, the others
/// broadcast from one element (x and want of one rank).
Tensor view_shaped(const Tensor& x, const Shape& want) {
  std::vector<Slice> s(size_t(x.ndim()));
  for (size_t i = 0; i < want.size(); ++i)
    if (want[i] >= 0) s[i] = Slice::range(0, 1);
  return broadcast_to(slice(x, s), want);
}

/// t, checked when run to be shaped `want`, whose -1 are x's dims (x and
/// want of one rank; the other dims known, so comparing sizes suffices): a
/// state of another batch would otherwise broadcast silently. The check's
/// node is named `name`, which its error shows.
Tensor checked_shape(const Tensor& t, const Tensor& x, const Shape& want, const std::string& name) {
  if (!t.valid()) return t;
  Shape resolved = want;
  for (size_t i = 0; i < want.size(); ++i)
    if (want[i] < 0) resolved[i] = x.shape()[i];
  if (is_static(t.shape()) && t.shape() == resolved) return t;
  return t.graph().add1("reshape_like", {t, view_shaped(x, want)}, {}, name);
}

}  // namespace

// ---------------------------------------------------------------- Embedding

namespace {

/// A padding index in [-num, num) as a row in [0, num).
std::optional<int64_t> padding_row(const char* who, std::optional<int64_t> p, int64_t num) {
  if (!p) return p;
  LOOM_CHECK(*p >= -num && *p < num, who, ": padding_idx ", *p, " out of range for ", num, " embeddings");
  return *p < 0 ? *p + num : *p;
}

/// `base` (N(0, 1) when empty), then the padding row zeroed.
Initializer table_init(Initializer base, std::optional<int64_t> padding) {
  if (!base) base = init::normal(0.0, 1.0);
  if (!padding) return base;
  return [base, p = *padding](const NDArray& v, uint64_t seed) {
    base(v, seed);
    v.slice({{p, p + 1, 1}}).fill(0.0);
  };
}

void check_table(const char* who, int64_t num, int64_t dim, DType dtype) {
  LOOM_CHECK(num > 0 && dim > 0, who, ": num_embeddings and embedding_dim must be positive, got (", num, ", ", dim,
             ")");
  LOOM_CHECK(valid_shape({num, dim}, 8), who, ": a table of ", num, " x ", dim, " is too large");
  LOOM_CHECK(is_floating(dtype), who, ": dtype must be floating, got ", dtype_name(dtype));
}

}  // namespace

Embedding::Embedding(int64_t num, int64_t dim, EmbeddingOptions options) : num_(num), dim_(dim), options_(std::move(options)) {
  check_table("Embedding", num_, dim_, options_.dtype);
  options_.padding_idx = padding_row("Embedding", options_.padding_idx, num_);
  options_.init = table_init(options_.init, options_.padding_idx);
}

std::string Embedding::describe() const {
  std::ostringstream os;
  os << "Embedding(" << num_ << ", " << dim_;
  if (options_.padding_idx) os << ", padding_idx=" << *options_.padding_idx;
  os << ")";
  return os.str();
}

Tensor Embedding::forward(const Tensor& ids) {
  LOOM_CHECK(ids.dtype() == int32 || ids.dtype() == int64, where(ids), ": ids '", ids.name(),
             "' must be int32 or int64, got ", dtype_name(ids.dtype()));
  weight_ = parameter(ids, "weight", {num_, dim_}, options_.init, options_.dtype);
  Tensor y = gather(weight_, ids);
  if (!options_.padding_idx) return y;
  // The padding row's value passes through; its gradient does not.
  Tensor pad = expand_dims(ids == scalar_like(ids, double(*options_.padding_idx)), {-1});
  return loom::where(pad, stop_gradient(y), y);
}

// ---------------------------------------------------------------- EmbeddingBag

EmbeddingBag::EmbeddingBag(int64_t num, int64_t dim, EmbeddingBagOptions options)
    : num_(num), dim_(dim), options_(std::move(options)) {
  check_table("EmbeddingBag", num_, dim_, options_.dtype);
  options_.padding_idx = padding_row("EmbeddingBag", options_.padding_idx, num_);
  options_.init = table_init(options_.init, options_.padding_idx);
}

std::string EmbeddingBag::describe() const {
  std::ostringstream os;
  os << "EmbeddingBag(" << num_ << ", " << dim_ << ", mode="
     << (options_.mode == BagMode::sum    ? "sum"
         : options_.mode == BagMode::mean ? "mean"
                                          : "max");
  if (options_.padding_idx) os << ", padding_idx=" << *options_.padding_idx;
  if (options_.include_last_offset) os << ", include_last_offset";
  os << ")";
  return os.str();
}

Tensor EmbeddingBag::operator()(const Tensor& ids, const Tensor& offsets, const Tensor& per_sample_weights) {
  LOOM_CHECK(ids.valid() && offsets.valid(), "EmbeddingBag: ids or offsets is an empty Tensor handle");
  return in_scope(ids, [&] { return bags(ids, offsets, per_sample_weights); });
}

namespace {

/// Each flat position's bag: the number of bag starts at or before it, less one ([M] int64).
Tensor bag_of_position(const Tensor& ids, const Tensor& starts) {
  const Tensor at_or_after = reshape(arange_like(ids, 0), {-1, 1}) >= reshape(cast(starts, int64), {1, -1});
  return sum(cast(at_or_after, int64), {1}) - 1;
}

}  // namespace

Tensor EmbeddingBag::bags(const Tensor& ids, const Tensor& offsets, const Tensor& psw) {
  const std::string w = where(ids);
  const bool flat = offsets.valid();
  LOOM_CHECK(ids.dtype() == int32 || ids.dtype() == int64, w, ": ids '", ids.name(), "' must be int32 or int64, got ",
             dtype_name(ids.dtype()));
  LOOM_CHECK(flat ? ids.ndim() == 1 : ids.ndim() == 2, w, ": expected ",
             flat ? "flat ids [M] with offsets" : "ids [B, L]", ", got '", ids.name(), "' ", S(ids.shape()));
  if (flat)
    LOOM_CHECK(offsets.ndim() == 1 && (offsets.dtype() == int32 || offsets.dtype() == int64), w,
               ": offsets must be int32 or int64 [B], got '", offsets.name(), "' ", dtype_name(offsets.dtype()),
               S(offsets.shape()));
  LOOM_CHECK(!psw.valid() || options_.mode == BagMode::sum, w, ": per_sample_weights need mode sum (PyTorch's rule)");
  auto same_shape = [](const Shape& a, const Shape& b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i)
      if (a[i] != b[i] && a[i] >= 0 && b[i] >= 0) return false;
    return true;
  };
  LOOM_CHECK(!psw.valid() || (psw.dtype() == options_.dtype && same_shape(psw.shape(), ids.shape())), w,
             ": per_sample_weights must be ", dtype_name(options_.dtype), S(ids.shape()), " like the ids, got '",
             psw.name(), "' ", dtype_name(psw.dtype()), S(psw.shape()));
  weight_ = parameter(ids, "weight", {num_, dim_}, options_.init, options_.dtype);
  Tensor rows = gather(weight_, ids);  // [M, dim] or [B, L, dim]
  if (psw.valid()) rows = rows * expand_dims(psw, {-1});
  Tensor keep;  // [.., 1] bool: not the padding id
  if (options_.padding_idx) {
    keep = expand_dims(ids != double(*options_.padding_idx), {-1});
    rows = loom::where(keep, rows, zeros_like(rows));
  }
  std::vector<Slice> first_column(size_t(rows.ndim()), Slice::all());
  first_column.back() = Slice::range(0, 1);
  const Tensor ones = keep.valid() ? cast(keep, options_.dtype) : ones_like(slice(rows, first_column));  // [.., 1]
  Tensor total, count;              // [B, dim], [B, 1]
  Tensor starts = offsets, member;  // flat: the B bag starts; member [B, M, 1] bool
  if (flat) {
    if (options_.include_last_offset) starts = slice(offsets, {Slice::range(0, -1)});
    const Tensor bag = bag_of_position(ids, starts);
    const Tensor like = broadcast_to(reshape(cast(starts, options_.dtype), {-1, 1}), {-1, dim_});
    total = rows.graph().add1("gather_grad", {rows, bag, like});
    count = rows.graph().add1("gather_grad", {ones, bag, slice(like, {Slice::all(), Slice::range(0, 1)})});
    if (options_.mode == BagMode::max)
      member = expand_dims(reshape(arange_like(starts, 0), {-1, 1}) == reshape(bag, {1, -1}), {-1});
  } else {
    total = sum(rows, {1});
    count = sum(ones, {1});
  }
  if (options_.mode == BagMode::sum) return total;
  if (options_.mode == BagMode::mean) return total / maximum(count, scalar_like(count, 1.0));
  // max: over the bag's rows (not the padding); an empty bag gives zeros.
  Tensor candidates = flat ? expand_dims(rows, {0}) : rows;  // [1, M, dim] or [B, L, dim]
  Tensor in_bag = flat ? member : keep;
  if (flat && keep.valid()) in_bag = logical_and(member, expand_dims(keep, {0}));
  if (in_bag.valid()) candidates = loom::where(in_bag, candidates, full_like(candidates, -INFINITY, options_.dtype));
  const Tensor largest = max(candidates, {1});
  return loom::where(count > 0.0, largest, zeros_like(largest));
}

// ---------------------------------------------------------------- cells

std::string cell_kind_name(CellKind kind) {
  return kind == CellKind::lstm ? "lstm" : kind == CellKind::gru ? "gru" : "rnn";
}

CellKind parse_cell_kind(const std::string& name) {
  if (name == "rnn") return CellKind::rnn;
  if (name == "lstm") return CellKind::lstm;
  if (name == "gru") return CellKind::gru;
  fail("unknown recurrent cell '", name, "' (rnn, lstm, gru)");
}

CellBase::CellBase(CellKind kind, int64_t input, int64_t hidden, CellOptions options)
    : kind_(kind), input_(input), hidden_(hidden), options_(options) {
  const char* what = kind == CellKind::lstm ? "LSTMCell" : kind == CellKind::gru ? "GRUCell" : "RNNCell";
  check_sizes(what, input, hidden);
  check_nonlinearity(what, options_.nonlinearity);
  LOOM_CHECK(is_floating(options_.dtype), "cell: dtype must be floating, got ", dtype_name(options_.dtype));
}

std::string CellBase::describe() const {
  std::ostringstream os;
  os << type_name() << "(" << input_ << ", " << hidden_;
  if (kind_ == CellKind::rnn) os << ", " << activation_name(options_.nonlinearity);
  if (!options_.bias) os << ", no bias";
  os << ")";
  return os.str();
}

RNNState CellBase::step(const Tensor& x, const RNNState& state) {
  const std::string w = where(x);
  if (x.shape().size() == 1) {  // unbatched [D] with states [H] (PyTorch's): a batch of one
    const RNNState r = step(expand_dims(x, {0}), batch_axis(w, state, 1, 0, true));
    return batch_axis(w, r, 1, 0, false);
  }
  check_step_input(w, x, input_, options_.dtype);
  const int64_t H = hidden_, GH = gate_count(kind_) * H;
  const Shape hs{x.shape()[0], H};
  check_state(w, "h", state.h, hs, options_.dtype);
  check_state(w, "c", state.c, hs, options_.dtype);
  const RNNState checked{checked_shape(state.h, x, {-1, H}, type_name() + "_h_must_be_[N,H]"),
                         checked_shape(state.c, x, {-1, H}, type_name() + "_c_must_be_[N,H]")};
  const Tensor xc =
      checked_shape(x, x, {-1, input_}, type_name() + "_input_must_be_[N," + std::to_string(input_) + "]");
  const DType dt = options_.dtype;
  Initializer init = recurrent_init(H);
  Weights wt{
      parameter(x, "weight_ih", {GH, input_}, init, dt), parameter(x, "weight_hh", {GH, H}, init, dt), {}, {}, {}};
  if (options_.bias) wt.b_ih = parameter(x, "bias_ih", {GH}, init, dt), wt.b_hh = parameter(x, "bias_hh", {GH}, init, dt);
  StepSpec s{kind_, options_.nonlinearity, options_.fused, H};
  // A cell's hidden GEMM runs even from a given zero state; only a missing h skips it.
  return cell_step(s, input_projection(s, xc, wt), checked, transpose(wt.w_hh), hidden_bias(kind_, wt));
}

RNNCell::RNNCell(int64_t input, int64_t hidden, CellOptions options) : CellBase(CellKind::rnn, input, hidden, options) {}
Tensor RNNCell::operator()(const Tensor& x, const Tensor& h) {
  return in_scope(x, [&] { return step(x, {h, {}}).h; });
}

LSTMCell::LSTMCell(int64_t input, int64_t hidden, CellOptions options)
    : CellBase(CellKind::lstm, input, hidden, options) {}
RNNState LSTMCell::operator()(const Tensor& x, const RNNState& state) {
  return in_scope(x, [&] { return step(x, state); });
}

GRUCell::GRUCell(int64_t input, int64_t hidden, CellOptions options) : CellBase(CellKind::gru, input, hidden, options) {}
Tensor GRUCell::operator()(const Tensor& x, const Tensor& h) {
  return in_scope(x, [&] { return step(x, {h, {}}).h; });
}

// ---------------------------------------------------------------- RNN, LSTM, GRU

RNNBase::RNNBase(CellKind kind, int64_t input, int64_t hidden, RNNOptions options)
    : kind_(kind), input_(input), hidden_(hidden), options_(options) {
  const char* what = kind == CellKind::lstm ? "LSTM" : kind == CellKind::gru ? "GRU" : "RNN";
  check_sizes(what, input, hidden);
  check_nonlinearity(what, options_.nonlinearity);
  LOOM_CHECK(options_.num_layers > 0, what, ": num_layers must be positive, got ", options_.num_layers);
  LOOM_CHECK(options_.dropout >= 0 && options_.dropout < 1, what, ": dropout must be in [0, 1), got ",
             options_.dropout);
  LOOM_CHECK(is_floating(options_.dtype), what, ": dtype must be floating, got ", dtype_name(options_.dtype));
  LOOM_CHECK(options_.proj_size == 0 || kind == CellKind::lstm, what, ": proj_size is an LSTM's only (PyTorch's rule)");
  LOOM_CHECK(options_.proj_size >= 0 && options_.proj_size < hidden, what, ": proj_size must be in [0, hidden_size ",
             hidden, "), got ", options_.proj_size);
}

std::string RNNBase::describe() const {
  std::ostringstream os;
  os << type_name() << "(" << input_ << ", " << hidden_ << ", num_layers=" << options_.num_layers;
  if (kind_ == CellKind::rnn) os << ", " << activation_name(options_.nonlinearity);
  if (!options_.bias) os << ", no bias";
  if (options_.batch_first) os << ", batch_first";
  if (options_.bidirectional) os << ", bidirectional";
  if (options_.proj_size > 0) os << ", proj_size=" << options_.proj_size;
  if (options_.dropout > 0) os << ", dropout=" << options_.dropout;
  os << ")";
  return os.str();
}

RNNResult RNNBase::operator()(const Tensor& x, const RNNState& state) {
  return in_scope(x, [&] { return run(x, state, {}); });
}

RNNResult RNNBase::operator()(const Tensor& x, const RNNState& state, const Tensor& lengths) {
  LOOM_CHECK(lengths.valid(), where(x), ": lengths is an empty Tensor handle");
  return in_scope(x, [&] { return run(x, state, lengths); });
}

namespace {

/// One [N, 1] bool per step of x [T, N, D]: t < lengths[n], the lengths
/// ([N], int32 or int64) checked when run to lie in [1, T] and to be N.
std::vector<Tensor> step_masks(const std::string& where, const std::string& type, const Tensor& lengths,
                               const Tensor& x) {
  const Shape& ls = lengths.shape();
  const int64_t T = x.shape()[0], N = x.shape()[1];
  LOOM_CHECK(lengths.dtype() == int32 || lengths.dtype() == int64, where, ": lengths '", lengths.name(),
             "' must be int32 or int64, got ", dtype_name(lengths.dtype()));
  LOOM_CHECK(ls.size() == 1 && (ls[0] == N || ls[0] < 0 || N < 0), where, ": lengths must be [N] for input [T, N, D] ",
             S(x.shape()), ", got '", lengths.name(), "' ", S(ls));
  Graph& g = x.graph();
  const Tensor batch = reshape(slice(x, {Slice::range(0, 1), {}, Slice::range(0, 1)}), {-1});  // [N]
  const Tensor len = checked_shape(cast(lengths, float64), batch, {-1}, type + "_lengths_must_be_[N]");
  const std::string bound = "[1," + std::to_string(T) + "]";
  const Tensor in_range =
      g.add1("check_range", {len}, {{"low", 1.0}, {"high", double(T)}, {"expected", "sequence lengths in " + bound}},
             type + "_lengths_must_be_in_" + bound);
  std::vector<double> steps(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) steps[size_t(t)] = double(t);
  const Tensor valid = g.constant(NDArray::from<double>(steps, {T, 1})) < reshape(in_range, {1, -1});  // [T, N]
  std::vector<Tensor> masks;
  for (const Tensor& m : split(valid, T, 0)) masks.push_back(reshape(m, {-1, 1}));
  return masks;
}

}  // namespace

RNNResult RNNBase::run(const Tensor& x_in, const RNNState& init_state, const Tensor& lengths) {
  const std::string w = where(x_in);
  const Shape& xs = x_in.shape();
  if (xs.size() == 2) {  // unbatched [T, D] with states [L, H] (PyTorch's; batch_first does not apply)
    LOOM_CHECK(!lengths.valid(), w, ": lengths need a batch: input [T, N, D], got unbatched ", S(xs));
    const int64_t axis = options_.batch_first ? 0 : 1;
    RNNResult r = run(expand_dims(x_in, {axis}), batch_axis(w, init_state, 2, 1, true), {});
    return {squeeze(r.output, {axis}), batch_axis(w, r.state, 2, 1, false)};
  }
  LOOM_CHECK(xs.size() == 3, w, ": expected input ", options_.batch_first ? "[N, T, D]" : "[T, N, D]",
             " or unbatched [T, D], got ", S(xs));
  LOOM_CHECK(x_in.dtype() == options_.dtype, w, ": expected ", dtype_name(options_.dtype), " input, got ",
             dtype_name(x_in.dtype()));
  Tensor x = options_.batch_first ? permute(x_in, {1, 0, 2}) : x_in;
  const int64_t dirs = options_.bidirectional ? 2 : 1;
  const int64_t T = x.shape()[0], N = x.shape()[1], L = options_.num_layers * dirs, H = hidden_;
  LOOM_CHECK(T > 0, w, ": the sequence length must be known and positive (the graph unrolls it), got input ", S(xs));
  LOOM_CHECK(x.shape()[2] == input_ || x.shape()[2] < 0, w, ": expected input size ", input_, ", got ", S(xs));
  const int64_t P = options_.proj_size > 0 ? options_.proj_size : H;  // h's size (an LSTM's projection)
  const std::string layers = dirs == 2 ? "[2L,N," : "[L,N,";
  check_state(w, "the initial h", init_state.h, {L, N, P}, options_.dtype);
  check_state(w, "the initial c", init_state.c, {L, N, H}, options_.dtype);
  LOOM_CHECK(kind_ == CellKind::lstm || !init_state.c.valid(), w, ": only an LSTM has a cell state c");
  x = checked_shape(x, x, {-1, -1, input_}, type_name() + "_input_must_be_[T,N," + std::to_string(input_) + "]");
  const RNNState state0{
      checked_shape(init_state.h, x, {L, -1, P}, type_name() + "_initial_h_must_be_" + layers + (P == H ? "H]" : "P]")),
      checked_shape(init_state.c, x, {L, -1, H}, type_name() + "_initial_c_must_be_" + layers + "H]")};
  auto per_layer = [&](const Tensor& t, int64_t size) {
    std::vector<Tensor> out(static_cast<size_t>(L));
    if (!t.valid()) return out;
    std::vector<Tensor> parts = split(t, L, 0);
    for (int64_t l = 0; l < L; ++l) out[size_t(l)] = reshape(parts[size_t(l)], {-1, size});
    return out;
  };
  std::vector<Tensor> h0 = per_layer(state0.h, P), c0 = per_layer(state0.c, H);
  const std::vector<Tensor> valid = lengths.valid() ? step_masks(w, type_name(), lengths, x) : std::vector<Tensor>{};

  const int64_t G = gate_count(kind_);
  const DType dt = options_.dtype;
  Initializer init = recurrent_init(H);
  StepSpec spec{kind_, options_.nonlinearity, options_.fused, H};
  std::vector<Tensor> hn, cn;
  for (int64_t l = 0; l < options_.num_layers; ++l) {
    const int64_t in = l == 0 ? input_ : P * dirs;
    std::vector<Tensor> outputs;
    for (int64_t d = 0; d < dirs; ++d) {  // PyTorch's order of parameters and states: forward, then reverse
      const std::string k = "_l" + std::to_string(l) + (d == 1 ? "_reverse" : "");
      Weights wt{parameter(x, "weight_ih" + k, {G * H, in}, init, dt),
                 parameter(x, "weight_hh" + k, {G * H, P}, init, dt),
                 {},
                 {},
                 {}};
      if (options_.bias)
        wt.b_ih = parameter(x, "bias_ih" + k, {G * H}, init, dt),
        wt.b_hh = parameter(x, "bias_hh" + k, {G * H}, init, dt);
      if (P != H) wt.w_hr = parameter(x, "weight_hr" + k, {P, H}, init, dt);
      const size_t at = size_t(l * dirs + d);
      RNNResult r = run_layer(spec, x, wt, {h0[at], c0[at]}, d == 1, valid);
      outputs.push_back(r.output);
      hn.push_back(r.state.h);
      if (kind_ == CellKind::lstm) cn.push_back(r.state.c);
    }
    x = dirs == 1 ? outputs[0] : concat(outputs, -1);
    if (l + 1 < options_.num_layers && training() && options_.dropout > 0) x = dropout(x, options_.dropout);
  }
  RNNResult out{options_.batch_first ? permute(x, {1, 0, 2}) : x, {stack(hn, 0), {}}};
  if (kind_ == CellKind::lstm) out.state.c = stack(cn, 0);
  return out;
}

RNN::RNN(int64_t input, int64_t hidden, RNNOptions options) : RNNBase(CellKind::rnn, input, hidden, options) {}
LSTM::LSTM(int64_t input, int64_t hidden, RNNOptions options) : RNNBase(CellKind::lstm, input, hidden, options) {}
GRU::GRU(int64_t input, int64_t hidden, RNNOptions options) : RNNBase(CellKind::gru, input, hidden, options) {}

// ---------------------------------------------------------------- LanguageModel

namespace {

std::shared_ptr<RNNBase> make_rnn(const LanguageModelOptions& o) {
  RNNOptions r{.num_layers = o.layers, .nonlinearity = o.nonlinearity, .dropout = o.dropout, .fused = o.fused};
  switch (o.cell) {
    case CellKind::lstm:
      return std::make_shared<LSTM>(o.embed, o.hidden, r);
    case CellKind::gru:
      return std::make_shared<GRU>(o.embed, o.hidden, r);
    case CellKind::rnn:
      break;
  }
  return std::make_shared<RNN>(o.embed, o.hidden, r);
}

LanguageModelOptions checked(int64_t vocab, LanguageModelOptions o) {
  LOOM_CHECK(vocab > 0, "LanguageModel: the vocabulary must not be empty");
  LOOM_CHECK(o.embed > 0 && o.hidden > 0 && o.layers > 0, "LanguageModel: embed, hidden and layers must be positive");
  LOOM_CHECK(o.dropout >= 0 && o.dropout < 1, "LanguageModel: dropout must be in [0, 1), got ", o.dropout);
  LOOM_CHECK(!o.tie_weights || o.embed == o.hidden, "LanguageModel: tied weights need embed == hidden, got ", o.embed,
             " and ", o.hidden);
  return o;
}

}  // namespace

LanguageModel::LanguageModel(int64_t vocab, LanguageModelOptions options)
    : vocab_(vocab),
      options_(checked(vocab, options)),
      encoder_(register_module("encoder", Embedding(vocab, options.embed, {.init = init::uniform(-0.1, 0.1)}))),
      rnn_(static_cast<RNNBase&>(register_module("rnn", make_rnn(options)))),
      decoder_(register_module(
          "decoder", Linear(options.hidden, vocab, {.weight_init = init::uniform(-0.1, 0.1), .bias_init = init::zeros()}))) {}

std::string LanguageModel::describe() const {
  std::ostringstream os;
  os << "LanguageModel(vocab=" << vocab_ << ", " << cell_kind_name(options_.cell) << ", dropout=" << options_.dropout
     << (options_.tie_weights ? ", tied)" : ")");
  return os.str();
}

RNNResult LanguageModel::operator()(const Tensor& ids, const RNNState& state) {
  return in_scope(ids, [&] { return run(ids, state); });
}

RNNResult LanguageModel::run(const Tensor& ids, const RNNState& state) {
  LOOM_CHECK(ids.ndim() == 2, where(ids), ": expected ids [T, N], got ", S(ids.shape()));
  const bool drop = training() && options_.dropout > 0;
  Tensor e = encoder_(ids);
  if (options_.tie_weights) decoder_.tie_weight(encoder_.weight());
  if (drop) e = dropout(e, options_.dropout);
  RNNResult r = rnn_(e, state);
  Tensor y = drop ? dropout(r.output, options_.dropout) : r.output;
  return {decoder_(y), r.state};
}

}  // namespace loom::nn
