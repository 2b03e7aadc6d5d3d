"""The one calibration layer every model's errors go through, so that anomaly_score >= 1 means
the same rarity whatever the model and whatever the series.

Why: a forecaster's raw error is in the series' own units and its tail differs from series to
series (a noisy CPU series, a near-constant queue length, a spiky request count). A fixed
"3 sigma" band floods one and sleeps through another, and means a different false-alarm rate
for every model. So each error channel of each series keeps an online model of its own recent
errors and is scored against the quantile the model's sensitivity asks for:

    alpha = expected false alarms per day x (points per day)^-1, per point
    score = error / z_alpha, where a recent error exceeds z_alpha with probability alpha

A score of 1 is "as rare as the sensitivity allows", for every model.

Estimator: peaks over threshold, as SPOT does (Siffer et al., KDD 2017). The errors go into a
histogram over fixed log-spaced bins whose weights decay with age (half-life `memory`), so the
state is a few hundred numbers a series and old behaviour fades at a steady pace. alpha is
usually far beyond what a histogram resolves (one false alarm a day at a 15 s step is one point
in 5,760), so z_alpha comes from a generalised Pareto tail fitted by the method of moments to
the errors above the (1 - p) quantile, p = 2% (wider while few errors are known), and
extrapolated to alpha. A histogram quantile alone could never be rarer than the largest error
it holds: at a 5-minute step that is 1 in 864 points over three days, whatever alpha is asked.

The threshold is refreshed when a series' time crosses a 5-minute boundary of the epoch, from
the errors seen before that point: the score does not depend on how points were grouped into
inference cycles, and the cost is O(bins) per series per 5 minutes. Weights are stored relative
to a per-series reference time (new errors weigh more, rather than old ones being multiplied
down at every point), rebased before they could overflow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BINS_PER_DECADE = 10
LOG10_LOW, LOG10_HIGH = -15.0, 18.0
"""Errors below 1e-15 count as the lowest bin, above 1e18 as the highest: beyond any unit a
Prometheus series carries (bytes, seconds, ratios)."""
N_BINS = round((LOG10_HIGH - LOG10_LOW) * BINS_PER_DECADE)
_LOG_EDGES = np.linspace(LOG10_LOW, LOG10_HIGH, N_BINS + 1) * math.log(10.0)
_EDGES = np.exp(_LOG_EDGES)
TAIL_FRACTION = 0.02
MIN_TAIL_ERRORS = 10.0
"""The tail fitted is the top TAIL_FRACTION of recent errors, widened to hold at least this
many while a series is young."""
OUTLIER_FACTOR = 2.0
"""Errors above this many times the threshold do not join the error model for a while (see
score)."""
OUTLIER_HOLD_SECONDS = 3600.0
SMALL_TAIL_ERRORS = 50.0
"""With fewer errors in the fitted tail, its shape is not allowed below the exponential's:
a handful of excesses too often looks bounded, and a bounded tail puts the threshold at the
largest error seen so far."""
REFRESH_SECONDS = 3600.0
YOUNG_ERRORS = 200
YOUNG_REFRESHES = 12
"""From its warm-up until it has YOUNG_ERRORS errors a series' threshold is refreshed
YOUNG_REFRESHES times as often: a young tail estimate moves fast."""
_MAX_LOG_WEIGHT = 50.0
_MIN_SHAPE, _MAX_SHAPE = -0.5, 0.45


@dataclass(frozen=True)
class CalibrationSettings:
    """How one model's errors are calibrated."""

    alpha: float
    """Probability per point that a normal error scores >= 1 (per channel)."""
    memory_seconds: float
    """Half-life of an error's weight in the error model."""
    warm_up_seconds: float
    """A series is scored only once its first error is this old ..."""
    min_errors: int
    """... and this many errors are known."""
    outlier_hold_seconds: float = OUTLIER_HOLD_SECONDS
    """How long errors beyond OUTLIER_FACTOR x the threshold are kept out of the model."""


