# SPDX-License-Identifier: Apache-2.0
"""The ClickHouse mirror (DESIGN.md §2.7, §8; net/clickhouse.h) against a
real ClickHouse 18.16 (chserver.py), through `hodei-audit clickhouse
mirror --data-dir`, on data directories written by the real hodei-auditd.

What is checked: a plain `SELECT count() ... WHERE tenant_id = ...` (no
FINAL) equals what was appended, for every tenant; a second run changes
nothing; every value reads back equal to the event's JSON form; ClickHouse
down → a clear error and exit code, then up again → complete and exact;
crashes of the mirror right after an INSERT, in the middle of an upload, at
random points (SIGKILL), and of ClickHouse itself in the middle of inserts,
each followed by a re-run → exactly once; the premise the design rests on
(ClickHouse 18.16 refuses a gzip body that was cut anywhere); schema, auth
and lock errors.
"""
import fcntl
import gzip
import json
import os
import random
import socket
import struct
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest

import hodei

DB = "hodei_audit"

# Instants that put a segment's rows in several months, one of them past
# what ClickHouse's DateTime holds (occurred_at is clamped, _ns is exact).
INSTANTS = [
    1706745599999999999,   # 2024-01-31T23:59:59.999999999Z
    1706745600000000000,   # 2024-02-01T00:00:00Z
    946684799500000000,    # 1999-12-31T23:59:59.5Z
    7258118400000000000,   # 2200-01-01T00:00:00Z (past 2105: clamped)
    1714564800123456789,   # 2024-05-01T12:00:00.123456789Z
]
WEIRD = [
    "tab\there", "new\nline", "back\\slash \\n not a newline", "quotes ' \" `",
    "emoji \U0001F510 and \u00e9", "\u65e5\u672c\u8a9e", "plain", "[',']",
    "ctrl \x01\x1f end", "",
]
TENANTS = {"acme": 50, "globex-2": 37, "initech.eu_1": 120}
SEAL_ROWS = 16


def weird_event(i):
    a = hodei.pb().audit_pb2
    fields = dict(
        occurred_at_ns=INSTANTS[i % len(INSTANTS)] + i,
        actor_id=WEIRD[i % len(WEIRD)] or f"user-{i}",
        actor_type=["user", "service", ""][i % 3],
        action=["document.read", "document.delete", "login"][i % 3],
        resource_type=WEIRD[(i + 3) % len(WEIRD)],
        resource_id=f"doc-{i}\t{WEIRD[(i + 5) % len(WEIRD)]}",
        outcome=[a.OUTCOME_UNSPECIFIED, a.OUTCOME_SUCCESS, a.OUTCOME_FAILURE,
                 a.OUTCOME_DENIED][i % 4],
        source_ip=["", "203.0.113.7", "2001:db8::1"][i % 3],
        user_agent=WEIRD[(i + 1) % len(WEIRD)],
        request_id="" if i % 4 == 0 else f"req-{i}",
        trace_id="" if i % 2 else "4bf92f3577b34da6a3ce929d0e0e4736",
        details_json=b"" if i % 5 == 0 else json.dumps(
            {"i": i, "s": WEIRD[i % len(WEIRD)], "nested": [1, 2.5, None, True, {"k": "v"}]},
            ensure_ascii=(i % 2 == 0)).encode(),
    )
    if i % 3 == 0:
        attrs = []
    else:
        attrs = [("k", WEIRD[i % len(WEIRD)]), ("empty", ""), (f"n{i}", str(i)),
                 ("\u00fcml", "x\ty")]
    return hodei.event(i, attributes=attrs, **fields)


# ---------------------------------------------------------------------------
# Data directories written by the real server.


def cli(*args, env=None, timeout=300, check=None):
    """Runs hodei-audit; returns the CompletedProcess."""
    e = {k: v for k, v in os.environ.items()
         if not k.startswith("HODEI_") or k == "HODEI_BUILD_DIR"}
    e.update(env or {})
    p = subprocess.run([str(hodei.CLI), *args], env=e, capture_output=True, text=True,
                       timeout=timeout)
    report = hodei.SANITIZER_REPORT.search(p.stderr)
    assert not report, f"sanitizer report from hodei-audit {' '.join(args)}:\n{p.stderr[-3000:]}"
    if check is not None:
        assert p.returncode == check, (
            f"hodei-audit {' '.join(args)}: exit {p.returncode}, want {check}\n"
            f"stdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-3000:]}")
    return p


