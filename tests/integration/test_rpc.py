# SPDX-License-Identifier: Apache-2.0
"""Every RPC's happy path with the official grpcio client (issue #3):
Append, AppendStream (1,000 requests, one response each, in order), Search
with each filter and paging, Verify, Health/Check, Count (totals and groups
per filter and group_by, over sealed segments and memory, its roles, its
refusals and tenant isolation), and 32 concurrent clients appending to 100
tenants, after which every acked event is found with the acked seq and a
chain recomputed here from docs/FORMAT.md."""
import collections
import queue
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import grpc
import pytest

import hodei
from hodei import check_chain, event, events, search_all, status_of


def test_health_check_serving_without_key(server, stubs):
    h = stubs.health_pb2
    for service in ("", "hodei.audit.v1.AuditService"):
        resp = server.health().Check(h.HealthCheckRequest(service=service))
        assert resp.status == h.HealthCheckResponse.SERVING, service
    code, details, _ = status_of(lambda: server.health().Check(h.HealthCheckRequest(service="no.such.Service")))
    assert code == grpc.StatusCode.NOT_FOUND, (code, details)


def test_append_search_verify_roundtrip(server, stubs):
    a = stubs.audit_pb2
    writer = server.add_key("acme", "writer")
    reader = server.add_key("acme", "reader")
    sent = [
        event(0, source_ip="203.0.113.7", trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
              attributes=[("region", "eu-west-1"), ("mfa", "true")],
              details_json=b'{"via":"console","nested":{"a":[1,2,3]}}'),
        event(1, source_ip="2001:db8::42", outcome=a.OUTCOME_DENIED, attributes=[],
              details_json=b""),
        event(2, source_ip="", outcome=a.OUTCOME_FAILURE, actor_type="service",
              actor_id="svc-\u00e9\u4e2d\U0001f600", action="invoice.create",
              details_json='"caf\u00e9"'.encode()),
    ]
    resp = server.stub(writer).Append(a.AppendRequest(events=sent))
    assert (resp.accepted, resp.duplicates, resp.first_seq, resp.last_seq) == (3, 0, 1, 3)
    assert len(resp.chain_hash) == 32

    got = search_all(server.stub(reader))
    assert [s.seq for s in got] == [1, 2, 3]
    for s, e in zip(got, sent):
        assert s.tenant_id == "acme"
        assert s.event == e, f"seq {s.seq}: stored event differs from the one sent"
        assert s.received_at_ns > 0
        assert len(s.chain_hash) == 32
    final = check_chain(got, "acme")
    assert resp.chain_hash == final, "AppendResponse.chain_hash is not the chain after last_seq"

    v = server.stub(reader).Verify(a.VerifyRequest())
    assert v.ok, v.problem
    assert v.events_checked == 3
    assert v.chain_hash == final
    assert v.first_bad_seq == 0 and v.problem == ""

    # A second append continues the seq and the chain.
    resp2 = server.stub(writer).Append(a.AppendRequest(events=events(2, start=10)))
    assert (resp2.accepted, resp2.first_seq, resp2.last_seq) == (2, 4, 5)
    got = search_all(server.stub(reader))
    assert resp2.chain_hash == check_chain(got, "acme")


def test_server_assigns_event_id_and_time(server, stubs):
    a = stubs.audit_pb2
    w = server.add_key("t1", "writer")
    r = server.add_key("t1", "reader")
    before = time.time_ns()
    resp = server.stub(w).Append(a.AppendRequest(
        events=[event(0, event_id=b"", occurred_at_ns=0), event(1, event_id=b"", occurred_at_ns=0)]))
    after = time.time_ns()
    assert resp.accepted == 2
    got = search_all(server.stub(r), to_ns=after + 1)
    assert len(got) == 2
    ids = set()
    for s in got:
        eid = s.event.event_id
        assert len(eid) == 16 and eid != bytes(16)
        assert uuid.UUID(bytes=eid).version == 7, "server-assigned ids are UUIDv7"
        ids.add(eid)
        assert before <= s.event.occurred_at_ns <= after, "occurred_at 0 means receive time"
        assert before <= s.received_at_ns <= after
    assert len(ids) == 2
    check_chain(got, "t1")


