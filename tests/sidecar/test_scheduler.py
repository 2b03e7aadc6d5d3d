"""Fits and inferences through SchedulerRunner against a real VictoriaMetrics holding imported
data: detection_direction, min_dev_from_expected and the warm-up reach the output, and a
point alarm is published once, while it is news."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from anomaly_sidecar.config import parse_config
from anomaly_sidecar.reader import PromReader
from anomaly_sidecar.scheduler import Job, SchedulerRunner
from anomaly_sidecar.self_metrics import SelfMetrics
from anomaly_sidecar.writers.pull import OutputCollector
from tests.sidecar.test_reader import import_lines
from tests.support.services import victoria_metrics, wait_for

BAND = {"type": "zscore", "window": "30m", "quiet": "0", "rearm": "0"}
"""Band semantics: the published score is the newest point's, which the test compares."""
MODELS = {
    "both": BAND,
    "above_only": {**BAND, "detection_direction": "above"},
    "below_only": {**BAND, "detection_direction": "below"},
    "tolerant": {**BAND, "min_dev_from_expected": 50.0},
    "cautious": {**BAND, "warm_up": "10h"},
}
ALARM_MODEL = {"type": "composite", "quiet": "30m", "rearm": "0", "false_alarms_per_day": 1}


def test_direction_min_dev_and_warm_up_shape_the_scores(tmp_path):
    step = 60.0
    end = math.floor(time.time() / step) * step - step
    stamps = end - step * np.arange(99, -1, -1)
    rng = np.random.default_rng(0)
    values = 100 + rng.normal(0, 1, len(stamps))
    values[-1] = 80.0
    with victoria_metrics(tmp_path / "vm", ["-search.latencyOffset=0s"]) as service:
        import_lines(service.url, {"drop": list(zip(stamps, values, strict=True))})
        config = parse_config({
            "reader": {"url": service.url},
            "queries": {"q": {"expr": "imported", "step": "1m"}},
            "models": MODELS,
            "schedulers": {"s": {"fit_every": "1h", "fit_window": "2h", "infer_every": "1m"}},
        }, "inline")
        outputs = OutputCollector()
        runner = SchedulerRunner(config.schedulers["s"], [], PromReader(config.reader),
                                 [outputs], SelfMetrics(CollectorRegistry()),
                                 clock=lambda: end + 1)
        reader = runner.reader
        wait_for(lambda: reader.query_range("imported", end - 600, end, step).keys, 20)
        for alias in MODELS:
            job = Job(config.schedulers["s"], config.models[alias], "q", config.queries["q"],
                      None)
            assert runner.fit(job) and runner.infer(job)
    scores, warm = {}, {}
    for metric in outputs.collect():
        for sample in metric.samples:
            target = scores if metric.name == "anomaly_score" else warm
            if metric.name in ("anomaly_score", "anomaly_sidecar_model_warm"):
                target[sample.labels["model_alias"]] = sample.value
    assert scores["both"] > 1
    assert scores["below_only"] == scores["both"]
    assert scores["above_only"] == 0
    assert scores["tolerant"] == 0
    assert "cautious" not in scores and warm["cautious"] == 0
    assert warm["both"] == 1


def published_scores(outputs: OutputCollector) -> dict[str, float]:
    return {sample.labels["model_alias"]: sample.value for metric in outputs.collect()
            if metric.name == "anomaly_score" for sample in metric.samples}


def test_a_point_alarm_between_two_inferences_is_published(tmp_path):
    """infer_every 3m over a 1m step: a point-alarm model's alarm falls on a column that is the
    latest at neither inference, yet anomaly_score carries it (the highest score of the columns
    since the last inference). A job seeing the series for the first time scores its history
    and publishes the alarm too (it is a minute old); the next inference, with no new alarm,
    publishes a quiet score."""
    step = 60.0
    end = math.floor(time.time() / step) * step - step
    stamps = end - step * np.arange(399, -1, -1)
    values = 100 + np.random.default_rng(1).normal(0, 1, len(stamps))
    values[-2] = 130.0  # a new extreme one column before the latest: a spatial alarm
    with victoria_metrics(tmp_path / "vm", ["-search.latencyOffset=0s"]) as service:
        import_lines(service.url, {"alarm": list(zip(stamps, values, strict=True))})
        config = parse_config({
            "reader": {"url": service.url},
            "queries": {"q": {"expr": "imported", "step": "1m"}},
            "models": {alias: ALARM_MODEL for alias in ("followed", "fresh")},
            "schedulers": {"s": {"fit_every": "1h", "fit_window": "6h", "infer_every": "3m"}},
        }, "inline")
        now = [end - 3 * step + 1]
        outputs = OutputCollector()
        runner = SchedulerRunner(config.schedulers["s"], [], PromReader(config.reader),
                                 [outputs], SelfMetrics(CollectorRegistry()), clock=lambda: now[0])
        wait_for(lambda: runner.reader.query_range("imported", end - 600, end, step).keys, 20)
        followed, fresh = (Job(config.schedulers["s"], config.models[alias], "q",
                               config.queries["q"], None) for alias in ("followed", "fresh"))
        assert runner.fit(followed) and runner.infer(followed)
        before = published_scores(outputs)["followed"]
        now[0] = end + 1
        assert runner.fit(fresh) and runner.infer(fresh) and runner.infer(followed)
        after = published_scores(outputs)
        now[0] = end + step + 1
        assert runner.infer(fresh)
        later = published_scores(outputs)
    assert before < 1
    assert after["followed"] >= 1 and after["fresh"] >= 1
    assert later["fresh"] < 1


