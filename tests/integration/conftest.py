# SPDX-License-Identifier: Apache-2.0
"""Fixtures of the integration suite (DESIGN.md §11): the real hodei-auditd
from $HODEI_BUILD_DIR (default build/) on 127.0.0.1 and free ports, one per
test unless a module shares one, and the official grpcio client with stubs
generated from proto/ at test time. See hodei.py for the Server object.

When a test fails, the tail of the stderr of every server it started is
attached to the report. A server that dies by itself during a test (rather
than by the test's SIGKILL/SIGTERM) fails the test at teardown: bad input
must never crash it.
"""
import pytest

import hodei


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a test that takes more than a few seconds")


@pytest.fixture(scope="session")
def stubs():
    """audit_pb2, audit_pb2_grpc, health_pb2, health_pb2_grpc, generated
    from the repository's protos into a temporary folder."""
    return hodei.pb()


@pytest.fixture(scope="session", autouse=True)
def _binary_exists():
    if not hodei.DAEMON.exists():
        pytest.fail(f"{hodei.DAEMON} does not exist: build first or set HODEI_BUILD_DIR")


def _finish(servers):
    problems = [p for p in (s.finish() for s in servers) if p]
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


@pytest.fixture
def server_factory(tmp_path, stubs, request):
    """make(args=(), env=None, use_flags=True, admin_key=True, start=True,
    **kw) -> Server, each in its own folder under tmp_path; all stopped at
    teardown."""
    made = []

    def make(args=(), env=None, start=True, name=None, **kw):
        srv = hodei.Server(tmp_path / (name or f"srv{len(made)}"), args=args, env=env, **kw)
        made.append(srv)
        request.node._hodei_servers = made
        if start:
            srv.start()
        return srv

    yield make
    _finish(made)


@pytest.fixture
def server(server_factory):
    """A running hodei-auditd with default limits, 2 shards, seal age 1 s
    and one admin key (server.admin_key)."""
    return server_factory()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory, stubs, request):
    """One running server for a module whose tests each use their own
    tenants (read-only or tenant-scoped checks)."""
    srv = hodei.Server(tmp_path_factory.mktemp("shared"))
    srv.start()
    yield srv
    _finish([srv])


@pytest.fixture
def clickhouse(tmp_path, request):
    """A running clickhouse-server (chserver.py) on 127.0.0.1 and free
    ports, data in tmp_path/clickhouse; stop() and start() it again on the
    same data for outage tests. Stopped at teardown."""
    import chserver

    ch = chserver.ClickHouse(tmp_path / "clickhouse")
    request.node._hodei_clickhouse = ch
    ch.start()
    yield ch
    ch.finish()


@pytest.fixture
def channel(server):
    """A plain channel to `server` (no metadata)."""
    return server.channel()


@pytest.fixture
def stub(server):
    """A function (key=None, tenant=None) -> AuditService stub of `server`
    whose calls carry `authorization: Bearer key` / `x-hodei-tenant`."""
    return server.stub


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    """A moto S3 server with signature checks on (s3server.py), shared by a
    module: buckets s3server.VERSIONED (versioning Enabled) and
    s3server.PLAIN (never versioned). Tests use their own keys."""
    import s3server

    srv = s3server.S3Server(tmp_path_factory.mktemp("moto")).start()
    yield srv
    srv.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        servers = list(getattr(item, "_hodei_servers", []))
        for fx in ("shared_server",):
            if fx in item.funcargs:
                servers.append(item.funcargs[fx])
        for s in servers:
            rep.sections.append(
                (f"hodei-auditd stderr ({s.dir.name}, last 80 lines)", s.stderr_tail())
            )
            out = s.stdout()
            if out.strip():
                rep.sections.append((f"hodei-auditd stdout ({s.dir.name})", out[-4000:]))
        ch = getattr(item, "_hodei_clickhouse", None)
        if ch is not None:
            rep.sections.append(("clickhouse-server log (last 40 lines)", ch.log_tail()))
