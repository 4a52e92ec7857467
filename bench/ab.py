#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""bench/ab.py — two (or more) builds or settings of hodei-auditd, alternated
on one machine, for the before/after figures of docs/PERFORMANCE.md.

  bench/ab.py --rounds 6 before=/path/to/old/build after=build
  bench/ab.py --rate 130000 off=build on=build:--seal-write-step=1MiB

Each variant is LABEL=BUILD_DIR[:ARG,ARG...]: the hodei-auditd of that build
directory, with those extra arguments. Every round runs each variant once,
in turn (the order flips each round, so a slow minute of the shared machine
hurts both), each on a fresh server in its own directory, with
hodei-bench-load from this checkout's build (HODEI_BUILD_DIR): at --max, or
open loop at --rate. It prints each run and, per variant, the medians; with
two variants also the median of the per-round ratios of events/s.

Run directories are kept until the end: ext4 is slow to create files for a
while after thousands were deleted (docs/PERFORMANCE.md, "A trap when
measuring"), and that would bill one run for the last one's cleanup.
On tmpfs (TMPDIR=/dev/shm, to measure without the disk) each run's
directory is removed right after it instead: a kept one holds gigabytes
of memory, and on these VMs every run after the first then had a tail
several times longer ("This round (twelfth)").

After each run it also reads the server's /metrics: the WAL fsync
histogram's p99 and p99.9 (the upper bound of the bucket that holds them,
over the server's whole life: warm-up included) and how many WAL
generations started in a recycled file. During the run it scrapes /metrics
every second, so that the Append stage histograms (receive, queue, wait,
commit, deliver, respond) and the whole Append's can be read over the
measured window alone: the difference of the scrapes nearest its start and
its end, warm-up left out. Their p99 and p99.9 say which stage the tail
is in.

Nothing here asserts on time: figures are printed (and written as JSON
with --out).
"""
import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as H  # noqa: E402
import hodei  # noqa: E402  (the test suite's server driver, via harness)


def variant(text):
    label, sep, rest = text.partition("=")
    if not sep or not label:
        raise argparse.ArgumentTypeError(f"{text}: want LABEL=BUILD_DIR[:ARG,...]")
    build, _, args = rest.partition(":")
    daemon = Path(build).resolve() / "tools" / "hodei-auditd"
    if not daemon.exists():
        raise argparse.ArgumentTypeError(f"{daemon} is missing: build that directory first")
    return {"label": label, "daemon": daemon, "args": [a for a in args.split(",") if a]}


def on_tmpfs(path):
    """Whether path is on a tmpfs mount (the longest mount point above it)."""
    best, kind = "", None
    with open("/proc/mounts") as f:
        for line in f:
            _, mnt, fstype = line.split()[:3]
            mnt = mnt.replace("\\040", " ")
            if (str(path) + "/").startswith(mnt.rstrip("/") + "/") and len(mnt) >= len(best):
                best, kind = mnt, fstype
    return kind == "tmpfs"


def bucket_quantile(m, name, q):
    """quantile_of a label-less histogram over the server's life."""
    return H.quantile_of(H.buckets_of(m, name), q)


def server_figures(h):
    m = h.srv.metrics()
    fs = "hodei_wal_fsync_duration_seconds"
    return {"fsync_p99_ms": bucket_quantile(m, fs, 0.99),
            "fsync_p999_ms": bucket_quantile(m, fs, 0.999),
            "wal_recycled": m.get("hodei_wal_recycled_total"),
            "wal_rotations": m.get("hodei_wal_rotations_total")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("variants", nargs="+", type=variant)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--rate", type=int, help="offered events/s (open loop); default: --max")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--warmup", type=float, default=2)
    ap.add_argument("--tenants", type=int, default=1000)
    ap.add_argument("--pool-events", type=int, default=400_000)
    ap.add_argument("--out", help="write every run's figures here (JSON)")
    args = ap.parse_args()
    if len({v["label"] for v in args.variants}) != len(args.variants):
        ap.error("labels must differ")

    mode = ["--rate", args.rate] if args.rate else ["--max"]
    common = ["--seconds", args.seconds, "--warmup", args.warmup,
              "--tenants", args.tenants, "--pool-events", args.pool_events]
    runs = {v["label"]: [] for v in args.variants}
    work = Path(tempfile.mkdtemp(prefix="hodei-ab-"))
    keep_runs = not on_tmpfs(work)
    try:
        for r in range(args.rounds):
            order = args.variants if r % 2 == 0 else args.variants[::-1]
            for v in order:
                hodei.DAEMON = v["daemon"]
                with H.Hodei(work / f"{v['label']}-{r}", v["args"]) as h:
                    j = H.load_staged(h, args.seconds, *mode, *common)
                    srv = server_figures(h)
                if not keep_runs:
                    shutil.rmtree(work / f"{v['label']}-{r}", ignore_errors=True)
                s = {**H.load_summary(j), **srv}
                runs[v["label"]].append(s)
                print(f"round {r} {v['label']}: {s['eps']:,.0f} events/s, p50 "
                      f"{s['p50_us'] / 1000:.2f} p99 {s['p99_us'] / 1000:.2f} p99.9 "
                      f"{s['p999_us'] / 1000:.2f} ms, server {s['server_cpu_us_per_event']:.2f} "
                      f"µs CPU/event; WAL fsync p99 ≤ {s['fsync_p99_ms']} p99.9 ≤ "
                      f"{s['fsync_p999_ms']} ms; {s['wal_recycled']:.0f} of "
                      f"{s['wal_rotations']:.0f} WAL files recycled; "
                      f"{H.stage_line(s['stages'])}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def med(label, key):
        return statistics.median(x[key] for x in runs[label])

    for v in args.variants:
        lab = v["label"]
        print(f"median {lab}: {med(lab, 'eps'):,.0f} events/s, p99 "
              f"{med(lab, 'p99_us') / 1000:.2f} ms, p99.9 {med(lab, 'p999_us') / 1000:.2f} ms, "
              f"server {med(lab, 'server_cpu_us_per_event'):.2f} µs CPU/event")
    result = {"mode": "rate" if args.rate else "max", "rate": args.rate, "runs": runs}
    if len(args.variants) == 2:
        a, b = (v["label"] for v in args.variants)
        ratios = [y["eps"] / x["eps"] for x, y in zip(runs[a], runs[b]) if x["eps"]]
        result["ratio_median"] = statistics.median(ratios) if ratios else None
        print(f"{b} / {a}, events/s, median of per-round ratios: "
              f"{result['ratio_median']:.3f} ({', '.join(f'{x:.2f}' for x in ratios)})")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
