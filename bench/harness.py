#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""bench/harness.py — the whole benchmark of hodei-audit, side by side with
ClickHouse 18.16, in one command (bench/run.sh calls it). It prints a table,
writes bench/results/<date>-<commit>.json (-only-<steps> after it for a
run of some steps only) and draws <same>.png.

Data flow (every server is started here, on 127.0.0.1 and free ports, in a
work directory that is removed at the end unless --keep):

  1. Ingest, hodei: a fresh hodei-auditd (embedded defaults, two shards on
     two cores); hodei-bench-load at maximum throughput (closed loop), then
     at fixed offered rates (open loop) as fractions of that maximum, for
     the latency curve, with the server's Append stage histograms
     (/metrics, scraped every second) over each rate's measured window.
     Load generator and server share the two cores.
  2. Ingest, ClickHouse: bench/clickhouse_bench.py tries every insert
     format (JSONEachRow, TSV, RowBinary) with one and two clients and keeps
     the best; then rounds alternate "hodei max" and "ClickHouse best", so a
     slow phase of the shared machine hurts both alike; the ratio is the
     median of the per-round ratios. Then ClickHouse's own latency curve
     (clickhouse_bench.py sweep): the best format and client count, open
     loop, at the same fractions of ClickHouse's median best rate as
     hodei's sweep uses of hodei's median maximum (docs/adr/0010);
     latency per batch of 10,000 rows from its due time.
  3. Query store: the same N events (hodei-bench-gen's stream, seed and
     30-day span fixed) loaded into a fresh hodei-auditd (hodei-bench-load
     --fill) and into ClickHouse (JSONEachRow, batches of 10,000); bytes on
     disk per event for both.
  4. Queries Q1-Q5 (and Q1 on the top tenant): hodei-bench-query plan
     samples the parameters with a fixed seed, and both systems answer the
     same plan, one query at a time, in --query-rounds alternated rounds
     (a fresh hodei-auditd on the store, then ClickHouse); per kind the
     median of the rounds' p99 and the median of the per-round ratios.
  5. Restart: a hodei-auditd that never seals gets events until its WAL
     holds --wal-bytes (1 GiB), is killed with SIGKILL, and is restarted;
     the time from exec to /readyz 200 is measured (median of --restarts).

