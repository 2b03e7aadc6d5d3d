"""Time from an injected anomalous sample to Alertmanager's Slack payload, end to end.

Runs the real stack (exporter, controllable target, anomaly sidecar, Prometheus, Alertmanager,
a local Slack catcher on 127.0.0.1) and, several times over, sets the target to an anomalous
value and waits for the critical AnomalyScoreHigh message. Beside each latency it shows when
the score first reached Prometheus and when the alert turned firing there, and it prints the
intervals involved and the target bound: 3 scrape intervals + group_wait + the rule's `for`.

    .venv/bin/python benchmarks/e2e_latency.py [--runs 5] [--scrape 1s] [--for 2s] ...
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.slack_catcher import CaughtRequest, slack_catcher, slack_titles
from tests.alerting.shipped import alert_rules
from tests.support.anomaly_stack import AnomalyStack, Timings, anomaly_stack
from tests.support.services import query

SPIKE_VALUE = 100.0
POLL_SECONDS = 0.1
QUIET_PER_SPIKE = 3.0
"""Seconds of normal data after each run per second of spike."""


@dataclass
class RunResult:
    score_visible: float | None
    """Seconds from the injected sample until the critical rule's expression (the band models'
    minimum anomaly_score >= 3) returned the series in Prometheus."""
    alert_firing: float | None
    """... until ALERTS{alertname="AnomalyScoreHigh", severity="critical"} was firing."""
    slack: float
    """... until the Slack catcher received the critical FIRING payload."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    defaults = Timings()
    for option, field_name in (("scrape", "scrape"), ("evaluation", "evaluation"),
                               ("infer-every", "infer_every"), ("group-wait", "group_wait"),
                               ("for", "rule_for"), ("resend-delay", "resend_delay")):
        parser.add_argument(f"--{option}", dest=field_name, default=getattr(defaults, field_name))
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds to wait for one Slack message")
    return parser.parse_args()


def titled(request: CaughtRequest, prefix: str) -> bool:
    return request.path == "/slack" and any(t.startswith(prefix) for t in slack_titles(request))


def critical_title(request: CaughtRequest) -> bool:
    return titled(request, "[FIRING:1] CRITICAL AnomalyScoreHigh")


def resolved_title(request: CaughtRequest) -> bool:
    return titled(request, "[RESOLVED] CRITICAL AnomalyScoreHigh")


def critical_condition() -> str:
    """The shipped critical AnomalyScoreHigh expression, so the benchmark watches what the rule
    evaluates (band models only) rather than a copy of it."""
    (expr,) = [rule["expr"] for rule in alert_rules() if rule["alert"] == "AnomalyScoreHigh"
               and rule["labels"]["severity"] == "critical"]
    return expr


def one_run(running: AnomalyStack, timeout_seconds: float) -> RunResult:
    """Inject, poll Prometheus for the intermediate steps until Slack has the message, end."""
    prometheus = running.stack.url("prometheus")
    condition = critical_condition()
    already_seen = len(running.catcher.requests)
    running.wait_until_scored_normal()
    started = running.baseline.spike(SPIKE_VALUE)
    score_visible = alert_firing = None
    deadline = started + timeout_seconds
    try:
        while True:
            new = [r for r in running.catcher.requests[already_seen:] if critical_title(r)]
            if new:
                return RunResult(score_visible, alert_firing, new[0].received_at - started)
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError(
                    f"no critical Slack message within {timeout_seconds}s (score >= 3 seen after "
                    f"{score_visible} s, alert firing after {alert_firing} s)")
            if score_visible is None and query(prometheus, condition):
                score_visible = now - started
            if alert_firing is None and query(
                    prometheus, 'ALERTS{alertname="AnomalyScoreHigh", severity="critical", '
                                'alertstate="firing"}'):
                alert_firing = now - started
            time.sleep(POLL_SECONDS)
    finally:
        running.baseline.end_spike()
        ended = time.monotonic()
        resolved_before = sum(1 for r in running.catcher.requests if resolved_title(r))
        wait_deadline = ended + timeout_seconds
        while (sum(1 for r in running.catcher.requests if resolved_title(r)) <= resolved_before
               and time.monotonic() < wait_deadline):
            time.sleep(POLL_SECONDS)
        # The rolling models absorb a held spike once spikes fill half of their history; keep
        # each run's spike under a quarter of it, or later runs are scored against earlier ones.
        time.sleep(max(0.0, QUIET_PER_SPIKE * (ended - started) - (time.monotonic() - ended)))


def seconds_text(value: float | None) -> str:
    return "   n/a" if value is None else f"{value:6.2f}"


def main() -> int:
    args = parse_args()
    timings = Timings(scrape=args.scrape, evaluation=args.evaluation,
                      infer_every=args.infer_every, group_wait=args.group_wait,
                      rule_for=args.rule_for, resend_delay=args.resend_delay)
    bound = 3 * timings.seconds("scrape") + timings.seconds("group_wait") + \
        timings.seconds("rule_for")
    print(f"intervals: scrape {timings.scrape}, evaluation {timings.evaluation}, "
          f"sidecar infer_every {timings.infer_every}, group_wait {timings.group_wait}, "
          f"rule for {timings.rule_for}, rules.alert.resend-delay {timings.resend_delay}")
    print(f"target bound: 3 x scrape + group_wait + for = {bound:.2f} s\n")
    results: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="e2e-latency-") as workdir, \
            slack_catcher() as catcher, anomaly_stack(Path(workdir), catcher, timings) as running:
        print("run  score>=3 in Prometheus  alert firing  Slack payload  (s after the sample)\n"
              "     (run 1 opens a new Alertmanager group and waits group_wait; later runs reuse\n"
              "     it and go out at its next group_interval tick; n/a: Slack came first)")
        for run in range(1, args.runs + 1):
            result = one_run(running, args.timeout)
            results.append(result)
            print(f"{run:3d}  {seconds_text(result.score_visible):>22}  "
                  f"{seconds_text(result.alert_firing):>12}  {result.slack:13.2f}", flush=True)
    latencies = sorted(result.slack for result in results)
    within = sum(latency <= bound for latency in latencies)
    print(f"\nSlack latency: min {latencies[0]:.2f} s, median {statistics.median(latencies):.2f} s,"
          f" max {latencies[-1]:.2f} s over {len(latencies)} runs; "
          f"bound {bound:.2f} s; within bound {within}/{len(latencies)}; "
          f"median / bound = {statistics.median(latencies) / bound:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
