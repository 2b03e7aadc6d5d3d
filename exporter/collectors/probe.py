"""Probe collector: model endpoints called on their own intervals by background threads.

A model can take seconds to answer, or hang, so probes never run on the scrape path: each target
has one thread that probes it every `interval` and records the outcome, and a scrape only reads
what the threads recorded. One thread per target means a hung endpoint delays nothing but its own
next probe. Latency is a histogram (buckets from 5 ms to 60 s) of the successful probes, so p50
and p99 can be computed over any window; failures are counted by reason instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from exporter.collector_config import ProbeTarget
from exporter.http_probe import ProbeResult, probe
from exporter.registry import Collector, CollectorFailed, ExporterOptions, register

LOG = logging.getLogger("exporter.probe")
# From a fast embedding model (5 ms) to a long generation (60 s).
BUCKETS_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0,
                   60.0)
_BUCKET_LABELS = [floatToGoString(bound) for bound in BUCKETS_SECONDS] + ["+Inf"]


class _TargetState:
    """What a target's thread recorded; read by scrapes under the lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.bucket_counts = [0] * (len(BUCKETS_SECONDS) + 1)  # per bucket, not cumulative
        self.duration_sum = 0.0
        self.last: ProbeResult | None = None
        self.last_timestamp = 0.0
        self.failures: dict[str, int] = {}

    def record(self, result: ProbeResult, finished_at: float) -> None:
        with self.lock:
            if result.success:
                bucket = next((index for index, bound in enumerate(BUCKETS_SECONDS)
                               if result.duration_seconds <= bound), len(BUCKETS_SECONDS))
                self.bucket_counts[bucket] += 1
                self.duration_sum += result.duration_seconds
            elif result.failure is not None:
                self.failures[result.failure] = self.failures.get(result.failure, 0) + 1
            self.last = result
            self.last_timestamp = finished_at


@register
class ProbeCollector(Collector):
    name = "probe"
    default_enabled = False
    help_text = "HTTP(S) probes of model endpoints listed in --config.file (background threads)"
    config_section = "probe"

    def __init__(self, options: ExporterOptions) -> None:
        super().__init__(options)
        config = options.collector_config
        self.targets: list[ProbeTarget] = list(config.probe_targets or []) if config else []
        self._states = {target.name: _TargetState() for target in self.targets}
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """One thread per target, their first probes spread over the shortest interval so that
        twenty targets of one model server do not all hit it in the same instant."""
        if not self.targets:
            raise CollectorFailed("no probe targets: give --config.file with probe.targets")
        if self._threads:
            return
        spread = min(target.interval_seconds for target in self.targets)
        for index, target in enumerate(self.targets):
            thread = threading.Thread(target=self._run,
                                      args=(target, spread * index / len(self.targets)),
                                      name=f"probe-{target.name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Threads stuck in a hung request are daemons: they end with the process."""
        self._stopping.set()

    def _run(self, target: ProbeTarget, first_delay_seconds: float) -> None:
        state = self._states[target.name]
        next_due = time.monotonic() + first_delay_seconds
        logged_failure: str | None = None
        while not self._stopping.wait(max(0.0, next_due - time.monotonic())):
            try:
                result = probe(target)
            except Exception as error:  # a bug must not end this target's probes for good
                LOG.exception("probe %s (%s) raised", target.name, target.url)
                result = ProbeResult(False, 0.0, failure="error",
                                     detail=f"{type(error).__name__}: {error}")
            state.record(result, time.time())
            if result.success and logged_failure is not None:
                LOG.info("probe %s (%s) recovered", target.name, target.url)
            elif not result.success and result.detail != logged_failure:
                LOG.warning("probe %s (%s) failed: %s", target.name, target.url, result.detail)
            logged_failure = None if result.success else result.detail
            next_due = max(next_due + target.interval_seconds, time.monotonic())

    def collect(self) -> Iterable[Metric]:
        labels = ["target"]
        duration = HistogramMetricFamily(
            "aiinfra_probe_duration_seconds",
            "Time a successful probe took: connect, TLS, request and the whole answer.",
            labels=labels)
        success = GaugeMetricFamily("aiinfra_probe_success",
                                    "1 if the latest probe got the expected answer, else 0.",
                                    labels=labels)
        status = GaugeMetricFamily("aiinfra_probe_status_code",
                                   "HTTP status of the latest probe; 0 if there was no answer.",
                                   labels=labels)
        last = GaugeMetricFamily("aiinfra_probe_last_timestamp_seconds",
                                 "Unix time the latest probe finished.", labels=labels)
        failures = CounterMetricFamily("aiinfra_probe_failures",
                                       "Failed probes by reason (timeout, connection, tls, http, "
                                       "status, json, header_file, error).",
                                       labels=["target", "reason"])
        threshold = GaugeMetricFamily(
            "aiinfra_probe_latency_threshold_seconds",
            "The target's latency_threshold from the config: its p99 alert line.", labels=labels)
        for target in self.targets:
            state = self._states[target.name]
            with state.lock:
                counts = list(state.bucket_counts)
                duration_sum = state.duration_sum
                latest = state.last
                finished_at = state.last_timestamp
                failed = dict(state.failures)
            cumulative, buckets = 0, []
            for label, count in zip(_BUCKET_LABELS, counts, strict=True):
                cumulative += count
                buckets.append((label, float(cumulative)))
            duration.add_metric([target.name], buckets, duration_sum)
            if latest is not None:
                success.add_metric([target.name], 1.0 if latest.success else 0.0)
                status.add_metric([target.name], float(latest.status_code))
                last.add_metric([target.name], finished_at)
            for reason, count in sorted(failed.items()):
                failures.add_metric([target.name, reason], float(count))
            if target.latency_threshold_seconds is not None:
                threshold.add_metric([target.name], target.latency_threshold_seconds)
        return [duration, success, status, last, failures, threshold]
