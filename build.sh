#!/bin/sh
# One entry point for the README commands and CI. Installs what is missing
# (Debian 12, as root), configures, builds, and runs.
#
#   ./build.sh train [args]   build, then train an MLP on Fashion-MNIST
#   ./build.sh test           build (Release) and run the whole test suite
#   ./build.sh test-asan      AddressSanitizer + UBSan build (clang), whole suite
#   ./build.sh test-tsan      ThreadSanitizer build, parallel-executor suites
#   ./build.sh fuzz [s] [t..] libFuzzer (clang, ASan+UBSan): each target s seconds of a core (60) on its seed corpus
#   ./build.sh bench-train    loom vs PyTorch training benchmark (peers in a venv)
#   ./build.sh bench-sched    scheduling/memory benchmark, PyTorch side by side
#   ./build.sh train_cnn [args] build, then train ResNet9 (or --model cnn) on Fashion-MNIST or CIFAR-10
#   ./build.sh train-lm [args] build, then train an LSTM language model on the fortunes corpus
#   ./build.sh bench-lm [args] loom vs PyTorch language-model training (peers in a venv)
#   ./build.sh build          build only (Release)
#   ./build.sh consumer       install into build/stage, then build and run tests/consumer against it (CI)
#   ./build.sh interop        loom <-> PyTorch checkpoints and ONNX export checked with onnxruntime (peers venv)
#   ./build.sh test-mpi       build, then the 2-rank MPI suite, fault and train_mnist equivalence checks (tests/mpi/run.sh)
#   ./build.sh <program> ...  build, then run build/release/samples/<program>
#
# Environment: LOOM_WERROR=ON (CI), LOOM_CUDA=AUTO|ON|OFF, JOBS=n, LOOM_VENV (the peers' venv, default build/venv),
# OPENBLAS_CORETYPE (default: chosen from the CPU's flags, see blas_env).
set -eu
cd "$(dirname "$0")"

need() {  # need <debian packages...>: installs the missing ones
  missing=""
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
  done
  if [ -n "$missing" ]; then
    echo "build.sh: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
}

base_deps() {
  need g++ make cmake pkg-config libtbb-dev libboost-program-options-dev doctest-dev libopenblas-dev zlib1g-dev \
    nlohmann-json3-dev
  need libonnx-dev libprotobuf-dev  # libloom_onnx (ONNX export); libloom itself does not use them
  need libdnnl-dev  # oneDNN: CPU convolutions
  need libopenmpi-dev openmpi-bin  # libloom_mpi (data parallelism); libloom itself does not use them
}

# The benchmark peers, current PyTorch and JAX from PyPI, in a venv of their
# own (never a dependency of the library or its tests). Sets LOOM_PYTHON,
# which the benchmarks use to run their peer scripts.
peers() {
  need python3-venv
  venv=${LOOM_VENV:-build/venv}
  if ! "$venv/bin/python" -c 'import torch, jax, numpy' 2>/dev/null; then
    echo "build.sh: installing PyTorch, JAX and NumPy from PyPI into $venv (once; a few GB)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
    "$venv/bin/pip" install -q torch jax numpy
  fi
  # The interop peers (./build.sh interop): ONNX's checker, onnxruntime, safetensors.
  if ! "$venv/bin/python" -c 'import onnx, onnxruntime, safetensors' 2>/dev/null; then
    echo "build.sh: installing onnx, onnxruntime and safetensors from PyPI into $venv"
    "$venv/bin/pip" install -q onnx onnxruntime safetensors
  fi
  LOOM_PYTHON=$(cd "$venv" && pwd)/bin/python
  export LOOM_PYTHON
}

# Debian's OpenBLAS (0.3.21) predates some CPUs (Sapphire and Emerald Rapids)
# and falls back to its generic "Prescott" kernels on them: GEMMs 3x slower.
# Unless the user chose a core, name the nearest one it knows for what this
# CPU has (the same kernels it picks on CPUs it does know).
blas_env() {
  [ -n "${OPENBLAS_CORETYPE:-}" ] && return 0
  flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)
  case "$flags" in
    *avx512f*avx512dq*avx512bw*avx512vl*) OPENBLAS_CORETYPE=SkylakeX ;;
    *avx2*) OPENBLAS_CORETYPE=Haswell ;;
    *) return 0 ;;
  esac
  export OPENBLAS_CORETYPE
}
blas_env

JOBS=${JOBS:-$(nproc)}

configure() {  # configure <dir> [cmake args...]: once per build directory
  dir=$1
  shift
  if [ ! -f "$dir/CMakeCache.txt" ]; then
    cmake -S . -B "$dir" -DLOOM_WERROR="${LOOM_WERROR:-OFF}" -DLOOM_CUDA="${LOOM_CUDA:-AUTO}" "$@" >/dev/null
  fi
}

configure_and_build() {  # configure_and_build <dir> [cmake args...]
  configure "$@"
  cmake --build "$1" -j "$JOBS"
}

release() { configure_and_build build/release -DCMAKE_BUILD_TYPE=Release; }

# build/asan: clang with AddressSanitizer, UBSan (clang's, which also checks
# float-to-int conversions) and libFuzzer's coverage, configured only. One
# build serves test-asan, the fuzz targets and the CUDA emulator in CI.
sanitized() {
  base_deps
  need clang libclang-rt-14-dev
  if [ ! -f build/asan/CMakeCache.txt ]; then
    CC=clang CXX=clang++ cmake -S . -B build/asan -DCMAKE_BUILD_TYPE=None -DCMAKE_CXX_FLAGS="-O1 -g1" \
      -DLOOM_FUZZ=ON -DLOOM_SANITIZE=address,undefined -DLOOM_CUDA=OFF -DLOOM_BUILD_SAMPLES=OFF \
      -DLOOM_WERROR="${LOOM_WERROR:-OFF}" >/dev/null
  fi
}

