"""Everything one report reads, for one period: Prometheus (ALERTS, ALERTS_FOR_STATE, the anomaly
sidecar's anomaly_score and forecast band), Alertmanager's API v2 (silences, current alerts) and
the remediator's audit log.

A source that cannot be read is recorded in `errors` and its sections say so: a report with
Prometheus down still shows what the remediator did, and the other way round.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import requests

from anomaly_sidecar.config import ReaderConfig
from anomaly_sidecar.models.base import SeriesKey
from anomaly_sidecar.reader import PromReader, ReaderError
from remediator.audit import read_records
from remediator.report.episodes import Episode, find_episodes

MAX_COLUMNS = 1440
"""A report's step is its period / 1440 (one minute for a day), at least one second."""


@dataclass(frozen=True)
class AnomalySeries:
    """One of the most anomalous series: its labels, its highest score, and on the report's
    grid its y, band and score."""

    labels: dict[str, str]
    max_score: float
    seconds: np.ndarray
    y: np.ndarray
    yhat: np.ndarray
    yhat_lower: np.ndarray
    yhat_upper: np.ndarray
    anomaly_score: np.ndarray


@dataclass(frozen=True)
class Sources:
    prometheus_url: str
    alertmanager_url: str | None
    audit_log: Path | None
    metric_name_template: str = "{name}"
    top_anomalies: int = 5
    timeout_seconds: float = 30.0


@dataclass
class ReportData:
    start: float
    end: float
    step: float
    sources: Sources
    generated_at: float = field(default_factory=time.time)
    episodes: list[Episode] = field(default_factory=list)
    anomalies: list[AnomalySeries] = field(default_factory=list)
    silences: list[dict[str, Any]] = field(default_factory=list)
    current_alerts: list[dict[str, Any]] = field(default_factory=list)
    audit: list[dict[str, Any]] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    """source name -> why it could not be read."""


def default_step(period_seconds: float) -> float:
    return max(1.0, float(math.ceil(period_seconds / MAX_COLUMNS)))


def collect(sources: Sources, start: float, end: float, step: float | None = None) -> ReportData:
    data = ReportData(start, end, step or default_step(end - start), sources)
    reader = PromReader(ReaderConfig(url=sources.prometheus_url.rstrip("/"),
                                     timeout_seconds=sources.timeout_seconds, max_retries=1))
    try:
        data.episodes = read_episodes(reader, start, end, data.step)
    except ReaderError as error:
        data.errors["Prometheus"] = str(error)
    if "Prometheus" not in data.errors:
        try:
            data.anomalies = read_anomalies(reader, sources, start, end, data.step)
        except ReaderError as error:
            data.errors["Prometheus (anomaly scores)"] = str(error)
    if sources.alertmanager_url:
        try:
            data.silences, data.current_alerts = read_alertmanager(
                sources.alertmanager_url.rstrip("/"), start, sources.timeout_seconds)
        except (requests.RequestException, ValueError) as error:
            data.errors["Alertmanager"] = f"{sources.alertmanager_url}: {error}"
    if sources.audit_log is not None:
        try:
            data.audit = list(read_records(sources.audit_log, since=start, until=end))
        except OSError as error:
            data.errors["Audit log"] = f"{sources.audit_log}: {error.strerror or error}"
    return data


def read_episodes(reader: PromReader, start: float, end: float, step: float) -> list[Episode]:
    window = f"{int(step)}s"
    firing = reader.query_range(f'max_over_time(ALERTS{{alertstate="firing"}}[{window}])',
                                start, end, step)
    for_state = reader.query_range(f"max_over_time(ALERTS_FOR_STATE[{window}])", start, end, step)
    return find_episodes(firing, for_state)


def read_anomalies(reader: PromReader, sources: Sources, start: float, end: float,
                   step: float) -> list[AnomalySeries]:
    """The top N series by their highest anomaly_score over the period, if it exceeded 1."""
    def metric(output: str) -> str:
        return sources.metric_name_template.format(name=output)

    period = f"{math.ceil(end - start)}s"
    top = reader.query(f"topk({sources.top_anomalies}, max_over_time({metric('anomaly_score')}"
                       f"[{period}]) > 1)", end)
    series = []
    for key, max_score in sorted(top.items(), key=lambda item: -item[1]):
        selector = label_selector(key)
        columns = {}
        for output in ("y", "yhat", "yhat_lower", "yhat_upper"):
            batch = reader.query_range(f"{metric(output)}{selector}", start, end, step)
            columns[output] = batch.values[0] if batch.keys else np.full(len(batch.timestamps),
                                                                         np.nan)
        score = reader.query_range(f"max_over_time({metric('anomaly_score')}{selector}"
                                   f"[{int(step)}s])", start, end, step)
        series.append(AnomalySeries(dict(key), max_score, score.timestamps, columns["y"],
                                    columns["yhat"], columns["yhat_lower"],
                                    columns["yhat_upper"],
                                    score.values[0] if score.keys else columns["y"] * np.nan))
    return series


def label_selector(key: SeriesKey) -> str:
    """{name="value",...} matching exactly these labels, values escaped for PromQL."""
    def escaped(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return "{" + ",".join(f'{name}="{escaped(value)}"' for name, value in key) + "}"


def read_alertmanager(base_url: str, start: float,
                      timeout_seconds: float) -> tuple[list[dict], list[dict]]:
    """(silences active or ended within the period, every alert Alertmanager holds now)."""
    silences = requests.get(f"{base_url}/api/v2/silences", timeout=timeout_seconds)
    silences.raise_for_status()
    alerts = requests.get(f"{base_url}/api/v2/alerts", timeout=timeout_seconds)
    alerts.raise_for_status()
    relevant = [silence for silence in silences.json()
                if silence.get("status", {}).get("state") != "expired"
                or _epoch(silence.get("endsAt", "")) >= start]
    return relevant, alerts.json()


def _epoch(text: str) -> float:
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return 0.0
