# SPDX-License-Identifier: Apache-2.0
"""Start-up, configuration and operations (DESIGN.md §5-§6): the first start
creates the keys file with one admin key printed once; every flag has an
HODEI_* variable; the keys file is re-read on SIGHUP without dropping
connections; logs are JSON lines that never contain a key; TLS with ALPN h2
when a certificate is given."""
import json
import re
import shutil
import signal
import subprocess

import grpc
import pytest

import hodei
from hodei import events, status_of

C = grpc.StatusCode
KEY_LINE = re.compile(r"admin key \(shown once\): (\S+)")


def test_first_start_creates_admin_key(server_factory, stubs):
    a = stubs.audit_pb2
    srv = server_factory(admin_key=False)
    out = srv.stdout()
    keys = KEY_LINE.findall(out)
    assert len(keys) == 1, f"stdout does not show the admin key once:\n{out}"
    key = keys[0]
    assert srv.keys_file.exists()
    text = srv.keys_file.read_text()
    assert key not in text, "the plain key is stored in the keys file"
    lines = [l.split() for l in text.splitlines() if l.strip() and not l.lstrip().startswith("#")]
    assert lines == [[hodei.key_hash(key), "default", "admin"]]
    assert key not in srv.stderr(), "the key appears in the logs"
    # Says how to reach the server.
    assert str(srv.grpc_port) in out + srv.stderr()

    resp = srv.stub(key, "default").Append(a.AppendRequest(events=events(2)))
    assert resp.accepted == 2
    code, details, _ = status_of(lambda: srv.stub(key).Verify(a.VerifyRequest()))
    assert code == C.INVALID_ARGUMENT and "x-hodei-tenant" in details

    # A restart keeps the file and prints no new key.
    assert srv.stop() == 0
    srv.start()
    assert KEY_LINE.findall(srv.stdout()) == [key]
    assert srv.keys_file.read_text() == text
    assert len(srv.stub(key, "default").Search(a.SearchRequest()).events) == 2


def test_default_keys_file_in_data_dir(server_factory, stubs):
    """Without --keys-file the keys live in <data-dir>/keys."""
    a = stubs.audit_pb2
    srv = server_factory(admin_key=False, omit=("keys-file",))
    key = KEY_LINE.findall(srv.stdout())[0]
    assert (srv.data_dir / "keys").exists()
    assert hodei.key_hash(key) in (srv.data_dir / "keys").read_text()
    assert srv.stub(key, "t").Append(a.AppendRequest(events=events(1))).accepted == 1


def test_configuration_from_environment(server_factory, stubs):
    """Every base setting given only as an HODEI_* variable."""
    a = stubs.audit_pb2
    srv = server_factory(use_flags=False, env={"HODEI_MAX_EVENTS": "3", "HODEI_IO": "sync"})
    assert srv.readyz()[0] == 200
    w = srv.stub(srv.add_key("env", "writer"))
    assert w.Append(a.AppendRequest(events=events(3))).accepted == 3
    code, _, _ = status_of(lambda: w.Append(a.AppendRequest(events=events(4))))
    assert code == C.RESOURCE_EXHAUSTED, "HODEI_MAX_EVENTS=3 was not applied"
    assert (srv.data_dir).is_dir() and any(srv.data_dir.iterdir())


def test_flag_overrides_environment(server_factory, stubs):
    a = stubs.audit_pb2
    srv = server_factory(args=["--max-events", "2"], env={"HODEI_MAX_EVENTS": "50"})
    w = srv.stub(srv.add_key("o", "writer"))
    code, _, _ = status_of(lambda: w.Append(a.AppendRequest(events=events(3))))
    assert code == C.RESOURCE_EXHAUSTED


@pytest.mark.parametrize("args", [
    ["--no-such-flag"],
    ["--io", "bogus"],
    ["--seal-age", "ten seconds"],
    ["--max-message-bytes", "-1"],
    ["--grpc-listen", "not-an-address"],
], ids=["unknown-flag", "io", "seal-age", "max-message-bytes", "grpc-listen"])
def test_bad_configuration_is_refused(server_factory, args):
    srv = server_factory(args=args, start=False)
    srv.start(wait_ready=False)
    rc = srv.proc.wait(30)
    srv.expect_dead = True
    assert rc != 0, f"{args}: exit 0"
    assert rc > 0, f"{args}: killed by signal {-rc} instead of a clean error exit"
    assert srv.stderr().strip(), "no message saying what is wrong"


def test_engine_setting_out_of_range_is_named(server_factory):
    srv = server_factory(args=["--query-helpers", "9"], start=False)
    srv.start(wait_ready=False)
    rc = srv.proc.wait(30)
    srv.expect_dead = True
    assert rc > 0
    assert "invalid engine configuration: query_helpers: want 0..8" in srv.stderr()


