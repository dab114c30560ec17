#pragma once
// LOOM_CLONES: compiles a hot loop for AVX-512, AVX2 and the baseline and
// picks one at load time from the CPU (GCC's target_clones, an ifunc), so the
// portable build still runs the loops at the vector width the CPU has.
// Off under sanitizers (their runtimes and ifunc resolvers do not mix).

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__) && \
    !defined(__SANITIZE_THREAD__)
#define LOOM_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define LOOM_CLONES
#endif
