"""Memory and swap in bytes (snake_case: promtool rejects node_exporter's MemTotal style)."""

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
            ("total", memory.total, "Physical memory."),
            ("available", memory.available, "Memory available for new work without swapping."),
            ("free", memory.free, "Memory not used at all."),
            ("used", memory.used, "Memory in use (total - free - buffers - cache)."),
            ("swap_total", swap.total, "Swap space."),
            ("swap_free", swap.free, "Swap space unused."),
            ("swap_used", swap.used, "Swap space in use."),
        )
        return [GaugeMetricFamily(f"aiinfra_memory_{field}_bytes", documentation, value=value)
                for field, value, documentation in readings]
