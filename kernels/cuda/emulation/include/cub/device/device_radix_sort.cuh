#pragma once
// Host emulation of cub::DeviceRadixSort::SortPairs (see ../../../README.md):
// a stable sort on the key bits [begin_bit, end_bit).

#include <algorithm>
#include <numeric>
#include <vector>

#include "../../cuda_runtime.h"

namespace cub {
struct DeviceRadixSort {
  template <class K, class V, class N>
  static cudaError_t SortPairs(void* temp, size_t& temp_bytes, const K* keys_in, K* keys_out, const V* values_in,
                               V* values_out, N n, int begin_bit = 0, int end_bit = int(sizeof(K) * 8),
                               cudaStream_t = nullptr) {
    if (!temp) {
      temp_bytes = 64;  // like CUB: the first call only sizes the scratch space
      return cudaSuccess;
    }
    if (temp_bytes < 64) return cudaErrorInvalidValue;
    const K mask = K(((end_bit - begin_bit) >= int(sizeof(K) * 8) ? ~K(0) : (K(1) << (end_bit - begin_bit)) - 1)
                     << begin_bit);
    std::vector<size_t> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), size_t(0));
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return (keys_in[a] & mask) < (keys_in[b] & mask); });
    for (size_t i = 0; i < order.size(); ++i) {
      keys_out[i] = keys_in[order[i]];
      values_out[i] = values_in[order[i]];
    }
    return cudaSuccess;
  }
};
}  // namespace cub