Nothing here asserts on time: figures are printed and written. The exit
status is non-zero only when a step could not run at all.
"""
import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = Path(os.environ.get("HODEI_BUILD_DIR", str(ROOT / "build"))).resolve()
os.environ["HODEI_BUILD_DIR"] = str(BUILD)
sys.path.insert(0, str(ROOT / "tests" / "integration"))

import hodei  # noqa: E402  (the test suite's server driver)
from clickhouse_bench import proc_cpu_s  # noqa: E402

LOAD = BUILD / "bench" / "hodei-bench-load"
QUERY = BUILD / "bench" / "hodei-bench-query"
GEN = BUILD / "bench" / "hodei-bench-gen"
CALIB = BUILD / "bench" / "hodei-bench-calib"
FSYNC = BUILD / "bench" / "hodei-bench-fsync"
CH_BENCH = ROOT / "bench" / "clickhouse_bench.py"

SPAN_NS = 30 * 86400 * 10**9  # the query store spans 30 days...
STEP_MAX_NS = 4_000_000_000    # ... or less for tiny stores (the generator's limit)


def step_for(n):
    return min(SPAN_NS // n, STEP_MAX_NS)


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_json(cmd, timeout=None):
    """Runs cmd, passes its stderr through, returns its stdout as JSON."""
    log("$ " + " ".join(str(c) for c in cmd))
    p = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{Path(str(cmd[0])).name} exited with {p.returncode}")
    return json.loads(p.stdout)


def du(path):
    """Bytes of the regular files under path (apparent sizes)."""
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except FileNotFoundError:
                pass
    return total


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def machine():
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    load = os.getloadavg()
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_bytes": mem,
            "kernel": platform.release(), "loadavg_at_start": [round(x, 2) for x in load]}


def calibrate():
    """hodei-bench-calib: the machine's speed right now at a fixed workload
    (encode and hash, segment build, block decode), to set runs made at
    different times side by side."""
    j = run_json([CALIB])
    log(f"calibration: append {j['append']['cpu_ns_per_event']:.0f} ns/event, seal "
        f"{j['seal']['cpu_ns_per_row']:.0f} ns/row, decode {j['decode']['cpu_us_per_block']:.0f} "
        f"µs/block (thread CPU)")
    return j


SEAL_WRITE_STEP = 256 << 10  # the server's --seal-write-step default (ADR 0019)


def disk_probe(near, quick):
    """hodei-bench-fsync on the disk the run uses: a recycled WAL file's
    fdatasync latency with 25 MB/s of 4 MiB segment files written beside
    it (the half-load mix), and the share of the time a request would wait
    past 5 ms for one. Twice: the files written at once (the figure of
    earlier runs), then in the server's paced steps (j["paced"]). Above
    1 %, the disk alone rules out an ack p99 of 5 ms in that window
    (docs/PERFORMANCE.md, eighth and thirteenth rounds)."""
    d = Path(tempfile.mkdtemp(prefix="hodei-disk-", dir=near))
    size = ["--commits", "50", "--period-us", "0"] if quick else ["--commits", "10000"]
    try:
        j = run_json([FSYNC, "--dir", d, "--overwrite", "--segments-mbps", "25", *size])
        j["paced"] = run_json([FSYNC, "--dir", d, "--overwrite", "--segments-mbps", "25",
                               "--segment-step", str(SEAL_WRITE_STEP), *size])
    finally:
        shutil.rmtree(d, ignore_errors=True)
    for name, x in (("at once", j), ("paced", j["paced"])):
        log(f"disk, segments {name}: fdatasync p99 {x['fdatasync_ms']['p99']:.2f} ms, max "
            f"{x['fdatasync_ms']['max']:.1f} ms, {x['share_waiting_past_target'] * 100:.2f} % of "
            f"the time waiting past {x['target_ms']} ms")
    return j


def git(*args):
    try:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return ""


# ---------------------------------------------------------------------------
# The server's Append stages over a measured window


def buckets_of(m, name, **labels):
    """{le: cumulative count} of one histogram series of a scrape."""
    return {float(ls["le"]): v for ls, v in m.samples(name + "_bucket")
            if all(ls.get(k) == want for k, want in labels.items())}


def bound_of(buckets, q):
    """The upper bound (s, inf past the last finite one) of the bucket
    holding quantile q of {le: cumulative count}; None when empty."""
    buckets = sorted(buckets.items())
    if not buckets or buckets[-1][1] <= 0:
        return None
    want = q * buckets[-1][1]
    return next(le for le, v in buckets if v >= want)


def quantile_of(buckets, q):
    """bound_of in ms; None when empty or past the last finite bound (JSON
    has no infinity)."""
    le = bound_of(buckets, q)
    return le * 1000 if le is not None and le != float("inf") else None


def max_of(buckets):
    """The upper bound (ms) of the highest non-empty bucket; None when
    empty, "inf" past the last finite bound."""
    le = bound_of(buckets, 1.0)
    return None if le is None else "inf" if le == float("inf") else le * 1000


STAGES = ("receive", "queue", "wait", "commit", "deliver", "respond")
SERIES = ("append",) + STAGES  # the whole Append, then its stages


class Scraper(threading.Thread):
    """Scrapes a running server's /metrics every second: (time, Metrics)."""

    def __init__(self, h):
        super().__init__(daemon=True)
        self.h, self.scrapes, self.done = h, [], threading.Event()

    def run(self):
        while not self.done.is_set():
            try:
                self.scrapes.append((time.monotonic(), self.h.srv.metrics()))
            except Exception:  # noqa: BLE001 (a scrape that failed is just missing)
                pass
            self.done.wait(1.0)

    def stop(self):
        self.done.set()
        self.join()

    def window(self, start, end):
        """p99 and p99.9 (bucket bounds, ms) of the Append and of each of its
        stages between the scrapes nearest start and end; {} when the
        window holds fewer than two scrapes."""
        inside = [(t, m) for t, m in self.scrapes if start - 0.5 <= t <= end + 0.5]
        if len(inside) < 2:
            return {}
        (t0, m0), (t1, m1) = inside[0], inside[-1]

        def diff(name, **labels):
            a, b = buckets_of(m0, name, **labels), buckets_of(m1, name, **labels)
            return {le: b[le] - a.get(le, 0) for le in b}

        out = {"window_s": round(t1 - t0, 1)}
        for k in SERIES:
            b = (diff("hodei_append_duration_seconds") if k == "append" else
                 diff("hodei_append_stage_duration_seconds", stage=k))
            out[k] = {"p99_ms": quantile_of(b, 0.99), "p999_ms": quantile_of(b, 0.999)}
        # The WAL under those stages: group commits, and rotations (each
        # holds the shard thread), with the bucket of their slowest.
        for k, name in (("fsync", "hodei_wal_fsync_duration_seconds"),
                        ("rotation", "hodei_wal_rotation_duration_seconds")):
            b = diff(name)
            out["wal_" + k] = {"count": int(max(b.values(), default=0)),
                               "p999_ms": quantile_of(b, 0.999), "max_ms": max_of(b)}
        # Commits past --slow-commit (logged), and the shard threads'
        # time blocked in their own file-system calls.
        out["wal_slow_commits"] = int(m1.sum("hodei_wal_slow_commits_total") -
                                      m0.sum("hodei_wal_slow_commits_total"))
        out["shard_blocked_ms"] = round(1000 * (m1.sum("hodei_shard_blocked_seconds_total") -
                                                m0.sum("hodei_shard_blocked_seconds_total")), 1)
        return out


