"""first_score: when a model starts scoring a new series, as `make run` prints it, held to what
the detector actually does."""

from __future__ import annotations

import numpy as np
import pytest

from anomaly_sidecar.config import load_config, parse_config
from anomaly_sidecar.detector import MIN_ERRORS, build_detector
from anomaly_sidecar.first_score import first_scores
from anomaly_sidecar.models.base import SeriesBatch
from scripts.stack import DEFAULT_SIDECAR_CONFIG


def config_with(model: dict, step: str, infer_every: str = "15s"):
    return parse_config({
        "reader": {"url": "http://127.0.0.1:9090"},
        "queries": {"q": {"expr": "up", "step": step}},
        "models": {"m": {"queries": ["q"], **model}},
        "schedulers": {"s": {"fit_every": "1h", "fit_window": "1d", "infer_every": infer_every,
                             "models": ["m"]}},
    }, "test")


def first_scored_seconds(config, start: float) -> float:
    """Run the configured detector on a fresh series whose first sample is at `start` and
    return the time from that sample to its first finite score."""
    model_config = config.models["m"]
    step = config.queries["q"].step_seconds
    detector = build_detector(model_config, step)
    points = 2000
    timestamps = start + step * np.arange(points)
    values = 5.0 + np.sin(np.arange(points) / 3.0) + 0.1 * np.random.default_rng(1).normal(
        size=points)
    scored = detector.update(SeriesBatch([(("instance", "a"),)], timestamps, values[None, :]))
    first = int(np.argmax(np.isfinite(scored.anomaly_score[0])))
    assert np.isfinite(scored.anomaly_score[0, first])
    return first * step


@pytest.mark.parametrize(("model", "step"), [
    ({"type": "composite", "warm_up": "2m30s"}, "5s"),
    ({"type": "composite", "warm_up": "20m"}, "15s"),
    ({"type": "composite", "novelty_width": "0", "shift_recent": "0"}, "1m"),
    ({"type": "zscore", "window": "1m", "warm_up": "2m"}, "5s"),
    ({"type": "mad", "window": "30m", "min_coverage": 0.9, "warm_up": "1m"}, "15s"),
])
@pytest.mark.parametrize("start", [1_700_000_000.0, 1_800_000_000.0],
                         ids=["mid-hour", "on-the-hour"])
def test_the_stated_time_is_when_the_detector_first_scores(model, step, start):
    """Also for a series first seen on the hour, whose warm-up ends within the first five
    minutes of an hour (its error model's first refresh must not wait for the next five)."""
    config = config_with(model, step)
    (first,) = first_scores(config)
    assert first.fit_retry_seconds is None
    assert first.seconds == first_scored_seconds(config, start)


def test_warm_up_is_at_least_min_errors_points():
    (short,) = first_scores(config_with({"type": "composite", "warm_up": "1m"}, "15s"))
    assert short.warm_up_seconds == MIN_ERRORS * 15
    (long,) = first_scores(config_with({"type": "composite"}, "15s"))
    assert long.warm_up_seconds == 3600


def test_a_model_that_learns_adds_its_fit_retries():
    (arima,) = first_scores(config_with({"type": "arima", "warm_up": "1m"}, "5s", "30s"))
    assert arima.fit_retry_seconds == 300
    assert arima.seconds == arima.forecast_seconds + 300
    (lstm,) = first_scores(config_with({"type": "lstm", "window": "30s", "warm_up": "1h"}, "5s"))
    assert lstm.forecast_seconds == 30
    assert lstm.seconds == 30 + 3600


def test_every_model_of_the_stack_config_scores_within_5_minutes_of_its_first_sample():
    config = load_config(DEFAULT_SIDECAR_CONFIG)
    firsts = first_scores(config)
    assert {(first.model_alias, first.query_alias) for first in firsts} == {
        (alias, query) for alias, model in config.models.items() for query in model.queries}
    assert max(first.seconds for first in firsts) <= 240