cmd=${1:-test}
[ $# -gt 0 ] && shift
case "$cmd" in
  build)
    base_deps
    release
    ;;
  test)
    base_deps
    need dataset-fashion-mnist  # the data tests read the real files
    need fortunes               # the text corpus tests too
    release
    build/release/tests/loom_tests "$@"
    ;;
  test-asan)
    sanitized
    cmake --build build/asan -j "$JOBS"
    # One process per test case, $JOBS at a time (tests/run_parallel.sh): one thread would take 4 minutes.
    ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 JOBS="$JOBS" tests/run_parallel.sh build/asan/tests/loom_tests "$@"
    ;;
  test-tsan)
    base_deps
    # Only the library and the test files with "*parallel*" suites (tests/CMakeLists.txt).
    configure build/tsan -DCMAKE_BUILD_TYPE=None -DCMAKE_CXX_FLAGS="-O1 -g1" -DLOOM_SANITIZE=thread -DLOOM_CUDA=OFF \
      -DLOOM_BUILD_SAMPLES=OFF
    cmake --build build/tsan -j "$JOBS" --target loom_parallel_tests
    TSAN_OPTIONS="halt_on_error=1 suppressions=$(pwd)/tests/tsan.supp" \
      build/tsan/tests/loom_parallel_tests -ts='*parallel*' "$@"
    ;;
  fuzz)
    # Fuzz targets of tests/fuzz: new inputs go to build/fuzz/corpus/<target>,
    # crashes to build/fuzz/crashes/. FUZZ_ARGS adds libFuzzer flags (-jobs=2, ...).
    sanitized
    seconds=${1:-60}
    [ $# -gt 0 ] && shift
    targets=${*:-idx safetensors cifar10 text graph}
    cmake --build build/asan -j "$JOBS" $(for t in $targets; do printf ' --target fuzz_%s' "$t"; done)
    mkdir -p build/fuzz/crashes build/fuzz/logs
    # Every core busy to the end: with more targets than cores (JOBS > 1), all run at once for
    # seconds x targets / JOBS, so that each still gets about `seconds` of one core (JOBS=1: one at a time).
    # Each log (build/fuzz/logs/) is shown when its target ends, whole if it failed.
    n=$(echo $targets | wc -w)
    at_once=$JOBS wall=$seconds
    if [ "$n" -gt "$JOBS" ] && [ "$JOBS" -gt 1 ]; then at_once=$n wall=$((seconds * n / JOBS)); fi
    echo "build.sh: fuzzing $targets, each for about $seconds s of a core ($at_once at a time for $wall s, on $JOBS cores)"
    export seconds=$wall
    printf '%s\n' $targets | xargs -P "$at_once" -n 1 sh -c '
      t=$1 log=build/fuzz/logs/$1.log
      mkdir -p "build/fuzz/corpus/$t"
      rc=0
      ASAN_OPTIONS=allocator_may_return_null=1:detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
        "build/asan/tests/fuzz_$t" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=4096 -print_final_stats=1 \
        -artifact_prefix="build/fuzz/crashes/$t-" ${FUZZ_ARGS:-} "build/fuzz/corpus/$t" "tests/fuzz/corpus/$t" \
        >"$log" 2>&1 || rc=$?
      echo "build.sh: fuzz_$t, $seconds s: exit status $rc"
      if [ "$rc" = 0 ]; then grep -E "^(Done |stat::)" "$log"; else cat "$log"; exit 1; fi' sh
    ;;
  train)
    base_deps
    need dataset-fashion-mnist
    release
    if [ -x build/release/samples/train_mnist ]; then
      build/release/samples/train_mnist "$@"
    else
      build/release/samples/hello "$@"
    fi
    ;;
  bench-train)
    base_deps
    need dataset-fashion-mnist
    peers
    release
    build/release/samples/bench_train "$@"
    ;;
  consumer)
    base_deps
    release
    tests/consumer/run.sh build/release build/consumer
    ;;
  interop)
    base_deps
    need dataset-fashion-mnist
    peers
    release
    "$LOOM_PYTHON" samples/interop.py --build build/release/samples "$@"
    ;;
  test-mpi)
    base_deps
    need dataset-fashion-mnist
    release
    tests/mpi/run.sh build/release "$@"
    ;;
  bench-sched)
    base_deps
    need gnuplot-nox
    peers
    release
    build/release/samples/bench_sched "$@"
    ;;
  train-lm | train_lm)
    base_deps
    need fortunes
    release
    build/release/samples/train_lm "$@"
    ;;
  bench-lm | bench_lm)
    base_deps
    need fortunes
    peers
    release
    build/release/samples/bench_lm "$@"
    ;;
  train_cnn)  # the CNN trainer: the default data set (Fashion-MNIST) comes from Debian
    base_deps
    need dataset-fashion-mnist
    release
    build/release/samples/train_cnn "$@"
    ;;
  *)
    base_deps
    release
    exe=build/release/samples/$cmd
    [ -x "$exe" ] || { echo "build.sh: unknown command or program '$cmd'" >&2; exit 2; }
    "$exe" "$@"
    ;;
esac
