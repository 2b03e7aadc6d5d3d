"""The sidecar's own health metrics, served on its /metrics whichever writers are on."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from anomaly_sidecar import __version__
from anomaly_sidecar.writers.base import JobLabels


class ModelInfo(Collector):
    """anomaly_sidecar_model_info{for,model_alias,scheduler_alias,type,score_kind} 1 per
    running job. Joined by the alert rules on (for, model_alias, scheduler_alias): a point-alarm
    model needs a different rule from a band model, and the output series cannot say which they
    come from without a label that would split `min without (model_alias, ...)`. It is served
    here, not by a writer, so it is scraped even where the scores are remote-written."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: frozenset[JobLabels] = frozenset()

    def set_jobs(self, jobs: set[JobLabels]) -> None:
        with self._lock:
            self._jobs = frozenset(jobs)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            jobs = self._jobs
        info = Metric("anomaly_sidecar_model_info",
                      "1 per running job: the model type and its score_kind (band or alarm)",
                      "gauge")
        for job in sorted(jobs, key=str):
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
        self.series = Gauge("anomaly_sidecar_series",
                            "Series each job keeps state for and scores (its shard's only)",
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
        self.shard = Gauge("anomaly_sidecar_shard_info",
                           "1: the shard this replica scores (index of count)",
                           ["index", "count"], registry=registry)
        self.model_info = ModelInfo()
        registry.register(self.model_info)

    def record_request(self, seconds: float, ok: bool) -> None:
        self.reader_duration.observe(seconds)
        if not ok:
            self.reader_errors.inc()
