#!/usr/bin/env bash
# Warmstart's boot phases, measured like DPDK's in Docs/BENCHMARKS.md (scripts/bench-dpdk-boot.sh), so
# the two can be run in one sitting and compared: medians of RUNS runs of
#   cold    : `warmstart run --boot-only --no-snapshot` (hugepage-init + mbuf-init from scratch)
#   restore : `warmstart run --boot-only --snapshot <resident snapshot>` (snapshot-open/map + mbuf-init)
# for 1,000,000 mbufs (2.1 GiB), plus a memory-only scaling point (hugepage-init per GiB).
# Prints one line per metric: name=<...> median=<ms> min=<ms> max=<ms> n=<runs>.
# Needs about 2 × 1,100 free 2 MiB hugepages for the hugepage cases; as root it raises the
# reservation for the run and puts it back. RUNS (default 7), MBUFS (default 1000000).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-7}
MBUFS=${MBUFS:-1000000}
bin=.build/release/warmstart
[ -x "$bin" ] || swift build -c release --product warmstart >/dev/null
sys=/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages
before=""
tmp=$(mktemp -d)
snap=""
cleanup() {
  [ -n "$snap" ] && rm -f "$snap"
  rm -rf "$tmp"
  [ -n "$before" ] && echo "$before" > "$sys"
}
trap cleanup EXIT
if [ "$(id -u)" = 0 ] && [ -w "$sys" ]; then
  before=$(cat "$sys")
  [ "$before" -lt 2400 ] && echo 2400 > "$sys"
  echo "# 2M hugepages reserved: $(cat "$sys") (was $before), free: $(awk '/HugePages_Free/{print $2}' /proc/meminfo)"
fi
mount_point=$(awk '$3=="hugetlbfs"{print $2; exit}' /proc/mounts)

stats() { sort -g | awk '{a[NR]=$1} END{ if(NR==0){print "median=NA n=0"; exit}
  m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "median=%.3f min=%.3f max=%.3f n=%d\n", m, a[1], a[NR], NR}'; }
phase() { python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(sum(p['ms'] for p in r['phases'] if p['name'] in sys.argv[2].split(',')))" "$1" "$2"; }

run() {  # name, phases (comma-separated), args...
  local name=$1 phases=$2; shift 2
  # One warm-up run, not counted: the first touch of memory the VM never used costs the host's
  # faults too (seconds per GiB here), which no boot of a warmed machine pays.
  "$bin" run --boot-only "$@" >/dev/null
  for i in $(seq "$RUNS"); do
    WARMSTART_EXEC_EPOCH=$EPOCHREALTIME "$bin" run --boot-only --report-json "$tmp/r.json" "$@" >/dev/null
    phase "$tmp/r.json" "$phases"
  done | stats | sed "s/^/name=$name /"
}

echo "# warmstart boot phases, $MBUFS mbufs, RUNS=$RUNS, $(date -u +%FT%TZ)"
run cold_hugepage_init_2G hugepage-init --no-snapshot --mbufs "$MBUFS" --hugepages require
run cold_mbuf_init_1M mbuf-init --no-snapshot --mbufs "$MBUFS" --hugepages require
run cold_mem_only_1G hugepage-init --no-snapshot --mbufs 1 --memory 1G --hugepages require
run cold_mem_only_4K_1G hugepage-init --no-snapshot --mbufs 1 --memory 1G --hugepages off
if [ -n "$mount_point" ]; then
  snap=$mount_point/warmstart-bench-$$.snap
  "$bin" snapshot create --mbufs "$MBUFS" --out "$snap" >/dev/null
  run restore_resident_1M snapshot-open,snapshot-map,mbuf-init --snapshot "$snap" --mbufs "$MBUFS"
  run restore_process_start process-start --snapshot "$snap" --mbufs "$MBUFS"
  rm -f "$snap"; snap=""
fi
snap=/var/tmp/warmstart-bench-$$.snap
"$bin" snapshot create --mbufs "$MBUFS" --out "$snap" >/dev/null
run restore_disk_1M snapshot-open,snapshot-map,hugepage-init,mbuf-init --snapshot "$snap" --mbufs "$MBUFS"
