# SPDX-License-Identifier: Apache-2.0
"""Tenant isolation (DESIGN.md §2.4, issue #3): keys of tenant A never read,
verify or write tenant B, whatever the filters or page tokens, tampered
tokens included. Page tokens follow ADR 0005: bound to the tenant, the
filters and the direction; any altered bit is INVALID_ARGUMENT."""
import grpc
import pytest

import hodei
from hodei import event, events, search_all, status_of

C = grpc.StatusCode


@pytest.fixture
def two_tenants(server, stubs):
    """Tenants A and B with the same actors, resources and actions, so that
    every filter matches in both; returns a namespace of keys and events."""
    a = stubs.audit_pb2
    ns = hodei.SimpleNamespace()
    ns.keys = {}
    ns.sent = {}
    for t in ("tenant-a", "tenant-b"):
        ns.keys[t] = {r: server.add_key(t, r) for r in ("writer", "reader", "admin")}
        evs = events(12, actor_id="alice", resource_type="doc", action="doc.read")
        for i, e in enumerate(evs):
            e.resource_id = f"shared-{i % 3}"
        server.stub(ns.keys[t]["writer"]).Append(a.AppendRequest(events=evs))
        ns.sent[t] = evs
    return ns


def test_reads_see_only_own_tenant(server, stubs, two_tenants):
    a = stubs.audit_pb2
    ra = server.stub(two_tenants.keys["tenant-a"]["reader"])
    a_ids = {e.event_id for e in two_tenants.sent["tenant-a"]}
    b_sent = two_tenants.sent["tenant-b"]
    filter_sets = [
        {}, dict(actor_id="alice"), dict(resource_type="doc"), dict(action="doc.read"),
        dict(resource_id="shared-1"), dict(outcome=a.OUTCOME_SUCCESS),
        dict(from_ns=1, to_ns=2**62), dict(limit=1000), dict(oldest_first=False),
    ]
    for f in filter_sets:
        got = search_all(ra, **f)
        assert got, f"filters {f} found nothing in A"
        assert all(s.tenant_id == "tenant-a" for s in got), f"filters {f}"
        assert {s.event.event_id for s in got} <= a_ids, f"filters {f} returned B's events"
    # B's event ids, looked up exactly with A's key: nothing.
    for e in b_sent:
        assert ra.Search(a.SearchRequest(event_id=e.event_id)).events == []
    # Verify covers A's events only.
    v = ra.Verify(a.VerifyRequest())
    assert v.ok and v.events_checked == 12
    v = ra.Verify(a.VerifyRequest(from_seq=1, to_seq=12))
    assert v.ok and v.events_checked == 12


def test_keys_of_a_never_reach_b(server, stubs, two_tenants):
    a = stubs.audit_pb2
    ka = two_tenants.keys["tenant-a"]
    for role in ("writer", "reader"):
        st = server.stub(ka[role], "tenant-b")
        for name, call in [
            ("Append", lambda: st.Append(a.AppendRequest(events=events(1)))),
            ("AppendStream", lambda: list(st.AppendStream(iter([a.AppendRequest(events=events(1))])))),
            ("Search", lambda: st.Search(a.SearchRequest())),
            ("Verify", lambda: st.Verify(a.VerifyRequest())),
        ]:
            code, details, result = status_of(call)
            assert code == C.PERMISSION_DENIED, (role, name, code, details)
            assert result is None
    got = server.stored("tenant-b")
    assert [e.event_id for e in two_tenants.sent["tenant-b"]] == [s.event.event_id for s in got]


def test_same_event_id_in_two_tenants_is_two_events(server, stubs):
    a = stubs.audit_pb2
    ev = event(1)
    for t in ("x1", "x2"):
        r = server.admin(t).Append(a.AppendRequest(events=[ev]))
        assert (r.accepted, r.duplicates, r.first_seq) == (1, 0, 1)
    for t in ("x1", "x2"):
        got = server.stored(t)
        assert len(got) == 1 and got[0].tenant_id == t and got[0].event.event_id == ev.event_id
    # Different tenant in the hash: different chain values.
    assert server.stored("x1")[0].chain_hash != server.stored("x2")[0].chain_hash


