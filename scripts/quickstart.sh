#!/usr/bin/env bash
# The main job: installs what is missing, builds Warmstart in release mode and runs it with its
# self-contained default (the default snapshot is created on the first run, restored after).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
swift build -c release --product warmstart
exec env WARMSTART_EXEC_NS="$(cat /proc/uptime >/dev/null; python3 -c 'import time;print(time.clock_gettime_ns(time.CLOCK_MONOTONIC))' 2>/dev/null || true)" \
  .build/release/warmstart run "$@"
