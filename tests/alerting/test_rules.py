"""The shipped Prometheus rules: valid for promtool, complete, and unit-tested alert by alert."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from tests.alerting.shipped import (
    PROMETHEUS_DIR,
    PROMTOOL_TESTS_DIR,
    alert_rules,
    recording_rules,
    rule_files,
)
from tests.support.services import require_binary

REQUIRED_ANNOTATIONS = {"summary", "description", "runbook_url", "dashboard_url"}
RUNBOOKS = PROMETHEUS_DIR / "runbooks.md"
LEVEL_METRIC_OPERATION = re.compile(r"^[a-z_]+:[a-z0-9_]+:[a-z0-9_]+$")


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([require_binary("promtool"), *args], capture_output=True, text=True,
                          timeout=60, check=False)


def promtool_test_files() -> list[str]:
    return [str(path) for path in sorted(PROMTOOL_TESTS_DIR.glob("*_test.yml"))]


def test_promtool_accepts_every_rule_file():
    result = promtool("check", "rules", *map(str, rule_files()))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("test_file", promtool_test_files(), ids=lambda path: path.split("/")[-1])
def test_promtool_unit_tests_pass(test_file):
    result = promtool("test", "rules", test_file)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_unit_tested_both_firing_and_silent():
    """Each alertname needs a promtool case where it fires and one where it must not."""
    fired: set[str] = set()
    silent: set[str] = set()
    for test_file in promtool_test_files():
        with open(test_file) as handle:
            for test in yaml.safe_load(handle)["tests"]:
                for case in test.get("alert_rule_test", []):
                    (fired if case["exp_alerts"] else silent).add(case["alertname"])
    alertnames = {rule["alert"] for rule in alert_rules()}
    assert alertnames - fired == set(), "alerts never shown firing"
    assert alertnames - silent == set(), "alerts never shown staying silent"


@pytest.mark.parametrize("rule", alert_rules(),
                         ids=lambda rule: f"{rule['alert']}-{rule['labels']['severity']}")
def test_alert_carries_severity_category_and_links(rule):
    assert rule["labels"]["severity"] in {"info", "warning", "critical"}
    assert rule["labels"]["category"] in {"host", "gpu", "anomaly", "sidecar", "inference"}
    assert set(rule["annotations"]) >= REQUIRED_ANNOTATIONS
    assert "$value" in rule["annotations"]["summary"] + rule["annotations"]["description"]
    assert rule["annotations"]["runbook_url"].endswith(
        "/prometheus/runbooks.md#" + rule["alert"].lower())
    runbook_headings = re.findall(r"^## (\w+)$", RUNBOOKS.read_text(), re.MULTILINE)
    assert rule["alert"] in runbook_headings


def test_recording_rules_are_named_level_metric_operation():
    names = [rule["record"] for rule in recording_rules()]
    assert names, "no recording rules shipped"
    assert [name for name in names if not LEVEL_METRIC_OPERATION.match(name)] == []


def test_anomaly_alert_requires_every_model_to_agree():
    """The issue's contract: min across band models, >= 1 warning, >= 3 critical, for 5m;
    point-alarm models are judged by AnomalyAlarm instead (see prometheus/tests)."""
    anomaly = {rule["labels"]["severity"]: rule for rule in alert_rules()
               if rule["alert"] == "AnomalyScoreHigh"}
    base = ("min without (model_alias, scheduler_alias) (anomaly_score unless on (for, "
            'model_alias, scheduler_alias) anomaly_sidecar_model_info{score_kind="alarm"})')
    assert anomaly["warning"]["expr"] == f"{base} >= 1"
    assert anomaly["critical"]["expr"] == f"{base} >= 3"
    assert anomaly["warning"]["for"] == anomaly["critical"]["for"] == "5m"
