# SPDX-License-Identifier: Apache-2.0
"""Retries (DESIGN.md §2.3, issue #3): re-sending events with event ids
already stored for the tenant returns them as duplicates and stores nothing
twice, also across a restart, through AppendStream and under concurrency;
hodei_events_duplicate_total moves by exactly the duplicates sent."""
import threading

import pytest

from hodei import check_chain, event, events


def counters(srv, tenant):
    m = srv.metrics()
    return (m.get("hodei_events_appended_total", tenant=tenant),
            m.get("hodei_events_duplicate_total", tenant=tenant))


def test_resend_same_batch(server, stubs):
    a = stubs.audit_pb2
    w = server.stub(server.add_key("r", "writer"))
    batch = events(5)
    first = w.Append(a.AppendRequest(events=batch))
    assert (first.accepted, first.duplicates, first.first_seq, first.last_seq) == (5, 0, 1, 5)
    c0 = counters(server, "r")
    again = w.Append(a.AppendRequest(events=batch))
    assert (again.accepted, again.duplicates) == (0, 5)
    assert counters(server, "r") == (c0[0], c0[1] + 5)
    got = server.stored("r")
    assert [s.event for s in got] == batch
    final = check_chain(got, "r")
    assert first.chain_hash == final
    # The next new event continues at seq 6.
    nxt = w.Append(a.AppendRequest(events=[event(9)]))
    assert (nxt.accepted, nxt.first_seq) == (1, 6)


def test_partial_overlap(server, stubs):
    a = stubs.audit_pb2
    w = server.stub(server.add_key("p", "writer"))
    old = events(3)
    w.Append(a.AppendRequest(events=old))
    new = events(2, start=10)
    mixed = [new[0], old[1], old[0], new[1], old[2]]
    c0 = counters(server, "p")
    resp = w.Append(a.AppendRequest(events=mixed))
    assert (resp.accepted, resp.duplicates) == (2, 3)
    assert (resp.first_seq, resp.last_seq) == (4, 5)
    assert counters(server, "p") == (c0[0] + 2, c0[1] + 3)
    got = server.stored("p")
    assert [s.event.event_id for s in got] == [e.event_id for e in old + new]
    assert resp.chain_hash == check_chain(got, "p")


def test_duplicate_within_one_batch(server, stubs):
    a = stubs.audit_pb2
    w = server.stub(server.add_key("d", "writer"))
    e = event(1)
    resp = w.Append(a.AppendRequest(events=[e, event(2), e]))
    assert (resp.accepted, resp.duplicates) == (2, 1)
    got = server.stored("d")
    assert [s.event.event_id for s in got].count(e.event_id) == 1 and len(got) == 2
    check_chain(got, "d")


def test_server_assigned_ids_never_duplicate(server, stubs):
    a = stubs.audit_pb2
    w = server.stub(server.add_key("n", "writer"))
    batch = events(4, event_id=b"")
    assert w.Append(a.AppendRequest(events=batch)).accepted == 4
    assert w.Append(a.AppendRequest(events=batch)).accepted == 4
    got = server.stored("n")
    assert len({s.event.event_id for s in got}) == 8


def test_retry_after_restart(server, stubs):
    a = stubs.audit_pb2
    wkey = server.add_key("rs", "writer")
    batch = events(6)
    server.stub(wkey).Append(a.AppendRequest(events=batch[:4]))
    assert server.stop() == 0
    server.start()
    resp = server.stub(wkey).Append(a.AppendRequest(events=batch))
    assert (resp.accepted, resp.duplicates, resp.first_seq, resp.last_seq) == (2, 4, 5, 6)
    got = server.stored("rs")
    assert [s.event.event_id for s in got] == [e.event_id for e in batch]
    check_chain(got, "rs")


def test_retry_after_kill(server, stubs):
    """A retry after a crash (the client saw the ack, or did not): the
    recovered server still knows the ids."""
    a = stubs.audit_pb2
    wkey = server.add_key("rk", "writer")
    batch = events(5)
    server.stub(wkey).Append(a.AppendRequest(events=batch))
    server.kill()
    server.start()
    resp = server.stub(wkey).Append(a.AppendRequest(events=batch))
    assert (resp.accepted, resp.duplicates) == (0, 5)
    assert len(server.stored("rk")) == 5


def test_retry_through_append_stream(server, stubs):
    a = stubs.audit_pb2
    w = server.stub(server.add_key("st", "writer"))
    batches = [events(3, start=i * 3) for i in range(10)]
    reqs = [a.AppendRequest(events=b) for b in batches]
    out1 = list(w.AppendStream(iter(reqs)))
    out2 = list(w.AppendStream(iter(reqs)))
    assert [(r.accepted, r.duplicates) for r in out1] == [(3, 0)] * 10
    assert [(r.accepted, r.duplicates) for r in out2] == [(0, 3)] * 10
    got = server.stored("st")
    assert len(got) == 30
    check_chain(got, "st")


@pytest.mark.slow
def test_concurrent_retries_store_once(server, stubs):
    """8 clients send the same 20 batches at once: each event is stored
    exactly once, and accepted + duplicates add up across the clients."""
    a = stubs.audit_pb2
    wkey = server.add_key("cc", "writer")
    batches = [events(5, start=i * 5) for i in range(20)]
    results, errors = [], []

    def client():
        try:
            st = server.stub(wkey)
            for b in batches:
                results.append(st.Append(a.AppendRequest(events=b)))
        except Exception as e:
            errors.append(repr(e))

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert sum(r.accepted for r in results) == 100
    assert sum(r.duplicates for r in results) == 7 * 100
    got = server.stored("cc")
    ids = [s.event.event_id for s in got]
    assert len(ids) == 100 and set(ids) == {e.event_id for b in batches for e in b}
    check_chain(got, "cc")
    assert counters(server, "cc") == (100, 700)
