"""Base for collectors that read each GPU through NVML on that GPU's own sampler thread.

The reading itself (`read_device`) runs every --collector.gpu.sample-interval on the GPU's
DeviceSampler thread; a scrape only takes the latest readings (device_watch states the
staleness bound: a GPU silent for longer than `interval + --collector.gpu.timeout` is down).
"""

from __future__ import annotations

import logging
import threading
from abc import abstractmethod
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import pynvml
from prometheus_client.core import Metric

from exporter.device_watch import DeviceState, DeviceWatch
from exporter.nvml import (
    GpuDevice,
    NvmlSession,
    describe_error,
    is_field_unavailable,
    is_never_supported,
    nvml_function,
)
from exporter.registry import Collector, ExporterOptions

LOG = logging.getLogger("exporter.gpu")
Rows = list[tuple[str, list[str], float]]  # family name, label values, value


class NvmlCollector(Collector):
    """Samples every GPU in the background; collect() turns the latest readings into families."""

    watch_key: ClassVar[str]

    def __init__(self, options: ExporterOptions) -> None:
        super().__init__(options)
        if options.nvml is None:
            raise ValueError(f"collector {self.name} needs an NVML session in its options")
        self.session: NvmlSession = options.nvml
        self.watch = DeviceWatch(self.session, self.watch_key, self.read_device,
                                 options.gpu_sample_interval_seconds,
                                 options.gpu_timeout_seconds, self.mark_down)
        self._down: set[int] = set()  # GPUs already logged as down, so each is logged once
        self._down_lock = threading.Lock()
        self._never_supported: set[tuple[int, str, str]] = set()

    @property
    def timeout_seconds(self) -> float:
        return self.options.gpu_timeout_seconds

    @property
    def interval_seconds(self) -> float:
        return self.watch.interval_seconds

    def start(self) -> None:
        """Initialise NVML, start the samplers and wait (up to the timeout) for the first
        readings, so the first scrape already tells the truth."""
        self.watch.wait_first()

    def collect(self) -> Iterable[Metric]:
        return self.families(self.watch.states())

    @abstractmethod
    def read_device(self, device: GpuDevice) -> Any:
        """Every NVML reading of one GPU, or None if it is down; runs on its sampler thread."""

    @abstractmethod
    def families(self, states: list[DeviceState]) -> list[Metric]:
        """The metric families of one scrape, from each GPU's latest state."""

    def read_rows(self, device: GpuDevice,
                  fill: Callable[[GpuDevice, Rows], None]) -> Rows | None:
        """fill(device, rows) after the GPU's identity is known: the rows, or None (the GPU
        marked down, logged once) if it does not answer or an NVML call fails."""
        rows: Rows = []
        try:
            if not self.session.refresh_identity(device):
                self.mark_down(device, "it does not answer NVML")
                return None
            fill(device, rows)
        except pynvml.NVMLError as error:
            self.mark_down(device, describe_error(error))
            return None
        self.mark_up(device)
        return rows

    def read(self, device: GpuDevice, function_name: str, *args: Any) -> Any:
        """device.handle passed to an NVML getter; None when unsupported, remembered if for good.

        An unsupported call can cost as much as a real one (~0.4 ms for the fan on an H100), so
        a function the GPU never supports is not asked again. Any other NVMLError is raised: it
        means the GPU itself is broken. Call it on the device's sampler thread.
        """
        key = (device.index, function_name, repr(args))
        if key in self._never_supported:
            return None
        function = nvml_function(self.session.nvml, function_name)
        if function is None:
            self._never_supported.add(key)
            return None
        try:
            return function(device.handle, *args)
        except pynvml.NVMLError as error:
            if is_never_supported(error):
                self._never_supported.add(key)
                return None
            if is_field_unavailable(error):
                return None
            raise

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
