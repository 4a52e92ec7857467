# SPDX-License-Identifier: Apache-2.0
"""The ClickHouse mirror inside hodei-auditd (issue #4, DESIGN.md §2.7, §8)
against a real ClickHouse 18.16 (chserver.py): after ingest and seal a
plain `SELECT count()` per tenant (no FINAL) equals what was appended;
ClickHouse stopped during ingest and started again: the mirror catches up
exactly; a kill -9 between an INSERT and its manifest record: exactly once
after the restart. Counts are read over ClickHouse's HTTP interface by the
test, not through the server."""
import pytest

import hodei


def start(server_factory, ch, args=(), extra=None):
    return server_factory(env=ch.env(**(extra or {})), args=["--seal-rows", "2000", *args])


def append(srv, tenants, per_tenant, batch=1000):
    acked = {}
    for t in tenants:
        stub = srv.stub(srv.admin_key, t)
        n = 0
        while n < per_tenant:
            n += stub.Append(hodei.append_request(hodei.events(min(batch, per_tenant - n),
                                                               start=n))).accepted
        acked[t] = n
    return acked


def wait_mirrored(srv, timeout_s=180):
    # Every sealed segment recorded as mirrored, and nothing left unsealed.
    hodei.wait_until(lambda: (m := srv.metrics()).get("hodei_memtable_events") == 0
                     and m.get("hodei_segments_local") > 0
                     and m.get("hodei_segments_mirrored") == m.get("hodei_segments_local"),
                     timeout_s, "every segment mirrored")


def check_counts(ch, acked):
    for t, n in acked.items():
        assert ch.count(t) == n, f"tenant {t}: {ch.count(t)} rows in ClickHouse, {n} appended"


def test_counts_match_after_ingest_and_seal(server_factory, clickhouse):
    srv = start(server_factory, clickhouse)
    acked = append(srv, ["acme", "globex", "initech"], 5000)
    wait_mirrored(srv)
    check_counts(clickhouse, acked)
    m = srv.metrics()
    assert m.get("hodei_mirror_ready") == 1
    assert m.get("hodei_mirror_rows_inserted_total") == sum(acked.values())
    assert m.get("hodei_mirror_lag_seconds") == 0
    # The rows are the events: seq 1..n per tenant, the chain hash of Search.
    stored = srv.stored("acme")
    rows = clickhouse.rows("SELECT seq, chain_hash FROM hodei_audit.events "
                           "WHERE tenant_id = 'acme' ORDER BY seq")
    assert [int(r[0]) for r in rows] == [e.seq for e in stored]
    assert [r[1] for r in rows] == [e.chain_hash.hex() for e in stored]


def test_clickhouse_down_during_ingest_then_back(server_factory, clickhouse):
    srv = start(server_factory, clickhouse)
    first = append(srv, ["acme"], 2000)
    wait_mirrored(srv)
    clickhouse.stop()
    more = append(srv, ["acme", "globex"], 6000)
    hodei.wait_until(lambda: srv.metrics().get("hodei_mirror_errors_total", kind="network") >= 1,
                     120, "mirror network errors counted")
    m = srv.metrics()
    assert m.get("hodei_mirror_backlog_segments") >= 1
    assert m.get("hodei_mirror_ready") == 0
    clickhouse.start()
    wait_mirrored(srv)
    check_counts(clickhouse, {"acme": first["acme"] + more["acme"], "globex": more["globex"]})


def test_kill_between_insert_and_manifest_record(server_factory, clickhouse):
    # ClickHouse is down while the events arrive, so the failpoint (abort
    # right after the first successful INSERT) fires once they are all
    # acknowledged and ClickHouse is back.
    clickhouse.stop()
    srv = start(server_factory, clickhouse, extra={"HODEI_FAILPOINT": "clickhouse_after_insert"})
    acked = append(srv, ["acme", "globex"], 4000)
    hodei.wait_until(lambda: srv.metrics().get("hodei_memtable_events") == 0, 60, "all sealed")
    clickhouse.start()
    hodei.wait_until(lambda: not srv.running(), 120, "the failpoint aborted the server")
    srv.expect_dead = True
    assert clickhouse.count("acme") + clickhouse.count("globex") > 0, "no insert before the abort"
    del srv.env["HODEI_FAILPOINT"]
    srv.start()
    wait_mirrored(srv)
    check_counts(clickhouse, acked)
    assert srv.metrics().get("hodei_mirror_rows_present_total") >= 1


def test_offline_mirror_refuses_while_the_server_mirrors(server_factory, clickhouse):
    import subprocess

    srv = start(server_factory, clickhouse)
    out = subprocess.run([str(hodei.CLI), "clickhouse", "mirror", "--data-dir", str(srv.data_dir)],
                         env={**clickhouse.env(), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "lock" in (out.stderr + out.stdout).lower()


@pytest.mark.parametrize("bad", ["ftp://x", "not-a-url"])
def test_bad_clickhouse_url_stops_the_start(server_factory, bad):
    srv = server_factory(start=False, env={"HODEI_CLICKHOUSE_URL": bad})
    srv.start(wait_ready=False)
    hodei.wait_until(lambda: not srv.running(), 60, "the server refused to start")
    srv.expect_dead = True
    assert srv.proc.returncode == 1
    assert "ClickHouse configuration" in srv.stderr()
