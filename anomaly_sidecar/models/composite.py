"""`type: composite`: the shipped default detector. It needs no training and watches a series
for three kinds of trouble at once, each an error channel of its own that the shared
calibration scores against the series' own history (detector.py):

- deviation: how far a value is from the recent level (an exponentially weighted mean with a
  time constant of `level_memory`), which is also the published yhat. Spikes, dips and sudden
  jumps show here first.
- novelty: whether the latest stretch of `novelty_width` has a shape seen before within
  `novelty_lookback` (the RMS distance to the nearest earlier, non-overlapping stretch, averaged
  over `novelty_smoothing`), on 5-minute means so it costs the same at every query step. A
  change of texture or rhythm, a missing daily peak, or a new pattern shows here although no
  single value is unusual.
- level shift: the distance between a fast and a slow exponentially weighted mean
  (`shift_recent`, `shift_baseline`), for a series that settles at a new level inside its usual
  range (`shift_recent: 0` turns it off).

A value beyond the range of the last `extreme_range` by more than `extreme_tolerance` of that
range alarms whatever its calibrated score: a new extreme is an anomaly however noisy the series
was before.

Everything is streaming state updated point by point (a level, 5-minute means, the running
distances of the novelty search, the range in 28 time buckets), so a cycle costs the new
points only. The novelty search keeps, for every lag of the look back, the squared distance
between the newest stretch and the stretch that lag earlier, and updates it with the point
entering and the point leaving each stretch: O(look back) a new 5-minute mean, not O(look back
x width).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from anomaly_sidecar.durations import REFERENCE_STEP_SECONDS, span_points, span_seconds
from anomaly_sidecar.models.base import (
    Duration,
    Model,
    ModelParamError,
    ModelParams,
    Residuals,
    SeriesKey,
    StreamState,
)

NOVELTY = "novelty"
SHIFT = "shift"
RANGE_BUCKETS = 28
NOVELTY_RESOLUTION_SECONDS = REFERENCE_STEP_SECONDS


@dataclass(frozen=True)
class CompositeParams(ModelParams):
    """Defaults were chosen by the protocol in docs/accuracy.md (NAB and AIOps 2018)."""

    level_memory: Duration = 300.0
    """Time constant of the recent level (yhat) the deviation is measured from."""
    novelty_width: Duration = 6000.0
    """Length of the stretch whose shape is compared with earlier ones (0 = no novelty)."""
    novelty_lookback: Duration = 300000.0
    """How far back an earlier stretch of the same shape is searched for."""
    novelty_smoothing: Duration = 3000.0
    """The novelty error is averaged over this long before it is scored."""
    shift_recent: Duration = 9000.0
    """Time constant of the fast mean of the level-shift channel (0 = no such channel)."""
    shift_baseline: Duration = 172800.0
    """Time constant of the slow mean it is compared with."""
    extreme_range: Duration = 604800.0
    """How far back the running [min, max] reaches (0 = no new-extreme test)."""
    extreme_tolerance: float = 0.05
    """By how much of that range a value must leave it to be a new extreme."""

    def validate(self) -> None:
        if self.level_memory <= 0:
            raise ModelParamError("level_memory", "must be a positive duration")
        if self.novelty_width and self.novelty_lookback <= 2 * self.novelty_width:
            raise ModelParamError("novelty_lookback", "must exceed twice novelty_width")
        if self.novelty_width and self.novelty_smoothing <= 0:
            raise ModelParamError("novelty_smoothing", "must be a positive duration")
        if self.shift_recent and self.shift_baseline <= self.shift_recent:
            raise ModelParamError("shift_baseline", "must exceed shift_recent")
        if self.extreme_tolerance < 0:
            raise ModelParamError("extreme_tolerance", "must be >= 0")


class CompositeModel(Model):
    """See the module docstring."""

    type_name = "composite"
    Params = CompositeParams
    params: CompositeParams
    has_raw_band = False

    @property
    def extra_channels(self) -> tuple[str, ...]:
        channels = []
        if self.params.novelty_width:
            channels.append(NOVELTY)
        if self.params.shift_recent:
            channels.append(SHIFT)
        return tuple(channels)

    # novelty works on means over NOVELTY_RESOLUTION_SECONDS (or on points, at coarser steps)
    @property
    def _bucket_seconds(self) -> float:
        return max(self.step_seconds, NOVELTY_RESOLUTION_SECONDS)

    @property
    def _width(self) -> int:
        return max(2, span_points(self.params.novelty_width, self._bucket_seconds))

    @property
    def _lookback(self) -> int:
        return max(2 * self._width + 1,
                   span_points(self.params.novelty_lookback, self._bucket_seconds))

    @property
    def _smoothing(self) -> int:
        return span_points(self.params.novelty_smoothing, self._bucket_seconds)

    @property
    def _range_bucket_seconds(self) -> float:
        return span_seconds(self.params.extreme_range, self.step_seconds) / RANGE_BUCKETS

    @property
    def history_seconds(self) -> float:
        novelty = ((self._lookback + self._width + self._smoothing) * self._bucket_seconds
                   if self.params.novelty_width else 0.0)
        return max(novelty, span_seconds(self.params.extreme_range, self.step_seconds),
                   span_seconds(self.params.shift_baseline, self.step_seconds)
                   if self.params.shift_recent else 0.0)

    def new_state(self, n_series: int) -> StreamState:
        state = {"level": np.full(n_series, np.nan), "level_time": np.full(n_series, np.nan),
                 "range_low": np.full((n_series, RANGE_BUCKETS), np.nan),
                 "range_high": np.full((n_series, RANGE_BUCKETS), np.nan),
                 "range_bucket": np.full((n_series, RANGE_BUCKETS), -np.inf)}
        if self.params.novelty_width:
            lags = self._lookback - self._width + 1
            state.update({
                "bucket": np.full(n_series, np.nan), "bucket_sum": np.zeros(n_series),
                "bucket_count": np.zeros(n_series),
                "means": np.full((n_series, self._lookback + self._width + 1), np.nan),
                "means_missing": np.full(n_series, float(self._lookback + self._width + 1)),
                "means_seen": np.zeros(n_series),
                "distance": np.zeros((n_series, lags)),
                "gaps": np.full((n_series, lags), float(self._width)),
                "novelty": np.full((n_series, self._smoothing), np.nan)})
        if self.params.shift_recent:
            state.update({"fast": np.full(n_series, np.nan), "slow": np.full(n_series, np.nan)})
        return state

    def advance(self, state: StreamState, keys: Sequence[SeriesKey], timestamps: np.ndarray,
                values: np.ndarray) -> Residuals:
        shape = values.shape
        yhat = np.full(shape, np.nan)
        novelty = np.full(shape, np.nan)
        shift = np.full(shape, np.nan)
        must_alarm = np.zeros(shape, dtype=bool)
        level_memory = span_seconds(self.params.level_memory, self.step_seconds)
        for column, moment in enumerate(timestamps):
            moment = float(moment)
            current = values[:, column]
            observed = np.isfinite(current)
            yhat[:, column] = state["level"]
            # the level and both shift means see the same values, so one time serves all three
            last = state["level_time"]
            state["level_time"] = np.where(observed, moment, last)
            state["level"] = _ewma_update(state["level"], last, current, observed, moment,
                                          level_memory)
            if self.params.extreme_range:
                must_alarm[:, column] = self._extreme(state, current, observed, moment)
            if self.params.novelty_width:
                novelty[:, column] = self._novelty(state, current, observed, moment)
            if self.params.shift_recent:
                shift[:, column] = self._shift(state, last, current, observed, moment)
        extra = {}
        if self.params.novelty_width:
            extra[NOVELTY] = novelty
        if self.params.shift_recent:
            extra[SHIFT] = shift
        ones = np.ones(shape)
        return Residuals(yhat=yhat, unit=ones, raw_half_width=np.full(shape, np.nan),
                         extra_errors=extra, must_alarm=must_alarm)

    def _extreme(self, state: StreamState, current: np.ndarray, observed: np.ndarray,
                 moment: float) -> np.ndarray:
        """Whether each value leaves the running range by more than the tolerance, then the
        value joins the range (the bucket of its time, replacing one older than the range)."""
        bucket = math.floor(moment / self._range_bucket_seconds)
        valid = state["range_bucket"] > bucket - RANGE_BUCKETS
        with np.errstate(invalid="ignore"):
            low = np.fmin.reduce(np.where(valid, state["range_low"], np.nan), axis=1)
            high = np.fmax.reduce(np.where(valid, state["range_high"], np.nan), axis=1)
            spread = high - low
            tolerance = self.params.extreme_tolerance * spread
            extreme = observed & (spread > 0) & ((current > high + tolerance)
                                                 | (current < low - tolerance))
        slot = bucket % RANGE_BUCKETS
        rows = np.flatnonzero(observed)
        stale = state["range_bucket"][rows, slot] != bucket
        state["range_low"][rows, slot] = np.where(
            stale, current[rows], np.fmin(state["range_low"][rows, slot], current[rows]))
        state["range_high"][rows, slot] = np.where(
            stale, current[rows], np.fmax(state["range_high"][rows, slot], current[rows]))
        state["range_bucket"][rows, slot] = bucket
        return extreme

    def _novelty(self, state: StreamState, current: np.ndarray, observed: np.ndarray,
                 moment: float) -> np.ndarray:
        """Accumulate the value into its 5-minute mean; when that mean is complete, update the
        novelty search with it and return the smoothed novelty (NaN elsewhere)."""
        result = np.full(len(current), np.nan)
        bucket = math.floor(moment / self._bucket_seconds)
        # a mean is complete at the last point of its interval (or when a later one arrives)
        closing_earlier = np.isfinite(state["bucket"]) & (state["bucket"] < bucket)
        if closing_earlier.any():
            self._close(state, np.flatnonzero(closing_earlier), result)
        state["bucket"] = np.where(np.isnan(state["bucket"]) | closing_earlier, bucket,
                                   state["bucket"])
        state["bucket_sum"] += np.where(observed, current, 0.0)
        state["bucket_count"] += observed
        if (bucket + 1) * self._bucket_seconds <= moment + self.step_seconds:
            rows = np.flatnonzero(state["bucket"] == bucket)
            self._close(state, rows, result)
        return result

    def _close(self, state: StreamState, rows: np.ndarray, result: np.ndarray) -> None:
        """Complete the current mean of the given rows: it enters the look back, the
        distances of every lag are updated with the pair entering and the pair leaving the
        stretch, and the nearest earlier stretch gives the novelty (see the docstring)."""
        counts = state["bucket_count"][rows]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(counts > 0, state["bucket_sum"][rows] / counts, np.nan)
        state["bucket"][rows] = np.nan
        state["bucket_sum"][rows] = 0.0
        state["bucket_count"][rows] = 0.0
        everything = rows.size == len(state["bucket"])
        names = ("means", "means_missing", "means_seen", "distance", "gaps", "novelty")
        arrays = ({name: state[name] for name in names} if everything
                  else {name: state[name][rows] for name in names})
        width, lookback = self._width, self._lookback
        means = arrays["means"]  # column lookback + width is the newest mean, t; column k, t - k
        arrays["means_missing"] += np.isnan(mean).astype(float) - np.isnan(means[:, 0])
        arrays["means_seen"] += 1
        means[:, :-1] = means[:, 1:]
        means[:, -1] = mean
        # lags width..lookback: the stretch ending at t against the one ending at t - lag gains
        # the pair (t, t - lag) and loses the pair (t - width, t - width - lag). A lag longer
        # than every series' history only ever pairs means not seen yet (both pairs missing,
        # nothing changes), so only the lags some series can already fill are computed.
        active = int(min(lookback, arrays["means_seen"].max() - 1) - width + 1)
        distance, gaps = arrays["distance"][:, :max(active, 0)], arrays["gaps"][:, :max(active, 0)]
        if active > 0:
            entering = means[:, -1:] - means[:, lookback - active + 1:lookback + 1][:, ::-1]
            leaving = (means[:, lookback:lookback + 1]
                       - means[:, lookback - width - active + 1:lookback - width + 1][:, ::-1])
            entering *= entering
            leaving *= leaving
        gappy = bool(arrays["means_missing"].any())
        if gappy and active > 0:
            # a pair with a missing mean adds nothing and marks the lag's stretches as gappy
            # (with no mean missing anywhere in the look back no pair can be: the fast path)
            entering_gap, leaving_gap = np.isnan(entering), np.isnan(leaving)
            entering[entering_gap] = 0.0
            leaving[leaving_gap] = 0.0
            gaps += entering_gap
            gaps -= leaving_gap
        if active > 0:
            distance += entering
            distance -= leaving
        if active <= 0:
            nearest = np.full(len(rows), np.inf)
        elif gappy:
            nearest = np.where(gaps == 0, distance, np.inf).min(axis=1)
        else:
            nearest = distance.min(axis=1)
        nearest = np.sqrt(np.maximum(nearest, 0.0) / width)
        nearest = np.where(np.isfinite(nearest) & np.isfinite(mean), nearest, np.nan)
        recent = arrays["novelty"]
        recent[:, :-1] = recent[:, 1:]
        recent[:, -1] = nearest
        finite = np.isfinite(recent)
        with np.errstate(invalid="ignore", divide="ignore"):
            smoothed = np.where(finite, recent, 0.0).sum(axis=1) / finite.sum(axis=1)
        result[rows] = np.where(np.isfinite(nearest), smoothed, np.nan)
        if not everything:
            for name in names:
                state[name][rows] = arrays[name]

    def _shift(self, state: StreamState, last: np.ndarray, current: np.ndarray,
               observed: np.ndarray, moment: float) -> np.ndarray:
        """|fast mean - slow mean| before this value joins both (NaN until both exist)."""
        shift = np.where(observed, np.abs(state["fast"] - state["slow"]), np.nan)
        state["fast"] = _ewma_update(state["fast"], last, current, observed, moment,
                                     span_seconds(self.params.shift_recent, self.step_seconds))
        state["slow"] = _ewma_update(state["slow"], last, current, observed, moment,
                                     span_seconds(self.params.shift_baseline, self.step_seconds))
        return shift


def _ewma_update(level: np.ndarray, last: np.ndarray, current: np.ndarray,
                 observed: np.ndarray, moment: float, time_constant: float) -> np.ndarray:
    """An exponentially weighted mean in time: a value's weight decays with exp(-age / time
    constant), so a gap of any length is handled by its duration, not by counting points.
    `last` is when the mean last took a value."""
    weight = 1.0 - np.exp(-(moment - last) / time_constant)
    fresh = observed & np.isnan(level)
    updated = np.where(fresh, current, level + weight * (current - level))
    return np.where(observed, updated, level)


MODEL_CLASS = CompositeModel
