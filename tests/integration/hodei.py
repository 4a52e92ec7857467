# SPDX-License-Identifier: Apache-2.0
"""Helpers of the integration suite: the real hodei-auditd as a Python object,
stubs generated from the project's protos at test time, event builders, a
hand-written protobuf encoder for requests the official library refuses to
build (invalid UTF-8 in string fields), a Prometheus text parser and an
independent recomputation of the hash chain from docs/FORMAT.md §2-§3.

Everything runs on 127.0.0.1 and free ports; nothing here asserts on time.
Waits are bounded polls that fail with a message when their bound passes.
"""
import atexit
import hashlib
import importlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import namedtuple
from pathlib import Path
from types import SimpleNamespace

import grpc

ROOT = Path(__file__).resolve().parents[2]
BUILD_DIR = Path(os.environ.get("HODEI_BUILD_DIR", str(ROOT / "build")))
DAEMON = BUILD_DIR / "tools" / "hodei-auditd"
CLI = BUILD_DIR / "tools" / "hodei-audit"

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_EVENTS = 10000

SANITIZER_REPORT = re.compile(
    r"ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|WARNING: ThreadSanitizer")

# A call that hangs is a failure, not a stuck suite: every call made through
# Server.stub() gets this deadline unless the test gives its own.
CALL_TIMEOUT_S = 60.0


# ---------------------------------------------------------------------------
# Stubs, generated from proto/ with grpc_tools.protoc into a temporary folder.

_pb = None


def pb():
    """Returns a namespace with audit_pb2, audit_pb2_grpc, health_pb2 and
    health_pb2_grpc, generated once per process from the repository's protos.

    Each proto is compiled from its own folder so the modules are top-level
    (audit_pb2, health_pb2): a generated package named grpc.health.v1 would
    collide with the installed grpc package. The proto packages, and so the
    method paths on the wire, are unchanged. The folder is removed when the
    process exits (the modules are loaded by then)."""
    global _pb
    if _pb is not None:
        return _pb
    from grpc_tools import protoc

    out = Path(tempfile.mkdtemp(prefix="hodei-it-stubs-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    for folder, name in (
        (ROOT / "proto" / "hodei" / "audit" / "v1", "audit.proto"),
        (ROOT / "proto" / "grpc" / "health" / "v1", "health.proto"),
    ):
        include = Path(protoc.__file__).parent / "_proto"
        rc = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{folder}",
                f"-I{include}",
                f"--python_out={out}",
                f"--grpc_python_out={out}",
                str(folder / name),
            ]
        )
        if rc != 0:
            raise RuntimeError(f"grpc_tools.protoc failed on {folder / name}: {rc}")
    sys.path.insert(0, str(out))
    _pb = SimpleNamespace(
        audit_pb2=importlib.import_module("audit_pb2"),
        audit_pb2_grpc=importlib.import_module("audit_pb2_grpc"),
        health_pb2=importlib.import_module("health_pb2"),
        health_pb2_grpc=importlib.import_module("health_pb2_grpc"),
        dir=out,
    )
    return _pb


# ---------------------------------------------------------------------------
# Keys.


def new_key():
    """A fresh API key in the project's format: hk_ and 64 hex digits."""
    return "hk_" + secrets.token_hex(32)


def key_hash(key):
    return hashlib.sha256(key.encode()).hexdigest()


# ---------------------------------------------------------------------------
# Events.


def uuid7():
    """A UUIDv7 (48-bit Unix ms, version 7, variant 10, random rest)."""
    ms = time.time_ns() // 1_000_000
    b = bytearray(ms.to_bytes(6, "big") + secrets.token_bytes(10))
    b[6] = 0x70 | (b[6] & 0x0F)
    b[8] = 0x80 | (b[8] & 0x3F)
    return bytes(b)