def new_state(n_series: int) -> dict[str, np.ndarray]:
    """Empty per-series calibration state: rows are series."""
    return {
        "weights": np.zeros((n_series, N_BINS)),
        "reference_time": np.full(n_series, np.nan),
        "observed": np.zeros(n_series),
        "first_time": np.full(n_series, np.nan),
        "threshold": np.full(n_series, np.nan),
        "refreshed_bucket": np.full(n_series, -np.inf),
        "outlier_since": np.full(n_series, np.nan),
    }


def bin_of(errors: np.ndarray) -> np.ndarray:
    """The histogram bin of each (finite, >= 0) error."""
    smallest = _EDGES[0]
    logs = np.log(np.maximum(errors, smallest))
    index = (logs - _LOG_EDGES[0]) * (1.0 / (_LOG_EDGES[1] - _LOG_EDGES[0]))
    return np.clip(index, 0, N_BINS - 1).astype(np.intp)


def score(state: dict[str, np.ndarray], settings: CalibrationSettings, time: float,
          errors: np.ndarray, refresh_seconds: float = REFRESH_SECONDS
          ) -> tuple[np.ndarray, np.ndarray]:
    """Calibrate one column: `errors` (one per row of state, NaN = none at this time) become
    scores (NaN while a series warms up or has no error), then join the error model. Also
    returns the threshold z_alpha each score was divided by (the band's half-width in error
    units). `refresh_seconds`: see REFRESH_SECONDS (the detector stretches it for coarse
    steps)."""
    rows = np.flatnonzero(np.isfinite(errors) & (errors >= 0))
    scores = np.full(errors.shape, np.nan)
    thresholds = np.full(errors.shape, np.nan)
    if rows.size == 0:
        return scores, thresholds
    observed = state["observed"][rows]
    ready = ((observed >= settings.min_errors)
             & (time - state["first_time"][rows] >= settings.warm_up_seconds))
    young = ready & (observed < YOUNG_ERRORS)
    # young series refresh every twelfth of the interval (every 5 minutes for an hour). An
    # older refresh counts half a young bucket earlier, so that a series turning young in the
    # first twelfth of an interval is refreshed at once, not unscored until the next twelfth.
    bucket = np.where(young, math.floor(time * YOUNG_REFRESHES / refresh_seconds),
                      math.floor(time / refresh_seconds) * YOUNG_REFRESHES - 0.5)
    due = np.flatnonzero(state["refreshed_bucket"][rows] < bucket)
    stale = rows[due]
    if stale.size:
        weights = state["weights"][stale]
        counts = weights.sum(axis=1) * np.exp(-(time - state["reference_time"][stale])
                                              * _decay_rate(settings))
        state["threshold"][stale] = threshold(weights, np.nan_to_num(counts), settings.alpha)
        state["refreshed_bucket"][stale] = bucket[due]
    row_errors = errors[rows]
    warm = ready & (state["threshold"][rows] > 0)
    limit = state["threshold"][rows]
    with np.errstate(divide="ignore", invalid="ignore"):
        scores[rows] = np.where(warm, row_errors / limit, np.nan)
    thresholds[rows] = np.where(warm, limit, np.nan)
    # an error far beyond the threshold is an anomaly, not the series' normal behaviour: left
    # out of the error model, it cannot raise the tail so far that the next anomaly of the
    # same size passes unnoticed (SPOT likewise keeps alarms out of its peaks). Only for a
    # while: errors that stay that large for OUTLIER_HOLD are the series' new normal (a level
    # that moved for good) and join the model again, or it would alarm on them for ever.
    with np.errstate(invalid="ignore"):
        outlier = warm & (row_errors > OUTLIER_FACTOR * limit)
    since = state["outlier_since"][rows]
    since = np.where(outlier, np.where(np.isnan(since), time, since), np.nan)
    state["outlier_since"][rows] = since
    normal = ~outlier | (time - since >= settings.outlier_hold_seconds)
    _add(state, settings, rows[normal], time, row_errors[normal])
    return scores, thresholds


