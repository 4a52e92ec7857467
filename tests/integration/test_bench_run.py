# SPDX-License-Identifier: Apache-2.0
"""The benchmark harness end to end at tiny sizes (bench/harness.py
--quick, what bench/run.sh runs at full size): every step runs against real
servers (hodei-auditd, ClickHouse 18.16), the results JSON has a measured
figure for every target of issue #5, and the plot is drawn. Figures are
never compared with anything: this only keeps the harness from rotting."""
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import hodei

ROOT = hodei.ROOT
sys.path.insert(0, str(ROOT / "bench"))
import harness  # noqa: E402


def scrape(append, wait, rotation=None):
    """A /metrics text with the Append histogram and one stage's (and the
    WAL rotations' when given), from cumulative bucket counts at the
    bounds 0.005, 0.01, 0.05 s and +Inf."""
    lines = []
    series = [("hodei_append_duration_seconds", "", append),
              ("hodei_append_stage_duration_seconds", 'stage="wait",', wait)]
    if rotation:
        series.append(("hodei_wal_rotation_duration_seconds", "", rotation))
    for name, labels, counts in series:
        lines.append(f"# TYPE {name} histogram")
        for le, c in zip(("0.005", "0.01", "0.05", "+Inf"), counts):
            lines.append(f'{name}_bucket{{{labels}le="{le}"}} {c}')
        sel = "{" + labels.rstrip(",") + "}" if labels else ""
        lines.append(f"{name}_count{sel} {counts[-1]}")
    return hodei.Metrics("\n".join(lines) + "\n")


def test_stage_window_is_the_difference_of_two_scrapes():
    """The window's quantiles come from the counts that grew between the
    scrapes nearest its ends, not from the server's whole life: a warm-up
    of slow requests before the window must not show in them."""
    warm = scrape(append=[0, 0, 0, 1000], wait=[0, 0, 1000, 1000])    # all slow
    mid = scrape(append=[0, 0, 0, 1000], wait=[0, 0, 1000, 1000])
    end = scrape(append=[990, 1000, 1000, 2000], wait=[1000, 1000, 2000, 2000])
    sc = harness.Scraper(None)
    sc.scrapes = [(0.0, warm), (10.0, mid), (20.0, end)]
    w = sc.window(10.0, 20.0)
    assert w["window_s"] == 10.0
    assert w["append"] == {"p99_ms": 5.0, "p999_ms": 10.0}
    assert w["wait"]["p99_ms"] == 5.0
    # the whole life would have put the p99 past the last finite bound
    assert harness.quantile_of(harness.buckets_of(end, "hodei_append_duration_seconds"),
                               0.99) is None
    assert sc.window(30.0, 40.0) == {}  # no scrape inside: nothing claimed


def test_stage_window_counts_wal_rotations_and_their_slowest():
    """The rotations in the window and the bound of the slowest one's
    bucket: a slow rotation before the window does not show."""
    a, w = [0, 0, 0, 10], [0, 0, 0, 10]
    sc = harness.Scraper(None)
    sc.scrapes = [(0.0, scrape(a, w, rotation=[0, 0, 0, 0])),
                  (10.0, scrape(a, w, rotation=[0, 0, 0, 1])),    # one past 50 ms
                  (20.0, scrape(a, w, rotation=[2, 2, 3, 4]))]    # then two ≤ 5 ms, one ≤ 50 ms
    x = sc.window(10.0, 20.0)["wal_rotation"]
    assert x["count"] == 3
    assert x["max_ms"] == 50.0
    x = sc.window(0.0, 20.0)["wal_rotation"]
    assert x["count"] == 4 and x["max_ms"] == "inf"
    assert sc.window(10.0, 20.0)["wal_fsync"] == {"count": 0, "p999_ms": None, "max_ms": None}
    assert sc.window(10.0, 20.0)["wal_slow_commits"] == 0


