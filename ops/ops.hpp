#pragma once
/// The op library: free functions and operators that add nodes to the graph
/// of their (first) tensor argument. Each op is defined in ops/<family>.cpp.
/// Binary ops broadcast (numpy rules) and need equal dtypes: a scalar operand
/// takes the tensor's dtype, tensors of different dtypes need an explicit cast.

#include <concepts>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "core/autodiff.hpp"
#include "core/graph.hpp"

namespace loom {

// ---- element-wise (ops/elementwise.cpp)
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor abs(const Tensor& x);
Tensor sign(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor relu(const Tensor& x);
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
/// a / b, true division as PyTorch's (integer and bool operands give float32).
Tensor div(const Tensor& a, const Tensor& b);
/// a / b rounded toward zero, of integer dtypes (PyTorch's div with rounding_mode="trunc").
Tensor trunc_divide(const Tensor& a, const Tensor& b);
Tensor pow(const Tensor& a, const Tensor& b);
Tensor pow(const Tensor& a, double exponent);
Tensor maximum(const Tensor& a, const Tensor& b);
Tensor minimum(const Tensor& a, const Tensor& b);
Tensor eq(const Tensor& a, const Tensor& b);
Tensor ne(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);
Tensor le(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, const Tensor& b);
Tensor ge(const Tensor& a, const Tensor& b);
/// cond ? a : b, element-wise with broadcasting; cond is bool.
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
struct Scalar;
/// With a scalar branch, the result's dtype is PyTorch's, as for arithmetic
/// (see Scalar): where(c, int64 x, 2.5) is float32, not a truncated 2.
Tensor where(const Tensor& cond, const Tensor& a, Scalar b);
Tensor where(const Tensor& cond, Scalar a, const Tensor& b);
Tensor cast(const Tensor& x, DType dtype);
Tensor identity(const Tensor& x);
/// x in the forward pass; blocks gradients.
Tensor stop_gradient(const Tensor& x);
/// A tensor of `shape` filled with `value` (shape must be static).
Tensor full(Graph& g, const Shape& shape, double value, DType dtype = float32);
/// Filled with `value`, shaped like x (dynamic dims follow x); dtype defaults to x's.
Tensor full_like(const Tensor& x, double value);
Tensor full_like(const Tensor& x, double value, DType dtype);
Tensor zeros_like(const Tensor& x);
Tensor ones_like(const Tensor& x);
/// A scalar constant of x's dtype in x's graph.
Tensor scalar_like(const Tensor& x, double value);

Tensor operator-(const Tensor& x);
Tensor operator+(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a, const Tensor& b);
Tensor operator*(const Tensor& a, const Tensor& b);
Tensor operator/(const Tensor& a, const Tensor& b);
/// A scalar operand of arithmetic, and whether it was written as an integer:
/// its type decides the result's as in PyTorch. An integral scalar keeps the
/// tensor's dtype (a bool tensor becomes int64) and must fit it; a floating
/// one makes an integer or bool tensor float32 (int64 x + 2.5 is 3.5, not 3).
struct Scalar {
  double value;
  bool integral;
  template <std::integral I>
  Scalar(I v) : value(double(v)), integral(true) {}  // NOLINT: implicit, as a literal
  template <std::floating_point F>
  Scalar(F v) : value(double(v)), integral(false) {}  // NOLINT: implicit, as a literal
};
Tensor operator+(const Tensor& a, Scalar b);
Tensor operator-(const Tensor& a, Scalar b);
Tensor operator*(const Tensor& a, Scalar b);
/// `/` and div() divide truly, as PyTorch: integer and bool operands give float32.
Tensor operator/(const Tensor& a, Scalar b);
Tensor operator+(Scalar a, const Tensor& b);
Tensor operator-(Scalar a, const Tensor& b);
Tensor operator*(Scalar a, const Tensor& b);
Tensor operator/(Scalar a, const Tensor& b);
/// x limited to [lo, hi] (either bound optional), as torch.clamp: NaN stays
/// NaN, lo > hi gives hi, the gradient is 1 inside the closed interval and 0
/// outside; a floating bound makes an integer tensor float32.
Tensor clamp(const Tensor& x, std::optional<Scalar> lo, std::optional<Scalar> hi = {});
Tensor operator==(const Tensor& a, const Tensor& b);
Tensor operator!=(const Tensor& a, const Tensor& b);
Tensor operator<(const Tensor& a, const Tensor& b);
Tensor operator<=(const Tensor& a, const Tensor& b);
Tensor operator>(const Tensor& a, const Tensor& b);
Tensor operator>=(const Tensor& a, const Tensor& b);
Tensor operator==(const Tensor& a, double b);
Tensor operator!=(const Tensor& a, double b);
Tensor operator<(const Tensor& a, double b);
Tensor operator<=(const Tensor& a, double b);
Tensor operator>(const Tensor& a, double b);
Tensor operator>=(const Tensor& a, double b);
/// Element-wise logic of bool tensors (torch.logical_and/or/not; & | ~ on
/// bool tensors), broadcasting as the other binary ops.
Tensor logical_and(const Tensor& a, const Tensor& b);
Tensor logical_or(const Tensor& a, const Tensor& b);
Tensor logical_not(const Tensor& a);
Tensor operator&(const Tensor& a, const Tensor& b);
Tensor operator|(const Tensor& a, const Tensor& b);
Tensor operator~(const Tensor& a);

// ---- activations from the shared element-wise list (ops/elementwise.cpp)
Tensor erf(const Tensor& x);
/// log(1 + e^x), and x itself above 20 (PyTorch's softplus, beta 1, threshold 20).
Tensor softplus(const Tensor& x);
/// x Phi(x) (approximate "none": Phi by erf) or PyTorch's approximate="tanh"
/// form 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
Tensor gelu(const Tensor& x, std::string_view approximate = "none");

// ---- reductions (ops/reduce.cpp). Empty axes = all axes.
Tensor sum(const Tensor& x, const std::vector<int64_t>& axes = {}, bool keepdims = false);
Tensor mean(const Tensor& x, const std::vector<int64_t>& axes = {}, bool keepdims = false);
Tensor max(const Tensor& x, const std::vector<int64_t>& axes = {}, bool keepdims = false);
Tensor min(const Tensor& x, const std::vector<int64_t>& axes = {}, bool keepdims = false);
/// Index of the largest element along `axis` (int64); over all elements when axis is omitted.
Tensor argmax(const Tensor& x, int64_t axis);
Tensor argmax(const Tensor& x);
Tensor argmin(const Tensor& x, int64_t axis);
Tensor argmin(const Tensor& x);
/// log(sum(exp(x))) over axes, computed stably (max subtracted first).
Tensor logsumexp(const Tensor& x, const std::vector<int64_t>& axes = {}, bool keepdims = false);
/// Variance over axes (all when empty) dividing by max(0, N - correction), as
/// torch.var: correction 1 (the default) is the unbiased estimate, 0 the
/// population's. stddev (torch.std) is its square root. Floating tensors only.
Tensor var(const Tensor& x, const std::vector<int64_t>& axes = {}, double correction = 1, bool keepdims = false);
Tensor stddev(const Tensor& x, const std::vector<int64_t>& axes = {}, double correction = 1, bool keepdims = false);
/// Sums g over the dims broadcasting added, giving like's shape.
Tensor sum_to(const Tensor& g, const Tensor& like);
/// Number of elements over `axes` of x (all when empty), as a scalar of `dtype`.
Tensor size(const Tensor& x, const std::vector<int64_t>& axes = {}, DType dtype = float32);

// ---- shape (ops/shape.cpp)
/// -1 in `shape` infers one dim. A view when the layout allows it.
Tensor reshape(const Tensor& x, const Shape& shape);
Tensor reshape_like(const Tensor& x, const Tensor& like);
Tensor permute(const Tensor& x, const std::vector<int64_t>& axes);
/// Swaps the last two axes.
Tensor transpose(const Tensor& x);
Tensor transpose(const Tensor& x, int64_t a, int64_t b);
/// -1 in `shape` keeps the input's dim there (PyTorch's expand), also a dynamic one.
Tensor broadcast_to(const Tensor& x, const Shape& shape);
Tensor broadcast_like(const Tensor& x, const Tensor& like);
Tensor expand_dims(const Tensor& x, const std::vector<int64_t>& axes);
/// Removes the given axes, each of size 1; with no axes, every axis of size 1
/// (PyTorch's squeeze(): [1,3,1] -> [3]), which must then all be known.
Tensor squeeze(const Tensor& x, const std::vector<int64_t>& axes);
/// Python-style slicing: one Slice per leading axis (negative steps allowed).
Tensor slice(const Tensor& x, const std::vector<Slice>& slices);
Tensor flip(const Tensor& x, const std::vector<int64_t>& axes);
Tensor concat(const std::vector<Tensor>& xs, int64_t axis = 0);
Tensor stack(const std::vector<Tensor>& xs, int64_t axis = 0);
/// Splits along `axis` into pieces of the given sizes.
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t axis = 0);
/// Splits into `parts` equal pieces (a dynamic dim is checked when run).
std::vector<Tensor> split(const Tensor& x, int64_t parts, int64_t axis);
/// Pads with `value`: pads[i] = {before, after} for leading axis i.
Tensor pad(const Tensor& x, const std::vector<std::pair<int64_t, int64_t>>& pads, double value = 0.0);
/// PyTorch's F.pad modes: constant (the value), reflect (mirrored without the
/// edge: a pad below the axis size), replicate (the edge repeated), circular
/// (wrapped: a pad at most the axis size).
enum class PadMode { constant, reflect, replicate, circular };
/// Pads leading axis i by pads[i] = {before, after} (each >= 0) in `mode`;
/// other modes than constant are slices, flips and a concat, so their
/// gradient sums what each input element was copied to.
Tensor pad(const Tensor& x, const std::vector<std::pair<int64_t, int64_t>>& pads, PadMode mode, double value = 0.0);
const char* pad_mode_name(PadMode mode);
/// Inserts `dilation` zeros after every element along each axis.
Tensor dilate(const Tensor& x, const std::vector<int64_t>& axes, int64_t dilation);
/// Inverse of dilate: keeps every (dilation+1)-th element.
Tensor undilate(const Tensor& x, const std::vector<int64_t>& axes, int64_t dilation);
/// Rows of `table` selected by integer `indices` (embedding lookup): shape indices.shape + table.shape[1:].
Tensor gather(const Tensor& table, const Tensor& indices);
/// x, after checking when run that every element lies in [low, high] (and is
/// not NaN unless allow_nan): an error naming the element otherwise ("element
/// 3 is outside [0, 1] or NaN (expected probabilities)"). Gradient: dy.
Tensor check_range(const Tensor& x, double low, double high, const std::string& expected, bool allow_nan = false);
/// Weighted sums of positions along `axis` (ops/resample.cpp): y[.., o, ..] =
/// sum_k weights[o, k] * x[.., sources[o, k], ..] with sources [out, K]
/// (int32/int64, each in [0, x.shape[axis])) and weights [out, K] of x's dtype.
Tensor resample(const Tensor& x, int64_t axis, const Tensor& sources, const Tensor& weights);
/// One-hot encoding of integer indices: shape indices.shape + [depth].
Tensor one_hot(const Tensor& indices, int64_t depth, DType dtype = float32);
/// 0, 1, ..., n - 1 (int64 [n]) for n = x.shape[axis], known when run for a
/// dynamic axis (torch.arange(x.size(axis))); x is read for its shape only.
Tensor arange_like(const Tensor& x, int64_t axis);

// ---- linear algebra (ops/linalg.cpp)
/// numpy matmul: batched, with broadcast batch dims; 1-d operands are vectors.
Tensor matmul(const Tensor& a, const Tensor& b);

// ---- random (ops/random.cpp): Philox streams keyed by session seed and node.
Tensor random_uniform(Graph& g, const Shape& shape, double low = 0.0, double high = 1.0, DType dtype = float32);
Tensor random_normal(Graph& g, const Shape& shape, double mean = 0.0, double stddev = 1.0, DType dtype = float32);
Tensor random_uniform_like(const Tensor& x, double low = 0.0, double high = 1.0);
Tensor random_normal_like(const Tensor& x, double mean = 0.0, double stddev = 1.0);
/// 1 with probability p, else 0, shaped like x (x's dtype).
Tensor bernoulli_like(const Tensor& x, double p);

// ---- neural-network functions (ops/nn.cpp)
Tensor softmax(const Tensor& x, int64_t axis = -1);
Tensor log_softmax(const Tensor& x, int64_t axis = -1);
/// Mean over the batch of -log softmax(logits)[label]; logits [N, C], labels [N] int.
Tensor softmax_cross_entropy(const Tensor& logits, const Tensor& labels);
/// Zeroes elements with probability p (0 <= p <= 1) and scales the rest by 1/(1-p); x when !training.
Tensor dropout(const Tensor& x, double p, bool training = true);

// ---- optimizer updates (ops/optim.cpp)
/// One Adam step, element-wise: m' = b1 m + (1-b1) g; v' = b2 v + (1-b2) g^2;
/// p' = decay p - step_size m' / (sqrt(v') + eps_hat). Returns {p', m', v'}.
std::vector<Tensor> adam_update(const Tensor& p, const Tensor& m, const Tensor& v, const Tensor& g,
                                const Tensor& step_size, const Tensor& eps_hat, const Tensor& decay, double beta1,
                                double beta2);

// ---- state and control (ops/state.cpp)
/// Writes value into variable var inside the run; returns the new value.
/// Readers of var in the same run see the old value unless they depend on this.
Tensor assign(const Tensor& var, const Tensor& value);
Tensor assign_add(const Tensor& var, const Tensor& delta);
Tensor assign_sub(const Tensor& var, const Tensor& delta);
/// A node that runs all `targets` (control dependencies only).
Tensor group(const std::vector<Tensor>& targets, const std::string& name = {});
/// x, after all of `deps` have run.
Tensor with_dependencies(const std::vector<Tensor>& deps, const Tensor& x);

// ---- attention (ops/attention.cpp; softmax, log_softmax and logsumexp above are fused ops in ops/softmax.cpp)

struct AttentionOptions {
  /// Query i attends keys j <= i (top-left aligned, as PyTorch's is_causal).
  bool causal = false;
  /// Optional mask broadcast to [..., Tq, Tk]: bool (true = attend, as PyTorch)
  /// or of q's dtype (added to the scores). With `causal` both apply. A float
  /// mask gets the scores' gradient, as in PyTorch (a learned attention bias
  /// trains), computed with [Tq, Tk] materialized and only where asked for
  /// (with dropout, attention_keep replays the factors the forward drew).
  Tensor mask = {};
  /// Probability of zeroing an attention weight (after the softmax); the kept
  /// ones are scaled by 1 / (1 - dropout). Each run draws a new Philox stream
  /// (random_key), the same on CPU and GPU for a session seed.
  double dropout = 0.0;
  /// Scale of q k^T; default 1 / sqrt(head dim).
  std::optional<double> scale = {};
};

/// softmax(q k^T * scale + mask) v over the last two dims: q [..., Tq, D],
/// k [..., Tk, D], v [..., Tk, Dv] -> [..., Tq, Dv] (equal leading dims).
/// One fused op (flash-attention style: tiles, an online softmax, the
/// backward recomputing tiles from the saved logsumexp), so memory grows
/// linearly in T. A query row whose keys are all masked gives zeros (PyTorch's
/// scaled_dot_product_attention does the same).
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                   const AttentionOptions& options = {});

