"""zscore, mad and arima: causal one-step forecasts, NaN/Inf safety, agreement of the batched
ARIMA with statsmodels, and state files that survive (or are safely refused)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from anomaly_sidecar import state
from anomaly_sidecar.models.arima import ArimaModel, ArimaParams
from anomaly_sidecar.models.base import Forecast, SeriesBatch, build_params, model_class
from anomaly_sidecar.scoring import score_forecast

MODEL_PARAMS = {"zscore": {"window": 20}, "mad": {"window": 20},
                "arima": {"order": [1, 1, 1]}}


def make_batch(values: np.ndarray) -> SeriesBatch:
    keys = [(("series", str(i)),) for i in range(values.shape[0])]
    return SeriesBatch(keys, 60.0 * np.arange(values.shape[1]), values)


def fitted(type_name: str, batch: SeriesBatch):
    model_type = model_class(type_name)
    model = model_type(build_params(model_type.Params, MODEL_PARAMS[type_name]))
    model.fit(batch)
    return model


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


@pytest.mark.parametrize("type_name", ["zscore", "mad", "arima"])
def test_forecasts_are_causal(type_name):
    """predict over many targets equals predicting each target from its past alone."""
    values = cpu_like(3, 300, seed=1, integrated=False)
    model = fitted(type_name, make_batch(values[:, :250]))
    together = model.predict(make_batch(values), 20)
    for offset in range(20):
        column = 280 + offset
        alone = model.predict(make_batch(values[:, :column + 1]), 1)
        np.testing.assert_allclose(together.yhat[:, offset], alone.yhat[:, 0], rtol=1e-9)
        np.testing.assert_allclose(together.yhat_upper[:, offset], alone.yhat_upper[:, 0],
                                   rtol=1e-9)
    future = values.copy()
    future[:, -1] += 1000.0
    np.testing.assert_allclose(model.predict(make_batch(future), 1).yhat,
                               model.predict(make_batch(values), 1).yhat)


@pytest.mark.parametrize("type_name", ["zscore", "mad", "arima"])
def test_nan_and_inf_never_leak_into_later_forecasts(type_name):
    values = cpu_like(4, 400, seed=2, integrated=False)
    values[0, 300] = np.nan
    values[1, 310:315] = np.inf
    values[2, 320] = -np.inf
    values[3, 330:340] = np.nan
    model = fitted(type_name, make_batch(values[:, :290]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        forecast = model.predict(make_batch(values), 100)
    assert np.isfinite(forecast.yhat).all()
    assert np.isfinite(forecast.yhat_lower).all() and np.isfinite(forecast.yhat_upper).all()
    assert (forecast.yhat_lower <= forecast.yhat).all()
    assert (forecast.yhat <= forecast.yhat_upper).all()
    corrupted_fit = fitted(type_name, make_batch(values))
    assert np.isfinite(corrupted_fit.predict(make_batch(values), 50).yhat).all()


def test_mad_band_is_not_widened_by_one_spike():
    values = cpu_like(1, 200, seed=3, integrated=False)
    spiked = values.copy()
    spiked[0, 190] += 500
    zscore, mad = fitted("zscore", make_batch(values)), fitted("mad", make_batch(values))
    def width(model, data):
        forecast = model.predict(make_batch(data), 1)
        return float(forecast.yhat_upper[0, 0] - forecast.yhat_lower[0, 0])
    assert width(mad, spiked) < 1.5 * width(mad, values)
    assert width(zscore, spiked) > 5 * width(zscore, values)


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
    (results.append(test).get_prediction), ours through one_step_forecasts. For every one of
    the 1,200 forecast points, |ours - statsmodels| / |statsmodels| must be below 1%; the
    largest relative difference over all points is what is asserted."""
    values = cpu_like(8, 950, seed=sum(order) + 7, integrated=order[1] > 0)
    train = values[:, :800]
    model = ArimaModel(ArimaParams(order=order, max_fit_points=800))
    model.fit(make_batch(train))
    ours = model.predict(make_batch(values), 150).yhat
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
    model = ArimaModel(ArimaParams(order=(1, 0, 1), max_fit_points=800))
    model.fit(make_batch(values[:, :800]))
    ours = model.predict(make_batch(values), 150).yhat
    actual = values[:, 800:]
    reference = np.array([statsmodels_one_step(values[row, :800], actual[row], (1, 0, 1))
                          for row in range(6)])
    rmse_ours = np.sqrt(np.mean((ours - actual) ** 2))
    rmse_reference = np.sqrt(np.mean((reference - actual) ** 2))
    assert rmse_ours < 1.05 * rmse_reference, (rmse_ours, rmse_reference)


def test_arima_statsmodels_implementation_is_usable():
    values = cpu_like(2, 300, seed=5, integrated=True)
    model = ArimaModel(ArimaParams(order=(1, 1, 1), implementation="statsmodels"))
    model.fit(make_batch(values))
    assert np.isfinite(model.predict(make_batch(values), 10).yhat).all()


@pytest.mark.parametrize("type_name", ["zscore", "mad", "arima"])
def test_state_round_trip(tmp_path, type_name):
    values = cpu_like(3, 300, seed=4, integrated=True)
    model = fitted(type_name, make_batch(values))
    identity = {"type": type_name, "expr": "up"}
    state.save_model(tmp_path / "job", model, 1234.5, identity)
    restored = state.load_model(tmp_path / "job", type(model), model.params, identity)
    assert restored is not None and restored.fitted_at == 1234.5
    np.testing.assert_array_equal(restored.model.predict(make_batch(values), 30).yhat,
                                  model.predict(make_batch(values), 30).yhat)
    assert state.load_model(tmp_path / "job", type(model), model.params,
                            {"type": type_name, "expr": "other"}) is None


def test_corrupt_state_is_refused_not_fatal(tmp_path, caplog):
    values = cpu_like(2, 200, seed=6, integrated=True)
    model = fitted("arima", make_batch(values))
    directory = tmp_path / "job"
    state.save_model(directory, model, 1.0, {"type": "arima"})
    version = directory / (directory / "current").read_text()
    (version / "arima.npz").write_bytes(b"not a numpy archive")
    assert state.load_model(directory, ArimaModel, model.params, {"type": "arima"}) is None
    assert "ignoring state" in caplog.text
    (directory / "current").write_text("v-missing")
    assert state.load_model(directory, ArimaModel, model.params, {"type": "arima"}) is None


def test_model_score_hint_survives_y_equal_to_yhat_but_not_the_rules():
    """A model's own score is kept where y happens to equal yhat (the band formula would say 0),
    while detection_direction and min_dev_from_expected still zero it."""
    y = np.array([[5.0, 5.0, 4.0, 5.2]])
    forecast = Forecast(yhat=np.full((1, 4), 5.0), yhat_lower=np.full((1, 4), 4.5),
                        yhat_upper=np.full((1, 4), 5.5), score_hint=np.full((1, 4), 2.5))
    np.testing.assert_array_equal(score_forecast(y, forecast), [[2.5, 2.5, 2.5, 2.5]])
    np.testing.assert_array_equal(score_forecast(y, forecast, direction="above"),
                                  [[2.5, 2.5, 0.0, 2.5]])
    np.testing.assert_array_equal(score_forecast(y, forecast, min_dev_from_expected=0.5),
                                  [[0.0, 0.0, 2.5, 0.0]])
