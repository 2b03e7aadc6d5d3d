"""`type: likelihood`: an anomaly-likelihood detector (the recommended default).

Why not alarm on the raw forecast error: series differ wildly in noise, and a fixed band of
"k sigma" either floods a noisy series with alarms or sleeps through a quiet one. Following
Numenta's anomaly likelihood (Ahmad et al., Neurocomputing 2017), each point gets a raw error in
units of the range seen so far, the errors are averaged over a few recent points, and that
average is compared with its own distribution over a long history of the same series. The tail
probability p is put on a log scale, u = log(p) / log(1e-10), so one fixed threshold means the
same rarity on every series; anomaly_score = u / alarm_level, so > 1 means "rarer than the alarm
level" as the output contract requires.

The raw error is the novelty of the latest `width` points: the RMS distance from that window to
the nearest earlier, non-overlapping window within `novelty_lookback` points (a nearest-neighbour
"have we seen this shape before?", which is what a good forecaster's error measures on
repetitive infrastructure series, without training). Width 0 stands for the error of the
last-value forecast.

Novelty is weak on a series that settles at a new level inside its usual range with the same
texture: a shifted window of noise is only a little farther from its nearest match than usual,
and once the new level has lasted two widths its windows match each other. So a second raw
error runs beside it: the level shift, the distance from the mean of the latest `shift_recent`
points to the mean of the `shift_baseline` points before them. It gets its own likelihood (a
short `shift_error_window`, since the means are already smooth), and a point scores the larger
u of the two: each detector judges its error against its own history, so neither's noise level
dilutes the other.

Errors are in units of the running [min, max] over the last `range_points` of the context
(17 days at 5-minute steps): a range remembered that long neither calls a return to a level of
last week "new" nor shrinks, once a wide swing leaves the context, until ordinary noise looks
large. On top of the likelihood:

- a value leaving that running [min, max] by more than `spatial_tolerance` of the range scores
  the maximum (u = 1): a new extreme is an anomaly however noisy the series was;
- after an alarm the detector stays quiet for `quiet_points` points, since an anomaly raises
  the error for a while and every further alarm would be a repeat;
- each alarm of the last `rearm_points` points raises the alarm level by `rearm_step` times
  `alarm_level` (up to u = 1), so a series that keeps alarming needs ever stronger evidence: a
  flapping series pages once, not all day. Spatial anomalies are exempt: a new extreme always
  alarms.

Everything is computed causally inside `predict` from the context it is given (the score of
column j uses only columns <= j, its forecast only columns < j), so the detector learns online
from the first rows, needs no fit, and the daemon, backtest and benchmark run the very same
arithmetic. yhat is the recent level, the mean of the last `error_window` points; the band drawn
around it is where a steady error of that size would reach the alarm level (an approximation for
display; the score is the model's own). yhat is not the last value because the published score
is 0 wherever y equals yhat exactly (scoring.score_forecast): a last-value yhat would silence the
detector on every repeated value, such as a series going flat or counts that repeat, which is
just where a flat-line anomaly starts.
"""

from __future__ import annotations

import bisect
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.special import erfc, ndtri

from anomaly_sidecar.models.base import Forecast, Model, ModelParamError, ModelParams, SeriesBatch

_TINY = 1e-12
_LOG_FLOOR = 1e-10  # u = log(p) / log(1e-10): p at or below 1e-10 scores u = 1
_STATE_FILE = "likelihood.json"
_NOVELTY_BLOCK = 256