def test_search_filters_order_and_paging(server, stubs):
    a = stubs.audit_pb2
    w = server.add_key("acme", "writer")
    r = server.stub(server.add_key("acme", "reader"))
    base = time.time_ns() - 100 * 1_000_000_000
    sent = []
    for i in range(30):
        sent.append(event(
            i, occurred_at_ns=base + i * 1_000_000_000,
            actor_id=f"user-{i % 3}", action=("doc.read", "doc.write")[i % 2],
            resource_type=("doc", "invoice")[i % 2 if i < 20 else 0],
            resource_id=f"r-{i % 5}",
            outcome=(a.OUTCOME_SUCCESS, a.OUTCOME_FAILURE, a.OUTCOME_DENIED)[i % 3]))
    server.stub(w).Append(a.AppendRequest(events=sent))

    def ids(evs):
        return [s.event.event_id for s in evs]

    def expect(pred):
        return [e.event_id for e in sent if pred(e)]

    # Default: newest first, limit 100.
    resp = r.Search(a.SearchRequest())
    assert ids(resp.events) == list(reversed(ids_sent := [e.event_id for e in sent]))
    assert resp.next_page_token == b""
    assert ids(search_all(r)) == ids_sent

    cases = [
        (dict(actor_id="user-1"), lambda e: e.actor_id == "user-1"),
        (dict(action="doc.write"), lambda e: e.action == "doc.write"),
        (dict(resource_type="invoice"), lambda e: e.resource_type == "invoice"),
        (dict(resource_id="r-2"), lambda e: e.resource_id == "r-2"),
        (dict(outcome=a.OUTCOME_DENIED), lambda e: e.outcome == a.OUTCOME_DENIED),
        (dict(event_id=sent[7].event_id), lambda e: e.event_id == sent[7].event_id),
        (dict(actor_id="user-0", action="doc.read"),
         lambda e: e.actor_id == "user-0" and e.action == "doc.read"),
        (dict(from_ns=base + 10 * 10**9, to_ns=base + 20 * 10**9),
         lambda e: base + 10 * 10**9 <= e.occurred_at_ns < base + 20 * 10**9),
        (dict(from_ns=base + 25 * 10**9), lambda e: e.occurred_at_ns >= base + 25 * 10**9),
        (dict(actor_id="nobody"), lambda e: False),
        (dict(event_id=hodei.uuid7()), lambda e: False),
    ]
    for filters, pred in cases:
        got = search_all(r, **filters)
        assert ids(got) == expect(pred), f"filters {filters}"
        newest = search_all(r, oldest_first=False, **filters)
        assert ids(newest) == list(reversed(expect(pred))), f"filters {filters}, newest first"

    # Paging: pages of 7, both directions, no event twice, none missing.
    for oldest in (True, False):
        seen, token, pages = [], b"", 0
        while True:
            resp = r.Search(a.SearchRequest(limit=7, oldest_first=oldest, page_token=token))
            assert len(resp.events) <= 7
            seen += ids(resp.events)
            pages += 1
            token = resp.next_page_token
            if not token:
                break
            assert pages < 100
        want = ids_sent if oldest else list(reversed(ids_sent))
        assert seen == want, f"paging oldest_first={oldest}"


