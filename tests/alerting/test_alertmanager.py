"""The shipped Alertmanager config: valid, routed by severity, inhibiting, and rendering Slack
messages through a real Alertmanager to a local Slack catcher."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta

import pytest
import requests
import yaml

from scripts.slack_catcher import slack_catcher, slack_links, slack_texts, slack_titles
from scripts.stack_config import alertmanager_config
from tests.alerting.shipped import ALERTMANAGER_CONFIG
from tests.support.services import alertmanager, require_binary, wait_for


def amtool(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([require_binary("amtool"), *args], capture_output=True, text=True,
                          timeout=60, check=False, cwd=cwd)


def test_amtool_accepts_the_shipped_config(tmp_path):
    result = amtool("check-config", str(ALERTMANAGER_CONFIG), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_amtool_accepts_the_rendered_config(tmp_path):
    slack_file = tmp_path / "slack_url"
    slack_file.write_text("http://127.0.0.1:1/slack\n")
    rendered = tmp_path / "alertmanager.yml"
    rendered.write_text(yaml.safe_dump(
        alertmanager_config(slack_file, "http://127.0.0.1:1/remediation", {"group_wait": "1s"})))
    result = amtool("check-config", str(rendered), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("labels", "receiver"), [
    (["severity=critical", "alertname=GpuLost", "instance=n1"], "slack-oncall"),
    (["severity=critical", "alertname=AnomalyScoreHigh"], "slack-oncall"),
    (["severity=warning", "alertname=HostHighCpuUtilisation"], "slack-alerts"),
    (["severity=info", "alertname=GpuPowerThrottling"], "null"),
    (["alertname=SomethingWithoutSeverity"], "null"),
])
def test_routes_by_severity(labels, receiver):
    result = amtool("config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}",
                    f"--verify.receivers={receiver}", *labels)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receiver


def test_routes_test_detects_a_wrong_receiver():
    """The routing cases above are able to fail: a warning does not page on-call."""
    result = amtool("config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}",
                    "--verify.receivers=slack-oncall", "severity=warning")
    assert result.returncode != 0


GENERATOR_URL = "http://prometheus.example:9090/graph?g0.expr=up&g0.tab=1"


def post_alerts(base_url: str, alerts: list[dict], resolved: bool = False,
                dashboard: bool = True) -> None:
    now = datetime.now(UTC)
    ends_at = now if resolved else now + timedelta(minutes=10)
    annotations = {"runbook_url": "https://runbooks.example/x",
                   **({"dashboard_url": "http://grafana.example/d/x"} if dashboard else {})}
    payload = [{"labels": alert, "startsAt": (now - timedelta(minutes=1)).isoformat(),
                "endsAt": ends_at.isoformat(), "generatorURL": GENERATOR_URL,
                "annotations": {"summary": f"{alert['alertname']} summary",
                                "description": f"{alert['alertname']} description value 42",
                                **annotations}}
               for alert in alerts]
    requests.post(f"{base_url}/api/v2/alerts", json=payload, timeout=5).raise_for_status()


@pytest.fixture
def running_alertmanager(tmp_path):
    with slack_catcher() as catcher:
        slack_file = tmp_path / "slack_url"
        slack_file.write_text(catcher.url("/slack") + "\n")
        config = alertmanager_config(slack_file, catcher.url("/remediation"),
                                     {"group_wait": "1s", "group_interval": "1s"})
        with alertmanager(tmp_path / "am", yaml.safe_dump(config)) as service:
            yield service, catcher


def test_critical_pages_oncall_and_remediation_then_resolves(running_alertmanager):
    service, catcher = running_alertmanager
    alert = {"alertname": "GpuLost", "severity": "critical", "category": "gpu",
             "instance": "node1:10100", "gpu": "3", "uuid": "GPU-abc"}
    post_alerts(service.url, [alert])
    firing = catcher.wait_for(lambda r: r.path == "/slack", 20)
    assert firing.body["channel"] == "#aiinfra-oncall"
    assert slack_titles(firing) == ["[FIRING:1] CRITICAL GpuLost on node1:10100"]
    assert firing.body["attachments"][0]["color"] == "danger"
    assert firing.body["attachments"][0]["title_link"] == "http://grafana.example/d/x"
    text = slack_texts(firing)[0]
    for expected in ("GpuLost summary", "value 42", "*GPU:* 3 (GPU-abc)", "*Instance:* node1:10100",
                     "<https://runbooks.example/x|Runbook>", "<http://grafana.example/d/x|Dashboard>",
                     f"<{GENERATOR_URL}|Query>"):
        assert expected in text
    remediation = catcher.wait_for(lambda r: r.path == "/remediation", 20)
    assert remediation.body["status"] == "firing"
    assert remediation.body["commonLabels"]["gpu"] == "3"

    post_alerts(service.url, [alert], resolved=True)
    resolved = catcher.wait_for(lambda r: r.path == "/slack" and r is not firing
                                and slack_titles(r)[0].startswith("[RESOLVED]"), 20)
    assert slack_titles(resolved) == ["[RESOLVED] CRITICAL GpuLost on node1:10100"]
    assert resolved.body["attachments"][0]["color"] == "good"
    assert "*Resolved*" in slack_texts(resolved)[0]


def test_without_a_dashboard_the_message_links_the_query_and_no_dashboard(running_alertmanager):
    """A stack without Grafana drops dashboard_url (scripts/stack_config.rules_with_links): the
    title then links to the alert's expression in Prometheus, and no link is left empty."""
    service, catcher = running_alertmanager
    post_alerts(service.url, [{"alertname": "HostHighCpuUtilisation", "severity": "warning",
                               "instance": "node1"}], dashboard=False)
    message = catcher.wait_for(lambda r: r.path == "/slack", 20)
    assert message.body["attachments"][0]["title_link"] == GENERATOR_URL
    assert slack_links(message) == [GENERATOR_URL, "https://runbooks.example/x", GENERATOR_URL]
    assert "Dashboard" not in slack_texts(message)[0]


