#!/usr/bin/env bash
# DPDK's start-up cost on this machine, the counterpart of scripts/bench-boot.sh (Docs/BENCHMARKS.md).
# Each case runs dpdk-testpmd once per run: EAL init, one mbuf pool, one null port, forwarding
# start, then exit (stdin is /dev/null, so testpmd's "Press enter to exit" reads end-of-file).
# A small preloaded library times the two calls that matter from the inside:
#   pre_eal   exec → rte_eal_init entry (the loader and DPDK's constructors)
#   eal_init  rte_eal_init (argument parsing, driver plugins, hugepage allocation with -m, TSC
#             calibration, bus probe)
#   pool      rte_pktmbuf_pool_create
#   e2e       wall time of the whole process, measured by this script
# and the slopes come from the medians:
#   hugepage init per GiB   eal_init(-m 2048) − eal_init(-m 512), per GiB
#   mbuf init per 1M mbufs  pool(1M) − pool(250k), in preallocated memory (-m 2560) and faulted on
#                           demand (no -m), per million
# Prints `name=... median=<ms> min=<ms> max=<ms> n=<runs>` and `slope=... value=<ms>` lines.
# Needs dpdk-testpmd, a C compiler and about 1,300 free 2 MiB hugepages (as root it raises the
# reservation for the run and puts it back). RUNS (default 5), TESTPMD (default dpdk-testpmd).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
TESTPMD=${TESTPMD:-$(command -v dpdk-testpmd || echo /usr/bin/dpdk-testpmd)}
[ -x "$TESTPMD" ] || { echo "bench-dpdk-boot: $TESTPMD not found (apt-get install dpdk)" >&2; exit 1; }
sys=/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages
before=""
tmp=$(mktemp -d)
prefix=wsdpdkboot$$
cleanup() {
  rm -rf "$tmp"
  rm -f /dev/hugepages/${prefix}* 2>/dev/null || true
  rm -rf "/var/run/dpdk/$prefix" 2>/dev/null || true
  [ -n "$before" ] && echo "$before" > "$sys"
  return 0
}
trap cleanup EXIT
if [ "$(id -u)" = 0 ] && [ -w "$sys" ]; then
  before=$(cat "$sys")
  [ "$before" -lt 1400 ] && echo 1400 > "$sys"
  echo "# 2M hugepages reserved: $(cat "$sys") (was $before)"
fi

# The timing library: wraps the two DPDK calls (found with RTLD_NEXT) and appends
# "name ms" lines to $WS_BOOT_LOG.
cat > "$tmp/wrap.c" <<'EOF'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static double now_ms(clockid_t c) { struct timespec t; clock_gettime(c, &t); return t.tv_sec * 1e3 + t.tv_nsec / 1e6; }
static void put(const char *name, double ms) {
    const char *p = getenv("WS_BOOT_LOG");
    FILE *f = p ? fopen(p, "a") : NULL;
    if (f) { fprintf(f, "%s %.3f\n", name, ms); fclose(f); }
}
int rte_eal_init(int argc, char **argv) {
    const char *e = getenv("WS_EXEC_EPOCH");
    if (e) put("pre_eal", now_ms(CLOCK_REALTIME) - atof(e) * 1e3);
    int (*real)(int, char **) = (int (*)(int, char **))dlsym(RTLD_NEXT, "rte_eal_init");
    double t0 = now_ms(CLOCK_MONOTONIC);
    int r = real(argc, argv);
    put("eal_init", now_ms(CLOCK_MONOTONIC) - t0);
    return r;
}
void *rte_pktmbuf_pool_create(const char *n, unsigned c, unsigned cs, unsigned short ps, unsigned short ds, int s) {
    void *(*real)(const char *, unsigned, unsigned, unsigned short, unsigned short, int) =
        (void *(*)(const char *, unsigned, unsigned, unsigned short, unsigned short, int))dlsym(RTLD_NEXT, "rte_pktmbuf_pool_create");
    double t0 = now_ms(CLOCK_MONOTONIC);
    void *r = real(n, c, cs, ps, ds, s);
    put("pool", now_ms(CLOCK_MONOTONIC) - t0);
    return r;
}
EOF
cc -O2 -shared -fPIC -o "$tmp/wrap.so" "$tmp/wrap.c" -ldl

stats() { sort -g | awk '{a[NR]=$1} END{ if(NR==0){print "median=NA n=0"; exit}
  m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "median=%.3f min=%.3f max=%.3f n=%d\n", m, a[1], a[NR], NR}'; }

once() {  # mbufs, memory args...: one testpmd run; appends its phases and e2e to $tmp/log
  local mbufs=$1; shift
  rm -f /dev/hugepages/${prefix}* 2>/dev/null || true
  local t0 t1
  t0=$EPOCHREALTIME
  WS_BOOT_LOG=$tmp/log WS_EXEC_EPOCH=$t0 LD_PRELOAD=$tmp/wrap.so \
    "$TESTPMD" -l 0,1 --no-pci --file-prefix "$prefix" "$@" --vdev net_null0 \
    -- --total-num-mbufs="$mbufs" --forward-mode=io </dev/null >"$tmp/out" 2>&1 \
    || { echo "bench-dpdk-boot: testpmd failed:" >&2; tail -5 "$tmp/out" >&2; exit 1; }
  t1=$EPOCHREALTIME
  awk -v a="$t0" -v b="$t1" 'BEGIN{printf "e2e %.3f\n", (b - a) * 1000}' >> "$tmp/log"
}

case_() {  # name, mbufs, memory args...: RUNS runs after one warm-up; one line per metric
  local name=$1 mbufs=$2; shift 2
  : > "$tmp/log"; once "$mbufs" "$@"      # warm-up: the host's first touch of the memory
  : > "$tmp/log"
  for _ in $(seq "$RUNS"); do once "$mbufs" "$@"; done
  for m in pre_eal eal_init pool e2e; do
    echo "name=${name}_$m $(awk -v m=$m '$1==m{print $2}' "$tmp/log" | stats)"
  done | tee -a "$tmp/results"
}
median() { awk -v n="name=$1" '$1==n{sub("median=","",$2); print $2}' "$tmp/results"; }
slope() { awk -v a="$(median "$1")" -v b="$(median "$2")" -v d="$4" -v n="$3" 'BEGIN{printf "slope=%s value=%.1f\n", n, (a - b) / d}'; }

echo "# dpdk-testpmd start-up phases, RUNS=$RUNS, $(date -u +%FT%TZ), $(dpkg-query -W -f='dpdk ${Version}' dpdk 2>/dev/null || true),$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), $(nproc) CPUs"
: > "$tmp/results"
case_ m512 8192 -m 512
case_ m2048 8192 -m 2048
case_ mbuf250k_prealloc 250000 -m 2560
case_ mbuf1M_prealloc 1000000 -m 2560
case_ mbuf250k_dynamic 250000
case_ mbuf1M_dynamic 1000000
slope m2048_eal_init m512_eal_init hugepage_init_ms_per_GiB 1.5
slope mbuf1M_prealloc_pool mbuf250k_prealloc_pool mbuf_init_ms_per_1M_prealloc 0.75
slope mbuf1M_dynamic_pool mbuf250k_dynamic_pool mbuf_init_ms_per_1M_dynamic 0.75
