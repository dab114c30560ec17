#pragma once
/// Large arrays on transparent huge pages (internal to core).
///
/// The plan compiler's passes index its node, value, storage and step arrays
/// at random. With 4 KiB pages a 100k-op plan (tens of MiB per array) misses
/// the TLB on most of those accesses; on 2 MiB pages far fewer (the 100k-op
/// random DAG of bench_sched compiles 2-8% faster, and up to 19% in one
/// noisy run). Where the kernel's THP mode is "madvise" (Debian's default)
/// memory only gets huge pages when asked for, which this allocator does for
/// arrays of 2 MiB or more; smaller ones come from operator new.

#include <cstddef>
#include <vector>

namespace loom {

void* huge_pages_allocate(size_t bytes);
void huge_pages_free(void* p, size_t bytes) noexcept;

template <class T>
struct HugePageAllocator {
  using value_type = T;
  HugePageAllocator() = default;
  template <class U>
  HugePageAllocator(const HugePageAllocator<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(huge_pages_allocate(n * sizeof(T))); }
  void deallocate(T* p, size_t n) noexcept { huge_pages_free(p, n * sizeof(T)); }
  friend bool operator==(HugePageAllocator, HugePageAllocator) { return true; }
};

template <class T>
using HugeVector = std::vector<T, HugePageAllocator<T>>;

}  // namespace loom
