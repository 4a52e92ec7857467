# SPDX-License-Identifier: Apache-2.0
"""The Prometheus alerting rules (deploy/prometheus/hodei-audit-alerts.yml,
docs/OPERATIONS.md "Alerts"): promtool accepts them, their unit tests pass
(each alert fires on its series once its `for` has passed, and not on
healthy ones), and every metric they name is one that a server with S3
replication and the ClickHouse mirror on really exports, so that a renamed
metric cannot leave an alert that never fires."""
import re
import shutil
import subprocess

import pytest

import hodei

RULES_DIR = hodei.ROOT / "deploy" / "prometheus"
RULES = RULES_DIR / "hodei-audit-alerts.yml"
RULE_TESTS = RULES_DIR / "hodei-audit-alerts.test.yml"


def promtool(*args):
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool is not installed (Debian package prometheus; CI installs it)")
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=120,
                          cwd=RULES_DIR)


def test_promtool_checks_the_rules():
    p = promtool("check", "rules", str(RULES))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS" in p.stdout


def test_rule_unit_tests_pass():
    p = promtool("test", "rules", str(RULE_TESTS))
    assert p.returncode == 0, p.stdout + p.stderr


def test_every_alert_has_a_unit_test_and_a_runbook_entry():
    alerts = re.findall(r"^\s*- alert: (\S+)", RULES.read_text(), re.M)
    assert len(alerts) == len(set(alerts)) and alerts
    tested = set(re.findall(r"alertname: (\S+)", RULE_TESTS.read_text()))
    ops = (hodei.ROOT / "docs" / "OPERATIONS.md").read_text()
    for a in alerts:
        assert a in tested, f"{a}: no unit test in {RULE_TESTS.name}"
        assert f"| `{a}` |" in ops, f"{a}: no entry in docs/OPERATIONS.md, Alerts"


def metric_names(text):
    """The hodei_ metric families an expression names (histogram series
    suffixes taken off)."""
    names = set(re.findall(r"\bhodei_[a-z0-9_]+", text))
    return {re.sub(r"_(bucket|count|sum)$", "", n) for n in names}


def test_rules_name_only_exported_metrics(server_factory, s3_server, clickhouse):
    import s3server
    env = s3_server.env(s3server.VERSIONED, HODEI_S3_PREFIX="alerts")
    env.update(clickhouse.env())
    srv = server_factory(env=env)
    hodei.wait_until(lambda: srv.metrics().get("hodei_replication_ready") == 1
                     and srv.metrics().get("hodei_mirror_ready") == 1, 120,
                     "replication and mirror ready")
    exported = srv.metrics().types
    named = metric_names(RULES.read_text())
    assert len(named) >= 10, named
    missing = sorted(n for n in named if n not in exported)
    assert not missing, f"the rules name metrics the server does not export: {missing}"
    # The check itself can fail: a name the server does not export is caught.
    assert "hodei_no_such_metric" not in exported
    assert metric_names("rate(hodei_append_duration_seconds_bucket[5m])") == \
        {"hodei_append_duration_seconds"}
