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
# xctest_counts FILE → "executed skipped failed" (0 0 0 when the run printed no totals).
xctest_counts() {
  local summary e s f
  summary=$(grep -E "^\s*Executed [0-9]+ tests?, with" "$1" | tail -1 || true)
  [ -n "$summary" ] || { echo "0 0 0"; return; }
  e=$(echo "$summary" | sed -E 's/.*Executed ([0-9]+) tests?.*/\1/')
  s=$(echo "$summary" | grep -oE '[0-9]+ tests? skipped' | grep -oE '^[0-9]+' || echo 0)
  f=$(echo "$summary" | sed -E 's/.* ([0-9]+) failures?.*/\1/')
  echo "$e $s $f"
}
read -r executed skipped failed < <(xctest_counts .build/test-output.txt)
[ "$status" = 0 ] || { echo "swift test failed ($status)"; echo "unit: $((executed - skipped - failed)) passed, $failed failed, $skipped skipped"; exit "$status"; }
# Totals over every step below; the last line of the run adds them up.
passed=$((executed - skipped - failed))

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

# Sanitizers and fuzzing (issue 12). Each step adds its own counts; a failing step does not stop
# the others, so one run reports every finding. WARMSTART_CI_FUZZ_SECONDS=0 skips the fuzzing.
steps_failed=0
step_counts() {   # step_counts NAME FILE STATUS: add an XCTest run's counts to the totals
  local e s f
  read -r e s f < <(xctest_counts "$2")
  # A run that died before its totals (a sanitizer abort) counts as one failure.
  if [ "$3" != 0 ] && [ "$f" = 0 ]; then f=1; fi
  echo "$1: $((e - s - f)) passed, $f failed, $s skipped"
  passed=$((passed + e - s - f)); failed=$((failed + f)); skipped=$((skipped + s))
  [ "$3" = 0 ] || steps_failed=$((steps_failed + 1))
}

# The code's shape: Package.swift's dependencies are the imports, ARCHITECTURE.md's module map is
# Package.swift, no file over 500 lines, no module over 2,500 (issue 13).
echo "== structure (scripts/check-structure.py)"
if python3 scripts/check-structure.py; then passed=$((passed + 1)); else failed=$((failed + 1)); steps_failed=$((steps_failed + 1)); fi

fuzz_seconds=${WARMSTART_CI_FUZZ_SECONDS:-20}
if [ "$fuzz_seconds" != 0 ]; then
  echo "== fuzz: each target ${fuzz_seconds}s from its seed corpus (scripts/fuzz.sh)"
  set +e
  ./scripts/fuzz.sh all "$fuzz_seconds" 2>&1 | tee .build/fuzz-output.txt
  fstatus=${PIPESTATUS[0]}
  set -e
  # Each target is one test: passed when it ran clean, failed on a crash, leak or hang.
  fok=$(grep -cE '^fuzz: [a-z-]+: [0-9?]+ executions' .build/fuzz-output.txt || true)
  fbad=$(grep -cE '^fuzz: [a-z-]+: FAILED' .build/fuzz-output.txt || true)
  if [ "$fstatus" != 0 ] && [ "$fbad" = 0 ]; then fbad=1; fi
  echo "fuzz: $fok passed, $fbad failed, 0 skipped"
  passed=$((passed + fok)); failed=$((failed + fbad))
  [ "$fstatus" = 0 ] || steps_failed=$((steps_failed + 1))
fi

# AddressSanitizer: every unit test except the testpmd interop target (WarmstartInteropTests runs
# DPDK's testpmd and the release binary, neither built with ASan; it skips without testpmd anyway)
# — kept out so the step's time goes to our own code. Leak detection is off here: at exit LSan
# reports the Swift runtime's weak-reference side tables (their pointer lives inside an object's
# refcount bits, where LSan cannot see it), and the handoff tests' child processes then exit 23
# instead of 0. The fuzz targets check leaks per input, and descriptors and mbufs by count.
# What a sanitizer step shows: every failed assertion and every sanitizer report with the lines
# that follow it (not cut short by the passing suites' summaries), then the overall count.
sanitizer_digest() {
  grep -E -A12 "$2" "$1" | head -80
  grep -E "error:|' failed \(" "$1" | head -40
  grep -E 'Executed' "$1" | tail -1
}

echo "== swift test under AddressSanitizer (.build-asan)"
set +e
swift build --build-tests --sanitize=address --scratch-path .build-asan -j "$jobs" >.build/asan-build.txt 2>&1
astatus=$?
if [ "$astatus" = 0 ]; then
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0} \
    swift test --skip-build --sanitize=address --scratch-path .build-asan --disable-swift-testing \
    --skip 'WarmstartInteropTests' >.build/asan-output.txt 2>&1
  astatus=$?
  sanitizer_digest .build/asan-output.txt 'ERROR: AddressSanitizer'
else
  tail -20 .build/asan-build.txt; : > .build/asan-output.txt
fi
set -e
step_counts "asan" .build/asan-output.txt "$astatus"

# ThreadSanitizer: the datapath (polling threads, rings shared between threads) and the hot
# upgrade (donor and taker threads, the control server).
echo "== swift test under ThreadSanitizer (.build-tsan): datapath and handoff"
set +e
swift build --build-tests --sanitize=thread --scratch-path .build-tsan -j "$jobs" >.build/tsan-build.txt 2>&1
tstatus=$?
if [ "$tstatus" = 0 ]; then
  TSAN_OPTIONS=${TSAN_OPTIONS:-} \
    swift test --skip-build --sanitize=thread --scratch-path .build-tsan --disable-swift-testing \
    --filter 'WarmstartEngineTests|WarmstartPortsTests|Handoff' >.build/tsan-output.txt 2>&1
  tstatus=$?
  sanitizer_digest .build/tsan-output.txt 'WARNING: ThreadSanitizer'
else
  tail -20 .build/tsan-build.txt; : > .build/tsan-output.txt
fi
set -e
step_counts "tsan" .build/tsan-output.txt "$tstatus"

echo "tests: $passed passed, $failed failed, $skipped skipped"
[ "$steps_failed" = 0 ] || exit 1
