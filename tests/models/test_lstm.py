"""The LSTM model: it learns, it batches every series into one forward pass, its raw band is
Telemanom's, and it loads no framework for configs that do not use it. What every model must do
(causality, gaps, state round trips, the band contract) is in tests/models/test_contract.py."""

import subprocess
import sys

import numpy as np
import pytest

from anomaly_sidecar.models.base import ModelParamError, Residuals, SeriesBatch, build_params
from anomaly_sidecar.models.lstm import LstmModel, LstmParams, telemanom_thresholds

STEP = 60.0
SMALL = {"window": "16m", "units": 16, "epochs": 8, "batch_size": 32}
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
                       np.arange(len(rows[0]), dtype=float) * STEP, np.vstack(rows))


def lstm(**changes) -> LstmModel:
    return LstmModel(build_params(LstmParams, {**SMALL, **changes}), STEP)


def stream(model: LstmModel, data: SeriesBatch, first: int) -> Residuals:
    """The model's forecasts of columns first.. after its state saw the columns before."""
    state = model.new_state(len(data.keys))
    model.advance(state, data.keys, data.timestamps[:first], data.values[:, :first])
    return model.advance(state, data.keys, data.timestamps[first:], data.values[:, first:])


@pytest.fixture(scope="module")
def fitted_on_sine():
    model = lstm()
    model.fit(batch([sine(1000)]))
    return model


def test_learns_a_sine_far_better_than_last_value(fitted_on_sine):
    values = sine(1400)
    forecast = stream(fitted_on_sine, batch([values]), 1000)
    actual = values[1000:]
    model_error = np.mean(np.abs(forecast.yhat[0] - actual))
    naive_error = np.mean(np.abs(values[999:-1] - actual))
    assert model_error < 0.35 * naive_error, (model_error, naive_error)


def test_raw_band_flags_a_planted_spike_and_no_normal_point(fitted_on_sine):
    """`calibration: raw`: Telemanom's threshold on the smoothed error, drawn as a band."""
    values = sine(1400)
    spike = 1200
    values[spike] += 8.0
    forecast = stream(fitted_on_sine, batch([values]), 1000)
    outside = np.abs(values[1000:] - forecast.yhat[0]) > forecast.raw_half_width[0]
    assert outside[spike - 1000]
    # normal points: all whose input window does not contain the spike
    affected = np.r_[spike - 1000:spike - 1000 + 17]
    assert not np.delete(outside, affected).any()


def test_saved_networks_use_the_keras_format(fitted_on_sine, tmp_path):
    fitted_on_sine.save(tmp_path)
    assert list(tmp_path.glob("*.keras")), "Keras native format expected"
    restored = lstm()
    restored.load(tmp_path)
    values = batch([sine(1200, seed=5)])
    np.testing.assert_array_equal(stream(fitted_on_sine, values, 1000).yhat,
                                  stream(restored, values, 1000).yhat)


def test_shared_model_serves_every_series_in_one_forward_pass(fitted_on_sine, monkeypatch):
    calls = []
    network = fitted_on_sine._networks["shared"]
    original = network.predict_on_batch
    monkeypatch.setattr(network, "predict_on_batch",
                        lambda inputs: calls.append(len(inputs)) or original(inputs))
    rows = [sine(400, phase=i / 7, scale=1 + i, offset=10 * i) for i in range(50)]
    data = batch(rows)
    fitted_on_sine.fit(SeriesBatch(data.keys, data.timestamps[:300], data.values[:, :300]))
    calls.clear()
    state = fitted_on_sine.new_state(50)
    forecast = fitted_on_sine.advance(state, data.keys, data.timestamps, data.values)
    assert calls == [50 * 400]
    assert np.isfinite(forecast.yhat[:, 16:]).all()
    error = np.mean(np.abs(forecast.yhat[49, 300:] - rows[49][300:]))
    assert error < 0.35 * np.mean(np.abs(np.diff(rows[49][299:])))
    assert not fitted_on_sine.can_forecast((("series", "never fitted"),))


def test_per_series_option_fits_one_network_per_series():
    model = lstm(epochs=1, per_series=True)
    model.fit(batch([sine(300), sine(300, phase=1.0)], ["a", "b"]))
    assert sorted(model._networks) == ['[["series", "a"]]', '[["series", "b"]]']
    assert model.can_forecast((("series", "a"),))
    assert not model.can_forecast((("series", "new"),))


def test_fit_is_reproducible_with_the_fixed_seed():
    forecasts = []
    for _ in range(2):
        model = lstm(epochs=2)
        model.fit(batch([sine(500)]))
        forecasts.append(stream(model, batch([sine(600)]), 550).yhat)
    np.testing.assert_array_equal(forecasts[0], forecasts[1])


def test_gaps_constant_and_short_series_do_not_break_it():
    model = lstm(epochs=1)
    gappy = sine(500)
    gappy[100:140] = np.nan
    model.fit(batch([gappy, np.full(500, 3.0), np.full(500, np.nan)]))
    assert model.can_forecast((("series", "s0"),)) and model.can_forecast((("series", "s1"),))
    assert not model.can_forecast((("series", "s2"),))
    values = np.vstack([sine(300), np.full(300, 3.0)])
    forecast = stream(model, batch(list(values)), 280)
    assert np.isfinite(forecast.yhat).all() and np.isfinite(forecast.raw_half_width).all()
    short = lstm()
    short.fit(batch([sine(10)]))
    assert not short.can_forecast((("series", "s0"),))


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


@pytest.mark.parametrize(("raw", "key"), [({"window": 0}, "window"), ({"window": 16}, "window"),
                                          ({"dropout": 1.0}, "dropout"),
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
            "from anomaly_sidecar.detector import build_detector; "
            "build_detector(resolve_setup(None, None).model, 60.0); "
            "import anomaly_sidecar.models.lstm; "
            "print(sorted(m for m in ('keras', 'tensorflow', 'torch') if m in sys.modules))")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout
    assert output.strip() == "[]"
