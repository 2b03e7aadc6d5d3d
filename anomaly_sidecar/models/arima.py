"""arima: one ARIMA(p,d,q) per series; its innovations are the errors the calibration scores.

`implementation: batched` (default) estimates all series at once (_arima_batched);
`implementation: statsmodels` fits each series with statsmodels' exact maximum likelihood, the
reference the batched estimator is tested against. Both forecast with the same vectorised
one-step filter, whose lags are each series' streaming state, so they differ only in the
estimated coefficients. The deviation is the innovation in units of the fitted innovation
sigma; the raw band (`calibration: raw`) is yhat +- z_threshold x sigma.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from anomaly_sidecar.models import _arima_batched as batched
from anomaly_sidecar.models._fill import forward_filled
from anomaly_sidecar.models.base import (
    Duration,
    Model,
    ModelParamError,
    ModelParams,
    Residuals,
    SeriesBatch,
    SeriesKey,
    StreamState,
)

_STATE_FILE = "arima.npz"
_KEYS_FILE = "arima_keys.json"
MIN_FIT_POINTS_PER_COEFFICIENT = 10


@dataclass(frozen=True)
class ArimaParams(ModelParams):
    order: tuple[int, int, int] = (1, 1, 1)
    z_threshold: float = 3.0
    """Half-width of the raw band (`calibration: raw`) in innovation sigmas."""
    fit_history: Duration = 7 * 86400.0
    """How much of the newest history a fit uses (at most max_fit_points of it)."""
    max_fit_points: int = 2000
    """A cap on the points a fit uses: enough for a few coefficients, and it bounds fit time
    and memory for a long history at a short step."""
    implementation: Literal["batched", "statsmodels"] = "batched"

    def validate(self) -> None:
        p, d, q = self.order
        if min(p, d, q) < 0 or p > 10 or q > 10 or d > 2:
            raise ModelParamError("order",
                                  f"needs 0 <= p,q <= 10 and 0 <= d <= 2, got {self.order}")
        if self.z_threshold <= 0:
            raise ModelParamError("z_threshold", f"must be > 0, got {self.z_threshold}")
        if self.max_fit_points < MIN_FIT_POINTS_PER_COEFFICIENT * (p + d + q + 1):
            raise ModelParamError("max_fit_points", "too few points for the order")
        if self.fit_history <= 0:
            raise ModelParamError("fit_history", "must be a positive duration")


class ArimaModel(Model):
    type_name = "arima"
    Params = ArimaParams
    params: ArimaParams
    learns = True

    def __init__(self, params: ArimaParams, step_seconds: float) -> None:
        super().__init__(params, step_seconds)
        self.row_of: dict[SeriesKey, int] = {}
        p, _, q = params.order
        self.coefficients = batched.ArimaCoefficients(
            np.zeros((0, p)), np.zeros((0, q)), np.zeros(0), np.zeros(0))

    @property
    def fit_seconds(self) -> float:
        return min(self.params.fit_history, self.params.max_fit_points * self.step_seconds)

    @property
    def history_seconds(self) -> float:
        p, d, q = self.params.order
        return (p + d + q + 1) * self.step_seconds

    def fit(self, batch: SeriesBatch) -> None:
        values = batch.tail(self.params.max_fit_points).values
        if self.params.implementation == "statsmodels":
            coefficients = statsmodels_coefficients(values, self.params.order)
        else:
            coefficients = batched.estimate(values, self.params.order)
        fitted = np.isfinite(coefficients.sigma)
        rows = np.flatnonzero(fitted)
        self.coefficients = coefficients.rows(rows)
        self.row_of = {batch.keys[row]: position for position, row in enumerate(rows)}

    def can_forecast(self, key: SeriesKey) -> bool:
        return key in self.row_of

    def new_state(self, n_series: int) -> StreamState:
        return batched.new_filter_state(n_series, self.params.order)

    def advance(self, state: StreamState, keys: Sequence[SeriesKey], timestamps: np.ndarray,
                values: np.ndarray) -> Residuals:
        coefficients = self.coefficients.rows(np.array([self.row_of[key] for key in keys],
                                                        dtype=np.intp))
        yhat = batched.filter_forecasts(state, values, self.params.order, coefficients)
        sigma = np.broadcast_to(coefficients.sigma[:, None], yhat.shape)
        return Residuals(yhat=yhat, unit=sigma, raw_half_width=self.params.z_threshold * sigma)

    def save(self, directory: Path) -> None:
        (directory / _KEYS_FILE).write_text(json.dumps({
            "params": asdict(self.params),
            "keys": [list(map(list, key)) for key in self.row_of],
        }))
        with (directory / _STATE_FILE).open("wb") as handle:
            np.savez(handle, **asdict(self.coefficients))

    def load(self, directory: Path) -> None:
        saved = json.loads((directory / _KEYS_FILE).read_text())
        if saved["params"] != json.loads(json.dumps(asdict(self.params))):
            raise ValueError(f"saved parameters {saved['params']} differ from the configured ones")
        with np.load(directory / _STATE_FILE, allow_pickle=False) as arrays:
            coefficients = batched.ArimaCoefficients(
                arrays["phi"], arrays["theta"], arrays["mu"], arrays["sigma"])
        keys = [tuple(tuple(pair) for pair in key) for key in saved["keys"]]
        if len(keys) != len(coefficients.sigma):
            raise ValueError("state holds a different number of keys and coefficients")
        self.coefficients = coefficients
        self.row_of = {key: row for row, key in enumerate(keys)}


def statsmodels_coefficients(values: np.ndarray,
                             order: tuple[int, int, int]) -> batched.ArimaCoefficients:
    """The reference estimator: statsmodels' exact MLE, one series at a time (slow)."""
    from statsmodels.tools.sm_exceptions import ConvergenceWarning
    from statsmodels.tsa.arima.model import ARIMA

    p, d, q = order
    n_series = values.shape[0]
    result = batched.ArimaCoefficients(np.zeros((n_series, p)), np.zeros((n_series, q)),
                                       np.zeros(n_series), np.full(n_series, np.nan))
    for row, series in enumerate(forward_filled(values)):
        finite = series[np.isfinite(series)]
        if len(finite) <= 2 * (p + d + q) + 2 or np.ptp(finite) == 0:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", UserWarning)
            fitted = ARIMA(finite, order=order, trend="c" if d == 0 else "n").fit()
        result.phi[row] = fitted.arparams
        result.theta[row] = fitted.maparams
        result.mu[row] = fitted.params[0] if d == 0 else 0.0
        result.sigma[row] = np.sqrt(fitted.params[-1])
    return result


MODEL_CLASS = ArimaModel
