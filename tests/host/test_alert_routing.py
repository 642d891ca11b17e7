"""A collector that acts on the rules: the agent (watch mode, a detection
rule) ships to the gateway collector configured by config/collector/
(rotel with route_alerts.py); the record that matched the rule reaches the
alerts collector and only it, everything else and the agent's metrics reach
the audit destination. Four real rotel processes: the gateway and the
alerts collector as shipped, and two more playing the SIEM's alert and
audit indexes.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.harness.agent import Agent
from tests.harness.collector import Rotel

pytestmark = pytest.mark.host

REPO = Path(__file__).resolve().parents[2]
COLLECTOR = REPO / "config" / "collector"
RULE = """\
title: Secret file changed
id: 9b1eb7b6-1c07-4427-aad8-a947632115be
level: high
logsource: {product: linux, category: file_change}
detection:
  secret: {TargetFilename|endswith: /secret.key}
  condition: secret
"""


@pytest.fixture
def collectors(tmp_path):
    alert_index = Rotel(tmp_path / "siem-alerts").start()
    audit_index = Rotel(tmp_path / "siem-audit").start()
    alerts = Rotel(tmp_path / "alerts", env_file=COLLECTOR / "alerts.env",
                   env={"ROTEL_OTLP_EXPORTER_ENDPOINT": alert_index.grpc_endpoint}).start()
    gateway = Rotel(tmp_path / "gateway", env_file=COLLECTOR / "gateway.env", env={
        "ROTEL_OTLP_WITH_LOGS_PROCESSOR": str(COLLECTOR / "route_alerts.py"),
        "OTEL_FSNOTIFY_ALERTS_ENDPOINT": alerts.http_endpoint,
        "ROTEL_OTLP_EXPORTER_ENDPOINT": audit_index.grpc_endpoint}).start()
    yield gateway, alert_index, audit_index
    for c in (gateway, alerts, alert_index, audit_index):
        c.stop()


def test_matched_records_go_to_the_alerts_pipeline_and_the_rest_to_audit(tmp_path, collectors):
    gateway, alert_index, audit_index = collectors
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "secret.key").write_text("k1\n")
    (tree / "notes.txt").write_text("n1\n")
    (tmp_path / "rule.yml").write_text(RULE)
    work = tmp_path / "agent"
    agent = Agent(work, "--watch", str(tree), "--fim-only", "--rules", str(tmp_path / "rule.yml"),
                  "--state-dir", str(work / "state"), "--endpoint", gateway.http_endpoint,
                  "--protocol", "http/protobuf", "--spool-dir", str(work / "spool"), output="otlp")
    agent.wait_ready()
    subprocess.run(["sh", "-c", f"echo k2 >> {tree / 'secret.key'}; echo n2 >> {tree / 'notes.txt'}"],
                   check=True)
    time.sleep(1.5)
    stats = agent.stop()  # flushes the logs and a last metrics export
    assert stats["delivered"] == 2 and stats["rules_matched_events"] == 1, stats

    alerts = [r for r in alert_index.wait_for_records(1, timeout=20) if r.event_name == "fsnotify.fim"]
    assert [r.attributes["file.path"] for r in alerts] == [str(tree / "secret.key")]
    a = alerts[0].attributes
    assert a["security_rule.uuid"] == "9b1eb7b6-1c07-4427-aad8-a947632115be"
    assert a["security_rule.name"] == "Secret file changed" and a["security_rule.ruleset.name"] == "rule"
    assert alerts[0].severity_number == 17 and a["process.command"] == "sh"
    assert a["process.executable.name"] == os.path.basename(os.path.realpath("/bin/sh"))

    audit = [r for r in audit_index.wait_for_records(1, timeout=20) if r.event_name == "fsnotify.fim"]
    assert [r.attributes["file.path"] for r in audit] == [str(tree / "notes.txt")]
    deadline = time.monotonic() + 20
    while "otel_fsnotify.events" not in audit_index.metric_names() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "otel_fsnotify.events" in audit_index.metric_names(), audit_index.metric_names()
    assert "otel_fsnotify.events" not in alert_index.metric_names()
