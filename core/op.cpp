#include "core/op.hpp"

#include <map>
#include <memory>
#include <mutex>

#include "core/graph.hpp"

namespace loom {

namespace {
struct OpRegistry {
  std::mutex mu;
  std::map<std::string, std::unique_ptr<OpDef>, std::less<>> ops;
};
OpRegistry& op_registry() {
  static OpRegistry r;
  return r;
}
}  // namespace

namespace {
/// Every inference result, at build time and when a plan resolves shapes,
/// passes one check: dims >= -1, sizes within kMaxArrayBytes, and resolved
/// inputs give resolved outputs. An op's own inference need not repeat it.
void check_outputs(const InferContext& c, const std::vector<TensorType>& outs) {
  bool inputs_static = !c.in.empty();
  for (const TensorType& t : c.in) inputs_static &= is_static(t.shape);
  for (size_t i = 0; i < outs.size(); ++i) {
    const Shape& s = outs[i].shape;
    if (!valid_shape(s, dtype_size(outs[i].dtype)))
      check_shape(s, dtype_size(outs[i].dtype), detail::cat(c.op, " '", c.node, "': output ", i));
    if (inputs_static && !is_static(s))
      fail(c.op, " '", c.node, "': output ", i, " has shape ", shape_str(s),
           " with an unknown dim although every input's shape is known");
  }
}
}  // namespace

void register_op(OpDef def) {
  if (def.infer)
    def.infer = [infer = std::move(def.infer)](const InferContext& c) {
      std::vector<TensorType> outs = infer(c);
      check_outputs(c, outs);
      return outs;
    };
  OpRegistry& r = op_registry();
  std::lock_guard lock(r.mu);
  LOOM_ASSERT(!r.ops.count(def.name), "op registered twice: ", def.name);
  std::string name = def.name;
  r.ops.emplace(std::move(name), std::make_unique<OpDef>(std::move(def)));
}

const OpDef* try_find_op(std::string_view name) {
  OpRegistry& r = op_registry();
  std::lock_guard lock(r.mu);
  auto it = r.ops.find(name);
  return it == r.ops.end() ? nullptr : it->second.get();
}

const OpDef& find_op(std::string_view name) {
  const OpDef* d = try_find_op(name);
  if (!d) fail("unknown op '", name, "'");
  return *d;
}

std::vector<const OpDef*> registered_ops() {
  OpRegistry& r = op_registry();
  std::lock_guard lock(r.mu);
  std::vector<const OpDef*> out;
  for (const auto& [n, d] : r.ops) out.push_back(d.get());
  return out;
}

const OpDef& OpHandle::def() const {
  const OpDef* d = def_.load(std::memory_order_acquire);
  if (!d) {
    d = try_find_op(name_);
    LOOM_ASSERT(d, "core op '", name_, "' is not registered");
    def_.store(d, std::memory_order_release);
  }
  return *d;
}

Tensor GradContext::dout(size_t i) const {
  if (douts[i].valid()) return douts[i];
  const Tensor& y = outputs[i];
  return y.graph().add1(core_op::full.name(), {y}, {{"value", 0.0}});
}

}  // namespace loom
