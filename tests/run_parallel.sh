#!/bin/sh
# Runs every test case of a doctest program in a process of its own, JOBS
# (default 2) at a time, in the program's order. The sanitizer builds' suites
# run on one thread for minutes (a few budgeted-plan searches dominate); this
# keeps every core busy, and each case starts from a clean process.
#
#   tests/run_parallel.sh PROGRAM [doctest options, e.g. -ts='*conv*' -s]
#
# Prints each failing case's whole output as it ends, then doctest's summary
# lines summed over the processes; exits 1 if any case failed.
set -eu
program=$1
shift
jobs=${JOBS:-2}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The names between the two rules of --list-test-cases; in -tc a comma or a backslash is escaped.
# A program that cannot list its cases (it crashed at start-up) fails the run, never passes empty.
if ! "$program" --list-test-cases "$@" >"$tmp/list" 2>&1; then
  cat "$tmp/list"
  echo "run_parallel: FAILED: $program --list-test-cases $*" >&2
  exit 1
fi
sed -n '/^====/,/^====/p' "$tmp/list" | sed '1d;$d' >"$tmp/names"
total=$(wc -l <"$tmp/names")
all=$("$program" --count --no-skip "$@" | sed -n 's/.*passing the current filters: //p')
echo "run_parallel: $total test cases of $(basename "$program"), $jobs at a time"
touch "$tmp/case.none"  # (no case passes the filters: the sums below are 0)

export PROGRAM_RP="$program" TMP_RP="$tmp"
sed 's/[\\,]/\\&/g' "$tmp/names" | tr '\n' '\0' | xargs -0 -P "$jobs" -I{} sh -c '
  filter=$1
  shift
  log=$(mktemp "$TMP_RP/case.XXXXXX")
  rc=0
  "$PROGRAM_RP" "-tc=$filter" "$@" >"$log" 2>&1 || rc=$?
  echo "run_parallel: exit status $rc" >>"$log"
  if [ "$rc" != 0 ] || ! grep -q "Status: SUCCESS" "$log" || grep -q "test cases: *0 |" "$log"; then
    echo "run_parallel: FAILED: $filter"
    cat "$log"
  fi
' sh {} "$@" || true

# Sums the "test cases" and "assertions" counts of every process's summary.
cat "$tmp"/case.* | awk -v total="$total" -v all="$all" '
  /^\[doctest\] test cases:/ { ran += $4; passed += $6; failed += $9 }
  /^\[doctest\] assertions:/ { asserts += $3; apassed += $5; afailed += $8 }
  /^run_parallel: exit status [1-9]/ { crashed++ }
  END {
    bad = failed + (ran < total ? total - ran : 0)
    printf "[doctest] test cases: %d | %d passed | %d failed | %d skipped\n", total, passed, bad, all - total
    printf "[doctest] assertions: %d | %d passed | %d failed |\n", asserts, apassed, afailed
    if (bad || crashed || passed < total) { print "[doctest] Status: FAILURE!"; exit 1 }
    print "[doctest] Status: SUCCESS!"
  }'
