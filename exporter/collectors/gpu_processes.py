"""Per-process GPU memory (opt-in: pids and process names are high-cardinality labels)."""

from __future__ import annotations

from typing import Any

import pynvml
from prometheus_client.core import Metric

from exporter.families import FamilyBook
from exporter.nvml import read_field, text
from exporter.nvml_collector import NvmlCollector
from exporter.registry import register


@register
class GpuProcessesCollector(NvmlCollector):
    name = "gpu_processes"
    default_enabled = False
    help_text = "GPU memory per process (pid, process_name labels)"

    def _collect_now(self) -> list[Metric]:
        nvml: Any = self.session.nvml
        book = FamilyBook()
        book.gauge("aiinfra_gpu_process_memory_bytes", "GPU memory used by a process.",
                   ("pid", "process_name"))
        names: dict[int, str] = {}
        for device in self.session.ensure_initialized():
            if device.handle is None:
                continue
            processes = []
            try:
                for getter in ("nvmlDeviceGetComputeRunningProcesses",
                               "nvmlDeviceGetGraphicsRunningProcesses"):
                    processes += read_field(nvml, getter, device.handle) or []
            except pynvml.NVMLError:
                continue  # the gpu collector reports this GPU as down
            used_by_pid: dict[int, int] = {}
            for process in processes:
                used = process.usedGpuMemory  # None: not visible (e.g. another container)
                if used is not None:
                    used_by_pid[process.pid] = used_by_pid.get(process.pid, 0) + used
            for pid, used in sorted(used_by_pid.items()):
                if pid not in names:
                    names[pid] = text(read_field(nvml, "nvmlSystemGetProcessName", pid) or "")
                book.add("aiinfra_gpu_process_memory_bytes",
                         [*device.labels, str(pid), names[pid]], float(used))
        return book.families()
