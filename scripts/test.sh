#!/usr/bin/env bash
# Runs every Warmstart test: installs what is missing (with DPDK for the interop tests), reserves
# hugepages when root, builds, runs the unit and integration tests, then the main job twice (with
# hugepages where there are some, and with --hugepages off). Leaves the machine as it found it.
set -euo pipefail
cd "$(dirname "$0")/.."
WARMSTART_WITH_DPDK=1 ./scripts/setup.sh

jobs=$(nproc 2>/dev/null || echo 2)
echo "== swift build (debug, tests)"
swift build --build-tests -j "$jobs"
echo "== swift test"
swift test --skip-build --disable-swift-testing 2>&1 | tee .build/test-output.txt
status=${PIPESTATUS[0]}
# The XCTest totals line, e.g. "Executed 220 tests, with 1 test skipped and 0 failures".
summary=$(grep -E "^\s*Executed [0-9]+ tests?, with" .build/test-output.txt | tail -1)
executed=$(echo "$summary" | sed -E 's/.*Executed ([0-9]+) tests?.*/\1/')
skipped=$(echo "$summary" | grep -oE '[0-9]+ tests? skipped' | grep -oE '^[0-9]+' || echo 0)
failed=$(echo "$summary" | sed -E 's/.* ([0-9]+) failures?.*/\1/')
[ "$status" = 0 ] || { echo "swift test failed ($status)"; echo "unit: $((executed - skipped - failed)) passed, $failed failed, $skipped skipped"; exit "$status"; }

echo "== main job, hugepages auto, then off"
swift build -c release --product warmstart -j "$jobs"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
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