@dataclass(frozen=True)
class LikelihoodParams(ModelParams):
    """Defaults were chosen on the NAB corpus (see README); they are what a user gets."""

    history: int = 1000
    """Points of error history the tail probability is measured against."""
    error_window: int = 10
    """Recent errors averaged before comparing with the history (Numenta: 10)."""
    min_history: int = 150
    """Points of history needed before the detector scores anything."""
    alarm_level: float = 0.3
    """u at which anomaly_score reaches 1; 0.3 is a tail probability of 1e-3."""
    spatial_tolerance: float = 0.05
    """Fraction of the running range a value may exceed it by before it is a spatial anomaly."""
    quiet_points: int = 30
    """Points after an alarm during which further alarms are suppressed."""
    rearm_points: int = 250
    """Points over which earlier alarms raise the alarm level."""
    rearm_step: float = 0.5
    """Fraction of alarm_level added per alarm in the last rearm_points (0: a fixed level)."""
    min_error_mean: float = 0.03
    """Lower bound of the error distribution's mean (Numenta's), so near-perfect forecasts do
    not turn every tiny wiggle into an alarm."""
    min_error_std: float = 0.0173
    """Lower bound of its standard deviation (Numenta's variance floor 0.0003)."""
    novelty_widths: tuple[int, ...] = (20,)
    """Window lengths whose novelty is scored (the maximum score counts); 0 = last-value
    forecast error."""
    novelty_lookback: int = 1000
    """How far back the nearest earlier window is searched."""
    shift_recent: int = 30
    """Latest points whose mean the level-shift detector compares; 0 turns it off."""
    shift_baseline: int = 600
    """Points before those whose mean is the level they are compared with."""
    shift_error_window: int = 3
    """Recent level-shift errors averaged before their likelihood (the means are smooth)."""
    range_points: int = 5000
    """Points of context the running [min, max] is taken over (the error scale and the spatial
    anomaly test); also the context the daemon reads, as it is the longest look back."""

    def validate(self) -> None:
        for key in ("history", "error_window", "min_history", "shift_baseline",
                    "shift_error_window", "range_points"):
            if getattr(self, key) < 1:
                raise ModelParamError(key, "must be at least 1")
        for key in ("spatial_tolerance", "quiet_points", "rearm_points", "rearm_step",
                    "min_error_mean"):
            if getattr(self, key) < 0:
                raise ModelParamError(key, "must be >= 0")
        if self.min_history > self.history:
            raise ModelParamError("min_history", "must not exceed history")
        if not 0.0 < self.alarm_level <= 1.0:
            raise ModelParamError("alarm_level", "must be in (0, 1]")
        if not self.novelty_widths or min(self.novelty_widths) < 0:
            raise ModelParamError("novelty_widths", "must be a non-empty list of widths >= 0 "
                                  "(0 = the last-value forecast error)")
        if self.novelty_lookback <= 2 * max(self.novelty_widths):
            raise ModelParamError("novelty_lookback", "must exceed twice the largest width")
        if self.shift_recent < 0:
            raise ModelParamError("shift_recent", "must be >= 0 (0 = no level-shift detector)")
        if self.min_error_std <= 0:
            raise ModelParamError("min_error_std", "must be > 0")


