#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""clickhouse_bench.py — the ClickHouse side of the benchmark (issue #5):
the same generated events and the same five queries as hodei-audit, on
ClickHouse 18.16 (Debian's clickhouse-server), driven over its HTTP
interface with http.client and keep-alive connections.

Data flow:

    hodei-bench-gen --clickhouse      (the mirror's rows for the generator's
                                       events, as JSONEachRow lines)
      -> JSONEachRow as is, or TabSeparated / RowBinary bytes (converted
         once, not timed), 10,000 rows per INSERT
      -> ClickHouse: INSERT into <db>.events_insert (insert benchmark and
         sweep) or <db>.events (the table the queries read)

The table is the ClickHouse mirror's own (docs/CLICKHOUSE.md, DDL in
net/clickhouse.c; tests/integration/test_bench_clickhouse.py checks that
COLUMNS below equals `hodei-audit clickhouse schema`): same columns, types,
PARTITION BY and ORDER BY (tenant_id, occurred_at, seq), so the comparison
is about the data layout the mirror really uses. The generator's JSON lacks
what hodei-auditd adds on append (seq, received_at_ns, chain_hash,
segment_id) and has two objects that 18.16's JSONEachRow cannot put into
the mirror's columns (attributes -> attr_keys/attr_values, details ->
details_json). `hodei-bench-gen --clickhouse` computes them the way the
engine does (seq per tenant from 1, a per-tenant SHA-256 chain, received =
occurred + a few ms; bench/gen_main.c), before any timing; "schema" in the
output says so.

Subcommands (each prints one JSON object on stdout, a summary on stderr):

    all     start a private server in --dir (or use --url), then insert,
            load, bytes and query; the one call bench/run.sh makes
    serve   start a private server in --dir and wait (SIGINT/SIGTERM stops it)
    insert  the insert benchmark: every format x 1 and 2 clients
    sweep   open-loop batch latency at fixed offered rates (--rates), in
            one format with 1 or 2 clients (the insert benchmark's best)
    load    load exactly --count events into <db>.events, wait for merges
    bytes   bytes per event of <db>.events
    query   run the plan's queries against <db>.events
    plan    a small query plan from the generator's events (the format of
            `hodei-bench-query plan`), for runs without that tool

Typical use (one JSON on stdout; about 9 minutes on the shared machine,
most of it converting events before the timed parts):

    .venv/bin/python bench/clickhouse_bench.py all --dir /tmp/chb \
        --gen build/bench/hodei-bench-gen --seed 1 --count 2000000 \
        --tenants 1000 --step-ns 1296000000 --plan plan.json \
        --insert-seconds 10 --samples 200

and the latency sweep against a server started with `serve`:

    .venv/bin/python bench/clickhouse_bench.py sweep --url http://127.0.0.1:PORT \
        --server-pid PID --gen build/bench/hodei-bench-gen --tenants 1000 \
        --format TabSeparated --clients 2 --rates 20000,100000,180000 \
        --sweep-seconds 10 --pool-batches 30

What is timed, and how:
- insert: a pool of --pool-batches x 10,000 events (--insert-seed) held in
  memory in each of the three formats; for each format and 1 and 2 client
  threads (each its own keep-alive connection), INSERTs for
  --insert-seconds into the scratch table events_insert, TRUNCATE'd and
  with no merge running before each run. events/s and MB/s of body;
  "best" is the fastest run.
- sweep: the same kind of pool, in --format only; for each of --rates
  (events/s), --sweep-warmup then --sweep-seconds of open loop: batch k
  is due at t0 + (rows before it) / rate, --clients threads send the
  batches in due order on their own connections, and a batch's latency
  runs from its DUE time to the end of the answer, so a server that falls
  behind shows it (coordinated omission corrected, as hodei-bench-load
  --rate). Per rate: events/s answered in the window, batch latency
  p50/p99/p99.9 over the batches due in it, late starts (> 1 ms after
  due), batches not started --sweep-drain after the window, and count()
  of the TRUNCATE'd table against the rows sent.
- load: exactly --count events in JSONEachRow batches of 10,000 from 2
  clients into events, then a wait for background merges to settle (no
  OPTIMIZE FINAL unless --settle optimize). The bodies come from a spool
  file written before the timing starts.
- query: per kind, --samples queries on one keep-alive connection, kinds
  interleaved round-robin after --warmup untimed rounds; client wall time
  from sending the request to the end of the TabSeparated body.
The server's CPU per event (/proc/PID/stat, our server or --server-pid) is
given beside each rate: on a shared machine it varies far less than events/s.

The private server is started by tests/integration/chserver.py (imported,
not copied), so run this with the project's virtualenv python
(.venv/bin/python): chserver imports the suite's helpers, which need grpcio.

Nothing here asserts on time; answers are checked (rows, order, tenant,
bounds, and for each plan entry the row count against an independent
count() run after the timed loop) and wrong answers are counted.
"""
import argparse
import base64
import http.client
import json
import os
import random
import re
import resource
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_GEN = ROOT / "build" / "bench" / "hodei-bench-gen"

# The mirror's table, as net/clickhouse.c (ch_column_names/ch_column_types)
# defines it. Kept here because the encoders below need the types; the
# smoke test compares it with `hodei-audit clickhouse schema`.
COLUMNS = [
    ("tenant_id", "String"),
    ("event_id", "UUID"),
    ("seq", "UInt64"),
    ("occurred_at", "DateTime('UTC')"),
    ("occurred_at_ns", "Int64"),
    ("received_at_ns", "Int64"),
    ("actor_id", "String"),
    ("actor_type", "String"),
    ("action", "String"),
    ("resource_type", "String"),
    ("resource_id", "String"),
    ("outcome", "Enum8('unspecified' = 0, 'success' = 1, 'failure' = 2, 'denied' = 3)"),
    ("source_ip", "String"),
    ("user_agent", "String"),
    ("request_id", "String"),
    ("trace_id", "String"),
    ("attr_keys", "Array(String)"),
    ("attr_values", "Array(String)"),
    ("details_json", "String"),
    ("chain_hash", "String"),
    ("segment_id", "UInt64"),
]
NAMES = [c[0] for c in COLUMNS]
COL = {n: i for i, n in enumerate(NAMES)}
PARTITION_BY = "toYYYYMM(occurred_at)"
ORDER_BY = "(tenant_id, occurred_at, seq)"
OUTCOMES = {"unspecified": 0, "success": 1, "failure": 2, "denied": 3}
STRING_FIELDS = ("actor_id", "actor_type", "action", "resource_type", "resource_id",
                 "source_ip", "user_agent", "request_id", "trace_id")
FORMATS = ("JSONEachRow", "TabSeparated", "RowBinary")
KINDS = ("Q1", "Q1top", "Q2", "Q3", "Q4", "Q5")
LIMIT = 100
BATCH_ROWS = 10_000
IDLE_RECONNECT_S = 1.0      # below chserver's keep_alive_timeout of 3 s
DAY_NS = 86_400 * 10**9


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def ddl(database, table):
    """The mirror's CREATE TABLE (net/clickhouse.c schema_statement)."""
    cols = ",\n".join(f"    {n} {t}" for n, t in COLUMNS)
    return (f"CREATE TABLE IF NOT EXISTS `{database}`.{table}\n(\n{cols}\n)\n"
            f"ENGINE = MergeTree\nPARTITION BY {PARTITION_BY}\nORDER BY {ORDER_BY}\n"
            "SETTINGS index_granularity = 8192")