def test_query_rounds_give_medians_and_per_round_ratios():
    """Alternated query rounds: per kind the median of the rounds' p99 and
    the median of the ratios taken within each round, which differs from
    the ratio of the two medians when the machine's pace moves both
    systems together."""
    def kinds(p99, samples=10, errors=0):
        return {"Q2": {"samples": samples, "errors": errors, "wrong": 0,
                       "p50_us": p99 / 4, "p95_us": p99 / 2, "p99_us": p99}}
    rounds = [{"hodei": kinds(4000), "clickhouse": kinds(20000)},            # 5.0x
              {"hodei": kinds(8000, errors=1), "clickhouse": kinds(48000)},  # 6.0x, a slow phase
              {"hodei": kinds(5000), "clickhouse": kinds(15000)}]            # 3.0x
    h = harness.merge_rounds([r["hodei"] for r in rounds])["Q2"]
    assert h["rounds"] == 3 and h["samples"] == 30 and h["errors"] == 1
    assert h["p99_us"] == 5000 and h["p99_us_rounds"] == [4000, 8000, 5000]
    assert h["p50_us"] == 1250
    c = harness.merge_rounds([r["clickhouse"] for r in rounds])["Q2"]
    assert c["p99_us"] == 20000
    assert harness.round_ratios(rounds) == {"Q2": 5.0}  # not 20000 / 5000 = 4.0
    # a kind one system did not answer in a round has no ratio from it
    rounds[0]["clickhouse"] = {}
    assert harness.round_ratios(rounds) == {"Q2": 4.5}


def test_slow_summary_groups_profiles_by_method_and_filter():
    """A round's slow-query lines, summed up per method and filter; lines
    that are not slow-query lines are left out."""
    def line(method, filt, total, decode):
        return {"level": "info", "method": method,
                "msg": f"slow query: total_ms={total} queued_ms=0.01 run_ms={total} "
                       f"scan_ms=0.2 read_ms=0.1 decode_ms={decode} blocks_decoded=3 "
                       f"blocks_cached=0 bytes_read=1000 footer_reads=0 rows_scanned=512 "
                       f"segments_read=1 segments_pruned=0 results=1 filter={filt}"}
    lines = [line("Search", "time+actor_id", 3.0, 2.0), line("Search", "time+actor_id", 5.0, 4.0),
             line("Search", "time+actor_id", 4.0, 3.0), line("Search", "event_id", 1.5, 0.5),
             {"level": "info", "msg": "SIGHUP: keys file re-read"}]
    s = harness.slow_summary(lines)
    assert set(s) == {"Search time+actor_id", "Search event_id"}
    q2 = s["Search time+actor_id"]
    assert q2["samples"] == 3
    assert q2["total_ms"] == {"median": 4.0, "max": 5.0}
    assert q2["decode_ms"] == {"median": 3.0, "max": 4.0}
    assert s["Search event_id"]["samples"] == 1 and s["Search event_id"]["read_ms"]["max"] == 0.1


