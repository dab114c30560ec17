#!/bin/bash
# A build of loom for a GPU machine that lacks loom's build dependencies:
# `pack` puts a build's libraries, tests and samples, the Debian libraries
# they load (TBB, oneDNN, OpenBLAS, ...) and the sample data sets into one
# tarball; `run`, on the GPU machine, from a checkout of the same commit,
# unpacks it, finds the CUDA libraries there (cuBLAS, cuDNN, NCCL) and runs
# the CUDA tests, the trainers and the benchmarks against PyTorch on the GPU.
#
#   kernels/cuda/gpu_bundle.sh pack [BUILD] [BUNDLE]   # default build/release, build/gpu-bundle.tar.xz
#   kernels/cuda/gpu_bundle.sh run BUNDLE [LOG]        # on the GPU machine; LOG: a copy of the output
#
# The build must have the CUDA backend (`LOOM_CUDA_ARCHS` covering the GPU);
# the GPU machine needs an x86-64 glibc at least Debian 12's and, for the
# PyTorch columns, a python3 with torch (PYTHON=... to choose one).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)

pack() {
  local build=${1:-$root/build/release} bundle=${2:-$root/build/gpu-bundle.tar.xz}
  [ -f "$build/kernels/cuda/libloom_cuda.so.0.2" ] || { echo "gpu_bundle: $build has no CUDA backend" >&2; exit 1; }
  local dir
  dir=$(mktemp -d)
  trap "rm -rf '$dir'" EXIT
  mkdir -p "$dir/lib" "$dir/bin" "$dir/data"
  cp "$build/tests/loom_tests" "$dir/bin/"
  find "$build/samples" -maxdepth 1 -type f -perm -u+x -exec cp {} "$dir/bin/" \;
  cp -L "$build"/libloom.so.0.2 "$build"/kernels/cuda/libloom_cuda.so.0.2 "$dir/lib/"
  for l in "$build"/frontend/*/libloom_*.so.0.2; do cp -L "$l" "$dir/lib/"; done
  # The libraries the programs load, except glibc's, the compiler's and CUDA's (the GPU machine has its own).
  ldd "$dir"/bin/* "$dir"/lib/* 2>/dev/null | awk '/=> \// {print $1, $3}' | sort -u |
    grep -vE '^(libc|libm|libdl|librt|libpthread|libgcc_s|libstdc\+\+|ld-linux|libloom|libcu|libnccl|libnv)' |
    while read -r name path; do cp -L "$path" "$dir/lib/$name"; done
  strip --strip-unneeded "$dir"/bin/* "$dir"/lib/libloom*.so* 2>/dev/null || true
  [ -d /usr/share/datasets/fashion-mnist ] && cp /usr/share/datasets/fashion-mnist/*.gz "$dir/data/"
  [ -d /usr/share/games/fortunes ] && cp -r /usr/share/games/fortunes "$dir/data/"
  mkdir -p "$(dirname "$bundle")"
  XZ_OPT=-T0 tar cJf "$bundle" -C "$dir" lib bin data
  echo "gpu_bundle: $bundle ($(du -h "$bundle" | cut -f1))"
}

# The folder holding library $1 on this machine (CUDA's libraries live in different places on each).
libdir() { { find /usr /opt -name "$1" 2>/dev/null || true; } | grep -v stubs | head -1 | xargs -r dirname || true; }

run() {
  local bundle=$1 log=${2:-/dev/null}
  exec > >(tee "$log") 2>&1
  local dir=/tmp/loom-gpu-bundle
  rm -rf "$dir" && mkdir -p "$dir" && tar xJf "$bundle" -C "$dir"
  local cuda="" l d
  for l in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcudnn.so.9 libnccl.so.2; do
    d=$(libdir "$l")
    echo "$l: ${d:-not found}"
    cuda="$cuda:$d"
  done
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
  local py=${PYTHON:-$(command -v python3 || ls /opt/*/.venv/bin/python3 2>/dev/null | head -1 || true)}
  # PyTorch brings its own cuDNN: it runs without loom's library path.
  printf '#!/bin/sh\nexec env -u LD_LIBRARY_PATH %s "$@"\n' "$py" >"$dir/python"
  chmod +x "$dir/python"
  export LD_LIBRARY_PATH=$dir/lib$cuda PYTHONUNBUFFERED=1
  local b=$dir/bin f=$dir/data c=$dir/data/fortunes failed=0
  step() {
    echo "=== $*"
    "$@" || { echo "=== failed ($?): $*"; failed=1; }
  }
  cd "$root"
  "$b/hello" cuda >/dev/null || { echo "gpu_bundle: no usable GPU here"; return 1; }
  step "$b/loom_tests" -ts='cuda*'
  step "$b/train_mnist" --device cuda --epochs 2 --data "$f"
  step "$b/train_cnn" --device cuda --model resnet9 --epochs 1 --data "$f"
  step "$b/train_lm" --device cuda --model transformer --epochs 1 --fortunes "$c"
  step "$b/train_lm" --device cuda --model lstm --epochs 1 --fortunes "$c"
  step "$b/bench_train" --device cuda --model mlp,mlpresnet,cnn,resnet9 --epochs 2 --torch-threads 1 --data "$f" \
    --python "$dir/python"
  local corpus=$HOME/.cache/loom/fortunes-ptb  # (written by train_lm above)
  step "$dir/python" samples/lm_torch.py --data "$corpus" --model transformer --opt adam --lr 1e-3 --layers 4 \
    --bptt 128 --batch 32 --epochs 1 --device cuda
  step "$dir/python" samples/lm_torch.py --data "$corpus" --model lstm --epochs 1 --device cuda
  return $failed
}

case "${1:-}" in
  pack) shift; pack "$@" ;;
  run) shift; [ $# -ge 1 ] || { echo "usage: $0 run BUNDLE [LOG]" >&2; exit 2; }; run "$@" ;;
  *) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
