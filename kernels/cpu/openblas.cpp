// OpenBLAS picks its kernels at load time from the CPU model (DYNAMIC_ARCH).
// A model newer than the library (Debian 12's 0.3.21 does not know Emerald
// Rapids, model 207) falls back to the Prescott kernels, SSE3 only: sgemm
// then runs 5-8x below what the CPU does with its AVX-512 kernels. When the
// library reports such a generic core on a CPU with AVX2 or AVX-512, this
// re-runs OpenBLAS's own core selection with OPENBLAS_CORETYPE naming the
// newest kernel family the CPU's features support (the documented override,
// applied here because the variable must be set before the library loads).
// A user's own OPENBLAS_CORETYPE, a static or non-dynamic OpenBLAS, or a core
// OpenBLAS recognized are left alone.

#include <cblas.h>
#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <string>

namespace loom::cpu {
namespace {

/// The OpenBLAS core family for this CPU's features, or null for "keep what OpenBLAS chose".
const char* better_core(const std::string& chosen) {
  static const char* kGeneric[] = {"Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Atom", "Unknown"};
  bool generic = false;
  for (const char* g : kGeneric) generic |= chosen == g;
  if (!generic) return nullptr;
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  if (avx512) return __builtin_cpu_supports("avx512bf16") ? "Cooperlake" : "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return __builtin_cpu_is("amd") ? "Zen" : "Haswell";
  return nullptr;
}

const bool selected = [] {
  if (std::getenv("OPENBLAS_CORETYPE")) return false;
  using Fn = void (*)();
  auto init = reinterpret_cast<Fn>(dlsym(RTLD_DEFAULT, "gotoblas_dynamic_init"));
  auto quit = reinterpret_cast<Fn>(dlsym(RTLD_DEFAULT, "gotoblas_dynamic_quit"));
  if (!init || !quit) return false;  // not a DYNAMIC_ARCH build
  const char* core = better_core(openblas_get_corename());
  if (!core) return false;
  setenv("OPENBLAS_CORETYPE", core, 1);
  quit();
  init();
  unsetenv("OPENBLAS_CORETYPE");
  return true;
}();

}  // namespace
}  // namespace loom::cpu
