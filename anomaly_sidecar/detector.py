"""A model, the calibration layer and the alarm gate, with the per-series state of all three:
the one streaming path that the daemon, the backtest and the accuracy benchmark all run.

Each update takes the points that are new for each series (columns after the newest one
already scored for it), lets the model forecast them (Model.advance), turns every error
channel into a calibrated score (calibration.py: >= 1 means "as rare as the sensitivity
allows"), takes the highest channel, applies detection_direction and min_dev_from_expected,
and gates alarms (alarms.py). State is kept per series between updates, so a cycle costs the
new points only, and scoring a series in one pass or in many cycles gives the same scores.

Late samples: a series is advanced up to its newest finite sample, so a column whose sample has
not arrived yet is left for the next update; a sample that arrives after a later sample of its
series was scored is skipped (it cannot be scored causally any more).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from anomaly_sidecar import alarms, calibration
from anomaly_sidecar.durations import REFERENCE_STEP_SECONDS, span_seconds
from anomaly_sidecar.models.base import (
    Model,
    Residuals,
    SeriesBatch,
    SeriesKey,
    StreamState,
    model_class,
)

if TYPE_CHECKING:
    from anomaly_sidecar.config import ModelConfig

SECONDS_PER_DAY = 86400.0
MIN_ERRORS = 30
"""Errors a series must have seen before it is scored, whatever its warm-up duration: fewer
cannot place a tail."""
DEVIATION = "deviation"
_TINY = 1e-12
_STATE_FILE = "series.npz"
_KEYS_FILE = "series.json"


@dataclass(frozen=True)
class ScoringConfig:
    """The keys every model section shares: how errors become scores and scores alarms. The
    defaults were chosen by the protocol in docs/accuracy.md."""

    calibration: Literal["calibrated", "raw"] = "calibrated"
    """"raw": the model's own band (e.g. 3 standard deviations) instead of the calibration."""
    false_alarms_per_day: float = 1.0
    """The sensitivity: how many alarms a day a series without anomalies should raise at most
    (per 288 points at steps coarser than 5 minutes), before the quiet and rearm periods
    thin them out further."""
    memory_seconds: float = 3 * SECONDS_PER_DAY
    """Half-life of an error's weight in the calibration."""
    warm_up_seconds: float = 3600.0
    """How long a new series is watched before it is scored."""
    quiet_seconds: float = 3600.0
    """After an alarm, how long further alarms of the series are held back (0: band
    semantics, see alarms.py)."""
    rearm_seconds: float = 75000.0
    """How far back earlier alarms raise the level a new one must reach (20h50m: 250 points at
    5 minutes, the previous default's re-arm)."""
    rearm_step: float = 0.5
    """How much each of those alarms raises the level (0.5: by half)."""
    detection_direction: Literal["both", "above", "below"] = "both"
    min_dev_from_expected: float = 0.0

    @property
    def score_kind(self) -> str:
        """"alarm" when scores mark single points, "band" when they stay > 1 while it lasts."""
        return self.alarm_settings(REFERENCE_STEP_SECONDS).score_kind

    def alarm_settings(self, step_seconds: float) -> alarms.AlarmSettings:
        """The quiet and rearm periods on a series sampled every step_seconds."""
        return alarms.AlarmSettings(span_seconds(self.quiet_seconds, step_seconds),
                                    span_seconds(self.rearm_seconds, step_seconds),
                                    self.rearm_step)

    def alpha(self, step_seconds: float, channels: int) -> float:
        """The per-point exceedance probability of each channel."""
        points_per_day = SECONDS_PER_DAY / min(step_seconds, REFERENCE_STEP_SECONDS)
        return min(0.5, self.false_alarms_per_day / points_per_day / channels)


@dataclass(frozen=True)
class Scored:
    """Outputs for the columns of an update, each (n_series, n_columns); NaN where a column
    was not scored for a series (already scored, no sample, or warming up)."""

    yhat: np.ndarray
    yhat_lower: np.ndarray
    yhat_upper: np.ndarray
    anomaly_score: np.ndarray
    scored: np.ndarray
    """Columns processed for each series in this update (bool)."""


