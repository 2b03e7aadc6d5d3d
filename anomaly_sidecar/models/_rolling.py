"""Shared machinery of the rolling-baseline models (zscore, mad).

Both forecast the next point from a window of the points just before it; they differ only in
how they turn a window into a centre and a spread. The windows for all series and all targets
are one strided numpy view, so 10,000 series cost a few array operations, not a Python loop.
"""

from __future__ import annotations

import json
import warnings
from abc import abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from anomaly_sidecar.models.base import Forecast, Model, ModelParamError, ModelParams, SeriesBatch

_STATE_FILE = "rolling.json"


@dataclass(frozen=True)
class RollingParams(ModelParams):
    window: int = 60
    """How many points before each target form its baseline."""
    threshold: float = 3.0
    """Half-width of the band in units of the window's spread."""
    min_window_points: int = 0
    """Finite points a window needs to give a forecast; 0 means half the window."""

    def validate(self) -> None:
        if self.window < 2:
            raise ModelParamError("window", f"must be >= 2, got {self.window}")
        if self.threshold <= 0:
            raise ModelParamError("threshold", f"must be > 0, got {self.threshold}")
        if not 0 <= self.min_window_points <= self.window:
            raise ModelParamError("min_window_points",
                                  f"must be between 0 and window ({self.window})")

    @property
    def needed_points(self) -> int:
        return max(2, self.min_window_points or self.window // 2)


def target_windows(batch: SeriesBatch, n_targets: int, window: int) -> np.ndarray:
    """Shape (n_series, n_targets, window): for target j the `window` columns just before it,
    non-finite values as NaN and NaN padding where the history is shorter than the window."""
    values = np.where(np.isfinite(batch.values), batch.values, np.nan).astype(float)
    n_series, n_columns = values.shape
    n_targets = min(n_targets, n_columns)
    first_target = n_columns - n_targets
    padding = max(0, window - first_target)
    padded = np.concatenate([np.full((n_series, padding), np.nan), values], axis=1)
    start = first_target + padding - window
    history = padded[:, start:start + window + n_targets - 1]
    return sliding_window_view(history, window, axis=1)


class RollingModel(Model):
    """A baseline recomputed from the latest window at each point: nothing to learn at fit."""

    Params = RollingParams

    def __init__(self, params: RollingParams) -> None:
        super().__init__(params)
        self.params: RollingParams = params

    @property
    def context_points(self) -> int:
        return self.params.window

    @property
    def fit_points(self) -> int:
        return self.params.window

    def fit(self, batch: SeriesBatch) -> None:
        """Rolling baselines adapt at every point: there is nothing to learn."""

    def predict(self, batch: SeriesBatch, n_targets: int) -> Forecast:
        windows = target_windows(batch, n_targets, self.params.window)
        counts = np.isfinite(windows).sum(axis=2)
        with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            centre, spread = self.centre_and_spread(windows)
        usable = counts >= self.params.needed_points
        yhat = np.where(usable, centre, np.nan)
        half_width = self.params.threshold * np.where(usable, spread, np.nan)
        return Forecast(yhat, yhat - half_width, yhat + half_width)

    @abstractmethod
    def centre_and_spread(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per window (last axis, NaN = missing): the expected value and the spread unit."""

    def save(self, directory: Path) -> None:
        (directory / _STATE_FILE).write_text(json.dumps(asdict(self.params)))

    @classmethod
    def load(cls, directory: Path, params: ModelParams) -> Model:
        saved = json.loads((directory / _STATE_FILE).read_text())
        if saved != asdict(params):
            raise ValueError(f"saved parameters {saved} differ from the configured ones")
        return cls(params)