def test_quick_run_measures_every_target(tmp_path):
    out = tmp_path / "results"
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "harness.py"), "--quick",
                        "--out", str(out), "--work", str(tmp_path / "work")],
                       capture_output=True, text=True, timeout=900,
                       env=dict(hodei.os.environ, HODEI_BUILD_DIR=str(hodei.BUILD_DIR)))
    assert p.returncode == 0, p.stderr[-4000:]
    results = list(out.glob("*-quick.json"))
    assert len(results) == 1, list(out.iterdir())
    r = json.loads(results[0].read_text())
    assert results[0].with_suffix(".png").stat().st_size > 10_000

    ing = r["ingest"]
    assert ing["hodei"]["max"] and all(m["eps"] > 0 for m in ing["hodei"]["max"])
    assert all(s["eps"] > 0 and s["p99_us"] > 0 for s in ing["hodei"]["sweep"])
    # the server's stages over each window ({} when it held fewer than two scrapes)
    assert all(isinstance(s["stages"], dict) for s in ing["hodei"]["sweep"])
    assert ing["clickhouse"]["best"]["events_per_s"] > 0
    assert len(ing["clickhouse"]["runs"]) == 6  # 3 formats x 1 and 2 clients
    # ClickHouse's open-loop sweep: the same fractions as hodei's, of its own rate.
    chs = ing["clickhouse"]["sweep"]
    assert [s["fraction"] for s in chs] == [s["fraction"] for s in ing["hodei"]["sweep"]]
    assert ing["clickhouse"]["best_median_eps"] > 0
    for s in chs:
        assert s["offered_eps"] > 0 and s["eps"] > 0 and s["errors"] == 0, s
        assert s["p50_us"] > 0 and s["p99_us"] > 0 and s["p999_us"] > 0, s
        assert s["rows_in_table"] == s["rows_sent"] > 0, s
    assert ing["clickhouse"]["sweep_config"]["format"] == ing["clickhouse"]["best"]["format"]

    q = r["queries"]
    # two alternated query rounds (--quick): per kind, the rounds' p99s and
    # their median, and the median of the per-round ratios
    assert len(q["hodei"]["rounds"]) == len(q["clickhouse"]["query_rounds"]) == 2
    for kind in ("Q1", "Q1top", "Q2", "Q3", "Q4", "Q5"):
        h, c = q["hodei"]["queries"][kind], q["clickhouse"]["queries"][kind]
        assert h["samples"] > 0 and h["errors"] == 0 and h["wrong"] == 0, (kind, h)
        assert c["samples"] > 0 and c["errors"] == 0 and c["wrong"] == 0, (kind, c)
        for v in (h, c):
            assert v["rounds"] == 2 and len(v["p99_us_rounds"]) == 2, (kind, v)
            assert min(v["p99_us_rounds"]) <= v["p99_us"] <= max(v["p99_us_rounds"]), (kind, v)
        assert q["p99_ratio"][kind] > 0, kind
    # each round's server logged its slow samples' profiles (ADR 0018)
    assert q["hodei"]["slow_query"] == harness.SLOW_QUERY
    assert len(q["hodei"]["slow_samples"]) == 2
    for s in q["hodei"]["slow_samples"]:
        assert s["log_lines_suppressed"] == 0, s  # --log-rate 100000
    # each round read its system's data once before it
    assert len(q["page_cache_warmed"]) == 2
    for w in q["page_cache_warmed"]:
        assert w["hodei"]["bytes"] > 0 and w["clickhouse"]["bytes"] > 0, w
    assert q["clickhouse"]["load"]["count_in_table"] == q["events"]
    assert q["hodei_storage"]["segment_bytes_per_event"] > 0

    assert r["restart"]["runs"] and r["restart"]["wal_bytes"] >= r["restart"]["wal_target_bytes"]
    for when in ("before", "after"):
        c = r["machine"]["calibration"][when]
        assert c["append"]["cpu_ns_per_event"] > 0 and c["seal"]["cpu_ns_per_row"] > 0, c
        assert c["decode"]["cpu_us_per_block"] > 0 and c["blocks"] > 0, c
    for when in ("before", "after"):
        d = r["machine"]["disk"][when]
        assert d["overwrite"] is True and d["fdatasync_ms"]["max"] > 0, d
        assert 0 <= d["share_waiting_past_target"] <= 1, d
        assert d["segment_step"] == 0 and d["paced"]["segment_step"] == 256 << 10, d
        assert d["paced"]["fdatasync_ms"]["max"] > 0, d
    for t in r["targets"]:
        assert t["measured"] is not None, t


def test_a_partial_run_is_named_for_its_steps(tmp_path):
    """A run of some steps only must not be taken for a full run: its
    results file names the steps."""
    out = tmp_path / "results"
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "harness.py"), "--quick",
                        "--only", "restart", "--no-clickhouse", "--no-plot",
                        "--out", str(out), "--work", str(tmp_path / "work")],
                       capture_output=True, text=True, timeout=600,
                       env=dict(hodei.os.environ, HODEI_BUILD_DIR=str(hodei.BUILD_DIR)))
    assert p.returncode == 0, p.stderr[-4000:]
    names = [f.name for f in out.iterdir()]
    assert len(names) == 1 and names[0].endswith("-quick-only-restart.json"), names
    r = json.loads((out / names[0]).read_text())
    assert r["restart"]["runs"] and "queries" not in r and "ingest" not in r


