#!/usr/bin/env bash
# Throughput of Warmstart's vhost-user back-end against DPDK's own (testpmd net_vhost), with the
# same front-end: testpmd virtio-user in io mode, `start tx_first 8` (256 packets loop through
# the back-end's macswap and back). Measured: the front-end's Rx-pps (one way, packets per
# second), median of the samples after the first two.
#
# The machine's cross-core figures flip 2-3x from minute to minute (Docs/BENCHMARKS.md), so the two
# back-ends alternate in short runs (A B A B ...) and each pair's ratio is kept; the median ratio
# is what to quote.
#
# Usage: scripts/bench-vhost.sh [pairs=3] [seconds=6]
#   BIN=path/to/warmstart (default .build/release/warmstart; build with `swift build -c release`)
#   CASES="split:64 packed:64 split:1518 packed:1518"
# CPUs: the back-end polls on CPU 1 (warmstart --cores 1; testpmd vhost forwarding lcore 1), the
# front-end forwards on CPU 0.
set -euo pipefail
cd "$(dirname "$0")/.."
pairs=${1:-3}
secs=${2:-6}
bin=${BIN:-.build/release/warmstart}
cases=${CASES:-"split:64 packed:64 split:1518 packed:1518"}
testpmd=${TESTPMD:-dpdk-testpmd}
[ -x "$bin" ] || { echo "bench-vhost: $bin not found (swift build -c release)" >&2; exit 1; }
command -v "$testpmd" >/dev/null || { echo "bench-vhost: $testpmd not found (apt-get install dpdk)" >&2; exit 1; }

dir=$(mktemp -d /tmp/ws-bench.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf /dev/hugepages/ws-bench-$$-* /var/run/dpdk/ws-bench-$$-* "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Median of the Rx-pps samples after the first two (warm-up).
rx_pps() { { grep -o 'Rx-pps: *[0-9]*' "$1" || true; } | awk '{print $2}' | tail -n +3 | sort -n | awk '{a[NR]=$1} END {if (NR==0) print 0; else print a[int((NR+1)/2)]}'; }

frontend() { # $1 sock, $2 packed, $3 size, $4 log
    # Interactive, so the loop can hold 256 packets (`start tx_first 8`): with the 32 of the
    # non-interactive --tx-first one lost burst stalls the whole loop. `show port stats 0` once a
    # second gives the Rx-pps samples.
    {
        sleep 1
        echo "start tx_first 8"
        for _ in $(seq $((secs + 3))); do sleep 1; echo "show port stats 0"; done
        echo "stop"; echo "quit"
    } | stdbuf -oL "$testpmd" -l 0,1 --main-lcore 1 --no-pci --single-file-segments --file-prefix "ws-bench-$$-fe" -m 256 \
        --vdev "net_virtio_user0,path=$1,packed_vq=$2,mrg_rxbuf=1,queue_size=256" -- \
        -i --forward-mode=io --txpkts="$3" --nb-cores=1 >"$4" 2>&1 &
    pids+=($!)
    wait "${pids[-1]}" 2>/dev/null || true
}

run_warmstart() { # $1 packed, $2 size → pps
    local sock=$dir/ws.sock log=$dir/ws-fe.log
    "$bin" run --no-snapshot --mbufs 32768 --port "vhost-user:$sock" --forward macswap --cores 1 \
        --duration $((secs + 40)) >"$dir/ws.out" 2>"$dir/ws.err" &
    local ws=$!; pids+=($ws)
    for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
    frontend "$sock" "$1" "$2" "$log"
    kill -INT "$ws" 2>/dev/null || true; wait "$ws" 2>/dev/null || true
    rm -rf /dev/hugepages/ws-bench-$$-fe* /var/run/dpdk/ws-bench-$$-fe
    rx_pps "$log"
}

run_dpdk() { # $1 packed, $2 size → pps
    local sock=$dir/dpdk.sock log=$dir/dpdk-fe.log
    "$testpmd" -l 0,1 --main-lcore 0 --no-pci --single-file-segments --file-prefix "ws-bench-$$-be" -m 256 \
        --vdev "net_vhost0,iface=$sock" -- --forward-mode=macswap --nb-cores=1 --stats-period 5 \
        >"$dir/be.log" 2>&1 &
    local be=$!; pids+=($be)
    for _ in $(seq 200); do [ -S "$sock" ] && break; sleep 0.05; done
    frontend "$sock" "$1" "$2" "$log"
    kill -INT "$be" 2>/dev/null || true; wait "$be" 2>/dev/null || true
    rm -rf /dev/hugepages/ws-bench-$$-* /var/run/dpdk/ws-bench-$$-*
    rx_pps "$log"
}

printf "%-8s %5s %4s %14s %14s %7s\n" ring bytes pair "warmstart pps" "dpdk pps" ratio
for c in $cases; do
    ring=${c%%:*}; size=${c##*:}
    packed=0; [ "$ring" = packed ] && packed=1
    ratios=()
    for i in $(seq "$pairs"); do
        a=$(run_warmstart "$packed" "$size")
        b=$(run_dpdk "$packed" "$size")
        r=$(awk -v a="$a" -v b="$b" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "nan" }')
        ratios+=("$r")
        printf "%-8s %5s %4s %14s %14s %7s\n" "$ring" "$size" "$i" "$a" "$b" "$r"
    done
    med=$(printf "%s\n" "${ratios[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    printf "%-8s %5s  median ratio warmstart/dpdk: %s\n" "$ring" "$size" "$med"
done
