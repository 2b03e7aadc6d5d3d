"""End to end, every part real: exporter + controllable target + sidecar + Prometheus +
Alertmanager + a local Slack catcher. An injected anomaly pages with Alertmanager's real Slack
payload and resolves when it ends; a host threshold alert and ExporterDown take the same path."""

from __future__ import annotations

import re

import pytest
import requests

from scripts.slack_catcher import (
    CaughtRequest,
    slack_catcher,
    slack_links,
    slack_texts,
    slack_titles,
)
from tests.alerting.shipped import all_rules, dashboard_queries, dashboards
from tests.support.anomaly_stack import QUERY_ALIAS, anomaly_stack
from tests.support.links import broken_links
from tests.support.services import wait_for

# Slack payloads take ~5-10 s here; the bound leaves room for a loaded 2-core CI machine.
DELIVERY_TIMEOUT = 60


def titled(prefix: str, path: str = "/slack"):
    def matches(request: CaughtRequest) -> bool:
        return request.path == path and any(t.startswith(prefix) for t in slack_titles(request))
    return matches


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with slack_catcher() as catcher, anomaly_stack(
            tmp_path_factory.mktemp("e2e"), catcher,
            thresholds={"HostHighMemoryUtilisation": 0.01},
            exporter_args=("--gpu.simulate=1", "--gpu.simulate-faults=0:xid=79")) as running:
        yield running


def test_every_target_is_scraped(stack):
    def all_up():
        targets = requests.get(f"{stack.stack.url('prometheus')}/api/v1/targets",
                               timeout=5).json()["data"]["activeTargets"]
        health = {t["labels"]["job"]: t["health"] for t in targets}
        return health if set(health.values()) == {"up"} and len(health) == 7 else None

    health = wait_for(all_up, 30, message="all seven targets up")
    assert set(health) == {"aiinfra_exporter", "anomaly_sidecar", "aiinfra_remediator",
                           "alertmanager", "prometheus", "test_target", "demo_model"}


def referenced_names(prefix: str) -> set[str]:
    """Metric names with prefix used by the shipped rules and dashboards (not recording-rule
    names, not label values such as job="aiinfra_exporter")."""
    texts = [rule["expr"] for rule in all_rules()]
    texts += [q for dashboard in dashboards().values() for q in dashboard_queries(dashboard)]
    return {name for text in texts for name in re.findall(rf'(?<![:\w"]){prefix}\w+', text)}


@pytest.mark.parametrize(("component", "prefix"), [("exporter", "aiinfra_"),
                                                   ("sidecar", "anomaly_sidecar_")])
def test_rules_and_dashboards_use_metrics_the_components_expose(stack, component, prefix):
    """A name counts once declared (# TYPE): a labelled counter has no sample before its first
    increment (no Xid, no failed run yet) but is still the name the component will use."""
    def declared() -> set[str]:
        text = requests.get(f"{stack.stack.url(component)}/metrics", timeout=5).text
        names = set(re.findall(rf"^({prefix}\w+)", text, re.MULTILINE))
        return names | set(re.findall(rf"^# TYPE ({prefix}\w+)", text, re.MULTILINE))

    referenced = referenced_names(prefix)
    assert len(referenced) >= 5
    try:
        wait_for(lambda: declared() >= referenced, 30, message=f"{component} declaring them")
    except TimeoutError:
        pytest.fail(f"{component} does not expose {sorted(referenced - declared())}")