def first_page_token(stub, **filters):
    a = hodei.pb().audit_pb2
    resp = stub.Search(a.SearchRequest(limit=3, **filters))
    assert len(resp.events) == 3 and resp.next_page_token, "expected a second page"
    return resp.next_page_token


def assert_token_refused(stub, token, what, **filters):
    a = hodei.pb().audit_pb2
    code, details, resp = status_of(lambda: stub.Search(a.SearchRequest(limit=3, page_token=token, **filters)))
    assert code == C.INVALID_ARGUMENT, f"{what}: {code.name} {details!r}"
    assert resp is None


def test_page_token_of_a_with_key_of_b(server, two_tenants):
    ka, kb = two_tenants.keys["tenant-a"], two_tenants.keys["tenant-b"]
    tok = first_page_token(server.stub(ka["reader"]))
    assert_token_refused(server.stub(kb["reader"]), tok, "A's token with B's reader")
    assert_token_refused(server.stub(kb["admin"], "tenant-b"), tok, "A's token with an admin on B")
    assert_token_refused(server.stub(server.admin_key, "tenant-b"), tok, "A's token, admin key, B header")
    # Still good for A.
    a = hodei.pb().audit_pb2
    resp = server.stub(ka["reader"]).Search(a.SearchRequest(limit=3, page_token=tok))
    assert len(resp.events) == 3 and all(s.tenant_id == "tenant-a" for s in resp.events)


def test_page_token_bound_to_filters_and_direction(server, two_tenants):
    r = server.stub(two_tenants.keys["tenant-a"]["reader"])
    tok = first_page_token(r, actor_id="alice")
    assert_token_refused(r, tok, "other actor_id", actor_id="bob")
    assert_token_refused(r, tok, "filter dropped")
    assert_token_refused(r, tok, "other action", actor_id="alice", action="doc.write")
    assert_token_refused(r, tok, "other direction", actor_id="alice", oldest_first=True)
    assert_token_refused(r, tok, "other time range", actor_id="alice", from_ns=1)


def test_tampered_page_tokens(server, two_tenants):
    a = hodei.pb().audit_pb2
    r = server.stub(two_tenants.keys["tenant-a"]["reader"])
    tok = first_page_token(r)
    tampered = []
    for i in range(len(tok)):
        for bit in (0x01, 0x80):
            t = bytearray(tok)
            t[i] ^= bit
            tampered.append((f"byte {i} ^ {bit:#x}", bytes(t)))
    tampered += [
        ("truncated by 1", tok[:-1]),
        ("first byte only", tok[:1]),
        ("one byte appended", tok + b"\x00"),
        ("doubled", tok + tok),
        ("all zero", bytes(len(tok))),
        ("all ff", b"\xff" * len(tok)),
        ("random", hodei.secrets.token_bytes(len(tok))),
        ("long random", hodei.secrets.token_bytes(4096)),
    ]
    for what, t in tampered:
        assert_token_refused(r, t, what)
    # The original still works: the refusals changed nothing.
    resp = r.Search(a.SearchRequest(limit=3, page_token=tok))
    assert len(resp.events) == 3


def test_page_tokens_of_b_found_by_walking_a(server, two_tenants):
    """Every token A's walk produces is refused on B, and walking B with its
    own tokens never yields A's events."""
    a = hodei.pb().audit_pb2
    ra = server.stub(two_tenants.keys["tenant-a"]["reader"])
    rb = server.stub(two_tenants.keys["tenant-b"]["reader"])
    token, tokens = b"", []
    while True:
        resp = ra.Search(a.SearchRequest(limit=2, page_token=token))
        token = resp.next_page_token
        if not token:
            break
        tokens.append(token)
        assert len(tokens) < 50
    assert len(tokens) >= 5
    for t in tokens:
        assert_token_refused(rb, t, "A's token on B")
    got = search_all(rb, limit=2, oldest_first=False)
    assert len(got) == 12 and all(s.tenant_id == "tenant-b" for s in got)