def event(i=0, **fields):
    """A valid AuditEvent with every common field set; keyword arguments
    replace fields (attributes as a list of (key, value) pairs)."""
    a = pb().audit_pb2
    attrs = fields.pop("attributes", [("k", f"v{i}")])
    base = dict(
        event_id=uuid7(),
        # A second in the past: Search's default upper bound is "now".
        occurred_at_ns=time.time_ns() - 1_000_000_000,
        actor_id=f"user-{i}",
        actor_type="user",
        action="document.read",
        resource_type="document",
        resource_id=f"doc-{i}",
        outcome=a.OUTCOME_SUCCESS,
        source_ip="203.0.113.7",
        user_agent="hodei-it/1.0",
        request_id=f"req-{i}",
        trace_id="",
        details_json=b'{"n":%d}' % i,
    )
    base.update(fields)
    ev = a.AuditEvent(**base)
    for k, v in attrs:
        ev.attributes.add(key=k, value=v)
    return ev


def events(n, start=0, **fields):
    return [event(start + i, **fields) for i in range(n)]


def append_request(evs):
    return pb().audit_pb2.AppendRequest(events=list(evs))


# ---------------------------------------------------------------------------
# Hand-written protobuf encoding (for bytes the library refuses to build).


def varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def pb_len(num, data):
    return varint(num << 3 | 2) + varint(len(data)) + data


def pb_varint(num, n):
    return varint(num << 3) + varint(n)


AUDIT_EVENT_FIELDS = {
    "event_id": 1, "occurred_at_ns": 2, "actor_id": 3, "actor_type": 4,
    "action": 5, "resource_type": 6, "resource_id": 7, "outcome": 8,
    "source_ip": 9, "user_agent": 10, "request_id": 11, "trace_id": 12,
    "attributes": 13, "details_json": 14,
}


def raw_event(**fields):
    """Encodes an AuditEvent by hand. String and bytes fields take bytes
    (sent as they are, valid UTF-8 or not); attributes take a list of
    (key bytes, value bytes)."""
    out = bytearray()
    for name, num in sorted(AUDIT_EVENT_FIELDS.items(), key=lambda x: x[1]):
        if name not in fields:
            continue
        v = fields[name]
        if name in ("occurred_at_ns", "outcome"):
            out += pb_varint(num, v)
        elif name == "attributes":
            for k, val in v:
                out += pb_len(num, pb_len(1, k) + pb_len(2, val))
        else:
            out += pb_len(num, v)
    return bytes(out)


def raw_append_request(raw_events):
    return b"".join(pb_len(1, e) for e in raw_events)


def raw_valid_event(i=0, **fields):
    """The bytes of a valid event, with some fields replaced by raw bytes."""
    base = dict(
        event_id=uuid7(),
        occurred_at_ns=time.time_ns() - 1_000_000_000,
        actor_id=b"user-%d" % i,
        action=b"document.read",
        resource_id=b"doc-%d" % i,
    )
    base.update(fields)
    return raw_event(**base)


# ---------------------------------------------------------------------------
# The hash chain, recomputed from stored events (docs/FORMAT.md §2-§3).

ZERO_CHAIN = bytes(32)
STRING_FIELDS = (
    "actor_id", "actor_type", "action", "resource_type", "resource_id",
    "source_ip", "user_agent", "request_id", "trace_id",
)


def canonical(stored):
    """Canonical encoding, version 1, of a StoredEvent."""
    e = stored.event
    t = stored.tenant_id.encode()
    assert len(e.event_id) == 16, f"seq {stored.seq}: event_id of {len(e.event_id)} bytes"
    out = bytearray([1, len(t)]) + t
    out += struct.pack("<Qq", stored.seq, stored.received_at_ns)
    out += e.event_id
    out += struct.pack("<qB", e.occurred_at_ns, e.outcome)
    for f in STRING_FIELDS:
        b = getattr(e, f).encode()
        out += struct.pack("<I", len(b)) + b
    out += struct.pack("<I", len(e.attributes))
    for a in e.attributes:
        k, v = a.key.encode(), a.value.encode()
        out += struct.pack("<I", len(k)) + k + struct.pack("<I", len(v)) + v
    out += struct.pack("<I", len(e.details_json)) + e.details_json
    return bytes(out)