/// The attention probabilities softmax(q k^T * scale + mask) [..., Tq, Tk]
/// (causal and mask as above, dropout ignored; a row with every key masked
/// is zeros), built from primitive ops: for inspecting what attends what.
Tensor attention_weights(const Tensor& q, const Tensor& k, const AttentionOptions& options = {});

/// int64 [2]: a Philox stream key derived from the session seed and this
/// node, and the run counter; new numbers every run, identical on every
/// device. Ops that draw random numbers in the forward and replay them in the
/// backward (attention dropout) take it as an input.
Tensor random_key(Graph& g);

/// The composite forms of the fused ops, built from primitive ops (their
/// gradients come from the primitives'): the oracles the fused kernels are
/// tested against. Attention's dropout here is an ordinary dropout() node (a
/// different random stream from the fused op's), and a row with every key
/// masked gives zeros as in the fused op.
namespace composite {
Tensor softmax(const Tensor& x, int64_t axis = -1);
Tensor log_softmax(const Tensor& x, int64_t axis = -1);
Tensor logsumexp(const Tensor& x, const std::vector<int64_t>& axes = {}, bool keepdims = false);
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                   const AttentionOptions& options = {});
/// Its softmax (before dropout); `what` names the caller in errors.
Tensor attention_probabilities(const Tensor& q, const Tensor& k, const AttentionOptions& options, const char* what);
}  // namespace composite

