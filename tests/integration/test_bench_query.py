# SPDX-License-Identifier: Apache-2.0
"""Smoke test of the query benchmark (bench/query.c), so that it cannot rot
between real runs: a tiny store made from the deterministic generator and
loaded with the CLI, a plan of 5 samples per kind, a run against the real
hodei-auditd. It checks that every kind was asked, that no answer broke its
filter, and that the exact lookups found their event. It never looks at
the latencies.
"""
import collections
import json
import os
import subprocess
import uuid

import pytest

import hodei

GEN = hodei.BUILD_DIR / "bench" / "hodei-bench-gen"
QUERY = hodei.BUILD_DIR / "bench" / "hodei-bench-query"
GEN_ARGS = ["--seed", "7", "--count", "2000", "--tenants", "20", "--step-ns", "1000000000"]
KINDS = ["Q1", "Q1top", "Q2", "Q3", "Q4", "Q5"]
TIMEOUT_S = 300


def _env():
    return {k: v for k, v in os.environ.items() if not k.startswith("HODEI_")}


def _check(path):
    if not path.exists():
        pytest.fail(f"{path} does not exist: build it (cmake --build build --target {path.name})")


def load(server):
    """The generator's 2,000 events, appended tenant by tenant with the CLI;
    returns them as dicts (with tenant_id)."""
    out = subprocess.run([str(GEN), *GEN_ARGS, "--with-tenant-id"], capture_output=True,
                         text=True, check=True, timeout=TIMEOUT_S).stdout
    events = [json.loads(line) for line in out.splitlines()]
    by_tenant = collections.defaultdict(list)
    for ev in events:
        # The CLI takes one tenant's events, without tenant_id.
        line = json.dumps({k: v for k, v in ev.items() if k != "tenant_id"})
        by_tenant[ev["tenant_id"]].append(line + "\n")
    env = _env() | {"HODEI_SERVER": server.grpc_addr, "HODEI_API_KEY": server.admin_key}
    for tenant, lines in sorted(by_tenant.items()):
        r = subprocess.run([str(hodei.CLI), "append", "--tenant", tenant], input="".join(lines),
                           capture_output=True, text=True, env=env, timeout=TIMEOUT_S)
        assert r.returncode == 0, f"append {tenant}: {r.stderr}"
    return events, by_tenant


def plan(tmp_path, *extra):
    r = subprocess.run([str(QUERY), "plan", *GEN_ARGS, "--samples", "5", *extra],
                       capture_output=True, text=True, timeout=TIMEOUT_S)
    assert r.returncode == 0, r.stderr
    path = tmp_path / "plan.json"
    path.write_text(r.stdout)
    return path, json.loads(r.stdout)


def run(server, plan_path, *extra, key=None):
    return subprocess.run(
        [str(QUERY), "run", "--plan", str(plan_path), "--target", server.grpc_addr,
         "--key", key or server.admin_key, "--warmup", "2", *extra],
        capture_output=True, text=True, env=_env(), timeout=TIMEOUT_S)


def test_plan_and_run(server, tmp_path):
    _check(GEN)
    _check(QUERY)
    events, by_tenant = load(server)
    path, p = plan(tmp_path)

    # The plan describes the stream that was loaded.
    assert p["generator"] == {"seed": 7, "count": 2000, "tenants": 20, "step_ns": 1000000000}
    assert p["data"]["first_ns"] == events[0]["occurred_at_ns"]
    assert p["data"]["last_ns"] == events[-1]["occurred_at_ns"]
    top = max(by_tenant, key=lambda t: (len(by_tenant[t]), t))
    assert p["data"]["top_tenant"] == top
    assert p["data"]["events_per_tenant_top"] == len(by_tenant[top])
    assert {k: len(v) for k, v in p["queries"].items()} == {k: 5 for k in KINDS}

    r = run(server, path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["generator"] == p["generator"]
    q = out["queries"]
    assert set(q) == set(KINDS)
    for kind in KINDS:
        assert q[kind]["samples"] == 5, (kind, q[kind])
    for kind in ("Q1", "Q1top", "Q2", "Q3", "Q5"):
        assert q[kind]["errors"] == 0, (kind, q[kind])
        assert q[kind]["wrong"] == 0, (kind, q[kind])
    assert q["Q3"]["hits_mean"] == 1
    assert q["Q1top"]["hits_mean"] == min(100, len(by_tenant[top]))
    assert q["Q2"]["hits_mean"] >= 1  # the asked actor acted on that day
    # Count may not be served yet: then every Q4 is an error, named.
    if q["Q4"]["errors"]:
        assert q["Q4"]["statuses"] == {"UNIMPLEMENTED": 5}, q["Q4"]
    else:
        assert q["Q4"]["wrong"] == 0, q["Q4"]


def test_wrong_answers_are_counted(server, tmp_path):
    """An event_id that is not stored makes Q3 find nothing: "wrong", not a
    pass, so the checks are not vacuous."""
    _check(QUERY)
    load(server)
    path, p = plan(tmp_path)
    p["queries"]["Q3"][0]["event_id"] = str(uuid.uuid4())
    path.write_text(json.dumps(p))
    r = run(server, path, "--only", "Q3", "--warmup", "0")
    assert r.returncode == 0, r.stderr
    q = json.loads(r.stdout)["queries"]
    assert set(q) == {"Q3"}
    assert q["Q3"]["samples"] == 5 and q["Q3"]["wrong"] == 1, q["Q3"]


def test_exit_codes(server, tmp_path):
    _check(QUERY)
    path, _ = plan(tmp_path)
    assert run(server, path, "--only", "Q9").returncode == 2
    assert subprocess.run([str(QUERY), "plan", "--tenants", "0"], capture_output=True,
                          timeout=TIMEOUT_S).returncode == 2
    assert run(server, tmp_path / "missing.json").returncode == 1
    refused = run(server, path, key=hodei.new_key())
    assert refused.returncode == 1 and "refused the key" in refused.stderr
    closed = subprocess.run(
        [str(QUERY), "run", "--plan", str(path), "--target", f"127.0.0.1:{hodei.free_port()}",
         "--key", server.admin_key], capture_output=True, text=True, env=_env(), timeout=TIMEOUT_S)
    assert closed.returncode == 1 and "cannot connect" in closed.stderr
