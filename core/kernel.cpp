#include "core/kernel.hpp"

#include <algorithm>
#include <array>
#include <exception>
#include <map>
#include <mutex>

#include "core/device.hpp"
#include "core/ndarray.hpp"
#include "core/parallel.hpp"

namespace loom {

namespace {
struct Registry {
  std::mutex mu;
  // op -> device -> dtype -> kernel
  std::map<std::string, std::array<std::array<KernelInfo, 6>, 2>, std::less<>> table;
};
Registry& registry() {
  static Registry r;
  return r;
}
}  // namespace

void DeferredChecks::add(std::function<void()> verify) {
  std::lock_guard lock(mu_);
  pending_.push_back(std::move(verify));
}

bool DeferredChecks::empty() const {
  std::lock_guard lock(mu_);
  return pending_.empty();
}

void DeferredChecks::verify() {
  std::vector<std::function<void()>> due;
  {
    std::lock_guard lock(mu_);
    due.swap(pending_);
  }
  std::exception_ptr first;
  for (const auto& v : due) {
    try {
      v();
    } catch (...) {
      if (!first) first = std::current_exception();
    }
  }
  if (first) std::rethrow_exception(first);
}

void DeferredChecks::clear() {
  std::lock_guard lock(mu_);
  pending_.clear();
  if (slots_) slots_->reuse();
}

DeferredChecks::Slots& DeferredChecks::slots(const std::function<std::unique_ptr<Slots>()>& make) {
  std::lock_guard lock(mu_);
  if (!slots_) slots_ = make();
  return *slots_;
}

void register_kernel(std::string_view op, DeviceKind device, const std::vector<DType>& dtypes,
                     KernelInfo info) {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  auto it = r.table.try_emplace(std::string(op)).first;
  for (DType t : dtypes) {
    KernelInfo& slot = it->second[size_t(device)][size_t(t)];
    LOOM_ASSERT(!slot.fn, "kernel registered twice: ", op, " ", dtype_name(t));
    slot = info;
  }
}

const KernelInfo* find_kernel(std::string_view op, DeviceKind device, DType dtype) {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  auto it = r.table.find(op);
  if (it == r.table.end()) return nullptr;
  const KernelInfo& k = it->second[size_t(device)][size_t(dtype)];
  return k.fn ? &k : nullptr;
}

size_t workspace_bytes(const KernelInfo& k, std::span<const Shape> in, std::span<const Shape> out, DType dtype,
                       const Attrs& attrs, Device device, int threads) {
  if (!k.workspace) return 0;
  return k.workspace(WorkspaceQuery{in, out, dtype, attrs, device, threads});
}

std::shared_ptr<Buffer> allocate_workspace(const KernelInfo& k, const KernelCall& c) {
  std::vector<Shape> in, out;
  for (const NDArray& a : c.in) in.push_back(a.shape());
  for (const NDArray& a : c.out) out.push_back(a.shape());
  size_t n = workspace_bytes(k, in, out, c.out[0].dtype(), c.attrs, c.ctx.device, current_threads());
  return n ? Buffer::allocate(c.ctx.device, n) : nullptr;
}

namespace {

const KernelInfo& cpu_kernel_of(const KernelCall& c) {
  const KernelInfo* k = find_kernel(c.op, DeviceKind::cpu, c.out[0].dtype());
  LOOM_ASSERT(k, "host fallback without a CPU kernel: ", c.op);
  return *k;
}

void run_on_host(const KernelCall& c) {
  DeviceBackend& dev = device_backend(c.ctx.device);
  std::vector<NDArray> in, out;
  for (const NDArray& a : c.in) {  // compact (the fallback asks for compact inputs)
    in.push_back(NDArray::empty(a.shape(), a.dtype()));
    if (a.nbytes()) dev.copy_to_host(in.back().raw(), a.raw(), a.nbytes(), c.ctx.stream);
  }
  for (const NDArray& a : c.out) out.push_back(NDArray::empty(a.shape(), a.dtype()));
  dev.synchronize(c.ctx.stream);
  const KernelContext host{Device::cpu(), nullptr, c.ctx.seed, c.ctx.run_counter};
  KernelCall hc{host, in, out, c.attrs, c.op, c.node, c.node_key, c.state};
  const KernelInfo& k = cpu_kernel_of(c);
  std::shared_ptr<Buffer> ws = allocate_workspace(k, hc);  // a slow path already: no planned host scratch
  if (ws) hc.workspace = ws->data(), hc.workspace_bytes = ws->bytes();
  k.fn(hc);
  for (size_t i = 0; i < out.size(); ++i)
    if (out[i].nbytes()) dev.copy_from_host(c.out[i].raw(), out[i].raw(), out[i].nbytes(), c.ctx.stream);
  dev.synchronize(c.ctx.stream);  // the host arrays die here
}

std::shared_ptr<const void> prepare_on_host(const KernelCall& c) {
  const KernelInfo& k = cpu_kernel_of(c);
  return k.prepare ? k.prepare(c) : nullptr;
}

}  // namespace

const KernelInfo& host_fallback_kernel() {
  static const KernelInfo k{&run_on_host, true, &prepare_on_host};
  return k;
}

namespace {

/// Rows [begin, end) of an operand of an epilogue whose output 0 has `rows`
/// rows in dim 0 and rank `rank`; broadcast operands whole.
NDArray rows_of(const NDArray& a, int64_t rank, int64_t rows, int64_t begin, int64_t end) {
  if (a.ndim() != rank || a.shape()[0] != rows || rows == 1) return a;
  return a.slice({Slice::range(begin, end)});
}

}  // namespace

namespace {

void run_steps(const KernelCall& c, int64_t begin, int64_t end, const NDArray& head_rows) {
  const NDArray& head = c.out[0];
  const int64_t rank = head.ndim(), rows = head.shape()[0];
  // Output 0 and the outputs written over it block by block (streamed: no memory of their own) are the block.
  auto operand = [&](const NDArray& a, int r) {
    return r == -1 || (r < 0 && !a.buffer()) ? head_rows : rows_of(a, rank, rows, begin, end);
  };
  for (const EpilogueStep& s : c.epilogue->steps) {
    std::vector<NDArray> in, out;
    for (int r : s.in) in.push_back(operand(r >= 0 ? c.in[size_t(r)] : c.out[size_t(-r - 1)], r));
    for (int r : s.out) out.push_back(operand(c.out[size_t(-r - 1)], r));
    s.fn(KernelCall{c.ctx, in, out, *s.attrs, s.op, s.node, s.key, s.state.get()});
  }
}

}  // namespace

void run_epilogue(const KernelCall& c, int64_t begin, int64_t end) {
  if (!c.epilogue || begin >= end) return;
  const NDArray& head = c.out[0];
  run_steps(c, begin, end, rows_of(head, head.ndim(), head.shape()[0], begin, end));
}

void run_epilogue(const KernelCall& c, int64_t begin, int64_t end, const NDArray& head_rows) {
  if (!c.epilogue || begin >= end) return;
  run_steps(c, begin, end, head_rows);
}

std::vector<KernelEntry> registered_kernels() {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  std::vector<KernelEntry> out;
  for (const auto& [op, devs] : r.table)
    for (size_t d = 0; d < devs.size(); ++d) {
      KernelEntry e{op, DeviceKind(d), {}};
      for (DType t : kAllDTypes)
        if (devs[d][size_t(t)].fn) e.dtypes.push_back(t);
      if (!e.dtypes.empty()) out.push_back(std::move(e));
    }
  return out;
}

}  // namespace loom
