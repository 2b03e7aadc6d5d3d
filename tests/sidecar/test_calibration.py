"""The calibration layer and the alarm gate every model shares.

A calibrated score >= 1 must mean "as rare as the sensitivity allows" whatever the shape of a
series' errors, and the gate must turn an episode into one alarm."""

from __future__ import annotations

import numpy as np
import pytest

from anomaly_sidecar import alarms, calibration

SETTINGS = calibration.CalibrationSettings(alpha=1e-3, memory_seconds=3 * 86400,
                                           warm_up_seconds=3600, min_errors=30)


def exceedance_rate(errors: np.ndarray, settings: calibration.CalibrationSettings,
                    step: float = 60.0, skip: int = 5000) -> float:
    """Share of scored points (after the first `skip`) with a calibrated score >= 1."""
    state = calibration.new_state(errors.shape[1])
    hits = scored = 0
    for column, row in enumerate(errors):
        scores, _ = calibration.score(state, settings, column * step, row)
        if column >= skip:
            finite = np.isfinite(scores)
            hits += int((scores[finite] >= 1).sum())
            scored += int(finite.sum())
    return hits / scored


@pytest.mark.parametrize(("name", "draw"), [
    ("half-normal", lambda rng, shape: np.abs(rng.normal(size=shape))),
    ("exponential", lambda rng, shape: rng.exponential(size=shape)),
    ("lognormal", lambda rng, shape: rng.lognormal(0.0, 1.0, size=shape)),
    ("pareto 2.5", lambda rng, shape: rng.pareto(2.5, size=shape)),
])
@pytest.mark.parametrize("alpha", [1e-3, 1e-4])
def test_score_one_means_the_asked_rarity_whatever_the_tail(name, draw, alpha):
    """1e-4 is beyond anything a histogram of three days at a 1-minute step could resolve
    (4,320 points): the fitted tail must extrapolate to it. Within a factor of 3 either way,
    for tails from light (half-normal) to heavy (Pareto)."""
    errors = draw(np.random.default_rng(7), (20000, 40))
    settings = calibration.CalibrationSettings(alpha, 3 * 86400, 3600, 30)
    rate = exceedance_rate(errors, settings)
    assert alpha / 3 < rate < alpha * 3, f"{name}: rate {rate:.2e} for alpha {alpha:.0e}"


def test_the_scale_of_a_series_does_not_matter():
    """The same errors in bytes or in ratios get the same scores."""
    errors = np.random.default_rng(1).exponential(size=(3000, 1))
    scores = []
    for scale in (1e-6, 1.0, 1e9):
        state = calibration.new_state(1)
        scores.append([calibration.score(state, SETTINGS, 60.0 * column, row * scale)[0][0]
                       for column, row in enumerate(errors)])
    np.testing.assert_allclose(scores[0], scores[1], rtol=0.03, equal_nan=True)
    np.testing.assert_allclose(scores[2], scores[1], rtol=0.03, equal_nan=True)


def test_no_score_before_the_warm_up_and_the_minimum_errors():
    state = calibration.new_state(1)
    scores = [calibration.score(state, SETTINGS, 60.0 * column, np.array([1.0]))[0][0]
              for column in range(120)]
    first = int(np.flatnonzero(np.isfinite(scores))[0])
    assert first == 60, "1h at a 1-minute step (30 errors come earlier)"
    state = calibration.new_state(1)
    slow = [calibration.score(state, SETTINGS, 3600.0 * column, np.array([1.0]))[0][0]
            for column in range(40)]
    assert int(np.flatnonzero(np.isfinite(slow))[0]) == 30, "hourly: the 30 errors decide"


def test_missing_errors_leave_the_state_alone():
    state = calibration.new_state(2)
    calibration.score(state, SETTINGS, 0.0, np.array([1.0, np.nan]))
    assert state["observed"].tolist() == [1, 0]
    assert np.isnan(state["first_time"][1])
    assert state["weights"][1].sum() == 0


def gate(settings: alarms.AlarmSettings, scores: list[float],
         must: list[bool] | None = None, step: float = 60.0) -> list[float]:
    state = alarms.new_state(1)
    published = []
    for column, score in enumerate(scores):
        forced = None if must is None else np.array([must[column]])
        published.append(float(alarms.gate(state, settings, column * step, np.array([score]),
                                           forced)[0][0]))
    return published


def test_quiet_period_turns_an_episode_into_one_alarm():
    settings = alarms.AlarmSettings(quiet_seconds=300)
    published = gate(settings, [0.5, 2.0, 3.0, 1.5, 0.2, 1.2, 1.1, 4.0])
    assert published[0] == 0.5 and published[1] == 2.0
    assert all(value < 1 for value in published[2:6]), "within 5 minutes: capped below 1"
    assert published[2] == alarms.BELOW_ONE and published[4] == 0.2
    assert published[6] == 1.1, "after the quiet period a score alarms again"
    assert published[7] == alarms.BELOW_ONE


def test_rearm_raises_the_level_for_a_flapping_series_but_not_for_new_extremes():
    settings = alarms.AlarmSettings(quiet_seconds=60, rearm_seconds=3600, rearm_step=0.5)
    published = gate(settings, [2.0, 0.0, 1.4, 0.0, 1.6, 0.0, 1.9, 0.0, 0.9],
                     must=[False] * 8 + [True])
    assert published[0] == 2.0
    assert published[2] == pytest.approx(1.4 / 1.5), "one recent alarm: level 1.5"
    assert published[4] == pytest.approx(1.6 / 1.5)
    assert published[6] == pytest.approx(1.9 / 2.0), "two recent alarms: level 2"
    assert published[8] == 1.0, "a must-alarm point alarms at any level"


def test_without_quiet_or_rearm_the_score_is_a_band_score():
    settings = alarms.AlarmSettings()
    assert settings.score_kind == "band"
    assert gate(settings, [2.0, 3.0, 1.5, 0.5]) == [2.0, 3.0, 1.5, 0.5]
    assert alarms.AlarmSettings(quiet_seconds=60).score_kind == "alarm"
