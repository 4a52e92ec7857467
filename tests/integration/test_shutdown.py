# SPDX-License-Identifier: Apache-2.0
"""SIGTERM (DESIGN.md §6, issue #3): the server becomes not-ready at once
(/readyz 503, Health NOT_SERVING), refuses calls that start after the signal
with UNAVAILABLE (not a broken stream, not CANCELLED), completes and acks
in-flight appends, and exits 0; nothing acked is lost. Also /readyz 503
during recovery.

"After the signal" is made certain without timing: a call counts as started
after the signal only when it starts after /readyz has answered 503 (or
after the admin port stopped answering), i.e. after the server showed it had
seen the signal."""
import queue
import signal
import threading

import grpc
import pytest

import hodei
from hodei import check_chain, event, events, status_of

C = grpc.StatusCode


def test_sigterm_idle_exits_zero(server, stubs):
    a = stubs.audit_pb2
    w = server.stub(server.add_key("idle", "writer"))
    w.Append(a.AppendRequest(events=events(3)))
    assert server.stop() == 0
    server.start()
    assert len(server.stored("idle")) == 3


def _not_ready_seen(srv):
    """True once the server shows it has seen SIGTERM: /readyz is 503 or
    the admin port no longer answers."""
    status, _ = srv.readyz()
    return status == 503 or status is None


@pytest.mark.slow
def test_sigterm_under_load(server_factory, stubs):
    a = stubs.audit_pb2
    srv = server_factory(start=False, args=["--grace", "20s"])
    tenants = [f"term-{i}" for i in range(4)]
    keys = {t: srv.add_key(t, "writer") for t in tenants}
    srv.start()

    after_signal = threading.Event()
    lock = threading.Lock()
    calls, errors = [], []  # calls: (started_after, tenant, ids, code, details, resp)

    def client(c):
        ch = srv.channel()
        n = late_calls = 0
        try:
            while late_calls < 5:
                t = tenants[(c + n) % len(tenants)]
                st = srv.stub(keys[t], channel=ch, timeout=60)
                evs = events(5, start=n, actor_id=f"c{c}")
                n += 5
                late = after_signal.is_set()
                code, details, resp = status_of(lambda: st.Append(a.AppendRequest(events=evs)))
                with lock:
                    calls.append((late, t, [e.event_id for e in evs], code, details, resp))
                late_calls += late
        except Exception as e:
            errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(6)]
    for t in threads:
        t.start()
    try:
        hodei.wait_until(lambda: sum(c[3] == C.OK for c in calls) >= 200 or errors, 120,
                         "200 acked requests")
        srv.signal(signal.SIGTERM)
        hodei.wait_until(lambda: _not_ready_seen(srv), 30, "/readyz 503 after SIGTERM")
    finally:
        after_signal.set()  # also ends the clients when a wait failed
        for t in threads:
            t.join(120)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors
    rc = srv.proc.wait(60)
    srv.expect_dead = True
    assert rc == 0, f"exit status {rc} after SIGTERM"

    bad = [(late, code.name, d) for late, _, _, code, d, _ in calls if code not in (C.OK, C.UNAVAILABLE)]
    assert not bad, f"calls failed with something other than UNAVAILABLE: {bad[:5]}"
    late_ok = [c for c in calls if c[0] and c[3] == C.OK]
    assert not late_ok, f"{len(late_ok)} calls started after /readyz said 503 were accepted"
    assert sum(1 for c in calls if c[0]) >= 30

    srv.start()
    stored = {}
    for t in tenants:
        got = srv.stored(t)
        check_chain(got, t)
        stored[t] = {s.event.event_id: s for s in got}
        assert len(stored[t]) == len(got), f"{t}: an event is stored twice"
    for late, t, ids, code, details, resp in calls:
        if code == C.OK:
            for k, eid in enumerate(ids):
                assert eid in stored[t], f"{t}: acked event lost over SIGTERM"
                assert stored[t][eid].seq == resp.first_seq + k
        else:
            present = [eid in stored[t] for eid in ids]
            assert not any(present), f"{t}: a request refused with {code.name} ({details}) was stored"


