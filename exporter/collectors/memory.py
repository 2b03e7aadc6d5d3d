"""Memory and swap, named after node_exporter's /proc/meminfo metrics."""

from __future__ import annotations

from collections.abc import Iterable

import psutil
from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.registry import Collector, register


@register
class MemoryCollector(Collector):
    name = "memory"
    help_text = "memory total/available/used/free and swap"

    def collect(self) -> Iterable[Metric]:
        memory = psutil.virtual_memory()
        swap = psutil.swap_memory()
        readings = (
            ("MemTotal", memory.total, "Physical memory."),
            ("MemAvailable", memory.available, "Memory available for new work without swapping."),
            ("MemFree", memory.free, "Memory not used at all."),
            ("MemUsed", memory.used, "Memory in use (total - free - buffers - cache)."),
            ("SwapTotal", swap.total, "Swap space."),
            ("SwapFree", swap.free, "Swap space unused."),
            ("SwapUsed", swap.used, "Swap space in use."),
        )
        return [GaugeMetricFamily(f"aiinfra_memory_{field}_bytes", documentation, value=value)
                for field, value, documentation in readings]
