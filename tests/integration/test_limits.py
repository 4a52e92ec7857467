# SPDX-License-Identifier: Apache-2.0
"""Connection limits and transport (issue #3, net/): the connection cap
(the next connection is closed cleanly and counted), idle and slow clients
timing out so they cannot starve active ones, non-gRPC requests, and TLS
with ALPN h2.

Nothing here asserts on time: timeouts are configured short and the tests
poll, with generous bounds, for the state they cause."""
import socket
import subprocess

import grpc
import pytest

import hodei

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def connect_raw(server):
    s = socket.create_connection(("127.0.0.1", server.grpc_port), timeout=10)
    return s


def closed_by_peer(sock, timeout_s=30):
    """True once the server closed the connection (EOF or reset)."""
    sock.settimeout(timeout_s)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def append_one(server, tenant="acme", i=0):
    stub = server.stub(server.admin_key, tenant)
    return stub.Append(hodei.append_request(hodei.events(1, start=i)))


def test_connection_limit_refuses_the_next_connection_and_counts_it(server_factory):
    srv = server_factory(args=["--max-connections", "3", "--idle-timeout", "1h"])
    socks = [connect_raw(srv) for _ in range(3)]
    for s in socks:
        s.sendall(PREFACE)
    hodei.wait_until(lambda: srv.metrics().get("hodei_connections_open") == 3, 30,
                     "three connections open")
    extra = connect_raw(srv)
    assert closed_by_peer(extra), "the connection over the limit was not closed"
    m = srv.metrics()
    assert m.get("hodei_connections_rejected_total") == 1
    assert m.get("hodei_connections_max") == 3
    # Freeing a slot lets a real client in again.
    socks[0].close()
    hodei.wait_until(lambda: srv.metrics().get("hodei_connections_open") < 3, 30,
                     "a slot freed")
    assert append_one(srv).accepted == 1
    for s in socks[1:]:
        s.close()


def test_idle_connections_are_closed_so_active_clients_get_in(server_factory):
    srv = server_factory(args=["--max-connections", "20", "--idle-timeout", "1s"])
    idle = [connect_raw(srv) for _ in range(20)]  # never send a byte
    for s in idle:
        assert closed_by_peer(s), "an idle connection stayed open"
    hodei.wait_until(lambda: srv.metrics().get("hodei_connections_open") == 0, 30,
                     "idle connections closed")
    assert srv.metrics().get("hodei_connections_idle_closed_total") >= 20
    assert append_one(srv).accepted == 1


def partial_request(port, path, key, tenant, body, timeout_s=30, headers=(), settings=None):
    """Sends a gRPC request whose body never ends, with the h2 library (a
    real HTTP/2 implementation), and returns the grpc-status the server
    answers with, or None if it never answers. settings: a dict that gets
    the server's SETTINGS."""
    import h2.config
    import h2.connection
    import h2.events

    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [
        (":method", "POST"), (":scheme", "http"), (":path", path),
        (":authority", f"127.0.0.1:{port}"), ("content-type", "application/grpc"),
        ("te", "trailers"), ("authorization", f"Bearer {key}"), ("x-hodei-tenant", tenant),
    ] + list(headers))
    conn.send_data(sid, body, end_stream=False)
    sock.sendall(conn.data_to_send())
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return None
            for ev in conn.receive_data(data):
                if settings is not None and isinstance(ev, h2.events.RemoteSettingsChanged):
                    settings.update({k: v.new_value for k, v in ev.changed_settings.items()})
                got = getattr(ev, "headers", None)
                if got:
                    for k, v in got:
                        k = k.decode() if isinstance(k, bytes) else k
                        if k == "grpc-status":
                            return int(v)
            sock.sendall(conn.data_to_send())
    except socket.timeout:
        return None
    finally:
        sock.close()


def test_a_request_that_never_finishes_times_out(server_factory):
    srv = server_factory(args=["--request-timeout", "1s"])
    # A prefix announcing 16 bytes, then 3 of them, and nothing more.
    status = partial_request(srv.grpc_port, "/hodei.audit.v1.AuditService/Search",
                             srv.admin_key, "acme", b"\x00\x00\x00\x00\x10abc")
    assert status == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert srv.metrics().get("hodei_connections_slow_closed_total") >= 1
    assert append_one(srv).accepted == 1


def test_grpc_timeout_is_honoured_by_the_server(server_factory):
    """A grpc-timeout of 200 ms on a request whose body never arrives: the
    server answers DEADLINE_EXCEEDED itself (the request timeout is far)."""
    srv = server_factory(args=["--request-timeout", "1h"])
    status = partial_request(srv.grpc_port, "/hodei.audit.v1.AuditService/Search",
                             srv.admin_key, "acme", b"\x00\x00\x00\x00\x10abc",
                             headers=[("grpc-timeout", "200m")])
    assert status == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert srv.metrics().get("hodei_requests_rejected_total", reason="deadline_exceeded") == 1


