#pragma once
// Philox4x32-10 (core/philox.hpp) on many blocks at once, for the CPU kernels
// that draw random numbers (random_uniform/normal, attention's dropout).

#include <cstdint>

namespace loom::cpu {

/// Philox blocks first .. first + n of stream (key, run), four words each,
/// into w[0, 4n): philox::words on 64 blocks at once (then eight, in 64-bit
/// vector lanes), the same bits as the scalar form and the CUDA kernels.
void philox_blocks(uint64_t key, uint64_t run, uint64_t first, int64_t n, uint32_t* w);

}  // namespace loom::cpu
