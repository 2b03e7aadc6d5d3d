"""The AIOps corpus' event measures on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from anomaly_sidecar.event_score import (
    LabelledScores,
    at_threshold,
    best_recall_within_budget,
    labelled_runs,
)

NAN = np.nan


def case(scores: list[float], labels: str) -> LabelledScores:
    return LabelledScores(np.array(scores, dtype=float), np.array([c == "x" for c in labels]))


def test_labelled_runs():
    assert labelled_runs(np.array([0, 1, 1, 0, 1, 0, 0, 1], dtype=bool)) == [(1, 2), (4, 4),
                                                                            (7, 7)]
    assert labelled_runs(np.zeros(3, dtype=bool)) == []


def test_recall_false_alarm_events_and_alarm_share():
    """Rows:     0    1    2    3    4    5    6    7    8    9
    labels:      .    x    x    .    .    .    x    .    .    .
    scores:      2    0    1.5  1    1    0    0    NaN  3    1
    Two runs (1-2, 6): the first is caught at row 2, the second never. Alarming normal rows:
    0, 3, 4, 8, 9 -> events {0}, {3, 4}, {8, 9} = 3 events over 7 normal rows; 5 of them
    alarm."""
    figures = at_threshold([case([2, 0, 1.5, 1, 1, 0, 0, NAN, 3, 1], ".xx...x...")], 1.0)
    assert (figures.runs, figures.caught) == (2, 1)
    assert figures.recall == 0.5
    assert figures.normal_rows == 7 and figures.false_alarm_events == 3
    assert figures.false_alarms_per_1000 == pytest.approx(3000 / 7)
    assert figures.alarm_share == pytest.approx(5 / 7)


def test_an_alarm_run_crossing_a_label_counts_once_on_each_side_and_files_pool():
    """Alarms at rows 0-4 around the run 2-3: normal alarms 0-1 and 4 are two events (the
    labelled rows split them). A second file adds one run and one event."""
    first = case([1, 1, 1, 1, 1, 0], "..xx..")
    second = case([0, 0, 5, 0], "x.x.")
    figures = at_threshold([first, second], 1.0)
    assert (figures.runs, figures.caught) == (3, 2)
    assert figures.false_alarm_events == 2 + 0
    assert figures.normal_rows == 4 + 2
    assert at_threshold([second], 1.0).false_alarm_events == 0


def test_best_recall_within_budget_picks_the_threshold_with_the_labels():
    """Runs peak at 5, 3 and 1; two normal rows alarm with 4 and 2, among 2,000 normal rows.
    Within 1.0 event per 1,000 (two events) threshold 1 catches every run; within 0.5 (one
    event) the best is threshold 3: the runs at 5 and 3, and the one event at 4."""
    scores = np.zeros(2003)
    labels = np.zeros(2003, dtype=bool)
    labels[[0, 1000, 2002]] = True
    scores[[0, 1000, 2002]] = [5, 3, 1]
    scores[[10, 20]] = [4, 2]
    item = LabelledScores(scores, labels)
    best = best_recall_within_budget([item])
    assert best.recall == 1.0 and best.threshold == 1.0 and best.false_alarm_events == 2
    tighter = best_recall_within_budget([item], false_alarms_per_1000=0.5)
    assert tighter.recall == pytest.approx(2 / 3) and tighter.threshold == 3.0
    assert tighter.false_alarm_events == 1
