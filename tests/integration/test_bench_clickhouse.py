# SPDX-License-Identifier: Apache-2.0
"""bench/clickhouse_bench.py, the ClickHouse side of the benchmark, on tiny
sizes against the suite's ClickHouse 18.16 (the `clickhouse` fixture):

- its table is the mirror's, to the character (`hodei-audit clickhouse
  schema`), so the benchmark measures the layout the mirror uses;
- JSONEachRow, TabSeparated and RowBinary bodies of the same rows give the
  same table contents, with hostile strings too;
- `all` end to end (20,000 events, 1 s of inserts, 3 samples) prints one
  JSON object of the documented shape, loads exactly N events, and every
  query answer passes the benchmark's own checks (Q3 finds its event);
- `sweep` (two offered rates, 1 s each) sends every batch due in its
  window, and count() of the table equals the rows it says it sent;
- `serve` starts a private server and stops on SIGTERM.

The plan is made here from the generator's own output (a few entries per
kind), so the test does not depend on `hodei-bench-query plan`. Nothing
asserts on time.
"""
import json
import signal
import subprocess
import sys
import urllib.request

import pytest

import hodei

BENCH = hodei.ROOT / "bench" / "clickhouse_bench.py"
GEN = hodei.BUILD_DIR / "bench" / "hodei-bench-gen"
sys.path.insert(0, str(BENCH.parent))
import clickhouse_bench as cb  # noqa: E402

COUNT = 20000
TENANTS = 50
STEP_NS = 1296000000   # 30 days over 2 M events; 20,000 events span ~7 hours
DAY_NS = 86400 * 10**9


@pytest.fixture(scope="module", autouse=True)
def _gen_exists():
    if not GEN.exists():
        pytest.fail(f"{GEN} does not exist: cmake --build build --target hodei-bench-gen")


def gen_events(seed, count):
    out = subprocess.run([str(GEN), "--seed", str(seed), "--count", str(count), "--tenants",
                          str(TENANTS), "--step-ns", str(STEP_NS), "--clickhouse"],
                         check=True, capture_output=True).stdout
    return [json.loads(line) for line in out.splitlines()]


