# SPDX-License-Identifier: Apache-2.0
"""The hodei-audit client commands against the real hodei-auditd: append
(NDJSON in, AppendStream with batches in flight), search (table and
NDJSON), tail, verify --server, health, keys new, and the exit codes of
DESIGN.md §6 as the usage text lists them: 2 usage error or bad input line,
4 UNAUTHENTICATED / PERMISSION_DENIED, 5 any other error or no connection.

What the CLI stores is read back with the official grpcio client too, so a
field the CLI got wrong cannot pass by being read back wrong the same way.
"""
import hashlib
import json
import os
import re
import signal
import subprocess
import time
import uuid

import pytest

import hodei

CLI_TIMEOUT_S = 120


def run(server, *args, key=None, tenant=None, stdin="", env=None, server_addr=None):
    """Runs hodei-audit; returns the CompletedProcess (text)."""
    cmd = [str(hodei.CLI), *args]
    e = {k: v for k, v in os.environ.items() if not k.startswith("HODEI_")}
    if server is not None or server_addr:
        e["HODEI_SERVER"] = server_addr or server.grpc_addr
    if key is not None:
        e["HODEI_API_KEY"] = key
    if tenant is not None:
        cmd += ["--tenant", tenant]
    e.update(env or {})
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=e,
                          timeout=CLI_TIMEOUT_S)


def ndjson_events(n, start=0, actor=None, **extra):
    """n events in the JSON form, each with every field set."""
    now = time.time_ns() - 5_000_000_000
    out = []
    for i in range(start, start + n):
        ev = {
            "event_id": str(uuid.UUID(bytes=hodei.uuid7())),
            "occurred_at_ns": now + i,
            "actor_id": actor or f"user-{i % 7}",
            "actor_type": "user",
            "action": "document.read" if i % 3 else "document.delete",
            "resource_type": "document",
            "resource_id": f"doc-{i}",
            "outcome": ("success", "failure", "denied")[i % 3],
            "source_ip": "203.0.113.7",
            "user_agent": "hodei-cli-test/1.0",
            "request_id": f"req-{i}",
            "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
            "attributes": {"i": str(i), "région": "eu-ouest"},
            "details": {"n": i, "list": [1, 2.5, None, True], "s": "é\"\\"},
        }
        ev.update(extra)
        out.append(ev)
    return out


def lines(evs):
    return "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in evs)