def check_chain(stored_events, tenant):
    """Asserts that stored_events (all of one tenant's events, any order)
    have seqs 1..n without gaps and that each chain_hash is the chain value
    recomputed from the canonical encodings. Returns the final chain value
    (32 zero bytes when there are no events)."""
    evs = sorted(stored_events, key=lambda s: s.seq)
    chain = ZERO_CHAIN
    for n, s in enumerate(evs, start=1):
        assert s.tenant_id == tenant, f"seq {s.seq}: tenant {s.tenant_id!r}, want {tenant!r}"
        assert s.seq == n, f"tenant {tenant}: seq {s.seq} where {n} was expected (gap or duplicate)"
        event_hash = hashlib.sha256(canonical(s)).digest()
        chain = hashlib.sha256(chain + event_hash).digest()
        assert s.chain_hash == chain, (
            f"tenant {tenant} seq {s.seq}: stored chain_hash {s.chain_hash.hex()} "
            f"!= recomputed {chain.hex()}"
        )
    return chain


def search_all(stub, max_pages=10000, **filters):
    """Every event a Search with these filters returns, oldest first,
    following page tokens."""
    a = pb().audit_pb2
    out = []
    token = b""
    filters.setdefault("oldest_first", True)
    filters.setdefault("limit", 1000)
    for _ in range(max_pages):
        resp = stub.Search(a.SearchRequest(page_token=token, **filters))
        out.extend(resp.events)
        if not resp.next_page_token:
            return out
        token = resp.next_page_token
    raise AssertionError(f"Search did not end after {max_pages} pages")


# ---------------------------------------------------------------------------
# Prometheus text format.

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+-?\d+)?\s*$')
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')


def _unescape(v):
    return v.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")


def _parse_value(s):
    if s in ("+Inf", "Inf"):
        return float("inf")
    if s == "-Inf":
        return float("-inf")
    return float(s)


class Metrics(dict):
    """Samples of one /metrics scrape: {(name, ((label, value), ...)): float}."""

    def __init__(self, text):
        super().__init__()
        self.text = text
        self.types = {}
        for line in text.splitlines():
            if not line.strip():
                continue
            if line.startswith("#"):
                parts = line.split(None, 3)
                if len(parts) >= 4 and parts[1] == "TYPE":
                    self.types[parts[2]] = parts[3].strip()
                continue
            m = _SAMPLE.match(line)
            if not m:
                raise ValueError(f"unparsable metrics line: {line!r}")
            labels = {}
            body = m.group(3) or ""
            pos = 0
            while pos < len(body):
                lm = _LABEL.match(body, pos)
                if not lm:
                    raise ValueError(f"unparsable labels in: {line!r}")
                labels[lm.group(1)] = _unescape(lm.group(2))
                pos = lm.end()
            key = (m.group(1), tuple(sorted(labels.items())))
            if key in self:
                raise ValueError(f"duplicate sample: {line!r}")
            self[key] = _parse_value(m.group(4))

    def get(self, name, default=0.0, **labels):
        """The sample with exactly these labels, or default."""
        return super().get((name, tuple(sorted(labels.items()))), default)

    def has(self, name):
        return any(k[0] == name for k in self)

    def sum(self, name, **labels):
        """Sum of the samples of name whose labels include these."""
        total = 0.0
        for (n, ls), v in self.items():
            d = dict(ls)
            if n == name and all(d.get(k) == v2 for k, v2 in labels.items()):
                total += v
        return total

    def samples(self, name):
        return [(dict(ls), v) for (n, ls), v in self.items() if n == name]


# ---------------------------------------------------------------------------
# gRPC plumbing.

_Details = namedtuple(
    "_Details", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
)


class _CallDetails(_Details, grpc.ClientCallDetails):
    pass


class MetadataInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds fixed metadata (authorization, x-hodei-tenant) and a default
    deadline to every call of a channel."""

    def __init__(self, metadata, timeout):
        self.metadata = list(metadata)
        self.timeout = timeout

    def _details(self, d):
        md = list(d.metadata or []) + self.metadata
        timeout = d.timeout if d.timeout is not None else self.timeout
        return _CallDetails(
            d.method, timeout, md, d.credentials, getattr(d, "wait_for_ready", None),
            getattr(d, "compression", None),
        )

    def intercept_unary_unary(self, cont, d, req):
        return cont(self._details(d), req)

    def intercept_unary_stream(self, cont, d, req):
        return cont(self._details(d), req)

    def intercept_stream_unary(self, cont, d, it):
        return cont(self._details(d), it)

    def intercept_stream_stream(self, cont, d, it):
        return cont(self._details(d), it)


def auth_metadata(key=None, tenant=None):
    md = []
    if key is not None:
        md.append(("authorization", f"Bearer {key}"))
    if tenant is not None:
        md.append(("x-hodei-tenant", tenant))
    return md


def status_of(call):
    """Runs call() and returns (grpc.StatusCode, details, result)."""
    try:
        return grpc.StatusCode.OK, "", call()
    except grpc.RpcError as e:
        return e.code(), e.details() or "", None


def _die_with_parent():
    """Runs in the child before exec: SIGKILL when the test process dies
    (a pytest-timeout abort, a CTest timeout), so no server outlives the
    suite."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def make_cert(d, san="IP:127.0.0.1,DNS:localhost", name="tls"):
    """A self-signed certificate and its key in directory d, for the names
    in san: (cert path, key path). Skips the test without openssl."""
    import pytest
    if shutil.which("openssl") is None:
        pytest.skip("openssl command not installed")
    key, crt = Path(d) / f"{name}.key", Path(d) / f"{name}.crt"
    p = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", f"subjectAltName={san}",
         "-keyout", str(key), "-out", str(crt)],
        capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr.decode()
    return crt, key


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=10.0):
    """(status, body) of GET url; (None, error) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")
    except (urllib.error.URLError, ConnectionError, socket.timeout, OSError) as e:
        return None, str(e)


def wait_until(pred, timeout_s, what, interval_s=0.02):
    """Polls pred() until it is truthy; fails with `what` after timeout_s.
    Returns pred()'s value."""
    deadline = time.monotonic() + timeout_s
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


# ---------------------------------------------------------------------------
# The server.

ALL_SERVERS = []  # every Server made in this process, for failure reports


def slow_query_profile(line):
    """The profile of a slow-query log line (ADR 0018: "slow query: " and
    logfmt pairs) as a dict of strings, or None for any other line."""
    msg = str(line.get("msg", ""))
    if not msg.startswith("slow query: "):
        return None
    return dict(kv.split("=", 1) for kv in msg[len("slow query: "):].split() if "=" in kv)


