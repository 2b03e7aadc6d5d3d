"""Rendering runnable configs from the shipped ones: what make run, tests and benchmarks use."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from scripts.stack_config import alertmanager_config, fast_rules, prometheus_config
from tests.alerting.shipped import alert_rules
from tests.support.services import require_binary

JOBS = {"aiinfra_exporter": "127.0.0.1:1", "anomaly_sidecar": "127.0.0.1:2",
        "alertmanager": "127.0.0.1:3", "prometheus": "127.0.0.1:4"}


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
