#!/usr/bin/env bash
# Coverage-guided fuzzing with libFuzzer (Docs/FUZZING.md).
#
#   scripts/fuzz.sh list                 the targets (folders of Fuzz/ with a main.swift)
#   scripts/fuzz.sh build [TARGET...]    build the instrumented library and the target binaries
#   scripts/fuzz.sh TARGET SECONDS       fuzz one target for SECONDS
#   scripts/fuzz.sh all SECONDS          fuzz each target for SECONDS
#   scripts/fuzz.sh replay [TARGET...]   run each checked-in input (corpus/, crashes-found/) once
#
# The package's library modules are built once into .build-fuzz with SwiftPM's fuzzer and address
# sanitizers (coverage instrumentation, ASan, -O; debug configuration, so `@testable import`
# works); each target is Fuzz/Common/*.swift + Fuzz/TARGET/main.swift, compiled with
# `swiftc -sanitize=fuzzer,address` against those modules and linked with their objects. Nothing
# here is a Package.swift target: `swift build` / `swift test` of the package never see it.
#
# A run seeds from Fuzz/TARGET/corpus (read only) and writes what it finds to
# .build-fuzz/corpus/TARGET; a crash, leak or hang leaves its input in .build-fuzz/artifacts/TARGET/
# and makes the script exit non-zero. Environment: FUZZ_JOBS (build jobs), FUZZ_RSS_MB (2048),
# FUZZ_TIMEOUT (per input, seconds, 10), FUZZ_ARGS (more libFuzzer flags).
set -euo pipefail
cd "$(dirname "$0")/.."
# libFuzzer reports a crash with its own stack and saves the input; Swift's backtracer would
# first spend tens of seconds symbolicating the 20 MB instrumented binary.
export SWIFT_BACKTRACE=enable=no
root=$PWD
scratch=.build-fuzz
jobs=${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 2)}
rss=${FUZZ_RSS_MB:-2048}
per_input=${FUZZ_TIMEOUT:-10}

