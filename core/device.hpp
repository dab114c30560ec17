#pragma once
/// Devices and the interface a device backend implements. The CPU backend
/// lives in core; the CUDA backend registers itself from kernels/cuda, so core
/// never includes a CUDA header.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace loom {

enum class DeviceKind : uint8_t { cpu, cuda };

struct Device {
  DeviceKind kind = DeviceKind::cpu;
  int index = 0;

  static Device cpu() { return {DeviceKind::cpu, 0}; }
  static Device cuda(int i = 0) { return {DeviceKind::cuda, i}; }
  /// "cpu", "cuda:0".
  std::string str() const;
  /// Parses "cpu", "cuda", "cuda:1"; throws loom::Error otherwise.
  static Device parse(const std::string& s);
  bool is_cpu() const { return kind == DeviceKind::cpu; }
  friend bool operator==(Device, Device) = default;
};

/// Memory and copies on one device. Streams are opaque (`void*`, null = the
/// device's default); CPU ignores them.
class DeviceBackend {
 public:
  virtual ~DeviceBackend() = default;
  virtual void* allocate(size_t bytes) = 0;
  virtual void deallocate(void* p, size_t bytes) noexcept = 0;
  virtual void copy_from_host(void* dst, const void* src, size_t bytes, void* stream) = 0;
  virtual void copy_to_host(void* dst, const void* src, size_t bytes, void* stream) = 0;
  virtual void copy_within(void* dst, const void* src, size_t bytes, void* stream) = 0;
  virtual void synchronize(void* stream) = 0;
  virtual void* create_stream() { return nullptr; }
  virtual void destroy_stream(void*) noexcept {}
  /// Page-locked host memory for staging feeds and fetches (plain memory on CPU).
  virtual void* allocate_host(size_t bytes);
  virtual void deallocate_host(void* p) noexcept;
};

/// The backend of `d`; throws loom::Error naming the device when it is not
/// built in or not present (e.g. "cuda:0: no CUDA device found").
DeviceBackend& device_backend(Device d);
bool device_available(Device d);
/// Number of devices of a kind present (CPU: 1).
int device_count(DeviceKind kind);

/// Called by a backend's translation unit at static-initialization time.
void register_device_kind(DeviceKind kind, std::function<int()> count,
                          std::function<DeviceBackend&(int index)> get);

/// Allocation alignment on every device: enough for any SIMD load.
inline constexpr size_t kAlignment = 64;

}  // namespace loom
