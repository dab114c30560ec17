#include "core/invoke.hpp"

namespace loom {

std::vector<NDArray> invoke(std::string_view op_name, const std::vector<NDArray>& inputs, const Attrs& given,
                            const InvokeOptions& options) {
  const OpDef& op = find_op(op_name);
  LOOM_CHECK(!op.no_kernel, op.name, ": has no kernel (it is handled by the Session)");
  int n = int(inputs.size());
  LOOM_CHECK(n >= op.min_inputs && (op.max_inputs < 0 || n <= op.max_inputs), op.name, ": wrong number of inputs (",
             n, ")");
  Device dev = inputs.empty() ? Device::cpu() : inputs[0].device();
  std::vector<TensorType> types;
  for (const NDArray& a : inputs) {
    LOOM_CHECK(a.defined(), op.name, ": undefined input");
    LOOM_CHECK(a.device() == dev, op.name, ": inputs on different devices");
    types.push_back({a.dtype(), a.shape()});
  }
  std::vector<size_t> ranks;
  for (const NDArray& a : inputs) ranks.push_back(size_t(a.ndim()));
  const Attrs attrs = check_attrs(op.attrs, op.name, op.name, ranks, given);
  InferContext ctx{op.name, op.name, types, attrs};
  std::vector<TensorType> outs = op.infer(ctx);
  std::vector<Shape> shapes;
  for (const auto& t : outs) shapes.push_back(t.shape);

  LOOM_CHECK(!outs.empty(), op.name, ": no outputs");
  const KernelInfo* k = find_kernel(op.name, dev.kind, outs[0].dtype);
  // View ops: a view of the input when its layout allows; otherwise the op's
  // kernel if it has one, else a view of a compact copy.
  if (op.view && (op.view(inputs[0].layout(), attrs, 0, shapes) || !k)) {
    std::vector<NDArray> r;
    NDArray in = inputs[0];
    if (!op.view(in.layout(), attrs, 0, shapes)) in = in.compact();
    for (size_t i = 0; i < outs.size(); ++i) {
      auto l = op.view(in.layout(), attrs, i, shapes);
      LOOM_ASSERT(l, op.name, ": view of a compact input failed");
      r.emplace_back(in.buffer(), *l, outs[i].dtype);
    }
    return r;
  }
  LOOM_CHECK(k, op.name, ": no ", dev.str(), " kernel for dtype ", dtype_name(outs[0].dtype));
  std::vector<NDArray> in(inputs);
  if (k->compact_inputs)
    for (auto& a : in) a = a.compact();
  std::vector<NDArray> out;
  for (const auto& t : outs) out.push_back(NDArray::empty(t.shape, t.dtype, dev));
  KernelContext kc{dev, nullptr, options.seed, options.run_counter};
  KernelCall call{kc, in, out, attrs, op.name, op.name, options.node_key};
  std::shared_ptr<const void> state;
  if (k->prepare) call.state = (state = k->prepare(call)).get();
  std::shared_ptr<Buffer> workspace = allocate_workspace(*k, call);
  if (workspace) call.workspace = workspace->data(), call.workspace_bytes = workspace->bytes();
  k->fn(call);
  if (!dev.is_cpu()) device_backend(dev).synchronize(nullptr);
  return out;
}

}  // namespace loom