def test_sighup_reload_keeps_connections(server, stubs):
    a = stubs.audit_pb2
    k1 = server.add_key("hup", "writer")
    ch = server.channel()
    w1 = server.stub(k1, channel=ch)
    assert w1.Append(a.AppendRequest(events=events(1))).accepted == 1
    k2 = server.add_key("hup", "writer")
    w2 = server.stub(k2, channel=ch)
    assert w2.Append(a.AppendRequest(events=events(1))).accepted == 1
    # Removing k1 refuses it at once, on the same connection, while k2 goes on.
    server.remove_key(k1)
    code, _, _ = status_of(lambda: w1.Append(a.AppendRequest(events=events(1))))
    assert code == C.UNAUTHENTICATED
    assert w2.Append(a.AppendRequest(events=events(1))).first_seq == 3
    # A role change takes effect too.
    server.remove_key(k2)
    server.add_key("hup", "reader", key=k2)
    code, _, _ = status_of(lambda: w2.Append(a.AppendRequest(events=events(1))))
    assert code == C.PERMISSION_DENIED
    assert len(w2.Search(a.SearchRequest()).events) == 3


def test_sighup_with_broken_keys_file_keeps_old_keys(server, stubs):
    """docs/API.md: a keys file with any malformed line is refused as a
    whole on reload; the old keys stay in force. Once fixed, the next
    SIGHUP loads it."""
    a = stubs.audit_pb2
    old = server.add_key("keep", "writer")
    good = server.keys_file.read_text()
    new = hodei.new_key()
    with open(server.keys_file, "a") as f:
        f.write(f"{hodei.key_hash(new)} keep writer\nthis is not a key line\n")
    logged = len(server.log_lines())
    server.signal(signal.SIGHUP)
    # The reload is asynchronous and, refused, changes nothing visible but
    # the log ("the log says which line is wrong"): wait for that line.
    hodei.wait_until(lambda: len(server.log_lines()) > logged, 15,
                     "a log line about the malformed keys file")
    assert any("keys" in json.dumps(l).lower() for l in server.log_lines()[logged:])
    assert server.running()
    assert server.stub(old).Append(a.AppendRequest(events=events(1))).accepted == 1
    assert not server.key_known(new), "a key from a refused keys file was loaded"
    # Fixed file: loaded.
    server.keys_file.write_text(good + f"{hodei.key_hash(new)} keep writer\n")
    server.signal(signal.SIGHUP)
    server.wait_key(new, known=True)
    assert server.stub(new).Append(a.AppendRequest(events=events(1))).first_seq == 2


def test_logs_are_json_and_never_contain_keys(server, stubs):
    a = stubs.audit_pb2
    w_key = server.add_key("logs", "writer")
    wrong = hodei.new_key()
    server.stub(w_key).Append(a.AppendRequest(events=[hodei.event(0, actor_id="secret-actor-xyz")]))
    status_of(lambda: server.stub(wrong).Append(a.AppendRequest(events=events(1))))
    status_of(lambda: server.stub(w_key).Append(a.AppendRequest(events=[hodei.event(0, action="")])))
    assert server.stop() == 0
    lines = server.log_lines()
    assert lines, "no log lines on stderr"
    unparsed = [l["__unparsed__"] for l in lines if "__unparsed__" in l]
    assert not unparsed, f"stderr lines that are not JSON objects: {unparsed[:5]}"
    for l in lines:
        for field in ("time", "level", "msg"):
            assert field in l, f"log line without {field}: {l}"
    text = server.stderr()
    for key in [w_key, wrong, server.admin_key]:
        assert key not in text, "an API key appears in the logs"
        assert key[3:] not in text
    assert "secret-actor-xyz" not in text, "an event payload appears in the logs"


def test_tls(server_factory, stubs, tmp_path):
    a = stubs.audit_pb2
    crt, key = hodei.make_cert(tmp_path)
    srv = server_factory(args=["--tls-cert", str(crt), "--tls-key", str(key)])
    creds = grpc.ssl_channel_credentials(root_certificates=crt.read_bytes())
    ch = grpc.secure_channel(srv.grpc_addr, creds)
    srv._channels.append(ch)
    w = srv.stub(srv.admin_key, "tls", channel=ch)
    assert w.Append(a.AppendRequest(events=events(2))).accepted == 2
    assert len(w.Search(a.SearchRequest()).events) == 2
    # Cleartext h2c on the TLS port is refused, not served.
    plain = srv.stub(srv.admin_key, "tls", timeout=10)
    code, _, _ = status_of(lambda: plain.Verify(a.VerifyRequest()))
    assert code == C.UNAVAILABLE
