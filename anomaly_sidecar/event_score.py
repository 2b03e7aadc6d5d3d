"""Event-level accuracy of alarms against labelled runs of rows (the AIOps corpus' measures).

Kept inside the package beside nab_score, with unit tests of its own, because a published
accuracy figure is only as good as its scorer. Definitions (the corpus README's):

- an alarm is a row whose anomaly_score is >= the threshold (NaN, no score, is no alarm);
- event recall: a labelled run of rows counts as caught if at least one of its rows alarms;
- false-alarm events: each run of consecutive alarming rows outside the labelled runs counts
  once, reported per 1,000 unlabelled rows;
- the alarm share: the fraction of unlabelled rows that alarm.

Every figure is pooled over the files of a corpus (runs and unlabelled rows summed), so a file
with many short incidents weighs what it holds.

The analysis figure `best_recall_within_budget` reads the labels to pick a threshold, so it is
never a result of a detector with a shipped threshold; it answers "how well does this score
rank points", the question a tuned baseline is compared on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

FALSE_ALARM_BUDGET_PER_1000 = 1.0
ALARM_SHARE_BUDGET = 0.01


@dataclass(frozen=True)
class LabelledScores:
    """One file: the score of every row (NaN = not scored) and which rows are labelled."""

    scores: np.ndarray
    labelled: np.ndarray

    def __post_init__(self) -> None:
        if self.scores.shape != self.labelled.shape or self.scores.ndim != 1:
            raise ValueError("scores and labels must be 1-D arrays of the same length")


@dataclass(frozen=True)
class EventFigures:
    """Corpus-wide figures at one threshold."""

    threshold: float
    runs: int
    caught: int
    normal_rows: int
    false_alarm_events: int
    normal_alarm_rows: int

    @property
    def recall(self) -> float:
        return self.caught / self.runs if self.runs else float("nan")

    @property
    def false_alarms_per_1000(self) -> float:
        return 1000.0 * self.false_alarm_events / self.normal_rows if self.normal_rows else 0.0

    @property
    def alarm_share(self) -> float:
        return self.normal_alarm_rows / self.normal_rows if self.normal_rows else 0.0

    def within(self, false_alarms_per_1000: float = FALSE_ALARM_BUDGET_PER_1000,
               alarm_share: float = ALARM_SHARE_BUDGET) -> bool:
        return (self.false_alarms_per_1000 <= false_alarms_per_1000
                and self.alarm_share <= alarm_share)


def labelled_runs(labelled: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) row of every run of consecutive labelled rows, inclusive."""
    edges = np.diff(np.concatenate([[0], labelled.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(),
                    (np.flatnonzero(edges == -1) - 1).tolist(), strict=True))


@dataclass(frozen=True)
class _Prepared:
    """What every threshold needs, computed once per corpus: each run's highest score, each
    unlabelled row's score, and for each unlabelled row the lower of its score and its
    predecessor's (-inf where the predecessor is labelled or absent): a false-alarm event
    starts at an alarming unlabelled row whose predecessor does not alarm, so the number of
    events at threshold t is #(score >= t) - #(that minimum >= t)."""

    run_maxima: np.ndarray
    normal_scores: np.ndarray
    continued: np.ndarray
    normal_rows: int


def _prepare(files: Sequence[LabelledScores]) -> _Prepared:
    run_maxima, normal_scores, continued = [], [], []
    for item in files:
        scores = np.where(np.isnan(item.scores), -np.inf, item.scores)
        labelled = item.labelled.astype(bool)
        run_maxima.extend(scores[first:last + 1].max() for first, last in
                          labelled_runs(labelled))
        normal = np.where(labelled, -np.inf, scores)
        previous = np.concatenate([[-np.inf], normal[:-1]])
        normal_scores.append(normal[~labelled])
        continued.append(np.minimum(normal, previous)[~labelled])
    return _Prepared(np.sort(np.asarray(run_maxima, dtype=float)), _sorted(normal_scores),
                     _sorted(continued), sum(len(part) for part in normal_scores))


def _sorted(parts: list[np.ndarray]) -> np.ndarray:
    return np.sort(np.concatenate(parts)) if parts else np.zeros(0)


def _at_least(sorted_values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    return len(sorted_values) - np.searchsorted(sorted_values, thresholds, side="left")


def _figures(prepared: _Prepared, thresholds: np.ndarray) -> list[EventFigures]:
    caught = _at_least(prepared.run_maxima, thresholds)
    alarms = _at_least(prepared.normal_scores, thresholds)
    events = alarms - _at_least(prepared.continued, thresholds)
    return [EventFigures(float(threshold), len(prepared.run_maxima), int(hit),
                         prepared.normal_rows, int(event), int(alarm))
            for threshold, hit, event, alarm in zip(thresholds, caught, events, alarms,
                                                    strict=True)]


def at_threshold(files: Sequence[LabelledScores], threshold: float = 1.0) -> EventFigures:
    """The corpus' figures for alarms at score >= threshold."""
    return _figures(_prepare(files), np.array([threshold], dtype=float))[0]


def best_recall_within_budget(files: Sequence[LabelledScores],
                              false_alarms_per_1000: float = FALSE_ALARM_BUDGET_PER_1000,
                              alarm_share: float = ALARM_SHARE_BUDGET) -> EventFigures:
    """Analysis only (reads the labels): the highest event recall of any threshold that keeps
    false-alarm events and the alarm share within their budgets; ties go to the fewest false
    alarms. Recall changes only at a run's highest score, so those are the thresholds tried
    (and +inf, where nothing alarms)."""
    prepared = _prepare(files)
    candidates = np.unique(np.concatenate([prepared.run_maxima[np.isfinite(prepared.run_maxima)],
                                           [np.inf]]))
    allowed = [figures for figures in _figures(prepared, candidates)
               if figures.within(false_alarms_per_1000, alarm_share)]
    return max(allowed, key=lambda figures: (figures.caught, -figures.false_alarm_events,
                                             -figures.threshold))