def tiny_plan(events):
    """A plan in `hodei-bench-query plan`'s format from known events."""
    per = {}
    for e in events:
        per[e["tenant_id"]] = per.get(e["tenant_id"], 0) + 1
    top = max(per, key=per.get)
    picks = [events[i] for i in (17, 4999, 12345, COUNT - 1)]
    return {
        "generator": {"seed": 1, "count": COUNT, "tenants": TENANTS, "step_ns": STEP_NS},
        "data": {"first_ns": events[0]["occurred_at_ns"], "last_ns": events[-1]["occurred_at_ns"],
                 "top_tenant": top, "events_per_tenant_top": per[top]},
        "queries": {
            # Hostile values first: 3 samples use entries 0, 1 and 2.
            "Q1": [{"tenant": "no-such-tenant' OR '1'='1"}]
            + [{"tenant": e["tenant_id"]} for e in picks],
            "Q1top": [{"tenant": top}],
            "Q2": [{"tenant": picks[0]["tenant_id"], "actor_id": "a\\'b\t\"c",
                    "from_ns": 0, "to_ns": 2**62}]
            + [{"tenant": e["tenant_id"], "actor_id": e["actor_id"],
                "from_ns": e["occurred_at_ns"] - DAY_NS, "to_ns": e["occurred_at_ns"] + 1}
               for e in picks],
            "Q3": [{"tenant": e["tenant_id"], "event_id": e["event_id"]} for e in picks],
            "Q4": [{"tenant": e["tenant_id"], "from_ns": e["occurred_at_ns"] - 3 * DAY_NS,
                    "to_ns": e["occurred_at_ns"] + 4 * DAY_NS} for e in picks],
            "Q5": [{"tenant": e["tenant_id"], "from_ns": e["occurred_at_ns"] // DAY_NS * DAY_NS,
                    "to_ns": e["occurred_at_ns"] // DAY_NS * DAY_NS + DAY_NS} for e in picks],
        },
    }


def test_table_is_the_mirrors():
    out = subprocess.run([str(hodei.CLI), "clickhouse", "schema", "--database", "hodei_bench"],
                         check=True, capture_output=True, text=True).stdout
    statements = [s.strip() for s in out.split(";") if s.strip()]
    assert statements[1] == cb.ddl("hodei_bench", "events")


def test_three_formats_store_the_same_rows(clickhouse):
    lines = [json.dumps(e).encode() for e in gen_events(7, 300)]
    rows = [cb.row_of(line) for line in next(cb.batches(lines))]
    weird = list(rows[0])
    weird[0] = "t\\en'ant\t1"
    weird[6] = "a\nb\\n\u00e9\U0001F510 '\"` \r\0 end"
    weird[16], weird[17] = ["k\t'1", "", "\\"], ["v\n1", "x'y", "\U0001F510"]
    weird[18] = ""
    rows.append(tuple(weird))
    cols = ", ".join(f"toUInt32({n})" if n == "occurred_at" else n for n in cb.NAMES)
    seen = {}
    for i, fmt in enumerate(cb.FORMATS):
        db = f"fmt{i}"
        clickhouse.query(f"CREATE DATABASE {db}")
        clickhouse.query(cb.ddl(db, "events"))
        conn = cb.Conn(clickhouse.url)
        conn.insert(f"{db}.events", fmt, cb.ENCODERS[fmt](rows))
        got = json.loads(conn.query(
            f"SELECT {cols} FROM {db}.events ORDER BY tenant_id, seq FORMAT JSONCompact",
            output_format_json_quote_64bit_integers=0))["data"]
        seen[fmt] = got
    want = sorted((list(r) for r in rows), key=lambda r: (r[0], r[2]))
    for fmt in cb.FORMATS:
        assert seen[fmt] == want, fmt


@pytest.mark.slow
def test_all_end_to_end(clickhouse, tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(tiny_plan(gen_events(1, COUNT))))
    r = subprocess.run(
        [sys.executable, str(BENCH), "all", "--url", clickhouse.url, "--dir", str(tmp_path / "w"),
         "--gen", str(GEN), "--seed", "1", "--count", str(COUNT), "--tenants", str(TENANTS),
         "--step-ns", str(STEP_NS), "--insert-seconds", "1", "--pool-batches", "2",
         "--samples", "3", "--warmup", "1", "--plan", str(plan),
         "--server-pid", str(clickhouse.proc.pid)],
        capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["server"]["version"].startswith("18.")
    assert out["schema"]["order_by"] == "(tenant_id, occurred_at, seq)"

    ins = out["insert"]
    assert [(x["format"], x["clients"]) for x in ins["runs"]] == \
        [(f, c) for f in cb.FORMATS for c in (1, 2)]
    for x in ins["runs"]:
        assert x["events"] > 0 and x["errors"] == 0 and x["rows_in_table"] == x["events"]
        assert x["events_per_s"] > 0 and x["mb_per_s"] > 0
        assert x["server_cpu_us_per_event"] is not None
    assert ins["best"]["events_per_s"] == max(x["events_per_s"] for x in ins["runs"])
    assert ins["pool"]["events"] == 20000

    load = out["load"]
    assert load["events"] == load["events_sent"] == load["count_in_table"] == COUNT
    assert load["errors"] == 0 and load["settle"]["settled"]
    assert load["settle"]["method"] == "merges"
    assert out["bytes"]["rows"] == COUNT and out["bytes"]["bytes_on_disk_per_event"] > 0
    assert set(out["bytes"]["columns_compressed_per_event"]) == set(cb.NAMES)

    q = out["queries"]["kinds"]
    assert set(q) == set(cb.KINDS)
    for kind, fig in q.items():
        assert fig["samples"] == 3 and fig["errors"] == 0, (kind, fig)
        assert fig["wrong"] == 0, (kind, fig)
        for k in ("p50_us", "p95_us", "p99_us", "max_us", "mean_us", "rows_mean"):
            assert fig[k] is not None, (kind, k)
    assert q["Q3"]["rows_mean"] == 1
    assert q["Q1top"]["rows_mean"] == 100
    assert 0 < q["Q1"]["rows_mean"] <= 100


def test_sweep_sends_every_due_batch(clickhouse, tmp_path):
    rates, seconds = (20000, 50000), 1
    r = subprocess.run(
        [sys.executable, str(BENCH), "sweep", "--url", clickhouse.url, "--dir", str(tmp_path),
         "--database", "sweep_t", "--gen", str(GEN), "--tenants", str(TENANTS),
         "--pool-batches", "2", "--format", "RowBinary", "--clients", "2",
         "--rates", ",".join(map(str, rates)), "--sweep-seconds", str(seconds),
         "--sweep-warmup", "0", "--keep-table", "--server-pid", str(clickhouse.proc.pid)],
        capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    sw = json.loads(r.stdout)["sweep"]
    assert (sw["format"], sw["clients"], sw["batch_rows"]) == ("RowBinary", 2, cb.BATCH_ROWS)
    assert sw["pool"]["events"] == 2 * cb.BATCH_ROWS
    assert [p["offered_eps"] for p in sw["points"]] == list(rates)
    for rate, p in zip(rates, sw["points"]):
        # Batch k is due at k * 10,000 / rate: those due in the window.
        due = -(-rate * seconds // cb.BATCH_ROWS)
        assert p["errors"] == 0, p["first_error"]
        assert p["batches_sent"] + p["not_started"] == due, p
        assert p["rows_sent"] == p["batches_sent"] * cb.BATCH_ROWS > 0
        assert p["rows_in_table"] == p["rows_sent"]
        assert p["batches_measured"] == p["batches_sent"]
        assert p["eps"] > 0 and p["server_cpu_us_per_event"] > 0
        for k in ("p50_us", "p99_us", "p999_us", "max_us"):
            assert p[k] > 0, (k, p)
        assert p["p50_us"] <= p["p99_us"] <= p["p999_us"] <= p["max_us"]
    # --keep-table: the last rate's rows are still there, counted here.
    n = clickhouse.query("SELECT count(*) FROM sweep_t.events_insert").strip()
    assert int(n) == sw["points"][-1]["rows_sent"]


def test_serve_starts_and_stops(tmp_path):
    p = subprocess.Popen([sys.executable, str(BENCH), "serve", "--dir", str(tmp_path)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=hodei._die_with_parent)
    try:
        info = json.loads(p.stdout.readline())
        with urllib.request.urlopen(info["server"]["url"] + "/ping", timeout=10) as r:
            assert r.read() == b"Ok.\n"
        p.send_signal(signal.SIGTERM)
        assert p.wait(60) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
