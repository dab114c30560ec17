#pragma once
/// Parallel loops on TBB. Kernels run inside the task arena of the session
/// that runs them (its size is the session's thread count), so kernels and the
/// parallel executor share one pool and never oversubscribe the machine.

#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/task_group.h>

#include <algorithm>
#include <cstdint>
#include <exception>
#include <thread>

namespace loom {

/// Threads available to kernels in the calling context.
inline int current_threads() { return oneapi::tbb::this_task_arena::max_concurrency(); }

/// Runs f(lo, hi) over [0, n) in pieces of at least `grain` elements; inline
/// (no task overhead) when the range is small or one thread is available.
template <class F>
void parallel_for(int64_t n, int64_t grain, F&& f) {
  if (n <= 0) return;
#if defined(__SANITIZE_THREAD__)
  grain = n;  // TSan cannot see libtbb's synchronization: kernels run their loops inline
#endif
  if (n <= grain || current_threads() == 1) {
    f(int64_t(0), n);
    return;
  }
  oneapi::tbb::parallel_for(oneapi::tbb::blocked_range<int64_t>(0, n, std::max<int64_t>(grain, 1)),
                            [&](const oneapi::tbb::blocked_range<int64_t>& r) { f(r.begin(), r.end()); });
}

/// Runs f(chunk, lo, hi) for chunks [k*size, (k+1)*size) of [0, n). The chunk
/// boundaries depend only on n and size, never on the thread count, so a
/// reduction combining per-chunk results in chunk order is deterministic.
template <class F>
void parallel_chunks(int64_t n, int64_t size, F&& f) {
  int64_t chunks = (n + size - 1) / size;
  parallel_for(chunks, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t c = lo; c < hi; ++c) f(c, c * size, std::min(n, (c + 1) * size));
  });
}

/// Runs a and b at once where the calling arena has a second thread; rethrows
/// an error of either once both are done.
template <class A, class B>
void run_both(A&& a, B&& b) {
  std::exception_ptr error_a, error_b;
  auto guarded = [](auto& f, std::exception_ptr& error) {
    try {
      f();
    } catch (...) {
      error = std::current_exception();
    }
  };
#if !defined(__SANITIZE_THREAD__)
  oneapi::tbb::task_group other;
  other.run([&] { guarded(a, error_a); });
  guarded(b, error_b);
  other.wait();
#else
  // libtbb is not instrumented (see run_parallel in core/session.cpp): a
  // std::thread, whose start and join TSan sees, so it checks that a and b
  // share no writes.
  std::thread other([&] { guarded(a, error_a); });
  guarded(b, error_b);
  other.join();
#endif
  if (error_a) std::rethrow_exception(error_a);
  if (error_b) std::rethrow_exception(error_b);
}

}  // namespace loom
