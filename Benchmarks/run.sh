#!/usr/bin/env bash
# Runs the package-benchmark suites. For the 1,000,000-mbuf cases it needs about 2 × 1,100 free
# 2 MiB hugepages (a resident snapshot plus a cold lay-out); as root it raises the reservation
# for the run and puts it back afterwards.
set -euo pipefail
cd "$(dirname "$0")"
sys=/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages
before=""
if [ "$(id -u)" = 0 ] && [ -w "$sys" ]; then
  before=$(cat "$sys")
  want=$(( before > 2300 ? before : 2300 ))
  echo "$want" > "$sys"
  echo "benchmarks: 2M hugepages reserved for the run: $(cat "$sys") (was $before)"
fi
restore() { [ -n "$before" ] && echo "$before" > "$sys" && echo "benchmarks: hugepages back to $before"; }
trap restore EXIT
swift package --allow-writing-to-directory .benchmarkBaselines benchmark "$@"
