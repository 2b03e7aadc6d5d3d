"""What an inference hands to the writers, and the interface every writer implements.

The output contract (vmanomaly-compatible) is the same for every writer: `anomaly_score`,
`yhat`, `yhat_lower`, `yhat_upper` and `y`, each carrying the input series' labels (without
__name__) plus `for`, `model_alias` and `scheduler_alias`, and nothing that changes per fit,
so every output series is continuous across refits, restarts and shards. Names go through the
configured template (`server.metric_name_template`).

Two writers exist (the `writer:` config section): the pull endpoint (writers/pull.py: the
latest outputs of every series, served on /metrics) and Prometheus remote write
(writers/remote_write.py: every scored point, sent with its own timestamp).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from anomaly_sidecar.detector import Scored
from anomaly_sidecar.models.base import SeriesBatch, SeriesKey

OUTPUT_NAMES = ("anomaly_score", "yhat", "yhat_lower", "yhat_upper", "y")
HELP = {
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


def output_names(name_template: str) -> dict[str, str]:
    """OUTPUT_NAMES -> the metric name the template makes of each."""
    return {name: name_template.format(name=name) for name in OUTPUT_NAMES}


@dataclass(frozen=True)
class Publication:
    """One block of one inference: every point scored, and what the pull endpoint shows."""

    job: JobLabels
    now: float
    retention_seconds: float
    """How long a series that stops coming stays published (the scheduler's fit_window)."""
    points: SeriesBatch
    """The block read: keys, column timestamps and the observed values (y)."""
    scored: Scored
    """The outputs of every point of `points` (NaN where a point was not scored)."""
    latest_keys: Sequence[SeriesKey]
    """The series with a point scored in this block."""
    latest: dict[str, np.ndarray]
    """OUTPUT_NAMES -> one value per latest_keys: the newest point's outputs, and as its
    anomaly_score what the scheduler publishes (an alarm model: the highest since the last
    inference). NaN: nothing to publish (the series is still warming up)."""


class Writer(Protocol):
    """Where outputs go. publish() is called from the scheduler threads and must not block
    on the network; close() is called once, at stop."""

    def publish(self, publication: Publication) -> None: ...

    def forget_jobs_except(self, jobs: set[JobLabels]) -> None:
        """After a config reload: jobs no longer configured stop being published."""

    def close(self) -> None: ...
