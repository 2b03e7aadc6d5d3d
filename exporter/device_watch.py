"""One reading watched on every GPU's sampler thread, and what a scrape knows of each GPU.

A DeviceWatch registers one function (read one GPU, return a value) with each GPU's
DeviceSampler and turns the latest readings into DeviceStates at scrape time, without an NVML
call. Staleness bound: a scrape shows readings at most `interval + one read` old; a GPU whose
latest reading is older than `interval + timeout`, or whose current NVML call has run longer than
the timeout, is down (hung) until it answers again. Other GPUs are unaffected. The NVML
collectors (nvml_collector) and the process collector's per-group GPU usage share it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from exporter.device_sampler import Reading
from exporter.nvml import GpuDevice, NvmlSession


@dataclass(frozen=True)
class DeviceState:
    """What a scrape knows about one GPU: its latest value, or why there is none."""

    device: GpuDevice
    value: Any = None
    down_reason: str | None = None


class DeviceWatch:
    """`read_device` run on every GPU's own thread each `interval_seconds`."""

    def __init__(self, session: NvmlSession, key: str,
                 read_device: Callable[[GpuDevice], Any], interval_seconds: float,
                 timeout_seconds: float,
                 on_down: Callable[[GpuDevice, str], None] | None = None) -> None:
        self.session = session
        self.key = key
        self.read_device = read_device
        self.interval_seconds = interval_seconds
        self.timeout_seconds = timeout_seconds
        self._on_down = on_down

    @property
    def staleness_limit_seconds(self) -> float:
        """A reading older than this means the GPU stopped answering."""
        return self.interval_seconds + self.timeout_seconds

    def devices(self) -> list[GpuDevice]:
        """NVML's GPUs (initialising it, with the deadline), each with this watch running.
        Raises NvmlUnavailable while NVML cannot be used."""
        devices = self.session.ensure_initialized(self.timeout_seconds)
        for device in devices:
            self.session.sampler(device).watch(self.key, self._reader(device),
                                               self.interval_seconds)
        return devices

    def wait_first(self) -> None:
        """Start the watches and wait (up to the timeout) for every GPU's first reading, so
        the first scrape already tells the truth."""
        devices = self.devices()
        deadline = time.monotonic() + self.timeout_seconds
        for device in devices:
            self.session.sampler(device).wait_first(self.key, deadline)

    def states(self) -> list[DeviceState]:
        """Every GPU's latest state; no NVML call (beyond a first nvmlInit, with its deadline)."""
        return [self._state(device) for device in self.devices()]

    def _reader(self, device: GpuDevice) -> Callable[[], Any]:
        return lambda: self.read_device(device)

    def _state(self, device: GpuDevice) -> DeviceState:
        sampler = self.session.sampler(device)
        reading: Reading | None = sampler.latest(self.key)
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
            if self._on_down is not None:
                self._on_down(device, reason)
            return DeviceState(device, down_reason=reason)
        if reading.error is not None:
            raise reading.error  # not an NVML error: a bug, reported as the collector failing
        if reading.value is None:
            return DeviceState(device, down_reason="NVML error (logged when it began)")
        return DeviceState(device, reading.value)
