"""Rendering runnable configs from the shipped ones: what make run, tests and benchmarks use."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from scripts.stack import DEFAULT_REMEDIATOR_CONFIG, console_script
from scripts.stack_config import (
    alertmanager_config,
    dump_yaml,
    fast_rules,
    prometheus_config,
    remediator_config,
    rules_with_links,
    shipped_rules,
)
from tests.alerting.shipped import alert_rules
from tests.support.remediator import write_token
from tests.support.services import require_binary

JOBS = {"aiinfra_exporter": "127.0.0.1:1", "anomaly_sidecar": "127.0.0.1:2",
        "alertmanager": "127.0.0.1:3", "prometheus": "127.0.0.1:4",
        "aiinfra_remediator": "127.0.0.1:6"}


def test_prometheus_config_sets_every_target_and_keeps_honor_labels(tmp_path):
    config = prometheus_config(JOBS, "127.0.0.1:3", extra_jobs={"extra": "127.0.0.1:5"},
                               scrape_interval="1s")
    targets = {job["job_name"]: job["static_configs"][0]["targets"]
               for job in config["scrape_configs"]}
    assert targets == {name: [address] for name, address in
                       {**JOBS, "extra": "127.0.0.1:5"}.items()}
    sidecar = next(job for job in config["scrape_configs"] if job["job_name"] == "anomaly_sidecar")
    assert sidecar["honor_labels"] is True
    assert config["global"]["scrape_interval"] == "1s"
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([require_binary("promtool"), "check", "config", str(path)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_job_gets_a_scrape_interval_of_its_own(tmp_path):
    config = prometheus_config(JOBS, "127.0.0.1:3", extra_jobs={"demo": "127.0.0.1:5"},
                               job_intervals={"demo": "1s"})
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert (jobs["demo"]["scrape_interval"], jobs["demo"]["scrape_timeout"]) == ("1s", "1s")
    assert "scrape_interval" not in jobs["prometheus"]
    path = dump_yaml(config, tmp_path / "prometheus.yml")
    result = subprocess.run([require_binary("promtool"), "check", "config", str(path)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    with pytest.raises(ValueError, match="job_intervals: no scrape job 'demoo'"):
        prometheus_config(JOBS, "127.0.0.1:3", job_intervals={"demoo": "1s"})
    with pytest.raises(ValueError, match="job_intervals: demo='1 s' is not a duration"):
        prometheus_config(JOBS, "127.0.0.1:3", extra_jobs={"demo": "127.0.0.1:5"},
                          job_intervals={"demo": "1 s"})


def test_prometheus_config_refuses_a_job_left_on_its_default_port():
    partial = {name: address for name, address in JOBS.items() if name != "prometheus"}
    with pytest.raises(ValueError, match=r"prometheus\.yml: .*targets missing \['prometheus'\]"):
        prometheus_config(partial, "127.0.0.1:3")


def test_alertmanager_config_without_slack_or_webhook_still_valid(tmp_path):
    config = alertmanager_config(None, None)
    assert "slack_api_url_file" not in config["global"]
    assert all(set(receiver) == {"name"} for receiver in config["receivers"])
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([require_binary("amtool"), "check-config", str(path)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_route_timing_overrides_root_and_only_children_that_set_it():
    config = alertmanager_config(None, None, {"group_wait": "1s", "repeat_interval": "2m"})
    assert config["route"]["group_wait"] == "1s"
    assert config["route"]["repeat_interval"] == "2m"
    critical = config["route"]["routes"][0]
    assert critical["repeat_interval"] == "2m"
    assert "group_wait" not in critical


@pytest.mark.parametrize(("timing", "message"), [
    ({"group_waitt": "1s"}, "unknown key 'group_waitt'"),
    ({"group_wait": "soon"}, "group_wait='soon' is not a duration"),
])
def test_route_timing_rejects_bad_input(timing, message):
    with pytest.raises(ValueError, match=message):
        alertmanager_config(None, None, timing)


def test_fast_rules_shorten_for_and_replace_only_named_thresholds():
    variants = {name: yaml.safe_load(text) for name, text in
                fast_rules("2s", {"HostHighMemoryUtilisation": 0.01}).items()}
    rules = [rule for document in variants.values() for group in document["groups"]
             for rule in group["rules"] if "alert" in rule]
    assert len(rules) == len(alert_rules())
    assert {rule.get("for") for rule in rules} <= {"2s", None}
    by_name = {rule["alert"]: rule["expr"] for rule in rules}
    assert by_name["HostHighMemoryUtilisation"] == \
        "instance:aiinfra_memory_utilisation:ratio > 0.01"
    assert by_name["HostHighCpuUtilisation"] == "instance:aiinfra_cpu_utilisation:rate1m > 0.9"


def test_fast_rules_refuse_a_threshold_for_an_unknown_alert():
    """A typo must not leave the shipped threshold silently in place."""
    with pytest.raises(ValueError, match=r"thresholds for unknown alerts: \['HostHighMemory'\]"):
        fast_rules("2s", {"HostHighMemory": 0.01})


def test_the_remediation_webhook_carries_the_token_only_to_the_stacks_remediator(tmp_path):
    token = tmp_path / "remediator_token"
    own = alertmanager_config(None, "http://127.0.0.1:10102/alerts", remediation_token_file=token)
    (webhook,) = next(r for r in own["receivers"] if r["name"] == "slack-oncall")["webhook_configs"]
    assert webhook["http_config"] == {"authorization": {"type": "Bearer",
                                                        "credentials_file": str(token)}}
    other = alertmanager_config(None, "http://elsewhere.example/hook")
    (webhook,) = next(r for r in other["receivers"]
                      if r["name"] == "slack-oncall")["webhook_configs"]
    assert "http_config" not in webhook
    for config in (own, other):
        path = tmp_path / "alertmanager.yml"
        path.write_text(yaml.safe_dump(config))
        result = subprocess.run([require_binary("amtool"), "check-config", str(path)],
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("with_slack", [True, False])
def test_the_rendered_example_remediator_config_is_valid_and_safe(tmp_path, with_slack):
    token = tmp_path / "token"
    write_token(token)
    slack = tmp_path / "slack_url" if with_slack else None
    config = remediator_config(DEFAULT_REMEDIATOR_CONFIG, "127.0.0.1:1", token,
                               tmp_path / "audit.jsonl", slack)
    notify = [action for action in config["actions"].values() if action["type"] == "notify"]
    others = [action for action in config["actions"].values() if action["type"] != "notify"]
    assert notify and others
    assert all(action.get("dry_run") is True for action in others)
    for action in notify:
        assert action.get("dry_run", False) is not with_slack
        if with_slack:
            assert action["slack_api_url_file"] == str(slack)
    path = dump_yaml(config, tmp_path / "remediator.yml")
    result = subprocess.run([console_script("aiinfra-remediator"), "check-config", str(path)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr


RUNBOOKS = "http://127.0.0.1:1/user/runbooks.md"


@pytest.mark.parametrize("grafana_url", [None, "http://grafana.example:3000/"])
def test_rendered_rules_link_runbooks_to_the_stack_and_dashboards_to_grafana_or_nowhere(
        tmp_path, grafana_url):
    rendered = rules_with_links(shipped_rules(), RUNBOOKS, grafana_url)
    rules = [rule for text in rendered.values() for group in yaml.safe_load(text)["groups"]
             for rule in group["rules"] if "alert" in rule]
    assert len(rules) == len(alert_rules())
    for rule in rules:
        annotations = rule["annotations"]
        assert annotations["runbook_url"] == f"{RUNBOOKS}#{rule['alert'].lower()}"
        if grafana_url is None:
            assert "dashboard_url" not in annotations
        else:
            assert annotations["dashboard_url"].startswith("http://grafana.example:3000/d/")
    for file_name, text in rendered.items():
        (tmp_path / file_name).write_text(text)
    result = subprocess.run([require_binary("promtool"), "check", "rules",
                             *sorted(str(path) for path in tmp_path.glob("*.yml"))],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rendered_rules_refuse_a_link_they_would_leave_pointing_elsewhere():
    rule = ("groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up == 0\n"
            "    annotations:\n      runbook_url: https://wiki.example/a\n")
    with pytest.raises(ValueError, match=r"a\.yml: A: link 'https://wiki\.example/a' does not "
                                         r"start with https://github\.com/"):
        rules_with_links({"a.yml": rule}, RUNBOOKS, None)
