# SPDX-License-Identifier: Apache-2.0
"""A real ClickHouse server for the integration suite (DESIGN.md §8, §11):
clickhouse-server (Debian's 18.16, or any later one) started from a config
written into a temporary folder, listening on 127.0.0.1 only, on free HTTP
and native ports, with its data in that folder. It can be stopped and
started again on the same data (outage tests) or killed with SIGKILL.

The server is found as $HODEI_CLICKHOUSE_SERVER, clickhouse-server on PATH,
/usr/sbin/clickhouse-server (Debian's place), or a single `clickhouse`
binary run as `clickhouse server`. scripts/setup.sh installs Debian's.

Users: `default` (no password, for the test's own queries) and `hodei`
(with a random password, what the mirror uses), both limited to 127.0.0.1.
Queries from Python go through the HTTP interface with urllib; nothing
here asserts on time: waits are bounded polls that fail with a message.
"""
import base64
import os
import secrets
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import hodei

CONFIG = """<?xml version="1.0"?>
<yandex>
    <logger>
        <level>information</level>
        <log>{dir}/log/server.log</log>
        <errorlog>{dir}/log/error.log</errorlog>
        <console>0</console>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>{http_port}</http_port>
    <tcp_port>{tcp_port}</tcp_port>
    <path>{dir}/data/</path>
    <tmp_path>{dir}/tmp/</tmp_path>
    <user_files_path>{dir}/user_files/</user_files_path>
    <format_schema_path>{dir}/format_schemas/</format_schema_path>
    <users_config>{dir}/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mark_cache_size>67108864</mark_cache_size>
    <max_concurrent_queries>64</max_concurrent_queries>
    <keep_alive_timeout>3</keep_alive_timeout>
</yandex>
"""

USERS = """<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>4000000000</max_memory_usage>
        </default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
        <{user}>
            <password>{password}</password>
            <networks><ip>127.0.0.1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </{user}>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
"""


def server_command():
    """The command that runs a ClickHouse server, or None."""
    env = os.environ.get("HODEI_CLICKHOUSE_SERVER")
    if env:
        return env.split()
    for path in (shutil.which("clickhouse-server"), "/usr/sbin/clickhouse-server",
                 "/usr/bin/clickhouse-server"):
        if path and os.access(path, os.X_OK):
            return [path]
    single = shutil.which("clickhouse")
    return [single, "server"] if single else None


class QueryError(Exception):
    def __init__(self, status, body):
        super().__init__(f"HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


class ClickHouse:
    """One clickhouse-server in workdir. start(), stop(), kill(), query()."""

    def __init__(self, workdir, user="hodei"):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        for sub in ("log", "data", "tmp", "user_files", "format_schemas"):
            (self.dir / sub).mkdir(exist_ok=True)
        self.user = user
        self.password = secrets.token_hex(12)
        self.http_port = hodei.free_port()
        self.tcp_port = hodei.free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.proc = None
        self.command = server_command()
        (self.dir / "config.xml").write_text(CONFIG.format(
            dir=self.dir, http_port=self.http_port, tcp_port=self.tcp_port))
        (self.dir / "users.xml").write_text(USERS.format(user=user, password=self.password))

    # -- process ----------------------------------------------------------

    def start(self, timeout_s=60):
        assert self.command, "no clickhouse-server: run scripts/setup.sh (installs Debian's)"
        assert not self.running(), "already running"
        with open(self.dir / "stdout.log", "ab") as out, open(self.dir / "stderr.log", "ab") as err:
            self.proc = subprocess.Popen(
                self.command + [f"--config-file={self.dir / 'config.xml'}"],
                stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=self.dir,
                start_new_session=True, preexec_fn=hodei._die_with_parent)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"clickhouse-server exited with {self.proc.returncode} at start:\n"
                    + self.log_tail())
            status, body = hodei.http_get(self.url + "/ping", timeout=2)
            return status == 200 and body.startswith("Ok.")

        hodei.wait_until(ready, timeout_s, f"{self.url}/ping to answer Ok.", interval_s=0.05)
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s=60):
        """SIGTERM and wait (SIGKILL after timeout_s)."""
        if not self.running():
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self):
        if self.running():
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()

    def finish(self):
        self.stop()

    def log_tail(self, lines=40):
        out = []
        for name in ("log/error.log", "stderr.log"):
            p = self.dir / name
            if p.exists():
                out += p.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(out)

    # -- queries ----------------------------------------------------------

    def query(self, sql, data=None, params=None, user=None, timeout=60):
        """Runs sql as `default` (or user with its password) and returns the
        answer as text. A body (bytes) makes sql the `query` parameter.
        Raises QueryError on a non-200 answer."""
        p = dict(params or {})
        if data is not None:
            p["query"] = sql
            body = data
        else:
            body = sql.encode()
        url = self.url + "/" + ("?" + urllib.parse.urlencode(p) if p else "")
        req = urllib.request.Request(url, data=body, method="POST")
        if user:
            token = base64.b64encode(f"{user}:{self.password}".encode()).decode()
            req.add_header("Authorization", "Basic " + token)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.read().decode()
        except urllib.error.HTTPError as e:
            raise QueryError(e.code, e.read().decode(errors="replace")) from None

    def scalar(self, sql):
        return int(self.query(sql + " FORMAT TabSeparated").strip())

    def rows(self, sql):
        """TabSeparated answer as a list of lists of strings (no escapes
        expected: numbers and identifiers)."""
        text = self.query(sql + " FORMAT TabSeparated")
        return [line.split("\t") for line in text.splitlines() if line]

    def count(self, tenant, database="hodei_audit"):
        """The plain count of DESIGN.md §2.7: no FINAL."""
        return self.scalar(f"SELECT count() FROM {database}.events WHERE tenant_id = '{tenant}'")

    def env(self, **extra):
        """HODEI_CLICKHOUSE_* for a hodei binary that mirrors into this server."""
        e = {
            "HODEI_CLICKHOUSE_URL": self.url,
            "HODEI_CLICKHOUSE_USER": self.user,
            "HODEI_CLICKHOUSE_PASSWORD": self.password,
        }
        e.update(extra)
        return e