# --------------------------------------------------------------------------
# SQL literals. 18.16 has no query parameters: values are quoted here.

def sql_str(s):
    """A ClickHouse string literal: backslash escapes for \\ and ' (and the
    control characters, so the statement stays on one line)."""
    s = str(s)
    for a, b in (("\\", "\\\\"), ("'", "\\'"), ("\n", "\\n"), ("\t", "\\t"),
                 ("\r", "\\r"), ("\0", "\\0")):
        s = s.replace(a, b)
    return "'" + s + "'"


def sql_int(v):
    return str(int(v))


def ident(name):
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", name):
        raise SystemExit(f"bad identifier {name!r}: [A-Za-z_][A-Za-z0-9_]*, at most 64")
    return name


# --------------------------------------------------------------------------
# HTTP: one keep-alive connection per client thread.

class ChError(Exception):
    def __init__(self, status, body):
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
        super().__init__(f"HTTP {status}: {text.strip()[:400]}")
        self.status = status


class Conn:
    """A keep-alive HTTP connection to ClickHouse. post() sends one request
    and reads the whole answer. An idle connection (IDLE_RECONNECT_S) is
    replaced before use so the server's keep-alive timeout never closes it
    under a request; a SELECT that still meets a closed connection is sent
    once more on a new one (an INSERT is not: it could be applied twice)."""

    def __init__(self, url, user=None, password=None, timeout_s=600):
        u = urllib.parse.urlsplit(url)
        if u.scheme != "http" or not u.hostname:
            raise SystemExit(f"--url {url!r}: want http://host:port")
        self.host, self.port = u.hostname, u.port or 8123
        self.timeout_s = timeout_s
        self.headers = {"Connection": "keep-alive"}
        if user:
            token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
            self.headers["Authorization"] = "Basic " + token
        self.c = None
        self.last = 0.0

    def close(self):
        if self.c is not None:
            self.c.close()
            self.c = None

    def ensure(self):
        if self.c is not None and time.monotonic() - self.last > IDLE_RECONNECT_S:
            self.close()
        if self.c is None:
            self.c = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
            self.c.connect()
            # Headers and a large body go out in two writes: without
            # TCP_NODELAY the body could wait for a delayed ACK.
            self.c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.last = time.monotonic()  # a fresh connection is not idle

    def post(self, params, body, retry=False):
        path = "/?" + urllib.parse.urlencode(params) if params else "/"
        for attempt in (0, 1):
            self.ensure()
            try:
                self.c.request("POST", path, body=body, headers=self.headers)
                r = self.c.getresponse()
                data = r.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if retry and attempt == 0:
                    continue
                raise
            self.last = time.monotonic()
            if r.will_close:
                self.close()
            if r.status != 200:
                raise ChError(r.status, data)
            return data
        raise AssertionError("unreachable")

    def query(self, sql, **settings):
        """A statement in the body; settings in the URL. Returns the answer."""
        return self.post(settings, sql.encode(), retry=True)

    def rows(self, sql):
        text = self.query(sql + " FORMAT TabSeparated").decode()
        return [[tsv_unescape(f) for f in line.split("\t")] for line in text.splitlines()]

    def scalar(self, sql):
        return int(self.query(sql + " FORMAT TabSeparated").strip() or 0)

    def insert(self, table, fmt, body):
        return self.post({"query": f"INSERT INTO {table} FORMAT {fmt}"}, body)


# --------------------------------------------------------------------------
# Events -> rows of the mirror's table -> bytes in each input format.

def gen_command(a, seed, count):
    return [str(a.gen), "--seed", str(seed), "--count", str(count), "--tenants", str(a.tenants),
            "--step-ns", str(a.step_ns), "--clickhouse"]


def gen_lines(cmd):
    """Yields the generator's NDJSON lines (bytes, without newline) as it
    prints them: memory stays bounded whatever the count."""
    if not Path(cmd[0]).exists():
        raise SystemExit(f"{cmd[0]} does not exist: cmake --build build --target hodei-bench-gen")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, bufsize=1 << 20)
    try:
        for line in p.stdout:
            yield line.rstrip(b"\n")
    finally:
        p.stdout.close()
        if p.wait() != 0:
            raise SystemExit(f"{' '.join(cmd)} exited with {p.returncode}")


def row_of(line):
    """One mirror row (a JSONEachRow line of hodei-bench-gen --clickhouse)
    as a tuple in COLUMNS order, for the encoders."""
    d = json.loads(line)
    return tuple(d[n] for n in NAMES)


def enc_json(rows):
    """JSONEachRow: occurred_at as Unix seconds (18.16 reads a number)."""
    out = []
    for r in rows:
        out.append(json.dumps(dict(zip(NAMES, r)), ensure_ascii=False, separators=(",", ":")))
    return ("\n".join(out) + "\n").encode()


_TSV = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0"})
_TSV_SPECIAL = re.compile(r"[\\\t\n\r\0]")
_QUOTED = str.maketrans({"\\": "\\\\", "'": "\\'", "\t": "\\t", "\n": "\\n", "\r": "\\r",
                         "\0": "\\0"})


def _tsv_array(items):
    # Inside an array, TabSeparated uses the quoted form only (checked on
    # 18.16: ['a\'b'] reads back as a'b), and that form escapes tabs and
    # newlines itself.
    return "[" + ",".join("'" + s.translate(_QUOTED) + "'" for s in items) + "]"


def enc_tsv(rows):
    out = []
    last_s, last_txt = None, None
    for r in rows:
        if r[3] != last_s:
            last_s, last_txt = r[3], time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r[3]))
        f = [v.translate(_TSV) if isinstance(v, str) and _TSV_SPECIAL.search(v) else v
             for v in r]
        f[2], f[3], f[4], f[5], f[20] = str(r[2]), last_txt, str(r[4]), str(r[5]), str(r[20])
        f[16], f[17] = _tsv_array(r[16]), _tsv_array(r[17])
        out.append("\t".join(f))
    return ("\n".join(out) + "\n").encode()


def _varint(n):
    b = bytearray()
    while n >= 0x80:
        b.append((n & 0x7F) | 0x80)
        n >>= 7
    b.append(n)
    return bytes(b)


def _rb_str(s):
    b = s.encode()
    return _varint(len(b)) + b


_U64, _U32 = struct.Struct("<Q"), struct.Struct("<I")
_I64, _I8 = struct.Struct("<q"), struct.Struct("<b")
_UUID = struct.Struct("<QQ")


