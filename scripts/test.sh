#!/usr/bin/env bash
# Runs every Warmstart test: installs what is missing (with DPDK for the interop tests), reserves
# hugepages when root, builds, runs the unit and integration tests, then the main job twice (with
# hugepages where there are some, and with --hugepages off). Leaves the machine as it found it:
# the hugepage reservation and the hugetlbfs mount go back to what they were.
set -euo pipefail
cd "$(dirname "$0")/.."
# What setup.sh may change, so the exit trap can put it back: the 2 MiB reservation and the mount.
sys=/sys/kernel/mm/hugepages/hugepages-2048kB
hp_before=$(cat "$sys/nr_hugepages" 2>/dev/null || echo "")
grep -q ' /dev/hugepages hugetlbfs ' /proc/mounts && mounted_before=1 || mounted_before=0
tmp=""
restore() {
  local rc=$?
  set +e
  [ -n "$tmp" ] && rm -rf "$tmp"
  [ "$(id -u)" = 0 ] || exit "$rc"
  if [ "$mounted_before" = 0 ] && grep -q ' /dev/hugepages hugetlbfs ' /proc/mounts; then
    umount /dev/hugepages 2>/dev/null && echo "test: unmounted /dev/hugepages (setup mounted it)" || true
  fi
  if [ -n "$hp_before" ] && [ "$(cat "$sys/nr_hugepages")" != "$hp_before" ]; then
    echo "$hp_before" > "$sys/nr_hugepages" 2>/dev/null || true
    echo "test: 2M hugepages back to $(cat "$sys/nr_hugepages") (were $hp_before before the run)"
  fi
  exit "$rc"
}
trap restore EXIT
WARMSTART_WITH_DPDK=1 ./scripts/setup.sh

jobs=$(nproc 2>/dev/null || echo 2)
echo "== swift build (debug, tests)"
swift build --build-tests -j "$jobs"
echo "== swift test"
set +e
swift test --skip-build --disable-swift-testing 2>&1 | tee .build/test-output.txt
status=${PIPESTATUS[0]}
set -e
# The XCTest totals line, e.g. "Executed 220 tests, with 1 test skipped and 0 failures".
summary=$(grep -E "^\s*Executed [0-9]+ tests?, with" .build/test-output.txt | tail -1)
executed=$(echo "$summary" | sed -E 's/.*Executed ([0-9]+) tests?.*/\1/')
skipped=$(echo "$summary" | grep -oE '[0-9]+ tests? skipped' | grep -oE '^[0-9]+' || echo 0)
failed=$(echo "$summary" | sed -E 's/.* ([0-9]+) failures?.*/\1/')
[ "$status" = 0 ] || { echo "swift test failed ($status)"; echo "unit: $((executed - skipped - failed)) passed, $failed failed, $skipped skipped"; exit "$status"; }

echo "== main job, hugepages auto, then off"
swift build -c release --static-swift-stdlib --product warmstart -j "$jobs"
tmp=$(mktemp -d)
bin=.build/release/warmstart
WARMSTART_EXEC_EPOCH=$EPOCHREALTIME "$bin" run --boot-only --no-snapshot --mbufs 65536 --report-json "$tmp/cold.json"
"$bin" run --boot-only --hugepages off --snapshot /dev/shm/warmstart-ci-$$.snap --mbufs 65536 --report-json "$tmp/first.json"
"$bin" run --boot-only --hugepages off --snapshot /dev/shm/warmstart-ci-$$.snap --mbufs 65536 --report-json "$tmp/second.json"
grep -q '"outcome" : "created"' "$tmp/first.json"
grep -q '"outcome" : "restored"' "$tmp/second.json"
rm -f /dev/shm/warmstart-ci-$$.snap
"$bin" report "$tmp/second.json" >/dev/null
# The main job itself: boot from the snapshot, loop traffic through its own vhost-user back-end and
# virtio-user front-end for 2 s, print report and throughput.
"$bin" run --duration 2 --hugepages off --snapshot /dev/shm/warmstart-ci-$$.snap --mbufs 65536 | tee "$tmp/main.txt" | tail -12
grep -q "Mpps" "$tmp/main.txt"
rm -f /dev/shm/warmstart-ci-$$.snap
echo "main job: ok"
echo "tests: $((executed - skipped - failed)) passed, $failed failed, $skipped skipped"