def sealed_everything(data_dir, counts):
    p = cli("verify", "--data-dir", str(data_dir), "--json")
    heads = {}
    for line in p.stdout.splitlines():
        o = json.loads(line)
        if o.get("type") == "tenant":
            heads[o["tenant"]] = (o["last_seq"], o["sealed_seq"])
    return all(heads.get(t) == (n, n) for t, n in counts.items())


def manifest_segments(data_dir):
    """[(tenant, segment_id int, rows)] of every shard's manifest."""
    out = []
    for man in sorted(Path(data_dir).glob("shard-*/manifest.log")):
        doc = json.loads(cli("inspect", str(man), "--json", check=0).stdout)
        for s in doc["segments"]:
            out.append((s["tenant"], int(s["segment_id"], 16), s["rows"]))
    return out


def build_dataset(workdir, tenants, make_event, seal_rows, batch=10, args=()):
    """Starts hodei-auditd, appends make_event(i) for i < n to each tenant,
    waits until everything is sealed, reads the events back in their JSON
    form, stops the server. Returns a namespace."""
    srv = hodei.Server(workdir, args=["--seal-rows", str(seal_rows), *args])
    srv.start()
    try:
        for tenant, n in tenants.items():
            stub = srv.admin(tenant)
            for start in range(0, n, batch):
                evs = [make_event(i) for i in range(start, min(n, start + batch))]
                resp = stub.Append(hodei.append_request(evs))
                assert resp.accepted == len(evs)
        hodei.wait_until(lambda: sealed_everything(srv.data_dir, tenants), 120,
                         "every event to be sealed")
        stored = {}
        for tenant in tenants:
            p = cli("search", "--json", "--all", "--oldest-first", "--to", str(2**63 - 1),
                    "--server", srv.grpc_addr, "--tenant", tenant,
                    env={"HODEI_API_KEY": srv.admin_key}, check=0)
            # Search orders by occurred_at; ClickHouse rows are read by seq.
            stored[tenant] = sorted((json.loads(line) for line in p.stdout.splitlines()),
                                    key=lambda e: e["seq"])
            assert len(stored[tenant]) == tenants[tenant]
    finally:
        assert srv.stop() == 0
    segments = manifest_segments(srv.data_dir)
    assert sum(r for _, _, r in segments) == sum(tenants.values())
    return type("Dataset", (), dict(data_dir=srv.data_dir, counts=dict(tenants),
                                    stored=stored, segments=segments))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, stubs):
    """Three tenants, events with every kind of value, occurred_at spread
    over five months (one past 2105), sealed in segments of 16 rows."""
    return build_dataset(tmp_path_factory.mktemp("ds"), TENANTS, weird_event, SEAL_ROWS)


def bulk_event(i, _pad={}):
    """An event with ~3 KB of incompressible details, all in March 2024."""
    if "hex" not in _pad:
        _pad["hex"] = random.Random(7).randbytes(1500 * 400).hex()
    h = _pad["hex"]
    off = (i * 3001) % (len(h) - 3000)
    return hodei.event(i, occurred_at_ns=1710460800000000000 + i * 1000,
                       details_json=json.dumps({"pad": h[off:off + 3000]}).encode())


BULK = {"bulk-a": 12000, "bulk-b": 6000}


@pytest.fixture(scope="module")
def bulk(tmp_path_factory, stubs):
    """~55 MB of events in segments of 3000 rows: uploads that take long
    enough to be interrupted."""
    return build_dataset(tmp_path_factory.mktemp("bulk"), BULK, bulk_event, 3000, batch=500)


# ---------------------------------------------------------------------------
# Helpers.


def mirror(ds, ch, *args, env=None, check=None):
    return cli("clickhouse", "mirror", "--data-dir", str(ds.data_dir), *args,
               env=ch.env(**(env or {})), check=check)


def assert_exact(ds, ch, db=DB):
    """Plain count per tenant equals what was appended, seqs 1..n once."""
    for tenant, n in ds.counts.items():
        got = ch.count(tenant, database=db)
        assert got == n, f"{tenant}: count() {got}, appended {n}"
        row = ch.rows(f"SELECT count(), uniqExact(seq), min(seq), max(seq) FROM {db}.events "
                      f"WHERE tenant_id = '{tenant}'")[0]
        assert row == [str(n), str(n), "1", str(n)], f"{tenant}: {row}"