def test_warning_goes_to_alerts_channel_and_info_pages_nobody(running_alertmanager):
    service, catcher = running_alertmanager
    post_alerts(service.url, [
        {"alertname": "GpuPowerThrottling", "severity": "info", "instance": "node1"},
        {"alertname": "HostHighCpuUtilisation", "severity": "warning", "instance": "node1"},
    ])
    warning = catcher.wait_for(lambda r: r.path == "/slack", 20)
    assert warning.body["channel"] == "#aiinfra-alerts"
    assert slack_titles(warning) == ["[FIRING:1] WARNING HostHighCpuUtilisation on node1"]
    assert warning.body["attachments"][0]["color"] == "warning"
    # Both groups flush after the same 1s group_wait; give the info one three more seconds.
    with pytest.raises(TimeoutError):
        catcher.wait_for(lambda r: "GpuPowerThrottling" in str(r.body), 3)


def inhibited_alerts(base_url: str) -> set[tuple[str, str, str, str]]:
    """(alertname, instance, severity, gpu) of every alert Alertmanager holds as inhibited."""
    alerts = requests.get(f"{base_url}/api/v2/alerts", timeout=5).json()
    return {(a["labels"]["alertname"], a["labels"]["instance"], a["labels"]["severity"],
             a["labels"].get("gpu", "")) for a in alerts if a["status"]["inhibitedBy"]}


def test_inhibition_exporter_down_gpu_lost_and_critical_over_warning(running_alertmanager):
    service, _catcher = running_alertmanager
    gpu, anomaly = {"category": "gpu"}, {"category": "anomaly", "for": "cpu"}
    inference = {"category": "inference", "group": "model"}
    tensor = {"category": "anomaly", "for": "gpu_tensor_active"}
    post_alerts(service.url, [
        {"alertname": "ExporterDown", "severity": "critical", "category": "host", "instance": "n1"},
        {"alertname": "GpuHighTemperature", "severity": "warning", "instance": "n1", "gpu": "0",
         **gpu},
        {"alertname": "AnomalyScoreHigh", "severity": "warning", "instance": "n1", **anomaly},
        {"alertname": "GpuLost", "severity": "critical", "instance": "n2", "gpu": "1", **gpu},
        {"alertname": "GpuXidErrors", "severity": "warning", "instance": "n2", "gpu": "1", **gpu},
        {"alertname": "GpuXidErrors", "severity": "warning", "instance": "n2", "gpu": "0", **gpu},
        {"alertname": "AnomalyScoreHigh", "severity": "critical", "instance": "n3", **anomaly},
        {"alertname": "AnomalyScoreHigh", "severity": "warning", "instance": "n3", **anomaly},
        {"alertname": "AnomalyScoreHigh", "severity": "warning", "instance": "n4", **anomaly},
        {"alertname": "ProcessGroupAbsent", "severity": "critical", "instance": "n1",
         **inference},
        {"alertname": "ProcessGroupGpuMemoryNearlyFull", "severity": "warning", "instance": "n5",
         "gpu": "0", **inference},
        {"alertname": "GpuMemoryNearlyFull", "severity": "warning", "instance": "n5", "gpu": "0",
         **gpu},
        {"alertname": "GpuMemoryNearlyFull", "severity": "warning", "instance": "n5", "gpu": "1",
         **gpu},
        {"alertname": "GpuTensorActivityCollapse", "severity": "warning", "instance": "n6",
         "gpu": "0", "for": "gpu_tensor_active", **gpu},
        {"alertname": "AnomalyScoreHigh", "severity": "warning", "instance": "n6", "gpu": "0",
         **tensor},
        {"alertname": "AnomalyScoreHigh", "severity": "warning", "instance": "n6", "gpu": "1",
         **tensor},
    ])
    expected = {
        ("GpuHighTemperature", "n1", "warning", "0"),  # its exporter is down
        ("AnomalyScoreHigh", "n1", "warning", ""),     # its exporter is down
        ("ProcessGroupAbsent", "n1", "critical", ""),  # its exporter is down
        ("GpuMemoryNearlyFull", "n5", "warning", "0"),  # a process group on it is named
        ("GpuXidErrors", "n2", "warning", "1"),        # that GPU is lost (GPU 0 is not)
        ("AnomalyScoreHigh", "n3", "warning", ""),     # its critical twin fires (n4 has none)
        ("AnomalyScoreHigh", "n6", "warning", "0"),    # GpuTensorActivityCollapse names it
    }
    wait_for(lambda: inhibited_alerts(service.url) == expected, 20,
             message=f"exactly {sorted(expected)} inhibited")
