# SPDX-License-Identifier: Apache-2.0
"""The ingest load generator, hodei-bench-load (bench/load.c), against the
real hodei-auditd: it runs in its closed-loop and open-loop modes and prints
one JSON object with acknowledged events; pool reuse never sends an event
id twice (nothing is lost to deduplication); --fill stores exactly the
events hodei-bench-gen prints for the same flags; bad flags exit 2 and an
unreachable server exits 1.

These check that the harness works, never how fast: no figure is asserted
beyond "some work was acknowledged".
"""
import json
import os
import subprocess
import uuid

import pytest

import hodei

LOAD = hodei.BUILD_DIR / "bench" / "hodei-bench-load"
GEN = hodei.BUILD_DIR / "bench" / "hodei-bench-gen"
RUN_TIMEOUT_S = 120
# Small runs: a tiny pool, few tenants, few streams.
SMALL = ["--pool-events", "2000", "--tenants", "20", "--batch", "10",
         "--connections", "2", "--streams", "4"]


@pytest.fixture(autouse=True)
def _binaries():
    for b in (LOAD, GEN):
        if not b.exists():
            pytest.fail(f"{b} does not exist: build the bench targets first")


def run_load(*args, key=None):
    """Runs hodei-bench-load (the key through HODEI_API_KEY) and returns the
    CompletedProcess (text)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HODEI_")}
    if key is not None:
        env["HODEI_API_KEY"] = key
    return subprocess.run([str(LOAD), *args], capture_output=True, text=True, env=env,
                          timeout=RUN_TIMEOUT_S)


def result(p):
    assert p.returncode == 0, f"exit {p.returncode}\nstderr:\n{p.stderr}"
    d = json.loads(p.stdout)
    assert d["tool"] == "hodei-bench-load"
    return d


def test_max_mode_acks_events(server):
    d = result(run_load("--target", server.grpc_addr, "--max", "--seconds", "1", "--warmup", "0",
                        *SMALL, key=server.admin_key))
    assert d["mode"] == "max"
    assert d["events_acked"] > 0
    assert d["requests_acked"] > 0
    assert d["latency_us"]["samples"] > 0
    assert d["errors"] == {}
    assert d["events_duplicate_total"] == 0
    assert d["count_mismatches"] == 0
    assert d["connections"] == 2 and d["streams_effective"] == 8
    assert d["client_cpu_s"] >= 0


def test_rate_mode_acks_events(server):
    d = result(run_load("--target", server.grpc_addr, "--rate", "2000", "--seconds", "1",
                        "--warmup", "0", *SMALL, key=server.admin_key))
    assert d["mode"] == "rate"
    assert d["offered_rate_eps"] == 2000
    assert d["events_acked"] > 0
    assert d["errors"] == {}


def test_pool_reuse_sends_unique_ids(server):
    """A pool of 30 events sent over and over: every send has fresh ids, so
    the server accepts them all and stores each one once."""
    tenants = ["tenant-0000", "tenant-0001", "tenant-0002"]
    d = result(run_load("--target", server.grpc_addr, "--max", "--seconds", "2", "--warmup", "0",
                        "--pool-events", "30", "--tenants", "3", "--batch", "5",
                        "--connections", "1", "--streams", "2", key=server.admin_key))
    assert d["pool_events"] == 30
    assert d["events_acked_total"] > 30, "the pool was not reused"
    assert d["events_duplicate_total"] == 0
    stored = []
    for t in tenants:
        stub = server.stub(server.admin_key, t)
        stored += hodei.search_all(stub, to_ns=2**62)
    ids = [s.event.event_id for s in stored]
    assert len(ids) == d["events_accepted_total"]
    assert len(set(ids)) == len(ids)
    # The UUID version and variant bits survive the patching.
    assert all(i[6] >> 4 == 4 and i[8] >> 6 == 2 for i in ids)


def test_fill_stores_the_generator_stream(server):
    """--fill N stores exactly the events `hodei-bench-gen --count N` prints
    for the same seed, tenants and step, field by field."""
    flags = ["--seed", "7", "--tenants", "4", "--step-ns", "1000000"]
    n = 300
    d = result(run_load("--target", server.grpc_addr, "--fill", str(n), "--batch", "16",
                        "--connections", "2", "--streams", "3", *flags, key=server.admin_key))
    assert d["mode"] == "fill"
    assert d["events_acked"] == n and d["events_accepted"] == n

    gen = subprocess.run([str(GEN), "--count", str(n), "--with-tenant-id", *flags],
                         capture_output=True, text=True, check=True, timeout=RUN_TIMEOUT_S)
    want = [json.loads(line) for line in gen.stdout.splitlines()]
    assert len(want) == n
    outcomes = {"success": 1, "failure": 2, "denied": 3}
    by_id = {}
    for t in sorted({w["tenant_id"] for w in want}):
        for s in hodei.search_all(server.stub(server.admin_key, t), to_ns=2**62):
            by_id[str(uuid.UUID(bytes=s.event.event_id))] = s
    assert len(by_id) == n
    for w in want:
        s = by_id[w["event_id"]]
        e = s.event
        assert s.tenant_id == w["tenant_id"]
        assert e.occurred_at_ns == w["occurred_at_ns"]
        for f in hodei.STRING_FIELDS:
            assert getattr(e, f) == w.get(f, ""), f
        assert e.outcome == outcomes.get(w.get("outcome"), 0)
        assert {a.key: a.value for a in e.attributes} == w.get("attributes", {})
        assert [a.key for a in e.attributes] == list(w.get("attributes", {}))
        assert json.loads(e.details_json) == w["details"]


@pytest.mark.parametrize("args", [
    ["--bogus"],
    ["--batch", "0"],
    ["--connections", "x"],
    ["--rate", "10", "--max"],
    ["--fill", "10", "--rate", "5"],
    ["--threads", "5", "--connections", "4"],
    ["--seconds", "-1"],
    ["--target", "nocolon"],
    ["stray"],
])
def test_bad_flags_exit_2(args):
    p = run_load(*args, key="hk_x")
    assert p.returncode == 2, p.stderr
    assert "usage: hodei-bench-load" in p.stderr


def test_missing_key_exits_2():
    p = run_load("--seconds", "1")
    assert p.returncode == 2
    assert "API key" in p.stderr


def test_unreachable_server_exits_1():
    port = hodei.free_port()  # nothing listens there
    p = run_load("--target", f"127.0.0.1:{port}", "--seconds", "1", key="hk_x")
    assert p.returncode == 1
    assert "cannot connect" in p.stderr
    assert p.stdout == ""


def test_wrong_key_counts_errors_and_exits_1(server):
    p = run_load("--target", server.grpc_addr, "--seconds", "0.3", "--warmup", "0", *SMALL,
                 key=hodei.new_key())
    assert p.returncode == 1
    d = json.loads(p.stdout)
    assert d["events_acked"] == 0
    assert d["errors"].get("UNAUTHENTICATED", 0) > 0
