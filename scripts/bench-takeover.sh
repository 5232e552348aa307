#!/usr/bin/env bash
# Hot-upgrade blackout of the real binary (Docs/HANDOFF.md): `warmstart run --control C` with a
# vhost-user port, DPDK's testpmd as the guest (virtio-user, io forwarding looping its --tx-first
# burst through Warmstart's macswap), then N successive `warmstart run --takeover C`, each one
# replacing the previous. Per takeover: the blackout (old process's last forwarded packet → new
# process's first, both CLOCK_MONOTONIC) and the steps, from the new process's --report-json;
# at the end: median and spread, and testpmd's TX − RX (packets lost = TX − RX − 32 in flight).
#
# Usage: scripts/bench-takeover.sh [takeovers=10] [seconds between takeovers=0.5]
#   BIN=path/to/warmstart (default .build/release/warmstart; build with `swift build -c release`)
#   LAYOUT=split|packed (default split)
# CPUs: Warmstart polls on CPU 1, testpmd forwards on CPU 0 (as in the interop tests).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10}
gap=${2:-0.5}
bin=${BIN:-.build/release/warmstart}
testpmd=${TESTPMD:-dpdk-testpmd}
packed=0; [ "${LAYOUT:-split}" = packed ] && packed=1
[ -x "$bin" ] || { echo "bench-takeover: $bin not found (swift build -c release)" >&2; exit 1; }
command -v "$testpmd" >/dev/null || { echo "bench-takeover: $testpmd not found (apt-get install dpdk)" >&2; exit 1; }

dir=$(mktemp -d /tmp/ws-tko-bench.XXXXXX)
prefix=ws-tko-bench-$$
pids=()
cleanup() {
    for p in "${pids[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf /dev/hugepages/$prefix* /var/run/dpdk/$prefix
    if [ "${KEEP:-0}" = 1 ]; then echo "logs kept in $dir"; else rm -rf "$dir"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for() { # $1 seconds, then a test command
    local deadline=$((SECONDS + $1)); shift
    until "$@"; do [ $SECONDS -lt $deadline ] || return 1; sleep 0.02; done
}

"$bin" run --no-snapshot --hugepages off --mbufs 16384 --forward macswap --cores 1 --control "$dir/control" \
    --port "vhost-user:$dir/a.sock,name=vm" >"$dir/ws0.log" 2>&1 &
pids+=($!); cur=$!
wait_for 10 test -S "$dir/control" || { cat "$dir/ws0.log"; exit 1; }

mkfifo "$dir/tp.in"
stdbuf -oL -eL "$testpmd" -l 0,1 --main-lcore 1 --no-pci --single-file-segments --file-prefix "$prefix" -m 256 \
    --vdev "net_virtio_user0,path=$dir/a.sock,queues=1,packed_vq=$packed,mrg_rxbuf=1,queue_size=256" -- \
    -i --nb-cores=1 --rxq=1 --txq=1 --txpkts=64 <"$dir/tp.in" >"$dir/testpmd.log" 2>&1 &
pids+=($!); tp=$!
exec 3>"$dir/tp.in"
wait_for 20 grep -q 'testpmd>' "$dir/testpmd.log" || { tail "$dir/testpmd.log"; exit 1; }
echo "set fwd io" >&3
echo "start tx_first" >&3
sleep 1

printf "%-3s %9s %11s  %s\n" "#" "blackout" "not polling" "old-idle / pause / quiesced-msg / activate / commit-msg / unpark / new-idle (ms)"
for i in $(seq "$n"); do
    "$bin" run --takeover "$dir/control" --report-json "$dir/r$i.json" >"$dir/ws$i.log" 2>&1 &
    pids+=($!); next=$!
    wait_for 15 bash -c "! kill -0 $cur 2>/dev/null" || { echo "takeover $i: old process $cur still running"; exit 1; }
    wait "$cur" || { echo "takeover $i: old process exited $?"; cat "$dir/ws$((i - 1)).log"; exit 1; }
    wait_for 10 test -s "$dir/r$i.json" || { cat "$dir/ws$i.log"; exit 1; }
    jq -r --arg i "$i" '.handoff as $h | def r: . * 1000 | round / 1000;
        "\($i)\t\(if $h.blackout_ms then ($h.blackout_ms | r | tostring) else "none: \($h.blackout_note)" end)\t"
        + "\($h.not_polling_ms // "-" | if type == "number" then r else . end)\t"
        + ([$h.blackout_parts[].ms | r | tostring] | join(" / "))' "$dir/r$i.json" \
        | awk -F'\t' '{printf "%-3s %9s %11s  %s\n", $1, $2, $3, $4}'
    cur=$next
    sleep "$gap"
done

echo "stop" >&3
wait_for 10 grep -q 'Done.' "$dir/testpmd.log"
sleep 0.3
echo "show port stats 0" >&3
wait_for 5 grep -q 'Tx-bps' "$dir/testpmd.log"
echo "quit" >&3
exec 3>&-
wait "$tp" 2>/dev/null || true
rx=$(grep -o 'RX-packets: *[0-9]*' "$dir/testpmd.log" | tail -1 | awk '{print $2}')
tx=$(grep -o 'TX-packets: *[0-9]*' "$dir/testpmd.log" | tail -1 | awk '{print $2}')
kill -TERM "$cur"; wait "$cur" || true

summary() { # $1 field, $2 label
    jq -s --arg f "$1" '[.[].handoff[$f] | select(. != null)] | sort' "$dir"/r*.json | jq -r --arg l "$2" '
        def r: . * 1000 | round / 1000;
        if length == 0 then "\($l): none measured (no takeover saw traffic on both sides: idle guest)" else
        "\($l) over \(length) takeovers: median \(.[(length - 1) / 2 | floor] | r) ms, "
        + "min \(.[0] | r), max \(.[-1] | r), ≤ 1 ms: \(map(select(. <= 1)) | length)" end'
}
summary blackout_ms "blackout (old last burst → new first burst)"
summary not_polling_ms "not polling (old parked → new polling)"
echo "testpmd: TX $tx RX $rx, TX − RX = $((tx - rx)) (32 = its one burst in flight: nothing lost)"
