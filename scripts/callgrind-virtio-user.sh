#!/usr/bin/env bash
# Instructions per frame of Warmstart's virtio-user generator + transmit path, counted by callgrind:
# a figure a noisy, shared 2-vCPU machine does not move (Docs/BENCH-VIRTIO-USER.md).
#
#   (default)  Benchmarks/VirtioUserTX: the generator's rounds (Generator.round, what `warmstart
#              bench` runs) against a device in the same process that returns every buffer at once
#              (oneway), or first reflects each frame into one of our receive buffers (loopback:
#              the receive path and latency sampling too). No peer, so nothing but the frames' own
#              work is counted; exact to the instruction.
#   --setup    The real set-up of scripts/bench-virtio-user.sh, each front-end under callgrind
#              against a native testpmd net_vhost rxonly: Warmstart's generator thread (`warmstart
#              bench --mode oneway`) and testpmd's virtio-user txonly forwarding thread. Both count
#              the rounds they spin while the back-end is off its CPU, so take the lower of a few
#              runs; testpmd also builds and frees every frame the full ring refuses (its "dropped").
#              The rings are 1024 descriptors here (256 in the A/B runs) to ride out those stalls.
#   --setup --sink  The receive direction: a native testpmd net_vhost txonly fills the front-end's
#              receive ring (always full: the front-end under callgrind is the slow side), and the
#              figure is instructions per frame received: Warmstart's receive loop (`warmstart bench
#              --mode sink`, Sink.run) and testpmd's virtio-user rxonly forwarding thread.
#
# Usage: scripts/callgrind-virtio-user.sh [--setup [--sink]] [--sizes "64 1518"] [--layouts "split packed"]
#                                         [--rounds N] [--seconds S] [--runs N]
# Needs valgrind; --setup also a release build (swift build -c release), dpdk-testpmd and ~300
# free 2 MiB hugepages.
set -euo pipefail
cd "$(dirname "$0")/.."
SETUP=0 SINK=0 SIZES="64 1518" LAYOUTS="split packed" ROUNDS=20000 SECONDS_=8 RUNS=1 QSIZE=1024
while [ $# -gt 0 ]; do
  case "$1" in
    --setup) SETUP=1; shift ;;
    --sink) SINK=1; shift ;;
    --sizes) SIZES=$2; shift 2 ;;
    --layouts) LAYOUTS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --seconds) SECONDS_=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }
TMP=$(mktemp -d /tmp/ws-callgrind-XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
  rm -rf /dev/hugepages/ws-cg-$$-* /var/run/dpdk/ws-cg-$$-* "$TMP"
}
trap cleanup EXIT

# valgrind 3.19 cannot read the DWARF 5 Swift 6 writes: count a copy without debug info (the
# symbol table stays, so functions keep their names).
stripped() { cp "$1" "$TMP/$(basename "$1")"; objcopy --strip-debug "$TMP/$(basename "$1")"; echo "$TMP/$(basename "$1")"; }
total() { grep -E '^(summary|totals):' "$1" | head -1 | awk '{print $2}'; }
ratio() { python3 -c "import sys; print(f'{int(sys.argv[1]) / max(int(sys.argv[2]), 1):.1f}')" "$1" "$2"; }

if [ "$SETUP" = 0 ]; then
  swift build -c release --product VirtioUserTX >"$TMP/build.log" 2>&1 \
    || { tail -20 "$TMP/build.log" >&2; exit 1; }
  bin=$(stripped .build/release/VirtioUserTX)
  echo "# Warmstart virtio-user generator (+ TX, + RX in loopback), instant in-process device, $ROUNDS rounds of 32"
  echo "| mode | layout | size | frames | instructions | per frame |"
  echo "|---|---|---|---|---|---|"
  for mode in oneway loopback; do
    for layout in $LAYOUTS; do
      for size in $SIZES; do
        out="$TMP/cg.out"
        flag=(); [ "$mode" = loopback ] && flag=(--loopback)
        line=$(valgrind --tool=callgrind --callgrind-out-file="$out" --toggle-collect='*9Generator*5round*' \
          "$bin" --layout "$layout" --size "$size" --rounds "$ROUNDS" "${flag[@]}" 2>"$TMP/vg.err") \
          || { tail -5 "$TMP/vg.err" >&2; exit 1; }
        frames=$(echo "$line" | sed -E 's/.* ([0-9]+) frames sent.*/\1/')
        ir=$(total "$out")
        echo "| $mode | $layout | $size | $frames | $ir | $(ratio "$ir" "$frames") |"
      done
    done
  done
  exit 0
fi

WS=$(stripped "${WARMSTART:-.build/release/warmstart}")
TESTPMD=${WARMSTART_TESTPMD:-/usr/bin/dpdk-testpmd}
[ -x "$TESTPMD" ] || { echo "no $TESTPMD (apt-get install dpdk)" >&2; exit 1; }