def stage_line(w):
    if not w:
        return "no window scrapes"
    line = "window p99/p99.9 ≤ ms: " + ", ".join(
        f"{k} {w[k]['p99_ms']}/{w[k]['p999_ms']}" for k in SERIES if w[k]["p99_ms"] is not None)
    for k in ("fsync", "rotation"):
        if w.get("wal_" + k):
            x = w["wal_" + k]
            line += f"; {x['count']:.0f} WAL {k}s, slowest ≤ {x['max_ms']} ms"
    if "wal_slow_commits" in w:
        line += (f"; {w['wal_slow_commits']} slow commits, shard threads blocked "
                 f"{w['shard_blocked_ms']} ms")
    return line


# ---------------------------------------------------------------------------
# hodei-auditd


class Hodei:
    """One hodei-auditd in its own directory, with an admin key."""

    def __init__(self, workdir, args=()):
        self.srv = hodei.Server(workdir, args=list(args), shards=0, seal_age=None)

    def __enter__(self):
        self.srv.start()
        return self

    def __exit__(self, *exc):
        if self.srv.running():
            self.srv.stop()

    @property
    def target(self):
        return self.srv.grpc_addr

    @property
    def key(self):
        return self.srv.admin_key

    def cpu_s(self):
        """The server's CPU time so far (user + system), in seconds."""
        return proc_cpu_s(self.srv.proc.pid)

    def quiesce(self, idle_share=0.05, timeout_s=120):
        """Waits until the server is idle (under idle_share of a core over
        half a second): seals of what a run appended go on after it, and
        must not share the machine with the next measurement, ours or
        ClickHouse's. Returns the seconds waited."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            before = self.cpu_s()
            time.sleep(0.5)
            if self.cpu_s() - before < idle_share * 0.5:
                break
        return time.monotonic() - t0

    def load(self, *extra, timeout=None):
        """Runs hodei-bench-load (after the server went idle); adds the
        server's CPU per acked event: from the start of the run until the
        server is idle again, so warm-up and the seals after the run are
        included (an upper bound)."""
        self.quiesce()
        before = self.cpu_s()
        j = run_json([LOAD, "--target", self.target, "--key", self.key, *extra], timeout=timeout)
        j["server_settle_s"] = self.quiesce()
        used = self.cpu_s() - before  # the seals that follow the run included
        acked = j.get("events_acked_total") or j.get("events_acked") or 0
        j["server_cpu_s"] = used
        j["server_cpu_us_per_event"] = used * 1e6 / acked if acked else None
        return j


def load_staged(h, seconds, *extra):
    """h.load(*extra), with the server's Append stages over the run's
    measured window (its last `seconds`) in j["stages"]."""
    scraper = Scraper(h)
    scraper.start()
    try:
        j = h.load(*extra)
        # the load ended this long ago: h.load let the server go idle since
        end = time.monotonic() - j["server_settle_s"]
    finally:
        scraper.stop()
    j["stages"] = scraper.window(end - float(seconds), end)
    return j


def load_summary(j):
    """The figures of one hodei-bench-load run we keep."""
    lat = j.get("latency_us", {})
    return {
        "offered_eps": j.get("offered_rate_eps") or None,
        "eps": j.get("events_per_s"),
        "mbps": j.get("mb_per_s"),
        "seconds": j.get("seconds"),
        "p50_us": lat.get("p50"), "p99_us": lat.get("p99"), "p999_us": lat.get("p999"),
        "max_us": lat.get("max"),
        "requests_failed": j.get("requests_failed", 0),
        "errors": j.get("errors", {}),
        "late_starts": j.get("late_starts", 0),
        "not_started": j.get("not_started", 0),
        "client_cpu_us_per_event": j.get("client_cpu_us_per_event"),
        "server_cpu_us_per_event": j.get("server_cpu_us_per_event"),
        "server_settle_s": j.get("server_settle_s"),
        "client_cpu_cores": j.get("client_cpu_cores"),
        "loadavg_1m": [j.get("loadavg_1m_start"), j.get("loadavg_1m_end")],
        **({"stages": j["stages"]} if "stages" in j else {}),
    }


def ingest(args, work, ch):
    """Steps 1 and 2."""
    res = {"hodei": {"max": [], "sweep": []}, "clickhouse": None, "rounds": []}
    common = ["--seconds", args.seconds, "--warmup", args.warmup,
              "--pool-events", args.pool_events, "--tenants", args.tenants]
    with Hodei(work / "ingest") as h:
        first = load_summary(h.load("--max", *common))
        res["hodei"]["max"].append(first)
        log(f"hodei max: {first['eps']:.0f} events/s")
        if ch:
            ch_all = ch.insert_all(args.seconds)
            res["clickhouse"] = ch_all
            best = ch_all["best"]
            for r in range(args.rounds):
                hm = load_summary(h.load("--max", *common))
                cb = ch.insert(best["format"], best["clients"], args.seconds)
                res["hodei"]["max"].append(hm)
                res["rounds"].append({"hodei_eps": hm["eps"], "clickhouse_eps": cb["events_per_s"],
                                      "ratio": hm["eps"] / cb["events_per_s"]
                                      if cb["events_per_s"] else None})
                log(f"round {r + 1}: hodei {hm['eps']:.0f}/s, ClickHouse {cb['events_per_s']:.0f}/s")
        top = median(m["eps"] for m in res["hodei"]["max"])
        res["hodei"]["max_median_eps"] = top
        for frac in args.fractions:
            rate = int(top * frac)
            s = load_summary(load_staged(h, args.seconds, "--rate", rate, *common))
            s["fraction"] = frac
            res["hodei"]["sweep"].append(s)
            log(f"offered {rate}/s ({frac:.0%}): {s['eps']:.0f}/s p50 {s['p50_us']} µs p99 "
                f"{s['p99_us']} µs; {stage_line(s['stages'])}")
        res["hodei"]["wal_and_segments_bytes"] = du(h.srv.data_dir)
    if res["rounds"]:
        res["ratio_median"] = median(r["ratio"] for r in res["rounds"])
    if ch:
        ch_sweep(args, ch, res["clickhouse"], [r["clickhouse_eps"] for r in res["rounds"]])
    return res


def ch_sweep(args, ch, ch_res, round_eps):
    """ClickHouse's open-loop curve, into ch_res (the insert benchmark's
    result): "best_median_eps" (the median of its best run and the
    rounds, as hodei's max_median_eps), "sweep" (one entry per fraction,
    the keys of hodei's sweep entries where they mean the same thing) and
    "sweep_config". Runs after hodei-auditd has stopped."""
    best = ch_res["best"]
    top = median([best["events_per_s"], *round_eps])
    ch_res["best_median_eps"] = top
    rates = [max(1, int(top * f)) for f in args.fractions]
    j = ch.sweep(best["format"], best["clients"], rates, args.seconds, args.warmup)
    points = j.pop("points")
    for frac, pt in zip(args.fractions, points):
        pt["fraction"] = frac
        log(f"ClickHouse offered {pt['offered_eps']}/s ({frac:.0%}): {pt['eps']:.0f}/s "
            f"batch p50 {pt['p50_us']} µs p99 {pt['p99_us']} µs")
    ch_res["sweep"] = points
    ch_res["sweep_config"] = dict(j, basis="fractions of best_median_eps (ClickHouse's own)")


# ---------------------------------------------------------------------------
# ClickHouse, through bench/clickhouse_bench.py


class ClickHouse:
    """One private ClickHouse 18.16 for the whole run (clickhouse_bench.py
    serve), driven by clickhouse_bench.py's subcommands with --url."""

    def __init__(self, args, work):
        self.args = args
        self.work = Path(work)
        self.proc = None
        self.url = self.pid = None

    def start(self):
        self.work.mkdir(parents=True, exist_ok=True)
        log("starting ClickHouse")
        self.proc = subprocess.Popen([sys.executable, str(CH_BENCH), "serve", "--dir",
                                      str(self.work / "server")], stdout=subprocess.PIPE)
        first = self.proc.stdout.readline()
        if not first:
            raise RuntimeError("clickhouse_bench.py serve did not start a server")
        info = json.loads(first)["server"]
        self.url, self.pid = info["url"], info["pid"]
        log(f"ClickHouse {info.get('version')} at {self.url}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def _run(self, sub, *extra, timeout=None):
        if not self.proc:
            self.start()
        return run_json([sys.executable, CH_BENCH, sub, "--url", self.url, "--server-pid",
                         self.pid, "--dir", self.work, "--gen", GEN, *extra], timeout=timeout)

    def insert_all(self, seconds):
        """Every format with one and two clients: the best is kept."""
        j = self._run("insert", "--insert-seconds", seconds, "--pool-batches",
                      self.args.ch_pool_batches, "--tenants", self.args.tenants)
        return j["insert"]

    def insert(self, fmt, clients, seconds):
        j = self._run("insert", "--insert-seconds", seconds, "--pool-batches",
                      self.args.ch_pool_batches, "--tenants", self.args.tenants,
                      "--formats", fmt, "--clients", clients)
        return j["insert"]["best"]

    def sweep(self, fmt, clients, rates, seconds, warmup):
        """Open-loop batch latency at each offered rate (events/s)."""
        j = self._run("sweep", "--rates", ",".join(str(r) for r in rates), "--format", fmt,
                      "--clients", clients, "--sweep-seconds", seconds, "--sweep-warmup", warmup,
                      "--pool-batches", self.args.ch_pool_batches, "--tenants", self.args.tenants)
        return j["sweep"]

    def load(self, n):
        """The query store: n events of the generator, then bytes on disk."""
        return self._run("all", "--skip", "insert,query", "--seed", self.args.seed, "--count", n,
                         "--tenants", self.args.tenants, "--step-ns", step_for(n))

    def query(self, plan, n):
        """One pass of the plan over the loaded store."""
        return self._run("query", "--seed", self.args.seed, "--count", n,
                         "--tenants", self.args.tenants, "--step-ns", step_for(n),
                         "--plan", plan, "--samples", self.args.samples)


# ---------------------------------------------------------------------------
# Queries


def merge_rounds(runs):
    """Per query kind, the rounds' figures as one entry: samples, errors
    and wrong added up; p50, p95 and p99 the median of the rounds'; each
    round's p99 kept beside."""
    out = {}
    for kind in dict.fromkeys(k for r in runs for k in r):
        rs = [r[kind] for r in runs if kind in r]
        e = {"rounds": len(rs)}
        for k in ("samples", "errors", "wrong"):
            e[k] = sum(x.get(k) or 0 for x in rs)
        for k in ("p50_us", "p95_us", "p99_us"):
            e[k] = median(x.get(k) for x in rs)
        e["p99_us_rounds"] = [x.get("p99_us") for x in rs]
        out[kind] = e
    return out


def round_ratios(rounds):
    """Per kind, the median over the rounds of ClickHouse's p99 over
    hodei-audit's, both from the same round."""
    ratios = {}
    for r in rounds:
        for kind, v in r["hodei"].items():
            c = r.get("clickhouse", {}).get(kind)
            if c and c.get("p99_us") and v.get("p99_us"):
                ratios.setdefault(kind, []).append(c["p99_us"] / v["p99_us"])
    return {k: median(v) for k, v in ratios.items()}


SLOW_QUERY = "1ms"  # the query rounds' server logs the profile of every sample this slow
SLOW_FIELDS = ("total_ms", "queued_ms", "run_ms", "scan_ms", "read_ms", "decode_ms",
               "blocks_decoded", "blocks_cached", "bytes_read", "footer_reads", "rows_scanned")


def warm(root, pattern="*"):
    """Reads every file under root matching pattern once, so that a query
    round finds its system's data in the page cache, whatever ran before
    it: the other system's load (ClickHouse's goes through a 9 GB file)
    can evict it, and a round would then measure the disk. Returns the
    bytes read and the seconds it took."""
    t0, n = time.monotonic(), 0
    for p in sorted(Path(root).glob(pattern)):
        for f in [p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file()):
            with open(f, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    n += len(chunk)
    return {"bytes": n, "seconds": round(time.monotonic() - t0, 3)}


def slow_summary(lines):
    """The slow-query log lines of one round (ADR 0018), per method and
    filter (Q1 and Q1top: Search none, Q2: Search time+actor_id, Q3: Search
    event_id, Q4: Count time, Q5: Search time+outcome): how many, and the
    median and max of each profile field, so that a run's tail can be told
    apart: decodes, reads (page cache misses), the shard queue, footers."""
    groups = {}
    for line in lines:
        p = hodei.slow_query_profile(line)
        if p is None:
            continue
        groups.setdefault(f"{line.get('method')} {p.get('filter')}", []).append(p)
    out = {}
    for key, ps in sorted(groups.items()):
        e = {"samples": len(ps)}
        for f in SLOW_FIELDS:
            v = [float(p[f]) for p in ps if f in p]
            if v:
                e[f] = {"median": median(v), "max": max(v)}
        out[key] = e
    return out


def queries(args, work, ch):
    n = args.events
    step = step_for(n)
    plan = work / "plan.json"
    log(f"planning {args.samples} samples per query over {n} events")
    with open(plan, "w") as f:
        p = subprocess.run([str(QUERY), "plan", "--seed", str(args.seed), "--count", str(n),
                            "--tenants", str(args.tenants), "--step-ns", str(step),
                            "--samples", str(args.samples)], stdout=f)
    if p.returncode != 0:
        raise RuntimeError("hodei-bench-query plan failed")
    res = {"events": n, "step_ns": step}
    store_args = ["--seal-age", f"{max(1, int(args.settle) - 10)}s"]
    fill_flags = [f for f in args.fill_flags.split(",") if f]
    with Hodei(work / "store", store_args + fill_flags) as h:
        t0 = time.monotonic()
        fill = h.load("--fill", n, "--seed", args.seed, "--tenants", args.tenants,
                      "--step-ns", step)
        res["hodei_fill"] = load_summary(fill)
        res["hodei_fill"]["seconds"] = time.monotonic() - t0
        # Let the age-based seal run (the default 60 s, or less for a short
        # --settle) so the store is in segments, as in production.
        settle = args.settle
        log(f"store loaded; waiting {settle} s for seals")
        time.sleep(settle)
        data = h.srv.data_dir
        seg = sum(du(p) for p in data.glob("shard-*/segments"))
        wal = sum(du(p) for p in data.glob("shard-*/wal"))
        res["hodei_storage"] = {"segments_bytes": seg, "wal_bytes": wal,
                                "data_dir_bytes": du(data),
                                "segment_bytes_per_event": seg / n}
    # Alternated rounds (ADR 0010): each a fresh hodei-auditd on the store,
    # so that no round finds the blocks of the one before in its cache,
    # then ClickHouse on the same plan. ClickHouse loads the store after
    # hodei-audit's first round: each system's first round follows its own
    # load, as its data's pages then are in the page cache alike. Before
    # each round its system's data files are read once (warm()): another
    # step can have evicted them (in fb17715's run, ClickHouse's load made
    # two of our three rounds wait for the disk: read_ms up to 39 ms in the
    # slow samples' profiles).
    rounds, hodei_raw, ch_raw = [], [], []
    slow, warmed = [], []
    for i in range(args.query_rounds):
        warmed.append({"hodei": warm(work / "store" / "data", "shard-*/segments")})
        with Hodei(work / "store", store_args + ["--slow-query", SLOW_QUERY,
                                                 "--log-rate", "100000"]) as h:
            h.quiesce()
            seen = len(h.srv.log_lines())  # the store's directory keeps one log
            hodei_raw.append(run_json([QUERY, "run", "--plan", plan, "--target", h.target,
                                       "--key", h.key]))
            slow.append(slow_summary(h.srv.log_lines()[seen:]))
            slow[-1]["log_lines_suppressed"] = h.srv.metrics().get(
                "hodei_log_lines_suppressed_total")
        log(f"query round {i + 1}: warmed {warmed[-1]['hodei']['bytes'] / 2**20:.0f} MiB in "
            f"{warmed[-1]['hodei']['seconds']:.1f} s; samples over {SLOW_QUERY} (median total; "
            f"decode, read, scan, queued ms): " + "; ".join(
                f"{k} {v['samples']} ({v['total_ms']['median']:.2f}; "
                f"{v['decode_ms']['median']:.2f}, {v['read_ms']['median']:.2f}, "
                f"{v['scan_ms']['median']:.2f}, {v['queued_ms']['median']:.2f})"
                for k, v in slow[-1].items() if isinstance(v, dict)))
        rnd = {"hodei": hodei_raw[-1].get("queries", {}), "clickhouse": {}}
        if ch:
            if i == 0:
                raw = ch.load(n)
                res["clickhouse"] = {
                    "storage": {"bytes_per_event":
                                (raw.get("bytes") or {}).get("bytes_on_disk_per_event")},
                    "load": raw.get("load"),
                    "raw": raw,
                }
            warmed[-1]["clickhouse"] = warm(ch.work / "server")
            ch_raw.append(ch.query(plan, n).get("queries") or {})
            rnd["clickhouse"] = ch_raw[-1].get("kinds", {})
        rounds.append(rnd)

        def p99_ms(system, kind):
            p = rnd[system].get(kind, {}).get("p99_us")
            return fmt(p / 1000) if p else "-"
        log(f"query round {i + 1}, p99 ms (hodei-audit/ClickHouse): " + ", ".join(
            f"{k} {p99_ms('hodei', k)}/{p99_ms('clickhouse', k)}" for k in rnd["hodei"]))
    res["hodei"] = {"queries": merge_rounds([r["hodei"] for r in rounds]), "rounds": hodei_raw,
                    "slow_query": SLOW_QUERY, "slow_samples": slow}
    res["page_cache_warmed"] = warmed
    if ch:
        res["clickhouse"]["queries"] = merge_rounds([r["clickhouse"] for r in rounds])
        res["clickhouse"]["query_rounds"] = ch_raw
        res["p99_ratio"] = round_ratios(rounds)
    return res


# ---------------------------------------------------------------------------
# Restart with a big WAL


def restart(args, work):
    """Step 5."""
    res = {"wal_target_bytes": args.wal_bytes, "runs": []}
    d = work / "restart"
    never = ["--seal-age", "24h", "--seal-rows", str(1 << 24), "--seal-bytes", "64GiB",
             "--wal-retain", "64GiB", "--memtable-budget", "16GiB"]
    h = Hodei(d, never)
    with h:
        wal_dir = h.srv.data_dir
        while sum(du(p) for p in wal_dir.glob("shard-*/wal")) < args.wal_bytes:
            h.load("--max", "--seconds", 2, "--warmup", 0, "--pool-events", args.pool_events)
        res["wal_bytes"] = sum(du(p) for p in wal_dir.glob("shard-*/wal"))
        h.srv.kill()
        for i in range(args.restarts):
            t0 = time.monotonic()
            h.srv.start(timeout_s=600)
            ready = time.monotonic() - t0
            res["runs"].append(ready)
            log(f"restart {i + 1}: ready in {ready:.2f} s with {res['wal_bytes'] / 2**30:.2f} GiB of WAL")
            h.srv.kill()
    res["ready_s_median"] = median(res["runs"])
    return res


# ---------------------------------------------------------------------------
# Report


def targets(r):
    """Each target of issue #5 with its measured figure."""
    out = []

    def t(name, goal, measured, ok):
        out.append({"target": name, "goal": goal, "measured": measured,
                    "met": None if ok is None else bool(ok)})

    ing = r.get("ingest") or {}
    top = (ing.get("hodei") or {}).get("max_median_eps")
    t("ingest, durable events/s", ">= 500000", top, top and top >= 500000)
    ratio = ing.get("ratio_median")
    t("ingest vs ClickHouse best", ">= 3x", ratio, ratio and ratio >= 3)
    half = [s for s in (ing.get("hodei") or {}).get("sweep", []) if abs(s["fraction"] - 0.5) < 1e-9]
    p99 = half[0]["p99_us"] if half else None
    t("ack p99 at half max, ms", "<= 5", p99 and p99 / 1000, p99 is not None and p99 <= 5000)
    q = r.get("queries") or {}
    goals = {"Q1": 1000, "Q1top": 1000, "Q2": 5000, "Q3": 1000, "Q4": 3000, "Q5": 5000}
    for name, goal in goals.items():
        v = (q.get("hodei") or {}).get("queries", {}).get(name)
        p = v and v.get("p99_us")
        t(f"{name} p99, ms", f"<= {goal / 1000:g}", p and p / 1000, p is not None and p <= goal)
        ratio = (q.get("p99_ratio") or {}).get(name)
        t(f"{name} p99 vs ClickHouse", ">= 5x", ratio, ratio and ratio >= 5)
    st = q.get("hodei_storage") or {}
    bpe = st.get("segment_bytes_per_event")
    chb = ((q.get("clickhouse") or {}).get("storage") or {}).get("bytes_per_event")
    t("bytes per event on disk", f"<= ClickHouse ({chb and round(chb, 1)})", bpe,
      bpe and chb and bpe <= chb)
    rs = (r.get("restart") or {}).get("ready_s_median")
    t("restart with 1 GiB WAL, s", "<= 2", rs, rs is not None and rs <= 2)
    return out


def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.2f}" if v < 100 else f"{v:,.0f}"
    return str(v)


def print_table(rows):
    print(f"{'target':38} {'goal':>22} {'measured':>14}  met")
    for row in rows:
        met = {True: "yes", False: "NO", None: "-"}[row["met"]]
        print(f"{row['target']:38} {row['goal']:>22} {fmt(row['measured']):>14}  {met}")


def rate(v):
    return "-" if v is None else f"{v:,.0f}"


def print_sweep(r):
    """The open-loop curves of both systems, fraction by fraction."""
    ing = r.get("ingest") or {}
    rows = [("hodei-audit, ack per request", s) for s in (ing.get("hodei") or {}).get("sweep", [])]
    rows += [("ClickHouse, per 10k-row batch", s)
             for s in (ing.get("clickhouse") or {}).get("sweep", [])]
    if not rows:
        return
    rows.sort(key=lambda x: (x[1].get("fraction") or 0, not x[0].startswith("hodei")))
    print()
    print(f"{'open loop: latency from due time':32} {'load':>5} {'offered/s':>10} "
          f"{'achieved/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>8} {'µs CPU/ev':>9}")
    for name, s in rows:
        ms = [fmt(s[k] / 1000) if s.get(k) is not None else "-"
              for k in ("p50_us", "p99_us", "p999_us")]
        frac = s.get("fraction")
        print(f"{name:32} {(f'{frac:.0%}' if frac is not None else '-'):>5} "
              f"{rate(s.get('offered_eps')):>10} {rate(s.get('eps')):>10} {ms[0]:>8} {ms[1]:>8} "
              f"{ms[2]:>8} {fmt(s.get('server_cpu_us_per_event')):>9}")
    staged = [s for name, s in rows if name.startswith("hodei") and s.get("stages")]
    if staged:
        print()
        print("hodei-audit's Append stages over each window, p99 (bucket bound, ms):")
        print(f"{'load':>5} " + " ".join(f"{k:>8}" for k in SERIES) +
              f" {'fsync max':>10} {'rotations':>9} {'rot. max':>8}")
        for s in staged:
            w = s["stages"]
            f, r = w.get("wal_fsync") or {}, w.get("wal_rotation") or {}
            print(f"{s['fraction']:>5.0%} " + " ".join(
                f"{fmt(w[k]['p99_ms']):>8}" for k in SERIES) +
                f" {fmt(f.get('max_ms')):>10} {fmt(r.get('count')):>9} {fmt(r.get('max_ms')):>8}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="tiny sizes: checks the harness runs (the test suite's smoke run)")
    ap.add_argument("--events", type=int, default=10_000_000, help="query store size")
    ap.add_argument("--tenants", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=10, help="per ingest run")
    ap.add_argument("--warmup", type=float, default=2)
    ap.add_argument("--pool-events", type=int, default=400_000,
                    help="events pre-encoded by the load generator")
    ap.add_argument("--rounds", type=int, default=3,
                    help="alternated hodei/ClickHouse ingest rounds")
    ap.add_argument("--fractions", default="0.1,0.25,0.5,0.75,0.9,1.0")
    ap.add_argument("--samples", type=int, default=300, help="per query kind")
    ap.add_argument("--query-rounds", type=int, default=3,
                    help="alternated query rounds (each a fresh hodei-auditd, then ClickHouse)")
    ap.add_argument("--settle", type=float, default=70, help="seconds for age seals after the fill")
    ap.add_argument("--wal-bytes", type=int, default=1 << 30)
    ap.add_argument("--restarts", type=int, default=3)
    ap.add_argument("--only", default="ingest,queries,restart")
    ap.add_argument("--no-clickhouse", action="store_true")
    ap.add_argument("--ch-pool-batches", type=int, default=30,
                    help="10,000-event batches ClickHouse's insert runs cycle through")
    ap.add_argument("--work", help="work directory (default: a new one under $TMPDIR)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--fill-flags", default="",
                    help="server flags (FLAG,FLAG,...) of the query store's fill only, "
                         "such as --block-rows=256, for a store A/B with bench/qab.py")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--no-plot", action="store_true")
    args = ap.parse_args()
    if args.query_rounds < 1 or args.rounds < 0:
        ap.error("--query-rounds must be at least 1, --rounds at least 0")
    if args.quick:
        args.events, args.tenants, args.seconds, args.warmup = 20000, 20, 1, 0
        args.rounds, args.samples, args.settle, args.pool_events = 1, 5, 4, 50000
        args.query_rounds = 2
        args.ch_pool_batches = 2
        args.wal_bytes, args.restarts, args.fractions = 4 << 20, 1, "0.5"
    args.fractions = [float(x) for x in args.fractions.split(",")]
    steps = set(args.only.split(","))
    for b in (LOAD, QUERY, GEN, CALIB):
        if not b.exists():
            sys.exit(f"bench: {b} is missing: build first (scripts/setup.sh, or "
                     f"cmake --build {BUILD})")

    work = Path(args.work or tempfile.mkdtemp(prefix="hodei-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    stamp = dt.datetime.now(dt.timezone.utc)
    result = {
        "date": stamp.isoformat(timespec="seconds"),
        "commit": commit + ("-dirty" if dirty else ""),
        "machine": machine(),
        "config": {k: v for k, v in vars(args).items() if k not in ("work", "out")},
    }
    ch = None if args.no_clickhouse else ClickHouse(args, work / "clickhouse")
    calib = result["machine"]["calibration"] = {"before": calibrate()}
    disk = result["machine"]["disk"] = {"before": disk_probe(work.parent, args.quick)}
    try:
        if "ingest" in steps:
            result["ingest"] = ingest(args, work, ch)
        if "queries" in steps:
            result["queries"] = queries(args, work, ch)
        if "restart" in steps:
            result["restart"] = restart(args, work)
    finally:
        if ch:
            ch.stop()
        for s in hodei.ALL_SERVERS:
            if s.running():
                s.kill()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    calib["after"] = calibrate()
    disk["after"] = disk_probe(work.parent, args.quick)
    result["targets"] = targets(result)
    print_table(result["targets"])
    print_sweep(result)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # A run of some steps only is named for them, so that it is not taken
    # for (or committed as) a full run.
    partial = sorted(steps & {"ingest", "queries", "restart"})
    only = "" if len(partial) == 3 else "-only-" + "-".join(partial)
    base = out / f"{stamp.strftime('%Y%m%d')}-{result['commit']}{'-quick' if args.quick else ''}{only}"
    base.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    log(f"wrote {base.with_suffix('.json')}")
    if not args.no_plot:
        subprocess.run([sys.executable, str(ROOT / "bench" / "plot.py"), str(base.with_suffix(".json")),
                        str(base.with_suffix(".png"))], check=True)
        log(f"wrote {base.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
