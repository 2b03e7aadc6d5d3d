"""The output contract on /metrics and the scheduling rules, without a backend."""

from __future__ import annotations

import subprocess
import time

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from anomaly_sidecar.config import parse_config
from anomaly_sidecar.models.arima import ArimaModel, ArimaParams
from anomaly_sidecar.models.base import SeriesBatch
from anomaly_sidecar.reader import PromReader
from anomaly_sidecar.scheduler import Job, SchedulerRunner
from anomaly_sidecar.self_metrics import SelfMetrics
from anomaly_sidecar.writers.base import JobLabels
from anomaly_sidecar.writers.pull import OutputCollector
from tests.support.services import require_binary

JOB = JobLabels("main", "cpu_zscore", "cpu", "zscore", "band")
KEYS = [(("instance", "h1"), ("mode", "user")), (("instance", "h2"), ("mode", "user"))]


def outputs_for(score: list[float], y: list[float] | None = None) -> dict[str, np.ndarray]:
    y_values = np.array(y if y is not None else [5.0] * len(score))
    return {"y": y_values, "yhat": np.full(len(score), 4.0), "yhat_lower": np.full(len(score), 3.0),
            "yhat_upper": np.full(len(score), 5.0), "anomaly_score": np.array(score)}


def exposition(collector: OutputCollector, metrics: SelfMetrics | None = None) -> str:
    registry = CollectorRegistry()
    if metrics is None:
        SelfMetrics(registry)
    else:
        registry.register(metrics.model_info)
    registry.register(collector)
    return generate_latest(registry).decode()


