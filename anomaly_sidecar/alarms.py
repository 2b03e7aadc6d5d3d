"""Turn calibrated scores into alarms a person is paged for: one alarm per episode, not one per
point, and ever stronger evidence for a series that keeps alarming.

A calibrated score (calibration.py) is >= 1 at every point of an anomaly that lasts. Paging on
each of those points, or scoring each as a new detection, repeats the same news; a series that
flaps pages all day. So, per series:

- after an alarm, the `quiet` period follows: scores that would alarm again are capped just
  below 1 (the deviation stays visible on a dashboard, but it is not a new alarm);
- each alarm within the last `rearm` period raises the level a score must reach by `rearm_step`
  (the published score is the calibrated score divided by that level, so >= 1 still means
  "alarm"), up to MAX_LEVEL;
- a point a model flags as a must-alarm (a value beyond everything seen: see the composite
  model's new-extreme test) alarms at any level, once the quiet period is over.

With `quiet: 0` and `rearm: 0` the score is the calibrated score itself, > 1 for as long as the
value is outside the band ("band" semantics, suited to a `for: 5m` alert rule); otherwise it is
an "alarm" score (> 1 at single points, suited to an alert that looks back over a window).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_LEVEL = 4.0
RECENT_ALARMS = 8
"""Alarm times kept per series for the rearm count: enough to reach MAX_LEVEL at any step."""
BELOW_ONE = float(np.nextafter(1.0, 0.0))


@dataclass(frozen=True)
class AlarmSettings:
    quiet_seconds: float = 0.0
    rearm_seconds: float = 0.0
    rearm_step: float = 0.0

    @property
    def score_kind(self) -> str:
        """"alarm" when scores mark single points, "band" when they stay > 1 while it lasts."""
        return "alarm" if self.quiet_seconds > 0 or self.rearm_seconds > 0 else "band"


def new_state(n_series: int) -> dict[str, np.ndarray]:
    return {"last_alarm": np.full(n_series, -np.inf),
            "recent_alarms": np.full((n_series, RECENT_ALARMS), -np.inf)}


def alarm_level(state: dict[str, np.ndarray], settings: AlarmSettings, time: float) -> np.ndarray:
    """The level a calibrated score must reach at `time` for each series (1 = no recent
    alarms)."""
    if settings.rearm_seconds <= 0 or settings.rearm_step <= 0:
        return np.ones(len(state["last_alarm"]))
    recent = (state["recent_alarms"] >= time - settings.rearm_seconds).sum(axis=1)
    return np.minimum(1.0 + settings.rearm_step * recent, MAX_LEVEL)


def gate(state: dict[str, np.ndarray], settings: AlarmSettings, time: float,
         calibrated: np.ndarray, must_alarm: np.ndarray | None = None
         ) -> tuple[np.ndarray, np.ndarray]:
    """One column: the published scores (NaN where `calibrated` is NaN and nothing must
    alarm) and the alarm level in force for each series."""
    level = alarm_level(state, settings, time)
    score = calibrated / level
    if settings.score_kind == "band":
        if must_alarm is not None:
            score = np.where(must_alarm, np.fmax(score, 1.0), score)
        return score, level
    forced = np.zeros(len(score), dtype=bool) if must_alarm is None else must_alarm
    with np.errstate(invalid="ignore"):
        candidate = forced | (score >= 1.0)
    quiet = time - state["last_alarm"] < settings.quiet_seconds
    fired = candidate & ~quiet
    score = np.where(forced & fired, np.fmax(score, 1.0), score)
    with np.errstate(invalid="ignore"):
        score = np.where(quiet & (score >= 1.0), BELOW_ONE, score)
    rows = np.flatnonzero(fired)
    if rows.size:
        state["last_alarm"][rows] = time
        recent = state["recent_alarms"][rows]
        oldest = np.argmin(recent, axis=1)
        recent[np.arange(rows.size), oldest] = time
        state["recent_alarms"][rows] = recent
    return score, level
