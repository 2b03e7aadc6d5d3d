"""What every registered model type must do, through the detector the daemon and the backtest
run (model + calibration + alarm gate). Model types are discovered from the package on disk
(base.model_types), so a new model file is held to this contract without being listed here.

- strict causality on a series longer than the model's whole context: changing the future
  changes no earlier score, and no forecast of the point changed itself;
- the same scores however the points are split into updates (one pass, random cycles) and
  across a save/restore of the whole state;
- NaN, +-Inf and gaps: no exception, no score for a missing point, scores again after it.
"""

from __future__ import annotations

import copy
import itertools
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest

from anomaly_sidecar.config import parse_config
from anomaly_sidecar.detector import Detector, build_detector
from anomaly_sidecar.models.base import SeriesBatch, model_types

STEP = 300.0
KEYS = [(("series", str(index)),) for index in range(3)]
SMALL = {"lstm": {"window": "40m", "units": 4, "epochs": 1, "batch_size": 64},
         "arima": {"max_fit_points": 400}}
"""Smaller settings where the defaults would only make the test slow."""
TOLERANCE = {"lstm": 1e-6}
"""float32 networks may round differently in differently sized batches; everything else must
agree to 1e-9."""


def test_every_model_file_is_a_registered_type():
    assert {"composite", "zscore", "mad", "arima", "lstm"} <= set(model_types())


def series(n_points: int, seed: int) -> np.ndarray:
    """Three series with a daily cycle, noise, a spike, a level shift and a dip."""
    rng = np.random.default_rng(seed)
    days = np.arange(n_points) * STEP / 86400.0
    values = 50 + 10 * np.sin(2 * np.pi * days)[None, :] + rng.normal(0, 1.0, (3, n_points))
    values[0, int(0.8 * n_points)] += 40
    values[1, int(0.85 * n_points):] += 15
    values[2, int(0.9 * n_points):int(0.9 * n_points) + 12] -= 25
    return values


def build(type_name: str) -> Detector:
    section = {"type": type_name, **SMALL.get(type_name, {}), "quiet": "1h", "rearm": "6h",
               "rearm_step": 0.5, "warm_up": "2h"}
    raw = {"reader": {"url": "http://x:1"}, "queries": {}, "schedulers": {},
           "models": {"m": section}}
    return build_detector(parse_config(raw, "contract").models["m"], STEP)


def context_points(detector: Detector) -> int:
    return int(np.ceil(detector.model.history_seconds / STEP))


def run(type_name: str, values: np.ndarray, cuts: list[int], fit_until: int,
        restore_at: int | None = None, output: str = "anomaly_score") -> np.ndarray:
    """One output (scores by default) of every column, updating at the given cuts (restoring
    the whole detector from disk at restore_at). A learning model is fitted once, on the
    columns before fit_until, which are not scored."""
    timestamps = 1.7e9 + STEP * np.arange(values.shape[1])
    detector = build(type_name)
    fit = SeriesBatch(KEYS, timestamps[:fit_until], values[:, :fit_until])
    if detector.model.learns:
        detector.model.fit(fit)
    scores = np.full(values.shape, np.nan)
    bounds = [fit_until, *sorted(set(cuts)), values.shape[1]]
    for start, end in itertools.pairwise(bounds):
        if start == restore_at:
            with tempfile.TemporaryDirectory() as directory:
                detector.save(Path(directory))
                detector = build(type_name)
                detector.load(Path(directory))
        result = detector.update(SeriesBatch(KEYS, timestamps[start:end], values[:, start:end]))
        scores[:, start:end] = getattr(result, output)
    return scores


@pytest.fixture(params=model_types())
def type_name(request) -> str:
    return request.param


def test_causal_on_a_series_longer_than_its_whole_context(type_name):
    context = context_points(build(type_name))
    n_points = 400 + context + 300
    values = series(n_points, seed=1)
    fit_until = 400
    baseline = run(type_name, values, [], fit_until)
    assert np.isfinite(baseline[:, -200:]).all(), "a warm series must be scored"
    forecasts = run(type_name, values, [], fit_until, output="yhat")
    for cut in (fit_until + context + 10, n_points - 50):
        future = values.copy()
        future[:, cut:] = future[:, cut:] * 3 + 100
        changed = run(type_name, future, [], fit_until)
        np.testing.assert_array_equal(changed[:, :cut], baseline[:, :cut])
        changed_forecasts = run(type_name, future, [], fit_until, output="yhat")
        np.testing.assert_array_equal(changed_forecasts[:, :cut + 1], forecasts[:, :cut + 1])


def test_same_scores_in_cycles_and_across_a_restore(type_name):
    values = series(1400, seed=2)
    rng = np.random.default_rng(3)
    cuts = sorted(rng.choice(np.arange(401, 1400), 25, replace=False).tolist())
    one_pass = run(type_name, values, [], 400)
    in_cycles = run(type_name, values, cuts, 400)
    restored = run(type_name, values, cuts, 400, restore_at=cuts[12])
    tolerance = TOLERANCE.get(type_name, 1e-9)
    for other in (in_cycles, restored):
        np.testing.assert_array_equal(np.isnan(other), np.isnan(one_pass))
        np.testing.assert_allclose(other, one_pass, rtol=tolerance, atol=tolerance)
    assert (np.nan_to_num(one_pass) >= 1).any(), "the injected anomalies must alarm"


def test_nan_inf_and_gaps(type_name):
    values = series(1400, seed=4)
    values[0, 900] = np.nan
    values[1, 950:990] = np.nan
    values[2, 1000] = np.inf
    values[2, 1001] = -np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = run(type_name, values, [1000, 1200], 400)
    assert np.isnan(scores[0, 900]) and np.isnan(scores[1, 950:990]).all()
    assert np.isnan(scores[2, 1000:1002]).all()
    assert np.isfinite(scores[:, 1100:]).all(), "scoring resumes after a gap"


def test_the_band_is_where_the_score_reaches_one(type_name):
    """The output contract: with band semantics (no quiet period), a value on yhat_upper scores
    1 and one just beyond it more; for a model with further error channels (composite) the
    deviation channel alone already scores 1 there, so the score is at least 1."""
    values = series(1200, seed=6)
    timestamps = 1.7e9 + STEP * np.arange(values.shape[1])
    raw = {"reader": {"url": "http://x:1"}, "queries": {}, "schedulers": {},
           "models": {"m": {"type": type_name, **SMALL.get(type_name, {}), "quiet": "0",
                            "rearm": "0"}}}
    detector = build_detector(parse_config(raw, "contract").models["m"], STEP)
    if detector.model.learns:
        detector.model.fit(SeriesBatch(KEYS, timestamps[:400], values[:, :400]))
    detector.update(SeriesBatch(KEYS, timestamps[:-1], values[:, :-1]))
    probe = copy.deepcopy(detector).update(SeriesBatch(KEYS, timestamps[-1:], values[:, -1:]))
    upper = probe.yhat_upper[:, 0]
    assert np.isfinite(upper).all() and (upper > probe.yhat[:, 0]).all()
    for offset, expected in ((0.0, 1.0), (1e-3 * np.abs(upper), None)):
        edge = values[:, -1:].copy()
        edge[:, 0] = upper + offset
        scores = copy.deepcopy(detector).update(SeriesBatch(KEYS, timestamps[-1:], edge))
        if expected is None:
            assert (scores.anomaly_score[:, 0] > 1).all()
        elif detector.model.extra_channels:
            assert (scores.anomaly_score[:, 0] >= 1 - 1e-9).all()
        else:
            np.testing.assert_allclose(scores.anomaly_score[:, 0], 1.0, rtol=1e-9)
