#!/usr/bin/env bash
# A/B of two Warmstart builds, side by side in one run: `warmstart bench` (Warmstart's virtio-user
# front-end against Warmstart's own vhost-user back-end, loopback through macswap) with build A,
# then build B, alternating in short runs; each pair's ratio B/A is kept and the median quoted
# (the machine's cross-core figures flip minute to minute, Docs/BENCHMARKS.md). Both the front-end and
# the back-end of each run come from the same build, so the ratio covers both sides' hot paths.
#
# Usage: scripts/bench-ab.sh A_BIN B_BIN [pairs=3] [seconds=3]
#   CASES="split:64 packed:64 split:1518 packed:1518"
set -euo pipefail
a=${1:?usage: bench-ab.sh A_BIN B_BIN [pairs] [seconds]}
b=${2:?usage: bench-ab.sh A_BIN B_BIN [pairs] [seconds]}
pairs=${3:-3}
secs=${4:-3}
cases=${CASES:-"split:64 packed:64 split:1518 packed:1518"}
for bin in "$a" "$b"; do [ -x "$bin" ] || { echo "bench-ab: $bin is not an executable" >&2; exit 1; }; done

mpps() { # $1 bin, $2 layout, $3 size → Mpps
    "$1" bench --layout "$2" --size "$3" --duration "$secs" --hugepages off 2>/dev/null \
        | grep -oE '[0-9]+(\.[0-9]+)? Mpps' | head -1 | awk '{print $1}'
}
median() { sort -g | awk '{v[NR]=$1} END {if (NR==0) print "n/a"; else if (NR%2) print v[(NR+1)/2]; else printf "%.3f\n", (v[NR/2]+v[NR/2+1])/2}'; }

echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) CPUs; A=$a B=$b; $pairs pairs x ${secs}s"
printf '%-14s %-22s %-22s %-28s %s\n' case "A Mpps" "B Mpps" "ratios B/A" "median B/A"
for c in $cases; do
    layout=${c%%:*}; size=${c##*:}
    as=(); bs=(); rs=()
    for _ in $(seq "$pairs"); do
        x=$(mpps "$a" "$layout" "$size"); y=$(mpps "$b" "$layout" "$size")
        as+=("$x"); bs+=("$y")
        rs+=("$(awk -v x="$x" -v y="$y" 'BEGIN { if (x > 0) printf "%.3f", y / x; else print "n/a" }')")
    done
    printf '%-14s %-22s %-22s %-28s %s\n' "$layout $size B" "${as[*]}" "${bs[*]}" "${rs[*]}" \
        "$(printf '%s\n' "${rs[@]}" | grep -v n/a | median)"
done