def test_ab_alternates_variants_and_rejects_a_bad_one(tmp_path):
    """bench/ab.py at tiny sizes: two variants of this build, two rounds,
    each run measured, the ratio computed; a missing build is refused."""
    env = dict(hodei.os.environ, HODEI_BUILD_DIR=str(hodei.BUILD_DIR))
    out = tmp_path / "ab.json"
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "ab.py"), "--rounds", "2",
                        "--seconds", "2", "--warmup", "0", "--pool-events", "50000",
                        "--tenants", "20", "--out", str(out),
                        f"one={hodei.BUILD_DIR}", f"two={hodei.BUILD_DIR}:--query-helpers,0"],
                       capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr[-4000:]
    r = json.loads(out.read_text())
    assert r["mode"] == "max"
    for label in ("one", "two"):
        assert len(r["runs"][label]) == 2
        assert all(x["eps"] > 0 and x["server_cpu_us_per_event"] > 0 for x in r["runs"][label])
        # the stages over the measured window: present when two scrapes fell in it
        for x in r["runs"][label]:
            assert "stages" in x
            if x["stages"]:
                assert x["stages"]["window_s"] > 0
                assert x["stages"]["append"]["p99_ms"] > 0, x["stages"]
    assert any(x["stages"] for label in ("one", "two") for x in r["runs"][label]), r["runs"]
    assert r["ratio_median"] > 0
    assert "median of per-round ratios" in p.stdout

    bad = subprocess.run([sys.executable, str(ROOT / "bench" / "ab.py"),
                          f"x={tmp_path / 'nowhere'}"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert bad.returncode == 2 and "is missing" in bad.stderr, bad.stderr


def test_ab_tells_tmpfs_run_directories_apart():
    """bench/ab.py removes each run's directory right after the run on
    tmpfs only (kept ones hold gigabytes of memory; on ext4 deletions slow
    the next run): its check agrees with stat(1)'s file system type."""
    import ab
    for path in (Path("/dev/shm"), ROOT, Path("/proc/self"), Path(tempfile.gettempdir())):
        if not path.exists():
            continue
        kind = subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True,
                              text=True, check=True).stdout.strip()
        assert ab.on_tmpfs(path) == (kind == "tmpfs"), (path, kind)


def test_calibration_prints_its_figures_and_refuses_bad_input():
    """hodei-bench-calib: one JSON object with every figure measured; a bad
    --repeat gets the usage and exit code 2."""
    calib = hodei.BUILD_DIR / "bench" / "hodei-bench-calib"
    p = subprocess.run([str(calib), "--repeat", "1"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    j = json.loads(p.stdout)
    assert j["events"] == 20000 and j["repeat"] == 1 and j["blocks"] > 0
    assert 0 < j["segment_bytes_per_event"] < 1000
    for k, unit in (("append", "ns_per_event"), ("seal", "ns_per_row"), ("decode", "us_per_block")):
        assert j[k][f"cpu_{unit}"] > 0 and j[k][f"wall_{unit}"] > 0, j
    for bad in (["--repeat", "0"], ["--repeat", "x"], ["extra"]):
        b = subprocess.run([str(calib), *bad], capture_output=True, text=True, timeout=60)
        assert b.returncode == 2 and b.stderr, (bad, b.returncode, b.stderr)


def test_fsync_bench_prints_its_figures_and_refuses_bad_input(tmp_path):
    """hodei-bench-fsync: a tiny run with segment writes beside it prints
    one JSON object with ordered quantiles, and leaves no file behind; bad
    arguments get the usage and exit code 2."""
    tool = hodei.BUILD_DIR / "bench" / "hodei-bench-fsync"
    p = subprocess.run([str(tool), "--dir", str(tmp_path), "--commits", "50", "--commit-bytes",
                        "4096", "--period-us", "0", "--overwrite", "--segments-mbps", "20",
                        "--segment-bytes", "65536"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    j = json.loads(p.stdout)
    assert j["overwrite"] is True and j["commits"] == 50 and j["commit_bytes"] == 4096
    q = j["fdatasync_ms"]
    assert 0 < q["p50"] <= q["p90"] <= q["p99"] <= q["p999"] <= q["max"], q
    assert j["target_ms"] == 5 and 0 <= j["share_waiting_past_target"] <= 1 and j["run_ms"] > 0
    assert list(tmp_path.iterdir()) == [], "files left behind"
    # paced segment files (written back step by step, as the server does)
    p = subprocess.run([str(tool), "--dir", str(tmp_path), "--commits", "50", "--period-us", "0",
                        "--overwrite", "--segments-mbps", "20", "--segment-bytes", "65536",
                        "--segment-step", "16384"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    j = json.loads(p.stdout)
    assert j["segment_step"] == 16384 and j["segment_bytes"] == 65536
    assert "steps of 16384 bytes" in p.stderr
    assert list(tmp_path.iterdir()) == [], "files left behind"
    for bad in ([], ["--dir", str(tmp_path), "--commits", "0"],
                ["--dir", str(tmp_path), "--segment-bytes", "12"],
                ["--dir", str(tmp_path), "--segment-step", "-1"],
                ["--dir", str(tmp_path), "--target-ms", "0"],
                ["--dir", str(tmp_path), "extra"]):
        b = subprocess.run([str(tool), *bad], capture_output=True, text=True, timeout=60)
        assert b.returncode == 2 and "usage" in b.stderr, (bad, b.returncode, b.stderr)