def assert_segments_atomic(ds, ch, db=DB):
    """Every segment's rows are all there or none (the bulk data set has
    one month, so one INSERT per segment). Returns how many are there."""
    if not ch.scalar(f"SELECT count() FROM system.tables WHERE database = '{db}' "
                     "AND name = 'events'"):
        return 0
    rows = {(t, int(s)): int(n) for t, s, n in ch.rows(
        f"SELECT tenant_id, segment_id, count() FROM {db}.events GROUP BY tenant_id, segment_id")}
    want = {(t, s): r for t, s, r in ds.segments}
    for key, n in rows.items():
        assert key in want, f"rows of an unknown segment {key}"
        assert n == want[key], f"segment {key}: {n} rows of {want[key]} (not atomic)"
    return len(rows)


def tenant_lines(stdout):
    return {o["tenant"]: o for o in map(json.loads, stdout.splitlines()) if o["type"] == "tenant"}


# ---------------------------------------------------------------------------
# Tests.


def test_mirror_counts_exact_and_rerun_changes_nothing(dataset, clickhouse):
    p = mirror(dataset, clickhouse, "--json", check=0)
    lines = tenant_lines(p.stdout)
    for tenant, n in dataset.counts.items():
        assert lines[tenant]["rows"] == n
        assert lines[tenant]["inserted"] == n
        assert lines[tenant]["clickhouse_count"] == n
    assert_exact(dataset, clickhouse)
    p = mirror(dataset, clickhouse, "--json", check=0)
    lines = tenant_lines(p.stdout)
    for tenant, n in dataset.counts.items():
        assert lines[tenant]["inserted"] == 0
        assert lines[tenant]["already_present"] == n
    assert_exact(dataset, clickhouse)
    # The text form names each tenant and the total.
    p = mirror(dataset, clickhouse, check=0)
    assert "clickhouse mirror: complete" in p.stdout
    for tenant, n in dataset.counts.items():
        assert f"tenant {tenant}: " in p.stdout and f"count() {n}" in p.stdout
    assert cli("clickhouse", "count", "--tenant", "acme", env=clickhouse.env(),
               check=0).stdout.strip() == str(dataset.counts["acme"])


def test_values_round_trip(dataset, clickhouse):
    mirror(dataset, clickhouse, check=0)
    for tenant, stored in dataset.stored.items():
        text = clickhouse.query(
            f"SELECT * FROM {DB}.events WHERE tenant_id = '{tenant}' ORDER BY seq "
            "FORMAT JSONEachRow", params={"output_format_json_quote_64bit_integers": 1})
        rows = [json.loads(line) for line in text.splitlines()]
        assert len(rows) == len(stored)
        segment_of = {}
        for t, sid, n in dataset.segments:
            if t == tenant:
                segment_of[sid] = n
        for row, ev in zip(rows, stored):
            where = f"{tenant} seq {ev['seq']}"
            assert row["tenant_id"] == tenant
            assert int(row["seq"]) == ev["seq"], where
            assert row["event_id"] == ev["event_id"], where
            assert row["chain_hash"] == ev["chain_hash"], where
            ns = int(row["occurred_at_ns"])
            _, want_ns = hodei_time(ev["occurred_at"])
            assert ns == want_ns, where
            clamped = min(ns // 10**9, 4291747199)
            assert row["occurred_at"] == time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(clamped))
            assert int(row["received_at_ns"]) == hodei_time(ev["received_at"])[1], where
            for f in ("actor_id", "actor_type", "action", "resource_type", "resource_id",
                      "source_ip", "user_agent", "request_id", "trace_id"):
                assert row[f] == ev.get(f, ""), f"{where}: {f}"
            assert row["outcome"] == ev.get("outcome", "unspecified"), where
            assert list(zip(row["attr_keys"], row["attr_values"])) == \
                list(ev.get("attributes", {}).items()), where
            if "details" in ev:
                assert json.loads(row["details_json"]) == ev["details"], where
            else:
                assert row["details_json"] == "", where
            assert int(row["segment_id"]) in segment_of, where
    # The exact bytes of details_json, as appended (not only equal JSON).
    want = {i: weird_event(i).details_json.decode() for i in range(TENANTS["acme"])}
    got = clickhouse.query(f"SELECT seq, details_json FROM {DB}.events WHERE tenant_id = 'acme' "
                           "ORDER BY seq FORMAT JSONEachRow")
    for line in got.splitlines():
        o = json.loads(line)
        assert o["details_json"] == want[int(o["seq"]) - 1]


