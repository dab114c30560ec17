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

void register_op(OpDef def) {
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
