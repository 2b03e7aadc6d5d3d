"""When each configured model publishes its first score for a new series, from the config
alone: what `make run` prints at start, so nobody waits for a score that cannot come yet.

A series is scored once its calibration holds MIN_ERRORS errors and the first of them is
`warm_up` old (detector.py); the first error comes with the model's first forecast, which needs
history of its own (a rolling window, ARIMA's lags, the LSTM's input window). A model that learns
(ARIMA, LSTM) also needs a first fit: the scheduler tries one at start and again every
HISTORY_RETRY_INFERENCES inference intervals until the query holds enough history for it.

The times count from a series' first sample. A first read covers the history Prometheus
already holds (scheduler.Job.history_seconds), so a series with that much history is scored at
its first inference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from anomaly_sidecar.config import SidecarConfig
from anomaly_sidecar.detector import MIN_ERRORS, build_detector
from anomaly_sidecar.models.base import Model
from anomaly_sidecar.scheduler import HISTORY_RETRY_INFERENCES

_CHUNK_POINTS = 64
_SERIES_KEY = (("series", "probe"),)


@dataclass(frozen=True)
class FirstScore:
    """One (model, query) of a scheduler: how long after its first sample a series is scored."""

    model_alias: str
    query_alias: str
    step_seconds: float
    forecast_seconds: float
    """History the model needs before its first forecast (its first error)."""
    warm_up_seconds: float
    """Then how long its errors are watched: max(warm_up, MIN_ERRORS points)."""
    fit_retry_seconds: float | None
    """Models that learn: how often a fit is tried until one succeeds (None: no fit)."""

    @property
    def seconds(self) -> float:
        """A fit that comes late holds the first score back; a timely one does not."""
        return self.forecast_seconds + max(self.warm_up_seconds, self.fit_retry_seconds or 0.0)


def first_scores(config: SidecarConfig) -> list[FirstScore]:
    """Every (model, query) the schedulers of config run, in config order."""
    result = []
    for scheduler in config.schedulers.values():
        for model_alias in scheduler.models:
            model_config = config.models[model_alias]
            for query_alias in model_config.queries:
                step = config.queries[query_alias].step_seconds
                model = build_detector(model_config, step).model
                warm_up = max(model_config.scoring.warm_up_seconds, MIN_ERRORS * step)
                retry = (HISTORY_RETRY_INFERENCES * scheduler.infer_every_seconds
                         if model.learns else None)
                result.append(FirstScore(model_alias, query_alias, step,
                                         _forecast_points(model) * step, warm_up, retry))
    return result


def _forecast_points(model: Model) -> int:
    """Points of a new series before the model's first forecast. A model that learns forecasts
    once its streaming state holds its history (history_seconds); any other is run on a probe
    series until it forecasts, which is exact whatever the model does with its window."""
    limit = max(1, math.ceil(model.history_seconds / model.step_seconds))
    if model.learns:
        return limit
    state = model.new_state(1)
    for start in range(0, limit + 1, _CHUNK_POINTS):
        index = np.arange(start, start + _CHUNK_POINTS)
        values = (1.0 + 0.1 * np.sin(index))[None, :]
        residuals = model.advance(state, [_SERIES_KEY], index * model.step_seconds, values)
        forecast = np.isfinite(residuals.yhat[0]) & np.isfinite(residuals.unit[0])
        if forecast.any():
            return start + int(np.argmax(forecast))
    return limit
