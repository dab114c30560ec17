#!/bin/sh
# The figures of the README's "Data-parallel training": train_mnist's epoch time
# on 1 rank (--batch 128) and on 2 MPI ranks (--batch 64 each: the same global
# batches), medians over the epochs, and the communication and its overlap with
# compute from a Chrome trace of rank 0 under the parallel executor.
#
#   samples/bench_dist.sh [build dir, default build/release] [epochs, default 3]
set -eu
build=${1:-build/release}
epochs=${2:-3}
here=$(dirname "$0")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mpirun="mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2 -x OMPI_MCA_btl_vader_single_copy_mechanism=none"
common="--epochs $epochs --json --schedule none --seed 1"
median() { python3 -c "import json,statistics,sys; print('%.2f' % statistics.median(json.loads(l)['seconds'] for l in open(sys.argv[1]) if l.startswith('{')))" "$1"; }

"$build/samples/train_mnist" $common --batch 128 --threads 2 >"$tmp/1.json"
$mpirun "$build/samples/train_mnist" $common --distributed --batch 64 --threads 1 >"$tmp/2.json"
$mpirun "$build/samples/train_mnist" $common --distributed --batch 64 --threads 2 --executor parallel \
  --bucket-mb 0.5 >"$tmp/2p.json"
echo "epoch seconds (median of $epochs): 1 rank x 2 threads $(median "$tmp/1.json"); 2 ranks x 1 thread $(median "$tmp/2.json");" \
  "2 ranks x 2 threads, parallel executor, 0.5 MiB buckets $(median "$tmp/2p.json")"
$mpirun "$build/samples/train_mnist" --epochs 1 --json --schedule none --distributed --batch 64 --threads 2 \
  --executor parallel --bucket-mb 0.5 --trace "$tmp/trace.json" >/dev/null 2>&1
printf "2 ranks, rank 0's trace of steps 2-6: "
python3 "$here/trace_overlap.py" "$tmp/trace.json"
