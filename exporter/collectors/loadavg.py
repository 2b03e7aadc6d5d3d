"""Load averages over 1, 5 and 15 minutes."""

from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.registry import Collector, register


@register
class LoadavgCollector(Collector):
    name = "loadavg"
    help_text = "load1/load5/load15"

    def collect(self) -> Iterable[Metric]:
        averages = os.getloadavg()
        return [GaugeMetricFamily(f"aiinfra_load{minutes}", f"{minutes}m load average.",
                                  value=value)
                for minutes, value in zip((1, 5, 15), averages, strict=True)]
