# SPDX-License-Identifier: Apache-2.0
"""Every status code path of DESIGN.md §5 (issue #3), table-driven: each
field limit at its maximum (stored, byte for byte) and one past it
(INVALID_ARGUMENT naming events[i].<field>), invalid UTF-8 in every string
field (encoded by hand: the protobuf library refuses to), invalid IPs,
trace ids, event ids and details_json, too many events, messages over the
size limit, unknown methods, missing/unknown keys, wrong roles, admin keys
with and without x-hodei-tenant, gzip-compressed messages.

After every refusal: nothing of the request is stored (the case's own
tenant is still empty and its next event gets seq 1), the global
hodei_events_appended_total did not move, and the server still answers.
Most cases share one server per module and use a tenant of their own.
"""
import itertools
import time

import grpc
import pytest

import hodei
from hodei import event, events, raw_append_request, raw_valid_event, status_of

C = grpc.StatusCode
APPEND = "/hodei.audit.v1.AuditService/Append"
_ids = itertools.count()


@pytest.fixture(autouse=True)
def _close_connections(request):
    """The module's shared server would otherwise collect one connection
    per test."""
    yield
    if "shared_server" in request.fixturenames:
        request.getfixturevalue("shared_server").close_channels()


def fresh_tenant():
    return f"st-{next(_ids)}-{hodei.secrets.token_hex(3)}"


def append_one(srv, tenant):
    a = hodei.pb().audit_pb2
    return srv.admin(tenant).Append(a.AppendRequest(events=[event(999)]))


def assert_refused(srv, tenant, call, code, needles=()):
    """Runs call(), which must fail with code and a message containing every
    needle; then checks that nothing was stored."""
    before = srv.metrics().sum("hodei_events_appended_total")
    got, details, _ = status_of(call)
    assert got == code, f"status {got.name}: {details!r}; want {code.name}"
    for n in needles:
        assert n in details, f"message {details!r} does not name {n!r}"
    assert srv.metrics().sum("hodei_events_appended_total") == before, \
        "hodei_events_appended_total moved on a refused request"
    if tenant is not None:
        assert srv.stored(tenant) == [], f"tenant {tenant} has events after a refusal"
        assert srv.verify(tenant).events_checked == 0
        # The server is alive and the refused request used no seq.
        resp = append_one(srv, tenant)
        assert resp.first_seq == 1, "a refused request consumed a sequence number"
    return details


def assert_stored_one(srv, tenant, call, sent):
    resp = call()
    assert resp.accepted == len(sent) and resp.first_seq == 1
    got = sorted(srv.stored(tenant), key=lambda s: s.seq)
    assert [s.event for s in got] == list(sent), "stored events differ from those sent"
    hodei.check_chain(got, tenant)


def batch_with(bad, index=3, n=5):
    evs = events(n)
    evs[index] = bad
    return evs


# ---------------------------------------------------------------------------
# Field limits ±1 (DESIGN.md §5). Each builder gives the event overrides for
# a value of exactly n bytes (or n items).


def _json_string(n):
    return b'"' + b"j" * (n - 2) + b'"'


