#!/bin/sh
# Data-parallel checks with 2 MPI ranks on this machine (./build.sh test-mpi; CI):
#   1. loom_mpi_tests under mpirun: collectives, gradients, DataParallel vs one process
#   2. faults: a rank that hangs or dies makes the job end with a clear error, never hang
#   3. train_mnist: 2 ranks x --batch 64 give the curve of 1 rank x --batch 128 (up to
#      float reduction order), and a checkpoint of the 2-rank job resumes on 1 rank
#
#   tests/mpi/run.sh [build dir, default build/release]
set -eu
build=${1:-build/release}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Root in containers; ranks share the cores; no CMA between containers' processes.
mpirun="mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2"
export OMPI_MCA_btl_vader_single_copy_mechanism=none

echo "test-mpi: loom_mpi_tests on 2 ranks"
timeout 300 $mpirun "$build/tests/loom_mpi_tests"

for mode in hang die; do
  echo "test-mpi: rank 1 ${mode}s before a collective"
  start=$(date +%s)
  rc=0
  LOOM_TEST_FAULT=$mode LOOM_COLLECTIVE_TIMEOUT=5 timeout 120 $mpirun -x LOOM_TEST_FAULT -x LOOM_COLLECTIVE_TIMEOUT \
    "$build/tests/loom_mpi_tests" >"$tmp/$mode.log" 2>&1 || rc=$?
  took=$(($(date +%s) - start))
  if [ "$rc" = 0 ] || [ "$rc" = 124 ] || [ "$took" -gt 60 ]; then
    cat "$tmp/$mode.log"
    echo "test-mpi: FAILED: with a rank that ${mode}s the job ended with status $rc after $took s" >&2
    exit 1
  fi
  # A hang is our timeout's error; a death is mpirun's report (or our timeout, whichever comes first).
  if [ "$mode" = hang ]; then pattern="did not join within 5 s"; else pattern="did not join|exited on signal|exiting improperly|non-zero status"; fi
  if ! grep -Eq "$pattern" "$tmp/$mode.log"; then
    cat "$tmp/$mode.log"
    echo "test-mpi: FAILED: no clear error for a rank that ${mode}s" >&2
    exit 1
  fi
  echo "test-mpi: ok, status $rc after $took s: $(grep -Em1 "$pattern" "$tmp/$mode.log")"
done

echo "test-mpi: train_mnist, 1 rank x batch 128 vs 2 ranks x batch 64, then resume on 1 rank"
common="--model mlp --hidden 64 --schedule none --json --seed 3"
"$build/samples/train_mnist" $common --batch 128 --epochs 2 --threads 2 >"$tmp/one.json"
$mpirun "$build/samples/train_mnist" $common --distributed --batch 64 --epochs 1 --threads 1 \
  --save "$tmp/two.safetensors" >"$tmp/two.json"
"$build/samples/train_mnist" $common --batch 128 --epochs 1 --threads 2 --load "$tmp/two.safetensors" >"$tmp/resumed.json"
python3 - "$tmp" <<'PY'
import json, sys
d = sys.argv[1]
rows = lambda f: [json.loads(l) for l in open(f"{d}/{f}") if l.startswith("{")]
one, two, resumed = rows("one.json"), rows("two.json"), rows("resumed.json")
assert len(one) == 2 and len(two) == 1 and len(resumed) == 1, (one, two, resumed)
def close(a, b, what):
    for k, tol in (("train_loss", 1e-4), ("train_acc", 1e-3), ("test_acc", 1e-3)):
        if abs(a[k] - b[k]) > tol * max(1.0, abs(b[k])):
            sys.exit(f"test-mpi: FAILED: {what}: {k} {a[k]} vs {b[k]}")
        print(f"test-mpi: {what}: {k} {a[k]:.5f} vs {b[k]:.5f}")
close(two[0], one[0], "epoch 1, 2 ranks vs 1")
close(resumed[0], one[1], "epoch 2 resumed on 1 rank from the 2-rank checkpoint vs 1 rank throughout")
PY
echo "test-mpi: passed"
