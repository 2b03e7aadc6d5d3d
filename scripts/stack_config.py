"""Render runnable Prometheus and Alertmanager configs from the shipped ones.

The shipped prometheus/prometheus.yml and alertmanager/alertmanager.yml are the single source
of truth; `make run`, the end-to-end tests and the latency benchmark all derive their configs
from them here (other ports, absolute paths, shorter timings), so what is tested is what ships.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED_PROMETHEUS = REPO_ROOT / "prometheus" / "prometheus.yml"
SHIPPED_ALERTMANAGER = REPO_ROOT / "alertmanager" / "alertmanager.yml"
SHIPPED_RULES_DIR = REPO_ROOT / "prometheus" / "rules"
SHIPPED_RUNBOOKS_URL = ("https://github.com/aiinfra-monitor/aiinfra-monitor/blob/main/prometheus/"
                        "runbooks.md")
"""What every shipped alert's runbook_url starts with (then #alertname)."""
SHIPPED_GRAFANA_URL = "http://127.0.0.1:3000"
"""What every shipped alert's dashboard_url starts with: the Grafana of docker-compose.yml."""

_DURATION = re.compile(r"^(\d+)(ms|s|m|h)$")


def load_yaml(path: Path) -> dict:
    with path.open() as handle:
        return yaml.safe_load(handle)


def prometheus_config(targets: Mapping[str, str], alertmanager_address: str,
                      rule_files: list[str] | None = None, scrape_interval: str | None = None,
                      evaluation_interval: str | None = None,
                      extra_jobs: Mapping[str, str] | None = None,
                      job_intervals: Mapping[str, str] | None = None) -> dict:
    """The shipped prometheus.yml with each job's target set from `targets` (job -> host:port),
    plus one plain scrape job per entry of extra_jobs (job -> host:port); job_intervals gives
    jobs a scrape interval (and timeout) of their own (job -> duration).

    Every job of the shipped file must be given a target: a job silently left pointing at a
    default port would scrape whatever else listens there.
    """
    config = load_yaml(SHIPPED_PROMETHEUS)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    missing = set(jobs) - set(targets)
    unknown = set(targets) - set(jobs)
    if missing or unknown:
        raise ValueError(f"{SHIPPED_PROMETHEUS}: scrape_configs jobs {sorted(jobs)}; "
                         f"targets missing {sorted(missing)}, unknown {sorted(unknown)}")
    for job_name, address in targets.items():
        jobs[job_name]["static_configs"] = [{"targets": [address]}]
    for job_name, address in (extra_jobs or {}).items():
        jobs[job_name] = {"job_name": job_name, "static_configs": [{"targets": [address]}]}
        config["scrape_configs"].append(jobs[job_name])
    for job_name, interval in (job_intervals or {}).items():
        if job_name not in jobs:
            raise ValueError(f"job_intervals: no scrape job {job_name!r}")
        _check_duration("job_intervals", job_name, interval)
        jobs[job_name].update(scrape_interval=interval, scrape_timeout=interval)
    alertmanager_targets = [{"targets": [alertmanager_address]}]
    config["alerting"]["alertmanagers"] = [{"static_configs": alertmanager_targets}]
    config["rule_files"] = rule_files if rule_files is not None else [
        str(SHIPPED_RULES_DIR / "*.yml")]
    if scrape_interval:
        config["global"]["scrape_interval"] = scrape_interval
    if evaluation_interval:
        config["global"]["evaluation_interval"] = evaluation_interval
    return config


def alertmanager_config(slack_url_file: Path | None, remediation_url: str | None,
                        route_timing: Mapping[str, str] | None = None,
                        remediation_token_file: Path | None = None) -> dict:
    """The shipped alertmanager.yml made runnable from any directory.

    Without a Slack URL file the Slack integrations are dropped (alerts still show in
    Alertmanager's UI); without a remediation URL the webhook is dropped rather than left
    retrying against a loopback port nobody listens on. The remediator's bearer token is sent
    only when remediation_token_file is given (never to another receiver). route_timing sets
    group_wait, group_interval or repeat_interval on the root route and on each child route
    that sets its own (tests use seconds).
    """
    config = load_yaml(SHIPPED_ALERTMANAGER)
    config["templates"] = [str(SHIPPED_ALERTMANAGER.parent / pattern)
                           for pattern in config.get("templates", [])]
    if slack_url_file is None:
        config["global"].pop("slack_api_url_file", None)
    else:
        config["global"]["slack_api_url_file"] = str(Path(slack_url_file).resolve())
    for receiver in config["receivers"]:
        if slack_url_file is None:
            receiver.pop("slack_configs", None)
        for webhook in receiver.get("webhook_configs", []):
            webhook["url"] = remediation_url
            if remediation_token_file is None:
                webhook.pop("http_config", None)
            else:
                webhook["http_config"]["authorization"]["credentials_file"] = str(
                    Path(remediation_token_file).resolve())
        if remediation_url is None:
            receiver.pop("webhook_configs", None)
    _validate_route_timing(route_timing or {})
    _apply_route_timing(config["route"], route_timing or {})
    return config


