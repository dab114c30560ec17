#!/bin/sh
# Two "hosts" on this machine: two network namespaces joined by a veth pair,
# one MPI rank in each, talking TCP (Open MPI's tcp BTL) as on a cluster
# without shared memory. mpirun starts the remote rank through a launch agent
# that enters the other namespace, where a cluster would use ssh. Needs root
# (ip netns). Runs loom_mpi_tests across the pair, then train_mnist for an epoch.
#
#   tests/mpi/netns.sh [build dir, default build/release]
set -eu
build=$(cd "${1:-build/release}" && pwd)
a=loom_rank0 b=loom_rank1
tmp=$(mktemp -d)
cleanup() {
  ip netns del $a 2>/dev/null || true
  ip netns del $b 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
cleanup
mkdir -p "$tmp"

ip netns add $a
ip netns add $b
ip link add loom_veth0 type veth peer name loom_veth1
ip link set loom_veth0 netns $a
ip link set loom_veth1 netns $b
ip -n $a addr add 10.77.0.1/24 dev loom_veth0
ip -n $b addr add 10.77.0.2/24 dev loom_veth1
for ns in $a $b; do ip -n $ns link set lo up; done
ip -n $a link set loom_veth0 up
ip -n $b link set loom_veth1 up

# The launch agent: "agent <host> <command...>" runs the command in that host's namespace (ssh's role).
cat >"$tmp/agent" <<AGENT
#!/bin/sh
host=\$1; shift
case "\$host" in 10.77.0.1) ns=$a ;; 10.77.0.2) ns=$b ;; *) echo "agent: unknown host \$host" >&2; exit 1 ;; esac
exec ip netns exec \$ns sh -c "\$*"
AGENT
chmod +x "$tmp/agent"
printf '10.77.0.1 slots=1\n10.77.0.2 slots=1\n' >"$tmp/hostfile"

run() {
  ip netns exec $a mpirun --allow-run-as-root --hostfile "$tmp/hostfile" -np 2 --bind-to none \
    --mca plm_rsh_agent "$tmp/agent" --mca btl tcp,self --mca btl_tcp_if_include 10.77.0.0/24 \
    --mca oob_tcp_if_include 10.77.0.0/24 -x LOOM_COLLECTIVE_TIMEOUT=60 "$@"
}
echo "netns: loom_mpi_tests, one rank per namespace over TCP"
run "$build/tests/loom_mpi_tests"
echo "netns: train_mnist --distributed, one epoch"
run "$build/samples/train_mnist" --distributed --batch 64 --epochs 1 --threads 1 --hidden 64
echo "netns: passed"