class Detector:
    """One (model, query): the model, its scoring settings and every known series' state."""

    def __init__(self, model: Model, scoring: ScoringConfig, channels: Sequence[str]) -> None:
        self.model = model
        self.scoring = scoring
        self.channels = (DEVIATION, *channels)
        self.keys: list[SeriesKey] = []
        self._row_of: dict[SeriesKey, int] = {}
        self.state: dict[str, StreamState] = self._new_state(0)

    @property
    def score_kind(self) -> str:
        return self.scoring.score_kind

    @property
    def last_times(self) -> np.ndarray:
        """Per known series, the timestamp of the newest column scored (NaN: none yet)."""
        return self.state["series"]["last_time"]

    def _new_state(self, n_series: int) -> dict[str, StreamState]:
        state = {"model": self.model.new_state(n_series),
                 "alarms": alarms.new_state(n_series),
                 "series": {"last_time": np.full(n_series, np.nan)}}
        for channel in self.channels:
            state[f"calibration.{channel}"] = calibration.new_state(n_series)
        return state

    def knows(self, key: SeriesKey) -> bool:
        """Whether the detector holds state for this series."""
        return key in self._row_of

    def rows(self, keys: Sequence[SeriesKey]) -> np.ndarray:
        """The state rows of keys, adding fresh state for keys never seen."""
        new = [key for key in dict.fromkeys(keys) if key not in self._row_of]
        if new:
            fresh = self._new_state(len(new))
            for part, arrays in self.state.items():
                for name, array in arrays.items():
                    arrays[name] = np.concatenate([array, fresh[part][name]])
            for key in new:
                self._row_of[key] = len(self.keys)
                self.keys.append(key)
        return np.array([self._row_of[key] for key in keys], dtype=np.intp)

    def forget(self, keys: Sequence[SeriesKey]) -> None:
        """Drop the state of series (vanished ones, or ones to be rebuilt from history)."""
        drop = {self._row_of[key] for key in keys if key in self._row_of}
        if not drop:
            return
        keep = np.array([row for row in range(len(self.keys)) if row not in drop], dtype=np.intp)
        self._take(keep)

    def forget_unseen_since(self, moment: float) -> int:
        """Drop series whose newest sample is older than `moment`; returns how many."""
        keep = np.flatnonzero(~(self.state["series"]["last_time"] < moment))
        dropped = len(self.keys) - len(keep)
        if dropped:
            self._take(keep)
        return dropped

    def _take(self, rows: np.ndarray) -> None:
        for arrays in self.state.values():
            for name, array in arrays.items():
                arrays[name] = array[rows]
        self.keys = [self.keys[row] for row in rows]
        self._row_of = {key: row for row, key in enumerate(self.keys)}

    def update(self, batch: SeriesBatch) -> Scored:
        """Score the columns of batch that are new for each of its series (see the module
        docstring) and advance their state."""
        n_series, n_columns = batch.values.shape
        shape = (n_series, n_columns)
        outputs = {name: np.full(shape, np.nan) for name in
                   ("yhat", "yhat_lower", "yhat_upper", "anomaly_score")}
        scored = np.zeros(shape, dtype=bool)
        if n_series == 0 or n_columns == 0:
            return Scored(**outputs, scored=scored)
        values = np.where(np.isfinite(batch.values), batch.values, np.nan).astype(float)
        rows = self.rows(batch.keys)
        forecastable = np.array([self.model.can_forecast(key) for key in batch.keys])
        last_time = self.state["series"]["last_time"][rows]
        start = np.searchsorted(batch.timestamps, np.nan_to_num(last_time, nan=-np.inf),
                                side="right")
        finite = np.isfinite(values)
        stop = np.where(finite.any(axis=1), n_columns - np.argmax(finite[:, ::-1], axis=1), 0)
        runnable = forecastable & (start < stop)
        spans = np.stack([start, stop], axis=1)
        for first, end in np.unique(spans[runnable], axis=0):
            group = np.flatnonzero(runnable & (start == first) & (stop == end))
            result = self._advance(rows[group], [batch.keys[row] for row in group],
                                   batch.timestamps[first:end], values[group, first:end])
            for name, array in result.items():
                outputs[name][group, first:end] = array
            scored[group, first:end] = True
            newest = float(batch.timestamps[end - 1])
            self.state["series"]["last_time"][rows[group]] = newest
        return Scored(**outputs, scored=scored)

    def _advance(self, rows: np.ndarray, keys: list[SeriesKey], timestamps: np.ndarray,
                 values: np.ndarray) -> dict[str, np.ndarray]:
        """Advance the given state rows through the columns (all of them new for each)."""
        everything = len(rows) == len(self.keys) and np.array_equal(rows, np.arange(len(rows)))
        state = (self.state if everything else
                 {part: {name: array[rows] for name, array in arrays.items()}
                  for part, arrays in self.state.items()})
        residuals = self.model.advance(state["model"], keys, timestamps, values)
        result = self._score(state, residuals, timestamps, values)
        if not everything:
            for part, arrays in state.items():
                for name, array in arrays.items():
                    self.state[part][name][rows] = array
        return result

    def _calibration_settings(self) -> calibration.CalibrationSettings:
        scoring, step = self.scoring, self.model.step_seconds
        return calibration.CalibrationSettings(
            alpha=scoring.alpha(step, len(self.channels)),
            memory_seconds=span_seconds(scoring.memory_seconds, step),
            warm_up_seconds=span_seconds(scoring.warm_up_seconds, step),
            min_errors=MIN_ERRORS,
            outlier_hold_seconds=span_seconds(calibration.OUTLIER_HOLD_SECONDS, step))

    def _score(self, state: dict[str, StreamState], residuals: Residuals,
               timestamps: np.ndarray, values: np.ndarray) -> dict[str, np.ndarray]:
        """Calibrate, combine and gate column by column (vectorised over series)."""
        scoring = self.scoring
        unit = np.maximum(np.abs(residuals.unit), _TINY)
        deviation = values - residuals.yhat
        with np.errstate(invalid="ignore", divide="ignore"):
            errors = {DEVIATION: np.abs(deviation) / unit, **residuals.extra_errors}
            suppressed = _suppressed(deviation, scoring.detection_direction,
                                     scoring.min_dev_from_expected)
            if scoring.calibration == "raw":
                raw_score = np.abs(deviation) / np.maximum(residuals.raw_half_width, _TINY)
        score = np.full(values.shape, np.nan)
        half_width = np.full(values.shape, np.nan)
        gate_settings = scoring.alarm_settings(self.model.step_seconds)
        settings = self._calibration_settings()
        refresh_seconds = span_seconds(calibration.REFRESH_SECONDS, self.model.step_seconds)
        for column, moment in enumerate(timestamps.astype(float)):
            channel_scores = {
                # raw: the calibration still runs on the deviation, for its warm-up rule alone
                channel: calibration.score(state[f"calibration.{channel}"], settings, moment,
                                           errors[channel][:, column], refresh_seconds)
                for channel in (self.channels if scoring.calibration == "calibrated"
                                else (DEVIATION,))}
            warm_scores, limits = channel_scores[DEVIATION]
            if scoring.calibration == "raw":
                warm = np.isfinite(warm_scores)
                combined = np.where(warm, raw_score[:, column], np.nan)
                unit_width = np.where(warm, residuals.raw_half_width[:, column], np.nan)
            else:
                combined = np.fmax.reduce([scores for scores, _ in channel_scores.values()])
                unit_width = limits * unit[:, column]
            combined = np.where(suppressed[:, column] & np.isfinite(combined), 0.0, combined)
            # a must-alarm point of a series still warming up is not an alarm either
            forced = (None if residuals.must_alarm is None else
                      residuals.must_alarm[:, column] & ~suppressed[:, column]
                      & np.isfinite(combined))
            gated, level = alarms.gate(state["alarms"], gate_settings, moment, combined, forced)
            score[:, column] = np.where(np.isfinite(values[:, column]), gated, np.nan)
            half_width[:, column] = unit_width * level
        yhat = np.where(np.isfinite(score), residuals.yhat, np.nan)
        return {"yhat": yhat, "yhat_lower": yhat - half_width, "yhat_upper": yhat + half_width,
                "anomaly_score": score}

    # -- persistence ---------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        """The model's learned part and every series' state (directory exists, is empty)."""
        self.model.save(directory)
        arrays = {f"{part}/{name}": array for part, state in self.state.items()
                  for name, array in state.items()}
        with (directory / _STATE_FILE).open("wb") as handle:
            np.savez(handle, **arrays)
        (directory / _KEYS_FILE).write_text(json.dumps([list(map(list, key))
                                                         for key in self.keys]))

    def load(self, directory: Path) -> None:
        """Restore what save wrote; any inconsistency raises (the caller rebuilds)."""
        self.model.load(directory)
        keys = [tuple(tuple(pair) for pair in key)
                for key in json.loads((directory / _KEYS_FILE).read_text())]
        fresh = self._new_state(len(keys))
        with np.load(directory / _STATE_FILE, allow_pickle=False) as stored:
            for part, arrays in fresh.items():
                for name, array in arrays.items():
                    saved = stored[f"{part}/{name}"]
                    if saved.shape != array.shape or saved.dtype != array.dtype:
                        raise ValueError(f"state {part}/{name} has shape {saved.shape}, "
                                         f"expected {array.shape}")
                    arrays[name] = saved
        self.state = fresh
        self.keys = keys
        self._row_of = {key: row for row, key in enumerate(keys)}


def build_detector(model_config: ModelConfig, step_seconds: float) -> Detector:
    """A fresh detector (unfitted model, no series) for one model section and query step."""
    model = model_class(model_config.type)(model_config.params, step_seconds)
    return Detector(model, model_config.scoring, model.extra_channels)


def _suppressed(deviation: np.ndarray, direction: str, min_dev_from_expected: float
                ) -> np.ndarray:
    """Where the rules force the score to 0: the side detection_direction ignores, and
    deviations smaller than min_dev_from_expected."""
    above = deviation >= 0
    ignored = np.zeros(np.shape(deviation), dtype=bool)
    if direction == "above":
        ignored = ~above & np.isfinite(deviation)
    elif direction == "below":
        ignored = above
    if min_dev_from_expected > 0:
        ignored = ignored | (np.abs(deviation) < min_dev_from_expected)
    return ignored

