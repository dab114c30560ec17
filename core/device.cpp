#include "core/device.hpp"

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

#include "core/buffer.hpp"
#include "core/error.hpp"
#include "core/shape.hpp"

namespace loom {

std::string Device::str() const {
  return kind == DeviceKind::cpu ? "cpu" : "cuda:" + std::to_string(index);
}

Device Device::parse(const std::string& s) {
  if (s == "cpu") return cpu();
  if (s == "cuda") return cuda(0);
  // "cuda:N" with N only decimal digits (as PyTorch: no sign, no spaces) that fit an int.
  const std::string n = s.rfind("cuda:", 0) == 0 ? s.substr(5) : "";
  if (!n.empty() && n.size() <= 9 && n.find_first_not_of("0123456789") == std::string::npos)
    return cuda(std::stoi(n));
  fail("unknown device '", s, "' (expected cpu, cuda or cuda:N)");
}

void* DeviceBackend::allocate_host(size_t bytes) {
  if (bytes > size_t(kMaxArrayBytes)) fail("out of host memory allocating ", bytes, " bytes");
  void* p = std::aligned_alloc(kAlignment, (std::max<size_t>(bytes, 1) + kAlignment - 1) / kAlignment * kAlignment);
  if (!p) fail("out of host memory allocating ", bytes, " bytes");
  return p;
}
void DeviceBackend::deallocate_host(void* p) noexcept { std::free(p); }

namespace {

class CpuBackend final : public DeviceBackend {
 public:
  void* allocate(size_t bytes) override { return allocate_host(bytes); }
  void deallocate(void* p, size_t) noexcept override { std::free(p); }
  void copy_from_host(void* d, const void* s, size_t n, void*) override { copy(d, s, n); }
  void copy_to_host(void* d, const void* s, size_t n, void*) override { copy(d, s, n); }
  void copy_within(void* d, const void* s, size_t n, void*) override { copy(d, s, n); }
  void synchronize(void*) override {}

 private:
  static void copy(void* d, const void* s, size_t n) {
    if (n) std::memmove(d, s, n);
  }
};

struct Kind {
  std::function<int()> count;
  std::function<DeviceBackend&(int)> get;
};

std::mutex& kinds_mutex() {
  static std::mutex m;
  return m;
}
Kind* kind_slot(DeviceKind k) {
  static Kind kinds[2];
  LOOM_CHECK(int(k) < 2, "device kind ", int(k), " is neither cpu nor cuda");
  return &kinds[int(k)];
}

}  // namespace

void register_device_kind(DeviceKind kind, std::function<int()> count,
                          std::function<DeviceBackend&(int)> get) {
  std::lock_guard lock(kinds_mutex());
  *kind_slot(kind) = Kind{std::move(count), std::move(get)};
}

int device_count(DeviceKind kind) {
  if (kind == DeviceKind::cpu) return 1;
  Kind k;
  {
    std::lock_guard lock(kinds_mutex());
    k = *kind_slot(kind);
  }
  return k.count ? k.count() : 0;
}

bool device_available(Device d) { return d.index >= 0 && d.index < device_count(d.kind); }

DeviceBackend& device_backend(Device d) {
  if (d.kind == DeviceKind::cpu) {
    static CpuBackend cpu;
    return cpu;
  }
  Kind k;
  {
    std::lock_guard lock(kinds_mutex());
    k = *kind_slot(d.kind);
  }
  if (!k.get)
    fail(d.str(), ": no CUDA backend in this program: loom was built without CUDA support (configure with "
                  "-DLOOM_CUDA=ON), or the program does not link libloom_cuda (CMake: loom::cuda; pkg-config: loom-cuda)");
  int n = k.count();
  if (n == 0) fail(d.str(), ": no CUDA device found");
  if (d.index < 0 || d.index >= n) fail(d.str(), ": no such device (", n, " present)");
  return k.get(d.index);
}

std::shared_ptr<Buffer> Buffer::allocate(Device d, size_t bytes) {
  LOOM_CHECK(bytes <= size_t(kMaxArrayBytes), "cannot allocate ", bytes, " bytes on ", d.str(),
             ": more than the 2^48-byte limit of one array");
  size_t n = (std::max<size_t>(bytes, 1) + kAlignment - 1) / kAlignment * kAlignment;
  void* p = device_backend(d).allocate(n);
  return std::shared_ptr<Buffer>(new Buffer(d, p, n, true));
}

std::shared_ptr<Buffer> Buffer::borrow(Device d, void* p, size_t bytes) {
  return std::shared_ptr<Buffer>(new Buffer(d, p, bytes, false));
}

Buffer::~Buffer() {
  if (owned_) device_backend(device_).deallocate(data_, bytes_);
}

}  // namespace loom
