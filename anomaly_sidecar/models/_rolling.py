"""Shared machinery of the rolling-baseline models (zscore, mad).

Both forecast the next point from the window of points just before it; they differ only in
how they turn a window into a centre and a spread. Each series keeps the last window of values
as its streaming state; the windows of all series and all new points are one strided numpy
view, so 10,000 series cost a few array operations, not a Python loop.
"""

from __future__ import annotations

import warnings
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from anomaly_sidecar.durations import span_points
from anomaly_sidecar.models.base import (
    Duration,
    Model,
    ModelParamError,
    ModelParams,
    Residuals,
    SeriesKey,
    StreamState,
)


@dataclass(frozen=True)
class RollingParams(ModelParams):
    window: Duration = 3600.0
    """How far back from each point its baseline looks."""
    threshold: float = 3.0
    """Half-width of the raw band (`calibration: raw`) in units of the window's spread."""
    min_coverage: float = 0.5
    """Share of the window's points that must hold samples for a forecast."""

    def validate(self) -> None:
        if self.window <= 0:
            raise ModelParamError("window", "must be a positive duration")
        if self.threshold <= 0:
            raise ModelParamError("threshold", f"must be > 0, got {self.threshold}")
        if not 0.0 < self.min_coverage <= 1.0:
            raise ModelParamError("min_coverage", f"must be in (0, 1], got {self.min_coverage}")


class RollingModel(Model):
    """A baseline recomputed from the latest window at each point: nothing to learn."""

    Params = RollingParams
    params: RollingParams

    @property
    def window_points(self) -> int:
        return max(2, span_points(self.params.window, self.step_seconds))

    @property
    def history_seconds(self) -> float:
        return self.window_points * self.step_seconds

    def new_state(self, n_series: int) -> StreamState:
        return {"window": np.full((n_series, self.window_points), np.nan)}

    def advance(self, state: StreamState, keys: Sequence[SeriesKey], timestamps: np.ndarray,
                values: np.ndarray) -> Residuals:
        history = np.concatenate([state["window"], values], axis=1)
        windows = sliding_window_view(history[:, :-1], self.window_points, axis=1)
        state["window"] = history[:, -self.window_points:]
        counts = np.isfinite(windows).sum(axis=2)
        with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            centre, spread = self.centre_and_spread(windows)
        usable = counts >= max(2, self.params.min_coverage * self.window_points)
        yhat = np.where(usable, centre, np.nan)
        spread = np.where(usable, spread, np.nan)
        return Residuals(yhat=yhat, unit=spread, raw_half_width=self.params.threshold * spread)

    @abstractmethod
    def centre_and_spread(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per window (last axis, NaN = missing): the expected value and the spread unit."""
