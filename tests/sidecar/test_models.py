"""zscore, mad and arima specifics: a robust baseline, agreement of the batched ARIMA with
statsmodels, and state files that are safely refused when corrupt. What every model must do
(causality, gaps, state round trips) is in tests/models/test_contract.py."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from anomaly_sidecar import state
from anomaly_sidecar.config import parse_config
from anomaly_sidecar.detector import build_detector
from anomaly_sidecar.models.arima import ArimaModel, ArimaParams
from anomaly_sidecar.models.base import Model, SeriesBatch, build_params, model_class

STEP = 60.0
MODEL_PARAMS = {"zscore": {"window": "20m"}, "mad": {"window": "20m"},
                "arima": {"order": [1, 1, 1]}}


def make_batch(values: np.ndarray) -> SeriesBatch:
    keys = [(("series", str(i)),) for i in range(values.shape[0])]
    return SeriesBatch(keys, STEP * np.arange(values.shape[1]), values)


def fitted(type_name: str, batch: SeriesBatch) -> Model:
    model_type = model_class(type_name)
    model = model_type(build_params(model_type.Params, MODEL_PARAMS[type_name]), STEP)
    model.fit(batch)
    return model


def forecasts(model: Model, values: np.ndarray, first: int) -> np.ndarray:
    """The model's streaming one-step forecasts of columns first.. of values, its state
    advanced through the columns before them."""
    batch = make_batch(values)
    state = model.new_state(len(batch.keys))
    model.advance(state, batch.keys, batch.timestamps[:first], values[:, :first])
    return model.advance(state, batch.keys, batch.timestamps[first:], values[:, first:]).yhat


def cpu_like(n_series: int, n_points: int, seed: int, integrated: bool) -> np.ndarray:
    """Real-looking series: a level, a daily cycle (1 point/min) and ARMA(1,1) noise; with
    integrated=True the noise is cumulated, like a slowly drifting latency or queue length."""
    rng = np.random.default_rng(seed)
    minutes = np.arange(n_points)
    rows = []
    for _ in range(n_series):
        phi, theta = rng.uniform(0.2, 0.8), rng.uniform(-0.4, 0.4)
        shocks = rng.normal(0, rng.uniform(0.5, 2.0), n_points + 100)
        noise = np.zeros_like(shocks)
        for t in range(1, len(shocks)):
            noise[t] = phi * noise[t - 1] + shocks[t] + theta * shocks[t - 1]
        noise = noise[100:]
        if integrated:
            noise = 0.05 * np.cumsum(noise)
        level = rng.uniform(30, 70)
        rows.append(level + 8 * np.sin(2 * np.pi * minutes / 1440) + noise)
    return np.array(rows)


def test_mad_band_is_not_widened_by_one_spike():
    values = cpu_like(1, 200, seed=3, integrated=False)
    spiked = values.copy()
    spiked[0, 190] += 500

    def spread(type_name: str, data: np.ndarray) -> float:
        model = fitted(type_name, make_batch(data))
        batch = make_batch(data)
        return float(model.advance(model.new_state(1), batch.keys, batch.timestamps,
                                   data).unit[0, -1])

    assert spread("mad", spiked) < 1.5 * spread("mad", values)
    assert spread("zscore", spiked) > 5 * spread("zscore", values)


def statsmodels_one_step(train: np.ndarray, test: np.ndarray, order) -> np.ndarray:
    """statsmodels' own one-step-ahead forecasts of test after fitting on train."""
    from statsmodels.tsa.arima.model import ARIMA

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = ARIMA(train, order=order, trend="c" if order[1] == 0 else "n").fit()
        return reference.append(test).get_prediction(start=len(train)).predicted_mean


@pytest.mark.parametrize("order", [(1, 1, 1), (2, 1, 2), (1, 0, 0)])
def test_batched_arima_agrees_with_statsmodels(order):
    """How the 1% is measured: 8 real-looking series of 800 points (cpu_like) are fitted by
    statsmodels' ARIMA (exact MLE, its default trend) and by the batched estimator. Each then
    forecasts the next 150 points one step ahead: statsmodels through its own Kalman filter
    (results.append(test).get_prediction), ours through the streaming filter the daemon runs
    (advanced through the 800 training points first). For every one of the 1,200 forecast
    points, |ours - statsmodels| / |statsmodels| must be below 1%; the largest relative
    difference over all points is what is asserted."""
    values = cpu_like(8, 950, seed=sum(order) + 7, integrated=order[1] > 0)
    train = values[:, :800]
    model = ArimaModel(ArimaParams(order=order, max_fit_points=800), STEP)
    model.fit(make_batch(train))
    ours = forecasts(model, values, 800)
    largest = 0.0
    for row in range(values.shape[0]):
        expected = statsmodels_one_step(train[row], values[row, 800:], order)
        largest = max(largest, float(np.max(np.abs(ours[row] - expected) / np.abs(expected))))
    assert largest < 0.01, f"largest relative difference {largest:.4%}"


def test_batched_arma_near_unit_root_forecasts_as_well_as_statsmodels():
    """A stationary ARMA(1,1) fitted to cyclic data sits near the unit root, where conditional
    least squares and exact likelihood pick visibly different coefficients (forecasts differ by
    up to ~2% there, so the 1% agreement is only claimed for the orders above). What must
    still hold: the batched forecasts are as accurate, RMSE within 5% of statsmodels'."""
    values = cpu_like(6, 950, seed=9, integrated=False)
    model = ArimaModel(ArimaParams(order=(1, 0, 1), max_fit_points=800), STEP)
    model.fit(make_batch(values[:, :800]))
    ours = forecasts(model, values, 800)
    actual = values[:, 800:]
    reference = np.array([statsmodels_one_step(values[row, :800], actual[row], (1, 0, 1))
                          for row in range(6)])
    rmse_ours = np.sqrt(np.mean((ours - actual) ** 2))
    rmse_reference = np.sqrt(np.mean((reference - actual) ** 2))
    assert rmse_ours < 1.05 * rmse_reference, (rmse_ours, rmse_reference)


def test_arima_statsmodels_implementation_is_usable():
    values = cpu_like(2, 300, seed=5, integrated=True)
    model = ArimaModel(ArimaParams(order=(1, 1, 1), implementation="statsmodels"), STEP)
    model.fit(make_batch(values))
    assert np.isfinite(forecasts(model, values, 290)).all()


def arima_detector(values: np.ndarray):
    raw = {"reader": {"url": "http://x:1"}, "queries": {}, "schedulers": {},
           "models": {"arima": {"type": "arima"}}}
    detector = build_detector(parse_config(raw, "test").models["arima"], STEP)
    detector.model.fit(make_batch(values))
    detector.update(make_batch(values))
    return detector


def test_corrupt_state_is_refused_not_fatal(tmp_path, caplog):
    values = cpu_like(2, 200, seed=6, integrated=True)
    detector = arima_detector(values)
    directory = tmp_path / "job"
    state.save_detector(directory, detector, 1.0, {"type": "arima"})
    version = directory / (directory / "current").read_text()
    fresh = arima_detector(values[:, :10])
    assert state.load_detector(directory, fresh, {"type": "other"}) is None
    (version / "arima.npz").write_bytes(b"not a numpy archive")
    assert state.load_detector(directory, fresh, {"type": "arima"}) is None
    assert "ignoring state" in caplog.text
    (directory / "current").write_text("v-missing")
    assert state.load_detector(directory, fresh, {"type": "arima"}) is None