def enc_rowbinary(rows):
    """RowBinary: strings with a varint length, integers little-endian,
    UUID as two little-endian UInt64 halves (high half first, as the
    mirror's encoder writes it), Enum8 as its number."""
    out = bytearray()
    for r in rows:
        u = bytes.fromhex(r[1].replace("-", ""))
        out += _rb_str(r[0])
        out += _UUID.pack(int.from_bytes(u[:8], "big"), int.from_bytes(u[8:], "big"))
        out += _U64.pack(r[2]) + _U32.pack(r[3]) + _I64.pack(r[4]) + _I64.pack(r[5])
        for i in range(6, 11):
            out += _rb_str(r[i])
        out += _I8.pack(OUTCOMES[r[11]])
        for i in range(12, 16):
            out += _rb_str(r[i])
        for i in (16, 17):
            out += _varint(len(r[i]))
            for s in r[i]:
                out += _rb_str(s)
        out += _rb_str(r[18]) + _rb_str(r[19]) + _U64.pack(r[20])
    return bytes(out)


ENCODERS = {"JSONEachRow": enc_json, "TabSeparated": enc_tsv, "RowBinary": enc_rowbinary}


def batches(lines, rows_per_batch=BATCH_ROWS):
    """Groups the generator's mirror rows (JSONEachRow lines) by BATCH_ROWS."""
    batch = []
    for line in lines:
        batch.append(line)
        if len(batch) == rows_per_batch:
            yield batch
            batch = []
    if batch:
        yield batch


def body_of(fmt, lines):
    """An INSERT body in fmt from mirror rows as JSONEachRow lines."""
    if fmt == "JSONEachRow":
        return b"\n".join(lines) + b"\n"
    return ENCODERS[fmt]([row_of(line) for line in lines])


# --------------------------------------------------------------------------
# CPU accounting, to read the figures on a shared machine.

def proc_cpu_s(pid):
    if not pid:
        return None
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return None


def machine_busy():
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = f[3] + f[4]
    return sum(f) - idle, sum(f)


class CpuWindow:
    """Server CPU, this process's CPU and the whole machine's busy CPU
    over a window, in cores (CPU seconds per wall second)."""

    def __init__(self, server_pid):
        self.pid = server_pid
        self.t0 = time.monotonic()
        self.srv0 = proc_cpu_s(server_pid)
        ru = resource.getrusage(resource.RUSAGE_SELF)
        self.me0 = ru.ru_utime + ru.ru_stime
        self.m0 = machine_busy()

    def done(self):
        wall = max(time.monotonic() - self.t0, 1e-9)
        srv = proc_cpu_s(self.pid)
        ru = resource.getrusage(resource.RUSAGE_SELF)
        m1 = machine_busy()
        busy = (m1[0] - self.m0[0]) / max(m1[1] - self.m0[1], 1) * os.cpu_count()
        srv_cores = None if srv is None or self.srv0 is None else (srv - self.srv0) / wall
        me_cores = (ru.ru_utime + ru.ru_stime - self.me0) / wall
        others = None if srv_cores is None else max(busy - srv_cores - me_cores, 0.0)
        return {"server_cpu_s": None if srv_cores is None else rnd(srv - self.srv0),
                "server_cores": rnd(srv_cores), "client_cores": rnd(me_cores),
                "machine_busy_cores": rnd(busy), "others_cores": rnd(others),
                "cpus": os.cpu_count()}


def cpu_us_per_event(cpu, events):
    """The server's CPU per event: the figure that varies least with what
    else the machine runs (None when the server is not ours)."""
    if cpu.get("server_cpu_s") is None or not events:
        return None
    return rnd(cpu["server_cpu_s"] / events * 1e6, 2)


def rnd(v, n=3):
    return None if v is None else round(v, n)


