#!/usr/bin/env bash
# The main job: installs what is missing, builds Warmstart in release mode and runs it with its
# self-contained default (the default snapshot is created on the first run, restored after).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
swift build -c release --product warmstart
# $EPOCHREALTIME just before exec lets the report time exec → main to the microsecond.
WARMSTART_EXEC_EPOCH=$EPOCHREALTIME exec .build/release/warmstart run "$@"