def test_search_block_cache_on_and_off(server_factory, stubs):
    """Failures, then denials, twice, over sealed segments: the same answers
    with --block-cache-bytes 0 (no lookup at all), with the default (the
    repeats and the second outcome are served from the cache), and with
    the default cache but no query helpers (every decode on the shard
    thread; ADR 0015)."""
    a = stubs.audit_pb2
    base = time.time_ns() - 1000 * 1_000_000_000
    sent = [event(i, occurred_at_ns=base + i * 1_000_000_000,
                  outcome=(a.OUTCOME_SUCCESS, a.OUTCOME_FAILURE, a.OUTCOME_DENIED)[i % 3])
            for i in range(130)]
    answers = {}
    for size, helpers in (("0", 1), ("64MiB", 1), ("64MiB", 0)):
        srv = server_factory(args=["--seal-rows", "40", "--block-cache-bytes", size,
                                   "--query-helpers", str(helpers)])
        w = srv.stub(srv.add_key("acme", "writer"))
        r = srv.stub(srv.add_key("acme", "reader"))
        for k in range(0, len(sent), 10):
            w.Append(a.AppendRequest(events=sent[k:k + 10]))
        hodei.wait_until(lambda: srv.metrics().get("hodei_segments_sealed_total") >= 3, 60,
                         "three segments sealed")
        got = []
        for _ in range(2):
            for outcome in (a.OUTCOME_FAILURE, a.OUTCOME_DENIED):
                resp = r.Search(a.SearchRequest(outcome=outcome, limit=100))
                got.append([(e.seq, e.event.event_id, e.event.details_json)
                            for e in resp.events])
        assert got[0:2] == got[2:4], f"cache {size}: a repeated search differs"
        assert [len(g) for g in got[0:2]] == [43, 43]
        answers[size, helpers] = got
        m = srv.metrics()
        assert m.get("hodei_query_helpers") == helpers * m.get("hodei_shards")
        if helpers:
            assert m.get("hodei_query_decode_jobs_total") > 0
        else:
            assert m.get("hodei_query_decode_jobs_total") == 0
        assert m.get("hodei_query_decode_jobs_helped_total") <= m.get(
            "hodei_query_decode_jobs_total")
        if size == "0":
            assert m.get("hodei_block_cache_budget_bytes") == 0
            assert m.get("hodei_block_cache_hits_total") == 0
            assert m.get("hodei_block_cache_misses_total") == 0
            assert m.get("hodei_block_cache_bytes") == 0
        else:
            assert m.get("hodei_block_cache_hits_total") > 0
            assert m.get("hodei_block_cache_misses_total") > 0
            assert m.get("hodei_block_cache_evictions_total") == 0
        srv.stop()
    assert answers["0", 1] == answers["64MiB", 1] == answers["64MiB", 0]


