"""Boot time, so that counter resets after a reboot can be told from exporter restarts."""

from __future__ import annotations

from collections.abc import Iterable

import psutil
from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.registry import Collector, register


@register
class BootTimeCollector(Collector):
    name = "boottime"
    help_text = "host boot time"

    def collect(self) -> Iterable[Metric]:
        return [GaugeMetricFamily("aiinfra_boot_time_seconds", "Unix time the host booted.",
                                  value=psutil.boot_time())]