def pct(sorted_vals, p):
    """Nearest-rank percentile of an ascending list (p to 0.1: 99.9 works;
    the rank is computed in integers, per mille)."""
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1, -(-round(p * 10) * len(sorted_vals) // 1000) - 1))
    return sorted_vals[k]


def lat_summary_us(ns_list):
    v = sorted(ns_list)
    if not v:
        return {"p50_us": None, "p95_us": None, "p99_us": None, "p999_us": None,
                "max_us": None, "mean_us": None}
    return {"p50_us": rnd(pct(v, 50) / 1e3, 1), "p95_us": rnd(pct(v, 95) / 1e3, 1),
            "p99_us": rnd(pct(v, 99) / 1e3, 1), "p999_us": rnd(pct(v, 99.9) / 1e3, 1),
            "max_us": rnd(v[-1] / 1e3, 1), "mean_us": rnd(sum(v) / len(v) / 1e3, 1)}


# --------------------------------------------------------------------------
# Server and tables.

class Target:
    """Where the benchmark talks to: a URL (given, or the private server's),
    the database, and the server's pid when we know it (CPU figures)."""

    def __init__(self, url, database, user=None, password=None, pid=None):
        self.url, self.db = url, ident(database)
        self.user, self.password, self.pid = user, password, pid
        self.query_table = f"`{self.db}`.events"
        self.insert_table = f"`{self.db}`.events_insert"

    def conn(self):
        return Conn(self.url, self.user, self.password)


def start_server(workdir):
    sys.path.insert(0, str(ROOT / "tests" / "integration"))
    try:
        import chserver
    except ImportError as e:
        raise SystemExit(f"cannot import tests/integration/chserver.py ({e}): "
                         "run with the project's .venv/bin/python")
    ch = chserver.ClickHouse(Path(workdir).resolve())
    if not ch.command:
        raise SystemExit("no clickhouse-server: scripts/setup.sh installs Debian's")
    ch.start()
    return ch


def server_info(t, c):
    return {"url": t.url, "version": c.query("SELECT version()").decode().strip(),
            "pid": t.pid}


def create_tables(t, c):
    c.query(f"CREATE DATABASE IF NOT EXISTS `{t.db}`")
    c.query(ddl(t.db, "events"))
    c.query(f"CREATE TABLE IF NOT EXISTS {t.insert_table} AS {t.query_table}")
    got = c.rows(f"SELECT name, type FROM system.columns WHERE database = {sql_str(t.db)} "
                 "AND table = 'events'")
    if [tuple(r) for r in got] != COLUMNS:
        raise SystemExit(f"{t.query_table} exists with other columns than the mirror's: "
                         "drop it or use another --database")


def schema_note(t):
    return {
        "table": t.query_table,
        "source": "the ClickHouse mirror's table (docs/CLICKHOUSE.md, net/clickhouse.c)",
        "partition_by": PARTITION_BY,
        "order_by": ORDER_BY,
        "columns": [f"{n} {ty}" for n, ty in COLUMNS],
        "input": ("hodei-bench-gen --clickhouse: the generator's events as the mirror's "
                  "rows, made before timing: attributes -> attr_keys/attr_values, details -> details_json, "
                  "occurred_at = floor(occurred_at_ns / 1e9); computed as hodei-auditd "
                  "does on append: seq per tenant from 1, chain_hash a per-tenant SHA-256 "
                  "chain (64 hex), received_at_ns = occurred_at_ns + 0..65 ms, segment_id "
                  "per 100000 rows of a tenant (bench/gen_main.c)"),
        "bodies": "uncompressed (the mirror gzips; on loopback no compression is faster)",
    }


def parts(c, t, table="events"):
    r = c.rows("SELECT count(), sum(rows), sum(bytes_on_disk), sum(data_compressed_bytes), "
               "sum(data_uncompressed_bytes) FROM system.parts WHERE active AND "
               f"database = {sql_str(t.db)} AND table = {sql_str(table)}")[0]
    return dict(zip(("parts", "rows", "bytes_on_disk", "data_compressed_bytes",
                     "data_uncompressed_bytes"), map(int, r)))


def merges_running(c, t, table):
    return c.scalar(f"SELECT count() FROM system.merges WHERE database = {sql_str(t.db)} "
                    f"AND table = {sql_str(table)}")


def settle(c, t, table, quiet_s, timeout_s):
    """Waits until no merge runs and the active part count has not changed
    for quiet_s (background merges have settled). Returns what it saw."""
    t0 = time.monotonic()
    before = parts(c, t, table)["parts"]
    last, stable_since = before, time.monotonic()
    while True:
        running = merges_running(c, t, table)
        n = parts(c, t, table)["parts"]
        now = time.monotonic()
        if running or n != last:
            last, stable_since = n, now
        elif now - stable_since >= quiet_s:
            return {"settled": True, "seconds": rnd(now - t0 - quiet_s, 2),
                    "parts_before": before, "parts_after": n}
        if now - t0 > timeout_s:
            return {"settled": False, "seconds": rnd(now - t0, 2), "parts_before": before,
                    "parts_after": n}
        time.sleep(0.5)


# --------------------------------------------------------------------------
# Insert benchmark.

def build_pool(a, formats=FORMATS):
    """pool[fmt] = list of (rows, body) from --pool-batches batches of
    --insert-seed's events, converted once into each of formats."""
    pool = {f: [] for f in formats}
    cmd = gen_command(a, a.insert_seed, a.pool_batches * BATCH_ROWS)
    cmd[cmd.index("--step-ns") + 1] = str(a.insert_step_ns)
    t0 = time.monotonic()
    conv = {f: 0.0 for f in formats}
    for rows in batches(gen_lines(cmd)):
        for f in formats:
            s = time.monotonic()
            pool[f].append((len(rows), body_of(f, rows)))
            conv[f] += time.monotonic() - s
    n = sum(r for r, _ in pool[formats[0]])
    info = {"seed": a.insert_seed, "step_ns": a.insert_step_ns, "events": n,
            "batches": len(pool[formats[0]]), "batch_rows": BATCH_ROWS,
            "prepare_seconds": rnd(time.monotonic() - t0, 1),
            "bytes_per_event": {f: rnd(sum(len(b) for _, b in pool[f]) / max(n, 1), 1)
                                for f in formats},
            "encode_seconds": {f: rnd(conv[f], 2) for f in formats}}
    log(f"pool: {n} events in {info['batches']} batches; bytes/event "
        + ", ".join(f"{f} {v}" for f, v in info["bytes_per_event"].items()))
    return pool, info


def timed_insert(c, t, fmt, body, st, lock):
    """Sends one batch. Returns (start, end) perf_counter times; end is None
    when it failed (counted in st, the connection closed)."""
    s = time.perf_counter()
    try:
        c.insert(t.insert_table, fmt, body)
    except (ChError, OSError, http.client.HTTPException) as e:
        with lock:
            st["errors"] += 1
            st["first_error"] = st["first_error"] or str(e)
        c.close()
        return s, None
    return s, time.perf_counter()


def insert_run(t, fmt, bodies, clients, seconds):
    """Each client thread, on its own keep-alive connection (opened before
    the start), sends the next pool batch until `seconds` have passed; a
    request in flight at the deadline completes and counts. The window ends
    when the last request has completed."""
    lock = threading.Lock()
    st = {"next": 0, "rows": 0, "bytes": 0, "requests": 0, "errors": 0, "first_error": None,
          "lat": [], "end": 0.0}
    ready = threading.Barrier(clients + 1)
    deadline = [0.0]

    def client():
        c = t.conn()
        c.ensure()
        ready.wait()
        while time.perf_counter() < deadline[0]:
            with lock:
                i = st["next"]
                st["next"] += 1
            rows, body = bodies[i % len(bodies)]
            s, e_s = timed_insert(c, t, fmt, body, st, lock)
            if e_s is None:
                time.sleep(0.05)
                continue
            with lock:
                st["rows"] += rows
                st["bytes"] += len(body)
                st["requests"] += 1
                st["lat"].append(int((e_s - s) * 1e9))
                st["end"] = max(st["end"], e_s)
        c.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for th in threads:
        th.start()
    cpu = CpuWindow(t.pid)
    start = time.perf_counter()
    deadline[0] = start + seconds
    ready.wait()
    for th in threads:
        th.join()
    st["cpu"] = cpu.done()
    st["elapsed"] = max((st["end"] or time.perf_counter()) - start, 1e-9)
    return st


def insert_bench(t, pool, formats, client_counts, seconds):
    c = t.conn()
    runs = []
    for fmt in formats:
        for clients in client_counts:
            c.query(f"TRUNCATE TABLE {t.insert_table}")
            wait_no_merges(c, t, "events_insert")
            st = insert_run(t, fmt, pool[fmt], clients, seconds)
            elapsed, cpu_fig = st["elapsed"], st["cpu"]
            run = {"format": fmt, "clients": clients, "seconds": rnd(elapsed, 3),
                   "events": st["rows"], "requests": st["requests"],
                   "errors": st["errors"], "first_error": st["first_error"],
                   "rows_in_table": parts(c, t, "events_insert")["rows"],
                   "events_per_s": round(st["rows"] / elapsed),
                   "mb_per_s": rnd(st["bytes"] / elapsed / 1e6, 1),
                   "server_cpu_us_per_event": cpu_us_per_event(cpu_fig, st["rows"]),
                   "request_latency": lat_summary_us(st["lat"]), "cpu": cpu_fig}
            runs.append(run)
            log(f"insert {fmt:12} x{clients}: {run['events_per_s']:>9,} events/s "
                f"{run['mb_per_s']:7.1f} MB/s  ({run['events']} events, {run['errors']} "
                f"errors, server {cpu_fig['server_cores']} cores = "
                f"{run['server_cpu_us_per_event']} us/event, "
                f"others {cpu_fig['others_cores']} cores)")
    c.query(f"TRUNCATE TABLE {t.insert_table}")
    best = max(runs, key=lambda r: r["events_per_s"]) if runs else None
    return {"runs": runs,
            "best": None if best is None else {k: best[k] for k in
                                               ("format", "clients", "events_per_s", "mb_per_s")}}


def wait_no_merges(c, t, table, timeout_s=120):
    end = time.monotonic() + timeout_s
    while merges_running(c, t, table) and time.monotonic() < end:
        time.sleep(0.2)


# --------------------------------------------------------------------------
# Open-loop sweep: batch latency at fixed offered rates.

LATE_S = 0.001   # a batch started this long after its due time is a late start


def sweep_point(t, bodies, fmt, clients, rate_eps, seconds, warmup_s, drain_s):
    """One offered rate, open loop. Batch k (the pool cycled) is due at
    t0 + (rows of batches 0..k-1) / rate_eps, whatever the server does;
    `clients` threads, each on its own keep-alive connection, take the
    batches in due order, sleep until the due time if it is ahead and
    send. A batch's latency runs from its due time to the end of the HTTP
    answer: when both connections are busy the next batch waits and its
    latency grows (coordinated omission corrected, as in hodei-bench-load).

    The window is [t0 + warmup_s, + seconds): latency counts batches due
    in it, answered whenever; throughput counts rows answered in it. Every
    batch due before the window ends is sent, however late, unless it has
    not started drain_s after the end ("not started"). The server CPU runs
    from the start to the last answer, over every row sent."""
    assert rate_eps > 0 and clients >= 1 and bodies
    lock = threading.Lock()
    st = {"k": 0, "rows_due": 0, "rows_sent": 0, "batches_sent": 0, "win_rows": 0,
          "errors": 0, "first_error": None, "lat": [], "late_starts": 0}
    ready = threading.Barrier(clients + 1)
    clock = {}

    def client():
        c = t.conn()
        c.ensure()
        ready.wait()
        t0, ws, we = clock["t0"], clock["ws"], clock["we"]
        while True:
            with lock:
                due = t0 + st["rows_due"] / rate_eps
                if due >= we or time.perf_counter() > we + drain_s:
                    break
                rows, body = bodies[st["k"] % len(bodies)]
                st["k"] += 1
                st["rows_due"] += rows
            ahead = due - time.perf_counter()
            if ahead > 0.005:
                time.sleep(ahead - 0.005)
            # An idle connection is replaced here, before the due time,
            # not inside the measured latency.
            c.ensure()
            ahead = due - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
            s, e_s = timed_insert(c, t, fmt, body, st, lock)
            if e_s is None:
                continue
            with lock:
                st["rows_sent"] += rows
                st["batches_sent"] += 1
                if ws <= e_s < we:
                    st["win_rows"] += rows
                if ws <= due < we:
                    st["lat"].append(int((e_s - due) * 1e9))
                    st["late_starts"] += s - due > LATE_S
        c.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for th in threads:
        th.start()
    cpu = CpuWindow(t.pid)
    clock["t0"] = time.perf_counter() + 0.01
    clock["ws"] = clock["t0"] + warmup_s
    clock["we"] = clock["ws"] + seconds
    ready.wait()
    for th in threads:
        th.join()
    st["cpu"] = cpu.done()
    # Batches due before the window's end that no client took.
    k, rows_due, not_started = st["k"], st["rows_due"], 0
    while clock["t0"] + rows_due / rate_eps < clock["we"]:
        rows_due += bodies[k % len(bodies)][0]
        k += 1
        not_started += 1
    st["not_started"] = not_started
    return st


def sweep(t, bodies, fmt, clients, rates, seconds, warmup_s, drain_s):
    """sweep_point at each offered rate, into the scratch table, TRUNCATE'd
    and with no merge running before each point; after a point, count()
    of the table must equal the rows the point sent."""
    c = t.conn()
    points = []
    for rate in rates:
        c.query(f"TRUNCATE TABLE {t.insert_table}")
        wait_no_merges(c, t, "events_insert")
        st = sweep_point(t, bodies, fmt, clients, rate, seconds, warmup_s, drain_s)
        lat = lat_summary_us(st["lat"])
        count = c.scalar(f"SELECT count() FROM {t.insert_table}")
        pt = {"offered_eps": rate, "eps": round(st["win_rows"] / seconds),
              "batches_measured": len(st["lat"]), "batch_rows": BATCH_ROWS,
              **lat, "late_starts": st["late_starts"], "not_started": st["not_started"],
              "errors": st["errors"], "first_error": st["first_error"],
              "rows_sent": st["rows_sent"], "batches_sent": st["batches_sent"],
              "rows_in_table": count,
              "server_cpu_us_per_event": cpu_us_per_event(st["cpu"], st["rows_sent"]),
              "cpu": st["cpu"]}
        points.append(pt)
        ms = {k: None if lat[k] is None else round(lat[k] / 1e3, 1)
              for k in ("p50_us", "p99_us", "p999_us")}
        log(f"sweep {fmt} x{clients}: offered {rate:>9,}/s -> {pt['eps']:>9,}/s  batch latency "
            f"p50 {ms['p50_us']} p99 {ms['p99_us']} p99.9 {ms['p999_us']} ms "
            f"({pt['batches_measured']} batches, {pt['late_starts']} late starts, "
            f"{pt['not_started']} not started, {pt['errors']} errors; count() {count} of "
            f"{pt['rows_sent']} sent; server {pt['server_cpu_us_per_event']} us/event)")
    return {"points": points, "format": fmt, "clients": clients, "seconds": seconds,
            "warmup_seconds": warmup_s, "drain_seconds": drain_s, "batch_rows": BATCH_ROWS,
            "table": t.insert_table,
            "latency": ("per batch of 10,000 rows, from its due time t0 + rows before it / "
                        "offered rate to the end of the HTTP answer (open loop; a batch that "
                        "waits for a free connection keeps its due time)")}


# --------------------------------------------------------------------------
# Load for the queries: exactly --count events, JSONEachRow, 2 clients.

def spool_load(a, path):
    """Converts the generator's events into JSONEachRow batches in a file
    (not timed), so the timed load reads prepared bodies, memory stays one
    batch per client, and the conversion's Python CPU is not billed to
    ClickHouse. Returns [(offset, length, rows)]."""
    index, off, n = [], 0, 0
    t0 = time.monotonic()
    with open(path, "wb") as f:
        for rows in batches(gen_lines(gen_command(a, a.seed, a.count))):
            body = body_of("JSONEachRow", rows)
            f.write(body)
            index.append((off, len(body), len(rows)))
            off += len(body)
            n += len(rows)
    log(f"load: {n} events converted into {path} ({off / 1e6:.0f} MB) in "
        f"{time.monotonic() - t0:.1f} s")
    return index, time.monotonic() - t0


def load(a, t):
    c = t.conn()
    create_tables(t, c)
    if parts(c, t)["rows"]:
        raise SystemExit(f"{t.query_table} is not empty: load into a new --database")
    spool = Path(a.dir or tempfile.gettempdir()) / f"load-{a.seed}-{a.count}-{os.getpid()}.jsonl"
    index, prep_s = spool_load(a, spool)
    lock = threading.Lock()
    state = {"next": 0, "rows": 0, "errors": 0, "first_error": None}

    def client():
        cc = t.conn()
        with open(spool, "rb") as f:
            while True:
                with lock:
                    i = state["next"]
                    state["next"] += 1
                if i >= len(index):
                    break
                off, length, rows = index[i]
                body = os.pread(f.fileno(), length, off)
                try:
                    cc.insert(t.query_table, "JSONEachRow", body)
                except (ChError, OSError, http.client.HTTPException) as e:
                    with lock:
                        state["errors"] += 1
                        state["first_error"] = state["first_error"] or str(e)
                    cc.close()
                    continue
                with lock:
                    state["rows"] += rows
        cc.close()

    cpu = CpuWindow(t.pid)
    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(a.load_clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    secs = time.perf_counter() - t0
    cpu_fig = cpu.done()
    if not a.keep_spool:
        spool.unlink()
    if a.settle == "optimize":
        s0 = time.monotonic()
        before = parts(c, t)["parts"]
        c.query(f"OPTIMIZE TABLE {t.query_table} FINAL")
        st = {"settled": True, "seconds": rnd(time.monotonic() - s0, 2), "parts_before": before,
              "parts_after": parts(c, t)["parts"]}
    else:
        st = settle(c, t, "events", a.settle_quiet_s, a.settle_timeout_s)
    count = c.scalar(f"SELECT count() FROM {t.query_table}")
    out = {"events": a.count, "events_sent": state["rows"], "count_in_table": count,
           "errors": state["errors"], "first_error": state["first_error"],
           "format": "JSONEachRow", "batch_rows": BATCH_ROWS, "clients": a.load_clients,
           "prepare_seconds": rnd(prep_s, 1), "seconds": rnd(secs, 3),
           "events_per_s": round(state["rows"] / max(secs, 1e-9)), "cpu": cpu_fig,
           "server_cpu_us_per_event": cpu_us_per_event(cpu_fig, state["rows"]),
           "generator": {"seed": a.seed, "count": a.count, "tenants": a.tenants,
                         "step_ns": a.step_ns},
           "settle": dict(st, method="merges" if a.settle == "merges" else "optimize_final",
                          note=("waited until no merge ran and the part count was unchanged "
                                f"for {a.settle_quiet_s} s (no OPTIMIZE FINAL: not what "
                                "users run on a large table)") if a.settle == "merges"
                          else "OPTIMIZE TABLE ... FINAL after the load")}
    log(f"load: {state['rows']} events in {secs:.1f} s = {out['events_per_s']:,} events/s "
        f"({state['errors']} errors, server {out['server_cpu_us_per_event']} us/event, others "
        f"{cpu_fig['others_cores']} cores); count() = {count}; merges settled "
        f"{st['parts_before']} -> {st['parts_after']} parts in {st['seconds']} s")
    return out


def bytes_fig(t):
    c = t.conn()
    p = parts(c, t)
    n = max(p["rows"], 1)
    cols = c.rows("SELECT name, data_compressed_bytes, data_uncompressed_bytes FROM "
                  f"system.columns WHERE database = {sql_str(t.db)} AND table = 'events' "
                  "ORDER BY data_compressed_bytes DESC")
    out = dict(p, bytes_on_disk_per_event=rnd(p["bytes_on_disk"] / n, 1),
               compressed_per_event=rnd(p["data_compressed_bytes"] / n, 1),
               uncompressed_per_event=rnd(p["data_uncompressed_bytes"] / n, 1),
               columns_compressed_per_event={r[0]: rnd(int(r[1]) / n, 2) for r in cols},
               compression="LZ4 (18.16's default; the mirror sets no CODEC)")
    log(f"bytes: {p['rows']} rows in {p['parts']} parts, {out['bytes_on_disk_per_event']} "
        f"bytes/event on disk ({out['compressed_per_event']} compressed data, "
        f"{out['uncompressed_per_event']} uncompressed)")
    return out


# --------------------------------------------------------------------------
# Queries, with Search/Count semantics: from inclusive, to exclusive (ns),
# newest first by (occurred_at_ns, seq). occurred_at (seconds, in the sort
# key) is what the primary index prunes with; the ns bounds make it exact.

def time_where(f_ns, t_ns):
    lo = min(max(int(f_ns) // 10**9, 0), 4354819199)
    hi = min(max((int(t_ns) - 1) // 10**9, 0), 4354819199)
    return (f"occurred_at >= toDateTime({lo}) AND occurred_at <= toDateTime({hi}) "
            f"AND occurred_at_ns >= {sql_int(f_ns)} AND occurred_at_ns < {sql_int(t_ns)}")


def query_sql(t, kind, q):
    """(timed SQL, where-clause for the check count)."""
    tbl = t.query_table
    ten = f"tenant_id = {sql_str(q['tenant'])}"
    order = f"ORDER BY occurred_at_ns DESC, seq DESC LIMIT {LIMIT}"
    if kind in ("Q1", "Q1top"):
        where = ten
    elif kind == "Q2":
        where = f"{ten} AND actor_id = {sql_str(q['actor_id'])} AND " + time_where(q["from_ns"],
                                                                                   q["to_ns"])
    elif kind == "Q3":
        where = f"{ten} AND event_id = toUUID({sql_str(q['event_id'])})"
    elif kind == "Q4":
        where = f"{ten} AND " + time_where(q["from_ns"], q["to_ns"])
        return (f"SELECT action, count() FROM {tbl} WHERE {where} GROUP BY action "
                "FORMAT TabSeparated", where)
    elif kind == "Q5":
        where = (f"{ten} AND " + time_where(q["from_ns"], q["to_ns"])
                 + " AND outcome IN ('failure', 'denied')")
    else:
        raise ValueError(kind)
    if kind == "Q3":
        return f"SELECT * FROM {tbl} WHERE {where} FORMAT TabSeparated", where
    return f"SELECT * FROM {tbl} WHERE {where} {order} FORMAT TabSeparated", where


def tsv_unescape(s):
    return re.sub(r"\\(.)", lambda m: {"t": "\t", "n": "\n", "0": "\0", "r": "\r"}.get(
        m.group(1), m.group(1)), s)


def check_answer(kind, q, body):
    """(rows, shape_ok, key) where key is what the count check compares:
    rows for the row queries, the sum of counts for Q4."""
    lines = body.decode().splitlines()
    rows = [ln.split("\t") for ln in lines]
    if kind == "Q4":
        actions = [r[0] for r in rows]
        ok = all(len(r) == 2 for r in rows) and len(set(actions)) == len(actions) \
            and all(int(r[1]) > 0 for r in rows)
        return len(rows), ok, sum(int(r[1]) for r in rows) if ok else -1
    ok = all(len(r) == len(COLUMNS) for r in rows) and len(rows) <= LIMIT
    if not ok:
        return len(rows), False, -1
    ok = all(tsv_unescape(r[COL["tenant_id"]]) == q["tenant"] for r in rows)
    keys = [(int(r[COL["occurred_at_ns"]]), int(r[COL["seq"]])) for r in rows]
    if kind == "Q3":
        ok = ok and len(rows) == 1 and rows[0][COL["event_id"]] == q["event_id"].lower()
    else:
        ok = ok and keys == sorted(keys, reverse=True)
    if kind in ("Q2", "Q5"):
        ok = ok and all(int(q["from_ns"]) <= k[0] < int(q["to_ns"]) for k in keys)
    if kind == "Q2":
        ok = ok and all(tsv_unescape(r[COL["actor_id"]]) == q["actor_id"] for r in rows)
    if kind == "Q5":
        ok = ok and all(r[COL["outcome"]] in ("failure", "denied") for r in rows)
    return len(rows), ok, len(rows)


def expected_key(c, t, kind, where):
    n = c.scalar(f"SELECT count() FROM {t.query_table} WHERE {where}")
    return n if kind in ("Q4", "Q3") else min(n, LIMIT)


def run_queries(t, plan, samples, warmup_rounds):
    kinds = [k for k in KINDS if plan.get("queries", {}).get(k)]
    sqls = {k: [query_sql(t, k, q) for q in plan["queries"][k]] for k in kinds}
    c = t.conn()
    c.ensure()

    def one(kind, i):
        q = plan["queries"][kind][i % len(plan["queries"][kind])]
        sql = sqls[kind][i % len(sqls[kind])][0].encode()
        s = time.perf_counter_ns()
        try:
            body = c.post(None, sql, retry=False)
        except (ChError, OSError, http.client.HTTPException) as e:
            c.close()
            return None, str(e), q
        return time.perf_counter_ns() - s, body, q

    for r in range(warmup_rounds):
        for k in kinds:
            one(k, r)
    # The floor under every figure: an empty query's HTTP round trip.
    ping = []
    for _ in range(max(samples, 20)):
        s = time.perf_counter_ns()
        c.post(None, b"SELECT 1 FORMAT TabSeparated")
        ping.append(time.perf_counter_ns() - s)
    res = {k: {"lat": [], "errors": 0, "first_error": None, "seen": []} for k in kinds}
    cpu = CpuWindow(t.pid)
    for i in range(samples):
        for k in kinds:
            ns, body, q = one(k, i)
            if ns is None:
                res[k]["errors"] += 1
                res[k]["first_error"] = res[k]["first_error"] or body
                continue
            res[k]["lat"].append(ns)
            res[k]["seen"].append((i % len(sqls[k]), q, body))
    cpu_fig = cpu.done()
    out = {}
    expect = {}
    for k in kinds:
        wrong, nrows, examples = 0, [], []
        for idx, q, body in res[k]["seen"]:
            n, ok, key = check_answer(k, q, body)
            if (k, idx) not in expect:
                expect[(k, idx)] = expected_key(c, t, k, sqls[k][idx][1])
            want = expect[(k, idx)]
            if not ok or key != want:
                wrong += 1
                if len(examples) < 3:
                    examples.append({"query": q, "rows": n, "shape_ok": ok, "got": key,
                                     "want": want})
            nrows.append(n)
        out[k] = dict(samples=len(res[k]["lat"]), errors=res[k]["errors"], wrong=wrong,
                      **lat_summary_us(res[k]["lat"]),
                      rows_mean=rnd(sum(nrows) / len(nrows), 2) if nrows else None,
                      first_error=res[k]["first_error"], wrong_examples=examples)
        log(f"{k:6} p50 {out[k]['p50_us']} us  p99 {out[k]['p99_us']} us  "
            f"rows {out[k]['rows_mean']}  errors {out[k]['errors']}  wrong {wrong}")
    c.close()
    return {"kinds": out, "select_1": lat_summary_us(ping), "samples": samples,
            "warmup_rounds": warmup_rounds, "cpu": cpu_fig,
            "connection": "one keep-alive HTTP connection, kinds interleaved round-robin",
            "output_format": "TabSeparated, whole body read (timed)",
            "check": ("shape, tenant, order and bounds of every answer; row count (Q4: "
                      "sum of counts) against count() of the same WHERE, after timing")}


# --------------------------------------------------------------------------
# A small plan in the format of `hodei-bench-query plan`.

def make_plan(a):
    """Reservoir samples of the generator's events: Q1 tenants weighted by
    events, Q1top the busiest tenant, Q2 an event's actor over the 7 days
    around it, Q3 its event_id, Q4 a tenant over 7 days, Q5 the UTC day of
    one of the tenant's events."""
    rng = random.Random(a.seed * 7919 + 17)
    need = max(a.plan_samples, 1)
    res = []
    per_tenant = {}
    first = last = None
    n = 0
    for line in gen_lines(gen_command(a, a.seed, a.count)):
        e = json.loads(line)
        ns = int(e["occurred_at_ns"])
        first = ns if first is None else min(first, ns)
        last = ns if last is None else max(last, ns)
        per_tenant[e["tenant_id"]] = per_tenant.get(e["tenant_id"], 0) + 1
        n += 1
        item = (e["tenant_id"], e.get("actor_id", ""), e["event_id"], ns)
        if len(res) < need * 4:
            res.append(item)
        else:
            j = rng.randrange(n)
            if j < need * 4:
                res[j] = item
    if not res:
        raise SystemExit("the generator printed no events")
    rng.shuffle(res)
    top = max(per_tenant.items(), key=lambda kv: (kv[1], kv[0]))
    week = 7 * DAY_NS
    pick = [res[i % len(res)] for i in range(need * 4)]
    q = {
        "Q1": [{"tenant": p[0]} for p in pick[:need]],
        "Q1top": [{"tenant": top[0]}],
        "Q2": [{"tenant": p[0], "actor_id": p[1], "from_ns": p[3] - 3 * DAY_NS,
                "to_ns": p[3] - 3 * DAY_NS + week} for p in pick[need:2 * need]],
        "Q3": [{"tenant": p[0], "event_id": p[2]} for p in pick[2 * need:3 * need]],
        "Q4": [{"tenant": p[0], "from_ns": p[3] - 3 * DAY_NS, "to_ns": p[3] - 3 * DAY_NS + week}
               for p in pick[3 * need:4 * need]],
        "Q5": [{"tenant": p[0], "from_ns": p[3] // DAY_NS * DAY_NS,
                "to_ns": p[3] // DAY_NS * DAY_NS + DAY_NS} for p in pick[:need]],
    }
    return {"generator": {"seed": a.seed, "count": a.count, "tenants": a.tenants,
                          "step_ns": a.step_ns},
            "data": {"first_ns": first, "last_ns": last, "top_tenant": top[0],
                     "events_per_tenant_top": top[1]},
            "queries": q,
            "source": "clickhouse_bench.py plan (reservoir sample of the generator's events)"}


def read_plan(a):
    if not a.plan or a.plan == "auto":
        log("plan: none given, making one from the generator (clickhouse_bench.py plan)")
        return make_plan(a), "generated"
    plan = json.loads(Path(a.plan).read_text())
    g = plan.get("generator", {})
    mismatch = {k: (g.get(k), v) for k, v in (("seed", a.seed), ("count", a.count),
                                              ("tenants", a.tenants), ("step_ns", a.step_ns))
                if k in g and g[k] != v}
    if mismatch:
        log(f"warning: the plan was made for other generator settings: {mismatch}")
    return plan, str(a.plan)


# --------------------------------------------------------------------------
# Command line.

def add_common(p, with_url=True):
    if with_url:
        p.add_argument("--url", help="an already running server (http://127.0.0.1:PORT)")
        p.add_argument("--user", default=os.environ.get("CLICKHOUSE_USER"))
        p.add_argument("--password", default=os.environ.get("CLICKHOUSE_PASSWORD"))
        p.add_argument("--server-pid", type=int,
                       help="the --url server's pid, for its CPU figures (local server only)")
    p.add_argument("--database", default="hodei_bench")
    p.add_argument("--dir", help="working folder (private server's data, load spool)")


def add_gen(p):
    p.add_argument("--gen", type=Path, default=DEFAULT_GEN, help="hodei-bench-gen binary")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--count", type=int, default=1_000_000)
    p.add_argument("--tenants", type=int, default=1000)
    p.add_argument("--step-ns", type=int, default=1000)


def add_pool(p):
    p.add_argument("--insert-seed", type=int, default=2)
    p.add_argument("--insert-step-ns", type=int, default=1000,
                   help="the pool's step (default: the generator's, all in one partition)")
    p.add_argument("--pool-batches", type=int, default=100,
                   help=f"batches of {BATCH_ROWS} events held in memory, in every format")


def add_insert(p):
    p.add_argument("--insert-seconds", type=float, default=10.0)
    add_pool(p)
    p.add_argument("--formats", default=",".join(FORMATS))
    p.add_argument("--clients", default="1,2")


def add_sweep(p):
    add_pool(p)
    p.add_argument("--rates", required=True,
                   help="offered rates, events/s, comma-separated (e.g. 20000,100000)")
    p.add_argument("--format", default="TabSeparated", choices=FORMATS,
                   help="input format (the insert benchmark's best)")
    p.add_argument("--clients", type=int, default=2, choices=(1, 2),
                   help="connections (the insert benchmark's best)")
    p.add_argument("--sweep-seconds", type=float, default=10.0, help="measured window per rate")
    p.add_argument("--sweep-warmup", type=float, default=2.0,
                   help="seconds per rate sent before the window, not measured")
    p.add_argument("--sweep-drain", type=float, default=30.0,
                   help="a batch due in the window and not started this long after it is "
                        "'not started'")
    p.add_argument("--keep-table", action="store_true",
                   help="leave the last rate's rows in the scratch table")


def add_load(p):
    p.add_argument("--load-clients", type=int, default=2)
    p.add_argument("--settle", choices=("merges", "optimize"), default="merges")
    p.add_argument("--settle-quiet-s", type=float, default=5.0)
    p.add_argument("--settle-timeout-s", type=float, default=1800.0)
    p.add_argument("--keep-spool", action="store_true")


def add_query(p):
    p.add_argument("--plan", help="plan JSON (hodei-bench-query plan); 'auto' or none: "
                                  "make one from the generator")
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--warmup", type=int, default=3, help="rounds over all kinds, not timed")
    p.add_argument("--plan-samples", type=int, default=50, help="entries per kind for 'auto'")


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("all", help="server + insert + load + bytes + query, one JSON")
    add_common(p), add_gen(p), add_insert(p), add_load(p), add_query(p)
    p.add_argument("--skip", default="", help="comma list of insert,load,query to leave out")
    p.add_argument("--keep-server", action="store_true", help="leave the private server running")
    p = sub.add_parser("serve", help="start a private server in --dir and wait")
    add_common(p, with_url=False)
    p = sub.add_parser("insert")
    add_common(p), add_gen(p), add_insert(p)
    p = sub.add_parser("sweep", help="open-loop batch latency at fixed offered rates")
    add_common(p), add_gen(p), add_sweep(p)
    p = sub.add_parser("load")
    add_common(p), add_gen(p), add_load(p)
    p = sub.add_parser("bytes")
    add_common(p)
    p = sub.add_parser("query")
    add_common(p), add_gen(p), add_query(p)
    p = sub.add_parser("plan", help="print a plan for the generator settings")
    add_gen(p)
    p.add_argument("--plan-samples", type=int, default=50)
    a = ap.parse_args(argv)
    if a.cmd == "sweep":
        try:
            a.rates = [int(x) for x in a.rates.split(",") if x]
        except ValueError:
            ap.error(f"--rates {a.rates!r}: want integers, events/s")
        if not a.rates or min(a.rates) <= 0 or a.sweep_seconds <= 0 or a.sweep_warmup < 0 \
                or a.sweep_drain < 0:
            ap.error("--rates: at least one, each > 0; --sweep-seconds > 0; "
                     "--sweep-warmup and --sweep-drain >= 0")
    if getattr(a, "url", None) is None and a.cmd not in ("all", "serve", "plan"):
        ap.error(f"{a.cmd} needs --url (start a server with `serve --dir D`)")
    if a.cmd in ("all", "serve") and not getattr(a, "dir", None) and not getattr(a, "url", None):
        ap.error("--dir is required to start a private server")
    return a


def target_for(a):
    """(Target, server or None): the given --url, or a private server."""
    if getattr(a, "url", None):
        return Target(a.url, a.database, a.user, a.password, pid=a.server_pid), None
    ch = start_server(Path(a.dir) / "clickhouse")
    return Target(ch.url, a.database, pid=ch.proc.pid), ch


def main(argv=None):
    a = parse_args(argv if argv is not None else sys.argv[1:])
    if getattr(a, "dir", None):
        Path(a.dir).mkdir(parents=True, exist_ok=True)
    if a.cmd == "plan":
        print(json.dumps(make_plan(a)))
        return 0
    t, ch = target_for(a)
    try:
        return run(a, t, ch)
    finally:
        if ch is not None and not getattr(a, "keep_server", False) and a.cmd != "serve":
            ch.stop()


def run(a, t, ch):
    c = t.conn()
    out = {"tool": "bench/clickhouse_bench.py", "command": a.cmd,
           "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "server": server_info(t, c), "loadavg_start": os.getloadavg()}
    if a.cmd == "serve":
        out["dir"] = str(ch.dir)
        # The handler goes in before the line that tells the caller it may
        # stop us: a SIGTERM right after that line must stop us cleanly.
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        print(json.dumps(out), flush=True)
        log(f"serving {t.url} from {ch.dir}; SIGINT/SIGTERM stops it")
        try:
            while not stop.wait(1) and ch.running():
                pass
        except KeyboardInterrupt:
            pass
        ch.stop()
        return 0
    create_tables(t, c)
    out["schema"] = schema_note(t)
    skip = set(filter(None, getattr(a, "skip", "").split(",")))
    if a.cmd in ("all", "insert") and "insert" not in skip:
        formats = [f for f in a.formats.split(",") if f]
        bad = set(formats) - set(FORMATS)
        if bad or not formats:
            raise SystemExit(f"--formats: unknown {sorted(bad)}; known {FORMATS}")
        pool, info = build_pool(a, formats)
        res = insert_bench(t, pool, formats, [int(x) for x in a.clients.split(",")],
                           a.insert_seconds)
        del pool
        out["insert"] = dict(res, pool=info, seconds_per_run=a.insert_seconds,
                             table=t.insert_table, note="TRUNCATE and no merge running "
                             "before each run; a run's window ends when its last INSERT does")
        c.query(f"DROP TABLE IF EXISTS {t.insert_table}")
    if a.cmd == "sweep":
        pool, info = build_pool(a, [a.format])
        out["sweep"] = dict(sweep(t, pool[a.format], a.format, a.clients, a.rates,
                                  a.sweep_seconds, a.sweep_warmup, a.sweep_drain), pool=info)
        del pool
        if not a.keep_table:
            c.query(f"DROP TABLE IF EXISTS {t.insert_table}")
    if a.cmd in ("all", "load") and "load" not in skip:
        out["load"] = load(a, t)
    if a.cmd in ("all", "load", "bytes"):
        out["bytes"] = bytes_fig(t)
    if a.cmd in ("all", "query") and "query" not in skip:
        plan, src = read_plan(a)
        out["queries"] = dict(run_queries(t, plan, a.samples, a.warmup), plan=src,
                              plan_data=plan.get("data"))
    out["loadavg_end"] = os.getloadavg()
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