// ---- convolution, pooling and batch normalization (ops/conv.cpp, ops/pool.cpp, ops/batch_norm.cpp)
// Layouts are PyTorch's: input [N, C, H, W], conv weight [Cout, C / groups, KH, KW].

struct Conv2dOptions {
  std::vector<int64_t> stride = {1};    ///< 1 value (both axes) or 2 (h, w)
  std::vector<int64_t> padding = {0};   ///< zeros added: 1 value, 2 (h, w) or 4 (top, bottom, left, right)
  std::vector<int64_t> dilation = {1};  ///< 1 or 2 values
  int64_t groups = 1;                   ///< C and Cout must both be divisible by it
};
/// 2-D cross-correlation (PyTorch's conv2d): [N, C, H, W] * [Cout, C/groups, KH, KW] -> [N, Cout, OH, OW].
Tensor conv2d(const Tensor& x, const Tensor& w, const Conv2dOptions& options = {});
/// conv2d with a fused epilogue: relu?(conv2d(x, w) + bias); bias [Cout] may be an invalid Tensor (none).
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dOptions& options, bool relu = false);
/// The gradient ops of conv2d (for users writing their own rules): dx of shape x_like
/// from dy and w, and dw of shape w_like from x and dy.
Tensor conv2d_backward_data(const Tensor& dy, const Tensor& w, const Tensor& x_like, const Conv2dOptions& options = {});
Tensor conv2d_backward_filter(const Tensor& x, const Tensor& dy, const Tensor& w_like,
                              const Conv2dOptions& options = {});
