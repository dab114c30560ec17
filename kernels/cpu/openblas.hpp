#pragma once
// OpenBLAS's kernel set, chosen for the CPU we run on.
//
// Debian's OpenBLAS (0.3.21, built with DYNAMIC_ARCH) picks its kernels by
// CPU model when it loads, and falls back to its SSE3 "Prescott" kernels on
// models it does not know (e.g. recent Xeons, family 6 model 207): sgemm then
// runs ~5x slower than the AVX-512 kernels the CPU can run. select_core()
// re-runs OpenBLAS's own core selection with OPENBLAS_CORETYPE set from the
// instruction sets the CPU reports, when the user has not set it and OpenBLAS
// fell back to a pre-AVX2 core on a CPU with AVX2 or AVX-512.

#include <string>

namespace loom::cpu::openblas {

/// Selects OpenBLAS's kernels for this CPU (once; before any BLAS call).
void select_core();
/// OpenBLAS's kernel set in use ("SkylakeX", "Haswell", ...).
std::string core_name();

}  // namespace loom::cpu::openblas
