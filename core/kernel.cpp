#include "core/kernel.hpp"

#include <algorithm>
#include <array>
#include <map>
#include <mutex>

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
