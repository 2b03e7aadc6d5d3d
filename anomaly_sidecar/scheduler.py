"""Run fits and inferences on their schedules, one pair of threads per configured scheduler.

Each job (one model on one query) owns a Detector: the model, the calibration and the alarm
gate with every series' streaming state. An inference reads only the points since the newest
one it scored (plus the step it needs to align), advances the state with them and publishes;
the history of a series is read once, at first sight (or after a gap longer than the model's
history, or a model change), and never again while the series keeps coming.

Models that learn (ARIMA, LSTM) are refitted on a worker thread of their own and swapped in
when done, so inference (and the /metrics it feeds) never waits for a fit and keeps using the
previous model meanwhile. Each stage runs its cycles back to back on one thread: a cycle still
busy when the next one is due makes that one skipped and counted, never run in parallel.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from anomaly_sidecar import state
from anomaly_sidecar.alarms import BELOW_ONE
from anomaly_sidecar.config import ModelConfig, QueryConfig, SchedulerConfig
from anomaly_sidecar.detector import MIN_ERRORS, Detector, Scored, build_detector
from anomaly_sidecar.durations import span_seconds
from anomaly_sidecar.models.base import SeriesBatch, SeriesKey
from anomaly_sidecar.reader import PromReader
from anomaly_sidecar.self_metrics import SelfMetrics
from anomaly_sidecar.writers.base import JobLabels, Publication, Writer

log = logging.getLogger(__name__)

HISTORY_RETRY_INFERENCES = 10
"""A query whose new series needed a history read waits this many inference intervals before
the next one, so a stream of new series cannot turn every cycle into a full read."""
STATE_SAVE_SECONDS = 600.0
"""How often a job's series state is written to --state-dir (and at every fit and stop)."""
SCORE_BLOCK_SERIES = 1000
"""Series scored (and published) together in one inference: large enough for numpy to pay,
small enough that the first of 10,000 new series are published long before the last."""


class Job:
    """One (scheduler, model, query) combination and its detector."""

    def __init__(self, scheduler: SchedulerConfig, model_config: ModelConfig, query_alias: str,
                 query: QueryConfig, state_dir: Path | None) -> None:
        self.scheduler = scheduler
        self.model_config = model_config
        self.query = query
        self.detector: Detector = build_detector(model_config, query.step_seconds)
        self.labels = JobLabels(scheduler.alias, model_config.alias, query_alias,
                                model_config.type, self.detector.score_kind)
        self.lock = threading.Lock()
        """Held while the detector's state changes (inference, a fit's swap, a save)."""
        self.fitted_at: float | None = None
        self.fit_pending = False
        self.history_read_at = -math.inf
        """When (monotonic) new series last caused a history read."""
        self.saved_at = -math.inf
        self.state_directory = (state.job_directory(state_dir, scheduler.alias, model_config.alias,
                                                    query_alias) if state_dir else None)

    @property
    def learns(self) -> bool:
        return self.detector.model.learns

    @property
    def history_seconds(self) -> float:
        """What a first read of a series covers: what the model's state needs and then the
        warm-up of its scores, at most the scheduler's fit_window (and the query's
        data_range)."""
        step = self.query.step_seconds
        needed = (self.detector.model.history_seconds
                  + span_seconds(self.model_config.scoring.warm_up_seconds, step)
                  + MIN_ERRORS * step)
        return min(needed, self.scheduler.fit_window_seconds,
                   self.query.data_range_seconds or math.inf)

    @property
    def identity(self) -> dict[str, Any]:
        """What stored state must have been made for to be reused (JSON-normalised)."""
        return json.loads(json.dumps({
            "type": self.model_config.type, "params": asdict(self.model_config.params),
            "scoring": asdict(self.model_config.scoring),
            "expr": self.query.expr, "step": self.query.step_seconds}))

    def restore(self) -> bool:
        """Load the stored detector, if any; True when one was restored."""
        if self.state_directory is None:
            return False
        fresh = build_detector(self.model_config, self.query.step_seconds)
        stored = state.load_detector(self.state_directory, fresh, self.identity)
        if stored is None:
            return False
        self.detector, self.fitted_at = fresh, stored.fitted_at
        log.info("restored %s: %d series%s", self.labels, len(fresh.keys),
                 "" if stored.fitted_at is None else f", fitted at {stored.fitted_at:.0f}")
        return True

    def save(self, now: float) -> None:
        """Write the detector to the state directory (atomically); errors are logged."""
        if self.state_directory is None:
            return
        try:
            with self.lock:
                state.save_detector(self.state_directory, self.detector, self.fitted_at,
                                    self.identity)
            self.saved_at = now
        except OSError as error:
            log.error("could not save state of %s: %s", self.labels, error)


