"""Firing episodes from Prometheus' ALERTS series: each uninterrupted stretch of `firing`.

ALERTS{alertstate="firing"} is read as max_over_time over each step, so an alert that fired for
a single rule evaluation between two steps is still seen; the times below are therefore exact
to one step. ALERTS_FOR_STATE holds the moment the alert's condition became true (pending
included), which gives the start of an episode to the second.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anomaly_sidecar.models.base import SeriesBatch, SeriesKey


@dataclass(frozen=True)
class Episode:
    labels: dict[str, str]
    """The alert's labels (alertstate dropped)."""
    first_seen: float
    """The first step at which it was firing."""
    last_seen: float
    active_since: float | None
    """ALERTS_FOR_STATE: when the condition became true, if Prometheus recorded it."""
    resolved_at: float | None
    """None: still firing at the end of the period."""

    @property
    def alertname(self) -> str:
        return self.labels.get("alertname", "")

    @property
    def severity(self) -> str:
        return self.labels.get("severity", "")

    @property
    def instance(self) -> str:
        return self.labels.get("instance", "")

    @property
    def started_at(self) -> float:
        return self.active_since if self.active_since is not None else self.first_seen

    @property
    def time_to_resolve(self) -> float | None:
        return None if self.resolved_at is None else max(0.0, self.resolved_at - self.started_at)

    @property
    def identity(self) -> SeriesKey:
        return tuple(sorted(self.labels.items()))


def alert_labels(key: SeriesKey) -> dict[str, str]:
    return {name: value for name, value in key if name != "alertstate"}


def find_episodes(firing: SeriesBatch, for_state: SeriesBatch | None) -> list[Episode]:
    """Episodes of every firing series, oldest first. `firing` is on the report's step grid;
    `for_state` (ALERTS_FOR_STATE on the same grid) may be None or lack a series."""
    active_since = {}
    if for_state is not None:
        active_since = {tuple(sorted(alert_labels(key).items())): row
                        for key, row in zip(for_state.keys, for_state.values, strict=True)}
    grid = firing.timestamps
    episodes = []
    for key, row in zip(firing.keys, firing.values, strict=True):
        labels = alert_labels(key)
        state_row = active_since.get(tuple(sorted(labels.items())))
        present = np.isfinite(row)
        for first, last in _runs(present):
            since = _first_finite(state_row[first:last + 1]) if state_row is not None else None
            resolved = float(grid[last]) if last < len(grid) - 1 else None
            episodes.append(Episode(labels, float(grid[first]), float(grid[last]), since,
                                    resolved))
    return sorted(episodes, key=lambda episode: (episode.started_at, episode.alertname))


def _runs(present: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) index of each run of True."""
    padded = np.concatenate([[False], present, [False]]).astype(int)
    edges = np.diff(padded)
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1) - 1
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def _first_finite(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite[0]) if finite.size else None