def _utf8_bytes(n):
    # Two-byte characters: limits count bytes, not characters.
    return "\u00e9" * (n // 2) + "x" * (n % 2)


LIMITS = [
    # (id, field named in the message, maximum, builder)
    ("actor_id", "actor_id", 512, lambda n: dict(actor_id="a" * n)),
    ("actor_id-utf8", "actor_id", 512, lambda n: dict(actor_id=_utf8_bytes(n))),
    ("resource_id", "resource_id", 512, lambda n: dict(resource_id="r" * n)),
    ("action", "action", 128, lambda n: dict(action="x" * n)),
    ("actor_type", "actor_type", 128, lambda n: dict(actor_type="t" * n)),
    ("resource_type", "resource_type", 128, lambda n: dict(resource_type="t" * n)),
    ("user_agent", "user_agent", 512, lambda n: dict(user_agent="u" * n)),
    ("user_agent-utf8", "user_agent", 512, lambda n: dict(user_agent=_utf8_bytes(n))),
    ("request_id", "request_id", 128, lambda n: dict(request_id="q" * n)),
    ("attributes-count", "attributes", 32,
     lambda n: dict(attributes=[(f"k{i}", "v") for i in range(n)])),
    ("attributes-key", "attributes", 64, lambda n: dict(attributes=[("k" * n, "v")])),
    ("attributes-value", "attributes", 1024, lambda n: dict(attributes=[("k", "v" * n)])),
    ("details_json", "details_json", 16384, lambda n: dict(details_json=_json_string(n))),
]


@pytest.mark.parametrize("case", LIMITS, ids=[c[0] for c in LIMITS])
def test_field_limit_at_max_is_stored(shared_server, stubs, case):
    _, _, limit, build = case
    t = fresh_tenant()
    sent = batch_with(event(3, **build(limit)))
    a = stubs.audit_pb2
    assert_stored_one(shared_server, t,
                      lambda: shared_server.admin(t).Append(a.AppendRequest(events=sent)), sent)


@pytest.mark.parametrize("case", LIMITS, ids=[c[0] for c in LIMITS])
def test_field_limit_plus_one_is_refused(shared_server, stubs, case):
    _, field, limit, build = case
    t = fresh_tenant()
    sent = batch_with(event(3, **build(limit + 1)))
    a = stubs.audit_pb2
    assert_refused(shared_server, t,
                   lambda: shared_server.admin(t).Append(a.AppendRequest(events=sent)),
                   C.INVALID_ARGUMENT, ("events[3]", field))


# ---------------------------------------------------------------------------
# Values: valid ones are stored, invalid ones refused naming the field.

VALID_VALUES = [
    ("ipv4", dict(source_ip="192.0.2.1")),
    ("ipv4-zero", dict(source_ip="0.0.0.0")),
    ("ipv6-loopback", dict(source_ip="::1")),
    ("ipv6", dict(source_ip="2001:db8::42")),
    ("ipv6-mapped", dict(source_ip="::ffff:192.0.2.1")),
    ("ipv6-longest", dict(source_ip="ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255")),
    ("ip-empty", dict(source_ip="")),
    ("trace-lower", dict(trace_id="4bf92f3577b34da6a3ce929d0e0e4736")),
    ("trace-upper", dict(trace_id="4BF92F3577B34DA6A3CE929D0E0E4736")),
    ("json-null", dict(details_json=b"null")),
    ("json-number", dict(details_json=b"-1.5e3")),
    ("json-string", dict(details_json=b'"x"')),
    ("json-array", dict(details_json=b"[]")),
    ("json-whitespace", dict(details_json=b' {"a": [1, true, null, {"b": "\\u00e9"}]}\n')),
    ("json-empty", dict(details_json=b"")),
    ("optional-strings-empty", dict(actor_type="", resource_type="", resource_id="",
                                    user_agent="", request_id="", attributes=[])),
    ("outcome-unspecified", dict(outcome=0)),
    ("outcome-denied", dict(outcome=3)),
    ("occurred-zero-epoch-plus-1", dict(occurred_at_ns=1)),
    ("nul-byte-kept", dict(actor_id="a\x00b", resource_id="\x00", details_json=b'"\\u0000"')),
    ("all-zero-event-id", dict(event_id=bytes(16))),
]


@pytest.mark.parametrize("case", VALID_VALUES, ids=[c[0] for c in VALID_VALUES])
def test_valid_value_is_stored(shared_server, stubs, case):
    t = fresh_tenant()
    sent = batch_with(event(3, **case[1]))
    a = stubs.audit_pb2
    if case[0] == "all-zero-event-id":
        # The nil UUID means "assign one" (ADR 0001): stored with a UUIDv7.
        resp = shared_server.admin(t).Append(a.AppendRequest(events=sent))
        assert resp.accepted == 5
        got = sorted(shared_server.stored(t), key=lambda s: s.seq)
        assert got[3].event.event_id not in (b"", bytes(16)) and len(got[3].event.event_id) == 16
        return
    assert_stored_one(shared_server, t,
                      lambda: shared_server.admin(t).Append(a.AppendRequest(events=sent)), sent)


def test_empty_request_is_refused(shared_server, stubs):
    a = stubs.audit_pb2
    t = fresh_tenant()
    assert_refused(shared_server, t, lambda: shared_server.admin(t).Append(a.AppendRequest()),
                   C.INVALID_ARGUMENT)


INVALID_VALUES = [
    ("actor_id-empty", "actor_id", dict(actor_id="")),
    ("action-empty", "action", dict(action="")),
    ("ip-999", "source_ip", dict(source_ip="999.1.1.1")),
    ("ip-3-octets", "source_ip", dict(source_ip="1.2.3")),
    ("ip-5-octets", "source_ip", dict(source_ip="1.2.3.4.5")),
    ("ip-name", "source_ip", dict(source_ip="localhost")),
    ("ip-space", "source_ip", dict(source_ip=" 1.2.3.4")),
    ("ip-zone", "source_ip", dict(source_ip="fe80::1%eth0")),
    ("ip-bad-v6", "source_ip", dict(source_ip="2001:db8:::1")),
    ("ip-cidr", "source_ip", dict(source_ip="10.0.0.0/8")),
    ("ip-nul", "source_ip", dict(source_ip="1.2.3.4\x00junk")),
    ("trace-31", "trace_id", dict(trace_id="4bf92f3577b34da6a3ce929d0e0e473")),
    ("trace-33", "trace_id", dict(trace_id="4bf92f3577b34da6a3ce929d0e0e47361")),
    ("trace-nonhex", "trace_id", dict(trace_id="4bf92f3577b34da6a3ce929d0e0e473g")),
    ("event_id-15", "event_id", dict(event_id=bytes(range(1, 16)))),
    ("event_id-17", "event_id", dict(event_id=bytes(range(1, 18)))),
    ("event_id-1", "event_id", dict(event_id=b"\x01")),
    ("outcome-4", "outcome", dict(outcome=4)),
    ("outcome-99", "outcome", dict(outcome=99)),
    ("occurred-negative", "occurred_at_ns", dict(occurred_at_ns=-1)),
    ("attr-key-empty", "attributes", dict(attributes=[("", "v")])),
    ("json-open", "details_json", dict(details_json=b"{")),
    ("json-two-values", "details_json", dict(details_json=b'{"a":1} {"b":2}')),
    ("json-trailing", "details_json", dict(details_json=b'{"a":1} x')),
    ("json-single-quotes", "details_json", dict(details_json=b"{'a':1}")),
    ("json-missing-value", "details_json", dict(details_json=b'{"a":}')),
    ("json-bare-word", "details_json", dict(details_json=b"nul")),
    ("json-unterminated", "details_json", dict(details_json=b"[1,2")),
    ("json-bad-utf8", "details_json", dict(details_json=b'"\xff"')),
    ("json-whitespace-only", "details_json", dict(details_json=b"  ")),
]


@pytest.mark.parametrize("case", INVALID_VALUES, ids=[c[0] for c in INVALID_VALUES])
def test_invalid_value_is_refused(shared_server, stubs, case):
    _, field, overrides = case
    t = fresh_tenant()
    sent = batch_with(event(3, **overrides))
    a = stubs.audit_pb2
    assert_refused(shared_server, t,
                   lambda: shared_server.admin(t).Append(a.AppendRequest(events=sent)),
                   C.INVALID_ARGUMENT, ("events[3]", field))


# ---------------------------------------------------------------------------
# Invalid UTF-8, hand-encoded (proto3 `string` fields).

BAD_UTF8 = [
    ("ff", b"\xff"),
    ("overlong", b"\xc0\xaf"),
    ("surrogate", b"\xed\xa0\x80"),
    ("truncated", b"ok\xe2\x82"),
    ("above-10ffff", b"\xf4\x90\x80\x80"),
]
UTF8_FIELDS = ["actor_id", "actor_type", "action", "resource_type", "resource_id",
               "source_ip", "user_agent", "request_id", "trace_id",
               "attributes.key", "attributes.value"]
UTF8_CASES = [(f, s) for f in UTF8_FIELDS for s in BAD_UTF8[:2]] + \
             [("actor_id", s) for s in BAD_UTF8[2:]]


@pytest.mark.parametrize("field,sample", UTF8_CASES,
                         ids=[f"{f}-{s[0]}" for f, s in UTF8_CASES])
def test_invalid_utf8_is_refused(shared_server, field, sample):
    bad = b"x" + sample[1]
    if field == "attributes.key":
        over = dict(attributes=[(bad, b"v")])
    elif field == "attributes.value":
        over = dict(attributes=[(b"k", bad)])
    else:
        over = {field: bad}
    body = raw_append_request([raw_valid_event(0), raw_valid_event(1, **over), raw_valid_event(2)])
    t = fresh_tenant()
    call = shared_server.raw(APPEND, shared_server.admin_key, t)
    assert_refused(shared_server, t, lambda: call(body), C.INVALID_ARGUMENT,
                   ("events[1]", field.split(".")[0]))


def test_hand_encoded_valid_request_is_stored(shared_server, stubs):
    """Control for the UTF-8 cases: the hand encoder builds requests the
    server accepts, so the refusals above are about UTF-8 only."""
    t = fresh_tenant()
    body = raw_append_request([raw_valid_event(0), raw_valid_event(1, actor_id="é✓".encode()),
                               raw_valid_event(2)])
    out = shared_server.raw(APPEND, shared_server.admin_key, t)(body)
    resp = stubs.audit_pb2.AppendResponse.FromString(out)
    assert resp.accepted == 3 and resp.first_seq == 1
    assert shared_server.stored(t)[1].event.actor_id == "é✓"


MALFORMED = [
    ("truncated-varint", b"\x0a\x80"),
    ("length-past-end", b"\x0a\x10\x1a\x01a"),
    ("field-0", b"\x00\x01"),
    ("event-truncated", hodei.pb_len(1, b"\x1a\x05ab")),
    ("garbage", bytes(range(256))),
]


@pytest.mark.parametrize("body", [m[1] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_protobuf_is_refused(shared_server, body):
    t = fresh_tenant()
    call = shared_server.raw(APPEND, shared_server.admin_key, t)
    assert_refused(shared_server, t, lambda: call(body), C.INVALID_ARGUMENT)


def test_invalid_event_refuses_whole_batch_in_stream(shared_server, stubs):
    """AppendStream: a request with an invalid event ends the stream with
    INVALID_ARGUMENT; earlier requests stay acked, nothing of the bad one or
    after it is stored."""
    a = stubs.audit_pb2
    t = fresh_tenant()
    good = events(2)
    reqs = [a.AppendRequest(events=good),
            a.AppendRequest(events=[event(5), event(6, actor_id="")]),
            a.AppendRequest(events=[event(7)])]
    responses = []

    def run():
        for r in shared_server.admin(t).AppendStream(iter(reqs)):
            responses.append(r)

    code, details, _ = status_of(run)
    assert code == C.INVALID_ARGUMENT, (code, details)
    assert "actor_id" in details
    assert len(responses) == 1 and responses[0].accepted == 2
    got = shared_server.stored(t)
    assert [s.event for s in got] == good


# ---------------------------------------------------------------------------
# Counts and sizes.


def test_max_events_default(shared_server, stubs):
    a = stubs.audit_pb2
    t = fresh_tenant()
    evs = [event(i, attributes=[], details_json=b"", user_agent="", request_id="")
           for i in range(hodei.DEFAULT_MAX_EVENTS + 1)]
    assert_refused(shared_server, t,
                   lambda: shared_server.admin(t).Append(a.AppendRequest(events=evs)),
                   C.RESOURCE_EXHAUSTED)
    t2 = fresh_tenant()
    resp = shared_server.admin(t2).Append(a.AppendRequest(events=evs[:-1]))
    assert resp.accepted == hodei.DEFAULT_MAX_EVENTS
    assert len(shared_server.stored(t2)) == hodei.DEFAULT_MAX_EVENTS


def test_max_events_flag(server_factory, stubs):
    a = stubs.audit_pb2
    srv = server_factory(args=["--max-events", "5"])
    t = fresh_tenant()
    assert_refused(srv, t, lambda: srv.admin(t).Append(a.AppendRequest(events=events(6))),
                   C.RESOURCE_EXHAUSTED)
    assert srv.admin(fresh_tenant()).Append(a.AppendRequest(events=events(5))).accepted == 5


def sized_request(target):
    """An AppendRequest of exactly `target` serialized bytes made of valid
    events (details_json near its 16 KiB limit, then one event tuned)."""
    a = hodei.pb().audit_pb2
    filler = _json_string(16000)
    evs = []
    while a.AppendRequest(events=evs).ByteSize() < target - 40000:
        evs.append(event(len(evs), details_json=filler, attributes=[]))
    last = event(len(evs), details_json=b'""', attributes=[])
    evs.append(last)
    for step in range(200):
        diff = target - a.AppendRequest(events=evs).ByteSize()
        if diff == 0:
            return a.AppendRequest(events=evs)
        if diff > 0 and len(last.details_json) + diff > 16384:
            evs.insert(-1, event(len(evs), details_json=filler, attributes=[]))
            continue
        n = len(last.details_json) + diff
        if step % 3 == 2:  # a varint length boundary: move another field by one
            last.resource_id = last.resource_id + "x"
        last.details_json = _json_string(max(2, n))
    raise AssertionError(f"could not build a request of {target} bytes")


@pytest.mark.parametrize("limit", [65536, None], ids=["flag-64KiB", "default-4MiB"])
def test_message_size_limit(server_factory, stubs, limit):
    if limit is None:
        srv, limit = server_factory(), hodei.DEFAULT_MAX_MESSAGE_BYTES
    else:
        srv = server_factory(args=["--max-message-bytes", str(limit)])
    ch = srv.channel()
    over = sized_request(limit + 1)
    assert over.ByteSize() == limit + 1
    t = fresh_tenant()
    w = srv.stub(srv.admin_key, t, channel=ch)
    assert_refused(srv, t, lambda: w.Append(over), C.RESOURCE_EXHAUSTED)

    far = sized_request(limit * 2 + 12345)
    t = fresh_tenant()
    w = srv.stub(srv.admin_key, t, channel=ch)
    assert_refused(srv, t, lambda: w.Append(far), C.RESOURCE_EXHAUSTED)

    # Exactly at the limit: stored, on the same connection.
    exact = sized_request(limit)
    t = fresh_tenant()
    resp = srv.stub(srv.admin_key, t, channel=ch).Append(exact)
    assert resp.accepted == len(exact.events)
    assert len(srv.stored(t)) == len(exact.events)


def test_message_over_limit_in_stream(server_factory, stubs):
    a = stubs.audit_pb2
    srv = server_factory(args=["--max-message-bytes", "65536"])
    t = fresh_tenant()
    reqs = [a.AppendRequest(events=events(2)), sized_request(65537)]
    responses = []

    def run():
        for r in srv.admin(t).AppendStream(iter(reqs)):
            responses.append(r)

    code, details, _ = status_of(run)
    assert code == C.RESOURCE_EXHAUSTED, (code, details)
    assert len(responses) == 1
    assert len(srv.stored(t)) == 2


# ---------------------------------------------------------------------------
# Methods, keys, roles, tenants.


@pytest.mark.parametrize("path", [
    "/hodei.audit.v1.AuditService/Delete",
    "/hodei.audit.v1.AuditService/append",
    "/hodei.audit.v2.AuditService/Append",
    "/no.such.Service/Method",
    "/grpc.health.v1.Health/Watch",
])
def test_unknown_method(shared_server, path):
    t = fresh_tenant()
    call = shared_server.raw(path, shared_server.admin_key, t)
    assert_refused(shared_server, t, lambda: call(b""), C.UNIMPLEMENTED)


def _calls(srv, stub):
    """Each AuditService RPC as a zero-argument callable."""
    a = hodei.pb().audit_pb2
    return {
        "Append": lambda: stub.Append(a.AppendRequest(events=events(2))),
        "AppendStream": lambda: list(stub.AppendStream(iter([a.AppendRequest(events=events(2))]))),
        "Search": lambda: stub.Search(a.SearchRequest()),
        "Verify": lambda: stub.Verify(a.VerifyRequest()),
        "Count": lambda: stub.Count(a.CountRequest(group_by="action")),
    }


AUTH_HEADERS = [
    ("none", None),
    ("unknown-key", lambda k: f"Bearer {hodei.new_key()}"),
    # ("Bearer " with a trailing space is not sent: HTTP/2 forbids field
    # values ending in whitespace, so nghttp2 resets such a stream itself.)
    ("bearer-only", lambda k: "Bearer"),
    ("basic-scheme", lambda k: f"Basic {k}"),
    ("no-scheme", lambda k: k),
    ("key-plus-char", lambda k: f"Bearer {k}x"),
    ("key-prefix", lambda k: f"Bearer {k[:-1]}"),
]


@pytest.mark.parametrize("method", ["Append", "AppendStream", "Search", "Verify", "Count"])
@pytest.mark.parametrize("header", [h[1] for h in AUTH_HEADERS], ids=[h[0] for h in AUTH_HEADERS])
def test_unauthenticated(shared_server, method, header):
    srv = shared_server
    t = fresh_tenant()
    admin = srv.admin_key
    md = [] if header is None else [("authorization", header(admin))]
    ch = grpc.intercept_channel(srv.channel(), hodei.MetadataInterceptor(md + [("x-hodei-tenant", t)], 30))
    stub = hodei.pb().audit_pb2_grpc.AuditServiceStub(ch)
    assert_refused(srv, t, _calls(srv, stub)[method], C.UNAUTHENTICATED)


@pytest.mark.parametrize("role,method", [
    ("reader", "Append"), ("reader", "AppendStream"),
    ("writer", "Search"), ("writer", "Verify"), ("writer", "Count"),
])
def test_wrong_role(shared_server, role, method):
    srv = shared_server
    t = fresh_tenant()
    key = srv.add_key(t, role)
    assert_refused(srv, t, _calls(srv, srv.stub(key))[method], C.PERMISSION_DENIED)


@pytest.mark.parametrize("role,method", [
    ("writer", "Append"), ("writer", "AppendStream"),
    ("reader", "Search"), ("reader", "Verify"), ("reader", "Count"),
])
def test_other_tenant_header_is_denied(shared_server, role, method):
    """A non-admin key naming another tenant in x-hodei-tenant."""
    srv = shared_server
    mine, other = fresh_tenant(), fresh_tenant()
    key = srv.add_key(mine, role)
    assert_refused(srv, other, _calls(srv, srv.stub(key, other))[method], C.PERMISSION_DENIED)
    assert srv.stored(mine) == []


@pytest.mark.parametrize("method", ["Append", "AppendStream", "Search", "Verify", "Count"])
def test_admin_without_tenant_header(shared_server, method):
    srv = shared_server
    before = srv.metrics().sum("hodei_events_appended_total")
    code, details, _ = status_of(_calls(srv, srv.stub(srv.admin_key))[method])
    assert code == C.INVALID_ARGUMENT, (code, details)
    assert "x-hodei-tenant" in details
    assert srv.metrics().sum("hodei_events_appended_total") == before


@pytest.mark.parametrize("tenant", ["", "a" * 65, "bad/tenant", "sp ace", "t:1", "bang!", "../etc"],
                         ids=["empty", "65-chars", "slash", "space", "colon", "bang", "dotdot-slash"])
def test_admin_with_invalid_tenant_header(shared_server, tenant):
    srv = shared_server
    for method, call in _calls(srv, srv.stub(srv.admin_key, tenant)).items():
        before = srv.metrics().sum("hodei_events_appended_total")
        code, details, _ = status_of(call)
        assert code == C.INVALID_ARGUMENT, (method, code, details)
        assert "x-hodei-tenant" in details, (method, details)
        assert srv.metrics().sum("hodei_events_appended_total") == before


@pytest.mark.parametrize("tenant", ["a" * 64, "A", "Z.9_-x"], ids=["64-chars", "1-char", "all-classes"])
def test_admin_with_tenant_header(shared_server, stubs, tenant):
    srv = shared_server
    t = tenant if len(tenant) == 64 else tenant + hodei.secrets.token_hex(2)
    calls = _calls(srv, srv.admin(t))
    assert calls["Append"]().accepted == 2
    assert calls["AppendStream"]()[0].first_seq == 3
    assert [s.seq for s in calls["Search"]().events] == [4, 3, 2, 1]
    v = calls["Verify"]()
    assert v.ok and v.events_checked == 4
    c = calls["Count"]()
    assert c.total == 4 and [(g.key, g.count) for g in c.groups] == [("document.read", 4)]
    # The tenant's own reader sees exactly the same.
    r = srv.stub(srv.add_key(t, "reader"))
    assert [s.seq for s in hodei.search_all(r)] == [1, 2, 3, 4]
    assert all(s.tenant_id == t for s in hodei.search_all(r))


@pytest.mark.parametrize("role,method", [
    ("writer", "Append"), ("writer", "AppendStream"),
    ("reader", "Search"), ("reader", "Verify"), ("reader", "Count"),
])
def test_own_tenant_header_is_allowed(shared_server, role, method):
    srv = shared_server
    t = fresh_tenant()
    key = srv.add_key(t, role)
    append_one(srv, t)
    _calls(srv, srv.stub(key, t))[method]()


def test_admin_role_can_append_and_read(shared_server, stubs):
    """An admin key listed for some tenant still chooses the tenant by header."""
    a = stubs.audit_pb2
    srv = shared_server
    home, t = fresh_tenant(), fresh_tenant()
    k = srv.add_key(home, "admin")
    assert srv.stub(k, t).Append(a.AppendRequest(events=events(1))).accepted == 1
    assert len(srv.stored(t)) == 1 and srv.stored(home) == []


def test_gzip_compressed_request_is_unimplemented(shared_server, stubs):
    a = stubs.audit_pb2
    srv = shared_server
    t = fresh_tenant()
    # Compressible on purpose: grpcio sends a message uncompressed when gzip
    # would make it bigger.
    req = a.AppendRequest(events=events(50, details_json=_json_string(8000)))
    ch = srv.channel(compression=grpc.Compression.Gzip)
    w = srv.stub(srv.admin_key, t, channel=ch)
    assert_refused(srv, t, lambda: w.Append(req), C.UNIMPLEMENTED)
    # Per-call compression too.
    t = fresh_tenant()
    w = srv.stub(srv.admin_key, t)
    assert_refused(srv, t, lambda: w.Append(req, compression=grpc.Compression.Gzip), C.UNIMPLEMENTED)


def test_search_invalid_arguments(shared_server, stubs):
    a = stubs.audit_pb2
    srv = shared_server
    t = fresh_tenant()
    r = srv.admin(t)
    now = time.time_ns()
    for name, req in [
        ("from>to", a.SearchRequest(from_ns=now, to_ns=now - 1)),
        ("event_id-15", a.SearchRequest(event_id=bytes(15))),
        ("outcome-9", a.SearchRequest(outcome=9)),
    ]:
        code, details, _ = status_of(lambda: r.Search(req))
        assert code == C.INVALID_ARGUMENT, (name, code, details)


def test_verify_invalid_range(shared_server, stubs):
    a = stubs.audit_pb2
    srv = shared_server
    t = fresh_tenant()
    append_one(srv, t)
    code, details, _ = status_of(lambda: srv.admin(t).Verify(a.VerifyRequest(from_seq=5, to_seq=2)))
    assert code == C.INVALID_ARGUMENT, (code, details)


def test_max_connections(server_factory, stubs):
    """The connection past --max-connections is closed cleanly (the client
    sees UNAVAILABLE) and counted; the others keep working."""
    a = stubs.audit_pb2
    srv = server_factory(args=["--max-connections", "2"])
    t = fresh_tenant()
    s1 = srv.stub(srv.admin_key, t)  # each stub() has its own connection
    s2 = srv.stub(srv.admin_key, t)
    assert s1.Verify(a.VerifyRequest()).ok
    assert s2.Verify(a.VerifyRequest()).ok
    before = srv.metrics().get("hodei_connections_rejected_total")
    s3 = srv.stub(srv.admin_key, t)
    code, details, _ = status_of(lambda: s3.Append(a.AppendRequest(events=events(1)), timeout=10))
    assert code == C.UNAVAILABLE, (code, details)
    assert srv.metrics().get("hodei_connections_rejected_total") >= before + 1
    # Nothing was stored through the refused connection; the others still work.
    assert s1.Search(a.SearchRequest()).events == []
    assert s1.Append(a.AppendRequest(events=events(1))).accepted == 1
    assert len(s2.Search(a.SearchRequest()).events) == 1


def test_tenant_capacity_is_resource_exhausted(server_factory, stubs):
    """docs/API.md: the node's tenant capacity reached is RESOURCE_EXHAUSTED;
    nothing of the refused request is stored and known tenants go on."""
    a = stubs.audit_pb2
    srv = server_factory(shards=1, args=["--tenants-max", "2"])
    for t in ("cap-a", "cap-b"):
        assert srv.admin(t).Append(a.AppendRequest(events=events(1))).accepted == 1
    before = srv.metrics().sum("hodei_events_appended_total")
    code, details, _ = status_of(lambda: srv.admin("cap-c").Append(a.AppendRequest(events=events(3))))
    assert code == C.RESOURCE_EXHAUSTED, (code, details)
    assert srv.metrics().sum("hodei_events_appended_total") == before
    assert srv.stored("cap-c") == []
    assert srv.admin("cap-a").Append(a.AppendRequest(events=events(1))).first_seq == 2
