#!/usr/bin/env bash
# Warmstart's virtio-user front-end against DPDK's vhost back-end, next to DPDK's own virtio-user
# front-end (testpmd) against the same back-end, alternating the two in short runs (A B A B ...)
# and quoting the median of the pairwise ratios: cross-core throughput on a shared 2-vCPU VM
# flips 2-3x minute to minute (Docs/BENCHMARKS.md), so only adjacent runs are comparable.
#
# Direction oneway (front-end transmits; the vhost back-end dequeues):
#   A: warmstart bench --backend dpdk --mode oneway   (our generator → testpmd net_vhost rxonly)
#   B: testpmd net_virtio_user txonly                  (DPDK's generator → testpmd net_vhost rxonly)
#   the figure is the generator's per-second Mpps.
# Direction sink (the vhost back-end enqueues; the front-end receives):
#   A: warmstart bench --backend dpdk --mode sink     (testpmd net_vhost txonly → our front-end)
#   B: testpmd net_virtio_user rxonly                  (testpmd net_vhost txonly → DPDK's front-end)
#   the figure is the front-end's per-second received Mpps.
#   Both: front-end on CPU 0, back-end forwarding core on CPU 1; the figure is the median of the
#   per-second values (whole seconds after the first).
#   W: with --self, Warmstart against itself (warmstart bench --backend warmstart, loopback).
#   A0: with WARMSTART_BASE=PATH, a second warmstart binary (e.g. a build of main) runs in every
#   pair too, so a change and its base are compared with DPDK in the same minutes.
#
# Usage: scripts/bench-virtio-user.sh [--pairs N] [--duration S] [--sizes "64 1518"]
#                                     [--layouts "split packed"] [--modes "oneway sink"]
#                                     [--self | --self-only]
# Needs: a release build (swift build -c release), dpdk-testpmd, ~400 free 2 MiB hugepages.
set -euo pipefail
cd "$(dirname "$0")/.."
PAIRS=3 DURATION=4 SIZES="64 1518" LAYOUTS="split packed" MODES="oneway sink" SELF=0 AB=1
while [ $# -gt 0 ]; do
  case "$1" in
    --pairs) PAIRS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --sizes) SIZES=$2; shift 2 ;;
    --layouts) LAYOUTS=$2; shift 2 ;;
    --modes) MODES=$2; shift 2 ;;
    --self) SELF=1; shift ;;
    --self-only) SELF=1; AB=0; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
WS=${WARMSTART:-.build/release/warmstart}
BASE=${WARMSTART_BASE:-}
TESTPMD=${WARMSTART_TESTPMD:-/usr/bin/dpdk-testpmd}
[ -x "$WS" ] || { echo "no $WS: swift build -c release" >&2; exit 1; }
[ -x "$TESTPMD" ] || { echo "no $TESTPMD (apt-get install dpdk-dev)" >&2; exit 1; }
TMP=$(mktemp -d /tmp/ws-vuser-benchsh-XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
  rm -rf /dev/hugepages/ws-vuser-sh-$$-* /var/run/dpdk/ws-vuser-sh-$$-* "$TMP"
}
trap cleanup EXIT

median() { python3 -c 'import sys,statistics; v=[float(x) for x in sys.argv[1:]]; print(f"{statistics.median(v):.2f}" if v else "nan")' "$@"; }

# A: one Warmstart run; prints its median per-second Mpps (sent in oneway, received in sink).
run_ws() { # mode layout size [binary]
  "${4:-$WS}" bench --backend dpdk --mode "$1" --layout "$2" --size "$3" --duration "$((DURATION + 2))" --json 2>"$TMP/ws.err" \
    | python3 -c 'import sys,json,statistics; r=json.load(sys.stdin); s=[x for x in r["perSecondMpps"] if x > 0][1:] or [r["mpps"]]; print(f"{statistics.median(s):.2f}")'
}

