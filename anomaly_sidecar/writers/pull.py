"""The pull writer: the latest outputs of every series, served on the sidecar's /metrics.

A prometheus-client collector (it writes nothing: Prometheus pulls it at scrape time). Per
series it holds the newest point's outputs and anomaly_sidecar_model_warm; a series not seen
any more is dropped after one fit_window of absence. The output contract is writers/base.py's.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from prometheus_client.core import Metric

from anomaly_sidecar.models.base import SeriesKey
from anomaly_sidecar.writers.base import HELP, OUTPUT_NAMES, JobLabels, Publication, output_names


@dataclass
class _OutputSeries:
    labels: dict[str, str]
    values: dict[str, float]
    warm: bool
    last_seen: float


class OutputCollector:
    """A prometheus-client collector holding the latest output of every job."""

    def __init__(self, name_template: str = "{name}") -> None:
        self.names = output_names(name_template)
        self._lock = threading.Lock()
        self._series: dict[JobLabels, dict[SeriesKey, _OutputSeries]] = {}

    def publish(self, publication: Publication) -> None:
        self.update(publication.job, publication.latest_keys, publication.latest,
                    np.isfinite(publication.latest["anomaly_score"]), publication.now,
                    publication.retention_seconds)

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

    def close(self) -> None:
        """Nothing to flush: what is not scraped any more is simply gone."""

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            entries = [entry for series in self._series.values() for entry in series.values()]
        for name in OUTPUT_NAMES:
            metric = Metric(self.names[name], HELP[name], "gauge")
            for entry in entries:
                if name in entry.values:
                    metric.add_sample(self.names[name], entry.labels, entry.values[name])
            yield metric
        warm = Metric("anomaly_sidecar_model_warm",
                      "1 once the series is past its warm-up and scored, 0 before", "gauge")
        for entry in entries:
            warm.add_sample("anomaly_sidecar_model_warm", entry.labels, 1.0 if entry.warm else 0.0)
        yield warm