/// The node attributes of a conv2d with these options (normalized to 2 strides, 4 paddings, 2 dilations).
Attrs conv2d_attrs(const Conv2dOptions& options);

struct Pool2dOptions {
  std::vector<int64_t> kernel = {2};   ///< 1 or 2 values
  std::vector<int64_t> stride = {};    ///< empty: the kernel size (PyTorch's default)
  std::vector<int64_t> padding = {0};  ///< 1, 2 or 4 values, at most half the kernel
  bool count_include_pad = true;       ///< avg_pool2d: padded zeros count in the divisor (PyTorch's default)
  /// PyTorch's ceil_mode: output sizes rounded up, so a last, partial window covers the input's end
  /// (it must start inside the input or the leading padding; its part past the padding never counts).
  bool ceil_mode = false;
};
/// Maximum over each window of [N, C, H, W] (padding never wins).
Tensor max_pool2d(const Tensor& x, const Pool2dOptions& options = {});
Tensor avg_pool2d(const Tensor& x, const Pool2dOptions& options = {});
/// Average over output_size (1 or 2 values) windows covering the input, as PyTorch's; {1} is global pooling.
Tensor adaptive_avg_pool2d(const Tensor& x, const std::vector<int64_t>& output_size = {1});
/// Maximum over the same windows (PyTorch's adaptive_max_pool2d).
Tensor adaptive_max_pool2d(const Tensor& x, const std::vector<int64_t>& output_size = {1});
/// PyTorch's return_indices: the index h * W + w in its plane of each window's
/// maximum (int64), the one max_pool2d (adaptive_max_pool2d) takes.
Tensor max_pool2d_indices(const Tensor& x, const Pool2dOptions& options = {});
Tensor adaptive_max_pool2d_indices(const Tensor& x, const std::vector<int64_t>& output_size = {1});
/// PyTorch's max_unpool2d (ops/unpool.cpp): zeros [N, C, H, W] (output_size
/// {H, W}) with y [N, C, h, w] written at those indices; an index given twice
/// keeps the last value. Gradient: dz read at the indices.
Tensor max_unpool2d(const Tensor& y, const Tensor& indices, const std::vector<int64_t>& output_size);