# B: testpmd virtio-user against testpmd vhost; prints the virtio-user side's median per-second
# Mpps: txonly → rxonly (oneway, its Tx-pps) or rxonly ← txonly (sink, its Rx-pps).
run_dpdk() { # mode layout size
  local packed=0; [ "$2" = packed ] && packed=1
  local tag=ws-vuser-sh-$$-$RANDOM sock="$TMP/b.sock"
  local befwd=rxonly fefwd=txonly key=Tx-pps
  [ "$1" = sink ] && { befwd=txonly; fefwd=rxonly; key=Rx-pps; }
  # Jumbo frames: mbufs big enough for one frame (before --txpkts: testpmd checks against it).
  local big=(); [ "$3" -gt 2048 ] && big=(--mbuf-size=$(( $3 + 256 )))
  rm -f "$sock"
  "$TESTPMD" -l 0,1 --main-lcore 0 --no-pci --single-file-segments --file-prefix "$tag-be" -m 256 \
    --vdev "net_vhost0,iface=$sock,queues=1" -- --forward-mode=$befwd "${big[@]}" --txpkts="$3" --burst=32 \
    --stats-period 1 --nb-cores=1 --total-num-mbufs=16384 \
    >"$TMP/be.log" 2>&1 &
  local be=$!; PIDS+=("$be")
  for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
  "$TESTPMD" -l 0,1 --main-lcore 1 --no-pci --single-file-segments --file-prefix "$tag-fe" -m 256 \
    --vdev "net_virtio_user0,path=$sock,packed_vq=$packed,mrg_rxbuf=1,in_order=0,queue_size=256" \
    -- --forward-mode=$fefwd "${big[@]}" --txpkts="$3" --burst=32 --stats-period 1 --nb-cores=1 --total-num-mbufs=16384 \
    >"$TMP/fe.log" 2>&1 &
  local fe=$!; PIDS+=("$fe")
  # testpmd takes 0.3-2 s to start forwarding (more on a loaded VM): wait for the first non-zero
  # per-second line, then take DURATION more seconds of samples.
  for _ in $(seq 100); do grep -qE "$key: +[1-9]" "$TMP/fe.log" 2>/dev/null && break; sleep 0.1; done
  sleep "$DURATION"; sleep 1
  kill -INT "$fe" 2>/dev/null || true; sleep 0.3; kill -9 "$fe" 2>/dev/null || true; wait "$fe" 2>/dev/null || true
  kill -INT "$be" 2>/dev/null || true; sleep 0.3; kill -9 "$be" 2>/dev/null || true; wait "$be" 2>/dev/null || true
  rm -rf /dev/hugepages/"$tag"-* /var/run/dpdk/"$tag"-*
  # Per-second "Tx-pps:"/"Rx-pps:" lines of the front-end; skip the start-up seconds (0 pps)
  # and the first.
  python3 - "$TMP/fe.log" "$DURATION" "$key" <<'EOF'
import sys, statistics, re
v = [int(m.group(1)) for m in re.finditer(sys.argv[3] + r":\s+(\d+)", open(sys.argv[1], errors="replace").read())]
v = [x for x in v if x > 0][1:int(float(sys.argv[2])) + 1]
print(f"{statistics.median(v)/1e6:.2f}" if v else "nan")
EOF
}

if [ "$AB" = 1 ]; then
pair_ratio() { python3 -c "import sys; a,b=sys.argv[1:]; print(f'{float(a)/float(b):.2f}' if b not in ('nan','0.00') and a!='nan' else 'nan')" "$1" "$2"; }
for mode in $MODES; do
if [ "$mode" = sink ]; then
  echo "# DPDK vhost txonly → virtio-user (sink), Mpps received (median of per-second figures); $PAIRS pairs of ${DURATION}s runs, alternating"
else
  echo "# virtio-user → DPDK vhost rxonly, Mpps (median of per-second figures); $PAIRS pairs of ${DURATION}s runs, alternating"
fi
if [ -n "$BASE" ]; then
  echo "| layout | size | Warmstart runs | base runs | DPDK runs | pairwise ratios WS/DPDK | base/DPDK | median WS/DPDK | median base/DPDK |"
  echo "|---|---|---|---|---|---|---|---|---|"
else
  echo "| layout | size | Warmstart runs | DPDK runs | pairwise ratios WS/DPDK | median ratio |"
  echo "|---|---|---|---|---|---|"
fi
for layout in $LAYOUTS; do
  for size in $SIZES; do
    A=() A0=() B=() R=() R0=()
    for _ in $(seq "$PAIRS"); do
      a=$(run_ws "$mode" "$layout" "$size" || echo nan)
      [ "$a" = nan ] && { echo "warmstart bench failed:" >&2; tail -5 "$TMP/ws.err" >&2; }
      b=$(run_dpdk "$mode" "$layout" "$size" || echo nan)
      A+=("$a"); B+=("$b")
      R+=("$(pair_ratio "$a" "$b")")
      if [ -n "$BASE" ]; then
        a0=$(run_ws "$mode" "$layout" "$size" "$BASE" || echo nan)
        A0+=("$a0"); R0+=("$(pair_ratio "$a0" "$b")")
      fi
    done
    if [ -n "$BASE" ]; then
      echo "| $layout | $size | ${A[*]} | ${A0[*]} | ${B[*]} | ${R[*]} | ${R0[*]} | $(median $(printf '%s\n' "${R[@]}" | grep -v nan)) | $(median $(printf '%s\n' "${R0[@]}" | grep -v nan)) |"
    else
      echo "| $layout | $size | ${A[*]} | ${B[*]} | ${R[*]} | $(median $(printf '%s\n' "${R[@]}" | grep -v nan)) |"
    fi
  done
done
echo
done
fi

if [ "$SELF" = 1 ]; then
  echo
  echo "# Warmstart against itself (warmstart run --port vhost-user:SOCK --forward macswap as the back-end), loopback"
  echo "| layout | size | Mpps per run | Gbit/s last | p50 / p99 / p99.9 µs (last run) |"
  echo "|---|---|---|---|---|"
  for layout in $LAYOUTS; do
    for size in $SIZES; do
      M=()
      for _ in $(seq "$PAIRS"); do
        out=$("$WS" bench --backend warmstart --mode loopback --layout "$layout" --size "$size" --duration "$DURATION" --json 2>"$TMP/self.err" || echo '{}')
        M+=("$(echo "$out" | python3 -c 'import sys,json; r=json.load(sys.stdin); print("%.2f" % r.get("mpps", float("nan")))')")
      done
      extra=$(echo "$out" | python3 -c 'import sys,json; r=json.load(sys.stdin); print("%.2f | %.1f / %.1f / %.1f" % (r.get("gbps",0), r.get("latencyP50Us",0), r.get("latencyP99Us",0), r.get("latencyP999Us",0)))' 2>/dev/null || echo "- | -")
      echo "| $layout | $size | ${M[*]} | $extra |"
    done
  done
fi
