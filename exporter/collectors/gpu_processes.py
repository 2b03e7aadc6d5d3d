"""Per-process GPU memory (opt-in: pids and process names are high-cardinality labels)."""

from __future__ import annotations

from typing import Any

import pynvml
from prometheus_client.core import Metric

from exporter.families import FamilyBook
from exporter.nvml import gpu_memory_by_pid, read_field, text
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
            try:
                used_by_pid = gpu_memory_by_pid(nvml, device.handle)
            except pynvml.NVMLError:
                continue  # the gpu collector reports this GPU as down
            for pid, used in sorted(used_by_pid.items()):
                if pid not in names:
                    names[pid] = text(read_field(nvml, "nvmlSystemGetProcessName", pid) or "")
                book.add("aiinfra_gpu_process_memory_bytes",
                         [*device.labels, str(pid), names[pid]], float(used))
        return book.families()
