"""`make demo` (scripts/run_stack.py --demo): the local stack plus an incident that travels the
whole anomaly path while you watch, from a metric to a Slack message.

A demo target (scripts/demo_target.py) serves `demo_latency_seconds{series="p99"}`, which
Prometheus scrapes every second; the sidecar scores it with the default detector
(scripts/demo_sidecar.yml, added to the stack's sidecar config). Once that detector scores the
series, the demo replays its incident through the target (scripts/demo_incident.py): its
labelled anomaly makes the detector alarm, the shipped AnomalyAlarm rule fire, and the shipped
Alertmanager routing post to Slack (#aiinfra-alerts). Without --slack-webhook-url-file that Slack
is a local catcher (scripts/slack_catcher.py), whose messages are printed and logged to
run_dir/demo-slack.jsonl; run_dir/demo-incident.json says when the labelled anomaly began.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import requests

from scripts.demo_incident import SERVING_REGRESSION, Incident
from scripts.demo_target import ControllableTarget, Player, controllable_target
from scripts.slack_catcher import CaughtRequest, SlackCatcher, slack_catcher, slack_titles
from scripts.stack import Stack, StackOptions
from scripts.stack_config import REPO_ROOT, dump_yaml, load_yaml

DEMO_PORTS = {"demo-target": 10104, "slack-catcher": 10105}
DEMO_SIDECAR = REPO_ROOT / "scripts" / "demo_sidecar.yml"
DEMO_JOB = "demo_target"
SERIES = "p99"
ALERT_WITHIN_SECONDS = 75.0
"""How soon after the labelled anomaly begins its AnomalyAlarm reaches Slack: a second to
scrape the target, 10 s until the sidecar scores it (demo_sidecar.yml), 5 s to scrape the
sidecar and 5 s to evaluate the rule (prometheus/prometheus.yml), Alertmanager's group_wait of
30 s (alertmanager/alertmanager.yml): 51 s, and room for a busy machine."""
WARM_TIMEOUT_SECONDS = 300.0
INCIDENT_FILE = "demo-incident.json"
SLACK_FILE = "demo-slack.jsonl"


class Demo:
    """The demo's own parts around a Stack: target, player, local Slack catcher."""

    def __init__(self, run_dir: Path, target: ControllableTarget, catcher: SlackCatcher | None,
                 slack_url_file: Path, incident: Incident) -> None:
        self.run_dir = run_dir
        self.target = target
        self.catcher = catcher
        self.slack_url_file = slack_url_file
        self.incident = incident
        self.config = load_yaml(DEMO_SIDECAR)
        (self.query_alias,) = self.config["queries"]
        self.epoch = time.time()
        self.started_at_index: int | None = None
        self.anomaly_started_at: float | None = None
        self.player = Player(target, SERIES, self._value_at)

    def stack_options(self, options: StackOptions) -> StackOptions:
        """options with the demo target scraped every step, the demo's sidecar sections and
        Slack at the demo's URL file."""
        return dataclasses.replace(
            options,
            sidecar_config=self._sidecar_config(options.sidecar_config),
            slack_url_file=self.slack_url_file,
            extra_scrape_jobs={**options.extra_scrape_jobs, DEMO_JOB: self.target.address},
            scrape_intervals={**options.scrape_intervals,
                              DEMO_JOB: f"{self.incident.step_seconds:g}s"})

    def watch(self, stack: Stack) -> threading.Thread:
        """On a thread: wait until the detector scores the demo series, then start the incident
        and say when to expect its alert."""
        thread = threading.Thread(target=self._run, args=(stack,), name="demo", daemon=True)
        thread.start()
        return thread

    def _run(self, stack: Stack) -> None:
        deadline = time.monotonic() + WARM_TIMEOUT_SECONDS
        while not self._scored(stack.url("prometheus")):
            if time.monotonic() > deadline:
                say(f"the default detector has not scored the demo series after "
                    f"{WARM_TIMEOUT_SECONDS:.0f} s: see {stack.run_dir / 'sidecar.log'}")
                return
            time.sleep(1.0)
        self._start_incident()

    def _scored(self, prometheus_url: str) -> bool:
        try:
            answer = requests.get(f"{prometheus_url}/api/v1/query", timeout=5, params={
                "query": f'anomaly_score{{for="{self.query_alias}"}}'}).json()
        except (requests.RequestException, ValueError):
            return False
        return bool(answer.get("data", {}).get("result"))

    def _start_incident(self) -> None:
        step = self.incident.step_seconds
        self.started_at_index = self._index(time.time()) + 1
        self.anomaly_started_at = (self.epoch + step * (self.started_at_index
                                                        + self.incident.lead_points))
        record = {"incident": self.incident.name, "description": self.incident.description,
                  "series": f'demo_latency_seconds{{series="{SERIES}"}}',
                  "anomaly_started_at": self.anomaly_started_at,
                  "anomaly_seconds": self.incident.anomaly_points * step,
                  "alert_within_seconds": ALERT_WITHIN_SECONDS}
        dump_json(record, self.run_dir / INCIDENT_FILE)
        say(f"the detector is watching; replaying \"{self.incident.name}\" "
            f"({self.incident.description}). Its labelled anomaly begins at "
            f"{time.strftime('%H:%M:%S', time.localtime(self.anomaly_started_at))}; expect "
            f"AnomalyAlarm in Slack #aiinfra-alerts within {ALERT_WITHIN_SECONDS:.0f} s of it")

    def _index(self, moment: float) -> int:
        return math.floor((moment - self.epoch) / self.incident.step_seconds)

    def _value_at(self, moment: float) -> float:
        return self.incident.value(self._index(moment), self.started_at_index)

    def _sidecar_config(self, base: Path) -> Path:
        config = load_yaml(base)
        for section, entries in self.config.items():
            clash = set(entries) & set(config.get(section) or {})
            if clash:
                raise ValueError(f"{base}: {section} {sorted(clash)} also in {DEMO_SIDECAR}")
            config[section] = {**(config.get(section) or {}), **entries}
        return dump_yaml(config, self.run_dir / "sidecar-demo.yml")

    def caught(self, request: CaughtRequest) -> None:
        """A message reached the local Slack catcher: log it, print its titles and, for the
        incident's alert, how long after the labelled anomaly it came."""
        received_at = time.time()
        with (self.run_dir / SLACK_FILE).open("a") as log:
            log.write(json.dumps({"received_at": received_at, "path": request.path,
                                  "body": request.body}) + "\n")
        for title in slack_titles(request):
            note = ""
            if (self.anomaly_started_at is not None and "AnomalyAlarm" in title
                    and title.endswith(f" on {self.target.address}")):
                note = (f"  ({received_at - self.anomaly_started_at:.1f} s after the labelled "
                        f"anomaly began)")
            say(f"Slack {request.body.get('channel', '')}: {title}{note}")


