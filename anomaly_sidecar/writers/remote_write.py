"""The remote write writer: every scored point, sent with its own timestamp, to any Prometheus
remote write 1.0 receiver (Prometheus with --web.enable-remote-write-receiver, VictoriaMetrics,
Mimir, Thanos Receive, Cortex).

publish() runs on a scheduler thread and only queues: per scored point younger than
max_sample_age, the five outputs at that point's timestamp (points still warming up have
none). One sender thread takes up to batch_size samples at a time, encodes them (prompb.py),
compresses them with snappy and POSTs them. A 2xx counts them sent; a 5xx, a 429, a timeout or
a refused connection is retried with exponential backoff (min_backoff doubling to max_backoff)
for as long as it takes, while publish() keeps queueing; any other 4xx (a sample out of order,
a bad label) cannot succeed on retry, so those samples are counted failed and logged. The queue
holds queue_size samples at most, the batch in flight included: what fits waits for the backend
to come back and is sent in order, what does not is dropped and counted. At stop the queue has
`timeout` to drain; what is left is counted dropped.

Snappy is cramjam's (a maintained Rust extension with wheels for every platform, which
python-snappy itself now wraps): no system library to install.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

import cramjam
import numpy as np
import requests
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from anomaly_sidecar import __version__
from anomaly_sidecar.config import RemoteWriteConfig
from anomaly_sidecar.http_client import auth_headers, new_session
from anomaly_sidecar.models.base import SeriesKey
from anomaly_sidecar.writers import prompb
from anomaly_sidecar.writers.base import OUTPUT_NAMES, JobLabels, Publication, output_names
from exporter.strict_input import shorten

log = logging.getLogger(__name__)

HEADERS = {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
           "X-Prometheus-Remote-Write-Version": "0.1.0",
           "User-Agent": f"anomaly-sidecar/{__version__}"}
DROP_LOG_INTERVAL_SECONDS = 60.0
MAX_CACHED_LABEL_SETS = 1_000_000
"""Encoded label sets kept between inferences (a series' five outputs are one entry)."""


@dataclass
class _Pending:
    """Points of one output series waiting to be sent."""

    labels: bytes
    timestamps_ms: np.ndarray
    values: np.ndarray

    def split(self, samples: int) -> tuple[_Pending, _Pending]:
        return (_Pending(self.labels, self.timestamps_ms[:samples], self.values[:samples]),
                _Pending(self.labels, self.timestamps_ms[samples:], self.values[samples:]))


class RemoteWriteMetrics:
    """anomaly_sidecar_remote_write_*: what happened to every sample handed to the writer."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.sent = Counter("anomaly_sidecar_remote_write_samples_sent",
                            "Samples the backend accepted", registry=registry)
        self.failed = Counter("anomaly_sidecar_remote_write_samples_failed",
                              "Samples the backend refused with a 4xx (not retried)",
                              registry=registry)
        self.dropped = Counter("anomaly_sidecar_remote_write_samples_dropped",
                               "Samples dropped because the queue was full, or still queued "
                               "at stop", registry=registry)
        self.retries = Counter("anomaly_sidecar_remote_write_retries",
                               "Requests retried after a 5xx, 429, timeout or connection error",
                               registry=registry)
        self.pending = Gauge("anomaly_sidecar_remote_write_pending_samples",
                             "Samples queued or in flight", registry=registry)
        self.capacity = Gauge("anomaly_sidecar_remote_write_queue_capacity_samples",
                              "writer.remote_write.queue_size", registry=registry)
        self.request_duration = Histogram(
            "anomaly_sidecar_remote_write_request_duration_seconds",
            "Remote write requests, each attempt", registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))


class RemoteWriter:
    """Queues every scored point and sends it from a thread of its own (module docstring)."""

    def __init__(self, config: RemoteWriteConfig, name_template: str,
                 registry: CollectorRegistry) -> None:
        self.config = config
        self.names = output_names(name_template)
        self.metrics = RemoteWriteMetrics(registry)
        self.metrics.capacity.set(config.queue_size)
        self.session = new_session(config)
        self._labels: dict[tuple[JobLabels, SeriesKey], tuple[bytes, ...]] = {}
        self._queue: deque[_Pending] = deque()
        self._held = 0
        """Samples queued or in flight: what queue_size bounds."""
        self._condition = threading.Condition()
        self._closing = False
        self._close_deadline = float("inf")
        self._giving_up = False
        self._dropped_since_log = 0
        self._last_drop_log = float("-inf")
        """Set when stopping with the backend still unreachable: the rest is dropped."""
        self._thread = threading.Thread(target=self._send_loop, name="remote-write",
                                        daemon=True)
        self._thread.start()

    # -- the scheduler's side ------------------------------------------------------------

    def publish(self, publication: Publication) -> None:
        """Queue the outputs of every point scored in the block and recent enough."""
        points, scored = publication.points, publication.scored
        recent = points.timestamps >= publication.now - self.config.max_sample_age_seconds
        with np.errstate(invalid="ignore"):
            sendable = scored.scored & np.isfinite(scored.anomaly_score) & recent[None, :]
        rows = np.flatnonzero(sendable.any(axis=1))
        if not len(rows):
            return
        stamps_ms = np.rint(points.timestamps * 1000).astype(np.int64)
        arrays = [points.values if name == "y" else getattr(scored, name)
                  for name in OUTPUT_NAMES]
        pending = []
        for row in rows.tolist():
            columns = np.flatnonzero(sendable[row])
            for labels, array in zip(self._label_sets(publication.job, points.keys[row]),
                                     arrays, strict=True):
                values = array[row, columns]
                finite = np.isfinite(values)
                if finite.any():
                    pending.append(_Pending(labels, stamps_ms[columns][finite], values[finite]))
        self._enqueue(pending)

    def _label_sets(self, job: JobLabels, key: SeriesKey) -> tuple[bytes, ...]:
        """The encoded labels of a series' five outputs (cached: they never change)."""
        cached = self._labels.get((job, key))
        if cached is None:
            if len(self._labels) >= MAX_CACHED_LABEL_SETS:
                self._labels.clear()
            labels = job.apply(key)
            cached = self._labels[(job, key)] = tuple(
                prompb.encode_labels({**labels, "__name__": self.names[name]})
                for name in OUTPUT_NAMES)
        return cached

    def _enqueue(self, pending: list[_Pending]) -> None:
        dropped = 0
        with self._condition:
            for item in pending:
                size = len(item.values)
                if self._closing or self._held + size > self.config.queue_size:
                    dropped += size
                    continue
                self._queue.append(item)
                self._held += size
            self.metrics.pending.set(self._held)
            self._condition.notify()
        if dropped:
            self.metrics.dropped.inc(dropped)
            self._log_drops(dropped)

    def _log_drops(self, dropped: int) -> None:
        """One warning a minute at most, with what was dropped since the last one."""
        self._dropped_since_log += dropped
        moment = time.monotonic()
        if moment - self._last_drop_log >= DROP_LOG_INTERVAL_SECONDS:
            log.warning("remote write queue full (%d samples, writer.remote_write.queue_size): "
                        "dropped %d samples", self.config.queue_size, self._dropped_since_log)
            self._last_drop_log, self._dropped_since_log = moment, 0

    def forget_jobs_except(self, jobs: set[JobLabels]) -> None:
        """Label sets of jobs that are gone are not needed any more."""
        with self._condition:
            self._labels = {entry: labels for entry, labels in self._labels.items()
                            if entry[0] in jobs}

    def close(self) -> None:
        """Stop queueing, give what is queued `timeout` to be sent, count the rest dropped."""
        with self._condition:
            self._closing = True
            self._close_deadline = time.monotonic() + self.config.timeout_seconds
            self._condition.notify()
        self._thread.join(self.config.timeout_seconds + 1)

    def flushed(self) -> bool:
        """Whether every sample handed over so far has been dealt with."""
        with self._condition:
            return self._held == 0

    # -- the sender thread ---------------------------------------------------------------

    def _send_loop(self) -> None:
        while True:
            with self._condition:
                while not self._queue and not self._closing:
                    self._condition.wait()
                if not self._queue:
                    return
                if self._giving_up:
                    self._drop_everything()
                    return
                batch = self._take_batch()
            samples = sum(len(item.values) for item in batch)
            outcome = self._deliver(batch, samples)
            counter = {"sent": self.metrics.sent, "failed": self.metrics.failed,
                       "dropped": self.metrics.dropped}[outcome]
            with self._condition:  # counted before flushed() can say the batch is done
                counter.inc(samples)
                self._held -= samples
                self.metrics.pending.set(self._held)

    def _drop_everything(self) -> None:
        """At stop, with the backend unreachable: count what is queued as dropped (the lock is
        held)."""
        left = sum(len(item.values) for item in self._queue)
        self._queue.clear()
        self._held -= left
        self.metrics.pending.set(self._held)
        self.metrics.dropped.inc(left)
        log.error("stopping with %s unreachable: %d queued samples dropped", self.config.url,
                  left)

    def _take_batch(self) -> list[_Pending]:
        """Up to batch_size samples from the head of the queue (the lock is held)."""
        batch, room = [], self.config.batch_size
        while self._queue and room > 0:
            item = self._queue.popleft()
            if len(item.values) > room:
                item, rest = item.split(room)
                self._queue.appendleft(rest)
            batch.append(item)
            room -= len(item.values)
        return batch

    def _deliver(self, batch: list[_Pending], samples: int) -> str:
        """POST the batch until it is accepted or refused for good: "sent", "failed", or
        "dropped" when the sidecar stops before the backend takes it."""
        body = cramjam.snappy.compress_raw(prompb.encode_write_request(
            (item.labels, prompb.encode_samples(item.values, item.timestamps_ms))
            for item in batch)).read()
        delay = self.config.min_backoff_seconds
        while True:
            started = time.monotonic()
            try:
                response = self.session.post(self.config.url, data=body,
                                             headers={**HEADERS, **auth_headers(self.config)},
                                             timeout=self.config.timeout_seconds)
                status, reason = response.status_code, shorten(response.text.strip(), 300)
            except (requests.RequestException, OSError) as error:
                status, reason = None, str(error)
            self.metrics.request_duration.observe(time.monotonic() - started)
            if status is not None and 200 <= status < 300:
                return "sent"
            if status is not None and 400 <= status < 500 and status != 429:
                log.error("%s refused %d samples (%d, not retried): %s", self.config.url,
                          samples, status, reason)
                return "failed"
            with self._condition:
                if self._closing and time.monotonic() + delay > self._close_deadline:
                    self._giving_up = True
                    log.error("stopping with %s unreachable (%s): %d samples in flight "
                              "dropped", self.config.url, status or reason, samples)
                    return "dropped"
                self.metrics.retries.inc()
                log.warning("remote write to %s failed (%s), retrying in %.1fs",
                            self.config.url, status or reason, delay)
                self._condition.wait(delay)
            delay = min(delay * 2, self.config.max_backoff_seconds)