struct BatchNormOutputs {
  Tensor y;     ///< normalized (and affine-transformed, and ReLU'd when asked)
  Tensor mean;  ///< [C] batch mean
  Tensor var;   ///< [C] biased batch variance
};
/// Normalizes x [N, C, ...] per channel with its batch statistics:
/// y = relu?((x - mean) / sqrt(var + eps) * weight + bias). One fused op; its gradient is another.
BatchNormOutputs batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps = 1e-5,
                            bool relu = false);

// ---- layer normalization (ops/layer_norm.cpp)
struct LayerNormOutputs {
  Tensor y;     ///< normalized (and affine-transformed when weight and bias are given)
  Tensor mean;  ///< per row: x's shape without the last `dims` axes
  Tensor rstd;  ///< per row: 1 / sqrt(biased variance + eps)
};
/// Normalizes x over its last `dims` axes: y = (x - mean) * rstd * weight + bias, weight and
/// bias shaped as those axes (either may be left out; a bias only with a weight). One fused op;
/// its gradient is another.
LayerNormOutputs layer_norm(const Tensor& x, const Tensor& weight = {}, const Tensor& bias = {}, int64_t dims = 1,
                            double eps = 1e-5);

// ---- recurrent cells (ops/rnn.cpp); the modules are in frontend/rnn.hpp
/// One fused LSTM step in PyTorch's gate order (i, f, g, o): pre = gates (+ gates2),
/// c = sigmoid(f) * c_prev + sigmoid(i) * tanh(g), h = sigmoid(o) * tanh(c).
/// c_prev [..., H], gates [..., 4H]. Returns {h, c, act}: act [..., 4H] holds the
/// activated gates (kept for the gradient).
std::vector<Tensor> lstm_cell(const Tensor& c_prev, const Tensor& gates, const Tensor& gates2 = {});
/// Per-row softmax cross-entropy of logits [N, C] against integer labels [N]
/// (ops/loss.cpp): {loss [N], lse [N]} with lse = logsumexp of the row and
/// loss = lse - logits[label]. One pass over the logits forward and backward;
/// softmax_cross_entropy is its mean. A label outside [0, C) raises loom::Error.
std::vector<Tensor> sparse_softmax_cross_entropy(const Tensor& logits, const Tensor& labels);
/// The backward of lstm_cell written with element-wise ops: {dgates, dc_prev}
/// (the oracle of lstm_cell_grad and the source of its own gradient).
std::vector<Tensor> lstm_backward_composite(const Tensor& act, const Tensor& c_prev, const Tensor& c, const Tensor& dh,
                                            const Tensor& dc);

