"""Paths to the shipped alerting files and loaders for them, shared by the alerting tests."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from tests.support.services import query, wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO_ROOT / "prometheus"
RULES_DIR = PROMETHEUS_DIR / "rules"
PROMTOOL_TESTS_DIR = PROMETHEUS_DIR / "tests"
ALERTMANAGER_DIR = REPO_ROOT / "alertmanager"
ALERTMANAGER_CONFIG = ALERTMANAGER_DIR / "alertmanager.yml"
GRAFANA_DIR = REPO_ROOT / "grafana"


def rule_files() -> list[Path]:
    return sorted(RULES_DIR.glob("*.yml"))


def all_rules() -> list[dict]:
    """Every rule (recording and alerting) of every shipped rule file, in file order."""
    rules: list[dict] = []
    for path in rule_files():
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules.extend(group["rules"])
    return rules


def alert_rules() -> list[dict]:
    return [rule for rule in all_rules() if "alert" in rule]


def recording_rules() -> list[dict]:
    return [rule for rule in all_rules() if "record" in rule]


DASHBOARDS_DIR = GRAFANA_DIR / "dashboards"
# What a Grafana variable or macro stands for when a dashboard query is run outside Grafana.
GRAFANA_SUBSTITUTIONS = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}


def dashboards() -> dict[str, dict]:
    """File name -> parsed dashboard JSON."""
    return {path.name: json.loads(path.read_text())
            for path in sorted(DASHBOARDS_DIR.glob("*.json"))}


def dashboard_queries(dashboard: dict) -> list[str]:
    """Every PromQL of a dashboard: panel targets and the selectors of label_values() variables."""
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    for variable in dashboard["templating"]["list"]:
        match = re.fullmatch(r"label_values\((.+),\s*\w+\)", variable["query"]["query"])
        queries.append(match.group(1) if match else variable["query"]["query"])
    return queries


def as_plain_promql(query: str) -> str:
    """A dashboard query with Grafana's $macros and $variables replaced by runnable values
    (a variable becomes `.*`, as Grafana's All option does)."""
    return re.sub(r"\$(\w+)", lambda match: GRAFANA_SUBSTITUTIONS.get(match.group(1), ".*"),
                  query)


def plain_dashboard_queries(file_name: str) -> list[str]:
    """Every query of one shipped dashboard, runnable as plain PromQL."""
    return [as_plain_promql(promql) for promql in dashboard_queries(dashboards()[file_name])]


def queries_without_data(prometheus_url: str, queries: list[str],
                         timeout_seconds: float) -> list[str]:
    """Poll a real Prometheus until every query returns at least one series, or the timeout;
    the queries still empty then (a panel that would show "No data")."""
    def empty() -> list[str] | None:
        return None if [promql for promql in queries if not query(prometheus_url, promql)] \
            else ["all answered"]

    try:
        wait_for(empty, timeout_seconds, 1.0, message="every panel query answering")
    except TimeoutError:
        return [promql for promql in queries if not query(prometheus_url, promql)]
    return []