def test_sigterm_readyz_503_while_stream_in_flight(server_factory, stubs):
    """With an AppendStream open the server stays up in its grace period,
    its admin port answers /readyz 503 (never 200), Health says not serving
    or refuses, new calls get UNAVAILABLE; the stream's acked requests are
    kept, and it exits 0."""
    a = stubs.audit_pb2
    h = stubs.health_pb2
    srv = server_factory(args=["--grace", "30s"])
    key = srv.add_key("inflight", "writer")
    q = queue.Queue()

    def gen():
        while True:
            item = q.get(timeout=60)
            if item is None:
                return
            yield item

    call = srv.stub(key, timeout=120).AppendStream(gen())
    q.put(a.AppendRequest(events=events(3)))
    first = next(call)
    assert first.accepted == 3

    srv.signal(signal.SIGTERM)
    statuses = []

    def seen():
        st, _ = srv.readyz()
        statuses.append(st)
        return st == 503 or st is None or not srv.running()

    hodei.wait_until(seen, 30, "/readyz to change after SIGTERM")
    assert statuses[-1] == 503, \
        f"/readyz answers {statuses[-1:]} after SIGTERM while a stream is open (server running: {srv.running()})"
    assert srv.running()

    code, details, resp = status_of(lambda: srv.health().Check(h.HealthCheckRequest(), timeout=10))
    assert code == C.UNAVAILABLE or (code == C.OK and resp.status != h.HealthCheckResponse.SERVING), \
        (code, details, resp)
    late = srv.stub(key, timeout=30)
    code, details, _ = status_of(lambda: late.Append(a.AppendRequest(events=events(1))))
    assert code == C.UNAVAILABLE, (code, details)

    # The open stream: one more request is either still served or refused
    # with UNAVAILABLE; the stream ends cleanly either way.
    q.put(a.AppendRequest(events=events(2, start=10)))
    q.put(None)
    acked = [first]

    def drain():
        for r in call:
            acked.append(r)

    code, details, _ = status_of(drain)
    assert code in (C.OK, C.UNAVAILABLE), (code, details)
    assert srv.proc.wait(60) == 0
    srv.expect_dead = True
    srv.start()
    assert len(srv.stored("inflight")) == sum(r.accepted for r in acked)


def test_health_and_readyz_while_running(server, stubs):
    h = stubs.health_pb2
    assert server.readyz()[0] == 200
    assert server.get("/healthz")[0] == 200
    assert server.health().Check(h.HealthCheckRequest()).status == h.HealthCheckResponse.SERVING
    assert server.get("/no-such-page")[0] == 404


@pytest.mark.slow
def test_readyz_503_during_recovery(server_factory, stubs):
    """A large WAL (seal only by age, 1 h) is replayed at start. While it
    is, /readyz is 503 (never 200 then 503 again), and gRPC calls made then
    are answered UNAVAILABLE (Health: NOT_SERVING) rather than held until
    recovery ends.

    No timing is asserted: the admin port is polled from the moment the
    process starts, and each gRPC call made while /readyz is 503 is checked
    only if its answer arrived while /readyz still said 503 afterwards (an
    answer given before the server was ready). The WAL is doubled until
    both happen, a bounded number of times."""
    a = stubs.audit_pb2
    h = stubs.health_pb2
    srv = server_factory(start=False, seal_age="1h",
                         args=["--seal-rows", "10000000", "--seal-bytes", "256MiB"])
    key = srv.add_key("wal", "writer")
    srv.start()
    w = srv.stub(key)
    total = 0
    chunk = [event(i, details_json=b'"' + b"d" * 400 + b'"') for i in range(2000)]
    seen_503 = answered_early = False
    for attempt in range(4):
        for _ in range(10 * 2 ** attempt):
            for e in chunk:
                e.event_id = hodei.uuid7()
            w.Append(a.AppendRequest(events=chunk))
            total += len(chunk)
        srv.kill()
        srv.close_channels()
        srv.start(wait_ready=False)
        health = srv.health()
        stub = srv.stub(key, timeout=120)
        statuses, calls = [], []  # calls: [name, future, answered while 503]

        def poll():
            if srv.proc.poll() is not None:
                raise AssertionError(f"server exited with {srv.proc.returncode} during recovery")
            st, _ = srv.readyz()
            statuses.append(st)
            if st == 503:
                for c in calls:
                    if c[1].done() and c[2] is None:
                        c[2] = True  # done, and the server still says 503 now
                if not calls:
                    calls.append(["Health", health.Check.future(h.HealthCheckRequest()), None])
                    calls.append(["Append", stub.Append.future(
                        a.AppendRequest(events=[event(0, event_id=hodei.uuid7())])), None])
            return st == 200

        hodei.wait_until(poll, 300, "/readyz 200 after recovery", interval_s=0.001)
        answered = [s for s in statuses if s is not None]
        assert all(s in (503, 200) for s in answered), answered
        first_200 = answered.index(200)
        assert 503 not in answered[first_200:], "ready, then not ready again"
        seen_503 |= 503 in answered
        for name, fut, early in calls:
            code, details, resp = status_of(lambda: fut.result())
            if name == "Health":
                if early:
                    assert code == C.UNAVAILABLE or (
                        code == C.OK and resp.status != h.HealthCheckResponse.SERVING), \
                        f"Health/Check answered {code.name} {resp} while /readyz said 503"
            else:
                assert code in (C.OK, C.UNAVAILABLE), (code, details)
                if early:
                    assert code == C.UNAVAILABLE, f"Append answered {code.name} while /readyz said 503"
                if code == C.OK:
                    total += 1
        if seen_503 and calls and all(c[2] for c in calls):
            answered_early = True
            break
        w = srv.stub(key)
    assert seen_503, (f"/readyz never answered 503 while {total} WAL events were replayed: "
                      "does the admin port open only after recovery?")
    assert answered_early, ("gRPC calls made while /readyz said 503 were not answered until "
                            f"recovery ended (WAL of up to {total} events): not-ready calls "
                            "should get UNAVAILABLE (Health NOT_SERVING) at once")
    # Every event is back; nothing refused during recovery was stored.
    assert len(srv.stored("wal")) == total