@contextlib.contextmanager
def running_demo(run_dir: Path, ports: Mapping[str, int], slack_url_file: Path | None,
                 incident: Incident = SERVING_REGRESSION) -> Iterator[Demo]:
    """The demo's target (playing normal values from the start) and, without a Slack URL file,
    its local Slack catcher, until the context exits."""
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in (INCIDENT_FILE, SLACK_FILE):
        (run_dir / stale).unlink(missing_ok=True)
    config = load_yaml(DEMO_SIDECAR)
    (query,) = config["queries"].values()
    with contextlib.ExitStack() as context:
        target = context.enter_context(controllable_target(query["expr"],
                                                           ports["demo-target"]))
        catcher = None
        if slack_url_file is None:
            catcher = context.enter_context(slack_catcher(ports["slack-catcher"]))
            slack_url_file = run_dir / "demo-slack-url"
            slack_url_file.write_text(catcher.url("/slack") + "\n")
        demo = Demo(run_dir, target, catcher, slack_url_file, incident)
        if catcher is not None:
            catcher.listeners.append(demo.caught)
        context.enter_context(demo.player)
        yield demo


def dump_json(record: dict, path: Path) -> None:
    """Write record as JSON, atomically (a reader never sees half a file)."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(record, indent=1) + "\n")
    partial.replace(path)


def say(message: str) -> None:
    print(f"demo: {message}", file=sys.stdout, flush=True)