def test_search_limit_max_1000(server, stubs):
    """limit is 1-1000, 0 meaning 100 (docs/API.md); 1001 is refused."""
    a = stubs.audit_pb2
    w = server.add_key("big", "writer")
    r = server.stub(server.add_key("big", "reader"))
    server.stub(w).Append(a.AppendRequest(events=events(1100)))
    resp = r.Search(a.SearchRequest(oldest_first=True))
    assert len(resp.events) == 100 and resp.next_page_token
    resp = r.Search(a.SearchRequest(limit=1000, oldest_first=True))
    assert len(resp.events) == 1000 and resp.next_page_token
    assert [s.seq for s in resp.events] == list(range(1, 1001))
    code, details, _ = status_of(lambda: r.Search(a.SearchRequest(limit=1001)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "limit" in details, (code, details)
    got = search_all(r, limit=1000)
    assert len(got) == 1100
    check_chain(got, "big")


def test_verify_ranges(server, stubs):
    a = stubs.audit_pb2
    w = server.stub(server.add_key("v", "writer"))
    r = server.stub(server.add_key("v", "reader"))
    for i in range(5):
        w.Append(a.AppendRequest(events=events(10, start=i * 10)))
    got = search_all(r)
    final = check_chain(got, "v")
    v = r.Verify(a.VerifyRequest())
    assert v.ok and v.events_checked == 50 and v.chain_hash == final
    v = r.Verify(a.VerifyRequest(from_seq=11, to_seq=25))
    assert v.ok, v.problem
    assert v.events_checked == 15
    assert v.chain_hash == got[24].chain_hash, "Verify's chain_hash is the chain after to_seq"


def test_verify_empty_tenant(server, stubs):
    v = server.stub(server.add_key("empty", "reader")).Verify(stubs.audit_pb2.VerifyRequest())
    assert v.ok and v.events_checked == 0


def test_append_stream_1000_requests_in_order(server, stubs):
    a = stubs.audit_pb2
    w = server.stub(server.add_key("stream", "writer"))
    reqs = [a.AppendRequest(events=[event(i)]) for i in range(1000)]
    sent_ids = [r.events[0].event_id for r in reqs]
    responses = list(w.AppendStream(iter(reqs)))
    assert len(responses) == 1000, "one response per request"
    for i, resp in enumerate(responses):
        assert (resp.accepted, resp.duplicates, resp.first_seq, resp.last_seq) == (1, 0, i + 1, i + 1), \
            f"response {i} out of order or wrong"
    got = search_all(server.stub(server.add_key("stream", "reader")))
    assert [s.event.event_id for s in got] == sent_ids
    final = check_chain(got, "stream")
    assert responses[-1].chain_hash == final
    for resp, s in zip(responses, got):
        assert resp.chain_hash == s.chain_hash


def test_append_stream_batches_interleaved(server, stubs):
    """Responses come while the client is still sending (not only at the
    end): each request is sent only after the previous answer arrived."""
    a = stubs.audit_pb2
    w = server.stub(server.add_key("lock", "writer"))
    q = queue.Queue()

    def gen():
        for i in range(20):
            yield a.AppendRequest(events=events(3, start=i * 3))
            q.get(timeout=30)

    call = w.AppendStream(gen())
    n = 0
    for resp in call:
        assert resp.first_seq == n * 3 + 1 and resp.last_seq == n * 3 + 3
        n += 1
        q.put(None)
    assert n == 20


GROUP_BYS = ("", "action", "actor_id", "resource_type", "outcome")
OUTCOME_KEYS = {0: "", 1: "success", 2: "failure", 3: "denied"}


def count_of(stub, group_by="", **filters):
    a = hodei.pb().audit_pb2
    resp = stub.Count(a.CountRequest(filter=a.SearchRequest(**filters), group_by=group_by))
    return resp.total, [(g.key, g.count) for g in resp.groups]


def expected_count(sent, pred, group_by):
    """What Count must answer: groups by count descending, then key
    ascending (bytewise); none without group_by."""
    matched = [e for e in sent if pred(e)]
    if not group_by:
        return len(matched), []
    tally = collections.Counter(OUTCOME_KEYS[e.outcome] if group_by == "outcome"
                                else getattr(e, group_by) for e in matched)
    return len(matched), sorted(tally.items(), key=lambda kv: (-kv[1], kv[0].encode()))


def test_count_totals_and_groups_per_filter(server_factory, stubs):
    """Small seals, so the events span sealed segments and memory."""
    a = stubs.audit_pb2
    srv = server_factory(args=["--seal-rows", "40"])
    w = srv.stub(srv.add_key("acme", "writer"))
    reader = srv.stub(srv.add_key("acme", "reader"))
    admin = srv.admin("acme")
    base = time.time_ns() - 1000 * 1_000_000_000
    sent = []
    for i in range(130):
        sent.append(event(
            i, occurred_at_ns=base + i * 1_000_000_000 + (i % 7) * 1000,
            actor_id=("user-a", "user-b", "svc-\u00e9\u4e2d", "user-c", "user-a")[i % 5],
            action=("doc.read", "doc.write", "doc.delete")[(i // 4) % 3],
            resource_type=("doc", "invoice", "")[i % 3],
            resource_id=f"r-{i % 9}",
            outcome=(a.OUTCOME_SUCCESS, a.OUTCOME_FAILURE, a.OUTCOME_DENIED,
                     a.OUTCOME_UNSPECIFIED)[i % 4]))
    for k in range(0, len(sent), 10):
        w.Append(a.AppendRequest(events=sent[k:k + 10]))
    hodei.wait_until(lambda: srv.metrics().get("hodei_segments_sealed_total") >= 2, 60,
                     "two segments sealed")

    t = lambda k: base + k * 1_000_000_000  # noqa: E731
    cases = [
        (dict(), lambda e: True),
        (dict(actor_id="user-a"), lambda e: e.actor_id == "user-a"),
        (dict(actor_id="svc-\u00e9\u4e2d"), lambda e: e.actor_id == "svc-\u00e9\u4e2d"),
        (dict(action="doc.write"), lambda e: e.action == "doc.write"),
        (dict(resource_type="invoice"), lambda e: e.resource_type == "invoice"),
        (dict(resource_id="r-2"), lambda e: e.resource_id == "r-2"),
        (dict(outcome=a.OUTCOME_DENIED), lambda e: e.outcome == a.OUTCOME_DENIED),
        (dict(event_id=sent[77].event_id), lambda e: e.event_id == sent[77].event_id),
        (dict(actor_id="user-b", action="doc.read", outcome=a.OUTCOME_FAILURE),
         lambda e: (e.actor_id, e.action, e.outcome) == ("user-b", "doc.read", a.OUTCOME_FAILURE)),
        (dict(from_ns=t(33), to_ns=t(97)), lambda e: t(33) <= e.occurred_at_ns < t(97)),
        (dict(from_ns=t(101)), lambda e: e.occurred_at_ns >= t(101)),
        (dict(to_ns=t(12)), lambda e: e.occurred_at_ns < t(12)),
        (dict(action="nothing"), lambda e: False),
        (dict(event_id=hodei.uuid7()), lambda e: False),
        # limit, page_token and order mean nothing to a count: ignored.
        (dict(limit=5000, page_token=b"junk", oldest_first=True), lambda e: True),
    ]
    for filters, pred in cases:
        for group_by in GROUP_BYS:
            want = expected_count(sent, pred, group_by)
            assert count_of(reader, group_by, **filters) == want, (filters, group_by)
            assert count_of(admin, group_by, **filters) == want, (filters, group_by, "admin")
    # A CountRequest without a filter counts everything.
    resp = reader.Count(a.CountRequest(group_by="outcome"))
    assert resp.total == 130
    assert {g.key for g in resp.groups} == {"success", "failure", "denied", ""}
    m = srv.metrics()
    assert m.get("hodei_requests_total", method="Count", code="OK") >= len(cases) * 10
    assert m.get("hodei_count_rows_scanned_total") > 0
    # Counts decode only some columns: looked up in the block cache, never kept.
    assert m.get("hodei_block_cache_misses_total") > 0
    assert m.get("hodei_block_cache_bytes") == 0
    assert m.get("hodei_block_cache_budget_bytes") > 0


def test_count_roles_and_tenant_isolation(server, stubs):
    a = stubs.audit_pb2
    w1 = server.stub(server.add_key("c-one", "writer"))
    w2 = server.stub(server.add_key("c-two", "writer"))
    r1 = server.stub(server.add_key("c-one", "reader"))
    r2 = server.stub(server.add_key("c-two", "reader"))
    one = events(25, action="one.act")
    w1.Append(a.AppendRequest(events=one))
    w2.Append(a.AppendRequest(events=events(4, action="two.act", actor_id="other")))
    assert count_of(r1, "action") == (25, [("one.act", 25)])
    assert count_of(r2, "action") == (4, [("two.act", 4)])
    assert count_of(server.admin("c-two"), "actor_id") == (4, [("other", 4)])
    # One tenant's event ids and actors count nothing in the other.
    assert count_of(r2, event_id=one[3].event_id) == (0, [])
    assert count_of(r2, "actor_id", actor_id="user-3") == (0, [])
    assert count_of(r1, event_id=one[3].event_id) == (1, [])
    # A tenant with no events.
    assert count_of(server.stub(server.add_key("c-empty", "reader")), "outcome") == (0, [])
    # Writers may not count; a reader may not name another tenant.
    code, details, _ = status_of(lambda: w1.Count(a.CountRequest()))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "Count" in details, (code, details)
    other = server.stub(server.add_key("c-one", "reader"), tenant="c-two")
    code, details, _ = status_of(lambda: other.Count(a.CountRequest()))
    assert code == grpc.StatusCode.PERMISSION_DENIED, (code, details)


@pytest.mark.parametrize("req,field", [
    (dict(group_by="bogus"), "group_by"),
    (dict(group_by="Action"), "group_by"),
    (dict(filter=dict(from_ns=20, to_ns=10)), "filter.from_ns"),
    (dict(filter=dict(to_ns=-1)), "filter.to_ns"),
    (dict(filter=dict(outcome=9)), "filter.outcome"),
    (dict(filter=dict(event_id=b"abc")), "filter.event_id"),
    (dict(filter=dict(action="x" * 129)), "filter.action"),
], ids=["unknown-group", "group-case", "from-after-to", "negative-to", "outcome", "event-id",
        "long-action"])
def test_count_invalid_arguments(server, stubs, req, field):
    a = stubs.audit_pb2
    r = server.stub(server.add_key("c-bad", "reader"))
    if "filter" in req:
        req = dict(req, filter=a.SearchRequest(**req["filter"]))
    code, details, _ = status_of(lambda: r.Count(a.CountRequest(**req)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
    assert details.startswith(field + ":"), details
    if field == "group_by":
        for allowed in ("action", "actor_id", "resource_type", "outcome"):
            assert f'"{allowed}"' in details, details
    assert r.Verify(a.VerifyRequest()).ok, "the connection is still usable"


def test_count_bounds_refuse(server_factory, stubs):
    a = stubs.audit_pb2
    srv = server_factory(args=["--count-groups-max", "3", "--count-scan-rows-max", "50"])
    w = srv.stub(srv.add_key("b", "writer"))
    r = srv.stub(srv.add_key("b", "reader"))
    w.Append(a.AppendRequest(events=[event(i, actor_id=f"user-{i % 5}",
                                           action=("x", "y")[i % 2]) for i in range(30)]))
    code, details, _ = status_of(lambda: r.Count(a.CountRequest(group_by="actor_id")))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, (code, details)
    assert details == "more than 3 groups; narrow the filter", details
    assert count_of(r, "actor_id", actor_id="user-1") == (6, [("user-1", 6)])
    assert count_of(r, "action") == (30, [("x", 15), ("y", 15)])
    w.Append(a.AppendRequest(events=events(30, start=30)))
    code, details, _ = status_of(lambda: r.Count(a.CountRequest(group_by="action")))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, (code, details)
    assert "more than 50 events" in details and "narrow" in details, details
    m = srv.metrics()
    assert m.get("hodei_requests_rejected_total", reason="query_too_big") == 2
    assert m.get("hodei_requests_total", method="Count", code="RESOURCE_EXHAUSTED") == 2


def test_io_sync_backend(server_factory, stubs):
    a = stubs.audit_pb2
    srv = server_factory(args=["--io", "sync"])
    w = srv.stub(srv.add_key("s", "writer"))
    resp = w.Append(a.AppendRequest(events=events(20)))
    assert resp.accepted == 20
    check_chain(srv.stored("s"), "s")


@pytest.mark.slow
def test_32_clients_100_tenants(server_factory, stubs):
    a = stubs.audit_pb2
    srv = server_factory(start=False)
    tenants = [f"tenant-{i:03d}" for i in range(100)]
    writers = {t: srv.add_key(t, "writer") for t in tenants}
    srv.start()

    requests_per_client, batch = 25, 8
    acked = []  # (tenant, [event ids], first_seq, last_seq, chain_hash)
    errors = []
    lock = threading.Lock()

    def client(c):
        try:
            ch = srv.channel()
            stubs_by_tenant = {}
            for j in range(requests_per_client):
                t = tenants[(c * 7 + j * 13) % 100]
                st = stubs_by_tenant.get(t)
                if st is None:
                    st = stubs_by_tenant[t] = srv.stub(writers[t], channel=ch)
                evs = events(batch, start=j * batch, actor_id=f"client-{c}")
                resp = st.Append(a.AppendRequest(events=evs))
                with lock:
                    acked.append((t, [e.event_id for e in evs], resp))
        except Exception as e:  # reported below
            errors.append(f"client {c}: {e!r}")

    threads = [threading.Thread(target=client, args=(c,)) for c in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    assert len(acked) == 32 * requests_per_client

    by_tenant = {}
    for t, ids, resp in acked:
        assert resp.accepted == batch and resp.duplicates == 0
        assert resp.last_seq - resp.first_seq + 1 == batch
        by_tenant.setdefault(t, []).append((ids, resp))
    for t, batches in by_tenant.items():
        got = srv.stored(t)
        final = check_chain(got, t)
        assert len(got) == batch * len(batches), f"{t}: stored {len(got)}"
        by_seq = {s.seq: s for s in got}
        for ids, resp in batches:
            for k, eid in enumerate(ids):
                s = by_seq[resp.first_seq + k]
                assert s.event.event_id == eid, f"{t}: seq {resp.first_seq + k} holds another event"
            assert by_seq[resp.last_seq].chain_hash == resp.chain_hash
        v = srv.verify(t)
        assert v.ok and v.events_checked == len(got) and v.chain_hash == final


def test_generated_stubs_are_removed_at_exit():
    """The suite's helper compiles the protos into a temporary folder per
    process; the folder must not outlive the process (CI machines run the
    suite many times)."""
    code = "import hodei; print(hodei.pb().dir)"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, cwd=Path(hodei.__file__).parent)
    assert p.returncode == 0, p.stderr
    stubs = Path(p.stdout.strip())
    assert stubs.name.startswith("hodei-it-stubs-"), p.stdout
    assert not stubs.exists()


def test_slow_query_log(server_factory, stubs):
    """--slow-query 1ns: every Search and Count is slow. Each is counted by
    method, and logged at info with where its time went (as logfmt pairs
    that add up) and the names of its filter's fields, never their values.
    --slow-query 0s turns it off; a bad value stops the start (exit 2)."""
    a = stubs.audit_pb2
    srv = server_factory(args=["--seal-rows", "40", "--slow-query", "1ns"])
    w = srv.stub(srv.add_key("acme", "writer"))
    r = srv.stub(srv.add_key("acme", "reader"))
    sent = [event(i, actor_id=f"secret-actor-{i % 3}") for i in range(130)]
    for k in range(0, len(sent), 10):
        w.Append(a.AppendRequest(events=sent[k:k + 10]))
    hodei.wait_until(lambda: srv.metrics().get("hodei_segments_sealed_total") >= 3, 60,
                     "three segments sealed")
    resp = r.Search(a.SearchRequest(actor_id="secret-actor-1", limit=100))
    want = sum(1 for e in sent if e.actor_id == "secret-actor-1")
    assert len(resp.events) == want
    # By actor: no stored counts (FORMAT.md §5.5.2), so blocks are read.
    groups = r.Count(a.CountRequest(filter=a.SearchRequest(outcome=a.OUTCOME_SUCCESS),
                                    group_by="actor_id")).groups
    m = srv.metrics()
    assert m.get("hodei_slow_query_threshold_seconds") == 1e-9
    assert m.get("hodei_slow_queries_total", method="Search") == 1
    assert m.get("hodei_slow_queries_total", method="Count") == 1

    hodei.wait_until(lambda: len(srv.slow_query_lines()) == 2, 10, "two slow-query lines")
    by_method = {l["method"]: l for l in srv.slow_query_lines()}
    assert set(by_method) == {"Search", "Count"}
    search, count = (hodei.slow_query_profile(by_method[k]) for k in ("Search", "Count"))
    for line in by_method.values():
        assert line["level"] == "info" and line["tenant"] == "acme"
        assert "secret-actor" not in line["msg"], "a filter value was logged"
    assert search["filter"] == "actor_id" and count["filter"] == "outcome"
    assert search["results"] == str(want) and count["results"] == str(len(groups))
    for p in (search, count):
        t = {k: float(v) for k, v in p.items() if k.endswith("_ms")}
        assert t["total_ms"] >= t["queued_ms"] + t["run_ms"] - 0.02
        assert t["run_ms"] >= t["scan_ms"] - 0.01
        assert t["run_ms"] >= t["read_ms"] + t["decode_ms"] - 0.02
        assert int(p["blocks_decoded"]) + int(p["blocks_cached"]) > 0, "sealed blocks read"
        assert int(p["segments_read"]) >= 3
        assert int(p["rows_scanned"]) >= 120
        assert (int(p["bytes_read"]) > 0) == (int(p["blocks_decoded"]) > 0)
    assert count["scan_ms"] == count["run_ms"]
    srv.stop()

    off = server_factory(args=["--slow-query", "0s"])
    r = off.stub(off.add_key("acme", "reader"))
    r.Search(a.SearchRequest())
    m = off.metrics()
    assert m.get("hodei_slow_query_threshold_seconds") == 0
    assert m.get("hodei_slow_queries_total", method="Search") == 0
    assert not off.slow_query_lines()
    off.stop()

    p = subprocess.run([str(hodei.DAEMON), "--slow-query", "soon"], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 2, p.stderr
    assert 'invalid value "soon" for --slow-query' in p.stderr


def test_log_rate_bounds_the_lines(server_factory, stubs):
    """--log-rate 1: of 20 slow searches on one connection, at most one line
    per second is written; every other one is counted as suppressed. A rate
    of 0 is refused before anything is created (exit 2)."""
    a = stubs.audit_pb2
    srv = server_factory(args=["--slow-query", "1ns", "--log-rate", "1"])
    r = srv.stub(srv.add_key("acme", "reader"))
    t0 = time.monotonic()
    for _ in range(20):
        r.Search(a.SearchRequest())
    elapsed = time.monotonic() - t0
    m = srv.metrics()
    assert m.get("hodei_log_lines_per_second_max") == 1
    assert m.get("hodei_slow_queries_total", method="Search") == 20
    written = srv.slow_query_lines()
    assert len(written) + m.get("hodei_log_lines_suppressed_total") == 20
    assert len(written) <= int(elapsed) + 2, (len(written), elapsed)
    srv.stop()

    data = Path(srv.dir) / "refused"
    p = subprocess.run([str(hodei.DAEMON), "--log-rate", "0", "--data-dir", str(data)],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2, p.stderr
    assert "log rate >= 1" in p.stderr
    assert not data.exists(), "a refused start created its data directory"
