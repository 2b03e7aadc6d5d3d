"""The LSTM model: it learns, it scores by the output contract, it round-trips, it batches."""

import subprocess
import sys

import numpy as np
import pytest

from anomaly_sidecar.models.base import ModelParamError, SeriesBatch, build_params
from anomaly_sidecar.models.lstm import LstmModel, LstmParams, telemanom_thresholds
from anomaly_sidecar.scoring import score_forecast

SMALL = {"window": 16, "units": 16, "epochs": 8, "batch_size": 32, "error_history": 128}
PERIOD = 40


def sine(n_points: int, phase: float = 0.0, scale: float = 10.0, offset: float = 100.0,
         seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    steps = np.arange(n_points)
    return offset + scale * np.sin(2 * np.pi * steps / PERIOD + phase) \
        + rng.normal(0, 0.02 * scale, n_points)


def batch(rows: list[np.ndarray], names: list[str] | None = None) -> SeriesBatch:
    names = names or [f"s{i}" for i in range(len(rows))]
    return SeriesBatch([(("series", name),) for name in names],
                       np.arange(len(rows[0]), dtype=float) * 60, np.vstack(rows))


@pytest.fixture(scope="module")
def fitted_on_sine():
    model = LstmModel(LstmParams(**SMALL))
    model.fit(batch([sine(1000)]))
    return model


def test_learns_a_sine_far_better_than_last_value(fitted_on_sine):
    values = sine(1400)
    forecast = fitted_on_sine.predict(batch([values]), 400)
    actual = values[1000:]
    model_error = np.mean(np.abs(forecast.yhat[0] - actual))
    naive_error = np.mean(np.abs(values[999:-1] - actual))
    assert model_error < 0.35 * naive_error, (model_error, naive_error)


def test_planted_spike_scores_above_one_and_normal_points_below(fitted_on_sine):
    values = sine(1400)
    spike = 1200
    values[spike] += 8.0
    forecast = fitted_on_sine.predict(batch([values]), 400)
    scores = score_forecast(values[None, 1000:], forecast)[0]
    assert scores[spike - 1000] > 1
    # normal points: all whose input window does not contain the spike
    affected = slice(spike - 1000, spike - 1000 + SMALL["window"] + 1)
    normal = np.delete(scores, np.r_[affected])
    assert np.nanmax(normal) < 1, np.nanmax(normal)
    assert np.isfinite(normal).all()


def test_band_edges_are_exactly_where_the_score_reaches_one(fitted_on_sine):
    values = sine(1100)
    forecast = fitted_on_sine.predict(batch([values]), 50)
    at_upper = values.copy()
    at_upper[-1] = forecast.yhat_upper[0, -1]
    just_beyond = values.copy()
    just_beyond[-1] = forecast.yhat_upper[0, -1] + 1e-3
    assert score_forecast(at_upper[None, -1:], _last(forecast))[0, 0] == pytest.approx(1.0)
    assert score_forecast(just_beyond[None, -1:], _last(forecast))[0, 0] > 1


def _last(forecast):
    return type(forecast)(forecast.yhat[:, -1:], forecast.yhat_lower[:, -1:],
                          forecast.yhat_upper[:, -1:])


def test_save_load_round_trip_gives_identical_forecasts(fitted_on_sine, tmp_path):
    fitted_on_sine.save(tmp_path)
    assert list(tmp_path.glob("*.keras")), "Keras native format expected"
    restored = LstmModel.load(tmp_path, fitted_on_sine.params)
    values = batch([sine(1200, seed=5)])
    original, again = fitted_on_sine.predict(values, 100), restored.predict(values, 100)
    np.testing.assert_array_equal(original.yhat, again.yhat)
    np.testing.assert_array_equal(original.yhat_upper, again.yhat_upper)


def test_shared_model_serves_every_series_in_one_forward_pass(fitted_on_sine, monkeypatch):
    calls = []
    network = fitted_on_sine._networks["shared"]
    original = network.predict_on_batch
    monkeypatch.setattr(network, "predict_on_batch",
                        lambda inputs: calls.append(len(inputs)) or original(inputs))
    rows = [sine(400, phase=i / 7, scale=1 + i, offset=10 * i) for i in range(50)]
    forecast = fitted_on_sine.predict(batch(rows), 100)
    assert len(calls) == 1
    assert calls[0] == 50 * (400 - SMALL["window"])
    assert np.isfinite(forecast.yhat).all()
    # an unseen series at another scale is normalised with its own past: still a good forecast
    error = np.mean(np.abs(forecast.yhat[49] - rows[49][300:]))
    assert error < 0.35 * np.mean(np.abs(np.diff(rows[49][299:])))


def test_per_series_option_fits_one_network_per_series():
    model = LstmModel(LstmParams(**{**SMALL, "epochs": 1, "per_series": True}))
    model.fit(batch([sine(300), sine(300, phase=1.0)], ["a", "b"]))
    assert sorted(model._networks) == ['[["series", "a"]]', '[["series", "b"]]']
    assert model.can_predict((("series", "a"),))
    assert not model.can_predict((("series", "new"),))


def test_fit_is_reproducible_with_the_fixed_seed():
    forecasts = []
    for _ in range(2):
        model = LstmModel(LstmParams(**{**SMALL, "epochs": 2}))
        model.fit(batch([sine(500)]))
        forecasts.append(model.predict(batch([sine(600)]), 50).yhat)
    np.testing.assert_array_equal(forecasts[0], forecasts[1])


def test_gaps_constant_and_short_series_do_not_break_it():
    model = LstmModel(LstmParams(**{**SMALL, "epochs": 1}))
    gappy = sine(500)
    gappy[100:140] = np.nan
    model.fit(batch([gappy, np.full(500, 3.0), np.full(500, np.nan)]))
    assert model.can_predict((("series", "s0"),))
    values = np.vstack([sine(300), np.full(300, 3.0), np.full(300, np.inf)])
    forecast = model.predict(batch(list(values)), 20)
    assert np.isfinite(forecast.yhat[:2]).all()
    assert np.isfinite(score_forecast(values[:2, -20:], forecast.__class__(
        forecast.yhat[:2], forecast.yhat_lower[:2], forecast.yhat_upper[:2]))).all()
    short = LstmModel(LstmParams(**SMALL))
    short.fit(batch([sine(10)]))
    assert not short.can_predict((("series", "s0"),))


def test_telemanom_threshold_separates_a_clear_outlier_per_series():
    rng = np.random.default_rng(0)
    errors = np.abs(rng.normal(0, 1, (3, 500)))
    errors[0, 250] = 30.0
    errors[1, 100:300] = np.nan   # gaps are ignored
    errors[1, 400] = 50.0
    errors[2] = 0.0               # nothing to separate: the floor
    epsilons = telemanom_thresholds(errors, floor=0.2)
    assert errors[0].max() > epsilons[0] > np.sort(errors[0])[-2]
    assert 50.0 > epsilons[1] > np.sort(errors[1][np.isfinite(errors[1])])[-2]
    assert epsilons[2] == 0.2


@pytest.mark.parametrize(("raw", "key"), [({"window": 0}, "window"), ({"dropout": 1.0}, "dropout"),
                                          ({"learning_rate": 0}, "learning_rate"),
                                          ({"units": "many"}, "units"), ({"lstm_size": 3},
                                                                          "lstm_size")])
def test_bad_parameters_name_the_key(raw, key):
    with pytest.raises(ModelParamError) as error:
        build_params(LstmParams, raw)
    assert error.value.key == key


def test_non_lstm_configs_never_import_a_deep_learning_framework():
    code = ("import sys; from anomaly_sidecar.cli import main; "
            "from anomaly_sidecar.backtest_cli import resolve_setup; "
            "from anomaly_sidecar.config import build_model; "
            "build_model(resolve_setup(None, None).model); "
            "import anomaly_sidecar.models.lstm; "
            "print(sorted(m for m in ('keras', 'tensorflow', 'torch') if m in sys.modules))")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout
    assert output.strip() == "[]"
