"""Publish forecasts and scores as metrics on the sidecar's own /metrics.

The output contract (vmanomaly-compatible): `anomaly_score`, `yhat`, `yhat_lower`,
`yhat_upper` and `y`, each carrying the input series' labels (without __name__) plus `for`,
`model_alias` and `scheduler_alias`, and nothing that changes per fit, so every output series
is continuous across refits and restarts. Names go through the configured template.
Series not seen any more are dropped after one fit_window of absence.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import Metric

from anomaly_sidecar import __version__
from anomaly_sidecar.models.base import SeriesKey

OUTPUT_NAMES = ("anomaly_score", "yhat", "yhat_lower", "yhat_upper", "y")
_HELP = {
    "anomaly_score": "0 = as expected, <= 1 inside the forecast band, > 1 outside it",
    "yhat": "The model's expected value for the latest point",
    "yhat_lower": "Lower edge of the expected band",
    "yhat_upper": "Upper edge of the expected band",
    "y": "The observed value that was scored",
}


@dataclass(frozen=True)
class JobLabels:
    """One (scheduler, model, query): the labels it adds to each of its output series, and
    what its anomaly_sidecar_model_info series says about the model behind them."""

    scheduler_alias: str
    model_alias: str
    query_alias: str
    model_type: str
    score_kind: str
    """Model.score_kind: "band" or "alarm"; the alert rules pick their expression by it."""

    def __str__(self) -> str:
        """How logs name the job: the three aliases a config author wrote, not the repr."""
        return f"{self.scheduler_alias}/{self.model_alias}/{self.query_alias}"

    def apply(self, key: SeriesKey) -> dict[str, str]:
        labels = dict(key)
        labels.update(self._job_labels())
        return labels

    def info_labels(self) -> dict[str, str]:
        return {**self._job_labels(), "type": self.model_type, "score_kind": self.score_kind}

    def _job_labels(self) -> dict[str, str]:
        return {"for": self.query_alias, "model_alias": self.model_alias,
                "scheduler_alias": self.scheduler_alias}


@dataclass
class _OutputSeries:
    labels: dict[str, str]
    values: dict[str, float]
    warm: bool
    last_seen: float


class OutputCollector:
    """A prometheus-client collector holding the latest output of every job."""

    def __init__(self, name_template: str = "{name}") -> None:
        self.names = {name: name_template.format(name=name) for name in OUTPUT_NAMES}
        self._lock = threading.Lock()
        self._series: dict[JobLabels, dict[SeriesKey, _OutputSeries]] = {}

    def update(self, job: JobLabels, keys: Sequence[SeriesKey], outputs: dict[str, np.ndarray],
               warm: np.ndarray, now: float, retention_seconds: float) -> int:
        """Record one inference cycle (outputs: OUTPUT_NAMES -> one value per key; NaN means
        'nothing to publish for this point') and drop series absent for retention_seconds.
        Returns how many series the job now publishes."""
        with self._lock:
            series = self._series.setdefault(job, {})
            for row, key in enumerate(keys):
                values = {name: float(outputs[name][row]) for name in OUTPUT_NAMES
                          if np.isfinite(outputs[name][row])}
                entry = series.get(key)
                if entry is None:
                    entry = series[key] = _OutputSeries(job.apply(key), {}, False, now)
                if "anomaly_score" in values or not bool(warm[row]):
                    entry.values = values if bool(warm[row]) else {}
                entry.warm = bool(warm[row])
                entry.last_seen = now
            for key in [key for key, entry in series.items()
                        if now - entry.last_seen > retention_seconds]:
                del series[key]
            return len(series)

    def forget_jobs_except(self, jobs: set[JobLabels]) -> None:
        """After a config reload: stop publishing jobs that no longer exist."""
        with self._lock:
            for job in [job for job in self._series if job not in jobs]:
                del self._series[job]

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            jobs = list(self._series)
            entries = [entry for series in self._series.values() for entry in series.values()]
        for name in OUTPUT_NAMES:
            metric = Metric(self.names[name], _HELP[name], "gauge")
            for entry in entries:
                if name in entry.values:
                    metric.add_sample(self.names[name], entry.labels, entry.values[name])
            yield metric
        warm = Metric("anomaly_sidecar_model_warm",
                      "1 once the series is past its warm-up and scored, 0 before", "gauge")
        for entry in entries:
            warm.add_sample("anomaly_sidecar_model_warm", entry.labels, 1.0 if entry.warm else 0.0)
        yield warm
        # Joined by the alert rules on (for, model_alias, scheduler_alias): a point-alarm model
        # needs a different rule from a band model, and the output series cannot say which
        # they come from without a label that would split `min without (model_alias, ...)`.
        info = Metric("anomaly_sidecar_model_info",
                      "1 per published job: the model type and its score_kind (band or alarm)",
                      "gauge")
        for job in jobs:
            info.add_sample("anomaly_sidecar_model_info", job.info_labels(), 1.0)
        yield info


class SelfMetrics:
    """The sidecar's own health metrics, in the same registry as the outputs."""

    def __init__(self, registry: CollectorRegistry) -> None:
        run_labels = ["stage", "model_alias", "scheduler_alias"]
        self.runs = Counter("anomaly_sidecar_model_runs", "Completed fit/infer runs",
                            run_labels, registry=registry)
        self.run_duration = Histogram(
            "anomaly_sidecar_model_run_duration_seconds", "Duration of fit/infer runs",
            run_labels, registry=registry,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600))
        self.run_errors = Counter("anomaly_sidecar_model_run_errors",
                                  "Fit/infer runs that failed", run_labels, registry=registry)
        self.runs_skipped = Counter(
            "anomaly_sidecar_model_runs_skipped",
            "Runs skipped because the previous run was still busy when they were due",
            ["stage", "scheduler_alias"], registry=registry)
        self.series = Gauge("anomaly_sidecar_series", "Series published per job",
                            ["for", "model_alias", "scheduler_alias"], registry=registry)
        self.last_success = Gauge("anomaly_sidecar_last_success_timestamp_seconds",
                                  "When a run last succeeded", run_labels, registry=registry)
        self.reader_duration = Histogram(
            "anomaly_sidecar_reader_request_duration_seconds", "Query API request durations",
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.reader_errors = Counter("anomaly_sidecar_reader_errors",
                                     "Query API requests that failed (each attempt)",
                                     registry=registry)
        self.points_read = Counter("anomaly_sidecar_points_read",
                                   "Samples read for inference (first reads of a series' "
                                   "history included)", ["for", "model_alias",
                                                         "scheduler_alias"],
                                   registry=registry)
        self.reload_successful = Gauge("anomaly_sidecar_config_last_reload_successful",
                                       "1 if the last config (re)load succeeded",
                                       registry=registry)
        self.build_info = Gauge("anomaly_sidecar_build_info", "Version of the sidecar",
                                ["version"], registry=registry)
        self.build_info.labels(version=__version__).set(1)
        self.reload_successful.set(1)

    def record_request(self, seconds: float, ok: bool) -> None:
        self.reader_duration.observe(seconds)
        if not ok:
            self.reader_errors.inc()
