#!/usr/bin/env bash
# Does a hostile front-end on one port cost the other ports anything? (issue 12, "Done when")
#
# One `warmstart run` with two vhost-user ports on ONE polling thread (--cores 1, the worst case:
# the attacked port and the good one share the thread): port `good` carries a testpmd virtio-user
# io loop (`start tx_first 8`, 256 packets looping through Warmstart's macswap), port `bad` is
# attacked by scripts/hostile-frontend.py, which reconnects after each of its eight attacks
# (packed position outside the ring, pipe and socket as call fd, memory above max-memory,
# saturated call eventfds, a call eventfd made blocking through the shared file description,
# invalid virtio-net headers, memory truncated under running rings).
#
# Windows rotate: off (nothing on port bad), benign (the same script as a well-behaved front-end
# that reconnects at the same pace: the control, since on a 2-CPU machine the attacker's own CPU
# time and the back-end's session set-ups cost the good port something whatever they carry), and
# hostile. The good port's Rx-pps samples (one a second, testpmd's own) are sorted by window.
# Printed: the median of each and the ratios, how many connections the back-end served, its
# descriptor count before and after, and that it is still alive.
#
# Usage: scripts/bench-hostile.sh [windows=9] [seconds=5]   (windows: a multiple of 3)
#   BIN=path/to/warmstart (default .build/release/warmstart), RING=split|packed, SIZE=64
set -euo pipefail
cd "$(dirname "$0")/.."
windows=${1:-9}
secs=${2:-5}
bin=${BIN:-.build/release/warmstart}
testpmd=${TESTPMD:-dpdk-testpmd}
packed=0; [ "${RING:-split}" = packed ] && packed=1
size=${SIZE:-64}
[ -x "$bin" ] || { echo "bench-hostile: $bin not found (swift build -c release)" >&2; exit 1; }
command -v "$testpmd" >/dev/null || { echo "bench-hostile: $testpmd not found (apt-get install dpdk)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "bench-hostile: python3 not found" >&2; exit 1; }

dir=$(mktemp -d /tmp/ws-hostile.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf /dev/hugepages/ws-hostile-$$-* /var/run/dpdk/ws-hostile-$$-* "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

total=$((windows * secs + 30))
"$bin" run --no-snapshot --mbufs 32768 --cores 1 --forward macswap --duration "$total" \
    --port "vhost-user:$dir/good.sock,name=good" --port "vhost-user:$dir/bad.sock,name=bad,max-memory=1G" \
    >"$dir/ws.out" 2>"$dir/ws.err" &
ws=$!; pids+=($ws)
for _ in $(seq 100); do [ -S "$dir/bad.sock" ] && [ -S "$dir/good.sock" ] && break; sleep 0.05; done
fds_before=$(ls /proc/$ws/fd | wc -l)

# testpmd reads commands from a fifo so this script can ask for a stats sample whenever it likes.
mkfifo "$dir/cmd"
stdbuf -oL "$testpmd" -l 0,1 --main-lcore 1 --no-pci --single-file-segments --file-prefix "ws-hostile-$$-fe" -m 256 \
    --vdev "net_virtio_user0,path=$dir/good.sock,packed_vq=$packed,mrg_rxbuf=1,queue_size=256" -- \
    -i --forward-mode=io --txpkts="$size" --nb-cores=1 <"$dir/cmd" >"$dir/fe.log" 2>&1 &
pids+=($!)
exec 3>"$dir/cmd"
sleep 1
echo "start tx_first 8" >&3
sleep 2
echo "show port stats 0" >&3   # the first sample's rate covers the start; dropped below

# One sample a second, each tagged with the window it closes (a sample that spans a switch is
# tagged "edge" and not used).
: >"$dir/tags"
attacker=""
for w in $(seq 0 $((windows - 1))); do
    case $((w % 3)) in 0) phase=off ;; 1) phase=benign ;; 2) phase=hostile ;; esac
    if [ "$phase" = benign ]; then
        python3 scripts/hostile-frontend.py "$dir/bad.sock" --benign >>"$dir/benign.log" 2>&1 &
        attacker=$!; pids+=($attacker)
    elif [ "$phase" = hostile ]; then
        python3 scripts/hostile-frontend.py "$dir/bad.sock" >>"$dir/attacks.log" 2>&1 &
        attacker=$!; pids+=($attacker)
    fi
    for s in $(seq "$secs"); do
        sleep 1
        echo "show port stats 0" >&3
        if [ "$s" = 1 ]; then echo edge >>"$dir/tags"; else echo "$phase" >>"$dir/tags"; fi
    done
    if [ -n "$attacker" ]; then kill "$attacker" 2>/dev/null || true; wait "$attacker" 2>/dev/null || true; attacker=""; fi
done
sleep 1
echo "stop" >&3; echo "quit" >&3; exec 3>&-
sleep 2

alive=no; kill -0 "$ws" 2>/dev/null && alive=yes
sleep 1
fds_after=$(ls /proc/$ws/fd 2>/dev/null | wc -l)
# The samples, in order; the first (start-up) has no tag.
grep -o 'Rx-pps: *[0-9]*' "$dir/fe.log" | awk '{print $2}' | tail -n +2 >"$dir/pps"
paste "$dir/tags" "$dir/pps" >"$dir/samples"
median() { awk -v p="$1" '$1 == p && $2 != "" {print $2}' "$dir/samples" | sort -n | awk '{a[NR]=$1} END {if (NR==0) print 0; else print a[int((NR+1)/2)]}'; }
off=$(median off); benign=$(median benign); hostile=$(median hostile)
count() { awk -v p="$1" '$1==p' "$dir/samples" | wc -l; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "nan" }'; }
attacks=$(grep -c ': ' "$dir/attacks.log" || true)
benigns=$(grep -c ': ' "$dir/benign.log" || true)
kill -INT "$ws" 2>/dev/null || true; wait "$ws" 2>/dev/null || true

cpu=$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')
echo "bench-hostile: $cpu, $(nproc) CPUs; ${RING:-split} ${size} B; one polling thread for both ports"
echo "good port Rx-pps (testpmd virtio-user io loop), median of the samples in each kind of window:"
printf "  port bad idle      %10s  (%s samples)\n" "$off" "$(count off)"
printf "  benign reconnects  %10s  (%s samples)  /idle %s\n" "$benign" "$(count benign)" "$(ratio "$benign" "$off")"
printf "  hostile front-end  %10s  (%s samples)  /idle %s  /benign %s\n" "$hostile" "$(count hostile)" "$(ratio "$hostile" "$off")" "$(ratio "$hostile" "$benign")"
echo "connections on port bad: $benigns benign, $attacks hostile ($(awk '{print $2}' "$dir/attacks.log" | sort | uniq -c | awk '{printf "%s %s  ", $2, $1}'))"
echo "back-end alive after the attacks: $alive; descriptors before $fds_before, after $fds_after"
echo "back-end's reasons for dropping the hostile sessions (counts):"
grep -oE "not an eventfd|more than this port's limit|outside the ring|made its call descriptor blocking|truncated|invalid virtio-net header|bad virtio-net header|EAGAIN|would block" "$dir/ws.err" | sort | uniq -c | sed 's/^/  /' || true
grep -A3 '^port' "$dir/ws.out" | sed 's/^/  /' || true
