#include "kernels/cpu/openblas.hpp"

#include <cblas.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <string_view>

// OpenBLAS's core selection (driver/others/dynamic.c), exported by its
// DYNAMIC_ARCH builds only: weak, so another BLAS build still links and runs.
extern "C" {
void gotoblas_dynamic_init(void) __attribute__((weak));
void gotoblas_dynamic_quit(void) __attribute__((weak));
}

namespace loom::cpu::openblas {

namespace {

// Cores OpenBLAS falls back to: none uses AVX2.
constexpr std::array<std::string_view, 10> kPreAvx2 = {"Prescott", "Core2",  "Penryn",     "Dunnington", "Nehalem",
                                                       "Atom",     "Banias", "Sandybridge", "Katmai",     "Northwood"};

/// The best OpenBLAS core for this CPU's instruction sets, or null.
const char* best_core_for_this_cpu() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
    return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return __builtin_cpu_is("amd") ? "Zen" : "Haswell";
  return nullptr;
}

}  // namespace

void select_core() {
  static const bool done = [] {
    if (!gotoblas_dynamic_init || !gotoblas_dynamic_quit || std::getenv("OPENBLAS_CORETYPE")) return true;
    const std::string_view current = openblas_get_corename();
    const char* best = best_core_for_this_cpu();
    if (!best || std::find(kPreAvx2.begin(), kPreAvx2.end(), current) == kPreAvx2.end()) return true;
    setenv("OPENBLAS_CORETYPE", best, 0);
    gotoblas_dynamic_quit();
    gotoblas_dynamic_init();
    unsetenv("OPENBLAS_CORETYPE");  // leave the environment as the user gave it
    return true;
  }();
  (void)done;
}

std::string core_name() { return openblas_get_corename(); }

}  // namespace loom::cpu::openblas