# A native testpmd net_vhost on CPU 1 (high priority: its stalls are what inflate the counts):
# rxonly, or txonly of frames of `size` bytes with --sink; prints its pid.
backend() { # tag socket size
  local fwd=(--forward-mode=rxonly)
  [ "$SINK" = 1 ] && fwd=(--forward-mode=txonly --txpkts="$3" --burst=32)
  nice -n -10 "$TESTPMD" -l 0,1 --main-lcore 0 --no-pci --single-file-segments --file-prefix "$1-be" -m 256 \
    --vdev "net_vhost0,iface=$2,queues=1" -- "${fwd[@]}" --stats-period 1 --nb-cores=1 \
    --total-num-mbufs=16384 >"$TMP/be.log" 2>&1 &
  echo $!
}
# SIGINT, then SIGKILL after `grace` seconds (testpmd under valgrind needs tens of seconds to
# close its port and write the callgrind file).
stop() { # pid [grace]
  kill -INT "$1" 2>/dev/null || true
  for _ in $(seq $((${2:-5} * 10))); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true
}

# Warmstart: the generator thread (Generator.run and all it calls) over the frames sent. The bench
# starts its own back-end; io_uring is off because valgrind 3.19 deadlocks in io_uring_enter.
run_ws() { # layout size
  local out="$TMP/ws.out" json mode=oneway fn='*9GeneratorC3run7setupMs*' key=txPackets
  [ "$SINK" = 1 ] && { mode=sink; fn='*4SinkC3run7setupMs*'; key=rxPackets; }
  json=$(WARMSTART_NO_IO_URING=1 nice -n -10 valgrind --tool=callgrind --callgrind-out-file="$out" \
    --toggle-collect="$fn" "$WS" bench --backend dpdk --mode "$mode" --layout "$1" \
    --size "$2" --queue-size "$QSIZE" --duration "$SECONDS_" --json 2>"$TMP/ws.err") || { tail -5 "$TMP/ws.err" >&2; echo "nan -"; return; }
  local tx; tx=$(echo "$json" | python3 -c "import sys,json; print(json.load(sys.stdin)['$key'])")
  echo "$(ratio "$(total "$out")" "$tx") $tx"
}

# testpmd: the busiest thread (the forwarding lcore) over the frames it sent; also its drops.
run_dpdk() { # layout size
  local packed=0; [ "$1" = packed ] && packed=1
  local tag=ws-cg-$$-$RANDOM sock="$TMP/d.sock" out="$TMP/dp.out"
  rm -f "$sock" "$out"-*
  local be; be=$(backend "$tag" "$sock" "$2"); PIDS+=("$be")
  local fefwd=txonly key=Tx-pps
  [ "$SINK" = 1 ] && { fefwd=rxonly; key=Rx-pps; }
  for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
  nice -n -10 valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$out" "$TESTPMD" -l 0,1 --main-lcore 1 \
    --no-pci --single-file-segments --file-prefix "$tag-fe" -m 256 \
    --vdev "net_virtio_user0,path=$sock,packed_vq=$packed,mrg_rxbuf=1,in_order=0,queue_size=$QSIZE" \
    -- --forward-mode=$fefwd --txpkts="$2" --burst=32 --stats-period 1 --nb-cores=1 --total-num-mbufs=16384 \
    >"$TMP/fe.log" 2>&1 &
  local fe=$!; PIDS+=("$fe")
  for _ in $(seq 600); do grep -qE "$key: +[1-9]" "$TMP/fe.log" 2>/dev/null && break; sleep 0.1; done
  sleep "$SECONDS_"
  stop "$fe" 120; stop "$be"
  rm -rf /dev/hugepages/"$tag"-* /var/run/dpdk/"$tag"-*
  local tx drop best=0 ir
  if [ "$SINK" = 1 ]; then
    tx=$(grep -E "RX-packets:" "$TMP/fe.log" | tail -1 | awk '{print $2}')
    drop=0
  else
    tx=$(grep -E "TX-packets:" "$TMP/fe.log" | tail -1 | awk '{print $2}')
    drop=$(grep -E "TX-dropped:" "$TMP/fe.log" | tail -1 | awk '{print $4}')
  fi
  for f in "$out"-*; do ir=$(total "$f"); [ "${ir:-0}" -gt "$best" ] && best=$ir; done
  echo "$(ratio "$best" "${tx:-0}") ${tx:-0} ${drop:-0}"
}

if [ "$SINK" = 1 ]; then
  echo "# Instructions per frame received, real set-up (front-end under callgrind, native testpmd net_vhost txonly, rings of $QSIZE), $RUNS run(s) each, lowest first"
else
  echo "# Instructions per frame sent, real set-up (front-end under callgrind, native testpmd net_vhost rxonly, rings of $QSIZE), $RUNS run(s) each, lowest first"
fi
echo "| layout | size | Warmstart per frame (frames) | testpmd per frame (frames, dropped) |"
echo "|---|---|---|---|"
for layout in $LAYOUTS; do
  for size in $SIZES; do
    W=() D=()
    for _ in $(seq "$RUNS"); do
      W+=("$(run_ws "$layout" "$size")")
      D+=("$(run_dpdk "$layout" "$size")")
    done
    ws=$(printf '%s\n' "${W[@]}" | sort -g | awk '{printf "%s (%s) ", $1, $2}')
    dp=$(printf '%s\n' "${D[@]}" | sort -g | awk '{printf "%s (%s, %s) ", $1, $2, $3}')
    echo "| $layout | $size | $ws| $dp|"
  done
done
