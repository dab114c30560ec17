#pragma once
/// The op registry. Each op is defined once, in ops/<family>.cpp: its name,
/// inference of output dtypes and shapes (which throws loom::Error at graph
/// build time on bad input), its gradient rule written with other graph ops,
/// flags, and the oracle used to check its kernels (a plain reference
/// implementation and example invocations).

#include <atomic>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/attrs.hpp"
#include "core/error.hpp"
#include "core/ndarray.hpp"

namespace loom {

class Graph;
class Tensor;
struct Node;

/// Dtype and (possibly dynamic) shape of one tensor.
struct TensorType {
  DType dtype = float32;
  Shape shape;
  friend bool operator==(const TensorType&, const TensorType&) = default;
};

/// What inference sees. At graph build time shapes may hold -1; when a plan
/// is compiled the same function runs again with the resolved shapes.
struct InferContext {
  std::string_view op;
  std::string_view node;
  std::span<const TensorType> in;
  const Attrs& attrs;

  /// Throws loom::Error "<op> '<node>': <message>".
  template <class... A>
  [[noreturn]] void fail(A&&... a) const {
    loom::fail(op, " '", node, "': ", std::forward<A>(a)...);
  }
  template <class... A>
  void check(bool cond, A&&... a) const {
    if (!cond) fail(std::forward<A>(a)...);
  }
  /// Dim arithmetic that throws (naming the op) instead of overflowing.
  int64_t add(int64_t a, int64_t b) const {
    int64_t r;
    if (__builtin_add_overflow(a, b, &r)) fail("dim ", a, " + ", b, " overflows");
    return r;
  }
  int64_t mul(int64_t a, int64_t b) const {
    int64_t r;
    if (__builtin_mul_overflow(a, b, &r)) fail("dim ", a, " * ", b, " overflows");
    return r;
  }
};

/// What a gradient rule sees: the forward node's inputs and outputs as graph
/// tensors and the gradients flowing into its outputs.
struct GradContext {
  const Node& node;
  std::span<const Tensor> inputs;
  std::span<const Tensor> outputs;
  std::span<const Tensor> douts;  // invalid Tensor where an output has no gradient
  const Attrs& attrs;
  /// Gradient of output i, or zeros shaped like output i when it has none.
  Tensor dout(size_t i) const;
};

using InferFn = std::function<std::vector<TensorType>(const InferContext&)>;
/// Returns one gradient per input (an invalid Tensor for "none"). The result
/// may have the broadcast shape: gradients() reduces it to the input's shape.
using GradFn = std::function<std::vector<Tensor>(const GradContext&)>;
/// For view ops: the layout of output `index` as a view of input 0 (`outs`
/// are the resolved output shapes), or nullopt when this input layout needs a
/// copy first (the planner then makes input 0 compact and asks again).
using ViewFn = std::function<std::optional<Layout>(const Layout& in, const Attrs&, size_t index,
                                                   std::span<const Shape> outs)>;
/// Plain, slow, obviously correct host implementation: the test oracle.
using ReferenceFn = std::function<std::vector<NDArray>(std::span<const NDArray> in, const Attrs&)>;

/// One invocation used by the registry-driven checks (tests and `loom_ops --check`).
struct OpExample {
  std::string label;
  std::vector<NDArray> inputs;  // float inputs in float64; others as the op needs them
  Attrs attrs;
  /// Inputs with respect to which the gradient is checked (default: every float input).
  std::vector<int> grad_inputs = {};
  bool check_grad = true;
  double grad_step = 1e-6;       // central-difference step
  double grad_tolerance = 1e-5;  // scaled error allowed
};
using ExamplesFn = std::function<std::vector<OpExample>(uint64_t seed)>;
/// Floating-point operations of one node (the remat pass's cost model).
using FlopsFn = std::function<double(std::span<const TensorType> in, std::span<const TensorType> out, const Attrs&)>;

struct OpDef {
  std::string name;
  int min_inputs = 0;
  int max_inputs = 0;  // -1: any number
  /// The attributes nodes of this op take, checked (and their axes resolved)
  /// by Graph::add and invoke before inference runs.
  AttrSchema attrs;
  InferFn infer;
  GradFn grad;         // empty: not differentiable
  ViewFn view;         // set for ops whose outputs can alias input 0
  bool elementwise = false;  // out[i] depends only on inputs at index i (fusable)
  /// Output 0 accepts an element-wise epilogue: where the device's kernel runs
  /// one (KernelInfo::runs_epilogue), the fusion pass folds element-wise
  /// readers of output 0 into the node (matmul; convolutions can too).
  bool epilogue = false;
  /// Output 0 may overwrite an input of its shape that dies at this op: the
  /// kernel reads element i of its inputs before it writes element i of
  /// output 0 (element-wise ops; batch norm, whose statistics come first).
  bool inplace = false;
  bool stateful = false;     // never merged or folded (random, assign, sources)
  bool no_kernel = false;    // handled by the session itself (placeholder, constant, variable, no_op)
  int writes_input = -1;     // the variable input this op updates in place (assign)
  /// Meets its counterparts on the other ranks (core/comm.hpp): plans run such
  /// nodes one at a time in schedule order, the same on every rank.
  bool collective = false;
  std::vector<int> shape_only_inputs;  // inputs read for their shape only: they do not extend liveness
  ReferenceFn reference;
  ExamplesFn examples;
  /// Cost for rematerialization; empty: one operation per element read or written.
  FlopsFn flops;
  std::string doc;
};

/// A typed handle to an op the core itself treats specially (sources, the
/// planner's copies and fused programs, ...), resolved by name once: core
/// compares `node.op == core_op::placeholder`, never op names.
class OpHandle {
 public:
  explicit constexpr OpHandle(std::string_view name) : name_(name) {}
  OpHandle(const OpHandle&) = delete;
  const OpDef& def() const;
  std::string_view name() const { return name_; }
  friend bool operator==(const OpDef* d, const OpHandle& h) { return d && d == &h.def(); }

 private:
  std::string_view name_;
  mutable std::atomic<const OpDef*> def_{nullptr};
};

namespace core_op {
inline const OpHandle placeholder{"placeholder"};  // fed per run
inline const OpHandle constant{"constant"};        // attribute "value"
inline const OpHandle variable{"variable"};        // session state
inline const OpHandle no_op{"no_op"};              // control only
inline const OpHandle copy{"copy"};                // a compact copy (the planner inserts these)
inline const OpHandle fused{"fused"};              // an element-wise program (the fusion pass makes these)
inline const OpHandle full{"full"};                // zeros and ones of gradients
inline const OpHandle sum_to{"sum_to"};            // broadcast gradients reduced to their input's shape
}  // namespace core_op

/// Registers an op (at static-initialization time, from ops/).
void register_op(OpDef def);
/// The op named `name`; throws loom::Error when none is registered.
const OpDef& find_op(std::string_view name);
const OpDef* try_find_op(std::string_view name);
/// All ops, sorted by name.
std::vector<const OpDef*> registered_ops();

}  // namespace loom