def test_max_streams_is_announced_to_clients(server_factory):
    import h2.settings

    srv = server_factory(args=["--max-streams", "7", "--max-message-bytes", "65536"])
    settings = {}
    partial_request(srv.grpc_port, "/hodei.audit.v1.AuditService/Nope", srv.admin_key, "acme",
                    b"", settings=settings)
    assert settings.get(h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS) == 7
    # A stream's window holds the largest message (it is credited back
    # only when the request is done).
    assert settings.get(h2.settings.SettingCodes.INITIAL_WINDOW_SIZE) >= 65536 + 5
    assert srv.metrics().get("hodei_grpc_max_streams") == 7


def test_non_grpc_requests_get_http_415(server):
    out = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--http2-prior-knowledge",
         f"http://{server.grpc_addr}/"], capture_output=True, text=True, timeout=30)
    if out.returncode != 0 and not out.stdout:
        pytest.skip(f"curl without HTTP/2 support: {out.stderr.strip()}")
    assert out.stdout == "415"
    assert append_one(server).accepted == 1  # the server is unharmed


def test_tls_with_alpn_h2(server_factory, tmp_path):
    cert, key = hodei.make_cert(tmp_path)
    srv = server_factory(args=["--tls-cert", str(cert), "--tls-key", str(key)])
    creds = grpc.ssl_channel_credentials(cert.read_bytes())
    ch = grpc.secure_channel(srv.grpc_addr, creds)
    stub = srv.stub(srv.admin_key, "tls", channel=ch)
    r = stub.Append(hodei.append_request(hodei.events(3)))
    assert (r.accepted, r.first_seq, r.last_seq) == (3, 1, 3)
    got = hodei.search_all(stub)
    assert [e.seq for e in got] == [1, 2, 3]
    # A cleartext client on the TLS port gets no service.
    plain = srv.stub(srv.admin_key, "tls", timeout=5)
    with pytest.raises(grpc.RpcError) as e:
        plain.Append(hodei.append_request(hodei.events(1)))
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    ch.close()


def test_tenant_rate_limit_refuses_with_resource_exhausted(server_factory):
    """A tenant over its rate gets RESOURCE_EXHAUSTED, stores nothing of the
    refused request, and other tenants are not affected. (Rate 10/s, burst
    150: the second request needs 100 tokens that take ten seconds to
    refill, a margin no machine here comes near.)"""
    srv = server_factory(args=["--tenant-rate", "10", "--tenant-burst", "150"])
    fast = srv.stub(srv.admin_key, "fast")
    assert fast.Append(hodei.append_request(hodei.events(150))).accepted == 150
    with pytest.raises(grpc.RpcError) as e:
        fast.Append(hodei.append_request(hodei.events(100, start=150)))
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "rate" in e.value.details()
    assert len(srv.stored("fast")) == 150
    other = srv.stub(srv.admin_key, "other-tenant")
    assert other.Append(hodei.append_request(hodei.events(100))).accepted == 100
    m = srv.metrics()
    assert m.get("hodei_requests_rejected_total", reason="rate_limited") == 1
    assert m.get("hodei_tenant_rate_limit_events_per_second") == 10


def test_disk_budget_refuses_appends_and_keeps_what_is_stored(server_factory):
    """Past --disk-budget, appends get RESOURCE_EXHAUSTED and store nothing;
    everything acknowledged before stays readable and verifiable. The
    budget is checked every 100 ms, so the test appends until the refusal
    comes (bounded), rather than at an exact byte."""
    srv = server_factory(shards=1, args=["--disk-budget", "1MiB"])
    stub = srv.stub(srv.admin_key, "big")
    acked, refused = 0, None
    for i in range(400):  # ~80 KiB of WAL each: 1 MiB is passed after ~13
        try:
            acked += stub.Append(hodei.append_request(
                hodei.events(200, start=200 * i, details_json=b'"' + b"x" * 300 + b'"'))).accepted
        except grpc.RpcError as e:
            refused = e
            break
    assert refused is not None, "the disk budget never refused an append"
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "disk budget" in refused.details()
    got = srv.stored("big")
    assert len(got) == acked and [e.seq for e in got] == list(range(1, acked + 1))
    assert srv.verify("big").ok
    m = srv.metrics()
    assert m.get("hodei_requests_rejected_total", reason="disk_budget") >= 1
    assert m.get("hodei_shards_disk_full") == 1
    assert m.get("hodei_disk_budget_bytes") == 1 << 20


def test_a_low_open_file_limit_keeps_fewer_segments_open(server_factory, stubs):
    """Segment files kept open per shard (--open-segments, default 1024) and
    connections share RLIMIT_NOFILE: under a hard limit too low for both,
    the server says so, keeps fewer segment files open, and works."""
    srv = server_factory(start=False, args=["--seal-rows", "5"])
    plain = srv.command
    srv.command = lambda: ["prlimit", "--nofile=1500:1500", "--"] + plain()
    srv.start()
    assert "open file limit 1500 is too low for --open-segments 1024" in srv.stderr()
    a = stubs.audit_pb2
    w = srv.stub(srv.add_key("fd", "writer"))
    w.Append(a.AppendRequest(events=hodei.events(40)))
    got = srv.stored("fd")
    assert len(got) == 40
    hodei.check_chain(got, "fd")
