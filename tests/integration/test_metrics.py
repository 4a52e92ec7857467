# SPDX-License-Identifier: Apache-2.0
"""/metrics (DESIGN.md §10, issue #3): the exposition passes `promtool check
metrics`, carries the names operators alert on, histograms are well formed,
and counters move by exactly what the test sent."""
import shutil
import subprocess

import grpc
import pytest

import hodei
from hodei import event, events, status_of

C = grpc.StatusCode

REQUIRED = {
    "hodei_events_appended_total": "counter",
    "hodei_events_duplicate_total": "counter",
    "hodei_requests_total": "counter",
    "hodei_requests_rejected_total": "counter",
    "hodei_append_duration_seconds": "histogram",
    "hodei_append_stage_duration_seconds": "histogram",
    "hodei_wal_fsync_duration_seconds": "histogram",
    "hodei_wal_rotation_duration_seconds": "histogram",
    "hodei_wal_slow_commits_total": "counter",
    "hodei_slow_commit_threshold_seconds": "gauge",
    "hodei_shard_blocked_seconds_total": "counter",
    "hodei_wal_recycled_total": "counter",
    "hodei_wal_free_files": "gauge",
    "hodei_segments_sealed_total": "counter",
    "hodei_seal_write_steps_total": "counter",
    "hodei_seal_write_steps_hurried_total": "counter",
    "hodei_connections_open": "gauge",
    "hodei_connections_rejected_total": "counter",
    "hodei_ready": "gauge",
}


def traffic(srv):
    a = hodei.pb().audit_pb2
    w = srv.stub(srv.add_key("m", "writer"))
    w.Append(a.AppendRequest(events=events(3)))
    srv.stub(srv.add_key("m", "reader")).Search(a.SearchRequest())
    status_of(lambda: w.Append(a.AppendRequest(events=[event(0, actor_id="")])))
    status_of(lambda: srv.stub("hk_nope").Verify(a.VerifyRequest()))


def test_promtool_check_metrics(server):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus; CI installs it)")
    traffic(server)
    text = server.metrics_text()
    p = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                       capture_output=True, timeout=60)
    assert p.returncode == 0, \
        f"promtool check metrics: exit {p.returncode}\n{p.stdout.decode()}{p.stderr.decode()}"


def test_required_metrics_present_and_typed(server):
    traffic(server)
    m = server.metrics()
    for name, kind in REQUIRED.items():
        assert m.types.get(name) == kind, f"{name}: TYPE {m.types.get(name)!r}, want {kind}"
    for name, kind in m.types.items():
        assert name.startswith(("hodei_", "process_")), f"{name}: not in the hodei_ namespace"
        if kind == "counter":
            assert name.endswith("_total"), f"counter {name} does not end in _total"
    assert m.get("hodei_ready") == 1


def _check_histogram(m, name):
    series = {}
    for labels, v in m.samples(name + "_bucket"):
        le = labels.pop("le")
        series.setdefault(tuple(sorted(labels.items())), []).append((float(le), v))
    assert series, f"{name}: no buckets"
    for labels, buckets in series.items():
        buckets.sort()
        assert buckets[-1][0] == float("inf"), f"{name}{labels}: no +Inf bucket"
        counts = [v for _, v in buckets]
        assert counts == sorted(counts), f"{name}{labels}: buckets not cumulative"
        assert m.get(name + "_count", **dict(labels)) == counts[-1], f"{name}{labels}: _count != +Inf bucket"
        assert (name + "_sum", labels) in m, f"{name}{labels}: no _sum"


def test_histograms_well_formed(server):
    traffic(server)
    m = server.metrics()
    for name in ("hodei_append_duration_seconds", "hodei_wal_fsync_duration_seconds"):
        _check_histogram(m, name)
        assert m.sum(name + "_count") >= 1, f"{name}: nothing observed after appends"
    # No rotation yet (the first file of a start is not one), but the
    # series is there, empty.
    _check_histogram(m, "hodei_wal_rotation_duration_seconds")