def _add(state: dict[str, np.ndarray], settings: CalibrationSettings, rows: np.ndarray,
         time: float, row_errors: np.ndarray) -> None:
    decay_rate = _decay_rate(settings)
    reference = state["reference_time"]
    fresh = rows[np.isnan(reference[rows])]
    reference[fresh] = time
    state["first_time"][fresh] = time
    log_weight = (time - reference[rows]) * decay_rate
    overflowing = rows[log_weight > _MAX_LOG_WEIGHT]
    if overflowing.size:
        state["weights"][overflowing] *= np.exp(
            -(time - reference[overflowing]) * decay_rate)[:, None]
        reference[overflowing] = time
        log_weight = (time - reference[rows]) * decay_rate
    state["weights"][rows, bin_of(row_errors)] += np.exp(log_weight)
    state["observed"][rows] += 1


def _decay_rate(settings: CalibrationSettings) -> float:
    return math.log(2.0) / settings.memory_seconds


def _upper_quantile(weights: np.ndarray, tail: np.ndarray, fraction: np.ndarray) -> np.ndarray:
    """Per row, the error exceeded by `fraction` of the weight (log-linear within a bin)."""
    target = fraction * tail[:, 0]
    above_bin = tail[:, 1:]  # weight at or above each bin's upper edge
    # the bin that holds the target: the last one whose lower edge still has >= target above
    holds = (tail[:, :-1] >= target[:, None]) & (above_bin < target[:, None])
    index = np.argmax(holds, axis=1)
    rows = np.arange(len(weights))
    in_bin = np.maximum(weights[rows, index], 1e-300)
    share = np.clip((target - above_bin[rows, index]) / in_bin, 0.0, 1.0)
    log_value = _LOG_EDGES[index + 1] - share * (_LOG_EDGES[index + 1] - _LOG_EDGES[index])
    return np.exp(log_value)


def threshold(weights: np.ndarray, error_counts: np.ndarray, alpha: float) -> np.ndarray:
    """z_alpha per row of histogram weights (NaN for an empty one), where `error_counts` is
    the decayed number of errors each row holds: see the module docstring."""
    total = weights.sum(axis=1)
    result = np.full(len(weights), np.nan)
    known = np.flatnonzero(total > 0)
    if known.size == 0:
        return result
    weights = weights[known]
    tail = np.concatenate([np.cumsum(weights[:, ::-1], axis=1)[:, ::-1],
                           np.zeros((len(weights), 1))], axis=1)
    fraction = np.minimum(np.maximum(TAIL_FRACTION,
                                     MIN_TAIL_ERRORS / np.maximum(error_counts[known], 1.0)), 0.5)
    direct = alpha >= fraction
    level = _upper_quantile(weights, tail, np.where(direct, alpha, fraction))
    exceed = _EDGES[None, 1:] > level[:, None]
    lower = np.maximum(_EDGES[None, :-1], level[:, None])
    upper = _EDGES[None, 1:]
    share = np.where(exceed, (np.log(upper) - np.log(np.maximum(lower, 1e-300)))
                     / (_LOG_EDGES[1] - _LOG_EDGES[0]), 0.0)
    mass = weights * share
    centre = np.sqrt(lower * upper) - level[:, None]
    spread = (upper - lower) ** 2 / 12.0
    with np.errstate(invalid="ignore", divide="ignore"):
        mass_total = mass.sum(axis=1)
        mean = (mass * centre).sum(axis=1) / mass_total
        variance = (mass * (centre ** 2 + spread)).sum(axis=1) / mass_total - mean ** 2
        ratio = mean * mean / variance
        shape = np.clip(0.5 * (1.0 - ratio), _MIN_SHAPE, _MAX_SHAPE)
        shape = np.where(error_counts[known] * fraction < SMALL_TAIL_ERRORS,
                         np.maximum(shape, 0.0), shape)
        scale = 0.5 * mean * (ratio + 1.0)
        factor = fraction / alpha
        exponential = np.abs(shape) < 1e-6
        growth = np.where(exponential, np.log(factor),
                          (factor ** shape - 1.0) / np.where(exponential, 1.0, shape))
        extrapolated = level + scale * growth
    fitted = np.isfinite(extrapolated) & (mass_total > 0) & (variance > 0)
    result[known] = np.where(direct | ~fitted, level, extrapolated)
    return result
