"""The detector as a whole: the same rarity for every model, the same alarms at every query
step, and scores for short histories."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from anomaly_sidecar.config import load_config, parse_config
from anomaly_sidecar.detector import Detector, build_detector
from anomaly_sidecar.models.base import SeriesBatch

DEFAULT_CONFIG = Path(__file__).parents[2] / "anomaly_sidecar" / "default_config.yaml"
KEY = (("series", "a"),)
DAY = 86400.0


def detector(section: dict, step: float) -> Detector:
    raw = {"reader": {"url": "http://x:1"}, "queries": {}, "schedulers": {},
           "models": {"m": section}}
    return build_detector(parse_config(raw, "test").models["m"], step)


def default_detector(step: float) -> Detector:
    return build_detector(load_config(DEFAULT_CONFIG).models["default"], step)


def scores(built: Detector, timestamps: np.ndarray, values: np.ndarray) -> np.ndarray:
    keys = [(("series", str(row)),) for row in range(values.shape[0])]
    return built.update(SeriesBatch(keys, timestamps, values)).anomaly_score


def ar_noise(n_series: int, n_points: int, seed: int) -> np.ndarray:
    """AR(1) noise around a level with a daily cycle: normal behaviour, no anomaly."""
    rng = np.random.default_rng(seed)
    noise = np.zeros((n_series, n_points))
    shocks = rng.normal(0, 1, (n_series, n_points))
    for column in range(1, n_points):
        noise[:, column] = 0.6 * noise[:, column - 1] + shocks[:, column]
    cycle = 5 * np.sin(2 * np.pi * np.arange(n_points) * 300 / DAY)
    return 50 + cycle[None, :] + noise


@pytest.mark.parametrize("section", [
    {"type": "zscore"}, {"type": "mad"}, {"type": "arima"},
    {"type": "composite", "extreme_range": "0", "shift_recent": "0"}])
def test_score_one_means_the_same_rarity_for_every_model(section):
    """With the sensitivity at 4 false alarms a day and no quiet period, series without
    anomalies alarm about 4 times a day whichever model forecasts them (within a factor of 3:
    the models' errors have very different tails, which is what the calibration absorbs).
    The composite is measured on its deviation and novelty channels: its level-shift channel
    moves so slowly that its rare excursions come in long runs, which makes the model as a
    whole alarm less often than the sensitivity allows (0.7 a day here), never more."""
    step, days = 300.0, 10
    n_points = int(days * DAY / step)
    values = ar_noise(6, n_points, seed=11)
    timestamps = 1.7e9 + step * np.arange(n_points)
    built = detector({**section, "false_alarms_per_day": 4.0, "quiet": "0", "rearm": "0"}, step)
    if built.model.learns:
        keys = [(("series", str(row)),) for row in range(values.shape[0])]
        built.model.fit(SeriesBatch(keys, timestamps[:600], values[:, :600]))
    result = scores(built, timestamps, values)[:, int(2 * DAY / step):]
    per_day = (result >= 1).sum() / (values.shape[0] * (days - 2))
    assert 4 / 3 < per_day < 4 * 3, f"{section['type']}: {per_day:.2f} alarms a day"


def spiky_series(step: float) -> tuple[np.ndarray, np.ndarray, list[tuple[float, float]]]:
    """Three days of a daily cycle with white noise at 15 s, subsampled to `step`, with a
    spike, a level shift and a dip in the last day; returns the anomalies' [start, end)."""
    fine = np.arange(0, 3 * DAY, 15.0)
    rng = np.random.default_rng(5)
    values = 100 + 20 * np.sin(2 * np.pi * fine / DAY) + rng.normal(0, 1.0, len(fine))
    anomalies = [(2.2 * DAY, 2.2 * DAY + 120, 30.0), (2.5 * DAY, 2.5 * DAY + 1800, 25.0),
                 (2.8 * DAY, 2.8 * DAY + 180, -30.0)]
    for start, end, size in anomalies:
        values[(fine >= start) & (fine < end)] += size
    keep = np.round(fine / step) * step == fine
    return 1.7e9 + fine[keep], values[keep], [(start, end) for start, end, _ in anomalies]


def test_the_same_series_at_15s_and_1m_alarms_at_the_same_moments():
    """Every window of the default is a duration, so the same series read at a 15-second and
    a 1-minute step alarms on each anomaly within one (1-minute) step of the other."""
    first_alarms = {}
    for step in (15.0, 60.0):
        timestamps, values, anomalies = spiky_series(step)
        result = scores(default_detector(step), timestamps, values[None, :])[0]
        alarmed = timestamps[np.nan_to_num(result) >= 1] - 1.7e9
        first_alarms[step] = [float(alarmed[(alarmed >= start) & (alarmed < end + 600)].min())
                              for start, end in anomalies]
    for fine, coarse in zip(first_alarms[15.0], first_alarms[60.0], strict=True):
        assert abs(fine - coarse) <= 60.0, first_alarms


@pytest.mark.parametrize(("step", "n_points"), [(60.0, 300), (3600.0, 300)])
def test_a_short_history_is_scored_after_a_short_warm_up(step, n_points):
    """A new service (300 minutes) or an hourly recording rule (300 hours): scored from its
    warm-up on, and a spike near the end lies outside the band (whether it pages also depends
    on the quiet period after any earlier alarm)."""
    rng = np.random.default_rng(2)
    values = 10 + rng.normal(0, 0.5, n_points)
    spike = n_points - 20
    values[spike] += 8
    timestamps = 1.7e9 + step * np.arange(n_points)
    result = default_detector(step).update(
        SeriesBatch([KEY], timestamps, values[None, :]))
    first_scored = int(np.flatnonzero(np.isfinite(result.anomaly_score[0]))[0])
    assert first_scored <= 61, "an hour after the first point (a forecast needs one earlier point)"
    assert values[spike] > result.yhat_upper[0, spike]


def test_the_default_needs_no_more_history_than_its_fit_window():
    config = load_config(DEFAULT_CONFIG)
    fit_window = config.schedulers["default"].fit_window_seconds
    for step in (15.0, 60.0, 300.0):
        assert default_detector(step).model.history_seconds <= fit_window