def rfc3339_ns(text):
    """Unix ns of the CLI's RFC 3339 output (UTC, 9 fractional digits)."""
    m = re.fullmatch(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.(\d{9})Z", text)
    assert m, text
    import calendar
    y, mo, d, h, mi, s, frac = (int(x) for x in m.groups())
    return calendar.timegm((y, mo, d, h, mi, s)) * 1_000_000_000 + frac


def keys_for(server, tenant):
    return server.add_key(tenant, "writer"), server.add_key(tenant, "reader")


# ---------------------------------------------------------------------------
# append -> search -> verify


def test_append_search_verify(server, stubs):
    writer, reader = keys_for(server, "cli-a")
    evs = ndjson_events(2500)
    r = run(server, "append", "--batch", "300", "--in-flight", "3", "--json", key=writer,
            stdin=lines(evs))
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["ok"] is True
    assert summary["accepted"] == 2500 and summary["duplicates"] == 0
    assert summary["first_seq"] == 1 and summary["last_seq"] == 2500
    assert summary["batches"] == 9 and summary["unacknowledged_events"] == 0

    # What the official client reads back is what the CLI sent.
    stored = server.stored("cli-a")
    assert len(stored) == 2500
    chain = hodei.check_chain(stored, "cli-a")
    assert summary["chain_hash"] == chain.hex()
    by_id = {str(uuid.UUID(bytes=s.event.event_id)): s for s in stored}
    a = stubs.audit_pb2
    for ev in evs[:50] + evs[-50:]:
        s = by_id[ev["event_id"]].event
        assert s.occurred_at_ns == ev["occurred_at_ns"]
        for f in ("actor_id", "actor_type", "action", "resource_type", "resource_id",
                  "source_ip", "user_agent", "request_id", "trace_id"):
            assert getattr(s, f) == ev[f], f
        assert s.outcome == a.Outcome.Value("OUTCOME_" + ev["outcome"].upper())
        assert [(x.key, x.value) for x in s.attributes] == list(ev["attributes"].items())
        assert json.loads(s.details_json) == ev["details"]

    # search --json --all prints every stored event, and each line reads
    # back to the stored event.
    r = run(server, "search", "--all", "--oldest-first", "--json", key=reader)
    assert r.returncode == 0, r.stderr
    out = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(out) == 2500
    assert [o["seq"] for o in sorted(out, key=lambda o: o["seq"])] == list(range(1, 2501))
    for o in out:
        s = by_id[o["event_id"]]
        assert o["tenant_id"] == "cli-a"
        assert o["seq"] == s.seq
        assert o["chain_hash"] == s.chain_hash.hex()
        assert rfc3339_ns(o["received_at"]) == s.received_at_ns
        assert rfc3339_ns(o["occurred_at"]) == s.event.occurred_at_ns
        assert o["attributes"] == {x.key: x.value for x in s.event.attributes}
        assert o["details"] == json.loads(s.event.details_json)
        assert o["outcome"] in ("success", "failure", "denied")

    # --limit over one page (1000) follows the page token with a smaller
    # limit for the last page.
    r = run(server, "search", "--limit", "1200", "--json", key=reader)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 1200
    assert len({json.loads(x)["seq"] for x in r.stdout.splitlines()}) == 1200

    # The default table, with its header and a count line.
    r = run(server, "search", "--limit", "5", key=reader)
    assert r.returncode == 0, r.stderr
    rows = r.stdout.splitlines()
    assert rows[0].split() == ["SEQ", "OCCURRED_AT", "OUTCOME", "ACTOR", "ACTION", "RESOURCE"]
    assert len(rows) == 7 and "more match" in rows[-1]

    # Remote verify: intact, exit 0, and the chain head the append reported.
    r = run(server, "verify", "--server", server.grpc_addr, "--json", key=reader)
    assert r.returncode == 0, r.stderr
    v = json.loads(r.stdout)
    assert v["ok"] is True and v["events_checked"] == 2500
    assert v["chain_hash"] == summary["chain_hash"]
    r = run(server, "verify", "--server", server.grpc_addr, "--from-seq", "10", "--to-seq", "20",
            key=reader)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("verify: intact: 11 events")

    # The same input again: all duplicates, nothing stored twice.
    r = run(server, "append", "--json", key=writer, stdin=lines(evs))
    assert r.returncode == 0, r.stderr
    again = json.loads(r.stdout)
    assert again["accepted"] == 0 and again["duplicates"] == 2500
    assert len(server.stored("cli-a")) == 2500


def test_search_filters(server, stubs):
    writer, reader = keys_for(server, "cli-f")
    evs = ndjson_events(60)
    r = run(server, "append", key=writer, stdin=lines(evs))
    assert r.returncode == 0, r.stderr
    assert "60 accepted" in r.stdout

    def search(*args):
        r = run(server, "search", "--json", "--all", *args, key=reader)
        assert r.returncode == 0, r.stderr
        return [json.loads(x) for x in r.stdout.splitlines()]

    assert {o["actor_id"] for o in search("--actor", "user-3")} == {"user-3"}
    assert len(search("--actor", "user-3")) == sum(e["actor_id"] == "user-3" for e in evs)
    denied = search("--outcome", "denied", "--action", "document.read")
    assert denied and all(o["outcome"] == "denied" and o["action"] == "document.read"
                          for o in denied)
    one = search("--event-id", evs[17]["event_id"].upper())
    assert [o["resource_id"] for o in one] == ["doc-17"]
    assert [o["resource_id"] for o in search("--resource-id", "doc-42", "--resource-type",
                                              "document")] == ["doc-42"]
    # --from inclusive, --to exclusive, as Unix ns or RFC 3339.
    lo, hi = evs[10]["occurred_at_ns"], evs[20]["occurred_at_ns"]
    got = search("--from", str(lo), "--to", str(hi), "--oldest-first")
    assert [o["resource_id"] for o in got] == [f"doc-{i}" for i in range(10, 20)]
    text = got[0]["occurred_at"]
    assert [o["resource_id"] for o in search("--from", text, "--to", str(lo + 1))] == ["doc-10"]
    # Newest first by default, oldest first on request; --limit caps.
    r = run(server, "search", "--json", "--limit", "3", key=reader)
    assert [json.loads(x)["resource_id"] for x in r.stdout.splitlines()] == \
        ["doc-59", "doc-58", "doc-57"]
    r = run(server, "search", "--json", "--limit", "2", "--oldest-first", key=reader)
    assert [json.loads(x)["resource_id"] for x in r.stdout.splitlines()] == ["doc-0", "doc-1"]


def test_admin_key_with_tenant(server):
    evs = ndjson_events(5)
    r = run(server, "append", key=server.admin_key, tenant="cli-adm", stdin=lines(evs))
    assert r.returncode == 0, r.stderr
    r = run(server, "search", "--json", key=server.admin_key, tenant="cli-adm")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 5
    assert all(json.loads(x)["tenant_id"] == "cli-adm" for x in r.stdout.splitlines())


def test_append_without_ids_and_times(server):
    writer, reader = keys_for(server, "cli-min")
    r = run(server, "append", "--json", key=writer,
            stdin='{"actor_id":"a","action":"b"}\n\n   \n{"actor_id":"c","action":"d",'
                  '"occurred_at":"2024-05-01T14:00:00.5+02:00"}\n')
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["accepted"] == 2
    r = run(server, "search", "--json", "--all", "--oldest-first", key=reader)
    out = [json.loads(x) for x in r.stdout.splitlines()]
    assert [o["actor_id"] for o in out] == ["c", "a"]
    assert out[0]["occurred_at"] == "2024-05-01T12:00:00.500000000Z"
    assert all(re.fullmatch(r"[0-9a-f-]{36}", o["event_id"]) for o in out)


# ---------------------------------------------------------------------------
# A bad input line


def test_bad_line_stops_before_its_batch(server):
    writer, reader = keys_for(server, "cli-bad")
    evs = ndjson_events(1500)
    text = lines(evs[:1200]) + '{"actor_id":"x","action":"y","event_id":"not-a-uuid"}\n' + \
        lines(evs[1200:])
    r = run(server, "append", "--batch", "500", key=writer, stdin=text)
    assert r.returncode == 2
    assert "line 1201: event_id: not a canonical UUID" in r.stderr
    assert "nothing from line 1001 on was sent" in r.stderr
    # Batches before the bad line's batch are stored; nothing after.
    assert len(server.stored("cli-bad")) == 1000
    assert "1000 accepted" in r.stdout


@pytest.mark.parametrize("line,message", [
    (b'{"actor_id":"a","action":"b","foo":1}', 'line 2: unknown field "foo"'),
    (b'{"actor_id":"a","action":"b","occurred_at":"2024-05-01"}',
     "line 2: occurred_at: not RFC 3339"),
    (b'{"actor_id":"a","action":"b","attributes":{"x":1}}',
     "line 2: attributes.x: value must be a string"),
    (b'{"actor_id":"a","action":"b","outcome":"ok"}', "line 2: outcome: must be"),
    (b'{"actor_id":"a","action":"b","seq":3}', "line 2: seq: assigned by the server"),
    (b'{"actor_id":"a",', "line 2: not valid JSON"),
    (b'{"actor_id":"\xff","action":"b"}', "line 2: not valid JSON: unable to decode byte 0xff"),
    (b'{"actor_id":"a\\u0000","action":"b"}', "line 2: a string holds \\u0000"),
])
def test_bad_line_messages(server, line, message):
    writer, _ = keys_for(server, "cli-msg")
    data = b'{"actor_id":"a","action":"b"}\n' + line + b"\n"
    r = subprocess.run([str(hodei.CLI), "append", "--json"], input=data, capture_output=True,
                       env={"HODEI_SERVER": server.grpc_addr, "HODEI_API_KEY": writer,
                            "PATH": os.environ.get("PATH", "")},
                       timeout=CLI_TIMEOUT_S)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr.decode(), r.stderr
    summary = json.loads(r.stdout)
    assert summary["ok"] is False and summary["error"]["line"] == 2
    # Line 1 was in the bad line's batch: nothing was sent.
    assert len(server.stored("cli-msg")) == 0


# ---------------------------------------------------------------------------
# Exit codes


def test_usage_errors_exit_2(server):
    for args in (["append", "--bogus"], ["append", "--batch", "0"], ["append", "--batch", "10001"],
                 ["search", "--from", "yesterday"], ["search", "--outcome", "maybe"],
                 ["search", "--event-id", "123"], ["search", "--limit"], ["tail", "--interval", "x"],
                 ["verify", "--server", server.grpc_addr, "--from-seq", "9", "--to-seq", "3"],
                 ["verify", "--server", server.grpc_addr, "--data-dir", "/tmp"],
                 ["count", "--group-by", "tenant"], ["search", "--tenant", "bad tenant"]):
        r = run(server, *args, key=server.admin_key)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.startswith("hodei-audit: "), (args, r.stderr)


def test_auth_errors_exit_4(server):
    writer, reader = keys_for(server, "cli-auth")
    one = lines(ndjson_events(1))
    r = run(server, "search")  # no key at all
    assert r.returncode == 4
    assert "UNAUTHENTICATED" in r.stderr and "HODEI_API_KEY" in r.stderr
    r = run(server, "search", key=hodei.new_key())
    assert r.returncode == 4 and "UNAUTHENTICATED" in r.stderr
    r = run(server, "append", key=reader, stdin=one)  # a reader may not write
    assert r.returncode == 4 and "PERMISSION_DENIED" in r.stderr
    r = run(server, "search", key=writer)  # a writer may not read
    assert r.returncode == 4 and "PERMISSION_DENIED" in r.stderr
    r = run(server, "search", key=writer, tenant="other")  # x-hodei-tenant needs admin
    assert r.returncode == 4
    r = run(server, "verify", "--server", server.grpc_addr, key=writer)
    assert r.returncode == 4
    # The key is never echoed.
    for out in (r.stdout, r.stderr):
        assert writer not in out


def test_server_errors_exit_5(server, tmp_path):
    writer, _ = keys_for(server, "cli-err")
    # INVALID_ARGUMENT from the server: the status name and message are shown.
    r = run(server, "append", key=writer, stdin='{"actor_id":"a"}\n')
    assert r.returncode == 5
    assert "INVALID_ARGUMENT" in r.stderr and "action" in r.stderr
    # Nothing listening.
    r = run(None, "search", key=writer, server_addr=f"127.0.0.1:{hodei.free_port()}")
    assert r.returncode == 5 and "UNAVAILABLE" in r.stderr
    r = run(None, "append", key=writer, stdin=lines(ndjson_events(1)),
            server_addr=f"127.0.0.1:{hodei.free_port()}")
    assert r.returncode == 5 and "UNAVAILABLE" in r.stderr
    # A bad address is UNAVAILABLE too, not a crash.
    r = run(None, "health", server_addr="no-port-here")
    assert r.returncode == 5


def test_tls(server_factory, tmp_path):
    """--tls-ca (or $HODEI_TLS_CA): the commands work over TLS with the
    server's certificate verified, by IP address or by name. An unknown CA,
    a name the certificate does not carry, and h2c on the TLS port are
    UNAVAILABLE (exit 5), with the reason."""
    cert, key = hodei.make_cert(tmp_path)
    srv = server_factory(args=["--tls-cert", str(cert), "--tls-key", str(key)])
    writer, reader = keys_for(srv, "cli-tls")
    port = srv.grpc_addr.rsplit(":", 1)[1]
    r = run(srv, "append", "--json", key=writer, stdin=lines(ndjson_events(5)),
            env={"HODEI_TLS_CA": str(cert)})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["accepted"] == 5
    r = run(srv, "search", "--json", "--tls-ca", str(cert), key=reader)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 5
    r = run(None, "count", "--json", "--tls-ca", str(cert), key=reader,
            server_addr=f"localhost:{port}")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["total"] == 5
    r = run(srv, "verify", "--server", srv.grpc_addr, "--tls-ca", str(cert), key=reader)
    assert r.returncode == 0, r.stderr

    # Not trusted: the system's CAs, or another self-signed certificate.
    other, _ = hodei.make_cert(tmp_path, name="other")
    for flags in (["--tls"], ["--tls-ca", str(other)]):
        r = run(srv, "search", *flags, key=reader)
        assert r.returncode == 5, (flags, r.stderr)
        assert "UNAVAILABLE" in r.stderr and "certificate" in r.stderr, (flags, r.stderr)
    # h2c on the TLS port.
    r = run(srv, "search", key=reader)
    assert r.returncode == 5 and "UNAVAILABLE" in r.stderr, r.stderr
    # A CA file that cannot be read.
    r = run(srv, "search", "--tls-ca", str(tmp_path / "missing.pem"), key=reader)
    assert r.returncode == 5 and "CA certificates" in r.stderr, r.stderr
    r = run(srv, "search", "--tls-ca", "", key=reader)
    assert r.returncode == 2, r.stderr

    # A certificate for "localhost" only: 127.0.0.1 is not its name.
    name_only, name_key = hodei.make_cert(tmp_path, san="DNS:localhost", name="byname")
    srv2 = server_factory(args=["--tls-cert", str(name_only), "--tls-key", str(name_key)])
    port2 = srv2.grpc_addr.rsplit(":", 1)[1]
    r = run(None, "health", "--tls-ca", str(name_only), server_addr=f"127.0.0.1:{port2}")
    assert r.returncode == 5 and "certificate" in r.stderr, r.stderr
    r = run(None, "health", "--tls-ca", str(name_only), server_addr=f"localhost:{port2}")
    assert r.returncode == 0, r.stderr


def test_health(server):
    r = run(server, "health", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"status": "SERVING"}


# ---------------------------------------------------------------------------
# keys new


def test_keys_new_output(tmp_path):
    r = run(None, "keys", "new", "--tenant", "acme.prod-1", "--role", "writer")
    assert r.returncode == 0, r.stderr
    key, line = r.stdout.splitlines()
    assert re.fullmatch(r"hk_[0-9a-f]{64}", key)
    assert line == f"{hashlib.sha256(key.encode()).hexdigest()} acme.prod-1 writer"
    r2 = run(None, "keys", "new", "--tenant", "acme", "--role", "admin", "--json")
    assert r2.returncode == 0, r2.stderr
    j = json.loads(r2.stdout)
    assert j["sha256"] == hashlib.sha256(j["key"].encode()).hexdigest()
    assert j["keys_file_line"] == f"{j['sha256']} acme admin"
    assert j["key"] != key  # fresh every time
    for args in (["--tenant", "acme"], ["--role", "reader"], ["--tenant", "a b", "--role", "reader"],
                 ["--tenant", "x" * 65, "--role", "reader"], ["--tenant", "acme", "--role", "root"]):
        assert run(None, "keys", "new", *args).returncode == 2, args
    assert run(None, "keys").returncode == 2


def test_keys_new_line_is_accepted_by_the_server(server):
    r = run(None, "keys", "new", "--tenant", "cli-k", "--role", "writer")
    key, line = r.stdout.splitlines()
    with open(server.keys_file, "a") as f:
        f.write(line + "\n")
    server.proc.send_signal(signal.SIGHUP)
    server.wait_key(key, known=True)
    r = run(server, "append", key=key, stdin=lines(ndjson_events(3)))
    assert r.returncode == 0, r.stderr
    assert len(server.stored("cli-k")) == 3


# ---------------------------------------------------------------------------
# tail


def test_tail_prints_new_events(server):
    writer, reader = keys_for(server, "cli-t")
    assert run(server, "append", key=writer, stdin=lines(ndjson_events(5))).returncode == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("HODEI_")}
    env.update(HODEI_SERVER=server.grpc_addr, HODEI_API_KEY=reader)
    p = subprocess.Popen([str(hodei.CLI), "tail", "--json", "--lines", "2", "--interval", "100ms"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        first = [json.loads(p.stdout.readline()) for _ in range(2)]
        assert [o["resource_id"] for o in first] == ["doc-3", "doc-4"]
        now = time.time_ns()
        new = [dict(e, occurred_at_ns=now + i) for i, e in
               enumerate(ndjson_events(4, start=100, actor="tailed"))]
        assert run(server, "append", key=writer, stdin=lines(new)).returncode == 0
        got = [json.loads(p.stdout.readline()) for _ in range(4)]
        assert [o["resource_id"] for o in got] == ["doc-100", "doc-101", "doc-102", "doc-103"]
        assert [o["seq"] for o in got] == [6, 7, 8, 9]
    finally:
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert out == ""  # nothing printed twice


def test_count(server):
    writer, reader = keys_for(server, "cli-c")
    r = run(server, "count", "--json", key=reader)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"total": 0, "groups": []}
    evs = ndjson_events(30)
    del evs[4]["outcome"]  # an event without one
    assert run(server, "append", key=writer, stdin=lines(evs)).returncode == 0

    r = run(server, "count", "--json", "--group-by", "action", key=reader)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"total": 30, "groups": [
        {"key": "document.read", "count": 20}, {"key": "document.delete", "count": 10}]}
    # The filters of search; the total alone is one number.
    r = run(server, "count", "--actor", "user-3", key=reader)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"{sum(e['actor_id'] == 'user-3' for e in evs)}\n"
    # A table: the group column, largest first, empty keys as (none).
    r = run(server, "count", "--group-by", "outcome", key=reader)
    assert r.returncode == 0, r.stderr
    rows = [line.split() for line in r.stdout.splitlines()]
    assert rows[0] == ["OUTCOME", "EVENTS"]
    assert rows[1:] == [["denied", "10"], ["success", "10"], ["failure", "9"], ["(none)", "1"],
                        ["(total)", "30"]], r.stdout
    r = run(server, "count", "--json", "--group-by", "outcome", "--action", "document.read",
            key=reader)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"total": 20, "groups": [
        {"key": "denied", "count": 10}, {"key": "failure", "count": 9}, {"key": "", "count": 1}]}
    # Usage errors exit 2; a writer key exits 4.
    r = run(server, "count", "--group-by", "resource_id", key=reader)
    assert r.returncode == 2 and "--group-by" in r.stderr, r.stderr
    r = run(server, "count", key=writer)
    assert r.returncode == 4 and "PERMISSION_DENIED" in r.stderr, r.stderr