class Server:
    """The real hodei-auditd on 127.0.0.1 and free ports, in its own
    directory (data/, keys, stdout.log, stderr.log).

    args: extra command-line flags. env: extra environment. use_flags=False
    passes the base configuration as HODEI_* variables instead of flags.
    admin_key=False starts without a keys file (first start creates it).
    omit: base settings left out (e.g. ("keys-file",) for the default)."""

    def __init__(self, workdir, args=(), env=None, use_flags=True, admin_key=True,
                 shards=2, seal_age="1s", omit=()):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.dir / "data"
        self.keys_file = self.dir / "keys"
        self.stdout_path = self.dir / "stdout.log"
        self.stderr_path = self.dir / "stderr.log"
        self.grpc_port = free_port()
        self.admin_port = free_port()
        self.grpc_addr = f"127.0.0.1:{self.grpc_port}"
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"
        self.args = list(args)
        self.env = dict(env or {})
        self.use_flags = use_flags
        self.shards = shards
        self.seal_age = seal_age
        self.omit = set(omit)
        self.keys = {}  # key -> (tenant, role)
        self.proc = None
        self.expect_dead = False
        self._channels = []
        self._shared_channel = None
        self.admin_key = self.add_key("default", "admin") if admin_key else None
        ALL_SERVERS.append(self)

    # -- process ------------------------------------------------------------

    def base_config(self):
        cfg = {
            "data-dir": str(self.data_dir),
            "grpc-listen": self.grpc_addr,
            "admin-listen": f"127.0.0.1:{self.admin_port}",
            "keys-file": str(self.keys_file),
        }
        if self.shards:
            cfg["shards"] = str(self.shards)
        if self.seal_age:
            cfg["seal-age"] = self.seal_age
        return {k: v for k, v in cfg.items() if k not in self.omit}

    def command(self):
        cmd = [str(DAEMON)]
        if self.use_flags:
            for k, v in self.base_config().items():
                cmd += [f"--{k}", v]
        return cmd + self.args

    def environment(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("HODEI_")}
        if not self.use_flags:
            for k, v in self.base_config().items():
                env["HODEI_" + k.upper().replace("-", "_")] = v
        env.update(self.env)
        return env

    def start(self, wait_ready=True, timeout_s=120):
        """Starts the server. free_port() can race with another process
        taking the port before the server binds it: when the server exits
        with "Address already in use", it is started again on new ports (a
        few times), so the suite is not flaky on a busy machine."""
        for attempt in range(4):
            seen = self.stderr_path.stat().st_size if self.stderr_path.exists() else 0
            self._launch()
            if not wait_ready:
                return self
            try:
                self.wait_ready(timeout_s)
                return self
            except AssertionError:
                fresh = self.stderr_path.read_bytes()[seen:].decode(errors="replace")
                if attempt == 3 or "Address already in use" not in fresh:
                    raise
                self.grpc_port, self.admin_port = free_port(), free_port()
                self.grpc_addr = f"127.0.0.1:{self.grpc_port}"
                self.admin_url = f"http://127.0.0.1:{self.admin_port}"
                self.close_channels()
        return self

    def _launch(self):
        assert self.proc is None or self.proc.poll() is not None, "already running"
        assert DAEMON.exists(), f"{DAEMON} is missing: build the project first"
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                self.command(), stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                env=self.environment(), cwd=self.dir, start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self.expect_dead = False

    def wait_ready(self, timeout_s=120):
        def ready():
            if self.proc.poll() is not None:
                self.expect_dead = True  # reported here, not again at teardown
                raise AssertionError(
                    f"hodei-auditd exited with {self.proc.returncode} before it was ready:\n"
                    + self.stderr_tail()
                )
            return self.readyz()[0] == 200

        wait_until(ready, timeout_s, f"{self.admin_url}/readyz == 200")

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout_s=120):
        """SIGTERM, then waits; returns the exit code."""
        self.close_channels()
        self.expect_dead = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"hodei-auditd did not exit {timeout_s} s after SIGTERM")

    def kill(self):
        """SIGKILL and wait."""
        self.expect_dead = True
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        # Channels stay open: clients under load keep using them, and they
        # reconnect to the restarted server like real clients.

    def restart(self, **kw):
        self.stop()
        return self.start(**kw)

    def finish(self):
        """Teardown: stops a running server. Returns a message when the
        server died on its own during the test (a crash), else None."""
        self.close_channels()
        if self.proc is None:
            return None
        died = None
        if self.proc.poll() is not None and not self.expect_dead:
            died = f"hodei-auditd died during the test (exit status {self.proc.returncode})"
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # Under ASan/UBSan/TSan (scripts/test.sh runs this suite against a
        # sanitized build too), a report in the server's stderr is a failure
        # even when every call succeeded.
        report = SANITIZER_REPORT.search(self.stderr())
        if report:
            line = self.stderr()[report.start():].splitlines()[0]
            died = (died + "; " if died else "") + f"sanitizer report in hodei-auditd's stderr: {line}"
        return died

    # -- output -------------------------------------------------------------

    def stdout(self):
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    def stderr(self):
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def stderr_tail(self, lines=80):
        return "\n".join(self.stderr().splitlines()[-lines:])

    def log_lines(self):
        """stderr parsed as JSON lines. A line that is not a JSON object is
        returned as {"__unparsed__": line}."""
        out = []
        for line in self.stderr().splitlines():
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError
            except ValueError:
                obj = {"__unparsed__": line}
            out.append(obj)
        return out

    def slow_query_lines(self):
        """The slow-query lines of log_lines()."""
        return [l for l in self.log_lines() if slow_query_profile(l) is not None]

    # -- admin port ---------------------------------------------------------

    def get(self, path, timeout=10.0):
        return http_get(self.admin_url + path, timeout)

    def readyz(self):
        return self.get("/readyz", timeout=5.0)

    def metrics_text(self):
        status, body = self.get("/metrics")
        assert status == 200, f"GET /metrics: {status} {body[:200]}"
        return body

    def metrics(self):
        return Metrics(self.metrics_text())

    # -- keys ---------------------------------------------------------------

    def add_key(self, tenant, role, key=None, wait=True):
        """Appends a key line to the keys file; on a running server sends
        SIGHUP and waits until the key is accepted. Returns the key."""
        key = key or new_key()
        with open(self.keys_file, "a") as f:
            f.write(f"# {role} key of {tenant}\n{key_hash(key)} {tenant} {role}\n")
        self.keys[key] = (tenant, role)
        if self.running():
            self.proc.send_signal(signal.SIGHUP)
            if wait:
                self.wait_key(key, known=True)
        return key

    def remove_key(self, key, wait=True):
        h = key_hash(key)
        lines = self.keys_file.read_text().splitlines(keepends=True)
        self.keys_file.write_text("".join(line for line in lines if not line.startswith(h)))
        self.keys.pop(key, None)
        if self.running():
            self.proc.send_signal(signal.SIGHUP)
            if wait:
                self.wait_key(key, known=False)

    def key_known(self, key):
        """Probes a key with Verify: UNAUTHENTICATED means unknown; any
        other answer (OK, PERMISSION_DENIED for a writer, INVALID_ARGUMENT
        for an admin without x-hodei-tenant) means the server knows it."""
        stub = self.stub(key, channel=self.shared_channel())
        code, _, _ = status_of(lambda: stub.Verify(pb().audit_pb2.VerifyRequest(), timeout=10))
        return code != grpc.StatusCode.UNAUTHENTICATED

    def wait_key(self, key, known, timeout_s=15):
        wait_until(lambda: self.key_known(key) == known, timeout_s,
                   f"the server to {'accept' if known else 'refuse'} a key after SIGHUP")

    # -- gRPC ---------------------------------------------------------------

    def channel(self, compression=None, options=()):
        """A new channel with its own TCP connection (a local subchannel
        pool: grpcio otherwise shares one connection between channels)."""
        opts = [
            ("grpc.use_local_subchannel_pool", 1),
            ("grpc.max_send_message_length", -1),
            ("grpc.max_receive_message_length", -1),
            ("grpc.enable_retries", 0),
        ] + list(options)
        ch = grpc.insecure_channel(self.grpc_addr, options=opts, compression=compression)
        self._channels.append(ch)
        return ch

    def shared_channel(self):
        """One channel (one connection) for the helpers below, so that a
        module's many checks do not open a connection each."""
        if self._shared_channel is None:
            self._shared_channel = self.channel()
        return self._shared_channel

    def auth_channel(self, key=None, tenant=None, channel=None, timeout=CALL_TIMEOUT_S):
        return grpc.intercept_channel(channel or self.channel(),
                                      MetadataInterceptor(auth_metadata(key, tenant), timeout))

    def stub(self, key=None, tenant=None, channel=None, timeout=CALL_TIMEOUT_S):
        """An AuditService stub whose calls carry `authorization: Bearer
        key` and, when given, `x-hodei-tenant: tenant`."""
        return pb().audit_pb2_grpc.AuditServiceStub(
            self.auth_channel(key, tenant, channel, timeout))

    def health(self, channel=None):
        return pb().health_pb2_grpc.HealthStub(
            grpc.intercept_channel(channel or self.channel(), MetadataInterceptor([], CALL_TIMEOUT_S)))

    def raw(self, path, key=None, tenant=None, channel=None):
        """A unary callable for any method path taking and returning raw
        bytes (no protobuf serialization on the client)."""
        return self.auth_channel(key, tenant, channel).unary_unary(path)

    def close_channels(self):
        for ch in self._channels:
            try:
                ch.close()
            except Exception:
                pass
        self._channels = []
        self._shared_channel = None

    # -- convenience ------------------------------------------------------------

    def admin(self, tenant):
        """A stub acting as the admin for tenant (on the shared channel)."""
        return self.stub(self.admin_key, tenant, channel=self.shared_channel())

    def stored(self, tenant):
        """Every stored event of tenant, oldest first (read as the admin)."""
        return search_all(self.admin(tenant))

    def verify(self, tenant, from_seq=0, to_seq=0):
        return self.admin(tenant).Verify(
            pb().audit_pb2.VerifyRequest(from_seq=from_seq, to_seq=to_seq))
