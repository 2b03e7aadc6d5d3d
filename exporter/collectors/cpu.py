"""CPU time per logical CPU and mode, as node_exporter's node_cpu_seconds_total."""

from __future__ import annotations

from collections.abc import Iterable

import psutil
from prometheus_client.core import CounterMetricFamily, Metric

from exporter.registry import Collector, register

# guest/guest_nice are already included in user/nice, as node_exporter also keeps them apart.
MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


@register
class CpuCollector(Collector):
    name = "cpu"
    help_text = "CPU seconds by cpu and mode"

    def collect(self) -> Iterable[Metric]:
        seconds = CounterMetricFamily("aiinfra_cpu_seconds", "Seconds the CPUs spent in each mode.",
                                      labels=["cpu", "mode"])
        for cpu, times in enumerate(psutil.cpu_times(percpu=True)):
            cpu_label = str(cpu)
            for mode in MODES:
                value = getattr(times, mode, None)
                if value is not None:
                    seconds.add_metric([cpu_label, mode], value)
        return [seconds]