def _window_sums(values: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Sum and count of the finite values in the trailing `window` columns ending at each
    column (inclusive), per row. NaN contributes nothing."""
    finite = np.isfinite(values)
    padded = np.zeros((values.shape[0], values.shape[1] + 1))
    counts = np.zeros_like(padded)
    padded[:, 1:] = np.cumsum(np.where(finite, values, 0.0), axis=1)
    counts[:, 1:] = np.cumsum(finite, axis=1)
    end = np.arange(1, values.shape[1] + 1)
    start = np.maximum(end - window, 0)
    return padded[:, end] - padded[:, start], counts[:, end] - counts[:, start]


def _window_means(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the finite values in the trailing `window` columns ending at each column
    (inclusive), per row; NaN where there is none."""
    total, count = _window_sums(values, window)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _previous_finite(values: np.ndarray) -> np.ndarray:
    """For each column, the last finite value strictly before it (NaN if none)."""
    n_series, n_points = values.shape
    columns = np.where(np.isfinite(values), np.arange(n_points), -1)
    last = np.maximum.accumulate(columns, axis=1)
    previous = np.full_like(values, np.nan)
    previous[:, 1:] = np.where(last[:, :-1] >= 0,
                               values[np.arange(n_series)[:, None], np.maximum(last[:, :-1], 0)],
                               np.nan)
    return previous


def _recent_level(values: np.ndarray, window: int, fallback: np.ndarray) -> np.ndarray:
    """Mean of the finite values among the `window` columns strictly before each column;
    `fallback` where there is none (after a gap longer than the window)."""
    level = np.full_like(values, np.nan)
    level[:, 1:] = _window_means(values, window)[:, :-1]
    return np.where(np.isfinite(level), level, fallback)


def _running_extremes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Min and max of the finite values strictly before each column (NaN if none)."""
    with np.errstate(invalid="ignore"):
        low = np.fmin.accumulate(np.where(np.isfinite(values), values, np.nan), axis=1)
        high = np.fmax.accumulate(np.where(np.isfinite(values), values, np.nan), axis=1)
    shift = np.full((values.shape[0], 1), np.nan)
    return np.hstack([shift, low[:, :-1]]), np.hstack([shift, high[:, :-1]])


def _novelty(values: np.ndarray, width: int, lookback: int) -> np.ndarray:
    """RMS distance from the window of `width` points ending at each column to the nearest
    earlier, non-overlapping window at most `lookback` columns back (NaN if none). Computed in
    blocks of windows against their band of candidates, so the cost is O(n * lookback); the
    band's shape is the same for every block, so it is built once, as 0 (allowed) or inf, and
    added, and a candidate with a gap gets an infinite norm."""
    novelty = np.full_like(values, np.nan)
    n_windows = values.shape[1] - width + 1
    if n_windows <= width:
        return novelty
    # band[i, m]: may query block_start + i be matched with candidate block_start - lookback + m?
    apart = lookback + np.arange(_NOVELTY_BLOCK)[:, None] - np.arange(lookback + _NOVELTY_BLOCK)
    band = np.where((apart >= width) & (apart <= lookback), 0.0, np.inf)
    for row in range(values.shape[0]):
        centred = values[row] - np.nanmedian(values[row])
        windows = np.lib.stride_tricks.sliding_window_view(centred, width)
        valid = np.isfinite(windows).all(axis=1)
        windows = np.where(valid[:, None], windows, 0.0)
        norms = (windows * windows).sum(axis=1)
        candidate_norms = np.where(valid, norms, np.inf)
        nearest = np.full(n_windows, np.inf)
        for start in range(width, n_windows, _NOVELTY_BLOCK):
            stop = min(n_windows, start + _NOVELTY_BLOCK)
            first, last = max(0, start - lookback), stop - width
            distance = norms[start:stop, None] + candidate_norms[None, first:last]
            distance += (-2.0 * windows[start:stop]) @ windows[first:last].T
            shift = first - start + lookback
            distance += band[:stop - start, shift:shift + last - first]
            nearest[start:stop] = distance.min(axis=1)
        nearest = np.sqrt(np.maximum(nearest, 0.0) / width)
        novelty[row, width - 1:] = np.where(valid & np.isfinite(nearest), nearest, np.nan)
    return novelty


def _alarm_level(params: LikelihoodParams, recent_alarms: np.ndarray | int) -> np.ndarray:
    """The u an alarm needs after `recent_alarms` alarms within the last rearm_points."""
    return np.minimum(params.alarm_level * (1.0 + params.rearm_step * recent_alarms), 1.0)


def _gate_alarms(log_score: np.ndarray, spatial: np.ndarray, params: LikelihoodParams
                 ) -> np.ndarray:
    """anomaly_score = u / (the alarm level in force at each column), spatial anomalies
    1 / alarm_level. An alarm (score >= 1) silences the next quiet_points columns and raises the
    level for rearm_points columns. Which alarms fire is decided by walking only the columns that
    could alarm, so the Python loop runs per candidate alarm, not per point."""
    n_columns = log_score.shape[1]
    columns = np.arange(n_columns)
    score = np.empty_like(log_score)
    for row in range(log_score.shape[0]):
        u, extreme = log_score[row], spatial[row]
        fired: list[int] = []
        for column in np.flatnonzero(extreme | (u >= params.alarm_level)):
            if fired and column - fired[-1] <= params.quiet_points:
                continue
            recent = len(fired) - bisect.bisect_left(fired, column - params.rearm_points)
            if extreme[column] or u[column] >= _alarm_level(params, recent):
                fired.append(column)
        # alarms before each column (cumulative), then those within its rearm window
        before = np.zeros(n_columns + 1)
        before[np.asarray(fired, dtype=int) + 1] = 1.0
        before = np.cumsum(before)
        recent = before[columns] - before[np.maximum(columns - params.rearm_points, 0)]
        score[row] = np.where(extreme, 1.0 / params.alarm_level,
                              u / _alarm_level(params, recent))
        silenced = np.zeros(n_columns + 1)
        for column in fired:
            silenced[column + 1] += 1.0
            silenced[min(column + params.quiet_points + 1, n_columns)] -= 1.0
        score[row] = np.where((np.cumsum(silenced)[:-1] > 0) & (score[row] >= 1.0), 0.0,
                              score[row])
    return score


def _level_shift(values: np.ndarray, recent: int, baseline: int) -> np.ndarray:
    """|mean of the `recent` points ending at each column - mean of the `baseline` points
    before them| (NaN until both spans hold a finite value)."""
    recent_mean = _window_means(values, recent)
    base_mean = _window_means(values, baseline)
    shift = np.full_like(values, np.nan)
    shift[:, recent:] = np.abs(recent_mean[:, recent:] - base_mean[:, :-recent])
    return shift


def _likelihood_score(error: np.ndarray, params: LikelihoodParams, error_window: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """u = log(p) / log(1e-10) for the tail probability p of the mean of the last
    `error_window` errors under a normal fitted to the preceding `history` such means; also
    that mean and std."""
    recent = _window_means(error, error_window)
    # the history excludes the current point: its distribution is what came before
    history = np.full_like(recent, np.nan)
    history[:, 1:] = recent[:, :-1]
    hist_sum, hist_count = _window_sums(history, params.history)
    hist_sq, _ = _window_sums(history * history, params.history)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = hist_sum / np.maximum(hist_count, 1)
        variance = np.maximum(hist_sq / np.maximum(hist_count, 1) - mean * mean, 0.0)
    mean = np.maximum(mean, params.min_error_mean)
    std = np.maximum(np.sqrt(variance), params.min_error_std)
    z_score = np.maximum((recent - mean) / std, 0.0)
    tail = 0.5 * erfc(z_score / math.sqrt(2.0))
    log_score = np.clip(np.log(tail + _LOG_FLOOR) / math.log(_LOG_FLOOR), 0.0, 1.0)
    return np.where(hist_count >= params.min_history, log_score, 0.0), mean, std


class LikelihoodModel(Model):
    """Numenta-style anomaly likelihood over window novelty; see the module docstring."""

    type_name = "likelihood"
    score_kind = "alarm"
    Params = LikelihoodParams
    params: LikelihoodParams

    @property
    def context_points(self) -> int:
        params = self.params
        return max(params.range_points, self._error_points,
                   params.history + params.shift_error_window + params.shift_recent
                   + params.shift_baseline)

    @property
    def _error_points(self) -> int:
        """Columns before the first target that the novelty likelihood of the targets looks
        at: its history, its error window and the novelty's own look back."""
        params = self.params
        return (params.history + params.error_window + params.novelty_lookback
                + max(params.novelty_widths))

    @property
    def fit_points(self) -> int:
        """fit learns nothing, so the daemon need not read any history for it."""
        return 1

    def fit(self, batch: SeriesBatch) -> None:
        """Nothing to learn ahead of time: the error distribution is re-estimated causally at
        every point from the context, which is what lets it adapt to level shifts at once."""

    def predict(self, batch: SeriesBatch, n_targets: int) -> Forecast:
        params = self.params
        values = np.where(np.isfinite(batch.values), batch.values, np.nan).astype(float)
        last = _previous_finite(values)
        yhat = _recent_level(values, params.error_window, last)
        low, high = _running_extremes(values)
        value_range = high - low
        scale = np.maximum(value_range, _TINY)
        scored = np.isfinite(values) & np.isfinite(last)

        def likelihood(deviation: np.ndarray, error_window: int
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            with np.errstate(invalid="ignore", divide="ignore"):
                error = np.minimum(deviation / scale, 1.0)
            return _likelihood_score(np.where(scored, error, np.nan), params, error_window)

        # novelty costs O(columns * lookback): compute it only over the columns the targets'
        # likelihood reads, not over the whole (range_points long) context
        first = max(0, values.shape[1] - n_targets - self._error_points)
        log_score, mean, std = None, None, None
        for width in params.novelty_widths:
            deviation = np.full_like(values, np.nan)
            deviation[:, first:] = (_novelty(values[:, first:], width, params.novelty_lookback)
                                    if width > 0 else np.abs(values - last)[:, first:])
            width_score, width_mean, width_std = likelihood(deviation, params.error_window)
            if log_score is None:
                log_score, mean, std = width_score, width_mean, width_std
            else:
                log_score = np.fmax(log_score, width_score)
        if params.shift_recent > 0:
            shift = _level_shift(values, params.shift_recent, params.shift_baseline)
            log_score = np.fmax(log_score, likelihood(shift, params.shift_error_window)[0])
        log_score = np.where(scored, log_score, np.nan)
        tolerance = params.spatial_tolerance * value_range
        spatial = (value_range > 0) & ((values > high + tolerance) | (values < low - tolerance))
        log_score = np.where(spatial, 1.0, log_score)
        score = _gate_alarms(log_score, spatial, params)
        # Band: the error at which the score would reach 1 with a steady recent error level,
        # i.e. mean + z(alarm) * std in range units; an approximation for display.
        z_alarm = -float(ndtri(_LOG_FLOOR ** params.alarm_level))
        half_width = (mean + z_alarm * std) * scale
        targets = slice(values.shape[1] - n_targets, values.shape[1])
        return Forecast(yhat=yhat[:, targets], yhat_lower=(yhat - half_width)[:, targets],
                        yhat_upper=(yhat + half_width)[:, targets],
                        score_hint=score[:, targets])

    def save(self, directory: Path) -> None:
        (directory / _STATE_FILE).write_text(json.dumps(asdict(self.params)))

    @classmethod
    def load(cls, directory: Path, params: ModelParams) -> LikelihoodModel:
        json.loads((directory / _STATE_FILE).read_text())  # a corrupt state raises here
        return cls(params)


MODEL_CLASS = LikelihoodModel