def hodei_time(rfc3339):
    """(seconds, ns) of the CLI's RFC 3339 UTC form with 9 digits."""
    day, frac = rfc3339.rstrip("Z").split(".")
    import calendar
    s = calendar.timegm(time.strptime(day, "%Y-%m-%dT%H:%M:%S"))
    return s, s * 10**9 + int(frac.ljust(9, "0"))


def test_clickhouse_down_then_up(dataset, clickhouse):
    clickhouse.stop()
    p = mirror(dataset, clickhouse)
    assert p.returncode == 5, p.stderr
    assert "ClickHouse unreachable" in p.stderr and clickhouse.url in p.stderr, p.stderr
    assert "(network)" in p.stderr
    clickhouse.start()
    # Down in the middle: some inserts done, then the server goes away.
    p = mirror(dataset, clickhouse, "--insert-rows-max", "3",
               env={"HODEI_FAILPOINT": "clickhouse_after_insert:7"})
    assert p.returncode < 0, "the failpoint aborts the command"
    clickhouse.stop()
    assert mirror(dataset, clickhouse).returncode == 5
    clickhouse.start()
    mirror(dataset, clickhouse, check=0)
    assert_exact(dataset, clickhouse)


@pytest.mark.parametrize("nth", [1, 5, 23])
def test_crash_right_after_insert_is_exactly_once(dataset, clickhouse, nth):
    # Small inserts (4 rows): a crash can fall between two INSERTs of one
    # segment, so the re-run finds a month partly there and fills it in.
    p = mirror(dataset, clickhouse, "--insert-rows-max", "4",
               env={"HODEI_FAILPOINT": f"clickhouse_after_insert:{nth}"})
    assert p.returncode == -6, p.stderr  # SIGABRT
    assert "failpoint clickhouse_after_insert" in p.stderr
    total = sum(clickhouse.count(t) for t in dataset.counts)
    assert 0 < total < sum(dataset.counts.values())
    p = mirror(dataset, clickhouse, "--json", check=0)
    present = sum(o["already_present"] for o in tenant_lines(p.stdout).values())
    assert present == total
    assert_exact(dataset, clickhouse)


def test_crash_mid_upload_commits_nothing(dataset, clickhouse):
    p = mirror(dataset, clickhouse, env={"HODEI_FAILPOINT": "clickhouse_mid_insert:3"})
    assert p.returncode == -6, p.stderr
    assert "failpoint clickhouse_mid_insert" in p.stderr
    # Two INSERTs went through whole; the third was cut: none of its rows.
    counts = clickhouse.rows(f"SELECT segment_id, toYYYYMM(occurred_at), count() FROM {DB}.events "
                             "GROUP BY segment_id, toYYYYMM(occurred_at)")
    assert len(counts) == 2, counts
    mirror(dataset, clickhouse, check=0)
    assert_exact(dataset, clickhouse)


