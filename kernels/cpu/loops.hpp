#pragma once
// Strided N-operand loops shared by the CPU kernels: operands are broadcast to
// the output shape (stride 0), dimensions that are contiguous for every
// operand are merged, and the rows of the result are split across TBB.

#include <array>
#include <cstdint>
#include <vector>

#include "core/ndarray.hpp"
#include "core/parallel.hpp"

namespace loom::cpu {

/// Elements per task below which a loop stays on one thread.
inline constexpr int64_t kGrain = 32768;

template <size_t N>
struct Loop {
  std::vector<int64_t> shape;                   // coalesced, at least one dim
  std::array<std::vector<int64_t>, N> strides;  // per operand, in elements
};

/// Strides of `l` broadcast (right-aligned) to `shape`.
inline std::vector<int64_t> broadcast_strides(const Layout& l, const Shape& shape) {
  std::vector<int64_t> s(shape.size(), 0);
  size_t off = shape.size() - l.shape.size();
  for (size_t i = 0; i < l.shape.size(); ++i)
    if (l.shape[i] != 1) s[off + i] = l.strides[i];
  return s;
}

/// Operand 0 is the output (its layout's shape is the iteration shape).
template <size_t N>
Loop<N> make_loop(const std::array<const Layout*, N>& ops) {
  const Shape& shape = ops[0]->shape;
  std::array<std::vector<int64_t>, N> st;
  for (size_t k = 0; k < N; ++k) st[k] = broadcast_strides(*ops[k], shape);
  Loop<N> L;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    bool merge = !L.shape.empty();
    for (size_t k = 0; k < N && merge; ++k) merge = L.strides[k].back() == st[k][d] * shape[d];
    if (merge) {
      L.shape.back() *= shape[d];
      for (size_t k = 0; k < N; ++k) L.strides[k].back() = st[k][d];
    } else {
      L.shape.push_back(shape[d]);
      for (size_t k = 0; k < N; ++k) L.strides[k].push_back(st[k][d]);
    }
  }
  if (L.shape.empty()) {
    L.shape.push_back(numel(shape));  // 0 or 1 elements
    for (size_t k = 0; k < N; ++k) L.strides[k].push_back(1);
  }
  return L;
}

/// Calls f(ptrs, inner_strides, n) for every innermost run of the loop, where
/// ptrs[k] points at operand k's first element of the run (as char*) and
/// inner_strides[k] is its stride in elements. Rows run in parallel.
template <size_t N, class F>
void run_loop(const Loop<N>& L, const std::array<char*, N>& base, const std::array<size_t, N>& itemsize, F&& f) {
  const size_t nd = L.shape.size();
  const int64_t inner = L.shape.back();
  int64_t rows = 1;
  for (size_t d = 0; d + 1 < nd; ++d) rows *= L.shape[d];
  std::array<int64_t, N> is;
  for (size_t k = 0; k < N; ++k) is[k] = L.strides[k].back();
  if (rows * inner == 0) return;
  if (rows == 1) {
    parallel_for(inner, kGrain, [&](int64_t lo, int64_t hi) {
      std::array<char*, N> p;
      for (size_t k = 0; k < N; ++k) p[k] = base[k] + lo * is[k] * int64_t(itemsize[k]);
      f(p, is, hi - lo);
    });
    return;
  }
  parallel_for(rows, std::max<int64_t>(1, kGrain / inner), [&](int64_t lo, int64_t hi) {
    // Odometer over the outer dims, starting at row `lo`.
    std::vector<int64_t> idx(nd - 1);
    int64_t r = lo;
    for (size_t d = nd - 1; d-- > 0;) {
      idx[d] = r % L.shape[d];
      r /= L.shape[d];
    }
    for (int64_t row = lo; row < hi; ++row) {
      std::array<char*, N> p;
      for (size_t k = 0; k < N; ++k) {
        int64_t off = 0;
        for (size_t d = 0; d + 1 < nd; ++d) off += idx[d] * L.strides[k][d];
        p[k] = base[k] + off * int64_t(itemsize[k]);
      }
      f(p, is, inner);
      for (size_t d = nd - 1; d-- > 0;) {
        if (++idx[d] < L.shape[d]) break;
        idx[d] = 0;
      }
    }
  });
}

/// True when every array has the shape `s` and is compact.
inline bool all_compact(std::initializer_list<const NDArray*> as, const Shape& s) {
  for (const NDArray* a : as)
    if (a->shape() != s || !a->is_compact()) return false;
  return true;
}

}  // namespace loom::cpu
