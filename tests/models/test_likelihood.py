"""The likelihood model (the shipped default): rare events score > 1, routine noise < 1."""

import numpy as np
import pytest

from anomaly_sidecar.models.base import ModelParamError, SeriesBatch, build_params
from anomaly_sidecar.models.likelihood import (
    LikelihoodModel,
    LikelihoodParams,
    _gate_alarms,
    _level_shift,
    _novelty,
)
from anomaly_sidecar.scoring import score_forecast

PARAMS = LikelihoodParams()


def daily(n_points: int, noise: float = 1.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    steps = np.arange(n_points)
    return 50 + 10 * np.sin(2 * np.pi * steps / 288) + rng.normal(0, noise, n_points)


def scores(values: np.ndarray, n_targets: int, params: LikelihoodParams = PARAMS) -> np.ndarray:
    rows = np.atleast_2d(values)
    batch = SeriesBatch([(("s", str(i)),) for i in range(len(rows))],
                        np.arange(rows.shape[1], dtype=float) * 300, rows)
    forecast = LikelihoodModel(params).predict(batch, n_targets)
    return score_forecast(rows[:, -n_targets:], forecast)


def test_routine_noise_stays_below_one_for_days():
    result = scores(daily(3000), 1500)[0]
    assert np.isfinite(result).all()
    assert result.max() < 1


def test_spike_and_level_shift_score_above_one():
    values = daily(3000)
    values[2000] += 40            # beyond the running range: a spatial anomaly
    values[2600:] += 25           # a lasting shift
    result = scores(values, 1500)[0]
    assert result[2000 - 1500] > 1
    assert result[2600 - 1500:2620 - 1500].max() > 1   # within the first 20 points
    assert (result[:2000 - 1500] < 1).all()


def test_repeated_alarms_are_suppressed_for_quiet_points():
    values = daily(3000)
    values[2000] += 40
    values[2010] += 60
    loud = scores(values, 1500, LikelihoodParams(quiet_points=0))[0]
    quiet = scores(values, 1500)[0]
    assert loud[510] > 1 and quiet[500] > 1
    assert quiet[510] == 0.0


def test_each_recent_alarm_raises_the_bar_and_new_extremes_always_alarm():
    params = LikelihoodParams(alarm_level=0.3, quiet_points=30, rearm_points=250,
                              rearm_step=0.5)
    u = np.full((1, 1000), 0.1)
    spatial = np.zeros((1, 1000), dtype=bool)
    u[0, [100, 200, 210, 260, 700]] = [0.5, 0.5, 0.9, 0.5, 0.5]
    spatial[0, 300] = True
    score = _gate_alarms(u, spatial, params)[0]
    assert score[100] == pytest.approx(0.5 / 0.3)           # first alarm: the base level
    assert score[200] == pytest.approx(0.5 / 0.45)          # one alarm in the last 250 points
    assert score[210] == 0.0                                 # inside the quiet period
    assert score[260] == pytest.approx(0.5 / 0.6)           # two: not an alarm any more
    assert score[300] == pytest.approx(1 / 0.3)             # a new extreme alarms regardless
    assert score[700] == pytest.approx(0.5 / 0.3)           # 250 quiet points: back to base
    assert score[400] == pytest.approx(0.1 / 0.6)           # 200 and 300 are still recent
    fixed = _gate_alarms(u, spatial, LikelihoodParams(rearm_step=0.0))[0]
    assert fixed[260] == pytest.approx(0.5 / 0.3)


def test_changed_shape_within_the_usual_range_is_novel():
    values = daily(3000, noise=0.2)
    # a fast wiggle rides on the daily wave for 5 hours, inside its usual range
    values[2200:2260] += 5 * np.sin(2.0 * np.arange(60))
    result = scores(values, 1500)[0]
    assert result[2200 - 1500:2260 - 1500].max() > 1
    assert result[:2200 - 1500].max() < 1


def test_series_are_independent_and_gaps_tolerated():
    first, second = daily(2500, seed=1), daily(2500, seed=2) * 1000
    second[1800:1900] = np.nan
    first[2200] = np.inf
    result = scores(np.vstack([first, second]), 1000)
    assert np.isnan(result[0, 2200 - 1500]) and np.isnan(result[1, 1850 - 1500])
    assert np.nanmax(result[1]) < 1
    assert np.nanmax(result[0]) < 1


def test_constant_series_alarms_on_first_change():
    values = np.full(1000, 7.0)
    values[900] = 8.0
    result = scores(values, 500)[0]
    assert result[400] > 1
    assert np.nanmax(result[:400]) < 1


def test_a_repeated_value_keeps_its_score():
    # the published score is 0 where y == yhat; yhat is the recent level, not the last value,
    # so a run of equal values after a change still scores
    values = np.full(1000, 7.0)
    values[900:903] = 8.0
    result = scores(values, 500, LikelihoodParams(quiet_points=0))[0]
    assert (result[400:403] > 1).all()


def test_yhat_is_the_mean_of_the_last_error_window_points():
    values = daily(1000)
    batch = SeriesBatch([(("s", "a"),)], np.arange(1000.0), values[None])
    forecast = LikelihoodModel(PARAMS).predict(batch, 100)
    expected = [values[j - PARAMS.error_window:j].mean() for j in range(900, 1000)]
    np.testing.assert_allclose(forecast.yhat[0], expected)


def test_novelty_is_the_distance_to_the_nearest_earlier_window():
    values = np.array([[0.0, 1, 2, 0, 1, 2, 0, 1, 5]])
    novelty = _novelty(values, width=3, lookback=10)[0]
    assert np.isnan(novelty[:5]).all()           # no earlier non-overlapping window yet
    assert novelty[5] == pytest.approx(0.0)      # [0,1,2] repeats
    assert novelty[8] == pytest.approx(3 / np.sqrt(3))   # [0,1,5] vs [0,1,2]


def test_level_shift_is_the_distance_between_recent_and_earlier_means():
    values = np.array([[1.0, 1, 1, 1, 4, 4]])
    shift = _level_shift(values, recent=2, baseline=3)[0]
    assert np.isnan(shift[:2]).all()           # no earlier point yet
    assert shift[3] == pytest.approx(0.0)      # [1, 1] after [1, 1]
    assert shift[4] == pytest.approx(1.5)      # [1, 4] after [1, 1, 1]
    assert shift[5] == pytest.approx(3.0)      # [4, 4] after [1, 1, 1]


def test_level_shift_inside_the_usual_range_alarms_early():
    values = 50 + np.random.default_rng(0).normal(0, 1, 4000)
    values[300:320] += 20         # an early excursion: the later shift stays inside the range
    values[3000:] += 4            # same texture, new level
    result = scores(values, 1500)[0]
    novelty_only = scores(values, 1500, LikelihoodParams(shift_recent=0))[0]
    assert (result[:500] < 1).all()
    assert result[500:530].max() > 1
    assert result[500:600].max() > novelty_only[500:600].max()


def test_context_covers_the_range_and_every_look_back():
    params = LikelihoodParams(range_points=100, history=500, novelty_lookback=400,
                              shift_baseline=2000)
    assert LikelihoodModel(params).context_points == 500 + 3 + 30 + 2000
    assert LikelihoodModel(LikelihoodParams()).context_points == PARAMS.range_points


def test_save_load_round_trip(tmp_path):
    model = LikelihoodModel(PARAMS)
    model.save(tmp_path)
    restored = LikelihoodModel.load(tmp_path, PARAMS)
    batch = SeriesBatch([(("s", "a"),)], np.arange(500.0), daily(500)[None])
    np.testing.assert_array_equal(model.predict(batch, 100).score_hint,
                                  restored.predict(batch, 100).score_hint)


@pytest.mark.parametrize(("raw", "key"), [({"history": 0}, "history"),
                                          ({"alarm_level": 1.5}, "alarm_level"),
                                          ({"min_history": 5000}, "min_history"),
                                          ({"novelty_widths": [-1]}, "novelty_widths"),
                                          ({"shift_recent": -1}, "shift_recent"),
                                          ({"range_points": 0}, "range_points"),
                                          ({"quiet": 3}, "quiet"),
                                          ({"rearm_step": -0.1}, "rearm_step"),
                                          ({"min_error_mean": -0.1}, "min_error_mean"),
                                          ({"min_error_std": 0}, "min_error_std")])
def test_bad_parameters_name_the_key(raw, key):
    with pytest.raises(ModelParamError) as error:
        build_params(LikelihoodParams, raw)
    assert error.value.key == key