class SchedulerRunner:
    """The fit and inference loops of one scheduler."""

    def __init__(self, config: SchedulerConfig, jobs: list[Job], reader: PromReader,
                 writers: Sequence[Writer], metrics: SelfMetrics,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.jobs = jobs
        self.reader = reader
        self.writers = writers
        self.metrics = metrics
        self.clock = clock
        self._stopping = threading.Event()
        self._fit_wakeup = threading.Event()
        self._infer_wakeup = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        loops = [("infer", self._infer_loop)]
        if any(job.learns for job in self.jobs):
            loops.append(("fit", self._fit_loop))
        for name, loop in loops:
            thread = threading.Thread(target=loop, name=f"{self.config.alias}-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout_seconds: float = 10.0) -> None:
        """Ask both loops to stop and save every job's state; a fit in progress finishes in
        the background (daemon)."""
        self._stopping.set()
        self._fit_wakeup.set()
        self._infer_wakeup.set()
        for thread in self._threads:
            thread.join(timeout=timeout_seconds)
        for job in self.jobs:
            job.save(self.clock())

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
                if self.clock() - job.saved_at >= STATE_SAVE_SECONDS:
                    job.save(self.clock())
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
        jobs = [job for job in self.jobs if job.learns]
        next_due = {id(job): time.monotonic() + self._seconds_until_refit(job) for job in jobs}
        while not self._stopping.is_set():
            now = time.monotonic()
            for job in jobs:
                due = next_due[id(job)]
                if now < due and not job.fit_pending:
                    continue
                job.fit_pending = False
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
        """Fit a fresh model on the history and swap it into the job's detector (the series'
        streaming state stays); False (counted) on failure."""
        labels = ("fit", job.model_config.alias, self.config.alias)
        started = time.monotonic()
        now = self.clock()
        try:
            model = build_detector(job.model_config, job.query.step_seconds).model
            window = min(self.config.fit_window_seconds,
                         job.query.data_range_seconds or math.inf,
                         model.fit_seconds or math.inf)
            batch = self.reader.query_range(job.query.expr, now - window, now,
                                            job.query.step_seconds)
            model.fit(batch)
        except Exception as error:  # a failed fit keeps the old model serving
            self.metrics.run_errors.labels(*labels).inc()
            log.error("fit of %s failed: %s", job.labels, error)
            return False
        if self._stopping.is_set():
            log.info("discarding the fit of %s: its scheduler was stopped (reload)", job.labels)
            return False
        with job.lock:
            job.detector.model = model
            job.fitted_at = now
        job.save(now)
        self._infer_wakeup.set()
        self.metrics.runs.labels(*labels).inc()
        self.metrics.run_duration.labels(*labels).observe(time.monotonic() - started)
        self.metrics.last_success.labels(*labels).set(self.clock())
        log.info("fitted %s on %d series in %.2fs", job.labels, len(batch.keys),
                 time.monotonic() - started)
        return True

    def infer(self, job: Job) -> bool:
        """Read the points each series has not been scored on, score them and publish;
        False (counted) on failure. See the module docstring for what is read. Series are
        scored and published in blocks, so a first read of many series publishes the first
        blocks while the later ones are still being scored."""
        labels = ("infer", job.model_config.alias, self.config.alias)
        if job.learns and job.fitted_at is None:
            job.fit_pending = True  # nothing can be scored before the first fit
            self._fit_wakeup.set()
            return False
        started = time.monotonic()
        now = self.clock()
        try:
            with job.lock:
                job.detector.forget_unseen_since(now - self.config.fit_window_seconds)
                batch = self._read(job, job.detector, now)
            self.metrics.points_read.labels(job.labels.query_alias, job.labels.model_alias,
                                            self.config.alias).inc(
                int(np.isfinite(batch.values).sum()))
            self._request_fit(job, batch.keys)
            with job.lock:
                known = np.array([job.detector.knows(key) for key in batch.keys], dtype=bool)
                # state for every new series at once: growing it block by block would copy
                # every state array once per block
                job.detector.rows(batch.keys)
            for first in range(0, len(batch.keys), SCORE_BLOCK_SERIES):
                rows = slice(first, first + SCORE_BLOCK_SERIES)
                block = SeriesBatch(batch.keys[rows], batch.timestamps, batch.values[rows])
                with job.lock:
                    scored = job.detector.update(block)
                self._publish(job, block, scored, now, known[rows])
            self.metrics.series.labels(job.labels.query_alias, job.labels.model_alias,
                                       self.config.alias).set(len(job.detector.keys))
        except Exception as error:  # keep serving the last scores
            self.metrics.run_errors.labels(*labels).inc()
            log.error("inference of %s failed: %s", job.labels, error)
            return False
        self.metrics.runs.labels(*labels).inc()
        self.metrics.run_duration.labels(*labels).observe(time.monotonic() - started)
        self.metrics.last_success.labels(*labels).set(self.clock())
        return True

    def _read(self, job: Job, detector: Detector, now: float) -> SeriesBatch:
        """One read since the oldest point still to score (a history read for a job with no
        series yet, or one whose series went quiet for longer than its history), then a
        history read if the answer holds series the detector has never seen."""
        step = job.query.step_seconds
        history = job.history_seconds
        last_times = detector.last_times[np.isfinite(detector.last_times)]
        oldest = float(last_times.min()) if last_times.size else -math.inf
        if oldest < now - history:
            if last_times.size:
                log.info("%s: last scored %.0fs ago, longer than its history (%.0fs): "
                         "rebuilding from history", job.labels, now - oldest, history)
                detector.forget(detector.keys)
            start = now - history
        else:
            start = oldest + step
        batch = self.reader.query_range(job.query.expr, start, now, step)
        unknown = [key for key in batch.keys if not detector.knows(key)]
        if unknown and start > now - history:
            batch = self._history_read(job, batch, unknown, now, step)
        return batch

    def _history_read(self, job: Job, batch: SeriesBatch, unknown: list[SeriesKey],
                      now: float, step: float) -> SeriesBatch:
        """The history of the query for series never seen; known series skip the columns
        they have scored already, so the same update serves both. Rate-limited per job."""
        moment = time.monotonic()
        retry = HISTORY_RETRY_INFERENCES * self.config.infer_every_seconds
        if moment - job.history_read_at < retry:
            waiting = set(unknown)
            known = [row for row, key in enumerate(batch.keys) if key not in waiting]
            return SeriesBatch([batch.keys[row] for row in known], batch.timestamps,
                               batch.values[known])
        job.history_read_at = moment
        log.info("%d new series in %s: reading %.0fs of history", len(unknown), job.labels,
                 job.history_seconds)
        return self.reader.query_range(job.query.expr, now - job.history_seconds, now, step)

    def _request_fit(self, job: Job, keys: list[SeriesKey]) -> None:
        """A learning model that cannot forecast some series yet (never fitted, or new series)
        gets a fit on the history available, at most once per HISTORY_RETRY_INFERENCES."""
        if not job.learns:
            return
        model = job.detector.model
        if any(not model.can_forecast(key) for key in keys) and not job.fit_pending:
            moment = time.monotonic()
            if moment - job.history_read_at >= (HISTORY_RETRY_INFERENCES
                                                * self.config.infer_every_seconds):
                job.history_read_at = moment
                job.fit_pending = True
                self._fit_wakeup.set()

    def _publish(self, job: Job, batch: SeriesBatch, scored: Scored, now: float,
                 known: np.ndarray) -> None:
        """Per series with new points: y, yhat and the band of its newest scored point, and
        the score: the newest for a band model; for a point-alarm model the highest of the
        points scored since the last publication that are younger than alarm_catch_up (an
        older alarm is not published: AnomalyAlarm says "within the last 10m"). Dropping one
        is logged for series scored before (`known`), not for a first read of a history."""
        if not batch.values.shape[1]:
            return
        newest = np.where(scored.scored.any(axis=1),
                          batch.values.shape[1] - 1 - np.argmax(scored.scored[:, ::-1], axis=1),
                          -1)
        rows = np.flatnonzero(newest >= 0)
        columns = newest[rows]

        def at_newest(values: np.ndarray) -> np.ndarray:
            return values[rows, columns]

        if job.labels.score_kind == "alarm":
            recent = batch.timestamps >= now - self.config.alarm_catch_up_seconds
            scores = np.where(scored.scored & recent[None, :], scored.anomaly_score, np.nan)
            with np.errstate(invalid="ignore"):
                old_alarms = int((scored.scored & ~recent[None, :] & known[:, None]
                                  & (scored.anomaly_score >= 1)).sum())
            if old_alarms:
                log.warning("%s: %d alarms on points older than alarm_catch_up (%.0fs) are not "
                            "published", job.labels, old_alarms,
                            self.config.alarm_catch_up_seconds)
            # a series whose new points are all older than that shows its newest score,
            # never as a new alarm
            stale = np.minimum(at_newest(scored.anomaly_score), BELOW_ONE)
            highest = _highest(scores)[rows]
            score = np.where(np.isfinite(highest), highest, stale)
        else:
            score = at_newest(scored.anomaly_score)
        outputs = {"y": at_newest(batch.values), "yhat": at_newest(scored.yhat),
                   "yhat_lower": at_newest(scored.yhat_lower),
                   "yhat_upper": at_newest(scored.yhat_upper), "anomaly_score": score}
        publication = Publication(job.labels, now, self.config.fit_window_seconds, batch, scored,
                                  [batch.keys[row] for row in rows], outputs)
        for writer in self.writers:
            writer.publish(publication)


def _highest(scores: np.ndarray) -> np.ndarray:
    """Per row, the highest finite score among the columns (NaN where none is finite)."""
    finite = np.isfinite(scores)
    highest = np.where(finite, scores, -np.inf).max(axis=1, initial=-np.inf)
    return np.where(finite.any(axis=1), highest, np.nan)
