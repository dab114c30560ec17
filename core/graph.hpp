#pragma once
/// # The graph, in two minutes
///
/// A loom program first *builds* a static graph, then *runs* it in a Session.
/// Building computes nothing: every call appends a Node to a Graph and returns
/// a Tensor, a cheap handle (graph, node, output index).
///
///     Graph g;
///     Tensor x = g.placeholder("x", {-1, 784});          // -1: batch, from the feed
///     Tensor w = g.variable("w", {784, 10}, init::normal(0, 0.01));
///     Tensor y = relu(matmul(x, w) + 1.0);                // ops/: free functions, operators
///     Tensor dw = gradients(sum(y), {w})[0];              // more graph: d sum(y) / dw
///     Session s(g);
///     NDArray out = s.run({y}, {{x, batch}})[0];
///
/// - A Graph is append-only; node ids are dense and in creation order, which
///   is a topological order (inputs always exist before their users).
/// - Each node has an op (core/op.hpp, defined in ops/), attributes, inputs
///   (tensors of earlier nodes), optional control inputs (nodes that must run
///   first), and typed outputs. Output dtypes and shapes are inferred when the
///   node is added, so mistakes surface at build time with the node's name.
/// - Names are scoped (`auto s = g.scope("layer1")` makes "layer1/matmul") and
///   unique; they appear in errors, traces and DOT exports.
/// - Threads: nodes, once added, never change or move, so Sessions may run a
///   graph on other threads while it grows. Adding is safe from any thread;
///   scopes are shared by all threads, so build from one thread at a time.
/// - Sources: placeholder (fed per run), constant (an NDArray), variable
///   (persistent state in the Session, with an initializer). `assign` updates
///   a variable inside a run.
/// - gradients() (core/autodiff.hpp) extends the graph with the backward pass,
///   built from ordinary ops, so gradients can be differentiated again.

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/op.hpp"

namespace loom {

/// Fills a new variable's host value. `seed` derives from the session seed
/// and the variable's name, so initialization is reproducible.
using Initializer = std::function<void(const NDArray& value, uint64_t seed)>;

/// An output of a node.
struct Edge {
  int node = -1;
  int index = 0;
};

struct Node {
  int id = -1;
  const OpDef* op = nullptr;
  std::string name;
  std::vector<Edge> inputs;
  std::vector<int> control;  // nodes that must run before this one
  Attrs attrs;
  std::vector<TensorType> outputs;
  Initializer init;  // variables only
};

class Graph;

/// Handle to one output of a node. Comparison operators on Tensors build
/// comparison nodes (ops/), so identity is `a.is(b)`.
class Tensor {
 public:
  Tensor() = default;
  Tensor(Graph* g, int node, int index) : graph_(g), node_(node), index_(index) {}

  bool valid() const { return graph_ != nullptr; }
  Graph& graph() const;
  const Node& node() const;
  int node_id() const { return node_; }
  int index() const { return index_; }
  Edge edge() const { return {node_, index_}; }
  const TensorType& type() const;
  const Shape& shape() const { return type().shape; }
  DType dtype() const { return type().dtype; }
  int64_t ndim() const { return int64_t(shape().size()); }
  /// Node name, with ":i" for outputs after the first.
  std::string name() const;
  const std::string& op() const;
  bool is(const Tensor& o) const { return graph_ == o.graph_ && node_ == o.node_ && index_ == o.index_; }

 private:
  Graph* graph_ = nullptr;
  int node_ = -1;
  int index_ = 0;
};

class Graph {
 public:
  Graph();
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;
  ~Graph();

  /// Appends a node running `op` and returns its outputs. Inference runs now;
  /// a bad input throws loom::Error naming the op and the node.
  std::vector<Tensor> add(std::string_view op, const std::vector<Tensor>& inputs, Attrs attrs = {},
                          std::string name = {}, const std::vector<Tensor>& control = {});
  /// add() for single-output ops.
  Tensor add1(std::string_view op, const std::vector<Tensor>& inputs, Attrs attrs = {}, std::string name = {},
              const std::vector<Tensor>& control = {});

  /// A value fed at every run. Dims of -1 are dynamic.
  Tensor placeholder(const std::string& name, const Shape& shape, DType dtype = float32);
  Tensor constant(const NDArray& value, const std::string& name = {});
  Tensor scalar(double value, DType dtype = float32);
  /// Persistent state owned by each Session running this graph; initialized
  /// on first use by `init`. Names must be unique (they key checkpoints).
  Tensor variable(const std::string& name, const Shape& shape, Initializer init, DType dtype = float32);

  /// Pushes a name scope for the guard's lifetime: nodes get "scope/name".
  class Scope {
   public:
    Scope(Scope&& o) noexcept : g_(o.g_) { o.g_ = nullptr; }
    Scope(const Scope&) = delete;
    ~Scope();

   private:
    friend class Graph;
    explicit Scope(Graph* g) : g_(g) {}
    Graph* g_;
  };
  [[nodiscard]] Scope scope(const std::string& name);
  /// The current scope prefix ("" or "a/b/").
  std::string prefix() const;

  int size() const { return size_.load(std::memory_order_acquire); }
  const Node& node(int id) const;
  /// The node named `name` (its first output), or an invalid Tensor.
  Tensor find(const std::string& name) const;
  /// Every variable node, in creation order.
  std::vector<Tensor> variables() const;
  /// A process-unique id (plans and sessions remember which graph they belong to).
  uint64_t id() const { return id_; }

 private:
  std::vector<Tensor> add_impl(std::string_view op, const std::vector<Tensor>& inputs, Attrs attrs, std::string name,
                               const std::vector<Tensor>& control, Initializer init);
  std::vector<Tensor> publish(std::unique_ptr<Node> node, const std::string& full_name);
  std::string unique_name(const std::string& base);
  std::string prefix_locked() const;
  Node* slot(int id) const;

  /// Nodes live in segments of 32, 64, 128, ... pointers that never move, so
  /// readers need no lock: a node is published by storing size_ after it.
  static constexpr int kSegments = 40;
  std::array<std::atomic<Node**>, kSegments> segments_{};
  std::atomic<int> size_{0};
  mutable std::mutex mu_;  // writers, names and scopes
  std::unordered_map<std::string, int> by_name_;
  std::unordered_map<std::string, int> name_counts_;
  std::vector<std::string> scopes_;
  uint64_t id_;
};

/// Free-function forms, for readability in user code.
inline Tensor placeholder(Graph& g, const std::string& name, const Shape& shape, DType dtype = float32) {
  return g.placeholder(name, shape, dtype);
}

}  // namespace loom
