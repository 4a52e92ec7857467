# SPDX-License-Identifier: Apache-2.0
"""kill -9 of the server under network load from several clients (DESIGN.md
§2.1-§2.2, issue #3): after the restart every event a client saw acked is
there exactly once at the acked seq, every tenant's chain recomputes and
verifies, and each unacked request is stored whole or not at all."""
import os
import random
import threading

import grpc
import pytest

import hodei
from hodei import check_chain, events

TENANTS = [f"crash-{i}" for i in range(6)]


class Load:
    """Client threads, each on its own connection, appending small batches
    to random tenants until stopped; some use Append, some AppendStream.
    Records every request with its outcome."""

    def __init__(self, srv, keys, clients=6, batch=4, seed=1):
        self.srv, self.keys, self.batch = srv, keys, batch
        self.acked = []     # (tenant, [event ids], AppendResponse)
        self.unacked = []   # (tenant, [event ids], status code)
        self.errors = []
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.seed = seed
        self.threads = [threading.Thread(target=self._run, args=(c,), daemon=True)
                        for c in range(clients)]

    def start(self):
        for t in self.threads:
            t.start()

    def count(self):
        with self.lock:
            return len(self.acked)

    def join(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join(120)
            assert not t.is_alive(), "a client thread hung"

    def _record(self, tenant, evs, resp=None, code=None):
        with self.lock:
            if resp is not None:
                self.acked.append((tenant, [e.event_id for e in evs], resp))
            else:
                self.unacked.append((tenant, [e.event_id for e in evs], code))

    def _run(self, c):
        try:
            self._loop(c)
        except Exception as e:  # anything but a status is a test failure
            self.errors.append(f"client {c}: {e!r}")

    def _loop(self, c):
        a = hodei.pb().audit_pb2
        rng = random.Random(self.seed * 1000 + c)
        ch = self.srv.channel()
        n = 0
        while not self.stop_flag.is_set():
            t = rng.choice(TENANTS)
            st = self.srv.stub(self.keys[t], channel=ch, timeout=30)
            if c % 3 == 2:
                self._stream(st, t, c, n)
                n += 50
                continue
            evs = events(self.batch, start=n, actor_id=f"client-{c}")
            n += self.batch
            try:
                self._record(t, evs, resp=st.Append(a.AppendRequest(events=evs)))
            except grpc.RpcError as e:
                self._record(t, evs, code=e.code())
                if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED,
                                    grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL,
                                    grpc.StatusCode.DEADLINE_EXCEEDED):
                    self.errors.append(f"client {c}: {e.code()} {e.details()}")
                return  # the server is gone: this client is done

    def _stream(self, st, t, c, n):
        a = hodei.pb().audit_pb2
        batches = [events(self.batch, start=n + i * self.batch, actor_id=f"client-{c}")
                   for i in range(10)]
        sent = []

        def gen():
            for b in batches:
                if self.stop_flag.is_set():
                    return
                sent.append(b)
                yield a.AppendRequest(events=b)

        got = 0
        try:
            for resp in st.AppendStream(gen()):
                self._record(t, batches[got], resp=resp)
                got += 1
        except grpc.RpcError as e:
            for b in sent[got:]:
                self._record(t, b, code=e.code())


def check_after_restart(srv, load):
    """Every acked event exactly once at its acked seq; unacked requests
    whole or absent; chains recompute and verify."""
    stored = {t: srv.stored(t) for t in TENANTS}
    for t in TENANTS:
        final = check_chain(stored[t], t)
        v = srv.verify(t)
        assert v.ok, f"{t}: Verify says {v.problem!r} at {v.first_bad_seq}"
        assert v.events_checked == len(stored[t]) and v.chain_hash == final
    index = {}
    for t in TENANTS:
        for s in stored[t]:
            key = (t, s.event.event_id)
            assert key not in index, f"{t}: event stored twice"
            index[key] = s
    for t, ids, resp in load.acked:
        assert resp.accepted == len(ids) and resp.duplicates == 0
        for k, eid in enumerate(ids):
            s = index.get((t, eid))
            assert s is not None, f"{t}: acked event (seq {resp.first_seq + k}) lost"
            assert s.seq == resp.first_seq + k, f"{t}: acked at seq {resp.first_seq + k}, stored at {s.seq}"
        assert index[(t, ids[-1])].chain_hash == resp.chain_hash
    for t, ids, code in load.unacked:
        present = [(t, eid) in index for eid in ids]
        assert all(present) or not any(present), \
            f"{t}: an unacked request ({code}) is stored in part: {present}"


@pytest.mark.slow
def test_kill9_under_load(server_factory, stubs):
    """Five kill -9 rounds at random points (seeded: HODEI_IT_SEED), with
    seals every 200 rows or 500 ms so that the kills land in WAL writes,
    group commits and seals alike."""
    seed = int(os.environ.get("HODEI_IT_SEED", "20261128"))
    rng = random.Random(seed)
    print(f"HODEI_IT_SEED={seed}")
    srv = server_factory(start=False, seal_age="500ms", args=["--seal-rows", "200"])
    keys = {t: srv.add_key(t, "writer") for t in TENANTS}
    srv.start()
    loads = []
    for r in range(5):
        load = Load(srv, keys, seed=rng.randrange(1 << 30))
        load.start()
        target = rng.randint(50, 600)
        hodei.wait_until(lambda: load.count() >= target or load.errors, 120,
                         f"{target} acked requests before the kill (round {r})")
        srv.kill()
        load.join()
        assert not load.errors, load.errors
        loads.append(load)
        srv.start()
        merged = Load(srv, keys)
        for done in loads:
            merged.acked += done.acked
            merged.unacked += done.unacked
        check_after_restart(srv, merged)