def test_counters_move_by_exactly_what_was_sent(server, stubs):
    a = stubs.audit_pb2
    w = server.stub(server.add_key("exact", "writer"))
    r = server.stub(server.add_key("exact", "reader"))
    before = server.metrics()

    batch = events(4)
    w.Append(a.AppendRequest(events=batch))                      # OK, 4 new
    w.Append(a.AppendRequest(events=events(3, start=10)))        # OK, 3 new
    w.Append(a.AppendRequest(events=batch[:2] + events(1, start=20)))  # OK, 1 new, 2 dups
    for _ in range(2):
        code, _, _ = status_of(lambda: w.Append(a.AppendRequest(events=[event(0, action="")])))
        assert code == C.INVALID_ARGUMENT
    code, _, _ = status_of(lambda: r.Append(a.AppendRequest(events=events(1))))
    assert code == C.PERMISSION_DENIED
    code, _, _ = status_of(lambda: server.stub(hodei.new_key()).Search(a.SearchRequest()))
    assert code == C.UNAUTHENTICATED
    list(w.AppendStream(iter([a.AppendRequest(events=events(2, start=30))])))  # 2 new
    for _ in range(3):
        r.Search(a.SearchRequest())
    r.Verify(a.VerifyRequest())

    after = server.metrics()

    def delta(name, **labels):
        return after.get(name, **labels) - before.get(name, **labels)

    assert delta("hodei_events_appended_total", tenant="exact") == 4 + 3 + 1 + 2
    assert delta("hodei_events_duplicate_total", tenant="exact") == 2
    assert after.sum("hodei_events_appended_total") - before.sum("hodei_events_appended_total") == 10
    assert delta("hodei_requests_total", method="Append", code="OK") == 3
    assert delta("hodei_requests_total", method="Append", code="INVALID_ARGUMENT") == 2
    assert delta("hodei_requests_total", method="Append", code="PERMISSION_DENIED") == 1
    assert delta("hodei_requests_total", method="Search", code="UNAUTHENTICATED") == 1
    assert delta("hodei_requests_total", method="Search", code="OK") == 3
    assert delta("hodei_requests_total", method="Verify", code="OK") == 1
    assert delta("hodei_requests_total", method="AppendStream", code="OK") == 1
    rejected = after.sum("hodei_requests_rejected_total") - before.sum("hodei_requests_rejected_total")
    assert rejected == 2 + 1 + 1, f"hodei_requests_rejected_total moved by {rejected}"
    observed = after.sum("hodei_append_duration_seconds_count") - \
        before.sum("hodei_append_duration_seconds_count")
    assert observed >= 3, f"hodei_append_duration_seconds observed {observed} appends"
    # receive times every unary Append whose message was decoded, respond
    # every one answered OK once its stream closed: at least the 3 answered
    # OK in both (AppendStream is in neither).
    for stage in ("receive", "respond"):
        moved = after.get("hodei_append_stage_duration_seconds_count", stage=stage) - \
            before.get("hodei_append_stage_duration_seconds_count", stage=stage)
        assert moved >= 3, f"stage {stage}: {moved} appends observed"
    # The engine's four stages are timed for exactly the Appends that
    # succeeded, as the total is (stream messages included), and a commit
    # (write and fsync) never takes no time.
    for stage in ("queue", "wait", "commit", "deliver"):
        moved = after.get("hodei_append_stage_duration_seconds_count", stage=stage) - \
            before.get("hodei_append_stage_duration_seconds_count", stage=stage)
        assert moved == observed, f"stage {stage}: {moved} appends observed, total {observed}"
    commit_s = after.get("hodei_append_stage_duration_seconds_sum", stage="commit") - \
        before.get("hodei_append_stage_duration_seconds_sum", stage="commit")
    assert commit_s > 0, "stage commit: no time observed"


def no_clients(server, tenant):
    """A reader key of tenant, once every client connection is closed."""
    key = server.add_key(tenant, "reader")
    server.close_channels()
    hodei.wait_until(lambda: server.metrics().get("hodei_connections_open") == 0, 30,
                     "hodei_connections_open == 0 once every client closed")
    return key


def test_connections_gauge(server, stubs):
    a = stubs.audit_pb2
    key = no_clients(server, "conn")
    for s in [server.stub(key) for _ in range(3)]:
        s.Verify(a.VerifyRequest())
    assert server.metrics().get("hodei_connections_open") == 3
    server.close_channels()
    hodei.wait_until(lambda: server.metrics().get("hodei_connections_open") == 0, 30,
                     "hodei_connections_open to drop after the clients closed")


def test_segments_sealed_counter(server_factory, stubs):
    a = stubs.audit_pb2
    srv = server_factory(seal_age="200ms", args=["--seal-rows", "10"])
    w = srv.stub(srv.add_key("seal", "writer"))
    before = srv.metrics().get("hodei_segments_sealed_total")
    w.Append(a.AppendRequest(events=events(25)))
    hodei.wait_until(lambda: srv.metrics().get("hodei_segments_sealed_total") > before, 60,
                     "hodei_segments_sealed_total to move after 25 events with --seal-rows 10")
    got = srv.stored("seal")
    assert len(got) == 25
    hodei.check_chain(got, "seal")


def test_tenant_label_cap(server_factory, stubs):
    """Per-tenant labels are capped (DESIGN.md §10, --tenant-labels-max):
    past the cap, tenant="other"; the sum still counts every event."""
    a = stubs.audit_pb2
    srv = server_factory(args=["--tenant-labels-max", "10"])
    ch = srv.channel()
    for i in range(30):
        srv.stub(srv.admin_key, f"cap-{i}", channel=ch).Append(a.AppendRequest(events=[event(i)]))
    m = srv.metrics()
    assert m.sum("hodei_events_appended_total") == 30
    tenants = {labels.get("tenant") for labels, _ in m.samples("hodei_events_appended_total")}
    assert "other" in tenants
    assert len(tenants - {"other"}) <= 10, sorted(tenants)
    assert m.get("hodei_ready") == 1


def test_connections_are_balanced_over_shards(server, stubs):
    """Each new connection goes to the shard with the fewest (server.c), not
    where the kernel's address hash put it: 10 clients on 2 shards are 5
    and 5 (the hash alone gives that one time in four)."""
    a = stubs.audit_pb2
    key = no_clients(server, "bal")
    for s in [server.stub(key) for _ in range(10)]:
        s.Verify(a.VerifyRequest())
    m = server.metrics()
    per_shard = {dict(ls)["shard"]: v for (n, ls), v in m.items() if n == "hodei_shard_connections"}
    assert per_shard == {"0": 5, "1": 5}, per_shard
    assert m.get("hodei_connections_open") == 10
    server.close_channels()
    hodei.wait_until(lambda: server.metrics().sum("hodei_shard_connections") == 0, 30,
                     "hodei_shard_connections back to 0 after the clients closed")
