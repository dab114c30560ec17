#pragma once
/// A block of device memory, shared by every NDArray viewing it.

#include <memory>

#include "core/device.hpp"

namespace loom {

class Buffer {
 public:
  /// Allocates `bytes` (at least kAlignment) on `d`, aligned to kAlignment.
  static std::shared_ptr<Buffer> allocate(Device d, size_t bytes);
  /// Memory owned elsewhere, not freed with the Buffer: a kernel's view of
  /// part of its workspace, which outlives the arrays made over it.
  static std::shared_ptr<Buffer> borrow(Device d, void* p, size_t bytes);
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer();

  Device device() const { return device_; }
  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }

 private:
  Buffer(Device d, void* p, size_t n, bool owned) : device_(d), data_(p), bytes_(n), owned_(owned) {}
  Device device_;
  void* data_;
  size_t bytes_;
  bool owned_;
};

}  // namespace loom
