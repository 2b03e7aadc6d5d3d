"""Network traffic, packets, errors and drops per interface."""

from __future__ import annotations

from collections.abc import Iterable

import psutil
from prometheus_client.core import CounterMetricFamily, Metric

from exporter.registry import Collector, register

# (metric suffix, psutil field, help)
FIELDS = (
    ("receive_bytes", "bytes_recv", "Bytes received."),
    ("transmit_bytes", "bytes_sent", "Bytes sent."),
    ("receive_packets", "packets_recv", "Packets received."),
    ("transmit_packets", "packets_sent", "Packets sent."),
    ("receive_errs", "errin", "Receive errors."),
    ("transmit_errs", "errout", "Transmit errors."),
    ("receive_drop", "dropin", "Received packets dropped."),
    ("transmit_drop", "dropout", "Packets to send that were dropped."),
)


@register
class NetdevCollector(Collector):
    name = "netdev"
    help_text = "network bytes/packets/errors/drops per interface"

    def collect(self) -> Iterable[Metric]:
        families = [CounterMetricFamily(f"aiinfra_network_{suffix}", documentation,
                                        labels=["device"])
                    for suffix, _, documentation in FIELDS]
        for device, counters in sorted(psutil.net_io_counters(pernic=True).items()):
            for family, (_, field, _) in zip(families, FIELDS, strict=True):
                family.add_metric([device], getattr(counters, field))
        return families