def run_and_interrupt(ds, ch, db, delay_s, kill_clickhouse=False):
    """Starts a mirror into database db, waits delay_s, then SIGKILLs the
    mirror (or ClickHouse, which is then started again). Returns the
    mirror's exit status and stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HODEI_")}
    env.update(ch.env())
    proc = subprocess.Popen([str(hodei.CLI), "clickhouse", "mirror", "--data-dir",
                             str(ds.data_dir), "--database", db], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(delay_s)
    if kill_clickhouse:
        ch.kill()
    else:
        proc.kill()
    _, err = proc.communicate(timeout=120)
    assert not hodei.SANITIZER_REPORT.search(err), err[-3000:]
    if kill_clickhouse:
        ch.start()
    return proc.returncode, err


# Each round starts on an empty database so that its kill lands somewhere
# in a full run. How long a full run takes depends on the machine, so one
# is timed first and the kill delays are drawn as fractions of it. A run
# that still ends before its kill (the machine sped up) must have exited
# 0; it is checked like the others.
@pytest.mark.slow
def test_kill9_at_random_points_is_atomic_and_exactly_once(bulk, clickhouse):
    rnd = random.Random(int(os.environ.get("HODEI_TEST_SEED", "4242")))
    t0 = time.monotonic()
    mirror(bulk, clickhouse, "--database", "kill9_full", check=0)
    full_s = time.monotonic() - t0
    assert_exact(bulk, clickhouse, "kill9_full")
    for r in range(5):
        db = f"kill9_{r}"
        rc, err = run_and_interrupt(bulk, clickhouse, db, rnd.uniform(0.03, 0.9) * full_s)
        assert rc in (-9, 0), err
        assert_segments_atomic(bulk, clickhouse, db)
        mirror(bulk, clickhouse, "--database", db, check=0)
        assert_exact(bulk, clickhouse, db)
        assert assert_segments_atomic(bulk, clickhouse, db) == len(bulk.segments)


@pytest.mark.slow
def test_clickhouse_killed_mid_insert(bulk, clickhouse):
    rnd = random.Random(int(os.environ.get("HODEI_TEST_SEED", "4243")))
    for r in range(3):
        db = f"chkill_{r}"
        rc, err = run_and_interrupt(bulk, clickhouse, db, rnd.uniform(0.1, 1.8),
                                    kill_clickhouse=True)
        assert rc in (0, 5), err
        if rc == 5:
            assert "ClickHouse unreachable" in err, err
        assert_segments_atomic(bulk, clickhouse, db)
        mirror(bulk, clickhouse, "--database", db, check=0)
        assert_exact(bulk, clickhouse, db)


def raw_insert(port, query, body, headers=b"", declared=None):
    """POSTs body with Content-Length declared (default len(body)) on a raw
    socket, then closes its sending side. Returns the status line."""
    path = "/?" + urllib.parse.urlencode({"query": query})
    n = len(body) if declared is None else declared
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {n}\r\n".encode()
                  + headers + b"\r\n" + body)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n", 1)[0].decode()


def test_premise_a_cut_gzip_body_is_refused(clickhouse):
    """E2 of net/clickhouse.h: a gzip body cut anywhere (even at a row
    boundary after a flush, even only its 8-byte trailer) makes the INSERT
    fail whole. A plain body cut at a row boundary is committed as if it
    were complete by 18.16, which is why the mirror always gzips."""
    clickhouse.query("CREATE TABLE default.premise (n UInt64, s String) ENGINE = MergeTree "
                     "ORDER BY n")
    rows = b"".join(struct.pack("<Q", i) + b"\x05hello" for i in range(20000))
    whole = gzip.compress(rows)
    q = "INSERT INTO default.premise FORMAT RowBinary"
    for cut in (len(whole) // 3, len(whole) // 2, len(whole) - 100, len(whole) - 8,
                len(whole) - 1):
        status = raw_insert(clickhouse.http_port, q, whole[:cut],
                            headers=b"Content-Encoding: gzip\r\n", declared=cut)
        assert " 200 " not in status, f"cut at {cut}: {status}"
        assert clickhouse.scalar("SELECT count() FROM default.premise") == 0, f"cut at {cut}"
    import zlib
    co = zlib.compressobj(6, zlib.DEFLATED, 31)
    flushed = co.compress(rows[:14 * 5000]) + co.flush(zlib.Z_SYNC_FLUSH)
    status = raw_insert(clickhouse.http_port, q, flushed, headers=b"Content-Encoding: gzip\r\n")
    assert " 200 " not in status, "a stream flushed at a row boundary but not finished"
    assert clickhouse.scalar("SELECT count() FROM default.premise") == 0
    status = raw_insert(clickhouse.http_port, q, whole, headers=b"Content-Encoding: gzip\r\n")
    assert " 200 " in status
    assert clickhouse.scalar("SELECT count() FROM default.premise") == 20000


def test_schema_sql_runs_and_mismatch_is_reported(dataset, clickhouse):
    sql = cli("clickhouse", "schema", "--database", "other_db", check=0).stdout
    for stmt in filter(None, (s.strip() for s in sql.split(";\n"))):
        clickhouse.query(stmt)
    cols = clickhouse.rows("SELECT name, type FROM system.columns WHERE database = 'other_db' "
                           "AND table = 'events'")
    assert [c[0] for c in cols][:3] == ["tenant_id", "event_id", "seq"]
    # The mirror writes into other_db when told so.
    mirror(dataset, clickhouse, "--database", "other_db", check=0)
    assert clickhouse.count("acme", database="other_db") == TENANTS["acme"]
    # A table whose seq column has another type: refused, named.
    clickhouse.query("CREATE DATABASE wrong")
    clickhouse.query(sql.split(";\n\n")[1].replace("`other_db`", "`wrong`")
                     .replace("seq UInt64", "seq String").rstrip(";\n"))
    p = mirror(dataset, clickhouse, "--database", "wrong")
    assert p.returncode == 5, p.stderr
    assert "column seq is String" in p.stderr and "(schema)" in p.stderr, p.stderr


def test_wrong_password_and_lock(dataset, clickhouse):
    p = mirror(dataset, clickhouse, env={"HODEI_CLICKHOUSE_PASSWORD": "wrong"})
    assert p.returncode == 4, p.stderr
    assert "(auth)" in p.stderr and "wrong" not in p.stderr.replace("Wrong", ""), p.stderr
    with open(dataset.data_dir / "clickhouse-mirror.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        p = mirror(dataset, clickhouse)
    assert p.returncode == 3, p.stderr
    assert "another mirror" in p.stderr


def test_usage_errors(tmp_path):
    assert cli("clickhouse").returncode == 2
    assert cli("clickhouse", "frobnicate").returncode == 2
    assert cli("clickhouse", "mirror").returncode == 2
    assert cli("clickhouse", "count").returncode == 2
    assert cli("clickhouse", "count", "--tenant", "a b").returncode == 2
    assert cli("clickhouse", "schema", "--database", "bad-name").returncode == 2
    assert cli("clickhouse", "mirror", "--data-dir", str(tmp_path)).returncode == 3
    p = cli("clickhouse", "mirror", "--data-dir", str(tmp_path),
            env={"HODEI_CLICKHOUSE_TIMEOUT": "soon"})
    assert p.returncode == 2 and "HODEI_CLICKHOUSE_TIMEOUT" in p.stderr


def doc_sql_blocks():
    """The ```sql blocks of docs/CLICKHOUSE.md."""
    text = (hodei.ROOT / "docs" / "CLICKHOUSE.md").read_text()
    return [b.split("```", 1)[0].strip() for b in text.split("```sql\n")[1:]]


def test_doc_queries_run_and_match_search_semantics(dataset, clickhouse):
    mirror(dataset, clickhouse, check=0)
    selects = [b for b in doc_sql_blocks() if b.startswith("SELECT")]
    assert len(selects) >= 5
    for sql in selects:
        clickhouse.query(sql)  # every example runs on this server
    day = (1714521600, 1714608000)      # 2024-05-01, from inclusive, to exclusive
    week = (1714521600, 1715126400)
    acme = dataset.stored["acme"]

    def in_range(e, r):
        s, ns = hodei_time(e["occurred_at"])
        return r[0] * 10**9 <= ns < r[1] * 10**9

    want = sorted(((hodei_time(e["occurred_at"])[1], e["seq"]) for e in acme
                   if in_range(e, day) and e.get("outcome") in ("failure", "denied")),
                  reverse=True)
    assert want, "the data set has failures and denials that day"
    got = [(int(r[0]), int(r[1])) for r in clickhouse.rows(selects[0])]
    assert got == want
    counts = {}
    for e in acme:
        if in_range(e, week):
            counts[e["action"]] = counts.get(e["action"], 0) + 1
    got = {r[0]: int(r[1]) for r in clickhouse.rows(selects[1])}
    assert got == counts


def test_conflict_reported_then_repaired_as_documented(dataset, clickhouse):
    mirror(dataset, clickhouse, check=0)
    clickhouse.query(f"INSERT INTO {DB}.events SELECT * FROM {DB}.events WHERE tenant_id = 'acme' "
                     "AND toYYYYMM(occurred_at) = 202405 LIMIT 1")
    assert clickhouse.count("acme") == TENANTS["acme"] + 1
    p = mirror(dataset, clickhouse)
    assert p.returncode == 1, p.stderr
    assert "(conflict)" in p.stderr and "202405" in p.stderr, p.stderr
    repair = [b for b in doc_sql_blocks() if "REPLACE PARTITION" in b][0]
    for stmt in filter(None, (s.strip() for s in repair.split(";"))):
        clickhouse.query(stmt)
    mirror(dataset, clickhouse, check=0)
    assert_exact(dataset, clickhouse)