def test_after_a_gap_only_alarms_within_alarm_catch_up_are_published(tmp_path):
    """A job last scored 30 minutes ago (a read outage) with an alarm 19 minutes ago: with the
    default alarm_catch_up (10m) the alarm is too old to page on and is not published; with
    alarm_catch_up 30m it is."""
    step = 60.0
    end = math.floor(time.time() / step) * step - step
    stamps = end - step * np.arange(399, -1, -1)
    values = 100 + np.random.default_rng(2).normal(0, 1, len(stamps))
    values[-20] = 130.0  # a new extreme 19 steps before the latest column
    with victoria_metrics(tmp_path / "vm", ["-search.latencyOffset=0s"]) as service:
        import_lines(service.url, {"gap": list(zip(stamps, values, strict=True))})
        config = parse_config({
            "reader": {"url": service.url},
            "queries": {"q": {"expr": "imported", "step": "1m"}},
            "models": {"detector": ALARM_MODEL},
            "schedulers": {
                "default": {"fit_every": "1h", "fit_window": "6h", "infer_every": "1m"},
                "long": {"fit_every": "1h", "fit_window": "6h", "infer_every": "1m",
                         "alarm_catch_up": "30m"}},
        }, "inline")
        now = [end - 30 * step + 1]
        published = {}
        for alias, scheduler in config.schedulers.items():
            outputs = OutputCollector()
            runner = SchedulerRunner(scheduler, [], PromReader(config.reader), [outputs],
                                     SelfMetrics(CollectorRegistry()), clock=lambda: now[0])
            wait_for(lambda runner=runner: runner.reader.query_range(
                "imported", end - 600, end, step).keys, 20)
            job = Job(scheduler, config.models["detector"], "q", config.queries["q"], None)
            now[0] = end - 30 * step + 1
            assert runner.fit(job) and runner.infer(job)
            assert published_scores(outputs)["detector"] < 1
            now[0] = end + 1
            assert runner.infer(job)
            published[alias] = published_scores(outputs)["detector"]
    assert published["default"] < 1
    assert published["long"] >= 1


def published_series(outputs: OutputCollector) -> dict[str, float]:
    return {sample.labels["series"]: sample.value for metric in outputs.collect()
            if metric.name == "anomaly_score" for sample in metric.samples}


@pytest.mark.parametrize("model", [{"type": "zscore", "window": "30m"}, {"type": "composite"}])
def test_two_missing_points_do_not_unpublish_a_series(tmp_path, model):
    """A series missing two samples in its last 15 minutes stays published through every
    inference (and the other series is unaffected); the next samples are scored as usual.
    VictoriaMetrics with its lookback fixed to the step, so a missing sample is a gap."""
    step = 60.0
    end = math.floor(time.time() / step) * step - step
    stamps = end - step * np.arange(239, -1, -1)
    rng = np.random.default_rng(4)
    missing = {len(stamps) - 12, len(stamps) - 7}
    series = {name: [(stamp, 50 + rng.normal()) for index, stamp in enumerate(stamps)
                     if name == "steady" or index not in missing] for name in ("steady", "gappy")}
    with victoria_metrics(tmp_path / "vm", ["-search.latencyOffset=0s",
                                            "-search.setLookbackToStep"]) as service:
        import_lines(service.url, series)
        config = parse_config({
            "reader": {"url": service.url},
            "queries": {"q": {"expr": "imported", "step": "1m"}},
            "models": {"m": model},
            "schedulers": {"s": {"fit_every": "1h", "fit_window": "4h", "infer_every": "1m"}},
        }, "inline")
        now = [end - 15 * step + 1]
        outputs = OutputCollector()
        runner = SchedulerRunner(config.schedulers["s"], [], PromReader(config.reader), [outputs],
                                 SelfMetrics(CollectorRegistry()), clock=lambda: now[0])
        wait_for(lambda: runner.reader.query_range("imported", end - 600, end, step).keys, 20)
        batch = runner.reader.query_range("imported", end - 900, end, step)
        gappy = batch.values[[key == (("series", "gappy"),) for key in batch.keys]][0]
        assert np.isnan(gappy).sum() == 2, "the backend must show the two gaps"
        job = Job(config.schedulers["s"], config.models["m"], "q", config.queries["q"], None)
        for minute in range(16):
            now[0] = end - (15 - minute) * step + 1
            assert runner.infer(job)
            published = published_series(outputs)
            assert set(published) == {"steady", "gappy"}, (minute, published)
            assert all(np.isfinite(value) for value in published.values())