def test_injected_anomaly_pages_slack_and_resolves(stack):
    """The composite model scores the same series beside the two MAD models: its point alarm
    pages as AnomalyAlarm, and it stays out of AnomalyScoreHigh's minimum (its score is 0 again
    one point after the alarm, which would otherwise keep the band alert from ever firing)."""
    stack.wait_until_scored_normal()
    assert [r for r in stack.catcher.requests if "AnomalyScoreHigh" in str(r.body)
            or "AnomalyAlarm" in str(r.body)] == []

    stack.baseline.spike(100.0)
    instance = stack.target.address
    firing = stack.catcher.wait_for(titled("[FIRING:1] CRITICAL AnomalyScoreHigh"),
                                    DELIVERY_TIMEOUT)
    stack.baseline.end_spike()
    assert slack_titles(firing) == [f"[FIRING:1] CRITICAL AnomalyScoreHigh on {instance}"]
    assert firing.body["channel"] == "#aiinfra-oncall"
    assert firing.body["attachments"][0]["color"] == "danger"
    text = slack_texts(firing)[0]
    assert f"{QUERY_ALIAS} on {instance} is far outside its forecast band (score " in text
    assert "*Severity:* critical" in text and f"*Series:* {QUERY_ALIAS}" in text
    runbook = f"{stack.stack.runbooks_url()}#anomalyscorehigh"
    assert f"<{runbook}|Runbook>" in text and "|Dashboard>" not in text
    alarm = stack.catcher.wait_for(titled("[FIRING:1] WARNING AnomalyAlarm"), DELIVERY_TIMEOUT)
    assert slack_titles(alarm) == [f"[FIRING:1] WARNING AnomalyAlarm on {instance}"]
    assert alarm.body["channel"] == "#aiinfra-alerts"
    assert re.search(rf"{QUERY_ALIAS} on {re.escape(instance)} raised an anomaly alarm "
                     r"\(score \d+\.\d\d\)", slack_texts(alarm)[0])
    remediation = stack.catcher.wait_for(
        lambda r: r.path == "/remediation" and r.body["commonLabels"].get("alertname")
        == "AnomalyScoreHigh", DELIVERY_TIMEOUT)
    assert remediation.body["status"] == "firing"

    resolved = stack.catcher.wait_for(titled("[RESOLVED] CRITICAL AnomalyScoreHigh"),
                                      DELIVERY_TIMEOUT)
    assert resolved.received_at > firing.received_at
    assert resolved.body["attachments"][0]["color"] == "good"
    assert "*Resolved*" in slack_texts(resolved)[0]
    # The warning fired alongside the critical one but was inhibited: no page on #aiinfra-alerts.
    assert [r for r in stack.catcher.requests
            if titled("[FIRING:1] WARNING AnomalyScoreHigh")(r)] == []


def test_every_link_of_every_slack_message_answers(stack):
    """Runs after the pages above: the runbook (served by the stack's Prometheus), the query
    (Prometheus' generator URL, under its --web.external-url) and the title link of every
    message answer; no Grafana runs here, so no message links to one."""
    messages = [request for request in stack.catcher.requests if request.path == "/slack"]
    assert messages
    links = [link for request in messages for link in slack_links(request)]
    assert len(links) >= 3 * len(messages)
    assert all(link.startswith(stack.stack.url("prometheus")) for link in links)
    assert broken_links(links) == {}


def test_host_threshold_alert_reaches_the_alerts_channel(stack):
    """HostHighMemoryUtilisation (threshold lowered to 1% in the test variant of the rules)
    on the real exporter's memory metrics, through the recording rule, to Slack."""
    exporter = f"127.0.0.1:{stack.stack.options.ports['exporter']}"
    message = stack.catcher.wait_for(titled("[FIRING:1] WARNING HostHighMemoryUtilisation"),
                                     DELIVERY_TIMEOUT)
    assert slack_titles(message) == [f"[FIRING:1] WARNING HostHighMemoryUtilisation on {exporter}"]
    assert message.body["channel"] == "#aiinfra-alerts"
    assert re.search(rf"Memory at \d+(\.\d+)?% on {re.escape(exporter)}", slack_texts(message)[0])


def test_exporter_down_pages_oncall(stack):
    """Runs last in this module: it stops the exporter."""
    exporter = f"127.0.0.1:{stack.stack.options.ports['exporter']}"
    assert [r for r in stack.catcher.requests if titled("[FIRING:1] CRITICAL ExporterDown")(r)] \
        == []
    (component,) = [c for c in stack.stack.components if c.name == "exporter"]
    component.process.terminate()
    component.process.wait(timeout=10)
    message = stack.catcher.wait_for(titled("[FIRING:1] CRITICAL ExporterDown"), DELIVERY_TIMEOUT)
    assert slack_titles(message) == [f"[FIRING:1] CRITICAL ExporterDown on {exporter}"]
    assert "Prometheus cannot scrape" in slack_texts(message)[0]
