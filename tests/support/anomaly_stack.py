"""The full stack wired for an injected anomaly: shared by the end-to-end tests and
benchmarks/e2e_latency.py.

A controllable target serves `test_value{series="latency"}`, a slow sine around 10 (a normal,
slightly moving metric); the real sidecar scores it with two robust rolling models (band
scores) and the composite detector (point alarms); the real Prometheus evaluates test variants
of the shipped rules (generated, `for` shortened) and the real Alertmanager (shipped routing,
seconds-long group timing) posts to a local Slack catcher.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from anomaly_sidecar.durations import parse_duration
from scripts.demo_target import ControllableTarget, Player, controllable_target
from scripts.slack_catcher import SlackCatcher
from scripts.stack import DEFAULT_PORTS, Stack, StackOptions
from scripts.stack_config import fast_rules
from tests.support.services import free_port, query, wait_for

QUERY_ALIAS = "latency"
BAND_MODELS = {"mad_short": "30s", "mad_long": "60s"}  # alias -> window; both must agree
ALARM_MODEL = "composite"
WARM_UP = "30s"  # how long a model watches a series before it scores it
# The rolling models use their raw bands: a seconds-long test has no error history to
# calibrate on, and band semantics (no quiet period) for AnomalyScoreHigh's `for`.
BAND_PARAMS = {"calibration": "raw", "quiet": "0", "rearm": "0", "warm_up": WARM_UP}
# The default detector with its spans cut to the seconds-long test and its sensitivity so low
# that only a new extreme alarms: a late scrape on a loaded machine bends the sine enough for
# a calibrated score to alarm now and then, and each alarm holds AnomalyAlarm for 10m.
ALARM_PARAMS = {"novelty_width": "0", "extreme_range": "2m", "extreme_tolerance": 0.25,
                "false_alarms_per_day": 1e-6, "quiet": "5s", "rearm": "0", "warm_up": WARM_UP}


@dataclass(frozen=True)
class Timings:
    """Every interval between an injected sample and the Slack message."""

    scrape: str = "1s"
    evaluation: str = "1s"
    infer_every: str = "1s"
    group_wait: str = "1s"
    rule_for: str = "2s"
    resend_delay: str = "1s"

    def seconds(self, name: str) -> float:
        return parse_duration(getattr(self, name))


class SineBaseline(Player):
    """Keeps the target's value on a slow sine (10 +- 0.2, period 7s) until spike() holds a
    fixed value instead; end_spike() returns to the sine."""

    def __init__(self, target: ControllableTarget) -> None:
        super().__init__(target, QUERY_ALIAS, self._value_at)
        self.spike_value: float | None = None
        self.spike_started_at: float | None = None

    def spike(self, value: float) -> float:
        """Set the anomalous value now; returns the monotonic time it became visible."""
        self.spike_value = value
        self.target.set(QUERY_ALIAS, value)
        self.spike_started_at = time.monotonic()
        return self.spike_started_at

    def end_spike(self) -> None:
        self.spike_value = None
        self.target.set(QUERY_ALIAS, self.normal_value(time.time()))

    @staticmethod
    def normal_value(moment: float) -> float:
        return 10.0 + 0.2 * math.sin(2 * math.pi * moment / 7.0)

    def _value_at(self, moment: float) -> float:
        return self.normal_value(moment) if self.spike_value is None else self.spike_value


def sidecar_test_config(path: Path, timings: Timings) -> Path:
    config = {
        "reader": {"url": "http://127.0.0.1:9090"},  # rewritten by Stack to its Prometheus
        "queries": {QUERY_ALIAS: {"expr": f'test_value{{series="{QUERY_ALIAS}"}}',
                                  "step": timings.infer_every}},
        "models": {
            **{alias: {"type": "mad", "window": window, "queries": [QUERY_ALIAS], **BAND_PARAMS}
               for alias, window in BAND_MODELS.items()},
            ALARM_MODEL: {"type": "composite", "queries": [QUERY_ALIAS], **ALARM_PARAMS},
        },
        "schedulers": {"main": {"fit_every": "1h", "fit_window": "10m",
                                "infer_every": timings.infer_every,
                                "models": [*BAND_MODELS, ALARM_MODEL]}},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@dataclass
class AnomalyStack:
    stack: Stack
    target: ControllableTarget
    baseline: SineBaseline
    catcher: SlackCatcher
    timings: Timings

    def scores(self) -> dict[str, float]:
        """model_alias -> the anomaly_score Prometheus holds for the test series."""
        results = query(self.stack.url("prometheus"),
                        f'anomaly_score{{for="{QUERY_ALIAS}", series="{QUERY_ALIAS}"}}')
        return {r["metric"]["model_alias"]: float(r["value"][1]) for r in results}

    def wait_until_scored_normal(self, timeout_seconds: float = 120.0) -> None:
        """Every model warm and scoring the sine as normal (< 1) in Prometheus."""
        def calm() -> dict[str, float] | None:
            scores = self.scores()
            return (scores if set(scores) == {*BAND_MODELS, ALARM_MODEL}
                    and max(scores.values()) < 1 else None)

        wait_for(calm, timeout_seconds, message="every model scoring the baseline below 1")


@contextmanager
def anomaly_stack(workdir: Path, catcher: SlackCatcher, timings: Timings = Timings(),
                  thresholds: Mapping[str, float] | None = None,
                  exporter_args: tuple[str, ...] = ("--gpu.simulate=1",)) -> Iterator[AnomalyStack]:
    """The whole stack on free ports, Slack and the remediation webhook pointing at catcher."""
    slack_url_file = workdir / "slack_webhook_url"
    workdir.mkdir(parents=True, exist_ok=True)
    slack_url_file.write_text(catcher.url("/slack") + "\n")
    with controllable_target() as target, SineBaseline(target) as baseline:
        options = StackOptions(
            run_dir=workdir / "run",
            ports={name: free_port() for name in DEFAULT_PORTS},
            sidecar_config=sidecar_test_config(workdir / "sidecar-template.yml", timings),
            slack_url_file=slack_url_file,
            remediation_url=catcher.url("/remediation"),
            scrape_interval=timings.scrape,
            evaluation_interval=timings.evaluation,
            route_timing={"group_wait": timings.group_wait, "group_interval": "1s"},
            rule_files=fast_rules(timings.rule_for, thresholds),
            extra_scrape_jobs={"test_target": target.address},
            exporter_args=exporter_args,
            prometheus_args=[f"--rules.alert.resend-delay={timings.resend_delay}"],
        )
        with Stack(options) as stack:
            yield AnomalyStack(stack, target, baseline, catcher, timings)