def remediator_config(source: Path, listen_address: str, token_file: Path, audit_log: Path,
                      slack_url_file: Path | None) -> dict:
    """A remediator config (remediator/examples/stack.yml for `make run`) on this stack's
    address, token and audit log. Its Slack messages go to slack_url_file; without one, notify
    actions become dry runs (the audit log still shows what they would have sent)."""
    config = load_yaml(source)
    config["server"].update(listen_address=listen_address, bearer_token_file=str(token_file))
    config["audit_log"] = str(audit_log)
    for action in config["actions"].values():
        if action["type"] != "notify":
            continue
        if slack_url_file is None:
            action["dry_run"] = True
        else:
            action["slack_api_url_file"] = str(Path(slack_url_file).resolve())
    return config


def _validate_route_timing(timing: Mapping[str, str]) -> None:
    for key, value in timing.items():
        if key not in {"group_wait", "group_interval", "repeat_interval"}:
            raise ValueError(f"route timing: unknown key {key!r}")
        _check_duration("route timing", key, value)


def _check_duration(what: str, key: str, value: str) -> None:
    if not _DURATION.match(value):
        raise ValueError(f"{what}: {key}={value!r} is not a duration like 1s or 5m")


def _apply_route_timing(route: dict, timing: Mapping[str, str], is_root: bool = True) -> None:
    """Set timing on the root route, and on a child route only where it overrides the root."""
    for key, value in timing.items():
        if is_root or key in route:
            route[key] = value
    for child in route.get("routes", []):
        _apply_route_timing(child, timing, is_root=False)


def shipped_rules() -> dict[str, str]:
    """The shipped rule files: file name -> YAML text."""
    return {path.name: path.read_text() for path in sorted(SHIPPED_RULES_DIR.glob("*.yml"))}


def rules_with_links(rule_files: Mapping[str, str], runbooks_url: str,
                     grafana_url: str | None) -> dict[str, str]:
    """Rule files (file name -> YAML text) whose alerts link where a running stack serves:
    each runbook_url into runbooks_url (same anchor), each dashboard_url into grafana_url, or
    without one no dashboard_url at all (Slack then shows no dashboard link), since a link to a
    Grafana nobody started is a dead link in a page. A link that does not start as the shipped
    ones do is an error rather than left pointing elsewhere."""
    rendered = {}
    for file_name, text in rule_files.items():
        document = yaml.safe_load(text)
        for group in document["groups"]:
            for rule in group["rules"]:
                annotations = rule.get("annotations", {})
                where = f"{file_name}: {rule.get('alert')}"
                if "runbook_url" in annotations:
                    annotations["runbook_url"] = _rebased(
                        annotations["runbook_url"], SHIPPED_RUNBOOKS_URL, runbooks_url, where)
                if "dashboard_url" in annotations and grafana_url is None:
                    del annotations["dashboard_url"]
                elif "dashboard_url" in annotations:
                    annotations["dashboard_url"] = _rebased(
                        annotations["dashboard_url"], SHIPPED_GRAFANA_URL,
                        grafana_url.rstrip("/"), where)
        rendered[file_name] = yaml.safe_dump(document, sort_keys=False)
    return rendered


def _rebased(link: str, shipped_base: str, base: str, where: str) -> str:
    if not link.startswith(shipped_base):
        raise ValueError(f"{where}: link {link!r} does not start with {shipped_base}")
    return base + link[len(shipped_base):]


def fast_rules(for_duration: str, thresholds: Mapping[str, float] | None = None) -> dict[str, str]:
    """Test variants of the shipped rule files: every `for` set to for_duration, and the
    comparison threshold of the named alerts replaced (alertname -> new threshold).

    Generated from the shipped files rather than hand-copied, so a test exercises the real
    expressions, labels and annotations. Returns file name -> YAML text.
    """
    thresholds = dict(thresholds or {})
    variants: dict[str, str] = {}
    known_alerts: set[str | None] = set()
    for path in sorted(SHIPPED_RULES_DIR.glob("*.yml")):
        document = load_yaml(path)
        for group in document["groups"]:
            for rule in group["rules"]:
                if "alert" not in rule:
                    continue
                if "for" in rule:
                    rule["for"] = for_duration
                if rule["alert"] in thresholds:
                    rule["expr"] = _replace_threshold(rule["expr"], thresholds[rule["alert"]],
                                                      f"{path.name}: {rule['alert']}")
        variants[path.name] = yaml.safe_dump(document, sort_keys=False)
        known_alerts.update(rule.get("alert") for group in document["groups"]
                            for rule in group["rules"])
    unknown = sorted(set(thresholds) - known_alerts)
    if unknown:
        raise ValueError(f"{SHIPPED_RULES_DIR}: thresholds for unknown alerts: {unknown}")
    return variants


def _replace_threshold(expr: str, threshold: float, where: str) -> str:
    """Swap the number after the last comparison operator of a simple `lhs OP number` rule."""
    match = re.search(r"(>=|<=|==|>|<)\s*([0-9.]+)\s*$", expr)
    if match is None:
        raise ValueError(f"{where}: expr does not end in `OP number`: {expr!r}")
    return expr[:match.start(2)] + repr(float(threshold))


def dump_yaml(config: dict, path: Path) -> Path:
    """Write config as YAML to path (its parent created) and return path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
