#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# run_append.sh — runs hodei-bench-append R times for io=uring and io=sync,
# alternating the two backends (and which goes first in each round) so that
# a slow phase of a noisy machine hurts both alike. Each run's JSON goes to
# bench/results/append-<date>-<n>-<io>.json; at the end it prints, per
# backend, the median events/s and median p99 ack latency, and their ratio.
#
# usage: bench/run_append.sh [-r RUNS] [-s SECONDS] [-w WARMUP] [-b BINARY] [-- BENCH ARGS...]
#   -r RUNS     rounds (default 3; each round runs both backends)
#   -s SECONDS  measured seconds per run (default 3)
#   -w WARMUP   warm-up seconds per run (default 1)
#   -b BINARY   hodei-bench-append to run (default: build-bench/, then build/)
# Arguments after -- go to every run (e.g. -- --producers 4 --batch 1000).
# It prints numbers and never fails on them: the exit status is non-zero
# only when no run of either backend succeeded.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
runs=3
duration=3
warmup=1
bin=""
while getopts r:s:w:b:h opt; do
	case $opt in
	r) runs=$OPTARG ;;
	s) duration=$OPTARG ;;
	w) warmup=$OPTARG ;;
	b) bin=$OPTARG ;;
	h) sed -n '4,17p' "$0"; exit 0 ;;
	*) sed -n '4,17p' "$0" >&2; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
if [ "${1:-}" = "--" ]; then
	shift
fi
if [ -z "$bin" ]; then
	for cand in "$root/build-bench/bench/hodei-bench-append" "$root/build/bench/hodei-bench-append"; do
		if [ -x "$cand" ]; then
			bin=$cand
			break
		fi
	done
fi
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
	echo "run_append.sh: hodei-bench-append not found; build it or pass -b BINARY" >&2
	exit 2
fi

results="$here/results"
mkdir -p "$results"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
n=0
round=1
while [ "$round" -le "$runs" ]; do
	# Odd rounds start with uring, even rounds with sync.
	if [ $((round % 2)) -eq 1 ]; then order="uring sync"; else order="sync uring"; fi
	for io in $order; do
		n=$((n + 1))
		out="$results/append-$stamp-$n-$io.json"
		echo "run $n: io=$io seconds=$duration $*" >&2
		if ! "$bin" --io "$io" --seconds "$duration" --warmup "$warmup" --json-out "$out" "$@" \
			>/dev/null 2>"$out.log"; then
			echo "run $n: io=$io FAILED:" >&2
			tail -5 "$out.log" >&2
			rm -f "$out"
		else
			grep -E '^  (acked|ack latency)' "$out.log" >&2 || true
		fi
		rm -f "$out.log"
	done
	round=$((round + 1))
done

python3 - "$results" "$stamp" <<'PY'
import glob, json, os, statistics, sys

results, stamp = sys.argv[1], sys.argv[2]
runs = {}
for path in sorted(glob.glob(os.path.join(results, f"append-{stamp}-*.json"))):
    with open(path) as f:
        d = json.load(f)
    runs.setdefault(d["config"]["io"], []).append(d)
if not runs:
    print("run_append.sh: no successful run", file=sys.stderr)
    sys.exit(1)
med = {}
print(f"results: {results}/append-{stamp}-*.json")
for io in ("uring", "sync"):
    rs = runs.get(io, [])
    if not rs:
        print(f"{io:5}: no successful run")
        continue
    eps = statistics.median(r["events_per_s"] for r in rs)
    p99 = statistics.median(r["latency_ms"]["p99"] for r in rs)
    p50 = statistics.median(r["latency_ms"]["p50"] for r in rs)
    epf = statistics.median(r["events_per_fsync"] for r in rs)
    load = statistics.median(r["cpu"]["loadavg_1m_end"] for r in rs)
    med[io] = (eps, p99)
    print(f"{io:5}: median of {len(rs)}: {eps:10.0f} events/s  p50 {p50:8.2f} ms  "
          f"p99 {p99:8.2f} ms  {epf:7.1f} events/fsync  (load avg {load:.1f})")
if "uring" in med and "sync" in med:
    (eu, pu), (es, ps) = med["uring"], med["sync"]
    r_eps = eu / es if es else float("nan")
    r_p99 = pu / ps if ps else float("nan")
    print(f"uring/sync: events/s x{r_eps:.2f}, p99 x{r_p99:.2f}")
PY
