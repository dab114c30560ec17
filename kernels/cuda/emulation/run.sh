#!/bin/sh
# Builds loom without CUDA, the CUDA kernels (kernels/cuda/*.cu) against the
# host emulator in this folder, and the CPU/CUDA parity tests, then runs them.
# Needs no GPU and no CUDA toolkit. See README.md.
#
#   kernels/cuda/emulation/run.sh [doctest args]      e.g. -tc='*matmul*'
#
# Environment: CXX (default g++; the compiler of LOOM's build), BUILD (default build/cuda-emulation), JOBS (default 2:
# compile jobs, for loom and the emulated kernels),
# SANITIZE=address to run the emulated kernels under AddressSanitizer, LOOM (default
# $BUILD/loom) to reuse an existing CPU-only build of loom with the same sanitizers
# (CI uses build/asan).
set -eu
root=$(cd "$(dirname "$0")/../../.." && pwd)
here=$root/kernels/cuda/emulation
build=${BUILD:-$root/build/cuda-emulation}
loom=${LOOM:-$build/loom}
jobs=${JOBS:-2}
san=""
[ -n "${SANITIZE:-}" ] && san="-fsanitize=$SANITIZE -fno-omit-frame-pointer -fno-sanitize-recover=all"

if [ ! -f "$loom/CMakeCache.txt" ]; then
  cmake -S "$root" -B "$loom" -DCMAKE_BUILD_TYPE=Release -DLOOM_CUDA=OFF -DLOOM_BUILD_SAMPLES=OFF \
    -DLOOM_BUILD_TESTS=OFF -DLOOM_ONNX=OFF -DLOOM_SANITIZE="${SANITIZE:-}" >/dev/null
fi
cmake --build "$loom" -j "$jobs" --target loom
loom=$(cd "$loom" && pwd)
mkdir -p "$build"

flags="-std=c++20 -O1 -g $san -DLOOM_CUDA_EMULATION -I$here/include -I$root"
objs=""
todo=""
for src in "$here"/*.cpp "$root"/kernels/cuda/*.cu; do
  obj=$build/$(basename "$src").o
  objs="$objs $obj"
  stale=$(find "$root/kernels/cuda" "$root/core" -newer "$obj" \( -name '*.cuh' -o -name '*.hpp' -o -name '*.h' \) 2>/dev/null | head -1)
  if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ] || [ -n "$stale" ]; then todo="$todo $src"; fi
done
# The tests, compiled every time (they read most of loom's headers), with warnings on.
for src in "$root/tests/main.cpp" "$root/tests/cuda/test_cuda_parity.cpp"; do
  objs="$objs $build/$(basename "$src").o"
  todo="$todo $src"
done
# Stale objects compiled $jobs at a time (the sources are independent).
export CXX_EMU="${CXX:-g++}" FLAGS_EMU="$flags" BUILD_EMU="$build"
printf '%s\n' $todo | xargs -P "$jobs" -I{} sh -c '
  case "{}" in */tests/*) warn="-Wall -Wextra -Wno-unused-parameter" ;; *) warn="" ;; esac
  echo "emulation: compiling $(basename "{}")"
  $CXX_EMU -x c++ $FLAGS_EMU $warn -c "{}" -o "$BUILD_EMU/$(basename "{}").o"'
# Emulated kernels first: their registrations must run before the tests ask for a GPU.
${CXX:-g++} $flags $objs -o "$build/loom_cuda_emulated_tests" -L"$loom" -lloom -ltbb -Wl,-rpath,"$loom"
JOBS=$jobs "$root/tests/run_parallel.sh" "$build/loom_cuda_emulated_tests" "$@"  # one process per test case
