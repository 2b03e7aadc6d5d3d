"""Base for collectors that read each GPU through NVML on that GPU's own sampler thread.

The reading itself (`read_device`) runs every --collector.gpu.sample-interval on the GPU's
DeviceSampler thread; a scrape only takes the latest readings. Staleness bound: a scrape shows
readings at most `sample interval + one read` old; a GPU whose latest reading is older than
`sample interval + --collector.gpu.timeout`, or whose current NVML call has run longer than the
timeout, is reported down (hung) until it answers again. Other GPUs are unaffected.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from prometheus_client.core import Metric

from exporter.device_sampler import Reading
from exporter.nvml import GpuDevice, NvmlSession
from exporter.registry import Collector, ExporterOptions

LOG = logging.getLogger("exporter.gpu")


@dataclass(frozen=True)
class DeviceState:
    """What a scrape knows about one GPU: its latest value, or why there is none."""

    device: GpuDevice
    value: Any = None
    down_reason: str | None = None


class NvmlCollector(Collector):
    """Samples every GPU in the background; collect() turns the latest readings into families."""

    watch_key: ClassVar[str]

    def __init__(self, options: ExporterOptions) -> None:
        super().__init__(options)
        if options.nvml is None:
            raise ValueError(f"collector {self.name} needs an NVML session in its options")
        self.session: NvmlSession = options.nvml
        self.interval_seconds = options.gpu_sample_interval_seconds
        self._down: set[int] = set()  # GPUs already logged as down, so each is logged once
        self._down_lock = threading.Lock()

    @property
    def timeout_seconds(self) -> float:
        return self.options.gpu_timeout_seconds

    @property
    def staleness_limit_seconds(self) -> float:
        """A reading older than this means the GPU stopped answering."""
        return self.interval_seconds + self.timeout_seconds

    def start(self) -> None:
        """Initialise NVML, start the samplers and wait (up to the timeout) for the first
        readings, so the first scrape already tells the truth."""
        devices = self._watched_devices()
        deadline = time.monotonic() + self.timeout_seconds
        for device in devices:
            self.session.sampler(device).wait_first(self.watch_key, deadline)

    def collect(self) -> Iterable[Metric]:
        return self.families([self._state(device) for device in self._watched_devices()])

    @abstractmethod
    def read_device(self, device: GpuDevice) -> Any:
        """Every NVML reading of one GPU, or None if it is down; runs on its sampler thread."""

    @abstractmethod
    def families(self, states: list[DeviceState]) -> list[Metric]:
        """The metric families of one scrape, from each GPU's latest state."""

    def mark_down(self, device: GpuDevice, reason: str) -> None:
        """Log a GPU going down once, not at every reading."""
        with self._down_lock:
            if device.index in self._down:
                return
            self._down.add(device.index)
        LOG.warning("GPU %d (%s) is down: %s; its series are dropped, other GPUs unaffected",
                    device.index, device.uuid or "uuid unknown", reason)

    def mark_up(self, device: GpuDevice) -> None:
        with self._down_lock:
            if device.index not in self._down:
                return
            self._down.discard(device.index)
        LOG.info("GPU %d (%s) is answering again", device.index, device.uuid)

    def _watched_devices(self) -> list[GpuDevice]:
        """NVML's GPUs (initialising it, with a deadline), each with this collector's watch."""
        devices = self.session.ensure_initialized(self.timeout_seconds)
        for device in devices:
            self.session.sampler(device).watch(self.watch_key, self._reader(device),
                                               self.interval_seconds)
        return devices

    def _reader(self, device: GpuDevice) -> Any:
        return lambda: self.read_device(device)

    def _state(self, device: GpuDevice) -> DeviceState:
        sampler = self.session.sampler(device)
        reading: Reading | None = sampler.latest(self.watch_key)
        hung_seconds = sampler.hung_seconds()
        stale = reading is not None and (time.monotonic() - reading.finished_at
                                         > self.staleness_limit_seconds)
        if hung_seconds > self.timeout_seconds or stale:
            reason = (f"NVML did not answer within {self.timeout_seconds:g}s (a call has run "
                      f"for {hung_seconds:.1f}s; the driver is hung on this GPU?)")
        elif reading is None:
            reason = "no NVML reading yet"
        else:
            reason = None
        if reason is not None:
            self.mark_down(device, reason)
            return DeviceState(device, down_reason=reason)
        if reading.error is not None:
            raise reading.error  # not an NVML error: a bug, reported as the collector failing
        if reading.value is None:
            return DeviceState(device, down_reason="NVML error (logged when it began)")
        return DeviceState(device, reading.value)
