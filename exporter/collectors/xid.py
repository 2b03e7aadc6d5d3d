"""Xid collector: a background NVML event thread counts Xid critical errors per GPU and code.

Xids are events, not states, so they are counted (`_total`) with the time of the last one,
instead of dcgm-exporter's last-value gauge that loses every Xid but the latest. Each GPU is
registered for events on its own sampler thread with a deadline, so a hung GPU is left out (and
logged) while the others are watched.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

import pynvml
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporter.families import GPU_LABELS
from exporter.nvml import GpuDevice, NvmlSession, describe_error, is_field_unavailable
from exporter.registry import Collector, CollectorFailed, ExporterOptions, register
from exporter.worker import CallTimeout

LOG = logging.getLogger("exporter.xid")
WAIT_MILLISECONDS = 500
RETRY_SECONDS = 5.0


@register
class XidCollector(Collector):
    name = "xid"
    help_text = "NVIDIA Xid error events (background NVML event thread)"

    def __init__(self, options: ExporterOptions) -> None:
        super().__init__(options)
        if options.nvml is None:
            raise ValueError("the xid collector needs an NVML session in its options")
        self.session: NvmlSession = options.nvml
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, str], int] = {}
        self._last_seen: dict[tuple[str, str, str], float] = {}
        self._problem: str | None = "Xid event thread not started"
        self._stopping = threading.Event()
        self._settled = threading.Event()  # set after the first set-up attempt, good or bad
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the event thread and wait (briefly) for its first set-up, so that the first
        scrape already tells the truth and a failure is logged at start-up."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="xid-events", daemon=True)
            self._thread.start()
        # nvmlInit and the registrations each have gpu_timeout_seconds: wait for both.
        self._settled.wait(2 * self.options.gpu_timeout_seconds + 1)
        with self._lock:
            problem = self._problem
        if problem is not None:
            raise CollectorFailed(problem)

    def stop(self) -> None:
        self._stopping.set()

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            if self._problem is not None:
                raise CollectorFailed(self._problem)
            counts = dict(self._counts)
            last_seen = dict(self._last_seen)
        labels = [*GPU_LABELS, "xid"]
        total = CounterMetricFamily("aiinfra_gpu_xid_errors",
                                    "Xid critical errors seen since the exporter started.",
                                    labels=labels)
        last = GaugeMetricFamily("aiinfra_gpu_xid_last_timestamp_seconds",
                                 "Unix time of the latest Xid of this code.", labels=labels)
        for key, count in sorted(counts.items()):
            total.add_metric(list(key), float(count))
            last.add_metric(list(key), last_seen[key])
        return [total, last]

    def _set_problem(self, problem: str | None) -> None:
        with self._lock:
            self._problem = problem
        self._settled.set()

    def _run(self) -> None:
        """Watch for events until stopped; on any failure wait and set everything up again."""
        while not self._stopping.is_set():
            try:
                self.session.ensure_initialized(self.options.gpu_timeout_seconds)
                self._watch()
            except CollectorFailed as error:
                self._set_problem(str(error))
            except pynvml.NVMLError as error:
                self._set_problem(f"Xid event watch failed: {describe_error(error)}")
            self._stopping.wait(RETRY_SECONDS)

    def _watch(self) -> None:
        nvml: Any = self.session.nvml
        event_set = nvml.nvmlEventSetCreate()
        try:
            watched = self._register_all(event_set)
            if self.session.devices and not watched:
                raise CollectorFailed("no GPU supports Xid event registration")
            self._set_problem(None)
            while not self._stopping.is_set():
                try:
                    event = nvml.nvmlEventSetWait_v2(event_set, WAIT_MILLISECONDS)
                except pynvml.NVMLError as error:
                    if error.value == pynvml.NVML_ERROR_TIMEOUT:
                        continue
                    if is_field_unavailable(error):
                        raise CollectorFailed(
                            f"Xid event wait unsupported: {describe_error(error)}") from error
                    raise
                if event.eventType & pynvml.nvmlEventTypeXidCriticalError:
                    self._count(event.device, int(event.eventData))
        finally:
            try:
                nvml.nvmlEventSetFree(event_set)
            except pynvml.NVMLError as error:
                LOG.debug("nvmlEventSetFree: %s", describe_error(error))

    def _register_all(self, event_set: Any) -> int:
        """Register every GPU for Xid events, each on its own sampler thread, all at once;
        returns how many were registered (a GPU that errors or hangs is logged and skipped)."""
        timeout = self.options.gpu_timeout_seconds
        calls = []
        for device in self.session.devices:
            try:
                calls.append((device, self.session.sampler(device).submit(
                    lambda device=device: self._register(device, event_set), timeout)))
            except CallTimeout as error:
                LOG.info("GPU %d: Xid events not watched: %s", device.index, error)
        watched = 0
        for device, call in calls:
            try:
                watched += bool(call.wait(timeout))
            except CallTimeout as error:
                LOG.info("GPU %d: Xid events not watched: %s", device.index, error)
            except pynvml.NVMLError as error:
                LOG.info("GPU %d: Xid events not watched: %s", device.index,
                         describe_error(error))
        return watched

    def _register(self, device: GpuDevice, event_set: Any) -> bool:
        if not self.session.refresh_identity(device):
            return False
        self.session.nvml.nvmlDeviceRegisterEvents(device.handle,
                                                   pynvml.nvmlEventTypeXidCriticalError,
                                                   event_set)
        return True

    def _count(self, handle: Any, xid: int) -> None:
        device = self.session.device_for_handle(handle)
        key = (*device.labels, str(xid)) if device else ("", "", str(xid))
        LOG.warning("Xid %d on GPU %s (%s)", xid, key[0] or "?", key[1] or "unknown uuid")
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1
            self._last_seen[key] = time.time()
