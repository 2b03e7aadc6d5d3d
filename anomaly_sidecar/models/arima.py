"""arima: one ARIMA(p,d,q) per series; the band is yhat +- z_threshold x innovation sigma.

`implementation: batched` (default) estimates all series at once (_arima_batched);
`implementation: statsmodels` fits each series with statsmodels' exact maximum likelihood, the
reference the batched estimator is tested against. Both forecast with the same vectorised
one-step filter, so they differ only in the estimated coefficients.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from anomaly_sidecar.models import _arima_batched as batched
from anomaly_sidecar.models.base import (
    Forecast,
    Model,
    ModelParamError,
    ModelParams,
    SeriesBatch,
    SeriesKey,
)

_STATE_FILE = "arima.npz"
_KEYS_FILE = "keys.json"
FILTER_WARM_UP = 60
"""Extra points before the first target so the MA residual recursion forgets its zero start."""


@dataclass(frozen=True)
class ArimaParams(ModelParams):
    order: tuple[int, int, int] = (1, 1, 1)
    z_threshold: float = 3.0
    max_fit_points: int = 2000
    """Only the newest points of the fit window are used: enough for a few coefficients, and
    it bounds fit time and memory for a long fit_window at a short step."""
    implementation: Literal["batched", "statsmodels"] = "batched"

    def validate(self) -> None:
        p, d, q = self.order
        if min(p, d, q) < 0 or p > 10 or q > 10 or d > 2:
            raise ModelParamError("order",
                                  f"needs 0 <= p,q <= 10 and 0 <= d <= 2, got {self.order}")
        if self.z_threshold <= 0:
            raise ModelParamError("z_threshold", f"must be > 0, got {self.z_threshold}")
        if self.max_fit_points < 10 * (p + d + q + 1):
            raise ModelParamError("max_fit_points", "too few points for the order")


class ArimaModel(Model):
    type_name = "arima"
    Params = ArimaParams

    def __init__(self, params: ArimaParams) -> None:
        super().__init__(params)
        self.params: ArimaParams = params
        self.row_of: dict[SeriesKey, int] = {}
        p, _, q = params.order
        self.coefficients = batched.ArimaCoefficients(
            np.zeros((0, p)), np.zeros((0, q)), np.zeros(0), np.zeros(0))

    @property
    def context_points(self) -> int:
        p, d, q = self.params.order
        return p + d + q + FILTER_WARM_UP

    @property
    def fit_points(self) -> int:
        return self.params.max_fit_points

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

    def can_predict(self, key: SeriesKey) -> bool:
        return key in self.row_of

    def predict(self, batch: SeriesBatch, n_targets: int) -> Forecast:
        n_series = len(batch.keys)
        n_targets = min(n_targets, batch.values.shape[1])
        yhat = np.full((n_series, n_targets), np.nan)
        half_width = np.full((n_series, n_targets), np.nan)
        known = [i for i, key in enumerate(batch.keys) if key in self.row_of]
        if known:
            rows = np.array([self.row_of[batch.keys[i]] for i in known])
            coefficients = self.coefficients.rows(rows)
            yhat[known] = batched.one_step_forecasts(batch.values[known], self.params.order,
                                                     coefficients, n_targets)
            half_width[known] = self.params.z_threshold * coefficients.sigma[:, None]
        return Forecast(yhat, yhat - half_width, yhat + half_width)

    def save(self, directory: Path) -> None:
        (directory / _KEYS_FILE).write_text(json.dumps({
            "params": asdict(self.params),
            "keys": [list(map(list, key)) for key in self.row_of],
        }))
        with (directory / _STATE_FILE).open("wb") as handle:
            np.savez(handle, **asdict(self.coefficients))

    @classmethod
    def load(cls, directory: Path, params: ModelParams) -> Model:
        saved = json.loads((directory / _KEYS_FILE).read_text())
        if saved["params"] != json.loads(json.dumps(asdict(params))):
            raise ValueError(f"saved parameters {saved['params']} differ from the configured ones")
        model = cls(params)
        with np.load(directory / _STATE_FILE, allow_pickle=False) as arrays:
            model.coefficients = batched.ArimaCoefficients(
                arrays["phi"], arrays["theta"], arrays["mu"], arrays["sigma"])
        keys = [tuple(tuple(pair) for pair in key) for key in saved["keys"]]
        if len(keys) != len(model.coefficients.sigma):
            raise ValueError("state holds a different number of keys and coefficients")
        model.row_of = {key: row for row, key in enumerate(keys)}
        return model


def statsmodels_coefficients(values: np.ndarray,
                             order: tuple[int, int, int]) -> batched.ArimaCoefficients:
    """The reference estimator: statsmodels' exact MLE, one series at a time (slow)."""
    from statsmodels.tools.sm_exceptions import ConvergenceWarning
    from statsmodels.tsa.arima.model import ARIMA

    p, d, q = order
    n_series = values.shape[0]
    result = batched.ArimaCoefficients(np.zeros((n_series, p)), np.zeros((n_series, q)),
                                       np.zeros(n_series), np.full(n_series, np.nan))
    for row, series in enumerate(batched.forward_filled(values)):
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