def parsed(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def test_output_names_labels_and_template():
    collector = OutputCollector("anomaly_sidecar_{name}")
    collector.update(JOB, KEYS, outputs_for([1.0, 0.2]), np.array([True, False]), 100.0, 3600)
    found = parsed(exposition(collector))
    expected_labels = {"for": "cpu", "instance": "h1", "mode": "user",
                       "model_alias": "cpu_zscore", "scheduler_alias": "main"}
    for name, value in (("anomaly_score", 1.0), ("yhat", 4.0), ("yhat_lower", 3.0),
                        ("yhat_upper", 5.0), ("y", 5.0)):
        assert found[f"anomaly_sidecar_{name}"] == [(expected_labels, value)], name
        assert name not in found
    warm = {labels["instance"]: value for labels, value in found["anomaly_sidecar_model_warm"]}
    assert warm == {"h1": 1.0, "h2": 0.0}


def test_model_info_says_which_models_publish_point_alarms():
    """The alert rules pick their expression by score_kind: a model with a quiet period
    publishes single-point alarms, which would never satisfy a `for: 5m` band rule."""
    config = parse_config({
        "reader": {"url": "http://127.0.0.1:9"},
        "queries": {"cpu": {"expr": "up"}},
        "models": {"cpu_composite": {"type": "composite", "quiet": "30m"},
                   "cpu_mad": {"type": "mad", "quiet": "0", "rearm": "0"}},
        "schedulers": {"main": {"fit_every": "1h", "fit_window": "1d", "infer_every": "1m"}},
    }, "inline")
    collector = OutputCollector()
    metrics = SelfMetrics(CollectorRegistry())
    metrics.model_info.set_jobs({
        Job(config.schedulers["main"], config.models[alias], "cpu", config.queries["cpu"],
            None).labels for alias in ("cpu_composite", "cpu_mad")})
    info = parsed(exposition(collector, metrics))["anomaly_sidecar_model_info"]
    assert sorted(info, key=lambda sample: sample[0]["model_alias"]) == [
        ({"for": "cpu", "model_alias": "cpu_composite", "scheduler_alias": "main",
          "type": "composite", "score_kind": "alarm"}, 1.0),
        ({"for": "cpu", "model_alias": "cpu_mad", "scheduler_alias": "main",
          "type": "mad", "score_kind": "band"}, 1.0)]
    metrics.model_info.set_jobs(set())
    assert "anomaly_sidecar_model_info" not in parsed(exposition(collector, metrics))


def test_logs_name_a_job_by_its_aliases():
    assert str(JOB) == "main/cpu_zscore/cpu"


def test_exposition_passes_promtool():
    collector = OutputCollector()
    collector.update(JOB, KEYS, outputs_for([1.0, 0.2]), np.array([True, True]), 100.0, 3600)
    result = subprocess.run([require_binary("promtool"), "check", "metrics"],
                            input=exposition(collector), capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


def test_series_vanish_after_one_fit_window_of_absence():
    collector = OutputCollector()
    collector.update(JOB, KEYS, outputs_for([0.1, 0.2]), np.array([True, True]), 100.0, 600)
    assert collector.update(JOB, KEYS[:1], outputs_for([0.3]), np.array([True]), 650.0, 600) == 2
    assert collector.update(JOB, KEYS[:1], outputs_for([0.3]), np.array([True]), 701.0, 600) == 1
    instances = {labels["instance"] for labels, _ in parsed(exposition(collector))["y"]}
    assert instances == {"h1"}


def test_last_scores_are_kept_when_a_point_cannot_be_scored():
    collector = OutputCollector()
    collector.update(JOB, KEYS[:1], outputs_for([0.7]), np.array([True]), 100.0, 600)
    collector.update(JOB, KEYS[:1], outputs_for([np.nan]), np.array([False]), 101.0, 600)
    assert "anomaly_score" not in parsed(exposition(collector))
    collector.update(JOB, KEYS[:1], outputs_for([0.7]), np.array([True]), 102.0, 600)
    collector.update(JOB, KEYS[:1], outputs_for([np.nan], y=[np.nan]), np.array([True]), 103.0,
                     600)
    assert [value for _, value in parsed(exposition(collector))["anomaly_score"]] == [0.7]


def runner_and_job(infer_every: str = "10s") -> tuple[SchedulerRunner, Job]:
    config = parse_config({
        "reader": {"url": "http://127.0.0.1:9"},
        "queries": {"q": {"expr": "up"}},
        "models": {"a": {"type": "arima"}},
        "schedulers": {"s": {"fit_every": "1m", "fit_window": "1h", "infer_every": infer_every}},
    }, "inline")
    metrics = SelfMetrics(CollectorRegistry())
    job = Job(config.schedulers["s"], config.models["a"], "q", config.queries["q"], None)
    runner = SchedulerRunner(config.schedulers["s"], [job], PromReader(config.reader),
                             [OutputCollector()], metrics)
    return runner, job


def test_a_run_still_busy_when_the_next_is_due_is_skipped_and_counted():
    runner, _ = runner_and_job()
    due = time.monotonic() - 25.0
    next_due = runner._advance(due, 10.0, "infer")
    assert runner.metrics.runs_skipped.labels("infer", "s")._value.get() == 2
    assert time.monotonic() < next_due <= time.monotonic() + 10.0
    assert runner._advance(time.monotonic(), 10.0, "fit") > time.monotonic()
    assert runner.metrics.runs_skipped.labels("fit", "s")._value.get() == 0


def test_series_a_learning_model_cannot_forecast_ask_for_one_fit():
    runner, job = runner_and_job()
    model = ArimaModel(ArimaParams(), 60.0)
    rng = np.random.default_rng(0)
    history = 50 + rng.normal(size=200).cumsum()
    model.fit(SeriesBatch(KEYS[:1], np.arange(200.0), history[None]))
    job.detector.model, job.fitted_at = model, 1.0
    runner._request_fit(job, KEYS[:1])
    assert not job.fit_pending, "every series can be forecast"
    runner._request_fit(job, KEYS)
    assert job.fit_pending
    job.fit_pending = False
    runner._request_fit(job, KEYS)
    assert not job.fit_pending, "asked again before the retry interval"
