"""Paths to the shipped alerting files and loaders for them, shared by the alerting tests."""

from __future__ import annotations

from pathlib import Path

import yaml

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
