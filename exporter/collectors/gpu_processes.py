"""Per-process GPU memory (opt-in: pids and process names are high-cardinality labels)."""

from __future__ import annotations

from typing import Any

import pynvml
from prometheus_client.core import Metric

from exporter.device_watch import DeviceState
from exporter.families import FamilyBook
from exporter.nvml import GpuDevice, gpu_memory_by_pid, read_field, text
from exporter.nvml_collector import NvmlCollector
from exporter.registry import register

ProcessRows = list[tuple[int, str, float]]  # pid, process name, bytes used


@register
class GpuProcessesCollector(NvmlCollector):
    name = "gpu_processes"
    default_enabled = False
    help_text = "GPU memory per process (pid, process_name labels)"
    watch_key = "processes"

    def read_device(self, device: GpuDevice) -> ProcessRows | None:
        """The processes on one GPU with their memory; None if it is down (the gpu collector
        reports that)."""
        nvml: Any = self.session.nvml
        if not self.session.refresh_identity(device):
            return None
        try:
            return [(pid, text(read_field(nvml, "nvmlSystemGetProcessName", pid) or ""),
                     float(used))
                    for pid, used in sorted(gpu_memory_by_pid(nvml, device.handle).items())]
        except pynvml.NVMLError:
            return None

    def families(self, states: list[DeviceState]) -> list[Metric]:
        book = FamilyBook()
        book.gauge("aiinfra_gpu_process_memory_bytes", "GPU memory used by a process.",
                   ("pid", "process_name"))
        for state in states:
            for pid, process_name, used in state.value or ():
                book.add("aiinfra_gpu_process_memory_bytes",
                         [*state.device.labels, str(pid), process_name], used)
        return book.families()

    def mark_down(self, device: GpuDevice, reason: str) -> None:
        """The gpu collector logs a GPU going down; this one stays quiet about it."""

    def mark_up(self, device: GpuDevice) -> None:
        """As mark_down."""
