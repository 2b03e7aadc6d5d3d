"""Run fits and inferences on their schedules, one pair of threads per configured scheduler.

Fits happen on a worker thread of their own and swap the new model in when done, so
inference (and the /metrics it feeds) never waits for a fit and keeps using the previous model
meanwhile. Each stage runs its cycles back to back on one thread: a cycle still busy when the
next one is due makes that one skipped and counted, never run in parallel.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from anomaly_sidecar import state
from anomaly_sidecar.config import ModelConfig, QueryConfig, SchedulerConfig, build_model
from anomaly_sidecar.models.base import Model, SeriesKey, model_class
from anomaly_sidecar.reader import PromReader
from anomaly_sidecar.scoring import score_forecast
from anomaly_sidecar.writer import JobLabels, OutputCollector, SelfMetrics

log = logging.getLogger(__name__)

COLD_START_RETRY_INFERENCES = 10


class Job:
    """One (scheduler, model, query) combination and its current fitted model."""

    def __init__(self, scheduler: SchedulerConfig, model_config: ModelConfig, query_alias: str,
                 query: QueryConfig, state_dir: Path | None) -> None:
        self.scheduler = scheduler
        self.model_config = model_config
        self.query = query
        self.labels = JobLabels(scheduler.alias, model_config.alias, query_alias,
                                model_config.type, model_class(model_config.type).score_kind)
        self.model: Model | None = None
        self.fitted_at: float | None = None
        self.cold_start_pending = False
        self.cold_start_requested: dict[SeriesKey, float] = {}
        """When each new series last asked for a cold-start fit (monotonic seconds)."""
        self.scored_until: float | None = None
        """Timestamp of the newest column the last inference scored."""
        self.state_directory = (state.job_directory(state_dir, scheduler.alias, model_config.alias,
                                                    query_alias) if state_dir else None)

    @property
    def identity(self) -> dict[str, Any]:
        """What a stored model must have been fitted for to be reused (JSON-normalised)."""
        return json.loads(json.dumps({
            "type": self.model_config.type, "params": asdict(self.model_config.params),
            "expr": self.query.expr, "step": self.query.step_seconds}))

    def restore(self) -> bool:
        """Load the stored model, if any; True when one was restored."""
        if self.state_directory is None:
            return False
        stored = state.load_model(self.state_directory, model_class(self.model_config.type),
                                  self.model_config.params, self.identity)
        if stored is None:
            return False
        self.model, self.fitted_at = stored.model, stored.fitted_at
        log.info("restored %s fitted at %.0f", self.labels, stored.fitted_at)
        return True


class SchedulerRunner:
    """The fit and inference loops of one scheduler."""

    def __init__(self, config: SchedulerConfig, jobs: list[Job], reader: PromReader,
                 outputs: OutputCollector, metrics: SelfMetrics,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.jobs = jobs
        self.reader = reader
        self.outputs = outputs
        self.metrics = metrics
        self.clock = clock
        self._stopping = threading.Event()
        self._fit_wakeup = threading.Event()
        self._infer_wakeup = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for name, loop in (("fit", self._fit_loop), ("infer", self._infer_loop)):
            thread = threading.Thread(target=loop, name=f"{self.config.alias}-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout_seconds: float = 10.0) -> None:
        """Ask both loops to stop; a fit in progress finishes in the background (daemon)."""
        self._stopping.set()
        self._fit_wakeup.set()
        self._infer_wakeup.set()
        for thread in self._threads:
            thread.join(timeout=timeout_seconds)

    def _infer_loop(self) -> None:
        interval = self.config.infer_every_seconds
        next_due = time.monotonic()
        while not self._stopping.is_set():
            self._infer_wakeup.wait(max(0.0, next_due - time.monotonic()))
            if self._stopping.is_set():
                return
            if self._infer_wakeup.is_set():
                self._infer_wakeup.clear()
                next_due = time.monotonic()
            for job in self.jobs:
                self.infer(job)
            next_due = self._advance(next_due, interval, "infer")

    def _advance(self, due: float, interval: float, stage: str) -> float:
        """The next due time after a run that was due at `due`; due times that passed while
        the run was busy are counted as skipped."""
        now = time.monotonic()
        missed = max(0, math.floor((now - due) / interval))
        if missed:
            self.metrics.runs_skipped.labels(stage, self.config.alias).inc(missed)
            log.warning("%s run of scheduler %s took longer than its interval; skipped %d",
                        stage, self.config.alias, missed)
        return due + (missed + 1) * interval

    def _fit_loop(self) -> None:
        retry_delay = self.config.infer_every_seconds
        next_due = {id(job): time.monotonic() + self._seconds_until_refit(job)
                    for job in self.jobs}
        while not self._stopping.is_set():
            now = time.monotonic()
            for job in self.jobs:
                due = next_due[id(job)]
                if now < due and not job.cold_start_pending:
                    continue
                job.cold_start_pending = False
                if not self.fit(job):
                    next_due[id(job)] = time.monotonic() + retry_delay
                elif now >= due:
                    next_due[id(job)] = self._advance(due, self.config.fit_every_seconds, "fit")
                if self._stopping.is_set():
                    return
            wait = min(next_due.values(), default=now + 60) - time.monotonic()
            self._fit_wakeup.wait(max(0.0, wait))
            self._fit_wakeup.clear()

    def _seconds_until_refit(self, job: Job) -> float:
        if job.fitted_at is None:
            return 0.0
        return max(0.0, job.fitted_at + self.config.fit_every_seconds - self.clock())

    def fit(self, job: Job) -> bool:
        """Fit a fresh model on the history and swap it in; False (counted) on failure."""
        labels = ("fit", job.model_config.alias, self.config.alias)
        started = time.monotonic()
        now = self.clock()
        try:
            model = build_model(job.model_config)
            step = job.query.step_seconds
            window = min(self.config.fit_window_seconds,
                         job.query.data_range_seconds or math.inf,
                         (model.fit_points or math.inf) * step)
            batch = self.reader.query_range(job.query.expr, now - window, now, step)
            model.fit(batch)
        except Exception as error:  # a failed fit keeps the old model serving
            self.metrics.run_errors.labels(*labels).inc()
            log.error("fit of %s failed: %s", job.labels, error)
            return False
        if self._stopping.is_set():
            log.info("discarding the fit of %s: its scheduler was stopped (reload)", job.labels)
            return False
        first_model = job.model is None
        job.model, job.fitted_at = model, now
        if first_model:
            self._infer_wakeup.set()
        self.metrics.runs.labels(*labels).inc()
        self.metrics.run_duration.labels(*labels).observe(time.monotonic() - started)
        self.metrics.last_success.labels(*labels).set(self.clock())
        log.info("fitted %s on %d series in %.2fs", job.labels, len(batch.keys),
                 time.monotonic() - started)
        if job.state_directory is not None:
            try:
                state.save_model(job.state_directory, model, now, job.identity)
            except OSError as error:
                log.error("could not save state of %s: %s", job.labels, error)
        return True

    def infer(self, job: Job) -> bool:
        """Score the latest point of every series of the job; False (counted) on failure.

        A point-alarm model (score_kind "alarm") has every column since the last inference
        scored and publishes the highest score among them: its alarm marks one point and the
        next points are quiet, so an alarm on a column that was never the latest (infer_every
        longer than the step, a late or skipped run) would otherwise be lost for good. After a
        long gap only the last alarm_catch_up is scored (see SchedulerConfig)."""
        model = job.model
        if model is None:
            return False
        labels = ("infer", job.model_config.alias, self.config.alias)
        started = time.monotonic()
        now = self.clock()
        step = job.query.step_seconds
        # the model's context and enough points to judge warm-up
        points = max(model.context_points, job.model_config.min_samples) + 1
        try:
            batch = self.reader.query_range(job.query.expr, now - points * step, now, step)
            self._request_cold_start(job, model, batch.keys)
            n_targets = (self._alarm_targets(job, batch.timestamps, now)
                         if job.labels.score_kind == "alarm" else 1)
            forecast = model.predict(batch, n_targets)
        except Exception as error:  # keep serving the last scores
            self.metrics.run_errors.labels(*labels).inc()
            log.error("inference of %s failed: %s", job.labels, error)
            return False
        with np.errstate(invalid="ignore"):
            targets = batch.values[:, -n_targets:]
            targets = np.where(np.isfinite(targets), targets, np.nan)
        observed = targets[:, -1] if targets.shape[1] else np.full(len(batch.keys), np.nan)
        outputs = {
            "y": observed,
            "yhat": forecast.yhat[:, -1],
            "yhat_lower": forecast.yhat_lower[:, -1],
            "yhat_upper": forecast.yhat_upper[:, -1],
            "anomaly_score": _highest(score_forecast(
                targets, forecast, job.model_config.detection_direction,
                job.model_config.min_dev_from_expected)),
        }
        if batch.timestamps.size:
            job.scored_until = float(batch.timestamps[-1])
        samples_seen = np.isfinite(batch.values).sum(axis=1)
        warm = ((samples_seen >= job.model_config.min_samples)
                & np.isfinite(outputs["anomaly_score"]))
        present = np.flatnonzero(np.isfinite(observed))
        published = self.outputs.update(
            job.labels, [batch.keys[row] for row in present],
            {name: values[present] for name, values in outputs.items()}, warm[present], now,
            self.config.fit_window_seconds)
        self.metrics.series.labels(job.labels.query_alias, job.labels.model_alias,
                                   self.config.alias).set(published)
        self.metrics.runs.labels(*labels).inc()
        self.metrics.run_duration.labels(*labels).observe(time.monotonic() - started)
        self.metrics.last_success.labels(*labels).set(self.clock())
        return True

    def _alarm_targets(self, job: Job, timestamps: np.ndarray, now: float) -> int:
        """How many of the newest columns a point-alarm model scores: those since the last
        inference, but none older than alarm_catch_up."""
        oldest = now - self.config.alarm_catch_up_seconds
        if job.scored_until is not None and job.scored_until < oldest:
            log.warning("%s: last scored %.0fs ago; scoring only the last %.0fs, older alarms "
                        "are not published", job.labels, now - job.scored_until,
                        self.config.alarm_catch_up_seconds)
        scored_until = None if job.scored_until is None else max(job.scored_until, oldest)
        return _unscored_columns(timestamps, scored_until)

    def _request_cold_start(self, job: Job, model: Model, keys: list[SeriesKey]) -> None:
        """New series the model cannot predict get a fit on the history available. A series
        still unpredictable after that (too little history yet) asks again at most once per
        COLD_START_RETRY_INFERENCES inference intervals, so it cannot cause a fit storm."""
        now = time.monotonic()
        retry_after = COLD_START_RETRY_INFERENCES * self.config.infer_every_seconds
        new_keys = [key for key in keys if not model.can_predict(key)
                    and now - job.cold_start_requested.get(key, -math.inf) >= retry_after]
        if new_keys:
            job.cold_start_requested.update(dict.fromkeys(new_keys, now))
            job.cold_start_pending = True
            self._fit_wakeup.set()
            log.info("%d new series in %s: cold-start fit requested", len(new_keys), job.labels)


def _unscored_columns(timestamps: np.ndarray, scored_until: float | None) -> int:
    """How many of the newest columns lie after the last scored one (at least 1)."""
    if scored_until is None:
        return 1
    return max(1, int(np.count_nonzero(timestamps > scored_until)))


def _highest(scores: np.ndarray) -> np.ndarray:
    """Per row, the highest finite score among the columns (NaN where none is finite)."""
    finite = np.isfinite(scores)
    highest = np.where(finite, scores, -np.inf).max(axis=1, initial=-np.inf)
    return np.where(finite.any(axis=1), highest, np.nan)
