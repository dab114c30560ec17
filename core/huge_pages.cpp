#include "core/huge_pages.hpp"

#include <sys/mman.h>

#include <new>

namespace loom {

namespace {

constexpr size_t kHugePage = size_t(2) << 20;

size_t mapped_bytes(size_t bytes) { return (bytes + kHugePage - 1) / kHugePage * kHugePage; }

}  // namespace

void* huge_pages_allocate(size_t bytes) {
  if (bytes < kHugePage) return ::operator new(bytes);
  void* p = mmap(nullptr, mapped_bytes(bytes), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
  madvise(p, mapped_bytes(bytes), MADV_HUGEPAGE);  // advice only: without THP these stay 4 KiB pages
#endif
  return p;
}

void huge_pages_free(void* p, size_t bytes) noexcept {
  if (bytes < kHugePage) return ::operator delete(p);
  munmap(p, mapped_bytes(bytes));
}

}  // namespace loom