targets() { for d in Fuzz/*/; do d=${d%/}; [ -f "$d/main.swift" ] && basename "$d"; done; }

build_library() {
  echo "== fuzz: instrumented library build ($scratch)"
  # Only the library graph (no executable: libFuzzer brings its own main).
  # SwiftPM's --sanitize=address puts -fsanitize=address on the C shim; swiftc honours only its
  # last -sanitize= option, so fuzzer and address go together in the one added after SwiftPM's.
  mkdir -p "$scratch/logs"
  if ! swift build --scratch-path "$scratch" -c debug --sanitize=address -Xswiftc -sanitize=fuzzer,address \
      -Xswiftc -O --target WarmstartRuntime -j "$jobs" >"$scratch/logs/build.log" 2>&1; then
    grep -E 'error|warning: unre' "$scratch/logs/build.log" | head -20
    echo "fuzz: library build failed (log $scratch/logs/build.log)" >&2; exit 1
  fi
  tail -1 "$scratch/logs/build.log"
}

build_target() {
  local t=$1 bin="$scratch/fuzz/$1"
  local B="$scratch/debug"
  B=$(cd "$B" && pwd -P)
  mkdir -p "$scratch/fuzz"
  local srcs=(Fuzz/Common/*.swift "Fuzz/$t"/*.swift)
  # Rebuild when a source or the library is newer than the binary.
  if [ -x "$bin" ] && [ -z "$(find "${srcs[@]}" "$B/Modules" -newer "$bin" -print -quit)" ]; then return; fi
  echo "== fuzz: compile $t"
  local maps=() m
  for m in "$B"/*.build/module.modulemap Sources/*/module.modulemap Sources/*/include/module.modulemap \
           "$scratch"/checkouts/*/Sources/*/include/module.modulemap; do
    [ -f "$m" ] && maps+=(-Xcc "-fmodule-map-file=$m")
  done
  swiftc -sanitize=fuzzer,address -parse-as-library -O -g -module-name "fuzz_${t//-/_}" \
    -I "$B/Modules" -I Sources/CWarmstartShim/include "${maps[@]}" \
    "${srcs[@]}" "$B"/*.build/*.o "$B"/Modules/*.o -luring -o "$bin" 2>&1 \
    | grep -v "Cannot export local symbol" || true
  [ -x "$bin" ] && [ "$bin" -nt "Fuzz/$t/main.swift" ] || { echo "fuzz: $t did not build" >&2; exit 1; }
}

build() {
  build_library
  local t
  for t in "$@"; do build_target "$t"; done
}

# Runs one target; prints "fuzz: TARGET: N executions, C crashes" and returns non-zero on a finding.
run_target() {
  local t=$1 secs=$2 bin="$scratch/fuzz/$1"
  local work="$scratch/corpus/$t" art="$scratch/artifacts/$t/" log="$scratch/logs/$t.log"
  mkdir -p "$work" "$art" "$scratch/logs" "Fuzz/$t/corpus"
  local dict=() ; [ -f "Fuzz/$t/dict" ] && dict=(-dict="Fuzz/$t/dict")
  echo "== fuzz: $t for ${secs}s"
  set +e
  # shellcheck disable=SC2086
  "$bin" -max_total_time="$secs" -rss_limit_mb="$rss" -timeout="$per_input" -detect_leaks=1 \
    -print_final_stats=1 -artifact_prefix="$art" "${dict[@]}" ${FUZZ_ARGS:-} "$work" "Fuzz/$t/corpus" >"$log" 2>&1
  local rc=$?
  set -e
  local execs crashes
  execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)
  execs=${execs:-$(grep -oE '^Done [0-9]+ runs' "$log" | grep -oE '[0-9]+' | tail -1)}
  crashes=$(find "$art" -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) -newer "$log.start" 2>/dev/null | wc -l)
  if [ "$rc" != 0 ]; then
    echo "fuzz: $t: FAILED after ${execs:-?} executions (exit $rc); log $log"
    grep -E 'ERROR: |Fatal error|SUMMARY|Test unit written' "$log" | head -8
    return 1
  fi
  echo "fuzz: $t: ${execs:-?} executions, $crashes crashes, corpus $(ls "$work" | wc -l) (+$(ls "Fuzz/$t/corpus" | wc -l) seeds)"
}

replay() {
  local t files rc=0
  for t in "$@"; do
    files=$(find "Fuzz/$t/corpus" "Fuzz/$t/crashes-found" -type f 2>/dev/null | sort || true)
    [ -n "$files" ] || continue
    # shellcheck disable=SC2086
    if "$scratch/fuzz/$t" -rss_limit_mb="$rss" -timeout="$per_input" $files >"$scratch/logs/$t.replay.log" 2>&1; then
      echo "fuzz: $t: replayed $(echo "$files" | wc -l) inputs"
    else
      echo "fuzz: $t: replay FAILED (log $scratch/logs/$t.replay.log)"; rc=1
    fi
  done
  return $rc
}

cmd=${1:-}
case "$cmd" in
  list) targets ;;
  build) shift; [ $# -gt 0 ] || set -- $(targets); build "$@" ;;
  replay) shift; [ $# -gt 0 ] || set -- $(targets); mkdir -p "$scratch/logs"; build "$@"; replay "$@" ;;
  ""|-h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  *)
    secs=${2:?usage: scripts/fuzz.sh TARGET|all SECONDS}
    if [ "$cmd" = all ]; then set -- $(targets); else
      [ -f "Fuzz/$cmd/main.swift" ] || { echo "fuzz: no target '$cmd' (scripts/fuzz.sh list)" >&2; exit 2; }
      set -- "$cmd"
    fi
    build "$@"
    failed=0
    for t in "$@"; do
      mkdir -p "$scratch/logs"; touch "$scratch/logs/$t.log.start"
      run_target "$t" "$secs" || failed=$((failed + 1))
    done
    echo "fuzz: $# targets, $failed with findings"
    [ "$failed" = 0 ]
    ;;
esac
