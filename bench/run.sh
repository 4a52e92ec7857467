#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# bench/run.sh — the whole benchmark with one command, after the README's
# setup (scripts/setup.sh): ingest (maximum and open-loop latency curves),
# the 10 M-event query benchmark Q1-Q5, storage per event and restart with a
# 1 GiB WAL, each side by side with ClickHouse 18.16 in the same run. It
# prints a table of the targets with the measured figures and both systems'
# open-loop latency curves, and writes
# bench/results/<date>-<commit>.json and .png. See docs/PERFORMANCE.md.
#
#   bench/run.sh [--quick] [--events N] [--seconds S] [--only ingest,queries,restart] ...
#   bench/run.sh --help      every option (bench/harness.py)
#
# It builds the benchmark targets first (in $HODEI_BUILD_DIR, default
# build/). It never fails on a figure: the exit status is non-zero only
# when a step could not run.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=${HODEI_BUILD_DIR:-$root/build}
py=$root/.venv/bin/python
[ -x "$py" ] || { echo "bench: $py missing: run scripts/setup.sh first" >&2; exit 1; }
[ -f "$build/build.ninja" ] || { echo "bench: $build is not configured: run scripts/setup.sh first" >&2; exit 1; }
cmake --build "$build" --target hodei-auditd hodei-bench-gen hodei-bench-load hodei-bench-query hodei-bench-calib >&2
HODEI_BUILD_DIR=$build exec "$py" "$root/bench/harness.py" "$@"