// ---- collectives (ops/collective.cpp): data parallelism over the process group
// of core/comm.hpp (libloom_mpi's MPI group, NCCL on CUDA). Every rank must
// build the same graph after the group is set; a plan runs its collective nodes
// one at a time in schedule order. In a group of one they are identities.

enum class Reduction { sum, mean };
/// The sum (or mean) over ranks of x, on every rank. Gradient: the same allreduce of dy.
Tensor allreduce(const Tensor& x, Reduction reduction = Reduction::sum);
/// Several tensors of one dtype reduced as one message (one node; a gradient bucket).
std::vector<Tensor> allreduce(const std::vector<Tensor>& xs, Reduction reduction = Reduction::sum);
/// Rank root's x on every rank. Gradient: reduce_to_root(dy, root).
Tensor broadcast(const Tensor& x, int root = 0);
/// The sum over ranks of x on rank root, zeros elsewhere. Gradient: broadcast(dy, root).
Tensor reduce_to_root(const Tensor& x, int root = 0);
/// Every rank's x concatenated along axis 0 in rank order ([R*n, ...]). Gradient: reduce_scatter(dy).
Tensor allgather(const Tensor& x);
/// Rows [rank*n, (rank+1)*n) of the sum over ranks of x [R*n, ...]. Gradient: allgather(dy).
Tensor reduce_scatter(const Tensor& x);

}  // namespace loom
