"""A first `make demo` as a new user sees it: from a fresh start (no history in Prometheus),
when each model of the stack's sidecar config first publishes a score, against what the script
printed for it, and how long after the demo incident's labelled anomaly its AnomalyAlarm reached
the local Slack catcher, against the time the demo states.

    .venv/bin/python benchmarks/first_run.py [--runs 1]

Times count from starting scripts/run_stack.py; the printed figures count from a series' first
sample, which comes a few seconds later (a scrape, and a second one for a rate).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anomaly_sidecar.config import load_config
from anomaly_sidecar.first_score import first_scores
from scripts.demo import ALERT_WITHIN_SECONDS, DEMO_PORTS, INCIDENT_FILE
from scripts.slack_catcher import slack_titles
from scripts.stack import DEFAULT_PORTS, DEFAULT_SIDECAR_CONFIG
from tests.support.run_stack import RunningStack, start_run_stack, stop_run_stack

TIMEOUT_SECONDS = 330.0


def one_run(workdir: Path, stated: dict[tuple[str, str], float]) -> tuple[dict, float | None]:
    """First-score seconds per (model, query) and the demo alert's delay (None: none came)."""
    running = start_run_stack(workdir, "--demo", names=(*DEFAULT_PORTS, *DEMO_PORTS))
    try:
        deadline = time.monotonic() + TIMEOUT_SECONDS
        delay = None
        while time.monotonic() < deadline:
            running.poll_first_scores()
            delay = delay if delay is not None else alarm_delay(running)
            if set(stated) <= set(running.first_scores) and delay is not None:
                break
            time.sleep(1.0)
        return dict(running.first_scores), delay
    finally:
        stop_run_stack(running)


def alarm_delay(running: RunningStack) -> float | None:
    """Seconds from the labelled anomaly to the incident's AnomalyAlarm in the catcher."""
    incident_path = running.run_dir / INCIDENT_FILE
    if not incident_path.exists():
        return None
    started = json.loads(incident_path.read_text())["anomaly_started_at"]
    title = f"[FIRING:1] WARNING AnomalyAlarm on 127.0.0.1:{running.ports['demo-target']}"
    return next((received - started for received, request in running.caught()
                 if title in slack_titles(request)), None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    stated = {(first.model_alias, first.query_alias): first.seconds
              for first in first_scores(load_config(DEFAULT_SIDECAR_CONFIG))}
    measured: dict[tuple[str, str], list[float]] = {key: [] for key in stated}
    delays = []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="first-run-") as workdir:
            seen, delay = one_run(Path(workdir), stated)
        for key in stated:
            measured[key].append(seen.get(key, float("nan")))
        delays.append(delay)
        print(f"run {run + 1}: slowest first score {max(seen.values(), default=0):.0f} s, "
              f"demo alert {delay if delay is None else round(delay, 1)} s after the anomaly",
              flush=True)
    print(f"\n{'model':<16} {'query':<18} {'printed s':>9} {'measured s':>11} {'ratio':>6}")
    for (model, query_alias), seconds in stated.items():
        median = statistics.median(measured[model, query_alias])
        print(f"{model:<16} {query_alias:<18} {seconds:>9.0f} {median:>11.1f} "
              f"{median / seconds:>6.2f}")
    slowest = max(max(values) for values in measured.values())
    print(f"\nslowest first score: {slowest:.0f} s (bound: 300 s, ratio {slowest / 300:.2f})")
    got = [delay for delay in delays if delay is not None]
    print(f"demo alert after the labelled anomaly: {', '.join(f'{d:.1f}' for d in got)} s "
          f"({len(got)} of {len(delays)} runs; stated: within {ALERT_WITHIN_SECONDS:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
